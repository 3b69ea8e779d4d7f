//! Deformable registration of a control or post-ablation CT onto the planning CT inside
//! an organ: a cubic B-spline free-form deformation (FFD) on top of the rigid result.
//!
//! Breathing and the needle push the liver by millimetres that a rigid transform cannot
//! follow; the confirmation of an ablation margin (a few mm) needs them. The method:
//!
//! * **Model.** A planning point `x` maps to the control scan at
//!   `planning_to_control · (x + u(x))`, `u` a cubic B-spline displacement (LPS mm) on a
//!   regular control-point grid over the organ's bounding box — ITK's `BSplineTransform`
//!   convention exactly, so the pair is written as an ITK composite transform
//!   (`pinhole_io::transform::write_itk_bspline_transform`) that 3D Slicer, SimpleITK and
//!   elastix read. Outside the grid's valid region `u = 0` (the rigid transform alone).
//! * **Samples.** Planning voxels inside the organ mask (dilated by the caller), clamped
//!   HU; control voxels near metal, and any voxel the caller excludes (the ablation zone:
//!   it has no counterpart in the pre-ablation scan and must not be pulled onto the
//!   tumour), are not used.
//! * **Similarity and search.** Normalised cross-correlation with its analytic gradient
//!   in every coefficient; regular-step gradient ascent, the gradient smoothed over the
//!   control grid (a [1 2 1] kernel along each axis: the regularisation), coarse to fine
//!   (box-averaged images, then the scans; the grid refined between levels). A step is kept
//!   only when NCC rises and no more than 1 % of the samples leave the control scan.
//! * **Honesty.** The result says whether it is usable: the deformation must not fold
//!   (Jacobian determinant at least [`DeformableSettings::min_jacobian`] at every sample),
//!   stay within [`DeformableSettings::max_displacement_mm`], and not lower the NCC of
//!   the rigid result; otherwise `converged` is false with the reason, and callers keep
//!   the rigid registration.

use pinhole_volume::math::{Mat3, Mat4, Vec3};
use pinhole_volume::{Grid, Mask, Volume};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{invalid, IntraopError};
use crate::rigid::{masked, metal_free_mask, pyramid, Fixed, LevelSummary};

/// Most control points a field may have (a 40 cm box at 4 mm; far beyond any organ).
const MAX_CONTROL_POINTS: usize = 2_000_000;
/// A level needs at least this many organ samples inside the control scan.
const MIN_SAMPLES: usize = 500;

/// One resolution level: the image spacing (`None`: the scans themselves) and the
/// control-point spacing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeformableLevel {
    pub image_mm: Option<f64>,
    pub grid_mm: f64,
}

/// How to register; [`Default`] gives what `--deformable` uses.
#[derive(Debug, Clone)]
pub struct DeformableSettings {
    /// Coarse to fine.
    pub levels: Vec<DeformableLevel>,
    /// Organ samples per level at most (spread evenly).
    pub samples: usize,
    /// Gradient-ascent iterations per level at most.
    pub iterations: usize,
    /// HU range intensities are clamped to.
    pub clamp_hu: (f64, f64),
    /// Metal threshold (control scan), HU, and the margin around metal not used, mm.
    pub metal_hu: f64,
    pub metal_margin_mm: f64,
    /// Control-scan voxels not to use (any grid; e.g. the ablation zone, dilated).
    pub exclude_control: Option<Mask>,
    /// Largest displacement accepted, mm.
    pub max_displacement_mm: f64,
    /// Smallest Jacobian determinant accepted (below: the deformation nearly folds).
    pub min_jacobian: f64,
}

impl Default for DeformableSettings {
    fn default() -> Self {
        Self {
            levels: vec![
                DeformableLevel {
                    image_mm: Some(4.0),
                    grid_mm: 40.0,
                },
                DeformableLevel {
                    image_mm: Some(2.0),
                    grid_mm: 20.0,
                },
                DeformableLevel {
                    image_mm: None,
                    grid_mm: 20.0,
                },
            ],
            samples: 80_000,
            iterations: 30,
            clamp_hu: (-200.0, 400.0),
            metal_hu: 2000.0,
            metal_margin_mm: 4.0,
            exclude_control: None,
            max_displacement_mm: 25.0,
            min_jacobian: 0.2,
        }
    }
}

/// The deformation found, with what it rests on.
#[derive(Debug, Clone)]
pub struct DeformableResult {
    pub field: BSplineField,
    /// NCC of the rigid result and after the deformation, on the last level's samples.
    pub ncc_rigid: f64,
    pub ncc: f64,
    pub max_displacement_mm: f64,
    /// Smallest Jacobian determinant of `x ↦ x + u(x)` over the last level's samples.
    pub min_jacobian: f64,
    pub converged: bool,
    pub reason: Option<String>,
    pub levels: Vec<LevelSummary>,
}

