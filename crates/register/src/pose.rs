//! The rigid pose of the CT relative to the C-arm: six parameters, the 4×4 LPS matrix,
//! and C-arm angles plus table translation.
//!
//! A pose `p = [rx_deg, ry_deg, rz_deg, tx_mm, ty_mm, tz_mm]` moves the CT by
//! `x ↦ R·(x − c) + c + t` with `R = Rz(rz)·Ry(ry)·Rx(rx)` (rotations about the LPS axes
//! through the centre `c`, usually the isocentre) and `t` in LPS mm. Rendering the moved
//! CT through a fixed C-arm is the same as rendering the unmoved CT through the C-arm
//! moved by the inverse pose, which is how candidate poses are rendered (no resampling).

use pinhole_volume::math::{cross, dot, norm, Mat3, Vec3};
use pinhole_xray::{CArm, Projection};
use serde::Serialize;

use crate::RegisterError;

/// Rigid 6-DoF pose of the CT: rotations (degrees) about the LPS axes through `center_lps`,
/// then a translation (mm).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pose {
    /// `[rx, ry, rz]` in degrees about the L, P and S axes.
    pub rotation_deg: [f64; 3],
    /// Translation in LPS mm.
    pub translation_mm: [f64; 3],
    /// Centre of rotation, LPS mm.
    pub center_lps: [f64; 3],
}

impl Pose {
    /// The identity pose about `center_lps`.
    pub fn identity(center_lps: Vec3) -> Self {
        Self {
            rotation_deg: [0.0; 3],
            translation_mm: [0.0; 3],
            center_lps,
        }
    }

    /// From the six parameters `[rx_deg, ry_deg, rz_deg, tx_mm, ty_mm, tz_mm]`.
    pub fn from_params(params: &[f64; 6], center_lps: Vec3) -> Self {
        Self {
            rotation_deg: [params[0], params[1], params[2]],
            translation_mm: [params[3], params[4], params[5]],
            center_lps,
        }
    }

    /// `[rx_deg, ry_deg, rz_deg, tx_mm, ty_mm, tz_mm]`.
    pub fn params(&self) -> [f64; 6] {
        let (r, t) = (self.rotation_deg, self.translation_mm);
        [r[0], r[1], r[2], t[0], t[1], t[2]]
    }

    /// The rotation `Rz·Ry·Rx`.
    pub fn rotation(&self) -> Mat3 {
        let [a, b, c] = self.rotation_deg.map(f64::to_radians);
        let rx = [
            [1.0, 0.0, 0.0],
            [0.0, a.cos(), -a.sin()],
            [0.0, a.sin(), a.cos()],
        ];
        let ry = [
            [b.cos(), 0.0, b.sin()],
            [0.0, 1.0, 0.0],
            [-b.sin(), 0.0, b.cos()],
        ];
        let rz = [
            [c.cos(), -c.sin(), 0.0],
            [c.sin(), c.cos(), 0.0],
            [0.0, 0.0, 1.0],
        ];
        mat_mul(&rz, &mat_mul(&ry, &rx))
    }

    /// Row-major 4×4 LPS matrix of `x ↦ R·(x − c) + c + t` (CT → C-arm room).
    pub fn matrix(&self) -> [[f64; 4]; 4] {
        let r = self.rotation();
        let c = self.center_lps;
        let rc = mat_vec(&r, c);
        let mut m = [[0.0; 4]; 4];
        for i in 0..3 {
            m[i][..3].copy_from_slice(&r[i]);
            m[i][3] = c[i] + self.translation_mm[i] - rc[i];
        }
        m[3][3] = 1.0;
        m
    }

    /// The inverse transform as a row-major 4×4 (C-arm room → CT).
    pub fn inverse_matrix(&self) -> [[f64; 4]; 4] {
        invert_rigid(&self.matrix())
    }

    /// Where this pose moves a CT point.
    pub fn apply(&self, point_lps: Vec3) -> Vec3 {
        let m = self.matrix();
        std::array::from_fn(|i| dot([m[i][0], m[i][1], m[i][2]], point_lps) + m[i][3])
    }

    /// The projection that shows the CT moved by this pose through `nominal`.
    pub fn projection(&self, nominal: &Projection) -> Result<Projection, RegisterError> {
        Ok(nominal.transformed(&self.inverse_matrix())?)
    }
}

