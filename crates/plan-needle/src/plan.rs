//! Candidate generation, hard rules, soft scores, Pareto set and top-k selection.

use std::collections::BTreeMap;
use std::sync::Arc;

use pinhole_volume::math::{cross, dot, norm};
use pinhole_volume::{LabelAim, Target, Vec3};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::context::{lut_of, Bins, Cell, CellCache, PlanningContext};
use crate::march::{Marcher, Rule};
use crate::profile::{matches_pattern, CaudalLevel, Profile, RiskGroup};
use crate::PlanError;

/// Search radius beyond the clearance within which exact clearances are reported, mm.
const EXACT_RADIUS_EXTRA_MM: f64 = 20.0;
/// Sampling step of the exact verification along a path, mm.
const VERIFY_STEP_MM: f64 = 0.25;
/// Clearance margins above this count as "far" in the soft score, mm.
pub(crate) const CLEARANCE_SATURATION_MM: f64 = 15.0;
/// Candidates (best score first) considered for the Pareto set.
const PARETO_POOL: usize = 2000;

/// What to plan.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Directions on the Fibonacci sphere.
    pub candidates: usize,
    /// Paths to return.
    pub top_k: usize,
    /// Evaluate only the path from this skin point (LPS mm) to the target.
    pub entry_lps: Option<Vec3>,
    /// Screen candidates eight at a time in SIMD lanes where the CPU has AVX2 (the
    /// results are the same; `false` forces the one-ray-at-a-time march).
    pub simd: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            candidates: 40_000,
            top_k: 5,
            entry_lps: None,
            simd: true,
        }
    }
}

/// A risk group as used: label names expanded against the label table, with its
/// clearance field (reported as the plain [`RiskGroup`] it resolves to).
#[derive(Debug, Clone)]
pub(crate) struct ResolvedGroup {
    pub name: String,
    pub labels: Vec<String>,
    pub clearance_mm: f64,
    pub weight: f64,
    pub source: String,
    ids: Vec<u16>,
    field: Arc<Vec<f32>>,
    bins: Arc<Bins>,
}

impl ResolvedGroup {
    /// The group as written into `plan.json`: its labels expanded.
    fn as_risk_group(&self) -> RiskGroup {
        RiskGroup {
            name: self.name.clone(),
            labels: self.labels.clone(),
            clearance_mm: self.clearance_mm,
            optional: false,
            weight: self.weight,
            source: self.source.clone(),
        }
    }
}

/// The profile as applied to one label table and target (written into plan.json).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AppliedProfile {
    /// The profile, its `risk_groups` with their label names expanded against the label
    /// table (the consumer contract: guidance reads them).
    #[serde(flatten)]
    pub profile: Profile,
    /// Labels the needle may cross, expanded.
    pub allowed_labels_resolved: Vec<String>,
    /// The z level (LPS mm) the entry must lie below (`null` without the rule, or when
    /// it is measured along the needle: `level = "footprint"`), and what defined it.
    pub entry_caudal_to_z_mm: Option<f64>,
    pub entry_caudal_to_from: Option<String>,
}

impl std::fmt::Debug for Bins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bins")
    }
}

/// One proposed path.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PathReport {
    pub rank: usize,
    pub entry_lps: Vec3,
    pub target_lps: Vec3,
    /// Unit vector from the target towards the entry.
    pub direction_lps: Vec3,
    pub length_mm: f64,
    /// Distance from the needle axis to the nearest voxel centre of each risk group,
    /// exact up to clearance + 20 mm (beyond: the coarse estimate); `null` for a group
    /// with no structure in the label map (not checked: the plan's `warnings` say why).
    pub min_clearance_mm: BTreeMap<String, Option<f64>>,
    pub skin_angle_deg: f64,
    pub axial_angle_deg: f64,
    pub capsule_angle_deg: Option<f64>,
    pub traverse_mm: BTreeMap<String, f64>,
    pub pleura_crossings: Option<u32>,
    /// How far the path stays caudal to the `entry_caudal_to` rule's labels, mm (negative:
    /// cranial, a violation): the level minus the entry's z, or with `level =
    /// "footprint"` the least (label voxel z − needle z) where the needle runs over the
    /// labels; `null` without the rule, or when the needle never runs over them.
    #[serde(default)]
    pub entry_caudal_to_margin_mm: Option<f64>,
    pub score: f64,
    pub pareto_optimal: bool,
    pub feasible: bool,
    /// Rules this path breaks (only with `--entry`).
    pub violations: Vec<String>,
}

/// The planner's answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    pub procedure: String,
    pub target_lps: Vec3,
    pub target: String,
    /// For a label target, the rule that chose the target point: `centroid`, `deepest`,
    /// `lower-pole` or `lower-pole-cortex` (`target` says whether the target or the
    /// profile's `target_aim` asked for it); `null` for a point or sphere.
    #[serde(default)]
    pub target_aim: Option<String>,
    pub profile: AppliedProfile,
    pub paths: Vec<PathReport>,
    /// Candidates rejected, by the first rule each broke.
    pub rejected: BTreeMap<String, usize>,
    pub candidates: usize,
    pub feasible: usize,
    pub pareto_size: usize,
    /// Every candidate that reached the skin: entry point, direction, feasible, score.
    #[serde(skip)]
    pub skin_points: Vec<(Vec3, Vec3, bool, f64)>,
    pub warnings: Vec<String>,
}

