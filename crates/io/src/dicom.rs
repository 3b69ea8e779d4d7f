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
//! Refused, with an error naming the folder or file: no DICOM files, mixed orientation
//! or matrix size, duplicate positions, uneven spacing (see
//! [`SPACING_TOLERANCE_MM`] / [`SPACING_TOLERANCE_FRACTION`]), gantry tilt, multi-frame
//! and colour images, and transfer syntaxes this build cannot decode (JPEG-LS among
//! them; deflated data sets too, because their claimed lengths cannot be checked before
//! inflation).
//!
//! Robustness: before dicom-object sees a file, every value length in it is checked
//! against the bytes left in the file (dicom-object allocates a claimed length before
//! reading it), and decoded frames are capped at [`MAX_FRAME_BYTES`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_core::dictionary::DataDictionary;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use pinhole_volume::{Grid, Volume};
use rayon::prelude::*;

use crate::error::{Error, ErrorKind, Result, WithPath};
use crate::image::AnyVolume;

/// Absolute tolerance on slice gaps: a gap deviating from the median gap by more than
/// both this and [`SPACING_TOLERANCE_FRACTION`] of it makes the series unevenly spaced.
pub const SPACING_TOLERANCE_MM: f64 = 0.01;
/// Relative tolerance on slice gaps (1 %), see [`SPACING_TOLERANCE_MM`].
pub const SPACING_TOLERANCE_FRACTION: f64 = 0.01;
/// Two slices closer than this along the normal are duplicates.
pub const DUPLICATE_TOLERANCE_MM: f64 = 1e-3;
/// Largest decoded frame accepted (bytes); larger ones are refused before decoding.
pub const MAX_FRAME_BYTES: usize = 1 << 28;

