//! Criterion benches of the volume core on synthetic data (no files needed):
//! exact EDT, trilinear sampling and resampling. `cargo bench -p pinhole-bench`.

use criterion::{criterion_group, criterion_main, Criterion};
use pinhole_volume::{distance_to, Grid, Interpolation, Volume};

fn sphere_mask(n: usize) -> Volume<bool> {
    let grid = Grid::axis_aligned([n, n, n / 2], [0.7, 0.7, 2.5], [0.0; 3]).expect("grid");
    let centre = grid.center_lps();
    let data = (0..grid.voxel_count())
        .map(|o| {
            let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
            let d2: f64 = (0..3).map(|a| (p[a] - centre[a]).powi(2)).sum();
            d2 < 30.0f64.powi(2)
        })
        .collect();
    Volume::new(grid, data).expect("volume")
}

fn edt(c: &mut Criterion) {
    let mask = sphere_mask(256);
    c.bench_function("edt 256x256x128 anisotropic", |b| {
        b.iter(|| distance_to(&mask))
    });
}

fn sampling(c: &mut Criterion) {
    let mask = sphere_mask(128);
    let field = mask.map(|m| if m { 1000.0f32 } else { -1000.0 });
    let target =
        Grid::axis_aligned([100, 100, 100], [0.5, 0.5, 0.5], [20.0, 20.0, 60.0]).expect("grid");
    c.bench_function("trilinear resample to 1M voxels", |b| {
        b.iter(|| field.resample(&target, Interpolation::Trilinear, -1000.0))
    });
}

criterion_group!(benches, edt, sampling);
criterion_main!(benches);