pub(crate) struct Rules {
    pub(crate) groups: Vec<ResolvedGroup>,
    /// Per coarse voxel: body depth (0 outside) then each group's distance, in chunks of
    /// `CELL_LANES` padded with the largest value, in quanta of `FIELD_QUANTUM_MM`.
    pub(crate) packed: Arc<Vec<Cell>>,
    pub(crate) organ_lut: Vec<bool>,
    pub(crate) traverse: Vec<(String, Vec<bool>, f64)>,
    pub(crate) lobes: Option<Vec<u8>>,
    pub(crate) avoid_fissures: bool,
    pub(crate) max_pleura: Option<u32>,
    pub(crate) caudal: Option<CaudalCheck>,
    pub(crate) approach: Vec<(Vec3, f64)>,
    pub(crate) max_length_mm: f64,
    pub(crate) max_skin_cos: f64,
    pub(crate) max_axial_deg: Option<f64>,
    pub(crate) needs_labels: bool,
    pub(crate) labels_all_the_way: bool,
    /// Risk groups with no structure in the label map: reported as `null` clearances.
    pub(crate) unchecked_groups: Vec<String>,
    /// length, clearance, skin angle, capsule angle.
    pub(crate) weights: [f64; 4],
}

#[derive(Clone)]
pub(crate) struct Candidate {
    pub(crate) dir: Vec3,
    pub(crate) entry: Vec3,
    pub(crate) length_mm: f64,
    pub(crate) coarse_min: Vec<f64>,
    pub(crate) skin_angle_deg: f64,
    pub(crate) capsule_angle_deg: Option<f64>,
    pub(crate) traverse_mm: Vec<f64>,
    pub(crate) pleura: Option<u32>,
    pub(crate) caudal_margin_mm: Option<f64>,
    pub(crate) score: f64,
    pub(crate) violations: Vec<String>,
}

pub(crate) enum Traced {
    Rejected(Rule),
    Missed,
    Reached(Box<Candidate>),
}

/// The `entry_caudal_to` rule as applied.
pub(crate) enum CaudalCheck {
    /// The entry's z must not exceed this (LPS mm).
    Level(f64),
    /// The needle must stay below the labels' voxels in their axial columns.
    Footprint(ColumnFloor),
}

/// The `entry_caudal_to` rule as applied, and for the report its level's z (LPS mm) and
/// what defined it.
type CaudalApplied = (Option<CaudalCheck>, Option<f64>, Option<String>);

/// Per column (i, j) of the label grid: the lowest world z (LPS mm) of a set of labels'
/// voxel centres in that column or its eight neighbours (+∞ where none).
pub(crate) struct ColumnFloor {
    nx: usize,
    ny: usize,
    floor: Vec<f64>,
}

impl ColumnFloor {
    fn new(ctx: &PlanningContext, ids: &[u16]) -> Self {
        let grid = ctx.labels.grid();
        let [nx, ny, _] = grid.dims();
        let lut = lut_of(ids);
        let mut lowest = vec![f64::INFINITY; nx * ny];
        for (o, &l) in ctx.labels.data().iter().enumerate() {
            if lut[usize::from(l)] {
                let ijk = grid.index_of_offset(o);
                let z = grid.index_to_world(ijk.map(|v| v as f64))[2];
                let c = ijk[0] + nx * ijk[1];
                lowest[c] = lowest[c].min(z);
            }
        }
        let mut floor = lowest.clone();
        for j in 0..ny {
            for i in 0..nx {
                let mut z = f64::INFINITY;
                for jj in j.saturating_sub(1)..(j + 2).min(ny) {
                    for ii in i.saturating_sub(1)..(i + 2).min(nx) {
                        z = z.min(lowest[ii + nx * jj]);
                    }
                }
                floor[i + nx * j] = z;
            }
        }
        Self { nx, ny, floor }
    }
}

impl PlanningContext {
    /// The least (floor − z) over the points of the segment `target`–`entry` that lie
    /// over `floor`'s labels and outside `organ` (label lookup), sampled every half of
    /// the label grid's smallest spacing; `None` when no point lies over them.
    pub(crate) fn footprint_margin(
        &self,
        floor: &ColumnFloor,
        organ: &[bool],
        target: Vec3,
        entry: Vec3,
    ) -> Option<f64> {
        let grid = self.labels.grid();
        let dims = grid.dims();
        let step = 0.5 * grid.spacing_mm().into_iter().fold(f64::INFINITY, f64::min);
        let length = norm([0, 1, 2].map(|a| entry[a] - target[a]));
        let n = (length / step).ceil().max(1.0) as usize;
        let labels = self.labels.data();
        let mut margin: Option<f64> = None;
        for s in 0..=n {
            let t = s as f64 / n as f64;
            let p = [0, 1, 2].map(|a| target[a] + (entry[a] - target[a]) * t);
            let ijk = grid.world_to_index(p).map(|v| v.round());
            if (0..3).any(|a| ijk[a] < 0.0 || ijk[a] >= dims[a] as f64) {
                continue;
            }
            let [i, j, k] = ijk.map(|v| v as usize);
            debug_assert!(i < floor.nx && j < floor.ny);
            let z = floor.floor[i + floor.nx * j];
            if !z.is_finite() || organ[usize::from(labels[grid.offset([i, j, k])])] {
                continue;
            }
            let m = z - p[2];
            margin = Some(margin.map_or(m, |old: f64| old.min(m)));
        }
        margin
    }
}

