//! Live needle guidance: pure, synchronous geometry. Given the plan (target and, when a
//! planned path exists, its entry), the label map with its risk groups, and a needle pose
//! in LPS, [`Guidance::evaluate`] returns the [`GuidanceMetrics`] sent to every client.
//!
//! Everything here is in LPS mm; RAS enters and leaves only at the OpenIGTLink edge
//! ([`crate::pose`]).
//!
//! Risk groups are [`RiskGroup`]s, the same type the needle planner's profiles use, so a
//! plan's `profile.risk_groups` drive guidance unchanged.
//!
//! Risk distances come from one exact Euclidean distance transform per risk group
//! ([`pinhole_volume::distance_to`], voxel-centre distances), sampled trilinearly at the
//! tip. The nearest structure's *name* is the label of the nearest group voxel, found by
//! stepping from the tip down the distance field's gradient by the distance (the nearest
//! boundary point of a Euclidean distance field) and searching a small box there.
//!
//! Alert levels (documented thresholds, [`Thresholds`]):
//! - `danger`: the tip is inside a risk structure or closer than that group's
//!   `clearance_mm` (default [`DEFAULT_CLEARANCE_MM`] = 5 mm), or it has overshot the
//!   target by more than `overshoot_danger_mm` (5 mm) along the plan;
//! - `caution`: a risk group closer than its clearance + `caution_margin_mm` (5 mm), a
//!   lateral deviation above `lateral_caution_mm` (3 mm), an angle above
//!   `angle_caution_deg` (5°), the tip past the target by more than
//!   [`AT_TARGET_TOLERANCE_MM`], or the tip outside the volume (no distances there);
//! - `ok` otherwise.
//!
//! Looking ahead: the needle's extended line from the tip to the target's depth along
//! the needle is walked through the label map (steps of a quarter of the smallest voxel
//! spacing, nearest voxel); the first voxel of a risk group is the
//! [`GuidanceMetrics::trajectory_hit`], and an alert `danger` ("trajectory enters …"), so
//! that a wrong angle is caught before the tip gets there.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

pub use pinhole_plan_needle::profile::RiskGroup;
use pinhole_volume::math::{unit, DVec3, Vec3};
use pinhole_volume::{distance_to, Mask, Volume};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Clearance used for default risk groups and for groups that give none (mm).
pub const DEFAULT_CLEARANCE_MM: f64 = 5.0;
/// Radius of the target zone when the target is a point (plan.json or `--target x,y,z`).
pub const DEFAULT_TARGET_RADIUS_MM: f64 = 5.0;
/// Note carried by every JSON the server emits.
pub const NOTE: &str = "Not for clinical use: research software, guidance is illustrative only.";
/// Version of the [`GuidanceMetrics`] format (`docs/schemas/guidance-metrics.schema.json`).
pub const METRICS_SCHEMA_VERSION: u32 = 1;

/// Alert thresholds (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Thresholds {
    pub caution_margin_mm: f64,
    pub lateral_caution_mm: f64,
    pub angle_caution_deg: f64,
    pub overshoot_danger_mm: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            caution_margin_mm: 5.0,
            lateral_caution_mm: 3.0,
            angle_caution_deg: 5.0,
            overshoot_danger_mm: 5.0,
        }
    }
}

/// Depths within this of the target count as at the target, not past it: a tip at the
/// target (up to the floating-point noise of the RAS → LPS chain) is `ok`. Half the
/// 0.1 mm resolution of the alert text, so "past the target" never reads "0.0 mm".
pub const AT_TARGET_TOLERANCE_MM: f64 = 0.05;

/// Where [`default_risk_groups`] come from (carried in each group's `source`).
pub const DEFAULT_GROUPS_SOURCE: &str =
    "Pinhole's default guidance set (pinhole_guidance::default_risk_groups): structures a needle must not enter, 5 mm clearance";

