//! DICOM Segmentation (SEG) as label input: what TotalSegmentator, 3D Slicer, highdicom
//! and Pinhole's own writer ([`super::seg`]) produce, read back into a label map whose
//! ids are the segment numbers and a [`LabelTable`] of the segments' labels.
//!
//! * BINARY segmentations (1 bit per pixel, packed LSB first with frames back to back,
//!   PS3.5 8.1.1) and FRACTIONAL ones (8 bits, a voxel belongs to a segment at half of
//!   `MaximumFractionalValue` or more: said in a warning). Native transfer syntaxes only.
//! * Each frame's segment (Segment Identification, per frame) and geometry (Plane
//!   Position per frame; Plane Orientation and Pixel Measures per frame or shared) come
//!   from the functional groups, as for enhanced images (`enhanced`).
//! * Placed **on a given grid** (the CT's) when one is given: same orientation and
//!   in-plane size and spacing, every frame at one of its slices. Else on the SEG's own
//!   grid: the frames' slices from the first to the last, `SpacingBetweenSlices` apart
//!   (else the smallest gap between them); frames that omit empty slices are fine.
//! * Overlapping segments (a tumour inside its organ): the smaller segment keeps the
//!   shared voxels, said in a warning per pair with the voxel count. A label map holds
//!   one id per voxel; nothing is dropped silently.
//! * Refused with the file named: not a Segmentation, an unknown segmentation type or bit
//!   depth, segment numbers 0 or repeated, a frame naming a segment the SegmentSequence
//!   lacks, frames off the grid or displaced sideways, mixed orientations, PixelData
//!   shorter than its frames.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use pinhole_volume::{Grid, Volume};

use super::enhanced::{expand_frames, group, items};
use super::geometry::{axes, dot, position};
use super::header::{int, text, SliceHeader};
use super::parse::{meta_fields, parse};
use super::{ORIENTATION_TOLERANCE, SPACING_TOLERANCE_MM};
use crate::error::{Error, ErrorKind, Result, WithPath};
use crate::labels::{LabelEntry, LabelTable};

/// A Segmentation read as a label map.
#[derive(Debug, Clone)]
pub struct SegmentationInput {
    /// Segment number per voxel (0: no segment).
    pub labels: Volume<u16>,
    /// Segment number → SegmentLabel (and RecommendedDisplayCIELabValue is not read:
    /// colours come from the table's generated ones).
    pub table: LabelTable,
    /// What the reader decided that a caller must show (overlaps, fractional threshold,
    /// segments without frames).
    pub warnings: Vec<String>,
}

/// True when `path` is a DICOM file whose file meta group names Segmentation Storage
/// (reads the first 64 KiB only: the meta group; false for anything unreadable).
pub fn is_segmentation_file(path: &Path) -> bool {
    use std::io::Read;
    const META_PREFIX_BYTES: u64 = 64 << 10;
    let mut prefix = Vec::new();
    let read =
        std::fs::File::open(path).and_then(|f| f.take(META_PREFIX_BYTES).read_to_end(&mut prefix));
    if read.is_err() || prefix.get(128..132) != Some(b"DICM".as_slice()) {
        return false;
    }
    meta_fields(&prefix[128..])
        .ok()
        .flatten()
        .is_some_and(|m| m.sop_class == uids::SEGMENTATION_STORAGE)
}

/// The Series Instance UIDs a Segmentation names as its source (its Referenced Series
/// Sequence, Common Instance Reference module), in file order; an error for a file that
/// is not a readable Segmentation. Reads the header only (no frames decoded).
pub fn referenced_series(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_path(path)?;
    let obj = parse(&bytes, true).map_err(|m| Error::new(path, ErrorKind::Dicom(m)))?;
    if !is_segmentation(&obj) {
        return Err(Error::new(
            path,
            ErrorKind::NotMedicalImage("not a DICOM Segmentation (SOP Class)".into()),
        ));
    }
    Ok(items(&obj, tags::REFERENCED_SERIES_SEQUENCE)
        .iter()
        .filter_map(|item| text(item, tags::SERIES_INSTANCE_UID))
        .collect())
}

/// True when the object's SOP Class (else its file meta group's) is Segmentation Storage.
pub(super) fn is_segmentation(obj: &DefaultDicomObject) -> bool {
    let sop_class = text_of(obj, tags::SOP_CLASS_UID);
    let sop_class = if sop_class.is_empty() {
        obj.meta()
            .media_storage_sop_class_uid()
            .trim_end_matches('\0')
            .to_string()
    } else {
        sop_class
    };
    sop_class == uids::SEGMENTATION_STORAGE
}

