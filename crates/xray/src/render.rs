//! CPU line integrals of μ along cone-beam rays: trilinear ray marching and exact Siddon.
//!
//! The volume occupies the box of its outer voxel faces (index −0.5 … n−0.5 on each
//! axis); outside it μ = 0 (air). Trilinear sampling clamps to the edge voxels inside
//! that box, as a GPU texture with clamp-to-edge addressing does, so the CPU and GPU
//! paths integrate the same function. Siddon treats each voxel as a constant box and
//! sums exact intersection lengths.

use pinhole_volume::math::{mat3_inverse, mat3_mul_vec, Mat3, Vec3};
use pinhole_volume::Volume;
use rayon::prelude::*;

use crate::geometry::{sub, Projection};

/// How rays are integrated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Integrator {
    /// Trilinear samples, this many per ray inside the volume (midpoint rule).
    TrilinearSamples(usize),
    /// Trilinear samples every `step_mm` along the ray.
    TrilinearStep { step_mm: f64 },
    /// Exact radiological path (Siddon / Jacobs incremental traversal).
    Siddon,
}

impl Default for Integrator {
    fn default() -> Self {
        Self::TrilinearSamples(500)
    }
}

/// A detector image, row-major: `data[row * width + col]`, row 0 at the displayed top.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Image {
    pub fn get(&self, col: usize, row: usize) -> f32 {
        self.data[row * self.width + col]
    }
}

/// A μ volume prepared for ray casting: world→index affine and strides.
pub struct RayVolume<'a> {
    mu: &'a [f32],
    dims: [usize; 3],
    world_to_index: Mat3,
    origin: Vec3,
}

impl<'a> RayVolume<'a> {
    pub fn new(mu: &'a Volume<f32>) -> Self {
        Self::with_data(mu.grid(), mu.data())
    }

    /// Geometry of `grid` with voxel data `mu` (may be empty for label traversal only).
    fn with_data(g: &pinhole_volume::Grid, mu: &'a [f32]) -> Self {
        let m = g.ijk_to_lps();
        let lin: Mat3 = std::array::from_fn(|r| [m[r][0], m[r][1], m[r][2]]);
        let world_to_index = mat3_inverse(&lin).unwrap_or([[0.0; 3]; 3]);
        Self {
            mu,
            dims: g.dims(),
            world_to_index,
            origin: g.origin_lps(),
        }
    }

    fn to_index(&self, p: Vec3) -> Vec3 {
        mat3_mul_vec(&self.world_to_index, sub(p, self.origin))
    }

    fn dir_to_index(&self, d: Vec3) -> Vec3 {
        mat3_mul_vec(&self.world_to_index, d)
    }

    /// Parameter interval `[t0, t1]` of `o + t·d` (index space) inside the voxel-face box.
    fn clip(&self, o: Vec3, d: Vec3) -> Option<(f64, f64)> {
        let mut t0 = f64::NEG_INFINITY;
        let mut t1 = f64::INFINITY;
        for a in 0..3 {
            let lo = -0.5;
            let hi = self.dims[a] as f64 - 0.5;
            if d[a].abs() < 1e-300 {
                if o[a] < lo || o[a] > hi {
                    return None;
                }
                continue;
            }
            let (ta, tb) = ((lo - o[a]) / d[a], (hi - o[a]) / d[a]);
            t0 = t0.max(ta.min(tb));
            t1 = t1.min(ta.max(tb));
        }
        let t0 = t0.max(0.0);
        (t1 > t0).then_some((t0, t1))
    }

