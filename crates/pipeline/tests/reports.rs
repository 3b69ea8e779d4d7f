//! Every report on real data (the demo's embedded sample, cut from
//! `../shared/data/chest-ct`, and the chest CT itself), snapshotted with `insta`: a change
//! to a report's shape or content shows as a snapshot diff to review. Volatile values
//! (timings, the version, temporary paths) are redacted and numbers rounded to 6
//! significant digits, so that SIMD or libm differences between machines do not count.
//! Written reports read back as the same types; a newer format version is refused.

use std::path::Path;

use pinhole_pipeline::ablation::{AblationReport, AblationRequest};
use pinhole_pipeline::demo::{self, DataFiles};
use pinhole_pipeline::evla::EvlaRequest;
use pinhole_pipeline::needle::{NeedleReport, NeedleRequest, PlanPaths};
use pinhole_pipeline::vessel::{MeasureReport, MeasureRequest, RouteReport, RouteRequest};
use pinhole_pipeline::{report, Quiet, Report};
use serde_json::Value;

use crate::shared::shared_data;

/// Keys whose values change from run to run or release to release.
const VOLATILE_KEYS: [&str; 4] = ["elapsed_s", "seconds", "version", "drrs_per_second"];

/// The report as a snapshot sees it: volatile keys redacted, `tmp` and the shared data
/// folder replaced by placeholders, numbers rounded to 6 significant digits.
fn stable(value: Value, tmp: &Path) -> Value {
    let tmp = tmp.display().to_string();
    let data = shared_data("").display().to_string();
    normalise(value, &tmp, data.trim_end_matches('/'))
}

fn normalise(value: Value, tmp: &str, data: &str) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if VOLATILE_KEYS.contains(&k.as_str()) {
                        Value::String("[redacted]".into())
                    } else {
                        normalise(v, tmp, data)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| normalise(v, tmp, data)).collect())
        }
        Value::String(s) => Value::String(s.replace(tmp, "[tmp]").replace(data, "[data]")),
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            let rounded: f64 = format!("{x:.5e}").parse().unwrap_or(x);
            serde_json::json!(rounded)
        }
        other => other,
    }
}

pub(crate) fn snapshot_value(report: &impl serde::Serialize, tmp: &Path) -> Value {
    stable(serde_json::to_value(report).unwrap(), tmp)
}

/// The embedded sample written to `dir` (ct.nii.gz, labels.nii.gz, labels.csv).
fn sample(dir: &Path) -> DataFiles {
    let data = demo::load_data(None).unwrap();
    demo::write_data_files(dir, &data).unwrap()
}

fn table(files: &DataFiles) -> Option<String> {
    Some(files.table.display().to_string())
}

#[test]
fn volume_reports_of_the_chest_ct_and_the_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let ct = shared_data("chest-ct/ct.nii.gz");
    let report = pinhole_pipeline::info::run(&ct, None, None, &Quiet).unwrap();
    insta::assert_json_snapshot!("info_chest_ct", snapshot_value(&report, tmp.path()));
    let files = sample(tmp.path());
    let table = table(&files);
    let labels =
        pinhole_pipeline::info::run(&files.labels, None, table.as_deref(), &Quiet).unwrap();
    insta::assert_json_snapshot!("info_sample_labels", snapshot_value(&labels, tmp.path()));
}

#[test]
fn needle_plan_report_and_typed_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let files = sample(tmp.path());
    let request = NeedleRequest {
        labels_table: table(&files),
        ..NeedleRequest::new(
            &files.ct,
            &files.labels,
            "kidney-biopsy",
            "kidney_cyst_left",
        )
    };
    let outcome = pinhole_pipeline::needle::run(&request, &Quiet).unwrap();
    insta::assert_json_snapshot!(
        "needle_kidney_biopsy",
        snapshot_value(&outcome.report, tmp.path())
    );
    let out = tmp.path().join("plan");
    outcome.write(&out).unwrap();
    let back = NeedleReport::read(&out.join("plan.json")).unwrap();
    assert_eq!(
        report::to_json(&back).unwrap(),
        report::to_json(&outcome.report).unwrap(),
        "plan.json reads back as the report that wrote it"
    );
    refuses_newer_and_reads_unversioned::<NeedleReport>(&out.join("plan.json"));

    // What guidance, DRR, registration and ablation read of it: the same paths.
    let paths = PlanPaths::read(&out.join("plan.json")).unwrap();
    assert_eq!(paths, PlanPaths::from(&outcome.report));
    let needle = paths.planned_needle();
    assert_eq!(
        needle.entry_lps,
        Some(outcome.report.plan.paths[0].entry_lps)
    );
    assert_eq!(
        needle.risk_groups.as_ref().map(Vec::len),
        Some(outcome.report.plan.profile.profile.risk_groups.len())
    );
}

