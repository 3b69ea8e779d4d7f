//! Measurement Report writer (`pinhole_io::dicom::sr`, TID 1500 in a Comprehensive 3D
//! SR) against highdicom and pydicom (`tests/py/sr_reference.py`) and DICOM's validator
//! dciodvfy (dicom3tools), on a report about the real CT series in
//! `../shared/data/dicom-ct-series`: a needle path (target and entry POINTs, the path as
//! a POLYLINE, its length), a tumour (ELLIPSOID surface, ablation margin −1.25 mm), a
//! vessel (POLYGON cross-section, stenosis 62.5 %) and a summary without regions
//! (clearance 7.5 mm, angle 37.25°).

use std::path::Path;

use pinhole_io::dicom::sr::{
    degree, millimeter, percent, write_measurement_report, Code, GraphicType3d, Measurement,
    MeasurementGroup, MeasurementReport, Region3d, SrOptions, SrWritten,
};
use pinhole_io::dicom::{self, DicomOptions};
use pinhole_io::ErrorKind;
use pinhole_volume::Grid;
use serde_json::Value;
use tempfile::TempDir;

use crate::common::*;
use crate::seg::{assert_dciodvfy_clean, ct_files};

const CT_SERIES: &str = "dicom-ct-series";
const NEEDLE_UID: &str = "2.25.301159371326390398017391093219398746193";
/// NumericValue (DS, at most 16 characters) against the value: relative difference.
const DS_RELATIVE_TOLERANCE: f64 = 1e-9;

/// The grid of the shared CT series as Pinhole reads it (also used by `seg_input`).
pub(crate) fn ct_grid() -> Grid {
    dicom::read_series(
        &shared_data(CT_SERIES),
        &DicomOptions::default(),
        &mut |_, _| {},
    )
    .unwrap()
    .volume
    .grid()
    .clone()
}

fn private(value: &str, meaning: &str) -> Code {
    Code::new(value, "99PINHOLE", meaning)
}

fn report(grid: &Grid) -> MeasurementReport {
    let target = grid.index_to_world([300.25, 240.5, 9.4]);
    let entry = grid.index_to_world([420.75, 180.125, 2.6]);
    let middle = [0, 1, 2].map(|a| 0.5 * (target[a] + entry[a]));
    let length = pinhole_volume::math::distance(entry, target);

    let mut needle = MeasurementGroup::new("Needle path ø 1");
    needle.tracking_uid = Some(NEEDLE_UID.into());
    needle.regions = vec![
        Region3d {
            concept: private("PH0010", "Needle target"),
            graphic_type: GraphicType3d::Point,
            points_lps_mm: vec![target],
        },
        Region3d {
            concept: private("PH0011", "Needle entry"),
            graphic_type: GraphicType3d::Point,
            points_lps_mm: vec![entry],
        },
        Region3d::new(GraphicType3d::Polyline, vec![entry, middle, target]),
    ];
    needle.measurements = vec![Measurement::new(
        Code::new("410668003", "SCT", "Length"),
        length,
        millimeter(),
    )];

    let (a, b, c) = (12.5, 9.75, 7.125);
    let mut tumour = MeasurementGroup::new("Tumour 1");
    tumour.finding = Some(Code::new("108369006", "SCT", "Neoplasm"));
    tumour.finding_site = Some(Code::new("10200004", "SCT", "Liver"));
    let axis = |d: [f64; 3]| [0, 1, 2].map(|i| target[i] + d[i]);
    tumour.regions = vec![Region3d {
        concept: Code::new("121231", "DCM", "Volume Surface"),
        graphic_type: GraphicType3d::Ellipsoid,
        points_lps_mm: vec![
            axis([-a, 0.0, 0.0]),
            axis([a, 0.0, 0.0]),
            axis([0.0, -b, 0.0]),
            axis([0.0, b, 0.0]),
            axis([0.0, 0.0, -c]),
            axis([0.0, 0.0, c]),
        ],
    }];
    let mut margin = Measurement::new(private("PH0002", "Ablation margin"), -1.25, millimeter());
    margin.derivation = Some(Code::new("255605001", "SCT", "Minimum"));
    tumour.measurements = vec![margin];

    let z = grid.index_to_world([0.0, 0.0, 12.0])[2];
    let corner = |x: f64, y: f64| [x, y, z];
    let mut vessel = MeasurementGroup::new("Hepatic artery");
    vessel.finding_site = Some(private("PH0030", "Hepatic artery"));
    vessel.regions = vec![Region3d::new(
        GraphicType3d::Polygon,
        vec![
            corner(-20.5, -180.25),
            corner(-14.75, -180.25),
            corner(-14.75, -173.5),
            corner(-20.5, -173.5),
            corner(-20.5, -180.25),
        ],
    )];
    let mut stenosis = Measurement::new(Code::new("415582006", "SCT", "Stenosis"), 62.5, percent());
    stenosis.method = Some(private("PH0020", "Diameter ratio"));
    vessel.measurements = vec![stenosis];

    let mut summary = MeasurementGroup::new("Plan summary");
    summary.measurements = vec![
        Measurement::new(
            private("PH0001", "Clearance to critical structure"),
            7.5,
            millimeter(),
        ),
        Measurement::new(
            private("PH0003", "Needle angle to the axial plane"),
            37.25,
            degree(),
        ),
        // 1/3 mm: NumericValue cannot hold it exactly, FloatingPointValue does.
        Measurement::new(private("PH0004", "Deflection"), 1.0 / 3.0, millimeter()),
    ];

    MeasurementReport::new(
        Code::new("77477000", "SCT", "Computerized axial tomography"),
        vec![needle, tumour, vessel, summary],
    )
}

