//! RT Dose grids (PS3.3 C.8.8.3): a multi-frame object whose frames are the planes of a
//! dose grid, placed by Grid Frame Offset Vector (3004,000C) — Frame Increment Pointer
//! (0028,0009) names it — and whose stored values times Dose Grid Scaling (3004,000E)
//! are the dose in Dose Units (3004,0002: GY or RELATIVE).
//!
//! Each frame becomes one [`SliceHeader`] at Image Position (Patient) plus its offset
//! along the plane's normal (row × column), or, when the first offset is not 0, at the
//! offset as its z coordinate (allowed for axial planes only, C.8.8.3.2). The frames then
//! go through the checks every stack gets (even gaps, no duplicates).

use dicom_core::{PrimitiveValue, Tag};
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use super::header::{checked_floats, text, SliceHeader};

/// True when the object's frames are stacked by Grid Frame Offset Vector.
pub(super) fn is_dose_grid(obj: &DefaultDicomObject) -> bool {
    let pointer = obj
        .element_opt(tags::FRAME_INCREMENT_POINTER)
        .ok()
        .flatten()
        .and_then(|e| match e.value().primitive() {
            Some(PrimitiveValue::Tags(tags)) => tags.first().copied(),
            // Written with VR UN (pydicom's rtdose_rle.dcm): the 4 bytes of the tag.
            _ => e.to_bytes().ok().and_then(|b| {
                let word = |at: usize| Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]));
                Some(Tag(word(0)?, word(2)?))
            }),
        });
    pointer == Some(tags::GRID_FRAME_OFFSET_VECTOR)
}

/// The dose scaling of an RT Dose object without a Rescale Slope: (Dose Grid Scaling,
/// Dose Units). `Err` for a scaling present but not a positive finite number.
pub(super) fn dose_scaling(
    obj: &DefaultDicomObject,
    modality: &str,
) -> Result<Option<(f64, String)>, String> {
    if modality != "RTDOSE" || matches!(obj.element_opt(tags::RESCALE_SLOPE), Ok(Some(_))) {
        return Ok(None);
    }
    let Some(scaling) = checked_floats(obj, tags::DOSE_GRID_SCALING, "DoseGridScaling", 1)? else {
        return Ok(None);
    };
    let scaling = scaling[0];
    if !(scaling > 0.0 && scaling.is_finite()) {
        return Err(format!(
            "DoseGridScaling {scaling} is not a positive number"
        ));
    }
    let units = text(obj, tags::DOSE_UNITS).unwrap_or_default();
    Ok(Some((
        scaling,
        if units.is_empty() {
            "unknown units".into()
        } else {
            units
        },
    )))
}

/// The frames of a dose grid as slices, in frame order (`header`: the object's top-level
/// header).
pub(super) fn expand_dose_frames(
    header: &SliceHeader,
    obj: &DefaultDicomObject,
) -> Result<Vec<SliceHeader>, String> {
    let frames = usize::try_from(header.frames.unwrap_or(1))
        .map_err(|_| format!("NumberOfFrames {:?}", header.frames))?;
    let offsets = checked_floats(
        obj,
        tags::GRID_FRAME_OFFSET_VECTOR,
        "GridFrameOffsetVector",
        frames,
    )?
    .ok_or("a dose grid without GridFrameOffsetVector")?;
    if offsets.len() != frames {
        return Err(format!(
            "GridFrameOffsetVector has {} values for {frames} frames",
            offsets.len()
        ));
    }
    let origin = header
        .position
        .ok_or("a dose grid without ImagePositionPatient")?;
    let o = header
        .orientation
        .ok_or("a dose grid without ImageOrientationPatient")?;
    let normal = [
        o[1] * o[5] - o[2] * o[4],
        o[2] * o[3] - o[0] * o[5],
        o[0] * o[4] - o[1] * o[3],
    ];
    let relative = offsets[0] == 0.0;
    let axial = normal[2] > 1.0 - 1e-6;
    if !relative && !axial {
        return Err(
            "GridFrameOffsetVector holds absolute z positions (its first value is not 0) \
             but the planes are not axial"
                .into(),
        );
    }
    offsets
        .iter()
        .enumerate()
        .map(|(index, &offset)| {
            let mut h = header.clone();
            h.frame = Some(u32::try_from(index).map_err(|_| "too many frames".to_string())?);
            h.position = Some(if relative {
                [
                    origin[0] + offset * normal[0],
                    origin[1] + offset * normal[1],
                    origin[2] + offset * normal[2],
                ]
            } else {
                [origin[0], origin[1], offset]
            });
            Ok(h)
        })
        .collect()
}
