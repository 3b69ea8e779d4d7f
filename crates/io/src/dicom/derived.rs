//! What every derived DICOM object Pinhole writes next to a source CT series shares
//! (Segmentation [`super::seg`], Measurement Report SR [`super::sr`], Secondary Capture
//! [`super::sc`]). NOT FOR CLINICAL USE.
//!
//! * The source series: every file's header (lengths checked as for every DICOM read),
//!   one SeriesInstanceUID, the grid [`super::read_series`] would build (same checks,
//!   slices sorted along the normal), each slice's SOP Class / Instance UID (from the
//!   file meta group when the data set's are blank).
//! * UIDs: `2.25.<UUID>`; new ones random (version 4), missing source ones derived
//!   deterministically from the source SOP Instance UIDs (version 8), so that every
//!   object derived from the same anonymised series names the same study and series.
//! * Element builders, DS formatting (at most 16 characters), coded concepts.
//! * Modules copied from the first source slice (Patient, General Study, Frame of
//!   Reference) and written for the new instance (SOP Common, General Series with
//!   "NOT FOR CLINICAL USE" in SeriesDescription, General Equipment); SpecificCharacterSet
//!   ISO_IR 192 when any text is not ASCII; Explicit VR Little Endian, written atomically.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::mem::InMemElement;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use pinhole_volume::Grid;

use super::geometry::{
    axes, check_no_gantry_tilt, check_positions_present, file_name, position, series_grid,
    series_orientation, slice_spacing, sort_along_normal,
};
use super::header::SliceHeader;
use super::parse::parse;
use super::tilt::stack_shear;
use crate::atomic::AtomicFile;
use crate::error::{Error, ErrorKind, Result, WithPath};

/// Text put into SeriesDescription (and a SEG's ContentDescription, an SC's burned-in
/// banner) of every derived object.
pub const NOT_FOR_CLINICAL_USE: &str = "NOT FOR CLINICAL USE";

/// A coded concept: code value, coding scheme designator, code meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Code {
    pub value: String,
    pub scheme: String,
    pub meaning: String,
}

impl Code {
    pub fn new(value: &str, scheme: &str, meaning: &str) -> Self {
        Self {
            value: value.to_owned(),
            scheme: scheme.to_owned(),
            meaning: meaning.to_owned(),
        }
    }
    /// SCT 123037004 "Anatomical Structure": the default segment category.
    pub fn anatomical_structure() -> Self {
        Self::new("123037004", "SCT", "Anatomical Structure")
    }
    /// SCT 85756007 "Tissue": the default segment type.
    pub fn tissue() -> Self {
        Self::new("85756007", "SCT", "Tissue")
    }
}

pub(crate) type Element = InMemElement;

// ---------------------------------------------------------------------------------------
// Checks of the caller's text

/// A non-empty single value of at most `max` characters without `\` or control codes.
pub(crate) fn check_text(what: &str, text: &str, max: usize) -> std::result::Result<(), String> {
    let bad = text.trim().is_empty()
        || text.chars().count() > max
        || text.chars().any(|c| c == '\\' || c.is_control());
    if bad {
        return Err(format!(
            "{what} {text:?} must be 1 to {max} characters without backslash or control \
             characters"
        ));
    }
    Ok(())
}

pub(crate) fn check_code(code: &Code) -> std::result::Result<(), String> {
    check_text("code value", &code.value, 64)?;
    check_text("coding scheme designator", &code.scheme, 16)?;
    check_text("code meaning", &code.meaning, 64)
}

