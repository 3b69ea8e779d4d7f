//! The intraprocedural-CT reports on the demo's embedded sample (the chest CT at 2 mm),
//! snapshotted like the others: `ct_registration.json` with a given transform,
//! `needle_check.json` for a needle burned into the sample along a known line, and
//! `confirmation.json` for a spherical zone around a spherical tumour (MAM known in closed
//! form). Each also asserts its numbers against the construction.

use std::path::Path;

use pinhole_io::AnyVolume;
use pinhole_pipeline::confirm::{ConfirmRequest, ZoneInput};
use pinhole_pipeline::control_ct::{Alignment, CtRegistrationRequest, OrganFocus};
use pinhole_pipeline::demo::{self, DataFiles};
use pinhole_pipeline::inputs::NotCt;
use pinhole_pipeline::verify::NeedleCheckRequest;
use pinhole_pipeline::Quiet;
use pinhole_volume::math::Vec3;
use pinhole_volume::{Mask, Volume};

use crate::reports::snapshot_value;

/// A point in the sample's liver, LPS mm (the ablation report's tumour).
const LIVER_LPS: Vec3 = [-53.6, -19.6, -217.5];

fn sample(dir: &Path) -> (DataFiles, Volume<f32>) {
    let data = demo::load_data(None).unwrap();
    let files = demo::write_data_files(dir, &data).unwrap();
    (files, data.ct.to_f32())
}

fn distance(a: Vec3, b: Vec3) -> f64 {
    (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>().sqrt()
}

/// A confirmation of an 8 mm tumour at [`LIVER_LPS`] against `zone` on the sample scanned
/// twice (no motion), scans in one frame, 5 mm required, 0.5 mm analysis grid.
fn liver_confirmation(files: &DataFiles, zone: std::path::PathBuf) -> ConfirmRequest {
    ConfirmRequest {
        pre_ct: files.ct.clone(),
        post_ct: files.ct.clone(),
        tumor: format!("{},{},{},8", LIVER_LPS[0], LIVER_LPS[1], LIVER_LPS[2]),
        labels: None,
        labels_table: None,
        zone: ZoneInput::File(zone),
        alignment: Alignment::Identity,
        required_margin_mm: 5.0,
        grid_mm: 0.5,
        not_ct: NotCt::Refuse,
    }
}

/// Registration focused on the liver (20 mm margin) with the deformable refinement.
fn liver_deformable(files: &DataFiles) -> Alignment {
    Alignment::Register {
        organ: Some(OrganFocus {
            labels: files.labels.clone(),
            labels_table: Some(files.table.display().to_string()),
            organ: "liver".to_owned(),
            margin_mm: 20.0,
            deformable: true,
        }),
    }
}

/// The sample with a 1 mm-radius steel needle from `hub` to `tip` (partial volume by
/// 4×4×4 supersampling: a voxel holds steel at 3071 HU in the fraction of it inside).
fn with_needle(ct: &Volume<f32>, hub: Vec3, tip: Vec3) -> Volume<f32> {
    let grid = ct.grid().clone();
    let axis: Vec3 = std::array::from_fn(|a| tip[a] - hub[a]);
    let length = distance(hub, tip);
    let axis = axis.map(|v| v / length);
    let mut data = ct.data().to_vec();
    for (o, value) in data.iter_mut().enumerate() {
        let ijk = grid.index_of_offset(o).map(|v| v as f64);
        let centre = grid.index_to_world(ijk);
        if distance(
            centre,
            pinhole_volume::math::add(hub, pinhole_volume::math::scale(axis, length / 2.0)),
        ) > length / 2.0 + 4.0
        {
            continue;
        }
        let mut inside = 0;
        for s in 0..64 {
            let sub = [(s % 4) as f64, ((s / 4) % 4) as f64, (s / 16) as f64]
                .map(|v| (v + 0.5) / 4.0 - 0.5);
            let p = grid.index_to_world(std::array::from_fn(|a| ijk[a] + sub[a]));
            let d: Vec3 = std::array::from_fn(|a| p[a] - hub[a]);
            let along = pinhole_volume::math::dot(d, axis);
            let off = pinhole_volume::math::norm(pinhole_volume::math::sub(
                d,
                pinhole_volume::math::scale(axis, along),
            ));
            if (0.0..=length).contains(&along) && off <= 1.0 {
                inside += 1;
            }
        }
        let fraction = inside as f32 / 64.0;
        *value += fraction * (3071.0 - *value);
    }
    Volume::new(grid, data).unwrap()
}

#[test]
fn ct_registration_report_with_a_given_transform() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, _) = sample(tmp.path());
    // Slicer's to-parent convention (RAS): a 10 mm shift to the patient's left (RAS −x).
    let transform = tmp.path().join("moved.txt");
    std::fs::write(&transform, "1 0 0 -10\n0 1 0 0\n0 0 1 0\n0 0 0 1\n").unwrap();
    let request = CtRegistrationRequest {
        planning_ct: files.ct.clone(),
        control_ct: files.ct.clone(),
        alignment: Alignment::File(transform),
        not_ct: NotCt::Refuse,
    };
    let outcome = pinhole_pipeline::control_ct::run(&request, &Quiet).unwrap();
    let m = outcome.report.alignment.control_to_planning_lps;
    // RAS −x is LPS +x: a control point lands 10 mm toward the patient's left.
    assert!((m[0][3] - 10.0).abs() < 1e-12 && m[1][3].abs() < 1e-12);
    insta::assert_json_snapshot!(
        "ct_registration_given",
        snapshot_value(&outcome.report, tmp.path())
    );
    outcome.write(&tmp.path().join("reg")).unwrap();
}

