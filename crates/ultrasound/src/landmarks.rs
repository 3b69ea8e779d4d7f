//! Correcting the fusion with landmark pairs: where the tracked ultrasound shows a
//! structure (LPS, through the registration in force) against where the CT has it.
//!
//! [`fit_rigid`] finds the rigid transform `T` (LPS mm) that best maps the ultrasound
//! points onto the CT points in the least-squares sense (Horn, "Closed-form solution of
//! absolute orientation using unit quaternions", JOSA A 4(4), 1987: the rotation is the
//! unit eigenvector of the largest eigenvalue of a symmetric 4×4 built from the
//! cross-covariance; the translation maps centroid onto centroid). The rotation is
//! always proper (determinant +1), never a mirror. The corrected registration is
//! `ReferenceToRAS' = F·T·F · ReferenceToRAS` (F = diag(−1, −1, 1, 1): `T` conjugated
//! from LPS to RAS), see [`corrected_registration`].
//!
//! # Guarantees
//! * At least [`MIN_PAIRS`] pairs, all finite, and the ultrasound points not all on one
//!   line (spread measured by the second-largest principal axis, at least
//!   [`MIN_SPREAD_MM`]): otherwise a typed [`LandmarkError`], since the rotation about
//!   that line would be undetermined.
//! * The report gives the fiducial registration error (RMS and per pair) after the fit,
//!   and the size of the correction (rotation angle, translation): a large FRE says the
//!   pairs disagree (a wrong pair, or deformation a rigid fit cannot remove). FRE is not
//!   the error at the target (TRE); the docs say so.

use pinhole_volume::math::{distance, mat4_mul, swap_lps_ras, transform_point, Mat4, Vec3};
use serde::Serialize;

/// Fewest landmark pairs accepted.
pub const MIN_PAIRS: usize = 3;
/// Smallest spread of the ultrasound points off their main line (RMS distance, mm).
pub const MIN_SPREAD_MM: f64 = 1.0;
/// Most pairs accepted.
pub const MAX_PAIRS: usize = 10_000;

/// Why landmark pairs cannot be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LandmarkError {
    #[error("{us} ultrasound points but {ct} CT points: pairs must match one to one")]
    CountMismatch { us: usize, ct: usize },
    #[error("{0} landmark pairs: at least {MIN_PAIRS} are needed")]
    TooFew(usize),
    #[error("{0} landmark pairs: at most {MAX_PAIRS} are accepted")]
    TooMany(usize),
    #[error("landmark pair {index}: the {which} point {point:?} is not finite")]
    NonFinite {
        index: usize,
        which: &'static str,
        point: Vec3,
    },
    #[error(
        "the ultrasound points lie on a line (spread off it {spread_mm:.3} mm < \
         {MIN_SPREAD_MM} mm): the rotation about it is undetermined; add a point off the line"
    )]
    Collinear { spread_mm: f64 },
}

/// A rigid landmark fit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LandmarkFit {
    /// Row-major 4×4, LPS mm: ultrasound (tracked) position → CT position.
    pub us_to_ct_lps: Mat4,
    /// Rotation angle of the correction, degrees.
    pub rotation_deg: f64,
    /// Length of the correction's translation at the ultrasound points' centroid, mm.
    pub shift_at_centroid_mm: f64,
    /// RMS distance between the moved ultrasound points and the CT points, mm.
    pub fre_rms_mm: f64,
    /// Each pair's distance after the fit, mm, in input order.
    pub residuals_mm: Vec<f64>,
}

