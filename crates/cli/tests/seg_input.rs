//! A DICOM Segmentation (highdicom's, of the shared CT series) as label input to the CLI:
//! `info` names its segments, `convert` turns it into a Slicer .seg.nrrd with those names
//! (slicerio reads it back), and `plan needle` places it on the CT's grid and judges its
//! segments against the procedure's risk structures (refusing the missing ones by name).

use super::common::{python_json, shared_data};
use super::{info_json, pinhole, pinhole_ok};

fn highdicom_seg(dir: &std::path::Path) -> std::path::PathBuf {
    let seg = dir.join("seg.dcm");
    python_json(
        "seg_reference.py",
        &[
            "highdicom-seg",
            shared_data("dicom-ct-series").to_str().unwrap(),
            seg.to_str().unwrap(),
            dir.join("expected.npy").to_str().unwrap(),
            "binary",
        ],
    );
    seg
}

#[test]
fn dicom_segmentation_as_labels_in_info_convert_and_plan() {
    let dir = tempfile::tempdir().unwrap();
    let seg = highdicom_seg(dir.path());

    let info = info_json(&seg, &[]);
    assert_eq!(info["is_label_map"], true, "{info}");
    let labels = info["labels"].as_array().unwrap();
    let named: Vec<(u64, &str, u64)> = labels
        .iter()
        .map(|l| {
            (
                l["id"].as_u64().unwrap(),
                l["name"].as_str().unwrap(),
                l["voxels"].as_u64().unwrap(),
            )
        })
        .collect();
    // Liver box 12 x 150 x 200 less the tumour box 4 x 20 x 30 it holds.
    assert_eq!(
        named,
        [
            (1, "liver", 12 * 150 * 200 - 2400),
            (2, "liver_tumor", 2400)
        ]
    );
    assert!(
        info["warnings"]
            .to_string()
            .contains("overlap in 2400 voxels"),
        "{info}"
    );

    let nrrd = dir.path().join("seg.seg.nrrd");
    pinhole_ok(&["convert", seg.to_str().unwrap(), nrrd.to_str().unwrap()]);
    let slicer = python_json("slicer_reference.py", &["seg", nrrd.to_str().unwrap()]);
    let names: Vec<&str> = slicer["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["liver", "liver_tumor"], "{slicer}");
    assert_eq!(slicer["voxels"]["2"], 2400, "{slicer}");

    // On the CT's grid (the SEG covers slices 3..14 of 20); the biopsy's risk structures
    // (ribs, lungs, vessels ...) are not among its segments: refused, naming them.
    let out = pinhole(&[
        "plan",
        "needle",
        "--ct",
        shared_data("dicom-ct-series").to_str().unwrap(),
        "--labels",
        seg.to_str().unwrap(),
        "--procedure",
        "liver-biopsy",
        "--target",
        "liver_tumor",
        "--out",
        dir.path().join("plan").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing from the label table"), "{err}");
    assert!(err.contains("aorta (risk group large_vessels)"), "{err}");
    assert!(!err.contains("not on the CT"), "{err}");
    assert!(err.contains("overlap in 2400 voxels"), "{err}");
}