fn text_of(obj: &InMemDicomObject, tag: Tag) -> String {
    text(obj, tag).unwrap_or_default()
}

/// Most slices of a Segmentation's own grid (from its first to its last frame).
pub const MAX_OWN_GRID_SLICES: usize = 10_000;
/// Most voxels of a Segmentation's label map.
pub const MAX_LABEL_VOXELS: usize = 1 << 31;

/// Reads the Segmentation at `path`, on `grid` when given (see the module docs).
pub fn read_segmentation(path: &Path, grid: Option<&Grid>) -> Result<SegmentationInput> {
    let bytes = std::fs::read(path).with_path(path)?;
    segmentation_from_bytes(path, &bytes, grid)
}

/// Decodes an in-memory Segmentation on its own grid. For fuzzing: never panics, never
/// allocates more than the input justifies (frames are unpacked only once PixelData
/// holds them; the own grid is capped at [`MAX_OWN_GRID_SLICES`]).
pub fn decode_segmentation_bytes(bytes: &[u8]) -> std::result::Result<(), String> {
    segmentation_from_bytes(Path::new("input"), bytes, None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn segmentation_from_bytes(
    path: &Path,
    bytes: &[u8],
    grid: Option<&Grid>,
) -> Result<SegmentationInput> {
    let bad = |m: String| Error::new(path, ErrorKind::InvalidHeader(m));
    let obj = parse(bytes, false).map_err(|m| Error::new(path, ErrorKind::Dicom(m)))?;
    if !is_segmentation(&obj) {
        return Err(Error::new(
            path,
            ErrorKind::NotMedicalImage("not a DICOM Segmentation (SOP Class)".into()),
        ));
    }
    let header = SliceHeader::from_object(PathBuf::from(path), &obj).map_err(bad)?;
    let encoding = pixel_encoding(&obj, &header).map_err(|m| unsupported(path, m))?;
    let segments = segment_labels(&obj).map_err(bad)?;
    let frames = expand_frames(&header, &obj).map_err(bad)?;
    let frame_segments = frame_segment_numbers(&obj, &segments).map_err(bad)?;
    if let Some(problem) = frames.iter().find_map(|f| f.invalid.first()) {
        return Err(bad(problem.clone()));
    }
    let mut warnings = Vec::new();
    let placement = match grid {
        Some(grid) => place_on(grid, &frames).map_err(bad)?,
        None => own_grid(&frames, &mut warnings).map_err(bad)?,
    };
    let masks = unpack(&obj, &header, encoding, frames.len()).map_err(bad)?;
    let labels = paint(
        &placement,
        &frame_segments,
        &masks,
        &segments,
        &mut warnings,
    );
    if let Encoding::Fractional(max) = encoding {
        warnings.insert(
            0,
            format!(
                "FRACTIONAL segmentation: a voxel belongs to a segment where its value is \
                 at least half of MaximumFractionalValue {max}"
            ),
        );
    }
    let present: BTreeSet<u16> = frame_segments.iter().copied().collect();
    for (number, label) in &segments {
        if !present.contains(number) {
            warnings.push(format!(
                "segment {number} ({label}) has no frames: no voxels"
            ));
        }
    }
    let mut table = LabelTable::new();
    for (number, label) in segments {
        table.insert(
            u32::from(number),
            LabelEntry {
                name: label,
                color_rgb: None,
            },
        );
    }
    let labels = Volume::new(placement.grid, labels).map_err(|e| bad(format!("{e:?}")))?;
    Ok(SegmentationInput {
        labels,
        table,
        warnings,
    })
}

fn unsupported(path: &Path, m: String) -> Error {
    Error::new(path, ErrorKind::Unsupported(m))
}

/// How a segment's pixels are stored.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Binary,
    /// 8 bits per pixel up to MaximumFractionalValue.
    Fractional(u8),
}

fn pixel_encoding(
    obj: &DefaultDicomObject,
    h: &SliceHeader,
) -> std::result::Result<Encoding, String> {
    let native = [
        uids::EXPLICIT_VR_LITTLE_ENDIAN,
        uids::IMPLICIT_VR_LITTLE_ENDIAN,
    ];
    let ts = h.transfer_syntax.trim_end_matches('\0');
    if !native.contains(&ts) {
        return Err(format!(
            "Segmentation with transfer syntax {ts}: only native (uncompressed) little-endian \
             Segmentations are read"
        ));
    }
    let kind = text_of(obj, tags::SEGMENTATION_TYPE);
    match (kind.as_str(), h.bits_allocated) {
        ("BINARY", 1) => Ok(Encoding::Binary),
        ("FRACTIONAL", 8) => {
            let max = int(obj, tags::MAXIMUM_FRACTIONAL_VALUE)
                .and_then(|m| u8::try_from(m).ok())
                .filter(|m| *m > 0)
                .ok_or("FRACTIONAL Segmentation without a MaximumFractionalValue of 1..255")?;
            Ok(Encoding::Fractional(max))
        }
        (kind, bits) => Err(format!(
            "SegmentationType {kind:?} with BitsAllocated {bits}: BINARY (1 bit) or \
             FRACTIONAL (8 bits) expected"
        )),
    }
}

/// SegmentNumber → SegmentLabel, refusing 0, repeats and an empty sequence.
fn segment_labels(obj: &DefaultDicomObject) -> std::result::Result<BTreeMap<u16, String>, String> {
    let items = items(obj, tags::SEGMENT_SEQUENCE);
    if items.is_empty() {
        return Err("no SegmentSequence items: the Segmentation names no segment".into());
    }
    let mut segments = BTreeMap::new();
    for item in items {
        let number = int(item, tags::SEGMENT_NUMBER)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or("a SegmentSequence item without a SegmentNumber of 1..65535")?;
        let mut label = text_of(item, tags::SEGMENT_LABEL);
        if label.is_empty() {
            label = format!("segment_{number}");
        }
        if segments.insert(number, label).is_some() {
            return Err(format!(
                "SegmentNumber {number} appears twice in the SegmentSequence"
            ));
        }
    }
    Ok(segments)
}

/// The segment of every frame, from its Segment Identification (per frame, else shared).
fn frame_segment_numbers(
    obj: &DefaultDicomObject,
    segments: &BTreeMap<u16, String>,
) -> std::result::Result<Vec<u16>, String> {
    let shared = items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first();
    items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let number = number_in(item, shared)
                .ok_or_else(|| format!("frame {index}: no ReferencedSegmentNumber"))?;
            if segments.contains_key(&number) {
                Ok(number)
            } else {
                Err(format!(
                    "frame {index} names segment {number}, which the SegmentSequence lacks"
                ))
            }
        })
        .collect()
}

