//! A "CT" that is not one (an MR, PET or NM volume, a normalised image) is refused by
//! every procedure that reads HU, unless `--allow-non-ct` (`NotCt::Allow`) is given,
//! and then the report's warnings record it; `info` says why (issue #25).

use std::path::{Path, PathBuf};

use pinhole_io::open::{read_volume, ReadOptions};
use pinhole_io::AnyVolume;
use pinhole_pipeline::ablation::AblationRequest;
use pinhole_pipeline::demo;
use pinhole_pipeline::drr::DrrRequest;
use pinhole_pipeline::inputs::{not_ct_reason, NotCt};
use pinhole_pipeline::needle::NeedleRequest;
use pinhole_pipeline::register::RegistrationRequest;
use pinhole_pipeline::report::Report;
use pinhole_pipeline::vessel::{MeasureReport, MeasureRequest, RouteReport, RouteRequest};
use pinhole_pipeline::Quiet;

use crate::shared::shared_data;

/// The refusal names the file, says why and how to go on.
fn assert_refused(err: &dyn std::fmt::Display, path: &Path) {
    let text = err.to_string();
    assert!(text.contains("does not look like a CT"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("--allow-non-ct"), "{text}");
}

fn has_override_warning(warnings: &[String]) -> bool {
    warnings.iter().any(|w| w.starts_with("--allow-non-ct:"))
}

#[test]
fn every_real_ct_is_ct_like() {
    let mut cts: Vec<PathBuf> = [
        "chest-ct/ct.nii.gz",
        "abdomen-ct/example_ct.nii.gz",
        "abdomen-ct/example_ct_sm.nii.gz",
        "dicom-ct-series",
    ]
    .iter()
    .map(|p| shared_data(p))
    .collect();
    let tmp = tempfile::tempdir().unwrap();
    let files = demo::write_data_files(tmp.path(), &demo::load_data(None).unwrap()).unwrap();
    cts.push(files.ct);
    for path in cts {
        let loaded = read_volume(&path, &ReadOptions::default(), &mut |_, _| {}).unwrap();
        let verdict = not_ct_reason(&loaded.volume, loaded.modality.as_deref());
        assert_eq!(verdict, None, "{}", path.display());
    }
}

/// The sample CT made MR-like (HU + 1024, so 0 … ~3000 with no negative air),
/// normalised to 0 … 1, and with its two most anterior rows (in the air in front of the
/// body, 1.5 % of the voxels) set to +5000 HU, next to the sample's labels.
struct NotCtCase {
    _dir: tempfile::TempDir,
    files: demo::DataFiles,
    mr_like: PathBuf,
    normalised: PathBuf,
    too_bright: PathBuf,
}

fn not_ct_case() -> NotCtCase {
    let dir = tempfile::tempdir().unwrap();
    let data = demo::load_data(None).unwrap();
    let files = demo::write_data_files(dir.path(), &data).unwrap();
    let hu = data.ct.to_f32();
    let mr_like = dir.path().join("mr_like.nii.gz");
    let shifted = AnyVolume::from(hu.map(|v| (v + 1024.0).max(0.0)));
    pinhole_io::open::write_volume(&mr_like, &shifted).unwrap();
    let normalised = dir.path().join("normalised.nii.gz");
    let unit = AnyVolume::from(hu.map(|v| ((v + 1024.0) / 4095.0).clamp(0.0, 1.0)));
    pinhole_io::open::write_volume(&normalised, &unit).unwrap();
    let too_bright = dir.path().join("too_bright.nii.gz");
    let mut bright = hu.clone();
    let [nx, ny, nz] = bright.grid().dims();
    assert_eq!(
        bright.grid().orientation_code(),
        "LAS",
        "rows ny-2.. are anterior"
    );
    for k in 0..nz {
        for j in ny - 2..ny {
            for i in 0..nx {
                let at = bright.grid().offset([i, j, k]);
                bright.data_mut()[at] = 5000.0;
            }
        }
    }
    pinhole_io::open::write_volume(&too_bright, &AnyVolume::from(bright)).unwrap();
    NotCtCase {
        _dir: dir,
        files,
        mr_like,
        normalised,
        too_bright,
    }
}

#[test]
fn info_says_why_a_volume_is_not_ct_like() {
    let case = not_ct_case();
    for path in [&case.mr_like, &case.normalised] {
        let report = pinhole_pipeline::info::run(path, None, None, &Quiet).unwrap();
        let reason = report.not_ct.clone().expect("not CT-like");
        assert!(reason.contains("no air"), "{reason}");
        let text = report.to_text();
        assert!(text.contains("not CT-like: no air"), "{text}");
        assert!(!text.contains("CT-like)"), "{text}");
    }
    let bright = pinhole_pipeline::info::run(&case.too_bright, None, None, &Quiet).unwrap();
    let reason = bright.not_ct.expect("too bright");
    assert!(reason.contains("too bright"), "{reason}");
    let ct = pinhole_pipeline::info::run(&case.files.ct, None, None, &Quiet).unwrap();
    assert_eq!(ct.not_ct, None);
    assert!(ct.to_text().contains("(HU, CT-like)"), "{}", ct.to_text());
}

#[test]
fn procedures_refuse_a_non_ct_unless_told_to_go_on() {
    let case = not_ct_case();
    let mr = &case.mr_like;
    // drr
    let drr = DrrRequest {
        size_px: 64,
        pixel_mm: 6.0,
        ..DrrRequest::new(mr)
    };
    assert_refused(&pinhole_pipeline::drr::run(&drr, &Quiet).unwrap_err(), mr);
    let allowed = pinhole_pipeline::drr::run(
        &DrrRequest {
            not_ct: NotCt::Allow,
            ..drr.clone()
        },
        &Quiet,
    )
    .unwrap();
    assert!(
        has_override_warning(&allowed.warnings),
        "{:?}",
        allowed.warnings
    );
    let xray = case._dir.path().join("xray.png");
    allowed.write_png(&xray).unwrap();
    // plan needle
    let needle = NeedleRequest {
        labels_table: Some(case.files.table.display().to_string()),
        candidates: 500,
        ..NeedleRequest::new(mr, &case.files.labels, "kidney-biopsy", "kidney_cyst_left")
    };
    assert_refused(
        &pinhole_pipeline::needle::run(&needle, &Quiet).unwrap_err(),
        mr,
    );
    let normalised = NeedleRequest {
        ct: case.normalised.clone(),
        ..needle.clone()
    };
    assert_refused(
        &pinhole_pipeline::needle::run(&normalised, &Quiet).unwrap_err(),
        &case.normalised,
    );
    // plan ablation
    let ablation = AblationRequest {
        labels_table: Some(case.files.table.display().to_string()),
        ..AblationRequest::device(
            mr,
            &case.files.labels,
            "kidney_cyst_left",
            "emprint-example",
            100.0,
            5.0,
        )
    };
    assert_refused(
        &pinhole_pipeline::ablation::run(&ablation, &Quiet).unwrap_err(),
        mr,
    );
    // register
    let register = RegistrationRequest::new(mr, &xray);
    assert_refused(
        &pinhole_pipeline::register::run(&register, &Quiet).unwrap_err(),
        mr,
    );
    // serve (the session's volumes)
    let err =
        pinhole_pipeline::session::load_volumes(mr, &case.files.labels, NotCt::Refuse, &Quiet)
            .unwrap_err();
    assert_refused(&err, mr);
    let (_, _, warning) =
        pinhole_pipeline::session::load_volumes(mr, &case.files.labels, NotCt::Allow, &Quiet)
            .unwrap();
    assert!(has_override_warning(&Vec::from_iter(warning)));
}

#[test]
fn an_overridden_check_is_recorded_in_the_plan() {
    let case = not_ct_case();
    let request = NeedleRequest {
        labels_table: Some(case.files.table.display().to_string()),
        candidates: 2000,
        not_ct: NotCt::Allow,
        ..NeedleRequest::new(
            &case.too_bright,
            &case.files.labels,
            "kidney-biopsy",
            "kidney_cyst_left",
        )
    };
    let outcome = pinhole_pipeline::needle::run(&request, &Quiet).unwrap();
    let warnings = &outcome.report.plan.warnings;
    assert!(has_override_warning(warnings), "{warnings:?}");
    // A real CT carries no such warning.
    let ct = NeedleRequest {
        ct: case.files.ct.clone(),
        not_ct: NotCt::Allow,
        ..request
    };
    let outcome = pinhole_pipeline::needle::run(&ct, &Quiet).unwrap();
    assert!(!has_override_warning(&outcome.report.plan.warnings));
}

/// A real CT series relabelled `Modality MR` (the tag's bytes patched in a copy).
#[test]
fn a_dicom_series_whose_modality_is_not_ct_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(shared_data("dicom-ct-series"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // (0008,0060) CS, length 2, "CT" in explicit VR little endian.
    let tag = [0x08, 0x00, 0x60, 0x00, b'C', b'S', 0x02, 0x00, b'C', b'T'];
    for f in &files[..3] {
        let mut bytes = std::fs::read(f).unwrap();
        let at = bytes
            .windows(tag.len())
            .position(|w| w == tag)
            .expect("Modality CT in the file");
        bytes[at + 8..at + 10].copy_from_slice(b"MR");
        std::fs::write(tmp.path().join(f.file_name().unwrap()), bytes).unwrap();
    }
    let report = pinhole_pipeline::info::run(tmp.path(), None, None, &Quiet).unwrap();
    assert_eq!(report.modality.as_deref(), Some("MR"));
    let reason = report.not_ct.expect("MR is not a CT");
    assert!(reason.contains("Modality is MR"), "{reason}");
    let drr = DrrRequest {
        size_px: 32,
        pixel_mm: 8.0,
        ..DrrRequest::new(tmp.path())
    };
    let err = pinhole_pipeline::drr::run(&drr, &Quiet).unwrap_err();
    assert_refused(&err, tmp.path());
    assert!(err.to_string().contains("Modality is MR"), "{err}");
}

/// `plan vessel` and `measure vessel` with a `ct` (#25): an MR-like one is refused unless
/// told to go on, and then both reports record it; a CTA (contrast: every vessel label at
/// +400 HU) is a CT and runs without a warning.
#[test]
fn vessel_tools_refuse_a_non_ct_unless_told_to_go_on() {
    let case = not_ct_case();
    let mr = &case.mr_like;
    let table = Some(case.files.table.display().to_string());
    let route = RouteRequest {
        labels_table: table.clone(),
        ct: Some(mr.clone()),
        ..RouteRequest::new(
            &case.files.labels,
            "subclavian_artery_right",
            "common_carotid_artery_left",
        )
    };
    assert_refused(
        &pinhole_pipeline::vessel::plan_route(&route, &Quiet).unwrap_err(),
        mr,
    );
    let allowed = pinhole_pipeline::vessel::plan_route(
        &RouteRequest {
            not_ct: NotCt::Allow,
            ..route.clone()
        },
        &Quiet,
    )
    .unwrap();
    assert!(
        has_override_warning(&allowed.report.warnings),
        "{:?}",
        allowed.report.warnings
    );
    let out = case._dir.path().join("route");
    allowed.write(&out, &Quiet).unwrap();
    let back = RouteReport::read(&out.join("route.json")).unwrap();
    assert!(has_override_warning(&back.warnings), "{:?}", back.warnings);

    let measure = MeasureRequest {
        labels_table: table.clone(),
        ct: Some(mr.clone()),
        ..MeasureRequest::new(&case.files.labels, "common_carotid_artery_left")
    };
    assert_refused(
        &pinhole_pipeline::vessel::measure(&measure, &Quiet).unwrap_err(),
        mr,
    );
    let allowed = pinhole_pipeline::vessel::measure(
        &MeasureRequest {
            not_ct: NotCt::Allow,
            ..measure.clone()
        },
        &Quiet,
    )
    .unwrap();
    assert!(
        has_override_warning(&allowed.report.warnings),
        "{:?}",
        allowed.report.warnings
    );
    let out = case._dir.path().join("measure");
    allowed.write(&out, &Quiet).unwrap();
    let back = MeasureReport::read(&out.join("measurements.json")).unwrap();
    assert!(has_override_warning(&back.warnings), "{:?}", back.warnings);

    // A CTA: the sample CT with its vessel labels at +400 HU.
    let data = demo::load_data(None).unwrap();
    let mut cta = data.ct.to_f32();
    assert_eq!(cta.grid(), data.labels.grid());
    let mut enhanced = 0usize;
    for (hu, &id) in cta.data_mut().iter_mut().zip(data.labels.data()) {
        if id != 0
            && data
                .table
                .name(u32::from(id))
                .is_some_and(pinhole_vessel::route::is_vessel)
        {
            *hu = 400.0;
            enhanced += 1;
        }
    }
    assert!(enhanced > 1000, "{enhanced} vessel voxels");
    let cta_path = case._dir.path().join("cta.nii.gz");
    pinhole_io::open::write_volume(&cta_path, &AnyVolume::from(cta)).unwrap();
    let route = pinhole_pipeline::vessel::plan_route(
        &RouteRequest {
            ct: Some(cta_path.clone()),
            ..route
        },
        &Quiet,
    )
    .unwrap();
    assert!(
        !has_override_warning(&route.report.warnings),
        "{:?}",
        route.report.warnings
    );
    let measured = pinhole_pipeline::vessel::measure(
        &MeasureRequest {
            ct: Some(cta_path),
            ..measure
        },
        &Quiet,
    )
    .unwrap();
    assert!(
        measured.report.warnings.is_empty(),
        "{:?}",
        measured.report.warnings
    );
    // The lumen HU along the measured vessel is the contrast's (interpolation across
    // the lumen's edge mixes in some tissue at a few stations, never above 400).
    let lumen: Vec<f64> = measured
        .report
        .stations
        .iter()
        .filter_map(|s| s.lumen_hu)
        .collect();
    assert!(lumen.len() > 10, "{lumen:?}");
    assert!(
        lumen.iter().all(|&hu| hu > 300.0 && hu <= 400.0 + 1e-9),
        "{lumen:?}"
    );
}
