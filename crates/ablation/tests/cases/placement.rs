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
