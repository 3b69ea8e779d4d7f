//! The needle's tip in a clipped scan, from a model of the voxels around it.
//!
//! When the metal saturates (12-bit data: 3071 HU), the halfway level of the clipped
//! plateau lies outward of the true end and the steepest descent of the profile is
//! biased too; both depend on where the tip falls between two slices. Here the voxels
//! near the tip are compared with what a CT makes of a rod ending at a trial position:
//!
//! * the rod: points every [`STEP_MM`] on the fitted axis up to the trial tip, each the
//!   centre of a disc of radius [`ROD_RADIUS_MM`];
//! * the slice: a voxel of slice `k` averages a box along the slice normal (the grid's
//!   `k` axis; the slice sensitivity profile) 1, 1.5 or 2 slice spacings thick (slices
//!   that touch or overlap; the thickness is fitted); a rod point counts with the
//!   fraction of its disc's extent along the normal (`radius × cos(elevation)`, the disc
//!   being perpendicular to the axis) that lies in the box;
//! * the plane: a Gaussian point spread function of standard deviation σ, on the
//!   distance within the slice plane;
//! * the voxel value: `background + amplitude × Σ weights`, clipped at the scan's
//!   maximum when at least three voxels sit at it (those voxels only say "at least
//!   the clip": they count when the model falls below it).
//!
//! Background and amplitude are solved by least squares for each trial tip (±4 mm
//! around the profile's estimate, 0.05 mm steps), σ (0.3–2.0 mm) and slice thickness;
//! the trial with the smallest residual wins. The work is bounded: at most
//! [`MAX_VOXELS`] voxels are fitted (every n-th on fine grids) and slices more than
//! [`MAX_SLICE_SPACING_MM`] apart are not modelled.
//!
//! No answer, with the reason (the caller keeps its estimate and says so), when too few
//! voxels are unclipped, no trial has a positive amplitude, the best tip lies at the
//! edge of the search or more than [`MAX_SHIFT_MM`] from the estimate (another object
//! near the axis), or the model fits the voxels poorly (residual RMS above
//! [`MAX_RMS_PER_CONTRAST`] of the contrast).

use pinhole_volume::math::DVec3;
use pinhole_volume::Volume;
use rayon::prelude::*;

/// Rod points and trial tips are this far apart along the axis.
const STEP_MM: f64 = 0.05;
/// Radius of the rod's cross-section (an 18–21 G needle; the tips found move by
/// < 0.1 mm median between 0.3 and 1.0 mm on the needle study's scans).
const ROD_RADIUS_MM: f64 = 0.5;
/// Below this half extent along the slice normal a rod point is a point.
const MIN_HALF_EXTENT_MM: f64 = 1e-3;
/// Trial tips lie within this distance of the starting estimate.
const SEARCH_MM: f64 = 4.0;
/// The answer is refused when the tip moves farther than this from the profile's
/// estimate (the steepest edge was off by at most ~1.5 mm on the study's scans).
const MAX_SHIFT_MM: f64 = 2.5;
/// ... or when the residual RMS exceeds this fraction of the contrast.
const MAX_RMS_PER_CONTRAST: f64 = 0.2;
/// Coarser slices: no answer (the rod would be long and the box profile doubtful).
const MAX_SLICE_SPACING_MM: f64 = 10.0;
/// More voxels around the tip than this: every n-th is fitted (fine grids).
const MAX_VOXELS: usize = 4000;
/// Point spread functions tried (σ, mm).
const SIGMA_MIN_MM: f64 = 0.3;
const SIGMA_MAX_MM: f64 = 2.0;
const SIGMA_STEP_MM: f64 = 0.1;
/// Slice thicknesses tried, per slice spacing (overlapping reconstructions: a
/// thickness of up to twice the spacing).
const THICKNESS_PER_SPACING: [f64; 3] = [1.0, 1.5, 2.0];
/// Fewer unclipped voxels than this: no answer.
const MIN_FREE_VOXELS: usize = 12;
/// Censoring rounds per trial (voxels at the clip whose model falls below it join).
const CENSOR_ROUNDS: usize = 3;

