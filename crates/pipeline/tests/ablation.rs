//! Regressions of issue #17 for ablation plans, on the demo's sample:
//! * a heat sink beside the tumour: the report says which side of the margin it
//!   threatens (and that 100 % margin coverage assumes no cooling);
//! * multi-applicator plans: every applicator's own track is checked against the needle
//!   rules (clearances per track), not only the first;
//! * simulations: an uncalibrated source model is flagged; a device without a calibrated
//!   model cannot be simulated.

use std::path::Path;

use pinhole_ablation::damage::Criterion;
use pinhole_ablation::devices::Modality;
use pinhole_pipeline::ablation::{AblationReport, AblationRequest, ZoneSource};
use pinhole_pipeline::demo::{self, DataFiles};
use pinhole_pipeline::needle::NeedleRequest;
use pinhole_pipeline::Quiet;

fn sample_files(dir: &Path) -> DataFiles {
    let data = demo::load_data(None).unwrap();
    demo::write_data_files(dir, &data).unwrap()
}

fn device_request(files: &DataFiles, tumor: &str) -> AblationRequest {
    AblationRequest {
        labels_table: Some(files.table.display().to_string()),
        ..AblationRequest::device(
            &files.ct,
            &files.labels,
            tumor,
            "emprint-example",
            100.0,
            5.0,
        )
    }
}

/// The inferior vena cava runs ~4 mm from an 8 mm lesion centred at (−20, −5, −240) in
/// the liver; its nearest voxel lies towards the patient's left (+x) and below.
#[test]
fn a_heat_sink_beside_the_tumour_names_the_margin_it_threatens() {
    let tmp = tempfile::tempdir().unwrap();
    let files = sample_files(tmp.path());
    let report = pinhole_pipeline::ablation::run(&device_request(&files, "-20,-5,-240,8"), &Quiet)
        .unwrap()
        .report;
    let ivc = report
        .heat_sinks
        .iter()
        .find(|s| s.name == "inferior_vena_cava")
        .expect("the IVC is found near the tumour");
    assert!(ivc.flagged, "{ivc:?}");
    assert!(ivc.distance_mm < 10.0, "{ivc:?}");
    let threat = ivc.threatened_margin.as_ref().expect("flagged: assessed");
    assert!(threat.direction_lps[0] > 0.5, "{threat:?}");
    assert!(threat.side.contains("left"), "{threat:?}");
    assert!(
        threat.margin_shell_within_reach_pct > 0.0 && threat.margin_shell_within_reach_pct < 100.0,
        "{threat:?}"
    );
    let warning = report
        .warnings
        .iter()
        .find(|w| w.starts_with("heat sink inferior_vena_cava"))
        .unwrap_or_else(|| panic!("{:?}", report.warnings));
    assert!(warning.contains(&format!("threatens the {} margin", threat.side)));
    if report.coverage_margin_pct >= 99.95 {
        assert!(
            warning.contains("100 % margin coverage does not hold"),
            "{warning}"
        );
    }
    // The terminal's coverage line carries the caveat too.
    let coverage_line = report
        .summary()
        .into_iter()
        .find(|l| l.contains("margin covered"))
        .unwrap();
    assert!(
        coverage_line.ends_with(&format!(
            "assuming no cooling by inferior_vena_cava ({} side)",
            threat.side
        )),
        "{coverage_line}"
    );
}

/// A 36 mm lesion needs several 37 × 35 mm zones; each applicator's track is checked. A
/// rib painted across the second track (and nowhere near the first) fails that track
/// alone.
#[test]
fn every_applicator_track_is_checked_against_the_needle_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let mut data = demo::load_data(None).unwrap();
    let files = demo::write_data_files(tmp.path(), &data).unwrap();
    let centre = [-55.0, -25.0, -240.0];
    let needle = pinhole_pipeline::needle::run(
        &NeedleRequest {
            labels_table: Some(files.table.display().to_string()),
            candidates: 4000,
            ..NeedleRequest::new(
                &files.ct,
                &files.labels,
                "liver-biopsy",
                &format!("{},{},{}", centre[0], centre[1], centre[2]),
            )
        },
        &Quiet,
    )
    .unwrap();
    let plan_dir = tmp.path().join("plan");
    needle.write(&plan_dir).unwrap();
    let plan_entry = needle.report.plan.paths[0].entry_lps;
    let tumor = format!("{},{},{},18", centre[0], centre[1], centre[2]);
    let request = AblationRequest {
        path: Some(plan_dir.join("plan.json")),
        ..device_request(&files, &tumor)
    };
    let report = pinhole_pipeline::ablation::run(&request, &Quiet)
        .unwrap()
        .report;
    assert!(report.zones.len() >= 2, "{} zones", report.zones.len());
    assert_eq!(report.tracks.len(), report.zones.len());
    for (track, zone) in report.tracks.iter().zip(&report.zones) {
        assert_eq!(track.procedure, "liver-biopsy");
        assert_eq!(track.tip_lps, zone.tip_lps);
        // Parallel to the path, level with the plan's entry.
        let along = |p: [f64; 3]| (0..3).map(|a| p[a] * zone.axis_lps[a]).sum::<f64>();
        assert!((along(track.entry_lps) - along(plan_entry)).abs() < 1e-6);
        for group in ["bone", "large_vessels"] {
            assert!(
                track.min_clearance_mm.contains_key(group),
                "{group}: {:?}",
                track.min_clearance_mm
            );
        }
    }

    // Paint a rib (rib_right_9) around the middle of track 2, away from track 1.
    let (t1, t2) = (&report.tracks[0], &report.tracks[1]);
    let mid = [0, 1, 2].map(|a| 0.5 * (t2.entry_lps[a] + t2.tip_lps[a]));
    let gap = distance_to_segment(mid, t1.entry_lps, t1.tip_lps);
    // Ball radius 3 mm + bone clearance 3 mm + a voxel: track 1 keeps its clearance.
    assert!(gap > 7.0, "tracks 1 and 2 lie {gap} mm apart at the middle");
    let rib = data.table.id_of("rib_right_9").unwrap() as u16;
    let grid = data.labels.grid().clone();
    for o in 0..grid.voxel_count() {
        let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
        let d = (0..3).map(|a| (p[a] - mid[a]).powi(2)).sum::<f64>().sqrt();
        if d <= 3.0 {
            data.labels.data_mut()[o] = rib;
        }
    }
    let painted = tmp.path().join("painted");
    let files = demo::write_data_files(&painted, &data).unwrap();
    let request = AblationRequest {
        path: Some(plan_dir.join("plan.json")),
        ..device_request(&files, &tumor)
    };
    let again: AblationReport = pinhole_pipeline::ablation::run(&request, &Quiet)
        .unwrap()
        .report;
    let tips = |r: &AblationReport| r.zones.iter().map(|z| z.tip_lps).collect::<Vec<_>>();
    assert_eq!(
        tips(&again),
        tips(&report),
        "the zones do not depend on bone"
    );
    let (a1, a2) = (&again.tracks[0], &again.tracks[1]);
    assert_eq!(a1.feasible, t1.feasible);
    assert!(!a2.feasible, "{a2:?}");
    assert!(a2.min_clearance_mm["bone"].unwrap() < 3.0, "{a2:?}");
    assert!(
        again
            .warnings
            .iter()
            .any(|w| w.starts_with("applicator 2's track") && w.contains("liver-biopsy")),
        "{:?}",
        again.warnings
    );
}

