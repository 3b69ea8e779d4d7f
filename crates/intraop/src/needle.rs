//! The needle or applicator in a control CT: its metal line, tip and axis, with a
//! confidence, or "not found" with the reason. **Not for clinical use.**
//!
//! # Method
//! 1. **Metal**: finite voxels at or above [`NeedleSearch::metal_hu`] (optionally only
//!    within [`NeedleSearch::near_lps`]); non-finite voxels are never metal. Bone cortex
//!    (< ~1900 HU), vessel contrast (~300 HU) and calcifications mostly stay below the
//!    default 2000 HU.
//! 2. **Components**: 26-connected components of the metal mask.
//! 3. **Lines**: in each component, lines are extracted one after another by a robust
//!    fit: RANSAC over voxel pairs (score = intensity weight of the voxels within the
//!    inlier radius `max(2 mm, 0.75 × largest spacing)`), then intensity-weighted PCA
//!    refitted on the inliers until they no longer change, so blooming, streaks and
//!    attached blobs do not tilt the axis. Two touching needles give two lines.
//! 4. **Merging**: a needle broken into pieces (thick slices, partial volume) is put
//!    back together: pieces whose voxels lie (90 %) within the inlier radius of a longer
//!    line and whose extent along it leaves a gap of at most
//!    `max(merge_gap_mm, 1.5 × largest spacing)` join it, and the line is refitted.
//! 5. **Needle test**: a line is a candidate when it is at least
//!    [`NeedleSearch::min_length_mm`] long, at least 4 times longer than its apparent
//!    diameter (clips, coils, ports and calcifications are compact), and not embedded
//!    in more metal (at most half as many metal voxels in the shell between one and two
//!    inlier radii around it as on it: plates and masses fail). With
//!    [`NeedleSearch::expected_axis_lps`] the best-aligned candidate wins (ties: higher
//!    confidence); otherwise the most confident one.
//! 6. **Ends with sub-voxel precision**: the CT is sampled along the fitted axis every
//!    0.1 mm (trilinear, averaged over the axis point and six points on a 0.4 mm circle
//!    around it). At each end the plateau (median over the last 2–8 mm inside the
//!    metal) and the local background (median 3–10 mm beyond the end) are measured and
//!    the end is put where the profile crosses halfway between them
//!    (`tip_method = "half-maximum"`). Partial volume, the point spread function and
//!    trilinear interpolation are all point-symmetric, so for a linear (unclipped) image
//!    the blurred value exactly at a rod's end is half its plateau: the half-maximum
//!    crossing is unbiased. When the needle's voxels are clipped (≥ 10 % of them at the
//!    same maximum, e.g. 3071 HU in 12-bit data) the halfway level of the clipped
//!    plateau would lie outward of the true end; each end is then put at the steepest
//!    descent of the profile (smoothed with σ = 0.5 mm) near the crossing
//!    (`"steepest edge (clipped plateau)"`). That edge still moves with where the tip
//!    falls between two slices (up to ~1.4 mm long for needles 35–40° out of the slice
//!    plane), so the tip is finally fitted: the voxels within ~2.5 mm of the axis
//!    around it are compared with a rod ending at trial positions (±4 mm, 0.05 mm
//!    steps) seen through a box slice profile and a Gaussian in-plane point spread
//!    function, clipped voxels counting as "at least the clip" (the private
//!    `tip_model` module; `"model fit (clipped plateau)"`, with the fit's figures in
//!    `tip_fit`). The fit is not used, and `tip_method` says why after the steepest
//!    edge, when it moves the tip more than 2.5 mm (another object near the axis), fits
//!    the voxels poorly (residual RMS above 20 % of the contrast), has too few
//!    unclipped voxels, or the slices are more than 10 mm apart. An end whose
//!    background runs out of the scan is the last metal voxel (`"last metal voxel
//!    (scan edge)"`).
//! 7. **Which end is the tip**: with `expected_axis_lps`, the end farther along it;
//!    otherwise the end farther from air outside the body (voxels below −500 HU
//!    connected, within their slice, to the slice border); when the scan shows no such
//!    air, the end nearer the scan's centre.
//!
//! # Confidence
//! `confidence = f_straight × f_length × f_contrast`, each in [0, 1]:
//! * `f_straight = 1 / (1 + (rms_off_axis_mm / 1 mm)²)`, where `rms_off_axis_mm` is
//!   the RMS distance from the fitted axis of the centroids of the metal voxels in
//!   slabs `max(2 mm, 2 × largest spacing)` thick along it (a straight needle: ≈ 0);
//! * `f_length = 1 − exp(−visible_length_mm / min_length_mm)` (1 when `min_length_mm`
//!   is 0);
//! * `f_contrast = clamp((plateau − background) / (metal_hu − background), 0, 1)` at the
//!   tip: 1 when the metal plateau stands at least as far above the tissue as the
//!   threshold does (0.5 when it cannot be computed).