    /// Clamp-to-edge trilinear value at a continuous index inside the face box.
    #[inline(always)]
    fn trilinear(&self, p: Vec3) -> f32 {
        let [nx, ny, nz] = self.dims;
        let axis = |x: f64, n: usize| -> (usize, usize, f32) {
            let x = x.clamp(0.0, (n - 1) as f64);
            let i0 = (x as usize).min(n.saturating_sub(2));
            let f = (x - i0 as f64) as f32;
            (i0, (i0 + 1).min(n - 1), f)
        };
        let (x0, x1, fx) = axis(p[0], nx);
        let (y0, y1, fy) = axis(p[1], ny);
        let (z0, z1, fz) = axis(p[2], nz);
        let at = |x: usize, y: usize, z: usize| self.mu[x + nx * (y + ny * z)];
        let l = |a: f32, b: f32, t: f32| a + (b - a) * t;
        let c00 = l(at(x0, y0, z0), at(x1, y0, z0), fx);
        let c10 = l(at(x0, y1, z0), at(x1, y1, z0), fx);
        let c01 = l(at(x0, y0, z1), at(x1, y0, z1), fx);
        let c11 = l(at(x0, y1, z1), at(x1, y1, z1), fx);
        l(l(c00, c10, fy), l(c01, c11, fy), fz)
    }

    /// Line integral of μ along the ray from `source` through `target` (world, LPS),
    /// over its whole length in the volume.
    pub fn integrate(&self, source: Vec3, target: Vec3, integrator: Integrator) -> f64 {
        let world_dir = sub(target, source);
        let length = pinhole_volume::math::norm(world_dir);
        if length == 0.0 {
            return 0.0;
        }
        let o = self.to_index(source);
        let d = self.dir_to_index(world_dir);
        let Some((t0, t1)) = self.clip(o, d) else {
            return 0.0;
        };
        match integrator {
            Integrator::TrilinearSamples(n) => self.march(o, d, t0, t1, n.max(1), length),
            Integrator::TrilinearStep { step_mm } => {
                let n = (((t1 - t0) * length) / step_mm.max(1e-6)).ceil().max(1.0) as usize;
                self.march(o, d, t0, t1, n, length)
            }
            Integrator::Siddon => self.siddon(o, d, t0, t1) * length,
        }
    }

    fn march(&self, o: Vec3, d: Vec3, t0: f64, t1: f64, n: usize, length: f64) -> f64 {
        let dt = (t1 - t0) / n as f64;
        let mut p = [
            o[0] + d[0] * (t0 + 0.5 * dt),
            o[1] + d[1] * (t0 + 0.5 * dt),
            o[2] + d[2] * (t0 + 0.5 * dt),
        ];
        let step = [d[0] * dt, d[1] * dt, d[2] * dt];
        let mut sum = 0.0f32;
        for _ in 0..n {
            sum += self.trilinear(p);
            p[0] += step[0];
            p[1] += step[1];
            p[2] += step[2];
        }
        f64::from(sum) * dt * length
    }

    /// Σ μ·Δt over voxel boxes (t in ray-parameter units).
    fn siddon(&self, o: Vec3, d: Vec3, t0: f64, t1: f64) -> f64 {
        let mut sum = 0.0f64;
        traverse(self.dims, o, d, t0, t1, |offset, dt| {
            sum += f64::from(self.mu[offset]) * dt;
        });
        sum
    }

    /// Path length in mm through each voxel of `labels` equal to one of `ids` (exact
    /// traversal); `out[n]` accumulates the length through `ids[n]`.
    pub fn label_lengths(
        &self,
        labels: &[u16],
        ids: &[u16],
        source: Vec3,
        target: Vec3,
        out: &mut [f32],
    ) {
        let world_dir = sub(target, source);
        let length = pinhole_volume::math::norm(world_dir);
        let o = self.to_index(source);
        let d = self.dir_to_index(world_dir);
        let Some((t0, t1)) = self.clip(o, d) else {
            return;
        };
        traverse(self.dims, o, d, t0, t1, |offset, dt| {
            if let Some(n) = ids.iter().position(|&id| id == labels[offset]) {
                out[n] += (dt * length) as f32;
            }
        });
    }
}