/// A UID: 1 to 64 characters, dot-separated numbers without leading zeros (PS3.5 9.1).
pub fn check_uid(what: &str, uid: &str) -> std::result::Result<(), String> {
    let component_ok = |c: &str| {
        !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0'))
    };
    if uid.is_empty() || uid.len() > 64 || !uid.split('.').all(component_ok) {
        return Err(format!(
            "{what} {uid:?} is not a UID (1 to 64 characters, numbers separated by dots, \
             no leading zeros)"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The source series

/// One source slice, in series order.
pub(crate) struct SourceSlice {
    pub path: PathBuf,
    pub position_lps: [f64; 3],
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

/// The source series' geometry and references.
pub(crate) struct SourceSeries {
    /// Sorted along the slice normal, as [`super::read_series`] sorts them.
    pub slices: Vec<SourceSlice>,
    pub grid: Grid,
    pub orientation: [f64; 6],
    /// `PixelSpacing` as stored: between rows, between columns (mm).
    pub pixel_spacing_mm: [f64; 2],
    pub slice_thickness_mm: f64,
    pub spacing_between_slices_mm: f64,
    /// SeriesInstanceUID, empty when the files have none.
    pub series_uid: String,
    pub warnings: Vec<String>,
}

/// Headers (up to PixelData) of one file, lengths checked as for every DICOM read.
pub(crate) fn read_header_object(path: &Path) -> Result<DefaultDicomObject> {
    let bytes = std::fs::read(path).with_path(path)?;
    parse(&bytes, true).map_err(|m| Error::new(path, ErrorKind::Dicom(m)))
}

/// Reads every source header and builds the series grid.
pub(crate) fn read_source(files: &[PathBuf]) -> Result<SourceSeries> {
    let dir = files
        .first()
        .and_then(|f| f.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if files.is_empty() {
        return Err(Error::new(
            &dir,
            ErrorKind::InvalidInput("no source DICOM files".into()),
        ));
    }
    let mut headers = Vec::with_capacity(files.len());
    let mut references = HashMap::new();
    for path in files {
        let obj = read_header_object(path)?;
        let header = source_header(path, &obj)?;
        references.insert(path.clone(), instance_uids(path, &obj)?);
        headers.push(header);
    }
    let series_uid = one_series_uid(&dir, &headers)?;
    let mut warnings = Vec::new();
    let (grid, spacing_k) = series_geometry(&dir, &mut headers, &mut warnings)?;
    let first = &headers[0];
    let slices = headers
        .iter()
        .map(|h| {
            let (class, instance) = references.remove(&h.path).unwrap_or_default();
            SourceSlice {
                path: h.path.clone(),
                position_lps: position(h),
                sop_class_uid: class,
                sop_instance_uid: instance,
            }
        })
        .collect();
    Ok(SourceSeries {
        slices,
        grid,
        orientation: first.orientation.unwrap_or([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        pixel_spacing_mm: first.pixel_spacing.unwrap_or([1.0, 1.0]),
        slice_thickness_mm: first.slice_thickness.unwrap_or(spacing_k),
        spacing_between_slices_mm: spacing_k,
        series_uid,
        warnings: warnings
            .into_iter()
            .map(|w| format!("source series: {w}"))
            .collect(),
    })
}

/// One slice's header, which must be a single frame with usable geometry.
fn source_header(path: &Path, obj: &DefaultDicomObject) -> Result<SliceHeader> {
    let header = SliceHeader::from_object(path.to_path_buf(), obj)
        .map_err(|m| Error::new(path, ErrorKind::InvalidHeader(m)))?;
    let problem = if let Some(invalid) = header.invalid.first() {
        Some(invalid.clone())
    } else if header.frames.is_some_and(|n| n > 1) {
        Some("multi-frame source images are not supported".into())
    } else if header.position.is_none() {
        Some("missing ImagePositionPatient (the source slices cannot be placed)".into())
    } else if header.orientation.is_none() {
        Some("missing ImageOrientationPatient (the source slices cannot be placed)".into())
    } else if header.pixel_spacing.is_none() {
        Some("missing PixelSpacing (the source grid cannot be built)".into())
    } else {
        None
    };
    match problem {
        Some(m) => Err(Error::new(path, ErrorKind::InvalidHeader(m))),
        None => Ok(header),
    }
}

/// The element's text, trimmed of padding; empty when absent.
pub(crate) fn text_of(obj: &DefaultDicomObject, tag: Tag) -> String {
    let Ok(Some(element)) = obj.element_opt(tag) else {
        return String::new();
    };
    let text = if element.vr() == VR::UN {
        element
            .to_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    } else {
        element.to_str().map(|s| s.into_owned()).unwrap_or_default()
    };
    trim_padding(&text).to_owned()
}

fn trim_padding(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || c == '\0')
}

/// SOP Class and Instance UID, from the file meta group when the data set's are blank.
fn instance_uids(path: &Path, obj: &DefaultDicomObject) -> Result<(String, String)> {
    let or_meta = |value: String, meta: &str| {
        if value.is_empty() {
            trim_padding(meta).to_owned()
        } else {
            value
        }
    };
    let class = or_meta(
        text_of(obj, tags::SOP_CLASS_UID),
        obj.meta().media_storage_sop_class_uid(),
    );
    let instance = or_meta(
        text_of(obj, tags::SOP_INSTANCE_UID),
        obj.meta().media_storage_sop_instance_uid(),
    );
    if class.is_empty() || instance.is_empty() {
        return Err(Error::new(
            path,
            ErrorKind::InvalidHeader(
                "no SOP Class / Instance UID in the data set or the file meta group: the \
                 derived object cannot reference this slice"
                    .into(),
            ),
        ));
    }
    Ok((class, instance))
}

/// The files' common SeriesInstanceUID (possibly empty); mixed series are refused.
fn one_series_uid(dir: &Path, headers: &[SliceHeader]) -> Result<String> {
    let first = headers
        .first()
        .map(|h| h.series_uid.clone())
        .unwrap_or_default();
    if let Some(other) = headers.iter().find(|h| h.series_uid != first) {
        return Err(Error::new(
            dir,
            ErrorKind::MixedSeries(format!(
                "{} belongs to series {:?}, {} to {:?}: pass the files of one series",
                file_name(&other.path),
                other.series_uid,
                file_name(&headers[0].path),
                first
            )),
        ));
    }
    Ok(first)
}

/// Sorts `headers` and builds their grid with the checks of [`super::read_series`];
/// returns the grid and the slice spacing (mm).
fn series_geometry(
    dir: &Path,
    headers: &mut [SliceHeader],
    warnings: &mut Vec<String>,
) -> Result<(Grid, f64)> {
    let first = headers[0].clone();
    if let Some(other) = headers
        .iter()
        .find(|h| (h.rows, h.columns) != (first.rows, first.columns))
    {
        return Err(Error::new(
            dir,
            ErrorKind::MixedSeries(format!(
                "{} is {}x{} but {} is {}x{} (rows x columns)",
                file_name(&other.path),
                other.rows,
                other.columns,
                file_name(&first.path),
                first.rows,
                first.columns
            )),
        ));
    }
    let orientation = series_orientation(dir, headers, &first, warnings)?;
    let axes = axes(&first, orientation)?;
    check_positions_present(dir, headers, &first, warnings)?;
    let stack = sort_along_normal(dir, headers, axes.normal)?;
    let origin = position(&headers[0]);
    let pixel_mm = first.pixel_spacing.map_or([1.0, 1.0], |p| [p[1], p[0]]);
    let matrix = [usize::from(first.columns), usize::from(first.rows)];
    if let Some(shear) = stack_shear(dir, headers, origin, &axes, pixel_mm, matrix)? {
        return Err(Error::new(
            dir,
            ErrorKind::Unsupported(format!(
                "gantry tilt of {:.2} degrees: the reader resamples such a series onto an \
                 orthogonal grid, whose voxels no longer lie on the source slices a DICOM \
                 result must reference",
                shear.tilt_deg
            )),
        ));
    }
    check_no_gantry_tilt(headers)?;
    let spacing_k = slice_spacing(dir, &first, &stack, warnings)?;
    let grid = series_grid(
        dir,
        &first,
        &axes,
        spacing_k,
        origin,
        headers.len(),
        warnings,
    )?;
    Ok((grid, spacing_k))
}

// ---------------------------------------------------------------------------------------
// UIDs

/// The UIDs of a derived instance.
pub(crate) struct Uids {
    pub study: String,
    /// The source series (referenced).
    pub source_series: String,
    pub frame_of_reference: String,
    /// The new instance's own series and instance.
    pub series: String,
    pub instance: String,
}

impl Uids {
    /// The source's study, series and frame of reference (derived from the source SOP
    /// Instance UIDs, with a warning naming `kind`, where the source has none) and a new
    /// series and instance UID.
    pub fn new(
        source: &SourceSeries,
        first: &DefaultDicomObject,
        kind: &str,
        warnings: &mut Vec<String>,
    ) -> Self {
        let instances: Vec<&str> = source
            .slices
            .iter()
            .map(|s| s.sop_instance_uid.as_str())
            .collect();
        let mut or_derived = |value: String, what: &str| {
            if !value.is_empty() {
                return value;
            }
            let uid = derived_uid(what, &instances);
            warnings.push(format!(
                "the source series has no {what}: generated {uid} from its SOP Instance UIDs; \
                 viewers will not group the {kind} with the CT"
            ));
            uid
        };
        Self {
            study: or_derived(text_of(first, tags::STUDY_INSTANCE_UID), "StudyInstanceUID"),
            source_series: or_derived(source.series_uid.clone(), "SeriesInstanceUID"),
            frame_of_reference: or_derived(
                text_of(first, tags::FRAME_OF_REFERENCE_UID),
                "FrameOfReferenceUID",
            ),
            series: random_uid(),
            instance: random_uid(),
        }
    }
}

/// `2.25.<n>` for a 128-bit UUID `n` (PS3.5 B.2).
fn uid_from_uuid(uuid: u128) -> String {
    format!("2.25.{uuid}")
}

/// `2.25.<n>` for the first 16 bytes of a hash (e.g. SHA-256) as a version-8 UUID: the
/// deterministic UIDs of de-identification and of filled blank UIDs.
pub fn uid_from_hash(hash: &[u8]) -> String {
    let mut bytes = [0u8; 16];
    let n = hash.len().min(16);
    bytes[..n].copy_from_slice(&hash[..n]);
    uid_from_uuid(as_uuid(u128::from_be_bytes(bytes), 8))
}

/// Sets the version nibble and the RFC 4122 variant bits of a 128-bit value.
fn as_uuid(bits: u128, version: u8) -> u128 {
    let versioned = (bits & !(0xF << 76)) | (u128::from(version & 0xF) << 76);
    (versioned & !(0x3 << 62)) | (0x2 << 62)
}

/// A new UID for every call: a version-4 UUID from the process's random hash keys (seeded
/// by the OS), the clock, the process id and a counter.
pub(crate) fn random_uid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(count);
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.finish()
    };
    let bits = (u128::from(half(0x5e9_0001)) << 64) | u128::from(half(0x5e9_0002));
    uid_from_uuid(as_uuid(bits, 4))
}

/// The same UID for the same `what` and source instances (a version-8 UUID from their
/// 128-bit FNV-1a hash). The salt stays "pinhole-seg" (its first user), so that a SEG,
/// an SR and an SC derived from the same series agree.
pub(crate) fn derived_uid(what: &str, instances: &[&str]) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET;
    let parts = std::iter::once("pinhole-seg").chain(std::iter::once(what));
    for part in parts.chain(instances.iter().copied()) {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash = (hash ^ u128::from(byte)).wrapping_mul(PRIME);
        }
    }
    uid_from_uuid(as_uuid(hash, 8))
}

// ---------------------------------------------------------------------------------------
// Element builders

/// A text element; an empty value is written as an empty (Type 2) element.
pub(crate) fn text(tag: Tag, vr: VR, value: &str) -> Element {
    if value.is_empty() {
        DataElement::empty(tag, vr)
    } else {
        DataElement::new(tag, vr, PrimitiveValue::from(value))
    }
}

pub(crate) fn texts(tag: Tag, vr: VR, values: &[&str]) -> Element {
    let values = values.iter().map(|v| (*v).to_owned()).collect();
    DataElement::new(tag, vr, PrimitiveValue::Strs(values))
}

/// Decimal strings (DS), each at most 16 characters.
pub(crate) fn decimals(tag: Tag, values: &[f64]) -> Element {
    let values = values.iter().map(|v| ds(*v)).collect();
    DataElement::new(tag, VR::DS, PrimitiveValue::Strs(values))
}

pub(crate) fn int_string(tag: Tag, value: i64) -> Element {
    DataElement::new(tag, VR::IS, PrimitiveValue::from(value.to_string()))
}

pub(crate) fn us(tag: Tag, values: &[u16]) -> Element {
    DataElement::new(
        tag,
        VR::US,
        PrimitiveValue::U16(values.iter().copied().collect()),
    )
}

/// Rows and Columns (US); sizes over 65535 are refused before and written as 65535.
pub(crate) fn rows_columns(rows: usize, columns: usize) -> [Element; 2] {
    let dimension = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    [
        us(tags::ROWS, &[dimension(rows)]),
        us(tags::COLUMNS, &[dimension(columns)]),
    ]
}

/// 32-bit floats (FL).
pub(crate) fn floats(tag: Tag, values: &[f32]) -> Element {
    DataElement::new(
        tag,
        VR::FL,
        PrimitiveValue::F32(values.iter().copied().collect()),
    )
}

/// 64-bit floats (FD).
pub(crate) fn doubles(tag: Tag, values: &[f64]) -> Element {
    DataElement::new(
        tag,
        VR::FD,
        PrimitiveValue::F64(values.iter().copied().collect()),
    )
}

pub(crate) fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> Element {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

pub(crate) fn item(elements: Vec<Element>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

/// A decimal string of at most 16 characters: the shortest exact form when it fits,
/// else fewer decimals, else scientific notation.
pub(crate) fn ds(value: f64) -> String {
    let value = value + 0.0;
    let plain = format!("{value}");
    if plain.len() <= 16 {
        return plain;
    }
    (0..=15)
        .rev()
        .map(|d| format!("{value:.d$}"))
        .find(|s| s.len() <= 16)
        .filter(|s| {
            s.parse::<f64>()
                .is_ok_and(|v| v != 0.0 || value.abs() < 1e-9)
        })
        .unwrap_or_else(|| format!("{value:.8e}"))
}

/// A code sequence item; values over 16 characters go to LongCodeValue.
pub(crate) fn code_item(code: &Code) -> InMemDicomObject {
    let value = if code.value.chars().count() > 16 {
        text(tags::LONG_CODE_VALUE, VR::UC, &code.value)
    } else {
        text(tags::CODE_VALUE, VR::SH, &code.value)
    };
    item(vec![
        value,
        text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, &code.scheme),
        text(tags::CODE_MEANING, VR::LO, &code.meaning),
    ])
}

/// A sequence of one code item.
pub(crate) fn code_seq(tag: Tag, code: &Code) -> Element {
    seq(tag, vec![code_item(code)])
}

/// ReferencedSOPClassUID and ReferencedSOPInstanceUID of one source slice.
pub(crate) fn sop_reference(slice: &SourceSlice) -> InMemDicomObject {
    item(vec![
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, &slice.sop_class_uid),
        text(
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            &slice.sop_instance_uid,
        ),
    ])
}

// ---------------------------------------------------------------------------------------
// Modules

/// (YYYYMMDD, HHMMSS) now, UTC.
pub(crate) fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", s / 3600, s % 3600 / 60, s % 60),
    )
}

/// Days since 1970-01-01 as (year, month, day) of the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// SOP Common (class, instance, creation date and time in UTC), ContentDate / Time and
/// SeriesDate / Time, all now.
pub(crate) fn sop_common(sop_class_uid: &str, uids: &Uids) -> Vec<Element> {
    let (date, time) = utc_now();
    vec![
        text(tags::SOP_CLASS_UID, VR::UI, sop_class_uid),
        text(tags::SOP_INSTANCE_UID, VR::UI, &uids.instance),
        text(tags::INSTANCE_CREATION_DATE, VR::DA, &date),
        text(tags::INSTANCE_CREATION_TIME, VR::TM, &time),
        text(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000"),
        text(tags::CONTENT_DATE, VR::DA, &date),
        text(tags::CONTENT_TIME, VR::TM, &time),
        text(tags::SERIES_DATE, VR::DA, &date),
        text(tags::SERIES_TIME, VR::TM, &time),
    ]
}

/// Patient and General Study modules copied from the first source slice (Type 2
/// attributes present even when empty), with the study's UID.
pub(crate) fn copied_patient_study(first: &DefaultDicomObject, uids: &Uids) -> Vec<Element> {
    const COPIED: [(Tag, VR); 10] = [
        (tags::PATIENT_NAME, VR::PN),
        (tags::PATIENT_ID, VR::LO),
        (tags::PATIENT_BIRTH_DATE, VR::DA),
        (tags::PATIENT_SEX, VR::CS),
        (tags::STUDY_DATE, VR::DA),
        (tags::STUDY_TIME, VR::TM),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
        (tags::STUDY_ID, VR::SH),
        (tags::ACCESSION_NUMBER, VR::SH),
        (tags::STUDY_DESCRIPTION, VR::LO),
    ];
    let mut elements: Vec<Element> = COPIED
        .iter()
        .map(|(tag, vr)| text(*tag, *vr, &text_of(first, *tag)))
        .collect();
    elements.push(text(tags::STUDY_INSTANCE_UID, VR::UI, &uids.study));
    elements
}

/// Frame of Reference module: the source's FrameOfReferenceUID and its
/// PositionReferenceIndicator (Type 2, empty when the source has none).
pub(crate) fn frame_of_reference(first: &DefaultDicomObject, uids: &Uids) -> Vec<Element> {
    vec![
        text(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &uids.frame_of_reference,
        ),
        text(
            tags::POSITION_REFERENCE_INDICATOR,
            VR::LO,
            &text_of(first, tags::POSITION_REFERENCE_INDICATOR),
        ),
    ]
}

/// SeriesDescription with the clinical-use notice, at most 64 characters.
pub(crate) fn series_description(description: &str) -> String {
    if description.contains(NOT_FOR_CLINICAL_USE) {
        return description.chars().take(64).collect();
    }
    let notice = format!(" ({NOT_FOR_CLINICAL_USE})");
    let room = 64 - notice.len();
    let kept: String = description.trim().chars().take(room).collect();
    format!("{}{notice}", kept.trim_end()).trim().to_owned()
}

/// Not backslash or control characters: values written as one LO/SH/PN value.
pub(crate) fn single_value(text: &str) -> String {
    text.chars()
        .map(|c| if c == '\\' || c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// [`single_value`] cut to at most `max` characters.
pub(crate) fn short(text: &str, max: usize) -> String {
    single_value(text).chars().take(max).collect()
}

/// General Series (or SR Document Series) attributes of the new series; the description
/// gets the clinical-use notice.
pub(crate) fn general_series(
    modality: &str,
    uids: &Uids,
    series_number: i32,
    description: &str,
) -> Vec<Element> {
    vec![
        text(tags::MODALITY, VR::CS, modality),
        text(tags::SERIES_INSTANCE_UID, VR::UI, &uids.series),
        int_string(tags::SERIES_NUMBER, i64::from(series_number)),
        text(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            &series_description(&single_value(description)),
        ),
    ]
}

/// General Equipment: Manufacturer "Pinhole", model, software version, serial number.
pub(crate) fn general_equipment(model: &str, software: &str, serial: &str) -> Vec<Element> {
    vec![
        text(tags::MANUFACTURER, VR::LO, "Pinhole"),
        text(tags::MANUFACTURER_MODEL_NAME, VR::LO, &short(model, 64)),
        text(tags::SOFTWARE_VERSIONS, VR::LO, &short(software, 64)),
        text(tags::DEVICE_SERIAL_NUMBER, VR::LO, &short(serial, 64)),
    ]
}

/// The data set of `elements`, with SpecificCharacterSet ISO_IR 192 (UTF-8) when any text
/// is not ASCII.
pub(crate) fn dataset(elements: Vec<Element>) -> InMemDicomObject {
    let mut obj = InMemDicomObject::from_element_iter(elements);
    if has_non_ascii(&obj) {
        obj.put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
    }
    obj
}

/// True when any text value (in any item) is not ASCII.
fn has_non_ascii(obj: &InMemDicomObject) -> bool {
    obj.iter().any(|element| match element.value() {
        Value::Primitive(PrimitiveValue::Str(s)) => !s.is_ascii(),
        Value::Primitive(PrimitiveValue::Strs(values)) => values.iter().any(|s| !s.is_ascii()),
        Value::Sequence(sequence) => sequence.items().iter().any(has_non_ascii),
        _ => false,
    })
}

/// Writes `obj` as a DICOM file (Explicit VR Little Endian) to `out`, atomically.
pub(crate) fn write_file(obj: InMemDicomObject, out: &Path) -> Result<()> {
    write_file_in(obj, uids::EXPLICIT_VR_LITTLE_ENDIAN, out)
}

/// Writes `obj` as a DICOM file in `transfer_syntax` to `out`, atomically; the file meta
/// group names the data set's SOP Class and Instance UIDs.
pub(crate) fn write_file_in(
    obj: InMemDicomObject,
    transfer_syntax: &str,
    out: &Path,
) -> Result<()> {
    let dicom_error = |e: &dyn std::fmt::Display| Error::new(out, ErrorKind::Dicom(e.to_string()));
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(transfer_syntax))
        .map_err(|e| dicom_error(&e))?;
    let mut atomic = AtomicFile::create(out)?;
    file.write_all(&mut atomic).map_err(|e| dicom_error(&e))?;
    atomic.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        assert_eq!(ds(-249.51171875), "-249.51171875");
        assert_eq!(ds(3.0), "3");
        assert_eq!(ds(-0.0), "0");
        for v in [
            1.0 / 3.0,
            -766.123456789012,
            123_456_789.123_456_79,
            1e-20,
            -2.5e300,
        ] {
            let s = ds(v);
            assert!(s.len() <= 16, "{v} -> {s}");
            let back: f64 = s.parse().unwrap();
            assert!(
                (back - v).abs() <= 1e-9_f64.max(v.abs() * 1e-7),
                "{v} -> {s}"
            );
        }
    }

    #[test]
    fn uids_are_2_25_uuids_unique_or_deterministic() {
        let a = random_uid();
        let b = random_uid();
        assert_ne!(a, b);
        for uid in [&a, &b] {
            assert!(uid.starts_with("2.25.") && uid.len() <= 64, "{uid}");
            assert!(check_uid("uid", uid).is_ok());
            let n: u128 = uid[5..].parse().unwrap();
            assert_eq!((n >> 76) & 0xF, 4);
            assert_eq!(n >> 62 & 0x3, 0x2);
        }
        let d = derived_uid("StudyInstanceUID", &["1.2.3", "1.2.4"]);
        assert_eq!(d, derived_uid("StudyInstanceUID", &["1.2.3", "1.2.4"]));
        assert_ne!(d, derived_uid("SeriesInstanceUID", &["1.2.3", "1.2.4"]));
        assert_ne!(d, derived_uid("StudyInstanceUID", &["1.2.3"]));
    }

    #[test]
    fn uid_syntax_is_checked() {
        for good in ["1.2.840.10008.1.2", "2.25.0", "0"] {
            assert!(check_uid("uid", good).is_ok(), "{good}");
        }
        let long = format!("1.{}", "2".repeat(63));
        for bad in ["", "1..2", "1.02", "1.2.", "a.b", "1.2 ", long.as_str()] {
            assert!(check_uid("uid", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn series_descriptions_carry_the_notice() {
        let long = series_description(&"x".repeat(100));
        assert!(long.ends_with("(NOT FOR CLINICAL USE)") && long.chars().count() <= 64);
        assert_eq!(
            series_description("CT NOT FOR CLINICAL USE"),
            "CT NOT FOR CLINICAL USE"
        );
        assert_eq!(short("a\\b\u{7}c", 3), "a b");
    }
}
