//! DICOM series from a folder, assembled into one LPS volume (dicom-rs underneath).
//!
//! * Files are grouped by `SeriesInstanceUID`; the series with the most slices is read
//!   unless [`DicomOptions::series_uid`] names another.
//! * Slices are sorted along the slice normal `row × column` (the two direction cosines
//!   of `ImageOrientationPatient`), so the normal points from slice `k` to `k + 1`.
//! * Index order is ITK's: `i` along a row (first cosine, spacing `PixelSpacing[1]`),
//!   `j` down the columns (second cosine, spacing `PixelSpacing[0]`), `k` across slices,
//!   with the slice spacing taken from the sorted `ImagePositionPatient` projections on
//!   the normal, never from `SliceThickness`. The origin is the first slice's position.
//! * Pixel values are decoded **without** the modality LUT and rescaled here:
//!   `value = stored · RescaleSlope + RescaleIntercept` (pydicom's `apply_modality_lut`).
//!   The result is `i16` when slope is 1, the intercept integral and the values fit, else
//!   `i32` when integral and it fits, else `f64`.
//!
//! * An enhanced multi-frame object (Enhanced or Legacy Converted CT / MR / PET: one file
//!   holding the stack, geometry and rescale per frame in functional groups) is read as
//!   the series of its frames (`enhanced`), from its folder or as the file itself; the
//!   checks below apply to its frames as to files.
//!
//! * A gantry-tilted stack (parallel slices whose positions drift sideways in proportion
//!   to their distance along the normal) is resampled onto an orthogonal grid within
//!   each slice, as dcm2niix does, and said in a warning (`tilt`).
//!
//! Refused, with an error naming the folder, file or frame: no DICOM files, mixed
//! orientation or matrix size, duplicate positions (in one enhanced object: several
//! stacks, echoes or time points), uneven spacing (see [`SPACING_TOLERANCE_MM`] /
//! [`SPACING_TOLERANCE_FRACTION`]), slices displaced sideways other than by a uniform
//! tilt, a `GantryDetectorTilt` the positions and orientation do not show, multi-frame
//! files without per-frame geometry, a single-frame file given alone (its folder is the
//! series), colour images (read as RGB volumes by [`read_colour_series`]), and transfer
//! syntaxes this build cannot decode (JPIP, MPEG / HEVC video).
//!
//! RT Dose grids (multi-frame, stacked by Grid Frame Offset Vector) are read through
//! `dose.rs`: their frames become slices, their values are scaled by Dose Grid Scaling.
//!
//! JPEG-LS (lossless and near-lossless, one greyscale or three colour components) is
//! decoded by [`jpegls`], written from ITU-T T.87, not by dicom-rs.
//!
//! Deflated Explicit VR Little Endian is read by inflating the data set first (at most
//! 64 MiB, `parse::MAX_INFLATED_BYTES`; the file meta group is walked with checked
//! lengths before anything reads it) and reading the result as Explicit VR Little
//! Endian: every check below then sees the inflated bytes. Its headers report the
//! transfer syntax as Explicit VR Little Endian.
//!
//! Robustness: before dicom-object sees a file, every value length in it is checked
//! against the bytes left in the file (dicom-object allocates a claimed length before
//! reading it) and sequences may nest at most [`MAX_SEQUENCE_DEPTH`] deep (dicom-object
//! recurses per level); decoded frames are capped at [`MAX_FRAME_BYTES`].
//!
//! Geometry and scaling: `PixelSpacing`, `ImagePositionPatient`,
//! `ImageOrientationPatient`, `SliceThickness`, `SpacingBetweenSlices`,
//! `RescaleSlope` / `RescaleIntercept` present but not finite numbers are refused (not
//! taken as absent), as are non-positive pixel spacing, direction cosines that are not
//! unit vectors, and a rescale outside [`crate::rescale`]'s limits.
//!
//! Single files (registration X-rays) go through the same checks: [`crate::xray_image`]
//! reads one chosen frame (0-based, checked against NumberOfFrames), modality LUT
//! applied, and the X-ray geometry tags ([`XrayGeometry`]: SID, SOD, ImagerPixelSpacing,
//! positioner angles; unusable values ignored with a warning); ultrasound
//! frames ([`crate::us_frame`]) every frame as 8-bit grey, colour as luminance (`frames`).
//!
//! Inside: `listing` scans a folder and groups headers into series, `header` reads one
//! file's tags, `geometry` checks and orders the stack and makes its grid, `pixels`
//! decodes frames, `parse` checks lengths before dicom-object parses, and `assemble`
//! runs those steps for one series.

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::image::AnyVolume;

