//! Voxel grid geometry in world coordinates (LPS, millimetres).

use crate::math::{mat3_inverse, mat3_mul_vec, Mat3, Vec3};

/// Largest deviation of `DᵀD` from the identity that still counts as an orthonormal
/// direction matrix. Headers store directions as `f32`, so exact orthogonality is rare.
pub const ORTHOGONALITY_TOLERANCE: f64 = 1e-3;

/// Why a grid could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GridError {
    #[error("dimensions must all be at least 1, got {0:?}")]
    EmptyDimension([usize; 3]),
    #[error("voxel count {0:?} overflows the address space")]
    TooManyVoxels([usize; 3]),
    #[error("voxel spacing must be finite and positive, got {0:?} mm")]
    BadSpacing([f64; 3]),
    #[error("origin must be finite, got {0:?}")]
    BadOrigin([f64; 3]),
    #[error("direction matrix is not orthonormal (deviation {deviation:.2e}): {direction:?}")]
    NonOrthogonalDirection { direction: Mat3, deviation: f64 },
}

/// A regular voxel grid: `world = origin + direction · diag(spacing) · index`.
///
/// * world coordinates are LPS millimetres (DICOM, ITK and 3D Slicer files);
/// * `direction` is row-major; its **columns** are the unit world directions of the
///   `i`, `j` and `k` axes;
/// * index order is ITK's: `i` varies fastest in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    dims: [usize; 3],
    spacing_mm: [f64; 3],
    origin_lps: [f64; 3],
    direction: Mat3,
    index_to_world: Mat3,
    world_to_index: Mat3,
}

