//! DICOM Segmentation (SEG) writer: a label map on a CT series' grid written as one
//! binary Segmentation instance (PS3.3 A.51 / C.8.20) that references the series.
//! NOT FOR CLINICAL USE.
//!
//! * The label volume must lie on the source series' grid, built exactly as
//!   [`super::read_series`] builds it (same checks, slices sorted along the normal);
//!   every label slice is then matched to the source slice at its position. Size,
//!   spacing, orientation or origin off by more than [`SPACING_TOLERANCE_MM`] plus
//!   [`SPACING_TOLERANCE_FRACTION`] of the smallest spacing is refused, naming the
//!   mismatch in mm.
//! * One frame per (segment, source slice holding at least one voxel of it), ordered by
//!   segment then slice; bits packed LSB first, frames back to back (PS3.5 8.1.1), the
//!   whole PixelData padded to even length. Explicit VR Little Endian.
//! * Patient, study and frame of reference are copied from the first slice; a missing
//!   Study / Series Instance UID or FrameOfReferenceUID is generated deterministically
//!   from the source SOP Instance UIDs, with a warning (viewers will not group the SEG
//!   with the CT). SOP Class / Instance UIDs blank in a data set are taken from its file
//!   meta group.
//! * Refused: an empty segment list, label 0 or a repeated label in it, a label present
//!   in the volume but not listed (never dropped silently), no frame at all, more than
//!   [`MAX_SEG_FRAMES`] frames, PixelData over 32-bit length. A listed segment without
//!   voxels stays in the SegmentSequence with no frames, with a warning.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use pinhole_volume::{Grid, Volume};

use super::derived::{
    check_code, check_text, code_item, copied_patient_study, dataset, decimals, frame_of_reference,
    general_equipment, general_series, int_string, item, random_uid, read_header_object,
    read_source, rows_columns, seq, short, sop_common, sop_reference, text, texts, us, write_file,
    Element, SourceSeries, SourceSlice, Uids,
};
pub use super::derived::{Code, NOT_FOR_CLINICAL_USE};
use super::geometry::file_name;
use super::{SPACING_TOLERANCE_FRACTION, SPACING_TOLERANCE_MM};
use crate::error::{Error, ErrorKind, Result};

/// Segmentation Storage SOP Class UID.
pub const SEGMENTATION_STORAGE: &str = uids::SEGMENTATION_STORAGE;
/// Most frames written in one SEG instance.
pub const MAX_SEG_FRAMES: usize = 65_535;
/// Largest PixelData value (bytes, even): 0xFFFFFFFF means "undefined length".
pub const MAX_PIXEL_DATA_BYTES: u64 = 0xFFFF_FFFE;
/// How a segment was made (SegmentAlgorithmType, with SegmentAlgorithmName).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SegmentAlgorithm {
    #[default]
    Manual,
    SemiAutomatic {
        name: String,
    },
    Automatic {
        name: String,
    },
}

impl SegmentAlgorithm {
    fn type_code(&self) -> &'static str {
        match self {
            Self::Manual => "MANUAL",
            Self::SemiAutomatic { .. } => "SEMIAUTOMATIC",
            Self::Automatic { .. } => "AUTOMATIC",
        }
    }
    fn name(&self) -> Option<&str> {
        match self {
            Self::Manual => None,
            Self::SemiAutomatic { name } | Self::Automatic { name } => Some(name),
        }
    }
}

/// One segment: the voxels of `label`, written as segment number = position in the list
/// plus one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpec {
    pub label: u16,
    /// SegmentLabel (LO: at most 64 characters, no backslash or control characters).
    pub name: String,
    /// Recommended display colour (sRGB), stored as CIELab.
    pub rgb: Option<[u8; 3]>,
    /// SegmentedPropertyCategoryCodeSequence.
    pub category: Code,
    /// SegmentedPropertyTypeCodeSequence.
    pub property_type: Code,
    pub algorithm: SegmentAlgorithm,
}

impl SegmentSpec {
    /// A manual segment of category "Anatomical Structure", type "Tissue", no colour.
    pub fn new(label: u16, name: impl Into<String>) -> Self {
        Self {
            label,
            name: name.into(),
            rgb: None,
            category: Code::anatomical_structure(),
            property_type: Code::tissue(),
            algorithm: SegmentAlgorithm::Manual,
        }
    }
}

