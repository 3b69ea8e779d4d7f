//! Tracked frames the PLUS way: from the tracker's transforms to a frame's `ImageToLps`.
//!
//! PLUS names transforms `FromToTo`. A frame is placed by `ImageToReference` (pixels →
//! the Reference marker's frame, mm, pixel scaling included), either carried by the frame
//! itself (an OpenIGTLink IMAGE's matrix, a sequence file's `ImageToReferenceTransform`)
//! or composed from the tracked probe and the calibration:
//! `ImageToReference = ProbeToReference · ImageToProbe`. The registration
//! `ReferenceToRAS` then places the Reference frame in the patient, and RAS → LPS is the
//! world edge: `ImageToLps = RasToLps · ReferenceToRAS · ImageToReference`. Only the
//! world side is swapped (rows, not columns): pixel axes stay the image's own.
//!
//! # Guarantees
//! * A tracker transform (`ProbeToReference`) must be rigid: finite, affine, its 3×3 part
//!   orthonormal within [`RIGID_TOLERANCE`] with determinant +1; otherwise
//!   [`TrackingError`] names what is wrong. A calibration (`ImageToProbe`) may scale
//!   (pixel spacing) but must be finite and affine; its in-plane axes are checked by
//!   [`ImagePlane::new`](crate::ImagePlane::new).

use pinhole_volume::math::{mat4_mul, Mat4, IDENTITY4};

use crate::ImagePlane;

/// Largest deviation of `RᵀR` from the identity (any entry) and of `det R` from 1 that a
/// tracker rotation may have. Trackers send `f32` matrices (≈ 1e-7 relative), and PLUS
/// rounds sequence files to 6 digits; 1e-3 (0.06°) is the same tolerance as the planes'
/// shear check.
pub const RIGID_TOLERANCE: f64 = 1e-3;

/// Why a tracked transform is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrackingError {
    #[error("{name} must be finite, got {value} at row {row}, column {column}")]
    NonFinite {
        name: &'static str,
        row: usize,
        column: usize,
        value: f64,
    },
    #[error("{name} is not affine: bottom row {row:?}, expected [0, 0, 0, 1]")]
    NotAffine { name: &'static str, row: [f64; 4] },
    #[error(
        "{name} is not a rigid transform: its rotation is not orthonormal \
         (largest |RᵀR − I| entry {deviation:.2e}, tolerance {RIGID_TOLERANCE:e}); \
         a tracker transform must not scale or shear"
    )]
    NotOrthonormal { name: &'static str, deviation: f64 },
    #[error(
        "{name} mirrors (determinant {determinant:.4}): a tracker transform must be a rotation"
    )]
    Mirrored {
        name: &'static str,
        determinant: f64,
    },
}

/// Checks that `m` is finite and affine.
pub fn check_affine(name: &'static str, m: &Mat4) -> Result<(), TrackingError> {
    for (row, values) in m.iter().enumerate() {
        for (column, &value) in values.iter().enumerate() {
            if !value.is_finite() {
                return Err(TrackingError::NonFinite {
                    name,
                    row,
                    column,
                    value,
                });
            }
        }
    }
    let bottom = m[3];
    if bottom
        .iter()
        .zip([0.0, 0.0, 0.0, 1.0])
        .any(|(a, b)| (a - b).abs() > 1e-9)
    {
        return Err(TrackingError::NotAffine { name, row: bottom });
    }
    Ok(())
}

/// Checks that `m` is a rigid transform (see [`RIGID_TOLERANCE`]).
pub fn check_rigid(name: &'static str, m: &Mat4) -> Result<(), TrackingError> {
    check_affine(name, m)?;
    let mut deviation: f64 = 0.0;
    for a in 0..3 {
        for b in 0..3 {
            let dot: f64 = (0..3).map(|r| m[r][a] * m[r][b]).sum();
            let expected = if a == b { 1.0 } else { 0.0 };
            deviation = deviation.max((dot - expected).abs());
        }
    }
    if deviation > RIGID_TOLERANCE {
        return Err(TrackingError::NotOrthonormal { name, deviation });
    }
    let determinant = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if determinant < 0.0 {
        return Err(TrackingError::Mirrored { name, determinant });
    }
    Ok(())
}

/// `ImageToReference = ProbeToReference · ImageToProbe`, after checking that the probe's
/// pose is rigid and the calibration affine.
pub fn image_to_reference(
    probe_to_reference: &Mat4,
    image_to_probe: &Mat4,
) -> Result<Mat4, TrackingError> {
    check_rigid("ProbeToReference", probe_to_reference)?;
    check_affine("ImageToProbe", image_to_probe)?;
    Ok(mat4_mul(probe_to_reference, image_to_probe))
}

/// `ImageToLps = RasToLps · ReferenceToRAS · ImageToReference` (see the module docs).
pub fn image_to_lps(image_to_reference: &Mat4, reference_to_ras: &Mat4) -> Mat4 {
    let image_to_ras = mat4_mul(reference_to_ras, image_to_reference);
    flip_world_rows(&image_to_ras)
}

