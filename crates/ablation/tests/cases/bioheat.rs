//! Pennes solver vs the analytic steady state of a uniformly heated sphere of radius a in a
//! perfused infinite medium (shared/reference/vessel_ablation.md §4c):
//! ΔT(r) = P·f·e^(−r/L)/(4πkr), f = 3(x cosh x − sinh x)/x³, x = a/L, L = √(k/(ω_b ρ_b c_b)).

use pinhole_ablation::bioheat::{solve, Problem, Settings, Source, Tissue, BLOOD};
use pinhole_ablation::physics::Physics;

use crate::centred_grid;

#[test]
fn steady_state_of_a_heated_sphere_matches_the_analytic_solution_within_1_percent() {
    // 81³ voxels at 1 mm; faces held at 37 °C, 40 mm (≈ 6.4 L) from the source, so the
    // boundary's effect at r = 20 mm stays ≈ e^(−40/6.3)·20/60 < 0.1 % (61³ gave 0.85 %).
    let grid = centred_grid(81, 1.0);
    let liver = Tissue::liver();
    let mut problem = Problem::homogeneous(grid.clone(), liver.clone());
    let (power_w, a_mm) = (5.0, 3.0);
    problem.sources.push(Source::UniformSphere {
        center_lps: [0.0; 3],
        radius_mm: a_mm,
        power_w,
    });
    // March to steady state: 3000 s ≈ 10 perfusion time constants (ρc/(ω_b ρ_b c_b) ≈ 291 s).
    let settings = Settings {
        duration_s: 3000.0,
        damage: false,
        physics: Physics::LINEAR,
        ..Settings::default()
    };
    let solution = solve(&problem, &settings).unwrap();
    assert!((solution.deposited_w - power_w).abs() < 1e-9);
    let dt_limit = problem.stable_dt_s().unwrap();
    assert!(solution.dt_s <= 0.9 * dt_limit + 1e-12);

    let k = liver.conductivity_w_m_k;
    let wb = liver.perfusion_per_s * BLOOD.density_kg_m3 * BLOOD.heat_capacity_j_kg_k;
    let l_m = (k / wb).sqrt();
    assert!((l_m * 1e3 - 6.3).abs() < 0.05, "perfusion length {l_m}");
    let x = a_mm * 1e-3 / l_m;
    let f = 3.0 * (x * x.cosh() - x.sinh()) / x.powi(3);
    let analytic = |r_mm: f64| {
        let r = r_mm * 1e-3;
        power_w * f * (-r / l_m).exp() / (4.0 * std::f64::consts::PI * k * r)
    };
    let mut worst: f64 = 0.0;
    // Along the axes and the face and body diagonals, r = 5..20 mm.
    let dirs: [[f64; 3]; 5] = [
        [1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 1.0, 0.0],
        [1.0, -1.0, 1.0],
    ];
    for d in dirs {
        let n = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        for step in 1..=20 {
            let p = [d[0] * step as f64, d[1] * step as f64, d[2] * step as f64];
            let r = n * step as f64;
            if !(5.0..=20.0).contains(&r) {
                continue;
            }
            let ours = solution.temperature_c.sample_nearest(p).unwrap() as f64 - 37.0;
            let err = (ours - analytic(r)).abs() / analytic(r);
            worst = worst.max(err);
            assert!(
                err <= 0.01,
                "r = {r:.2} mm along {d:?}: ours {ours:.4} K, analytic {:.4} K ({:.2} %)",
                analytic(r),
                err * 100.0
            );
        }
    }
    eprintln!("worst relative error r = 5..20 mm: {:.3} %", worst * 100.0);
}

#[test]
fn vessel_sinks_stay_at_body_temperature_and_cool_their_neighbourhood() {
    let grid = centred_grid(41, 1.0);
    let mut with_sink = Problem::homogeneous(grid.clone(), Tissue::liver());
    with_sink.sources.push(Source::UniformSphere {
        center_lps: [0.0; 3],
        radius_mm: 3.0,
        power_w: 3.0,
    });
    let without = with_sink.clone();
    // A 4 mm wide tube along z at x = 8 mm.
    for o in 0..grid.voxel_count() {
        let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
        if (p[0] - 8.0).powi(2) + p[1] * p[1] <= 4.0 {
            with_sink.sink[o] = true;
        }
    }
    let settings = Settings {
        duration_s: 300.0,
        ..Settings::default()
    };
    let a = solve(&with_sink, &settings).unwrap();
    let b = solve(&without, &settings).unwrap();
    assert_eq!(a.temperature_c.sample_nearest([8.0, 0.0, 0.0]), Some(37.0));
    let near_a = a.temperature_c.sample_nearest([5.0, 0.0, 0.0]).unwrap();
    let near_b = b.temperature_c.sample_nearest([5.0, 0.0, 0.0]).unwrap();
    let far_a = a.temperature_c.sample_nearest([-5.0, 0.0, 0.0]).unwrap();
    assert!(
        near_a < near_b - 1.0,
        "sink side {near_a} vs no sink {near_b}"
    );
    assert!(
        near_a < far_a,
        "sink side {near_a} vs opposite side {far_a}"
    );
}

