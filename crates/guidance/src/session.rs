//! A guidance session: the CT geometry, the plan (a needle plan or a target), the risk
//! model and the registration, described by [`SessionDescription`] (`/api/session`).

use std::collections::BTreeMap;

use pinhole_volume::math::{Mat4, Vec3};
use pinhole_volume::{Grid, Volume};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::{
    default_risk_groups, FieldTiming, Guidance, PlanGeometry, RiskGroup, RiskGroupInfo, TargetZone,
    Thresholds, DEFAULT_TARGET_RADIUS_MM, NOTE,
};
use crate::scene::ViewerFields;

/// Version of the [`SessionDescription`] format (`docs/schemas/session.schema.json`).
pub const SESSION_SCHEMA_VERSION: u32 = 1;

/// What guidance uses of a needle plan: the first path and the plan's risk groups
/// (`pinhole_pipeline::needle::PlanPaths::planned_needle` reads it from `plan.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedNeedle {
    pub target_lps: Vec3,
    /// `paths[0].entry_lps`, when the plan has a path.
    pub entry_lps: Option<Vec3>,
    /// `paths[0].target_lps` (the plan's target when it has no path).
    pub path_target_lps: Vec3,
    /// The plan's risk groups (labels expanded); `None`: the default set.
    pub risk_groups: Option<Vec<RiskGroup>>,
}

/// Where the plan came from.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum PlanSource {
    /// A needle plan: the first path (entry → target), risk groups when it has them.
    Plan(PlannedNeedle),
    /// Only a target (`--target`): no planned line.
    Target {
        target_lps: Vec3,
        zone: TargetZone,
        label_id: Option<u32>,
        description: String,
        /// Risk groups; `None`: the default set.
        risk_groups: Option<Vec<RiskGroup>>,
    },
}

/// The files a session was built from, as given (reported, never re-read).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionInputs {
    pub ct: Option<String>,
    pub labels: Option<String>,
    pub labels_table: Option<String>,
    pub plan: Option<String>,
    pub target: Option<String>,
    pub registration: Option<String>,
}

/// Geometry of a volume for the viewer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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

/// The region counted as "inside the target", as described.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetZoneInfo {
    /// The target label's voxels.
    Label,
    /// A ball around a point.
    Sphere { center_lps: Vec3, radius_mm: f64 },
}

/// The plan as guidance uses it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionPlan {
    /// `plan.json (paths[0])` or `--target …`.
    pub from: String,
    pub target_lps: Vec3,
    pub entry_lps: Option<Vec3>,
    pub line_defined: bool,
    pub target_zone: TargetZoneInfo,
}

/// What `/api/session` describes (before the viewer's fields are added).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionDescription {
    pub schema_version: u32,
    pub note: String,
    pub version: String,
    pub inputs: SessionInputs,
    pub coordinates: String,
    pub ct: GridInfo,
    pub labels: GridInfo,
    pub plan: SessionPlan,
    pub risk_groups_from: String,
    pub risk_groups: Vec<RiskGroupInfo>,
    pub thresholds: Thresholds,
    /// The registration in use (`ReferenceToRAS`, row-major), if any.
    pub registration_reference_to_ras: Option<Mat4>,
    /// What guidance cannot check: risk structures absent from the label map, labels
    /// the table does not name, a target without a planned line (`pinhole serve`
    /// prints them too).
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// `/api/session`: the session description, the target at the top level (for older
/// clients) and the viewer's fields when a viewer is served.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SessionResponse {
    #[serde(flatten)]
    pub description: SessionDescription,
    pub target_lps: Vec3,
    #[serde(flatten)]
    pub viewer: Option<ViewerFields>,
    /// Who steered the live session (registration changes, changes of the tracking
    /// source, refused peers), oldest first, bounded by the server (absent when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_events: Vec<SourceEvent>,
}

/// What a [`SourceEvent`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceEventKind {
    /// The registration (`ReferenceToRAS`) was set or changed.
    Registration,
    /// Needle poses started to arrive from a new client (first source or a change).
    TrackingSource,
    /// A peer that is not allowed to steer sent tracking, registration or images.
    RefusedPeer,
}

/// A change of who steers the live session, as the server logged it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SourceEvent {
    /// Server wall-clock time, seconds since 1970.
    pub time_unix_s: f64,
    pub kind: SourceEventKind,
    /// The OpenIGTLink peer (`ip:port`) and the server's client number.
    pub peer: String,
    pub client: u64,
    /// Device name of the message.
    pub device: String,
    /// What happened, in words (for a registration: how far it moved).
    pub detail: String,
}

/// Everything a guidance server needs, built once at start-up.
pub struct Session {
    pub guidance: Guidance,
    pub description: SessionDescription,
    /// The registration given on the command line (`ReferenceToRAS`).
    pub registration: Option<Mat4>,
    /// Volumes, labels, lines and DRRs for the web viewer (none: API only).
    pub viewer: Option<crate::scene::Viewer>,
}

impl Session {
    /// What `/api/session` answers, with `registration` as the one now in force (it
    /// may have been replaced over OpenIGTLink since start-up).
    pub fn response_with_registration(&self, registration: Option<Mat4>) -> SessionResponse {
        let mut description = self.description.clone();
        description.registration_reference_to_ras = registration;
        SessionResponse {
            target_lps: description.plan.target_lps,
            description,
            viewer: self
                .viewer
                .as_ref()
                .map(crate::scene::Viewer::session_fields),
            source_events: Vec::new(),
        }
    }