impl Grid {
    /// Builds a grid, checking dims, spacing and that `direction` is orthonormal.
    pub fn new(
        dims: [usize; 3],
        spacing_mm: [f64; 3],
        origin_lps: [f64; 3],
        direction: Mat3,
    ) -> Result<Self, GridError> {
        if dims.contains(&0) {
            return Err(GridError::EmptyDimension(dims));
        }
        let voxels = dims[0]
            .checked_mul(dims[1])
            .and_then(|n| n.checked_mul(dims[2]));
        if voxels.is_none_or(|n| n > isize::MAX as usize) {
            return Err(GridError::TooManyVoxels(dims));
        }
        if spacing_mm.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(GridError::BadSpacing(spacing_mm));
        }
        if origin_lps.iter().any(|o| !o.is_finite()) {
            return Err(GridError::BadOrigin(origin_lps));
        }
        let deviation = orthonormality_deviation(&direction);
        if deviation.is_nan() || deviation > ORTHOGONALITY_TOLERANCE {
            return Err(GridError::NonOrthogonalDirection {
                direction,
                deviation,
            });
        }
        // `+ 0.0` turns -0.0 into 0.0, so printed matrices do not show "-0".
        let direction = direction.map(|row| row.map(|v| v + 0.0));
        let origin_lps = origin_lps.map(|v| v + 0.0);
        let mut index_to_world = direction;
        for row in &mut index_to_world {
            for (c, value) in row.iter_mut().enumerate() {
                *value *= spacing_mm[c];
            }
        }
        let world_to_index =
            mat3_inverse(&index_to_world).ok_or(GridError::NonOrthogonalDirection {
                direction,
                deviation,
            })?;
        Ok(Self {
            dims,
            spacing_mm,
            origin_lps,
            direction,
            index_to_world,
            world_to_index,
        })
    }

    /// An axis-aligned LPS grid (identity direction).
    pub fn axis_aligned(
        dims: [usize; 3],
        spacing_mm: [f64; 3],
        origin_lps: [f64; 3],
    ) -> Result<Self, GridError> {
        Self::new(dims, spacing_mm, origin_lps, crate::math::IDENTITY)
    }

    /// Builds a grid from a 4×4 (or its upper 3×4) index→LPS affine, splitting it into
    /// spacing (column norms) and direction.
    pub fn from_ijk_to_lps(dims: [usize; 3], affine: &[[f64; 4]; 4]) -> Result<Self, GridError> {
        let mut spacing = [0.0; 3];
        let mut direction = [[0.0; 3]; 3];
        for c in 0..3 {
            spacing[c] = (0..3).map(|r| affine[r][c].powi(2)).sum::<f64>().sqrt();
            for r in 0..3 {
                direction[r][c] = affine[r][c] / spacing[c];
            }
        }
        let origin = [affine[0][3], affine[1][3], affine[2][3]];
        Self::new(dims, spacing, origin, direction)
    }

    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }
    pub fn spacing_mm(&self) -> [f64; 3] {
        self.spacing_mm
    }
    pub fn origin_lps(&self) -> [f64; 3] {
        self.origin_lps
    }
    /// Row-major direction matrix; columns are the axis directions.
    pub fn direction(&self) -> Mat3 {
        self.direction
    }
    pub fn voxel_count(&self) -> usize {
        self.dims[0] * self.dims[1] * self.dims[2]
    }
    /// Volume of one voxel in mm³.
    pub fn voxel_volume_mm3(&self) -> f64 {
        self.spacing_mm.iter().product()
    }

    /// Linear memory offset of an in-range integer index (`i` fastest).
    #[inline]
    pub fn offset(&self, ijk: [usize; 3]) -> usize {
        ijk[0] + self.dims[0] * (ijk[1] + self.dims[1] * ijk[2])
    }

    /// Integer index of a memory offset.
    #[inline]
    pub fn index_of_offset(&self, offset: usize) -> [usize; 3] {
        let i = offset % self.dims[0];
        let rest = offset / self.dims[0];
        [i, rest % self.dims[1], rest / self.dims[1]]
    }

    /// Continuous index → LPS mm.
    #[inline]
    pub fn index_to_world(&self, ijk: Vec3) -> Vec3 {
        let d = mat3_mul_vec(&self.index_to_world, ijk);
        [
            d[0] + self.origin_lps[0],
            d[1] + self.origin_lps[1],
            d[2] + self.origin_lps[2],
        ]
    }

    /// LPS mm → continuous index (voxel centres at integers).
    #[inline]
    pub fn world_to_index(&self, lps: Vec3) -> Vec3 {
        mat3_mul_vec(
            &self.world_to_index,
            [
                lps[0] - self.origin_lps[0],
                lps[1] - self.origin_lps[1],
                lps[2] - self.origin_lps[2],
            ],
        )
    }

    /// Nearest integer index of a world point, or `None` outside the grid.
    pub fn world_to_voxel(&self, lps: Vec3) -> Option<[usize; 3]> {
        let c = self.world_to_index(lps);
        let mut out = [0usize; 3];
        for a in 0..3 {
            let r = c[a].round();
            if !(0.0..self.dims[a] as f64).contains(&r) {
                return None;
            }
            out[a] = r as usize;
        }
        Some(out)
    }

    /// The 4×4 row-major index→LPS matrix.
    pub fn ijk_to_lps(&self) -> [[f64; 4]; 4] {
        let m = &self.index_to_world;
        let o = &self.origin_lps;
        [
            [m[0][0], m[0][1], m[0][2], o[0]],
            [m[1][0], m[1][1], m[1][2], o[1]],
            [m[2][0], m[2][1], m[2][2], o[2]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }

    /// The 4×4 row-major index→RAS matrix (NIfTI, NiiVue, OpenIGTLink IMAGE).
    pub fn ijk_to_ras(&self) -> [[f64; 4]; 4] {
        let mut m = self.ijk_to_lps();
        for row in m.iter_mut().take(2) {
            for value in row.iter_mut() {
                *value = -*value;
            }
        }
        m
    }

    /// Three-letter orientation code in ITK/Slicer style: the world direction each index
    /// axis points *towards*, e.g. `"LPS"` for an identity direction, `"RAS"` when `i`
    /// points right and `j` anterior.
    pub fn orientation_code(&self) -> String {
        (0..3)
            .map(|c| {
                let column = [
                    self.direction[0][c],
                    self.direction[1][c],
                    self.direction[2][c],
                ];
                let axis = (0..3)
                    .max_by(|&a, &b| column[a].abs().total_cmp(&column[b].abs()))
                    .unwrap_or(0);
                let positive = column[axis] >= 0.0;
                match (axis, positive) {
                    (0, true) => 'L',
                    (0, false) => 'R',
                    (1, true) => 'P',
                    (1, false) => 'A',
                    (2, true) => 'S',
                    _ => 'I',
                }
            })
            .collect()
    }

    /// Distance (mm, along the index axis) from `lps` to the outer face of the scan on
    /// `side` (an orientation letter, as [`crate::Volume::scan_edges_where`] names faces);
    /// `None` for a letter that is not a side of this grid. Negative outside the scan.
    pub fn distance_to_side_mm(&self, lps: Vec3, side: char) -> Option<f64> {
        let code: Vec<char> = self.orientation_code().chars().collect();
        let index = self.world_to_index(lps);
        (0..3).find_map(|axis| {
            let toward = *code.get(axis)?;
            let spacing = self.spacing_mm[axis];
            if side == toward {
                Some((self.dims[axis] as f64 - 0.5 - index[axis]) * spacing)
            } else if side == crate::volume::opposite_side(toward) {
                Some((index[axis] + 0.5) * spacing)
            } else {
                None
            }
        })
    }

    /// World-space (LPS) bounding box of the grid's outer voxel faces: `(min, max)`.
    pub fn bounds_lps(&self) -> (Vec3, Vec3) {
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for corner in 0..8 {
            let ijk = [0, 1, 2].map(|a| {
                if corner & (1 << a) == 0 {
                    -0.5
                } else {
                    self.dims[a] as f64 - 0.5
                }
            });
            let p = self.index_to_world(ijk);
            for a in 0..3 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a]);
            }
        }
        (lo, hi)
    }

    /// World position of the centre of the grid.
    pub fn center_lps(&self) -> Vec3 {
        self.index_to_world(self.dims.map(|d| (d as f64 - 1.0) / 2.0))
    }

    /// True when both grids have the same dims and, within `tol_mm`, the same geometry.
    pub fn same_geometry(&self, other: &Grid, tol_mm: f64) -> bool {
        if self.dims != other.dims {
            return false;
        }
        let a = self.ijk_to_lps();
        let b = other.ijk_to_lps();
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() <= tol_mm)
    }
}

