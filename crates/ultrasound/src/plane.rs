//! The image plane of an ultrasound frame: where every pixel lies in LPS millimetres.
//!
//! An [`ImagePlane`] is PLUS's `ImageToReference` (here: `ImageToLps`) with the frame
//! size: a row-major 4×4 whose columns are the step of one pixel along the image's
//! x axis (`i`, along a row), the step of one pixel along its y axis (`j`, down the
//! columns), the out-of-plane axis and the origin. Pixel spacing is part of the matrix,
//! so pixel `(i, j)`'s **centre** lies at `origin + i·col_x + j·col_y` (integers at
//! pixel centres, as in ITK and PLUS).

use pinhole_volume::math::{cross, dot, norm, Mat4, Vec3};

/// Largest |cos| of the angle between the pixel x and y steps that still counts as
/// orthogonal. Calibrations are least-squares fits and tracker matrices are stored as
/// `f32`, so exact orthogonality is rare; 1e-3 (0.06°) is the tolerance
/// `pinhole_volume::grid` uses for direction matrices.
pub const SHEAR_TOLERANCE: f64 = 1e-3;

/// Smallest pixel step (mm) accepted; anything smaller is a broken calibration.
pub const MIN_PIXEL_SPACING_MM: f64 = 1e-6;

/// Largest frame accepted, in pixels (8192 × 8192): bounds every buffer a frame needs.
pub const MAX_PIXELS: usize = 1 << 26;

/// Largest deviation of the bottom row from `0 0 0 1` accepted.
const BOTTOM_ROW_TOLERANCE: f64 = 1e-9;

/// Why a plane could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlaneError {
    #[error("an image needs at least 1 × 1 pixels, got {width_px} × {height_px}")]
    EmptyImage { width_px: usize, height_px: usize },
    #[error("an image of {width_px} × {height_px} pixels is larger than {MAX_PIXELS} pixels")]
    TooManyPixels { width_px: usize, height_px: usize },
    #[error("ImageToLps must be finite, got {value} at row {row}, column {column}")]
    NonFinite {
        row: usize,
        column: usize,
        value: f64,
    },
    #[error("ImageToLps is not affine: bottom row {0:?}, expected [0, 0, 0, 1]")]
    NotAffine([f64; 4]),
    #[error("the pixel {axis} step is degenerate or overflows ({spacing_mm:e} mm per pixel)")]
    DegenerateAxis { axis: char, spacing_mm: f64 },
    #[error(
        "the pixel x and y steps are not orthogonal: cos(angle) = {cosine:.2e} \
         (tolerance {SHEAR_TOLERANCE:e})"
    )]
    Shear { cosine: f64 },
}

/// A validated image plane: `ImageToLps` and the frame size.
///
/// Invariants (checked by [`ImagePlane::new`]): every entry finite, bottom row
/// `0 0 0 1`, pixel x and y steps at least [`MIN_PIXEL_SPACING_MM`] long and orthogonal
/// within [`SHEAR_TOLERANCE`] (their lengths may differ: non-uniform pixel spacing is
/// allowed), `1 ≤ width·height ≤` [`MAX_PIXELS`]. The third column is carried but not
/// used: the plane's normal is always `col_x × col_y` normalised, so a mirrored
/// calibration cannot flip the sign of distances silently.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePlane {
    image_to_lps: Mat4,
    width_px: usize,
    height_px: usize,
    origin_lps: Vec3,
    step_x_lps: Vec3,
    step_y_lps: Vec3,
    normal_lps: Vec3,
    spacing_mm: [f64; 2],
    /// Inverse Gram matrix of (step_x, step_y), row-major: LPS offsets → pixel offsets.
    inverse_gram: [[f64; 2]; 2],
}

