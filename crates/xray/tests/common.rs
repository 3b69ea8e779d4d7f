//! Helpers shared by the DRR integration tests: real data from `../shared/data`, the
//! Python reference scripts in `tests/py`, small volume builders and error summaries.

#![allow(dead_code)]

use pinhole_volume::{Grid, Vec3, Volume};

#[path = "../../../tests/support/shared.rs"]
mod shared;
pub use shared::*;

/// A volume filled by `f(ijk)`.
pub fn volume_from(grid: Grid, f: impl Fn([usize; 3]) -> f32) -> Volume<f32> {
    let [nx, ny, nz] = grid.dims();
    let mut data = Vec::with_capacity(nx * ny * nz);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                data.push(f([i, j, k]));
            }
        }
    }
    Volume::new(grid, data).unwrap()
}

pub fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

pub fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}

/// Normalised cross-correlation of two equally sized images.
pub fn ncc(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let mb = b.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt()
}

/// Largest and mean relative error of `(value, exact)` pairs.
pub fn rel_errors(pairs: &[(f64, f64)]) -> (f64, f64) {
    let errs: Vec<f64> = pairs.iter().map(|&(v, e)| ((v - e) / e).abs()).collect();
    let max = errs.iter().copied().fold(0.0, f64::max);
    (max, errs.iter().sum::<f64>() / errs.len().max(1) as f64)
}