/// A cubic B-spline displacement field (LPS mm) on a regular, axis-aligned control grid,
/// with ITK's `BSplineTransform` conventions: control point `i` sits at
/// `origin + i · spacing`; a point with continuous grid index `t` is inside the valid
/// region when `1 ≤ t < n − 2` on every axis, and its displacement is
/// `Σ β₃(t − j) c_j` over the four `j` from `⌊t⌋ − 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct BSplineField {
    domain_low_lps: Vec3,
    domain_high_lps: Vec3,
    origin_lps: Vec3,
    spacing_mm: f64,
    dims: [usize; 3],
    coefficients_mm: Vec<Vec3>,
}

/// Where a point's displacement comes from: the first of the 4×4×4 control points and
/// the weights along each axis.
#[derive(Debug, Clone, Copy)]
struct Support {
    start: [usize; 3],
    weights: [[f64; 4]; 3],
}

fn bspline3(u: f64) -> f64 {
    let a = u.abs();
    if a < 1.0 {
        (4.0 - 6.0 * a * a + 3.0 * a * a * a) / 6.0
    } else if a < 2.0 {
        let t = 2.0 - a;
        t * t * t / 6.0
    } else {
        0.0
    }
}

fn bspline3_derivative(u: f64) -> f64 {
    let a = u.abs();
    let d = if a < 1.0 {
        -2.0 * a + 1.5 * a * a
    } else if a < 2.0 {
        -0.5 * (2.0 - a) * (2.0 - a)
    } else {
        0.0
    };
    d * u.signum()
}

impl BSplineField {
    /// A zero field whose valid region covers the box `[low, high]` (LPS mm).
    pub fn covering(low: Vec3, high: Vec3, spacing_mm: f64) -> Result<Self, IntraopError> {
        if !(spacing_mm.is_finite() && spacing_mm > 0.0) {
            return Err(invalid(
                "B-spline grid spacing",
                format!("{spacing_mm} mm is not a positive number"),
            ));
        }
        if (0..3).any(|a| !(low[a].is_finite() && high[a].is_finite() && low[a] <= high[a])) {
            return Err(invalid(
                "B-spline domain",
                format!("{low:?} .. {high:?} is not a box"),
            ));
        }
        let mut dims = [0usize; 3];
        for a in 0..3 {
            let cells = ((high[a] - low[a]) / spacing_mm).ceil();
            if cells > 10_000.0 {
                return Err(invalid("B-spline grid", "too many control points"));
            }
            dims[a] = cells as usize + 3;
        }
        let count = dims.iter().product::<usize>();
        if count > MAX_CONTROL_POINTS {
            return Err(invalid(
                "B-spline grid",
                format!("{count} control points (at most {MAX_CONTROL_POINTS}): the spacing is too fine for the organ"),
            ));
        }
        Ok(Self {
            domain_low_lps: low,
            domain_high_lps: high,
            origin_lps: std::array::from_fn(|a| low[a] - spacing_mm),
            spacing_mm,
            dims,
            coefficients_mm: vec![[0.0; 3]; count],
        })
    }

    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// The position of control point (0, 0, 0), LPS mm.
    pub fn origin_lps(&self) -> Vec3 {
        self.origin_lps
    }

    pub fn spacing_mm(&self) -> f64 {
        self.spacing_mm
    }

    /// Coefficients (LPS mm), x index fastest.
    pub fn coefficients_mm(&self) -> &[Vec3] {
        &self.coefficients_mm
    }

    /// Sets the coefficients (x index fastest); their count must match the grid.
    pub fn set_coefficients_mm(&mut self, coefficients: Vec<Vec3>) -> Result<(), IntraopError> {
        if coefficients.len() != self.coefficients_mm.len()
            || coefficients.iter().flatten().any(|v| !v.is_finite())
        {
            return Err(invalid(
                "B-spline coefficients",
                format!(
                    "{} finite vectors needed, {} given",
                    self.coefficients_mm.len(),
                    coefficients.len()
                ),
            ));
        }
        self.coefficients_mm = coefficients;
        Ok(())
    }

    fn support(&self, p: Vec3) -> Option<Support> {
        let mut start = [0usize; 3];
        let mut weights = [[0.0; 4]; 3];
        for a in 0..3 {
            let t = (p[a] - self.origin_lps[a]) / self.spacing_mm;
            if !(t >= 1.0 && t < self.dims[a] as f64 - 2.0) {
                return None;
            }
            let first = t.floor() as usize - 1;
            start[a] = first;
            for (k, w) in weights[a].iter_mut().enumerate() {
                *w = bspline3(t - (first + k) as f64);
            }
        }
        Some(Support { start, weights })
    }

