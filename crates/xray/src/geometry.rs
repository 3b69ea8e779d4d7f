//! Cone-beam projection geometry in LPS mm, built from C-arm angles, a 3×4 projection
//! matrix or a 4×4 pose.
//!
//! # C-arm convention
//! * **LAO 0 / CRAN 0** is the frontal view of an interventional C-arm: the X-ray source is
//!   posterior (under the table), the detector anterior. `source_anterior` puts the source
//!   anterior instead (a radiographic AP, as nanodrr and DiffDRR place it).
//! * **LAO θ** turns the detector towards the patient's left (negative θ = RAO, towards the
//!   right), a rotation about the head–foot axis through the isocentre.
//! * **CRAN φ** tilts the detector towards the head (negative = CAUD), a rotation about the
//!   detector's horizontal axis.
//! * **Display**: the patient's head at the top and, in the frontal view, the patient's
//!   right on the viewer's left, whatever the source side. Pixel `(col, row)` has
//!   `col` growing to the viewer's right and `row` growing downwards.

pub(crate) use pinhole_volume::math::{add, scale, sub};
use pinhole_volume::math::{cross, dot, mat3_inverse, norm, Mat3, Vec3};

/// Why a geometry could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeometryError {
    #[error("source-to-isocentre distance {sod_mm} mm must be positive and below the source-to-image distance {sid_mm} mm")]
    Distances { sid_mm: f64, sod_mm: f64 },
    #[error("detector must have at least one pixel and a positive pitch, got {width}×{height} at {pixel_mm} mm")]
    Detector {
        width: usize,
        height: usize,
        pixel_mm: f64,
    },
    #[error("projection matrix is singular or not finite")]
    SingularProjection,
    #[error("pose is not a finite rigid transform")]
    BadPose,
}

/// A C-arm pose in the radiologist's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct CArm {
    /// LAO (+) / RAO (−) angle in degrees.
    pub lao_deg: f64,
    /// CRAN (+) / CAUD (−) angle in degrees.
    pub cran_deg: f64,
    /// Source-to-image distance, mm.
    pub sid_mm: f64,
    /// Source-to-isocentre distance, mm.
    pub sod_mm: f64,
    /// Rotation centre, LPS mm.
    pub isocenter_lps: Vec3,
    /// Source anterior (radiographic AP) instead of posterior (interventional frontal).
    pub source_anterior: bool,
    pub detector: Detector,
}

/// Detector size and pixel pitch (at the detector).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detector {
    pub width: usize,
    pub height: usize,
    pub pixel_mm: f64,
}

impl Default for Detector {
    fn default() -> Self {
        Self {
            width: 512,
            height: 512,
            pixel_mm: 0.78125,
        }
    }
}

impl CArm {
    /// Defaults: LAO 0, CRAN 0, SID 1020 mm, SOD 850 mm, 512² detector at 0.78125 mm.
    pub fn new(isocenter_lps: Vec3) -> Self {
        Self {
            lao_deg: 0.0,
            cran_deg: 0.0,
            sid_mm: 1020.0,
            sod_mm: 850.0,
            isocenter_lps,
            source_anterior: false,
            detector: Detector::default(),
        }
    }

    /// A detector pixel's size at the isocentre (mm): the pixel divided by the
    /// magnification SID / SOD.
    pub fn pixel_at_isocenter_mm(&self) -> f64 {
        self.detector.pixel_mm * self.sod_mm / self.sid_mm
    }

    /// The projection this pose produces.
    pub fn projection(&self) -> Result<Projection, GeometryError> {
        if !(self.sod_mm > 0.0 && self.sid_mm > self.sod_mm && self.sid_mm.is_finite()) {
            return Err(GeometryError::Distances {
                sid_mm: self.sid_mm,
                sod_mm: self.sod_mm,
            });
        }
        let (toward_detector, u, v) = self.axes();
        let iso = self.isocenter_lps;
        let (source_dir, detector_dir) = if self.source_anterior {
            (toward_detector, scale(toward_detector, -1.0))
        } else {
            (scale(toward_detector, -1.0), toward_detector)
        };
        let source = add(iso, scale(source_dir, self.sod_mm));
        let detector_center = add(iso, scale(detector_dir, self.sid_mm - self.sod_mm));
        Projection::from_detector(source, detector_center, u, v, self.detector)
    }