fn orthonormality_deviation(d: &Mat3) -> f64 {
    let mut worst: f64 = 0.0;
    for a in 0..3 {
        for b in 0..3 {
            let dot: f64 = (0..3).map(|r| d[r][a] * d[r][b]).sum();
            let expected = if a == b { 1.0 } else { 0.0 };
            worst = worst.max((dot - expected).abs());
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    #[test]
    fn distance_to_each_side_of_an_asymmetric_ras_grid() {
        // i points right (R), j anterior (A), k superior (S); 10 × 20 × 30 voxels of
        // 1 × 2 × 3 mm, first voxel centre at LPS (5, 7, −11).
        let direction = [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]];
        let grid =
            super::Grid::new([10, 20, 30], [1.0, 2.0, 3.0], [5.0, 7.0, -11.0], direction).unwrap();
        assert_eq!(grid.orientation_code(), "RAS");
        // Voxel (2, 3, 4) centre: LPS (5 − 2, 7 − 6, −11 + 12).
        let p = [3.0, 1.0, 1.0];
        let d = |side| grid.distance_to_side_mm(p, side).unwrap();
        assert!((d('L') - 2.5).abs() < 1e-9); // low i face: (2 + 0.5) × 1 mm
        assert!((d('R') - 7.5).abs() < 1e-9); // (10 − 0.5 − 2) × 1 mm
        assert!((d('P') - 7.0).abs() < 1e-9); // (3 + 0.5) × 2 mm
        assert!((d('A') - 33.0).abs() < 1e-9); // (20 − 0.5 − 3) × 2 mm
        assert!((d('I') - 13.5).abs() < 1e-9); // (4 + 0.5) × 3 mm
        assert!((d('S') - 76.5).abs() < 1e-9); // (30 − 0.5 − 4) × 3 mm
        assert_eq!(grid.distance_to_side_mm(p, 'X'), None);
    }

    use super::*;

    fn las_grid() -> Grid {
        // LAS: i points to the patient's left, j anterior, k superior.
        Grid::new(
            [10, 20, 30],
            [0.5, 0.7, 2.5],
            [-100.0, 50.0, 10.0],
            [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
        )
        .unwrap()
    }

    #[test]
    fn orientation_codes_follow_direction_columns() {
        assert_eq!(las_grid().orientation_code(), "LAS");
        let ras = Grid::new(
            [2, 2, 2],
            [1.0; 3],
            [0.0; 3],
            [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
        )
        .unwrap();
        assert_eq!(ras.orientation_code(), "RAS");
        let permuted = Grid::new(
            [2, 2, 2],
            [1.0; 3],
            [0.0; 3],
            [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]],
        )
        .unwrap();
        assert_eq!(permuted.orientation_code(), "PIL");
    }

    #[test]
    fn world_index_round_trip_keeps_left_left() {
        let g = las_grid();
        // Increasing i moves to the patient's left: LPS x grows.
        let a = g.index_to_world([0.0, 0.0, 0.0]);
        let b = g.index_to_world([1.0, 0.0, 0.0]);
        assert!((b[0] - a[0] - 0.5).abs() < 1e-12);
        // Increasing j moves anterior: LPS y shrinks.
        let c = g.index_to_world([0.0, 1.0, 0.0]);
        assert!((c[1] - a[1] + 0.7).abs() < 1e-12);
        let p = [3.25, 7.5, 12.0];
        let back = g.world_to_index(g.index_to_world(p));
        for a in 0..3 {
            assert!((back[a] - p[a]).abs() < 1e-9);
        }
    }

    #[test]
    fn ras_matrix_flips_first_two_rows() {
        let g = las_grid();
        let lps = g.ijk_to_lps();
        let ras = g.ijk_to_ras();
        assert_eq!(ras[0][3], -lps[0][3]);
        assert_eq!(ras[1][1], -lps[1][1]);
        assert_eq!(ras[2], lps[2]);
    }

    #[test]
    fn rejects_bad_geometry() {
        assert!(matches!(
            Grid::axis_aligned([0, 1, 1], [1.0; 3], [0.0; 3]),
            Err(GridError::EmptyDimension(_))
        ));
        assert!(matches!(
            Grid::axis_aligned([1, 1, 1], [1.0, -1.0, 1.0], [0.0; 3]),
            Err(GridError::BadSpacing(_))
        ));
        let sheared = [[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(matches!(
            Grid::new([1, 1, 1], [1.0; 3], [0.0; 3], sheared),
            Err(GridError::NonOrthogonalDirection { .. })
        ));
        assert!(matches!(
            Grid::axis_aligned([usize::MAX, 2, 2], [1.0; 3], [0.0; 3]),
            Err(GridError::TooManyVoxels(_))
        ));
    }

    #[test]
    fn from_affine_recovers_spacing_and_direction() {
        let g = las_grid();
        let back = Grid::from_ijk_to_lps(g.dims(), &g.ijk_to_lps()).unwrap();
        assert!(back.same_geometry(&g, 1e-12));
        assert_eq!(back.orientation_code(), "LAS");
    }

    #[test]
    fn bounds_cover_outer_voxel_faces() {
        let g = Grid::axis_aligned([2, 3, 4], [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]).unwrap();
        let (lo, hi) = g.bounds_lps();
        assert_eq!(lo, [9.5, 19.0, 28.5]);
        assert_eq!(hi, [11.5, 25.0, 40.5]);
    }
}
