//! Margins where the zone has no surface on the analysis grid.

use pinhole_intraop::margin::{assess_margin, MarginSettings};
use pinhole_volume::{Grid, Mask};

/// 41³ voxels of 1 mm centred on the origin, with a 6 mm-radius tumour at the centre.
fn grid_and_tumour() -> (Grid, Mask) {
    let grid = Grid::axis_aligned([41; 3], [1.0; 3], [-20.0; 3]).expect("grid");
    let flags = (0..grid.voxel_count())
        .map(|o| {
            let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
            p.iter().map(|v| v * v).sum::<f64>() <= 36.0
        })
        .collect();
    let tumour = Mask::new(grid.clone(), flags).expect("mask");
    (grid, tumour)
}

/// Regression: a zone filling the whole grid gave NaN margins (infinite distances
/// interpolated), which then failed the margin surface's writer.
#[test]
fn zone_filling_the_grid_gives_a_finite_margin_beyond_the_grid() {
    let (grid, tumour) = grid_and_tumour();
    let zone = Mask::new(grid.clone(), vec![true; grid.voxel_count()]).expect("mask");
    let (m, map) = assess_margin(&tumour, &zone, &MarginSettings::default()).expect("margin");
    assert!(map.margin_mm.iter().all(|v| v.is_finite()));
    // The tumour's surface is 14 mm from the grid's faces at least.
    assert!(m.minimal_margin_mm >= 14.0, "{}", m.minimal_margin_mm);
    assert!((m.coverage_tumor_pct - 100.0).abs() < 1e-9);
}

#[test]
fn zone_missing_the_grid_gives_a_finite_negative_margin() {
    let (grid, tumour) = grid_and_tumour();
    let zone = Mask::new(grid.clone(), vec![false; grid.voxel_count()]).expect("mask");
    let (m, map) = assess_margin(&tumour, &zone, &MarginSettings::default()).expect("margin");
    assert!(map.margin_mm.iter().all(|v| v.is_finite()));
    assert!(m.minimal_margin_mm <= -14.0, "{}", m.minimal_margin_mm);
    assert_eq!(m.coverage_tumor_pct, 0.0);
}