#[test]
fn microwave_and_laser_sources_deposit_exactly_their_power() {
    use pinhole_ablation::zone::Applicator;
    let grid = centred_grid(41, 1.0);
    let app = Applicator::new([0.0, 0.0, 10.0], [0.0, 0.0, 1.0]).unwrap();
    for source in [Source::microwave(app, 30.0), Source::laser(app, 8.0)] {
        let w: f64 = source.deposit(&grid).unwrap().iter().map(|x| x.1).sum();
        let expected = match source {
            Source::Microwave { power_w, .. } | Source::LaserLine { power_w, .. } => power_w,
            Source::UniformSphere { power_w, .. } => power_w,
        };
        assert!((w - expected).abs() < 1e-9 * expected);
    }
    // The microwave hotspot lies 8 mm behind the tip (towards the entry, −z here).
    let dep = Source::microwave(app, 30.0).deposit(&grid).unwrap();
    let (o, _) = dep
        .iter()
        .copied()
        .fold((0, 0.0), |b, x| if x.1 > b.1 { x } else { b });
    let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
    assert!(
        (p[2] - 2.0).abs() < 0.6 && p[0].abs() < 0.6 && p[1].abs() < 0.6,
        "{p:?}"
    );
}

/// Temporal blocking (`steps_per_sweep`) is a schedule, not a scheme: with the same
/// coefficients it must give the per-step result bit for bit — on an odd-sized grid whose
/// thread ranges end mid-volume, with two tissues, a sink, a source near a z-face and
/// step counts that do not divide by the sweep length.
#[test]
fn sweeps_of_several_steps_reproduce_step_by_step_results_exactly() {
    use pinhole_volume::Grid;
    let grid = Grid::axis_aligned([23, 19, 37], [1.0; 3], [-11.0, -9.0, -18.0]).unwrap();
    let mut problem = Problem::homogeneous(grid.clone(), Tissue::liver());
    let mut muscle = Tissue::liver();
    muscle.conductivity_w_m_k = 0.45;
    muscle.perfusion_per_s = 0.0;
    problem.tissues.push(muscle);
    for o in 0..grid.voxel_count() {
        let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
        if p[0] > 4.0 {
            problem.tissue_of_voxel[o] = 1;
        }
        if (p[0] + 6.0).powi(2) + (p[2] - 3.0).powi(2) <= 2.0 {
            problem.sink[o] = true;
        }
    }
    problem.sources.push(Source::UniformSphere {
        center_lps: [1.0, 0.0, -15.0],
        radius_mm: 2.5,
        power_w: 6.0,
    });
    let run = |steps_per_sweep: usize, stop: bool| {
        let settings = Settings {
            duration_s: 60.0,
            cooldown_s: 13.0,
            perfusion_stops_at_coagulation: stop,
            steps_per_sweep,
            // Temporal blocking applies to linear physics only.
            physics: Physics::LINEAR,
            ..Settings::default()
        };
        solve(&problem, &settings).unwrap()
    };
    let reference = run(1, false);
    assert!(reference.steps % 4 != 0 && reference.max_temperature_c > 60.0);
    for per_sweep in [2, 4, 7] {
        let s = run(per_sweep, false);
        assert_eq!(s.temperature_c.data(), reference.temperature_c.data());
        assert_eq!(
            s.peak_temperature_c.data(),
            reference.peak_temperature_c.data()
        );
        assert_eq!(
            s.omega.as_ref().unwrap().data(),
            reference.omega.as_ref().unwrap().data()
        );
        assert_eq!(
            s.cem43_min.as_ref().unwrap().data(),
            reference.cem43_min.as_ref().unwrap().data()
        );
    }
    // With perfusion stopping at coagulation a voxel keeps its perfusion until the sweep
    // ends (≤ 3 steps here): a small, bounded difference.
    let (one, four) = (run(1, true), run(4, true));
    assert!(one.omega.as_ref().unwrap().data().iter().any(|&w| w >= 1.0));
    let worst = one
        .temperature_c
        .data()
        .iter()
        .zip(four.temperature_c.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst < 0.25,
        "perfusion-stop lag changed a temperature by {worst} K"
    );
    let ablated = |s: &pinhole_ablation::bioheat::Solution| {
        let omega = s.omega.as_ref().unwrap().data();
        omega.iter().filter(|&&w| w >= 1.0).count() as f64
    };
    let (n1, n4) = (ablated(&one), ablated(&four));
    assert!(
        (n1 - n4).abs() <= 0.01 * n1 + 1.0,
        "ablated voxels {n1} vs {n4}"
    );
}
