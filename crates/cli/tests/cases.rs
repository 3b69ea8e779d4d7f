//! `pinhole cases list|show|export` over a record written by `pinhole-record`.

use std::path::Path;

use pinhole_record::{CaseRecord, NewStudy};
use serde_json::json;

use super::{pinhole, pinhole_ok};

/// A record with one full case (series, plan, a finished session of `n` poses, a control
/// scan) and an empty one; returns the full case's id and its session's id.
fn make_record(site: &Path, n: u64) -> (i64, i64) {
    let record = CaseRecord::open(site).unwrap();
    let case = record.create_case("liver RFA seg 7", None).unwrap();
    record.create_case("empty case", None).unwrap();
    let study = NewStudy {
        study_uid: "1.2.3".into(),
        series_uid: "1.2.3.4".into(),
        modality: "CT".into(),
        folder: "incoming/1.2.3/1.2.3.4".into(),
        instances: 120,
    };
    record.add_study(Some(case), &study).unwrap();
    record
        .add_report(case, "needle-plan", &json!({"schema_version": 3}))
        .unwrap();
    record
        .add_control_scan(case, "1.2.3.9", &json!({"tip_error_mm": 2.0}))
        .unwrap();
    let recorder = record
        .start_session(case, &json!({"plan": "plan.json"}))
        .unwrap();
    for i in 0..n {
        let m = [
            [1.0, 0.0, 0.0, i as f64],
            [0.0, 1.0, 0.0, -20.0],
            [0.0, 0.0, 1.0, 100.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let _ = recorder.pose(i as f64 * 2.0, "needle", &m).unwrap();
        let _ = recorder
            .metrics(i as f64 * 2.0, &json!({"seq": i + 1, "alert": "ok"}))
            .unwrap();
    }
    let _ = recorder.alert(10.0, "caution", "lateral 3.1 mm").unwrap();
    let session = recorder.session_id();
    assert_eq!(recorder.finish().unwrap().dropped, 0);
    (case, session)
}

#[test]
fn cases_list_show_export() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let (case, session) = make_record(&site, 300);
    let site_arg = site.to_str().unwrap();
    let id = case.to_string();

    let text = pinhole_ok(&["cases", "list", "--site", site_arg]);
    let first = text.lines().next().unwrap();
    assert!(first.contains("NOT FOR CLINICAL USE"), "{text}");
    assert!(
        text.contains("liver RFA seg 7") && text.contains("empty case"),
        "{text}"
    );

    let listing: serde_json::Value = serde_json::from_str(&pinhole_ok(&[
        "cases", "list", "--site", site_arg, "--json",
    ]))
    .unwrap();
    assert_eq!(listing["schema_version"], 1);
    assert!(listing["note"]
        .as_str()
        .unwrap()
        .contains("Not for clinical use"));
    let cases = listing["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    assert_eq!(cases[0]["id"], case);
    assert_eq!(
        (
            &cases[0]["studies"],
            &cases[0]["reports"],
            &cases[0]["sessions"]
        ),
        (&json!(1), &json!(1), &json!(1))
    );

    let text = pinhole_ok(&["cases", "show", &id, "--site", site_arg]);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("NOT FOR CLINICAL USE"),
        "{text}"
    );
    for expected in [
        "liver RFA seg 7",
        "needle-plan",
        "1.2.3.4",
        "300 poses, 300 metrics, 1 alerts, 0 dropped",
        "1.2.3.9",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    let shown: serde_json::Value = serde_json::from_str(&pinhole_ok(&[
        "cases", "show", &id, "--site", site_arg, "--json",
    ]))
    .unwrap();
    assert_eq!(shown["schema_version"], 1);
    let s = &shown["case"]["sessions"][0];
    assert_eq!(
        (&s["id"], &s["poses"], &s["metrics"]),
        (&json!(session), &json!(300), &json!(300))
    );
    assert!(shown["case"].get("patient_ref").is_none());

    let out = dir.path().join("export");
    let text = pinhole_ok(&[
        "cases",
        "export",
        &id,
        "--site",
        site_arg,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("NOT FOR CLINICAL USE"),
        "{text}"
    );
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("case.json")).unwrap()).unwrap();
    assert_eq!(exported["case"]["id"], case);
    assert_eq!(exported["reports"][0]["kind"], "needle-plan");
    assert_eq!(exported["reports"][0]["json"]["schema_version"], 3);
    let csv = out.join(format!("session-{session}/poses.csv"));
    assert!(text.contains(&csv.display().to_string()), "{text}");
    let poses = pinhole_io::pose_csv::read(&csv).unwrap();
    assert_eq!(poses.len(), 300);
    // Replay CSV: seconds, RAS (x of an LPS translation flipped).
    assert_eq!(poses[10].t_s, 0.02);
    assert_eq!(poses[10].matrix[0][3], -10.0);
    assert_eq!(poses[10].matrix[1][3], 20.0);
    let metrics =
        std::fs::read_to_string(out.join(format!("session-{session}/metrics.jsonl"))).unwrap();
    assert_eq!(metrics.lines().count(), 300);
}

#[test]
fn cases_refuses_missing_record_and_unknown_case() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-record");
    std::fs::create_dir(&empty).unwrap();
    let out = pinhole(&["cases", "list", "--site", empty.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no case record"), "{err}");
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "a record was created"
    );

    let site = dir.path().join("site");
    make_record(&site, 3);
    let out = pinhole(&["cases", "show", "99", "--site", site.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no case 99"), "{err}");
}