/// Series, equipment and content attributes of the written instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegOptions {
    /// SeriesDescription; " NOT FOR CLINICAL USE" is appended when absent.
    pub series_description: String,
    pub series_number: i32,
    pub instance_number: i32,
    /// ContentLabel: upper-cased, characters outside `A-Z 0-9 _ space` become `_`, at
    /// most 16.
    pub content_label: String,
    /// ContentCreatorName (PN, `family^given`).
    pub content_creator_name: String,
    pub manufacturer_model: String,
    pub software_version: String,
    pub device_serial_number: String,
}

impl Default for SegOptions {
    fn default() -> Self {
        Self {
            series_description: "Pinhole segmentation".into(),
            series_number: 1000,
            instance_number: 1,
            content_label: "SEGMENTATION".into(),
            content_creator_name: "Pinhole^".into(),
            manufacturer_model: "Pinhole".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            device_serial_number: "0".into(),
        }
    }
}

/// What [`write_segmentation`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegWritten {
    pub path: PathBuf,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub frames: usize,
    pub segments: usize,
    pub warnings: Vec<String>,
}

/// Writes `labels` (on the grid of the series made of `source_files`) as a binary DICOM
/// Segmentation to `out` (atomically), one segment per entry of `segments`.
pub fn write_segmentation(
    source_files: &[PathBuf],
    labels: &Volume<u16>,
    segments: &[SegmentSpec],
    options: &SegOptions,
    out: &Path,
) -> Result<SegWritten> {
    let invalid = |m: String| Error::new(out, ErrorKind::InvalidInput(m));
    check_segments(segments).map_err(invalid)?;
    let source = read_source(source_files)?;
    let slice_of_k = match_grid(&source, labels.grid()).map_err(invalid)?;
    let mut warnings = source.warnings.clone();
    let counts = count_voxels(labels, segments).map_err(invalid)?;
    let frames = plan_frames(&counts, segments, &slice_of_k, &mut warnings);
    let [columns, rows, _] = labels.grid().dims();
    check_frame_budget(frames.len(), rows * columns).map_err(invalid)?;
    let pixel_data = pack_label_frames(labels, segments, &frames);
    let first = read_header_object(&source.slices[0].path)?;
    let uids = Uids::new(&source, &first, "SEG", &mut warnings);
    let parts = Parts {
        source: &source,
        first: &first,
        segments,
        options,
        frames: &frames,
        uids: &uids,
        rows,
        columns,
    };
    let obj = build_dataset(&parts, pixel_data);
    write_file(obj, out)?;
    Ok(SegWritten {
        path: out.to_path_buf(),
        sop_instance_uid: uids.instance,
        series_instance_uid: uids.series,
        frames: frames.len(),
        segments: segments.len(),
        warnings,
    })
}

// ---------------------------------------------------------------------------------------
// Checks of the caller's input