#[test]
fn needle_check_report_for_a_needle_short_of_its_target() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, ct) = sample(tmp.path());
    // Planned from the right anterior body wall to the liver point; the needle stopped
    // 15 mm short, on the line.
    let direction = {
        let d = [-0.55f64, -0.8, 0.24];
        let n = pinhole_volume::math::norm(d);
        d.map(|v| v / n)
    };
    let entry = pinhole_volume::math::add(LIVER_LPS, pinhole_volume::math::scale(direction, 90.0));
    let tip = pinhole_volume::math::add(LIVER_LPS, pinhole_volume::math::scale(direction, 15.0));
    let hub = pinhole_volume::math::add(LIVER_LPS, pinhole_volume::math::scale(direction, 70.0));
    let control = tmp.path().join("control.nii.gz");
    // A control scan as scanners reconstruct them (1 mm pixels, 2 mm slices) around the
    // liver, in the planning scan's frame.
    let control_grid = pinhole_volume::Grid::axis_aligned(
        [140, 140, 40],
        [1.0, 1.0, 2.0],
        [
            LIVER_LPS[0] - 70.0,
            LIVER_LPS[1] - 70.0,
            LIVER_LPS[2] - 40.0,
        ],
    )
    .unwrap();
    let resliced = ct.resample(
        &control_grid,
        pinhole_volume::Interpolation::Trilinear,
        -1000.0,
    );
    pinhole_io::nifti::write(&control, &AnyVolume::from(with_needle(&resliced, hub, tip))).unwrap();
    let plan = tmp.path().join("plan.json");
    std::fs::write(
        &plan,
        serde_json::json!({"target_lps": LIVER_LPS, "paths": [{"entry_lps": entry, "target_lps": LIVER_LPS}]}).to_string(),
    )
    .unwrap();
    let request = NeedleCheckRequest {
        plan,
        planning_ct: files.ct.clone(),
        control_ct: control,
        labels: Some(files.labels.clone()),
        labels_table: Some(files.table.display().to_string()),
        alignment: Alignment::Identity,
        not_ct: NotCt::Refuse,
    };
    let outcome = pinhole_pipeline::verify::run(&request, &Quiet).unwrap();
    let report = &outcome.report;
    assert!(report.found, "{:?}", report.not_found_reason);
    let needle = report.needle.as_ref().unwrap();
    assert!(
        distance(needle.tip_planning_lps, tip) < 1.0,
        "tip {:?} vs {tip:?}",
        needle.tip_planning_lps
    );
    let metrics = report.metrics.as_ref().unwrap();
    assert!((metrics.tip_to_target_mm - 15.0).abs() < 1.0, "{metrics:?}");
    assert!(metrics.angle_to_plan_deg < 1.0, "{metrics:?}");
    let correction = report.correction.as_ref().unwrap();
    assert_eq!(correction.action, "advance", "{correction:?}");
    insta::assert_json_snapshot!("needle_check_short", snapshot_value(report, tmp.path()));
    outcome.write(&tmp.path().join("check")).unwrap();
}