impl ImagePlane {
    /// Builds a plane from a row-major `ImageToLps` 4×4 and the frame size in pixels.
    pub fn new(image_to_lps: Mat4, width_px: usize, height_px: usize) -> Result<Self, PlaneError> {
        if width_px == 0 || height_px == 0 {
            return Err(PlaneError::EmptyImage {
                width_px,
                height_px,
            });
        }
        if width_px
            .checked_mul(height_px)
            .is_none_or(|n| n > MAX_PIXELS)
        {
            return Err(PlaneError::TooManyPixels {
                width_px,
                height_px,
            });
        }
        for (row, values) in image_to_lps.iter().enumerate() {
            if let Some(column) = values.iter().position(|v| !v.is_finite()) {
                return Err(PlaneError::NonFinite {
                    row,
                    column,
                    value: values[column],
                });
            }
        }
        let bottom = image_to_lps[3];
        let identity_row = [0.0, 0.0, 0.0, 1.0];
        if (0..4).any(|c| (bottom[c] - identity_row[c]).abs() > BOTTOM_ROW_TOLERANCE) {
            return Err(PlaneError::NotAffine(bottom));
        }
        let column = |c: usize| [image_to_lps[0][c], image_to_lps[1][c], image_to_lps[2][c]];
        let (step_x_lps, step_y_lps, origin_lps) = (column(0), column(1), column(3));
        let spacing_mm = [norm(step_x_lps), norm(step_y_lps)];
        for (axis, spacing_mm) in ['x', 'y'].into_iter().zip(spacing_mm) {
            if !spacing_mm.is_finite() || spacing_mm < MIN_PIXEL_SPACING_MM {
                return Err(PlaneError::DegenerateAxis { axis, spacing_mm });
            }
        }
        let cosine = dot(step_x_lps, step_y_lps) / (spacing_mm[0] * spacing_mm[1]);
        if cosine.is_nan() || cosine.abs() > SHEAR_TOLERANCE {
            return Err(PlaneError::Shear { cosine });
        }
        let n = cross(step_x_lps, step_y_lps);
        let n_len = norm(n);
        let normal_lps = n.map(|v| v / n_len + 0.0);
        let (g11, g12, g22) = (
            dot(step_x_lps, step_x_lps),
            dot(step_x_lps, step_y_lps),
            dot(step_y_lps, step_y_lps),
        );
        // Positive: the steps are non-degenerate and nearly orthogonal (checked above).
        let det = g11 * g22 - g12 * g12;
        let inverse_gram = [[g22 / det, -g12 / det], [-g12 / det, g11 / det]];
        Ok(Self {
            image_to_lps,
            width_px,
            height_px,
            origin_lps,
            step_x_lps,
            step_y_lps,
            normal_lps,
            spacing_mm,
            inverse_gram,
        })
    }

    /// Builds a plane from its origin (centre of pixel (0, 0)) and the LPS steps of one
    /// pixel along x and y; the third column is the unit normal `x × y`.
    pub fn from_steps(
        origin_lps: Vec3,
        step_x_lps: Vec3,
        step_y_lps: Vec3,
        width_px: usize,
        height_px: usize,
    ) -> Result<Self, PlaneError> {
        let n = cross(step_x_lps, step_y_lps);
        let n_len = norm(n);
        let normal = if n_len > 0.0 {
            n.map(|v| v / n_len)
        } else {
            [0.0; 3]
        };
        let mut m = [[0.0; 4]; 4];
        for r in 0..3 {
            m[r] = [step_x_lps[r], step_y_lps[r], normal[r], origin_lps[r]];
        }
        m[3] = [0.0, 0.0, 0.0, 1.0];
        Self::new(m, width_px, height_px)
    }

    /// The row-major `ImageToLps` matrix as given.
    pub fn image_to_lps(&self) -> Mat4 {
        self.image_to_lps
    }
    pub fn width_px(&self) -> usize {
        self.width_px
    }
    pub fn height_px(&self) -> usize {
        self.height_px
    }
    pub fn pixel_count(&self) -> usize {
        self.width_px * self.height_px
    }
    /// Centre of pixel (0, 0), LPS mm.
    pub fn origin_lps(&self) -> Vec3 {
        self.origin_lps
    }
    /// LPS step of one pixel along x (`i`), mm.
    pub fn step_x_lps(&self) -> Vec3 {
        self.step_x_lps
    }
    /// LPS step of one pixel along y (`j`), mm.
    pub fn step_y_lps(&self) -> Vec3 {
        self.step_y_lps
    }
    /// Pixel spacing `[x, y]` in mm (the lengths of the two steps).
    pub fn spacing_mm(&self) -> [f64; 2] {
        self.spacing_mm
    }
    /// Unit normal `col_x × col_y` (LPS): the `+` side of signed distances.
    pub fn normal_lps(&self) -> Vec3 {
        self.normal_lps
    }

    /// LPS position of a continuous pixel coordinate `[i, j]` (integers at centres).
    pub fn pixel_to_lps(&self, pixel: [f64; 2]) -> Vec3 {
        std::array::from_fn(|r| {
            self.origin_lps[r] + pixel[0] * self.step_x_lps[r] + pixel[1] * self.step_y_lps[r]
        })
    }

    /// Signed distance (mm) of an LPS point from the plane, `+` along [`Self::normal_lps`].
    pub fn signed_distance_mm(&self, lps: Vec3) -> f64 {
        dot(sub(lps, self.origin_lps), self.normal_lps)
    }

    /// Continuous pixel coordinate `[i, j]` of the orthogonal projection of an LPS point
    /// onto the plane (exact also for slightly sheared steps: a 2×2 Gram solve).
    pub fn lps_to_pixel(&self, lps: Vec3) -> [f64; 2] {
        let d = sub(lps, self.origin_lps);
        let (bx, by) = (dot(d, self.step_x_lps), dot(d, self.step_y_lps));
        let g = &self.inverse_gram;
        [g[0][0] * bx + g[0][1] * by, g[1][0] * bx + g[1][1] * by]
    }
}

fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(x: Vec3, y: Vec3, origin: Vec3) -> Mat4 {
        let mut m = [[0.0; 4]; 4];
        for r in 0..3 {
            m[r] = [x[r], y[r], 0.0, origin[r]];
        }
        m[3] = [0.0, 0.0, 0.0, 1.0];
        m
    }

    #[test]
    fn pixel_round_trip_with_non_uniform_spacing() {
        let plane =
            ImagePlane::from_steps([10.0, -5.0, 3.0], [0.0, 0.3, 0.0], [0.0, 0.0, -0.5], 64, 32)
                .unwrap();
        let p = plane.pixel_to_lps([12.0, 7.5]);
        let expected = [10.0, -5.0 + 3.6, 3.0 - 3.75];
        assert!((0..3).all(|a| (p[a] - expected[a]).abs() < 1e-12), "{p:?}");
        let back = plane.lps_to_pixel([p[0] + 4.0, p[1], p[2]]);
        assert!((back[0] - 12.0).abs() < 1e-12 && (back[1] - 7.5).abs() < 1e-12);
        // normal = (0, 0.3, 0) × (0, 0, -0.5) ∝ (-1, 0, 0): towards patient right.
        assert_eq!(plane.normal_lps(), [-1.0, 0.0, 0.0]);
        assert!((plane.signed_distance_mm([p[0] + 4.0, p[1], p[2]]) + 4.0).abs() < 1e-12);
        assert_eq!(plane.spacing_mm(), [0.3, 0.5]);
    }

    #[test]
    fn refuses_bad_planes() {
        let good = matrix([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0; 3]);
        assert!(ImagePlane::new(good, 4, 4).is_ok());
        assert!(matches!(
            ImagePlane::new(good, 0, 4),
            Err(PlaneError::EmptyImage { .. })
        ));
        assert!(matches!(
            ImagePlane::new(good, usize::MAX, 2),
            Err(PlaneError::TooManyPixels { .. })
        ));
        let mut nan = good;
        nan[1][3] = f64::NAN;
        assert!(matches!(
            ImagePlane::new(nan, 4, 4),
            Err(PlaneError::NonFinite {
                row: 1,
                column: 3,
                ..
            })
        ));
        let mut projective = good;
        projective[3][0] = 0.1;
        assert!(matches!(
            ImagePlane::new(projective, 4, 4),
            Err(PlaneError::NotAffine(_))
        ));
        let huge = matrix([1e300, 1e300, 0.0], [0.0, 0.0, 1.0], [0.0; 3]);
        assert!(matches!(
            ImagePlane::new(huge, 4, 4),
            Err(PlaneError::DegenerateAxis { axis: 'x', .. })
        ));
        let flat = matrix([0.0; 3], [0.0, 1.0, 0.0], [0.0; 3]);
        assert!(matches!(
            ImagePlane::new(flat, 4, 4),
            Err(PlaneError::DegenerateAxis { axis: 'x', .. })
        ));
        // 1° of shear is refused; 0.01° (cos ≈ 1.7e-4) is accepted.
        let shear = |deg: f64| {
            let a = deg.to_radians();
            matrix([1.0, 0.0, 0.0], [a.sin(), a.cos(), 0.0], [0.0; 3])
        };
        assert!(matches!(
            ImagePlane::new(shear(1.0), 4, 4),
            Err(PlaneError::Shear { .. })
        ));
        assert!(ImagePlane::new(shear(0.01), 4, 4).is_ok());
        // Collinear steps are degenerate as a plane: refused as shear.
        let collinear = matrix([1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0; 3]);
        assert!(matches!(
            ImagePlane::new(collinear, 4, 4),
            Err(PlaneError::Shear { .. })
        ));
    }

    #[test]
    fn projection_is_exact_for_slightly_sheared_steps() {
        let a = 0.02f64.to_radians();
        let m = matrix(
            [0.4, 0.0, 0.0],
            [0.2 * a.sin(), 0.2 * a.cos(), 0.0],
            [1.0; 3],
        );
        let plane = ImagePlane::new(m, 8, 8).unwrap();
        let p = plane.pixel_to_lps([3.25, -2.0]);
        let q = [p[0], p[1], p[2] + 7.0];
        let back = plane.lps_to_pixel(q);
        assert!((back[0] - 3.25).abs() < 1e-9 && (back[1] + 2.0).abs() < 1e-9);
        assert!((plane.signed_distance_mm(q) - 7.0).abs() < 1e-12);
    }
}