/// Non-empty, at most 65535 segments, non-zero unique labels, usable names and codes.
fn check_segments(segments: &[SegmentSpec]) -> std::result::Result<(), String> {
    if segments.is_empty() {
        return Err("no segments: a Segmentation needs at least one".into());
    }
    if segments.len() > usize::from(u16::MAX) {
        return Err(format!("{} segments: at most 65535", segments.len()));
    }
    let mut seen = HashMap::new();
    for (n, s) in segments.iter().enumerate() {
        if s.label == 0 {
            return Err(format!("segment {:?}: label 0 is background", s.name));
        }
        if let Some(other) = seen.insert(s.label, n) {
            return Err(format!(
                "label {} is listed twice (segments {} and {})",
                s.label,
                other + 1,
                n + 1
            ));
        }
        check_text("SegmentLabel", &s.name, 64)?;
        if let Some(name) = s.algorithm.name() {
            check_text("SegmentAlgorithmName", name, 64)?;
        }
        check_code(&s.category)?;
        check_code(&s.property_type)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The label grid against the series grid

/// Largest distance (mm) between a label voxel and its source voxel still counted as the
/// same place: [`SPACING_TOLERANCE_MM`] plus [`SPACING_TOLERANCE_FRACTION`] of the
/// smallest spacing.
fn grid_tolerance_mm(grid: &Grid) -> f64 {
    let smallest = grid.spacing_mm().into_iter().fold(f64::INFINITY, f64::min);
    SPACING_TOLERANCE_MM + SPACING_TOLERANCE_FRACTION * smallest
}

/// Checks the label grid lies on the series grid and returns, for each label slice, the
/// index of the source slice at its position.
fn match_grid(source: &SourceSeries, labels: &Grid) -> std::result::Result<Vec<usize>, String> {
    let series = &source.grid;
    if labels.dims() != series.dims() {
        return Err(format!(
            "label grid is {:?} voxels but the source series is {:?} (columns, rows, slices)",
            labels.dims(),
            series.dims()
        ));
    }
    let tolerance_mm = grid_tolerance_mm(series);
    let (worst_mm, corner) = worst_corner_mm(labels, series);
    if worst_mm.is_nan() || worst_mm > tolerance_mm {
        return Err(describe_grid_mismatch(
            labels,
            series,
            worst_mm,
            corner,
            tolerance_mm,
        ));
    }
    (0..labels.dims()[2])
        .map(|k| nearest_slice(source, labels, k, tolerance_mm))
        .collect()
}

/// The largest distance (mm) between the two grids' positions of the eight corner
/// voxels, and that corner's index.
fn worst_corner_mm(a: &Grid, b: &Grid) -> (f64, [usize; 3]) {
    let [nx, ny, nz] = a.dims();
    let mut worst = (0.0, [0; 3]);
    for corner in 0..8 {
        let ijk = [
            if corner & 1 == 0 { 0 } else { nx - 1 },
            if corner & 2 == 0 { 0 } else { ny - 1 },
            if corner & 4 == 0 { 0 } else { nz - 1 },
        ];
        let index = ijk.map(|v| v as f64);
        let d = distance_mm(a.index_to_world(index), b.index_to_world(index));
        if d.is_nan() || d > worst.0 {
            worst = (d, ijk);
        }
    }
    worst
}

fn distance_mm(a: [f64; 3], b: [f64; 3]) -> f64 {
    pinhole_volume::math::distance(a, b)
}

fn fmt_mm(v: [f64; 3]) -> String {
    format!("({:.3}, {:.3}, {:.3})", v[0], v[1], v[2])
}

/// Names what differs between the grids: origin, spacing and axis directions.
fn describe_grid_mismatch(
    labels: &Grid,
    series: &Grid,
    worst_mm: f64,
    corner: [usize; 3],
    tolerance_mm: f64,
) -> String {
    let origin_apart_mm = distance_mm(labels.origin_lps(), series.origin_lps());
    let column = |g: &Grid, c: usize| {
        let d = g.direction();
        [d[0][c], d[1][c], d[2][c]]
    };
    let angle_deg = (0..3)
        .map(|c| {
            let cos = pinhole_volume::math::dot(column(labels, c), column(series, c));
            cos.clamp(-1.0, 1.0).acos().to_degrees()
        })
        .fold(0.0, f64::max);
    format!(
        "label grid is not on the source series grid: voxel {corner:?} lies {worst_mm:.3} mm \
         from the series' (tolerance {tolerance_mm:.3} mm); origin {} vs {} mm LPS \
         ({origin_apart_mm:.3} mm apart), spacing {} vs {} mm, axis directions up to \
         {angle_deg:.4} degrees apart",
        fmt_mm(labels.origin_lps()),
        fmt_mm(series.origin_lps()),
        fmt_mm(labels.spacing_mm()),
        fmt_mm(series.spacing_mm()),
    )
}

/// The source slice whose ImagePositionPatient is within `tolerance_mm` of label slice
/// `k`'s first voxel.
fn nearest_slice(
    source: &SourceSeries,
    labels: &Grid,
    k: usize,
    tolerance_mm: f64,
) -> std::result::Result<usize, String> {
    let at = labels.index_to_world([0.0, 0.0, k as f64]);
    let (index, apart_mm) = source
        .slices
        .iter()
        .enumerate()
        .map(|(n, s)| (n, distance_mm(at, s.position_lps)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, f64::INFINITY));
    if apart_mm.is_nan() || apart_mm > tolerance_mm {
        let nearest = source
            .slices
            .get(index)
            .map(|s| file_name(&s.path))
            .unwrap_or_default();
        return Err(format!(
            "label slice {k} at {} mm LPS is {apart_mm:.3} mm from the nearest source slice \
             ({nearest}; tolerance {tolerance_mm:.3} mm)",
            fmt_mm(at)
        ));
    }
    Ok(index)
}

// ---------------------------------------------------------------------------------------
// Frames

/// One SEG frame: a segment (0-based) on a label slice and its source slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    segment: usize,
    k: usize,
    source_slice: usize,
}

/// Voxels of each segment on each slice (`counts[segment][k]`); labels present but not
/// listed are refused.
fn count_voxels(
    labels: &Volume<u16>,
    segments: &[SegmentSpec],
) -> std::result::Result<Vec<Vec<u64>>, String> {
    let mut lookup = vec![0usize; usize::from(u16::MAX) + 1];
    for (n, s) in segments.iter().enumerate() {
        lookup[usize::from(s.label)] = n + 1;
    }
    let [nx, ny, nz] = labels.grid().dims();
    let mut counts = vec![vec![0u64; nz]; segments.len()];
    let mut unlisted: BTreeMap<u16, u64> = BTreeMap::new();
    for (k, slice) in labels.data().chunks_exact(nx * ny).enumerate() {
        for &value in slice.iter().filter(|v| **v != 0) {
            match lookup[usize::from(value)] {
                0 => *unlisted.entry(value).or_default() += 1,
                n => counts[n - 1][k] += 1,
            }
        }
    }
    if !unlisted.is_empty() {
        let listed: Vec<String> = unlisted
            .iter()
            .take(20)
            .map(|(label, n)| format!("{label} ({n} voxels)"))
            .collect();
        return Err(format!(
            "label values in the volume but not in the segment list (they would be lost): {}",
            listed.join(", ")
        ));
    }
    Ok(counts)
}

/// The frames, by segment then slice; warns about segments without voxels.
fn plan_frames(
    counts: &[Vec<u64>],
    segments: &[SegmentSpec],
    slice_of_k: &[usize],
    warnings: &mut Vec<String>,
) -> Vec<Frame> {
    let mut frames = Vec::new();
    for (segment, (per_slice, spec)) in counts.iter().zip(segments).enumerate() {
        if per_slice.iter().all(|n| *n == 0) {
            warnings.push(format!(
                "segment {} {:?} (label {}) has no voxels: kept in the SegmentSequence with \
                 no frames",
                segment + 1,
                spec.name,
                spec.label
            ));
        }
        for (k, n) in per_slice.iter().enumerate() {
            if *n > 0 {
                let source_slice = slice_of_k.get(k).copied().unwrap_or(k);
                frames.push(Frame {
                    segment,
                    k,
                    source_slice,
                });
            }
        }
    }
    frames
}

/// At least one and at most [`MAX_SEG_FRAMES`] frames, PixelData within 32-bit length.
fn check_frame_budget(frames: usize, frame_pixels: usize) -> std::result::Result<(), String> {
    if frames == 0 {
        return Err("no segment has any voxel: a Segmentation needs at least one frame".into());
    }
    if frames > MAX_SEG_FRAMES {
        return Err(format!(
            "{frames} frames (segment x slice pairs with voxels): at most {MAX_SEG_FRAMES}"
        ));
    }
    let bytes = (frames as u64)
        .saturating_mul(frame_pixels as u64)
        .div_ceil(8)
        .next_multiple_of(2);
    if bytes > MAX_PIXEL_DATA_BYTES {
        return Err(format!(
            "{frames} frames of {frame_pixels} pixels need {bytes} bytes of PixelData: more \
             than a 32-bit length allows ({MAX_PIXEL_DATA_BYTES})"
        ));
    }
    Ok(())
}

/// Packs `frames` frames of `frame_pixels` pixels each: pixel `p` of frame `f` is bit
/// `f · frame_pixels + p` of the whole, least significant bit of each byte first,
/// without padding between frames; the result is padded to even length.
fn pack_bits(frames: usize, frame_pixels: usize, is_set: impl Fn(usize, usize) -> bool) -> Vec<u8> {
    let bits = frames * frame_pixels;
    let mut bytes = vec![0u8; bits.div_ceil(8).next_multiple_of(2)];
    for f in 0..frames {
        for p in 0..frame_pixels {
            if is_set(f, p) {
                let bit = f * frame_pixels + p;
                bytes[bit / 8] |= 1 << (bit % 8);
            }
        }
    }
    bytes
}

/// The frames' bits: pixel (row j, column i) of a frame is label voxel (i, j, k).
fn pack_label_frames(labels: &Volume<u16>, segments: &[SegmentSpec], frames: &[Frame]) -> Vec<u8> {
    let [nx, ny, _] = labels.grid().dims();
    let slice_len = nx * ny;
    let data = labels.data();
    pack_bits(frames.len(), slice_len, |f, p| {
        let frame = frames[f];
        data[frame.k * slice_len + p] == segments[frame.segment].label
    })
}

// ---------------------------------------------------------------------------------------
// Colour

/// sRGB (0..255) as DICOM's scaled CIELab (PS3.3 C.10.7.1.1): L* 0..100 to 0..65535,
/// a* and b* −128..127 to 0..65535 (0 at 0x8080). See [`srgb_to_lab`] for the white.
pub fn srgb_to_dicom_lab(rgb: [u8; 3]) -> [u16; 3] {
    let [l, a, b] = srgb_to_lab(rgb);
    let scale =
        |v: f64, lo: f64, hi: f64| ((v.clamp(lo, hi) - lo) * 65535.0 / (hi - lo)).round() as u16;
    [
        scale(l, 0.0, 100.0),
        scale(a, -128.0, 127.0),
        scale(b, -128.0, 127.0),
    ]
}

/// sRGB's linear-RGB → XYZ matrix as IEC 61966-2-1 gives it (four decimals; highdicom
/// and PixelMed use the same), rows X, Y, Z.
const SRGB_TO_XYZ: [[f64; 3]; 3] = [
    [0.4124, 0.3576, 0.1805],
    [0.2126, 0.7152, 0.0722],
    [0.0193, 0.1192, 0.9505],
];

/// sRGB (0..255) to CIELab (L*, a*, b*). The reference white is the matrix's own image of
/// sRGB white (its row sums, D65 to four decimals), so sRGB white is exactly neutral;
/// highdicom's 95.047 / 108.883 white puts it 3 of 65535 units off 0x8080 in b*.
fn srgb_to_lab(rgb: [u8; 3]) -> [f64; 3] {
    let linear = rgb.map(|c| {
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    });
    let f = |t: f64| {
        let delta: f64 = 6.0 / 29.0;
        if t > delta.powi(3) {
            t.cbrt()
        } else {
            t / (3.0 * delta * delta) + 4.0 / 29.0
        }
    };
    let [fx, fy, fz] = SRGB_TO_XYZ.map(|row| {
        let value: f64 = (0..3).map(|c| row[c] * linear[c]).sum();
        let white: f64 = row.iter().sum();
        f(value / white)
    });
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

// ---------------------------------------------------------------------------------------
// Data set

/// Everything the data set is made of.
struct Parts<'a> {
    source: &'a SourceSeries,
    first: &'a DefaultDicomObject,
    segments: &'a [SegmentSpec],
    options: &'a SegOptions,
    frames: &'a [Frame],
    uids: &'a Uids,
    rows: usize,
    columns: usize,
}

fn build_dataset(parts: &Parts, pixel_data: Vec<u8>) -> InMemDicomObject {
    let mut elements = sop_common(SEGMENTATION_STORAGE, parts.uids);
    elements.extend(copied_patient_study(parts.first, parts.uids));
    elements.extend(frame_of_reference(parts.first, parts.uids));
    elements.extend(series_equipment_content(parts.options, parts.uids));
    elements.extend(image_pixel(parts, pixel_data));
    elements.push(seq(tags::SEGMENT_SEQUENCE, segment_items(parts.segments)));
    elements.extend(functional_groups(parts));
    elements.extend(dimensions(&random_uid()));
    elements.push(referenced_series(parts.source, &parts.uids.source_series));
    dataset(elements)
}

/// ContentLabel as a CS code string: upper case, `A-Z 0-9 _ space`, at most 16.
fn content_label(label: &str) -> String {
    let code: String = label
        .trim()
        .to_uppercase()
        .chars()
        .map(|c| match c {
            'A'..='Z' | '0'..='9' | '_' | ' ' => c,
            _ => '_',
        })
        .take(16)
        .collect();
    if code.trim().is_empty() {
        "SEGMENTATION".into()
    } else {
        code.trim().to_owned()
    }
}

/// Not backslash or control characters: values written as one LO/SH/PN value.
fn series_equipment_content(options: &SegOptions, uids: &Uids) -> Vec<Element> {
    let mut elements = general_series(
        "SEG",
        uids,
        options.series_number,
        &options.series_description,
    );
    elements.extend(general_equipment(
        &options.manufacturer_model,
        &options.software_version,
        &options.device_serial_number,
    ));
    elements.extend([
        int_string(tags::INSTANCE_NUMBER, i64::from(options.instance_number)),
        text(
            tags::CONTENT_LABEL,
            VR::CS,
            &content_label(&options.content_label),
        ),
        text(tags::CONTENT_DESCRIPTION, VR::LO, NOT_FOR_CLINICAL_USE),
        text(
            tags::CONTENT_CREATOR_NAME,
            VR::PN,
            &short(&options.content_creator_name, 64),
        ),
    ]);
    elements
}

/// Image Pixel and Segmentation Image attributes, NumberOfFrames and PixelData.
fn image_pixel(parts: &Parts, pixel_data: Vec<u8>) -> Vec<Element> {
    let mut elements = vec![
        texts(tags::IMAGE_TYPE, VR::CS, &["DERIVED", "PRIMARY"]),
        us(tags::SAMPLES_PER_PIXEL, &[1]),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::BITS_ALLOCATED, &[1]),
        us(tags::BITS_STORED, &[1]),
        us(tags::HIGH_BIT, &[0]),
        us(tags::PIXEL_REPRESENTATION, &[0]),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        text(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        // A label map holds one label per voxel: its segments never overlap.
        text(tags::SEGMENTS_OVERLAP, VR::CS, "NO"),
        int_string(tags::NUMBER_OF_FRAMES, parts.frames.len() as i64),
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(pixel_data)),
    ];
    elements.extend(rows_columns(parts.rows, parts.columns));
    elements
}

