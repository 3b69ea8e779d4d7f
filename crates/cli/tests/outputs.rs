//! Outputs (#25): written atomically, never over an input, a failed run marked, absurd
//! parameters refused with the limit named before any work.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::*;

fn stderr_of(args: &[&str]) -> String {
    let out = pinhole(args);
    assert!(!out.status.success(), "pinhole {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Regression: `drr --out-raw ct.nii.gz` replaced the CT and `convert a.nii a.nii`
/// rewrote its input; a hard link is the same file under another name.
#[test]
fn outputs_never_replace_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let ct = dir.path().join("ct.nii.gz");
    std::fs::copy(shared_data("abdomen-ct/example_ct_sm.nii.gz"), &ct).unwrap();
    let before = std::fs::read(&ct).unwrap();
    let linked = dir.path().join("linked.nii.gz");
    std::fs::hard_link(&ct, &linked).unwrap();
    let png = dir.path().join("drr.png");
    let spelt_again = dir.path().join(".").join("ct.nii.gz");
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    for args in [
        vec![
            "drr",
            "--ct",
            &s(&ct),
            "--out",
            &s(&png),
            "--out-raw",
            &s(&ct),
        ],
        vec!["convert", &s(&ct), &s(&spelt_again)],
        vec!["convert", &s(&ct), &s(&linked)],
    ] {
        let err = stderr_of(&args);
        assert!(err.contains("it is the input"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(&ct).unwrap(), before);
    assert!(!png.exists(), "refused before any output was written");
}

/// Regression: NaN angles rendered a black PNG with exit 0, `--size 100000` aborted on a
/// 40 GB allocation, `--candidates 1000000000` / `--minutes 1e9` / a 100 m tumour ran
/// for minutes or out of memory. Each is refused at once, naming the parameter and its
/// range, before the CT is even read (the CT path here does not exist).
#[test]
fn absurd_parameters_are_refused_with_the_limit_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    let absent = "no-such-ct.nii.gz";
    let drr = |option: &'static str, value: &'static str| {
        vec!["drr", "--ct", absent, option, value, "--out", "a.png"]
    };
    let mut needle = vec!["plan", "needle", "--ct", absent, "--labels", absent];
    needle.extend(["--procedure", "kidney-biopsy", "--target", "kidney_left"]);
    needle.extend(["--candidates", "1000000000", "--out", out]);
    let ablation = |extra: &[&'static str]| {
        let mut args = vec!["plan", "ablation", "--ct", absent, "--labels", absent];
        args.extend(["--tumor", "0,0,0,15", "--device", "any", "--power", "60"]);
        args.extend(extra);
        args.extend(["--out", out]);
        args
    };
    let mut huge_tumour = vec!["plan", "ablation", "--ct", absent, "--labels", absent];
    huge_tumour.extend([
        "--tumor",
        "0,0,0,100000",
        "--device",
        "any",
        "--power",
        "60",
    ]);
    huge_tumour.extend(["--minutes", "5", "--out", out]);
    let cases: [(Vec<&str>, &str); 9] = [
        (drr("--lao", "nan"), "finite"),
        (drr("--cran", "inf"), "finite"),
        (
            drr("--size", "100000"),
            "--size 100000 px is outside the accepted range 1..=4096",
        ),
        (
            drr("--sod", "2000"),
            "--sod 2000 mm must lie between 0 and --sid",
        ),
        (
            needle,
            "--candidates 1000000000 is outside the accepted range 1..=2000000",
        ),
        (
            ablation(&["--minutes", "1e9"]),
            "--minutes 1000000000 min is outside",
        ),
        (
            ablation(&["--minutes", "5", "--grid-mm", "0.01"]),
            "--grid-mm 0.01 mm is outside the accepted range 0.25..=5 mm",
        ),
        (
            vec!["replay", "--synthesize", absent, "--rate", "1e9"],
            "--rate 1000000000 Hz is outside",
        ),
        (
            huge_tumour,
            "tumour radius 100000 mm is outside the accepted range 0.1..=100 mm",
        ),
    ];
    for (args, expected) in cases {
        let err = stderr_of(&args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// Regression: a failed run left the previous plan in its folder with nothing saying
/// the latest run failed. Now the folder gets `pinhole-failed.txt` with the error, and
/// the earlier files are left as they were.
#[test]
fn a_failed_run_marks_its_output_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plan");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("plan.json"), b"{\"earlier\": true}").unwrap();
    let err = stderr_of(&[
        "plan",
        "needle",
        "--ct",
        shared_data("abdomen-ct/example_ct_sm.nii.gz")
            .to_str()
            .unwrap(),
        "--labels",
        dir.path().join("missing_labels.nii.gz").to_str().unwrap(),
        "--procedure",
        "kidney-biopsy",
        "--target",
        "kidney_left",
        "--out",
        out.to_str().unwrap(),
    ]);
    let marker = std::fs::read_to_string(out.join("pinhole-failed.txt")).unwrap();
    assert!(marker.contains("plan needle failed"), "{marker}");
    assert!(marker.contains("missing_labels.nii.gz"), "{marker}\n{err}");
    assert!(marker.contains("earlier run"), "{marker}");
    assert_eq!(
        std::fs::read(out.join("plan.json")).unwrap(),
        b"{\"earlier\": true}"
    );
}

/// Regression: outputs were opened with truncation in place, so a SIGKILL left a
/// half-written file under the final name. Killed at spread-out moments while
/// converting the chest CT to `.nii.gz`, the output is always either the earlier
/// complete file or the new complete file (nibabel reads it whole), never a prefix.
#[test]
fn a_killed_conversion_never_leaves_a_half_written_file() {
    let dir = tempfile::tempdir().unwrap();
    let ct = shared_data("chest-ct/ct.nii.gz");
    let out = dir.path().join("out.nii.gz");
    let earlier = b"earlier complete file".to_vec();
    std::fs::write(&out, &earlier).unwrap();
    let mut replaced = 0;
    for delay_ms in [150, 400, 700, 1000, 1400, 2000] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pinhole"))
            .args(["convert", ct.to_str().unwrap(), out.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let now = std::fs::read(&out).unwrap();
        if now != earlier {
            replaced += 1;
            let read = python_json("nifti_reference.py", &["nifti", out.to_str().unwrap(), "-"]);
            assert_eq!(read["dims"][0].as_u64(), Some(512), "{read}");
            std::fs::write(&out, &earlier).unwrap();
        }
    }
    // At least one kill must have landed before the rename, or the test proves nothing.
    assert!(replaced < 6, "every conversion finished before its kill");
}

/// Regression: reports copied input paths verbatim, so a folder named after the patient
/// ended up in `plan.json`, `info --json` and `/api/session`. Now they record the file
/// name (and SHA-256 where the report has one); `--record-full-paths` asks for more.
#[test]
fn reports_record_file_names_not_the_folders_above_them() {
    let dir = tempfile::tempdir().unwrap();
    let patient = dir.path().join("DOE_JOHN_19570312");
    std::fs::create_dir(&patient).unwrap();
    let ct = patient.join("ct.nii.gz");
    std::fs::copy(shared_data("abdomen-ct/example_ct_sm.nii.gz"), &ct).unwrap();
    let text = pinhole_ok(&["info", "--json", ct.to_str().unwrap()]);
    assert!(!text.contains("DOE_JOHN"), "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["path"], "ct.nii.gz");
    let full = pinhole_ok(&[
        "info",
        "--json",
        "--record-full-paths",
        ct.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_str(&full).unwrap();
    assert_eq!(report["path"].as_str(), ct.to_str());
}