/// TotalSegmentator class names checked when the plan gives no `profile.risk_groups`
/// (those present in the label table and the label map are used): great vessels, heart,
/// hollow organs and airway, spinal cord. Each group's clearance is 5 mm.
pub fn default_risk_groups() -> Vec<RiskGroup> {
    let group = |name: &str, labels: &[&str]| RiskGroup {
        name: name.to_owned(),
        labels: labels.iter().map(|s| (*s).to_owned()).collect(),
        clearance_mm: DEFAULT_CLEARANCE_MM,
        optional: true,
        weight: 1.0,
        source: DEFAULT_GROUPS_SOURCE.to_owned(),
    };
    vec![
        group(
            "great_vessels",
            &[
                "aorta",
                "inferior_vena_cava",
                "superior_vena_cava",
                "portal_vein_and_splenic_vein",
                "pulmonary_artery",
                "pulmonary_vein",
                "brachiocephalic_trunk",
                "brachiocephalic_vein_left",
                "brachiocephalic_vein_right",
                "common_carotid_artery_left",
                "common_carotid_artery_right",
                "subclavian_artery_left",
                "subclavian_artery_right",
                "iliac_artery_left",
                "iliac_artery_right",
                "iliac_vena_left",
                "iliac_vena_right",
                "atrial_appendage_left",
            ],
        ),
        group("heart", &["heart"]),
        group(
            "hollow_organs",
            &[
                "esophagus",
                "trachea",
                "stomach",
                "duodenum",
                "small_bowel",
                "colon",
                "gallbladder",
                "urinary_bladder",
            ],
        ),
        group("spinal_cord", &["spinal_cord"]),
    ]
}

/// Where the needle should go. `entry_lps` is `None` when only a target was given: the
/// planned line, lateral deviation and angle are then undefined (reported as null).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanGeometry {
    pub target_lps: Vec3,
    pub entry_lps: Option<Vec3>,
}

impl PlanGeometry {
    /// The unit direction entry → target, when the line is defined and not degenerate.
    pub fn direction(&self) -> Option<Vec3> {
        let entry = self.entry_lps?;
        unit(DVec3::from(self.target_lps) - DVec3::from(entry)).map(|d| d.to_array())
    }
}

/// The region that counts as "inside the target".
#[derive(Debug, Clone)]
pub enum TargetZone {
    /// Voxels of a label (or any mask) on the label grid.
    Mask(Box<Mask>),
    /// A ball around a point.
    Sphere { center_lps: Vec3, radius_mm: f64 },
}

impl TargetZone {
    fn contains(&self, p: Vec3) -> bool {
        match self {
            TargetZone::Mask(m) => m.sample_nearest(p).unwrap_or(false),
            TargetZone::Sphere {
                center_lps,
                radius_mm,
            } => DVec3::from(p).distance(DVec3::from(*center_lps)) <= *radius_mm,
        }
    }
}

/// A needle pose in LPS: the tip and the unit axis (pointing towards the tip's travel).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NeedlePose {
    pub tip_lps: Vec3,
    pub axis_lps: Vec3,
}

/// One risk group's distance field on the label grid (filled once; empty while a
/// background thread is still computing it).
struct GroupField {
    name: String,
    clearance_mm: f64,
    ids: Vec<u32>,
    distance: FieldCell,
}

/// A distance field filled once, possibly by another thread.
type FieldCell = Arc<OnceLock<Volume<f32>>>;

/// When [`Guidance`] computes its risk distance fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldTiming {
    /// Before the constructor returns (seconds on a full CT).
    #[default]
    Now,
    /// In a background thread, so guidance answers at once; until a group's field is
    /// ready, every update names the group in `risk_groups_pending`, reports no nearest
    /// structure, and is at least a caution.
    Background,
}

/// A risk group as reported in the session description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RiskGroupInfo {
    pub name: String,
    pub clearance_mm: f64,
    /// Labels of the group found in the label table and present in the label map.
    pub labels: Vec<String>,
    /// Labels of the group that were not found (absent from the table or the map; the
    /// target's own label is neither here nor in `labels`).
    pub missing: Vec<String>,
}

/// The nearest risk structure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NearestStructure {
    /// Label name of the nearest voxel (the group name when it cannot be told).
    pub name: String,
    pub group: String,
    pub distance_mm: f64,
    pub clearance_mm: f64,
}

/// Distance to one risk group at the tip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GroupDistance {
    pub group: String,
    pub distance_mm: f64,
    pub clearance_mm: f64,
}

/// The first risk structure on the needle's extended line before the target's depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrajectoryHit {
    /// Label name of the first risk voxel met.
    pub name: String,
    pub group: String,
    /// From the tip along the needle axis, mm.
    pub distance_mm: f64,
    pub point_lps: Vec3,
}

/// Alert level.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Alert {
    Ok,
    Caution,
    Danger,
}

impl Alert {
    pub fn as_str(self) -> &'static str {
        match self {
            Alert::Ok => "ok",
            Alert::Caution => "caution",
            Alert::Danger => "danger",
        }
    }
}