/// A frame's ReferencedSegmentNumber, from its Segment Identification (else the shared one).
fn number_in(frame: &InMemDicomObject, shared: Option<&InMemDicomObject>) -> Option<u16> {
    let identification = group(frame, shared, tags::SEGMENT_IDENTIFICATION_SEQUENCE)?;
    int(identification, tags::REFERENCED_SEGMENT_NUMBER).and_then(|n| u16::try_from(n).ok())
}

/// Where the frames go: the grid and each frame's slice index on it.
struct Placement {
    grid: Grid,
    slice_of_frame: Vec<usize>,
}

/// The frames' common orientation, as unit axes; refuses mixed orientations.
fn frame_axes(frames: &[SliceHeader]) -> std::result::Result<super::geometry::Axes, String> {
    let first = frames.first().ok_or("no frames")?;
    let orientation = first
        .orientation
        .ok_or("no ImageOrientationPatient (Plane Orientation) for the frames")?;
    for (index, f) in frames.iter().enumerate() {
        let same = f.orientation.is_some_and(|o| {
            o.iter()
                .zip(&orientation)
                .all(|(a, b)| (a - b).abs() <= ORIENTATION_TOLERANCE)
        });
        if !same {
            return Err(format!(
                "frame {index} has another orientation than frame 0"
            ));
        }
        if f.position.is_none() {
            return Err(format!(
                "frame {index}: no ImagePositionPatient (Plane Position)"
            ));
        }
    }
    axes(first, orientation).map_err(|e| e.to_string())
}

