//! `pinhole plan ablation` on the chest CT (a sphere tumour at the liver's deepest point,
//! found by scipy) and `pinhole evla`, checked against tests/py/ablation_reference.py.

use std::path::Path;

use super::*;

fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("ablation.json")).unwrap()).unwrap()
}

/// The liver's deepest point by scipy, computed once per test binary.
fn liver_deepest() -> &'static serde_json::Value {
    static DEEP: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    DEEP.get_or_init(|| {
        let labels = shared_data("chest-ct/labels.nii.gz");
        let csv = shared_data("chest-ct/structures.csv");
        python_json(
            "ablation_reference.py",
            &[
                "deepest",
                labels.to_str().unwrap(),
                csv.to_str().unwrap(),
                "liver",
            ],
        )
    })
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn lps(v: &serde_json::Value) -> [f64; 3] {
    [f(&v[0]), f(&v[1]), f(&v[2])]
}

#[test]
fn plan_ablation_on_the_chest_ct_matches_an_independent_numpy_coverage() {
    let ct = shared_data("chest-ct/ct.nii.gz");
    let labels = shared_data("chest-ct/labels.nii.gz");
    let csv = shared_data("chest-ct/structures.csv");
    let deep = liver_deepest();
    let c = lps(&deep["center_lps"]);
    assert!(f(&deep["depth_mm"]) > 25.0, "{deep}");
    // The liver lies on the patient's right: LPS x < 0.
    assert!(c[0] < 0.0, "{c:?}");
    let tmp = tempfile::tempdir().unwrap();

    // 1) A 12 mm sphere, applicator along a planned path from anterior (−y).
    let plan_json = tmp.path().join("plan.json");
    let entry = [c[0], c[1] - 90.0, c[2] + 10.0];
    std::fs::write(
        &plan_json,
        serde_json::json!({"target_lps": c, "paths": [{"entry_lps": entry, "target_lps": c}]})
            .to_string(),
    )
    .unwrap();
    let tumor = format!("{},{},{},12", c[0], c[1], c[2]);
    let out = tmp.path().join("one");
    let args = [
        "plan",
        "ablation",
        "--ct",
        ct.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--labels-table",
        csv.to_str().unwrap(),
        "--tumor",
        &tumor,
        "--device",
        "emprint-example",
        "--power",
        "100",
        "--minutes",
        "10",
        "--path",
        plan_json.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let stdout = pinhole_ok(&args);
    assert!(stdout.contains("criterion: device zone table"), "{stdout}");
    for name in ["ablation.json", "zone.seg.nrrd", "zone.vtk", "zone.png"] {
        assert!(out.join(name).metadata().unwrap().len() > 100, "{name}");
    }
    let rep = report(&out);
    assert!(rep["note"]
        .as_str()
        .unwrap()
        .contains("NOT FOR CLINICAL USE"));
    assert!(rep["version"].is_string());
    assert!(rep["criterion"].as_str().unwrap().contains("EXAMPLE"));
    let ct_hash = python_json("ablation_reference.py", &["sha256", ct.to_str().unwrap()]);
    assert_eq!(rep["inputs"]["ct"]["sha256"], ct_hash["sha256"]);
    let zones = rep["zones"].as_array().unwrap();
    assert_eq!(zones.len(), 1);
    // The tip lies on the planned line, the axis points along it.
    let axis = lps(&zones[0]["axis_lps"]);
    let tip = lps(&zones[0]["tip_lps"]);
    let dir = [c[0] - entry[0], c[1] - entry[1], c[2] - entry[2]];
    let n = (dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]).sqrt();
    let mut off = [0.0; 3];
    let t: f64 = (0..3).map(|a| (tip[a] - entry[a]) * dir[a] / n).sum();
    for a in 0..3 {
        assert!((axis[a] - dir[a] / n).abs() < 1e-9);
        off[a] = tip[a] - entry[a] - t * dir[a] / n;
    }
    assert!(
        off.iter().map(|v| v * v).sum::<f64>().sqrt() < 1e-6,
        "tip off the path: {off:?}"
    );
    // Concentric 36 mm-wide zone around a 12 mm sphere: full coverage, margin ≈ 18 − 12.
    let reference = python_json(
        "ablation_reference.py",
        &["coverage", out.join("ablation.json").to_str().unwrap()],
    );
    for key in ["coverage_tumor_pct", "coverage_margin_pct", "min_margin_mm"] {
        assert!(
            (f(&rep[key]) - f(&reference[key])).abs() < 1e-3,
            "{key}: ours {} numpy {}",
            rep[key],
            reference[key]
        );
    }
    assert!((f(&rep["coverage_tumor_pct"]) - 100.0).abs() < 1e-9);
    let m = f(&rep["min_margin_mm"]);
    assert!((m - 6.0).abs() <= 1.0, "min margin {m}");
    let thin = lps(&rep["thinnest_margin_lps"]);
    let r = ((thin[0] - c[0]).powi(2) + (thin[1] - c[1]).powi(2) + (thin[2] - c[2]).powi(2)).sqrt();
    assert!(
        (10.0..=12.0 + 1e-6).contains(&r),
        "thinnest point {thin:?} at {r} mm from the centre"
    );
    // The segmentation as slicerio reads it: tumour voxels = numpy's sphere.
    let seg = python_json(
        "slicer_reference.py",
        &["seg", out.join("zone.seg.nrrd").to_str().unwrap()],
    );
    let names: Vec<&str> = seg["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"tumor_ablated") && names.contains(&"ablation_zone"),
        "{names:?}"
    );
    let tumor_voxels =
        seg["voxels"]["1"].as_u64().unwrap_or(0) + seg["voxels"]["2"].as_u64().unwrap_or(0);
    assert_eq!(tumor_voxels, reference["tumor_voxels"].as_u64().unwrap());
    let vtk = python_json(
        "slicer_reference.py",
        &["vtk", out.join("zone.vtk").to_str().unwrap()],
    );
    assert!(
        vtk["header"].as_str().unwrap_or("").contains("SPACE=LPS")
            || vtk["lines"].as_array().unwrap().len() > 100
    );

    // 2) A 25 mm sphere: + 5 mm margin is 60 mm wide, more than one 36 mm zone.
    let tumor = format!("{},{},{},25", c[0], c[1], c[2]);
    let out2 = tmp.path().join("big");
    let mut args2 = args.to_vec();
    args2[9] = &tumor;
    args2[19] = out2.to_str().unwrap();
    pinhole_ok(&args2);
    let rep2 = report(&out2);
    let n_app = rep2["zones"].as_array().unwrap().len();
    assert!((2..=3).contains(&n_app), "{n_app} applicators");
    let by_count: Vec<f64> = rep2["covered_margin_fraction_by_applicator_count"]
        .as_array()
        .unwrap()
        .iter()
        .map(f)
        .collect();
    assert!(by_count.windows(2).all(|w| w[1] > w[0]), "{by_count:?}");
    let reference2 = python_json(
        "ablation_reference.py",
        &["coverage", out2.join("ablation.json").to_str().unwrap()],
    );
    for key in ["coverage_tumor_pct", "coverage_margin_pct", "min_margin_mm"] {
        assert!(
            (f(&rep2[key]) - f(&reference2[key])).abs() < 1e-3,
            "{key}: ours {} numpy {}",
            rep2[key],
            reference2[key]
        );
    }
}

