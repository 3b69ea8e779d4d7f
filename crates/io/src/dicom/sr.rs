//! DICOM Measurement Report writer: a TID 1500 "Imaging Measurement Report" as one
//! Comprehensive 3D SR instance (PS3.3 A.35.13, PS3.16 TID 1500) that references a CT
//! series. NOT FOR CLINICAL USE.
//!
//! * Content tree: the root CONTAINER (title, SEPARATE, template 1500) holds the language
//!   (en-US), a device observer context (Observer Type = Device, Device Observer UID /
//!   Name / Manufacturer / Model Name), the procedure reported, an Image Library with one
//!   group (the source's Frame of Reference UID and one IMAGE item per source slice) and
//!   "Imaging Measurements" with one "Measurement Group" CONTAINER per
//!   [`MeasurementGroup`]: Tracking Identifier (TEXT) and Tracking Unique Identifier
//!   (UIDREF, generated when not given), Finding (CODE), Finding Site (CODE), one NUM per
//!   measurement (NumericValue as a DS of at most 16 characters plus the exact value in
//!   FloatingPointValue, UCUM units; Derivation and Measurement Method as concept
//!   modifiers) and one SCOORD3D per region (GraphicData as 32-bit floats in LPS mm,
//!   ReferencedFrameOfReferenceUID = the source's).
//! * Document: CompletionFlag COMPLETE, VerificationFlag UNVERIFIED, the source slices in
//!   CurrentRequestedProcedureEvidenceSequence, empty ReferencedPerformedProcedureStep /
//!   PerformedProcedureCode sequences. Patient and study are copied from the source as
//!   [`super::seg`] does, and its FrameOfReferenceUID goes into every SCOORD3D item and
//!   the Image Library group (missing UIDs derived the same way, with a warning; the IOD
//!   has no Frame of Reference module, so none at the top level); SeriesDescription
//!   carries "NOT FOR CLINICAL USE". Explicit VR Little Endian, written atomically.
//! * Refused ([`ErrorKind::InvalidInput`], nothing written): no groups, a group without
//!   measurements and regions, a non-finite value, a coordinate that is not finite or
//!   does not fit a 32-bit float, a POINT of other than one point, a POLYLINE of fewer than
//!   two, a MULTIPOINT of none, a POLYGON that is not closed (first point repeated last,
//!   at least three distinct points) or not planar, an ELLIPSOID of other than six points,
//!   unusable codes or texts, a malformed or repeated tracking UID.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, InMemDicomObject};

use super::derived::{
    check_code, check_text, check_uid, code_seq, copied_patient_study, dataset, decimals,
    derived_uid, doubles, floats, general_equipment, general_series, int_string, item, random_uid,
    read_header_object, read_source, seq, short, sop_common, sop_reference, text, write_file,
    Element, SourceSeries, Uids,
};
pub use super::derived::{Code, NOT_FOR_CLINICAL_USE};
use crate::error::{Error, ErrorKind, Result};

/// Comprehensive 3D SR Storage SOP Class UID.
pub const COMPREHENSIVE_3D_SR_STORAGE: &str = uids::COMPREHENSIVE3_DSR_STORAGE;
/// Largest distance (mm) of a POLYGON's point from the polygon's plane.
pub const COPLANAR_TOLERANCE_MM: f64 = 1e-3;

/// A UCUM unit, e.g. `ucum("mm", "millimeter")`.
pub fn ucum(unit: &str, meaning: &str) -> Code {
    Code::new(unit, "UCUM", meaning)
}

/// (mm, UCUM, "millimeter").
pub fn millimeter() -> Code {
    ucum("mm", "millimeter")
}

/// (%, UCUM, "percent").
pub fn percent() -> Code {
    ucum("%", "percent")
}

/// (deg, UCUM, "degree").
pub fn degree() -> Code {
    ucum("deg", "degree")
}

/// The whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementReport {
    /// Document title (root concept name), CID 7021.
    pub title: Code,
    /// Procedure reported (CID 100), e.g. (77477000, SCT, "CT").
    pub procedure_reported: Code,
    pub groups: Vec<MeasurementGroup>,
}

