//! End-to-end tests of the `pinhole` binary on the real data in `../shared/data`.

// Helpers outside `#[test]` functions unwrap too (`allow-unwrap-in-tests` covers only tests).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// The helpers of pinhole-io's tests (real data paths, the Python reference scripts).
#[path = "../../../tests/support/shared.rs"]
mod common;
mod serve;

use common::*;

mod plan_needle;
// `pinhole dicom listen` with pynetdicom as the sender (#24).
mod dicom;
// `pinhole dicom seg`: a label map as a DICOM Segmentation, read back by highdicom.
mod dicom_export;
// A DICOM Segmentation as label input (highdicom writes it).
mod seg_input;
// `pinhole plan ablation` and `pinhole evla`.
mod ablation;
mod vessel;
// `pinhole register-ct`, `pinhole verify needle`, `pinhole confirm ablation` (#21).
mod intraop;
// Atomic outputs, inputs never overwritten, absurd parameters refused (#25).
mod outputs;
// `pinhole us simulate`.
mod us;
// `pinhole us reconstruct`, `pinhole us landmarks`.
mod us_tracked;
// `pinhole demo` in headless Chromium.
mod viewer;
// `pinhole cases list|show|export` over a record made by pinhole-record.
mod cases;
// `pinhole serve --record`, `pinhole replay --case`, kill -9 while recording.
mod record;

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

