//! The README's first command end to end in real headless Chromium (Debian `chromium`,
//! `playwright-core`; `.ci/run` installs both and builds `web/dist`): `pinhole demo
//! --no-open` serves the viewer, the CT loads in NiiVue, the needle marker moves while
//! the replay runs, the guidance panel shows a distance, the replay's client is listed as
//! the tracking source (the steering log), a new C-arm angle gives a new
//! DRR, and the browser console stays free of errors (`web/e2e/demo.mjs`). And the live
//! ultrasound panel: `pinhole serve` on the same sample CT, a simulated sweep (`pinhole us
//! sweep`) replayed by `pinhole replay --sequence` while the page is open, the panel
//! changing with the frames (`web/e2e/us.mjs`). And the control CT panel: two control
//! scans POSTed to `pinhole serve`, the detected needle drawn and moving with the second
//! (`web/e2e/control_ct.mjs`).

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
    // The steering log reaches the viewer: the replay's client is the tracking source.
    let events = summary["source_events"]["items"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.as_str().unwrap().contains("tracking source")),
        "{summary}"
    );
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
    let summary = e2e_summary(result, &format!("{sent} frames sent"));
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

/// A control scan of `planning` (the sample CT, no motion): 0.8 × 0.8 × 2.5 mm, 60 mm of
/// z around `tip_lps`, with a straight needle (3000 HU, [`needle_in_voxel`], from the tip
/// 80 mm back along −`axis_lps`, which must not lie in the axial plane) burned in; int16
/// HU.
fn control_scan_with_needle(
    planning: &pinhole_volume::Volume<f32>,
    tip_lps: [f64; 3],
    axis_lps: [f64; 3],
) -> pinhole_volume::Volume<i16> {
    let spacing = [0.8, 0.8, 2.5];
    let dims = [260usize, 260, 24];
    let origin: [f64; 3] =
        std::array::from_fn(|a| tip_lps[a] - 0.5 * spacing[a] * (dims[a] - 1) as f64);
    let grid =
        pinhole_volume::Grid::new(dims, spacing, origin, pinhole_volume::math::IDENTITY).unwrap();
    let hub: [f64; 3] = std::array::from_fn(|a| tip_lps[a] - 80.0 * axis_lps[a]);
    let mut data = Vec::with_capacity(grid.voxel_count());
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let x = grid.index_to_world([i as f64, j as f64, k as f64]);
                let hu = if needle_in_voxel(x, hub, axis_lps, 0.5 * spacing[2]) {
                    3000.0
                } else {
                    planning.sample_trilinear(x).unwrap_or(-1000.0)
                };
                data.push(hu.round().clamp(-1024.0, 3071.0) as i16);
            }
        }
    }
    pinhole_volume::Volume::new(grid, data).unwrap()
}

/// Whether the voxel centred at `x` shows the needle (radius 1 mm, 80 mm from `hub` along
/// the unit `axis`): some part of the axis within the voxel's slice passes within 1 mm of
/// `x` in the slice plane (a 3-D distance would break an almost in-plane needle into
/// dashes between slices).
fn needle_in_voxel(x: [f64; 3], hub: [f64; 3], axis: [f64; 3], half_slice_mm: f64) -> bool {
    let a = (x[2] - half_slice_mm - hub[2]) / axis[2];
    let b = (x[2] + half_slice_mm - hub[2]) / axis[2];
    let (s0, s1) = (a.min(b).max(0.0), a.max(b).min(80.0));
    if s0 > s1 {
        return false;
    }
    let d = [x[0] - hub[0], x[1] - hub[1]];
    let n2 = axis[0] * axis[0] + axis[1] * axis[1];
    let s = ((d[0] * axis[0] + d[1] * axis[1]) / n2).clamp(s0, s1);
    (d[0] - s * axis[0]).hypot(d[1] - s * axis[1]) <= 1.0
}

#[test]
fn control_ct_needle_is_drawn_and_moves_in_headless_chromium() {
    let root = repo_root();
    let sample = root.join("data/sample");
    let ct_path = sample.join("ct.nii.gz");
    let planning = pinhole_io::nifti::read(&ct_path).unwrap().to_f32();
    let c = planning.grid().center_lps();
    let out = tempfile::tempdir().unwrap();
    // A hand-written plan 58 mm long, anterior and from the patient's right.
    let target = [c[0] - 50.0, c[1] + 10.0, c[2] - 60.0];
    let entry = [target[0] - 40.0, target[1] - 40.0, target[2] + 10.0];
    let plan = out.path().join("plan.json");
    std::fs::write(
        &plan,
        serde_json::json!({"target_lps": target, "paths": [{"entry_lps": entry, "target_lps": target}]})
            .to_string(),
    )
    .unwrap();
    // Two control scans: the needle on the plan line 30 mm, then 15 mm short of the
    // target (advanced 15 mm between them).
    let length = (0..3)
        .map(|a| (target[a] - entry[a]).powi(2))
        .sum::<f64>()
        .sqrt();
    let axis: [f64; 3] = std::array::from_fn(|a| (target[a] - entry[a]) / length);
    let mut scans = Vec::new();
    for (n, short_mm) in [30.0, 15.0].into_iter().enumerate() {
        let tip: [f64; 3] = std::array::from_fn(|a| target[a] - short_mm * axis[a]);
        let scan = control_scan_with_needle(&planning, tip, axis);
        let path = out.path().join(format!("control{}.nii.gz", n + 1));
        let bytes = pinhole_io::nifti::to_gzip_bytes(
            &pinhole_io::image::AnyVolume::I16(scan),
            "control.nii.gz",
        )
        .unwrap();
        std::fs::write(&path, bytes).unwrap();
        scans.push(path.display().to_string());
    }
    let (igtl, http) = (free_port(), free_port());
    let mut serve = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .arg("serve")
        .arg("--ct")
        .arg(&ct_path)
        .arg("--labels")
        .arg(sample.join("labels.nii.gz"))
        .arg("--labels-table")
        .arg(sample.join("labels.csv"))
        .arg("--plan")
        .arg(&plan)
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
    let result = Command::new("node")
        .arg(root.join("web/e2e/control_ct.mjs"))
        .arg(out.path())
        .current_dir(root.join("web"))
        .env("PINHOLE_URL", format!("http://127.0.0.1:{http}/"))
        .env("CONTROL_SCANS", scans.join(":"))
        .output();
    serve.kill().unwrap();
    serve.wait().unwrap();
    let summary = e2e_summary(result, "control scans posted");
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["hidden_before_scans"], true);
    // The drawn tip moved by the needle's advance (the detection within 1.5 mm each).
    let moved = summary["needle_moved_mm"].as_f64().unwrap();
    assert!((moved - 15.0).abs() <= 3.0, "{summary}");
    for (shown, short_mm) in summary["shown"]
        .as_array()
        .unwrap()
        .iter()
        .zip([30.0, 15.0])
    {
        let tip_to_target = shown["tipToTargetMm"].as_f64().unwrap();
        assert!((tip_to_target - short_mm).abs() <= 1.5, "{summary}");
    }
    assert!(out.path().join("control-ct-panel.png").exists());
}

/// The JSON summary an end-to-end script printed last; fails with its output when the
/// script failed (`context` says what the test had done).
fn e2e_summary(result: std::io::Result<std::process::Output>, context: &str) -> serde_json::Value {
    let result = result.expect("node (and web/node_modules: npm ci in web/) is needed");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "e2e failed ({context}):\n{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("e2e printed no JSON summary")
}
