//! Single-file X-rays (XA, RF, DX, CR …): one chosen frame, modality LUT applied, and the
//! acquisition geometry the header records.
//!
//! Geometry tags that are present but unusable (not finite numbers, distances or pixel
//! spacings ≤ 0, angles outside ±180°) are **ignored with a warning** in
//! [`XrayGeometry::warnings`] rather than refused: the image itself is still good, and the
//! caller can supply the value another way. The caller must show those warnings.

use std::path::PathBuf;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;

use super::frames::frame_count;
use super::header::{checked_floats, SliceHeader};
use super::parse::parse;
use super::pixels::{check_pixel_format, check_transfer_syntax, decode_frame};
use crate::error::ErrorKind;

/// The X-ray acquisition geometry of a DICOM file; every value is `None` when the tag is
/// absent, empty or unusable (then a line in `warnings` says why).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XrayGeometry {
    /// DistanceSourceToDetector (0018,1110): source to detector (SID), mm.
    pub distance_source_to_detector_mm: Option<f64>,
    /// DistanceSourceToPatient (0018,1111): source to isocentre (SOD), mm.
    pub distance_source_to_patient_mm: Option<f64>,
    /// ImagerPixelSpacing (0018,1164) at the detector plane, mm, in DICOM order:
    /// `[row spacing (between rows, vertical), column spacing (between columns,
    /// horizontal)]`.
    pub imager_pixel_spacing_mm: Option<[f64; 2]>,
    /// PositionerPrimaryAngle (0018,1510), degrees: + = LAO, − = RAO.
    pub positioner_primary_angle_deg: Option<f64>,
    /// PositionerSecondaryAngle (0018,1511), degrees: + = CRAN, − = CAUD.
    pub positioner_secondary_angle_deg: Option<f64>,
    /// NumberOfFrames (1 when absent).
    pub number_of_frames: usize,
    /// Geometry tags present but ignored, and why.
    pub warnings: Vec<String>,
}

impl XrayGeometry {
    fn read(obj: &DefaultDicomObject, h: &SliceHeader) -> Result<Self, ErrorKind> {
        let mut warnings = Vec::new();
        let mut value = |tag: Tag, name: &str, n: usize, ok: &dyn Fn(f64) -> bool, rule: &str| {
            match checked_floats(obj, tag, name, n) {
                Ok(Some(v)) if v.len() == n && v.iter().all(|x| ok(*x)) => Some(v),
                Ok(Some(v)) => {
                    warnings.push(format!(
                        "{name} {v:?} ignored: expected {n} value{} {rule}",
                        if n == 1 { "" } else { "s" }
                    ));
                    None
                }
                Ok(None) => None,
                Err(problem) => {
                    warnings.push(format!("{problem}: ignored"));
                    None
                }
            }
        };
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let angle = |x: f64| x.is_finite() && x.abs() <= 180.0;
        let distance_source_to_detector_mm = value(
            tags::DISTANCE_SOURCE_TO_DETECTOR,
            "DistanceSourceToDetector",
            1,
            &positive,
            "> 0 mm",
        )
        .map(|v| v[0]);
        let distance_source_to_patient_mm = value(
            tags::DISTANCE_SOURCE_TO_PATIENT,
            "DistanceSourceToPatient",
            1,
            &positive,
            "> 0 mm",
        )
        .map(|v| v[0]);
        let imager_pixel_spacing_mm = value(
            tags::IMAGER_PIXEL_SPACING,
            "ImagerPixelSpacing",
            2,
            &positive,
            "> 0 mm",
        )
        .map(|v| [v[0], v[1]]);
        let positioner_primary_angle_deg = value(
            tags::POSITIONER_PRIMARY_ANGLE,
            "PositionerPrimaryAngle",
            1,
            &angle,
            "within ±180°",
        )
        .map(|v| v[0]);
        let positioner_secondary_angle_deg = value(
            tags::POSITIONER_SECONDARY_ANGLE,
            "PositionerSecondaryAngle",
            1,
            &angle,
            "within ±180°",
        )
        .map(|v| v[0]);
        Ok(Self {
            distance_source_to_detector_mm,
            distance_source_to_patient_mm,
            imager_pixel_spacing_mm,
            positioner_primary_angle_deg,
            positioner_secondary_angle_deg,
            number_of_frames: frame_count(h)?,
            warnings,
        })
    }
}

/// One frame of a DICOM X-ray held in memory.
pub(crate) struct DicomXrayFrame {
    pub(crate) columns: usize,
    pub(crate) rows: usize,
    /// `stored · RescaleSlope + RescaleIntercept`, row 0 first.
    pub(crate) values: Vec<f32>,
    pub(crate) geometry: XrayGeometry,
}

/// The geometry of one DICOM file held in memory (with or without the preamble); its
/// lengths are checked as for a series, its pixels are not decoded.
pub(crate) fn read_geometry(bytes: &[u8]) -> Result<XrayGeometry, ErrorKind> {
    let obj = parse(bytes, false).map_err(ErrorKind::Dicom)?;
    let header =
        SliceHeader::from_object(PathBuf::new(), &obj).map_err(ErrorKind::InvalidHeader)?;
    XrayGeometry::read(&obj, &header)
}

/// Frame `index` (0-based) of one DICOM file held in memory, greyscale, modality LUT
/// applied (as pydicom's `apply_modality_lut`), with the file's geometry. An index at or
/// beyond NumberOfFrames is refused, naming the count.
pub(crate) fn decode_frame_rescaled(
    bytes: &[u8],
    index: usize,
) -> Result<DicomXrayFrame, ErrorKind> {
    let obj = parse(bytes, false).map_err(ErrorKind::Dicom)?;
    let header =
        SliceHeader::from_object(PathBuf::new(), &obj).map_err(ErrorKind::InvalidHeader)?;
    let geometry = XrayGeometry::read(&obj, &header)?;
    let frames = geometry.number_of_frames;
    if index >= frames {
        return Err(ErrorKind::InvalidInput(format!(
            "frame {index} requested, but the file holds {frames} frame{} (NumberOfFrames; \
             frames are numbered from 0)",
            if frames == 1 { "" } else { "s" }
        )));
    }
    let index = u32::try_from(index)
        .map_err(|_| ErrorKind::InvalidInput(format!("frame index {index} is too large")))?;
    check_transfer_syntax(&header.transfer_syntax)?;
    check_pixel_format(&header)?;
    let raw = decode_frame(&obj, &header, index).map_err(ErrorKind::Dicom)?;
    let (slope, intercept) = (header.slope, header.intercept);
    Ok(DicomXrayFrame {
        columns: usize::from(header.columns),
        rows: usize::from(header.rows),
        values: raw
            .iter()
            .map(|&r| (r as f64 * slope + intercept) as f32)
            .collect(),
        geometry,
    })
}