/// Unit directions on a Fibonacci sphere.
pub fn fibonacci_sphere(n: usize) -> Vec<Vec3> {
    let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
    (0..n)
        .map(|i| {
            let z = 1.0 - (2.0 * i as f64 + 1.0) / n as f64;
            let r = (1.0 - z * z).max(0.0).sqrt();
            let phi = golden * i as f64;
            [r * phi.cos(), r * phi.sin(), z]
        })
        .collect()
}

/// `v / |v|`, or `v` itself when it is zero.
pub(crate) fn unit(v: Vec3) -> Vec3 {
    let n = norm(v);
    if n > 0.0 {
        v.map(|x| x / n)
    } else {
        v
    }
}

/// Expands label patterns; returns `(ids, names, missing patterns)`.
fn expand(patterns: &[String], table: &[(u32, String)]) -> (Vec<u16>, Vec<String>, Vec<String>) {
    let mut ids = Vec::new();
    let mut names = Vec::new();
    let mut missing = Vec::new();
    for pattern in patterns {
        let mut hit = false;
        for (id, name) in table {
            if matches_pattern(pattern, name) {
                if let Ok(id16) = u16::try_from(*id) {
                    if !ids.contains(&id16) {
                        ids.push(id16);
                        names.push(name.clone());
                    }
                    hit = true;
                }
            }
        }
        if !hit {
            missing.push(pattern.clone());
        }
    }
    ids.sort_unstable();
    (ids, names, missing)
}

/// Each risk group's label ids present in the label map (minus the allowed ones) and
/// names. Labels missing from the table go to `missing` (unless the group is optional);
/// a label pattern with no structure in the label map is a warning (not checked), and a
/// group left with none goes to `unchecked` (its clearance is reported as `null`).
fn risk_group_labels<'p>(
    profile: &'p Profile,
    table: &[(u32, String)],
    allowed: &[u16],
    present: &dyn Fn(u16) -> bool,
    missing: &mut Vec<String>,
    unchecked: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Vec<(&'p RiskGroup, Vec<u16>, Vec<String>)> {
    let mut groups = Vec::new();
    for g in &profile.risk_groups {
        let (all_ids, names, miss) = expand(&g.labels, table);
        if !g.optional {
            missing.extend(miss.iter().map(|m| format!("{m} (risk group {})", g.name)));
        }
        let absent: Vec<String> = g
            .labels
            .iter()
            .filter(|pattern| !miss.contains(pattern))
            .filter(|pattern| {
                let (p_ids, _, _) = expand(std::slice::from_ref(pattern), table);
                !p_ids.into_iter().any(present)
            })
            .cloned()
            .collect();
        let mut ids: Vec<u16> = all_ids
            .into_iter()
            .filter(|&id| !allowed.contains(&id) && present(id))
            .collect();
        ids.sort_unstable();
        if ids.is_empty() {
            warnings.push(format!(
                "risk group {}: none of its structures ({}) is in the label map; its clearance is not checked (null)",
                g.name,
                g.labels.join(", ")
            ));
            unchecked.push(g.name.clone());
            continue;
        }
        if !absent.is_empty() {
            warnings.push(format!(
                "risk group {}: {} not in the label map; not checked",
                g.name,
                absent.join(", ")
            ));
        }
        groups.push((g, ids, names));
    }
    groups
}

/// The traverse rules: names, label lookup table, minimum length inside (mm).
fn traverse_rules(
    profile: &Profile,
    table: &[(u32, String)],
    missing: &mut Vec<String>,
) -> Vec<(String, Vec<bool>, f64)> {
    let mut traverse = Vec::new();
    for t in &profile.traverse {
        let (ids, names, miss) = expand(&t.labels, table);
        missing.extend(miss.iter().map(|m| format!("{m} (traverse rule)")));
        traverse.push((names.join("+"), lut_of(&ids), t.min_mm));
    }
    traverse
}

/// The lung rule's lobes: label id → lobe number (1-based; 0 not a lobe).
fn lobe_lut(
    profile: &Profile,
    table: &[(u32, String)],
    missing: &mut Vec<String>,
) -> Option<Vec<u8>> {
    let lung = profile.lung.as_ref()?;
    let (ids, _, miss) = expand(&lung.lobes, table);
    missing.extend(miss.iter().map(|m| format!("{m} (lung rule)")));
    let mut lut = vec![0u8; usize::from(u16::MAX) + 1];
    for (n, id) in ids.iter().enumerate() {
        lut[*id as usize] = n as u8 + 1;
    }
    Some(lut)
}