    fn index(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.dims[0] * (j + self.dims[1] * k)
    }

    fn displacement_at(&self, s: &Support) -> Vec3 {
        let mut u = [0.0; 3];
        for (c, wz) in s.weights[2].iter().enumerate() {
            for (b, wy) in s.weights[1].iter().enumerate() {
                let wyz = wy * wz;
                let row = self.index(s.start[0], s.start[1] + b, s.start[2] + c);
                for (a, wx) in s.weights[0].iter().enumerate() {
                    let w = wx * wyz;
                    let coef = &self.coefficients_mm[row + a];
                    u[0] += w * coef[0];
                    u[1] += w * coef[1];
                    u[2] += w * coef[2];
                }
            }
        }
        u
    }

    /// The displacement at `p` (LPS mm); zero outside the valid region.
    pub fn displacement_mm(&self, p: Vec3) -> Vec3 {
        self.support(p)
            .map_or([0.0; 3], |s| self.displacement_at(&s))
    }

    /// `p + u(p)`.
    pub fn apply(&self, p: Vec3) -> Vec3 {
        let u = self.displacement_mm(p);
        [p[0] + u[0], p[1] + u[1], p[2] + u[2]]
    }

    /// The Jacobian matrix of `p ↦ p + u(p)` (identity outside the valid region).
    pub fn jacobian(&self, p: Vec3) -> Mat3 {
        let mut jac = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let Some(s) = self.support(p) else {
            return jac;
        };
        let mut derivative = [[0.0; 4]; 3];
        for a in 0..3 {
            let t = (p[a] - self.origin_lps[a]) / self.spacing_mm;
            for (k, d) in derivative[a].iter_mut().enumerate() {
                *d = bspline3_derivative(t - (s.start[a] + k) as f64) / self.spacing_mm;
            }
        }
        for c in 0..4 {
            for b in 0..4 {
                let row = self.index(s.start[0], s.start[1] + b, s.start[2] + c);
                for a in 0..4 {
                    let dw = [
                        derivative[0][a] * s.weights[1][b] * s.weights[2][c],
                        s.weights[0][a] * derivative[1][b] * s.weights[2][c],
                        s.weights[0][a] * s.weights[1][b] * derivative[2][c],
                    ];
                    let coef = &self.coefficients_mm[row + a];
                    for (r, jr) in jac.iter_mut().enumerate() {
                        for (col, j) in jr.iter_mut().enumerate() {
                            *j += coef[r] * dw[col];
                        }
                    }
                }
            }
        }
        jac
    }

    /// The largest coefficient length: no displacement is larger (the weights are
    /// non-negative and sum to one).
    pub fn max_displacement_mm(&self) -> f64 {
        self.coefficients_mm
            .iter()
            .map(|c| (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt())
            .fold(0.0, f64::max)
    }

    /// The same domain at another spacing, the coefficients set to this field's
    /// displacement at the new control points (a close approximation for smooth fields).
    pub fn resampled(&self, spacing_mm: f64) -> Result<Self, IntraopError> {
        let mut finer = Self::covering(self.domain_low_lps, self.domain_high_lps, spacing_mm)?;
        let [nx, ny, _] = finer.dims;
        let (origin, h) = (finer.origin_lps, finer.spacing_mm);
        let coefficients: Vec<Vec3> = (0..finer.coefficients_mm.len())
            .into_par_iter()
            .map(|o| {
                let (i, j, k) = (o % nx, (o / nx) % ny, o / (nx * ny));
                let p = [
                    origin[0] + i as f64 * h,
                    origin[1] + j as f64 * h,
                    origin[2] + k as f64 * h,
                ];
                self.displacement_mm(p)
            })
            .collect();
        finer.coefficients_mm = coefficients;
        Ok(finer)
    }

    fn zeroed(&self) -> Self {
        Self {
            coefficients_mm: vec![[0.0; 3]; self.coefficients_mm.len()],
            ..self.clone()
        }
    }
}

/// Planning point → control point through a rigid transform and, when given, a field.
pub fn planning_to_control_point(
    planning_to_control: &Mat4,
    field: Option<&BSplineField>,
    p: Vec3,
) -> Vec3 {
    let q = field.map_or(p, |f| f.apply(p));
    pinhole_volume::math::transform_point(planning_to_control, q)
}

/// Control point → planning point, the inverse of [`planning_to_control_point`]:
/// `x + u(x) = control_to_planning · y`, solved by fixed-point iteration (a contraction
/// while the deformation's gradient stays below one, which a usable field's does).
/// `None` when it does not settle to 1 µm.
pub fn control_to_planning_point(
    control_to_planning: &Mat4,
    field: Option<&BSplineField>,
    y: Vec3,
) -> Option<Vec3> {
    let z = pinhole_volume::math::transform_point(control_to_planning, y);
    let Some(field) = field else {
        return Some(z);
    };
    let mut x = z;
    for _ in 0..200 {
        let u = field.displacement_mm(x);
        let next = [z[0] - u[0], z[1] - u[1], z[2] - u[2]];
        let step = pinhole_volume::math::distance(next, x);
        x = next;
        if step < 1e-6 {
            return Some(x);
        }
    }
    (pinhole_volume::math::distance(field.apply(x), z) < 1e-3).then_some(x)
}

/// A planning sample: where, its value and its B-spline support.
#[derive(Debug, Clone, Copy)]
struct OrganSample {
    lps: Vec3,
    value: f64,
    support: Support,
}

struct LevelProblem<'a> {
    samples: Vec<OrganSample>,
    moving: Fixed<'a>,
    linear: Mat3,
    shift: Vec3,
}

