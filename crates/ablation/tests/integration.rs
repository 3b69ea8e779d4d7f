//! pinhole-ablation against analytic answers: Pennes steady state, damage closed forms,
//! coverage and margins of spheres in spheroids, heat-sink tubes, placement, vein dose.

#![allow(clippy::unwrap_used)]

#[path = "cases/bioheat.rs"]
mod bioheat;
#[path = "cases/calibration.rs"]
mod calibration;
#[path = "cases/coverage.rs"]
mod coverage;
#[path = "cases/damage.rs"]
mod damage;
#[path = "cases/devices.rs"]
mod devices;
#[path = "cases/physics.rs"]
mod physics;
#[path = "cases/placement.rs"]
mod placement;
#[path = "cases/vein.rs"]
mod vein;

use pinhole_volume::{Grid, Mask};

/// A cube grid of `n`³ voxels at `h` mm centred on the origin (LPS).
pub fn centred_grid(n: usize, h: f64) -> Grid {
    let o = -(n as f64 - 1.0) * h / 2.0;
    Grid::axis_aligned([n; 3], [h; 3], [o; 3]).unwrap()
}

/// Mask of voxel centres where `inside` holds.
pub fn mask_where(grid: &Grid, inside: impl Fn([f64; 3]) -> bool) -> Mask {
    let data = (0..grid.voxel_count())
        .map(|o| {
            let ijk = grid.index_of_offset(o).map(|v| v as f64);
            inside(grid.index_to_world(ijk))
        })
        .collect();
    Mask::new(grid.clone(), data).unwrap()
}