/// What the server sends at every update (STRING `GuidanceMetrics`, `/ws/guidance`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GuidanceMetrics {
    /// Version of this message's format ([`METRICS_SCHEMA_VERSION`]).
    pub schema_version: u32,
    pub note: String,
    pub version: String,
    /// Update counter (1 for the first pose).
    pub seq: u64,
    /// Timestamp of the pose message (seconds since 1970, 0 when unknown).
    pub timestamp_s: f64,
    pub device: String,
    pub tip_lps: Vec3,
    pub needle_axis_lps: Vec3,
    pub target_lps: Vec3,
    pub entry_lps: Option<Vec3>,
    pub tip_to_target_mm: f64,
    /// Distance of the tip from the planned (infinite) line; null without a plan line.
    pub lateral_deviation_mm: Option<f64>,
    /// Angle between the needle axis and the plan direction; null without a plan line.
    pub angle_deg: Option<f64>,
    /// (target − tip) projected on the plan direction (negative: past the target). With
    /// no plan line, projected on the needle axis instead.
    pub depth_remaining_mm: f64,
    pub nearest_structure: Option<NearestStructure>,
    pub risk_distances: Vec<GroupDistance>,
    /// Risk groups whose distance field is still being computed (just after start, see
    /// [`FieldTiming::Background`]): not in `risk_distances`, and no `nearest_structure`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risk_groups_pending: Vec<String>,
    /// The first risk structure the needle's extended line enters before the target's
    /// depth (null: none, or the target is not ahead).
    #[serde(default)]
    pub trajectory_hit: Option<TrajectoryHit>,
    pub inside_target: bool,
    pub inside_volume: bool,
    pub alert: Alert,
    pub alert_reasons: Vec<String>,
    /// "plan path" or why the line is undefined.
    pub plan_line: String,
    /// Server wall-clock time when this update was computed (seconds since 1970); set by
    /// the guidance server, absent from direct library calls. A client compares it with
    /// its own clock to see how old the guidance it shows is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_unix_s: Option<f64>,
    /// The needle against the latest tracked ultrasound frame's image plane; set by the
    /// guidance server when a frame no older than its `us_plane_max_age` exists, absent
    /// otherwise (and from direct library calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub us_plane: Option<UsPlaneMetrics>,
}

/// The needle against an ultrasound image plane (the server fills it from
/// `pinhole_ultrasound::NeedleInPlane`; mirrored here so that the metrics' JSON schema
/// stays in this crate). Pixel coordinates are `[i, j]` of the frame, integers at pixel
/// centres; LPS mm otherwise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UsPlaneMetrics {
    /// Server number of the ultrasound frame (1 for the first accepted frame).
    pub frame_seq: u64,
    /// Device name of the frame's IMAGE message.
    pub frame_device: String,
    /// Age of the frame when the pose was evaluated (ms, server clock).
    pub frame_age_ms: f64,
    /// Signed distance of the tip from the plane (mm), `+` along the plane normal
    /// (pixel x step × pixel y step).
    pub tip_distance_mm: f64,
    /// Angle between the needle and the plane (degrees, 0 = in the plane).
    pub angle_to_plane_deg: f64,
    /// Where the needle's line crosses the plane; null when parallel.
    pub crossing: Option<UsPlaneCrossing>,
    /// The tip projected on the plane, pixels.
    pub tip_pixel: [f64; 2],
    /// The projected needle (shaft point behind the tip, tip), pixels.
    pub needle_segment_px: [[f64; 2]; 2],
    /// The predicted path (tip, point ahead), pixels.
    pub predicted_path_px: [[f64; 2]; 2],
    /// |tip distance| ≤ `in_plane_tolerance_mm`.
    pub in_plane: bool,
    /// |tip distance| > `alert_distance_mm`.
    pub out_of_plane_alert: bool,
    pub in_plane_tolerance_mm: f64,
    pub alert_distance_mm: f64,
}

/// Where the needle's line crosses an ultrasound image plane.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UsPlaneCrossing {
    pub point_lps: Vec3,
    pub pixel: [f64; 2],
    /// From the tip along the needle (mm): `+` ahead of the tip, `−` behind it.
    pub along_needle_from_tip_mm: f64,
}

