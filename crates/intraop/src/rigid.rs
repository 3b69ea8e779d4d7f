//! Rigid registration of a control CT onto the planning CT.
//!
//! A control or post-ablation scan covers a short z-range of the same patient, at another
//! dose and contrast phase, with a needle in it, and the patient has moved. The method:
//!
//! * **Images.** Intensities are clamped to [`RigidSettings::clamp_hu`] (so metal, streaks
//!   and contrast do not dominate); control voxels within [`RigidSettings::metal_margin_mm`]
//!   of metal (≥ [`RigidSettings::metal_hu`]) are not used at all. Each coarse level is a box
//!   average of the scan onto an isotropic, axis-aligned grid of that level's spacing (which
//!   also smooths); the last level uses the scans themselves.
//! * **Similarity.** Normalised cross-correlation (NCC) between control samples and the
//!   planning scan (trilinear, with its analytic gradient) at the mapped points, over the
//!   samples that land inside the planning scan; with [`RigidSettings::planning_mask`], only
//!   samples that land in that mask (e.g. a dilated organ) count.
//! * **Search.** At the coarsest level, an exhaustive grid of translations (long in z, where
//!   a short control scan can slip by a vertebra) picks the starts; each is refined by
//!   regular-step gradient ascent on the six rigid parameters (rotation about the control
//!   scan's centre, scaled by the samples' radius so that a step is in mm everywhere); the
//!   best goes on to the finer levels.
//! * **Polish.** At the last level (the scans themselves) a few robust Gauss–Newton
//!   (Levenberg–Marquardt) steps on the intensity residuals after a linear intensity fit
//!   — the least-squares form of NCC — with Huber weights, so that a deformed organ,
//!   another contrast phase or streaks pull less; a step is kept only when the NCC does
//!   not drop.
//! * **Honesty.** The result says whether it converged: final NCC at least
//!   [`RigidSettings::min_ncc`] and at least [`RigidSettings::min_overlap`] of the control
//!   samples inside the planning scan; otherwise the reason is given.
//!
//! Transforms act on LPS points: `control_to_planning` maps a point of the control scan to
//! the same anatomy in the planning scan.

use pinhole_volume::math::{mat3_inverse, Mat3, Mat4, Vec3, IDENTITY};
use pinhole_volume::{dilate, Grid, Mask, Volume};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{invalid, IntraopError};

/// With a planning mask, the least share of the control samples that must land in it.
const MIN_MASK_SHARE: f64 = 0.05;

/// How to register; [`Default`] gives the settings `pinhole register-ct` uses.
#[derive(Debug, Clone)]
pub struct RigidSettings {
    /// Spacing of the coarse levels, mm, coarsest first; the scans themselves follow.
    pub levels_mm: Vec<f64>,
    /// Control samples per coarse level (a deterministic subset when there are more
    /// voxels).
    pub samples: usize,
    /// Control samples at the last level (the scans themselves).
    pub final_samples: usize,
    /// Most gradient steps per start and level.
    pub iterations: usize,
    /// Intensities are clamped to this range (HU) before anything else.
    pub clamp_hu: (f64, f64),
    /// Control voxels at or above this are metal (needle, applicator).
    pub metal_hu: f64,
    /// Control voxels this close to metal are not used, mm.
    pub metal_margin_mm: f64,
    /// Coarse search: translations up to this far in z (and one coarse step in x and y), mm.
    pub search_z_mm: f64,
    /// Starting estimate of `control_to_planning` (identity: the scanner's frame).
    pub initial: Mat4,
    /// Only samples that land inside this planning-frame mask count (organ focus).
    pub planning_mask: Option<Mask>,
    /// At the last level, at most this many robust Gauss–Newton steps finish the
    /// registration (0: none).
    pub polish_iterations: usize,
    /// Below this final NCC the result is "not converged".
    pub min_ncc: f64,
    /// Below this fraction of control samples inside the planning scan, "not converged".
    pub min_overlap: f64,
}

impl Default for RigidSettings {
    fn default() -> Self {
        Self {
            levels_mm: vec![6.0, 3.0],
            samples: 20_000,
            final_samples: 60_000,
            iterations: 150,
            clamp_hu: (-1000.0, 1900.0),
            metal_hu: 2000.0,
            metal_margin_mm: 4.0,
            search_z_mm: 40.0,
            initial: pinhole_volume::math::IDENTITY4,
            planning_mask: None,
            polish_iterations: 8,
            min_ncc: 0.8,
            min_overlap: 0.3,
        }
    }
}

/// One level's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LevelSummary {
    /// Spacing of the level, mm (`null` for the scans' own).
    pub spacing_mm: Option<f64>,
    pub samples: usize,
    pub iterations: usize,
    pub ncc: f64,
}