struct Evaluation {
    ncc: f64,
    used: usize,
    gradient: Vec<Vec3>,
}

impl LevelProblem<'_> {
    /// Control value and gradient (world, per mm) at each sample's mapped point.
    fn moving_values(&self, field: &BSplineField) -> Vec<Option<(f64, Vec3)>> {
        self.samples
            .par_iter()
            .map(|s| {
                let u = field.displacement_at(&s.support);
                let q = [s.lps[0] + u[0], s.lps[1] + u[1], s.lps[2] + u[2]];
                let m = &self.linear;
                let y = std::array::from_fn(|r| {
                    m[r][0] * q[0] + m[r][1] * q[1] + m[r][2] * q[2] + self.shift[r]
                });
                self.moving.sample(y)
            })
            .collect()
    }

    fn evaluate(&self, field: &BSplineField, with_gradient: bool) -> Evaluation {
        let values = self.moving_values(field);
        let (mut n, mut sf, mut sm) = (0usize, 0.0, 0.0);
        for (s, v) in self.samples.iter().zip(&values) {
            if let Some((m, _)) = v {
                n += 1;
                sf += s.value;
                sm += m;
            }
        }
        let mut eval = Evaluation {
            ncc: f64::NAN,
            used: n,
            gradient: Vec::new(),
        };
        if n < 2 {
            return eval;
        }
        let (mf, mm) = (sf / n as f64, sm / n as f64);
        let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
        for (s, v) in self.samples.iter().zip(&values) {
            if let Some((m, _)) = v {
                let (f, g) = (s.value - mf, m - mm);
                a += f * g;
                b += f * f;
                c += g * g;
            }
        }
        if b <= 0.0 || c <= 0.0 {
            return eval;
        }
        let root = (b * c).sqrt();
        eval.ncc = a / root;
        if with_gradient {
            eval.gradient = self.gradient(field, &values, (mf, mm), (a, b, c));
        }
        eval
    }

    /// d NCC / d coefficient: `Σ_s (d NCC / d m_s) β(x_s) Aᵀ ∇m(y_s)`.
    fn gradient(
        &self,
        field: &BSplineField,
        values: &[Option<(f64, Vec3)>],
        (mf, mm): (f64, f64),
        (a, b, c): (f64, f64, f64),
    ) -> Vec<Vec3> {
        let root = (b * c).sqrt();
        let count = field.coefficients_mm.len();
        let lin = &self.linear;
        self.samples
            .par_iter()
            .zip(values)
            .fold(
                || vec![[0.0f64; 3]; count],
                |mut acc, (s, v)| {
                    let Some((m, grad)) = v else { return acc };
                    let d = (s.value - mf) / root - a * (m - mm) / (root * c);
                    // dm/du = Aᵀ ∇m.
                    let w: Vec3 = std::array::from_fn(|col| {
                        d * (lin[0][col] * grad[0] + lin[1][col] * grad[1] + lin[2][col] * grad[2])
                    });
                    let sp = &s.support;
                    for (cz, wz) in sp.weights[2].iter().enumerate() {
                        for (cy, wy) in sp.weights[1].iter().enumerate() {
                            let row = field.index(sp.start[0], sp.start[1] + cy, sp.start[2] + cz);
                            for (cx, wx) in sp.weights[0].iter().enumerate() {
                                let beta = wx * wy * wz;
                                let g = &mut acc[row + cx];
                                g[0] += beta * w[0];
                                g[1] += beta * w[1];
                                g[2] += beta * w[2];
                            }
                        }
                    }
                    acc
                },
            )
            .reduce(
                || vec![[0.0f64; 3]; count],
                |mut x, y| {
                    for (p, q) in x.iter_mut().zip(&y) {
                        p[0] += q[0];
                        p[1] += q[1];
                        p[2] += q[2];
                    }
                    x
                },
            )
    }

    /// Regular-step gradient ascent on the coefficients; returns the final NCC and the
    /// iterations used.
    fn ascend(&self, field: &mut BSplineField, iterations: usize) -> (f64, usize) {
        let mut current = self.evaluate(field, true);
        if !current.ncc.is_finite() {
            return (current.ncc, 0);
        }
        let floor_used = current.used - current.used / 100;
        let mut step_mm = field.spacing_mm * 0.1;
        let min_step_mm = 0.02;
        let mut done = 0;
        for _ in 0..iterations {
            done += 1;
            let direction = smoothed(&current.gradient, field.dims);
            let largest = direction
                .iter()
                .map(|g| (g[0] * g[0] + g[1] * g[1] + g[2] * g[2]).sqrt())
                .fold(0.0, f64::max);
            if !(largest > 0.0 && largest.is_finite()) {
                break;
            }
            let scale = step_mm / largest;
            let mut trial = field.clone();
            for (c, g) in trial.coefficients_mm.iter_mut().zip(&direction) {
                c[0] += scale * g[0];
                c[1] += scale * g[1];
                c[2] += scale * g[2];
            }
            let next = self.evaluate(&trial, true);
            if next.ncc > current.ncc && next.used >= floor_used {
                *field = trial;
                current = next;
                step_mm = (step_mm * 1.25).min(field.spacing_mm * 0.25);
            } else {
                step_mm *= 0.5;
                if step_mm < min_step_mm {
                    break;
                }
            }
        }
        (current.ncc, done)
    }
}