impl PlanningContext {
    /// The aim the profile's `target_aim` gives `target`: a label target named without
    /// an aim (`kidney_left`, not `kidney_left:deepest`), of a label `target_aim_labels`
    /// lists (or any, when it lists none), not aimed that way already.
    fn profile_aim(&self, profile: &Profile, target: &Target) -> Option<LabelAim> {
        let aim = profile.target_aim.label_aim()?;
        let name = target.label_name.as_deref().unwrap_or_default();
        let listed = profile.target_aim_labels.is_empty()
            || profile
                .target_aim_labels
                .iter()
                .any(|pattern| matches_pattern(pattern, name));
        (target.label_id.is_some() && !target.aim_given && target.aim != Some(aim) && listed)
            .then_some(aim)
    }

    /// Moves a label target named without an aim to the profile's `target_aim` (the
    /// kidney's lower pole for a nephrostomy, its lower-pole cortex for a renal biopsy).
    /// [`PlanningContext::plan`] does this itself; a target aimed already is unchanged.
    pub fn aim(&self, profile: &Profile, target: Target) -> Target {
        match self.profile_aim(profile, &target) {
            Some(aim) => target.reaimed(aim, &format!("{} profile", profile.name)),
            None => target,
        }
    }

    /// The profile's `target_aim_warning` when its `target_aim` chose the target point.
    fn aim_warning(profile: &Profile, target: &Target) -> Option<String> {
        let note = profile.target_aim_warning.as_ref()?;
        let by_profile = !target.aim_given
            && target.label_id.is_some()
            && target.aim.is_some()
            && target.aim == profile.target_aim.label_aim();
        by_profile.then(|| format!("target {}: {note}", target.description))
    }

    fn rules(
        &self,
        profile: &Profile,
        table: &[(u32, String)],
        target: &Target,
        warnings: &mut Vec<String>,
    ) -> Result<(Rules, AppliedProfile), PlanError> {
        let mut missing = Vec::new();
        let (allowed, allowed_names) = self.allowed_labels(profile, table, target);
        let info = self.label_info();
        let present = |id: u16| info.contains_key(&id);
        let mut unchecked_groups = Vec::new();
        let groups = risk_group_labels(
            profile,
            table,
            &allowed,
            &present,
            &mut missing,
            &mut unchecked_groups,
            warnings,
        );
        let traverse = traverse_rules(profile, table, &mut missing);
        let lobes = lobe_lut(profile, table, &mut missing);
        if !missing.is_empty() {
            return Err(PlanError::MissingLabels {
                procedure: profile.name.clone(),
                missing,
            });
        }
        let (caudal, caudal_z, caudal_from) =
            self.caudal_level(profile, table, target, warnings)?;
        let resolved = self.resolve_groups(groups);
        let needs_labels = !traverse.is_empty() || lobes.is_some() || !allowed.is_empty();
        let traverse_empty = traverse.is_empty();
        let has_lobes = lobes.is_some();
        let keys: Vec<Vec<u16>> = resolved.iter().map(|g| g.ids.clone()).collect();
        let fields: Vec<Arc<Vec<f32>>> = resolved.iter().map(|g| g.field.clone()).collect();
        let packed = self.packed(&keys, &fields);
        let rules = Rules {
            packed,
            groups: resolved.clone(),
            organ_lut: lut_of(&allowed),
            traverse,
            avoid_fissures: profile.lung.as_ref().is_some_and(|l| l.avoid_fissures),
            max_pleura: profile.lung.as_ref().and_then(|l| l.max_pleura_crossings),
            lobes,
            caudal,
            approach: profile
                .approach
                .iter()
                .map(|c| (unit(c.direction_lps), c.max_deg.to_radians().cos()))
                .collect(),
            max_length_mm: profile.length.max_mm,
            max_skin_cos: profile.skin_angle.max_deg.to_radians().cos(),
            max_axial_deg: profile.axial_angle.as_ref().map(|a| a.max_deg),
            needs_labels,
            labels_all_the_way: !traverse_empty || has_lobes,
            unchecked_groups,
            weights: [
                profile.weights.length,
                profile.weights.clearance,
                profile.weights.skin_angle,
                profile.weights.capsule_angle,
            ],
        };
        let applied = AppliedProfile {
            profile: Profile {
                risk_groups: resolved.iter().map(ResolvedGroup::as_risk_group).collect(),
                ..profile.clone()
            },
            allowed_labels_resolved: allowed_names,
            entry_caudal_to_z_mm: caudal_z,
            entry_caudal_to_from: caudal_from,
        };
        Ok((rules, applied))
    }