/// The registration found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RigidResult {
    /// Control LPS → planning LPS, row-major 4×4.
    pub control_to_planning: Mat4,
    /// Rotation angle of `control_to_planning`, degrees.
    pub rotation_deg: f64,
    /// Displacement of the control scan's centre, mm.
    pub centre_shift_mm: f64,
    /// Final NCC (1 = identical up to brightness and contrast).
    pub ncc: f64,
    /// Fraction of the control samples that land inside the planning scan (with a mask too:
    /// the scans' overlap, not the mask's share).
    pub overlap: f64,
    pub converged: bool,
    /// Why it did not converge (`None` when it did).
    pub reason: Option<String>,
    pub levels: Vec<LevelSummary>,
}

/// Registers `control` onto `planning` (both HU).
pub fn register_rigid(
    planning: &Volume<f32>,
    control: &Volume<f32>,
    settings: &RigidSettings,
) -> Result<RigidResult, IntraopError> {
    check_settings(settings)?;
    let metal_free = metal_free_mask(control, settings.metal_hu, settings.metal_margin_mm);
    if !metal_free.data().iter().any(|&b| b) {
        return Err(invalid(
            "control scan",
            "no voxel far enough from metal to register with",
        ));
    }
    let centre = control.grid().center_lps();
    let mut pose = Pose::from_matrix(&settings.initial, centre);
    let mut levels = Vec::new();
    let mut last = None;
    let mut scan_overlap = f64::NAN;
    let level_count = settings.levels_mm.len() + 1;
    // The planning scan is clamped as it is read (no 35 M-voxel copy); the control scan,
    // small, is clamped and masked once.
    let clamp_f32 = (settings.clamp_hu.0 as f32, settings.clamp_hu.1 as f32);
    let fine_control = masked(control, settings.clamp_hu, &metal_free);
    let planning_levels = pyramid(planning, &settings.levels_mm, Some(clamp_f32))?;
    let control_levels = pyramid(&fine_control, &settings.levels_mm, None)?;
    for level in 0..level_count {
        let spacing = settings.levels_mm.get(level).copied();
        let (fixed, moving) = match (planning_levels.get(level), control_levels.get(level)) {
            (Some(f), Some(m)) => (f, m),
            _ => (planning, &fine_control),
        };
        // Coarse levels are clamped already; the planning scan itself is clamped here.
        let clamp = if spacing.is_some() {
            None
        } else {
            Some(clamp_f32)
        };
        let count = if spacing.is_some() {
            settings.samples
        } else {
            settings.final_samples
        };
        let samples = take_samples(moving, count);
        let problem = Problem {
            fixed: Fixed::new(fixed, clamp),
            samples: &samples,
            mask: settings.planning_mask.as_ref(),
            radius_mm: samples_radius(&samples, centre),
        };
        let step_mm = spacing.unwrap_or_else(|| min_spacing(planning).max(0.5));
        if level == 0 {
            pose = problem.best_start(pose, settings.search_z_mm, step_mm, settings.iterations);
        }
        // The last level only needs to come close: the Gauss–Newton polish finishes.
        let budget = if spacing.is_none() && settings.polish_iterations > 0 {
            settings.iterations.min(3)
        } else {
            settings.iterations
        };
        let (refined, mut iterations) = problem.ascend(pose, step_mm, budget);
        pose = refined;
        let mut eval = problem.evaluate(&pose, false);
        if spacing.is_none() && settings.polish_iterations > 0 {
            let (polished, more) = problem.polish(pose, settings.polish_iterations);
            pose = polished;
            iterations += more;
            eval = problem.evaluate(&pose, false);
        }
        levels.push(LevelSummary {
            spacing_mm: spacing,
            samples: samples.len(),
            iterations,
            ncc: eval.ncc,
        });
        // With a mask, `eval.overlap` is the share in the mask; the scans' overlap is
        // measured without it (an organ fills only part of a control scan), once, at the
        // last level.
        scan_overlap = if spacing.is_some() {
            f64::NAN
        } else if settings.planning_mask.is_some() {
            Problem {
                mask: None,
                ..problem
            }
            .evaluate(&pose, false)
            .overlap
        } else {
            eval.overlap
        };
        last = Some(eval);
    }
    let eval = last.unwrap_or_default();
    let overlap = scan_overlap;
    let reason = if overlap.is_nan() || overlap < settings.min_overlap {
        Some(format!(
            "only {:.0} % of the control scan lands inside the planning scan (at least {:.0} % needed): the scans may not overlap",
            overlap * 100.0,
            settings.min_overlap * 100.0
        ))
    } else if settings.planning_mask.is_some()
        && (eval.overlap.is_nan() || eval.overlap < MIN_MASK_SHARE)
    {
        Some(format!(
            "only {:.1} % of the control scan lies in the organ region (at least {:.0} % needed): the control scan barely shows the organ",
            eval.overlap * 100.0,
            MIN_MASK_SHARE * 100.0
        ))
    } else if eval.ncc.is_nan() || eval.ncc < settings.min_ncc {
        Some(format!(
            "similarity after registration is {:.2} NCC (at least {:.2} needed): another patient, another region or a failed alignment",
            eval.ncc, settings.min_ncc
        ))
    } else {
        None
    };
    let matrix = pose.matrix();
    Ok(RigidResult {
        control_to_planning: matrix,
        rotation_deg: pose.angle_deg(),
        centre_shift_mm: pinhole_volume::math::distance(pose.apply(centre), centre),
        ncc: eval.ncc,
        overlap,
        converged: reason.is_none(),
        reason,
        levels,
    })
}