    /// Unit vectors: from isocentre towards the detector of the *interventional* frontal
    /// arrangement (anterior at LAO 0 / CRAN 0), display right `u`, display down `v`.
    fn axes(&self) -> (Vec3, Vec3, Vec3) {
        let (st, ct) = self.lao_deg.to_radians().sin_cos();
        let (sp, cp) = self.cran_deg.to_radians().sin_cos();
        // LAO: rotate about +z (superior). Anterior (0,-1,0) → (sin θ, -cos θ, 0).
        let d_lao = [st, -ct, 0.0];
        let u = [ct, st, 0.0];
        // CRAN: rotate about u so the detector direction gains +z.
        let z = [0.0, 0.0, 1.0];
        let d = add(scale(d_lao, cp), scale(z, sp));
        let v = add(scale(z, -cp), scale(d_lao, sp));
        (d, u, v)
    }
}

/// A cone-beam projection: a point source and a flat detector grid.
///
/// The ray of pixel `(col, row)` leaves `source_lps` through
/// `pixel00_lps + col·col_step + row·row_step` and is integrated over its whole length
/// inside the volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub source_lps: Vec3,
    /// Centre of pixel (0, 0) (the displayed top-left), LPS mm.
    pub pixel00_lps: Vec3,
    /// One column to the right, LPS mm.
    pub col_step: Vec3,
    /// One row down, LPS mm.
    pub row_step: Vec3,
    pub width: usize,
    pub height: usize,
}

impl Projection {
    /// From a source, the detector centre, display axes `u` (right) and `v` (down).
    pub fn from_detector(
        source_lps: Vec3,
        detector_center_lps: Vec3,
        u: Vec3,
        v: Vec3,
        detector: Detector,
    ) -> Result<Self, GeometryError> {
        let Detector {
            width,
            height,
            pixel_mm,
        } = detector;
        if width == 0 || height == 0 || !(pixel_mm > 0.0 && pixel_mm.is_finite()) {
            return Err(GeometryError::Detector {
                width,
                height,
                pixel_mm,
            });
        }
        let col_step = scale(u, pixel_mm);
        let row_step = scale(v, pixel_mm);
        let half_w = (width as f64 - 1.0) / 2.0;
        let half_h = (height as f64 - 1.0) / 2.0;
        let pixel00 = sub(
            detector_center_lps,
            add(scale(col_step, half_w), scale(row_step, half_h)),
        );
        Ok(Self {
            source_lps,
            pixel00_lps: pixel00,
            col_step,
            row_step,
            width,
            height,
        })
    }

    /// From a 3×4 matrix `P` mapping homogeneous LPS points to homogeneous pixel
    /// coordinates `(col, row, 1)·w`.
    pub fn from_matrix(
        p: &[[f64; 4]; 3],
        width: usize,
        height: usize,
    ) -> Result<Self, GeometryError> {
        let m: Mat3 = std::array::from_fn(|r| [p[r][0], p[r][1], p[r][2]]);
        let inv = mat3_inverse(&m).ok_or(GeometryError::SingularProjection)?;
        let p4 = [p[0][3], p[1][3], p[2][3]];
        let source = scale(mul(&inv, p4), -1.0);
        let column = |c: usize| [inv[0][c], inv[1][c], inv[2][c]];
        // Ray direction of pixel (c, r) is M⁻¹ (c, r, 1); place the virtual detector at
        // the source plus those directions (any positive scale gives the same rays).
        let mut proj = Self {
            source_lps: source,
            pixel00_lps: add(source, column(2)),
            col_step: column(0),
            row_step: column(1),
            width,
            height,
        };
        // Rays must point away from the source in the direction P sees as "in front"
        // (w > 0): flip when the matrix is given with a negative scale.
        let w = dot([p[2][0], p[2][1], p[2][2]], column(2));
        if w < 0.0 {
            proj.pixel00_lps = sub(source, column(2));
            proj.col_step = scale(proj.col_step, -1.0);
            proj.row_step = scale(proj.row_step, -1.0);
        }
        if [proj.source_lps, proj.pixel00_lps]
            .iter()
            .flatten()
            .any(|v| !v.is_finite())
        {
            return Err(GeometryError::SingularProjection);
        }
        Ok(proj)
    }

