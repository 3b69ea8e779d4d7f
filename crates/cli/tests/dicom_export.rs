//! `pinhole dicom seg`: a label map on the grid of the shared DICOM CT series written as a
//! DICOM Segmentation, read back by highdicom and pydicom and checked by dciodvfy
//! (`tests/py/seg_reference.py`); labels the table does not name are refused. `pinhole dicom
//! sr` and `sc`: a needle plan and its picture, read back by highdicom / pydicom, checked
//! by dciodvfy.

use super::common::{python_json, shared_data};
use super::{pinhole, pinhole_ok, validate_against_schemas};

/// The series as NIfTI, a label map on its grid (nibabel) and its voxel counts.
pub(super) fn labels_on_the_series(dir: &std::path::Path, extra: Option<u16>) -> serde_json::Value {
    let series = shared_data("dicom-ct-series");
    let ct = dir.join("ct.nii.gz");
    pinhole_ok(&["convert", series.to_str().unwrap(), ct.to_str().unwrap()]);
    let labels = dir.join("labels.nii.gz");
    let extra = extra.map(|id| id.to_string());
    let mut args = vec![
        "make-labels",
        ct.to_str().unwrap(),
        labels.to_str().unwrap(),
    ];
    args.extend(extra.as_deref());
    python_json("seg_reference.py", &args)["counts"].clone()
}

pub(super) fn write_table(dir: &std::path::Path) -> std::path::PathBuf {
    let table = dir.join("table.csv");
    std::fs::write(
        &table,
        "id,name,r,g,b\n1,bone,241,214,145\n2,target_box,255,0,0\n",
    )
    .unwrap();
    table
}

