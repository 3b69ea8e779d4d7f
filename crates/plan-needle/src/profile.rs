//! Procedure profiles: the rules of one procedure, as data (TOML), each with its source.
//!
//! Six profiles ship inside the crate (`profiles/*.toml`); a user file with the same
//! schema replaces them (`Profile::from_toml_file`). Label names may use `*` wildcards
//! (`rib_left_*`), expanded against the label table.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use pinhole_volume::LabelAim;

use crate::PlanError;

/// The shipped profiles: `(name, TOML text)`.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "kidney-biopsy",
        include_str!("../profiles/kidney-biopsy.toml"),
    ),
    (
        "liver-biopsy",
        include_str!("../profiles/liver-biopsy.toml"),
    ),
    ("lung-biopsy", include_str!("../profiles/lung-biopsy.toml")),
    ("thyroid-fna", include_str!("../profiles/thyroid-fna.toml")),
    ("nephrostomy", include_str!("../profiles/nephrostomy.toml")),
    (
        "biliary-drainage",
        include_str!("../profiles/biliary-drainage.toml"),
    ),
];

/// How a label target named without an aim (`kidney_left`, not `kidney_left:deepest`)
/// is turned into a point. A target that names its aim keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TargetAim {
    /// As the target syntax says (centroid, or the deepest point when the centroid is
    /// outside the label).
    #[default]
    AsGiven,
    /// The deepest point of the caudal third of the label (kidney lower pole).
    LowerPole,
    /// The renal cortex of the lower pole, about 5 mm inside the surface (medical renal
    /// biopsy; `pinhole_volume::LabelAim::LowerPoleCortex` gives the rule).
    LowerPoleCortex,
}

impl TargetAim {
    /// The label aim it applies (`None` for `AsGiven`).
    pub fn label_aim(self) -> Option<LabelAim> {
        match self {
            TargetAim::AsGiven => None,
            TargetAim::LowerPole => Some(LabelAim::LowerPole),
            TargetAim::LowerPoleCortex => Some(LabelAim::LowerPoleCortex),
        }
    }
}

/// One procedure's rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Labels the needle may cross (the target's own organ); removed from risk groups.
    #[serde(default)]
    pub allowed_labels: Vec<String>,
    #[serde(default)]
    pub target_aim: TargetAim,
    /// The labels `target_aim` applies to (`*` wildcards); empty: every label target.
    /// Other labels (a lesion) are aimed as the target says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_aim_labels: Vec<String>,
    /// Added to the plan's warnings when `target_aim` moved a target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_aim_warning: Option<String>,
    /// Where `target_aim` comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_aim_source: Option<String>,
    /// Returned paths differ in direction by at least this much.
    #[serde(default = "default_separation")]
    pub min_separation_deg: f64,
    pub length: LengthRule,
    pub skin_angle: AngleRule,
    /// Maximum angle of the needle out of the axial plane.
    #[serde(default)]
    pub axial_angle: Option<AngleRule>,
    /// Allowed approach cones; a path must lie in at least one (none: any direction).
    #[serde(default)]
    pub approach: Vec<ApproachCone>,
    pub risk_groups: Vec<RiskGroup>,
    #[serde(default)]
    pub traverse: Vec<TraverseRule>,
    #[serde(default)]
    pub entry_caudal_to: Option<CaudalRule>,
    #[serde(default)]
    pub lung: Option<LungRule>,
    #[serde(default)]
    pub weights: Weights,
}

fn default_separation() -> f64 {
    10.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LengthRule {
    pub max_mm: f64,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AngleRule {
    pub max_deg: f64,
    pub source: String,
}

/// The needle direction (target → entry) within `max_deg` of `direction_lps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproachCone {
    pub name: String,
    pub direction_lps: [f64; 3],
    pub max_deg: f64,
    pub source: String,
}

/// Labels the needle axis must stay `clearance_mm` away from (distance to voxel centres).
/// Candidates are screened on coarse distance fields stored in steps of 1/64 mm, where
/// a clearance on that grid (every whole or half millimetre) acts exactly and any other
/// as the next step up; returned paths are re-checked exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RiskGroup {
    pub name: String,
    pub labels: Vec<String>,
    pub clearance_mm: f64,
    /// Missing label names are skipped instead of failing the plan (not written when
    /// false: a plan's resolved groups are never optional).
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
    #[serde(default = "one")]
    pub weight: f64,
    pub source: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn one() -> f64 {
    1.0
}

/// The path must run at least `min_mm` inside `labels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraverseRule {
    pub labels: Vec<String>,
    pub min_mm: f64,
    pub source: String,
}

