//! `pinhole serve` + `pinhole replay` end to end on the small abdomen CT: a plan to the
//! liver, a synthesized insertion, metrics back, the HTTP API, Ctrl-C ends cleanly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

pub(super) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `GET path` from a local server (`Connection: close`): its status and body.
pub(super) fn http_get_with_status(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out.split_once("\r\n\r\n").unwrap().1.to_owned())
}

fn http_get(port: u16, path: &str) -> String {
    http_get_with_status(port, path).1
}

/// `DIR/plan.json`: a straight path to the target of a target-only session
/// (`/api/session`), entering 35 mm to the patient's right and anterior.
fn plan_to_the_session_target(
    session: &serde_json::Value,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let t: Vec<f64> = session["plan"]["target_lps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let plan = dir.join("plan.json");
    let entry = [t[0] - 35.0, t[1] - 35.0, t[2]];
    std::fs::write(
        &plan,
        serde_json::json!({"target_lps": t, "paths": [{"entry_lps": entry, "target_lps": t}],
                           "note": "Not for clinical use"})
        .to_string(),
    )
    .unwrap();
    plan
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
        .args(["--registration-device", "TrackerToRAS"])
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
    let plan = plan_to_the_session_target(&session, dir.path());
    // Replay against the target-only server: metrics come back, angle is null.
    let summary = replay_synthesized(&plan, igtl, "50", "1");
    assert_eq!(summary["sent"], 50);
    assert!(summary["metrics_received"].as_u64().unwrap() >= 1);
    let last = &summary["last_metrics"];
    assert!(last["angle_deg"].is_null());
    // The synthesized insertion ends at the target: inside the liver label.
    assert_eq!(last["inside_target"], true, "{last}");
    assert!(last["tip_to_target_mm"].as_f64().unwrap() < 0.01);
    let latest_text = http_get(http, "/api/guidance");
    let latest: serde_json::Value = serde_json::from_str(&latest_text).unwrap();
    assert_eq!(latest["seq"], 50);
    // The session and the metrics match their published schemas.
    let session_file = dir.path().join("session.json");
    std::fs::write(&session_file, http_get(http, "/api/session")).unwrap();
    let metrics_file = dir.path().join("metrics.json");
    std::fs::write(&metrics_file, &latest_text).unwrap();
    crate::validate_against_schemas(&[
        ("session", &session_file),
        ("guidance-metrics", &metrics_file),
    ]);

    // The registration comes only under the device name given (`--registration-device`):
    // `ReferenceToRAS` is not one here; `TrackerToRAS` is, and its change is logged.
    send_transforms(igtl, &[("ReferenceToRAS", 40.0), ("TrackerToRAS", 5.0)]);
    let end = Instant::now() + Duration::from_secs(10);
    let registrations = loop {
        let session: serde_json::Value =
            serde_json::from_str(&http_get(http, "/api/session")).unwrap();
        let found: Vec<serde_json::Value> = session["source_events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "registration")
            .cloned()
            .collect();
        if !found.is_empty() || Instant::now() > end {
            break found;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(registrations.len(), 1, "{registrations:?}");
    assert_eq!(registrations[0]["device"], "TrackerToRAS");

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
        stderr.contains("stopped: 2 client(s) served, 50 update(s)"),
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

/// `pinhole replay --synthesize plan` at `rate` Hz for `duration` s to the OpenIGTLink
/// port: its JSON summary (the command must succeed).
fn replay_synthesized(
    plan: &std::path::Path,
    igtl: u16,
    rate: &str,
    duration: &str,
) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .args(["replay", "--synthesize", plan.to_str().unwrap()])
        .args([
            "--rate",
            rate,
            "--duration",
            duration,
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
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Sends a TRANSFORM per (device name, x translation in mm) over OpenIGTLink, then
/// closes the connection cleanly.
fn send_transforms(port: u16, transforms: &[(&str, f64)]) {
    use pinhole_igtl::{encode, Body, Message, Transform};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    for &(device, x_mm) in transforms {
        let m = [
            [1.0, 0.0, 0.0, x_mm],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let msg = Message::new(device, Body::Transform(Transform::from_matrix(&m)));
        s.write_all(&encode(&msg).unwrap()).unwrap();
    }
    // Close our side and read what the server sent until it closes too: closing with
    // unread bytes would reset the connection, and a reset can discard our messages
    // before the server reads them (seen once in CI).
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sent_to_us = Vec::new();
    let _ = s.read_to_end(&mut sent_to_us);
}

/// `GET` returning (headers, body bytes) of a `Connection: close` response.
fn http_get_bytes(port: u16, path: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    assert!(!head.contains("chunked"), "{head}");
    (head, out[split + 4..].to_vec())
}

fn gray_of_png(bytes: &[u8]) -> Vec<f64> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf[..info.buffer_size()]
        .chunks(3)
        .map(|p| f64::from(p[0]))
        .collect()
}

/// The viewer's fluoroscopy panel rendered by `serve --gpu` (wgpu; lavapipe here) matches
/// the CPU's exact Siddon rendering of the same pose.
#[test]
fn viewer_drr_on_the_gpu_matches_the_cpu() {
    let ct = shared_data("abdomen-ct/example_ct_sm.nii.gz");
    let seg = shared_data("abdomen-ct/example_seg.nii.gz");
    let mut images = Vec::new();
    for gpu in [false, true] {
        let (igtl, http) = (free_port(), free_port());
        let mut serve = Command::new(env!("CARGO_BIN_EXE_pinhole"))
            .args(["serve", "--ct", ct.to_str().unwrap()])
            .args(["--labels", seg.to_str().unwrap(), "--target", "liver"])
            .args(["--igtl-port", &igtl.to_string()])
            .args(["--http-port", &http.to_string()])
            .args(if gpu { &["--gpu"][..] } else { &[][..] })
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(("127.0.0.1", http)).is_err() {
            assert!(Instant::now() < end, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (head, png) = http_get_bytes(http, "/api/drr?lao_deg=20&cran_deg=-10&size=128");
        let renderer = if gpu { "gpu" } else { "cpu" };
        assert!(
            head.contains(&format!("x-pinhole-renderer: {renderer}")),
            "{head}"
        );
        images.push(gray_of_png(&png));
        serve.kill().unwrap();
        serve.wait().unwrap();
    }
    let mean_abs: f64 = images[0]
        .iter()
        .zip(&images[1])
        .map(|(a, b)| (a - b).abs())
        .sum::<f64>()
        / images[0].len() as f64;
    assert!(mean_abs < 4.0, "GPU vs CPU mean |Δgray| = {mean_abs}");
}

/// `pinhole serve`'s timeouts and caps (#25): a zero, negative, absurd or malformed value
/// is refused with the flag named, before any volume is read; valid values pass.
#[test]
fn serve_refuses_bad_limits_with_the_flag_named() {
    let serve = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pinhole"))
            .args(["serve", "--ct", "no-such-ct.nii.gz"])
            .args(["--labels", "no-such-labels.nii.gz", "--target", "0,0,0"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (flag, value) in [
        ("--max-igtl-clients", "0"),
        ("--max-igtl-clients", "-1"),
        ("--igtl-max-lag-ms", "0"),
        ("--igtl-max-lag-ms", "abc"),
        ("--igtl-partial-timeout-ms", "0"),
        ("--igtl-idle-timeout-s", "0"),
        ("--max-igtl-message-mib", "0"),
        ("--max-buffered-body-mib", "1000000"),
        ("--write-timeout-ms", "0"),
        ("--max-http-connections", "0"),
        ("--http-header-timeout-ms", "99999999999"),
        ("--max-drr-renders", "0"),
    ] {
        let (status, err) = serve(&[&format!("{flag}={value}")]);
        assert_eq!(status.code(), Some(2), "{flag}={value}: {err}");
        assert!(
            err.contains(flag) && err.contains("invalid value"),
            "{flag}={value}: {err}"
        );
    }
    // A budget of bodies in flight smaller than one message is refused, both named.
    let (status, err) = serve(&["--max-buffered-body-mib=8", "--max-igtl-message-mib=16"]);
    assert!(!status.success());
    assert!(
        err.contains("--max-buffered-body-mib 8") && err.contains("--max-igtl-message-mib 16"),
        "{err}"
    );
    // Valid values pass the settings: what fails then is the missing CT.
    let (status, err) = serve(&[
        "--max-igtl-clients=4",
        "--igtl-max-lag-ms=100",
        "--igtl-partial-timeout-ms=2000",
        "--igtl-idle-timeout-s=60",
        "--max-igtl-message-mib=16",
        "--max-buffered-body-mib=64",
        "--write-timeout-ms=1000",
        "--max-http-connections=16",
        "--http-header-timeout-ms=2000",
        "--max-drr-renders=1",
    ]);
    assert!(!status.success());
    assert!(
        err.contains("no-such-ct.nii.gz") && !err.contains("invalid value"),
        "{err}"
    );
}

/// Regression: the server's runtime log went through `eprintln!`, which panics when
/// stderr is a closed pipe (whoever started `pinhole serve` stopped reading it), and the
/// panic killed the task or thread that logged: here the OpenIGTLink client's, at its
/// "connected" line. With stderr closed after the banner, a replay still gets its
/// guidance back and HTTP still answers.
#[test]
fn serve_goes_on_when_nobody_reads_its_stderr() {
    use std::io::BufRead;
    let ct = shared_data("abdomen-ct/example_ct_sm.nii.gz");
    let seg = shared_data("abdomen-ct/example_seg.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let (igtl, http) = (free_port(), free_port());
    let mut serve = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .args(["serve", "--ct", ct.to_str().unwrap()])
        .args([
            "--labels",
            seg.to_str().unwrap(),
            "--target",
            "liver:deepest",
        ])
        .args(["--igtl-port", &igtl.to_string()])
        .args(["--http-port", &http.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = serve.stderr.take().unwrap();
    let banner = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("Ctrl-C to stop"));
    assert!(banner.is_some(), "no banner from pinhole serve");
    // The reader and the pipe are gone: every later log line meets a closed pipe.
    let session: serde_json::Value = serde_json::from_str(&http_get(http, "/api/session")).unwrap();
    let plan = plan_to_the_session_target(&session, dir.path());
    for _ in 0..2 {
        let summary = replay_synthesized(&plan, igtl, "50", "0.5");
        assert!(
            summary["metrics_received"].as_u64().unwrap() >= 1,
            "{summary}"
        );
    }
    assert!(serve.try_wait().unwrap().is_none(), "pinhole serve died");
    assert!(http_get(http, "/api/health").contains("ok"));
    serve.kill().unwrap();
    serve.wait().unwrap();
}
