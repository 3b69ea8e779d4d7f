//! `pinhole plan vessel` and `pinhole measure vessel` on the real chest CT.

use super::*;

fn chest(name: &str) -> String {
    shared_data(&format!("chest-ct/{name}"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn plan_vessel_writes_route_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (labels, table) = (chest("labels.nii.gz"), chest("structures.csv"));
    pinhole_ok(&[
        "plan",
        "vessel",
        "--labels",
        &labels,
        "--labels-table",
        &table,
        "--from",
        "subclavian_artery_right",
        "--to",
        "common_carotid_artery_left",
        "--out",
        out,
    ]);
    let route: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("route.json")).unwrap())
            .unwrap();
    assert!(route["note"]
        .as_str()
        .unwrap()
        .contains("NOT FOR CLINICAL USE"));
    assert!(route["version"].is_string() && route["inputs"]["labels"].is_string());
    let vessels: Vec<&str> = route["vessels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(vessels.first(), Some(&"subclavian_artery_right"));
    assert_eq!(vessels.last(), Some(&"common_carotid_artery_left"));
    assert!(vessels.contains(&"brachiocephalic_trunk") && vessels.contains(&"aorta"));
    let points = route["route"]["points_lps"].as_array().unwrap();
    let radii = route["route"]["radius_mm"].as_array().unwrap();
    assert_eq!(points.len(), radii.len());
    // The length is the sum of the point-to-point distances.
    let p: Vec<[f64; 3]> = points
        .iter()
        .map(|p| serde_json::from_value(p.clone()).unwrap())
        .collect();
    let sum: f64 = p
        .windows(2)
        .map(|w| {
            ((w[1][0] - w[0][0]).powi(2)
                + (w[1][1] - w[0][1]).powi(2)
                + (w[1][2] - w[0][2]).powi(2))
            .sqrt()
        })
        .sum();
    assert!((sum - route["length_mm"].as_f64().unwrap()).abs() < 1e-6);
    assert!(route["min_diameter_mm"].as_f64().unwrap() > 0.0);
    assert!(route["turning_angle_deg"].as_f64().unwrap() > 90.0);
    // Slicer-readable outputs.
    let vtk = std::fs::read_to_string(dir.path().join("route.vtk")).unwrap();
    assert!(vtk.contains("POLYDATA") && vtk.contains("radius_mm"));
    let markups: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("route.mrk.json")).unwrap())
            .unwrap();
    assert_eq!(markups["markups"][0]["type"], "Curve");
    let png = std::fs::read(dir.path().join("route.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}

#[test]
fn measure_vessel_writes_stations() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (labels, table) = (chest("labels.nii.gz"), chest("structures.csv"));
    pinhole_ok(&[
        "measure",
        "vessel",
        "--labels",
        &labels,
        "--labels-table",
        &table,
        "--label",
        "common_carotid_artery_left",
        "--out",
        out,
    ]);
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("measurements.json")).unwrap(),
    )
    .unwrap();
    assert!(m["note"].as_str().unwrap().contains("NOT FOR CLINICAL USE"));
    let stations = m["stations"].as_array().unwrap();
    let length = m["length_mm"].as_f64().unwrap();
    assert!(stations.len() as f64 >= length.floor());
    for s in stations {
        for key in [
            "arc_mm",
            "d_mis_mm",
            "d_ce_mm",
            "d_feret_mm",
            "d_feret_perp_mm",
            "area_mm2",
        ] {
            assert!(s[key].as_f64().unwrap() >= 0.0, "{key} in {s}");
        }
        assert_eq!(s["point_lps"].as_array().unwrap().len(), 3);
        // Geometry: the circle-equivalent diameter never exceeds the maximum Feret one.
        if !s["clipped"].as_bool().unwrap() {
            assert!(
                s["d_ce_mm"].as_f64().unwrap() <= s["d_feret_mm"].as_f64().unwrap() + 1e-6,
                "{s}"
            );
        }
    }
    let st = &m["stenosis"];
    assert!(st["mld_mm"].as_f64().unwrap() <= st["reference_diameter_mm"].as_f64().unwrap());
    // The chest CT's left carotid is not significantly narrowed: no device sizes (#17),
    // unless the user lowers the threshold.
    assert!(m["sizing"].is_null(), "{}", m["sizing"]);
    let status = m["sizing_status"].as_str().unwrap();
    assert!(status.starts_with("no significant stenosis"), "{status}");
    let lowered = dir.path().join("lowered");
    pinhole_ok(&[
        "measure",
        "vessel",
        "--labels",
        &labels,
        "--labels-table",
        &table,
        "--label",
        "common_carotid_artery_left",
        "--sizing-min-stenosis-pct",
        "5",
        "--out",
        lowered.to_str().unwrap(),
    ]);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lowered.join("measurements.json")).unwrap())
            .unwrap();
    assert!(m["sizing"].as_array().unwrap().len() >= 2);
    let vtk = std::fs::read_to_string(dir.path().join("centerline.vtk")).unwrap();
    assert!(vtk.contains("radius_mm"));
}