/// Amanatides–Woo traversal of the voxel boxes hit by `o + t·d` for `t ∈ [t0, t1]`
/// (index space), calling `visit(offset, Δt)` for each.
fn traverse(
    dims: [usize; 3],
    o: Vec3,
    d: Vec3,
    t0: f64,
    t1: f64,
    mut visit: impl FnMut(usize, f64),
) {
    let mid = t0 + 1e-9 * (t1 - t0);
    let mut cell = [0usize; 3];
    let mut step = [0isize; 3];
    let mut t_next = [f64::INFINITY; 3];
    let mut t_delta = [f64::INFINITY; 3];
    for a in 0..3 {
        let p = o[a] + d[a] * mid;
        let c = (p + 0.5).floor().clamp(0.0, (dims[a] - 1) as f64);
        cell[a] = c as usize;
        if d[a] > 0.0 {
            step[a] = 1;
            t_next[a] = (c + 0.5 - o[a]) / d[a];
            t_delta[a] = 1.0 / d[a];
        } else if d[a] < 0.0 {
            step[a] = -1;
            t_next[a] = (c - 0.5 - o[a]) / d[a];
            t_delta[a] = -1.0 / d[a];
        }
    }
    let [nx, ny, _] = dims;
    let mut t = t0;
    loop {
        let a = if t_next[0] <= t_next[1] && t_next[0] <= t_next[2] {
            0
        } else if t_next[1] <= t_next[2] {
            1
        } else {
            2
        };
        let t_exit = t_next[a].min(t1);
        visit(
            cell[0] + nx * (cell[1] + ny * cell[2]),
            (t_exit - t).max(0.0),
        );
        if t_next[a] >= t1 {
            break;
        }
        t = t_next[a];
        t_next[a] += t_delta[a];
        let next = cell[a] as isize + step[a];
        if next < 0 || next >= dims[a] as isize {
            break;
        }
        cell[a] = next as usize;
    }
}

/// Line-integral image of μ (dimensionless: Σ μ·length) for one projection.
pub fn render(mu: &Volume<f32>, projection: &Projection, integrator: Integrator) -> Image {
    let volume = RayVolume::new(mu);
    let (w, h) = (projection.width, projection.height);
    let mut data = vec![0.0f32; w * h];
    data.par_chunks_mut(w).enumerate().for_each(|(row, line)| {
        for (col, out) in line.iter_mut().enumerate() {
            let target = projection.pixel_lps(col as f64, row as f64);
            *out = volume.integrate(projection.source_lps, target, integrator) as f32;
        }
    });
    Image {
        width: w,
        height: h,
        data,
    }
}

/// Path length (mm) through each label in `ids`, one image per label.
pub fn project_labels(labels: &Volume<u16>, ids: &[u16], projection: &Projection) -> Vec<Image> {
    let volume = RayVolume::with_data(labels.grid(), &[]);
    let (w, h) = (projection.width, projection.height);
    let per_pixel: Vec<Vec<f32>> = (0..h)
        .into_par_iter()
        .flat_map_iter(|row| {
            let volume = &volume;
            (0..w).map(move |col| {
                let mut lengths = vec![0.0f32; ids.len()];
                let target = projection.pixel_lps(col as f64, row as f64);
                volume.label_lengths(
                    labels.data(),
                    ids,
                    projection.source_lps,
                    target,
                    &mut lengths,
                );
                lengths
            })
        })
        .collect();
    (0..ids.len())
        .map(|n| Image {
            width: w,
            height: h,
            data: per_pixel.iter().map(|l| l[n]).collect(),
        })
        .collect()
}

/// Renders a batch of projections (e.g. registration poses) over one prepared volume.
pub fn render_batch(
    mu: &Volume<f32>,
    projections: &[Projection],
    integrator: Integrator,
) -> Vec<Image> {
    projections
        .iter()
        .map(|p| render(mu, p, integrator))
        .collect()
}