/// `ImageToReference` for a Reference that is RAS (no registration): the inverse edge of
/// [`image_to_lps`] with an identity registration, as Pinhole writes sweeps.
pub fn image_to_ras_from_lps(image_to_lps: &Mat4) -> Mat4 {
    flip_world_rows(image_to_lps)
}

/// How a tracked frame was placed by [`place_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Placement {
    /// By the frame's own `ImageToReference`.
    ImageToReference,
    /// By `ProbeToReference · ImageToProbe`.
    ProbeToReferenceTimesImageToProbe,
}

/// The `ImageToReference` of a frame of `width × height` pixels, the PLUS way: the
/// frame's own `ImageToReference` when it has a valid one that makes a usable image plane,
/// else `ProbeToReference · ImageToProbe` ([`image_to_reference`]: the probe's pose
/// rigid) when that makes one. `valid_transform(name)` gives the frame's transform called
/// `name` (`ImageToReference`, `ProbeToReference`, `ImageToProbe`) or why it has none;
/// `Err` says why neither way works.
pub fn place_frame(
    valid_transform: impl Fn(&str) -> Result<Mat4, String>,
    width: usize,
    height: usize,
) -> Result<(Mat4, Placement), String> {
    let usable = |m: Mat4| -> Result<Mat4, String> {
        check_affine("ImageToReference", &m).map_err(|e| e.to_string())?;
        ImagePlane::new(image_to_lps(&m, &IDENTITY4), width, height).map_err(|e| e.to_string())?;
        Ok(m)
    };
    let direct = match valid_transform("ImageToReference") {
        Err(why) => why,
        Ok(m) => match usable(m) {
            Ok(m) => return Ok((m, Placement::ImageToReference)),
            Err(e) => format!("ImageToReferenceTransform refused: {e}"),
        },
    };
    let composed = valid_transform("ProbeToReference").and_then(|probe| {
        let calibration = valid_transform("ImageToProbe")?;
        let m = image_to_reference(&probe, &calibration).map_err(|e| e.to_string())?;
        usable(m)
    });
    match composed {
        Ok(m) => Ok((m, Placement::ProbeToReferenceTimesImageToProbe)),
        Err(e) => Err(format!("{direct}; {e}")),
    }
}

/// Negates the first two rows (the world's x and y): LPS ↔ RAS on the output side only.
fn flip_world_rows(m: &Mat4) -> Mat4 {
    let mut out = *m;
    for row in out.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_volume::math::swap_lps_ras;

    #[test]
    fn world_rows_flip_and_pixel_columns_stay() {
        // Pixel x along RAS +R (patient's right) must become LPS −x.
        let image_to_ras = [
            [0.5, 0.0, 0.0, 10.0],
            [0.0, 0.0, 0.3, 20.0],
            [0.0, -0.5, 0.0, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let lps = image_to_lps(&image_to_ras, &IDENTITY4);
        assert_eq!(lps[0], [-0.5, 0.0, 0.0, -10.0]);
        assert_eq!(lps[1], [0.0, 0.0, -0.3, -20.0]);
        assert_eq!(lps[2], image_to_ras[2]);
        assert_eq!(image_to_ras_from_lps(&lps), image_to_ras);
        // swap_lps_ras conjugates (both sides): not the same thing for a pixel matrix.
        assert_ne!(swap_lps_ras(&image_to_ras), lps);
    }

    #[test]
    fn probe_pose_must_be_rigid_and_calibration_may_scale() {
        let scaled = [
            [0.2, 0.0, 0.0, 1.0],
            [0.0, 0.2, 0.0, 2.0],
            [0.0, 0.0, 1.0, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let rotated = [
            [0.0, -1.0, 0.0, 5.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let composed = image_to_reference(&rotated, &scaled).unwrap();
        // Pixel (1, 0) of the image: probe (1.2, 2, 3) → reference (5 − 2, 1.2, 3).
        assert_eq!(composed[0][0] + composed[0][3], 3.0);
        assert!(matches!(
            image_to_reference(&scaled, &rotated),
            Err(TrackingError::NotOrthonormal {
                name: "ProbeToReference",
                ..
            })
        ));
        let mut mirrored = IDENTITY4;
        mirrored[0][0] = -1.0;
        assert!(matches!(
            check_rigid("ProbeToReference", &mirrored),
            Err(TrackingError::Mirrored { .. })
        ));
        let mut nan = IDENTITY4;
        nan[1][2] = f64::NAN;
        assert!(matches!(
            image_to_reference(&IDENTITY4, &nan),
            Err(TrackingError::NonFinite {
                name: "ImageToProbe",
                row: 1,
                column: 2,
                ..
            })
        ));
        let mut projective = IDENTITY4;
        projective[3][0] = 0.1;
        assert!(matches!(
            check_rigid("ProbeToReference", &projective),
            Err(TrackingError::NotAffine { .. })
        ));
    }
}