fn check_settings(settings: &RigidSettings) -> Result<(), IntraopError> {
    if settings
        .levels_mm
        .iter()
        .any(|s| !(s.is_finite() && *s > 0.0 && *s <= 32.0))
    {
        return Err(invalid(
            "levels",
            "each level spacing must lie in (0, 32] mm",
        ));
    }
    if [settings.samples, settings.final_samples]
        .iter()
        .any(|&n| !(100..=5_000_000).contains(&n))
    {
        return Err(invalid("samples", "between 100 and 5,000,000"));
    }
    if settings.clamp_hu.0.is_nan()
        || settings.clamp_hu.1.is_nan()
        || settings.clamp_hu.0 >= settings.clamp_hu.1
    {
        return Err(invalid("clamp", "the lower HU must be below the upper"));
    }
    if !(settings.search_z_mm.is_finite() && (0.0..=200.0).contains(&settings.search_z_mm)) {
        return Err(invalid("search range", "0 to 200 mm"));
    }
    if settings.initial.iter().flatten().any(|v| !v.is_finite()) {
        return Err(invalid("initial transform", "non-finite entries"));
    }
    Ok(())
}

/// Control voxels far enough from metal.
pub(crate) fn metal_free_mask(control: &Volume<f32>, metal_hu: f64, margin_mm: f64) -> Mask {
    let metal = control.map(|v| f64::from(v) >= metal_hu);
    if !metal.data().iter().any(|&m| m) {
        return control.map(|v| v.is_finite());
    }
    let near = dilate(&metal, margin_mm);
    let data = near
        .data()
        .iter()
        .zip(control.data())
        .map(|(&n, v)| !n && v.is_finite())
        .collect();
    Mask::new(control.grid().clone(), data).unwrap_or_else(|_| near.map(|_| false))
}

pub(crate) fn min_spacing(volume: &Volume<f32>) -> f64 {
    volume
        .grid()
        .spacing_mm()
        .into_iter()
        .fold(f64::INFINITY, f64::min)
}

fn clamp(v: f32, (lo, hi): (f64, f64)) -> f32 {
    f64::from(v).clamp(lo, hi) as f32
}

fn clamped(volume: &Volume<f32>, range: (f64, f64)) -> Volume<f32> {
    volume.map(|v| {
        if v.is_finite() {
            clamp(v, range)
        } else {
            f32::NAN
        }
    })
}

/// Clamped, NaN where `keep` is false (NaN voxels give no sample).
pub(crate) fn masked(volume: &Volume<f32>, range: (f64, f64), keep: &Mask) -> Volume<f32> {
    let data = volume
        .data()
        .iter()
        .zip(keep.data())
        .map(|(&v, &k)| {
            if k && v.is_finite() {
                clamp(v, range)
            } else {
                f32::NAN
            }
        })
        .collect();
    Volume::new(volume.grid().clone(), data).unwrap_or_else(|_| clamped(volume, range))
}

/// The coarse levels of `volume` (already clamped; NaN = not used), in the order of
/// `levels_mm`: each from the finest source that is at most two thirds of its spacing
/// (the scan, or a finer level), so the 35 M voxels of a CT are visited once.
pub(crate) fn pyramid(
    volume: &Volume<f32>,
    levels_mm: &[f64],
    clamp: Option<(f32, f32)>,
) -> Result<Vec<Volume<f32>>, IntraopError> {
    let mut order: Vec<usize> = (0..levels_mm.len()).collect();
    order.sort_by(|&a, &b| levels_mm[a].total_cmp(&levels_mm[b]));
    let mut built: Vec<Option<Volume<f32>>> = vec![None; levels_mm.len()];
    let mut finest: Option<(f64, usize)> = None;
    for index in order {
        let spacing = levels_mm[index];
        let level = match finest {
            Some((s, i)) if s <= spacing / 1.5 => match &built[i] {
                Some(source) => box_average(source, spacing, None)?,
                None => box_average(volume, spacing, clamp)?,
            },
            _ => box_average(volume, spacing, clamp)?,
        };
        built[index] = Some(level);
        finest = Some((spacing, index));
    }
    Ok(built.into_iter().flatten().collect())
}