mod assemble;
mod colour;
pub mod deidentify;
pub mod derived;
mod dose;
mod enhanced;
mod frames;
mod geometry;
mod header;
mod jpeg2000;
pub mod jpegls;
mod listing;
mod parse;
mod pixels;
pub mod sc;
pub mod seg;
pub mod seg_input;
pub mod sr;
mod tilt;
mod xray;

use assemble::assemble;
pub use colour::{read_colour_series, ColourSeries, RgbSamples, RgbVolume};
pub(crate) use frames::decode_all_frames_u8;
pub use frames::{luminance_u8, DicomFrames, MAX_DECODED_FRAMES_BYTES};
use header::SliceHeader;
use listing::{group_series, no_dicom, read_headers};
use parse::parse;
pub use parse::CountingReader;
use pixels::{check_transfer_syntax, decode_slice};
pub use xray::XrayGeometry;
pub(crate) use xray::{decode_frame_rescaled, read_geometry};

/// Absolute tolerance on slice gaps: a gap deviating from the median gap by more than
/// both this and [`SPACING_TOLERANCE_FRACTION`] of it makes the series unevenly spaced.
pub const SPACING_TOLERANCE_MM: f64 = 0.01;
/// Relative tolerance on slice gaps (1 %), see [`SPACING_TOLERANCE_MM`].
pub const SPACING_TOLERANCE_FRACTION: f64 = 0.01;
/// Two slices closer than this along the normal are duplicates.
pub const DUPLICATE_TOLERANCE_MM: f64 = 1e-3;
/// Largest decoded frame accepted (bytes); larger ones are refused before decoding.
pub const MAX_FRAME_BYTES: usize = 1 << 28;
/// Deepest nesting of sequences (SQ inside an item inside an SQ ...) accepted. dicom-rs
/// parses and drops nested sequences recursively, and 10,000 levels overflow a thread's
/// stack (measured: dicom-object 0.10.1 aborts the process on a 2 MiB test thread), so
/// files nesting deeper are refused by a flat pre-scan before dicom-rs sees them. Real
/// files nest a few levels (RT and SR objects perhaps ten).
pub const MAX_SEQUENCE_DEPTH: usize = 64;

/// Largest difference between two slices' direction cosines still counted as equal.
const ORIENTATION_TOLERANCE: f64 = 1e-4;

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

/// One series found in a folder.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesInfo {
    pub series_uid: String,
    pub description: String,
    pub modality: String,
    /// Number of slices: files, or the frames of an enhanced multi-frame object.
    pub slices: usize,
    pub rows: usize,
    pub columns: usize,
    /// Transfer syntax UID of the first file.
    pub transfer_syntax: String,
    /// The series' files, sorted by name, each once.
    pub files: Vec<PathBuf>,
}

/// How to read a folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DicomOptions {
    /// The series to read; `None` reads the series with the most slices.
    pub series_uid: Option<String>,
}

/// A series read into a volume.
#[derive(Debug, Clone)]
pub struct DicomSeries {
    pub volume: AnyVolume,
    pub info: SeriesInfo,
    /// Things the caller may want to show (MONOCHROME1, defaults assumed, ...).
    pub warnings: Vec<String>,
    /// `SliceThickness` of the first slice, for information only.
    pub slice_thickness_mm: Option<f64>,
}

/// True when the file has the `DICM` magic at offset 128.
pub fn is_dicom_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head[128..132] == *b"DICM"
}