#[test]
fn dicom_seg_writes_what_highdicom_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let counts = labels_on_the_series(tmp.path(), None);
    let table = write_table(tmp.path());
    let out = tmp.path().join("seg");
    let series = shared_data("dicom-ct-series");
    let stdout = pinhole_ok(&[
        "dicom",
        "seg",
        "--series",
        series.to_str().unwrap(),
        "--labels",
        tmp.path().join("labels.nii.gz").to_str().unwrap(),
        "--labels-table",
        table.to_str().unwrap(),
        "--algorithm",
        "threshold",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let names: Vec<&str> = report["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bone", "target_box"]);
    for segment in report["segments"].as_array().unwrap() {
        let label = segment["label"].to_string();
        assert_eq!(segment["voxels"], counts[&label], "{segment}");
    }
    // The source series is de-identified with blank Study / Series UIDs: said, not hidden.
    let warnings = report["warnings"].to_string();
    assert!(warnings.contains("no StudyInstanceUID"), "{warnings}");
    validate_against_schemas(&[("dicom-seg", &out.join("dicom_seg.json"))]);

    // highdicom and pydicom: the same segments, names and voxel counts; dciodvfy: no error.
    let decoded = tmp.path().join("decoded.u16");
    let reference = python_json(
        "seg_reference.py",
        &[
            "check",
            out.join("segmentation.dcm").to_str().unwrap(),
            series.to_str().unwrap(),
            decoded.to_str().unwrap(),
        ],
    );
    let segments = reference["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2);
    for (segment, name) in segments.iter().zip(["bone", "target_box"]) {
        let number = segment["number"].as_u64().unwrap();
        assert_eq!(segment["label"], name);
        assert_eq!(segment["algorithm_type"], "AUTOMATIC");
        assert_eq!(
            segment["count_pixels"],
            counts[&number.to_string()],
            "{segment}"
        );
        assert_eq!(
            segment["count_volume"],
            counts[&number.to_string()],
            "{segment}"
        );
    }
    let errors = reference["dciodvfy"]["errors"].as_array().unwrap();
    assert!(
        reference["dciodvfy"]["available"].as_bool().unwrap(),
        "install dicom3tools"
    );
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn dicom_seg_refuses_a_label_the_table_does_not_name() {
    let tmp = tempfile::tempdir().unwrap();
    labels_on_the_series(tmp.path(), Some(7));
    let table = write_table(tmp.path());
    let out = tmp.path().join("seg");
    let done = pinhole(&[
        "dicom",
        "seg",
        "--series",
        shared_data("dicom-ct-series").to_str().unwrap(),
        "--labels",
        tmp.path().join("labels.nii.gz").to_str().unwrap(),
        "--labels-table",
        table.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!done.status.success());
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(stderr.contains("does not name: 7 (1 voxels)"), "{stderr}");
    assert!(!out.join("segmentation.dcm").exists());
    assert!(!out.join("dicom_seg.json").exists());
}

/// A profile for the labels of `make-labels`: the box is the target, bone the risk.
pub(super) const TEST_PROFILE: &str = r#"
name = "dicom-sr-test"
description = "Test profile: target_box, bone as the one risk group."
allowed_labels = ["target_box"]
min_separation_deg = 10.0

[length]
max_mm = 250.0
source = "test"

[skin_angle]
max_deg = 80.0
source = "test"

[[risk_groups]]
name = "bone"
labels = ["bone"]
clearance_mm = 1.0
weight = 1.0
source = "test"

[weights]
length = 1.0
clearance = 1.0
skin_angle = 0.5
capsule_angle = 0.5
"#;

/// Labels on the series' grid (`labels.nii.gz`, `table.csv`) and a needle plan of its
/// two best paths on `series` (`plan/` under `dir`, with `best.png`): the plan folder.
fn plan_needle(series: &std::path::Path, dir: &std::path::Path) -> std::path::PathBuf {
    labels_on_the_series(dir, None);
    let table = write_table(dir);
    let profile = dir.join("profile.toml");
    std::fs::write(&profile, TEST_PROFILE).unwrap();
    let plan_dir = dir.join("plan");
    pinhole_ok(&[
        "plan",
        "needle",
        "--ct",
        series.to_str().unwrap(),
        "--labels",
        dir.join("labels.nii.gz").to_str().unwrap(),
        "--labels-table",
        table.to_str().unwrap(),
        "--procedure",
        "liver-biopsy",
        "--profile",
        profile.to_str().unwrap(),
        "--target",
        "target_box",
        "--top",
        "2",
        "--out",
        plan_dir.to_str().unwrap(),
    ]);
    plan_dir
}

fn codes_value(code: &serde_json::Value) -> &str {
    code[0].as_str().unwrap()
}

#[test]
fn dicom_sr_of_a_needle_plan_reads_back_in_highdicom() {
    let tmp = tempfile::tempdir().unwrap();
    let series = shared_data("dicom-ct-series");
    let plan_dir = plan_needle(&series, tmp.path());
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(plan_dir.join("plan.json")).unwrap())
            .unwrap();
    let out = tmp.path().join("sr");
    pinhole_ok(&[
        "dicom",
        "sr",
        "--series",
        series.to_str().unwrap(),
        "--plan",
        plan_dir.join("plan.json").to_str().unwrap(),
        "--paths",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    validate_against_schemas(&[("dicom-sr", &out.join("dicom_sr.json"))]);
    let reference = python_json(
        "sr_reference.py",
        &[
            "check",
            out.join("measurements_sr.dcm").to_str().unwrap(),
            series.to_str().unwrap(),
        ],
    );
    assert!(
        reference["dciodvfy"]["available"].as_bool().unwrap(),
        "install dicom3tools"
    );
    let errors = reference["dciodvfy"]["errors"].as_array().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let groups = reference["groups_pydicom"].as_array().unwrap();
    // target, path 1, path 1's clearance to bone.
    assert_eq!(groups.len(), 3, "{groups:#?}");
    let close = |a: &serde_json::Value, b: &serde_json::Value| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        // SCOORD3D points are 32-bit floats.
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
    };
    let target = &groups[0]["regions"][0];
    assert_eq!(target["graphic_type"], "POINT");
    for axis in 0..3 {
        close(&target["points"][0][axis], &plan["target_lps"][axis]);
    }
    let path = &plan["paths"][0];
    let line = &groups[1]["regions"][0];
    assert_eq!(line["graphic_type"], "POLYLINE");
    for axis in 0..3 {
        close(&line["points"][0][axis], &path["entry_lps"][axis]);
        close(&line["points"][1][axis], &path["target_lps"][axis]);
    }
    assert_eq!(
        line["frame_of_reference"],
        reference["ct_frame_of_reference_uid"]
    );
    let length = &groups[1]["measurements"][0];
    assert_eq!(codes_value(&length["concept"]), "410668003");
    close(&length["floating_point_value"], &path["length_mm"]);
    let clearance = &groups[2]["measurements"][0];
    assert_eq!(codes_value(&clearance["concept"]), "121206");
    close(
        &clearance["floating_point_value"],
        &path["min_clearance_mm"]["bone"],
    );
    assert_eq!(
        groups[2]["tracking_identifier"],
        "needle path 1: clearance to bone"
    );
}

/// What [`plan_and_export`] wrote.
pub(super) struct Exported {
    pub seg: std::path::PathBuf,
    pub sr: std::path::PathBuf,
    pub sc: std::path::PathBuf,
}

/// On the DICOM series `series` (the shared series' grid): labels, a needle plan, and its
/// label map, plan and picture (`best.png`) as SEG, SR and SC, under `dir`. The SC is
/// checked here: pydicom decodes the plan's picture below the burned-in band, the report
/// matches its schema and dciodvfy finds no error.
pub(super) fn plan_and_export(series: &std::path::Path, dir: &std::path::Path) -> Exported {
    let plan_dir = plan_needle(series, dir);
    let (labels, table) = (dir.join("labels.nii.gz"), dir.join("table.csv"));
    let series = series.to_str().unwrap();
    let (seg, sr, sc) = (dir.join("seg"), dir.join("sr"), dir.join("sc"));
    let common = |command: &str, out: &std::path::Path| {
        vec![
            "dicom".to_string(),
            command.into(),
            "--series".into(),
            series.into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let run = |mut args: Vec<String>, extra: &[&str]| {
        args.extend(extra.iter().map(|a| a.to_string()));
        pinhole_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    run(
        common("seg", &seg),
        &[
            "--labels",
            labels.to_str().unwrap(),
            "--labels-table",
            table.to_str().unwrap(),
        ],
    );
    run(
        common("sr", &sr),
        &["--plan", plan_dir.join("plan.json").to_str().unwrap()],
    );
    let picture = plan_dir.join("best.png");
    let text = run(common("sc", &sc), &["--picture", picture.to_str().unwrap()]);
    assert!(text.contains("NOT FOR CLINICAL USE"), "{text}");
    validate_against_schemas(&[("dicom-sc", &sc.join("dicom_sc.json"))]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sc.join("dicom_sc.json")).unwrap()).unwrap();
    let decoded_path = dir.join("sc.rgb");
    let reference = python_json(
        "sc_reference.py",
        &[
            "check",
            sc.join("capture.dcm").to_str().unwrap(),
            series,
            decoded_path.to_str().unwrap(),
        ],
    );
    let errors = reference["dciodvfy"]["errors"].as_array().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(reference["burned_in_annotation"], "YES");
    // The plan's picture, decoded by the png crate, equals pydicom's pixels below the band.
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&picture).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut png_pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut png_pixels).unwrap();
    assert_eq!(frame.color_type, png::ColorType::Rgb, "best.png is RGB");
    let (width, height) = (frame.width as usize, frame.height as usize);
    assert_eq!(
        (reference["columns"].as_u64(), reference["rows"].as_u64()),
        (Some(width as u64), Some(height as u64))
    );
    let decoded = std::fs::read(&decoded_path).unwrap();
    let band = report["banner_rows"].as_u64().unwrap() as usize * width * 3;
    assert!(band > 0 && band < decoded.len() / 4, "{report}");
    assert!(decoded[band..] == png_pixels[band..width * height * 3]);
    assert!(decoded[..band] != png_pixels[..band], "no band burned in");
    Exported {
        seg: seg.join("segmentation.dcm"),
        sr: sr.join("measurements_sr.dcm"),
        sc: sc.join("capture.dcm"),
    }
}

#[test]
fn dicom_sc_refuses_a_picture_that_is_not_a_png_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let series = shared_data("dicom-ct-series");
    let not_png = tmp.path().join("picture.png");
    std::fs::write(&not_png, b"GIF89a not a png").unwrap();
    let out = tmp.path().join("sc");
    let result = pinhole(&[
        "dicom",
        "sc",
        "--series",
        series.to_str().unwrap(),
        "--picture",
        not_png.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(result.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("picture.png"), "{stderr}");
    assert!(!out.join("capture.dcm").exists());
    assert!(!out.join("dicom_sc.json").exists());
}

/// The shared series given an identity (tests/py/deidentify_peer.py `make`).
fn identified_series(dir: &std::path::Path) -> std::path::PathBuf {
    let identified = dir.join("identified");
    let series = shared_data("dicom-ct-series");
    python_json(
        "deidentify_peer.py",
        &[
            "make",
            series.to_str().unwrap(),
            identified.to_str().unwrap(),
        ],
    );
    identified
}

/// The files under `dir` (relative paths, sorted), the report excluded.
pub(crate) fn dicom_tree(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "dcm") {
                let rel = path.strip_prefix(dir).unwrap();
                files.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    files
}

/// `pinhole dicom deidentify` against dicom-anonymizer (the same PS3.15 table, applied
/// with pydicom) on a series given a patient's identity: the same attributes removed,
/// emptied, kept or changed (but for the peer's documented dummy dates), nothing of the
/// identity left anywhere (sequences and private blocks included), pixel data untouched,
/// one study and one series, links between slices kept with the new UIDs; the same key
/// gives the same UIDs, another key other ones.
#[test]
fn dicom_deidentify_applies_the_basic_profile_as_dicom_anonymizer_does() {
    let tmp = tempfile::tempdir().unwrap();
    let identified = identified_series(tmp.path());
    let key = tmp.path().join("key.txt");
    std::fs::write(&key, "a site secret of some length\n").unwrap();
    let run = |out: &str, key: Option<&std::path::Path>| {
        let out = tmp.path().join(out);
        let mut args = vec![
            "dicom",
            "deidentify",
            "--json",
            "--out",
            out.to_str().unwrap(),
        ];
        if let Some(key) = key {
            args.extend(["--key-file", key.to_str().unwrap()]);
        }
        args.push(identified.to_str().unwrap());
        let report: serde_json::Value = serde_json::from_str(&pinhole_ok(&args)).unwrap();
        (out, report)
    };
    let (out, report) = run("deid", Some(&key));
    assert_eq!(report["outputs"].as_array().unwrap().len(), 20);
    assert!(report["failed"].as_array().unwrap().is_empty());
    assert!(report["key"].as_str().unwrap().starts_with("given"));
    let text = report.to_string();
    assert!(
        !text.contains("DOE") && !text.contains("MRN-4711"),
        "{text}"
    );
    validate_against_schemas(&[("dicom-deidentify", &out.join("dicom_deidentify.json"))]);

    let peer = python_json(
        "deidentify_peer.py",
        &[
            "compare",
            identified.to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(peer["files"], 20, "{peer}");
    assert!(
        peer["compared_attributes"].as_u64().unwrap() > 2000,
        "{peer}"
    );
    assert_eq!(peer["mismatches"], serde_json::json!([]), "{peer}");
    assert_eq!(peer["identity_left"], serde_json::json!([]), "{peer}");
    assert_eq!(peer["pixels_equal"], 20, "{peer}");
    assert_eq!(peer["meta_matches"], 20, "{peer}");
    assert_eq!(
        (&peer["studies"], &peer["series"], &peer["instances"]),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(20)
        ),
        "{peer}"
    );
    assert_eq!(peer["links"], 19, "{peer}");
    assert_eq!(peer["links_kept"], 19, "{peer}");

    let (same, _) = run("deid-same-key", Some(&key));
    assert_eq!(dicom_tree(&out), dicom_tree(&same));
    let (random, report) = run("deid-random-key", None);
    assert!(report["key"].as_str().unwrap().starts_with("random"));
    let (a, b) = (dicom_tree(&out), dicom_tree(&random));
    assert_eq!(b.len(), 20);
    assert!(a.iter().all(|f| !b.contains(f)), "another key, other UIDs");

    // The shared series itself has blank Study / Series UIDs in its data sets: they are
    // filled, and each file says so in the report and on the terminal.
    let out = tmp.path().join("deid-blank");
    let series = shared_data("dicom-ct-series");
    let run = pinhole(&[
        "dicom",
        "deidentify",
        "--out",
        out.to_str().unwrap(),
        series.to_str().unwrap(),
    ]);
    assert!(run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(
        stderr.matches("blank Study Instance UID filled").count(),
        20,
        "{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("dicom_deidentify.json")).unwrap())
            .unwrap();
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .filter(|w| w
                .as_str()
                .unwrap()
                .contains("blank Series Instance UID filled"))
            .count()
            == 20,
        "{report}"
    );
    assert_eq!(dicom_tree(&out).len(), 20);
}

/// `dicom seg|sr|sc --deidentify` with the key the series was de-identified with: none
/// of the series' identity or original UIDs in the objects, and each references the
/// de-identified series as `dicom deidentify` wrote it (the SEG and the SR: its study,
/// Frame of Reference, series and instances; the capture: its study); the reports name
/// the new UIDs.
#[test]
fn dicom_seg_sr_sc_deidentified_reference_the_deidentified_series() {
    let tmp = tempfile::tempdir().unwrap();
    let identified = identified_series(tmp.path());
    let key = tmp.path().join("key.txt");
    std::fs::write(&key, "the series' own secret\n").unwrap();
    let deid = tmp.path().join("deid");
    pinhole_ok(&[
        "dicom",
        "deidentify",
        "--key-file",
        key.to_str().unwrap(),
        "--out",
        deid.to_str().unwrap(),
        identified.to_str().unwrap(),
    ]);
    let plan_dir = plan_needle(&identified, tmp.path());
    let export = |command: &str, extra: &[&str]| -> (std::path::PathBuf, serde_json::Value) {
        let out = tmp.path().join(format!("{command}-deid"));
        let mut args = vec![
            "dicom",
            command,
            "--series",
            identified.to_str().unwrap(),
            "--deidentify",
            "--key-file",
            key.to_str().unwrap(),
            "--json",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let report: serde_json::Value = serde_json::from_str(&pinhole_ok(&args)).unwrap();
        (out, report)
    };
    let labels = tmp.path().join("labels.nii.gz");
    let table = tmp.path().join("table.csv");
    let plan = plan_dir.join("plan.json");
    let picture = plan_dir.join("best.png");
    let series_folder = dicom_tree(&deid)[0].rsplit_once('/').unwrap().0.to_owned();
    for (command, file, extra) in [
        (
            "seg",
            "segmentation.dcm",
            vec![
                "--labels",
                labels.to_str().unwrap(),
                "--labels-table",
                table.to_str().unwrap(),
            ],
        ),
        (
            "sr",
            "measurements_sr.dcm",
            vec!["--plan", plan.to_str().unwrap()],
        ),
        (
            "sc",
            "capture.dcm",
            vec!["--picture", picture.to_str().unwrap()],
        ),
    ] {
        let (out, report) = export(command, &extra);
        assert_eq!(report["deidentified"], true, "{command}: {report}");
        let object = out.join(file);
        let seen = python_json(
            "deidentify_peer.py",
            &[
                "derived",
                identified.to_str().unwrap(),
                deid.to_str().unwrap(),
                object.to_str().unwrap(),
            ],
        );
        assert_eq!(
            seen["identity_left"],
            serde_json::json!([]),
            "{command}: {seen}"
        );
        assert_eq!(
            seen["original_uids_left"],
            serde_json::json!([]),
            "{command}: {seen}"
        );
        assert_eq!(seen["patient_identity_removed"], "YES", "{command}: {seen}");
        assert_eq!(seen["private_attributes"], 0, "{command}: {seen}");
        assert_eq!(seen["study_matches"], true, "{command}: {seen}");
        // The capture belongs to the study only; the SEG and the SR reference the series.
        if command != "sc" {
            assert_eq!(
                seen["frame_of_reference_matches"], true,
                "{command}: {seen}"
            );
            assert_eq!(seen["series_referenced"], true, "{command}: {seen}");
            assert_eq!(seen["instances_referenced"], 20, "{command}: {seen}");
        }
        assert_eq!(
            report["sop_instance_uid"], seen["sop_instance_uid"],
            "{command}"
        );
        assert_eq!(
            report["series_instance_uid"], seen["series_instance_uid"],
            "{command}"
        );
        assert_eq!(
            format!("{}", report["source_series_uid"].as_str().unwrap()),
            series_folder.rsplit('/').next().unwrap(),
            "{command}: the report names the de-identified source series"
        );
    }
}

/// The SR written into `out` on `series`, checked (report schema, dciodvfy without
/// errors) and read back by `sr_reference.py`: its JSON and its one measurement group.
fn one_group_sr(
    out: &std::path::Path,
    series: &std::path::Path,
) -> (serde_json::Value, serde_json::Value) {
    validate_against_schemas(&[("dicom-sr", &out.join("dicom_sr.json"))]);
    let reference = python_json(
        "sr_reference.py",
        &[
            "check",
            out.join("measurements_sr.dcm").to_str().unwrap(),
            series.to_str().unwrap(),
        ],
    );
    let errors = reference["dciodvfy"]["errors"].as_array().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let groups = reference["groups_pydicom"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{groups:#?}");
    let group = groups[0].clone();
    (reference, group)
}

/// The FloatingPointValue of the group's measurement whose concept has code `concept`.
fn measured_value(group: &serde_json::Value, concept: &str) -> f64 {
    group["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| codes_value(&m["concept"]) == concept)
        .unwrap_or_else(|| panic!("no {concept} in {group:#}"))["floating_point_value"]
        .as_f64()
        .unwrap()
}

/// A SCOORD3D point (32-bit floats) against the report's LPS point.
fn assert_point_close(point: &serde_json::Value, lps: &serde_json::Value) {
    for axis in 0..3 {
        let (a, b) = (point[axis].as_f64().unwrap(), lps[axis].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
    }
}

/// A constructed ablation on the shared series: a 6 mm tumour ball inside a 13 mm zone
/// ball around the same point (MAM 7 mm up to the 2 mm slices' voxelization), confirmed
/// with the series as pre- and post-ablation CT, then written as an SR that highdicom /
/// pydicom read back with the confirmation's numbers and points; dciodvfy finds no error.
/// The same confirmation on another series is refused.
#[test]
fn dicom_sr_of_an_ablation_confirmation_reads_back_and_names_its_series() {
    let tmp = tempfile::tempdir().unwrap();
    let series = shared_data("dicom-ct-series");
    let (ct, zone) = (tmp.path().join("ct.nii.gz"), tmp.path().join("zone.nii.gz"));
    pinhole_ok(&["convert", series.to_str().unwrap(), ct.to_str().unwrap()]);
    python_json(
        "sr_reference.py",
        &[
            "sphere-zone",
            ct.to_str().unwrap(),
            zone.to_str().unwrap(),
            "0",
            "-188",
            "-785.5",
            "13",
        ],
    );
    let conf = tmp.path().join("conf");
    pinhole_ok(&[
        "confirm",
        "ablation",
        "--pre-ct",
        series.to_str().unwrap(),
        "--tumor",
        "0,-188,-785.5,6",
        "--post-ct",
        series.to_str().unwrap(),
        "--zone",
        zone.to_str().unwrap(),
        "--same-frame",
        "--out",
        conf.to_str().unwrap(),
    ]);
    let confirmation: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(conf.join("confirmation.json")).unwrap())
            .unwrap();
    let mam = confirmation["minimal_margin_mm"].as_f64().unwrap();
    assert!((mam - 7.0).abs() <= 1.0, "MAM {mam} mm, constructed 7 mm");
    let out = tmp.path().join("sr");
    pinhole_ok(&[
        "dicom",
        "sr",
        "--series",
        series.to_str().unwrap(),
        "--confirmation",
        conf.join("confirmation.json").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let (reference, group) = one_group_sr(&out, &series);
    assert!(reference["series_description"]
        .as_str()
        .unwrap()
        .contains("ablation confirmation"));
    assert_eq!(codes_value(&group["finding"]), "MARGINOK");
    let value = |concept: &str| measured_value(&group, concept);
    assert_eq!(value("MAM"), mam);
    assert_eq!(value("MARGINREQ"), 5.0);
    for (concept, key) in [
        ("COVERAGE", "coverage_tumor_pct"),
        ("TUMORVOL", "tumor_volume_ml"),
        ("ZONEVOL", "zone_volume_ml"),
    ] {
        assert_eq!(
            value(concept),
            confirmation[key].as_f64().unwrap(),
            "{concept}"
        );
    }
    let thinnest = &group["regions"][0];
    assert_eq!(codes_value(&thinnest["concept"]), "THINNEST");
    assert_point_close(&thinnest["points"][0], &confirmation["thinnest_lps"]);
    assert_eq!(
        thinnest["frame_of_reference"],
        reference["ct_frame_of_reference_uid"]
    );
    // Another series (the same slices but one): its coordinates would be in another
    // scan's frame. Refused, nothing written.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(&series)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files[1..] {
        std::fs::copy(f, other.join(f.file_name().unwrap())).unwrap();
    }
    let refused = tmp.path().join("refused");
    let run = pinhole(&[
        "dicom",
        "sr",
        "--series",
        other.to_str().unwrap(),
        "--confirmation",
        conf.join("confirmation.json").to_str().unwrap(),
        "--out",
        refused.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("was confirmed on another pre-ablation CT"),
        "{err}"
    );
    assert!(!refused.join("measurements_sr.dcm").exists());
}

/// A constructed 50 % stenosis on the shared series' grid (a 10 mm tube narrowing to
/// 5 mm), measured by `pinhole measure vessel`, written as an SR: highdicom / pydicom read
/// back the measurement's MLD, reference, percentages, MLD point and centerline;
/// dciodvfy finds no error; the report warns that the measurement names its inputs only.
#[test]
fn dicom_sr_of_vessel_measurements_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let series = shared_data("dicom-ct-series");
    let (ct, tube, table) = (
        tmp.path().join("ct.nii.gz"),
        tmp.path().join("tube.nii.gz"),
        tmp.path().join("table.csv"),
    );
    pinhole_ok(&["convert", series.to_str().unwrap(), ct.to_str().unwrap()]);
    python_json(
        "sr_reference.py",
        &["tube", ct.to_str().unwrap(), tube.to_str().unwrap()],
    );
    std::fs::write(&table, "1,vessel_tube\n").unwrap();
    let meas = tmp.path().join("meas");
    pinhole_ok(&[
        "measure",
        "vessel",
        "--labels",
        tube.to_str().unwrap(),
        "--labels-table",
        table.to_str().unwrap(),
        "--label",
        "vessel_tube",
        "--out",
        meas.to_str().unwrap(),
    ]);
    let measured: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(meas.join("measurements.json")).unwrap())
            .unwrap();
    let stenosis = &measured["stenosis"];
    let pct = stenosis["diameter_stenosis_pct"].as_f64().unwrap();
    assert!(
        (pct - 50.0).abs() <= 10.0,
        "constructed 50 %, measured {pct} %"
    );
    let out = tmp.path().join("sr");
    let stdout = pinhole_ok(&[
        "dicom",
        "sr",
        "--series",
        series.to_str().unwrap(),
        "--measurements",
        meas.join("measurements.json").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        report["warnings"].to_string().contains("by name only"),
        "{report}"
    );
    let (_, group) = one_group_sr(&out, &series);
    assert_eq!(codes_value(&group["finding"]), "STENOSIS");
    let value = |concept: &str| measured_value(&group, concept);
    assert_eq!(value("410668003"), measured["length_mm"].as_f64().unwrap());
    for (concept, key) in [
        ("MLD", "mld_mm"),
        ("REFDIAM", "reference_diameter_mm"),
        ("DIAMSTEN", "diameter_stenosis_pct"),
        ("AREASTEN", "area_stenosis_pct"),
        ("LESIONLEN", "lesion_length_mm"),
    ] {
        assert_eq!(value(concept), stenosis[key].as_f64().unwrap(), "{concept}");
    }
    let regions = group["regions"].as_array().unwrap();
    let centerline = &regions[0];
    assert_eq!(centerline["graphic_type"], "POLYLINE");
    assert_eq!(
        centerline["points"].as_array().unwrap().len(),
        measured["stations"].as_array().unwrap().len()
    );
    let point = &regions[1];
    assert_eq!(codes_value(&point["concept"]), "MLDPOINT");
    assert_point_close(&point["points"][0], &stenosis["mld_point_lps"]);
    // The narrowest point is the constructed one (x = 0 on the tube's axis).
    assert!(
        point["points"][0][0].as_f64().unwrap().abs() <= 3.0,
        "{point}"
    );
}
