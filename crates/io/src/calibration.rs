//! Ultrasound probe calibration: `ImageToProbe` (pixels → the probe marker's frame, mm,
//! pixel scaling included), as PLUS computes it.
//!
//! Read from:
//! - a PLUS device-set configuration (XML, `<PlusConfiguration>`): the
//!   `<CoordinateDefinitions>` element's `<Transform From="Image" To="Probe"
//!   Matrix="…16 numbers…"/>`; a `From="Probe" To="Image"` entry is inverted. `Error`
//!   and `Date` attributes are kept when present. Other frame names can be asked for
//!   ([`parse_plus_config`]).
//! - a 4×4 text file (16 numbers row-major, or 12) or an ITK `.tfm` saved by 3D Slicer,
//!   read as [`crate::transform`] reads registrations (Slicer's to-parent matrix).
//!
//! Every matrix returned is finite, affine (bottom row `0 0 0 1`) and invertible; whether
//! its in-plane axes are orthogonal is checked where the image plane is built
//! (`pinhole_ultrasound::ImagePlane`). Files over [`MAX_CALIBRATION_BYTES`] are refused
//! before they are read.

use std::io::Read;
use std::path::Path;

use pinhole_volume::math::affine_inverse;

use crate::error::{Error, ErrorKind, Result, WithPath};
use crate::transform::{parse_registration, Mat4};

/// Largest calibration file read (PLUS configurations are a few tens of KiB).
pub const MAX_CALIBRATION_BYTES: u64 = 16 << 20;

/// The default frame names: PLUS's `ImageToProbe`.
pub const IMAGE_FRAME: &str = "Image";
pub const PROBE_FRAME: &str = "Probe";

/// Where a calibration came from.
#[derive(Debug, Clone, PartialEq)]
pub enum CalibrationSource {
    /// A 4×4 text file or an ITK transform file.
    Matrix,
    /// A PLUS configuration's `CoordinateDefinitions`.
    PlusConfig {
        /// `From` and `To` of the element used (`Image`, `Probe`, or reversed).
        from: String,
        to: String,
        /// The element stored the reverse transform and was inverted.
        inverted: bool,
        /// The element's `Error` attribute (calibration error, mm), if any.
        error_mm: Option<f64>,
        /// The element's `Date` attribute, if any.
        date: Option<String>,
    },
}

/// An `ImageToProbe` calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Row-major 4×4, pixels → probe mm.
    pub image_to_probe: Mat4,
    pub source: CalibrationSource,
}

/// Reads `ImageToProbe` from a PLUS configuration (XML) or a 4×4 / ITK transform file.
pub fn read_calibration(path: &Path) -> Result<Calibration> {
    let bytes = read_bounded(path)?;
    parse_calibration(&bytes).map_err(|what| Error::new(path, ErrorKind::InvalidTransform(what)))
}

/// Parses the bytes of a calibration file (see [`read_calibration`]).
pub fn parse_calibration(bytes: &[u8]) -> std::result::Result<Calibration, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
    let text = text.trim_start_matches('\u{feff}');
    if text.trim_start().starts_with('<') {
        return parse_plus_config(text, IMAGE_FRAME, PROBE_FRAME);
    }
    let image_to_probe = parse_registration(text)?;
    Ok(Calibration {
        image_to_probe,
        source: CalibrationSource::Matrix,
    })
}

/// Finds `FromToTo` (e.g. `ImageToProbe`) in a PLUS configuration's
/// `CoordinateDefinitions`, inverting a stored `ToToFrom` when only that is present. The
/// error lists the transforms the file does define.
pub fn parse_plus_config(
    text: &str,
    from: &str,
    to: &str,
) -> std::result::Result<Calibration, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("not valid XML: {e}"))?;
    let transforms: Vec<roxmltree::Node> = doc
        .descendants()
        .filter(|n| n.has_tag_name("CoordinateDefinitions"))
        .flat_map(|defs| defs.children().filter(|n| n.has_tag_name("Transform")))
        .collect();
    let named = |f: &str, t: &str| {
        transforms
            .iter()
            .find(|n| n.attribute("From") == Some(f) && n.attribute("To") == Some(t))
    };
    let (node, inverted) = match (named(from, to), named(to, from)) {
        (Some(n), _) => (n, false),
        (None, Some(n)) => (n, true),
        (None, None) => {
            let defined: Vec<String> = transforms
                .iter()
                .map(|n| {
                    format!(
                        "{}To{}",
                        n.attribute("From").unwrap_or("?"),
                        n.attribute("To").unwrap_or("?")
                    )
                })
                .collect();
            return Err(format!(
                "no {from}To{to} transform in the PLUS configuration's CoordinateDefinitions \
                 (it defines: {})",
                if defined.is_empty() {
                    "nothing".to_owned()
                } else {
                    defined.join(", ")
                }
            ));
        }
    };
    let matrix_text = node
        .attribute("Matrix")
        .ok_or_else(|| format!("the {from}To{to} transform has no Matrix attribute"))?;
    let stored = parse_registration(matrix_text)
        .map_err(|what| format!("the {from}To{to} transform's Matrix: {what}"))?;
    let image_to_probe = if inverted {
        affine_inverse(&stored).ok_or("the stored transform is singular")?
    } else {
        stored
    };
    let error_mm = match node.attribute("Error") {
        Some(e) => Some(
            e.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("the transform's Error attribute is not a number: {e:?}"))?,
        ),
        None => None,
    };
    Ok(Calibration {
        image_to_probe,
        source: CalibrationSource::PlusConfig {
            from: node.attribute("From").unwrap_or_default().to_owned(),
            to: node.attribute("To").unwrap_or_default().to_owned(),
            inverted,
            error_mm,
            date: node.attribute("Date").map(str::to_owned),
        },
    })
}

fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_path(path)?;
    let mut bytes = Vec::new();
    file.take(MAX_CALIBRATION_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_path(path)?;
    if bytes.len() as u64 > MAX_CALIBRATION_BYTES {
        return Err(Error::new(
            path,
            ErrorKind::InvalidTransform(format!(
                "larger than {MAX_CALIBRATION_BYTES} bytes: not a calibration file"
            )),
        ));
    }
    Ok(bytes)
}
