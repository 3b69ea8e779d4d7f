//! The needle's tip in a clipped scan, from a model of the voxels around it.
//!
//! When the metal saturates (12-bit data: 3071 HU), the halfway level of the clipped
//! plateau lies outward of the true end and the steepest descent of the profile is
//! biased too; both depend on where the tip falls between two slices. Here the voxels
//! near the tip are compared with what a CT makes of a rod ending at a trial position:
//!
//! * the rod: points every [`STEP_MM`] on the fitted axis up to the trial tip, each the
//!   centre of a disc of radius [`ROD_RADIUS_MM`];
//! * the slice: a voxel of slice `k` averages a box along the slice normal (the slice
//!   sensitivity profile) 1, 1.5 or 2 slice spacings thick (slices that touch or
//!   overlap; the thickness is fitted); a rod point counts with the fraction of its disc's extent along the
//!   normal (`radius × cos(elevation)`, the disc being perpendicular to the axis) that
//!   lies in the box;
//! * the plane: a Gaussian point spread function of standard deviation σ, on the
//!   distance within the slice plane;
//! * the voxel value: `background + amplitude × Σ weights`, clipped at the scan's
//!   maximum when at least three voxels sit at it (those voxels only say "at least
//!   the clip": they count when the model falls below it).
//!
//! Background and amplitude are solved by least squares for each trial tip (±4 mm
//! around the profile's estimate, 0.05 mm steps), σ (0.3–2.0 mm) and slice thickness;
//! the trial with the
//! smallest residual wins. No answer (the caller keeps its estimate) when too few
//! voxels are unclipped, the amplitude is not positive or the best tip lies at the
//! edge of the search.

use pinhole_volume::math::DVec3;
use pinhole_volume::Volume;

/// Rod points and trial tips are this far apart along the axis.
const STEP_MM: f64 = 0.05;
/// Radius of the rod's cross-section (an 18–21 G needle; the tips found move by
/// < 0.1 mm median between 0.3 and 1.0 mm on the needle study's scans).
const ROD_RADIUS_MM: f64 = 0.5;
/// Below this half extent along the slice normal a rod point is a point.
const MIN_HALF_EXTENT_MM: f64 = 1e-3;
/// Trial tips lie within this distance of the starting estimate.
const SEARCH_MM: f64 = 4.0;
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
}

/// Voxels near the tip: values, in-slice coordinates and position along the normal.
struct Neighbourhood {
    values: Vec<f64>,
    /// Position within the slice plane (two in-plane unit vectors), mm.
    plane: Vec<[f64; 2]>,
    /// Position along the slice normal, mm.
    normal: Vec<f64>,
    clipped: Vec<bool>,
    clip_hu: f64,
    /// Distance between slices, mm.
    spacing_mm: f64,
}

/// The tip near `tip` (outward axis `axis_out`, unit) from the voxels around it.
pub(crate) fn model_tip(ct: &Volume<f32>, tip: DVec3, axis_out: DVec3) -> Option<ModelTip> {
    let hood = neighbourhood(ct, tip, axis_out)?;
    let free = hood.clipped.iter().filter(|c| !**c).count();
    if free < MIN_FREE_VOXELS {
        return None;
    }
    let rod = RodPoints::new(&hood, ct, tip, axis_out);
    let n_trials = (2.0 * SEARCH_MM / STEP_MM).round() as usize + 1;
    let mut best: Option<(f64, usize, f64)> = None;
    for thickness in THICKNESS_PER_SPACING.map(|f| f * hood.spacing_mm) {
        let mut sigma = SIGMA_MIN_MM;
        while sigma <= SIGMA_MAX_MM + 1e-9 {
            let cumulative = rod.cumulative_weights(&hood, sigma, thickness);
            for t in 0..n_trials {
                let Some(fit) = fit_trial(&hood, &cumulative, rod.last_point_for(t)) else {
                    continue;
                };
                if best.is_none_or(|(sse, _, _)| fit < sse) {
                    best = Some((fit, t, sigma));
                }
            }
            sigma += SIGMA_STEP_MM;
        }
    }
    let (_, t, sigma_mm) = best?;
    if t == 0 || t + 1 == n_trials {
        return None;
    }
    Some(ModelTip {
        shift_mm: -SEARCH_MM + t as f64 * STEP_MM,
        sigma_mm,
    })
}

