//! `pinhole register-ct`, `pinhole verify needle`, `pinhole confirm ablation` on cases
//! constructed from the real chest CT with known truths by an independent toolchain
//! (`tests/py/intraop_cases.py`: numpy/scipy resampling, scikit-image radon/iradon for the
//! needle's metal artefacts, analytic sphere margins and lens volumes).

use std::path::{Path, PathBuf};

use super::{pinhole, pinhole_ok, validate_against_schemas};
use crate::common::{python_json, shared_data};

fn chest(file: &str) -> String {
    shared_data(&format!("chest-ct/{file}"))
        .display()
        .to_string()
}

/// Builds a constructed case (`kind`: registration, needle, ablation) and returns its
/// folder and truth.
fn case(dir: &Path, kind: &str, seed: u32, extra: &[&str]) -> (PathBuf, serde_json::Value) {
    let out = dir.join(format!("{kind}{seed}"));
    let (ct, labels, structures) = (
        chest("ct.nii.gz"),
        chest("labels.nii.gz"),
        chest("structures.csv"),
    );
    let seed = seed.to_string();
    let mut args = vec![
        kind,
        "--ct",
        &ct,
        "--labels",
        &labels,
        "--structures",
        &structures,
        "--seed",
        &seed,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    python_json("intraop_cases.py", &args);
    let truth =
        serde_json::from_str(&std::fs::read_to_string(out.join("truth.json")).unwrap()).unwrap();
    (out, truth)
}

fn vec3(v: &serde_json::Value) -> [f64; 3] {
    std::array::from_fn(|i| v[i].as_f64().unwrap())
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>().sqrt()
}

fn angle_deg(a: [f64; 3], b: [f64; 3]) -> f64 {
    let dot: f64 = (0..3).map(|i| a[i] * b[i]).sum();
    dot.clamp(-1.0, 1.0).acos().to_degrees()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn apply(m: &serde_json::Value, p: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|r| {
        (0..3)
            .map(|c| m[r][c].as_f64().unwrap() * p[c])
            .sum::<f64>()
            + m[r][3].as_f64().unwrap()
    })
}

/// MAM within 1 mm and coverage within 1 point of the analytic truth, on a covered
/// sphere, an uncovered one and a spheroid zone; the verdict follows the truth.
#[test]
fn confirm_ablation_measures_the_constructed_margin_and_coverage() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [1, 2, 7] {
        let (case_dir, truth) = case(dir.path(), "ablation", seed, &[]);
        let sphere: Vec<String> = truth["tumor_sphere_lps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect();
        let out = dir.path().join(format!("confirm{seed}"));
        let stdout = pinhole_ok(&[
            "confirm",
            "ablation",
            "--pre-ct",
            case_dir.join("pre.nii.gz").to_str().unwrap(),
            "--tumor",
            &sphere.join(","),
            "--post-ct",
            case_dir.join("post.nii.gz").to_str().unwrap(),
            "--zone",
            case_dir.join("zone.nii.gz").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let report = read_json(&out.join("confirmation.json"));
        let mam = report["minimal_margin_mm"].as_f64().unwrap();
        let true_mam = truth["min_margin_mm"].as_f64().unwrap();
        assert!(
            (mam - true_mam).abs() <= 1.0,
            "seed {seed}: MAM {mam} vs {true_mam}"
        );
        let coverage = report["coverage_tumor_pct"].as_f64().unwrap();
        let true_coverage = truth["coverage_tumor_pct"].as_f64().unwrap();
        assert!(
            (coverage - true_coverage).abs() <= 1.0,
            "seed {seed}: coverage {coverage} vs {true_coverage}"
        );
        let verdict = report["verdict"].as_str().unwrap();
        let expected = if true_mam < -1.0 {
            "tumor_not_covered"
        } else if true_mam > 1.0 && true_mam < 4.0 {
            "insufficient_margin"
        } else if true_mam > 6.0 {
            "sufficient"
        } else {
            verdict // within a millimetre of a threshold: either is honest
        };
        assert_eq!(verdict, expected, "seed {seed}: {stdout}");
        assert!(
            stdout.contains("minimal ablative margin") || stdout.contains("NOT fully covered"),
            "{stdout}"
        );
        // The registration recovered the constructed motion (post → pre) within 0.5 mm
        // over the tumour.
        let centre = vec3(&truth["tumor_sphere_lps"]);
        let post_point = apply(
            &read_json(&case_dir.join("truth.json"))["post_to_pre_lps"],
            centre,
        );
        let found = apply(&report["registration"]["control_to_planning_lps"], centre);
        assert!(
            distance(post_point, found) < 0.5,
            "seed {seed}: registration off by {} mm",
            distance(post_point, found)
        );
        // The coloured surface carries one margin per vertex.
        let vtk = std::fs::read_to_string(out.join("margin.vtk")).unwrap();
        assert!(
            vtk.contains("SCALARS margin_mm double 1"),
            "margin.vtk has no margin scalar"
        );
        for file in ["margin.png", "zone_registered.seg.nrrd", "post_to_pre.tfm"] {
            assert!(out.join(file).is_file(), "{file} missing");
        }
        validate_against_schemas(&[("ablation-confirmation", &out.join("confirmation.json"))]);
    }
}

/// The needle found in FBP-reconstructed control scans with metal artefacts: tip within
/// 1 mm and axis within 1° of where it was inserted; a scan without metal says "not
/// found" and gives no position.
#[test]
fn verify_needle_finds_the_constructed_needle_and_says_when_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    for seed in [1, 2, 3] {
        let (case_dir, truth) = case(dir.path(), "needle", seed, &[]);
        let plan = case_dir.join("plan.json");
        std::fs::write(
            &plan,
            serde_json::json!({
                "target_lps": truth["target_lps"],
                "paths": [{"entry_lps": truth["entry_lps"], "target_lps": truth["target_lps"]}]
            })
            .to_string(),
        )
        .unwrap();
        // The constructed scan shares the planning scan's frame: with `--same-frame` the
        // detection alone is measured (goal: 1 mm, 1°); with the registration in the loop
        // (seed 1: rigid, then the liver's B-spline, the tip brought across through the
        // deformation's inverse) its error adds: within 1.5 mm.
        let registered = seed == 1;
        let out = dir.path().join(format!("check{seed}"));
        let (plan_arg, control_arg) = (
            plan.to_str().unwrap().to_owned(),
            case_dir.join("control.nii.gz").display().to_string(),
        );
        let (ct_arg, labels_arg) = (chest("ct.nii.gz"), chest("labels.nii.gz"));
        let mut args = vec![
            "verify",
            "needle",
            "--plan",
            &plan_arg,
            "--planning-ct",
            &ct_arg,
            "--control-ct",
            &control_arg,
            "--labels",
            &labels_arg,
            "--out",
            out.to_str().unwrap(),
        ];
        if registered {
            args.extend(["--organ", "liver", "--deformable"]);
        } else {
            args.push("--same-frame");
        }
        let stdout = pinhole_ok(&args);
        let report = read_json(&out.join("needle_check.json"));
        assert_eq!(report["found"], true, "seed {seed}: {stdout}");
        let needle = &report["needle"];
        let tip_error = distance(vec3(&needle["tip_planning_lps"]), vec3(&truth["tip_lps"]));
        let axis_error = angle_deg(vec3(&needle["axis_planning_lps"]), vec3(&truth["axis_lps"]));
        let tip_bound = if registered { 1.5 } else { 1.0 };
        assert!(
            tip_error <= tip_bound,
            "seed {seed}: tip off by {tip_error} mm"
        );
        assert!(axis_error <= 1.0, "seed {seed}: axis off by {axis_error}°");
        // The metrics against the plan follow from the truth: the target lies
        // `target_beyond_tip_mm` ahead of the tip.
        let to_target = report["metrics"]["tip_to_target_mm"].as_f64().unwrap();
        let true_to_target = distance(vec3(&truth["tip_lps"]), vec3(&truth["target_lps"]));
        assert!(
            (to_target - true_to_target).abs() <= 1.0,
            "seed {seed}: {to_target} vs {true_to_target}"
        );
        assert!(stdout.contains("correction:"), "{stdout}");
        if registered {
            let deformable = &report["registration"]["deformable"];
            assert_eq!(deformable["organ"], "liver", "{report}");
            assert!(deformable["used"].is_boolean());
        }
        validate_against_schemas(&[("needle-check", &out.join("needle_check.json"))]);
    }
    let (case_dir, truth) = case(dir.path(), "needle", 1, &["--no-needle"]);
    assert_eq!(truth["has_needle"], false);
    let plan = dir.path().join("plan_none.json");
    std::fs::write(
        &plan,
        serde_json::json!({"target_lps": truth["target_lps"], "paths": [{"entry_lps": truth["entry_lps"], "target_lps": truth["target_lps"]}]}).to_string(),
    )
    .unwrap();
    let out = dir.path().join("check_none");
    let stdout = pinhole_ok(&[
        "verify",
        "needle",
        "--plan",
        plan.to_str().unwrap(),
        "--planning-ct",
        &chest("ct.nii.gz"),
        "--control-ct",
        case_dir.join("control.nii.gz").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let report = read_json(&out.join("needle_check.json"));
    assert_eq!(report["found"], false);
    assert!(report["needle"].is_null() && report["correction"].is_null());
    assert!(report["not_found_reason"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    assert!(stdout.contains("NO NEEDLE FOUND"), "{stdout}");
    // Both shortfalls are warnings in the report (and on the terminal).
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert!(
        warnings.iter().any(|w| w.starts_with("no needle found")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("no planning label map")),
        "{warnings:?}"
    );
}

/// A control scan of the moved, breathing patient (liver deformed): target registration
/// error over organ landmarks; the transform file reads back in SimpleITK's convention.
#[test]
fn register_ct_recovers_the_constructed_motion() {
    let dir = tempfile::tempdir().unwrap();
    let (case_dir, truth) = case(dir.path(), "registration", 1, &[]);
    let out = dir.path().join("reg");
    pinhole_ok(&[
        "register-ct",
        "--planning-ct",
        &chest("ct.nii.gz"),
        "--control-ct",
        case_dir.join("control.nii.gz").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let report = read_json(&out.join("ct_registration.json"));
    assert_eq!(report["converged"], true);
    let m = &report["control_to_planning_lps"];
    let errors: Vec<f64> = truth["landmarks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| distance(apply(m, vec3(&l["control_lps"])), vec3(&l["planning_lps"])))
        .collect();
    let mean = errors.iter().sum::<f64>() / errors.len() as f64;
    let worst = errors.iter().copied().fold(0.0, f64::max);
    // The liver is deformed (a few mm) and a rigid transform cannot follow it: the
    // bounds are those of the true rigid motion on the same landmarks plus 1 mm.
    let rigid = &truth["control_to_planning_rigid_lps"];
    let rigid_errors: Vec<f64> = truth["landmarks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            distance(
                apply(rigid, vec3(&l["control_lps"])),
                vec3(&l["planning_lps"]),
            )
        })
        .collect();
    let rigid_mean = rigid_errors.iter().sum::<f64>() / rigid_errors.len() as f64;
    assert!(
        mean <= rigid_mean + 1.0,
        "mean TRE {mean} mm (true rigid: {rigid_mean})"
    );
    assert!(
        worst <= truth["max_deformation_mm"].as_f64().unwrap() + 2.0,
        "worst TRE {worst} mm"
    );
    validate_against_schemas(&[("ct-registration", &out.join("ct_registration.json"))]);

    // Again with the liver deformed by a B-spline: the composite transform file, read by
    // SimpleITK, maps the liver's landmarks (planning → control) at least as well as the
    // rigid registration did, and within a millimetre.
    let out_deformable = dir.path().join("reg-deformable");
    let stdout = pinhole_ok(&[
        "register-ct",
        "--planning-ct",
        &chest("ct.nii.gz"),
        "--control-ct",
        case_dir.join("control.nii.gz").to_str().unwrap(),
        "--labels",
        &chest("labels.nii.gz"),
        "--organ",
        "liver",
        "--deformable",
        "--out",
        out_deformable.to_str().unwrap(),
    ]);
    assert!(stdout.contains("liver deformed (B-spline"), "{stdout}");
    let report = read_json(&out_deformable.join("ct_registration.json"));
    assert_eq!(report["deformable"]["used"], true, "{report}");
    assert!(
        report["deformable"]["ncc"].as_f64().unwrap()
            >= report["deformable"]["ncc_rigid"].as_f64().unwrap()
    );
    let liver: Vec<&serde_json::Value> = truth["landmarks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["organ"] == "liver")
        .collect();
    assert!(liver.len() >= 4, "{} liver landmarks", liver.len());
    let planning_points: Vec<[f64; 3]> = liver.iter().map(|l| vec3(&l["planning_lps"])).collect();
    let points_path = dir.path().join("liver_points.json");
    std::fs::write(
        &points_path,
        serde_json::to_string(&planning_points).unwrap(),
    )
    .unwrap();
    let mapped = python_json(
        "slicer_reference.py",
        &[
            "itk-transform",
            out_deformable
                .join("control_to_planning.tfm")
                .to_str()
                .unwrap(),
            points_path.to_str().unwrap(),
        ],
    );
    assert_eq!(
        mapped["type"],
        serde_json::json!(["CompositeTransform", "AffineTransform", "BSplineTransform"])
    );
    let rigid_inverse = |p: [f64; 3]| -> [f64; 3] {
        // The rigid run's control → planning matrix, inverted (rotation transposed).
        let m = &read_json(&out.join("ct_registration.json"))["planning_to_control_lps"];
        apply(m, p)
    };
    let (mut deformable_sum, mut rigid_sum) = (0.0, 0.0);
    for (l, q) in liver.iter().zip(mapped["points"].as_array().unwrap()) {
        let control = vec3(&l["control_lps"]);
        deformable_sum += distance(vec3(q), control);
        rigid_sum += distance(rigid_inverse(vec3(&l["planning_lps"])), control);
    }
    let n = liver.len() as f64;
    let (deformable_mean, rigid_mean) = (deformable_sum / n, rigid_sum / n);
    assert!(
        deformable_mean <= rigid_mean + 0.1 && deformable_mean < 1.0,
        "liver TRE: deformable {deformable_mean} mm, rigid {rigid_mean} mm"
    );
    validate_against_schemas(&[(
        "ct-registration",
        &out_deformable.join("ct_registration.json"),
    )]);

    // --deformable needs an organ.
    let refused = pinhole(&[
        "register-ct",
        "--planning-ct",
        &chest("ct.nii.gz"),
        "--control-ct",
        case_dir.join("control.nii.gz").to_str().unwrap(),
        "--deformable",
        "--out",
        dir.path().join("no-organ").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("--organ"), "{stderr}");
}

/// Another patient's scan: the registration says it did not converge, and the ablation
/// confirmation refuses to report a margin. A label map given as a scan is refused as
/// not a CT.
#[test]
fn wrong_scans_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (case_dir, truth) = case(dir.path(), "ablation", 3, &[]);
    let sphere: Vec<String> = truth["tumor_sphere_lps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let other = shared_data("abdomen-ct/example_ct.nii.gz");
    let out = dir.path().join("other");
    let failed = pinhole(&[
        "confirm",
        "ablation",
        "--pre-ct",
        case_dir.join("pre.nii.gz").to_str().unwrap(),
        "--tumor",
        &sphere.join(","),
        "--post-ct",
        other.to_str().unwrap(),
        "--zone",
        case_dir.join("zone.nii.gz").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("could not register the post-ablation scan")
            && stderr.contains("no margin is reported"),
        "{stderr}"
    );
    assert!(!out.join("confirmation.json").exists());

    let reg = dir.path().join("reg_other");
    let failed = pinhole(&[
        "register-ct",
        "--planning-ct",
        case_dir.join("pre.nii.gz").to_str().unwrap(),
        "--control-ct",
        other.to_str().unwrap(),
        "--out",
        reg.to_str().unwrap(),
    ]);
    assert!(!failed.status.success());
    let report = read_json(&reg.join("ct_registration.json"));
    assert_eq!(report["converged"], false);
    assert!(report["reason"].as_str().is_some_and(|r| !r.is_empty()));

    let failed = pinhole(&[
        "register-ct",
        "--planning-ct",
        case_dir.join("pre.nii.gz").to_str().unwrap(),
        "--control-ct",
        &chest("labels.nii.gz"),
        "--out",
        dir.path().join("labels_as_ct").to_str().unwrap(),
    ]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("does not look like a CT"), "{stderr}");
}

/// The zone grown from a point inside it (the non-enhancing region of the post-ablation
/// scan) comes close to the drawn one: its volume within 10 % and the MAM within 1.5 mm
/// of the analytic truth (conservative: never thicker by more than 0.5 mm).
#[test]
fn confirm_ablation_grows_the_zone_from_the_tip() {
    let dir = tempfile::tempdir().unwrap();
    let (case_dir, truth) = case(dir.path(), "ablation", 4, &[]);
    let sphere: Vec<String> = truth["tumor_sphere_lps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let seed: Vec<String> = truth["zone"]["center_post_lps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let out = dir.path().join("grown");
    pinhole_ok(&[
        "confirm",
        "ablation",
        "--pre-ct",
        case_dir.join("pre.nii.gz").to_str().unwrap(),
        &format!("--tumor={}", sphere.join(",")),
        "--post-ct",
        case_dir.join("post.nii.gz").to_str().unwrap(),
        &format!("--zone-from-tip={}", seed.join(",")),
        "--out",
        out.to_str().unwrap(),
    ]);
    let report = read_json(&out.join("confirmation.json"));
    assert_eq!(report["zone"]["source"], "grown from a point");
    let radii = &truth["zone"]["radii_mm"];
    let true_ml = 4.0 / 3.0
        * std::f64::consts::PI
        * (0..3).map(|i| radii[i].as_f64().unwrap()).product::<f64>()
        / 1000.0;
    let grown_ml = report["zone_volume_ml"].as_f64().unwrap();
    assert!(
        (grown_ml - true_ml).abs() <= 0.1 * true_ml,
        "grown {grown_ml} ml vs {true_ml} ml"
    );
    let mam = report["minimal_margin_mm"].as_f64().unwrap();
    let true_mam = truth["min_margin_mm"].as_f64().unwrap();
    assert!(
        mam - true_mam <= 0.5 && true_mam - mam <= 1.5,
        "MAM {mam} vs {true_mam}"
    );
}