/// The model's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ModelTip {
    /// Move of the tip along the outward axis from the starting estimate (mm).
    pub shift_mm: f64,
    /// The in-plane point spread function that fitted best (σ, mm).
    pub sigma_mm: f64,
    /// The slice thickness that fitted best (mm).
    pub thickness_mm: f64,
    /// RMS residual over the voxels (clipped ones as in the fit), HU.
    pub residual_rms_hu: f64,
    /// Clip level (or highest voxel) above the fitted background, HU.
    pub contrast_hu: f64,
    /// Voxels fitted.
    pub voxels: usize,
}

/// Voxels near the tip: values, in-slice coordinates and position along the normal.
struct Neighbourhood {
    values: Vec<f64>,
    /// Position within the slice plane (two in-plane unit vectors), mm.
    plane: Vec<[f64; 2]>,
    /// Position along the slice normal, mm.
    normal: Vec<f64>,
    clipped: Vec<bool>,
    /// The clip level; infinite when the voxels are not clipped.
    clip_hu: f64,
    /// Distance between slices, mm.
    spacing_mm: f64,
}

/// One trial's least-squares fit.
#[derive(Clone, Copy)]
struct Fit {
    sse: f64,
    rms_hu: f64,
    background_hu: f64,
}

/// The best trial of one (σ, thickness) pair.
#[derive(Clone, Copy)]
struct Best {
    fit: Fit,
    trial: usize,
    sigma_mm: f64,
    thickness_mm: f64,
}

/// The tip near `tip` (outward axis `axis_out`, unit) from the voxels around it, or why
/// the model gives no answer (the caller keeps its own estimate and says so).
pub(crate) fn model_tip(ct: &Volume<f32>, tip: DVec3, axis_out: DVec3) -> Result<ModelTip, String> {
    let spacing = ct.grid().spacing_mm();
    if spacing[2] > MAX_SLICE_SPACING_MM {
        return Err(format!(
            "slices {:.1} mm apart (the model is for at most {MAX_SLICE_SPACING_MM} mm)",
            spacing[2]
        ));
    }
    let hood = neighbourhood(ct, tip, axis_out)
        .ok_or_else(|| "no finite voxel around the tip".to_owned())?;
    let free = hood.clipped.iter().filter(|c| !**c).count();
    if free < MIN_FREE_VOXELS {
        return Err(format!(
            "{free} unclipped voxels around the tip (at least {MIN_FREE_VOXELS} needed)"
        ));
    }
    let rod = RodPoints::new(&hood, ct, tip, axis_out);
    let n_trials = (2.0 * SEARCH_MM / STEP_MM).round() as usize + 1;
    let n_sigmas = ((SIGMA_MAX_MM - SIGMA_MIN_MM) / SIGMA_STEP_MM).round() as usize + 1;
    let pairs: Vec<(f64, f64)> = THICKNESS_PER_SPACING
        .iter()
        .flat_map(|f| {
            // Rounded to the step (0.9, not 0.9000000000000001, in reports).
            (0..n_sigmas).map(move |k| {
                let sigma_mm = ((SIGMA_MIN_MM + k as f64 * SIGMA_STEP_MM) * 10.0).round() / 10.0;
                (sigma_mm, f * spacing[2])
            })
        })
        .collect();
    let best = pairs
        .par_iter()
        .filter_map(|&(sigma_mm, thickness_mm)| {
            let at_trials = rod.weights_at_trials(&hood, sigma_mm, thickness_mm, n_trials);
            (0..n_trials)
                .filter_map(|t| {
                    fit_trial(&hood, &at_trials, t, n_trials).map(|fit| Best {
                        fit,
                        trial: t,
                        sigma_mm,
                        thickness_mm,
                    })
                })
                .min_by(|a, b| a.fit.sse.total_cmp(&b.fit.sse))
        })
        .min_by(|a, b| a.fit.sse.total_cmp(&b.fit.sse))
        .ok_or_else(|| "no trial gave the rod a positive amplitude".to_owned())?;
    accept(best, &hood, n_trials)
}

