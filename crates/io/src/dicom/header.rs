//! Per-file header parsing: the tags a slice contributes to the series, read leniently
//! (values stored as UN are read through the data dictionary, as pydicom does).

use std::path::PathBuf;

use dicom_core::dictionary::DataDictionary;
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::{DefaultDicomObject, InMemDicomObject};

/// What one file's header says.
#[derive(Debug, Clone)]
pub(super) struct SliceHeader {
    pub(super) path: PathBuf,
    pub(super) series_uid: String,
    pub(super) description: String,
    pub(super) modality: String,
    pub(super) transfer_syntax: String,
    pub(super) rows: u16,
    pub(super) columns: u16,
    pub(super) orientation: Option<[f64; 6]>,
    pub(super) position: Option<[f64; 3]>,
    pub(super) pixel_spacing: Option<[f64; 2]>,
    pub(super) slice_thickness: Option<f64>,
    pub(super) spacing_between_slices: Option<f64>,
    pub(super) gantry_tilt: Option<f64>,
    pub(super) frames: Option<i64>,
    /// The frame of an enhanced multi-frame object this slice is (0-based; `enhanced`),
    /// `None` for a single-frame file.
    pub(super) frame: Option<u32>,
    pub(super) samples_per_pixel: u16,
    pub(super) photometric: String,
    pub(super) bits_allocated: u16,
    pub(super) bits_stored: u16,
    pub(super) signed: bool,
    pub(super) slope: f64,
    pub(super) intercept: f64,
    /// An RT Dose's Dose Units when `slope` is its Dose Grid Scaling (`dose`).
    pub(super) dose_units: Option<String>,
    /// Geometry or rescale values present but unusable (not numbers, not finite, too
    /// few): refused when the slice is used, not taken as absent. Kept here rather than
    /// failing the listing so that another series of the folder can still be read.
    pub(super) invalid: Vec<String>,
}

/// The element's value as text; values stored as UN (explicit VR files written with
/// unknown VRs) are read as the text they hold, as pydicom does.
pub(super) fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
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
pub(super) fn dictionary_vr(tag: Tag) -> Option<VR> {
    StandardDataDictionary.by_tag(tag).map(|e| e.vr.relaxed())
}

fn floats(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
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

/// At least `n` finite numbers of a decimal-string element: `Ok(None)` when the element
/// is absent or empty, `Err` (naming the element and its text) when it is present but
/// not `n` finite numbers — `PixelSpacing` `nan\nan` is not "no PixelSpacing".
pub(super) fn checked_floats(
    obj: &InMemDicomObject,
    tag: Tag,
    name: &str,
    n: usize,
) -> Result<Option<Vec<f64>>, String> {
    if !matches!(obj.element_opt(tag), Ok(Some(_))) {
        return Ok(None);
    }
    let raw = text(obj, tag).unwrap_or_default();
    if raw.is_empty() {
        return Ok(None);
    }
    match floats(obj, tag) {
        Some(values) if values.len() >= n => Ok(Some(values)),
        _ => {
            let shown: String = raw.chars().take(64).collect();
            Err(format!(
                "{name} {shown:?} is not {n} finite number{}",
                if n == 1 { "" } else { "s" }
            ))
        }
    }
}

pub(super) fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
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
    /// The slice as messages name it: its file name, and its frame for a frame of an
    /// enhanced multi-frame object.
    pub(super) fn name(&self) -> String {
        let file = super::geometry::file_name(&self.path);
        match self.frame {
            Some(index) => format!("frame {index} of {file}"),
            None => file,
        }
    }

    pub(super) fn from_object(
        path: PathBuf,
        obj: &DefaultDicomObject,
    ) -> std::result::Result<Self, String> {
        let rows = u16_of(obj, tags::ROWS).ok_or("missing or invalid Rows")?;
        let columns = u16_of(obj, tags::COLUMNS).ok_or("missing or invalid Columns")?;
        let mut invalid = Vec::new();
        let mut array = |tag, name: &str, n: usize| {
            checked_floats(obj, tag, name, n).unwrap_or_else(|problem| {
                invalid.push(problem);
                None
            })
        };
        let orientation = array(
            tags::IMAGE_ORIENTATION_PATIENT,
            "ImageOrientationPatient",
            6,
        )
        .map(|v| [v[0], v[1], v[2], v[3], v[4], v[5]]);
        let position = array(tags::IMAGE_POSITION_PATIENT, "ImagePositionPatient", 3)
            .map(|v| [v[0], v[1], v[2]]);
        let pixel_spacing = array(tags::PIXEL_SPACING, "PixelSpacing", 2).map(|v| [v[0], v[1]]);
        let slice_thickness = array(tags::SLICE_THICKNESS, "SliceThickness", 1).map(|v| v[0]);
        let spacing_between_slices =
            array(tags::SPACING_BETWEEN_SLICES, "SpacingBetweenSlices", 1).map(|v| v[0]);
        let gantry_tilt = array(tags::GANTRY_DETECTOR_TILT, "GantryDetectorTilt", 1).map(|v| v[0]);
        let mut slope = array(tags::RESCALE_SLOPE, "RescaleSlope", 1).map_or(1.0, |v| v[0]);
        let intercept = array(tags::RESCALE_INTERCEPT, "RescaleIntercept", 1).map_or(0.0, |v| v[0]);
        let modality = text(obj, tags::MODALITY).unwrap_or_default();
        let dose_units = match super::dose::dose_scaling(obj, &modality) {
            Ok(Some((scaling, units))) => {
                slope = scaling;
                Some(units)
            }
            Ok(None) => None,
            Err(problem) => {
                invalid.push(problem);
                None
            }
        };
        if let Some(p) = pixel_spacing.filter(|p| p.iter().any(|v| *v <= 0.0)) {
            invalid.push(format!(
                "PixelSpacing {p:?} mm: pixel sizes must be positive"
            ));
        }
        Ok(Self {
            path,
            series_uid: text(obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
            description: text(obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
            modality,
            transfer_syntax: obj.meta().transfer_syntax().to_string(),
            rows,
            columns,
            orientation,
            position,
            pixel_spacing,
            slice_thickness,
            spacing_between_slices,
            gantry_tilt,
            frames: int(obj, tags::NUMBER_OF_FRAMES),
            frame: None,
            samples_per_pixel: u16_of(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1),
            photometric: text(obj, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default(),
            bits_allocated: u16_of(obj, tags::BITS_ALLOCATED).unwrap_or(0),
            bits_stored: u16_of(obj, tags::BITS_STORED).unwrap_or(0),
            signed: int(obj, tags::PIXEL_REPRESENTATION) == Some(1),
            slope,
            intercept,
            dose_units,
            invalid,
        })
    }
}