/// The gradient smoothed over the control grid with [1 2 1]/4 along each axis (edges
/// clamped): neighbouring control points move together.
fn smoothed(gradient: &[Vec3], dims: [usize; 3]) -> Vec<Vec3> {
    let mut data = gradient.to_vec();
    let strides = [1, dims[0], dims[0] * dims[1]];
    for axis in 0..3 {
        let source = data.clone();
        for (o, out) in data.iter_mut().enumerate() {
            let i = (o / strides[axis]) % dims[axis];
            let lo = if i > 0 { o - strides[axis] } else { o };
            let hi = if i + 1 < dims[axis] {
                o + strides[axis]
            } else {
                o
            };
            for c in 0..3 {
                out[c] = 0.25 * source[lo][c] + 0.5 * source[o][c] + 0.25 * source[hi][c];
            }
        }
    }
    data
}

/// The box (LPS mm) of the mask's true voxels, corners included.
fn mask_box(mask: &Mask) -> Option<(Vec3, Vec3)> {
    let grid = mask.grid();
    let [nx, ny, _] = grid.dims();
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut any = false;
    for (o, &v) in mask.data().iter().enumerate() {
        if v {
            any = true;
            let ijk = [o % nx, (o / nx) % ny, o / (nx * ny)];
            for a in 0..3 {
                lo[a] = lo[a].min(ijk[a]);
                hi[a] = hi[a].max(ijk[a]);
            }
        }
    }
    if !any {
        return None;
    }
    let mut low = [f64::INFINITY; 3];
    let mut high = [f64::NEG_INFINITY; 3];
    for corner in 0..8 {
        let ijk: Vec3 = std::array::from_fn(|a| {
            if corner >> a & 1 == 0 {
                lo[a] as f64 - 0.5
            } else {
                hi[a] as f64 + 0.5
            }
        });
        let p = grid.index_to_world(ijk);
        for a in 0..3 {
            low[a] = low[a].min(p[a]);
            high[a] = high[a].max(p[a]);
        }
    }
    Some((low, high))
}

/// The index range (inclusive, clamped to the grid) covering the box `(low, high)`, LPS.
fn index_box(grid: &Grid, (low, high): (Vec3, Vec3)) -> ([usize; 3], [usize; 3]) {
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let dims = grid.dims();
    for corner in 0..8 {
        let p: Vec3 = std::array::from_fn(|a| {
            if corner >> a & 1 == 0 {
                low[a]
            } else {
                high[a]
            }
        });
        let c = grid.world_to_index(p);
        for a in 0..3 {
            let f = c[a].floor().clamp(0.0, (dims[a] - 1) as f64) as usize;
            let g = c[a].ceil().clamp(0.0, (dims[a] - 1) as f64) as usize;
            lo[a] = lo[a].min(f);
            hi[a] = hi[a].max(g);
        }
    }
    (lo, hi)
}

/// The part of `volume` covering the box `(low, high)` widened by `margin_mm`.
fn cropped_to(volume: &Volume<f32>, (low, high): (Vec3, Vec3), margin_mm: f64) -> Volume<f32> {
    let wide = (low.map(|v| v - margin_mm), high.map(|v| v + margin_mm));
    let (lo, hi) = index_box(volume.grid(), wide);
    volume.crop(lo, std::array::from_fn(|a| hi[a] - lo[a] + 1))
}