#[test]
fn plan_ablation_simulate_names_its_criterion_and_heats_the_tumour() {
    let ct = shared_data("chest-ct/ct.nii.gz");
    let labels = shared_data("chest-ct/labels.nii.gz");
    let csv = shared_data("chest-ct/structures.csv");
    let tmp = tempfile::tempdir().unwrap();
    // An 8 mm sphere at the liver's deepest point; 2 mm grid, 75 W for 5 minutes (a row
    // of the built-in table, whose calibrated model --simulate uses by default).
    let deep = liver_deepest();
    let c = lps(&deep["center_lps"]);
    let tumor = format!("{},{},{},8", c[0], c[1], c[2]);
    for criterion in ["arrhenius", "cem43"] {
        let out = tmp.path().join(criterion);
        pinhole_ok(&[
            "plan",
            "ablation",
            "--ct",
            ct.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
            "--labels-table",
            csv.to_str().unwrap(),
            "--tumor",
            &tumor,
            "--simulate",
            "--power",
            "75",
            "--minutes",
            "5",
            "--grid-mm",
            "2",
            "--criterion",
            criterion,
            "--out",
            out.to_str().unwrap(),
        ]);
        let rep = report(&out);
        let crit = rep["criterion"].as_str().unwrap();
        assert!(crit.starts_with("simulation:"), "{crit}");
        assert!(
            crit.contains(if criterion == "cem43" {
                "CEM43"
            } else {
                "Arrhenius"
            }),
            "{crit}"
        );
        let sim = &rep["simulation"];
        // Every applicator deposits the calibrated fraction of its 75 W (more than one
        // applicator when one zone falls short).
        let applicators = sim["applicators"].as_u64().unwrap();
        assert_eq!(rep["zones"].as_array().unwrap().len() as u64, applicators);
        let per_applicator_w = f(&sim["source"]["power_w"]);
        assert!(per_applicator_w > 0.0 && per_applicator_w < 75.0);
        assert!((f(&sim["deposited_w"]) - per_applicator_w * applicators as f64).abs() < 1e-6);
        assert!(sim["calibration"]
            .as_str()
            .unwrap()
            .starts_with("emprint-example"));
        // Boiling reached, nothing like the 1,000 °C of linear Pennes.
        let peak = f(&sim["max_temperature_c"]);
        assert!((99.0..=300.0).contains(&peak), "{peak}");
        assert!(
            f(&rep["coverage_tumor_pct"]) > 50.0,
            "{}",
            rep["coverage_tumor_pct"]
        );
    }
}