    /// This projection moved rigidly by `pose` (row-major 4×4, applied to the C-arm:
    /// `x' = R·x + t`), e.g. a registration update.
    pub fn transformed(&self, pose: &[[f64; 4]; 4]) -> Result<Self, GeometryError> {
        let r: Mat3 = std::array::from_fn(|i| [pose[i][0], pose[i][1], pose[i][2]]);
        let t = [pose[0][3], pose[1][3], pose[2][3]];
        let rtr_ok = (0..3).all(|a| {
            (0..3).all(|b| {
                let d: f64 = (0..3).map(|k| r[k][a] * r[k][b]).sum();
                (d - if a == b { 1.0 } else { 0.0 }).abs() < 1e-6
            })
        });
        if !rtr_ok || t.iter().any(|v| !v.is_finite()) {
            return Err(GeometryError::BadPose);
        }
        Ok(Self {
            source_lps: add(mul(&r, self.source_lps), t),
            pixel00_lps: add(mul(&r, self.pixel00_lps), t),
            col_step: mul(&r, self.col_step),
            row_step: mul(&r, self.row_step),
            width: self.width,
            height: self.height,
        })
    }

    /// The point on the detector (or virtual detector) of pixel `(col, row)`.
    pub fn pixel_lps(&self, col: f64, row: f64) -> Vec3 {
        add(
            self.pixel00_lps,
            add(scale(self.col_step, col), scale(self.row_step, row)),
        )
    }

    /// Continuous pixel `(col, row)` where the ray from the source through `point_lps`
    /// meets the detector; `None` when the point is not in front of the source.
    pub fn project(&self, point_lps: Vec3) -> Option<(f64, f64)> {
        // Solve source + s·(point − source) = pixel00 + c·col_step + r·row_step.
        let d = sub(point_lps, self.source_lps);
        let m: Mat3 = std::array::from_fn(|i| [d[i], -self.col_step[i], -self.row_step[i]]);
        let inv = mat3_inverse(&m)?;
        let rhs = sub(self.pixel00_lps, self.source_lps);
        let [s, c, r] = mul(&inv, rhs);
        (s > 0.0).then_some((c, r))
    }

    /// The detector as a one-slice grid (i = column, j = row, k along the detector
    /// normal), for writing line integrals as a 2-D image placed in LPS.
    pub fn detector_grid(&self) -> Result<pinhole_volume::Grid, pinhole_volume::GridError> {
        let pitch = norm(self.col_step);
        let unit = |v: Vec3| v.map(|c| c / norm(v));
        let (u, v, n) = (
            unit(self.col_step),
            unit(self.row_step),
            self.detector_normal(),
        );
        let direction = [[u[0], v[0], n[0]], [u[1], v[1], n[1]], [u[2], v[2], n[2]]];
        pinhole_volume::Grid::new(
            [self.width, self.height, 1],
            [pitch, norm(self.row_step), pitch],
            self.pixel00_lps,
            direction,
        )
    }

    /// Unit direction of the central ray (source to detector centre).
    pub fn central_axis(&self) -> Vec3 {
        let c = self.pixel_lps(
            (self.width as f64 - 1.0) / 2.0,
            (self.height as f64 - 1.0) / 2.0,
        );
        let d = sub(c, self.source_lps);
        scale(d, 1.0 / norm(d))
    }

    /// The 3×4 matrix of this projection (inverse of [`Projection::from_matrix`]).
    pub fn matrix(&self) -> Option<[[f64; 4]; 3]> {
        let m: Mat3 = std::array::from_fn(|i| {
            [
                self.col_step[i],
                self.row_step[i],
                self.pixel00_lps[i] - self.source_lps[i],
            ]
        });
        let inv = mat3_inverse(&m)?;
        let t = mul(&inv, self.source_lps);
        Some(std::array::from_fn(|r| {
            [inv[r][0], inv[r][1], inv[r][2], -t[r]]
        }))
    }

    /// Normal of the detector plane pointing away from the source.
    pub fn detector_normal(&self) -> Vec3 {
        let n = cross(self.col_step, self.row_step);
        let n = scale(n, 1.0 / norm(n));
        if dot(n, sub(self.pixel00_lps, self.source_lps)) < 0.0 {
            scale(n, -1.0)
        } else {
            n
        }
    }
}

