//! The RAS ↔ LPS edge and the tracker registration.
//!
//! Tracked poses arrive as RAS mm (3D Slicer's frame), or in a tracker reference frame
//! that a registration `ReferenceToRAS` maps to RAS. The needle pose is
//! `NeedleTipToReference`: the tip at the origin, the needle axis along +z (column 2 of
//! the rotation). Conversion: `pose_lps = F · ReferenceToRAS · NeedleTipToReference`,
//! F = diag(−1, −1, 1, 1).
//!
//! Registration files:
//! - 4×4 text: 16 numbers, row-major, `ReferenceToRAS` (whitespace or commas, `#`
//!   comments);
//! - ITK `.tfm` / `.txt` (`AffineTransform_double_3_3`,
//!   `MatrixOffsetTransformBase_double_3_3`, `Rigid3DTransform_double_3_3`): ITK works in
//!   LPS and stores the *resampling* direction ("from parent"), so a Slicer transform
//!   whose to-parent matrix is M (RAS) is stored as F·M⁻¹·F. We read T (with its centre
//!   `FixedParameters`) and return `ReferenceToRAS = F · T⁻¹ · F`.

use std::path::Path;

use pinhole_volume::math::{mat3_inverse, Vec3};

use crate::guidance::NeedlePose;

/// A row-major homogeneous 4×4 matrix.
pub type Mat4 = [[f64; 4]; 4];

pub const IDENTITY4: Mat4 = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// Why a registration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("cannot read registration {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("registration {path}: {what}")]
    Invalid { path: String, what: String },
}

/// F · m · F with F = diag(−1, −1, 1, 1): the same transform with LPS and RAS swapped.
pub fn flip_xy(m: &Mat4) -> Mat4 {
    let f = [-1.0, -1.0, 1.0, 1.0];
    let mut out = [[0.0; 4]; 4];
    for r in 0..4 {
        for c in 0..4 {
            out[r][c] = f[r] * m[r][c] * f[c] + 0.0;
        }
    }
    out
}

