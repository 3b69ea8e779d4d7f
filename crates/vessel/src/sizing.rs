//! Balloon and stent size ranges from reference diameters and lesion length. The rules
//! are data (`sizing.toml` shipped in the crate, or a user file), not vendor claims.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, VesselError};
use crate::stenosis::Stenosis;

/// The built-in rules (see the file's comments for their sources and limits).
pub const DEFAULT_RULES_TOML: &str = include_str!("sizing.toml");

/// One device type's rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DeviceRule {
    pub name: String,
    /// `"max"` (larger of proximal/distal reference) or `"interpolated"`.
    pub reference: String,
    pub diameter_ratio_min: f64,
    pub diameter_ratio_max: f64,
    pub diameter_step_mm: f64,
    pub length_margin_min_mm: f64,
    pub length_margin_max_mm: f64,
    pub length_step_mm: f64,
}

/// A rule set.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SizingRules {
    pub device: Vec<DeviceRule>,
}

impl SizingRules {
    /// The rules shipped with Pinhole.
    pub fn builtin() -> Result<Self> {
        Self::parse(DEFAULT_RULES_TOML, "built-in sizing.toml")
    }

    /// Parses a TOML rule set; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self> {
        let rules: Self = toml::from_str(text).map_err(|e| VesselError::Sizing {
            source_name: source_name.to_string(),
            reason: e.to_string(),
        })?;
        for d in &rules.device {
            let ok = d.diameter_ratio_min > 0.0
                && d.diameter_ratio_max >= d.diameter_ratio_min
                && d.diameter_step_mm > 0.0
                && d.length_step_mm > 0.0
                && d.length_margin_max_mm >= d.length_margin_min_mm
                && matches!(d.reference.as_str(), "max" | "interpolated");
            if !ok {
                return Err(VesselError::Sizing {
                    source_name: source_name.to_string(),
                    reason: format!("device {:?}: inconsistent rule {d:?}", d.name),
                });
            }
        }
        Ok(rules)
    }
}

/// A suggested size range for one device type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SizeRange {
    pub device: String,
    pub reference_diameter_mm: f64,
    pub diameter_mm: [f64; 2],
    pub length_mm: [f64; 2],
}

/// Size ranges for every device in `rules` from a stenosis summary.
pub fn suggest(rules: &SizingRules, stenosis: &Stenosis) -> Vec<SizeRange> {
    rules
        .device
        .iter()
        .map(|d| {
            let reference = match d.reference.as_str() {
                "max" => stenosis
                    .proximal_reference_mm
                    .into_iter()
                    .chain(stenosis.distal_reference_mm)
                    .fold(stenosis.reference_diameter_mm, f64::max),
                _ => stenosis.reference_diameter_mm,
            };
            let down = |v: f64, s: f64| (v / s).floor() * s;
            let up = |v: f64, s: f64| (v / s).ceil() * s;
            let lo = down(reference * d.diameter_ratio_min, d.diameter_step_mm);
            let hi = up(reference * d.diameter_ratio_max, d.diameter_step_mm);
            SizeRange {
                device: d.name.clone(),
                reference_diameter_mm: reference,
                diameter_mm: [lo.max(d.diameter_step_mm), hi.max(d.diameter_step_mm)],
                length_mm: [
                    up(
                        stenosis.lesion_length_mm + d.length_margin_min_mm,
                        d.length_step_mm,
                    ),
                    up(
                        stenosis.lesion_length_mm + d.length_margin_max_mm,
                        d.length_step_mm,
                    ),
                ],
            }
        })
        .collect()
}
