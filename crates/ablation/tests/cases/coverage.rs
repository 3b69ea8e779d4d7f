//! Coverage and margins of a sphere tumour (r = 10 mm) in a spheroid zone (long 42 mm
//! along z, short 35 mm) against geometry computed independently: disc-area quadrature
//! for volumes, brute-force surface sampling for distances. Heat-sink flags on tubes.

use pinhole_ablation::coverage::{coverage, heat_sinks};
use pinhole_ablation::zone::EllipsoidZone;
use pinhole_volume::Volume;

use crate::{centred_grid, mask_where};

const A: f64 = 21.0; // semi-long axis (z)
const B: f64 = 17.5; // semi-short axis

fn zone_at(z0: f64) -> EllipsoidZone {
    EllipsoidZone {
        center_lps: [0.0, 0.0, z0],
        axis_lps: [0.0, 0.0, 1.0],
        long_axis_mm: 2.0 * A,
        short_axis_mm: 2.0 * B,
    }
}

/// Volume fraction of the sphere (radius `r`, centre 0) inside the spheroid centred at z0:
/// both are solids of revolution about z, so each z-slice is the smaller of two discs.
fn fraction_inside(r: f64, z0: f64) -> f64 {
    let n = 200_000;
    let mut inter = 0.0;
    for i in 0..n {
        let z = -r + (i as f64 + 0.5) * 2.0 * r / n as f64;
        let rs2 = r * r - z * z;
        let t = (z - z0) / A;
        let re2 = if t.abs() < 1.0 {
            B * B * (1.0 - t * t)
        } else {
            0.0
        };
        inter += rs2.min(re2).max(0.0);
    }
    inter * 2.0 * r / n as f64 / (4.0 / 3.0 * r.powi(3))
}

/// Signed distance from the tumour sphere's surface to the spheroid surface, minimised:
/// sample both surfaces densely.
fn min_margin(r: f64, z0: f64) -> f64 {
    let mut surface = Vec::new();
    for i in 0..=400 {
        let th = std::f64::consts::PI * i as f64 / 400.0;
        for j in 0..8 {
            let ph = std::f64::consts::TAU * j as f64 / 8.0;
            surface.push([
                B * th.sin() * ph.cos(),
                B * th.sin() * ph.sin(),
                z0 + A * th.cos(),
            ]);
        }
    }
    let zone = zone_at(z0);
    let mut best = f64::INFINITY;
    for i in 0..=200 {
        let th = std::f64::consts::PI * i as f64 / 200.0;
        let p = [r * th.sin(), 0.0, r * th.cos()];
        let d = surface
            .iter()
            .map(|q| ((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2)).sqrt())
            .fold(f64::INFINITY, f64::min);
        let signed = if zone.contains(p) { d } else { -d };
        best = best.min(signed);
    }
    best
}

#[test]
fn sphere_in_spheroid_coverage_and_margins_match_geometry() {
    let h = 0.5;
    let grid = centred_grid(111, h);
    let tumor = mask_where(&grid, |p| p[0] * p[0] + p[1] * p[1] + p[2] * p[2] <= 100.0);
    for z0 in [0.0, 8.0, 25.0] {
        let zone = zone_at(z0).mask(&grid);
        for margin in [5.0, 10.0] {
            let c = coverage(&tumor, &zone, margin).unwrap();
            let tumor_pct = 100.0 * fraction_inside(10.0, z0);
            let margin_pct = 100.0 * fraction_inside(10.0 + margin, z0);
            assert!(
                (c.coverage_tumor_pct - tumor_pct).abs() < 1.5,
                "z0 {z0}: tumour {} vs {tumor_pct}",
                c.coverage_tumor_pct
            );
            assert!(
                (c.coverage_margin_pct - margin_pct).abs() < 1.5,
                "z0 {z0} margin {margin}: {} vs {margin_pct}",
                c.coverage_margin_pct
            );
            let m = c.min_margin_mm.unwrap();
            let expected = min_margin(10.0, z0);
            assert!(
                (m - expected).abs() <= h,
                "z0 {z0}: min margin {m} vs {expected}"
            );
        }
    }
    // Concentric: thinnest margin 17.5 − 10 = 7.5 mm at the equator (across the axis).
    let c = coverage(&tumor, &zone_at(0.0).mask(&grid), 5.0).unwrap();
    let p = c.thinnest_margin_lps.unwrap();
    assert!(
        p[2].abs() <= 2.0 && ((p[0].powi(2) + p[1].powi(2)).sqrt() - 10.0).abs() <= 0.5,
        "{p:?}"
    );
    assert!((c.coverage_tumor_pct - 100.0).abs() < 1e-9);
    // Shifted 8 mm up: thinnest at the tumour's lower pole, 21 − 8 − 10 = 3 mm.
    let c = coverage(&tumor, &zone_at(8.0).mask(&grid), 5.0).unwrap();
    let p = c.thinnest_margin_lps.unwrap();
    assert!((p[2] + 10.0).abs() <= 0.5, "{p:?}");
    assert!((c.min_margin_mm.unwrap() - 3.0).abs() <= h);
}

#[test]
fn heat_sinks_flag_wide_vessels_within_10_mm_only() {
    let h = 0.5;
    let grid = centred_grid(121, h);
    let tumor = mask_where(&grid, |p| p[0] * p[0] + p[1] * p[1] + p[2] * p[2] <= 100.0);
    // Tubes along z: id 1 diameter 6 mm, 2 mm gap to the tumour (axis at x = 15);
    // id 2 diameter 2 mm at 4 mm (axis x = −15); id 3 diameter 8 mm, 11 mm gap (y = 25).
    let data = (0..grid.voxel_count())
        .map(|o| {
            let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
            if (p[0] - 15.0).powi(2) + p[1] * p[1] <= 9.0 {
                1u16
            } else if (p[0] + 15.0).powi(2) + p[1] * p[1] <= 1.0 {
                2
            } else if p[0] * p[0] + (p[1] - 25.0).powi(2) <= 16.0 {
                3
            } else {
                0
            }
        })
        .collect();
    let labels = Volume::new(grid.clone(), data).unwrap();
    let vessels = vec![
        (1, "wide".to_string()),
        (2, "thin".into()),
        (3, "far".into()),
    ];
    let sinks = heat_sinks(&labels, &tumor, &vessels, 3.0, 10.0);
    let get = |id: u32| sinks.iter().find(|s| s.label_id == id);
    let wide = get(1).unwrap();
    assert!(wide.flagged);
    assert!((wide.diameter_mm - 6.0).abs() <= 1.0, "{wide:?}");
    assert!((wide.distance_mm - 2.0).abs() <= 2.0 * h, "{wide:?}");
    assert!(
        wide.nearest_lps[0] > 11.0 && wide.nearest_lps[0] < 13.0,
        "{wide:?}"
    );
    let thin = get(2).unwrap();
    assert!(!thin.flagged, "{thin:?}");
    assert!((thin.diameter_mm - 2.0).abs() <= 1.0, "{thin:?}");
    assert!(get(3).is_none(), "{sinks:?}");
}