/// On the SEG's own grid: from the first to the last frame's slice.
fn own_grid(
    frames: &[SliceHeader],
    warnings: &mut Vec<String>,
) -> std::result::Result<Placement, String> {
    let axes = frame_axes(frames)?;
    let first = &frames[0];
    let spacing = first
        .pixel_spacing
        .ok_or("no PixelSpacing (Pixel Measures)")?;
    let distances: Vec<f64> = frames
        .iter()
        .map(|f| dot(position(f), axes.normal))
        .collect();
    let low = distances.iter().copied().fold(f64::INFINITY, f64::min);
    let lowest = frames
        .iter()
        .zip(&distances)
        .find(|(_, d)| **d == low)
        .map(|(f, _)| position(f))
        .ok_or("no frames")?;
    let mut distinct: Vec<f64> = distances.clone();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup_by(|a, b| (*a - *b).abs() <= SPACING_TOLERANCE_MM);
    let smallest_gap = distinct
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::INFINITY, f64::min);
    let step = match first.spacing_between_slices.filter(|s| *s > 0.0) {
        Some(s) => s,
        None if smallest_gap.is_finite() => smallest_gap,
        None => first
            .slice_thickness
            .filter(|t| *t > 0.0)
            .unwrap_or_else(|| {
                warnings.push("one slice without SpacingBetweenSlices: slice spacing 1 mm".into());
                1.0
            }),
    };
    let mut slice_of_frame = Vec::with_capacity(frames.len());
    for (index, (f, d)) in frames.iter().zip(&distances).enumerate() {
        let k = ((d - low) / step).round();
        if !(0.0..=MAX_OWN_GRID_SLICES as f64).contains(&k) {
            return Err(format!(
                "frame {index} lies {:.3} mm along the normal from the first slice: more \
                 than {MAX_OWN_GRID_SLICES} slices of {step} mm",
                d - low
            ));
        }
        if ((d - low) - k * step).abs() > SPACING_TOLERANCE_MM.max(1e-3 * step) {
            return Err(format!(
                "frame {index} lies {:.3} mm along the normal from the first slice: not a \
                 multiple of the slice spacing {step} mm",
                d - low
            ));
        }
        check_on_line(index, position(f), lowest, &axes)?;
        slice_of_frame.push(k as usize);
    }
    let slices = slice_of_frame.iter().max().map_or(1, |k| k + 1);
    let voxels = usize::from(first.columns) * usize::from(first.rows) * slices;
    if slices > MAX_OWN_GRID_SLICES || voxels > MAX_LABEL_VOXELS {
        return Err(format!(
            "the frames span {slices} slices of {step} mm ({voxels} voxels): more than \
             {MAX_OWN_GRID_SLICES} slices or {MAX_LABEL_VOXELS} voxels"
        ));
    }
    let direction = [
        [axes.row[0], axes.col[0], axes.normal[0]],
        [axes.row[1], axes.col[1], axes.normal[1]],
        [axes.row[2], axes.col[2], axes.normal[2]],
    ];
    let grid = Grid::new(
        [usize::from(first.columns), usize::from(first.rows), slices],
        [spacing[1], spacing[0], step],
        lowest,
        direction,
    )
    .map_err(|e| e.to_string())?;
    Ok(Placement {
        grid,
        slice_of_frame,
    })
}

/// Refuses a frame displaced sideways from the stack through `origin`.
fn check_on_line(
    index: usize,
    p: [f64; 3],
    origin: [f64; 3],
    axes: &super::geometry::Axes,
) -> std::result::Result<(), String> {
    let v: [f64; 3] = std::array::from_fn(|a| p[a] - origin[a]);
    let sideways = dot(v, axes.row).hypot(dot(v, axes.col));
    if sideways > SPACING_TOLERANCE_MM.max(1e-3 * dot(v, axes.normal).abs()) {
        return Err(format!(
            "frame {index} is displaced {sideways:.3} mm sideways from the stack (a tilted \
             or sheared Segmentation is not supported)"
        ));
    }
    Ok(())
}

