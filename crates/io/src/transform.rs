//! Registration files: the tracker registration `ReferenceToRAS` as a row-major 4×4
//! matrix (RAS mm).
//!
//! - 4×4 text: 16 numbers, row-major (whitespace or commas, `#` comments); 12 numbers
//!   are the top three rows, the bottom row `0 0 0 1` implied.
//! - ITK `.tfm` / `.txt` (`#Insight Transform File`; `AffineTransform_double_3_3`,
//!   `AffineTransform_float_3_3`, `MatrixOffsetTransformBase_double_3_3`,
//!   `MatrixOffsetTransformBase_float_3_3`, `Rigid3DTransform_double_3_3`): ITK works in
//!   LPS and stores the *resampling* direction ("from parent"), so a Slicer transform
//!   whose to-parent matrix is M (RAS) is stored as F·M⁻¹·F, F = diag(−1, −1, 1, 1). We
//!   read T (`Parameters`: the 3×3 matrix row-major, then the translation; with its
//!   centre `FixedParameters`, x ↦ A (x − c) + t + c) and return
//!   `ReferenceToRAS = F · T⁻¹ · F`. Composite files are refused (a deformation is no
//!   matrix); [`write_itk_bspline_transform`] writes one for Slicer.
//!
//! Every matrix returned is finite, affine (bottom row `0 0 0 1`) and invertible.

use std::path::Path;

use pinhole_volume::math::{affine_inverse, swap_lps_ras as flip_xy, IDENTITY4};

use crate::error::{Error, ErrorKind, Result, WithPath};

pub use pinhole_volume::math::Mat4;

/// The ITK transform types read (3-D affine maps).
pub const SUPPORTED_ITK_TRANSFORMS: [&str; 5] = [
    "AffineTransform_double_3_3",
    "AffineTransform_float_3_3",
    "MatrixOffsetTransformBase_double_3_3",
    "MatrixOffsetTransformBase_float_3_3",
    "Rigid3DTransform_double_3_3",
];

/// Reads a registration file (`ReferenceToRAS`, RAS): an ITK transform
/// (`#Insight Transform File`) or 16 numbers row-major.
pub fn read_registration(path: &Path) -> Result<Mat4> {
    let text = std::fs::read_to_string(path).with_path(path)?;
    parse_registration(&text).map_err(|what| Error::new(path, ErrorKind::InvalidTransform(what)))
}

/// Writes a registration `ReferenceToRAS` as 4×4 text (row-major, full precision, a `#`
/// comment line first), atomically; [`read_registration`] reads it back exactly.
pub fn write_registration(path: &Path, matrix: &Mat4, comment: &str) -> Result<()> {
    check_affine(matrix).map_err(|what| Error::new(path, ErrorKind::InvalidTransform(what)))?;
    let mut text = String::new();
    for line in comment.lines() {
        text.push_str("# ");
        text.push_str(line);
        text.push('\n');
    }
    for row in matrix {
        let cells: Vec<String> = row.iter().map(|v| format!("{}", v + 0.0)).collect();
        text.push_str(&cells.join(" "));
        text.push('\n');
    }
    crate::atomic::write_atomic(path, text.as_bytes())
}

/// Writes a transform between two scans as an ITK transform file (`#Insight Transform
/// File V1.0`, `AffineTransform_double_3_3`) that 3D Slicer and SimpleITK read.
/// `to_parent_lps` maps points of the child scan (e.g. a control CT) to the parent's
/// (the planning CT), LPS mm; ITK stores the resampling direction, so the file holds its
/// inverse (parent → child, in LPS as ITK works), exactly as elastix's result would.
/// [`read_registration`] reads it back as the to-parent matrix in RAS.
pub fn write_itk_transform(path: &Path, to_parent_lps: &Mat4, comment: &str) -> Result<()> {
    let inverse = resampling_affine(path, to_parent_lps)?;
    let mut text = itk_header(comment);
    text.push_str("#Transform 0\n");
    push_itk_affine(&mut text, &inverse);
    crate::atomic::write_atomic(path, text.as_bytes())
}

/// The resampling direction (parent → child) of a checked to-parent matrix.
fn resampling_affine(path: &Path, to_parent_lps: &Mat4) -> Result<Mat4> {
    let bad = |what: String| Error::new(path, ErrorKind::InvalidTransform(what));
    check_affine(to_parent_lps).map_err(bad)?;
    affine_inverse(to_parent_lps).ok_or_else(|| bad("the matrix is singular".to_owned()))
}