/// The guidance engine: plan, target zone and risk distance fields. Immutable once built.
pub struct Guidance {
    plan: PlanGeometry,
    zone: TargetZone,
    labels: Volume<u16>,
    names: BTreeMap<u32, String>,
    groups: Vec<GroupField>,
    group_info: Vec<RiskGroupInfo>,
    thresholds: Thresholds,
}

impl std::fmt::Debug for Guidance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guidance")
            .field("plan", &self.plan)
            .field("groups", &self.group_info)
            .finish_non_exhaustive()
    }
}

impl Guidance {
    /// Builds the distance fields. `names` maps label ids to names (the label table);
    /// `exclude_ids` are never risks (the target's own label). Groups whose labels are
    /// all absent are kept in [`Guidance::risk_groups`] with their missing labels but get
    /// no field.
    pub fn new(
        plan: PlanGeometry,
        zone: TargetZone,
        labels: Volume<u16>,
        names: BTreeMap<u32, String>,
        risk_groups: &[RiskGroup],
        exclude_ids: &[u32],
        thresholds: Thresholds,
    ) -> Self {
        Self::with_timing(
            plan,
            zone,
            labels,
            names,
            risk_groups,
            exclude_ids,
            thresholds,
            FieldTiming::Now,
        )
    }

    /// [`Guidance::new`] with the distance fields computed `timing`.
    #[allow(clippy::too_many_arguments)]
    pub fn with_timing(
        plan: PlanGeometry,
        zone: TargetZone,
        labels: Volume<u16>,
        names: BTreeMap<u32, String>,
        risk_groups: &[RiskGroup],
        exclude_ids: &[u32],
        thresholds: Thresholds,
        timing: FieldTiming,
    ) -> Self {
        let mut present = vec![false; usize::from(u16::MAX) + 1];
        for &v in labels.data() {
            present[usize::from(v)] = true;
        }
        let id_of: BTreeMap<&str, u32> = names.iter().map(|(&id, n)| (n.as_str(), id)).collect();
        let mut groups = Vec::new();
        let mut group_info = Vec::new();
        for g in risk_groups {
            let mut ids = Vec::new();
            let mut found = Vec::new();
            let mut missing = Vec::new();
            for label in &g.labels {
                match id_of.get(label.as_str()) {
                    Some(&id)
                        if id != 0
                            && !exclude_ids.contains(&id)
                            && present.get(id as usize).copied().unwrap_or(false) =>
                    {
                        ids.push(id);
                        found.push(label.clone());
                    }
                    // The target's own label is no risk, and not missing either.
                    Some(&id) if exclude_ids.contains(&id) => {}
                    _ => missing.push(label.clone()),
                }
            }
            let clearance_mm = if g.clearance_mm.is_finite() && g.clearance_mm >= 0.0 {
                g.clearance_mm
            } else {
                DEFAULT_CLEARANCE_MM
            };
            group_info.push(RiskGroupInfo {
                name: g.name.clone(),
                clearance_mm,
                labels: found,
                missing,
            });
            if ids.is_empty() {
                continue;
            }
            groups.push(GroupField {
                name: g.name.clone(),
                clearance_mm,
                ids,
                distance: Arc::new(OnceLock::new()),
            });
        }
        compute_fields(&labels, &groups, timing);
        Self {
            plan,
            zone,
            labels,
            names,
            groups,
            group_info,
            thresholds,
        }
    }

    pub fn plan(&self) -> &PlanGeometry {
        &self.plan
    }