/// The needle stays caudal to the labels `left`/`right` (the side of the target), as
/// `level` says, or the entry caudal to the lowest voxel of `fallback` when those labels
/// are absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaudalRule {
    pub left: Vec<String>,
    pub right: Vec<String>,
    pub fallback: Vec<String>,
    /// How "caudal to the labels" is measured (the fallback always uses `lowest-voxel`).
    #[serde(default)]
    pub level: CaudalLevel,
    pub source: String,
}

/// How the `entry_caudal_to` rule measures "caudal to the labels".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CaudalLevel {
    /// The skin entry lies caudal to the labels' lowest voxel centre (one z level).
    #[default]
    LowestVoxel,
    /// The needle passes caudal to the labels where it runs over them: no point of the
    /// needle outside the target's organ (the allowed labels) lies cranial to a voxel
    /// centre of the labels in the same axial column (the labels' footprint on the label
    /// grid's i, j plane, widened by one voxel so that no needle slips between diagonal
    /// voxels). A needle that never runs over the labels is not constrained by them.
    /// For a rib: the needle passes below that rib, between it and the next, or below
    /// the next.
    Footprint,
}

/// Lung rules: no crossing between lobes (fissures), few pleura crossings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LungRule {
    pub lobes: Vec<String>,
    #[serde(default)]
    pub avoid_fissures: bool,
    #[serde(default)]
    pub max_pleura_crossings: Option<u32>,
    pub source: String,
}

/// Soft-score weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    pub length: f64,
    pub clearance: f64,
    pub skin_angle: f64,
    pub capsule_angle: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            length: 1.0,
            clearance: 1.0,
            skin_angle: 0.5,
            capsule_angle: 0.5,
        }
    }
}

impl Profile {
    /// A shipped profile by procedure name.
    pub fn builtin(name: &str) -> Result<Self, PlanError> {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            PlanError::UnknownProcedure {
                name: name.to_string(),
                available: BUILTIN.iter().map(|(n, _)| n.to_string()).collect(),
            }
        })?;
        Self::from_toml(text, &format!("built-in profile {name}"))
    }

    /// Parses a profile; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, PlanError> {
        let profile: Profile = toml::from_str(text).map_err(|e| PlanError::Profile {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        profile.validate(origin)?;
        Ok(profile)
    }

    /// Reads a user profile file.
    pub fn from_toml_file(path: &Path) -> Result<Self, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|e| PlanError::Profile {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    fn validate(&self, origin: &str) -> Result<(), PlanError> {
        let bad = |message: String| {
            Err(PlanError::Profile {
                origin: origin.to_string(),
                message,
            })
        };
        if !(self.length.max_mm > 0.0 && self.length.max_mm.is_finite()) {
            return bad(format!(
                "length.max_mm must be positive, got {}",
                self.length.max_mm
            ));
        }
        for group in &self.risk_groups {
            if !(group.clearance_mm >= 0.0 && group.clearance_mm.is_finite()) {
                return bad(format!(
                    "risk group {}: clearance_mm must be >= 0, got {}",
                    group.name, group.clearance_mm
                ));
            }
            if group.labels.is_empty() {
                return bad(format!("risk group {} has no labels", group.name));
            }
        }
        for cone in &self.approach {
            let n = cone.direction_lps.iter().map(|v| v * v).sum::<f64>().sqrt();
            if !(n > 0.0 && n.is_finite()) {
                return bad(format!(
                    "approach {}: direction_lps must be non-zero",
                    cone.name
                ));
            }
        }
        Ok(())
    }
}

/// True when `name` matches `pattern` (`*` = any run of characters).
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_parses_and_cites_sources() {
        for (name, _) in BUILTIN {
            let p = Profile::builtin(name).unwrap();
            assert_eq!(&p.name, name);
            assert!(!p.length.source.is_empty());
            assert!(p.risk_groups.iter().all(|g| !g.source.is_empty()));
        }
        assert!(matches!(
            Profile::builtin("appendectomy"),
            Err(PlanError::UnknownProcedure { .. })
        ));
    }

    #[test]
    fn wildcards_match_like_globs() {
        assert!(matches_pattern("rib_left_*", "rib_left_12"));
        assert!(!matches_pattern("rib_left_*", "rib_right_12"));
        assert!(matches_pattern("lung_*", "lung_upper_lobe_left"));
        assert!(matches_pattern("*_left", "kidney_left"));
        assert!(matches_pattern("a*b*c", "axxbyyc"));
        assert!(!matches_pattern("a*b*c", "axxc"));
        assert!(matches_pattern("aorta", "aorta"));
    }
}