/// Largest in-plane displacement between slice positions (mm, and per mm along the
/// normal) still counted as "stacked along the normal" (no gantry tilt).
const TILT_TOLERANCE_MM: f64 = 0.01;
const TILT_TOLERANCE_FRACTION: f64 = 1e-3;
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
    /// Number of files (slices) in the series.
    pub slices: usize,
    pub rows: usize,
    pub columns: usize,
    /// Transfer syntax UID of the first file.
    pub transfer_syntax: String,
    /// The series' files, sorted by name.
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
pub fn read_series(
    dir: &Path,
    options: &DicomOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<DicomSeries> {
    let headers = read_headers(dir)?;
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
    let (info, slices) = series.swap_remove(index);
    assemble(dir, info, slices, progress)
}

/// Parses one in-memory DICOM file (with or without the 128-byte preamble) and decodes
/// its pixel data. For fuzzing: never panics, never allocates more than the input
/// justifies (up to [`MAX_FRAME_BYTES`] for a compressed frame).
pub fn decode_file_bytes(bytes: &[u8]) -> std::result::Result<(), String> {
    let obj = parse(bytes, false)?;
    let header = SliceHeader::from_object(PathBuf::new(), &obj)?;
    check_transfer_syntax(&header.transfer_syntax).map_err(|k| k.to_string())?;
    decode_slice(&obj, &header).map(|_| ())
}

// ---------------------------------------------------------------------------------
// Headers and grouping

/// What one file's header says.
#[derive(Debug, Clone)]
struct SliceHeader {
    path: PathBuf,
    series_uid: String,
    description: String,
    modality: String,
    transfer_syntax: String,
    rows: u16,
    columns: u16,
    orientation: Option<[f64; 6]>,
    position: Option<[f64; 3]>,
    pixel_spacing: Option<[f64; 2]>,
    slice_thickness: Option<f64>,
    spacing_between_slices: Option<f64>,
    gantry_tilt: Option<f64>,
    frames: Option<i64>,
    samples_per_pixel: u16,
    photometric: String,
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    slope: f64,
    intercept: f64,
}

/// The element's value as text; values stored as UN (explicit VR files written with
/// unknown VRs) are read as the text they hold, as pydicom does.
fn text(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let element = obj.element_opt(tag).ok()??;
    let s = if element.vr() == VR::UN {
        String::from_utf8_lossy(&element.to_bytes().ok()?).into_owned()
    } else {
        element.to_str().ok()?.into_owned()
    };
    Some(
        s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string(),
    )
}

/// The dictionary VR of a tag.
fn dictionary_vr(tag: Tag) -> Option<VR> {
    StandardDataDictionary.by_tag(tag).map(|e| e.vr.relaxed())
}

fn floats(obj: &DefaultDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let element = obj.element_opt(tag).ok()??;
    let values = if element.vr() == VR::UN && dictionary_vr(tag) == Some(VR::DS) {
        text(obj, tag)?
            .split('\\')
            .map(|v| v.trim().parse::<f64>().ok())
            .collect::<Option<Vec<f64>>>()?
    } else {
        element.to_multi_float64().ok()?
    };
    (!values.is_empty() && values.iter().all(|v| v.is_finite())).then_some(values)
}

fn float(obj: &DefaultDicomObject, tag: Tag) -> Option<f64> {
    floats(obj, tag).and_then(|v| v.first().copied())
}

fn int(obj: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    let element = obj.element_opt(tag).ok()??;
    if element.vr() == VR::UN {
        return match dictionary_vr(tag)? {
            VR::US => {
                let b = element.to_bytes().ok()?;
                Some(i64::from(u16::from_le_bytes([*b.first()?, *b.get(1)?])))
            }
            VR::IS => text(obj, tag)?.split('\\').next()?.trim().parse().ok(),
            _ => None,
        };
    }
    element.to_int::<i64>().ok()
}

fn u16_of(obj: &DefaultDicomObject, tag: Tag) -> Option<u16> {
    int(obj, tag).and_then(|v| u16::try_from(v).ok())
}

impl SliceHeader {
    fn from_object(path: PathBuf, obj: &DefaultDicomObject) -> std::result::Result<Self, String> {
        let rows = u16_of(obj, tags::ROWS).ok_or("missing or invalid Rows")?;
        let columns = u16_of(obj, tags::COLUMNS).ok_or("missing or invalid Columns")?;
        let array = |tag, n: usize| floats(obj, tag).filter(|v| v.len() >= n);
        let orientation =
            array(tags::IMAGE_ORIENTATION_PATIENT, 6).map(|v| [v[0], v[1], v[2], v[3], v[4], v[5]]);
        let position = array(tags::IMAGE_POSITION_PATIENT, 3).map(|v| [v[0], v[1], v[2]]);
        let pixel_spacing = array(tags::PIXEL_SPACING, 2).map(|v| [v[0], v[1]]);
        Ok(Self {
            path,
            series_uid: text(obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
            description: text(obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
            modality: text(obj, tags::MODALITY).unwrap_or_default(),
            transfer_syntax: obj.meta().transfer_syntax().to_string(),
            rows,
            columns,
            orientation,
            position,
            pixel_spacing,
            slice_thickness: float(obj, tags::SLICE_THICKNESS),
            spacing_between_slices: float(obj, tags::SPACING_BETWEEN_SLICES),
            gantry_tilt: float(obj, tags::GANTRY_DETECTOR_TILT),
            frames: int(obj, tags::NUMBER_OF_FRAMES),
            samples_per_pixel: u16_of(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1),
            photometric: text(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default(),
            bits_allocated: u16_of(obj, tags::BITS_ALLOCATED).unwrap_or(0),
            bits_stored: u16_of(obj, tags::BITS_STORED).unwrap_or(0),
            signed: int(obj, tags::PIXEL_REPRESENTATION) == Some(1),
            slope: float(obj, tags::RESCALE_SLOPE).unwrap_or(1.0),
            intercept: float(obj, tags::RESCALE_INTERCEPT).unwrap_or(0.0),
        })
    }
}

fn no_dicom(dir: &Path) -> Error {
    Error::new(
        dir,
        ErrorKind::NotMedicalImage("no DICOM image files in this folder".into()),
    )
}

/// Reads the header of every DICOM image file directly in `dir`.
fn read_headers(dir: &Path) -> Result<Vec<SliceHeader>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::new(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::new(dir, e))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let path = entry.path();
        if !hidden && path.is_file() && is_dicom_file(&path) {
            paths.push(path);
        }
    }
    paths.sort();
    let mut headers = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = std::fs::read(&path).with_path(&path)?;
        let obj = parse(&bytes, true).map_err(|m| Error::new(&path, ErrorKind::Dicom(m)))?;
        // Non-image objects (DICOMDIR, structured reports, ...) have no Rows: skip them.
        if obj.element_opt(tags::ROWS).ok().flatten().is_none() {
            continue;
        }
        let header = SliceHeader::from_object(path.clone(), &obj)
            .map_err(|m| Error::new(&path, ErrorKind::InvalidHeader(m)))?;
        headers.push(header);
    }
    if headers.is_empty() {
        return Err(no_dicom(dir));
    }
    Ok(headers)
}

/// Groups headers by series, most slices first (ties by UID).
fn group_series(headers: Vec<SliceHeader>) -> Vec<(SeriesInfo, Vec<SliceHeader>)> {
    let mut groups: BTreeMap<String, Vec<SliceHeader>> = BTreeMap::new();
    for h in headers {
        groups.entry(h.series_uid.clone()).or_default().push(h);
    }
    let mut out: Vec<(SeriesInfo, Vec<SliceHeader>)> = groups
        .into_iter()
        .filter_map(|(uid, slices)| {
            let first = slices.first()?;
            let info = SeriesInfo {
                series_uid: uid,
                description: first.description.clone(),
                modality: first.modality.clone(),
                slices: slices.len(),
                rows: usize::from(first.rows),
                columns: usize::from(first.columns),
                transfer_syntax: first.transfer_syntax.clone(),
                files: slices.iter().map(|s| s.path.clone()).collect(),
            };
            Some((info, slices))
        })
        .collect();
    out.sort_by(|a, b| {
        b.0.slices
            .cmp(&a.0.slices)
            .then_with(|| a.0.series_uid.cmp(&b.0.series_uid))
    });
    out
}

// ---------------------------------------------------------------------------------
// Geometry

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn normalized(a: [f64; 3]) -> Option<[f64; 3]> {
    let n = dot(a, a).sqrt();
    (n.is_finite() && n > 1e-6).then(|| a.map(|x| x / n))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Checks the series is one regular stack and returns it sorted, with its grid.
fn assemble(
    dir: &Path,
    info: SeriesInfo,
    mut slices: Vec<SliceHeader>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<DicomSeries> {
    let mut warnings = Vec::new();
    let err = |kind: ErrorKind| Error::new(dir, kind);
    let first = slices.first().cloned().ok_or_else(|| no_dicom(dir))?;
    let many = slices.len() > 1;

    // Same matrix size, one frame each, decodable transfer syntax.
    for s in &slices {
        if (s.rows, s.columns) != (first.rows, first.columns) {
            return Err(err(ErrorKind::MixedSeries(format!(
                "{} is {}x{} but {} is {}x{} (rows x columns)",
                file_name(&s.path),
                s.rows,
                s.columns,
                file_name(&first.path),
                first.rows,
                first.columns
            ))));
        }
        check_header(s).map_err(|k| Error::new(&s.path, k))?;
    }

    // Orientation.
    let orientation = match first.orientation {
        Some(o) => o,
        None if !many => {
            warnings.push("no ImageOrientationPatient: assuming axial (identity)".into());
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        }
        None => {
            return Err(Error::new(
                &first.path,
                ErrorKind::InvalidHeader("missing ImageOrientationPatient".into()),
            ))
        }
    };
    for s in &slices {
        let same = s.orientation.is_some_and(|o| {
            o.iter()
                .zip(&orientation)
                .all(|(a, b)| (a - b).abs() <= ORIENTATION_TOLERANCE)
        });
        if many && !same {
            return Err(err(ErrorKind::MixedSeries(format!(
                "{} has ImageOrientationPatient {:?}, {} has {:?}",
                file_name(&s.path),
                s.orientation,
                file_name(&first.path),
                orientation
            ))));
        }
    }
    let bad_orientation = || {
        Error::new(
            &first.path,
            ErrorKind::InvalidHeader(format!(
                "ImageOrientationPatient {orientation:?} is not two perpendicular directions"
            )),
        )
    };
    let row =
        normalized([orientation[0], orientation[1], orientation[2]]).ok_or_else(bad_orientation)?;
    let col =
        normalized([orientation[3], orientation[4], orientation[5]]).ok_or_else(bad_orientation)?;
    if dot(row, col).abs() > 1e-3 {
        return Err(bad_orientation());
    }
    let normal = normalized(cross(row, col)).ok_or_else(bad_orientation)?;

    // Gantry tilt as recorded.
    for s in &slices {
        if let Some(tilt) = s.gantry_tilt.filter(|t| t.abs() > 1e-3) {
            return Err(Error::new(
                &s.path,
                ErrorKind::Unsupported(format!(
                    "gantry/detector tilt of {tilt} degrees: tilted acquisitions are not \
                     supported (the slices would be sheared; resample the series first)"
                )),
            ));
        }
    }

    // Positions, sorted along the normal.
    if many && slices.iter().any(|s| s.position.is_none()) {
        let missing = slices
            .iter()
            .find(|s| s.position.is_none())
            .map(|s| s.path.clone());
        return Err(Error::new(
            missing.unwrap_or_else(|| dir.to_path_buf()),
            ErrorKind::InvalidHeader("missing ImagePositionPatient".into()),
        ));
    }
    if !many && first.position.is_none() {
        warnings.push("no ImagePositionPatient: origin set to 0".into());
    }
    let position = |s: &SliceHeader| s.position.unwrap_or([0.0; 3]);
    slices.sort_by(|a, b| dot(position(a), normal).total_cmp(&dot(position(b), normal)));
    let distances: Vec<f64> = slices.iter().map(|s| dot(position(s), normal)).collect();
    let gaps: Vec<f64> = distances.windows(2).map(|w| w[1] - w[0]).collect();
    for (k, gap) in gaps.iter().enumerate() {
        if *gap < DUPLICATE_TOLERANCE_MM {
            let name = |i: usize| {
                slices
                    .get(i)
                    .map(|s| file_name(&s.path))
                    .unwrap_or_default()
            };
            return Err(err(ErrorKind::MixedSeries(format!(
                "duplicate slice position: {} and {} are both at {:.4} mm along the normal",
                name(k),
                name(k + 1),
                distances.get(k).copied().unwrap_or_default()
            ))));
        }
    }
    let origin = position(&first_sorted(&slices, &first));
    for s in &slices {
        let v = [0, 1, 2].map(|a| position(s)[a] - origin[a]);
        let along = dot(v, normal);
        let off = [0, 1, 2].map(|a| v[a] - along * normal[a]);
        let off = dot(off, off).sqrt();
        if off > TILT_TOLERANCE_MM.max(TILT_TOLERANCE_FRACTION * along.abs()) {
            return Err(Error::new(
                &s.path,
                ErrorKind::Unsupported(format!(
                    "slice positions are not stacked along the slice normal ({off:.3} mm \
                     sideways over {along:.3} mm, {:.2} degrees): gantry-tilted or sheared \
                     series are not supported",
                    off.atan2(along.abs()).to_degrees()
                )),
            ));
        }
    }
    let spacing_k = if let (Some(lo), Some(hi)) = (distances.first(), distances.last()) {
        if many {
            let mut sorted = gaps.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted.get(sorted.len() / 2).copied().unwrap_or(1.0);
            let tolerance = SPACING_TOLERANCE_MM.max(SPACING_TOLERANCE_FRACTION * median);
            let uneven: Vec<String> = gaps
                .iter()
                .enumerate()
                .filter(|(_, g)| (**g - median).abs() > tolerance)
                .take(10)
                .map(|(k, g)| format!("slices {k}->{}: {g:.3} mm", k + 1))
                .collect();
            if !uneven.is_empty() {
                return Err(err(ErrorKind::Unsupported(format!(
                    "uneven slice spacing (missing slice?): most gaps are {median:.3} mm but {} \
                     (tolerance {tolerance:.3} mm)",
                    uneven.join(", ")
                ))));
            }
            (hi - lo) / (distances.len() - 1) as f64
        } else {
            match first.spacing_between_slices.or(first.slice_thickness) {
                Some(s) if s > 0.0 => s,
                _ => {
                    warnings.push(
                        "single slice without SliceThickness: slice spacing set to 1 mm".into(),
                    );
                    1.0
                }
            }
        }
    } else {
        return Err(no_dicom(dir));
    };
    if let Some(t) = first.slice_thickness {
        if many && (t - spacing_k).abs() > SPACING_TOLERANCE_MM {
            warnings.push(format!(
                "SliceThickness {t} mm differs from the slice spacing {spacing_k:.4} mm \
                 (from ImagePositionPatient); using the latter"
            ));
        }
    }
    let pixel_spacing = match first.pixel_spacing {
        Some(p) => p,
        None => {
            warnings.push("no PixelSpacing: assuming 1 mm".into());
            [1.0, 1.0]
        }
    };
    let direction = [
        [row[0], col[0], normal[0]],
        [row[1], col[1], normal[1]],
        [row[2], col[2], normal[2]],
    ];
    let dims = [
        usize::from(first.columns),
        usize::from(first.rows),
        slices.len(),
    ];
    let grid = Grid::new(
        dims,
        [pixel_spacing[1], pixel_spacing[0], spacing_k],
        origin,
        direction,
    )
    .map_err(|e| err(e.into()))?;

    if first.photometric == "MONOCHROME1" {
        warnings.push("MONOCHROME1: higher values display darker".into());
    }

    // Pixels: decoded in parallel a few slices at a time (JPEG 2000 decoding dominates),
    // collected and reported in slice order.
    let total = slices.len();
    let mut values = Values::Int(Vec::new());
    let batch = 2 * rayon::current_num_threads().max(1);
    let mut done = 0;
    for group in slices.chunks(batch) {
        let decoded: Vec<Result<(SliceHeader, Vec<i64>)>> = group
            .par_iter()
            .map(|s| read_slice_pixels(s, &first))
            .collect();
        for result in decoded {
            let (header, raw) = result?;
            values.push(&raw, header.slope, header.intercept);
            done += 1;
            progress(done, total);
        }
    }
    let volume = values
        .into_volume(grid)
        .map_err(|m| err(ErrorKind::Dicom(m)))?;
    Ok(DicomSeries {
        volume,
        info,
        warnings,
        slice_thickness_mm: first.slice_thickness,
    })
}

/// Reads and decodes one slice of a series whose first slice is `first`.
fn read_slice_pixels(s: &SliceHeader, first: &SliceHeader) -> Result<(SliceHeader, Vec<i64>)> {
    let bytes = std::fs::read(&s.path).with_path(&s.path)?;
    let obj = parse(&bytes, false).map_err(|m| Error::new(&s.path, ErrorKind::Dicom(m)))?;
    // Re-read the header: the file might have changed since the listing.
    let header = SliceHeader::from_object(s.path.clone(), &obj)
        .map_err(|m| Error::new(&s.path, ErrorKind::InvalidHeader(m)))?;
    if (header.rows, header.columns) != (first.rows, first.columns) {
        return Err(Error::new(
            &s.path,
            ErrorKind::MixedSeries("matrix size changed while reading".into()),
        ));
    }
    check_header(&header).map_err(|k| Error::new(&s.path, k))?;
    let raw = decode_slice(&obj, &header).map_err(|m| Error::new(&s.path, ErrorKind::Dicom(m)))?;
    Ok((header, raw))
}

fn first_sorted(slices: &[SliceHeader], fallback: &SliceHeader) -> SliceHeader {
    slices.first().cloned().unwrap_or_else(|| fallback.clone())
}

// ---------------------------------------------------------------------------------
// Pixels

/// Refuses what we cannot decode, before decoding.
fn check_header(h: &SliceHeader) -> std::result::Result<(), ErrorKind> {
    check_transfer_syntax(&h.transfer_syntax)?;
    if h.frames.is_some_and(|f| f > 1) {
        return Err(ErrorKind::Unsupported(format!(
            "multi-frame images ({} frames) are not supported",
            h.frames.unwrap_or_default()
        )));
    }
    if h.samples_per_pixel != 1 || !matches!(h.photometric.as_str(), "MONOCHROME1" | "MONOCHROME2")
    {
        return Err(ErrorKind::Unsupported(format!(
            "only greyscale images are supported, not {} with {} samples per pixel",
            h.photometric, h.samples_per_pixel
        )));
    }
    if !matches!(h.bits_allocated, 8 | 16 | 32) {
        return Err(ErrorKind::UnsupportedDatatype(format!(
            "BitsAllocated {}",
            h.bits_allocated
        )));
    }
    if h.bits_stored == 0 || h.bits_stored > h.bits_allocated {
        return Err(ErrorKind::InvalidHeader(format!(
            "BitsStored {} with BitsAllocated {}",
            h.bits_stored, h.bits_allocated
        )));
    }
    if !(h.slope.is_finite() && h.intercept.is_finite()) || h.slope == 0.0 {
        return Err(ErrorKind::InvalidHeader(format!(
            "RescaleSlope {} RescaleIntercept {}",
            h.slope, h.intercept
        )));
    }
    if h.rows == 0 || h.columns == 0 {
        return Err(ErrorKind::InvalidHeader("Rows or Columns is 0".into()));
    }
    Ok(())
}

/// `Ok` when this build decodes data sets and pixel data of the transfer syntax.
fn check_transfer_syntax(uid: &str) -> std::result::Result<(), ErrorKind> {
    let unsupported = |name: &str| ErrorKind::UnsupportedTransferSyntax {
        uid: uid.to_string(),
        name: name.to_string(),
    };
    let ts = TransferSyntaxRegistry
        .get(uid)
        .ok_or_else(|| unsupported("unknown"))?;
    // Data-set codecs (deflate) are refused: the lengths inside cannot be checked
    // against the file before inflation.
    if !ts.can_decode_all() || !(ts.is_codec_free() || ts.is_encapsulated_pixel_data()) {
        return Err(unsupported(ts.name()));
    }
    Ok(())
}

/// Decodes the one frame of a file into stored values (no modality LUT).
fn decode_slice(
    obj: &DefaultDicomObject,
    h: &SliceHeader,
) -> std::result::Result<Vec<i64>, String> {
    check_header(h).map_err(|k| k.to_string())?;
    let pixels = usize::from(h.rows) * usize::from(h.columns);
    let bytes_per = usize::from(h.bits_allocated / 8);
    let frame_bytes = pixels
        .checked_mul(bytes_per)
        .filter(|n| *n <= MAX_FRAME_BYTES)
        .ok_or_else(|| format!("frame of {}x{} pixels is too large", h.rows, h.columns))?;
    // Native pixel data must hold the whole frame before anything is decoded.
    let element = obj
        .element_opt(tags::PIXEL_DATA)
        .map_err(|e| e.to_string())?
        .ok_or("no PixelData")?;
    if let Some(len) = element.header().len.get() {
        if (len as usize) < frame_bytes {
            return Err(format!(
                "PixelData holds {len} bytes, a {}x{} frame of {} bits needs {frame_bytes}",
                h.rows, h.columns, h.bits_allocated
            ));
        }
    } else if element.fragments().is_none_or(|f| f.is_empty()) {
        return Err("encapsulated PixelData without fragments".into());
    }
    let rle_frame;
    let decoded;
    let data: &[u8] = if h.transfer_syntax == RLE_LOSSLESS {
        // dicom-rs 0.10.1's RLE decoder panics on malformed segment tables; ours checks.
        let fragment = element
            .fragments()
            .and_then(|f| f.first())
            .ok_or("RLE PixelData without fragments")?;
        rle_frame = decode_rle(fragment, pixels, bytes_per)?;
        &rle_frame
    } else {
        // dicom-rs 0.10.1's JPEG 2000 adapter indexes out of bounds (a panic) when the
        // codestream holds more samples than the header's frame: contain it as an error.
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            obj.decode_pixel_data_frame(0)
        }));
        decoded = attempt
            .map_err(|_| "the pixel-data decoder failed on malformed compressed data".to_string())?
            .map_err(|e| format!("cannot decode pixel data: {e}"))?;
        if decoded.rows() != u32::from(h.rows)
            || decoded.columns() != u32::from(h.columns)
            || decoded.samples_per_pixel() != 1
            || decoded.bits_allocated() != h.bits_allocated
        {
            return Err("decoded frame does not match the header".into());
        }
        decoded.data()
    };
    let data = data.get(..frame_bytes).ok_or_else(|| {
        format!(
            "decoded frame holds {} bytes, expected {frame_bytes}",
            data.len()
        )
    })?;
    let shift = 64 - u32::from(h.bits_stored);
    let sign_extend = |v: u64| -> i64 {
        if h.signed {
            ((v << shift) as i64) >> shift
        } else {
            v as i64
        }
    };
    let raw: Vec<i64> = match h.bits_allocated {
        8 => data.iter().map(|&b| sign_extend(u64::from(b))).collect(),
        16 => data
            .chunks_exact(2)
            .map(|c| sign_extend(u64::from(u16::from_le_bytes([c[0], c[1]]))))
            .collect(),
        _ => data
            .chunks_exact(4)
            .map(|c| sign_extend(u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
            .collect(),
    };
    if raw.len() != pixels {
        return Err(format!("decoded {} values, expected {pixels}", raw.len()));
    }
    Ok(raw)
}

/// Decodes one greyscale RLE Lossless frame (PS3.5 Annex G) into little-endian samples:
/// segment `s` holds byte `bytes_per - 1 - s` of every sample. Every offset and run is
/// checked; the output never exceeds `pixels * bytes_per` bytes.
fn decode_rle(
    fragment: &[u8],
    pixels: usize,
    bytes_per: usize,
) -> std::result::Result<Vec<u8>, String> {
    let word = |at: usize| read_u32(fragment, at, false).map(|v| v as usize);
    let segments = word(0).ok_or("RLE fragment shorter than its header")?;
    if segments != bytes_per || fragment.len() < 64 {
        return Err(format!(
            "RLE frame has {segments} segments, expected {bytes_per} (one per sample byte)"
        ));
    }
    let mut offsets = Vec::with_capacity(segments + 1);
    for s in 0..segments {
        offsets.push(word(4 + 4 * s).ok_or("truncated RLE header")?);
    }
    offsets.push(fragment.len());
    let mut out = vec![0u8; pixels * bytes_per];
    for s in 0..segments {
        let (start, end) = (offsets[s], offsets[s + 1]);
        let segment = fragment.get(start..end).ok_or_else(|| {
            format!("RLE segment {s} spans bytes {start}..{end}, outside the fragment")
        })?;
        let mut plane = Vec::with_capacity(pixels);
        let mut at = 0;
        while plane.len() < pixels {
            let Some(&header) = segment.get(at) else {
                break;
            };
            at += 1;
            let n = header as i8;
            if n >= 0 {
                let count = (n as usize + 1).min(pixels - plane.len());
                let literal = segment
                    .get(at..at + count)
                    .ok_or("RLE literal run past the segment end")?;
                plane.extend_from_slice(literal);
                at += n as usize + 1;
            } else if n != -128 {
                let value = *segment
                    .get(at)
                    .ok_or("RLE repeat run past the segment end")?;
                at += 1;
                let count = (1 - isize::from(n)) as usize;
                plane.resize(plane.len() + count.min(pixels - plane.len()), value);
            }
        }
        if plane.len() < pixels {
            return Err(format!(
                "RLE segment {s} decodes to {} bytes, expected {pixels}",
                plane.len()
            ));
        }
        let byte = bytes_per - 1 - s;
        for (p, value) in plane.iter().enumerate() {
            if let Some(slot) = out.get_mut(p * bytes_per + byte) {
                *slot = *value;
            }
        }
    }
    Ok(out)
}

/// The voxel buffer, integral while it can be.
enum Values {
    Int(Vec<i32>),
    Float(Vec<f64>),
}

impl Values {
    fn push(&mut self, raw: &[i64], slope: f64, intercept: f64) {
        let integral = slope == 1.0 && intercept.fract() == 0.0 && intercept.abs() < 1e15;
        if let Self::Int(v) = self {
            if integral {
                let start = v.len();
                v.reserve(raw.len());
                let offset = intercept as i64;
                for &r in raw {
                    match i32::try_from(r + offset) {
                        Ok(x) => v.push(x),
                        Err(_) => {
                            v.truncate(start);
                            break;
                        }
                    }
                }
                if v.len() == start + raw.len() {
                    return;
                }
            }
            let floats: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
            *self = Self::Float(floats);
        }
        if let Self::Float(v) = self {
            v.reserve(raw.len());
            v.extend(raw.iter().map(|&r| r as f64 * slope + intercept));
        }
    }

    fn into_volume(self, grid: Grid) -> std::result::Result<AnyVolume, String> {
        let bad = |e: pinhole_volume::DataLengthMismatch| format!("{e:?}");
        match self {
            Self::Int(v) => {
                let fits = v.iter().all(|&x| i16::try_from(x).is_ok());
                if fits {
                    let narrow: Vec<i16> = v.iter().map(|&x| x as i16).collect();
                    Ok(Volume::new(grid, narrow).map_err(bad)?.into())
                } else {
                    Ok(Volume::new(grid, v).map_err(bad)?.into())
                }
            }
            Self::Float(v) => Ok(Volume::new(grid, v).map_err(bad)?.into()),
        }
    }
}

// ---------------------------------------------------------------------------------
// Parsing with checked lengths

/// Parses a file's bytes (preamble optional). `headers_only` stops before PixelData.
fn parse(bytes: &[u8], headers_only: bool) -> std::result::Result<DefaultDicomObject, String> {
    let body = match (bytes.get(128..132), bytes.get(..4)) {
        (Some(b"DICM"), _) => bytes.get(128..).unwrap_or_default(),
        (_, Some(b"DICM")) => bytes,
        _ => return Err("not a DICOM file (no DICM magic)".into()),
    };
    check_lengths(body)?;
    let mut options = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
    if headers_only {
        options = options.read_until(tags::PIXEL_DATA);
    }
    options.from_reader(body).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    ExplicitLe,
    ExplicitBe,
    ImplicitLe,
}

const UNDEFINED: u32 = u32::MAX;

fn read_u16(data: &[u8], at: usize, big: bool) -> Option<u16> {
    let b: [u8; 2] = data.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    })
}