#[test]
fn evla_prints_leed_fluence_energy_and_volume() {
    let out = pinhole_ok(&[
        "evla",
        "--power",
        "10",
        "--pullback-mm-s",
        "1",
        "--diameter-mm",
        "5",
        "--length-cm",
        "30",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // 10 W / 0.1 cm/s = 100 J/cm; 100 / (π · 0.5 cm) = 63.66 J/cm²; × 30 cm = 3000 J.
    assert!((f(&v["dose"]["leed_j_cm"]) - 100.0).abs() < 1e-9);
    assert!(
        (f(&v["dose"]["wall_fluence_j_cm2"]) - 100.0 / (std::f64::consts::PI * 0.5)).abs() < 1e-9
    );
    assert!((f(&v["dose"]["total_energy_j"]) - 3000.0).abs() < 1e-9);
    assert!(v["note"].as_str().unwrap().contains("NOT FOR CLINICAL USE"));
    let text = pinhole_ok(&[
        "evla",
        "--power",
        "10",
        "--pullback-mm-s",
        "1",
        "--diameter-mm",
        "5",
        "--length-cm",
        "30",
    ]);
    assert!(text.contains("J/cm") && text.contains("100.00"), "{text}");
}

#[test]
fn plan_ablation_on_a_left_label_keeps_it_on_the_left() {
    // kidney_cyst_left lies on the patient's left (LPS x > 0); nibabel's centroid is
    // the independent position.
    let ct = shared_data("chest-ct/ct.nii.gz");
    let labels = shared_data("chest-ct/labels.nii.gz");
    let csv = shared_data("chest-ct/structures.csv");
    let reference = python_json(
        "ablation_reference.py",
        &[
            "centroid",
            labels.to_str().unwrap(),
            csv.to_str().unwrap(),
            "kidney_cyst_left",
        ],
    );
    let expected = lps(&reference["centroid_lps"]);
    assert!(expected[0] > 0.0, "{expected:?}");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cyst");
    pinhole_ok(&[
        "plan",
        "ablation",
        "--ct",
        ct.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--labels-table",
        csv.to_str().unwrap(),
        "--tumor",
        "kidney_cyst_left",
        "--device",
        "neuwave-kidney-example",
        "--power",
        "65",
        "--minutes",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]);
    let rep = report(&out);
    let point = lps(&rep["tumor"]["point_lps"]);
    let centre = lps(&rep["zones"][0]["center_lps"]);
    for a in 0..3 {
        assert!(
            (point[a] - expected[a]).abs() < 0.5,
            "{point:?} vs nibabel {expected:?}"
        );
        assert!(
            (centre[a] - expected[a]).abs() < 1.5,
            "zone {centre:?} vs nibabel {expected:?}"
        );
    }
    assert!((f(&rep["coverage_tumor_pct"]) - 100.0).abs() < 1e-9);
    assert!(f(&rep["tumor"]["volume_ml"]) > 0.0);
}
