//! Regression (#19, "pictures without orientation"): `best.png`, `zone.png` and
//! `route.png` carry orientation letters and a scale bar, read back off the pixels. The
//! expected letters follow from each picture's geometry: the needle plane and the route's
//! frontal projection are radiological (patient's left on the right), the ablation slice
//! runs down the applicator.

use pinhole_pipeline::ablation::AblationRequest;
use pinhole_pipeline::demo;
use pinhole_pipeline::figures::RgbPicture;
use pinhole_pipeline::needle::NeedleRequest;
use pinhole_pipeline::vessel::RouteRequest;
use pinhole_pipeline::Quiet;
use pinhole_volume::annotate::{patient_letters, Canvas, Edge};

fn shows(picture: &RgbPicture, edge: Edge, letters: &str) -> bool {
    let mut rgb = picture.rgb.clone();
    let canvas = Canvas {
        rgb: &mut rgb,
        width: picture.width,
        height: picture.height,
    };
    let (x, y, scale) = canvas.letters_position(letters, edge);
    canvas.shows_text(x, y, letters, scale)
}

#[test]
fn pictures_carry_orientation_letters_and_a_scale_bar() {
    let tmp = tempfile::tempdir().unwrap();
    let data = demo::load_data(None).unwrap();
    let files = demo::write_data_files(tmp.path(), &data).unwrap();
    let table = Some(files.table.display().to_string());

    let needle = pinhole_pipeline::needle::run(
        &NeedleRequest {
            labels_table: table.clone(),
            candidates: 4000,
            ..NeedleRequest::new(
                &files.ct,
                &files.labels,
                "kidney-biopsy",
                "kidney_cyst_left",
            )
        },
        &Quiet,
    )
    .unwrap();
    let best = &needle.best_png;
    assert!(shows(best, Edge::Right, "L") && shows(best, Edge::Left, "R"));
    assert!(!shows(best, Edge::Right, "R"));
    // 512 px of 0.5 mm: a 50 mm bar, labelled.
    let mut rgb = best.rgb.clone();
    let canvas = Canvas {
        rgb: &mut rgb,
        width: best.width,
        height: best.height,
    };
    let label_y = best.height - 6 - 2 - 14 - 4;
    assert!(canvas.shows_text(6, label_y, "50 mm", 2));

    let route = pinhole_pipeline::vessel::plan_route(
        &RouteRequest {
            labels_table: table.clone(),
            ct: Some(files.ct.clone()),
            ..RouteRequest::new(
                &files.labels,
                "subclavian_artery_right",
                "common_carotid_artery_left",
            )
        },
        &Quiet,
    )
    .unwrap();
    let frontal = &route.picture;
    assert!(shows(frontal, Edge::Right, "L") && shows(frontal, Edge::Left, "R"));
    assert!(shows(frontal, Edge::Top, "S") && shows(frontal, Edge::Bottom, "I"));

    let ablation = pinhole_pipeline::ablation::run(
        &AblationRequest {
            labels_table: table,
            ..AblationRequest::device(
                &files.ct,
                &files.labels,
                "-53.6,-19.6,-217.5,12",
                "emprint-example",
                100.0,
                5.0,
            )
        },
        &Quiet,
    )
    .unwrap();
    // Down the picture runs the applicator axis.
    let axis = ablation.report.zones[0].axis_lps;
    let down = patient_letters(axis);
    let up = patient_letters(axis.map(|c| -c));
    assert!(shows(&ablation.picture, Edge::Bottom, &down), "{down}");
    assert!(shows(&ablation.picture, Edge::Top, &up), "{up}");
}