impl MeasurementReport {
    /// Titled (126000, DCM, "Imaging Measurement Report").
    pub fn new(procedure_reported: Code, groups: Vec<MeasurementGroup>) -> Self {
        Self {
            title: Code::new("126000", "DCM", "Imaging Measurement Report"),
            procedure_reported,
            groups,
        }
    }
}

/// One "Measurement Group" (TID 1501 / 1410 / 1411 alike): what was measured, where.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementGroup {
    /// Tracking Identifier (TEXT, 1 to 64 characters).
    pub tracking_identifier: String,
    /// Tracking Unique Identifier; generated (and returned in [`SrWritten`]) when `None`.
    pub tracking_uid: Option<String>,
    /// Finding (CID 7151 and the like).
    pub finding: Option<Code>,
    /// Finding Site (CID 7151 / SCT anatomy).
    pub finding_site: Option<Code>,
    pub measurements: Vec<Measurement>,
    pub regions: Vec<Region3d>,
}

impl MeasurementGroup {
    /// A group with no finding, measurement or region yet; its UID is generated.
    pub fn new(tracking_identifier: impl Into<String>) -> Self {
        Self {
            tracking_identifier: tracking_identifier.into(),
            tracking_uid: None,
            finding: None,
            finding_site: None,
            measurements: Vec::new(),
            regions: Vec::new(),
        }
    }
}

/// One NUM content item.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub concept: Code,
    pub value: f64,
    /// UCUM unit, e.g. [`millimeter`], [`percent`], [`degree`].
    pub unit: Code,
    /// Derivation (121401, DCM), e.g. (255605001, SCT, "Minimum").
    pub derivation: Option<Code>,
    /// Measurement Method (370129005, SCT).
    pub method: Option<Code>,
}

impl Measurement {
    pub fn new(concept: Code, value: f64, unit: Code) -> Self {
        Self {
            concept,
            value,
            unit,
            derivation: None,
            method: None,
        }
    }
}

/// SCOORD3D graphic types (PS3.3 C.18.9.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphicType3d {
    /// Exactly one point.
    Point,
    /// One or more points.
    Multipoint,
    /// Two or more connected points.
    Polyline,
    /// A closed planar polygon: the first point repeated as the last.
    Polygon,
    /// Six points: the end points of the three axes.
    Ellipsoid,
}

impl GraphicType3d {
    /// The GraphicType value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Point => "POINT",
            Self::Multipoint => "MULTIPOINT",
            Self::Polyline => "POLYLINE",
            Self::Polygon => "POLYGON",
            Self::Ellipsoid => "ELLIPSOID",
        }
    }
}

/// One SCOORD3D content item in the source's frame of reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Region3d {
    /// Concept name, (111030, DCM, "Image Region") by default.
    pub concept: Code,
    pub graphic_type: GraphicType3d,
    /// Patient coordinates (LPS, mm); stored as 32-bit floats.
    pub points_lps_mm: Vec<[f64; 3]>,
}

impl Region3d {
    /// An "Image Region".
    pub fn new(graphic_type: GraphicType3d, points_lps_mm: Vec<[f64; 3]>) -> Self {
        Self {
            concept: Code::new("111030", "DCM", "Image Region"),
            graphic_type,
            points_lps_mm,
        }
    }
}

/// Series, equipment and observer attributes of the written instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrOptions {
    /// SeriesDescription; " NOT FOR CLINICAL USE" is appended when absent.
    pub series_description: String,
    pub series_number: i32,
    pub instance_number: i32,
    /// Device Observer Name.
    pub device_observer_name: String,
    /// Device Observer UID; `None`: one fixed UID for Pinhole.
    pub device_observer_uid: Option<String>,
    pub manufacturer_model: String,
    pub software_version: String,
    pub device_serial_number: String,
}

impl Default for SrOptions {
    fn default() -> Self {
        Self {
            series_description: "Pinhole measurements".into(),
            series_number: 1001,
            instance_number: 1,
            device_observer_name: "Pinhole".into(),
            device_observer_uid: None,
            manufacturer_model: "Pinhole".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            device_serial_number: "0".into(),
        }
    }
}

/// What [`write_measurement_report`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrWritten {
    pub path: PathBuf,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    /// Each group's Tracking Unique Identifier (given or generated), in group order.
    pub tracking_uids: Vec<String>,
    pub warnings: Vec<String>,
}