    /// Labels the needle may cross: the profile's, the target's label and the label at
    /// the target point (sorted ids, and the profile's names).
    fn allowed_labels(
        &self,
        profile: &Profile,
        table: &[(u32, String)],
        target: &Target,
    ) -> (Vec<u16>, Vec<String>) {
        let (mut allowed, allowed_names, _) = expand(&profile.allowed_labels, table);
        if let Some(id) = target.label_id.and_then(|id| u16::try_from(id).ok()) {
            allowed.push(id);
        }
        let at_target = self.label_at(target.point_lps);
        if at_target != 0 {
            allowed.push(at_target);
        }
        allowed.sort_unstable();
        allowed.dedup();
        (allowed, allowed_names)
    }

    /// The `entry_caudal_to` rule as applied: the target side's labels (their lowest
    /// voxel, or their footprint as the rule's `level` says), else the fallback labels'
    /// lowest voxel; with the level's z (LPS mm) and what defined it, for the report.
    fn caudal_level(
        &self,
        profile: &Profile,
        table: &[(u32, String)],
        target: &Target,
        warnings: &mut Vec<String>,
    ) -> Result<CaudalApplied, PlanError> {
        let Some(rule) = &profile.entry_caudal_to else {
            return Ok((None, None, None));
        };
        let left = target.point_lps[0] > self.body_centroid_lps[0];
        let side = if left { &rule.left } else { &rule.right };
        let info = self.label_info();
        let present = |patterns: &[String]| {
            let (ids, names, _) = expand(patterns, table);
            let ids: Vec<u16> = ids
                .into_iter()
                .filter(|id| info.get(id).is_some_and(|i| i.voxels > 0))
                .collect();
            let z = ids
                .iter()
                .filter_map(|id| info.get(id))
                .map(|i| i.min_z_mm)
                .fold(f64::INFINITY, f64::min);
            z.is_finite().then(|| (ids, z, names.join("+")))
        };
        if let Some((ids, z, from)) = present(side) {
            return Ok(match rule.level {
                CaudalLevel::LowestVoxel => (
                    Some(CaudalCheck::Level(z)),
                    Some(z),
                    Some(format!("lowest voxel of {from}")),
                ),
                CaudalLevel::Footprint => (
                    Some(CaudalCheck::Footprint(ColumnFloor::new(self, &ids))),
                    None,
                    Some(format!(
                        "footprint of {from}: the needle passes caudal to it wherever it runs over it"
                    )),
                ),
            });
        }
        warnings.push(format!(
            "{} missing from the label map: entry level from {} instead",
            side.join("+"),
            rule.fallback.join("+")
        ));
        match present(&rule.fallback) {
            Some((_, z, from)) => Ok((
                Some(CaudalCheck::Level(z)),
                Some(z),
                Some(format!("lowest voxel of {from}")),
            )),
            None => Err(PlanError::MissingLabels {
                procedure: profile.name.clone(),
                missing: side
                    .iter()
                    .chain(&rule.fallback)
                    .map(|n| format!("{n} (entry_caudal_to rule)"))
                    .collect(),
            }),
        }
    }

    /// The groups with their clearance fields and bins (computed together, cached).
    fn resolve_groups(
        &self,
        groups: Vec<(&RiskGroup, Vec<u16>, Vec<String>)>,
    ) -> Vec<ResolvedGroup> {
        let sets: Vec<Vec<u16>> = groups.iter().map(|(_, ids, _)| ids.clone()).collect();
        self.prepare(&sets);
        groups
            .into_iter()
            .map(|(g, ids, names)| {
                let field = self.field(&ids);
                let bins = self.bins(&ids);
                ResolvedGroup {
                    name: g.name.clone(),
                    labels: names,
                    clearance_mm: g.clearance_mm,
                    weight: g.weight,
                    source: g.source.clone(),
                    ids,
                    field,
                    bins,
                }
            })
            .collect()
    }

