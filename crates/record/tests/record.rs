//! The case record: every table read back as written, files that are not a record (or a
//! newer one) refused untouched, drops counted, the export readable by `pinhole replay`'s
//! CSV reader, and a `kill -9` during a live session losing at most the last second.

// Helpers outside `#[test]` functions unwrap too (`allow-unwrap-in-tests` covers only tests).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pinhole_record::{
    CaseRecord, ErrorKind, Mat4, NewStudy, Push, RecorderOptions, DROPPED_ALERT_KIND, FILE_NAME,
    SCHEMA_VERSION,
};
use serde_json::json;

/// A rigid-looking pose whose translation encodes `i` (exactly representable).
fn pose_matrix(i: u64) -> Mat4 {
    let a = (i % 360) as f64 * 0.25;
    [
        [1.0, 0.0, 0.0, i as f64],
        [0.0, 0.5, -0.75, -12.5 - a],
        [0.0, 0.75, 0.5, 300.125],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// Something shaped like `GuidanceMetrics`.
fn metrics_json(seq: u64) -> serde_json::Value {
    json!({
        "schema_version": 1,
        "note": "Not for clinical use",
        "seq": seq,
        "device": "needle",
        "tip_lps": [1.0, 2.0, 3.0],
        "tip_to_target_mm": 42.5 - seq as f64 * 0.01,
        "lateral_deviation_mm": 1.25,
        "angle_deg": 2.0,
        "depth_remaining_mm": 40.0,
        "inside_target": false,
        "alert": "ok",
        "alert_reasons": [],
    })
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

#[test]
fn every_table_round_trips() {
    let site = tempfile::tempdir().unwrap();
    let record = CaseRecord::open(site.path()).unwrap();
    assert_eq!(record.integrity_check().unwrap(), ["ok"]);
    let case = record.create_case("liver RFA, segment 7", None).unwrap();
    let other = record.create_case("kidney biopsy", None).unwrap();

    let ct = NewStudy {
        study_uid: "1.2.3".into(),
        series_uid: "1.2.3.4".into(),
        modality: "CT".into(),
        folder: "incoming/1.2.3/1.2.3.4".into(),
        instances: 312,
    };
    let study = record.add_study(Some(case), &ct).unwrap();
    let unassigned = NewStudy {
        series_uid: "1.2.3.5".into(),
        instances: 1,
        ..ct.clone()
    };
    record.add_study(None, &unassigned).unwrap();
    let plan = json!({"schema_version": 3, "paths": [{"entry": [1.5, 2.0, 3.0]}]});
    let report = record.add_report(case, "needle-plan", &plan).unwrap();
    let check = json!({"tip_error_mm": 1.75});
    record.add_control_scan(case, "1.2.3.9", &check).unwrap();
    let confirmation = json!({"minimal_margin_mm": 5.5, "verdict": "adequate"});
    record
        .add_confirmation(case, "ablation", &confirmation)
        .unwrap();

    let description = json!({"plan": "plan.json", "risk_groups": ["great_vessels"]});
    let recorder = record.start_session(case, &description).unwrap();
    let mut sent = Vec::new();
    for i in 0..50u64 {
        let t = i as f64 * 1.5;
        let tool = if i % 5 == 0 { "probe" } else { "needle" };
        assert_eq!(
            recorder.pose(t, tool, &pose_matrix(i)).unwrap(),
            Push::Queued
        );
        assert_eq!(recorder.metrics(t, &metrics_json(i)).unwrap(), Push::Queued);
        sent.push((t, tool, pose_matrix(i)));
    }
    let queued = recorder
        .alert(30.0, "danger", "trajectory enters aorta")
        .unwrap();
    assert_eq!(queued, Push::Queued);
    let session = recorder.session_id();
    let summary = recorder.finish().unwrap();
    assert_eq!(
        (
            summary.committed.poses,
            summary.committed.metrics,
            summary.dropped
        ),
        (50, 50, 0)
    );
    assert_eq!(summary.committed.last_pose_t_ms, Some(49.0 * 1.5));
    drop(record);

    // Read back through a new connection.
    let record = CaseRecord::open_existing(site.path()).unwrap();
    let cases = record.list_cases().unwrap();
    assert_eq!(cases.len(), 2);
    assert_eq!(
        (cases[0].id, cases[0].label.as_str()),
        (case, "liver RFA, segment 7")
    );
    assert_eq!(
        (cases[0].studies, cases[0].reports, cases[0].sessions),
        (1, 1, 1)
    );
    assert_eq!(
        (cases[1].id, cases[1].studies, cases[1].sessions),
        (other, 0, 0)
    );
    assert!(
        cases[0].created_utc.ends_with('Z'),
        "{}",
        cases[0].created_utc
    );

    let detail = record.case(case).unwrap();
    assert_eq!(detail.patient_ref, None);
    assert_eq!(detail.studies.len(), 1);
    let s = &detail.studies[0];
    assert_eq!(
        (
            s.id,
            s.case_id,
            s.study_uid.as_str(),
            s.series_uid.as_str(),
            s.modality.as_str(),
            s.folder.as_str(),
            s.instances
        ),
        (
            study,
            Some(case),
            "1.2.3",
            "1.2.3.4",
            "CT",
            "incoming/1.2.3/1.2.3.4",
            312
        )
    );
    let loose = record.unassigned_studies().unwrap();
    assert_eq!(
        (loose.len(), loose[0].series_uid.as_str(), loose[0].case_id),
        (1, "1.2.3.5", None)
    );
    assert_eq!(detail.reports.len(), 1);
    assert_eq!(
        (detail.reports[0].id, detail.reports[0].kind.as_str()),
        (report, "needle-plan")
    );
    assert_eq!(record.report(report).unwrap().json, plan);
    assert_eq!(record.reports(case).unwrap()[0].json, plan);
    assert_eq!(detail.control_scans.len(), 1);
    assert_eq!(detail.control_scans[0].series_uid, "1.2.3.9");
    assert_eq!(detail.control_scans[0].result, check);
    assert_eq!(detail.confirmations.len(), 1);
    assert_eq!(detail.confirmations[0].kind, "ablation");
    assert_eq!(detail.confirmations[0].result, confirmation);

    assert_eq!(detail.sessions.len(), 1);
    let info = &detail.sessions[0];
    assert_eq!(info.id, session);
    assert_eq!(info.description, description);
    assert!(info.ended_utc.is_some());
    assert_eq!(
        (info.poses, info.metrics, info.alerts, info.dropped),
        (50, 50, 1, 0)
    );

    let poses = record.session_poses(session).unwrap();
    assert_eq!(poses.len(), sent.len());
    for (got, (t, tool, m)) in poses.iter().zip(&sent) {
        assert_eq!(
            (got.t_ms, got.tool.as_str(), got.matrix_lps),
            (*t, *tool, *m)
        );
    }
    let metrics = record.session_metrics(session).unwrap();
    assert_eq!(metrics.len(), 50);
    assert_eq!(metrics[7].t_ms, 7.0 * 1.5);
    assert_eq!(metrics[7].metrics, metrics_json(7));
    let alerts = record.session_alerts(session).unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (
            alerts[0].t_ms,
            alerts[0].kind.as_str(),
            alerts[0].message.as_str()
        ),
        (30.0, "danger", "trajectory enters aorta")
    );

    // Unknown ids are named.
    let e = record.case(999).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::NotFound(_)), "{e}");
    assert!(e.to_string().contains(FILE_NAME), "{e}");
    assert!(matches!(
        record.add_report(999, "x", &json!({})).unwrap_err().kind,
        ErrorKind::NotFound(_)
    ));
}