#[test]
fn hand_written_plans_give_their_line_and_newer_ones_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("plan.json");
    std::fs::write(
        &path,
        r#"{"target_lps": [1, 2, 3], "paths": [{"entry_lps": [4, 6, 3], "target_lps": [1, 2, 3]}]}"#,
    )
    .unwrap();
    let plan = PlanPaths::read(&path).unwrap();
    assert_eq!(plan.schema_version, 0);
    // 3-4-5 triangle: entry to target is 5 mm.
    assert!((plan.paths[0].length_mm() - 5.0).abs() < 1e-12);
    let needle = plan.planned_needle();
    assert_eq!(needle.entry_lps, Some([4.0, 6.0, 3.0]));
    assert_eq!(
        needle.risk_groups, None,
        "no groups: guidance uses its defaults"
    );

    std::fs::write(
        &path,
        r#"{"schema_version": 99, "target_lps": [1, 2, 3], "paths": []}"#,
    )
    .unwrap();
    let err = PlanPaths::read(&path).unwrap_err().to_string();
    assert!(err.contains("newer") && err.contains("plan.json"), "{err}");
    std::fs::write(&path, r#"{"paths": []}"#).unwrap();
    let err = PlanPaths::read(&path).unwrap_err().to_string();
    assert!(err.contains("target_lps"), "{err}");
}

#[test]
fn vessel_route_and_measure_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let files = sample(tmp.path());
    let request = RouteRequest {
        labels_table: table(&files),
        ct: Some(files.ct.clone()),
        ..RouteRequest::new(
            &files.labels,
            "subclavian_artery_right",
            "common_carotid_artery_left",
        )
    };
    let route = pinhole_pipeline::vessel::plan_route(&request, &Quiet).unwrap();
    // Regression (#17): the left common carotid reaches the sample's top slice (the
    // scan cuts it), which went unsaid.
    assert_eq!(
        route.report.warnings,
        vec!["target vessel common_carotid_artery_left touches the scan's superior edge: part of it may lie outside the scan and was not planned for".to_owned()]
    );
    insta::assert_json_snapshot!("vessel_route", snapshot_value(&route.report, tmp.path()));
    let out = tmp.path().join("route");
    route.write(&out, &Quiet).unwrap();
    let back = RouteReport::read(&out.join("route.json")).unwrap();
    assert_eq!(
        report::to_json(&back).unwrap(),
        report::to_json(&route.report).unwrap()
    );

    let request = MeasureRequest {
        labels_table: table(&files),
        ct: Some(files.ct.clone()),
        ..MeasureRequest::new(&files.labels, "common_carotid_artery_left")
    };
    let measured = pinhole_pipeline::vessel::measure(&request, &Quiet).unwrap();
    // No balloon or stent sizes for a vessel without a significant stenosis (#17).
    let stenosis_pct = measured
        .report
        .stenosis
        .as_ref()
        .unwrap()
        .diameter_stenosis_pct;
    assert_eq!(
        measured.report.sizing.is_some(),
        stenosis_pct >= 50.0,
        "{stenosis_pct} %: {}",
        measured.report.sizing_status
    );
    insta::assert_json_snapshot!(
        "vessel_measure",
        snapshot_value(&measured.report, tmp.path())
    );
    let out = tmp.path().join("measure");
    measured.write(&out, &Quiet).unwrap();
    let back = MeasureReport::read(&out.join("measurements.json")).unwrap();
    assert_eq!(
        report::to_json(&back).unwrap(),
        report::to_json(&measured.report).unwrap()
    );
}