/// Voxels within 2.5 mm (or 1.5 in-plane spacings) of the axis, from 6 mm behind the
/// tip to 5 mm beyond it (at least 2.5 and 2 slice spacings).
fn neighbourhood(ct: &Volume<f32>, tip: DVec3, axis_out: DVec3) -> Option<Neighbourhood> {
    let grid = ct.grid();
    let sp = grid.spacing_mm();
    let behind = 6f64.max(2.5 * sp[2]);
    let beyond = 5f64.max(2.0 * sp[2]);
    let radius = 2.5f64.max(1.5 * sp[0].max(sp[1]));
    let reach = behind.max(beyond) + radius;
    let (lo, hi) = index_box(grid, tip, reach)?;
    let d = grid.direction();
    let col = |c: usize| DVec3::new(d[0][c], d[1][c], d[2][c]);
    let (e_i, e_j, normal) = (col(0), col(1), col(2));
    let mut hood = Neighbourhood {
        values: Vec::new(),
        plane: Vec::new(),
        normal: Vec::new(),
        clipped: Vec::new(),
        clip_hu: f64::NAN,
        spacing_mm: sp[2],
    };
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
                if s < -behind || s > beyond || off_axis > radius {
                    continue;
                }
                hood.values.push(v);
                hood.plane.push([p.dot(e_i), p.dot(e_j)]);
                hood.normal.push(p.dot(normal));
            }
        }
    }
    let max = hood
        .values
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let at_max = hood.values.iter().filter(|&&v| v >= max - 0.5).count();
    let censor = at_max >= 3;
    hood.clip_hu = if censor { max } else { f64::INFINITY };
    hood.clipped = hood
        .values
        .iter()
        .map(|&v| censor && v >= max - 0.5)
        .collect();
    (!hood.values.is_empty()).then_some(hood)
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
    /// Index of the first trial tip's point (trial `t` ends at `first_trial + t`).
    first_trial: usize,
    /// Half the extent of a rod point's disc along the slice normal.
    half_extent_mm: f64,
}

impl RodPoints {
    fn new(hood: &Neighbourhood, ct: &Volume<f32>, tip: DVec3, axis_out: DVec3) -> Self {
        let d = ct.grid().direction();
        let col = |c: usize| DVec3::new(d[0][c], d[1][c], d[2][c]);
        let (e_i, e_j, normal) = (col(0), col(1), col(2));
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
            first_trial: (-first - (SEARCH_MM / STEP_MM).round() as i64) as usize,
            half_extent_mm: ROD_RADIUS_MM * cos_elevation,
        }
    }

    /// The last rod point of trial `t`.
    fn last_point_for(&self, t: usize) -> usize {
        self.first_trial + t
    }

    /// Per voxel, the running sum of the rod points' weights (row-major: voxel × point).
    fn cumulative_weights(
        &self,
        hood: &Neighbourhood,
        sigma_mm: f64,
        thickness_mm: f64,
    ) -> Vec<f64> {
        let n = self.plane.len();
        let h = self.half_extent_mm;
        let half_slice = 0.5 * thickness_mm;
        let inv_two_var = 0.5 / (sigma_mm * sigma_mm);
        let mut out = vec![0.0; hood.values.len() * n];
        for (v, row) in out.chunks_exact_mut(n).enumerate() {
            let [x, y] = hood.plane[v];
            let z = hood.normal[v];
            let mut sum = 0.0;
            for (m, cell) in row.iter_mut().enumerate() {
                let zp = self.normal[m];
                let overlap = if h > MIN_HALF_EXTENT_MM {
                    ((zp + h).min(z + half_slice) - (zp - h).max(z - half_slice)).max(0.0)
                        / (2.0 * h)
                } else if (zp - z).abs() <= half_slice {
                    1.0
                } else {
                    0.0
                };
                if overlap > 0.0 {
                    let [px, py] = self.plane[m];
                    let d2 = (x - px).powi(2) + (y - py).powi(2);
                    sum += overlap * (-d2 * inv_two_var).exp();
                }
                *cell = sum;
            }
        }
        out
    }
}

/// Residual sum of squares of the best background + amplitude for the rod ending at
/// point `end`; `None` when the fit is degenerate or the amplitude not positive.
fn fit_trial(hood: &Neighbourhood, cumulative: &[f64], end: usize) -> Option<f64> {
    let n_points = cumulative.len() / hood.values.len();
    let model: Vec<f64> = (0..hood.values.len())
        .map(|v| cumulative[v * n_points + end])
        .collect();
    let mut used: Vec<bool> = hood.clipped.iter().map(|c| !c).collect();
    let mut coef = (0.0, 0.0);
    for _ in 0..CENSOR_ROUNDS {
        coef = least_squares(hood, &model, &used)?;
        let next: Vec<bool> = (0..model.len())
            .map(|v| !hood.clipped[v] || coef.0 + coef.1 * model[v] < hood.clip_hu)
            .collect();
        if next == used {
            break;
        }
        used = next;
    }
    let (background, amplitude) = coef;
    if amplitude.is_nan() || amplitude <= 0.0 {
        return None;
    }
    let sse = (0..model.len())
        .map(|v| {
            let predicted = background + amplitude * model[v];
            if hood.clipped[v] {
                (predicted - hood.clip_hu).min(0.0).powi(2)
            } else {
                (predicted - hood.values[v]).powi(2)
            }
        })
        .sum();
    Some(sse)
}

/// Background and amplitude minimising the squared residuals over `used` voxels
/// (clipped voxels at the clip level).
fn least_squares(hood: &Neighbourhood, model: &[f64], used: &[bool]) -> Option<(f64, f64)> {
    let (mut n, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for v in (0..model.len()).filter(|&v| used[v]) {
        let x = model[v];
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