/// A series received without a case is assigned to one afterwards, once: unknown cases
/// and series, and a series already in a case, are refused without changing anything.
#[test]
fn an_unassigned_series_is_assigned_to_a_case_once() {
    let site = tempfile::tempdir().unwrap();
    let record = CaseRecord::open(site.path()).unwrap();
    let first = record.create_case("first", None).unwrap();
    let second = record.create_case("second", None).unwrap();
    let series = |uid: &str| NewStudy {
        study_uid: "1.2.3".into(),
        series_uid: uid.into(),
        modality: "CT".into(),
        folder: format!("incoming/1.2.3/{uid}").into(),
        instances: 20,
    };
    // Received twice (a resend), and another series, all without a case.
    record.add_study(None, &series("1.2.3.4")).unwrap();
    record.add_study(None, &series("1.2.3.4")).unwrap();
    record.add_study(None, &series("1.2.3.5")).unwrap();
    assert_eq!(record.unassigned_studies().unwrap().len(), 3);

    let e = record.assign_series(99, "1.2.3.4").unwrap_err();
    assert!(matches!(e.kind, ErrorKind::NotFound(_)), "{e}");
    let e = record.assign_series(first, "9.9.9").unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::NotFound(_)) && e.to_string().contains("9.9.9"),
        "{e}"
    );
    assert_eq!(record.assign_series(first, "1.2.3.4").unwrap(), 2);
    let unassigned = record.unassigned_studies().unwrap();
    assert_eq!(unassigned.len(), 1);
    assert_eq!(unassigned[0].series_uid, "1.2.3.5");
    let studies = record.case(first).unwrap().studies;
    assert_eq!(studies.len(), 2);
    assert!(studies.iter().all(|s| s.series_uid == "1.2.3.4"));

    let e = record.assign_series(second, "1.2.3.4").unwrap_err();
    assert!(e.to_string().contains("already belongs to case"), "{e}");
    assert!(record.case(second).unwrap().studies.is_empty());
}