#[test]
fn ablation_device_report() {
    let tmp = tempfile::tempdir().unwrap();
    let files = sample(tmp.path());
    // A 12 mm lesion in the sample's liver.
    let request = AblationRequest {
        labels_table: table(&files),
        ..AblationRequest::device(
            &files.ct,
            &files.labels,
            "-53.6,-19.6,-217.5,12",
            "emprint-example",
            100.0,
            5.0,
        )
    };
    let outcome = pinhole_pipeline::ablation::run(&request, &Quiet).unwrap();
    insta::assert_json_snapshot!(
        "ablation_device",
        snapshot_value(&outcome.report, tmp.path())
    );
    let out = tmp.path().join("ablation");
    outcome.write(&out).unwrap();
    let back = AblationReport::read(&out.join("ablation.json")).unwrap();
    assert_eq!(
        report::to_json(&back).unwrap(),
        report::to_json(&outcome.report).unwrap()
    );
}

#[test]
fn evla_report() {
    let tmp = tempfile::tempdir().unwrap();
    let report = pinhole_pipeline::evla::run(&EvlaRequest {
        power_w: 10.0,
        pullback_mm_s: 1.0,
        diameter_mm: 6.0,
        length_cm: 30.0,
    })
    .unwrap();
    // By hand: LEED = P / v = 10 W / 0.1 cm/s = 100 J/cm; fluence on the wall =
    // LEED / (π d) = 100 / (π · 0.6 cm) J/cm²; 30 cm at 0.1 cm/s = 300 s.
    assert!((report.dose.leed_j_cm - 100.0).abs() < 1e-9);
    let fluence = 100.0 / (std::f64::consts::PI * 0.6);
    assert!((report.dose.wall_fluence_j_cm2 - fluence).abs() < 1e-9);
    assert!((report.dose.treatment_time_s - 300.0).abs() < 1e-9);
    assert!(report.warnings.is_empty(), "100 J/cm is published practice");
    insta::assert_json_snapshot!("evla", snapshot_value(&report, tmp.path()));
}

/// Regression (#17): `pinhole evla` gave 1,000 J/cm without a word.
#[test]
fn evla_warns_outside_the_published_doses() {
    let dose = |power_w, pullback_mm_s| {
        pinhole_pipeline::evla::run(&EvlaRequest {
            power_w,
            pullback_mm_s,
            diameter_mm: 6.0,
            length_cm: 30.0,
        })
        .unwrap()
    };
    // 50 W at 0.5 mm/s: 1,000 J/cm.
    let high = dose(50.0, 0.5);
    assert_eq!(high.warnings.len(), 1, "{:?}", high.warnings);
    assert!(high.warnings[0].starts_with("LEED 1000.0 J/cm is far above the published doses"));
    assert!(high.warnings[0].contains("PMID 19628516"));
    // 5 W at 5 mm/s: 10 J/cm.
    let low = dose(5.0, 5.0);
    assert!(low.warnings[0].starts_with("LEED 10.0 J/cm is below the published doses"));
    // 5 W at 2 mm/s: 25 J/cm, the 1470 nm radial-fibre dose.
    assert!(dose(5.0, 2.0).warnings.is_empty());
    // The vein's diameter against the published span: 16 mm is beyond the 15 mm some
    // take as EVLA's upper limit (Dabbs 2017); 1.5 mm is narrower than the sheath.
    let vein = |diameter_mm| {
        pinhole_pipeline::evla::run(&EvlaRequest {
            power_w: 5.0,
            pullback_mm_s: 2.0,
            diameter_mm,
            length_cm: 30.0,
        })
        .unwrap()
        .warnings
    };
    let wide = vein(16.0);
    assert_eq!(wide.len(), 1, "{wide:?}");
    assert!(wide[0].starts_with("vein diameter 16.0 mm is at or above 15 mm"));
    assert!(wide[0].contains("Dabbs et al., Phlebology 2017"));
    assert!(vein(1.5)[0].starts_with("vein diameter 1.5 mm is below 2 mm"));
    assert!(vein(14.9).is_empty());
    // Impossible input is refused, not computed.
    assert!(pinhole_pipeline::evla::run(&EvlaRequest {
        power_w: 10.0,
        pullback_mm_s: 0.0,
        diameter_mm: 6.0,
        length_cm: 30.0,
    })
    .is_err());
}