    /// Plans needle paths to `target` under `profile`. `table` lists the label map's
    /// `(id, name)` pairs.
    pub fn plan(
        &self,
        profile: &Profile,
        table: &[(u32, String)],
        target: &Target,
        options: &PlanOptions,
    ) -> Result<Plan, PlanError> {
        let aimed;
        let target = match self.profile_aim(profile, target) {
            Some(aim) => {
                aimed = target
                    .clone()
                    .reaimed(aim, &format!("{} profile", profile.name));
                &aimed
            }
            None => target,
        };
        let target_lps = target.point_lps;
        if !self.in_body(target_lps) {
            return Err(PlanError::TargetOutsideBody {
                point_lps: target_lps,
            });
        }
        let mut warnings: Vec<String> = Self::aim_warning(profile, target).into_iter().collect();
        let (rules, applied) = self.rules(profile, table, target, &mut warnings)?;

        if let Some(entry) = options.entry_lps {
            let d = [0, 1, 2].map(|a| entry[a] - target_lps[a]);
            let length = norm(d);
            if length < 1e-6 {
                return Err(PlanError::BadEntry { entry_lps: entry });
            }
            let dir = d.map(|v| v / length);
            let marcher = Marcher::new(self, &rules, target_lps, Some(length));
            let Traced::Reached(cand) = marcher.trace(dir) else {
                return Err(PlanError::BadEntry { entry_lps: entry });
            };
            let mut cand = *cand;
            cand.entry = entry;
            let (clearances, failed) = self.verify(&rules, target_lps, &cand);
            cand.violations.extend(failed);
            let feasible = cand.violations.is_empty();
            let report = self.report(&rules, target_lps, &cand, clearances, 1, false, feasible);
            return Ok(Plan {
                procedure: profile.name.clone(),
                target_lps,
                target: target.description.clone(),
                target_aim: target.aim.map(|a| a.name().to_owned()),
                profile: applied,
                paths: vec![report],
                rejected: BTreeMap::new(),
                candidates: 1,
                feasible: usize::from(feasible),
                pareto_size: 0,
                skin_points: vec![(cand.entry, cand.dir, feasible, cand.score)],
                warnings,
            });
        }

        let directions = self.directions(options.candidates.max(1));
        let dirs = &directions.dirs;
        let traced = Marcher::new(self, &rules, target_lps, None)
            .with_simd(options.simd)
            .trace_all(dirs, &directions.order);
        // Counted per rule first (an array index per ray, no string), named at the end.
        let mut by_rule = vec![0usize; Rule::count(&rules)];
        let mut rejected: BTreeMap<String, usize> = BTreeMap::new();
        let mut feasible: Vec<Box<Candidate>> = Vec::new();
        let mut skin_points = Vec::with_capacity(traced.len());
        let mut missed = 0;
        for t in traced {
            match t {
                Traced::Rejected(rule) => by_rule[rule.index(&rules)] += 1,
                Traced::Missed => missed += 1,
                Traced::Reached(c) => {
                    if c.violations.is_empty() {
                        skin_points.push((c.entry, c.dir, true, c.score));
                        feasible.push(c);
                    } else {
                        skin_points.push((c.entry, c.dir, false, 0.0));
                        *rejected.entry(c.violations[0].clone()).or_default() += 1;
                    }
                }
            }
        }
        if missed > 0 {
            *rejected.entry("leaves_scan".into()).or_default() += missed;
        }
        for (index, &count) in by_rule.iter().enumerate().filter(|(_, &c)| c > 0) {
            *rejected
                .entry(Rule::from_index(index, &rules).name(&rules))
                .or_default() += count;
        }
        // Best score first; equal scores keep the candidates' order. Sorted as compact
        // (score, index) keys, then the candidates moved into that order.
        let mut ranking: Vec<(f64, usize)> = feasible
            .iter()
            .enumerate()
            .map(|(i, c)| (c.score, i))
            .collect();
        ranking.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut slots: Vec<Option<Box<Candidate>>> = feasible.into_iter().map(Some).collect();
        let feasible: Vec<Box<Candidate>> = ranking
            .iter()
            .filter_map(|&(_, i)| slots[i].take())
            .collect();
        let cos_sep = profile.min_separation_deg.to_radians().cos();
        // The Pareto flags and the verified selection do not depend on each other.
        let (pareto, selection) = rayon::join(
            || pareto_flags(&feasible[..feasible.len().min(PARETO_POOL)], &rules.groups),
            || self.select(&rules, target_lps, &feasible, cos_sep, options.top_k),
        );
        let pareto_size = pareto.iter().filter(|&&p| p).count();
        for rule in &selection.verify_failures {
            *rejected.entry(rule.clone()).or_default() += 1;
        }
        let verify_rejects = selection.verify_failures.len();
        let chosen: Vec<PathReport> = selection
            .chosen
            .into_iter()
            .enumerate()
            .map(|(rank, (n, clearances))| {
                let is_pareto = pareto.get(n).copied().unwrap_or(false);
                self.report(
                    &rules,
                    target_lps,
                    &feasible[n],
                    clearances,
                    rank + 1,
                    is_pareto,
                    true,
                )
            })
            .collect();
        if chosen.is_empty() {
            return Err(PlanError::NoFeasiblePath {
                procedure: profile.name.clone(),
                candidates: dirs.len(),
                rejected,
            });
        }
        if verify_rejects > 0 {
            warnings.push(format!(
                "{verify_rejects} candidate(s) passed the coarse screen but failed the exact clearance check"
            ));
        }
        Ok(Plan {
            procedure: profile.name.clone(),
            target_lps,
            target: target.description.clone(),
            target_aim: target.aim.map(|a| a.name().to_owned()),
            profile: applied,
            paths: chosen,
            rejected,
            candidates: dirs.len(),
            feasible: feasible.len(),
            pareto_size,
            skin_points,
            warnings,
        })
    }
}

