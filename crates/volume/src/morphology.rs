//! Binary morphology by a radius in millimetres, built on the exact distance transform:
//! a ball of radius `r` mm is the set of voxel centres within `r` of the centre.

use crate::distance::{distance_inside, distance_to};
use crate::volume::Mask;

/// Every voxel whose centre lies within `radius_mm` of a mask voxel.
pub fn dilate(mask: &Mask, radius_mm: f64) -> Mask {
    let r = radius_mm as f32;
    distance_to(mask).map(|d| d <= r)
}

/// Mask voxels whose every neighbour within `radius_mm` is also in the mask. Voxels
/// beyond the grid's edge do not erode (they are unknown, not background).
pub fn erode(mask: &Mask, radius_mm: f64) -> Mask {
    let r = radius_mm as f32;
    distance_inside(mask).map(|d| d > r)
}

/// Dilation then erosion: closes gaps narrower than about `2·radius_mm`.
pub fn close(mask: &Mask, radius_mm: f64) -> Mask {
    erode(&dilate(mask, radius_mm), radius_mm)
}

/// Erosion then dilation: removes specks thinner than about `2·radius_mm`.
pub fn open(mask: &Mask, radius_mm: f64) -> Mask {
    dilate(&erode(mask, radius_mm), radius_mm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Grid;
    use crate::volume::Volume;

    fn single_voxel(dims: [usize; 3], spacing: [f64; 3], at: [usize; 3]) -> Mask {
        let grid = Grid::axis_aligned(dims, spacing, [0.0; 3]).unwrap();
        let mut m = Volume::filled(grid, false);
        let o = m.grid().offset(at);
        m.data_mut()[o] = true;
        m
    }

    #[test]
    fn dilation_is_an_anisotropic_ball() {
        let spacing = [1.0, 2.0, 3.0];
        let m = dilate(&single_voxel([11, 11, 11], spacing, [5, 5, 5]), 3.0);
        for o in 0..m.grid().voxel_count() {
            let p = m.grid().index_of_offset(o);
            let d2: f64 = (0..3)
                .map(|a| (spacing[a] * (p[a] as f64 - 5.0)).powi(2))
                .sum();
            assert_eq!(m.data()[o], d2 <= 9.0, "{p:?}");
        }
    }

    #[test]
    fn erosion_undoes_dilation_of_a_cube_interior() {
        let grid = Grid::axis_aligned([12, 12, 12], [1.0; 3], [0.0; 3]).unwrap();
        let mut cube = Volume::filled(grid, false);
        for k in 3..9 {
            for j in 3..9 {
                for i in 3..9 {
                    let o = cube.grid().offset([i, j, k]);
                    cube.data_mut()[o] = true;
                }
            }
        }
        let eroded = erode(&cube, 1.0);
        let count = eroded.data().iter().filter(|&&v| v).count();
        assert_eq!(count, 4 * 4 * 4);
        let closed = close(&cube, 2.0);
        assert_eq!(closed, cube);
    }
}
