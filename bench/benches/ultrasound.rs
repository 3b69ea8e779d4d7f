//! Criterion benches of the ultrasound reslice on the real chest CT
//! (`../shared/data/chest-ct`, 512 × 512 × 133, 0.70 × 0.70 × 2.5 mm): a 512 × 512 frame
//! (0.3 mm pixels) of CT (trilinear) + labels (nearest, same grid: one pass) in three
//! orientations, into reused buffers as a live session would. `cargo bench -p pinhole-bench --bench ultrasound`.
//! The goal: ≤ 2 ms per frame on 2 cores.
//!
//! `us simulate`: a 512 × 512 B-mode frame simulated from the abdomen CT
//! (`../shared/data/abdomen-ct/example_ct.nii.gz`, 3 mm) with the default 3.5 MHz convex
//! probe (60 mm radius, 60° fan, 150 mm deep), tables built once (`Simulator`), probe on
//! the anterior skin over the CT's centre. Goal: ≤ 10 ms per frame on 2 cores.
//!
//! `us reconstruct`: 100 oblique 256 × 256 frames (0.5 mm pixels, 0.5 mm apart) resliced
//! from the chest CT and windowed to `u8` once, then compounded into their sweep grid at
//! 0.5 mm with hole filling (radius 2), as PLUS's volume reconstructor does.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use pinhole_ultrasound::{
    reconstruct, reslice_both_into, reslice_ct_into, sweep_grid, ImagePlane, ProbePose,
    ReconstructOptions, SimulationParams, Simulator,
};
use pinhole_volume::{Mat3, Vec3};

fn data(relative: &str) -> PathBuf {
    std::env::var_os("PINHOLE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
        .join(relative)
}

fn rotation(axis: Vec3, deg: f64) -> Mat3 {
    let [x, y, z] = axis;
    let (s, c) = deg.to_radians().sin_cos();
    let t = 1.0 - c;
    [
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ]
}

fn mul(a: &Mat3, b: &Mat3) -> Mat3 {
    std::array::from_fn(|r| std::array::from_fn(|c| (0..3).map(|k| a[r][k] * b[k][c]).sum()))
}

/// A 512 × 512 frame of 0.3 mm pixels centred at `centre`, axes the rotation's columns.
fn plane(r: &Mat3, centre: Vec3) -> ImagePlane {
    let x = [r[0][0], r[1][0], r[2][0]].map(|v| v * 0.3);
    let y = [r[0][1], r[1][1], r[2][1]].map(|v| v * 0.3);
    let origin = std::array::from_fn(|a| centre[a] - 255.5 * (x[a] + y[a]));
    ImagePlane::from_steps(origin, x, y, 512, 512).expect("plane")
}

fn reslice(c: &mut Criterion) {
    let ct = pinhole_io::nifti::read(&data("chest-ct/ct.nii.gz")).expect("chest CT");
    let labels = pinhole_io::nifti::read(&data("chest-ct/labels.nii.gz")).expect("labels");
    let (ct, labels) = (ct.to_f32(), labels.to_labels().expect("label map"));
    let centre = ct.grid().center_lps();
    let (l, p, s) = ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]);
    let sagittal = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]];
    let orientations = [
        ("axial", rotation(s, 0.0)),
        ("oblique 30/40", mul(&rotation(s, 30.0), &rotation(l, 40.0))),
        (
            "sagittal-oblique -50/-35",
            mul(&mul(&rotation(s, -50.0), &rotation(p, -35.0)), &sagittal),
        ),
    ];
    let mut ct_out = vec![0.0f32; 512 * 512];
    let mut label_out = vec![0u16; 512 * 512];
    let mut group = c.benchmark_group("us reslice 512x512 chest CT + labels");
    for (name, r) in orientations {
        let frame = plane(&r, centre);
        group.bench_function(name, |b| {
            b.iter(|| {
                reslice_both_into(&ct, &labels, &frame, -1000.0, &mut ct_out, &mut label_out)
                    .expect("reslice");
            })
        });
    }
    group.finish();
}

fn simulate(c: &mut Criterion) {
    let ct = pinhole_io::nifti::read(&data("abdomen-ct/example_ct.nii.gz")).expect("abdomen CT");
    let ct = ct.to_f32();
    let centre = ct.grid().center_lps();
    // The anterior skin over the centre (first air voxel walking anteriorly), probe
    // pressed 10 mm in.
    let mut y = centre[1];
    while ct
        .sample_trilinear([centre[0], y - 1.0, centre[2]])
        .is_some_and(|hu| hu > -300.0)
    {
        y -= 1.0;
    }
    let pose = ProbePose {
        centre_lps: [centre[0], y + 10.0, centre[2]],
        beam_lps: [0.0, 1.0, 0.0],
        lateral_lps: [1.0, 0.0, 0.0],
    };
    let simulator = Simulator::new(SimulationParams::default()).expect("parameters");
    let mut group = c.benchmark_group("us simulate 512x512 abdomen CT");
    group.bench_function("convex 3.5 MHz 150 mm", |b| {
        b.iter(|| simulator.simulate(&ct, &pose).expect("simulate"))
    });
    group.finish();
}

fn reconstruct_sweep(c: &mut Criterion) {
    let ct = pinhole_io::nifti::read(&data("chest-ct/ct.nii.gz")).expect("chest CT");
    let ct = ct.to_f32();
    let centre = ct.grid().center_lps();
    let r = mul(
        &rotation([0.0, 0.0, 1.0], 30.0),
        &rotation([1.0, 0.0, 0.0], 40.0),
    );
    let axis = |c: usize| [r[0][c], r[1][c], r[2][c]];
    let (x, y, normal) = (axis(0), axis(1), axis(2));
    let mut hu = vec![0.0f32; 256 * 256];
    let mut planes = Vec::new();
    let mut frames = Vec::new();
    for m in 0..100 {
        let t = 0.5 * (m as f64 - 49.5);
        let origin: Vec3 =
            std::array::from_fn(|a| centre[a] + t * normal[a] - 127.5 * 0.5 * (x[a] + y[a]));
        let plane =
            ImagePlane::from_steps(origin, x.map(|v| v * 0.5), y.map(|v| v * 0.5), 256, 256)
                .expect("plane");
        reslice_ct_into(&ct, &plane, -1000.0, &mut hu).expect("reslice");
        // A soft-tissue window, −200 to 300 HU, as 8-bit B-mode stand-in.
        let frame: Vec<u8> = hu
            .iter()
            .map(|&v| ((v + 200.0) * (255.0 / 500.0)).clamp(0.0, 255.0) as u8)
            .collect();
        frames.push(frame);
        planes.push(plane);
    }
    let options = ReconstructOptions::default();
    let grid = sweep_grid(&planes, options.spacing_mm, options.max_voxels).expect("grid");
    let mut group = c.benchmark_group("us reconstruct 100 frames 256x256 chest CT");
    group.sample_size(10);
    group.bench_function("0.5 mm, hole filling r = 2", |b| {
        b.iter(|| {
            let pairs = planes.iter().zip(frames.iter().map(Vec::as_slice));
            reconstruct(pairs, &grid, None, &options).expect("reconstruct")
        })
    });
    group.finish();
}

criterion_group!(benches, reslice, simulate, reconstruct_sweep);
criterion_main!(benches);