/// Planning voxels of `image` inside `organ` (nearest), clamped, at most `cap` of them
/// spread evenly, with their supports in `field`.
fn organ_samples(
    image: &Volume<f32>,
    clamp: (f32, f32),
    organ: &Mask,
    (low, high): (Vec3, Vec3),
    field: &BSplineField,
    cap: usize,
) -> Vec<OrganSample> {
    let grid = image.grid();
    let (lo, hi) = index_box(grid, (low, high));
    let data = image.data();
    let candidates: Vec<(Vec3, f64)> = (lo[2]..=hi[2])
        .into_par_iter()
        .flat_map_iter(|k| {
            let mut slice = Vec::new();
            for j in lo[1]..=hi[1] {
                for i in lo[0]..=hi[0] {
                    let v = data[grid.offset([i, j, k])];
                    if !v.is_finite() {
                        continue;
                    }
                    let p = grid.index_to_world([i as f64, j as f64, k as f64]);
                    if organ.sample_nearest(p) == Some(true) {
                        slice.push((p, f64::from(v.clamp(clamp.0, clamp.1))));
                    }
                }
            }
            slice
        })
        .collect();
    let stride = (candidates.len() as f64 / cap.max(1) as f64).max(1.0);
    let mut picked = Vec::with_capacity(cap.min(candidates.len()));
    let mut next = stride * 0.618_033_988_749_895 % stride;
    for (n, (p, v)) in candidates.iter().enumerate() {
        if n as f64 >= next {
            next += stride;
            if let Some(support) = field.support(*p) {
                picked.push(OrganSample {
                    lps: *p,
                    value: *v,
                    support,
                });
            }
        }
    }
    picked
}

fn check_settings(settings: &DeformableSettings) -> Result<(), IntraopError> {
    if settings.levels.is_empty() {
        return Err(invalid("deformable levels", "at least one level is needed"));
    }
    for level in &settings.levels {
        if !(level.grid_mm.is_finite() && level.grid_mm >= 4.0 && level.grid_mm <= 200.0) {
            return Err(invalid(
                "B-spline grid spacing",
                format!("{} mm (4 to 200 mm)", level.grid_mm),
            ));
        }
        if level
            .image_mm
            .is_some_and(|s| !(s.is_finite() && (0.5..=20.0).contains(&s)))
        {
            return Err(invalid("deformable image level", "spacing 0.5 to 20 mm"));
        }
    }
    if settings.samples < MIN_SAMPLES || settings.iterations == 0 {
        return Err(invalid(
            "deformable settings",
            format!("at least {MIN_SAMPLES} samples and one iteration"),
        ));
    }
    let (lo, hi) = settings.clamp_hu;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(invalid("clamp range", format!("{lo} .. {hi} HU")));
    }
    Ok(())
}

/// The control voxels the metric may use: finite, away from metal, not excluded.
fn usable_control(control: &Volume<f32>, settings: &DeformableSettings) -> Mask {
    let keep = metal_free_mask(control, settings.metal_hu, settings.metal_margin_mm);
    let Some(exclude) = &settings.exclude_control else {
        return keep;
    };
    let grid = control.grid();
    let data = keep
        .data()
        .par_iter()
        .enumerate()
        .map(|(o, &k)| {
            if !k {
                return false;
            }
            let ijk = grid.index_of_offset(o);
            let p = grid.index_to_world(ijk.map(|v| v as f64));
            exclude.sample_nearest(p) != Some(true)
        })
        .collect();
    Mask::new(grid.clone(), data).unwrap_or(keep)
}