/// The answer, unless the best trial is implausible: at the search's edge, far from
/// the profile's estimate, or fitting the voxels poorly.
fn accept(best: Best, hood: &Neighbourhood, n_trials: usize) -> Result<ModelTip, String> {
    let shift_mm = -SEARCH_MM + best.trial as f64 * STEP_MM;
    if best.trial == 0 || best.trial + 1 == n_trials || shift_mm.abs() > MAX_SHIFT_MM {
        return Err(format!(
            "the best fit moves the tip {shift_mm:+.2} mm from the profile's edge (at most {MAX_SHIFT_MM} mm accepted)"
        ));
    }
    let top = if hood.clip_hu.is_finite() {
        hood.clip_hu
    } else {
        hood.values
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let contrast_hu = top - best.fit.background_hu;
    if contrast_hu.is_nan()
        || contrast_hu <= 0.0
        || best.fit.rms_hu > MAX_RMS_PER_CONTRAST * contrast_hu
    {
        return Err(format!(
            "the model fits the voxels poorly (residual {:.0} HU RMS against a contrast of {contrast_hu:.0} HU)",
            best.fit.rms_hu
        ));
    }
    Ok(ModelTip {
        shift_mm,
        sigma_mm: best.sigma_mm,
        thickness_mm: best.thickness_mm,
        residual_rms_hu: best.fit.rms_hu,
        contrast_hu,
        voxels: hood.values.len(),
    })
}

/// Voxels within 2.5 mm (or 1.5 in-plane spacings) of the axis, from 6 mm behind the
/// tip to 5 mm beyond it (at least 2.5 and 2 slice spacings); every n-th when there
/// are more than [`MAX_VOXELS`].
fn neighbourhood(ct: &Volume<f32>, tip: DVec3, axis_out: DVec3) -> Option<Neighbourhood> {
    let grid = ct.grid();
    let sp = grid.spacing_mm();
    let behind = 6f64.max(2.5 * sp[2]);
    let beyond = 5f64.max(2.0 * sp[2]);
    let radius = 2.5f64.max(1.5 * sp[0].max(sp[1]));
    let reach = behind.max(beyond) + radius;
    let (lo, hi) = index_box(grid, tip, reach)?;
    let [e_i, e_j, normal] = grid_axes(grid);
    let mut near: Vec<(f64, DVec3)> = Vec::new();
    for k in lo[2]..=hi[2] {
        for j in lo[1]..=hi[1] {
            for i in lo[0]..=hi[0] {
                let Some(v) = ct.get([i, j, k]).map(f64::from).filter(|v| v.is_finite()) else {
                    continue;
                };
                let p = DVec3::from(grid.index_to_world([i as f64, j as f64, k as f64]));
                let rel = p - tip;
                let s = rel.dot(axis_out);
                let off_axis = (rel - axis_out * s).length();
                if (-behind..=beyond).contains(&s) && off_axis <= radius {
                    near.push((v, p));
                }
            }
        }
    }
    if near.is_empty() {
        return None;
    }
    let every = near.len().div_ceil(MAX_VOXELS);
    let near: Vec<(f64, DVec3)> = near.into_iter().step_by(every).collect();
    let max = near.iter().map(|n| n.0).fold(f64::NEG_INFINITY, f64::max);
    let censor = near.iter().filter(|n| n.0 >= max - 0.5).count() >= 3;
    Some(Neighbourhood {
        values: near.iter().map(|n| n.0).collect(),
        plane: near.iter().map(|n| [n.1.dot(e_i), n.1.dot(e_j)]).collect(),
        normal: near.iter().map(|n| n.1.dot(normal)).collect(),
        clipped: near.iter().map(|n| censor && n.0 >= max - 0.5).collect(),
        clip_hu: if censor { max } else { f64::INFINITY },
        spacing_mm: sp[2],
    })
}

/// The grid's i, j and k axes as world unit vectors (i, j span a slice; k is its normal).
fn grid_axes(grid: &pinhole_volume::Grid) -> [DVec3; 3] {
    let d = grid.direction();
    [0, 1, 2].map(|c| DVec3::new(d[0][c], d[1][c], d[2][c]))
}

/// The index box (inclusive) holding the cube of half-side `reach_mm` around `centre`.
fn index_box(
    grid: &pinhole_volume::Grid,
    centre: DVec3,
    reach_mm: f64,
) -> Option<([usize; 3], [usize; 3])> {
    let dims = grid.dims();
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for corner in 0..8 {
        let offset = DVec3::new(
            if corner & 1 == 0 { -reach_mm } else { reach_mm },
            if corner & 2 == 0 { -reach_mm } else { reach_mm },
            if corner & 4 == 0 { -reach_mm } else { reach_mm },
        );
        let idx = grid.world_to_index((centre + offset).to_array());
        for a in 0..3 {
            lo[a] = lo[a].min(idx[a].floor());
            hi[a] = hi[a].max(idx[a].ceil());
        }
    }
    let mut lo_i = [0usize; 3];
    let mut hi_i = [0usize; 3];
    for a in 0..3 {
        let last = dims[a] as f64 - 1.0;
        if !(lo[a].is_finite() && hi[a].is_finite()) || hi[a] < 0.0 || lo[a] > last {
            return None;
        }
        lo_i[a] = lo[a].max(0.0) as usize;
        hi_i[a] = hi[a].min(last) as usize;
    }
    Some((lo_i, hi_i))
}

/// The rod's points along the axis, in slice coordinates.
struct RodPoints {
    plane: Vec<[f64; 2]>,
    normal: Vec<f64>,
    /// Index of the point where the first trial tip lies (trial `t` ends at
    /// `first_trial + t`).
    first_trial: usize,
    /// Half the extent of a rod point's disc along the slice normal.
    half_extent_mm: f64,
}

impl RodPoints {
    fn new(hood: &Neighbourhood, ct: &Volume<f32>, tip: DVec3, axis_out: DVec3) -> Self {
        let [e_i, e_j, normal] = grid_axes(ct.grid());
        let behind = 6f64.max(2.5 * hood.spacing_mm) + 3.0 * SIGMA_MAX_MM + 2.0 * hood.spacing_mm;
        let first = -(behind / STEP_MM).round() as i64;
        let last = (SEARCH_MM / STEP_MM).round() as i64;
        let points: Vec<DVec3> = (first..=last)
            .map(|m| tip + axis_out * (m as f64 * STEP_MM))
            .collect();
        let cos_elevation = (1.0 - axis_out.dot(normal).powi(2)).max(0.0).sqrt();
        RodPoints {
            plane: points.iter().map(|p| [p.dot(e_i), p.dot(e_j)]).collect(),
            normal: points.iter().map(|p| p.dot(normal)).collect(),
            first_trial: (-first - last) as usize,
            half_extent_mm: ROD_RADIUS_MM * cos_elevation,
        }
    }

    /// Per voxel, the sum of the weights of the rod points up to each trial tip
    /// (row-major: voxel × trial).
    fn weights_at_trials(
        &self,
        hood: &Neighbourhood,
        sigma_mm: f64,
        thickness_mm: f64,
        n_trials: usize,
    ) -> Vec<f64> {
        let h = self.half_extent_mm;
        let half_slice = 0.5 * thickness_mm;
        let inv_two_var = 0.5 / (sigma_mm * sigma_mm);
        let mut out = vec![0.0; hood.values.len() * n_trials];
        for (v, row) in out.chunks_exact_mut(n_trials).enumerate() {
            let [x, y] = hood.plane[v];
            let z = hood.normal[v];
            let mut sum = 0.0;
            for (m, (&[px, py], &zp)) in self.plane.iter().zip(&self.normal).enumerate() {
                let overlap = if h > MIN_HALF_EXTENT_MM {
                    ((zp + h).min(z + half_slice) - (zp - h).max(z - half_slice)).max(0.0)
                        / (2.0 * h)
                } else if (zp - z).abs() <= half_slice {
                    1.0
                } else {
                    0.0
                };
                if overlap > 0.0 {
                    let d2 = (x - px).powi(2) + (y - py).powi(2);
                    sum += overlap * (-d2 * inv_two_var).exp();
                }
                if let Some(cell) = m.checked_sub(self.first_trial).and_then(|t| row.get_mut(t)) {
                    *cell = sum;
                }
            }
        }
        out
    }
}

/// The least-squares fit of background + amplitude for the rod ending at trial `t`;
/// `None` when it is degenerate or the amplitude is not positive.
fn fit_trial(hood: &Neighbourhood, at_trials: &[f64], t: usize, n_trials: usize) -> Option<Fit> {
    let model = |v: usize| at_trials[v * n_trials + t];
    let n = hood.values.len();
    let mut used: Vec<bool> = hood.clipped.iter().map(|c| !c).collect();
    let mut coef = (0.0, 0.0);
    for _ in 0..CENSOR_ROUNDS {
        coef = least_squares(hood, &model, &used)?;
        let mut changed = false;
        for (v, u) in used.iter_mut().enumerate() {
            let next = !hood.clipped[v] || coef.0 + coef.1 * model(v) < hood.clip_hu;
            changed |= next != *u;
            *u = next;
        }
        if !changed {
            break;
        }
    }
    let (background_hu, amplitude) = coef;
    if amplitude.is_nan() || amplitude <= 0.0 {
        return None;
    }
    let sse: f64 = (0..n)
        .map(|v| {
            let predicted = background_hu + amplitude * model(v);
            if hood.clipped[v] {
                (predicted - hood.clip_hu).min(0.0).powi(2)
            } else {
                (predicted - hood.values[v]).powi(2)
            }
        })
        .sum();
    Some(Fit {
        sse,
        rms_hu: (sse / n as f64).sqrt(),
        background_hu,
    })
}

/// Background and amplitude minimising the squared residuals over `used` voxels
/// (clipped voxels at the clip level).
fn least_squares(
    hood: &Neighbourhood,
    model: &impl Fn(usize) -> f64,
    used: &[bool],
) -> Option<(f64, f64)> {
    let (mut n, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for v in (0..used.len()).filter(|&v| used[v]) {
        let x = model(v);
        let y = if hood.clipped[v] {
            hood.clip_hu
        } else {
            hood.values[v]
        };
        n += 1.0;
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
    }
    let det = n * sxx - sx * sx;
    if n < 3.0 || det.abs() <= 1e-12 * n * sxx.max(1e-300) {
        return None;
    }
    let amplitude = (n * sxy - sx * sy) / det;
    let background = (sy - amplitude * sx) / n;
    Some((background, amplitude))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_volume::Grid;

    fn grid() -> Grid {
        Grid::axis_aligned([40, 40, 16], [0.7, 0.7, 2.5], [-14.0, -14.0, -20.0]).expect("grid")
    }

    /// Clipped voxels scattered at random around the estimate are no rod ending there:
    /// no answer, with the reason.
    #[test]
    fn clipped_speckle_is_not_a_rod() {
        let grid = grid();
        let mut state = 12_345u64;
        let data = (0..grid.voxel_count())
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                if (state >> 33).is_multiple_of(7) {
                    3071.0
                } else {
                    40.0 + ((state >> 40) % 50) as f32
                }
            })
            .collect();
        let ct = Volume::new(grid, data).expect("volume");
        let why = model_tip(&ct, DVec3::ZERO, DVec3::X).expect_err("no rod");
        assert!(
            why.contains("poorly") || why.contains("moves the tip") || why.contains("amplitude"),
            "{why}"
        );
    }

    #[test]
    fn no_finite_voxel_and_coarse_slices_give_no_answer() {
        let ct = Volume::filled(grid(), f32::NAN);
        let why = model_tip(&ct, DVec3::ZERO, DVec3::X).expect_err("nothing to fit");
        assert!(why.contains("no finite voxel"), "{why}");
        let coarse =
            Grid::axis_aligned([40, 40, 4], [0.7, 0.7, 12.0], [-14.0, -14.0, -20.0]).expect("grid");
        let why = model_tip(&Volume::filled(coarse, 40.0), DVec3::ZERO, DVec3::X)
            .expect_err("slices too far apart");
        assert!(why.contains("12.0 mm apart"), "{why}");
    }
}