fn segment_items(segments: &[SegmentSpec]) -> Vec<InMemDicomObject> {
    segments
        .iter()
        .zip(1u16..)
        .map(|(spec, number)| segment_item(number, spec))
        .collect()
}

fn segment_item(number: u16, spec: &SegmentSpec) -> InMemDicomObject {
    let mut elements = vec![
        us(tags::SEGMENT_NUMBER, &[number]),
        text(tags::SEGMENT_LABEL, VR::LO, &spec.name),
        text(
            tags::SEGMENT_ALGORITHM_TYPE,
            VR::CS,
            spec.algorithm.type_code(),
        ),
        seq(
            tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
            vec![code_item(&spec.category)],
        ),
        seq(
            tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
            vec![code_item(&spec.property_type)],
        ),
    ];
    if let Some(name) = spec.algorithm.name() {
        elements.push(text(tags::SEGMENT_ALGORITHM_NAME, VR::LO, name));
    }
    if let Some(rgb) = spec.rgb {
        elements.push(us(
            tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
            &srgb_to_dicom_lab(rgb),
        ));
    }
    item(elements)
}

/// Shared (orientation, pixel measures) and per-frame functional groups.
fn functional_groups(parts: &Parts) -> Vec<Element> {
    let source = parts.source;
    let shared = item(vec![
        seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item(vec![decimals(
                tags::IMAGE_ORIENTATION_PATIENT,
                &source.orientation,
            )])],
        ),
        seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(vec![
                decimals(tags::PIXEL_SPACING, &source.pixel_spacing_mm),
                decimals(tags::SLICE_THICKNESS, &[source.slice_thickness_mm]),
                decimals(
                    tags::SPACING_BETWEEN_SLICES,
                    &[source.spacing_between_slices_mm],
                ),
            ])],
        ),
    ]);
    let per_frame = parts
        .frames
        .iter()
        .map(|frame| frame_item(frame, source))
        .collect();
    vec![
        seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]),
        seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame),
    ]
}

