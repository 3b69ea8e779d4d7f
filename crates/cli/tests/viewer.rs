//! The README's first command end to end in real headless Chromium (Debian `chromium`,
//! `playwright-core`; `.ci/run` installs both and builds `web/dist`): `pinhole demo
//! --no-open` serves the viewer, the CT loads in NiiVue, the needle marker moves while
//! the replay runs, the guidance panel shows a distance, a new C-arm angle gives a new
//! DRR, and the browser console stays free of errors (`web/e2e/demo.mjs`). And the live
//! ultrasound panel: `pinhole serve` on the same sample CT, tracked ultrasound frames
//! sent over OpenIGTLink while the page is open (`web/e2e/us.mjs`).

use std::io::Write;
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

/// An 8-bit IMAGE of `Image_Reference` on an axial plane through `centre_lps` shifted
/// by `dz_mm`: pixel x towards the patient's left, y posterior, 1.5 mm pixels, as RAS
/// (x and y of the world side negated).
fn axial_frame(centre_lps: [f64; 3], dz_mm: f64, n: u16, seq: u64) -> pinhole_igtl::Message {
    use pinhole_igtl::{Body, Coordinate, Endian, ImageBody, Message, ScalarType};
    let spacing = 1.5;
    let half = spacing * f64::from(n - 1) / 2.0;
    let origin_lps = [
        centre_lps[0] - half,
        centre_lps[1] - half,
        centre_lps[2] + dz_mm,
    ];
    let ijk_to_ras = [
        [-spacing, 0.0, 0.0, -origin_lps[0]],
        [0.0, -spacing, 0.0, -origin_lps[1]],
        [0.0, 0.0, 1.0, origin_lps[2]],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let w = usize::from(n);
    // A speckle-like pattern that moves with the frame number.
    let pixels = (0..w * w)
        .map(|o| (((o % w) * 7 + (o / w) * 3 + seq as usize * 11) % 200) as u8)
        .collect();
    let body = ImageBody::new(
        [n, n, 1],
        ScalarType::U8,
        1,
        Endian::Big,
        Coordinate::Ras,
        &ijk_to_ras,
        pixels,
    );
    let mut m = Message::new("Image_Reference", Body::Image(body));
    m.timestamp = pinhole_igtl::Timestamp::now();
    m
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

    // Frames once the page is open (us.mjs writes page-ready), a sweep of axial planes
    // ±20 mm about the CT's centre, 10 a second, until the browser test ends.
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
            let mut socket = TcpStream::connect(("127.0.0.1", igtl)).unwrap();
            let mut sent = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let dz = 20.0 * ((sent as f64) * 0.2).sin();
                let frame = axial_frame(centre, dz, 160, sent);
                socket
                    .write_all(&pinhole_igtl::encode(&frame).unwrap())
                    .unwrap();
                sent += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            sent
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
    assert!(sent >= 3, "{sent} frames sent");
    assert_eq!(summary["blended"]["latest"]["width_px"], 160);
    // The frames' x runs to the patient's left: L on the picture's right edge.
    assert_eq!(
        summary["blended"]["latest"]["letters"],
        serde_json::json!({"left": "R", "right": "L", "top": "A", "bottom": "P"})
    );
    assert!(out.path().join("us-panel.png").exists());
}