fn info_json(path: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["info", "--json", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    serde_json::from_str(&pinhole_ok(&args)).unwrap()
}

/// Validates each `(schema name, file)` against `docs/schemas` with Python's `jsonschema`.
fn validate_against_schemas(pairs: &[(&str, &Path)]) {
    let schemas = repo_root().join("docs/schemas");
    let args: Vec<String> = std::iter::once(schemas.display().to_string())
        .chain(
            pairs
                .iter()
                .map(|(name, p)| format!("{name}={}", p.display())),
        )
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let done = python_json("schema_check.py", &args);
    assert_eq!(done["validated"].as_array().unwrap().len(), pairs.len());
}

fn assert_close(ours: &serde_json::Value, reference: &serde_json::Value, tol: f64) {
    assert_matrix_close(&json_matrix(ours), reference, tol);
}

/// pydicom's reading of a DICOM folder: its JSON and the voxels (i fastest; `raw` names
/// a `.npy` file, `tests/py/voxel_file.py`).
fn pydicom_series(dir: &Path, raw: &Path) -> (serde_json::Value, Vec<f64>) {
    let reference = python_json(
        "dicom_reference.py",
        &["series", dir.to_str().unwrap(), raw.to_str().unwrap()],
    );
    (reference, read_voxels(raw))
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

#[test]
fn info_json_matches_nibabel_for_the_chest_ct() {
    let ct = shared_data("chest-ct/ct.nii.gz");
    // "-": nibabel's reading without its voxels on disk (279 MB as float64).
    let reference = python_json("nifti_reference.py", &["nifti", ct.to_str().unwrap(), "-"]);
    let info = info_json(&ct, &[]);
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
    let info = info_json(&labels, &["--labels-table", table.to_str().unwrap()]);
    assert_eq!(info["is_label_map"], true);
    // Names parsed independently from the same CSV (group,original_idx,structure,id).
    let csv: BTreeMap<u32, String> = structures_csv().into_iter().collect();
    let rows = info["labels"].as_array().unwrap();
    assert!(rows.len() > 50);
    let spacing: f64 = info["spacing_mm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .product();
    for row in rows {
        let id = u32::try_from(row["id"].as_u64().unwrap()).unwrap();
        assert_eq!(row["name"].as_str().unwrap(), csv[&id], "label {id}");
        let ml = row["voxels"].as_f64().unwrap() * spacing / 1000.0;
        assert!((row["ml"].as_f64().unwrap() - ml).abs() < 1e-9);
    }
}

/// Runs `info` on `path`, expecting a clean failure that names `name`.
fn assert_info_fails_cleanly(path: &Path, name: &str) {
    let out = pinhole(&["info", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{name}: exit 0\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
    assert!(stderr.contains(name), "{name} not named: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_input_exits_non_zero_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_info_fails_cleanly(&dir.path().join("missing.nii.gz"), "missing.nii.gz");

    let empty = dir.path().join("empty.nii");
    std::fs::write(&empty, b"").unwrap();
    assert_info_fails_cleanly(&empty, "empty.nii");

    let garbage = dir.path().join("broken.nii.gz");
    std::fs::write(&garbage, b"\x1f\x8b\x08\x00garbage").unwrap();
    assert_info_fails_cleanly(&garbage, "broken.nii.gz");

    // A real .nii.gz cut short: in the header, and in the voxel data.
    let bytes = std::fs::read(shared_data("abdomen-ct/example_ct_sm.nii.gz")).unwrap();
    for (name, keep) in [("head.nii.gz", 200), ("half.nii.gz", bytes.len() / 2)] {
        let truncated = dir.path().join(name);
        std::fs::write(&truncated, &bytes[..keep]).unwrap();
        assert_info_fails_cleanly(&truncated, name);
    }
    // The untruncated file is fine (the cases above fail for the cut, not the data).
    pinhole_ok(&[
        "info",
        shared_data("abdomen-ct/example_ct_sm.nii.gz")
            .to_str()
            .unwrap(),
    ]);
}

#[test]
fn convert_nifti_to_nrrd_keeps_geometry_and_values() {
    let dir = tempfile::tempdir().unwrap();
    let input = shared_data("abdomen-ct/example_ct.nii.gz");
    let output = dir.path().join("ct.nrrd");
    pinhole_ok(&["convert", input.to_str().unwrap(), output.to_str().unwrap()]);
    let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
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
    assert!(
        read_voxels(&a) == read_voxels(&b),
        "NRRD voxels differ from the NIfTI's"
    );
}

#[test]
fn demo_runs_on_the_embedded_sample() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    // An earlier run that failed left its marker: a complete run removes it.
    std::fs::create_dir_all(&out).unwrap();
    let marker = out.join("pinhole-failed.txt");
    std::fs::write(&marker, "an earlier run failed\n").unwrap();
    let stdout = pinhole_ok(&[
        "demo",
        "--no-open",
        "--no-serve",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!marker.exists(), "the stale failure marker stayed");
    assert!(stdout.contains("NOT FOR CLINICAL USE"));
    assert!(stdout.contains("liver"), "{stdout}");
    assert!(out.join("ct.nrrd").exists());
    assert!(out.join("labels.seg.nrrd").exists());
    assert!(out.join("fluoro_frontal.png").exists());
    // The ultrasound step: a rocked convex sweep (21 poses there and 20 back), each frame
    // tracked, the beam along the kidney-biopsy path from its entry.
    assert!(stdout.contains("== ultrasound"), "{stdout}");
    let sweep = pinhole_io::sequence::read_sequence(&out.join("us_sweep.seq.mha")).unwrap();
    assert_eq!(sweep.frames.len(), 41);
    assert!(sweep
        .frames
        .iter()
        .all(|f| f.valid_transform("ImageToReference").is_ok()));
    assert!(
        sweep.frames.iter().any(|f| match &f.pixels {
            pinhole_io::sequence::FramePixels::U8(p) => p.iter().filter(|&&v| v > 0).count() > 1000,
            _ => false,
        }),
        "the simulated frames are blank"
    );
    // Every report the demo wrote matches its published schema (an independent validator).
    let plan = out.join("kidney-biopsy/plan.json");
    validate_against_schemas(&[
        ("needle-plan", &plan),
        ("needle-plan", &out.join("thyroid-fna/plan.json")),
        ("vessel-route", &out.join("vessel-route/route.json")),
        ("ablation", &out.join("ablation/ablation.json")),
        ("needle-plan", &out.join("ablation-path/plan.json")),
    ]);
    // The ablation follows a liver-biopsy path, and its applicator track is checked.
    let ablation: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ablation/ablation.json")).unwrap())
            .unwrap();
    assert_eq!(
        ablation["tracks"][0]["procedure"], "liver-biopsy",
        "{ablation}"
    );
    assert!(
        stdout.contains("applicator tracks under the liver-biopsy rules"),
        "{stdout}"
    );
    // ...and the validator does reject: a plan without its disclaimer.
    let mut broken: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    broken.as_object_mut().unwrap().remove("note");
    let broken_path = dir.path().join("broken.json");
    std::fs::write(&broken_path, broken.to_string()).unwrap();
    let python = std::env::var("PINHOLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let checked = Command::new(python)
        .arg(repo_root().join("tests/py/schema_check.py"))
        .arg(repo_root().join("docs/schemas"))
        .arg(format!("needle-plan={}", broken_path.display()))
        .output()
        .unwrap();
    assert!(!checked.status.success());
    assert!(String::from_utf8_lossy(&checked.stderr).contains("'note' is a required property"));
}

/// Regression: a demo that failed while writing its files left no sign of it beside
/// an earlier run's files.
#[test]
fn demo_that_fails_while_writing_leaves_a_failure_marker() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    // `ct.nrrd` cannot be written: a folder has its name.
    std::fs::create_dir_all(out.join("ct.nrrd")).unwrap();
    let run = pinhole(&[
        "demo",
        "--no-open",
        "--no-serve",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let marker = std::fs::read_to_string(out.join("pinhole-failed.txt")).unwrap();
    assert!(marker.contains("demo"), "{marker}");
    assert!(String::from_utf8_lossy(&run.stderr).contains("this run failed"));
}

#[test]
fn info_json_matches_pydicom_for_the_dicom_series() {
    let series = shared_data("dicom-ct-series");
    let dir = tempfile::tempdir().unwrap();
    let (reference, voxels) = pydicom_series(&series, &dir.path().join("v.npy"));
    let info = info_json(&series, &[]);
    assert_eq!(info["format"], "DICOM series");
    assert_eq!(info["dims"], reference["dims"]);
    assert_close(&info["ijk_to_lps"], &reference["matrix"], 1e-4);
    let (lo, hi) = min_max(&voxels);
    assert_eq!(info["min"].as_f64(), Some(lo));
    assert_eq!(info["max"].as_f64(), Some(hi));
    // Spacing from the positions (2 mm), not SliceThickness (3 mm): said in a warning.
    let dz = info["spacing_mm"][2].as_f64().unwrap();
    assert!((dz - reference["slice_spacing"].as_f64().unwrap()).abs() < 1e-9);
    assert!(
        info["warnings"].to_string().contains("SliceThickness"),
        "{info}"
    );
}

#[test]
fn convert_enhanced_ct_file_to_nifti_matches_pydicom_on_its_source_series() {
    // One Legacy Converted Enhanced CT file (highdicom) made from the shared series: the
    // CLI takes the file itself; nibabel reads the NIfTI as pydicom reads the source.
    let source = shared_data("dicom-ct-series");
    let dir = tempfile::tempdir().unwrap();
    let enhanced = dir.path().join("enhanced.dcm");
    python_json(
        "enhanced_reference.py",
        &[
            "legacy-ct",
            source.to_str().unwrap(),
            enhanced.to_str().unwrap(),
            "j2k",
        ],
    );
    let info = info_json(&enhanced, &[]);
    assert_eq!(info["format"], "DICOM series");
    assert_eq!(info["dims"], serde_json::json!([512, 512, 20]));
    let output = dir.path().join("out.nii.gz");
    pinhole_ok(&[
        "convert",
        enhanced.to_str().unwrap(),
        output.to_str().unwrap(),
    ]);
    let (a, b) = (dir.path().join("dicom.npy"), dir.path().join("nifti.npy"));
    let (dicom, reference) = pydicom_series(&source, &a);
    let nib = python_json(
        "nifti_reference.py",
        &["nifti", output.to_str().unwrap(), b.to_str().unwrap()],
    );
    assert_eq!(nib["dims"], dicom["dims"]);
    assert_close(&nib["ijk_to_lps"], &dicom["matrix"], 1e-4);
    assert!(
        read_voxels(&b) == reference,
        "voxels differ from pydicom's source series"
    );
}

#[test]
fn convert_dicom_to_nifti_matches_pydicom_through_nibabel() {
    let series = shared_data("dicom-ct-series");
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.nii.gz");
    pinhole_ok(&[
        "convert",
        series.to_str().unwrap(),
        output.to_str().unwrap(),
    ]);
    let (a, b) = (dir.path().join("dicom.npy"), dir.path().join("nifti.npy"));
    let (dicom, _) = pydicom_series(&series, &a);
    let nib = python_json(
        "nifti_reference.py",
        &["nifti", output.to_str().unwrap(), b.to_str().unwrap()],
    );
    assert_eq!(nib["dims"], dicom["dims"]);
    assert_close(&nib["ijk_to_lps"], &dicom["matrix"], 1e-4);
    let (ours, reference) = (read_voxels(&b), read_voxels(&a));
    assert_eq!(ours.len(), 512 * 512 * 20);
    assert!(ours == reference, "voxels differ from pydicom's");
}

/// A colour DICOM image (pydicom's palette and RLE RGB files) becomes an RGB NRRD that
/// pynrrd reads with an `RGB-color` axis and exactly pydicom's colours; `info --json`
/// gives pydicom's sample range and the stored colour space (schema-valid); NIfTI output
/// and a label-map target are refused with the reason.
#[test]
fn convert_colour_dicom_to_rgb_nrrd_matches_pydicom_through_pynrrd() {
    for name in ["examples_palette.dcm", "SC_rgb_rle.dcm"] {
        let source = PathBuf::from(python("dicom_reference.py", &["testfile", name]).trim());
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::create_dir(&input).unwrap();
        std::fs::copy(&source, input.join(name)).unwrap();
        let output = dir.path().join("out.nrrd");
        pinhole_ok(&["convert", input.to_str().unwrap(), output.to_str().unwrap()]);
        let check = python_json(
            "dicom_reference.py",
            &[
                "colour_nrrd",
                source.to_str().unwrap(),
                output.to_str().unwrap(),
            ],
        );
        assert_eq!(check["kinds"][0], "RGB-color", "{name}: {check}");
        assert_eq!(check["space"], "left-posterior-superior", "{name}");
        assert_eq!(
            check["worst"], 0.0,
            "{name}: colours differ from pydicom: {check}"
        );
        // `info` describes the colour series instead of refusing it.
        let reference = python_json(
            "dicom_reference.py",
            &[
                "colour",
                source.to_str().unwrap(),
                dir.path().join("rgb.npy").to_str().unwrap(),
            ],
        );
        let info = info_json(&input, &[]);
        assert_eq!(
            info["scalar_type"],
            format!("rgb{}", reference["bits"]),
            "{name}"
        );
        assert_eq!(info["min"], reference["min"], "{name}");
        assert_eq!(info["max"], reference["max"], "{name}");
        assert!(
            info["colour"].is_string() && info["not_ct"].is_string(),
            "{info}"
        );
        assert_eq!(info["is_label_map"], false);
        let info_path = dir.path().join("info.json");
        std::fs::write(&info_path, info.to_string()).unwrap();
        validate_against_schemas(&[("volume-info", info_path.as_path())]);
        for target in ["out.nii.gz", "out.seg.nrrd"] {
            let refused = pinhole(&[
                "convert",
                input.to_str().unwrap(),
                dir.path().join(target).to_str().unwrap(),
            ]);
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(!refused.status.success(), "{name} -> {target}");
            assert!(
                stderr.contains("nrrd only") || stderr.contains("not a label map"),
                "{name} -> {target}: {stderr}"
            );
            assert!(!dir.path().join(target).exists(), "{target} written");
        }
    }
}

#[test]
fn convert_label_map_to_seg_nrrd_reads_back_in_slicerio() {
    let input = shared_data("abdomen-ct/example_seg.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.seg.nrrd");
    pinhole_ok(&["convert", input.to_str().unwrap(), output.to_str().unwrap()]);
    let raw = dir.path().join("labels.npy");
    let nib = python_json(
        "nifti_reference.py",
        &["nifti", input.to_str().unwrap(), raw.to_str().unwrap()],
    );
    let seg = python_json("slicer_reference.py", &["seg", output.to_str().unwrap()]);

    // Label values and voxel counts as nibabel reads them.
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for v in read_voxels(&raw) {
        assert_eq!(v.fract(), 0.0);
        if v != 0.0 {
            *counts.entry(v as u32).or_default() += 1;
        }
    }
    assert!(counts.len() > 30, "{counts:?}");
    let segments = seg["segments"].as_array().unwrap();
    let values: Vec<u32> = segments
        .iter()
        .map(|s| u32::try_from(s["labelValue"].as_u64().unwrap()).unwrap())
        .collect();
    assert_eq!(values, counts.keys().copied().collect::<Vec<_>>());
    for (value, count) in &counts {
        assert_eq!(seg["voxels"][value.to_string()].as_u64(), Some(*count));
    }

    // Names: TotalSegmentator v2, whose ids 1..=116 are the CSV's; 117 is
    // costal_cartilages in TotalSegmentator 2.x (the CSV says carpal, see labels.rs).
    let csv: BTreeMap<u32, String> = structures_csv().into_iter().collect();
    assert!(counts.contains_key(&117));
    for (segment, value) in segments.iter().zip(&values) {
        let expected = match value {
            1..=116 => csv[value].as_str(),
            117 => "costal_cartilages",
            _ => panic!("label {value} is not in TotalSegmentator v2"),
        };
        assert_eq!(segment["name"], expected, "label {value}");
    }

    // Geometry: slicerio's ijkToLPS is nibabel's affine taken to LPS.
    assert_close(&seg["ijkToLPS"], &nib["ijk_to_lps"], 1e-4);
    assert_eq!(seg["shape"], nib["dims"]);
}

#[test]
fn dicom_folder_with_two_series_lists_both_and_picks_by_uid() {
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (
        "1.2.826.0.1.3680043.8.498.101",
        "1.2.826.0.1.3680043.8.498.102",
    );
    let made = python_json(
        "dicom_reference.py",
        &[
            "two_series",
            shared_data("dicom-ct-series").to_str().unwrap(),
            dir.path().to_str().unwrap(),
            "5",
            small,
            large,
        ],
    );
    assert_eq!(made["series"][small], 5);
    assert_eq!(made["series"][large], 15);
    let folder = dir.path().to_str().unwrap();

    // Default: both listed on stderr, the larger one read.
    let out = pinhole(&["info", "--json", folder]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 series"), "{stderr}");
    for (uid, slices) in [(small, 5), (large, 15)] {
        let line = stderr
            .lines()
            .find(|l| l.contains(uid))
            .unwrap_or_else(|| panic!("{uid} not listed: {stderr}"));
        assert!(line.contains(&format!("{slices} slices")), "{line}");
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["dims"][2], 15);
    assert_eq!(info["series_uid"], large);

    // --series picks the smaller one: the first five slices by file name, which
    // pydicom reads on its own from a folder holding just those files.
    let info = info_json(dir.path(), &["--series", small]);
    assert_eq!(info["series_uid"], small);
    assert_eq!(info["dims"], serde_json::json!([512, 512, 5]));
    let only = tempfile::tempdir().unwrap();
    let mut names: Vec<_> = std::fs::read_dir(shared_data("dicom-ct-series"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for f in &names[..5] {
        std::fs::copy(f, only.path().join(f.file_name().unwrap())).unwrap();
    }
    let raw = tempfile::tempdir().unwrap();
    let (reference, voxels) = pydicom_series(only.path(), &raw.path().join("v.npy"));
    assert_close(&info["ijk_to_lps"], &reference["matrix"], 1e-4);
    let (lo, hi) = min_max(&voxels);
    assert_eq!(
        (info["min"].as_f64(), info["max"].as_f64()),
        (Some(lo), Some(hi))
    );

    // An unknown UID: an error naming the ones present.
    let out = pinhole(&["info", folder, "--series", "1.2.3"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(small) && stderr.contains(large), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn drr_raw_output_matches_the_independent_reference_on_cpu_and_gpu() {
    // `pinhole drr --out-raw` (LAO 30 CAUD 10, source posterior) against the numpy
    // reference `tests/py/drr_reference.py`; the raw NIfTI's row 0 is the displayed top.
    let ct = shared_data("abdomen-ct/example_ct.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    python(
        "drr_reference.py",
        &[
            ct.to_str().unwrap(),
            dir.path().to_str().unwrap(),
            "48",
            "6",
            "30,-10,p",
        ],
    );
    let bytes = std::fs::read(dir.path().join("0_trilinear.f32")).unwrap();
    let reference: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let reference_of = |name: &str| -> Vec<f32> {
        std::fs::read(dir.path().join(format!("0_{name}.f32")))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    // The CPU's default is the exact Siddon ray tracing; --trilinear and --gpu sample.
    for (flag, reference) in [
        (None, reference_of("siddon")),
        (Some("--trilinear"), reference),
        (Some("--gpu"), reference_of("trilinear")),
    ] {
        let raw = dir
            .path()
            .join(format!("drr-{}.nii", flag.unwrap_or("default")));
        let png = dir.path().join("drr.png");
        let mut args = vec![
            "drr",
            "--ct",
            ct.to_str().unwrap(),
            "--lao",
            "30",
            "--caud",
            "10",
            "--size",
            "48",
            "--pixel-mm",
            "6",
            "--out",
            png.to_str().unwrap(),
            "--out-raw",
            raw.to_str().unwrap(),
        ];
        args.extend(flag);
        pinhole_ok(&args);
        let voxels = dir.path().join("raw.f64");
        let info = python_json(
            "nifti_reference.py",
            &["nifti", raw.to_str().unwrap(), voxels.to_str().unwrap()],
        );
        assert_eq!(info["dims"], serde_json::json!([48, 48, 1]));
        let ours = read_f64_le(&voxels); // i (column) fastest, then j (row): row-major image
        let num: f64 = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - f64::from(*b)).powi(2))
            .sum();
        let den: f64 = reference.iter().map(|b| f64::from(*b).powi(2)).sum();
        let rel_l2 = (num / den).sqrt();
        assert!(rel_l2 < 1e-3, "{flag:?}: relative L2 {rel_l2}");
    }
    assert!(std::fs::metadata(dir.path().join("drr.png")).unwrap().len() > 100);
    // --samples means nothing to the default exact renderer: refused, not ignored.
    let png = dir.path().join("unused.png");
    let run = pinhole(&[
        "drr",
        "--ct",
        ct.to_str().unwrap(),
        "--samples",
        "100",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("--samples applies to --trilinear or --gpu"),
        "{stderr}"
    );
    assert!(!png.exists());
}

mod register;