/// Lists the series in `dir` (not recursive), most slices first. Reads headers only.
pub fn list_series(dir: &Path) -> Result<Vec<SeriesInfo>> {
    let headers = read_headers(dir)?;
    Ok(group_series(headers)
        .into_iter()
        .map(|(info, _)| info)
        .collect())
}

/// Reads one series of `dir` into a volume; `progress(done, total)` after each slice.
/// `dir` may also be one enhanced multi-frame file (Enhanced or Legacy Converted CT /
/// MR / PET): its frames are the slices.
pub fn read_series(
    dir: &Path,
    options: &DicomOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<DicomSeries> {
    let (info, slices) = select_series(dir, options)?;
    assemble(dir, info, slices, progress)
}

/// True when the series [`read_series`] would read holds colour images (three samples
/// per pixel, or PALETTE COLOR): read those with [`read_colour_series`]. Reads headers.
pub fn series_is_colour(dir: &Path, options: &DicomOptions) -> Result<bool> {
    let (_, slices) = select_series(dir, options)?;
    Ok(slices.first().is_some_and(colour::is_colour))
}

/// The headers of the series `options` names (else the one with the most slices).
fn select_series(dir: &Path, options: &DicomOptions) -> Result<(SeriesInfo, Vec<SliceHeader>)> {
    let headers = read_headers(dir)?;
    check_single_file_is_a_stack(dir, &headers)?;
    let mut series = group_series(headers);
    let index = match &options.series_uid {
        Some(uid) => series
            .iter()
            .position(|(info, _)| info.series_uid == *uid)
            .ok_or_else(|| {
                let available: Vec<&str> =
                    series.iter().map(|(i, _)| i.series_uid.as_str()).collect();
                Error::new(
                    dir,
                    ErrorKind::InvalidHeader(format!(
                        "no series with SeriesInstanceUID {uid}; available: {}",
                        available.join(", ")
                    )),
                )
            })?,
        None => 0,
    };
    if index >= series.len() {
        return Err(no_dicom(dir));
    }
    Ok(series.swap_remove(index))
}

/// A single file is read only when it is an enhanced multi-frame object (a stack).
fn check_single_file_is_a_stack(path: &Path, headers: &[SliceHeader]) -> Result<()> {
    if path.is_file() && headers.iter().all(|h| h.frame.is_none()) {
        return Err(Error::new(
            path,
            ErrorKind::Unsupported(
                "a single DICOM file that is not an enhanced multi-frame stack (no \
                 per-frame functional groups); pass the folder holding the series"
                    .into(),
            ),
        ));
    }
    Ok(())
}

/// Parses one in-memory DICOM file (with or without the 128-byte preamble) and decodes
/// its pixel data (every frame of an enhanced multi-frame object; a colour image as RGB,
/// [`read_colour_series`]'s decoder). For fuzzing: never panics, never allocates more than the input
/// justifies (up to [`MAX_FRAME_BYTES`] for a compressed frame).
pub fn decode_file_bytes(bytes: &[u8]) -> std::result::Result<(), String> {
    let obj = parse(bytes, false)?;
    let header = SliceHeader::from_object(PathBuf::new(), &obj)?;
    check_transfer_syntax(&header.transfer_syntax).map_err(|k| k.to_string())?;
    if colour::is_colour(&header) {
        return colour::decode_colour_bytes(bytes, None)
            .map(|_| ())
            .map_err(|k| k.to_string());
    }
    let multi_frame = header.frames.is_some_and(|n| n > 1);
    if multi_frame && (enhanced::is_enhanced(&obj) || dose::is_dose_grid(&obj)) {
        let frames = if enhanced::is_enhanced(&obj) {
            enhanced::expand_frames(&header, &obj)?
        } else {
            dose::expand_dose_frames(&header, &obj)?
        };
        for frame in frames {
            pixels::check_header(&frame).map_err(|k| k.to_string())?;
            pixels::decode_frame(&obj, &frame, frame.frame.unwrap_or(0))?;
        }
        return Ok(());
    }
    decode_slice(&obj, &header).map(|_| ())
}
