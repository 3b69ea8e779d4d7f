//! Pinhole's one geometry vocabulary.
//!
//! Arithmetic is done with [glam]'s f64 types ([`DVec3`], [`DMat3`], [`DAffine3`],
//! [`DMat4`], [`DQuat`]), re-exported here so every crate uses the same ones. Points,
//! directions and matrices are *stored* (in grids, reports, JSON) as plain arrays —
//! [`Vec3`] = `[f64; 3]`, [`Mat3`] and [`Mat4`] row-major — which serialise as JSON
//! arrays and have JSON Schemas; convert with `DVec3::from(p)` / `.to_array()` and the
//! row-major helpers below. See ARCHITECTURE.md for why glam.

pub use glam::{DAffine3, DMat3, DMat4, DQuat, DVec3};

/// A 3-vector as stored (LPS mm for points).
pub type Vec3 = [f64; 3];
/// A row-major 3×3 matrix as stored.
pub type Mat3 = [[f64; 3]; 3];
/// A row-major homogeneous 4×4 matrix as stored (reports, OpenIGTLink, ITK files).
pub type Mat4 = [[f64; 4]; 4];

/// The 4×4 identity, row-major.
pub const IDENTITY4: Mat4 = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// A row-major 4×4 as a glam matrix (glam is column-major inside).
pub fn mat4_from_rows(m: &Mat4) -> DMat4 {
    DMat4::from_cols_array_2d(m).transpose()
}

/// A glam 4×4 as a row-major array.
pub fn mat4_to_rows(m: &DMat4) -> Mat4 {
    m.transpose().to_cols_array_2d()
}

/// The affine part of a row-major 4×4 (its bottom row is ignored).
pub fn affine_from_rows(m: &Mat4) -> DAffine3 {
    DAffine3::from_mat3_translation(
        DMat3::from_cols_array_2d(&[
            [m[0][0], m[1][0], m[2][0]],
            [m[0][1], m[1][1], m[2][1]],
            [m[0][2], m[1][2], m[2][2]],
        ]),
        DVec3::new(m[0][3], m[1][3], m[2][3]),
    )
}

/// An affine transform as a row-major 4×4 (bottom row 0 0 0 1).
pub fn affine_to_rows(a: &DAffine3) -> Mat4 {
    mat4_to_rows(&DMat4::from(*a))
}

/// A row-major 3×3 as a glam matrix.
pub fn mat3_from_rows(m: &Mat3) -> DMat3 {
    DMat3::from_cols_array_2d(m).transpose()
}

/// A glam 3×3 as a row-major array.
pub fn mat3_to_rows(m: &DMat3) -> Mat3 {
    m.transpose().to_cols_array_2d()
}

/// A row-major 4×4 rigid transform from a translation and a quaternion `[x, y, z, w]`
/// (normalised here); `None` when the quaternion is zero or not finite.
pub fn rigid_from_quaternion(translation: Vec3, q: [f64; 4]) -> Option<Mat4> {
    let q = DQuat::from_array(q);
    let n = q.length();
    if n <= 0.0 || !n.is_finite() {
        return None;
    }
    let rotation = q / n;
    Some(affine_to_rows(&DAffine3::from_rotation_translation(
        rotation,
        DVec3::from(translation),
    )))
}

/// Angle of the rotation part of a rigid row-major 4×4, degrees (from its trace).
pub fn rotation_angle_deg(m: &Mat4) -> f64 {
    let trace = m[0][0] + m[1][1] + m[2][2];
    ((trace - 1.0) / 2.0).clamp(-1.0, 1.0).acos().to_degrees()
}

/// `m · p` for a point and a row-major affine 4×4 (bottom row ignored).
#[inline]
pub fn transform_point(m: &Mat4, p: Vec3) -> Vec3 {
    std::array::from_fn(|r| m[r][0] * p[0] + m[r][1] * p[1] + m[r][2] * p[2] + m[r][3])
}

/// `m · v` for a direction (the linear part only: no translation).
#[inline]
pub fn transform_direction(m: &Mat4, v: Vec3) -> Vec3 {
    std::array::from_fn(|r| m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2])
}

/// `a · b` for row-major 4×4 matrices.
pub fn mat4_mul(a: &Mat4, b: &Mat4) -> Mat4 {
    mat4_to_rows(&(mat4_from_rows(a) * mat4_from_rows(b)))
}