#[test]
fn patient_reference_only_when_allowed() {
    let site = tempfile::tempdir().unwrap();
    let record = CaseRecord::open(site.path()).unwrap();
    let e = record.create_case("case", Some("MRN 123")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::PatientDataNotAllowed), "{e}");
    assert!(record.list_cases().unwrap().is_empty());
    let record = record.allow_patient_data(true);
    let id = record.create_case("case", Some("MRN 123")).unwrap();
    assert_eq!(
        record.case(id).unwrap().patient_ref.as_deref(),
        Some("MRN 123")
    );
}

#[test]
fn newer_schema_version_is_refused() {
    let site = tempfile::tempdir().unwrap();
    CaseRecord::open(site.path())
        .unwrap()
        .create_case("a", None)
        .unwrap();
    let path = site.path().join(FILE_NAME);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    for e in [
        CaseRecord::open(site.path()).err().unwrap(),
        CaseRecord::open_existing(site.path()).err().unwrap(),
    ] {
        match e.kind {
            ErrorKind::NewerSchema { found, supported } => {
                assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            }
            ref other => panic!("{other}"),
        }
        let text = e.to_string();
        assert!(text.contains(FILE_NAME) && text.contains("newer"), "{text}");
    }
}

#[test]
fn not_a_database_is_refused_untouched() {
    let site = tempfile::tempdir().unwrap();
    let path = site.path().join(FILE_NAME);
    let garbage: Vec<u8> = b"pinhole notes, not SQLite\n".repeat(200);
    std::fs::write(&path, &garbage).unwrap();
    for e in [
        CaseRecord::open(site.path()).err().unwrap(),
        CaseRecord::open_existing(site.path()).err().unwrap(),
    ] {
        assert!(matches!(e.kind, ErrorKind::NotARecord(_)), "{e}");
        assert!(e.to_string().contains("not an SQLite database"), "{e}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), garbage);
    let names: Vec<_> = std::fs::read_dir(site.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [FILE_NAME]);

    // Another application's SQLite database: refused, nothing added to it.
    std::fs::remove_file(&path).unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE notes (text TEXT)")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let e = CaseRecord::open(site.path()).err().unwrap();
    assert!(matches!(e.kind, ErrorKind::NotARecord(_)), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn open_existing_does_not_create() {
    let site = tempfile::tempdir().unwrap();
    let e = CaseRecord::open_existing(&site.path().join("nowhere"))
        .err()
        .unwrap();
    assert!(matches!(e.kind, ErrorKind::Missing), "{e}");
    assert!(!site.path().join("nowhere").exists());
}

#[test]
fn a_full_queue_drops_counts_and_records_a_warning() {
    let site = tempfile::tempdir().unwrap();
    let record = CaseRecord::open(site.path()).unwrap();
    let case = record.create_case("overflow", None).unwrap();
    let options = RecorderOptions {
        queue_capacity: 4,
        commit_interval: Duration::from_millis(50),
    };
    let recorder = record
        .start_session_with(case, &json!({}), options)
        .unwrap();
    let n = 20_000u64;
    let mut last_count = 0;
    for i in 0..n {
        match recorder.pose(i as f64, "needle", &pose_matrix(i)).unwrap() {
            Push::Queued => {}
            Push::Dropped { dropped_total } => {
                assert!(dropped_total > last_count);
                last_count = dropped_total;
            }
        }
    }
    let session = recorder.session_id();
    let summary = recorder.finish().unwrap();
    assert!(summary.dropped > 0, "a 4-sample queue never filled");
    assert_eq!(summary.dropped, last_count);
    assert_eq!(summary.committed.poses + summary.dropped, n);
    let info = record.case(case).unwrap().sessions.remove(0);
    assert_eq!(info.dropped, summary.dropped);
    assert_eq!(info.poses, summary.committed.poses);
    let warnings: Vec<_> = record
        .session_alerts(session)
        .unwrap()
        .into_iter()
        .filter(|a| a.kind == DROPPED_ALERT_KIND)
        .collect();
    assert!(!warnings.is_empty());
    let last = warnings.last().unwrap();
    assert!(
        last.message
            .contains(&format!("{} in all", summary.dropped)),
        "{}",
        last.message
    );
}

#[test]
fn tracker_rate_counts_add_up() {
    // Counts only (not a timing assertion): 1 kHz poses with metrics for 1.5 s.
    let site = tempfile::tempdir().unwrap();
    let record = CaseRecord::open(site.path()).unwrap();
    let case = record.create_case("rate", None).unwrap();
    let recorder = record.start_session(case, &json!({})).unwrap();
    let start = Instant::now();
    let n = 1500u64;
    let mut dropped = 0;
    for i in 0..n {
        let due = Duration::from_millis(i);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let t = i as f64;
        for push in [
            recorder.pose(t, "needle", &pose_matrix(i)).unwrap(),
            recorder.metrics(t, &metrics_json(i)).unwrap(),
        ] {
            if let Push::Dropped { dropped_total } = push {
                dropped = dropped_total;
            }
        }
    }
    let session = recorder.session_id();
    let summary = recorder.finish().unwrap();
    assert_eq!(summary.dropped, dropped);
    assert_eq!(
        summary.committed.poses + summary.committed.metrics + summary.dropped,
        2 * n
    );
    let info = record.case(case).unwrap().sessions.remove(0);
    assert_eq!(
        (info.poses, info.metrics),
        (summary.committed.poses, summary.committed.metrics)
    );
    assert!(summary.committed.transactions >= 2);
    assert_eq!(
        record.session_poses(session).unwrap().len() as u64,
        summary.committed.poses
    );
}

#[test]
fn export_writes_case_json_and_replay_csv() {
    let site = tempfile::tempdir().unwrap();
    let record = CaseRecord::open(site.path()).unwrap();
    let case = record.create_case("export", None).unwrap();
    let plan = json!({"schema_version": 3, "note": "x"});
    record.add_report(case, "needle-plan", &plan).unwrap();
    let recorder = record.start_session(case, &json!({"plan": 1})).unwrap();
    // More than one write block of poses.
    let n = 5000u64;
    for i in 0..n {
        let _ = recorder
            .pose(i as f64 * 0.5, "needle", &pose_matrix(i))
            .unwrap();
    }
    let _ = recorder.metrics(10.0, &metrics_json(1)).unwrap();
    let _ = recorder.alert(11.0, "caution", "lateral 3.2 mm").unwrap();
    let session = recorder.session_id();
    assert_eq!(recorder.finish().unwrap().dropped, 0);
    // A second session with two tools and one with none.
    let two = record.start_session(case, &json!({})).unwrap();
    let _ = two.pose(0.0, "needle", &pose_matrix(1)).unwrap();
    let _ = two.pose(1.0, "US probe/1", &pose_matrix(2)).unwrap();
    let two_id = two.session_id();
    two.finish().unwrap();
    record
        .start_session(case, &json!({}))
        .unwrap()
        .finish()
        .unwrap();

    let out = tempfile::tempdir().unwrap();
    let export = record.export_case(case, out.path()).unwrap();
    let text = std::fs::read_to_string(out.path().join("case.json")).unwrap();
    let written: pinhole_record::CaseExport = serde_json::from_str(&text).unwrap();
    assert_eq!(written, export);
    assert_eq!(written.reports[0].json, plan);
    assert_eq!(written.sessions.len(), 3);
    assert_eq!(written.sessions[0].alerts[0].kind, "caution");

    let files = &written.sessions[0].pose_files;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].file, format!("session-{session}/poses.csv"));
    assert_eq!(files[0].poses, n);
    let replay = pinhole_io::pose_csv::read(&out.path().join(&files[0].file)).unwrap();
    let poses = record.session_poses(session).unwrap();
    assert_eq!(replay.len(), poses.len());
    for (r, p) in replay.iter().zip(&poses) {
        assert_eq!(*r, pinhole_record::replay_pose(p));
        assert_eq!(r.t_s, p.t_ms / 1000.0);
        // LPS → RAS: x and y flipped in the rotation's rows and columns and the origin.
        assert_eq!(r.matrix[0][3], -p.matrix_lps[0][3] + 0.0);
        assert_eq!(r.matrix[1][2], -p.matrix_lps[1][2] + 0.0);
        assert_eq!(r.matrix[0][1], p.matrix_lps[0][1]);
        assert_eq!(r.matrix[2][3], p.matrix_lps[2][3]);
    }
    let metrics =
        std::fs::read_to_string(out.path().join(&written.sessions[0].metrics_file)).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, [json!({"t_ms": 10.0, "metrics": metrics_json(1)})]);

    let two_files = &written.sessions[1].pose_files;
    assert_eq!(written.sessions[1].id, two_id);
    let names: Vec<_> = two_files.iter().map(|f| f.file.as_str()).collect();
    assert_eq!(
        names,
        [
            format!("session-{two_id}/poses-1-needle.csv"),
            format!("session-{two_id}/poses-2-US_probe_1.csv")
        ]
    );
    for f in two_files {
        let poses = pinhole_io::pose_csv::read(&out.path().join(&f.file)).unwrap();
        assert_eq!(poses.len(), 1);
    }
    let empty = &written.sessions[2].pose_files[0];
    assert!(pinhole_io::pose_csv::read(&out.path().join(&empty.file))
        .unwrap()
        .is_empty());
}

#[test]
fn reports_added_while_a_session_records() {
    // Two connections writing at once: the busy timeout serialises them.
    let site = tempfile::tempdir().unwrap();
    let record = CaseRecord::open(site.path()).unwrap();
    let case = record.create_case("busy", None).unwrap();
    let options = RecorderOptions {
        commit_interval: Duration::from_millis(20),
        ..RecorderOptions::default()
    };
    let recorder = record
        .start_session_with(case, &json!({}), options)
        .unwrap();
    for i in 0..400u64 {
        let _ = recorder.pose(i as f64, "needle", &pose_matrix(i)).unwrap();
        if i % 40 == 0 {
            record.add_report(case, "note", &json!({"i": i})).unwrap();
            let other = CaseRecord::open(site.path()).unwrap();
            assert_eq!(other.list_cases().unwrap().len(), 1);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let summary = recorder.finish().unwrap();
    assert_eq!(summary.committed.poses + summary.dropped, 400);
    assert_eq!(record.case(case).unwrap().reports.len(), 10);
}

/// Environment variable that turns [`kill_child`] into the recording child.
const CHILD_ENV: &str = "PINHOLE_RECORD_KILL_CHILD_SITE";

/// The child of [`kill_9_loses_at_most_the_last_second`]: a no-op unless [`CHILD_ENV`]
/// names a site folder. Records a pose and metrics every 2 ms (t_ms = 2 i) and prints
/// `committed <t_ms>` each time the writer has committed a newer pose.
#[test]
fn kill_child() {
    let Ok(site) = std::env::var(CHILD_ENV) else {
        return;
    };
    let record = CaseRecord::open(Path::new(&site)).unwrap();
    let case = record.create_case("killed", None).unwrap();
    let recorder = record.start_session(case, &json!({"child": true})).unwrap();
    let start = Instant::now();
    println!("start {} {case} {}", unix_ms(), recorder.session_id());
    let mut printed = None;
    for i in 0..30_000u64 {
        let due = Duration::from_millis(2 * i);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let t = (2 * i) as f64;
        let _ = recorder.pose(t, "needle", &pose_matrix(i)).unwrap();
        let _ = recorder.metrics(t, &metrics_json(i)).unwrap();
        let committed = recorder.committed().last_pose_t_ms;
        if committed != printed {
            if let Some(t) = committed {
                println!("committed {t}");
            }
            printed = committed;
        }
    }
    recorder.finish().unwrap();
}

#[test]
fn kill_9_loses_at_most_the_last_second() {
    let site = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, site.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (send, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    // libtest prints `test kill_child ... ` before the child's first line.
    let start_line = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the child did not start");
        if let Some((_, rest)) = line.split_once("start ") {
            break rest.to_owned();
        }
    };
    let fields: Vec<&str> = start_line.split_whitespace().collect();
    let start_unix_ms: f64 = fields[0].parse().unwrap();
    let case: i64 = fields[1].parse().unwrap();
    let session: i64 = fields[2].parse().unwrap();

    // Meanwhile a second process lists and reads the record (WAL: no waiting). The kill
    // comes 2 to 2.25 s after the start, at a varying phase of the 250 ms commits.
    let seen = Instant::now();
    let phase_ms = u64::from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_millis(),
    ) % 250;
    let run_for = Duration::from_millis(2000 + phase_ms);
    let mut last_count = 0;
    {
        let reader_record = CaseRecord::open(site.path()).unwrap();
        while seen.elapsed() < run_for {
            let cases = reader_record.list_cases().unwrap();
            assert_eq!(cases.len(), 1);
            let poses = reader_record.case(case).unwrap().sessions[0].poses;
            assert!(poses >= last_count);
            last_count = poses;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert!(last_count > 0, "nothing committed in 2 s");
    child.kill().unwrap();
    let kill_unix_ms = unix_ms();
    child.wait().unwrap();
    reader.join().unwrap();
    let committed: Vec<f64> = lines
        .try_iter()
        .filter_map(|l| l.strip_prefix("committed ").map(|t| t.parse().unwrap()))
        .collect();
    assert!(committed.len() >= 4, "committed batches: {committed:?}");
    let last_committed = committed.iter().copied().fold(f64::MIN, f64::max);

    // WAL recovery on open; the file is sound.
    let record = CaseRecord::open(site.path()).unwrap();
    assert_eq!(record.integrity_check().unwrap(), ["ok"]);
    let info = record.case(case).unwrap().sessions.remove(0);
    assert_eq!(info.id, session);
    assert_eq!(info.ended_utc, None, "a killed session has no end");
    let poses = record.session_poses(session).unwrap();
    // A gap-free prefix: pose i at 2 i ms with its own matrix.
    for (i, p) in poses.iter().enumerate() {
        let i = i as u64;
        assert_eq!(p.t_ms, (2 * i) as f64);
        assert_eq!(p.matrix_lps, pose_matrix(i));
    }
    let last = poses.last().unwrap().t_ms;
    assert!(
        last >= last_committed,
        "the child saw {last_committed} ms committed, the file ends at {last} ms"
    );
    let kill_t_ms = kill_unix_ms - start_unix_ms;
    let lost_ms = kill_t_ms - last;
    assert!(
        lost_ms <= 1000.0,
        "killed at {kill_t_ms:.0} ms, last pose recorded at {last} ms: lost {lost_ms:.0} ms"
    );
    println!(
        "kill -9 at {kill_t_ms:.0} ms: {} poses kept, last at {last} ms (lost {lost_ms:.0} ms), \
         {} commits seen",
        poses.len(),
        committed.len()
    );
}
