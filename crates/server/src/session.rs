//! A guidance session: the CT geometry, the plan (from `plan.json` or a target), the risk
//! model and the registration, as served by `/api/session`.

use std::collections::BTreeMap;
use std::path::Path;

use pinhole_volume::math::Vec3;
use pinhole_volume::{Grid, Volume};
use serde::Serialize;
use serde_json::Value;

use crate::guidance::{
    default_risk_groups, Guidance, PlanGeometry, RiskGroup, TargetZone, Thresholds,
    DEFAULT_TARGET_RADIUS_MM, NOTE,
};
use crate::pose::Mat4;

/// Why a plan file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read plan {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("plan {path} is not JSON: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("plan {path}: {what}")]
    Invalid { path: String, what: String },
}

/// What the server uses from `plan.json` (only the contract's fields: `target_lps`,
/// `paths[0].entry_lps` / `target_lps`, and optionally `profile.risk_groups`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanFile {
    pub target_lps: Vec3,
    /// `paths[0].entry_lps`, when the plan has a path.
    pub entry_lps: Option<Vec3>,
    /// `paths[0].target_lps` (falls back to the top-level target).
    pub path_target_lps: Vec3,
    pub risk_groups: Option<Vec<RiskGroup>>,
}

impl PlanFile {
    pub fn read(path: &Path) -> Result<Self, PlanError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PlanError::Io {
            path: p.clone(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|source| PlanError::Json {
            path: p.clone(),
            source,
        })?;
        Self::from_json(&value).map_err(|what| PlanError::Invalid { path: p, what })
    }

    pub fn from_json(v: &Value) -> Result<Self, String> {
        let target_lps = vec3(&v["target_lps"]).ok_or("`target_lps` must be [x, y, z]")?;
        let first = v["paths"].as_array().and_then(|a| a.first());
        let (entry_lps, path_target_lps) = match first {
            Some(p) => (
                Some(vec3(&p["entry_lps"]).ok_or("`paths[0].entry_lps` must be [x, y, z]")?),
                vec3(&p["target_lps"]).unwrap_or(target_lps),
            ),
            None => (None, target_lps),
        };
        let risk_groups = match &v["profile"]["risk_groups"] {
            Value::Null => None,
            groups => Some(
                serde_json::from_value::<Vec<RiskGroup>>(groups.clone())
                    .map_err(|e| format!("`profile.risk_groups`: {e}"))?,
            ),
        };
        Ok(Self {
            target_lps,
            entry_lps,
            path_target_lps,
            risk_groups,
        })
    }
}

fn vec3(v: &Value) -> Option<Vec3> {
    let a = v.as_array()?;
    match a.as_slice() {
        [x, y, z] => {
            let p = [x.as_f64()?, y.as_f64()?, z.as_f64()?];
            p.iter().all(|c| c.is_finite()).then_some(p)
        }
        _ => None,
    }
}

/// Geometry of a volume for the viewer.
#[derive(Debug, Clone, Serialize)]
pub struct GridInfo {
    pub dims: [usize; 3],
    pub spacing_mm: [f64; 3],
    pub origin_lps: [f64; 3],
    pub ijk_to_lps: [[f64; 4]; 4],
    pub orientation: String,
}

impl GridInfo {
    pub fn of(grid: &Grid) -> Self {
        Self {
            dims: grid.dims(),
            spacing_mm: grid.spacing_mm(),
            origin_lps: grid.origin_lps(),
            ijk_to_lps: grid.ijk_to_lps(),
            orientation: grid.orientation_code(),
        }
    }
}

/// Where the plan came from.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum PlanSource {
    /// A plan file: the first path (entry → target), risk groups when it has them.
    Plan(PlanFile),
    /// Only a target (`--target`): no planned line.
    Target {
        target_lps: Vec3,
        zone: TargetZone,
        label_id: Option<u32>,
        description: String,
    },
}

/// Everything the server needs, built once at start-up.
pub struct Session {
    pub guidance: Guidance,
    /// `/api/session` body.
    pub description: Value,
    /// The registration given on the command line (`ReferenceToRAS`).
    pub registration: Option<Mat4>,
    /// Volumes, labels, lines and DRRs for the web viewer (none: API only).
    pub viewer: Option<crate::viewer::Viewer>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("guidance", &self.guidance)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Builds the guidance engine (distance transforms: seconds on a full CT).
    /// `inputs` is reported as-is (paths and hashes chosen by the caller).
    pub fn new(
        ct_grid: &Grid,
        labels: Volume<u16>,
        names: BTreeMap<u32, String>,
        source: PlanSource,
        registration: Option<Mat4>,
        inputs: Value,
    ) -> Self {
        let (plan, zone, groups, exclude, from) = match &source {
            PlanSource::Plan(p) => (
                PlanGeometry {
                    target_lps: p.path_target_lps,
                    entry_lps: p.entry_lps,
                },
                TargetZone::Sphere {
                    center_lps: p.path_target_lps,
                    radius_mm: DEFAULT_TARGET_RADIUS_MM,
                },
                p.risk_groups.clone(),
                Vec::new(),
                "plan.json (paths[0])".to_owned(),
            ),
            PlanSource::Target {
                target_lps,
                zone,
                label_id,
                description,
            } => (
                PlanGeometry {
                    target_lps: *target_lps,
                    entry_lps: None,
                },
                zone.clone(),
                None,
                label_id.iter().copied().collect(),
                format!("--target {description}"),
            ),
        };
        let groups_from = if groups.is_some() {
            "plan.json profile.risk_groups"
        } else {
            "default TotalSegmentator set (pinhole_server::guidance::default_risk_groups)"
        };
        let groups = groups.unwrap_or_else(default_risk_groups);
        let guidance = Guidance::new(
            plan,
            zone.clone(),
            labels,
            names,
            &groups,
            &exclude,
            Thresholds::default(),
        );
        let target_zone = match &zone {
            TargetZone::Mask(_) => serde_json::json!({"kind": "label"}),
            TargetZone::Sphere {
                center_lps,
                radius_mm,
            } => {
                serde_json::json!({"kind": "sphere", "center_lps": center_lps, "radius_mm": radius_mm})
            }
        };
        let description = serde_json::json!({
            "note": NOTE,
            "version": env!("CARGO_PKG_VERSION"),
            "inputs": inputs,
            "coordinates": "LPS mm (tracked poses arrive in RAS and are converted at the edge)",
            "ct": GridInfo::of(ct_grid),
            "labels": GridInfo::of(guidance.labels().grid()),
            "plan": {
                "from": from,
                "target_lps": guidance.plan().target_lps,
                "entry_lps": guidance.plan().entry_lps,
                "line_defined": guidance.plan().direction().is_some(),
                "target_zone": target_zone,
            },
            "risk_groups_from": groups_from,
            "risk_groups": guidance.risk_groups(),
            "thresholds": guidance.thresholds(),
            "registration_reference_to_ras": registration,
        });
        Self {
            guidance,
            description,
            registration,
            viewer: None,
        }
    }
}