    pub fn risk_groups(&self) -> &[RiskGroupInfo] {
        &self.group_info
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    pub fn labels(&self) -> &Volume<u16> {
        &self.labels
    }

    /// Whether every risk group's distance field is ready (always, with
    /// [`FieldTiming::Now`]).
    pub fn risk_fields_ready(&self) -> bool {
        self.groups.iter().all(|g| g.distance.get().is_some())
    }

    /// The metrics for one needle pose (`seq`, `timestamp_s` and `device` are copied).
    pub fn evaluate(
        &self,
        pose: &NeedlePose,
        seq: u64,
        timestamp_s: f64,
        device: &str,
    ) -> GuidanceMetrics {
        let tip = pose.tip_lps;
        let axis = unit(DVec3::from(pose.axis_lps)).unwrap_or(DVec3::Z);
        let target = self.plan.target_lps;
        let to_target = DVec3::from(target) - DVec3::from(tip);
        let direction = self.plan.direction();
        let (lateral, angle, depth) = match direction.map(DVec3::from) {
            Some(d) => {
                let along = to_target.dot(d);
                let off = to_target - d * along;
                let cos = axis.dot(d).clamp(-1.0, 1.0);
                (Some(off.length()), Some(cos.acos().to_degrees()), along)
            }
            None => (None, None, to_target.dot(axis)),
        };
        let inside_volume = self.labels.grid().world_to_voxel(tip).is_some();
        let mut risk_distances = Vec::new();
        let mut nearest: Option<(usize, f64)> = None;
        let mut pending = Vec::new();
        for (i, g) in self.groups.iter().enumerate() {
            let Some(field) = g.distance.get() else {
                pending.push(g.name.clone());
                continue;
            };
            let Some(d) = sample_distance(field, tip) else {
                continue;
            };
            risk_distances.push(GroupDistance {
                group: g.name.clone(),
                distance_mm: d,
                clearance_mm: g.clearance_mm,
            });
            if nearest.is_none_or(|(_, best)| d < best) {
                nearest = Some((i, d));
            }
        }
        // With a group pending, the nearest of the others may not be the nearest at all.
        let nearest = nearest.filter(|_| pending.is_empty());
        let nearest_structure = nearest.and_then(|(i, d)| {
            let g = self.groups.get(i)?;
            Some(NearestStructure {
                name: self.nearest_label_name(g, tip, d),
                group: g.name.clone(),
                distance_mm: d,
                clearance_mm: g.clearance_mm,
            })
        });
        let inside_target = self.zone.contains(tip);
        let trajectory_hit = self.trajectory_hit(tip, axis, to_target.dot(axis));
        let (mut alert, mut alert_reasons) = self.alert(
            &risk_distances,
            lateral,
            angle,
            depth,
            direction.is_some(),
            inside_volume,
        );
        if !pending.is_empty() {
            alert = alert.max(Alert::Caution);
            alert_reasons.push(format!(
                "risk distances still being computed for {} (just after start): nearest structure unknown",
                pending.join(", ")
            ));
        }
        if let Some(hit) = &trajectory_hit {
            alert = Alert::Danger;
            alert_reasons.push(format!(
                "trajectory enters {} ({}) {:.1} mm ahead, before the target",
                hit.name, hit.group, hit.distance_mm
            ));
        }
        GuidanceMetrics {
            schema_version: METRICS_SCHEMA_VERSION,
            note: NOTE.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            seq,
            timestamp_s,
            device: device.to_owned(),
            tip_lps: tip,
            needle_axis_lps: axis.to_array(),
            target_lps: target,
            entry_lps: self.plan.entry_lps,
            tip_to_target_mm: to_target.length(),
            lateral_deviation_mm: lateral,
            angle_deg: angle,
            depth_remaining_mm: depth,
            nearest_structure,
            risk_distances,
            risk_groups_pending: pending,
            trajectory_hit,
            inside_target,
            inside_volume,
            alert,
            alert_reasons,
            plan_line: if direction.is_some() {
                "plan path (entry -> target)"
            } else {
                "undefined: only a target was given, so lateral deviation and angle are null and depth is measured along the needle axis"
            }
            .to_owned(),
            published_unix_s: None,
            us_plane: None,
        }
    }

    fn alert(
        &self,
        risks: &[GroupDistance],
        lateral: Option<f64>,
        angle: Option<f64>,
        depth: f64,
        has_line: bool,
        inside_volume: bool,
    ) -> (Alert, Vec<String>) {
        let t = &self.thresholds;
        let mut level = Alert::Ok;
        let mut reasons = Vec::new();
        let mut raise = |l: Alert, why: String, level: &mut Alert| {
            *level = (*level).max(l);
            reasons.push(why);
        };
        for r in risks {
            if r.distance_mm <= 0.0 {
                raise(Alert::Danger, format!("tip inside {}", r.group), &mut level);
            } else if r.distance_mm < r.clearance_mm {
                raise(
                    Alert::Danger,
                    format!(
                        "{:.1} mm from {} (clearance {:.1} mm)",
                        r.distance_mm, r.group, r.clearance_mm
                    ),
                    &mut level,
                );
            } else if r.distance_mm < r.clearance_mm + t.caution_margin_mm {
                raise(
                    Alert::Caution,
                    format!(
                        "{:.1} mm from {} (clearance {:.1} mm + {:.1} mm margin)",
                        r.distance_mm, r.group, r.clearance_mm, t.caution_margin_mm
                    ),
                    &mut level,
                );
            }
        }
        if has_line && depth < -t.overshoot_danger_mm {
            raise(
                Alert::Danger,
                format!("{:.1} mm past the target", -depth),
                &mut level,
            );
        } else if has_line && depth < -AT_TARGET_TOLERANCE_MM {
            raise(
                Alert::Caution,
                format!("{:.1} mm past the target", -depth),
                &mut level,
            );
        }
        if let Some(l) = lateral.filter(|&l| l > t.lateral_caution_mm) {
            raise(
                Alert::Caution,
                format!("{l:.1} mm off the planned line"),
                &mut level,
            );
        }
        if let Some(a) = angle.filter(|&a| a > t.angle_caution_deg) {
            raise(
                Alert::Caution,
                format!("{a:.1} deg from the planned direction"),
                &mut level,
            );
        }
        if !inside_volume {
            raise(
                Alert::Caution,
                "tip outside the imaged volume: no risk distances".to_owned(),
                &mut level,
            );
        }
        (level, reasons)
    }

    /// The label of the group voxel nearest to `tip` (distance `d` from the group's field).
    /// The first risk voxel on `tip + s·axis`, 0 < s ≤ `ahead_mm` (nearest voxel).
    fn trajectory_hit(&self, tip: Vec3, axis: DVec3, ahead_mm: f64) -> Option<TrajectoryHit> {
        let grid = self.labels.grid();
        let spacing = grid.spacing_mm();
        let step_mm = 0.25 * spacing[0].min(spacing[1]).min(spacing[2]);
        if !(ahead_mm > 0.0 && step_mm > 0.0) {
            return None;
        }
        let steps = (ahead_mm / step_mm).ceil() as usize;
        (1..=steps).find_map(|n| {
            let s = (n as f64 * step_mm).min(ahead_mm);
            let point = (DVec3::from(tip) + axis * s).to_array();
            let id = u32::from(self.labels.sample_nearest(point)?);
            let group = self.groups.iter().find(|g| g.ids.contains(&id))?;
            Some(TrajectoryHit {
                name: self
                    .names
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| group.name.clone()),
                group: group.name.clone(),
                distance_mm: s,
                point_lps: point,
            })
        })
    }