#[test]
fn confirmation_report_for_an_eccentric_spherical_zone() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, ct) = sample(tmp.path());
    // Tumour r = 8 mm at the liver point; zone r = 16 mm centred 3 mm to the patient's
    // left: MAM = 16 − 3 − 8 = 5 mm, on the right side.
    let zone_centre = [LIVER_LPS[0] + 3.0, LIVER_LPS[1], LIVER_LPS[2]];
    let zone = pinhole_volume::target::sphere_mask(ct.grid(), zone_centre, 16.0);
    let zone_path = tmp.path().join("zone.nii.gz");
    let zone_u8: Volume<u8> = zone.map(u8::from);
    pinhole_io::nifti::write(&zone_path, &AnyVolume::from(zone_u8)).unwrap();
    let request = liver_confirmation(&files, zone_path);
    let outcome = pinhole_pipeline::confirm::run(&request, &Quiet).unwrap();
    let m = &outcome.report.margin;
    // The zone is voxelised at 2 mm: its surface is known to about half a voxel.
    assert!(
        (m.minimal_margin_mm - 5.0).abs() < 1.0,
        "MAM {}",
        m.minimal_margin_mm
    );
    assert!((m.coverage_tumor_pct - 100.0).abs() < 1e-9);
    // Thinnest toward the patient's right (−x).
    assert!(
        m.thinnest_direction_lps[0] < -0.8,
        "{:?}",
        m.thinnest_direction_lps
    );
    assert!(
        outcome.report.thinnest_side.contains("right"),
        "{}",
        outcome.report.thinnest_side
    );
    let _: &Mask = &zone;
    insta::assert_json_snapshot!(
        "confirmation_eccentric_sphere",
        snapshot_value(&outcome.report, tmp.path())
    );
    outcome.write(&tmp.path().join("confirm")).unwrap();
}

/// With `--deformable`, the zone (and 5 mm around it) is left out of the deformable
/// registration's similarity and the margin is measured through the deformation: on the
/// same scan twice the deformation stays near zero and the analytic MAM (5 mm) holds.
#[test]
fn deformable_confirmation_leaves_the_zone_out_and_keeps_the_margin() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, ct) = sample(tmp.path());
    let zone_centre = [LIVER_LPS[0] + 3.0, LIVER_LPS[1], LIVER_LPS[2]];
    let zone: Volume<u8> =
        pinhole_volume::target::sphere_mask(ct.grid(), zone_centre, 16.0).map(u8::from);
    let zone_path = tmp.path().join("zone.nii.gz");
    pinhole_io::nifti::write(&zone_path, &AnyVolume::from(zone)).unwrap();
    let request = ConfirmRequest {
        labels: Some(files.labels.clone()),
        labels_table: Some(files.table.display().to_string()),
        alignment: liver_deformable(&files),
        grid_mm: 0.5,
        ..liver_confirmation(&files, zone_path)
    };
    let outcome = pinhole_pipeline::confirm::run(&request, &Quiet).unwrap();
    let deformable = outcome
        .report
        .registration
        .deformable
        .as_ref()
        .expect("the deformable refinement ran");
    assert_eq!(
        deformable.excluded.as_deref(),
        Some("the ablation zone and 5 mm around it")
    );
    assert!(deformable.used, "{:?}", deformable.reason);
    assert!(outcome.field.is_some());
    assert!(
        deformable.max_displacement_mm < 0.5,
        "{}",
        deformable.max_displacement_mm
    );
    let m = &outcome.report.margin;
    assert!(
        (m.minimal_margin_mm - 5.0).abs() < 1.0,
        "MAM {}",
        m.minimal_margin_mm
    );
    // The transform file is the composite (rigid + B-spline).
    outcome.write(&tmp.path().join("confirm")).unwrap();
    let tfm = std::fs::read_to_string(tmp.path().join("confirm/post_to_pre.tfm")).unwrap();
    assert!(
        tfm.contains("CompositeTransform_double_3_3")
            && tfm.contains("BSplineTransform_double_3_3")
    );
}