/// Writes `report` about the series made of `source_files` as a Comprehensive 3D SR
/// Measurement Report to `out` (atomically).
pub fn write_measurement_report(
    source_files: &[PathBuf],
    report: &MeasurementReport,
    options: &SrOptions,
    out: &Path,
) -> Result<SrWritten> {
    let invalid = |m: String| Error::new(out, ErrorKind::InvalidInput(m));
    check_report(report).map_err(invalid)?;
    check_options(options).map_err(invalid)?;
    let source = read_source(source_files)?;
    let first = read_header_object(&source.slices[0].path)?;
    let mut warnings = source.warnings.clone();
    let uids = Uids::new(&source, &first, "SR", &mut warnings);
    let tracking_uids: Vec<String> = report
        .groups
        .iter()
        .map(|g| g.tracking_uid.clone().unwrap_or_else(random_uid))
        .collect();
    let parts = Parts {
        source: &source,
        first: &first,
        report,
        options,
        uids: &uids,
        tracking_uids: &tracking_uids,
    };
    write_file(build_dataset(&parts), out)?;
    Ok(SrWritten {
        path: out.to_path_buf(),
        sop_instance_uid: uids.instance,
        series_instance_uid: uids.series,
        tracking_uids,
        warnings,
    })
}

// ---------------------------------------------------------------------------------------
// Checks of the caller's input

fn check_report(report: &MeasurementReport) -> std::result::Result<(), String> {
    if report.groups.is_empty() {
        return Err("no measurement groups: a Measurement Report needs at least one".into());
    }
    check_code(&report.title).map_err(|m| format!("title: {m}"))?;
    check_code(&report.procedure_reported).map_err(|m| format!("procedure reported: {m}"))?;
    let mut seen = HashMap::new();
    for (n, group) in report.groups.iter().enumerate() {
        let what = format!(
            "measurement group {} ({:?})",
            n + 1,
            group.tracking_identifier
        );
        check_group(group).map_err(|m| format!("{what}: {m}"))?;
        if let Some(uid) = &group.tracking_uid {
            if let Some(other) = seen.insert(uid.as_str(), n) {
                return Err(format!(
                    "{what}: tracking UID {uid} is also measurement group {}'s",
                    other + 1
                ));
            }
        }
    }
    Ok(())
}

fn check_group(group: &MeasurementGroup) -> std::result::Result<(), String> {
    check_text("Tracking Identifier", &group.tracking_identifier, 64)?;
    if let Some(uid) = &group.tracking_uid {
        check_uid("Tracking Unique Identifier", uid)?;
    }
    for code in [&group.finding, &group.finding_site].into_iter().flatten() {
        check_code(code)?;
    }
    if group.measurements.is_empty() && group.regions.is_empty() {
        return Err("no measurements and no regions".into());
    }
    for (n, m) in group.measurements.iter().enumerate() {
        check_measurement(m)
            .map_err(|e| format!("measurement {} ({}): {e}", n + 1, m.concept.meaning))?;
    }
    for (n, r) in group.regions.iter().enumerate() {
        check_region(r).map_err(|e| {
            format!(
                "region {} ({} {}): {e}",
                n + 1,
                r.graphic_type.as_str(),
                r.concept.meaning
            )
        })?;
    }
    Ok(())
}

fn check_measurement(m: &Measurement) -> std::result::Result<(), String> {
    if !m.value.is_finite() {
        return Err(format!("value {} is not a finite number", m.value));
    }
    for code in [
        Some(&m.concept),
        Some(&m.unit),
        m.derivation.as_ref(),
        m.method.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        check_code(code)?;
    }
    Ok(())
}

/// The points as stored (32-bit floats), every coordinate finite.
fn stored_points(points: &[[f64; 3]]) -> std::result::Result<Vec<[f32; 3]>, String> {
    points
        .iter()
        .enumerate()
        .map(|(n, p)| {
            let stored = p.map(|v| v as f32);
            if p.iter().all(|v| v.is_finite()) && stored.iter().all(|v| v.is_finite()) {
                Ok(stored)
            } else {
                Err(format!(
                    "point {} {p:?} is not finite in 32-bit floating point (LPS mm)",
                    n + 1
                ))
            }
        })
        .collect()
}

