//! Helpers shared by the ultrasound integration tests: real data, the Python reference
//! scripts in `tests/py`, rotations and plane builders.

#![allow(dead_code)]

use pinhole_ultrasound::ImagePlane;
use pinhole_volume::{Mat3, Vec3, Volume};

#[path = "../../../tests/support/shared.rs"]
mod shared;
pub use shared::*;

pub fn mat3_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    std::array::from_fn(|r| std::array::from_fn(|c| (0..3).map(|k| a[r][k] * b[k][c]).sum()))
}

pub fn column(m: &Mat3, c: usize) -> Vec3 {
    [m[0][c], m[1][c], m[2][c]]
}

/// A plane whose pixel axes are the first two columns of `rotation` (scaled by the
/// spacing), with the frame's centre at `centre_lps`.
pub fn centred_plane(
    rotation: &Mat3,
    spacing_mm: [f64; 2],
    size_px: [usize; 2],
    centre_lps: Vec3,
) -> ImagePlane {
    let x = column(rotation, 0).map(|v| v * spacing_mm[0]);
    let y = column(rotation, 1).map(|v| v * spacing_mm[1]);
    let half = [
        (size_px[0] as f64 - 1.0) / 2.0,
        (size_px[1] as f64 - 1.0) / 2.0,
    ];
    let origin = std::array::from_fn(|a| centre_lps[a] - half[0] * x[a] - half[1] * y[a]);
    ImagePlane::from_steps(origin, x, y, size_px[0], size_px[1]).unwrap()
}

/// The chest CT (HU as f32) and its labels, read once per test binary.
pub fn chest() -> &'static (Volume<f32>, Volume<u16>) {
    static CHEST: std::sync::OnceLock<(Volume<f32>, Volume<u16>)> = std::sync::OnceLock::new();
    CHEST.get_or_init(|| {
        let ct = pinhole_io::nifti::read(&shared_data("chest-ct/ct.nii.gz")).unwrap();
        let labels = pinhole_io::nifti::read(&shared_data("chest-ct/labels.nii.gz")).unwrap();
        (ct.to_f32(), labels.to_labels().unwrap())
    })
}

/// Centroid (LPS mm) of the voxels carrying `label`.
pub fn centroid_lps(labels: &Volume<u16>, label: u16) -> Vec3 {
    let grid = labels.grid();
    let mut sum = [0.0; 3];
    let mut count = 0usize;
    for (o, &v) in labels.data().iter().enumerate() {
        if v == label {
            let p = grid.index_to_world(grid.index_of_offset(o).map(|x| x as f64));
            for a in 0..3 {
                sum[a] += p[a];
            }
            count += 1;
        }
    }
    assert!(count > 0, "label {label} absent");
    sum.map(|s| s / count as f64)
}