/// Fits the rigid transform mapping `us_lps[i]` onto `ct_lps[i]` (see the module docs).
pub fn fit_rigid(us_lps: &[Vec3], ct_lps: &[Vec3]) -> Result<LandmarkFit, LandmarkError> {
    check_pairs(us_lps, ct_lps)?;
    let n = us_lps.len() as f64;
    let centroid = |p: &[Vec3]| -> Vec3 {
        let mut c = [0.0; 3];
        for q in p {
            for a in 0..3 {
                c[a] += q[a] / n;
            }
        }
        c
    };
    let (cu, cc) = (centroid(us_lps), centroid(ct_lps));
    let spread_mm = spread_off_main_axis(us_lps, cu);
    if spread_mm < MIN_SPREAD_MM {
        return Err(LandmarkError::Collinear { spread_mm });
    }
    // Cross-covariance S[a][b] = Σ (u − cu)_a (c − cc)_b.
    let mut s = [[0.0; 3]; 3];
    for (u, c) in us_lps.iter().zip(ct_lps) {
        for a in 0..3 {
            for b in 0..3 {
                s[a][b] += (u[a] - cu[a]) * (c[b] - cc[b]);
            }
        }
    }
    let q = largest_eigenvector(&horn_matrix(&s));
    let r = rotation_from_quaternion(q);
    let mut m = [[0.0; 4]; 4];
    for a in 0..3 {
        let rotated: f64 = (0..3).map(|b| r[a][b] * cu[b]).sum();
        m[a] = [r[a][0], r[a][1], r[a][2], cc[a] - rotated];
    }
    m[3][3] = 1.0;
    let residuals_mm: Vec<f64> = us_lps
        .iter()
        .zip(ct_lps)
        .map(|(u, c)| distance(transform_point(&m, *u), *c))
        .collect();
    let fre_rms_mm = (residuals_mm.iter().map(|d| d * d).sum::<f64>() / n).sqrt();
    let rotation_deg = pinhole_volume::math::rotation_angle_deg(&m);
    Ok(LandmarkFit {
        us_to_ct_lps: m,
        rotation_deg,
        shift_at_centroid_mm: distance(transform_point(&m, cu), cu),
        fre_rms_mm,
        residuals_mm,
    })
}

/// `ReferenceToRAS' = F·T·F · ReferenceToRAS`: the registration that puts the tracked
/// ultrasound where the landmarks say (`T` = [`LandmarkFit::us_to_ct_lps`]).
pub fn corrected_registration(fit: &LandmarkFit, reference_to_ras: &Mat4) -> Mat4 {
    registration_corrected_by(&fit.us_to_ct_lps, reference_to_ras)
}

/// `ReferenceToRAS' = F·T·F · ReferenceToRAS` for any correction `T` (LPS) that maps where
/// the tracked ultrasound puts a point onto where the CT has it (a landmark fit, or
/// [`crate::register::UsRegistration::correction_lps`]).
pub fn registration_corrected_by(us_to_ct_lps: &Mat4, reference_to_ras: &Mat4) -> Mat4 {
    mat4_mul(&swap_lps_ras(us_to_ct_lps), reference_to_ras)
}

fn check_pairs(us: &[Vec3], ct: &[Vec3]) -> Result<(), LandmarkError> {
    if us.len() != ct.len() {
        return Err(LandmarkError::CountMismatch {
            us: us.len(),
            ct: ct.len(),
        });
    }
    if us.len() < MIN_PAIRS {
        return Err(LandmarkError::TooFew(us.len()));
    }
    if us.len() > MAX_PAIRS {
        return Err(LandmarkError::TooMany(us.len()));
    }
    for (index, (u, c)) in us.iter().zip(ct).enumerate() {
        for (which, point) in [("ultrasound", u), ("CT", c)] {
            if point.iter().any(|v| !v.is_finite()) {
                return Err(LandmarkError::NonFinite {
                    index,
                    which,
                    point: *point,
                });
            }
        }
    }
    Ok(())
}

/// RMS distance of the points from their main axis: √(λ₂ + λ₃) of the covariance
/// (per point), from the invariants of the 3×3 covariance.
fn spread_off_main_axis(points: &[Vec3], centroid: Vec3) -> f64 {
    let n = points.len() as f64;
    let mut cov = [[0.0; 4]; 4];
    for p in points {
        for a in 0..3 {
            for b in 0..3 {
                cov[a][b] += (p[a] - centroid[a]) * (p[b] - centroid[b]) / n;
            }
        }
    }
    // The 4×4 Jacobi solver on the covariance padded with a zero row and column.
    let (values, _) = jacobi_eigen(cov);
    let mut l = values;
    l.sort_by(|a, b| b.total_cmp(a));
    (l[1].max(0.0) + l[2].max(0.0)).sqrt()
}