fn check_region(region: &Region3d) -> std::result::Result<(), String> {
    check_code(&region.concept)?;
    let points = stored_points(&region.points_lps_mm)?;
    let n = points.len();
    let count_ok = match region.graphic_type {
        GraphicType3d::Point => n == 1,
        GraphicType3d::Multipoint => n >= 1,
        GraphicType3d::Polyline => n >= 2,
        GraphicType3d::Polygon => n >= 4,
        GraphicType3d::Ellipsoid => n == 6,
    };
    if !count_ok {
        let needed = match region.graphic_type {
            GraphicType3d::Point => "exactly 1",
            GraphicType3d::Multipoint => "at least 1",
            GraphicType3d::Polyline => "at least 2",
            GraphicType3d::Polygon => "at least 4 (3 corners, the first repeated last)",
            GraphicType3d::Ellipsoid => "exactly 6 (the ends of the three axes)",
        };
        return Err(format!("{n} points: {needed} needed"));
    }
    if region.graphic_type == GraphicType3d::Polygon {
        check_polygon(&points)?;
    }
    Ok(())
}

/// Closed (first point = last point as stored) and planar within
/// [`COPLANAR_TOLERANCE_MM`].
fn check_polygon(points: &[[f32; 3]]) -> std::result::Result<(), String> {
    if points.first() != points.last() {
        return Err("not closed: repeat the first point as the last".into());
    }
    let corners: Vec<[f64; 3]> = points[..points.len() - 1]
        .iter()
        .map(|p| p.map(f64::from))
        .collect();
    let count = corners.len() as f64;
    let centre = [0, 1, 2].map(|a| corners.iter().map(|p| p[a]).sum::<f64>() / count);
    // Newell's normal: twice the polygon's vector area.
    let mut normal = [0.0; 3];
    for (i, p) in corners.iter().enumerate() {
        let q = corners[(i + 1) % corners.len()];
        normal[0] += (p[1] - q[1]) * (p[2] + q[2]);
        normal[1] += (p[2] - q[2]) * (p[0] + q[0]);
        normal[2] += (p[0] - q[0]) * (p[1] + q[1]);
    }
    let length = normal.iter().map(|v| v * v).sum::<f64>().sqrt();
    if length <= f64::EPSILON || length.is_nan() {
        return Err("degenerate: its corners enclose no area".into());
    }
    let worst = corners
        .iter()
        .map(|p| ((0..3).map(|a| (p[a] - centre[a]) * normal[a]).sum::<f64>() / length).abs())
        .fold(0.0, f64::max);
    if worst.is_nan() || worst > COPLANAR_TOLERANCE_MM {
        return Err(format!(
            "not planar: a corner lies {worst:.4} mm from the polygon's plane (tolerance \
             {COPLANAR_TOLERANCE_MM} mm)"
        ));
    }
    Ok(())
}