/// What the post-ablation scan cannot show is said, not hidden: a post scan that ends
/// inside the tumour leaves part of it unseen (counted as not ablated) and cuts the zone
/// at its edge; both are warnings in the report.
#[test]
fn confirmation_warns_about_what_the_post_scan_cuts_off() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, ct) = sample(tmp.path());
    // The post scan: the sample cut 4 mm to the patient's left of the tumour's centre
    // (x ≤ LIVER_LPS.x + 4), so the left part of an 8 mm tumour and of the zone are missing.
    let grid = ct.grid();
    let keep_i = (0..grid.dims()[0])
        .filter(|&i| grid.index_to_world([i as f64, 0.0, 0.0])[0] <= LIVER_LPS[0] + 4.0)
        .collect::<Vec<_>>();
    let (first, last) = (*keep_i.iter().min().unwrap(), *keep_i.iter().max().unwrap());
    let dims = grid.dims();
    let post = ct.crop([first, 0, 0], [last - first + 1, dims[1], dims[2]]);
    let post_path = tmp.path().join("post.nii.gz");
    pinhole_io::nifti::write(&post_path, &AnyVolume::from(post.clone())).unwrap();
    let zone: Volume<u8> =
        pinhole_volume::target::sphere_mask(post.grid(), LIVER_LPS, 16.0).map(u8::from);
    let zone_path = tmp.path().join("zone.nii.gz");
    pinhole_io::nifti::write(&zone_path, &AnyVolume::from(zone)).unwrap();
    let request = ConfirmRequest {
        pre_ct: files.ct.clone(),
        post_ct: post_path,
        tumor: format!("{},{},{},8", LIVER_LPS[0], LIVER_LPS[1], LIVER_LPS[2]),
        labels: None,
        labels_table: None,
        zone: ZoneInput::File(zone_path),
        alignment: Alignment::Identity,
        required_margin_mm: 5.0,
        grid_mm: 0.5,
        not_ct: NotCt::Refuse,
    };
    let report = pinhole_pipeline::confirm::run(&request, &Quiet)
        .unwrap()
        .report;
    let warnings = report.warnings.join("\n");
    assert!(
        warnings.contains("touches the post-ablation scan's edge"),
        "{warnings}"
    );
    assert!(
        warnings.contains("of the tumour lies outside the post-ablation scan"),
        "{warnings}"
    );
    assert!(
        report.margin.coverage_tumor_pct < 100.0,
        "{}",
        report.margin.coverage_tumor_pct
    );
}

/// A deformation that cannot be used is reported (reason, warning) and the rigid
/// registration stays in use: here the ablation zone given fills the whole post scan,
/// and the zone (with 5 mm around it) is left out of the deformable similarity, so no
/// organ voxel is left to drive it.
#[test]
fn unusable_deformation_is_reported_and_the_rigid_registration_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, ct) = sample(tmp.path());
    let zone = Volume::<u8>::filled(ct.grid().clone(), 1);
    let zone_path = tmp.path().join("zone.nii.gz");
    pinhole_io::nifti::write(&zone_path, &AnyVolume::from(zone)).unwrap();
    let request = ConfirmRequest {
        labels: Some(files.labels.clone()),
        labels_table: Some(files.table.display().to_string()),
        alignment: liver_deformable(&files),
        grid_mm: 1.0,
        ..liver_confirmation(&files, zone_path)
    };
    let outcome = pinhole_pipeline::confirm::run(&request, &Quiet).unwrap();
    let registration = &outcome.report.registration;
    assert!(registration.converged, "{:?}", registration.reason);
    let deformable = registration
        .deformable
        .as_ref()
        .expect("the refinement ran");
    assert!(!deformable.used);
    let reason = deformable.reason.as_deref().expect("a reason");
    assert!(reason.contains("samples of the organ"), "{reason}");
    assert!(
        outcome
            .report
            .warnings
            .iter()
            .any(|w| w.contains("deformable registration not used") && w.contains(reason)),
        "{:?}",
        outcome.report.warnings
    );
    assert!(outcome.field.is_none());
    // The transform written is the rigid one alone.
    outcome.write(&tmp.path().join("confirm")).unwrap();
    let tfm = std::fs::read_to_string(tmp.path().join("confirm/post_to_pre.tfm")).unwrap();
    assert!(!tfm.contains("BSplineTransform"), "{tfm}");
}

/// A zone nowhere near the tumour (60 mm away: beyond the 5 + 12 mm the analysis looks
/// at): nothing covered, a finite negative margin, and a warning saying the margin is
/// more negative than measured.
#[test]
fn zone_far_from_the_tumour_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, ct) = sample(tmp.path());
    let zone_centre = [LIVER_LPS[0] + 60.0, LIVER_LPS[1], LIVER_LPS[2]];
    let zone: Volume<u8> =
        pinhole_volume::target::sphere_mask(ct.grid(), zone_centre, 10.0).map(u8::from);
    let zone_path = tmp.path().join("zone.nii.gz");
    pinhole_io::nifti::write(&zone_path, &AnyVolume::from(zone)).unwrap();
    let request = ConfirmRequest {
        grid_mm: 1.0,
        ..liver_confirmation(&files, zone_path)
    };
    let outcome = pinhole_pipeline::confirm::run(&request, &Quiet).unwrap();
    let m = &outcome.report.margin;
    assert_eq!(m.coverage_tumor_pct, 0.0);
    assert!(m.minimal_margin_mm.is_finite() && m.minimal_margin_mm < -17.0);
    assert!(
        outcome
            .report
            .warnings
            .iter()
            .any(|w| w.contains("does not reach within 17 mm of the tumour")),
        "{:?}",
        outcome.report.warnings
    );
    outcome.write(&tmp.path().join("confirm")).unwrap();
}