fn write(report: &MeasurementReport, out: &Path) -> pinhole_io::Result<SrWritten> {
    write_measurement_report(&ct_files(), report, &SrOptions::default(), out)
}

fn code_json(code: &Code) -> Value {
    serde_json::json!([code.value, code.scheme, code.meaning])
}

fn opt_code_json(code: &Option<Code>) -> Value {
    code.as_ref().map_or(Value::Null, code_json)
}

/// The point as GraphicData (FL) holds it.
fn as_stored(p: [f64; 3]) -> [f64; 3] {
    p.map(|v| f64::from(v as f32))
}

fn assert_regions(theirs: &Value, ours: &[Region3d], frame_of_reference: &str, what: &str) {
    let theirs = theirs.as_array().unwrap();
    assert_eq!(theirs.len(), ours.len(), "{what}: regions");
    for (n, (t, o)) in theirs.iter().zip(ours).enumerate() {
        let what = format!("{what} region {n}");
        assert_eq!(t["concept"], code_json(&o.concept), "{what}");
        assert_eq!(t["graphic_type"], o.graphic_type.as_str(), "{what}");
        assert_eq!(t["frame_of_reference"], frame_of_reference, "{what}");
        let points = t["points"].as_array().unwrap();
        assert_eq!(points.len(), o.points_lps_mm.len(), "{what}: points");
        for (p, q) in points.iter().zip(&o.points_lps_mm) {
            let p = [0, 1, 2].map(|a| p[a].as_f64().unwrap());
            assert_eq!(p, as_stored(*q), "{what}: point (LPS mm, as 32-bit floats)");
        }
    }
}

/// highdicom's reading of one group.
fn assert_highdicom_group(
    theirs: &Value,
    ours: &MeasurementGroup,
    uid: &str,
    kind: &str,
    frame_of_reference: &str,
) {
    let what = format!("highdicom group {:?}", ours.tracking_identifier);
    assert_eq!(theirs["kind"], kind, "{what}");
    assert_eq!(theirs["tracking_uid"], uid, "{what}");
    assert_eq!(
        theirs["tracking_identifier"],
        ours.tracking_identifier.as_str(),
        "{what}"
    );
    assert_eq!(theirs["finding"], opt_code_json(&ours.finding), "{what}");
    let sites: Vec<Value> = ours.finding_site.iter().map(code_json).collect();
    assert_eq!(theirs["finding_sites"], Value::Array(sites), "{what}");
    let measurements = theirs["measurements"].as_array().unwrap();
    assert_eq!(measurements.len(), ours.measurements.len(), "{what}");
    for (t, o) in measurements.iter().zip(&ours.measurements) {
        let what = format!("{what} {:?}", o.concept.meaning);
        assert_eq!(t["concept"], code_json(&o.concept), "{what}");
        assert_eq!(t["unit"], code_json(&o.unit), "{what}");
        assert_eq!(t["derivation"], opt_code_json(&o.derivation), "{what}");
        assert_eq!(t["method"], opt_code_json(&o.method), "{what}");
        assert_eq!(t["value"].as_f64().unwrap(), o.value, "{what}: value");
    }
    assert_regions(&theirs["regions"], &ours.regions, frame_of_reference, &what);
}