/// One frame's functional groups: derivation, frame content, plane position, segment.
fn frame_item(frame: &Frame, source: &SourceSeries) -> InMemDicomObject {
    let segment_number = u16::try_from(frame.segment + 1).unwrap_or(u16::MAX);
    let slice = &source.slices[frame.source_slice];
    let slice_index = u32::try_from(frame.source_slice + 1).unwrap_or(u32::MAX);
    item(vec![
        seq(
            tags::DERIVATION_IMAGE_SEQUENCE,
            vec![derivation_item(slice)],
        ),
        seq(
            tags::FRAME_CONTENT_SEQUENCE,
            vec![item(vec![DataElement::new(
                tags::DIMENSION_INDEX_VALUES,
                VR::UL,
                PrimitiveValue::U32([u32::from(segment_number), slice_index].into()),
            )])],
        ),
        seq(
            tags::PLANE_POSITION_SEQUENCE,
            vec![item(vec![decimals(
                tags::IMAGE_POSITION_PATIENT,
                &slice.position_lps,
            )])],
        ),
        seq(
            tags::SEGMENT_IDENTIFICATION_SEQUENCE,
            vec![item(vec![us(
                tags::REFERENCED_SEGMENT_NUMBER,
                &[segment_number],
            )])],
        ),
    ])
}

