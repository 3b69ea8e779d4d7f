//! The README's first command end to end in real headless Chromium (Debian `chromium`,
//! `playwright-core`; `.ci/run` installs both and builds `web/dist`): `pinhole demo
//! --no-open` serves the viewer, the CT loads in NiiVue, the needle marker moves while
//! the replay runs, the guidance panel shows a distance, a new C-arm angle gives a new
//! DRR, and the browser console stays free of errors (`web/e2e/demo.mjs`).

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
