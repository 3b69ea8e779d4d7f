//! The reports of the live side on the demo's sample: the guidance session
//! (`/api/session`), guidance metrics for a pose with a known answer, and a registration
//! of a simulated X-ray whose pose is known. Registration numbers depend on the CPU's
//! SIMD path (FMA or not) through the optimiser's trajectory, so its snapshot pins the
//! report's shape (keys, types, strings) and the pose is checked against the truth.

use pinhole_guidance::NeedlePose;
use pinhole_pipeline::demo;
use pinhole_pipeline::drr::DrrRequest;
use pinhole_pipeline::register::RegistrationRequest;
use pinhole_pipeline::session::{build, GuidancePlan, SessionData, ViewerContent};
use pinhole_pipeline::Quiet;
use serde_json::Value;

use crate::reports::snapshot_value;

#[test]
fn session_and_metrics_on_the_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let data = demo::load_data(None).unwrap();
    let session_data = SessionData {
        ct: &data.ct,
        labels: &data.labels,
        table: &data.table,
        plan: GuidancePlan::Target("liver:deepest".to_owned()),
        registration: None,
        unnamed_labels: Default::default(),
        inputs: Default::default(),
    };
    let content = ViewerContent {
        title: "sample".to_owned(),
        ..ViewerContent::default()
    };
    let session = build(&session_data, &content, &Quiet).unwrap();
    let response = session.response();
    insta::assert_json_snapshot!("session_sample", snapshot_value(&response, tmp.path()));
    // Regression (#17): risk structures absent from the label map were listed only in
    // `missing`; now each such group is a warning. Checked against the map itself.
    let present: std::collections::BTreeSet<String> = pinhole_volume::label_stats(&data.labels)
        .keys()
        .filter_map(|&id| data.table.name(id).map(str::to_owned))
        .collect();
    let warnings = &response.description.warnings;
    for group in &response.description.risk_groups {
        for label in &group.missing {
            assert!(!present.contains(label), "{label} is in the map");
        }
        let warned = warnings
            .iter()
            .any(|w| w.starts_with(&format!("risk group {}:", group.name)));
        assert_eq!(warned, !group.missing.is_empty(), "{}", group.name);
    }
    assert!(warnings
        .iter()
        .any(|w| w.contains("gallbladder, urinary_bladder not in the label map")));

    // The tip 10 mm anterior of the target, pointing at it (posterior, +y in LPS).
    let t = response.target_lps;
    let pose = NeedlePose {
        tip_lps: [t[0], t[1] - 10.0, t[2]],
        axis_lps: [0.0, 1.0, 0.0],
    };
    let metrics = session
        .guidance
        .evaluate(&pose, 1, 0.0, "NeedleTipToReference");
    assert!((metrics.tip_to_target_mm - 10.0).abs() < 1e-9);
    assert!(
        metrics.lateral_deviation_mm.is_none(),
        "a target has no line"
    );
    assert!(
        (metrics.depth_remaining_mm - 10.0).abs() < 1e-9,
        "along the axis"
    );
    insta::assert_json_snapshot!(
        "guidance_metrics_sample",
        snapshot_value(&metrics, tmp.path())
    );
}

#[test]
fn registration_recovers_a_simulated_view() {
    let tmp = tempfile::tempdir().unwrap();
    let data = demo::load_data(None).unwrap();
    let files = demo::write_data_files(tmp.path(), &data).unwrap();
    let xray = tmp.path().join("xray.png");
    let drr = DrrRequest {
        lao_deg: 30.0,
        cran_deg: 10.0,
        size_px: 128,
        pixel_mm: 3.0,
        ..DrrRequest::new(&files.ct)
    };
    pinhole_pipeline::drr::run(&drr, &Quiet)
        .unwrap()
        .write_png(&xray)
        .unwrap();
    let request = RegistrationRequest {
        init_lao_deg: 25.0,
        init_cran_deg: 5.0,
        pixel_mm: Some(3.0),
        ..RegistrationRequest::new(&files.ct, &xray)
    };
    let outcome = pinhole_pipeline::register::run(&request, &Quiet).unwrap();
    let report = &outcome.report;
    assert!(
        (report.lao_deg - 30.0).abs() < 0.5,
        "LAO {}",
        report.lao_deg
    );
    assert!(
        (report.cran_deg - 10.0).abs() < 0.5,
        "CRAN {}",
        report.cran_deg
    );
    // Regression (#25): inputs are recorded with their SHA-256, as in every report; the
    // snapshot keeps the format only.
    let mut value = snapshot_value(report, tmp.path());
    for input in value["inputs"].as_array_mut().unwrap() {
        let hash = input["sha256"].as_str().unwrap();
        assert!(
            hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{hash}"
        );
        input["sha256"] = Value::String("[sha256]".to_owned());
    }
    insta::assert_json_snapshot!("registration_shape", shape(value));
}

/// Numbers replaced by their kind: the format without the values.
fn shape(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if k == "schema_version" { v } else { shape(v) };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(shape).collect()),
        Value::Number(n) if n.is_f64() => Value::String("[float]".into()),
        Value::Number(_) => Value::String("[integer]".into()),
        other => other,
    }
}