fn distance_to_segment(p: [f64; 3], a: [f64; 3], b: [f64; 3]) -> f64 {
    let ab = [0, 1, 2].map(|i| b[i] - a[i]);
    let ap = [0, 1, 2].map(|i| p[i] - a[i]);
    let len2: f64 = ab.iter().map(|v| v * v).sum();
    let t = (ap.iter().zip(&ab).map(|(x, y)| x * y).sum::<f64>() / len2).clamp(0.0, 1.0);
    (0..3)
        .map(|i| (ap[i] - t * ab[i]).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn simulate_request(files: &DataFiles, applicator: Modality) -> AblationRequest {
    AblationRequest {
        zone: ZoneSource::Simulate {
            applicator,
            criterion: Criterion::Arrhenius,
            device: None,
            devices: None,
        },
        grid_mm: 2.0,
        power_w: 10.0,
        minutes: 3.0,
        ..device_request(files, "-53.6,-19.6,-217.5,6")
    }
}

#[test]
fn simulations_say_whether_their_source_model_is_calibrated() {
    let tmp = tempfile::tempdir().unwrap();
    let files = sample_files(tmp.path());
    let uncalibrated = |r: &AblationReport| r.warnings.iter().any(|w| w.contains("not calibrated"));
    // A table whose laser has no [device.simulation] model: the default laser source.
    let bare_table = tmp.path().join("bare.toml");
    std::fs::write(
        &bare_table,
        "[[device]]\nname = \"bare-laser\"\nmodality = \"laser\"\nsource = \"test\"\n\n[[device.zone]]\npower_w = 10\nminutes = 3\nlong_axis_mm = 20\nshort_axis_mm = 15\nbeyond_tip_mm = 3\n",
    )
    .unwrap();
    let request = AblationRequest {
        zone: ZoneSource::Simulate {
            applicator: Modality::Laser,
            criterion: Criterion::Arrhenius,
            device: None,
            devices: Some(bare_table),
        },
        ..simulate_request(&files, Modality::Laser)
    };
    let laser = pinhole_pipeline::ablation::run(&request, &Quiet)
        .unwrap()
        .report;
    assert!(uncalibrated(&laser), "{:?}", laser.warnings);
    assert_eq!(laser.simulation.as_ref().unwrap().calibration, None);
    // The built-in table's laser is calibrated.
    let builtin =
        pinhole_pipeline::ablation::run(&simulate_request(&files, Modality::Laser), &Quiet)
            .unwrap()
            .report;
    assert!(!uncalibrated(&builtin), "{:?}", builtin.warnings);
    let microwave =
        pinhole_pipeline::ablation::run(&simulate_request(&files, Modality::Microwave), &Quiet)
            .unwrap()
            .report;
    assert!(!uncalibrated(&microwave), "{:?}", microwave.warnings);

    // A device table row without a [device.simulation] model cannot be simulated.
    let table = tmp.path().join("devices.toml");
    std::fs::write(
        &table,
        "[[device]]\nname = \"bare\"\nmodality = \"microwave\"\nsource = \"test\"\n\n[[device.zone]]\npower_w = 10\nminutes = 3\nlong_axis_mm = 20\nshort_axis_mm = 15\nbeyond_tip_mm = 3\n",
    )
    .unwrap();
    let request = AblationRequest {
        zone: ZoneSource::Simulate {
            applicator: Modality::Microwave,
            criterion: Criterion::Arrhenius,
            device: Some("bare".into()),
            devices: Some(table),
        },
        ..simulate_request(&files, Modality::Microwave)
    };
    let err = pinhole_pipeline::ablation::run(&request, &Quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"bare\" has no [device.simulation]"), "{err}");
}