fn mul(m: &Mat3, v: Vec3) -> Vec3 {
    pinhole_volume::math::mat3_mul_vec(m, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Vec3, b: Vec3) -> bool {
        (0..3).all(|i| (a[i] - b[i]).abs() < 1e-9)
    }

    #[test]
    fn frontal_view_has_source_posterior_and_patient_right_on_viewer_left() {
        let p = CArm::new([0.0; 3]).projection().unwrap();
        assert!(close(p.source_lps, [0.0, 850.0, 0.0]));
        // Detector centre 170 mm anterior of the isocentre.
        let centre = p.pixel_lps(255.5, 255.5);
        assert!(close(centre, [0.0, -170.0, 0.0]));
        // Columns grow towards the patient's left (+x), rows towards the feet (−z).
        assert!(close(scale(p.col_step, 1.0 / 0.78125), [1.0, 0.0, 0.0]));
        assert!(close(scale(p.row_step, 1.0 / 0.78125), [0.0, 0.0, -1.0]));
        // A point on the patient's right projects to the viewer's left half.
        let (col, _) = p.project([-50.0, 0.0, 0.0]).unwrap();
        assert!(col < 255.5);
        // The head projects to the top.
        let (_, row) = p.project([0.0, 0.0, 80.0]).unwrap();
        assert!(row < 255.5);
    }

    #[test]
    fn source_anterior_keeps_the_display_convention() {
        let mut c = CArm::new([0.0; 3]);
        c.source_anterior = true;
        let p = c.projection().unwrap();
        assert!(close(p.source_lps, [0.0, -850.0, 0.0]));
        let (col, row) = p.project([-50.0, 0.0, 80.0]).unwrap();
        assert!(col < 255.5 && row < 255.5);
    }

    #[test]
    fn lao_moves_the_detector_to_the_patients_left() {
        let mut c = CArm::new([10.0, 20.0, 30.0]);
        c.lao_deg = 90.0;
        let p = c.projection().unwrap();
        assert!(close(p.source_lps, [10.0 - 850.0, 20.0, 30.0]));
        let centre = p.pixel_lps(255.5, 255.5);
        assert!(close(centre, [10.0 + 170.0, 20.0, 30.0]));
        c.lao_deg = -30.0; // RAO 30: detector to the right
        let centre = c.projection().unwrap().pixel_lps(255.5, 255.5);
        assert!(centre[0] < 10.0);
    }

    #[test]
    fn cran_tilts_the_detector_towards_the_head() {
        let mut c = CArm::new([0.0; 3]);
        c.cran_deg = 30.0;
        let p = c.projection().unwrap();
        assert!(p.pixel_lps(255.5, 255.5)[2] > 0.0);
        assert!(p.source_lps[2] < 0.0);
        // Display axes stay orthonormal and perpendicular to the central ray.
        let a = p.central_axis();
        assert!(dot(a, p.col_step).abs() < 1e-9 && dot(a, p.row_step).abs() < 1e-9);
    }

    #[test]
    fn matrix_round_trip_gives_the_same_rays() {
        let mut c = CArm::new([5.0, -7.0, 12.0]);
        c.lao_deg = 25.0;
        c.cran_deg = -15.0;
        c.detector = Detector {
            width: 64,
            height: 48,
            pixel_mm: 2.0,
        };
        let p = c.projection().unwrap();
        let m = p.matrix().unwrap();
        let q = Projection::from_matrix(&m, 64, 48).unwrap();
        assert!(close(p.source_lps, q.source_lps));
        for (col, row) in [(0.0, 0.0), (63.0, 0.0), (10.0, 40.0)] {
            let point = p.pixel_lps(col, row);
            let (c2, r2) = q.project(point).unwrap();
            assert!((c2 - col).abs() < 1e-6 && (r2 - row).abs() < 1e-6);
        }
    }

    #[test]
    fn rejects_bad_distances() {
        let mut c = CArm::new([0.0; 3]);
        c.sod_mm = 1100.0;
        assert!(matches!(
            c.projection(),
            Err(GeometryError::Distances { .. })
        ));
    }
}