/// pydicom's raw reading of one group: DS strings, FD values, relationship types.
fn assert_pydicom_group(
    theirs: &Value,
    ours: &MeasurementGroup,
    uid: &str,
    frame_of_reference: &str,
) {
    let what = format!("pydicom group {:?}", ours.tracking_identifier);
    assert_eq!(theirs["tracking_uid"], uid, "{what}");
    assert_eq!(
        theirs["tracking_identifier"],
        ours.tracking_identifier.as_str(),
        "{what}"
    );
    assert_eq!(theirs["finding"], opt_code_json(&ours.finding), "{what}");
    assert_eq!(
        theirs["finding_site"],
        opt_code_json(&ours.finding_site),
        "{what}"
    );
    let measurements = theirs["measurements"].as_array().unwrap();
    assert_eq!(measurements.len(), ours.measurements.len(), "{what}");
    for (t, o) in measurements.iter().zip(&ours.measurements) {
        let what = format!("{what} {:?}", o.concept.meaning);
        assert_eq!(t["concept"], code_json(&o.concept), "{what}");
        assert_eq!(t["unit"], code_json(&o.unit), "{what}");
        let ds = t["numeric_value"].as_str().unwrap();
        let value: f64 = ds.trim().parse().unwrap();
        assert!(
            ds.len() <= 16,
            "{what}: NumericValue {ds:?} over 16 characters"
        );
        assert!(
            (value - o.value).abs() <= DS_RELATIVE_TOLERANCE * o.value.abs(),
            "{what}: NumericValue {ds:?} vs {}",
            o.value
        );
        assert_eq!(
            t["floating_point_value"].as_f64().unwrap(),
            o.value,
            "{what}"
        );
        let mut modifiers = Vec::new();
        if let Some(d) = &o.derivation {
            modifiers.push(serde_json::json!(["121401", code_json(d)]));
        }
        if let Some(m) = &o.method {
            modifiers.push(serde_json::json!(["370129005", code_json(m)]));
        }
        assert_eq!(t["modifiers"], Value::Array(modifiers), "{what}");
    }
    assert_regions(&theirs["regions"], &ours.regions, frame_of_reference, &what);
    let mut relationships = vec![
        serde_json::json!(["112039", "HAS OBS CONTEXT"]),
        serde_json::json!(["112040", "HAS OBS CONTEXT"]),
    ];
    if ours.finding.is_some() {
        relationships.push(serde_json::json!(["121071", "CONTAINS"]));
    }
    if ours.finding_site.is_some() {
        relationships.push(serde_json::json!(["363698007", "HAS CONCEPT MOD"]));
    }
    for r in &ours.regions {
        relationships.push(serde_json::json!([r.concept.value, "CONTAINS"]));
    }
    for m in &ours.measurements {
        relationships.push(serde_json::json!([m.concept.value, "CONTAINS"]));
    }
    assert_eq!(
        theirs["relationships"],
        Value::Array(relationships),
        "{what}"
    );
}