/// Deforms the planning-side organ region so that the control scan matches it, on top of
/// `planning_to_control` (the rigid result, planning LPS → control LPS). `organ`: where
/// the metric looks, in planning space (any grid; dilate it beforehand for a margin).
pub fn register_deformable(
    planning: &Volume<f32>,
    control: &Volume<f32>,
    planning_to_control: &Mat4,
    organ: &Mask,
    settings: &DeformableSettings,
) -> Result<DeformableResult, IntraopError> {
    check_settings(settings)?;
    if planning_to_control.iter().flatten().any(|v| !v.is_finite()) {
        return Err(invalid("rigid transform", "non-finite entries"));
    }
    let bounds = mask_box(organ).ok_or_else(|| invalid("organ mask", "it has no voxel"))?;
    let clamp = (settings.clamp_hu.0 as f32, settings.clamp_hu.1 as f32);
    let keep = usable_control(control, settings);
    let fine_control = masked(control, settings.clamp_hu, &keep);
    let image_levels: Vec<f64> = settings.levels.iter().filter_map(|l| l.image_mm).collect();
    // Only the organ's region of the planning scan is ever sampled: the coarse levels are
    // built from it alone (a tenth of a chest CT for a liver).
    let coarsest = image_levels.iter().copied().fold(0.0, f64::max);
    let planning_region = cropped_to(planning, bounds, 2.0 * coarsest + 1.0);
    let planning_levels = pyramid(&planning_region, &image_levels, Some(clamp))?;
    let control_levels = pyramid(&fine_control, &image_levels, None)?;
    let linear: Mat3 = std::array::from_fn(|r| std::array::from_fn(|c| planning_to_control[r][c]));
    let shift = [
        planning_to_control[0][3],
        planning_to_control[1][3],
        planning_to_control[2][3],
    ];
    let mut field = BSplineField::covering(bounds.0, bounds.1, settings.levels[0].grid_mm)?;
    let mut levels = Vec::new();
    let mut coarse_index = 0;
    let mut ncc_rigid = f64::NAN;
    let mut ncc = f64::NAN;
    let mut last_problem = None;
    for (n, level) in settings.levels.iter().enumerate() {
        if field.spacing_mm != level.grid_mm {
            field = field.resampled(level.grid_mm)?;
        }
        let (fixed, moving) = match level.image_mm {
            Some(_) => {
                let pair = (
                    &planning_levels[coarse_index],
                    &control_levels[coarse_index],
                );
                coarse_index += 1;
                pair
            }
            None => (planning, &fine_control),
        };
        let mut problem = LevelProblem {
            samples: organ_samples(fixed, clamp, organ, bounds, &field, settings.samples),
            moving: Fixed::new(moving, None),
            linear,
            shift,
        };
        // Only samples that the current estimate places in usable control voxels.
        let values = problem.moving_values(&field);
        problem.samples = problem
            .samples
            .iter()
            .zip(&values)
            .filter(|(_, v)| v.is_some())
            .map(|(s, _)| *s)
            .collect();
        if problem.samples.len() < MIN_SAMPLES {
            return Ok(not_usable(
                field.zeroed(),
                format!(
                    "only {} samples of the organ lie in usable voxels of the control scan (at least {MIN_SAMPLES} needed): the control scan barely covers the organ",
                    problem.samples.len()
                ),
                levels,
            ));
        }
        if n + 1 == settings.levels.len() {
            // The coarse levels' field may fit the scans worse than none at full
            // resolution (nothing to deform, noise): the last level starts from the better.
            let zero = field.zeroed();
            ncc_rigid = problem.evaluate(&zero, false).ncc;
            let coarse = problem.evaluate(&field, false).ncc;
            if coarse.is_nan() || coarse < ncc_rigid {
                field = zero;
            }
        }
        let (level_ncc, iterations) = problem.ascend(&mut field, settings.iterations);
        ncc = level_ncc;
        levels.push(LevelSummary {
            spacing_mm: level.image_mm,
            samples: problem.samples.len(),
            iterations,
            ncc: level_ncc,
        });
        last_problem = Some(problem);
    }
    let min_jacobian = last_problem.as_ref().map_or(1.0, |p| {
        p.samples
            .par_iter()
            .map(|s| pinhole_volume::math::mat3_determinant(&field.jacobian(s.lps)))
            .reduce(|| f64::INFINITY, f64::min)
    });
    let max_displacement_mm = field.max_displacement_mm();
    let reason = if !ncc.is_finite() || !ncc_rigid.is_finite() {
        Some("the similarity could not be computed (no contrast in the organ)".to_owned())
    } else if ncc < ncc_rigid {
        Some(format!(
            "the deformation lowered the similarity ({ncc:.3} NCC against {ncc_rigid:.3} rigid)"
        ))
    } else if min_jacobian < settings.min_jacobian {
        Some(format!(
            "the deformation nearly folds (Jacobian determinant {min_jacobian:.2}, at least {:.2} needed)",
            settings.min_jacobian
        ))
    } else if max_displacement_mm > settings.max_displacement_mm {
        Some(format!(
            "the deformation moves the organ by up to {max_displacement_mm:.1} mm (at most {:.0} mm accepted): check the rigid registration",
            settings.max_displacement_mm
        ))
    } else {
        None
    };
    Ok(DeformableResult {
        field,
        ncc_rigid,
        ncc,
        max_displacement_mm,
        min_jacobian,
        converged: reason.is_none(),
        reason,
        levels,
    })
}