/// Box average onto an isotropic axis-aligned grid of `spacing_mm` covering the volume;
/// NaN voxels are left out, the others clamped to `clamp` when given; empty cells are
/// NaN. Grids whose axes are the world's (the usual CT, any sign) take a parallel path
/// with per-axis cell tables.
fn box_average(
    volume: &Volume<f32>,
    spacing_mm: f64,
    clamp: Option<(f32, f32)>,
) -> Result<Volume<f32>, IntraopError> {
    let (lo, hi) = clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let (low, high) = volume.grid().bounds_lps();
    let dims: [usize; 3] =
        std::array::from_fn(|a| ((high[a] - low[a]) / spacing_mm).round() as usize + 1);
    let grid = Grid::new(dims, [spacing_mm; 3], low, IDENTITY)?;
    let (sum, count) = match axis_cell_tables(volume.grid(), &grid) {
        Some(tables) => accumulate_aligned(volume, &grid, &tables, (lo, hi)),
        None => accumulate_any(volume, &grid, (lo, hi)),
    };
    let data = sum
        .iter()
        .zip(&count)
        .map(|(&s, &c)| {
            if c > 0 {
                (s / f64::from(c)) as f32
            } else {
                f32::NAN
            }
        })
        .collect();
    Volume::new(grid, data).map_err(|e| invalid("level", e.to_string()))
}

/// For a source grid whose direction is diagonal (±1), the target cell of each source
/// index along each axis (`None` outside).
fn axis_cell_tables(source: &Grid, target: &Grid) -> Option<[Vec<Option<usize>>; 3]> {
    let d = source.direction();
    for r in 0..3 {
        for c in 0..3 {
            let expected = if r == c { 1.0 } else { 0.0 };
            if (d[r][c].abs() - expected).abs() > 1e-9 {
                return None;
            }
        }
    }
    let (o, s, n) = (source.origin_lps(), source.spacing_mm(), source.dims());
    let (to, ts, tn) = (target.origin_lps(), target.spacing_mm(), target.dims());
    Some(std::array::from_fn(|a| {
        (0..n[a])
            .map(|i| {
                let x = o[a] + d[a][a] * s[a] * i as f64;
                let c = ((x - to[a]) / ts[a]).round();
                (c >= 0.0 && c < tn[a] as f64).then_some(c as usize)
            })
            .collect()
    }))
}

fn accumulate_aligned(
    volume: &Volume<f32>,
    grid: &Grid,
    tables: &[Vec<Option<usize>>; 3],
    (lo, hi): (f32, f32),
) -> (Vec<f64>, Vec<u32>) {
    let [nx, ny, _] = volume.grid().dims();
    let [tx, ty, tz] = grid.dims();
    let slab = tx * ty;
    let mut sum = vec![0.0f64; grid.voxel_count()];
    let mut count = vec![0u32; grid.voxel_count()];
    let data = volume.data();
    sum.par_chunks_mut(slab)
        .zip(count.par_chunks_mut(slab))
        .enumerate()
        .for_each(|(kc, (sum, count))| {
            for (k, _) in tables[2]
                .iter()
                .enumerate()
                .filter(|(_, c)| **c == Some(kc))
            {
                for (j, cj) in tables[1].iter().enumerate() {
                    let Some(cj) = cj else { continue };
                    let row = &data[(k * ny + j) * nx..(k * ny + j + 1) * nx];
                    for (v, ci) in row.iter().zip(&tables[0]) {
                        if let (Some(ci), true) = (ci, v.is_finite()) {
                            sum[cj * tx + ci] += f64::from(v.clamp(lo, hi));
                            count[cj * tx + ci] += 1;
                        }
                    }
                }
            }
        });
    let _ = tz;
    (sum, count)
}

fn accumulate_any(volume: &Volume<f32>, grid: &Grid, (lo, hi): (f32, f32)) -> (Vec<f64>, Vec<u32>) {
    let mut sum = vec![0.0f64; grid.voxel_count()];
    let mut count = vec![0u32; grid.voxel_count()];
    let source = volume.grid();
    let [nx, ny, nz] = source.dims();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let v = volume.data()[source.offset([i, j, k])];
                if !v.is_finite() {
                    continue;
                }
                let world = source.index_to_world([i as f64, j as f64, k as f64]);
                if let Some(cell) = grid.world_to_voxel(world) {
                    let o = grid.offset(cell);
                    sum[o] += f64::from(v.clamp(lo, hi));
                    count[o] += 1;
                }
            }
        }
    }
    (sum, count)
}

/// A control sample: where it is and its value.
#[derive(Debug, Clone, Copy)]
struct Sample {
    lps: Vec3,
    value: f64,
}