use crate::error::{invalid, IntraopError};
use crate::tip_model::model_tip;
use pinhole_volume::math::{DMat3, DVec3};
use pinhole_volume::{connected_components, Connectivity, Grid, Mask, Volume};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `tip_method` of an end whose background runs out of the scan.
pub const SCAN_EDGE: &str = "last metal voxel (scan edge)";
/// `tip_method` of a tip placed by the model of the voxels around it.
pub const MODEL_FIT: &str = "model fit (clipped plateau)";
/// `tip_method` of an end at the steepest descent of a clipped profile (for the tip:
/// followed by why the model fit was not used).
pub const STEEPEST_EDGE: &str = "steepest edge (clipped plateau)";
/// `tip_method` of an end at the half-maximum crossing (unclipped data).
pub const HALF_MAXIMUM: &str = "half-maximum";
/// Metal lines extracted at most.
const MAX_LINES: usize = 8;
/// RANSAC hypotheses per line.
const RANSAC_TRIALS: usize = 128;
/// Profile sampling step along the axis.
const PROFILE_STEP_MM: f64 = 0.1;
/// Radius of the circle of samples averaged with the axis point.
const DISC_RADIUS_MM: f64 = 0.4;
/// HU below which a voxel is air (for the body-surface test).
const AIR_HU: f64 = -500.0;
/// A candidate must be this many times longer than its apparent diameter.
const MIN_ASPECT: f64 = 4.0;
/// Largest metal count in the shell around a candidate, relative to its own count.
const MAX_SHELL_RATIO: f64 = 0.5;

/// Search settings; [`Default`] gives sensible values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NeedleSearch {
    /// Voxels at or above this are metal candidates (default 2000 HU; needles saturate
    /// at 3071 HU in 12-bit data).
    pub metal_hu: f64,
    /// Shorter metal lines are not a needle (default 10 mm).
    pub min_length_mm: f64,
    /// Hint: unit vector from entry toward target (from the plan, mapped into this
    /// scan's frame). Picks the tip end and, when several lines are present, the
    /// best-aligned one. Need not be normalised.
    pub expected_axis_lps: Option<[f64; 3]>,
    /// Hint: search only within this radius (mm) of a point (e.g. the planned target).
    pub near_lps: Option<([f64; 3], f64)>,
    /// Collinear pieces of metal separated by at most this gap along their common line
    /// are one needle (default 10 mm; at least 3 × the largest voxel spacing is used).
    pub merge_gap_mm: f64,
}

impl Default for NeedleSearch {
    fn default() -> Self {
        Self {
            metal_hu: 2000.0,
            min_length_mm: 10.0,
            expected_axis_lps: None,
            near_lps: None,
            merge_gap_mm: 10.0,
        }
    }
}

/// A needle found in a CT.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct DetectedNeedle {
    /// The tip (LPS mm), sub-voxel (see `tip_method`).
    pub tip_lps: [f64; 3],
    /// The visible end toward the skin (LPS mm).
    pub hub_end_lps: [f64; 3],
    /// Unit vector from `hub_end_lps` to `tip_lps`.
    pub axis_lps: [f64; 3],
    /// Distance from the hub end to the tip.
    pub visible_length_mm: f64,
    /// Diameter of a cylinder with the metal voxels' volume and the metal line's length
    /// (grows with blooming).
    pub apparent_diameter_mm: f64,
    /// RMS distance of slab centroids of the metal from the axis (0 when straight).
    pub rms_off_axis_mm: f64,
    /// Metal voxels on the line.
    pub metal_voxels: usize,
    /// 0..1, how needle-like (see the module documentation for the formula).
    pub confidence: f64,
    /// How the tip was placed: "half-maximum", "model fit (clipped plateau)",
    /// "steepest edge (clipped plateau); model fit not used: <why>" or "last metal
    /// voxel (scan edge)".
    pub tip_method: String,
    /// The model fit that placed the tip in clipped data (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tip_fit: Option<TipFit>,
    /// How many metal lines passed the needle test.
    pub candidates: usize,
}

/// How the tip was fitted in clipped data (module documentation, step 6).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct TipFit {
    /// Move from the profile's steepest edge along the needle, mm (+: deeper).
    pub shift_mm: f64,
    /// The in-plane point spread function that fitted best (Gaussian σ, mm).
    pub psf_sigma_mm: f64,
    /// The slice thickness that fitted best (1, 1.5 or 2 slice spacings), mm.
    pub slice_thickness_mm: f64,
    /// RMS residual of the fit over the voxels around the tip, HU.
    pub residual_rms_hu: f64,
    /// Clip level above the fitted background, HU (a fit is refused when the residual
    /// exceeds 20 % of it).
    pub contrast_hu: f64,
    /// Voxels fitted.
    pub voxels: usize,
}

/// The outcome of a needle search.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum NeedleDetection {
    Found(DetectedNeedle),
    NotFound { reason: String },
}

/// Finds the needle in `ct` (HU). Never panics; non-finite voxels are not metal.
///
/// Errors only on invalid search settings; a scan without a needle gives
/// [`NeedleDetection::NotFound`] with the reason.
pub fn detect_needle(
    ct: &Volume<f32>,
    search: &NeedleSearch,
) -> Result<NeedleDetection, IntraopError> {
    let set = Settings::new(ct.grid(), search)?;
    let metal = metal_points(ct, &set)?;
    if metal.pos.is_empty() {
        return Ok(not_found(format!(
            "no voxel at or above {} HU{}",
            set.metal_hu,
            set.near_phrase()
        )));
    }
    let mut rng = Lcg(0x9e37_79b9_7f4a_7c15);
    let groups = extract_lines(&metal, &set, &mut rng);
    let evaluated: Vec<Candidate> = groups
        .iter()
        .map(|g| evaluate(&metal, &g.idx, g.line, ct.grid(), &set))
        .collect();
    let passing: Vec<&Candidate> = evaluated
        .iter()
        .filter(|c| c.failure(&set).is_none())
        .collect();
    if passing.is_empty() {
        return Ok(not_found(no_line_reason(
            &metal,
            &evaluated,
            ct.grid(),
            &set,
        )));
    }
    let needles: Vec<DetectedNeedle> = passing
        .iter()
        .map(|c| measure(ct, &metal, c, &set, passing.len()))
        .collect();
    Ok(choose(needles, set.axis).map_or_else(
        || not_found("no candidate could be measured".to_string()),
        NeedleDetection::Found,
    ))
}

