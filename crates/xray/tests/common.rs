//! Helpers shared by the DRR integration tests: real data from `../shared/data`, the
//! Python reference scripts in `tests/py`, small volume builders and error summaries.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use pinhole_volume::{Grid, Mat3, Vec3, Volume};

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file under the shared real-data folder (`$PINHOLE_DATA` or `../shared/data`).
pub fn shared_data(relative: &str) -> PathBuf {
    let base = std::env::var_os("PINHOLE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"));
    let path = base.join(relative);
    assert!(path.exists(), "missing real test data {}", path.display());
    path
}

/// Runs `tests/py/<script>` with `python3` (or `$PINHOLE_PYTHON`) and returns stdout.
/// Fails the test with the script's stderr when it fails.
pub fn python(script: &str, args: &[&str]) -> String {
    let interpreter = std::env::var("PINHOLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script_path = repo_root().join("tests/py").join(script);
    let out = Command::new(&interpreter)
        .arg(&script_path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {interpreter}: {e}"));
    assert!(
        out.status.success(),
        "{} {:?} failed (install tests/py/requirements.txt):\n{}",
        script_path.display(),
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("python output is UTF-8")
}

/// Reads a raw little-endian f32 array written by a reference script.
pub fn read_f32_le(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Rotation matrix about the unit `axis` by `deg` degrees (Rodrigues).
pub fn rotation(axis: Vec3, deg: f64) -> Mat3 {
    let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
    let [x, y, z] = axis.map(|a| a / n);
    let (s, c) = deg.to_radians().sin_cos();
    let t = 1.0 - c;
    [
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ]
}

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