pub fn mat4_mul(a: &Mat4, b: &Mat4) -> Mat4 {
    let mut out = [[0.0; 4]; 4];
    for r in 0..4 {
        for c in 0..4 {
            out[r][c] = (0..4).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

/// Inverse of an affine 4×4 (bottom row 0 0 0 1); `None` when singular.
pub fn affine_inverse(m: &Mat4) -> Option<Mat4> {
    let a = [
        [m[0][0], m[0][1], m[0][2]],
        [m[1][0], m[1][1], m[1][2]],
        [m[2][0], m[2][1], m[2][2]],
    ];
    let inv = mat3_inverse(&a)?;
    let t = [m[0][3], m[1][3], m[2][3]];
    let mut out = IDENTITY4;
    for r in 0..3 {
        for c in 0..3 {
            out[r][c] = inv[r][c];
        }
        out[r][3] = -(0..3).map(|k| inv[r][k] * t[k]).sum::<f64>();
    }
    Some(out)
}

/// The needle pose in LPS from `NeedleTipToReference` (RAS-like tracker frame) and an
/// optional `ReferenceToRAS`. `None` when the axis is degenerate or values not finite.
pub fn needle_pose_lps(
    tip_to_reference: &Mat4,
    reference_to_ras: Option<&Mat4>,
) -> Option<NeedlePose> {
    let ras = match reference_to_ras {
        Some(r) => mat4_mul(r, tip_to_reference),
        None => *tip_to_reference,
    };
    let lps = flip_xy(&ras);
    let tip: Vec3 = [lps[0][3], lps[1][3], lps[2][3]];
    let axis: Vec3 = [lps[0][2], lps[1][2], lps[2][2]];
    let axis = crate::guidance::unit(axis)?;
    tip.iter().all(|v| v.is_finite()).then_some(NeedlePose {
        tip_lps: tip,
        axis_lps: axis,
    })
}

/// A pose (RAS, row-major 4×4) whose origin is `target_lps` and whose z axis is
/// `direction_lps` (x and y completing a right-handed frame): `PlanToRAS`.
pub fn plan_to_ras(target_lps: Vec3, direction_lps: Option<Vec3>) -> Mat4 {
    let z = direction_lps
        .and_then(crate::guidance::unit)
        .unwrap_or([0.0, 0.0, 1.0]);
    // Any vector not parallel to z.
    let helper = if z[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let x =
        crate::guidance::unit(pinhole_volume::math::cross(helper, z)).unwrap_or([1.0, 0.0, 0.0]);
    let y = pinhole_volume::math::cross(z, x);
    let mut lps = IDENTITY4;
    for r in 0..3 {
        lps[r][0] = x[r];
        lps[r][1] = y[r];
        lps[r][2] = z[r];
        lps[r][3] = target_lps[r];
    }
    flip_xy(&lps)
}

/// Reads a registration file (`ReferenceToRAS`): an ITK transform (`#Insight Transform
/// File`) or 16 numbers row-major.
pub fn read_registration(path: &Path) -> Result<Mat4, RegistrationError> {
    let text = std::fs::read_to_string(path).map_err(|source| RegistrationError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_registration(&text).map_err(|what| RegistrationError::Invalid {
        path: path.display().to_string(),
        what,
    })
}

/// Parses the text of a registration file (see [`read_registration`]).
pub fn parse_registration(text: &str) -> Result<Mat4, String> {
    if text.trim_start().starts_with("#Insight Transform File") {
        return parse_itk(text);
    }
    let numbers: Vec<f64> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ','))
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f64>().map_err(|_| format!("not a number: {s:?}")))
        .collect::<Result<_, _>>()?;
    if numbers.len() != 16 && numbers.len() != 12 {
        return Err(format!(
            "expected 16 numbers (a row-major 4x4 matrix), found {}",
            numbers.len()
        ));
    }
    let mut m = IDENTITY4;
    for (i, v) in numbers.iter().enumerate() {
        m[i / 4][i % 4] = *v;
    }
    check_affine(&m)?;
    Ok(m)
}

fn check_affine(m: &Mat4) -> Result<(), String> {
    if m.iter().flatten().any(|v| !v.is_finite()) {
        return Err("matrix has non-finite values".into());
    }
    let bottom = m[3];
    if (bottom[0].abs() + bottom[1].abs() + bottom[2].abs() + (bottom[3] - 1.0).abs()) > 1e-9 {
        return Err(format!("bottom row is {bottom:?}, not 0 0 0 1"));
    }
    affine_inverse(m).ok_or("matrix is singular")?;
    Ok(())
}

fn parse_itk(text: &str) -> Result<Mat4, String> {
    let mut kind = None;
    let mut params: Option<Vec<f64>> = None;
    let mut fixed: Option<Vec<f64>> = None;
    let numbers = |rest: &str| -> Result<Vec<f64>, String> {
        rest.split_whitespace()
            .map(|s| s.parse::<f64>().map_err(|_| format!("not a number: {s:?}")))
            .collect()
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Transform:") {
            if kind.is_some() {
                return Err("more than one transform: composite files are not supported".into());
            }
            kind = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("Parameters:") {
            params = Some(numbers(rest)?);
        } else if let Some(rest) = line.strip_prefix("FixedParameters:") {
            fixed = Some(numbers(rest)?);
        }
    }
    let kind = kind.ok_or("no 'Transform:' line")?;
    let supported = [
        "AffineTransform_double_3_3",
        "AffineTransform_float_3_3",
        "MatrixOffsetTransformBase_double_3_3",
        "MatrixOffsetTransformBase_float_3_3",
        "Rigid3DTransform_double_3_3",
    ];
    if !supported.contains(&kind.as_str()) {
        return Err(format!(
            "transform type {kind} is not supported (use one of {supported:?})"
        ));
    }
    let p = params.ok_or("no 'Parameters:' line")?;
    if p.len() != 12 {
        return Err(format!("{kind} needs 12 parameters, found {}", p.len()));
    }
    let c = fixed.unwrap_or_else(|| vec![0.0; 3]);
    let c: Vec3 = match c[..] {
        [x, y, z] => [x, y, z],
        [] => [0.0; 3],
        _ => {
            return Err(format!(
                "FixedParameters must be 3 numbers, found {}",
                c.len()
            ))
        }
    };
    // x ↦ A (x − c) + t + c, in LPS, resampling direction.
    let mut t_file = IDENTITY4;
    for r in 0..3 {
        for k in 0..3 {
            t_file[r][k] = p[r * 3 + k];
        }
        let ac: f64 = (0..3).map(|k| p[r * 3 + k] * c[k]).sum();
        t_file[r][3] = p[9 + r] + c[r] - ac;
    }
    check_affine(&t_file)?;
    let inverse = affine_inverse(&t_file).ok_or("matrix is singular")?;
    Ok(flip_xy(&inverse))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_round_trip() {
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
    }
}