fn not_found(reason: String) -> NeedleDetection {
    NeedleDetection::NotFound { reason }
}

/// Checked settings plus the grid-derived radii.
struct Settings {
    metal_hu: f64,
    min_length_mm: f64,
    axis: Option<DVec3>,
    near: Option<(DVec3, f64)>,
    merge_gap_mm: f64,
    inlier_radius_mm: f64,
    refit_radius_mm: f64,
    slab_mm: f64,
}

impl Settings {
    fn new(grid: &Grid, s: &NeedleSearch) -> Result<Self, IntraopError> {
        if !s.metal_hu.is_finite() {
            return Err(invalid(
                "metal_hu",
                format!("must be finite, got {}", s.metal_hu),
            ));
        }
        if !(s.min_length_mm.is_finite() && s.min_length_mm >= 0.0) {
            return Err(invalid(
                "min_length_mm",
                format!("must be finite and ≥ 0, got {}", s.min_length_mm),
            ));
        }
        if !(s.merge_gap_mm.is_finite() && s.merge_gap_mm >= 0.0) {
            return Err(invalid(
                "merge_gap_mm",
                format!("must be finite and ≥ 0, got {}", s.merge_gap_mm),
            ));
        }
        let axis = match s.expected_axis_lps {
            None => None,
            Some(a) => {
                let v = DVec3::from(a);
                let n = v.length();
                if !(n.is_finite() && n > 1e-9) {
                    return Err(invalid(
                        "expected_axis_lps",
                        format!("must be a finite non-zero vector, got {a:?}"),
                    ));
                }
                Some(v / n)
            }
        };
        let near = match s.near_lps {
            None => None,
            Some((p, r)) => {
                if !(p.iter().all(|c| c.is_finite()) && r.is_finite() && r > 0.0) {
                    return Err(invalid(
                        "near_lps",
                        format!("needs a finite point and a radius > 0, got {p:?}, {r}"),
                    ));
                }
                Some((DVec3::from(p), r))
            }
        };
        let max_spacing = grid.spacing_mm().into_iter().fold(0.0, f64::max);
        Ok(Self {
            metal_hu: s.metal_hu,
            min_length_mm: s.min_length_mm,
            axis,
            near,
            merge_gap_mm: s.merge_gap_mm.max(3.0 * max_spacing),
            inlier_radius_mm: (0.75 * max_spacing).max(2.0),
            refit_radius_mm: (0.75 * max_spacing).max(2.0).max(max_spacing + 0.5),
            slab_mm: (2.0 * max_spacing).max(2.0),
        })
    }

    fn near_phrase(&self) -> String {
        self.near.map_or_else(String::new, |(p, r)| {
            format!(" within {r} mm of [{:.1}, {:.1}, {:.1}]", p.x, p.y, p.z)
        })
    }
}

/// Metal voxels: world positions, values, fit weights and their components.
struct Metal {
    pos: Vec<DVec3>,
    hu: Vec<f64>,
    weight: Vec<f64>,
    /// Indices into `pos` of each 26-connected component (largest first).
    components: Vec<Vec<usize>>,
}

fn voxel_world(grid: &Grid, offset: usize) -> DVec3 {
    let [i, j, k] = grid.index_of_offset(offset);
    DVec3::from(grid.index_to_world([i as f64, j as f64, k as f64]))
}

fn metal_points(ct: &Volume<f32>, set: &Settings) -> Result<Metal, IntraopError> {
    let grid = ct.grid();
    let data = ct.data();
    let is_metal = |o: usize| {
        let v = f64::from(data[o]);
        v.is_finite()
            && v >= set.metal_hu
            && set
                .near
                .is_none_or(|(p, r)| voxel_world(grid, o).distance_squared(p) <= r * r)
    };
    let flags: Vec<bool> = (0..data.len()).into_par_iter().map(is_metal).collect();
    let mask = Mask::new(grid.clone(), flags).map_err(|e| invalid("ct", e.to_string()))?;
    let comps = connected_components(&mask, Connectivity::TwentySix);
    let mut metal = Metal {
        pos: Vec::new(),
        hu: Vec::new(),
        weight: Vec::new(),
        components: vec![Vec::new(); comps.sizes.len()],
    };
    for (o, &label) in comps.labels.data().iter().enumerate() {
        let Some(comp) = (label as usize)
            .checked_sub(1)
            .and_then(|l| metal.components.get_mut(l))
        else {
            continue;
        };
        let v = f64::from(data[o]);
        comp.push(metal.pos.len());
        metal.pos.push(voxel_world(grid, o));
        metal.hu.push(v);
        metal
            .weight
            .push(1.0 + ((v - set.metal_hu) / 1000.0).clamp(0.0, 3.0));
    }
    Ok(metal)
}

