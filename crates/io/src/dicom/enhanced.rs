//! Enhanced multi-frame objects (Enhanced CT / MR / PET, their Legacy Converted forms,
//! and any image with per-frame functional groups): one file holding a whole stack.
//!
//! Each frame becomes one [`SliceHeader`] with the frame's own geometry and rescale, taken
//! from its Per-frame Functional Groups item, else from the Shared Functional Groups item,
//! else from the top level (PS3.3 C.7.6.16):
//!
//! | header field                    | functional group sequence (tag)                  |
//! |---------------------------------|--------------------------------------------------|
//! | `position`                      | Plane Position (Patient) (0020,9113)             |
//! | `orientation`                   | Plane Orientation (Patient) (0020,9116)          |
//! | `pixel_spacing`, thickness, gap | Pixel Measures (0028,9110)                       |
//! | `slope`, `intercept`            | Pixel Value Transformation (0028,9145)           |
//!
//! The expanded frames then go through the same checks as a folder of single-frame files
//! (one orientation, stacked along the normal, even gaps, no duplicates): an object
//! holding several stacks, echoes or time points is refused at the first two frames
//! sharing a position, naming them.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use super::header::{checked_floats, SliceHeader};

/// True when `obj` carries per-frame functional groups (an enhanced multi-frame object).
pub(super) fn is_enhanced(obj: &DefaultDicomObject) -> bool {
    matches!(
        obj.element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE),
        Ok(Some(_))
    )
}

/// The frames of an enhanced multi-frame object as slices, in frame order; `header` is
/// the object's top-level header (read by [`SliceHeader::from_object`]).
pub(super) fn expand_frames(
    header: &SliceHeader,
    obj: &DefaultDicomObject,
) -> Result<Vec<SliceHeader>, String> {
    let frames = header.frames.unwrap_or(1);
    let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    if i64::try_from(per_frame.len()).ok() != Some(frames) {
        return Err(format!(
            "NumberOfFrames {frames} but {} Per-frame Functional Groups items",
            per_frame.len()
        ));
    }
    let shared = items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first();
    per_frame
        .iter()
        .enumerate()
        .map(|(index, item)| frame_header(header, index, item, shared))
        .collect()
}

/// Items of a sequence element, empty when absent or not a sequence.
pub(super) fn items(obj: &InMemDicomObject, tag: Tag) -> &[InMemDicomObject] {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .unwrap_or(&[])
}

/// The first item of functional group `group` of this frame, else of the shared groups.
pub(super) fn group<'a>(
    frame: &'a InMemDicomObject,
    shared: Option<&'a InMemDicomObject>,
    group: Tag,
) -> Option<&'a InMemDicomObject> {
    items(frame, group)
        .first()
        .or_else(|| shared.and_then(|s| items(s, group).first()))
}

/// What a frame's header takes from its functional groups: (group sequence, attribute,
/// its name, how many numbers), in the order `frame_header` destructures them.
const FRAME_FIELDS: [(Tag, Tag, &str, usize); 7] = [
    (
        tags::PLANE_POSITION_SEQUENCE,
        tags::IMAGE_POSITION_PATIENT,
        "ImagePositionPatient",
        3,
    ),
    (
        tags::PLANE_ORIENTATION_SEQUENCE,
        tags::IMAGE_ORIENTATION_PATIENT,
        "ImageOrientationPatient",
        6,
    ),
    (
        tags::PIXEL_MEASURES_SEQUENCE,
        tags::PIXEL_SPACING,
        "PixelSpacing",
        2,
    ),
    (
        tags::PIXEL_MEASURES_SEQUENCE,
        tags::SLICE_THICKNESS,
        "SliceThickness",
        1,
    ),
    (
        tags::PIXEL_MEASURES_SEQUENCE,
        tags::SPACING_BETWEEN_SLICES,
        "SpacingBetweenSlices",
        1,
    ),
    (
        tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
        tags::RESCALE_SLOPE,
        "RescaleSlope",
        1,
    ),
    (
        tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
        tags::RESCALE_INTERCEPT,
        "RescaleIntercept",
        1,
    ),
];

/// One frame's header: the top-level header with this frame's functional groups applied.
fn frame_header(
    top: &SliceHeader,
    index: usize,
    frame: &InMemDicomObject,
    shared: Option<&InMemDicomObject>,
) -> Result<SliceHeader, String> {
    let mut h = top.clone();
    h.frame = Some(u32::try_from(index).map_err(|_| format!("frame {index}: too many frames"))?);
    let mut values = |sequence: Tag, tag: Tag, name: &str, n: usize| -> Option<Vec<f64>> {
        let item = group(frame, shared, sequence)?;
        checked_floats(item, tag, name, n).unwrap_or_else(|problem| {
            h.invalid.push(format!("frame {index}: {problem}"));
            None
        })
    };
    let [position, orientation, spacing, thickness, gap, slope, intercept] =
        FRAME_FIELDS.map(|(sequence, tag, name, n)| values(sequence, tag, name, n));
    if let Some(p) = position {
        h.position = Some([p[0], p[1], p[2]]);
    }
    if let Some(o) = orientation {
        h.orientation = Some([o[0], o[1], o[2], o[3], o[4], o[5]]);
    }
    if let Some(s) = spacing {
        if s.iter().any(|v| *v <= 0.0) {
            h.invalid.push(format!(
                "frame {index}: PixelSpacing {s:?} mm: pixel sizes must be positive"
            ));
        }
        h.pixel_spacing = Some([s[0], s[1]]);
    }
    h.slice_thickness = thickness.map(|t| t[0]).or(h.slice_thickness);
    h.spacing_between_slices = gap.map(|g| g[0]).or(h.spacing_between_slices);
    h.slope = slope.map_or(h.slope, |s| s[0]);
    h.intercept = intercept.map_or(h.intercept, |i| i[0]);
    Ok(h)
}
