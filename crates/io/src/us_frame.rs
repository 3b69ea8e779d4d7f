//! Single ultrasound frames from files, chosen by content, as 8-bit grey:
//!
//! * **PNG**: 8-bit (or less, expanded) grey, grey + alpha, RGB(A) or palette; colour
//!   becomes Rec. 601 luminance `0.299 R + 0.587 G + 0.114 B`, rounded. 16-bit PNGs are
//!   **refused** (an ultrasound frame is 8-bit; scaling would change its grey levels
//!   silently). No geometry.
//! * **2-D NIfTI** (`nz = 1`), plain or gzip: `u8`, or any other type whose every value is
//!   finite and within 0–255 (rounded); others are refused. Its geometry comes back as
//!   [`UsFrames::image_to_lps`]: pixel `(i, j)` (column `i`, row `j`) lies at
//!   `origin + i·sx·col0 + j·sy·col1` (LPS mm, the grid's `ijk_to_lps`).
//! * **DICOM** (one file, preamble optional): every frame of a multi-frame file,
//!   8-bit MONOCHROME1/2, RGB, YBR_FULL or YBR_FULL_422 (→ luminance), see
//!   [`crate::dicom::DicomFrames`]. Modality `US` expected; others are read with a
//!   warning. No patient geometry (`image_to_lps` is `None`); the pixel size of the first
//!   Sequence of Ultrasound Regions item (cm → mm) is returned as `spacing_mm`.
//!
//! Every frame of one file has the same size. Nothing is allocated because a header
//! claims it (PNG: the deflate ratio of the file's size; NIfTI: [`crate::nifti`]'s
//! bounds; DICOM: frames × rows × columns × samples within the pixel data and the caps).
//! Every error names the file.

use std::path::Path;

use pinhole_volume::math::Mat4;

use crate::error::{Error, ErrorKind, Result, WithPath};
use crate::image::{AnyVolume, ScalarType};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The formats [`decode_us_frames`] tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UsFrameFormat {
    Png,
    Nifti,
    Dicom,
}

/// The frames of one file, 8-bit grey, row 0 the displayed top.
#[derive(Debug, Clone, PartialEq)]
pub struct UsFrames {
    pub format: UsFrameFormat,
    pub width: usize,
    pub height: usize,
    /// One `width × height` buffer per frame, row-major (`data[row * width + column]`).
    pub frames: Vec<Vec<u8>>,
    /// Pixel → LPS mm (row-major 4×4) when the file has patient geometry (NIfTI).
    pub image_to_lps: Option<Mat4>,
    /// Pixel size `[x, y]` (mm) when known without patient geometry (DICOM regions).
    pub spacing_mm: Option<[f64; 2]>,
    /// Things to show the user (another modality than US, an ignored rescale …).
    pub warnings: Vec<String>,
}

/// The format of a file starting with `head`: the PNG signature, `DICM` at offset 128
/// (or 0, no preamble), else NIfTI.
pub fn sniff(head: &[u8]) -> UsFrameFormat {
    if head.starts_with(PNG_MAGIC) {
        UsFrameFormat::Png
    } else if head.get(128..132) == Some(b"DICM".as_slice()) || head.starts_with(b"DICM") {
        UsFrameFormat::Dicom
    } else {
        UsFrameFormat::Nifti
    }
}

/// Reads an ultrasound frame file, choosing the format from its content.
pub fn read_us_frames(path: &Path) -> Result<UsFrames> {
    let bytes = std::fs::read(path).with_path(path)?;
    decode_us_frames(&bytes, path)
}

/// [`read_us_frames`] on bytes in memory; `origin` names them in errors.
pub fn decode_us_frames(bytes: &[u8], origin: &Path) -> Result<UsFrames> {
    let result = match sniff(bytes) {
        UsFrameFormat::Png => decode_png(bytes),
        UsFrameFormat::Nifti => decode_nifti(bytes),
        UsFrameFormat::Dicom => decode_dicom(bytes),
    };
    result.map_err(|kind| Error::new(origin, kind))
}

/// Bit depth in a PNG's IHDR (byte 24), when the file is long enough to hold it.
fn png_bit_depth(bytes: &[u8]) -> Option<u8> {
    (bytes.get(12..16) == Some(b"IHDR".as_slice()))
        .then(|| bytes.get(24).copied())
        .flatten()
}

fn decode_png(bytes: &[u8]) -> std::result::Result<UsFrames, ErrorKind> {
    if png_bit_depth(bytes) == Some(16) {
        return Err(ErrorKind::UnsupportedDatatype(
            "16-bit PNG: ultrasound frames are read as 8-bit; save the frame with 8 bits \
             per sample"
                .into(),
        ));
    }
    let image = crate::xray_image::decode_png(bytes, Path::new("")).map_err(|e| e.kind)?;
    // 8-bit samples (or luminance of them): within 0–255 already.
    let grey = image
        .data
        .iter()
        .map(|&v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    Ok(UsFrames {
        format: UsFrameFormat::Png,
        width: image.width,
        height: image.height,
        frames: vec![grey],
        image_to_lps: None,
        spacing_mm: None,
        warnings: Vec::new(),
    })
}

fn decode_nifti(bytes: &[u8]) -> std::result::Result<UsFrames, ErrorKind> {
    let volume = crate::nifti::read_bytes(bytes)?;
    let grid = volume.grid().clone();
    let [width, height, depth] = grid.dims();
    if depth != 1 {
        return Err(ErrorKind::Unsupported(format!(
            "expected a 2-D ultrasound frame, got {width}x{height}x{depth} voxels"
        )));
    }
    let grey = nifti_grey(&volume)?;
    Ok(UsFrames {
        format: UsFrameFormat::Nifti,
        width,
        height,
        frames: vec![grey],
        image_to_lps: Some(grid.ijk_to_lps()),
        spacing_mm: Some({
            let s = grid.spacing_mm();
            [s[0], s[1]]
        }),
        warnings: Vec::new(),
    })
}

/// `u8` as is; another type when every value is finite and within 0–255 (rounded).
fn nifti_grey(volume: &AnyVolume) -> std::result::Result<Vec<u8>, ErrorKind> {
    if let AnyVolume::U8(v) = volume {
        return Ok(v.data().to_vec());
    }
    let values = volume.to_f32().into_data();
    if let Some(bad) = values
        .iter()
        .find(|v| !(v.is_finite() && (0.0..=255.0).contains(*v)))
    {
        let scalar: ScalarType = volume.scalar_type();
        return Err(ErrorKind::UnsupportedDatatype(format!(
            "{} NIfTI with value {bad}: an ultrasound frame must hold grey levels 0–255 \
             (save it as uint8)",
            scalar.name()
        )));
    }
    Ok(values.iter().map(|v| v.round() as u8).collect())
}

fn decode_dicom(bytes: &[u8]) -> std::result::Result<UsFrames, ErrorKind> {
    let decoded = crate::dicom::decode_all_frames_u8(bytes)?;
    let mut warnings = decoded.warnings;
    if decoded.modality != "US" {
        let shown = if decoded.modality.is_empty() {
            "none"
        } else {
            decoded.modality.as_str()
        };
        warnings.insert(
            0,
            format!("Modality is {shown}, not US: read as an ultrasound frame anyway"),
        );
    }
    Ok(UsFrames {
        format: UsFrameFormat::Dicom,
        width: decoded.columns,
        height: decoded.rows,
        frames: decoded.frames,
        image_to_lps: None,
        spacing_mm: decoded.spacing_mm,
        warnings,
    })
}