/// Deterministic pseudo-random numbers for RANSAC.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n.max(1) as u64) as usize
    }
}

#[derive(Clone, Copy, Debug)]
struct Line {
    centre: DVec3,
    /// Unit.
    axis: DVec3,
}

impl Line {
    fn s(&self, p: DVec3) -> f64 {
        (p - self.centre).dot(self.axis)
    }
    fn dist2(&self, p: DVec3) -> f64 {
        let d = p - self.centre;
        (d - self.axis * d.dot(self.axis)).length_squared()
    }
    fn at(&self, s: f64) -> DVec3 {
        self.centre + self.axis * s
    }
}

/// Weighted PCA line through `idx`; see [`pca_weighted`].
fn pca_line(metal: &Metal, idx: &[usize], start: DVec3) -> Option<Line> {
    let points: Vec<(DVec3, f64)> = idx
        .iter()
        .map(|&i| (metal.pos[i], metal.weight[i]))
        .collect();
    pca_weighted(&points, start)
}

/// Weighted PCA line; the principal axis by power iteration from `start`.
fn pca_weighted(points: &[(DVec3, f64)], start: DVec3) -> Option<Line> {
    let total: f64 = points.iter().map(|p| p.1).sum();
    if !(total > 0.0 && total.is_finite()) {
        return None;
    }
    let centre = points.iter().map(|&(p, w)| p * w).sum::<DVec3>() / total;
    let mut cov = DMat3::ZERO;
    for &(p, w) in points {
        let d = p - centre;
        cov += DMat3::from_cols(d * (d.x * w), d * (d.y * w), d * (d.z * w));
    }
    let mut axis = start.try_normalize().unwrap_or(DVec3::X);
    for _ in 0..100 {
        match (cov * axis).try_normalize() {
            Some(next) => axis = next,
            None => break,
        }
    }
    Some(Line { centre, axis })
}

/// Final axis from the CT itself: PCA of all voxels within `refit_radius_mm` of the
/// line and between its ends, weighted by how far they stand above
/// `max(300, metal_hu / 4)` HU, so partial-volume voxels below the metal threshold
/// (e.g. in the neighbouring thick slice) place the axis between voxel centres.
/// Keeps `line` when the refit is undefined or turns it by more than 5°.
fn intensity_refit(ct: &Volume<f32>, line: &Line, span: (f64, f64), set: &Settings) -> Line {
    let grid = ct.grid();
    let rw = set.refit_radius_mm;
    let level = (0.25 * set.metal_hu).max(300.0);
    let dims = grid.dims();
    let spacing = grid.spacing_mm();
    let ends = [line.at(span.0), line.at(span.1)].map(|p| grid.world_to_index(p.to_array()));
    let mut lo = [0usize; 3];
    let mut hi = [0usize; 3];
    for a in 0..3 {
        let margin = rw / spacing[a] + 1.0;
        let min = ends[0][a].min(ends[1][a]) - margin;
        let max = ends[0][a].max(ends[1][a]) + margin;
        if !(min.is_finite() && max.is_finite()) || max < 0.0 || min > (dims[a] - 1) as f64 {
            return *line;
        }
        lo[a] = min.max(0.0) as usize;
        hi[a] = (max.min((dims[a] - 1) as f64)) as usize;
    }
    let mut points = Vec::new();
    for k in lo[2]..=hi[2] {
        for j in lo[1]..=hi[1] {
            for i in lo[0]..=hi[0] {
                let v = f64::from(ct.data()[grid.offset([i, j, k])]);
                if !(v.is_finite() && v > level) {
                    continue;
                }
                let p = DVec3::from(grid.index_to_world([i as f64, j as f64, k as f64]));
                let s = line.s(p);
                if line.dist2(p) <= rw * rw && s >= span.0 && s <= span.1 {
                    points.push((p, v - level));
                }
            }
        }
    }
    match pca_weighted(&points, line.axis) {
        Some(l) if l.axis.dot(line.axis).abs() >= 5f64.to_radians().cos() => {
            let axis = if l.axis.dot(line.axis) < 0.0 {
                -l.axis
            } else {
                l.axis
            };
            Line {
                centre: l.centre,
                axis,
            }
        }
        _ => *line,
    }
}

fn inliers(metal: &Metal, idx: &[usize], line: &Line, r: f64) -> Vec<usize> {
    idx.iter()
        .copied()
        .filter(|&i| line.dist2(metal.pos[i]) <= r * r)
        .collect()
}

/// Refits `line` on its inliers until they stop changing; returns it and the inliers.
fn refine(metal: &Metal, idx: &[usize], mut line: Line, r: f64) -> (Line, Vec<usize>) {
    let mut inl = inliers(metal, idx, &line, r);
    for _ in 0..8 {
        let Some(next_line) = pca_line(metal, &inl, line.axis) else {
            break;
        };
        line = next_line;
        let next = inliers(metal, idx, &line, r);
        if next == inl {
            break;
        }
        inl = next;
    }
    (line, inl)
}