/// Up to `count` finite voxels of `volume`, spread evenly: every voxel when there are
/// few, else those at a fixed stride from a golden-ratio offset (deterministic).
fn take_samples(volume: &Volume<f32>, count: usize) -> Vec<Sample> {
    let data = volume.data();
    let finite = data.par_iter().filter(|v| v.is_finite()).count();
    let grid = volume.grid();
    let sample = |o: usize| {
        let ijk = grid.index_of_offset(o);
        Sample {
            lps: grid.index_to_world(ijk.map(|v| v as f64)),
            value: f64::from(data[o]),
        }
    };
    if finite <= count {
        return (0..data.len())
            .filter(|&o| data[o].is_finite())
            .map(sample)
            .collect();
    }
    // Every `stride`-th finite voxel, starting part-way in.
    let stride = finite as f64 / count as f64;
    let mut next = stride * 0.618_033_988_749_895;
    let mut seen = 0usize;
    let mut samples = Vec::with_capacity(count + 1);
    for (o, v) in data.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        if seen as f64 >= next {
            samples.push(sample(o));
            next += stride;
        }
        seen += 1;
    }
    samples
}

fn samples_radius(samples: &[Sample], centre: Vec3) -> f64 {
    if samples.is_empty() {
        return 100.0;
    }
    let sum: f64 = samples
        .iter()
        .map(|s| {
            let d = pinhole_volume::math::sub(s.lps, centre);
            pinhole_volume::math::dot(d, d)
        })
        .sum();
    (sum / samples.len() as f64).sqrt().max(10.0)
}

/// A rigid pose: `y = R (x − c) + c + t`.
#[derive(Debug, Clone, Copy)]
struct Pose {
    rotation: Mat3,
    translation: Vec3,
    centre: Vec3,
}

impl Pose {
    fn from_matrix(m: &Mat4, centre: Vec3) -> Self {
        let rotation: Mat3 = std::array::from_fn(|r| [m[r][0], m[r][1], m[r][2]]);
        // y = R x + b = R (x − c) + c + (R c + b − c)
        let rc = pinhole_volume::math::mat3_mul_vec(&rotation, centre);
        let translation = std::array::from_fn(|a| rc[a] + m[a][3] - centre[a]);
        Self {
            rotation,
            translation,
            centre,
        }
    }

    fn apply(&self, x: Vec3) -> Vec3 {
        let d = pinhole_volume::math::sub(x, self.centre);
        let r = pinhole_volume::math::mat3_mul_vec(&self.rotation, d);
        std::array::from_fn(|a| r[a] + self.centre[a] + self.translation[a])
    }