#[test]
fn measurement_report_matches_highdicom_and_pydicom_and_validates() {
    let report = report(&ct_grid());
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("sr.dcm");
    let written = write(&report, &out).unwrap();
    assert_eq!(written.tracking_uids.len(), 4);
    assert_eq!(written.tracking_uids[0], NEEDLE_UID);
    assert!(written.tracking_uids[1..]
        .iter()
        .all(|u| u.starts_with("2.25.")));
    let warnings = written.warnings.join("\n");
    assert!(
        warnings.contains("viewers will not group the SR"),
        "{warnings}"
    );

    let ct_dir = shared_data(CT_SERIES);
    let theirs = python_json(
        "sr_reference.py",
        &["check", out.to_str().unwrap(), ct_dir.to_str().unwrap()],
    );
    assert_eq!(theirs["sop_class"], "1.2.840.10008.5.1.4.1.1.88.34");
    assert_eq!(theirs["modality"], "SR");
    assert!(theirs["series_description"]
        .as_str()
        .unwrap()
        .contains("NOT FOR CLINICAL USE"));
    assert_eq!(theirs["completion_flag"], "COMPLETE");
    assert_eq!(theirs["verification_flag"], "UNVERIFIED");
    assert_eq!(theirs["specific_character_set"], "ISO_IR 192");
    assert_eq!(theirs["series_uid"], written.series_instance_uid.as_str());
    assert_eq!(theirs["patient"], theirs["ct_patient"]);
    let frame_of_reference = theirs["ct_frame_of_reference_uid"].as_str().unwrap();
    assert!(
        frame_of_reference.starts_with("1.3.12.2"),
        "{frame_of_reference}"
    );
    // Not at the top level (the IOD has no Frame of Reference module): in every SCOORD3D
    // item and the Image Library.
    assert_eq!(theirs["frame_of_reference_uid"], "");
    let ct_instances = &theirs["ct_instances"];
    assert_eq!(ct_instances.as_array().unwrap().len(), 20);
    assert_eq!(&theirs["evidence"]["instances"], ct_instances);
    assert_eq!(theirs["evidence"]["study"], theirs["study_uid"]);
    assert_eq!(&theirs["library"]["instances"], ct_instances);
    assert_eq!(theirs["library"]["frame_of_reference"], frame_of_reference);

    assert_eq!(theirs["template"], "1500");
    assert_eq!(theirs["title"], code_json(&report.title));
    assert_eq!(
        theirs["language"],
        serde_json::json!(["en-US", "RFC5646", "English (United States)"])
    );
    assert_eq!(
        theirs["procedure_reported"],
        code_json(&report.procedure_reported)
    );
    let observers = theirs["observers"].as_array().unwrap();
    assert_eq!(observers.len(), 1, "{observers:?}");
    assert_eq!(
        observers[0]["type"],
        serde_json::json!(["121007", "DCM", "Device"])
    );
    assert_eq!(observers[0]["name"], "Pinhole");
    assert!(observers[0]["uid"].as_str().unwrap().starts_with("2.25."));
    let root: Vec<Value> = [
        ("121049", "HAS CONCEPT MOD"),
        ("121005", "HAS OBS CONTEXT"),
        ("121012", "HAS OBS CONTEXT"),
        ("121013", "HAS OBS CONTEXT"),
        ("121014", "HAS OBS CONTEXT"),
        ("121015", "HAS OBS CONTEXT"),
        ("121058", "HAS CONCEPT MOD"),
        ("111028", "CONTAINS"),
        ("126010", "CONTAINS"),
    ]
    .iter()
    .map(|(c, r)| serde_json::json!([c, r]))
    .collect();
    assert_eq!(theirs["root_relationships"], Value::Array(root));

    // highdicom files each group under the template its content fits: one Image Region
    // is TID 1410 (planar), a Volume Surface TID 1411, no region TID 1501.
    let kinds = ["planar", "volumetric", "planar", "image"];
    let by_highdicom = theirs["groups_highdicom"].as_array().unwrap();
    assert_eq!(
        by_highdicom.len(),
        report.groups.len(),
        "groups highdicom found"
    );
    let raw = theirs["groups_pydicom"].as_array().unwrap();
    assert_eq!(raw.len(), report.groups.len());
    for (n, group) in report.groups.iter().enumerate() {
        let uid = &written.tracking_uids[n];
        let found: Vec<&Value> = by_highdicom
            .iter()
            .filter(|g| g["tracking_uid"] == uid.as_str())
            .collect();
        assert_eq!(found.len(), 1, "group {uid} in highdicom's groups");
        assert_highdicom_group(found[0], group, uid, kinds[n], frame_of_reference);
        assert_pydicom_group(&raw[n], group, uid, frame_of_reference);
    }
    assert_dciodvfy_clean(&theirs["dciodvfy"]);
}

#[test]
fn unusable_reports_are_refused_before_writing() {
    let grid = ct_grid();
    let good = report(&grid);
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("sr.dcm");
    let mut cases: Vec<(MeasurementReport, &str)> = Vec::new();
    let mut empty = good.clone();
    empty.groups.clear();
    cases.push((empty, "no measurement groups"));
    let mut nan_value = good.clone();
    nan_value.groups[3].measurements[0].value = f64::NAN;
    cases.push((nan_value, "is not a finite number"));
    let mut infinite = good.clone();
    infinite.groups[1].measurements[0].value = f64::NEG_INFINITY;
    cases.push((infinite, "is not a finite number"));
    let mut nan_point = good.clone();
    nan_point.groups[0].regions[2].points_lps_mm[1][2] = f64::NAN;
    cases.push((nan_point, "point 2"));
    let mut two_point = good.clone();
    let extra = two_point.groups[0].regions[0].points_lps_mm[0];
    two_point.groups[0].regions[0].points_lps_mm.push(extra);
    cases.push((two_point, "2 points: exactly 1 needed"));
    let mut short_line = good.clone();
    short_line.groups[0].regions[2].points_lps_mm.truncate(1);
    cases.push((short_line, "1 points: at least 2 needed"));
    let mut open = good.clone();
    open.groups[2].regions[0].points_lps_mm.pop();
    cases.push((open, "not closed"));
    for (bad, expected) in cases {
        let error = write(&bad, &out).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error.kind, ErrorKind::InvalidInput(_)),
            "{message}"
        );
        assert!(message.contains(expected), "{expected:?} not in {message}");
        assert!(!out.exists(), "{message}: a file was written");
    }
    write(&good, &out).unwrap();
    assert!(out.exists());
}