/// RANSAC line: hypotheses through voxel pairs and through pairs of component
/// centroids (pieces of a broken needle have centroids on its axis), at least `2r`
/// apart; score = weight of the voxels within `r`; the PCA line of all competes too.
fn ransac_line(
    metal: &Metal,
    idx: &[usize],
    centroids: &[DVec3],
    r: f64,
    rng: &mut Lcg,
) -> Option<Line> {
    let stride = (idx.len() / 20_000).max(1);
    let score = |line: &Line| -> f64 {
        idx.iter()
            .step_by(stride)
            .filter(|&&i| line.dist2(metal.pos[i]) <= r * r)
            .map(|&i| metal.weight[i])
            .sum()
    };
    let mut best = pca_line(metal, idx, DVec3::new(0.8, 0.5, 0.33))?;
    let mut best_score = score(&best);
    for trial in 0..RANSAC_TRIALS {
        let (a, b) = if trial % 2 == 1 && centroids.len() >= 2 {
            (
                centroids[rng.below(centroids.len())],
                centroids[rng.below(centroids.len())],
            )
        } else {
            (
                metal.pos[idx[rng.below(idx.len())]],
                metal.pos[idx[rng.below(idx.len())]],
            )
        };
        if a.distance_squared(b) < 4.0 * r * r {
            continue;
        }
        let Some(axis) = (b - a).try_normalize() else {
            continue;
        };
        let line = Line { centre: a, axis };
        let sc = score(&line);
        if sc > best_score {
            best = line;
            best_score = sc;
        }
    }
    Some(best)
}

/// The heaviest run of `idx` along `line` without gaps longer than `gap` (ascending).
fn best_run(metal: &Metal, idx: &[usize], line: &Line, gap: f64) -> Vec<usize> {
    let mut by_s: Vec<(f64, usize)> = idx.iter().map(|&i| (line.s(metal.pos[i]), i)).collect();
    by_s.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut best, mut best_w) = ((0, 0), f64::NEG_INFINITY);
    let mut start = 0;
    let mut w = 0.0;
    for m in 0..by_s.len() {
        if m > start && by_s[m].0 - by_s[m - 1].0 > gap {
            start = m;
            w = 0.0;
        }
        w += metal.weight[by_s[m].1];
        if w > best_w {
            best_w = w;
            best = (start, m + 1);
        }
    }
    let mut run: Vec<usize> = by_s[best.0..best.1].iter().map(|&(_, i)| i).collect();
    run.sort_unstable();
    run
}

/// Refits `line` on the heaviest gap-free run of its inliers among `idx`.
fn fit_run(metal: &Metal, idx: &[usize], line: Line, r: f64, gap: f64) -> (Line, Vec<usize>) {
    let (mut line, mut inl) = refine(metal, idx, line, r);
    for _ in 0..4 {
        let run = best_run(metal, &inl, &line, gap);
        let Some(next) = pca_line(metal, &run, line.axis) else {
            break;
        };
        line = next;
        let next_inl = inliers(metal, idx, &line, r);
        if next_inl == inl {
            break;
        }
        inl = next_inl;
    }
    let run = best_run(metal, &inl, &line, gap);
    (line, run)
}

fn extent(metal: &Metal, idx: &[usize], line: &Line) -> (f64, f64) {
    idx.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &i| {
            let s = line.s(metal.pos[i]);
            (lo.min(s), hi.max(s))
        })
}

/// A metal line: its voxels and fitted axis.
struct Group {
    idx: Vec<usize>,
    line: Line,
}

/// Extracts metal lines one after another (see the module documentation).
fn extract_lines(metal: &Metal, set: &Settings, rng: &mut Lcg) -> Vec<Group> {
    let r = set.inlier_radius_mm;
    let centroids: Vec<DVec3> = metal
        .components
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| c.iter().map(|&i| metal.pos[i]).sum::<DVec3>() / c.len() as f64)
        .collect();
    let mut remaining: Vec<usize> = (0..metal.pos.len()).collect();
    let mut groups = Vec::new();
    for _ in 0..MAX_LINES {
        if remaining.len() < 3 {
            break;
        }
        let Some(guess) = ransac_line(metal, &remaining, &centroids, r, rng) else {
            break;
        };
        let (line, run) = fit_run(metal, &remaining, guess, r, set.merge_gap_mm);
        if run.len() < 3 {
            break;
        }
        remaining.retain(|i| run.binary_search(i).is_err());
        groups.push(Group { idx: run, line });
    }
    groups
}

/// A metal line and its shape measures.
struct Candidate {
    line: Line,
    inliers: Vec<usize>,
    s_lo: f64,
    s_hi: f64,
    diameter_mm: f64,
    rms_off_axis_mm: f64,
    shell: usize,
}

impl Candidate {
    fn length_mm(&self) -> f64 {
        (self.s_hi - self.s_lo).max(0.0)
    }

    /// Why this is not a needle; `None` when it is a candidate.
    fn failure(&self, set: &Settings) -> Option<&'static str> {
        if self.inliers.is_empty() || self.length_mm() < set.min_length_mm {
            Some("too short")
        } else if self.length_mm() < MIN_ASPECT * self.diameter_mm {
            Some("not elongated")
        } else if self.shell as f64 > MAX_SHELL_RATIO * self.inliers.len() as f64 {
            Some("embedded in more metal (a plate or mass)")
        } else {
            None
        }
    }
}

