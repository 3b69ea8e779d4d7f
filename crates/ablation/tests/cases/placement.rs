//! Placement: depth along a path centres the zone; a dumbbell tumour too wide for one
//! zone gets two applicators that cover it.

use pinhole_ablation::coverage::margin_region;
use pinhole_ablation::devices::ZoneEntry;
use pinhole_ablation::placement::{best_depth, greedy_cover, mask_points, principal_axis};

use crate::{centred_grid, mask_where};

const ZONE: ZoneEntry = ZoneEntry {
    power_w: 100.0,
    minutes: 10.0,
    long_axis_mm: 42.0,
    short_axis_mm: 36.0,
    beyond_tip_mm: 9.5,
};

#[test]
fn depth_along_path_centres_the_zone_on_the_tumour() {
    let grid = centred_grid(81, 1.0);
    let tumor = mask_where(&grid, |p| p[0] * p[0] + p[1] * p[1] + p[2] * p[2] <= 100.0);
    let region = margin_region(&tumor, 5.0);
    let app = best_depth(
        [0.0, 0.0, -100.0],
        [0.0, 0.0, 0.0],
        &ZONE,
        &mask_points(&region, 1),
        &mask_points(&tumor, 1),
    )
    .unwrap();
    // Zone centre = tip + axis·(beyond − long/2) = 0 → tip z = 21 − 9.5 = 11.5 mm.
    assert!(app.tip_lps[0].abs() < 1e-9 && app.tip_lps[1].abs() < 1e-9);
    assert!((app.tip_lps[2] - 11.5).abs() <= 0.5, "{:?}", app.tip_lps);
    assert_eq!(app.axis_lps, [0.0, 0.0, 1.0]);
}

#[test]
fn a_tumour_wider_than_one_zone_gets_two_applicators() {
    // Two spheres r = 8 mm at x = ±10 mm; + 5 mm margin spans 46 mm across the axis (z),
    // more than the zone's 36 mm; one zone at each sphere covers it entirely
    // (13 mm spheres inside a 18 × 21 mm semi-axis spheroid).
    let grid = centred_grid(81, 1.0);
    let tumor = mask_where(&grid, |p| {
        let r2 = p[1] * p[1] + p[2] * p[2];
        (p[0] - 10.0).powi(2) + r2 <= 64.0 || (p[0] + 10.0).powi(2) + r2 <= 64.0
    });
    let region = margin_region(&tumor, 5.0);
    let points = mask_points(&region, 1);
    let one = greedy_cover([0.0, 0.0, 1.0], &ZONE, &points, None, 1, 0.99).unwrap();
    assert!(one.covered_fraction < 0.95, "{}", one.covered_fraction);
    let placed = greedy_cover([0.0, 0.0, 1.0], &ZONE, &points, None, 3, 0.99).unwrap();
    assert_eq!(placed.applicators.len(), 2, "{placed:?}");
    assert!(placed.covered_fraction >= 0.99, "{placed:?}");
    let mut xs: Vec<f64> = placed.zones.iter().map(|z| z.center_lps[0]).collect();
    xs.sort_by(f64::total_cmp);
    assert!(xs[0] < -3.0 && xs[1] > 3.0, "{xs:?}");
    // The dumbbell's longest axis is x; oriented with y ≥ 0 (x up to sign).
    let axis = principal_axis(&mask_points(&tumor, 1));
    assert!(axis[0].abs() > 0.99, "{axis:?}");
}

/// Simulate mode: a dumbbell tumour longer than one simulated zone gets more applicators,
/// simulated heating together, and reaches more coverage than one applicator.
#[test]
fn simulate_mode_adds_applicators_when_one_simulated_zone_falls_short() {
    use pinhole_ablation::bioheat::{Settings, Tissue};
    use pinhole_ablation::damage::Criterion;
    use pinhole_ablation::devices::Modality;
    use pinhole_ablation::plan::{plan, Mode, Request};
    use pinhole_volume::Volume;

    let o = -(45.0 - 1.0) * 1.5 / 2.0;
    let grid = pinhole_volume::Grid::axis_aligned([45; 3], [1.5; 3], [o; 3]).unwrap();
    let tumor = mask_where(&grid, |p| {
        let r2 = p[1] * p[1] + p[2] * p[2];
        (p[0] - 12.0).powi(2) + r2 <= 36.0 || (p[0] + 12.0).powi(2) + r2 <= 36.0
    });
    let request = Request {
        labels: Volume::filled(grid.clone(), 1u16),
        tumor,
        margin_mm: 5.0,
        vessels: Vec::new(),
        liver_id: Some(1),
        liver: Tissue::liver(),
        other_tissue: Tissue::liver(),
        path: None,
        mode: Mode::Simulate {
            modality: Modality::Microwave,
            model: pinhole_ablation::calibration::SourceModel::default_for(Modality::Microwave),
            calibration: None,
            power_w: 12.0,
            minutes: 3.0,
            criterion: Criterion::Arrhenius,
            settings: Settings::default(),
        },
        max_applicators: 3,
    };
    let result = plan(&request).unwrap();
    let sim = result.simulation.as_ref().unwrap();
    let by_count = &result.covered_fraction_by_count;
    assert!(sim.applicators >= 2, "{by_count:?}");
    assert_eq!(result.zones.len(), sim.applicators);
    assert_eq!(by_count.len(), sim.applicators);
    assert!(
        by_count[0] < 0.9,
        "one applicator already covers {by_count:?}"
    );
    let last = by_count[by_count.len() - 1];
    assert!(last > by_count[0] + 0.1, "{by_count:?}");
    // The joint zone's coverage is what the plan reports.
    assert!(
        (result.coverage.coverage_margin_pct / 100.0 - last).abs() < 0.02,
        "{:?}",
        result.coverage
    );
    let tips: Vec<f64> = result.zones.iter().map(|z| z.tip_lps[0]).collect();
    assert!(
        tips.iter().any(|&x| x < 0.0) && tips.iter().any(|&x| x > 0.0),
        "{tips:?}"
    );
}