/// DerivationImageSequence item: the source slice, "source image for image processing
/// operation", derived by "segmentation".
fn derivation_item(slice: &SourceSlice) -> InMemDicomObject {
    let mut source_image = sop_reference(slice);
    source_image.put(seq(
        tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
        vec![code_item(&Code::new(
            "121322",
            "DCM",
            "Source image for image processing operation",
        ))],
    ));
    source_image.put(text(tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES"));
    item(vec![
        seq(
            tags::DERIVATION_CODE_SEQUENCE,
            vec![code_item(&Code::new("113076", "DCM", "Segmentation"))],
        ),
        seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source_image]),
    ])
}

/// Multi-frame Dimension module: segment number, then image position.
fn dimensions(organization_uid: &str) -> Vec<Element> {
    let index = |pointer: Tag, group: Tag, label: &str| {
        item(vec![
            DataElement::new(
                tags::DIMENSION_INDEX_POINTER,
                VR::AT,
                PrimitiveValue::from(pointer),
            ),
            DataElement::new(
                tags::FUNCTIONAL_GROUP_POINTER,
                VR::AT,
                PrimitiveValue::from(group),
            ),
            text(tags::DIMENSION_ORGANIZATION_UID, VR::UI, organization_uid),
            text(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };
    vec![
        seq(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![item(vec![text(
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                organization_uid,
            )])],
        ),
        seq(
            tags::DIMENSION_INDEX_SEQUENCE,
            vec![
                index(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    "Referenced Segment Number",
                ),
                index(
                    tags::IMAGE_POSITION_PATIENT,
                    tags::PLANE_POSITION_SEQUENCE,
                    "Image Position Patient",
                ),
            ],
        ),
    ]
}

/// Common Instance Reference module: the source series and every slice of it.
fn referenced_series(source: &SourceSeries, series_uid: &str) -> Element {
    let instances = source.slices.iter().map(sop_reference).collect();
    seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![item(vec![
            text(tags::SERIES_INSTANCE_UID, VR::UI, series_uid),
            seq(tags::REFERENCED_INSTANCE_SEQUENCE, instances),
        ])],
    )
}

/// True when any text value (in any item) is not ASCII.
#[cfg(test)]
mod tests {
    use super::*;

    fn bits_of(bytes: &[u8], n: usize) -> Vec<bool> {
        (0..n).map(|b| bytes[b / 8] >> (b % 8) & 1 == 1).collect()
    }

    #[test]
    fn bits_are_packed_lsb_first_without_padding_between_frames() {
        // Two 3x3 frames (9 bits each, odd): frame 0 sets pixels 0 and 8, frame 1 sets 1.
        let set = [[0usize, 8], [1, usize::MAX]];
        let bytes = pack_bits(2, 9, |f, p| set[f].contains(&p));
        // Bits 0, 8 and 9 + 1 = 10: byte 0 = 0b0000_0001, byte 1 = 0b0000_0101.
        assert_eq!(bytes, vec![0x01, 0x05, 0x00, 0x00]);
        assert_eq!(bytes.len() % 2, 0);
        let expected: Vec<bool> = (0..18).map(|b| b == 0 || b == 8 || b == 10).collect();
        assert_eq!(bits_of(&bytes, 18), expected);
    }

    #[test]
    fn packed_data_is_padded_to_even_length_only_at_the_end() {
        // Three frames of 5 pixels = 15 bits = 2 bytes; one frame of 9 = 2 bytes;
        // one of 17 bits = 3 bytes, padded to 4.
        assert_eq!(pack_bits(3, 5, |_, _| true), vec![0xFF, 0x7F]);
        assert_eq!(pack_bits(1, 17, |_, p| p == 16), vec![0, 0, 1, 0]);
        // Frame 1 of 3x1 pixels starts at bit 3 of byte 0, not at a byte boundary.
        assert_eq!(
            pack_bits(2, 3, |f, p| f == 1 && p == 0),
            vec![0b0000_1000, 0]
        );
    }

    #[test]
    fn white_is_l100_and_neutral() {
        assert_eq!(srgb_to_dicom_lab([255, 255, 255]), [65535, 0x8080, 0x8080]);
        let black = srgb_to_dicom_lab([0, 0, 0]);
        assert_eq!(black[0], 0);
        assert!(black[1].abs_diff(0x8080) <= 1 && black[2].abs_diff(0x8080) <= 1);
    }

    #[test]
    fn primaries_match_published_cielab_values() {
        // Published CIELab (D65) of sRGB red, green and blue (B. Lindbloom's calculator);
        // the four-decimal matrix moves them by up to 0.03.
        let published = [
            ([255, 0, 0], [53.24, 80.09, 67.20]),
            ([0, 255, 0], [87.73, -86.18, 83.18]),
            ([0, 0, 255], [32.30, 79.19, -107.86]),
        ];
        for (rgb, lab) in published {
            let ours = srgb_to_lab(rgb);
            for c in 0..3 {
                assert!(
                    (ours[c] - lab[c]).abs() < 0.05,
                    "{rgb:?}: {ours:?} vs {lab:?}"
                );
            }
        }
        // Scaled, published red: L 53.24 -> 34891, a 80.09 -> 208.09 * 257 = 53479 (within
        // the 0.05 above: 33 and 13 units).
        let red = srgb_to_dicom_lab([255, 0, 0]);
        assert!(
            red[0].abs_diff(34891) <= 33 && red[1].abs_diff(53479) <= 13,
            "{red:?}"
        );
    }

    #[test]
    fn texts_are_made_valid_values() {
        assert_eq!(content_label("liver seg-1"), "LIVER SEG_1");
        assert_eq!(content_label(""), "SEGMENTATION");
        assert_eq!(content_label("a".repeat(40).as_str()).len(), 16);
    }

    #[test]
    fn segment_lists_are_checked() {
        assert!(check_segments(&[]).is_err());
        assert!(check_segments(&[SegmentSpec::new(0, "background")]).is_err());
        let twice = [SegmentSpec::new(3, "a"), SegmentSpec::new(3, "b")];
        assert!(check_segments(&twice).unwrap_err().contains("listed twice"));
        assert!(check_segments(&[SegmentSpec::new(1, "a\\b")]).is_err());
        assert!(check_segments(&[SegmentSpec::new(1, "liver")]).is_ok());
        assert!(check_frame_budget(0, 10).is_err());
        assert!(check_frame_budget(MAX_SEG_FRAMES + 1, 10).is_err());
        assert!(check_frame_budget(60_000, 512 * 512).is_ok());
        assert!(check_frame_budget(65_000, 1024 * 1024).is_err());
    }
}