/// Inverse of an affine row-major 4×4 (bottom row taken as 0 0 0 1); `None` when it is
/// singular or its inverse is not finite (near-singular).
pub fn affine_inverse(m: &Mat4) -> Option<Mat4> {
    let a = affine_from_rows(m);
    let det = a.matrix3.determinant();
    if det == 0.0 || !det.is_finite() {
        return None;
    }
    let inverse = affine_to_rows(&a.inverse());
    inverse
        .iter()
        .flatten()
        .all(|v| v.is_finite())
        .then_some(inverse)
}

/// F · m · F with F = diag(−1, −1, 1, 1): the same transform with LPS and RAS swapped
/// (its own inverse).
pub fn swap_lps_ras(m: &Mat4) -> Mat4 {
    let f = [-1.0, -1.0, 1.0, 1.0];
    let mut out = [[0.0; 4]; 4];
    for r in 0..4 {
        for c in 0..4 {
            // + 0.0 turns −0 into 0.
            out[r][c] = f[r] * m[r][c] * f[c] + 0.0;
        }
    }
    out
}

/// The unit vector along `v`, or `None` when `v` is zero (or not finite).
pub fn unit(v: DVec3) -> Option<DVec3> {
    v.try_normalize()
}

pub const IDENTITY: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

#[inline]
pub fn mat3_mul_vec(m: &Mat3, v: Vec3) -> Vec3 {
    [
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    ]
}

pub fn mat3_determinant(m: &Mat3) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Inverse by the adjugate; `None` when singular or not finite.
pub fn mat3_inverse(m: &Mat3) -> Option<Mat3> {
    let det = mat3_determinant(m);
    if det == 0.0 || !det.is_finite() {
        return None;
    }
    let inv_det = 1.0 / det;
    let c =
        |r0: usize, c0: usize, r1: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    Some([
        [
            c(1, 1, 2, 2) * inv_det,
            -c(0, 1, 2, 2) * inv_det,
            c(0, 1, 1, 2) * inv_det,
        ],
        [
            -c(1, 0, 2, 2) * inv_det,
            c(0, 0, 2, 2) * inv_det,
            -c(0, 0, 1, 2) * inv_det,
        ],
        [
            c(1, 0, 2, 1) * inv_det,
            -c(0, 0, 2, 1) * inv_det,
            c(0, 0, 1, 1) * inv_det,
        ],
    ])
}

// Array-form shorthands for storage-typed code (voxel loops, report fields); each is
// glam's operation, so there is one implementation of every vector operation.

/// `a × b`.
#[inline]
pub fn cross(a: Vec3, b: Vec3) -> Vec3 {
    DVec3::from(a).cross(DVec3::from(b)).to_array()
}

/// `a · b`.
#[inline]
pub fn dot(a: Vec3, b: Vec3) -> f64 {
    DVec3::from(a).dot(DVec3::from(b))
}

/// `|a|`.
#[inline]
pub fn norm(a: Vec3) -> f64 {
    DVec3::from(a).length()
}

/// `a + b`.
#[inline]
pub fn add(a: Vec3, b: Vec3) -> Vec3 {
    (DVec3::from(a) + DVec3::from(b)).to_array()
}

/// `a − b`.
#[inline]
pub fn sub(a: Vec3, b: Vec3) -> Vec3 {
    (DVec3::from(a) - DVec3::from(b)).to_array()
}

/// `s · a`.
#[inline]
pub fn scale(a: Vec3, s: f64) -> Vec3 {
    (DVec3::from(a) * s).to_array()
}