    fn nearest_label_name(&self, g: &GroupField, tip: Vec3, d: f64) -> String {
        let grid = self.labels.grid();
        // Foot of the distance field's gradient from the tip.
        let field = g.distance.get();
        let foot = if d > 0.0 {
            match field.and_then(|f| gradient(f, tip)) {
                Some(gr) => (DVec3::from(tip) - gr * d).to_array(),
                None => tip,
            }
        } else {
            tip
        };
        let c = grid.world_to_index(foot);
        let dims = grid.dims();
        let radius = [3i64, 3, 3];
        let mut best: Option<(f64, u32)> = None;
        for dk in -radius[2]..=radius[2] {
            for dj in -radius[1]..=radius[1] {
                for di in -radius[0]..=radius[0] {
                    let ijk = [
                        c[0].round() as i64 + di,
                        c[1].round() as i64 + dj,
                        c[2].round() as i64 + dk,
                    ];
                    if (0..3).any(|a| ijk[a] < 0 || ijk[a] >= dims[a] as i64) {
                        continue;
                    }
                    let ijk = ijk.map(|v| v as usize);
                    let Some(id) = self.labels.get(ijk).map(u32::from) else {
                        continue;
                    };
                    if !g.ids.contains(&id) {
                        continue;
                    }
                    let p = grid.index_to_world(ijk.map(|v| v as f64));
                    let dist = DVec3::from(p).distance(DVec3::from(tip));
                    if best.is_none_or(|(b, _)| dist < b) {
                        best = Some((dist, id));
                    }
                }
            }
        }
        best.and_then(|(_, id)| self.names.get(&id).cloned())
            .unwrap_or_else(|| g.name.clone())
    }
}

/// Fills each group's distance field, now or in one background thread (now when the
/// thread cannot be started).
fn compute_fields(labels: &Volume<u16>, groups: &[GroupField], timing: FieldTiming) {
    let jobs: Vec<(Vec<u32>, FieldCell)> = groups
        .iter()
        .map(|g| (g.ids.clone(), Arc::clone(&g.distance)))
        .collect();
    let run = |labels: &Volume<u16>, jobs: &[(Vec<u32>, FieldCell)]| {
        for (ids, cell) in jobs {
            let mask = labels.map(|v| ids.contains(&u32::from(v)));
            let _ = cell.set(distance_to(&mask));
        }
    };
    if timing == FieldTiming::Background {
        let owned = labels.clone();
        let background_jobs = jobs.clone();
        let started = std::thread::Builder::new()
            .name("risk-distance-fields".into())
            .spawn(move || run(&owned, &background_jobs));
        if started.is_ok() {
            return;
        }
    }
    run(labels, &jobs);
}