fn check_options(options: &SrOptions) -> std::result::Result<(), String> {
    check_text("Device Observer Name", &options.device_observer_name, 64)?;
    if let Some(uid) = &options.device_observer_uid {
        check_uid("Device Observer UID", uid)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Content items

/// Relationship types (PS3.3 C.17.3.2.4).
const CONTAINS: &str = "CONTAINS";
const HAS_CONCEPT_MOD: &str = "HAS CONCEPT MOD";
const HAS_OBS_CONTEXT: &str = "HAS OBS CONTEXT";
const HAS_ACQ_CONTEXT: &str = "HAS ACQ CONTEXT";

fn dcm(value: &str, meaning: &str) -> Code {
    Code::new(value, "DCM", meaning)
}

/// A content item: relationship, value type, concept name and the value's elements.
fn content_item(
    relationship: &str,
    value_type: &str,
    concept: Option<&Code>,
    value: Vec<Element>,
) -> InMemDicomObject {
    let mut elements = vec![
        text(tags::RELATIONSHIP_TYPE, VR::CS, relationship),
        text(tags::VALUE_TYPE, VR::CS, value_type),
    ];
    if let Some(concept) = concept {
        elements.push(code_seq(tags::CONCEPT_NAME_CODE_SEQUENCE, concept));
    }
    elements.extend(value);
    item(elements)
}

/// The elements of a CONTAINER's value: SEPARATE, its children.
fn container_value(children: Vec<InMemDicomObject>) -> Vec<Element> {
    vec![
        text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"),
        seq(tags::CONTENT_SEQUENCE, children),
    ]
}

fn container(
    relationship: &str,
    concept: &Code,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    content_item(
        relationship,
        "CONTAINER",
        Some(concept),
        container_value(children),
    )
}

fn code_content(relationship: &str, concept: &Code, value: &Code) -> InMemDicomObject {
    content_item(
        relationship,
        "CODE",
        Some(concept),
        vec![code_seq(tags::CONCEPT_CODE_SEQUENCE, value)],
    )
}

fn text_content(relationship: &str, concept: &Code, value: &str) -> InMemDicomObject {
    content_item(
        relationship,
        "TEXT",
        Some(concept),
        vec![text(tags::TEXT_VALUE, VR::UT, value)],
    )
}

fn uidref_content(relationship: &str, concept: &Code, uid: &str) -> InMemDicomObject {
    content_item(
        relationship,
        "UIDREF",
        Some(concept),
        vec![text(tags::UID, VR::UI, uid)],
    )
}

/// NUM: NumericValue (DS) and the exact FloatingPointValue, the unit; derivation and
/// method as concept modifiers.
fn num_content(m: &Measurement) -> InMemDicomObject {
    let measured = item(vec![
        decimals(tags::NUMERIC_VALUE, &[m.value]),
        doubles(tags::FLOATING_POINT_VALUE, &[m.value]),
        code_seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, &m.unit),
    ]);
    let mut value = vec![seq(tags::MEASURED_VALUE_SEQUENCE, vec![measured])];
    let modifiers: Vec<InMemDicomObject> = [
        (dcm("121401", "Derivation"), &m.derivation),
        (
            Code::new("370129005", "SCT", "Measurement Method"),
            &m.method,
        ),
    ]
    .iter()
    .filter_map(|(concept, code)| {
        code.as_ref()
            .map(|c| code_content(HAS_CONCEPT_MOD, concept, c))
    })
    .collect();
    if !modifiers.is_empty() {
        value.push(seq(tags::CONTENT_SEQUENCE, modifiers));
    }
    content_item(CONTAINS, "NUM", Some(&m.concept), value)
}

fn scoord3d_content(region: &Region3d, frame_of_reference: &str) -> InMemDicomObject {
    let data: Vec<f32> = region
        .points_lps_mm
        .iter()
        .flat_map(|p| p.map(|v| v as f32))
        .collect();
    content_item(
        CONTAINS,
        "SCOORD3D",
        Some(&region.concept),
        vec![
            text(tags::GRAPHIC_TYPE, VR::CS, region.graphic_type.as_str()),
            floats(tags::GRAPHIC_DATA, &data),
            text(
                tags::REFERENCED_FRAME_OF_REFERENCE_UID,
                VR::UI,
                frame_of_reference,
            ),
        ],
    )
}

// ---------------------------------------------------------------------------------------
// Data set

/// Everything the data set is made of.
struct Parts<'a> {
    source: &'a SourceSeries,
    first: &'a DefaultDicomObject,
    report: &'a MeasurementReport,
    options: &'a SrOptions,
    uids: &'a Uids,
    tracking_uids: &'a [String],
}

fn build_dataset(parts: &Parts) -> InMemDicomObject {
    let options = parts.options;
    let mut elements = sop_common(COMPREHENSIVE_3D_SR_STORAGE, parts.uids);
    // The Comprehensive 3D SR IOD has no Frame of Reference module (dciodvfy calls a
    // FrameOfReferenceUID here a Standard Extended SOP Class): the source's frame of
    // reference is named by every SCOORD3D item and by the Image Library group.
    elements.extend(copied_patient_study(parts.first, parts.uids));
    elements.extend(general_series(
        "SR",
        parts.uids,
        options.series_number,
        &options.series_description,
    ));
    elements.push(seq(
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        Vec::new(),
    ));
    elements.extend(general_equipment(
        &options.manufacturer_model,
        &options.software_version,
        &options.device_serial_number,
    ));
    elements.extend(document_general(parts));
    elements.extend(root_content(parts));
    dataset(elements)
}

