//! The README's first command end to end in real headless Chromium (Debian `chromium`,
//! `playwright-core`; `.ci/run` installs both and builds `web/dist`): `pinhole demo
//! --no-open` serves the viewer, the CT loads in NiiVue, the needle marker moves while
//! the replay runs, the guidance panel shows a distance, a new C-arm angle gives a new
//! DRR, and the browser console stays free of errors (`web/e2e/demo.mjs`). And the live
//! ultrasound panel: `pinhole serve` on the same sample CT, a simulated sweep (`pinhole us
//! sweep`) replayed by `pinhole replay --sequence` while the page is open, the panel
//! changing with the frames (`web/e2e/us.mjs`).

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

#[test]
fn demo_viewer_works_in_headless_chromium() {
    let root = repo_root();
    let out = tempfile::tempdir().unwrap();
    let result = Command::new("node")
        .arg(root.join("web/e2e/demo.mjs"))
        .arg(out.path())
        .current_dir(root.join("web"))
        .env("PINHOLE_BIN", env!("CARGO_BIN_EXE_pinhole"))
        .env("PINHOLE_HTTP_PORT", "18381")
        .env("PINHOLE_IGTL_PORT", "18391")
        .output()
        .expect("node (and web/node_modules: npm ci in web/) is needed");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "e2e failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let summary: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("e2e printed no JSON summary");
    assert_eq!(summary["ok"], true);
    assert!(
        summary["needle_moved_mm"].as_f64().unwrap() > 0.5,
        "{summary}"
    );
    assert!(summary["panel"]["tipToTarget"]
        .as_str()
        .unwrap()
        .ends_with("mm"));
    assert!(
        std::fs::metadata(out.path().join("viewer.png"))
            .unwrap()
            .len()
            > 10_000
    );
    // The demo planned every procedure before serving.
    let demo = out.path().join("demo");
    for file in [
        "kidney-biopsy/plan.json",
        "thyroid-fna/plan.json",
        "vessel-route/route.json",
        "ablation/ablation.json",
    ] {
        assert!(demo.join(file).exists(), "demo did not write {file}");
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn ultrasound_panel_updates_live_in_headless_chromium() {
    let root = repo_root();
    let sample = root.join("data/sample");
    let ct_path = sample.join("ct.nii.gz");
    let centre = pinhole_io::nifti::read(&ct_path)
        .unwrap()
        .grid()
        .center_lps();
    let out = tempfile::tempdir().unwrap();
    let (igtl, http) = (free_port(), free_port());
    let mut serve = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .arg("serve")
        .arg("--ct")
        .arg(&ct_path)
        .arg("--labels")
        .arg(sample.join("labels.nii.gz"))
        .arg("--labels-table")
        .arg(sample.join("labels.csv"))
        .args(["--target", "kidney_left:centroid"])
        .args(["--igtl-port", &igtl.to_string()])
        .args(["--http-port", &http.to_string()])
        .arg("--static-dir")
        .arg(root.join("web/dist"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(300);
    while TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(
            serve.try_wait().unwrap().is_none(),
            "pinhole serve exited early"
        );
        assert!(Instant::now() < end, "pinhole serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A replayed sweep: `pinhole us sweep` (linear probe at the CT's centre, beam
    // posterior, array towards the patient's left, sliding 1 mm per frame along the
    // image normal, superior) written as a tracked sequence, then `pinhole replay
    // --sequence` streams it at 10 frames/s, over and over, once the page is open
    // (us.mjs writes page-ready), until the browser test ends.
    let sweep = out.path().join("sweep.seq.mha");
    let pose = format!("{},{},{}", centre[0], centre[1], centre[2]);
    let made = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .args(["us", "sweep", "--ct"])
        .arg(&ct_path)
        .args(["--probe", "linear", "--pose", &pose, "--direction", "0,1,0"])
        .args(["--lateral", "1,0,0", "--size", "160", "--frames", "30"])
        .args(["--step-mm", "1", "--out"])
        .arg(&sweep)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "us sweep: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let stop = Arc::new(AtomicBool::new(false));
    let ready = out.path().join("page-ready");
    let sender = {
        let stop = stop.clone();
        std::thread::spawn(move || -> u64 {
            while !ready.exists() {
                if stop.load(Ordering::SeqCst) {
                    return 0;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut replays = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let done = Command::new(env!("CARGO_BIN_EXE_pinhole"))
                    .args(["replay", "--sequence"])
                    .arg(&sweep)
                    .args(["--port", &igtl.to_string(), "--rate", "10"])
                    .output()
                    .unwrap();
                assert!(
                    done.status.success(),
                    "replay: {}",
                    String::from_utf8_lossy(&done.stderr)
                );
                replays += 1;
            }
            replays * 30
        })
    };
    let result = Command::new("node")
        .arg(root.join("web/e2e/us.mjs"))
        .arg(out.path())
        .current_dir(root.join("web"))
        .env("PINHOLE_URL", format!("http://127.0.0.1:{http}/"))
        .output();
    stop.store(true, Ordering::SeqCst);
    let sent = sender.join().unwrap();
    serve.kill().unwrap();
    serve.wait().unwrap();
    let result = result.expect("node (and web/node_modules: npm ci in web/) is needed");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "e2e failed ({sent} frames sent):\n{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let summary: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("e2e printed no JSON summary");
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["hidden_before_frames"], true);
    let seqs = summary["seqs_seen"].as_array().unwrap();
    assert!(seqs.len() >= 3, "{summary}");
    assert!(sent >= 30, "{sent} frames sent");
    assert_eq!(summary["blended"]["latest"]["width_px"], 160);
    // The frames' x runs to the patient's left: L on the picture's right edge.
    assert_eq!(
        summary["blended"]["latest"]["letters"],
        serde_json::json!({"left": "R", "right": "L", "top": "A", "bottom": "P"})
    );
    assert!(out.path().join("us-panel.png").exists());
}