pub(crate) fn score(rules: &Rules, c: &Candidate) -> f64 {
    let w = &rules.weights;
    let s_len = 1.0 - (c.length_mm / rules.max_length_mm).clamp(0.0, 1.0);
    let (mut wsum, mut csum) = (0.0, 0.0);
    for (g, seen) in rules.groups.iter().zip(&c.coarse_min) {
        let margin = seen - g.clearance_mm;
        wsum += g.weight;
        csum += g.weight * (margin / CLEARANCE_SATURATION_MM).clamp(0.0, 1.0);
    }
    let s_clear = if wsum > 0.0 { csum / wsum } else { 1.0 };
    let s_skin = 1.0 - (c.skin_angle_deg / 90.0).clamp(0.0, 1.0);
    let s_caps = c
        .capsule_angle_deg
        .map(|a| 1.0 - (a / 90.0).clamp(0.0, 1.0))
        .unwrap_or(0.5);
    let total = w[0] + w[1] + w[2] + w[3];
    if total <= 0.0 {
        return 0.0;
    }
    (w[0] * s_len + w[1] * s_clear + w[2] * s_skin + w[3] * s_caps) / total
}

impl PlanningContext {
    /// Outward normal of the organ surface near `q`: minus the mean offset of organ
    /// voxels within 5 mm. `cache` holds the normals computed so far for this `lut`, by
    /// label voxel (rays from one target leave its organ through the same voxels).
    pub(crate) fn capsule_normal(
        &self,
        lut: &[bool],
        q: Vec3,
        cache: &CellCache<Option<Vec3>>,
    ) -> Option<Vec3> {
        let grid = self.labels.grid();
        let dims = grid.dims();
        let centre = grid.world_to_index(q).map(|v| v.round() as isize);
        let labels = self.labels.data();
        let normal = || {
            self.capsule_stencil
                .outward_normal(centre, |o| lut[usize::from(labels[o])])
        };
        if (0..3).all(|a| centre[a] >= 0 && centre[a] < dims[a] as isize) {
            cache.get_or_insert_with(grid.offset(centre.map(|v| v as usize)), normal)
        } else {
            normal()
        }
    }

    /// Up to `top_k` of `ranked` (best first) that pass the exact verification, each more
    /// than the minimum separation from those before it. Candidates that will be chosen
    /// if every check passes are verified together.
    fn select(
        &self,
        rules: &Rules,
        target: Vec3,
        ranked: &[Box<Candidate>],
        cos_sep: f64,
        top_k: usize,
    ) -> Selection {
        let mut selection = Selection::default();
        let mut chosen_dirs: Vec<Vec3> = Vec::new();
        let mut verified: BTreeMap<usize, Verified> = BTreeMap::new();
        for (n, cand) in ranked.iter().enumerate() {
            if selection.chosen.len() >= top_k {
                break;
            }
            if chosen_dirs.iter().any(|d| dot(*d, cand.dir) > cos_sep) {
                continue;
            }
            if !verified.contains_key(&n) {
                let wanted = top_k - selection.chosen.len();
                let batch = distinct_from(ranked, n, &chosen_dirs, cos_sep, wanted);
                let results: Vec<(usize, Verified)> = batch
                    .into_par_iter()
                    .map(|k| (k, self.verify(rules, target, &ranked[k])))
                    .collect();
                verified.extend(results);
            }
            let Some((clearances, failed)) = verified.remove(&n) else {
                continue;
            };
            if let Some(rule) = failed.into_iter().next() {
                selection.verify_failures.push(rule);
                continue;
            }
            chosen_dirs.push(cand.dir);
            selection.chosen.push((n, clearances));
        }
        selection
    }

    /// Exact clearances of a path (segment target–entry vs voxel centres): per group the
    /// distance, and the rules broken.
    fn verify(&self, rules: &Rules, target: Vec3, cand: &Candidate) -> Verified {
        let mut out = BTreeMap::new();
        let mut failed = Vec::new();
        let length = norm([0, 1, 2].map(|a| cand.entry[a] - target[a]));
        let n = (length / VERIFY_STEP_MM).ceil() as usize;
        let mut crossed: Vec<u16> = (0..=n)
            .map(|s| {
                let t = s as f64 / n.max(1) as f64;
                self.label_at([0, 1, 2].map(|a| target[a] + (cand.entry[a] - target[a]) * t))
            })
            .collect();
        crossed.sort_unstable();
        crossed.dedup();
        for (g, group) in rules.groups.iter().enumerate() {
            let lut_hit = crossed.iter().any(|l| group.ids.binary_search(l).is_ok());
            let radius = group.clearance_mm + EXACT_RADIUS_EXTRA_MM;
            let d = if lut_hit {
                0.0
            } else {
                group
                    .bins
                    .segment_distance(target, cand.entry, radius)
                    .unwrap_or(cand.coarse_min[g].max(radius))
            };
            if d < group.clearance_mm {
                failed.push(format!("clearance:{}", group.name));
            }
            out.insert(group.name.clone(), d);
        }
        (out, failed)
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        rules: &Rules,
        target: Vec3,
        c: &Candidate,
        clearances: BTreeMap<String, f64>,
        rank: usize,
        pareto_optimal: bool,
        feasible: bool,
    ) -> PathReport {
        let d = [0, 1, 2].map(|a| c.entry[a] - target[a]);
        PathReport {
            rank,
            entry_lps: c.entry,
            target_lps: target,
            direction_lps: unit(d),
            length_mm: norm(d),
            min_clearance_mm: clearances
                .into_iter()
                .map(|(name, d)| (name, Some(d)))
                .chain(
                    rules
                        .unchecked_groups
                        .iter()
                        .map(|name| (name.clone(), None)),
                )
                .collect(),
            skin_angle_deg: c.skin_angle_deg,
            axial_angle_deg: c.dir[2].abs().clamp(0.0, 1.0).asin().to_degrees(),
            capsule_angle_deg: c.capsule_angle_deg,
            traverse_mm: rules
                .traverse
                .iter()
                .zip(&c.traverse_mm)
                .map(|((name, _, _), v)| (name.clone(), *v))
                .collect(),
            pleura_crossings: c.pleura,
            entry_caudal_to_margin_mm: c.caudal_margin_mm,
            score: c.score,
            pareto_optimal,
            feasible,
            violations: c.violations.clone(),
        }
    }
}