    /// What `/api/session` answers at start-up.
    pub fn response(&self) -> SessionResponse {
        self.response_with_registration(self.registration)
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("guidance", &self.guidance)
            .finish_non_exhaustive()
    }
}

/// One warning per risk group with structures the label map lacks: guidance cannot
/// warn about what it cannot see.
pub fn absent_structure_warnings(groups: &[RiskGroupInfo]) -> Vec<String> {
    groups
        .iter()
        .filter(|g| !g.missing.is_empty())
        .map(|g| {
            if g.labels.is_empty() {
                format!(
                    "risk group {}: none of its structures ({}) is in the label map; guidance cannot warn about it",
                    g.name,
                    g.missing.join(", ")
                )
            } else {
                format!(
                    "risk group {}: {} not in the label map; guidance checks only {}",
                    g.name,
                    g.missing.join(", "),
                    g.labels.join(", ")
                )
            }
        })
        .collect()
}

/// What a [`PlanSource`] gives the engine.
struct ResolvedSource {
    plan: PlanGeometry,
    zone: TargetZone,
    groups: Option<Vec<RiskGroup>>,
    exclude_ids: Vec<u32>,
    from: String,
}

fn resolve(source: &PlanSource) -> ResolvedSource {
    match source {
        PlanSource::Plan(p) => ResolvedSource {
            plan: PlanGeometry {
                target_lps: p.path_target_lps,
                entry_lps: p.entry_lps,
            },
            zone: TargetZone::Sphere {
                center_lps: p.path_target_lps,
                radius_mm: DEFAULT_TARGET_RADIUS_MM,
            },
            groups: p.risk_groups.clone(),
            exclude_ids: Vec::new(),
            from: "plan.json (paths[0])".to_owned(),
        },
        PlanSource::Target {
            target_lps,
            zone,
            label_id,
            description,
            risk_groups,
        } => ResolvedSource {
            plan: PlanGeometry {
                target_lps: *target_lps,
                entry_lps: None,
            },
            zone: zone.clone(),
            groups: risk_groups.clone(),
            exclude_ids: label_id.iter().copied().collect(),
            from: format!("--target {description}"),
        },
    }
}

impl Session {
    /// Builds the guidance engine (distance transforms: seconds on a full CT).
    pub fn new(
        ct_grid: &Grid,
        labels: Volume<u16>,
        names: BTreeMap<u32, String>,
        source: PlanSource,
        registration: Option<Mat4>,
        inputs: SessionInputs,
    ) -> Self {
        Self::with_timing(
            ct_grid,
            labels,
            names,
            source,
            registration,
            inputs,
            FieldTiming::Now,
        )
    }

    /// [`Session::new`] with the risk distance fields computed `timing` (a server starts
    /// answering at once with [`FieldTiming::Background`]).
    pub fn with_timing(
        ct_grid: &Grid,
        labels: Volume<u16>,
        names: BTreeMap<u32, String>,
        source: PlanSource,
        registration: Option<Mat4>,
        inputs: SessionInputs,
        timing: FieldTiming,
    ) -> Self {
        let resolved = resolve(&source);
        let groups_from = match (&source, &resolved.groups) {
            (_, None) => "default TotalSegmentator set (pinhole_guidance::default_risk_groups)",
            (PlanSource::Plan(_), Some(_)) => "plan.json profile.risk_groups",
            (PlanSource::Target { .. }, Some(_)) => {
                "given with the target (see each group's source)"
            }
        };
        let groups = resolved.groups.unwrap_or_else(default_risk_groups);
        let target_zone = match &resolved.zone {
            TargetZone::Mask(_) => TargetZoneInfo::Label,
            TargetZone::Sphere {
                center_lps,
                radius_mm,
            } => TargetZoneInfo::Sphere {
                center_lps: *center_lps,
                radius_mm: *radius_mm,
            },
        };
        let guidance = Guidance::with_timing(
            resolved.plan,
            resolved.zone,
            labels,
            names,
            &groups,
            &resolved.exclude_ids,
            Thresholds::default(),
            timing,
        );
        let description = SessionDescription {
            schema_version: SESSION_SCHEMA_VERSION,
            note: NOTE.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            inputs,
            coordinates: "LPS mm (tracked poses arrive in RAS and are converted at the edge)"
                .to_owned(),
            ct: GridInfo::of(ct_grid),
            labels: GridInfo::of(guidance.labels().grid()),
            plan: SessionPlan {
                from: resolved.from,
                target_lps: guidance.plan().target_lps,
                entry_lps: guidance.plan().entry_lps,
                line_defined: guidance.plan().direction().is_some(),
                target_zone,
            },
            risk_groups_from: groups_from.to_owned(),
            risk_groups: guidance.risk_groups().to_vec(),
            thresholds: guidance.thresholds(),
            registration_reference_to_ras: registration,
            warnings: absent_structure_warnings(guidance.risk_groups()),
        };
        Self {
            guidance,
            description,
            registration,
            viewer: None,
        }
    }
}