/// Trilinear distance at `p`; near the border (outside the hull of voxel centres but in
/// the grid) the nearest voxel's value.
fn sample_distance(field: &Volume<f32>, p: Vec3) -> Option<f64> {
    let v = field
        .sample_trilinear(p)
        .or_else(|| field.sample_nearest(p).map(f64::from))?;
    v.is_finite().then_some(v)
}

/// Unit gradient of a distance field by central differences (one voxel step).
fn gradient(field: &Volume<f32>, p: Vec3) -> Option<DVec3> {
    let h = field
        .grid()
        .spacing_mm()
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let mut g = [0.0; 3];
    for a in 0..3 {
        let mut plus = p;
        let mut minus = p;
        plus[a] += h;
        minus[a] -= h;
        g[a] = (sample_distance(field, plus)? - sample_distance(field, minus)?) / (2.0 * h);
    }
    unit(DVec3::from(g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_volume::Grid;

    /// The aorta, 5 mm clearance.
    fn vessels_group() -> RiskGroup {
        RiskGroup {
            name: "vessels".into(),
            labels: vec!["aorta".into()],
            clearance_mm: 5.0,
            optional: false,
            weight: 1.0,
            source: "test".into(),
        }
    }

    fn engine(entry: Option<Vec3>) -> Guidance {
        let grid = Grid::axis_aligned([40, 40, 40], [1.0; 3], [0.0; 3]).unwrap();
        let mut data = vec![0u16; grid.voxel_count()];
        // A "vessel" slab at i = 30..=31.
        for k in 0..40 {
            for j in 0..40 {
                for i in 30..32 {
                    data[grid.offset([i, j, k])] = 7;
                }
            }
        }
        let labels = Volume::new(grid, data).unwrap();
        let names = BTreeMap::from([(7, "aorta".to_owned())]);
        let groups = vec![vessels_group()];
        Guidance::new(
            PlanGeometry {
                target_lps: [10.0, 20.0, 30.0],
                entry_lps: entry,
            },
            TargetZone::Sphere {
                center_lps: [10.0, 20.0, 30.0],
                radius_mm: 2.0,
            },
            labels,
            names,
            &groups,
            &[],
            Thresholds::default(),
        )
    }

    #[test]
    fn slab_distance_and_name() {
        let g = engine(Some([10.0, 20.0, 0.0]));
        let pose = NeedlePose {
            tip_lps: [20.0, 20.0, 10.0],
            axis_lps: [0.0, 0.0, 1.0],
        };
        let m = g.evaluate(&pose, 1, 0.0, "n");
        let n = m.nearest_structure.unwrap();
        assert_eq!(n.name, "aorta");
        assert!((n.distance_mm - 10.0).abs() < 1e-6);
        assert!((m.lateral_deviation_mm.unwrap() - 10.0).abs() < 1e-9);
        assert!((m.depth_remaining_mm - 20.0).abs() < 1e-9);
        assert_eq!(m.alert, Alert::Caution);
    }

    /// Background fields (#19): once ready, updates equal those of fields computed up
    /// front; while a field is pending, the group is named, no nearest structure is
    /// reported (the slab is 10 mm away, yet nothing else is known) and the alert is at
    /// least a caution, never `ok`.
    #[test]
    fn pending_risk_fields_are_reported_not_guessed() {
        let now = engine(Some([10.0, 20.0, 0.0]));
        let pose = NeedlePose {
            tip_lps: [10.0, 20.0, 29.0],
            axis_lps: [0.0, 0.0, 1.0],
        };
        let expected = now.evaluate(&pose, 1, 0.0, "n");
        assert_eq!(expected.alert, Alert::Ok);
        assert!(expected.risk_groups_pending.is_empty());

        let background = Guidance::with_timing(
            now.plan.clone(),
            now.zone.clone(),
            now.labels.clone(),
            now.names.clone(),
            &[vessels_group()],
            &[],
            Thresholds::default(),
            FieldTiming::Background,
        );
        let started = std::time::Instant::now();
        while !background.risk_fields_ready() {
            assert!(
                started.elapsed().as_secs() < 60,
                "fields never became ready"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(background.evaluate(&pose, 1, 0.0, "n"), expected);

        let mut pending = engine(Some([10.0, 20.0, 0.0]));
        pending.groups[0].distance = Arc::new(OnceLock::new());
        assert!(!pending.risk_fields_ready());
        let m = pending.evaluate(&pose, 1, 0.0, "n");
        assert_eq!(m.risk_groups_pending, vec!["vessels".to_owned()]);
        assert!(m.risk_distances.is_empty());
        assert!(m.nearest_structure.is_none());
        assert_eq!(m.alert, Alert::Caution);
        assert!(m
            .alert_reasons
            .iter()
            .any(|r| r.contains("still being computed for vessels")));
        let json = serde_json::to_value(&expected).unwrap();
        assert!(
            json.get("risk_groups_pending").is_none(),
            "absent once ready"
        );
    }

    /// Regression (#17): a tip at the target, up to floating-point noise, is `ok`, not
    /// "caution: 0.0 mm past the target".
    #[test]
    fn tip_at_the_target_is_ok() {
        let g = engine(Some([10.0, 20.0, 0.0]));
        let pose = NeedlePose {
            tip_lps: [10.0, 20.0, 30.0 + 1e-9],
            axis_lps: [0.0, 0.0, 1.0],
        };
        let m = g.evaluate(&pose, 1, 0.0, "n");
        assert!(m.depth_remaining_mm < 0.0, "just past, by noise");
        assert_eq!(m.alert, Alert::Ok, "{:?}", m.alert_reasons);
        // 1 mm past is still a caution.
        let pose = NeedlePose {
            tip_lps: [10.0, 20.0, 31.0],
            axis_lps: [0.0, 0.0, 1.0],
        };
        let m = g.evaluate(&pose, 2, 0.0, "n");
        assert_eq!(m.alert, Alert::Caution);
        assert_eq!(m.alert_reasons, vec!["1.0 mm past the target".to_owned()]);
    }

    /// Regression (#17): the extended line is checked before the tip gets there. A plan
    /// along +x crosses the vessel slab at x = 30..31 (voxel centres; the nearest-voxel
    /// walk enters it between x = 29.5 and 29.75): from a tip at x = 10, the hit is
    /// 19.5–19.75 mm ahead.
    #[test]
    fn trajectory_hit_names_the_first_risk_structure_ahead() {
        let reference = engine(None);
        let g = Guidance::new(
            PlanGeometry {
                target_lps: [38.0, 20.0, 20.0],
                entry_lps: Some([2.0, 20.0, 20.0]),
            },
            TargetZone::Sphere {
                center_lps: [38.0, 20.0, 20.0],
                radius_mm: 2.0,
            },
            reference.labels().clone(),
            reference.names.clone(),
            &[vessels_group()],
            &[],
            Thresholds::default(),
        );
        let pose = NeedlePose {
            tip_lps: [10.0, 20.0, 20.0],
            axis_lps: [1.0, 0.0, 0.0],
        };
        let m = g.evaluate(&pose, 1, 0.0, "n");
        let hit = m.trajectory_hit.as_ref().expect("the slab is ahead");
        assert_eq!(
            (hit.name.as_str(), hit.group.as_str()),
            ("aorta", "vessels")
        );
        assert!((19.5..=19.75).contains(&hit.distance_mm), "{hit:?}");
        assert_eq!(m.alert, Alert::Danger);
        assert!(m
            .alert_reasons
            .iter()
            .any(|r| r.starts_with("trajectory enters aorta")));
        // Turned away from the slab (towards −x, where the target is not ahead): no hit.
        let away = NeedlePose {
            tip_lps: [10.0, 20.0, 20.0],
            axis_lps: [-1.0, 0.0, 0.0],
        };
        assert!(g.evaluate(&away, 2, 0.0, "n").trajectory_hit.is_none());
    }

    #[test]
    fn target_only_has_no_line() {
        let g = engine(None);
        let pose = NeedlePose {
            tip_lps: [10.0, 20.0, 20.0],
            axis_lps: [0.0, 0.0, 2.0],
        };
        let m = g.evaluate(&pose, 1, 0.0, "n");
        assert!(m.lateral_deviation_mm.is_none() && m.angle_deg.is_none());
        assert!((m.depth_remaining_mm - 10.0).abs() < 1e-9);
    }
}