/// `|a − b|`.
#[inline]
pub fn distance(a: Vec3, b: Vec3) -> f64 {
    DVec3::from(a).distance(DVec3::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_times_matrix_is_identity() {
        let m = [[0.0, -2.0, 0.5], [1.5, 0.0, 0.0], [0.0, 0.3, 3.0]];
        let inv = mat3_inverse(&m).unwrap();
        for r in 0..3 {
            for c in 0..3 {
                let v: f64 = (0..3).map(|k| m[r][k] * inv[k][c]).sum();
                assert!((v - IDENTITY[r][c]).abs() < 1e-12);
            }
        }
        assert!(mat3_inverse(&[[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 0.0, 1.0]]).is_none());
    }

    #[test]
    fn affine_inverse_round_trips_and_refuses_singular_matrices() {
        let m = [
            [0.0, -1.0, 0.0, 5.0],
            [1.0, 0.0, 0.0, -3.0],
            [0.0, 0.0, 2.0, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let p = mat4_mul(&m, &affine_inverse(&m).unwrap());
        for r in 0..4 {
            for c in 0..4 {
                assert!((p[r][c] - IDENTITY4[r][c]).abs() < 1e-12);
            }
        }
        assert!(affine_inverse(&[[0.0; 4]; 4]).is_none());
        // Near-singular: the determinant is not zero but the inverse overflows.
        let mut tiny = IDENTITY4;
        tiny[0][0] = 1e-320;
        assert!(affine_inverse(&tiny).is_none());
    }

    #[test]
    fn swap_lps_ras_negates_x_and_y_and_is_its_own_inverse() {
        let m = [
            [0.0, -1.0, 0.0, 5.0],
            [1.0, 0.0, 0.0, -3.0],
            [0.0, 0.0, 2.0, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let f = swap_lps_ras(&m);
        assert_eq!([f[0][3], f[1][3], f[2][3]], [-5.0, 3.0, 7.0]);
        assert_eq!(f[0][2], 0.0);
        assert_eq!(swap_lps_ras(&f), m);
    }

    #[test]
    fn array_shorthands_match_hand_arithmetic() {
        let (a, b) = ([1.0, -2.0, 3.0], [4.0, 0.5, -1.0]);
        assert_eq!(add(a, b), [5.0, -1.5, 2.0]);
        assert_eq!(sub(a, b), [-3.0, -2.5, 4.0]);
        assert_eq!(scale(a, -2.0), [-2.0, 4.0, -6.0]);
        assert_eq!(dot(a, b), 4.0 - 1.0 - 3.0);
        // (−2·−1 − 3·0.5, 3·4 − 1·−1, 1·0.5 − −2·4)
        assert_eq!(cross(a, b), [0.5, 13.0, 8.5]);
        assert_eq!(norm([3.0, 4.0, 12.0]), 13.0);
        assert_eq!(distance([1.0, 1.0, 1.0], [4.0, 5.0, 1.0]), 5.0);
    }

    #[test]
    fn row_major_conversions_keep_rows() {
        let m: Mat4 = [
            [0.0, -1.0, 0.0, 5.0],
            [1.0, 0.0, 0.0, -3.0],
            [0.0, 0.0, 2.0, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        // Row 0 · (1, 2, 3, 1) = −2 + 5: rows stay rows through glam.
        let p = mat4_from_rows(&m) * glam::DVec4::new(1.0, 2.0, 3.0, 1.0);
        assert_eq!(p.to_array(), [3.0, -2.0, 13.0, 1.0]);
        assert_eq!(mat4_to_rows(&mat4_from_rows(&m)), m);
        assert_eq!(affine_to_rows(&affine_from_rows(&m)), m);
        let m3 = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 10.0]];
        assert_eq!(mat3_to_rows(&mat3_from_rows(&m3)), m3);
        assert_eq!(
            (mat3_from_rows(&m3) * DVec3::X).to_array(),
            [1.0, 4.0, 7.0],
            "first column"
        );
    }

    #[test]
    fn quaternion_rotates_like_its_axis_angle() {
        // 90° about +z, unnormalised on purpose: x ↦ y.
        let h = std::f64::consts::FRAC_1_SQRT_2 * 2.0;
        let m = rigid_from_quaternion([1.0, 2.0, 3.0], [0.0, 0.0, h, h]).unwrap();
        let expected = [
            [0.0, -1.0, 0.0, 1.0],
            [1.0, 0.0, 0.0, 2.0],
            [0.0, 0.0, 1.0, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        for r in 0..4 {
            for c in 0..4 {
                assert!((m[r][c] - expected[r][c]).abs() < 1e-12, "{m:?}");
            }
        }
        assert!(rigid_from_quaternion([0.0; 3], [0.0; 4]).is_none());
        assert!(rigid_from_quaternion([0.0; 3], [f64::NAN, 0.0, 0.0, 1.0]).is_none());
    }

    #[test]
    fn cross_product_is_right_handed() {
        assert_eq!(cross([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]), [0.0, 0.0, 1.0]);
    }
}