fn evaluate(metal: &Metal, idx: &[usize], line: Line, grid: &Grid, set: &Settings) -> Candidate {
    let r = set.inlier_radius_mm;
    let inl = inliers(metal, idx, &line, r);
    let (s_lo, s_hi) = if inl.is_empty() {
        (0.0, 0.0)
    } else {
        extent(metal, &inl, &line)
    };
    let min_spacing = grid.spacing_mm().into_iter().fold(f64::INFINITY, f64::min);
    let volume = inl.len() as f64 * grid.voxel_volume_mm3();
    let diameter_mm =
        (4.0 * volume / (std::f64::consts::PI * (s_hi - s_lo).max(min_spacing))).sqrt();
    let shell = metal
        .pos
        .iter()
        .filter(|&&p| {
            let d2 = line.dist2(p);
            let s = line.s(p);
            d2 > r * r && d2 <= 4.0 * r * r && s >= s_lo && s <= s_hi
        })
        .count();
    Candidate {
        rms_off_axis_mm: slab_rms(metal, &inl, &line, s_lo, set.slab_mm),
        line,
        inliers: inl,
        s_lo,
        s_hi,
        diameter_mm,
        shell,
    }
}

/// RMS distance from the axis of the weighted centroids of slabs along it.
fn slab_rms(metal: &Metal, idx: &[usize], line: &Line, s_lo: f64, slab_mm: f64) -> f64 {
    let mut slabs: std::collections::BTreeMap<i64, (DVec3, f64)> = Default::default();
    for &i in idx {
        let key = ((line.s(metal.pos[i]) - s_lo) / slab_mm).floor() as i64;
        let e = slabs.entry(key).or_insert((DVec3::ZERO, 0.0));
        e.0 += metal.pos[i] * metal.weight[i];
        e.1 += metal.weight[i];
    }
    if slabs.is_empty() {
        return 0.0;
    }
    let sum: f64 = slabs.values().map(|(p, w)| line.dist2(*p / *w)).sum();
    (sum / slabs.len() as f64).sqrt()
}

fn no_line_reason(metal: &Metal, evaluated: &[Candidate], grid: &Grid, set: &Settings) -> String {
    let largest = evaluated.iter().max_by_key(|c| c.inliers.len());
    let fallback;
    let largest = match largest {
        Some(c) => c,
        None => {
            // Only fragments too small for a line: describe the largest component.
            let comp = metal.components.first().map_or(&[][..], |c| &c[..]);
            let line = pca_line(metal, comp, DVec3::X).unwrap_or(Line {
                centre: DVec3::ZERO,
                axis: DVec3::X,
            });
            fallback = evaluate(metal, comp, line, grid, set);
            &fallback
        }
    };
    let why = largest.failure(set).unwrap_or("not measurable");
    format!(
        "metal found but no line of at least {} mm{} (largest: {:.1} mm long, {:.1} mm wide, {} voxels; {})",
        set.min_length_mm,
        set.near_phrase(),
        largest.length_mm(),
        largest.diameter_mm,
        largest.inliers.len(),
        why
    )
}

/// One end of the line, placed on the CT profile.
struct EndFit {
    s: f64,
    plateau: f64,
    background: f64,
    method: &'static str,
}