/// The pose in C-arm terms: the view angles of the C-arm relative to the CT, the roll of
/// the image about the central ray (not a C-arm axis), and the table translation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CArmPose {
    /// LAO (+) / RAO (−), degrees.
    pub lao_deg: f64,
    /// CRAN (+) / CAUD (−), degrees.
    pub cran_deg: f64,
    /// Rotation of the image about the central ray (detector roll), degrees.
    pub roll_deg: f64,
    /// Translation of the CT's rotation centre (table offset), LPS mm.
    pub translation_mm: [f64; 3],
}

impl CArmPose {
    /// The C-arm angles under which the unmoved CT is seen as `nominal` sees the CT moved
    /// by `pose` (`nominal` gives SID/SOD and the source side).
    pub fn from_pose(pose: &Pose, nominal: &CArm) -> Result<Self, RegisterError> {
        let effective = pose.projection(&nominal.projection()?)?;
        let mut d = effective.central_axis();
        if nominal.source_anterior {
            d = d.map(|v| -v);
        }
        // Detector direction from the isocentre: (sinθ cosφ, −cosθ cosφ, sinφ).
        let cran = d[2].clamp(-1.0, 1.0).asin();
        let lao = d[0].atan2(-d[1]);
        let u_expected = [lao.cos(), lao.sin(), 0.0];
        let u = effective.col_step;
        let u = u.map(|v| v / norm(u));
        let central = effective.central_axis();
        let roll = dot(cross(u_expected, u), central).atan2(dot(u_expected, u));
        Ok(Self {
            lao_deg: lao.to_degrees(),
            cran_deg: cran.to_degrees(),
            roll_deg: roll.to_degrees(),
            translation_mm: pose.translation_mm,
        })
    }
}

pub(crate) fn mat_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
}

fn mat_vec(m: &Mat3, v: Vec3) -> Vec3 {
    std::array::from_fn(|i| dot(m[i], v))
}

/// Inverse of a rigid 4×4 (rotation transposed).
pub fn invert_rigid(m: &[[f64; 4]; 4]) -> [[f64; 4]; 4] {
    let mut out = [[0.0; 4]; 4];
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] = m[j][i];
        }
    }
    for i in 0..3 {
        out[i][3] = -(0..3).map(|k| out[i][k] * m[k][3]).sum::<f64>();
    }
    out[3][3] = 1.0;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_and_inverse_compose_to_identity() {
        let p = Pose::from_params(&[3.0, -7.0, 11.0, 4.0, -9.0, 15.0], [10.0, -20.0, 30.0]);
        let m = p.matrix();
        let inv = p.inverse_matrix();
        for i in 0..4 {
            for j in 0..4 {
                let v: f64 = (0..4).map(|k| m[i][k] * inv[k][j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        // The centre moves by the translation only.
        let c = p.apply([10.0, -20.0, 30.0]);
        assert!((c[0] - 14.0).abs() < 1e-12 && (c[1] + 29.0).abs() < 1e-12);
    }

    #[test]
    fn rotation_about_s_turns_left_towards_posterior() {
        // +90° about S (z): L (x) goes to P (y).
        let p = Pose::from_params(&[0.0, 0.0, 90.0, 0.0, 0.0, 0.0], [0.0; 3]);
        let q = p.apply([1.0, 0.0, 0.0]);
        assert!((q[0]).abs() < 1e-12 && (q[1] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn carm_angles_of_a_ct_rotation() {
        // Turning the CT by −20° about S is seen as the C-arm at LAO +20° (the detector
        // moves towards the patient's left relative to the CT).
        let mut carm = CArm::new([0.0; 3]);
        let pose = Pose::from_params(&[0.0, 0.0, -20.0, 1.0, 2.0, 3.0], [0.0; 3]);
        let a = CArmPose::from_pose(&pose, &carm).unwrap();
        carm.lao_deg = 20.0;
        let expected = carm.projection().unwrap().central_axis();
        let got = pose
            .projection(&CArm::new([0.0; 3]).projection().unwrap())
            .unwrap()
            .central_axis();
        assert!((0..3).all(|i| (expected[i] - got[i]).abs() < 1e-9));
        assert!((a.lao_deg - 20.0).abs() < 1e-9, "{a:?}");
        assert!(a.cran_deg.abs() < 1e-9 && a.roll_deg.abs() < 1e-9);
        assert_eq!(a.translation_mm, [1.0, 2.0, 3.0]);
    }
}