/// Exact clearances per group and the rules broken, of one path.
type Verified = (BTreeMap<String, f64>, Vec<String>);

/// The paths chosen (index in the ranking, exact clearances) and the first rule each
/// candidate that failed the exact verification broke.
#[derive(Default)]
struct Selection {
    chosen: Vec<(usize, BTreeMap<String, f64>)>,
    verify_failures: Vec<String>,
}

/// Indices from `start` on of up to `wanted` candidates that are more than the minimum
/// separation from `chosen` and from each other, in order: the ones chosen next if all
/// pass verification.
fn distinct_from(
    cands: &[Box<Candidate>],
    start: usize,
    chosen: &[Vec3],
    cos_sep: f64,
    wanted: usize,
) -> Vec<usize> {
    let mut dirs = chosen.to_vec();
    let mut out = Vec::new();
    for (k, cand) in cands.iter().enumerate().skip(start) {
        if out.len() >= wanted {
            break;
        }
        if dirs.iter().all(|d| dot(*d, cand.dir) <= cos_sep) {
            dirs.push(cand.dir);
            out.push(k);
        }
    }
    out
}

/// Non-dominated flags over (length, −min margin, skin angle, capsule angle), all
/// minimised.
fn pareto_flags(cands: &[Box<Candidate>], groups: &[ResolvedGroup]) -> Vec<bool> {
    let objectives: Vec<[f64; 4]> = cands
        .iter()
        .map(|c| {
            let margin = groups
                .iter()
                .zip(&c.coarse_min)
                .map(|(g, seen)| seen - g.clearance_mm)
                .fold(f64::INFINITY, f64::min)
                .min(CLEARANCE_SATURATION_MM);
            [
                c.length_mm,
                -margin.min(1e6),
                c.skin_angle_deg,
                c.capsule_angle_deg.unwrap_or(0.0),
            ]
        })
        .collect();
    non_dominated(&objectives)
}

/// Pareto flags of points whose coordinates are all minimised. In lexicographic order a
/// dominated point comes after a non-dominated point that dominates it (dominance is
/// transitive), so each point is checked against the front found so far only.
fn non_dominated(points: &[[f64; 4]]) -> Vec<bool> {
    let dominates =
        |b: &[f64; 4], a: &[f64; 4]| (0..4).all(|i| b[i] <= a[i]) && (0..4).any(|i| b[i] < a[i]);
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        (0..4)
            .map(|i| points[a][i].total_cmp(&points[b][i]))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut flags = vec![false; points.len()];
    let mut front: Vec<usize> = Vec::new();
    for i in order {
        if !front.iter().any(|&j| dominates(&points[j], &points[i])) {
            front.push(i);
            flags[i] = true;
        }
    }
    flags
}

/// A unit vector perpendicular to `d`, as horizontal (axial) as possible.
pub fn in_plane_partner(d: Vec3) -> Vec3 {
    let w = cross(d, [0.0, 0.0, 1.0]);
    if norm(w) < 1e-6 {
        [1.0, 0.0, 0.0]
    } else {
        unit(w)
    }
}

#[cfg(test)]
mod tests {
    use super::non_dominated;
    use crate::TestRng;

    /// Regression for the front-only Pareto check: it must flag exactly the points no
    /// other point dominates (pairwise check), ties included.
    #[test]
    fn pareto_front_equals_the_pairwise_definition() {
        let mut rng = TestRng::new(0x2545_f491_4f6c_dd1d);
        let mut next = || (rng.next_u64() % 7) as f64;
        let points: Vec<[f64; 4]> = (0..400).map(|_| [next(), next(), next(), next()]).collect();
        let pairwise: Vec<bool> = points
            .iter()
            .map(|a| {
                !points
                    .iter()
                    .any(|b| (0..4).all(|i| b[i] <= a[i]) && (0..4).any(|i| b[i] < a[i]))
            })
            .collect();
        let flags = non_dominated(&points);
        assert_eq!(flags, pairwise);
        assert!(flags.iter().any(|&f| f) && flags.iter().any(|&f| !f));
    }
}