/// The first slices of the real DICOM CT series, relabelled `Modality MR` (the tag's bytes
/// patched in a copy): not a CT whatever its values.
fn mr_series(dir: &std::path::Path) {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(shared_data("dicom-ct-series"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // (0008,0060) CS, length 2, "CT" in explicit VR little endian.
    let tag = [0x08, 0x00, 0x60, 0x00, b'C', b'S', 0x02, 0x00, b'C', b'T'];
    std::fs::create_dir_all(dir).unwrap();
    for f in &files[..3] {
        let mut bytes = std::fs::read(f).unwrap();
        let at = bytes
            .windows(tag.len())
            .position(|w| w == tag)
            .expect("Modality CT in the file");
        bytes[at + 8..at + 10].copy_from_slice(b"MR");
        std::fs::write(dir.join(f.file_name().unwrap()), bytes).unwrap();
    }
}

/// #25: `plan vessel` and `measure vessel` refuse a `--ct` that is not a CT, naming the
/// override; `--allow-non-ct` goes on and the report's `warnings` record it.
#[test]
fn vessel_commands_refuse_a_non_ct_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mr = dir.path().join("mr");
    mr_series(&mr);
    let mr = mr.to_str().unwrap();
    let (labels, table) = (chest("labels.nii.gz"), chest("structures.csv"));
    let commands: [(&[&str], &str); 2] = [
        (
            &[
                "plan",
                "vessel",
                "--from",
                "subclavian_artery_right",
                "--to",
                "common_carotid_artery_left",
            ],
            "route.json",
        ),
        (
            &["measure", "vessel", "--label", "common_carotid_artery_left"],
            "measurements.json",
        ),
    ];
    for (command, report) in commands {
        let out = dir.path().join(command[0]);
        let mut args: Vec<&str> = command.to_vec();
        args.extend_from_slice(&[
            "--labels",
            &labels,
            "--labels-table",
            &table,
            "--ct",
            mr,
            "--out",
            out.to_str().unwrap(),
        ]);
        let refused = pinhole(&args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{command:?}: {stderr}");
        assert!(stderr.contains("does not look like a CT"), "{stderr}");
        assert!(stderr.contains("Modality is MR"), "{stderr}");
        assert!(stderr.contains("--allow-non-ct"), "{stderr}");
        assert!(!out.join(report).exists(), "{command:?} wrote {report}");

        args.push("--allow-non-ct");
        pinhole_ok(&args);
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(report)).unwrap()).unwrap();
        let warnings = written["warnings"].as_array().unwrap();
        assert!(
            warnings.iter().any(|w| {
                let w = w.as_str().unwrap();
                w.starts_with("--allow-non-ct:") && w.contains("Modality is MR")
            }),
            "{command:?}: {warnings:?}"
        );
    }
}
