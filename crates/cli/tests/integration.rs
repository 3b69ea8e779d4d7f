//! End-to-end tests of the `pinhole` binary on the real data in `../shared/data`.

// Helpers outside `#[test]` functions unwrap too (`allow-unwrap-in-tests` covers only tests).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shared_data(relative: &str) -> PathBuf {
    let base = std::env::var_os("PINHOLE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"));
    base.join(relative)
}

fn pinhole(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .args(args)
        .output()
        .unwrap()
}

fn pinhole_ok(args: &[&str]) -> String {
    let out = pinhole(args);
    assert!(
        out.status.success(),
        "pinhole {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let interpreter = std::env::var("PINHOLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(interpreter)
        .arg(repo_root().join("tests/py").join(script))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_close(ours: &serde_json::Value, reference: &serde_json::Value, tol: f64) {
    for r in 0..4 {
        for c in 0..4 {
            let (a, b) = (
                ours[r][c].as_f64().unwrap(),
                reference[r][c].as_f64().unwrap(),
            );
            assert!((a - b).abs() <= tol, "[{r}][{c}] ours {a} reference {b}");
        }
    }
}

#[test]
fn info_json_matches_nibabel_for_the_chest_ct() {
    let ct = shared_data("chest-ct/ct.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("v.f64");
    let reference = python_json(
        "nifti_reference.py",
        &["nifti", ct.to_str().unwrap(), raw.to_str().unwrap()],
    );
    let info: serde_json::Value =
        serde_json::from_str(&pinhole_ok(&["info", "--json", ct.to_str().unwrap()])).unwrap();
    assert_eq!(info["dims"], reference["dims"]);
    assert_close(&info["ijk_to_lps"], &reference["ijk_to_lps"], 1e-4);
    assert_eq!(info["min"], reference["min"]);
    assert_eq!(info["max"], reference["max"]);
    assert_eq!(info["orientation"], "LAS");
    assert_eq!(info["labels"].as_array().unwrap().len(), 0);
    for key in ["spacing_mm", "origin_lps", "direction"] {
        assert!(info.get(key).is_some(), "{key} missing");
    }
    assert!(info["disclaimer"]
        .as_str()
        .unwrap()
        .contains("NOT FOR CLINICAL USE"));
}

#[test]
fn info_lists_named_labels_with_volumes() {
    // This label map ships its own table (ids 117/118 differ from TotalSegmentator v2).
    let labels = shared_data("chest-ct/labels.nii.gz");
    let table = shared_data("chest-ct/structures.csv");
    let info: serde_json::Value = serde_json::from_str(&pinhole_ok(&[
        "info",
        "--json",
        labels.to_str().unwrap(),
        "--labels-table",
        table.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(info["is_label_map"], true);
    // Names parsed independently from the same CSV (group,original_idx,structure,id).
    let csv = std::fs::read_to_string(&table).unwrap();
    let name_of = |id: u64| -> String {
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f[3].trim().parse::<u64>().ok() == Some(id))
            .map(|f| f[2].to_string())
            .unwrap()
    };
    let rows = info["labels"].as_array().unwrap();
    assert!(rows.len() > 50);
    let spacing: f64 = info["spacing_mm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .product();
    for row in rows {
        let id = row["id"].as_u64().unwrap();
        assert_eq!(row["name"].as_str().unwrap(), name_of(id), "label {id}");
        let ml = row["voxels"].as_f64().unwrap() * spacing / 1000.0;
        assert!((row["ml"].as_f64().unwrap() - ml).abs() < 1e-9);
    }
}

#[test]
fn bad_input_exits_non_zero_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.nii.gz");
    std::fs::write(&bad, b"\x1f\x8b\x08\x00garbage").unwrap();
    let out = pinhole(&["info", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.nii.gz"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn convert_nifti_to_nrrd_keeps_geometry_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let input = shared_data("abdomen-ct/example_ct.nii.gz");
    let output = dir.path().join("ct.nrrd");
    pinhole_ok(&["convert", input.to_str().unwrap(), output.to_str().unwrap()]);
    let (a, b) = (dir.path().join("a.f64"), dir.path().join("b.f64"));
    let nib = python_json(
        "nifti_reference.py",
        &["nifti", input.to_str().unwrap(), a.to_str().unwrap()],
    );
    let nrrd = python_json(
        "nifti_reference.py",
        &["nrrd", output.to_str().unwrap(), b.to_str().unwrap()],
    );
    assert_eq!(nib["dims"], nrrd["dims"]);
    assert_close(&nrrd["ijk_to_lps"], &nib["ijk_to_lps"], 1e-6);
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn demo_runs_on_the_embedded_sample() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let stdout = pinhole_ok(&["demo", "--no-open", "--out", out.to_str().unwrap()]);
    assert!(stdout.contains("NOT FOR CLINICAL USE"));
    assert!(stdout.contains("liver"), "{stdout}");
    assert!(out.join("ct.nrrd").exists());
    assert!(out.join("labels.seg.nrrd").exists());
}