/// Horn's symmetric 4×4 N from the cross-covariance S (quaternion order w, x, y, z).
fn horn_matrix(s: &[[f64; 3]; 3]) -> [[f64; 4]; 4] {
    let (sxx, sxy, sxz) = (s[0][0], s[0][1], s[0][2]);
    let (syx, syy, syz) = (s[1][0], s[1][1], s[1][2]);
    let (szx, szy, szz) = (s[2][0], s[2][1], s[2][2]);
    [
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz],
    ]
}

/// The unit eigenvector of the largest eigenvalue of a symmetric 4×4.
fn largest_eigenvector(m: &[[f64; 4]; 4]) -> [f64; 4] {
    let (values, vectors) = jacobi_eigen(*m);
    let best = (0..4)
        .max_by(|&a, &b| values[a].total_cmp(&values[b]))
        .unwrap_or(0);
    let v = [
        vectors[0][best],
        vectors[1][best],
        vectors[2][best],
        vectors[3][best],
    ];
    let len = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if len > 0.0 {
        v.map(|x| x / len)
    } else {
        [1.0, 0.0, 0.0, 0.0]
    }
}

/// Cyclic Jacobi eigen-decomposition of a symmetric 4×4: eigenvalues and the matrix whose
/// columns are the eigenvectors.
fn jacobi_eigen(mut a: [[f64; 4]; 4]) -> ([f64; 4], [[f64; 4]; 4]) {
    let mut v = [[0.0; 4]; 4];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _sweep in 0..64 {
        let off: f64 = (0..4)
            .flat_map(|p| (0..4).filter(move |&q| q != p).map(move |q| (p, q)))
            .map(|(p, q)| a[p][q] * a[p][q])
            .sum();
        let scale: f64 = (0..4).map(|p| a[p][p] * a[p][p]).sum::<f64>() + off;
        if off <= 1e-30 * scale.max(1e-300) {
            break;
        }
        for p in 0..3 {
            for q in p + 1..4 {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..4 {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..4 {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ([a[0][0], a[1][1], a[2][2], a[3][3]], v)
}

/// The rotation (rows) of a unit quaternion `[w, x, y, z]`.
pub(crate) fn rotation_from_quaternion(q: [f64; 4]) -> [[f64; 3]; 3] {
    let [w, x, y, z] = q;
    [
        [
            w * w + x * x - y * y - z * z,
            2.0 * (x * y - w * z),
            2.0 * (x * z + w * y),
        ],
        [
            2.0 * (x * y + w * z),
            w * w - x * x + y * y - z * z,
            2.0 * (y * z - w * x),
        ],
        [
            2.0 * (x * z - w * y),
            2.0 * (y * z + w * x),
            w * w - x * x - y * y + z * z,
        ],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rotation of `deg` about the unit axis (Rodrigues), as rows.
    fn rotation(axis: Vec3, deg: f64) -> [[f64; 3]; 3] {
        let (s, c) = deg.to_radians().sin_cos();
        let [x, y, z] = axis;
        [
            [
                c + x * x * (1.0 - c),
                x * y * (1.0 - c) - z * s,
                x * z * (1.0 - c) + y * s,
            ],
            [
                y * x * (1.0 - c) + z * s,
                c + y * y * (1.0 - c),
                y * z * (1.0 - c) - x * s,
            ],
            [
                z * x * (1.0 - c) - y * s,
                z * y * (1.0 - c) + x * s,
                c + z * z * (1.0 - c),
            ],
        ]
    }

    fn moved(r: &[[f64; 3]; 3], t: Vec3, p: Vec3) -> Vec3 {
        std::array::from_fn(|a| (0..3).map(|b| r[a][b] * p[b]).sum::<f64>() + t[a])
    }

    fn points() -> Vec<Vec3> {
        vec![
            [10.0, -20.0, 5.0],
            [35.0, -18.0, 9.0],
            [12.0, 14.0, -3.0],
            [-8.0, 2.0, 22.0],
            [20.0, 5.0, 30.0],
        ]
    }

    #[test]
    fn a_known_rigid_move_is_recovered_exactly() {
        let s3 = 1.0 / 3f64.sqrt();
        let r = rotation([s3, -s3, s3], 8.0);
        let t = [4.0, -7.5, 2.25];
        let us = points();
        let ct: Vec<Vec3> = us.iter().map(|p| moved(&r, t, *p)).collect();
        let fit = fit_rigid(&us, &ct).unwrap();
        for a in 0..3 {
            for b in 0..3 {
                assert!(
                    (fit.us_to_ct_lps[a][b] - r[a][b]).abs() < 1e-12,
                    "R[{a}][{b}]"
                );
            }
            assert!((fit.us_to_ct_lps[a][3] - t[a]).abs() < 1e-10, "t[{a}]");
        }
        assert!((fit.rotation_deg - 8.0).abs() < 1e-9);
        assert!(fit.fre_rms_mm < 1e-10);
        assert_eq!(fit.us_to_ct_lps[3], [0.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn a_large_rotation_and_noise_give_the_expected_fre() {
        // 170° (near the quaternion's w = 0): still recovered.
        let r = rotation([0.0, 0.6, 0.8], 170.0);
        let us = points();
        let mut ct: Vec<Vec3> = us.iter().map(|p| moved(&r, [1.0, 2.0, 3.0], *p)).collect();
        let fit = fit_rigid(&us, &ct).unwrap();
        assert!(
            (fit.rotation_deg - 170.0).abs() < 1e-9,
            "{}",
            fit.rotation_deg
        );
        // One pair moved 5 mm: the others absorb part of it, the FRE is below 5/√5.
        ct[2][0] += 5.0;
        let fit = fit_rigid(&us, &ct).unwrap();
        assert!(fit.fre_rms_mm > 0.5 && fit.fre_rms_mm < 5.0 / 5f64.sqrt());
        let worst = (0..5)
            .max_by(|&a, &b| fit.residuals_mm[a].total_cmp(&fit.residuals_mm[b]))
            .unwrap();
        assert_eq!(worst, 2, "{:?}", fit.residuals_mm);
    }

    #[test]
    fn a_mirrored_configuration_still_gets_a_rotation() {
        let us = points();
        let ct: Vec<Vec3> = us.iter().map(|p| [-p[0], p[1], p[2]]).collect();
        let fit = fit_rigid(&us, &ct).unwrap();
        let m = fit.us_to_ct_lps;
        let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
        assert!((det - 1.0).abs() < 1e-9, "det {det}");
        assert!(fit.fre_rms_mm > 1.0, "a mirror cannot be fitted: large FRE");
    }

    #[test]
    fn bad_pairs_are_refused() {
        let p = points();
        assert_eq!(
            fit_rigid(&p[..3], &p[..2]),
            Err(LandmarkError::CountMismatch { us: 3, ct: 2 })
        );
        assert_eq!(fit_rigid(&p[..2], &p[..2]), Err(LandmarkError::TooFew(2)));
        let line: Vec<Vec3> = (0..5)
            .map(|i| [i as f64 * 10.0, 2.0 * i as f64, 0.0])
            .collect();
        assert!(matches!(
            fit_rigid(&line, &line),
            Err(LandmarkError::Collinear { .. })
        ));
        let mut nan = p.clone();
        nan[1][2] = f64::NAN;
        assert!(matches!(
            fit_rigid(&p, &nan),
            Err(LandmarkError::NonFinite {
                index: 1,
                which: "CT",
                ..
            })
        ));
    }

    #[test]
    fn the_corrected_registration_moves_ras_points_as_the_fit_moves_lps_points() {
        let r = rotation([0.0, 0.0, 1.0], 90.0);
        let t = [5.0, 0.0, 0.0];
        let us = points();
        let ct: Vec<Vec3> = us.iter().map(|p| moved(&r, t, *p)).collect();
        let fit = fit_rigid(&us, &ct).unwrap();
        let registration = pinhole_volume::math::IDENTITY4;
        let corrected = corrected_registration(&fit, &registration);
        // A tracked point at LPS us[0] is RAS (−x, −y, z); the corrected registration
        // must send it to the RAS of ct[0].
        let [x, y, z] = us[0];
        let got = transform_point(&corrected, [-x, -y, z]);
        let want = [-ct[0][0], -ct[0][1], ct[0][2]];
        assert!(distance(got, want) < 1e-9, "{got:?} vs {want:?}");
    }
}