fn read_u32(data: &[u8], at: usize, big: bool) -> Option<u32> {
    let b: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

/// Element header at `at`: (tag, VR, header bytes, value length).
fn element_header(data: &[u8], at: usize, enc: Encoding) -> Option<(Tag, VR, usize, u32)> {
    let big = enc == Encoding::ExplicitBe;
    let tag = Tag(read_u16(data, at, big)?, read_u16(data, at + 2, big)?);
    if tag.0 == 0xFFFE {
        return Some((tag, VR::UN, 8, read_u32(data, at + 4, big)?));
    }
    match enc {
        Encoding::ImplicitLe => {
            let vr = if tag == tags::PIXEL_DATA {
                VR::OW
            } else {
                dictionary_vr(tag).unwrap_or(VR::UN)
            };
            Some((tag, vr, 8, read_u32(data, at + 4, false)?))
        }
        Encoding::ExplicitLe | Encoding::ExplicitBe => {
            let code = data.get(at + 4..at + 6)?;
            let vr = VR::from_binary([*code.first()?, *code.get(1)?]).unwrap_or(VR::UN);
            use VR::*;
            if matches!(
                vr,
                AE | AS
                    | AT
                    | CS
                    | DA
                    | DS
                    | DT
                    | FL
                    | FD
                    | IS
                    | LO
                    | LT
                    | PN
                    | SH
                    | SL
                    | SS
                    | ST
                    | TM
                    | UI
                    | UL
                    | US
            ) {
                Some((tag, vr, 8, u32::from(read_u16(data, at + 6, big)?)))
            } else {
                Some((tag, vr, 12, read_u32(data, at + 8, big)?))
            }
        }
    }
}

/// Walks the file the way dicom-object will and fails when a value claims more bytes
/// than remain, so that no buffer larger than the file is ever allocated. `body` starts
/// at the `DICM` magic. Where the structure is unclear it stops and lets the parser
/// report the problem.
fn check_lengths(body: &[u8]) -> std::result::Result<(), String> {
    let too_long = |tag: Tag, len: u32, at: usize| {
        format!(
            "element ({:04X},{:04X}) claims {len} bytes but only {} remain in the file",
            tag.0,
            tag.1,
            body.len().saturating_sub(at)
        )
    };
    // File meta group: (0002,0000) group length, then elements until it is used up.
    let mut pos = 4;
    let Some((tag, _, header, len)) = element_header(body, pos, Encoding::ExplicitLe) else {
        return Err("truncated file meta group".into());
    };
    if tag != Tag(0x0002, 0x0000) || len != 4 {
        return Ok(()); // the parser refuses it
    }
    let group_length = read_u32(body, pos + header, false).ok_or("truncated file meta group")?;
    pos += header + 4;
    let meta_end = pos.saturating_add(group_length as usize);
    let mut transfer_syntax = String::new();
    while pos < meta_end {
        let Some((tag, _, header, len)) = element_header(body, pos, Encoding::ExplicitLe) else {
            return Err("truncated file meta group".into());
        };
        let start = pos + header;
        let end = start
            .checked_add(len as usize)
            .filter(|e| len != UNDEFINED && *e <= body.len())
            .ok_or_else(|| too_long(tag, len, start))?;
        if tag == Tag(0x0002, 0x0010) {
            transfer_syntax = String::from_utf8_lossy(body.get(start..end).unwrap_or_default())
                .trim_end_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_string();
        }
        pos = end;
    }
    let enc = match transfer_syntax.as_str() {
        IMPLICIT_VR_LE => Encoding::ImplicitLe,
        EXPLICIT_VR_BE => Encoding::ExplicitBe,
        _ => Encoding::ExplicitLe,
    };
    if check_transfer_syntax(&transfer_syntax).is_err()
        && TransferSyntaxRegistry
            .get(&transfer_syntax)
            .is_none_or(|ts| !ts.is_encapsulated_pixel_data() && !ts.is_codec_free())
    {
        // Deflated or unknown: dicom-object must not parse it; refuse here.
        return Err(format!("unsupported transfer syntax {transfer_syntax}"));
    }
    // Data set: step into sequences and items, skip values, check every length.
    let mut in_pixel_sequence = false;
    while pos < body.len() {
        let Some((tag, vr, header, len)) = element_header(body, pos, enc) else {
            return Ok(()); // trailing bytes; the parser decides
        };
        let start = pos + header;
        let defined = len != UNDEFINED;
        if defined && (len as usize) > body.len().saturating_sub(start) {
            return Err(too_long(tag, len, start));
        }
        pos = match (tag, in_pixel_sequence) {
            (Tag(0xFFFE, 0xE000), true) if defined => start + len as usize,
            (Tag(0xFFFE, 0xE000), true) => return Ok(()),
            (Tag(0xFFFE, 0xE0DD), _) => {
                in_pixel_sequence = false;
                start
            }
            (Tag(0xFFFE, _), _) => start,
            _ if tag == tags::PIXEL_DATA && !defined => {
                in_pixel_sequence = true;
                start
            }
            _ if vr == VR::SQ || !defined => start,
            _ => start + len as usize,
        };
    }
    Ok(())
}
