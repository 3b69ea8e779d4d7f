//! Synthetic vessel phantoms with analytic geometry: voxel `inside` when its centre lies
//! inside the analytic tube.

use pinhole_volume::{Grid, Mask, Vec3, Volume};

pub fn norm(a: Vec3) -> f64 {
    (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt()
}

/// A mask on an axis-aligned grid of spacing `h` covering `[lo, hi]` (LPS mm).
pub fn voxelise(h: f64, lo: Vec3, hi: Vec3, inside: impl Fn(Vec3) -> bool) -> Mask {
    let dims = [0, 1, 2].map(|a| ((hi[a] - lo[a]) / h).ceil() as usize + 1);
    let grid = Grid::axis_aligned(dims, [h, h, h], lo).unwrap();
    let data = (0..grid.voxel_count())
        .map(|o| {
            let ijk = grid.index_of_offset(o);
            inside(grid.index_to_world(ijk.map(|v| v as f64)))
        })
        .collect();
    Volume::new(grid, data).unwrap()
}

/// A straight tube from `a` along unit `dir` of length `len`, radius `r(s)`, flat caps.
pub struct Straight {
    pub a: Vec3,
    pub dir: Vec3,
    pub len: f64,
}

impl Straight {
    pub fn oblique(len: f64) -> Self {
        let d = [0.25, -0.15, 1.0];
        let n = norm(d);
        Self {
            a: [0.3, -0.2, 0.0],
            dir: d.map(|c| c / n),
            len,
        }
    }

    /// (arc position, distance from the axis) of a point.
    pub fn coords(&self, p: Vec3) -> (f64, f64) {
        let q = [p[0] - self.a[0], p[1] - self.a[1], p[2] - self.a[2]];
        let s = q[0] * self.dir[0] + q[1] * self.dir[1] + q[2] * self.dir[2];
        let radial = [
            q[0] - s * self.dir[0],
            q[1] - s * self.dir[1],
            q[2] - s * self.dir[2],
        ];
        (s, norm(radial))
    }

    pub fn mask(&self, h: f64, r_max: f64, r: impl Fn(f64) -> f64) -> Mask {
        let b = [
            self.a[0] + self.len * self.dir[0],
            self.a[1] + self.len * self.dir[1],
            self.a[2] + self.len * self.dir[2],
        ];
        let m = r_max + 2.0 * h;
        let lo = [0, 1, 2].map(|k| self.a[k].min(b[k]) - m);
        let hi = [0, 1, 2].map(|k| self.a[k].max(b[k]) + m);
        voxelise(h, lo, hi, |p| {
            let (s, d) = self.coords(p);
            (0.0..=self.len).contains(&s) && d <= r(s)
        })
    }
}

/// A tube of radius `r` around an arc of radius `rc` in the x–z plane, from angle 0 to
/// `theta` (length `rc·theta`).
pub fn arc_tube(h: f64, rc: f64, theta: f64, r: f64) -> Mask {
    let m = r + 2.0 * h;
    voxelise(h, [-rc - m, -m, -rc - m], [rc + m, m, rc + m], |p| {
        let phi = p[2].atan2(p[0]);
        let rho = (p[0] * p[0] + p[2] * p[2]).sqrt();
        (0.0..=theta).contains(&phi) && ((rho - rc).powi(2) + p[1] * p[1]).sqrt() <= r
    })
}

/// The radius of a cosine-shaped stenosis of `fraction` (of the diameter) centred at
/// `s0`, half-length `w`, in a vessel of radius `r`.
pub fn stenosed_radius(s: f64, r: f64, fraction: f64, s0: f64, w: f64) -> f64 {
    if (s - s0).abs() >= w {
        r
    } else {
        r * (1.0 - fraction * 0.5 * (1.0 + (std::f64::consts::PI * (s - s0) / w).cos()))
    }
}
