//! `pinhole plan needle` on the chest CT, every returned path checked by the independent
//! Python oracle (`tests/py/needle_oracle.py`: own label-table expansion, brute-force
//! distances to voxel centres every 0.25 mm, own skin normals from the CT).

use std::path::Path;

use super::common::*;
use super::{pinhole, pinhole_ok};

fn oracle(out: &Path, procedure: &str) -> serde_json::Value {
    let data = shared_data("chest-ct");
    let profile = repo_root().join(format!("crates/plan-needle/profiles/{procedure}.toml"));
    python_json(
        "needle_oracle.py",
        &[
            out.join("plan.json").to_str().unwrap(),
            profile.to_str().unwrap(),
            data.join("ct.nii.gz").to_str().unwrap(),
            data.join("labels.nii.gz").to_str().unwrap(),
            data.join("structures.csv").to_str().unwrap(),
        ],
    )
}

#[test]
fn needle_plans_on_the_chest_ct_pass_the_oracle() {
    let data = shared_data("chest-ct");
    let ct = data.join("ct.nii.gz");
    let labels = data.join("labels.nii.gz");
    let table = data.join("structures.csv");
    let sphere = python(
        "needle_oracle.py",
        &[
            "sphere",
            labels.to_str().unwrap(),
            table.to_str().unwrap(),
            "liver",
            "15",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("kidney-biopsy", "kidney_cyst_left".to_string()),
        ("thyroid-fna", "thyroid_gland".to_string()),
        ("liver-biopsy", sphere.trim().to_string()),
        ("nephrostomy", "kidney_right".to_string()),
    ];
    for (procedure, target) in &cases {
        let out = dir.path().join(procedure);
        pinhole_ok(&[
            "plan",
            "needle",
            "--ct",
            ct.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
            "--labels-table",
            table.to_str().unwrap(),
            "--procedure",
            procedure,
            "--target",
            target,
            "--out",
            out.to_str().unwrap(),
        ]);
        let plan: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("plan.json")).unwrap()).unwrap();
        assert_eq!(plan["procedure"], *procedure);
        assert!(plan["candidates"].as_u64().unwrap() >= 40_000);
        assert!(plan["note"]
            .as_str()
            .unwrap()
            .contains("Not for clinical use"));
        assert_eq!(plan["inputs"][0]["sha256"].as_str().unwrap().len(), 64);
        assert!(plan["version"].is_string());
        let groups = plan["profile"]["risk_groups"].as_array().unwrap();
        assert!(groups
            .iter()
            .all(|g| g["clearance_mm"].is_f64() && g["labels"].is_array()));
        let paths = plan["paths"].as_array().unwrap();
        assert!(!paths.is_empty(), "{procedure}: no path");
        let report = oracle(&out, procedure);
        let failures = report["failures"].as_array().unwrap();
        assert!(failures.is_empty(), "{procedure}: {failures:?}");
        assert_eq!(report["paths"].as_array().unwrap().len(), paths.len());
        // Alternatives differ from the best by >= 10 degrees.
        let dir0: Vec<f64> = (0..3)
            .map(|a| paths[0]["direction_lps"][a].as_f64().unwrap())
            .collect();
        for p in &paths[1..] {
            let cos: f64 = (0..3)
                .map(|a| p["direction_lps"][a].as_f64().unwrap() * dir0[a])
                .sum();
            assert!(
                cos <= 10f64.to_radians().cos() + 1e-9,
                "{procedure}: close paths"
            );
        }
        if *procedure == "kidney-biopsy" {
            // Left stays left: the cyst of the left kidney has LPS x > 0 and is reached
            // from the patient's left flank.
            let tx = plan["target_lps"][0].as_f64().unwrap();
            let ex = paths[0]["entry_lps"][0].as_f64().unwrap();
            assert!(tx > 50.0 && ex > tx, "target x {tx}, entry x {ex}");
        }
        let markups: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("paths.mrk.json")).unwrap())
                .unwrap();
        assert_eq!(markups["markups"].as_array().unwrap().len(), paths.len());
        assert_eq!(markups["markups"][0]["type"], "Line");
        let vtk = std::fs::read_to_string(out.join("skin_access.vtk")).unwrap();
        assert!(vtk.contains("SCALARS accessible double 1"));
        let png = std::fs::read(out.join("best.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}

#[test]
fn plan_needle_names_unknown_procedures() {
    let out = pinhole(&[
        "plan",
        "needle",
        "--ct",
        "x.nii.gz",
        "--labels",
        "y.nii.gz",
        "--procedure",
        "appendectomy",
        "--target",
        "liver",
        "--out",
        "/tmp/unused",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kidney-biopsy") && err.contains("nephrostomy"),
        "{err}"
    );
}

/// Regression (#17): the chest CT's costal cartilages have id 118, which TotalSegmentator
/// v2's table (the default) does not name; planning ignored them. Now `plan needle`
/// refuses, naming the id, its voxel count (nibabel's) and the way out.
#[test]
fn plan_needle_refuses_labels_the_table_does_not_name() {
    let data = shared_data("chest-ct");
    let labels = data.join("labels.nii.gz");
    let count = python_json(
        "nifti_reference.py",
        &["count", labels.to_str().unwrap(), "118"],
    );
    let out = pinhole(&[
        "plan",
        "needle",
        "--ct",
        data.join("ct.nii.gz").to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--procedure",
        "liver-biopsy",
        "--target",
        "liver:deepest",
        "--out",
        "/tmp/pinhole-unnamed-unused",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("118 ({count} voxels)")), "{err}");
    assert!(err.contains("--unnamed-labels forbid"), "{err}");
    assert!(!Path::new("/tmp/pinhole-unnamed-unused").exists());
}