fn not_usable(field: BSplineField, reason: String, levels: Vec<LevelSummary>) -> DeformableResult {
    DeformableResult {
        field,
        ncc_rigid: f64::NAN,
        ncc: f64::NAN,
        max_displacement_mm: 0.0,
        min_jacobian: 1.0,
        converged: false,
        reason: Some(reason),
        levels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bspline_weights_sum_to_one_and_derivatives_to_zero() {
        for t in [1.0f64, 1.3, 2.5, 3.99] {
            let first = t.floor() - 1.0;
            let w: f64 = (0..4).map(|k| bspline3(t - (first + k as f64))).sum();
            let d: f64 = (0..4)
                .map(|k| bspline3_derivative(t - (first + k as f64)))
                .sum();
            assert!((w - 1.0).abs() < 1e-12, "{t}: {w}");
            assert!(d.abs() < 1e-12, "{t}: {d}");
        }
    }

    #[test]
    fn a_uniform_field_translates_and_has_unit_jacobian() {
        let mut f = BSplineField::covering([0.0, 0.0, 0.0], [50.0, 40.0, 30.0], 10.0).unwrap();
        let n = f.coefficients_mm().len();
        f.set_coefficients_mm(vec![[1.5, -2.0, 0.5]; n]).unwrap();
        let u = f.displacement_mm([12.0, 33.0, 7.0]);
        assert!(
            (u[0] - 1.5).abs() < 1e-12 && (u[1] + 2.0).abs() < 1e-12 && (u[2] - 0.5).abs() < 1e-12
        );
        let j = f.jacobian([12.0, 33.0, 7.0]);
        assert!((pinhole_volume::math::mat3_determinant(&j) - 1.0).abs() < 1e-12);
        // Outside the valid region there is no displacement.
        assert_eq!(f.displacement_mm([-30.0, 0.0, 0.0]), [0.0; 3]);
    }

    #[test]
    fn a_linear_field_is_reproduced_with_its_jacobian() {
        // u(x) = (0.02 x, 0, -0.01 z): cubic B-splines reproduce linear functions.
        let mut f = BSplineField::covering([0.0, 0.0, 0.0], [60.0, 60.0, 60.0], 15.0).unwrap();
        let [nx, ny, _] = f.dims();
        let (o, h) = (f.origin_lps(), f.spacing_mm());
        let coefs = (0..f.coefficients_mm().len())
            .map(|i| {
                let x = o[0] + (i % nx) as f64 * h;
                let z = o[2] + (i / (nx * ny)) as f64 * h;
                [0.02 * x, 0.0, -0.01 * z]
            })
            .collect();
        f.set_coefficients_mm(coefs).unwrap();
        let p = [23.0, 41.0, 17.0];
        let u = f.displacement_mm(p);
        assert!(
            (u[0] - 0.02 * 23.0).abs() < 1e-9 && (u[2] + 0.01 * 17.0).abs() < 1e-9,
            "{u:?}"
        );
        let j = f.jacobian(p);
        assert!(
            (j[0][0] - 1.02).abs() < 1e-9 && (j[2][2] - 0.99).abs() < 1e-9 && j[0][2].abs() < 1e-9,
            "{j:?}"
        );
        // Resampling onto a finer grid keeps a linear field exactly.
        let g = f.resampled(7.5).unwrap();
        let v = g.displacement_mm(p);
        assert!((v[0] - u[0]).abs() < 1e-9 && (v[2] - u[2]).abs() < 1e-9);
    }

    #[test]
    fn control_to_planning_inverts_planning_to_control() {
        let mut f = BSplineField::covering([0.0; 3], [80.0, 60.0, 50.0], 20.0).unwrap();
        let n = f.coefficients_mm().len();
        let coefs = (0..n)
            .map(|i| {
                let t = i as f64;
                [3.0 * (0.7 * t).sin(), -2.0 * (0.3 * t).cos(), 1.0]
            })
            .collect();
        f.set_coefficients_mm(coefs).unwrap();
        // A quarter turn about z and a shift (planning → control), and its inverse.
        let p2c = [
            [0.0, -1.0, 0.0, 5.0],
            [1.0, 0.0, 0.0, -3.0],
            [0.0, 0.0, 1.0, 12.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let c2p = pinhole_volume::math::affine_inverse(&p2c).unwrap();
        for p in [[10.0, 20.0, 30.0], [55.0, 7.0, 41.0], [-40.0, 0.0, 0.0]] {
            let y = planning_to_control_point(&p2c, Some(&f), p);
            let back = control_to_planning_point(&c2p, Some(&f), y).unwrap();
            assert!(
                pinhole_volume::math::distance(back, p) < 1e-5,
                "{p:?} -> {back:?}"
            );
        }
    }

    #[test]
    fn bad_grids_are_refused() {
        assert!(BSplineField::covering([0.0; 3], [10.0; 3], 0.0).is_err());
        assert!(BSplineField::covering([0.0; 3], [-10.0, 1.0, 1.0], 5.0).is_err());
        assert!(BSplineField::covering([0.0; 3], [1e6; 3], 4.0).is_err());
        let mut f = BSplineField::covering([0.0; 3], [10.0; 3], 5.0).unwrap();
        assert!(f.set_coefficients_mm(vec![[0.0; 3]; 3]).is_err());
    }
}
