//! `pinhole serve` + `pinhole replay` end to end on the small abdomen CT: a plan to the
//! liver, a synthesized insertion, metrics back, the HTTP API, Ctrl-C ends cleanly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[test]
fn serve_and_replay_synthesized_insertion() {
    let ct = shared_data("abdomen-ct/example_ct_sm.nii.gz");
    let seg = shared_data("abdomen-ct/example_seg.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let (igtl, http) = (free_port(), free_port());
    // Target: the liver's deepest point, found first with `--target` to learn it...
    // ...then a plan.json with an entry 50 mm to the patient's right (−x) and anterior.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .args([
            "serve",
            "--ct",
            ct.to_str().unwrap(),
            "--labels",
            seg.to_str().unwrap(),
        ])
        .args(["--target", "liver:deepest"])
        .args([
            "--igtl-port",
            &igtl.to_string(),
            "--http-port",
            &http.to_string(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(Instant::now() < end, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let session: serde_json::Value = serde_json::from_str(&http_get(http, "/api/session")).unwrap();
    assert_eq!(session["plan"]["line_defined"], false);
    assert!(session["note"]
        .as_str()
        .unwrap()
        .contains("Not for clinical use"));
    let t: Vec<f64> = session["plan"]["target_lps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let plan = dir.path().join("plan.json");
    let entry = [t[0] - 35.0, t[1] - 35.0, t[2]];
    std::fs::write(
        &plan,
        serde_json::json!({"target_lps": t, "paths": [{"entry_lps": entry, "target_lps": t}],
                           "note": "Not for clinical use"})
        .to_string(),
    )
    .unwrap();
    // Replay against the target-only server: metrics come back, angle is null.
    let out = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .args(["replay", "--synthesize", plan.to_str().unwrap()])
        .args([
            "--rate",
            "50",
            "--duration",
            "1",
            "--port",
            &igtl.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["sent"], 50);
    assert!(summary["metrics_received"].as_u64().unwrap() >= 1);
    let last = &summary["last_metrics"];
    assert!(last["angle_deg"].is_null());
    // The synthesized insertion ends at the target: inside the liver label.
    assert_eq!(last["inside_target"], true, "{last}");
    assert!(last["tip_to_target_mm"].as_f64().unwrap() < 0.01);
    let latest: serde_json::Value = serde_json::from_str(&http_get(http, "/api/guidance")).unwrap();
    assert_eq!(latest["seq"], 50);

    // Ctrl-C ends cleanly.
    let status = Command::new("kill")
        .args(["-INT", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let end = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = serve.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "serve did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    serve
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(exit.success(), "{stderr}");
    assert!(
        stderr.contains("stopped: 1 client(s) served, 50 update(s)"),
        "{stderr}"
    );

    // The CSV writer and reader agree: write the synthesized poses, parse them back.
    let csv = dir.path().join("poses.csv");
    crate::pinhole_ok(&[
        "replay",
        "--synthesize",
        plan.to_str().unwrap(),
        "--rate",
        "10",
        "--duration",
        "1",
        "--write-csv",
        csv.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("# Not for clinical use"));
    assert_eq!(text.lines().count(), 2 + 10);
}
