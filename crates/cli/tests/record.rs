//! `pinhole serve --record` and `pinhole replay --case` end to end on the small abdomen CT
//! (the data of `serve.rs`): every pose a replay sends is in the record, in LPS, with the
//! guidance updates and alerts; a recorded session replayed into a second server records
//! the same poses at the same times; `kill -9` mid-session leaves a sound record holding
//! all but the last second. The record is read back with `pinhole-record` itself.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pinhole_record::{CaseRecord, Mat4, RecordedPose};

use crate::common::*;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `F · m · F`, F = diag(−1, −1, 1, 1): RAS ↔ LPS, written out here rather than taken
/// from the code under test.
fn flip(m: &Mat4) -> Mat4 {
    let s = [-1.0, -1.0, 1.0, 1.0];
    let mut out = *m;
    for r in 0..4 {
        for c in 0..4 {
            out[r][c] = s[r] * m[r][c] * s[c];
        }
    }
    out
}

fn max_abs_diff(a: &Mat4, b: &Mat4) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// A plan.json on the abdomen CT: target at the volume's centre, entry 35 mm to the
/// patient's right and 35 mm anterior, so that every pose has x and y parts that change
/// sign between RAS and LPS.
fn write_plan(dir: &Path, ct: &Path) -> PathBuf {
    let info = crate::info_json(ct, &[]);
    let m = json_matrix(&info["ijk_to_lps"]);
    let dims: Vec<f64> = info["dims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap())
        .collect();
    let centre: Vec<f64> = (0..3)
        .map(|r| (0..3).map(|c| m[r][c] * (dims[c] - 1.0) / 2.0).sum::<f64>() + m[r][3])
        .collect();
    let entry = [centre[0] - 35.0, centre[1] - 35.0, centre[2]];
    let plan = dir.join("plan.json");
    std::fs::write(
        &plan,
        serde_json::json!({"target_lps": centre, "note": "Not for clinical use",
                           "paths": [{"entry_lps": entry, "target_lps": centre}]})
        .to_string(),
    )
    .unwrap();
    plan
}

/// The poses `pinhole replay --synthesize plan --rate R --duration D` sends, as the
/// server receives them (TRANSFORM carries f32), in RAS.
fn synthesized_as_sent(plan: &Path, rate: f64, duration: f64) -> Vec<Mat4> {
    let plan = pinhole_pipeline::needle::PlanPaths::read(plan)
        .unwrap()
        .planned_needle();
    pinhole_guidance::synthesize::insertion(&plan, rate, duration)
        .iter()
        .map(|p| pinhole_igtl::Transform::from_matrix(&p.matrix).to_matrix())
        .collect()
}

/// `pinhole serve --record SITE` on free ports, with the plan; returns once its HTTP port
/// answers.
struct Serve {
    child: Child,
    igtl: u16,
}

impl Serve {
    fn start(plan: &Path, site: &Path) -> Self {
        let ct = shared_data("abdomen-ct/example_ct_sm.nii.gz");
        let seg = shared_data("abdomen-ct/example_seg.nii.gz");
        let (igtl, http) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_pinhole"))
            .args(["serve", "--ct", ct.to_str().unwrap()])
            .args(["--labels", seg.to_str().unwrap()])
            .args(["--plan", plan.to_str().unwrap()])
            .args(["--record", site.to_str().unwrap()])
            .args(["--igtl-port", &igtl.to_string()])
            .args(["--http-port", &http.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut serve = Self { child, igtl };
        let end = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(("127.0.0.1", http)).is_err() {
            if let Some(status) = serve.child.try_wait().unwrap() {
                panic!("serve ended ({status}): {}", serve.output().1);
            }
            assert!(Instant::now() < end, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        serve
    }

    /// (stdout, stderr) once the process has ended.
    fn output(&mut self) -> (String, String) {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(s) = self.child.stdout.as_mut() {
            s.read_to_string(&mut out).unwrap();
        }
        if let Some(s) = self.child.stderr.as_mut() {
            s.read_to_string(&mut err).unwrap();
        }
        (out, err)
    }

    /// Ctrl-C, as `serve.rs` stops it; (exit status, stdout, stderr).
    fn stop(mut self) -> (ExitStatus, String, String) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let end = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < end, "serve did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        };
        let (out, err) = self.output();
        (exit, out, err)
    }
}

/// Runs `pinhole replay ARGS --port PORT`; its JSON report.
fn replay(port: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .arg("replay")
        .args(args)
        .args(["--port", &port.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The only case and session of a site's record: (record, case id, session id).
fn only_session(site: &Path) -> (CaseRecord, i64, i64) {
    let record = CaseRecord::open_existing(site).unwrap();
    let cases = record.list_cases().unwrap();
    assert_eq!(cases.len(), 1, "{cases:?}");
    let case = record.case(cases[0].id).unwrap();
    assert_eq!(case.sessions.len(), 1, "{case:?}");
    let session = case.sessions[0].id;
    (record, case.id, session)
}

#[test]
fn serve_records_every_pose_and_a_recorded_session_replays_the_same() {
    let ct = shared_data("abdomen-ct/example_ct_sm.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), &ct);
    let site = dir.path().join("site");

    let serve = Serve::start(&plan, &site);
    let report = replay(
        serve.igtl,
        &[
            "--synthesize",
            plan.to_str().unwrap(),
            "--rate",
            "50",
            "--duration",
            "1",
        ],
    );
    let (exit, stdout, stderr) = serve.stop();
    assert!(exit.success(), "{stderr}");
    let sent = usize::try_from(report["sent"].as_u64().unwrap()).unwrap();
    assert_eq!(sent, 50);
    let (record, case_id, session) = only_session(&site);
    assert!(
        stdout.contains(&format!(
            "recording case {case_id} session {session} into {}",
            site.join("pinhole-cases.sqlite").display()
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "recorded case {case_id} session {session}: {sent} pose(s)"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("WARNING: case record"), "{stderr}");

    // The case: its label (file names and the date), the plan as its report, the
    // session's description, finished.
    let case = record.case(case_id).unwrap();
    assert!(
        case.label
            .starts_with("plan.json on example_ct_sm.nii.gz, 20"),
        "{}",
        case.label
    );
    let reports = record.reports(case_id).unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].kind, "needle-plan");
    let plan_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(reports[0].json, plan_json);
    let info = &case.sessions[0];
    assert!(info.ended_utc.is_some(), "the session was not finished");
    assert_eq!(info.dropped, 0);
    assert_eq!(
        info.description["plan"]["target_lps"], plan_json["target_lps"],
        "{}",
        info.description
    );

    // Every pose sent, in order, as the engine uses it: LPS. A missing sign flip fails:
    // the poses' x and y translations are far from 0.
    let expected = synthesized_as_sent(&plan, 50.0, 1.0);
    assert_eq!(expected.len(), sent);
    let poses = record.session_poses(session).unwrap();
    assert_eq!(poses.len(), sent);
    for (i, (got, ras)) in poses.iter().zip(&expected).enumerate() {
        assert!(
            max_abs_diff(ras, &flip(ras)) > 10.0,
            "pose {i} is symmetric"
        );
        let d = max_abs_diff(&got.matrix_lps, &flip(ras));
        assert!(
            d <= 1e-9,
            "pose {i}: {:?} vs {:?} (Δ {d})",
            got.matrix_lps,
            flip(ras)
        );
        assert_eq!(got.tool, "NeedleTipToReference");
    }
    // Their times: the replay's 20 ms steps, received over ~1 s.
    let span = poses[sent - 1].t_ms - poses[0].t_ms;
    assert!((700.0..2000.0).contains(&span), "poses over {span} ms");

    // Guidance updates: at least one, at most one per pose, the last pose's among them
    // (newest wins never drops the newest).
    let metrics = record.session_metrics(session).unwrap();
    assert!(
        !metrics.is_empty() && metrics.len() <= sent,
        "{} updates",
        metrics.len()
    );
    let seqs: Vec<u64> = metrics
        .iter()
        .map(|m| m.metrics["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(seqs.last(), Some(&(sent as u64)));
    assert_eq!(
        metrics.last().unwrap().metrics["alert"],
        report["last_metrics"]["alert"]
    );
    // Alerts: the first update's state, then its changes, each one of the levels.
    let alerts = record.session_alerts(session).unwrap();
    assert!(!alerts.is_empty() && alerts.len() <= metrics.len());
    for a in &alerts {
        assert!(
            ["ok", "caution", "danger"].contains(&a.kind.as_str()),
            "{a:?}"
        );
        assert!(a.message.starts_with(&format!("{}: ", a.kind)), "{a:?}");
    }
    assert!(!alerts[0].message.contains("(was "), "{:?}", alerts[0]);

    // The record replayed into a second server recording into a second site: the same
    // poses at the same times (relative to the first).
    let site2 = dir.path().join("site2");
    let serve2 = Serve::start(&plan, &site2);
    let report2 = replay(
        serve2.igtl,
        &[
            "--case",
            &case_id.to_string(),
            "--site",
            site.to_str().unwrap(),
        ],
    );
    let (exit, _, stderr) = serve2.stop();
    assert!(exit.success(), "{stderr}");
    assert_eq!(report2["sent"].as_u64(), Some(sent as u64));
    let (record2, _, session2) = only_session(&site2);
    let poses2 = record2.session_poses(session2).unwrap();
    assert_eq!(poses2.len(), poses.len());
    for (i, (a, b)) in poses.iter().zip(&poses2).enumerate() {
        let d = max_abs_diff(&a.matrix_lps, &b.matrix_lps);
        assert!(d <= 1e-9, "pose {i}: Δ {d}");
        let (ta, tb) = (a.t_ms - poses[0].t_ms, b.t_ms - poses2[0].t_ms);
        assert!((ta - tb).abs() <= 50.0, "pose {i}: {ta} ms vs {tb} ms");
    }

    // A session that is not there is named.
    let out = crate::pinhole(&[
        "replay",
        "--case",
        &case_id.to_string(),
        "--site",
        site.to_str().unwrap(),
        "--session",
        "99",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no session 99"), "{err}");
}

/// `kill -9` of `pinhole serve --record` in the middle of a replay: the record opens,
/// passes `integrity_check`, and holds the replayed poses in order up to at most a second
/// before the kill (the recorder commits every 250 ms); the session stays unfinished.
#[test]
fn kill_9_of_a_recording_server_keeps_all_but_the_last_second() {
    let ct = shared_data("abdomen-ct/example_ct_sm.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let plan = write_plan(dir.path(), &ct);
    let site = dir.path().join("site");
    let rate = 50.0;
    let mut serve = Serve::start(&plan, &site);
    let mut sender = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .args(["replay", "--synthesize", plan.to_str().unwrap()])
        .args(["--rate", "50", "--duration", "10"])
        .args(["--port", &serve.igtl.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The replay's first pose was sent no later than the moment its commit is seen.
    let committed = |site: &Path| -> Vec<RecordedPose> {
        let Ok(record) = CaseRecord::open_existing(site) else {
            return Vec::new();
        };
        match record.list_cases().unwrap().first() {
            Some(case) => match record.case(case.id).unwrap().sessions.first() {
                Some(s) => record.session_poses(s.id).unwrap(),
                None => Vec::new(),
            },
            None => Vec::new(),
        }
    };
    let end = Instant::now() + Duration::from_secs(60);
    while committed(&site).is_empty() {
        assert!(Instant::now() < end, "no pose recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    let first_seen = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let seen_before_kill = committed(&site).len();
    let killed_at = Instant::now();
    serve.child.kill().unwrap(); // SIGKILL
    serve.child.wait().unwrap();
    let _ = sender.kill();
    let _ = sender.wait();

    let (record, _, session) = only_session(&site);
    assert_eq!(record.integrity_check().unwrap(), vec!["ok".to_owned()]);
    let case = record.case(record.list_cases().unwrap()[0].id).unwrap();
    assert!(
        case.sessions[0].ended_utc.is_none(),
        "finished after kill -9?"
    );
    let poses = record.session_poses(session).unwrap();
    // Nothing committed is lost; the poses are the replay's, in order, without a gap.
    assert!(
        poses.len() >= seen_before_kill,
        "{} < {seen_before_kill}",
        poses.len()
    );
    let expected = synthesized_as_sent(&plan, rate, 10.0);
    assert!(
        poses.len() < expected.len(),
        "the replay was not interrupted"
    );
    for (i, (got, ras)) in poses.iter().zip(&expected).enumerate() {
        let d = max_abs_diff(&got.matrix_lps, &flip(ras));
        assert!(d <= 1e-9, "pose {i}: Δ {d}");
    }
    // Every pose sent more than 1 s before the kill is there.
    let sent_a_second_before = ((killed_at - first_seen).as_secs_f64() - 1.0) * rate;
    assert!(
        poses.len() as f64 >= sent_a_second_before.floor(),
        "{} poses recorded; {sent_a_second_before:.0} were sent more than 1 s before the kill",
        poses.len()
    );
}