/// Samples the CT at `p`, averaged with six points on a circle around the axis.
fn disc_mean(ct: &Volume<f32>, p: DVec3, u: DVec3, v: DVec3) -> f64 {
    let Some(c) = ct.sample_trilinear(p.to_array()).filter(|x| x.is_finite()) else {
        return f64::NAN;
    };
    let (mut sum, mut n) = (c, 1.0);
    for k in 0..6 {
        let a = k as f64 * std::f64::consts::PI / 3.0;
        let q = p + (u * a.cos() + v * a.sin()) * DISC_RADIUS_MM;
        if let Some(x) = ct.sample_trilinear(q.to_array()).filter(|x| x.is_finite()) {
            sum += x;
            n += 1.0;
        }
    }
    sum / n
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Places the end of `line` near `s_end`, going outward in direction `sign` (±1).
fn refine_end(
    ct: &Volume<f32>,
    line: &Line,
    s_end: f64,
    sign: f64,
    length_mm: f64,
    clipped: bool,
) -> EndFit {
    let u_in = (0.6 * length_mm).min(8.0);
    let u_plateau = (0.2 * length_mm).min(2.0);
    let u_out = 10.0;
    let perp_u = line.axis.any_orthonormal_vector();
    let perp_v = line.axis.cross(perp_u);
    let n = ((u_in + u_out) / PROFILE_STEP_MM).round() as usize + 1;
    let us: Vec<f64> = (0..n).map(|m| -u_in + m as f64 * PROFILE_STEP_MM).collect();
    let vals: Vec<f64> = us
        .iter()
        .map(|&u| disc_mean(ct, line.at(s_end + sign * u), perp_u, perp_v))
        .collect();
    let window = |a: f64, b: f64| -> Vec<f64> {
        us.iter()
            .zip(&vals)
            .filter(|(u, _)| **u >= a && **u <= b)
            .map(|(_, v)| *v)
            .collect()
    };
    let plateau = median(window(-u_in, -u_plateau)).unwrap_or(f64::NAN);
    let beyond = window(3.0, u_out);
    let background_n = beyond.iter().filter(|x| x.is_finite()).count();
    let background = median(beyond).unwrap_or(f64::NAN);
    let edge = EndFit {
        s: s_end,
        plateau,
        background,
        method: SCAN_EDGE,
    };
    let contrast = plateau - background;
    if background_n < 10 || contrast.is_nan() || contrast <= 0.0 {
        return edge;
    }
    let half = 0.5 * (plateau + background);
    let Some(u_half) = half_crossing(&us, &vals, half, -u_plateau) else {
        return edge;
    };
    let (u_tip, method) = if clipped {
        steepest_descent(&us, &vals, u_half).map_or((u_half, HALF_MAXIMUM), |u| (u, STEEPEST_EDGE))
    } else {
        (u_half, HALF_MAXIMUM)
    };
    EndFit {
        s: s_end + sign * u_tip,
        plateau,
        background,
        method,
    }
}

/// First outward crossing below `level` after `u_from`, linearly interpolated.
fn half_crossing(us: &[f64], vals: &[f64], level: f64, u_from: f64) -> Option<f64> {
    let first = us.iter().position(|&u| u >= u_from)?;
    for m in first.max(1)..vals.len() {
        let (a, b) = (vals[m - 1], vals[m]);
        if !(a.is_finite() && b.is_finite()) {
            return None;
        }
        if a >= level && b < level {
            return Some(us[m - 1] + (a - level) / (a - b) * (us[m] - us[m - 1]));
        }
    }
    None
}

/// The steepest descent of the smoothed profile within 2.5 mm of `u_near`.
fn steepest_descent(us: &[f64], vals: &[f64], u_near: f64) -> Option<f64> {
    let sigma = 0.5 / PROFILE_STEP_MM;
    let radius = (3.0 * sigma).ceil() as isize;
    let smooth: Vec<f64> = (0..vals.len() as isize)
        .map(|m| {
            let (mut s, mut w) = (0.0, 0.0);
            for k in -radius..=radius {
                let Some(&x) = vals.get((m + k) as usize).filter(|x| x.is_finite()) else {
                    continue;
                };
                let g = (-0.5 * (k as f64 / sigma).powi(2)).exp();
                s += g * x;
                w += g;
            }
            if w > 0.0 {
                s / w
            } else {
                f64::NAN
            }
        })
        .collect();
    let deriv = |m: usize| smooth[m + 1] - smooth[m - 1];
    let best = (1..smooth.len().saturating_sub(1))
        .filter(|&m| (us[m] - u_near).abs() <= 2.5 && deriv(m).is_finite())
        .min_by(|&a, &b| deriv(a).total_cmp(&deriv(b)))?;
    if deriv(best) >= 0.0 {
        return None;
    }
    let mut offset = 0.0;
    if best >= 2 && best + 2 < smooth.len() {
        let (a, b, c) = (deriv(best - 1), deriv(best), deriv(best + 1));
        let denom = a - 2.0 * b + c;
        if denom.abs() > 1e-12 && (a + c).is_finite() {
            offset = (0.5 * (a - c) / denom).clamp(-0.5, 0.5);
        }
    }
    Some(us[best] + offset * PROFILE_STEP_MM)
}

/// Whether the line's voxels are clipped: ≥ 10 % of them at the same maximum.
fn is_clipped(metal: &Metal, idx: &[usize]) -> bool {
    let max = idx
        .iter()
        .map(|&i| metal.hu[i])
        .fold(f64::NEG_INFINITY, f64::max);
    let at_max = idx.iter().filter(|&&i| metal.hu[i] >= max - 1.0).count();
    !idx.is_empty() && at_max as f64 >= 0.1 * idx.len() as f64
}

/// Ends, tip choice, and the report of one candidate.
fn measure(
    ct: &Volume<f32>,
    metal: &Metal,
    c: &Candidate,
    set: &Settings,
    candidates: usize,
) -> DetectedNeedle {
    let clipped = is_clipped(metal, &c.inliers);
    let length = c.length_mm();
    let line = intensity_refit(ct, &c.line, (c.s_lo, c.s_hi), set);
    let (s_lo, s_hi) = (line.s(c.line.at(c.s_lo)), line.s(c.line.at(c.s_hi)));
    let hi = refine_end(ct, &line, s_hi, 1.0, length, clipped);
    let lo = refine_end(ct, &line, s_lo, -1.0, length, clipped);
    let (p_hi, p_lo) = (line.at(hi.s), line.at(lo.s));
    let hi_is_tip = match set.axis {
        Some(a) => line.axis.dot(a) >= 0.0,
        None => deeper_is_first(ct, p_hi, p_lo),
    };
    let (mut tip, hub) = if hi_is_tip { (hi, lo) } else { (lo, hi) };
    let axis = if hi_is_tip { line.axis } else { -line.axis };
    let mut tip_method = tip.method.to_owned();
    let mut tip_fit = None;
    if clipped && tip.method != SCAN_EDGE {
        match model_tip(ct, line.at(tip.s), axis) {
            Ok(m) => {
                tip.s += axis.dot(line.axis) * m.shift_mm;
                tip_method = MODEL_FIT.to_owned();
                tip_fit = Some(TipFit {
                    shift_mm: m.shift_mm,
                    psf_sigma_mm: m.sigma_mm,
                    slice_thickness_mm: m.thickness_mm,
                    residual_rms_hu: m.residual_rms_hu,
                    contrast_hu: m.contrast_hu,
                    voxels: m.voxels,
                });
            }
            Err(why) => tip_method = format!("{}; model fit not used: {why}", tip.method),
        }
    }
    let (tip_p, hub_p) = (line.at(tip.s), line.at(hub.s));
    let visible_length_mm = tip_p.distance(hub_p);
    let f_straight = 1.0 / (1.0 + c.rms_off_axis_mm.powi(2));
    let f_length = if set.min_length_mm > 0.0 {
        1.0 - (-visible_length_mm / set.min_length_mm).exp()
    } else {
        1.0
    };
    let f_contrast = if set.metal_hu > tip.background {
        ((tip.plateau - tip.background) / (set.metal_hu - tip.background)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let f_contrast = if f_contrast.is_finite() {
        f_contrast
    } else {
        0.5
    };
    DetectedNeedle {
        tip_lps: tip_p.to_array(),
        hub_end_lps: hub_p.to_array(),
        axis_lps: axis.to_array(),
        visible_length_mm,
        apparent_diameter_mm: c.diameter_mm,
        rms_off_axis_mm: c.rms_off_axis_mm,
        metal_voxels: c.inliers.len(),
        confidence: (f_straight * f_length * f_contrast).clamp(0.0, 1.0),
        tip_method,
        tip_fit,
        candidates,
    }
}

/// Whether `a` is deeper in the body than `b` (see the module documentation).
fn deeper_is_first(ct: &Volume<f32>, a: DVec3, b: DVec3) -> bool {
    match outside_air_distances(ct, [a, b]) {
        Some([da, db]) => da >= db,
        None => {
            let c = DVec3::from(ct.grid().center_lps());
            a.distance_squared(c) <= b.distance_squared(c)
        }
    }
}

/// Smallest distance from each point to air outside the body: voxels below
/// [`AIR_HU`] connected (8-neighbours) to the border of their slice (`k` = const).
fn outside_air_distances(ct: &Volume<f32>, points: [DVec3; 2]) -> Option<[f64; 2]> {
    let grid = ct.grid();
    let [nx, ny, nz] = grid.dims();
    let data = ct.data();
    let is_air = |o: usize| {
        let v = f64::from(data[o]);
        v.is_finite() && v < AIR_HU
    };
    let mut outside = vec![false; data.len()];
    let mut stack = Vec::new();
    for k in 0..nz {
        let base = k * nx * ny;
        for j in 0..ny {
            for i in 0..nx {
                let border = i == 0 || j == 0 || i + 1 == nx || j + 1 == ny;
                let o = base + i + nx * j;
                if border && is_air(o) && !outside[o] {
                    outside[o] = true;
                    stack.push((i, j));
                }
            }
        }
        while let Some((i, j)) = stack.pop() {
            for (di, dj) in [
                (-1, -1),
                (-1, 0),
                (-1, 1),
                (0, -1),
                (0, 1),
                (1, -1),
                (1, 0),
                (1, 1),
            ] {
                let (Some(a), Some(b)) = (i.checked_add_signed(di), j.checked_add_signed(dj))
                else {
                    continue;
                };
                if a >= nx || b >= ny {
                    continue;
                }
                let o = base + a + nx * b;
                if !outside[o] && is_air(o) {
                    outside[o] = true;
                    stack.push((a, b));
                }
            }
        }
    }
    let mut best = [f64::INFINITY; 2];
    for (o, _) in outside.iter().enumerate().filter(|(_, &f)| f) {
        let p = voxel_world(grid, o);
        for (d, q) in best.iter_mut().zip(points) {
            *d = d.min(p.distance_squared(q));
        }
    }
    best[0].is_finite().then(|| best.map(f64::sqrt))
}

/// The best-aligned needle with a hint (ties: more confident), else the most confident.
fn choose(needles: Vec<DetectedNeedle>, hint: Option<DVec3>) -> Option<DetectedNeedle> {
    let key = |n: &DetectedNeedle| -> (f64, f64) {
        let align = hint.map_or(0.0, |a| {
            (DVec3::from(n.axis_lps).dot(a).abs() * 1e3).round()
        });
        (align, n.confidence)
    };
    needles.into_iter().max_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Grid {
        Grid::axis_aligned([20, 20, 20], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]).expect("grid")
    }

    #[test]
    fn invalid_settings_are_errors() {
        let ct = Volume::filled(grid(), 0.0f32);
        let bad = [
            NeedleSearch {
                metal_hu: f64::NAN,
                ..Default::default()
            },
            NeedleSearch {
                min_length_mm: -1.0,
                ..Default::default()
            },
            NeedleSearch {
                expected_axis_lps: Some([0.0; 3]),
                ..Default::default()
            },
            NeedleSearch {
                near_lps: Some(([0.0; 3], 0.0)),
                ..Default::default()
            },
        ];
        for s in &bad {
            assert!(matches!(
                detect_needle(&ct, s),
                Err(IntraopError::InvalidParameter { .. })
            ));
        }
    }

    #[test]
    fn half_crossing_interpolates() {
        let us = [0.0, 1.0, 2.0, 3.0];
        let vals = [10.0, 10.0, 0.0, 0.0];
        let u = half_crossing(&us, &vals, 5.0, 0.0).expect("crossing");
        assert!((u - 1.5).abs() < 1e-12);
    }

    #[test]
    fn all_metal_and_nan_volumes_do_not_panic() {
        let ct = Volume::filled(grid(), 3071.0f32);
        let r = detect_needle(&ct, &NeedleSearch::default()).expect("runs");
        assert!(matches!(r, NeedleDetection::NotFound { .. }), "{r:?}");
        let ct = Volume::filled(grid(), f32::NAN);
        let r = detect_needle(&ct, &NeedleSearch::default()).expect("runs");
        match r {
            NeedleDetection::NotFound { reason } => assert!(reason.starts_with("no voxel")),
            other => panic!("{other:?}"),
        }
    }
}
