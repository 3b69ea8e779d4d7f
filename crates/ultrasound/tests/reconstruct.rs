//! Sweep reconstruction on constructed cases with known answers: frames resliced from a
//! CT whose values are a linear function of LPS position (so every compounded mean has a
//! closed form), sparse sweeps for hole filling, an oblique fan sweep over a bright ball
//! on the patient's left, and refused input.

use pinhole_ultrasound::reconstruct::{STATE_EMPTY, STATE_FILLED, STATE_HIT};
use pinhole_ultrasound::{
    reconstruct, reslice, sweep_grid, ImagePlane, ReconstructError, ReconstructOptions,
    Reconstruction, ResliceOptions,
};
use pinhole_volume::{Grid, Vec3, Volume};

use crate::common::*;

/// The linear "CT" value at an LPS point: 20 + 2x + y + 0.5z (20–140 on the grid below).
fn linear(p: Vec3) -> f64 {
    20.0 + 2.0 * p[0] + p[1] + 0.5 * p[2]
}

/// A 40³ grid of 1 mm voxels at the origin, identity direction.
fn grid_40() -> Grid {
    Grid::axis_aligned([40; 3], [1.0; 3], [0.0; 3]).unwrap()
}

fn linear_ct() -> Volume<f32> {
    let grid = grid_40();
    let data = (0..grid.voxel_count())
        .map(|o| linear(grid.index_to_world(grid.index_of_offset(o).map(|x| x as f64))) as f32)
        .collect();
    Volume::new(grid, data).unwrap()
}