/// `#Insight Transform File V1.0` and `comment` as `#` lines.
fn itk_header(comment: &str) -> String {
    let mut text = String::from("#Insight Transform File V1.0\n");
    for line in comment.lines() {
        text.push_str("# ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// An `AffineTransform_double_3_3` entry: the 3×3 matrix row-major, then the translation.
fn push_itk_affine(text: &mut String, m: &Mat4) {
    text.push_str("Transform: AffineTransform_double_3_3\nParameters:");
    for row in m.iter().take(3) {
        for v in row.iter().take(3) {
            text.push_str(&format!(" {}", v + 0.0));
        }
    }
    for row in m.iter().take(3) {
        text.push_str(&format!(" {}", row[3] + 0.0));
    }
    text.push_str("\nFixedParameters: 0 0 0\n");
}

/// A cubic B-spline displacement field as ITK's `BSplineTransform_double_3_3` stores it:
/// control point `(i, j, k)` at `origin + direction · (spacing ⊙ (i, j, k))`, one
/// displacement (LPS mm) per control point, `i` fastest.
#[derive(Debug, Clone, Copy)]
pub struct ItkBSpline<'a> {
    pub dims: [usize; 3],
    pub origin_lps: [f64; 3],
    pub spacing_mm: [f64; 3],
    /// Grid axes (columns), LPS.
    pub direction: [[f64; 3]; 3],
    pub coefficients_mm: &'a [[f64; 3]],
}

/// Writes a rigid/affine transform followed by a B-spline deformation as an ITK composite
/// transform file that 3D Slicer, SimpleITK and elastix read. In ITK's resampling
/// direction (parent → child, LPS) the file maps a parent point `x` to
/// `to_parent⁻¹ · (x + u(x))`, `u` the B-spline displacement (defined in the parent's
/// frame); as with [`write_itk_transform`], applying the file to the child scan in Slicer
/// moves it onto the parent.
pub fn write_itk_bspline_transform(
    path: &Path,
    to_parent_lps: &Mat4,
    bspline: &ItkBSpline<'_>,
    comment: &str,
) -> Result<()> {
    let bad = |what: String| Error::new(path, ErrorKind::InvalidTransform(what));
    let inverse = resampling_affine(path, to_parent_lps)?;
    let count: usize = bspline.dims.iter().product();
    if bspline.dims.iter().any(|&n| n < 4) || count != bspline.coefficients_mm.len() {
        return Err(bad(format!(
            "a {:?} B-spline grid (at least 4 points per axis) needs {} coefficients, {} given",
            bspline.dims,
            count,
            bspline.coefficients_mm.len()
        )));
    }
    let finite = bspline
        .origin_lps
        .iter()
        .chain(&bspline.spacing_mm)
        .all(|v| v.is_finite())
        && bspline.spacing_mm.iter().all(|&s| s > 0.0)
        && bspline.direction.iter().flatten().all(|v| v.is_finite())
        && bspline
            .coefficients_mm
            .iter()
            .flatten()
            .all(|v| v.is_finite());
    if !finite {
        return Err(bad(
            "the B-spline grid or its coefficients are not finite (or a spacing is not positive)"
                .to_owned(),
        ));
    }
    let mut text = itk_header(comment);
    // ITK applies a composite's transforms last first: the B-spline, then the affine.
    text.push_str("#Transform 0\nTransform: CompositeTransform_double_3_3\n#Transform 1\n");
    push_itk_affine(&mut text, &inverse);
    text.push_str("#Transform 2\nTransform: BSplineTransform_double_3_3\nParameters:");
    for axis in 0..3 {
        for c in bspline.coefficients_mm {
            text.push_str(&format!(" {}", c[axis] + 0.0));
        }
    }
    text.push_str("\nFixedParameters:");
    let fixed = bspline
        .dims
        .iter()
        .map(|&n| n as f64)
        .chain(bspline.origin_lps)
        .chain(bspline.spacing_mm)
        .chain(bspline.direction.iter().flatten().copied());
    for v in fixed {
        text.push_str(&format!(" {}", v + 0.0));
    }
    text.push('\n');
    crate::atomic::write_atomic(path, text.as_bytes())
}

/// Parses the text of a registration file (see [`read_registration`]); the error says
/// what is wrong with it.
pub fn parse_registration(text: &str) -> std::result::Result<Mat4, String> {
    if text.trim_start().starts_with("#Insight Transform File") {
        return parse_itk(text);
    }
    let numbers: Vec<f64> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ','))
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f64>().map_err(|_| format!("not a number: {s:?}")))
        .collect::<std::result::Result<_, _>>()?;
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

/// Finite values, bottom row `0 0 0 1`, invertible.
fn check_affine(m: &Mat4) -> std::result::Result<(), String> {
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

/// What an ITK transform file says: `Parameters` and `FixedParameters`.
struct ItkFields {
    params: Vec<f64>,
    fixed: Option<Vec<f64>>,
}

fn parse_itk(text: &str) -> std::result::Result<Mat4, String> {
    let ItkFields { params: p, fixed } = itk_fields(text)?;
    let c = itk_centre(fixed)?;
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

/// The one transform of an ITK file: a supported type with 12 parameters.
fn itk_fields(text: &str) -> std::result::Result<ItkFields, String> {
    let mut kind = None;
    let mut params: Option<Vec<f64>> = None;
    let mut fixed: Option<Vec<f64>> = None;
    let numbers = |rest: &str| -> std::result::Result<Vec<f64>, String> {
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
    let supported = SUPPORTED_ITK_TRANSFORMS;
    if !supported.contains(&kind.as_str()) {
        return Err(format!(
            "transform type {kind} is not supported (use one of {supported:?})"
        ));
    }
    let params = params.ok_or("no 'Parameters:' line")?;
    if params.len() != 12 {
        return Err(format!(
            "{kind} needs 12 parameters, found {}",
            params.len()
        ));
    }
    Ok(ItkFields { params, fixed })
}

/// The centre of rotation: `FixedParameters` (3 numbers; none or empty means 0).
fn itk_centre(fixed: Option<Vec<f64>>) -> std::result::Result<[f64; 3], String> {
    let c = fixed.unwrap_or_else(|| vec![0.0; 3]);
    match c[..] {
        [x, y, z] => Ok([x, y, z]),
        [] => Ok([0.0; 3]),
        _ => Err(format!(
            "FixedParameters must be 3 numbers, found {}",
            c.len()
        )),
    }
}