/// On `grid` (the CT's): same orientation, in-plane size and spacing, every frame on one
/// of its slices.
fn place_on(grid: &Grid, frames: &[SliceHeader]) -> std::result::Result<Placement, String> {
    let axes = frame_axes(frames)?;
    let first = &frames[0];
    let direction = grid.direction();
    let column = |c: usize| [direction[0][c], direction[1][c], direction[2][c]];
    for (name, ours, theirs) in [
        ("row", axes.row, column(0)),
        ("column", axes.col, column(1)),
    ] {
        if (dot(ours, theirs) - 1.0).abs() > ORIENTATION_TOLERANCE {
            return Err(format!(
                "the Segmentation's {name} direction {ours:?} differs from the CT's {theirs:?}"
            ));
        }
    }
    let spacing = first
        .pixel_spacing
        .ok_or("no PixelSpacing (Pixel Measures)")?;
    let [ni, nj, nk] = grid.dims();
    let grid_spacing = grid.spacing_mm();
    if (usize::from(first.columns), usize::from(first.rows)) != (ni, nj)
        || (spacing[1] - grid_spacing[0]).abs() > SPACING_TOLERANCE_MM
        || (spacing[0] - grid_spacing[1]).abs() > SPACING_TOLERANCE_MM
    {
        return Err(format!(
            "the Segmentation's frames ({} x {} pixels of {} x {} mm) differ from the CT's \
             slices ({ni} x {nj} of {:.4} x {:.4} mm)",
            first.columns, first.rows, spacing[1], spacing[0], grid_spacing[0], grid_spacing[1]
        ));
    }
    let mut slice_of_frame = Vec::with_capacity(frames.len());
    for (index, f) in frames.iter().enumerate() {
        let at = grid.world_to_index(position(f));
        let k = at[2].round();
        let off_mm = [
            at[0] * grid_spacing[0],
            at[1] * grid_spacing[1],
            (at[2] - k) * grid_spacing[2],
        ];
        if off_mm.iter().any(|d| d.abs() > SPACING_TOLERANCE_MM) || k < 0.0 || k >= nk as f64 {
            return Err(format!(
                "frame {index} at {:?} mm (LPS) is not on a slice of the CT's grid (index \
                 {:.3}, {:.3}, {:.3})",
                position(f),
                at[0],
                at[1],
                at[2]
            ));
        }
        slice_of_frame.push(k as usize);
    }
    Ok(Placement {
        grid: grid.clone(),
        slice_of_frame,
    })
}

/// Each frame's pixels as set / not set.
fn unpack(
    obj: &DefaultDicomObject,
    h: &SliceHeader,
    encoding: Encoding,
    frames: usize,
) -> std::result::Result<Vec<Vec<bool>>, String> {
    let pixels = usize::from(h.rows) * usize::from(h.columns);
    let data = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .ok_or("no PixelData")?
        .to_bytes()
        .map_err(|e| format!("PixelData: {e}"))?;
    let needed = match encoding {
        Encoding::Binary => (pixels as u128 * frames as u128).div_ceil(8),
        Encoding::Fractional(_) => pixels as u128 * frames as u128,
    };
    if (data.len() as u128) < needed {
        return Err(format!(
            "PixelData holds {} bytes, {frames} frames of {} x {} pixels need {needed}",
            data.len(),
            h.columns,
            h.rows
        ));
    }
    Ok((0..frames)
        .map(|f| match encoding {
            Encoding::Binary => (0..pixels)
                .map(|p| {
                    let bit = f * pixels + p;
                    data[bit / 8] >> (bit % 8) & 1 == 1
                })
                .collect(),
            Encoding::Fractional(max) => data[f * pixels..(f + 1) * pixels]
                .iter()
                .map(|&v| u16::from(v) * 2 >= u16::from(max))
                .collect(),
        })
        .collect())
}

/// The label map: larger segments painted first, so a smaller one keeps shared voxels.
fn paint(
    placement: &Placement,
    frame_segments: &[u16],
    masks: &[Vec<bool>],
    segments: &BTreeMap<u16, String>,
    warnings: &mut Vec<String>,
) -> Vec<u16> {
    let [ni, nj, nk] = placement.grid.dims();
    let per_slice = ni * nj;
    let mut size: BTreeMap<u16, usize> = BTreeMap::new();
    for (number, mask) in frame_segments.iter().zip(masks) {
        *size.entry(*number).or_default() += mask.iter().filter(|b| **b).count();
    }
    let mut order: Vec<usize> = (0..masks.len()).collect();
    order.sort_by_key(|&f| {
        let number = frame_segments[f];
        (
            std::cmp::Reverse(size.get(&number).copied().unwrap_or(0)),
            number,
        )
    });
    let mut labels = vec![0u16; per_slice * nk];
    let mut overlaps: BTreeMap<(u16, u16), usize> = BTreeMap::new();
    for f in order {
        let number = frame_segments[f];
        let start = placement.slice_of_frame[f] * per_slice;
        for (voxel, set) in labels[start..start + per_slice].iter_mut().zip(&masks[f]) {
            if *set {
                if *voxel != 0 && *voxel != number {
                    *overlaps.entry((*voxel, number)).or_default() += 1;
                }
                *voxel = number;
            }
        }
    }
    let name = |n: u16| segments.get(&n).cloned().unwrap_or_default();
    for ((larger, smaller), count) in overlaps {
        warnings.push(format!(
            "segments {larger} ({}) and {smaller} ({}) overlap in {count} voxels: the \
             smaller segment {smaller} keeps them in the label map",
            name(larger),
            name(smaller)
        ));
    }
    labels
}