/// The CT resliced on `plane` (trilinear), rounded to `u8` as an 8-bit scanner would.
fn frame(ct: &Volume<f32>, plane: &ImagePlane, outside: f32) -> Vec<u8> {
    let options = ResliceOptions {
        outside_hu: outside,
    };
    let frame = reslice(ct, None, plane, &options).unwrap();
    frame
        .ct_hu
        .iter()
        .map(|&v| v.round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// An axial 40 × 40 frame of 0.5 mm pixels at height `z`, pixel centres at
/// x, y = 4.75, 5.25, …, 24.25: voxel k (5 ≤ k ≤ 24) gets the pixels at k ± 0.25 on both
/// axes, symmetric about its centre.
fn axial_plane(z: f64) -> ImagePlane {
    ImagePlane::from_steps([4.75, 4.75, z], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], 40, 40).unwrap()
}

fn run(planes: &[ImagePlane], frames: &[Vec<u8>], grid: &Grid, fill: bool) -> Reconstruction {
    let options = ReconstructOptions {
        fill_holes: fill,
        ..ReconstructOptions::default()
    };
    let pairs = planes.iter().zip(frames.iter().map(Vec::as_slice));
    reconstruct(pairs, grid, None, &options).unwrap()
}

fn in_box(ijk: [usize; 3], low: usize, high: usize) -> bool {
    ijk.iter().all(|&c| (low..=high).contains(&c))
}

#[test]
fn a_dense_parallel_sweep_hits_every_voxel_with_the_true_value() {
    let ct = linear_ct();
    // Planes at z = 4.75, 5.25, …, 24.25: 0.5 mm apart, pixels 0.5 mm.
    let planes: Vec<ImagePlane> = (0..40)
        .map(|m| axial_plane(4.75 + 0.5 * m as f64))
        .collect();
    let frames: Vec<Vec<u8>> = planes.iter().map(|p| frame(&ct, p, 0.0)).collect();
    let grid = grid_40();
    let rec = run(&planes, &frames, &grid, false);
    // Every voxel 5..=24 gets 2 × 2 × 2 pixels at offsets ±0.25 mm: their mean position is
    // the voxel's centre, where the linear function's mean equals its value. Each pixel
    // is off by at most 0.5 (u8 rounding; the trilinear reslice of a linear function is
    // exact), so the mean is within 0.5 of the truth, and the voxel's rounding adds 0.5.
    let bound = 0.5 + 0.5 + 1e-6;
    assert_eq!(rec.voxels_hit, 20 * 20 * 20);
    assert_eq!(rec.pixels_compounded, 40 * 40 * 40);
    assert_eq!(rec.pixels_outside, 0);
    assert_eq!(
        (rec.voxels_filled, rec.voxels_empty),
        (0, 40 * 40 * 40 - 8000)
    );
    for o in 0..grid.voxel_count() {
        let ijk = grid.index_of_offset(o);
        let (value, state) = (rec.volume.data()[o], rec.state.data()[o]);
        if in_box(ijk, 5, 24) {
            assert_eq!(state, STATE_HIT, "{ijk:?}");
            let truth = linear(grid.index_to_world(ijk.map(|x| x as f64)));
            let error = (f64::from(value) - truth).abs();
            assert!(error <= bound, "{ijk:?}: {value} vs {truth}");
        } else {
            assert_eq!((value, state), (0, STATE_EMPTY), "{ijk:?}");
        }
    }
}

#[test]
fn a_sparse_sweep_is_filled_between_planes_and_only_near_them() {
    let ct = linear_ct();
    // Planes 3 mm apart at voxel centres z = 5, 8, …, 23; hit voxels: x, y in 5..=24.
    let plane_z: Vec<usize> = (5..=23).step_by(3).collect();
    let planes: Vec<ImagePlane> = plane_z.iter().map(|&z| axial_plane(z as f64)).collect();
    let frames: Vec<Vec<u8>> = planes.iter().map(|p| frame(&ct, p, 0.0)).collect();
    let grid = grid_40();
    let is_hit = |ijk: [usize; 3]| {
        (5..=24).contains(&ijk[0]) && (5..=24).contains(&ijk[1]) && plane_z.contains(&ijk[2])
    };

    let rec = run(&planes, &frames, &grid, true);
    assert_eq!(rec.voxels_hit, 20 * 20 * 7);
    // Filled: every voxel within 2 voxels (cube) of a hit one: x, y in 3..=26, z in
    // 3..=25, less the hit ones.
    let reach = 24 * 24 * 23;
    assert_eq!(rec.voxels_filled, reach - 2800);
    assert_eq!(rec.voxels_empty, 40 * 40 * 40 - reach);
    for o in 0..grid.voxel_count() {
        let ijk = grid.index_of_offset(o);
        let (value, state) = (f64::from(rec.volume.data()[o]), rec.state.data()[o]);
        let truth = linear(grid.index_to_world(ijk.map(|x| x as f64)));
        if is_hit(ijk) {
            assert_eq!(state, STATE_HIT, "{ijk:?}");
            // 2 × 2 pixels at ±0.25 mm in the plane: as in the dense sweep.
            assert!(
                (value - truth).abs() <= 1.0 + 1e-6,
                "{ijk:?}: {value} vs {truth}"
            );
            continue;
        }
        let near = |c: usize, low: usize, high: usize| c + 2 >= low && c <= high + 2;
        let reached = near(ijk[0], 5, 24) && near(ijk[1], 5, 24) && near(ijk[2], 5, 23);
        if !reached {
            assert_eq!((value, state), (0.0, STATE_EMPTY), "{ijk:?}");
            continue;
        }
        assert_eq!(state, STATE_FILLED, "{ijk:?}");
        // The fill is the mean of the hit voxels in the 5³ cube, each within 1 of the
        // linear function at its centre, so it lies within 1 + 0.5 (rounding) of the
        // function at their mean position (computed here from the construction).
        let mut mean_position = [0.0; 3];
        let mut hits = 0.0;
        for dz in -2i64..=2 {
            for dy in -2i64..=2 {
                for dx in -2i64..=2 {
                    let n = [ijk[0] as i64 + dx, ijk[1] as i64 + dy, ijk[2] as i64 + dz];
                    if n.iter().all(|&c| (0..40).contains(&c)) && is_hit(n.map(|c| c as usize)) {
                        for a in 0..3 {
                            mean_position[a] += n[a] as f64;
                        }
                        hits += 1.0;
                    }
                }
            }
        }
        let expected = linear(mean_position.map(|s| s / hits));
        assert!(
            (value - expected).abs() <= 1.5 + 1e-6,
            "{ijk:?}: {value} vs {expected}"
        );
        // Between planes, away from the swept box's edges, the cube holds 5 × 5 voxels on
        // the planes 1 and 2 voxels away on either side: their mean height is half-way
        // (1 voxel · 0.5 mm⁻¹ · 0.5 = 0.25 off the truth).
        if in_box([ijk[0], ijk[1], 5], 7, 22) && (6..=22).contains(&ijk[2]) {
            assert!(
                (value - truth).abs() <= 1.75 + 1e-6,
                "{ijk:?}: {value} vs {truth}"
            );
        }
    }

    // Without hole filling the voxels between planes stay empty.
    let bare = run(&planes, &frames, &grid, false);
    assert_eq!((bare.voxels_hit, bare.voxels_filled), (2800, 0));
    assert_eq!(bare.voxels_empty, 40 * 40 * 40 - 2800);
    for (o, (&value, &state)) in bare.volume.data().iter().zip(bare.state.data()).enumerate() {
        let ijk = grid.index_of_offset(o);
        if !is_hit(ijk) {
            assert_eq!((value, state), (0, STATE_EMPTY), "{ijk:?}");
        }
    }
    // A neighbour count no 5³ cube can reach fills nothing.
    let strict = ReconstructOptions {
        min_neighbours: 126,
        ..ReconstructOptions::default()
    };
    let pairs = planes.iter().zip(frames.iter().map(Vec::as_slice));
    let none = reconstruct(pairs, &grid, None, &strict).unwrap();
    assert_eq!(none.voxels_filled, 0);
    assert_eq!(none.volume, bare.volume);
}

#[test]
fn masked_pixels_and_frames_of_different_sizes() {
    let ct = linear_ct();
    let grid = grid_40();
    // Dense sweep, mask dropping the pixels of columns i < 20 (x < 14.75 mm).
    let planes: Vec<ImagePlane> = (0..40)
        .map(|m| axial_plane(4.75 + 0.5 * m as f64))
        .collect();
    let frames: Vec<Vec<u8>> = planes.iter().map(|p| frame(&ct, p, 0.0)).collect();
    let mask: Vec<bool> = (0..40 * 40).map(|o| o % 40 >= 20).collect();
    let options = ReconstructOptions {
        fill_holes: false,
        ..ReconstructOptions::default()
    };
    let pairs = planes.iter().zip(frames.iter().map(Vec::as_slice));
    let rec = reconstruct(pairs, &grid, Some(&mask), &options).unwrap();
    assert_eq!(rec.voxels_hit, 10 * 20 * 20);
    assert_eq!(rec.pixels_compounded, 20 * 40 * 40);
    for o in 0..grid.voxel_count() {
        let ijk = grid.index_of_offset(o);
        let expect_hit = in_box(ijk, 5, 24) && ijk[0] >= 15;
        let state = rec.state.data()[o];
        assert_eq!(state == STATE_HIT, expect_hit, "{ijk:?}");
    }
    // Two frames of different sizes and spacing; part of the second lies beyond the grid.
    let small =
        ImagePlane::from_steps([10.0, 10.0, 10.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], 3, 2).unwrap();
    let big = ImagePlane::from_steps([30.0, 10.0, 20.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0], 20, 3)
        .unwrap();
    // `big`: x = 30, 32, 34 (j), z = 20, 22, …, 58 (i): z ≤ 38 inside (10 columns).
    let (small_pixels, big_pixels) = (vec![7u8; 6], vec![9u8; 60]);
    let frames = [
        (&small, small_pixels.as_slice()),
        (&big, big_pixels.as_slice()),
    ];
    let rec = reconstruct(frames, &grid, None, &options).unwrap();
    assert_eq!(rec.pixels_compounded, 6 + 30);
    assert_eq!(rec.pixels_outside, 30);
    assert_eq!(rec.voxels_hit, 36);
    assert_eq!(rec.volume.get([12, 11, 10]), Some(7));
    assert_eq!(rec.volume.get([34, 10, 38]), Some(9));
    assert_eq!(rec.state.get([34, 10, 39]), Some(STATE_EMPTY));
}

/// A 120³ CT of 1 mm voxels: background 100, a bright ball (220) on the patient's left
/// and a dark one (10) on the right, radius 8 mm.
const BRIGHT_LPS: Vec3 = [80.0, 55.0, 60.0];
const DARK_LPS: Vec3 = [40.0, 55.0, 60.0];

fn balls_ct() -> Volume<f32> {
    let grid = Grid::axis_aligned([120; 3], [1.0; 3], [0.0; 3]).unwrap();
    let data = (0..grid.voxel_count())
        .map(|o| {
            let p = grid.index_to_world(grid.index_of_offset(o).map(|x| x as f64));
            let within = |c: Vec3| (0..3).map(|a| (p[a] - c[a]).powi(2)).sum::<f64>() <= 64.0;
            if within(BRIGHT_LPS) {
                220.0
            } else if within(DARK_LPS) {
                10.0
            } else {
                100.0
            }
        })
        .collect();
    Volume::new(grid, data).unwrap()
}

/// Centroid (LPS) of the reconstructed voxels (hit or filled) whose value passes `select`.
fn centroid(rec: &Reconstruction, select: impl Fn(u8) -> bool) -> (Vec3, usize) {
    let grid = rec.volume.grid();
    let mut sum = [0.0; 3];
    let mut n = 0;
    for (o, (&v, &s)) in rec.volume.data().iter().zip(rec.state.data()).enumerate() {
        if s != STATE_EMPTY && select(v) {
            let p = grid.index_to_world(grid.index_of_offset(o).map(|x| x as f64));
            for a in 0..3 {
                sum[a] += p[a];
            }
            n += 1;
        }
    }
    (sum.map(|s| s / n.max(1) as f64), n)
}

#[test]
fn an_oblique_fan_sweep_puts_the_bright_ball_on_the_patients_left() {
    let ct = balls_ct();
    // The probe on the anterior side at C, its lateral axis turned 20° about S (towards
    // the patient's left and posterior); the beam (pixel y) points posteriorly. The fan
    // rocks the probe about its lateral axis from −30° to +30° in 0.5° steps.
    let contact = [60.0, 20.0, 60.0];
    let base = rotation([0.0, 0.0, 1.0], 20.0);
    let lateral = column(&base, 0);
    let planes: Vec<ImagePlane> = (0..=120)
        .map(|m| {
            let tilt = rotation(lateral, -30.0 + 0.5 * m as f64);
            let axes = mat3_mul(&tilt, &base);
            let (x, y) = (column(&axes, 0), column(&axes, 1));
            let origin = std::array::from_fn(|a| contact[a] - 79.5 * 0.5 * x[a]);
            let step = |v: Vec3| v.map(|c| 0.5 * c);
            ImagePlane::from_steps(origin, step(x), step(y), 160, 160).unwrap()
        })
        .collect();
    let frames: Vec<Vec<u8>> = planes.iter().map(|p| frame(&ct, p, 100.0)).collect();
    let grid = sweep_grid(&planes, 1.0, 1 << 24).unwrap();
    let rec = run(&planes, &frames, &grid, true);
    assert_eq!(rec.pixels_outside, 0);

    let (bright, n_bright) = centroid(&rec, |v| v > 160);
    let (dark, n_dark) = centroid(&rec, |v| v < 55);
    // A radius-8 ball holds about 2145 voxels of 1 mm³.
    for n in [n_bright, n_dark] {
        assert!((1700..2600).contains(&n), "ball voxels {n}");
    }
    let off = |p: Vec3, q: Vec3| (0..3).map(|a| (p[a] - q[a]).powi(2)).sum::<f64>().sqrt();
    // Within half a voxel: a pixel → voxel rounding off by half a voxel moves both by
    // about 0.7 mm.
    assert!(off(bright, BRIGHT_LPS) < 0.5, "bright centroid {bright:?}");
    assert!(off(dark, DARK_LPS) < 0.5, "dark centroid {dark:?}");
    // LPS +x is the patient's left.
    assert!(
        bright[0] > dark[0] + 35.0,
        "bright {bright:?} dark {dark:?}"
    );
}

#[test]
fn bad_input_is_refused_with_typed_errors() {
    let grid = grid_40();
    let plane = axial_plane(10.0);
    let pixels = vec![0u8; 1600];
    let short = vec![0u8; 1599];
    let options = ReconstructOptions::default();

    let frames = [(&plane, pixels.as_slice()), (&plane, short.as_slice())];
    assert_eq!(
        reconstruct(frames, &grid, None, &options),
        Err(ReconstructError::PixelCount {
            frame: 1,
            width_px: 40,
            height_px: 40,
            expected: 1600,
            found: 1599
        })
    );
    let mask = vec![true; 1601];
    let frames = [(&plane, pixels.as_slice())];
    assert_eq!(
        reconstruct(frames, &grid, Some(&mask), &options),
        Err(ReconstructError::MaskLength {
            frame: 0,
            expected: 1600,
            found: 1601
        })
    );
    for spacing_mm in [0.0, -0.5, f64::NAN] {
        let bad = ReconstructOptions {
            spacing_mm,
            ..options
        };
        assert!(matches!(
            reconstruct(frames, &grid, None, &bad),
            Err(ReconstructError::BadSpacing(_))
        ));
        assert!(matches!(
            sweep_grid(std::slice::from_ref(&plane), spacing_mm, 1 << 20),
            Err(ReconstructError::BadSpacing(_))
        ));
    }
    let bad = ReconstructOptions {
        min_neighbours: 0,
        ..options
    };
    assert_eq!(
        reconstruct(frames, &grid, None, &bad),
        Err(ReconstructError::ZeroMinNeighbours)
    );
    let bad = ReconstructOptions {
        hole_fill_radius_vox: 1000,
        ..options
    };
    assert_eq!(
        reconstruct(frames, &grid, None, &bad),
        Err(ReconstructError::HoleFillRadius(1000))
    );
    // 8·10⁹ voxels (64 GB of accumulators): refused before anything is allocated.
    let huge = Grid::axis_aligned([2000; 3], [0.1; 3], [0.0; 3]).unwrap();
    let error = reconstruct(frames, &huge, None, &options).unwrap_err();
    assert_eq!(
        error,
        ReconstructError::TooManyVoxels {
            voxels: 8_000_000_000,
            max_voxels: 1 << 28
        }
    );
    let message = error.to_string();
    assert!(
        message.contains("8000000000") && message.contains("268435456"),
        "{message}"
    );
    // A 1 m wide frame at 1 µm voxels: refused by `sweep_grid` too.
    let wide =
        ImagePlane::from_steps([0.0; 3], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], 101, 101).unwrap();
    assert!(matches!(
        sweep_grid(&[wide], 1e-3, 1 << 28),
        Err(ReconstructError::TooManyVoxels { max_voxels, .. }) if max_voxels == 1 << 28
    ));
    // No frames at all.
    let nothing: [(&ImagePlane, &[u8]); 0] = [];
    assert_eq!(
        reconstruct(nothing, &grid, None, &options),
        Err(ReconstructError::NoFrames)
    );
    assert_eq!(
        sweep_grid(&[], 1.0, 1 << 20),
        Err(ReconstructError::NoFrames)
    );
}