    fn matrix(&self) -> Mat4 {
        let b = self.apply([0.0; 3]);
        let r = &self.rotation;
        [
            [r[0][0], r[0][1], r[0][2], b[0]],
            [r[1][0], r[1][1], r[1][2], b[1]],
            [r[2][0], r[2][1], r[2][2], b[2]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    fn angle_deg(&self) -> f64 {
        pinhole_volume::math::rotation_angle_deg(&self.matrix())
    }

    /// This pose moved by a rotation vector `omega` (about the centre, applied after)
    /// and a translation.
    fn moved(&self, omega: Vec3, shift: Vec3) -> Self {
        let rotation = mat3_mul(&rotation_matrix(omega), &self.rotation);
        Self {
            rotation,
            translation: std::array::from_fn(|a| self.translation[a] + shift[a]),
            centre: self.centre,
        }
    }
}

/// Solves a 6×6 system by Gaussian elimination with partial pivoting; `None` when
/// singular.
fn solve6(mut a: [[f64; 6]; 6], mut b: [f64; 6]) -> Option<[f64; 6]> {
    for col in 0..6 {
        let pivot = (col..6).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..6 {
            let factor = a[row][col] / a[col][col];
            for k in col..6 {
                a[row][k] -= factor * a[col][k];
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = [0.0; 6];
    for row in (0..6).rev() {
        let tail: f64 = (row + 1..6).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

fn mat3_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    std::array::from_fn(|r| std::array::from_fn(|c| (0..3).map(|k| a[r][k] * b[k][c]).sum()))
}

/// Rodrigues: the rotation by `|w|` radians about `w`.
fn rotation_matrix(w: Vec3) -> Mat3 {
    let angle = pinhole_volume::math::norm(w);
    if angle < 1e-12 {
        return IDENTITY;
    }
    let k = w.map(|v| v / angle);
    let (s, c) = angle.sin_cos();
    let t = 1.0 - c;
    [
        [
            t * k[0] * k[0] + c,
            t * k[0] * k[1] - s * k[2],
            t * k[0] * k[2] + s * k[1],
        ],
        [
            t * k[0] * k[1] + s * k[2],
            t * k[1] * k[1] + c,
            t * k[1] * k[2] - s * k[0],
        ],
        [
            t * k[0] * k[2] - s * k[1],
            t * k[1] * k[2] + s * k[0],
            t * k[2] * k[2] + c,
        ],
    ]
}

/// The planning image of a level, with what trilinear sampling and its gradient need.
#[derive(Clone, Copy)]
pub(crate) struct Fixed<'a> {
    volume: &'a Volume<f32>,
    /// Values are clamped to this range as they are read.
    clamp: (f32, f32),
    /// World → continuous index (linear part).
    world_to_index: Mat3,
}

impl<'a> Fixed<'a> {
    pub(crate) fn new(volume: &'a Volume<f32>, clamp: Option<(f32, f32)>) -> Self {
        let grid = volume.grid();
        let index_to_world: Mat3 = {
            let d = grid.direction();
            let s = grid.spacing_mm();
            std::array::from_fn(|r| std::array::from_fn(|c| d[r][c] * s[c]))
        };
        Self {
            volume,
            clamp: clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY)),
            world_to_index: mat3_inverse(&index_to_world).unwrap_or(IDENTITY),
        }
    }

    /// Value and world gradient (per mm) at `lps`; `None` outside or next to a NaN.
    pub(crate) fn sample(&self, lps: Vec3) -> Option<(f64, Vec3)> {
        let grid = self.volume.grid();
        let c = grid.world_to_index(lps);
        let d = grid.dims();
        let mut base = [0usize; 3];
        let mut f = [0.0f64; 3];
        for a in 0..3 {
            if d[a] < 2 || !(c[a] >= 0.0 && c[a] <= (d[a] - 1) as f64) {
                return None;
            }
            let b = (c[a] as usize).min(d[a] - 2);
            base[a] = b;
            f[a] = c[a] - b as f64;
        }
        let o = grid.offset(base);
        let (sx, sy, sz) = (1, d[0], d[0] * d[1]);
        let data = self.volume.data();
        let (lo, hi) = self.clamp;
        let v = |i: usize, j: usize, k: usize| {
            f64::from(data[o + i * sx + j * sy + k * sz].clamp(lo, hi))
        };
        let (v000, v100, v010, v110) = (v(0, 0, 0), v(1, 0, 0), v(0, 1, 0), v(1, 1, 0));
        let (v001, v101, v011, v111) = (v(0, 0, 1), v(1, 0, 1), v(0, 1, 1), v(1, 1, 1));
        let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
        let c00 = lerp(v000, v100, f[0]);
        let c10 = lerp(v010, v110, f[0]);
        let c01 = lerp(v001, v101, f[0]);
        let c11 = lerp(v011, v111, f[0]);
        let c0 = lerp(c00, c10, f[1]);
        let c1 = lerp(c01, c11, f[1]);
        let value = lerp(c0, c1, f[2]);
        if !value.is_finite() {
            return None;
        }
        let gx0 = lerp(v100 - v000, v110 - v010, f[1]);
        let gx1 = lerp(v101 - v001, v111 - v011, f[1]);
        let gi = lerp(gx0, gx1, f[2]);
        let gj = lerp(c10 - c00, c11 - c01, f[2]);
        let gk = c1 - c0;
        // ∇_world = Wᵀ ∇_index, W = world → index.
        let w = &self.world_to_index;
        let g = [
            w[0][0] * gi + w[1][0] * gj + w[2][0] * gk,
            w[0][1] * gi + w[1][1] * gj + w[2][1] * gk,
            w[0][2] * gi + w[1][2] * gj + w[2][2] * gk,
        ];
        Some((value, g))
    }
}

/// NCC and its gradient at one pose.
#[derive(Debug, Clone, Copy, Default)]
struct Evaluation {
    ncc: f64,
    overlap: f64,
    /// d NCC / d (rotation vector), d NCC / d translation.
    grad_rotation: Vec3,
    grad_translation: Vec3,
}

struct Problem<'a> {
    fixed: Fixed<'a>,
    samples: &'a [Sample],
    mask: Option<&'a Mask>,
    radius_mm: f64,
}

/// The Gauss–Newton system at a pose, and the NCC there.
struct Normal {
    normal: [[f64; 6]; 6],
    rhs: [f64; 6],
    ncc: f64,
}

/// Per-sample terms collected in one pass.
#[derive(Clone, Copy)]
struct Term {
    m: f64,
    f: f64,
    gradient: Vec3,
    arm: Vec3,
}

impl Problem<'_> {
    /// The samples that land inside the planning scan (and mask) at `pose`, with the
    /// planning value and gradient there.
    fn terms(&self, pose: &Pose) -> Vec<Term> {
        self.samples
            .par_iter()
            .filter_map(|s| {
                let y = pose.apply(s.lps);
                if let Some(mask) = self.mask {
                    if mask.sample_nearest(y) != Some(true) {
                        return None;
                    }
                }
                let (f, gradient) = self.fixed.sample(y)?;
                Some(Term {
                    m: s.value,
                    f,
                    gradient,
                    arm: pinhole_volume::math::sub(
                        y,
                        pinhole_volume::math::add(pose.centre, pose.translation),
                    ),
                })
            })
            .collect()
    }

    fn evaluate(&self, pose: &Pose, with_gradient: bool) -> Evaluation {
        let terms = self.terms(pose);
        let n = terms.len();
        let overlap = if self.samples.is_empty() {
            0.0
        } else {
            n as f64 / self.samples.len() as f64
        };
        if n < 10 {
            return Evaluation {
                ncc: -1.0,
                overlap,
                ..Default::default()
            };
        }
        let mean_m = terms.iter().map(|t| t.m).sum::<f64>() / n as f64;
        let mean_f = terms.iter().map(|t| t.f).sum::<f64>() / n as f64;
        let (mut sfm, mut sff, mut smm) = (0.0, 0.0, 0.0);
        for t in &terms {
            let (dm, df) = (t.m - mean_m, t.f - mean_f);
            sfm += dm * df;
            sff += df * df;
            smm += dm * dm;
        }
        if sff <= 0.0 || smm <= 0.0 {
            return Evaluation {
                ncc: 0.0,
                overlap,
                ..Default::default()
            };
        }
        let norm = (sff * smm).sqrt();
        let ncc = sfm / norm;
        let mut eval = Evaluation {
            ncc,
            overlap,
            ..Default::default()
        };
        if with_gradient {
            let (gr, gt) = terms
                .par_iter()
                .map(|t| {
                    let w = (t.m - mean_m) / norm - ncc * (t.f - mean_f) / sff;
                    let g = t.gradient.map(|v| v * w);
                    (pinhole_volume::math::cross(t.arm, g), g)
                })
                .reduce(
                    || ([0.0; 3], [0.0; 3]),
                    |a, b| {
                        (
                            pinhole_volume::math::add(a.0, b.0),
                            pinhole_volume::math::add(a.1, b.1),
                        )
                    },
                );
            eval.grad_rotation = gr;
            eval.grad_translation = gt;
        }
        eval
    }

    /// Robust Gauss–Newton (Levenberg–Marquardt) on the intensity residuals after a
    /// linear intensity fit `m ≈ a f + b` (the least-squares form of NCC), with Huber
    /// weights (1.5 robust standard deviations) so that deformed organs, contrast and
    /// streaks count less. A step is kept only when the NCC over all samples does not
    /// drop; stops when a step moves the samples by less than 0.01 mm.
    fn polish(&self, mut pose: Pose, iterations: usize) -> (Pose, usize) {
        let mut lambda = 1e-3;
        let Some(mut here) = self.normal_equations(&pose) else {
            return (pose, 0);
        };
        let mut done = 0;
        while done < iterations {
            done += 1;
            let mut damped = here.normal;
            for d in 0..6 {
                damped[d][d] *= 1.0 + lambda;
            }
            let Some(delta) = solve6(damped, here.rhs) else {
                break;
            };
            let candidate = pose.moved(
                [delta[0], delta[1], delta[2]],
                [delta[3], delta[4], delta[5]],
            );
            let moved_mm = (delta[0].powi(2) + delta[1].powi(2) + delta[2].powi(2)).sqrt()
                * self.radius_mm
                + (delta[3].powi(2) + delta[4].powi(2) + delta[5].powi(2)).sqrt();
            // One pass gives the candidate's NCC and, if it is kept, the next system.
            match self.normal_equations(&candidate) {
                Some(there) if there.ncc >= here.ncc => {
                    pose = candidate;
                    here = there;
                    lambda = (lambda / 10.0).max(1e-6);
                    if moved_mm < 0.01 {
                        break;
                    }
                }
                _ => {
                    lambda *= 10.0;
                    if lambda > 1e3 {
                        break;
                    }
                }
            }
        }
        (pose, done)
    }

    /// `JᵀWJ` and `JᵀWr` of the robust intensity least squares at `pose`, with the NCC
    /// there.
    fn normal_equations(&self, pose: &Pose) -> Option<Normal> {
        let terms = self.terms(pose);
        if terms.len() < 100 {
            return None;
        }
        let n = terms.len() as f64;
        let (mm, mf) = terms
            .iter()
            .fold((0.0, 0.0), |a, t| (a.0 + t.m / n, a.1 + t.f / n));
        let (cov, var, var_m) = terms.iter().fold((0.0, 0.0, 0.0), |a, t| {
            (
                a.0 + (t.m - mm) * (t.f - mf),
                a.1 + (t.f - mf).powi(2),
                a.2 + (t.m - mm).powi(2),
            )
        });
        if var <= 0.0 || var_m <= 0.0 {
            return None;
        }
        let ncc = cov / (var * var_m).sqrt();
        let a = cov / var;
        let b = mm - a * mf;
        let residuals: Vec<f64> = terms.iter().map(|t| t.m - (a * t.f + b)).collect();
        let mut magnitudes: Vec<f64> = residuals.iter().map(|r| r.abs()).collect();
        magnitudes.sort_by(f64::total_cmp);
        let sigma = (1.4826 * magnitudes[magnitudes.len() / 2]).max(1e-6);
        let huber = 1.5 * sigma;
        let (normal, rhs) = terms
            .par_iter()
            .zip(residuals.par_iter())
            .map(|(t, &r)| {
                let w = if r.abs() <= huber {
                    1.0
                } else {
                    huber / r.abs()
                };
                let g = t.gradient.map(|v| v * a);
                let rot = pinhole_volume::math::cross(t.arm, g);
                let j = [rot[0], rot[1], rot[2], g[0], g[1], g[2]];
                let mut normal = [[0.0; 6]; 6];
                let mut rhs = [0.0; 6];
                for p in 0..6 {
                    rhs[p] = w * j[p] * r;
                    for q in 0..6 {
                        normal[p][q] = w * j[p] * j[q];
                    }
                }
                (normal, rhs)
            })
            .reduce(
                || ([[0.0; 6]; 6], [0.0; 6]),
                |mut x, y| {
                    for p in 0..6 {
                        x.1[p] += y.1[p];
                        for q in 0..6 {
                            x.0[p][q] += y.0[p][q];
                        }
                    }
                    x
                },
            );
        Some(Normal { normal, rhs, ncc })
    }

    /// Exhaustive translations around `start` at this (coarse) level; the best few are
    /// refined and the best refined pose returned.
    fn best_start(&self, start: Pose, search_z_mm: f64, step_mm: f64, iterations: usize) -> Pose {
        // The exhaustive grid scores poses on every sixth sample (thousands still).
        let subset: Vec<Sample> = self.samples.iter().step_by(6).copied().collect();
        let coarse = Problem {
            fixed: self.fixed,
            samples: &subset,
            mask: self.mask,
            radius_mm: self.radius_mm,
        };
        let z_steps = (search_z_mm / step_mm).floor() as i64;
        // Sideways, one step each way: the gradient ascent covers the rest.
        let xy_steps = i64::from(search_z_mm / 3.0 >= step_mm);
        let mut scored: Vec<(f64, Pose)> = Vec::new();
        for dz in -z_steps..=z_steps {
            for dy in -xy_steps..=xy_steps {
                for dx in -xy_steps..=xy_steps {
                    let shift = [dx, dy, dz].map(|v| v as f64 * step_mm);
                    let pose = start.moved([0.0; 3], shift);
                    let eval = coarse.evaluate(&pose, false);
                    // Candidates must keep most of the overlap the start had.
                    scored.push((eval.ncc * eval.overlap.min(1.0).sqrt(), pose));
                }
            }
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .into_iter()
            .take(2)
            .map(|(_, pose)| {
                let (refined, _) = self.ascend(pose, step_mm, iterations);
                let eval = self.evaluate(&refined, false);
                (eval.ncc * eval.overlap.min(1.0).sqrt(), refined)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map_or(start, |(_, pose)| pose)
    }

    /// Regular-step gradient ascent: a step of `step` mm along the normalised gradient
    /// (rotations scaled by the samples' radius); a step that lowers the NCC is refused
    /// and the step halved; stops below a twentieth of the first step.
    fn ascend(&self, mut pose: Pose, first_step_mm: f64, iterations: usize) -> (Pose, usize) {
        let mut step = first_step_mm;
        let mut current = self.evaluate(&pose, true);
        let mut done = 0;
        while done < iterations && step >= first_step_mm / 20.0 {
            done += 1;
            let r = self.radius_mm;
            // Scaled parameters p = (ω r, t): dNCC/dp = (g_ω / r, g_t).
            let g: [f64; 6] = [
                current.grad_rotation[0] / r,
                current.grad_rotation[1] / r,
                current.grad_rotation[2] / r,
                current.grad_translation[0],
                current.grad_translation[1],
                current.grad_translation[2],
            ];
            let length = g.iter().map(|v| v * v).sum::<f64>().sqrt();
            if !(length > 0.0 && length.is_finite()) {
                break;
            }
            let d = g.map(|v| v / length * step);
            let candidate = pose.moved([d[0] / r, d[1] / r, d[2] / r], [d[3], d[4], d[5]]);
            let eval = self.evaluate(&candidate, true);
            if eval.ncc > current.ncc {
                pose = candidate;
                current = eval;
            } else {
                step *= 0.5;
            }
        }
        (pose, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rodrigues_matches_a_quarter_turn_about_z() {
        let r = rotation_matrix([0.0, 0.0, std::f64::consts::FRAC_PI_2]);
        let v = pinhole_volume::math::mat3_mul_vec(&r, [1.0, 0.0, 0.0]);
        assert!((v[0]).abs() < 1e-12 && (v[1] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn pose_round_trips_through_its_matrix() {
        let m = [
            [0.0, -1.0, 0.0, 5.0],
            [1.0, 0.0, 0.0, -3.0],
            [0.0, 0.0, 1.0, 2.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let pose = Pose::from_matrix(&m, [10.0, 20.0, 30.0]);
        let back = pose.matrix();
        for r in 0..4 {
            for c in 0..4 {
                assert!((back[r][c] - m[r][c]).abs() < 1e-12);
            }
        }
        assert!((pose.angle_deg() - 90.0).abs() < 1e-9);
    }
}
