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

/// Stenosis (%) from which balloon and stent sizes are proposed: the lower bound of the
/// NASCET "moderate" grade (< 50 / 50–69 / ≥ 70 %; NASCET, N Engl J Med 1991; see
/// `../shared/reference/vessel_ablation.md` §3). Below it there is no significant
/// stenosis to treat, so sizes would only invite treating a normal vessel.
pub const DEFAULT_MIN_STENOSIS_PCT: f64 = 50.0;

/// Whether device sizes are proposed for a stenosis, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct SizingDecision {
    /// Sizes are proposed.
    pub propose: bool,
    /// The reason, for the report and the terminal.
    pub status: String,
}

/// Sizes are proposed only for a stenosis of at least `min_stenosis_pct` (NASCET % when
/// it was measured, else the diameter stenosis).
pub fn sizing_decision(stenosis: Option<&Stenosis>, min_stenosis_pct: f64) -> SizingDecision {
    let Some(s) = stenosis else {
        return SizingDecision {
            propose: false,
            status: "no stenosis analysis (too few stations): no balloon or stent size proposed"
                .to_owned(),
        };
    };
    let (measure, pct) = match s.nascet_pct {
        Some(p) => ("NASCET stenosis", p),
        None => ("diameter stenosis", s.diameter_stenosis_pct),
    };
    if pct >= min_stenosis_pct {
        SizingDecision {
            propose: true,
            status: format!(
                "sizes proposed: {measure} {pct:.1} % ≥ {min_stenosis_pct} % threshold"
            ),
        }
    } else {
        SizingDecision {
            propose: false,
            status: format!(
                "no significant stenosis: {measure} {pct:.1} % < {min_stenosis_pct} % threshold; no balloon or stent size proposed"
            ),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stenosis(diameter_pct: f64, nascet_pct: Option<f64>) -> Stenosis {
        Stenosis {
            mld_mm: 7.0 * (1.0 - diameter_pct / 100.0),
            mld_arc_mm: 20.0,
            mld_point_lps: [0.0; 3],
            reference_diameter_mm: 7.0,
            reference_method: "test".into(),
            proximal_reference_mm: Some(7.0),
            distal_reference_mm: Some(7.0),
            diameter_stenosis_pct: diameter_pct,
            area_stenosis_pct: 0.0,
            lesion_start_arc_mm: 18.0,
            lesion_end_arc_mm: 22.0,
            lesion_length_mm: 4.0,
            nascet_pct,
            nascet_distal_diameter_mm: None,
            ecst_pct: None,
            grade: String::new(),
        }
    }

    /// Regression (#17): a 19 % narrowing of a normal carotid got balloon and stent sizes.
    #[test]
    fn sizes_only_for_a_significant_stenosis() {
        let mild = sizing_decision(Some(&stenosis(19.0, None)), DEFAULT_MIN_STENOSIS_PCT);
        assert!(!mild.propose);
        assert!(
            mild.status
                .starts_with("no significant stenosis: diameter stenosis 19.0 % < 50 %"),
            "{}",
            mild.status
        );
        let moderate = sizing_decision(Some(&stenosis(55.0, None)), DEFAULT_MIN_STENOSIS_PCT);
        assert!(moderate.propose, "{}", moderate.status);
        // NASCET, when measured, decides: 60 % diameter but 40 % NASCET is not significant.
        let nascet = sizing_decision(Some(&stenosis(60.0, Some(40.0))), DEFAULT_MIN_STENOSIS_PCT);
        assert!(!nascet.propose && nascet.status.contains("NASCET stenosis 40.0 %"));
        // The threshold is the user's: 10 % proposes sizes for the 19 % narrowing.
        assert!(sizing_decision(Some(&stenosis(19.0, None)), 10.0).propose);
        assert!(!sizing_decision(None, DEFAULT_MIN_STENOSIS_PCT).propose);
    }
}