/// A report whose `schema_version` is newer than this build's is refused with a reason;
/// one written before reports were versioned (no `schema_version`) reads as version 0.
fn refuses_newer_and_reads_unversioned<T: Report>(written: &Path) {
    let mut value: Value =
        serde_json::from_str(&std::fs::read_to_string(written).unwrap()).unwrap();
    let dir = written.parent().unwrap();
    value["schema_version"] = serde_json::json!(T::SCHEMA_VERSION + 1);
    let newer = dir.join("newer.json");
    std::fs::write(&newer, value.to_string()).unwrap();
    let err = T::read(&newer).err().expect("a newer format is refused");
    assert!(err.to_string().contains("newer"), "{err}");
    value.as_object_mut().unwrap().remove("schema_version");
    let old = dir.join("unversioned.json");
    std::fs::write(&old, value.to_string()).unwrap();
    assert_eq!(T::read(&old).unwrap().schema_version(), 0);
}

/// Regression (#17): the sample's left kidney is cut by the scan's first (inferior)
/// slice; a plan to it must say its lower pole may be missing. The cyst, inside the
/// scan, gets no such warning (see the needle snapshot).
#[test]
fn a_target_cut_by_the_scan_edge_is_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    let files = sample(tmp.path());
    let request = NeedleRequest {
        labels_table: table(&files),
        ..NeedleRequest::new(&files.ct, &files.labels, "kidney-biopsy", "kidney_left")
    };
    let plan = pinhole_pipeline::needle::run(&request, &Quiet)
        .unwrap()
        .report
        .plan;
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.starts_with("target kidney_left")
                && w.contains("touches the scan's inferior edge")),
        "{:?}",
        plan.warnings
    );
}

/// Regression (#17): a risk structure cut by the scan's edge was checked only inside the
/// scan, silently. The sample's aorta is cut by the inferior (first) slice; a path whose
/// entry lies 3.25 mm above that face, closer than the large vessels' 5 mm clearance,
/// must say the aorta may continue below, unchecked.
#[test]
fn a_path_near_the_edge_that_cuts_a_risk_structure_is_flagged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = demo::load_data(None).unwrap();
    let files = demo::write_data_files(tmp.path(), &data).unwrap();
    let ct = data.ct.to_volume::<f32>();
    let grid = ct.grid().clone();
    let (lo, _) = grid.bounds_lps();
    let z = lo[2] + 3.25;
    // The posterior skin behind the left kidney's cyst, at that level.
    let cyst = data.table.id_of("kidney_cyst_left").unwrap() as u16;
    let n = data.labels.data().iter().filter(|&&v| v == cyst).count() as f64;
    let mut c = [0.0; 3];
    for (o, _) in data
        .labels
        .data()
        .iter()
        .enumerate()
        .filter(|(_, &v)| v == cyst)
    {
        let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
        c = [0, 1, 2].map(|a| c[a] + p[a] / n);
    }
    let mut y = c[1];
    while ct
        .sample_nearest([c[0], y, z])
        .is_some_and(|hu| hu > -300.0)
    {
        y += 1.0;
    }
    let entry = [c[0], y - 2.0, z];
    let request = NeedleRequest {
        labels_table: table(&files),
        entry_lps: Some(entry),
        ..NeedleRequest::new(
            &files.ct,
            &files.labels,
            "kidney-biopsy",
            "kidney_cyst_left",
        )
    };
    let plan = pinhole_pipeline::needle::run(&request, &Quiet)
        .unwrap()
        .report
        .plan;
    let warning = plan
        .warnings
        .iter()
        .find(|w| w.starts_with("risk group large_vessels ("))
        .unwrap_or_else(|| panic!("{:?}", plan.warnings));
    assert!(warning.contains("aorta"), "{warning}");
    assert!(warning.contains("scan's inferior edge"), "{warning}");
    assert!(
        warning.contains("within 3.2 mm") || warning.contains("within 3.3 mm"),
        "{warning}"
    );

    // The default plan's paths stay far from that face: no such warning.
    let request = NeedleRequest {
        labels_table: table(&files),
        ..NeedleRequest::new(
            &files.ct,
            &files.labels,
            "kidney-biopsy",
            "kidney_cyst_left",
        )
    };
    let plan = pinhole_pipeline::needle::run(&request, &Quiet)
        .unwrap()
        .report
        .plan;
    assert!(
        !plan
            .warnings
            .iter()
            .any(|w| w.starts_with("risk group large_vessels (")),
        "{:?}",
        plan.warnings
    );
}