/// SR Document General: flags, instance number, evidence.
fn document_general(parts: &Parts) -> Vec<Element> {
    let instances = parts.source.slices.iter().map(sop_reference).collect();
    let evidence = item(vec![
        text(tags::STUDY_INSTANCE_UID, VR::UI, &parts.uids.study),
        seq(
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![item(vec![
                text(tags::SERIES_INSTANCE_UID, VR::UI, &parts.uids.source_series),
                seq(tags::REFERENCED_SOP_SEQUENCE, instances),
            ])],
        ),
    ]);
    vec![
        int_string(
            tags::INSTANCE_NUMBER,
            i64::from(parts.options.instance_number),
        ),
        text(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"),
        text(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"),
        seq(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, Vec::new()),
        seq(
            tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
            vec![evidence],
        ),
    ]
}

/// The root content item's attributes (SR Document Content, TID 1500).
fn root_content(parts: &Parts) -> Vec<Element> {
    let report = parts.report;
    let mut children = vec![code_content(
        HAS_CONCEPT_MOD,
        &dcm("121049", "Language of Content Item and Descendants"),
        &Code::new("en-US", "RFC5646", "English (United States)"),
    )];
    children.extend(observer_context(parts.options));
    children.push(code_content(
        HAS_CONCEPT_MOD,
        &dcm("121058", "Procedure reported"),
        &report.procedure_reported,
    ));
    children.push(image_library(parts.source, &parts.uids.frame_of_reference));
    let groups = report
        .groups
        .iter()
        .zip(parts.tracking_uids)
        .map(|(g, uid)| measurement_group(g, uid, &parts.uids.frame_of_reference))
        .collect();
    children.push(container(
        CONTAINS,
        &dcm("126010", "Imaging Measurements"),
        groups,
    ));
    let template = item(vec![
        text(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
        text(tags::TEMPLATE_IDENTIFIER, VR::CS, "1500"),
    ]);
    let mut elements = vec![
        text(tags::VALUE_TYPE, VR::CS, "CONTAINER"),
        code_seq(tags::CONCEPT_NAME_CODE_SEQUENCE, &report.title),
        seq(tags::CONTENT_TEMPLATE_SEQUENCE, vec![template]),
    ];
    elements.extend(container_value(children));
    elements
}

/// TID 1002 / 1004: a device observer.
fn observer_context(options: &SrOptions) -> Vec<InMemDicomObject> {
    let uid = options
        .device_observer_uid
        .clone()
        .unwrap_or_else(|| derived_uid("Device Observer UID", &["Pinhole"]));
    vec![
        code_content(
            HAS_OBS_CONTEXT,
            &dcm("121005", "Observer Type"),
            &dcm("121007", "Device"),
        ),
        uidref_content(HAS_OBS_CONTEXT, &dcm("121012", "Device Observer UID"), &uid),
        text_content(
            HAS_OBS_CONTEXT,
            &dcm("121013", "Device Observer Name"),
            &short(&options.device_observer_name, 64),
        ),
        text_content(
            HAS_OBS_CONTEXT,
            &dcm("121014", "Device Observer Manufacturer"),
            "Pinhole",
        ),
        text_content(
            HAS_OBS_CONTEXT,
            &dcm("121015", "Device Observer Model Name"),
            &short(&options.manufacturer_model, 64),
        ),
    ]
}

/// TID 1600: one Image Library Group (the source's frame of reference, every slice).
fn image_library(source: &SourceSeries, frame_of_reference: &str) -> InMemDicomObject {
    let mut entries = vec![uidref_content(
        HAS_ACQ_CONTEXT,
        &dcm("112227", "Frame of Reference UID"),
        frame_of_reference,
    )];
    entries.extend(source.slices.iter().map(|slice| {
        content_item(
            CONTAINS,
            "IMAGE",
            None,
            vec![seq(
                tags::REFERENCED_SOP_SEQUENCE,
                vec![sop_reference(slice)],
            )],
        )
    }));
    container(
        CONTAINS,
        &dcm("111028", "Image Library"),
        vec![container(
            CONTAINS,
            &dcm("126200", "Image Library Group"),
            entries,
        )],
    )
}

/// One Measurement Group CONTAINER.
fn measurement_group(
    group: &MeasurementGroup,
    tracking_uid: &str,
    frame_of_reference: &str,
) -> InMemDicomObject {
    let mut children = vec![
        text_content(
            HAS_OBS_CONTEXT,
            &dcm("112039", "Tracking Identifier"),
            &group.tracking_identifier,
        ),
        uidref_content(
            HAS_OBS_CONTEXT,
            &dcm("112040", "Tracking Unique Identifier"),
            tracking_uid,
        ),
    ];
    if let Some(finding) = &group.finding {
        children.push(code_content(CONTAINS, &dcm("121071", "Finding"), finding));
    }
    if let Some(site) = &group.finding_site {
        children.push(code_content(
            HAS_CONCEPT_MOD,
            &Code::new("363698007", "SCT", "Finding Site"),
            site,
        ));
    }
    children.extend(
        group
            .regions
            .iter()
            .map(|r| scoord3d_content(r, frame_of_reference)),
    );
    children.extend(group.measurements.iter().map(num_content));
    container(CONTAINS, &dcm("125007", "Measurement Group"), children)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(graphic_type: GraphicType3d, points: &[[f64; 3]]) -> Region3d {
        Region3d::new(graphic_type, points.to_vec())
    }

    #[test]
    fn point_counts_are_checked_per_graphic_type() {
        let p = [1.0, 2.0, 3.0];
        let q = [4.0, 5.0, 6.0];
        assert!(check_region(&region(GraphicType3d::Point, &[p])).is_ok());
        assert!(check_region(&region(GraphicType3d::Point, &[p, q])).is_err());
        assert!(check_region(&region(GraphicType3d::Point, &[])).is_err());
        assert!(check_region(&region(GraphicType3d::Polyline, &[p])).is_err());
        assert!(check_region(&region(GraphicType3d::Polyline, &[p, q])).is_ok());
        assert!(check_region(&region(GraphicType3d::Multipoint, &[])).is_err());
        assert!(check_region(&region(GraphicType3d::Ellipsoid, &[p; 5])).is_err());
        let nan = [f64::NAN, 0.0, 0.0];
        let message = check_region(&region(GraphicType3d::Polyline, &[p, nan])).unwrap_err();
        assert!(message.contains("point 2"), "{message}");
        assert!(check_region(&region(GraphicType3d::Point, &[[1e39, 0.0, 0.0]])).is_err());
    }

    #[test]
    fn polygons_must_be_closed_and_planar() {
        let square = [
            [0.0, 0.0, 5.0],
            [10.0, 0.0, 5.0],
            [10.0, 10.0, 5.0],
            [0.0, 10.0, 5.0],
            [0.0, 0.0, 5.0],
        ];
        assert!(check_region(&region(GraphicType3d::Polygon, &square)).is_ok());
        let open = &square[..4];
        let message = check_region(&region(GraphicType3d::Polygon, open)).unwrap_err();
        assert!(message.contains("not closed"), "{message}");
        let mut bent = square;
        bent[2][2] = 5.1;
        let message = check_region(&region(GraphicType3d::Polygon, &bent)).unwrap_err();
        assert!(message.contains("not planar"), "{message}");
        let line = [[0.0; 3], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0; 3]];
        let message = check_region(&region(GraphicType3d::Polygon, &line)).unwrap_err();
        assert!(message.contains("degenerate"), "{message}");
    }

    #[test]
    fn reports_are_checked() {
        let ct = Code::new("77477000", "SCT", "CT");
        let empty = MeasurementReport::new(ct.clone(), Vec::new());
        assert!(check_report(&empty)
            .unwrap_err()
            .contains("no measurement groups"));
        let mut group = MeasurementGroup::new("a");
        assert!(
            check_report(&MeasurementReport::new(ct.clone(), vec![group.clone()]))
                .unwrap_err()
                .contains("no measurements and no regions")
        );
        group
            .measurements
            .push(Measurement::new(dcm("1", "x"), f64::INFINITY, millimeter()));
        let message =
            check_report(&MeasurementReport::new(ct.clone(), vec![group.clone()])).unwrap_err();
        assert!(message.contains("not a finite number"), "{message}");
        group.measurements[0].value = 1.5;
        group.tracking_uid = Some("1.2.3".into());
        let twice = MeasurementReport::new(ct.clone(), vec![group.clone(), group.clone()]);
        assert!(check_report(&twice)
            .unwrap_err()
            .contains("also measurement group 1"));
        group.tracking_uid = Some("1.2.03".into());
        assert!(check_report(&MeasurementReport::new(ct, vec![group])).is_err());
    }
}
