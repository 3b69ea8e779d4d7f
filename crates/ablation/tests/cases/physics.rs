//! Tissue physics with known answers: the latent-heat plateau at 100 °C (energy
//! conservation), conductivity rising with temperature, microwave absorption moving
//! outwards as tissue dries; and the regression of issue #17 (a Pennes run at 60 W for
//! 6 min reached 624–1105 °C).

use pinhole_ablation::bioheat::{solve, Problem, Settings, Source, Tissue};
use pinhole_ablation::physics::{Physics, Vaporisation};
use pinhole_ablation::zone::Applicator;

use crate::centred_grid;

/// Every voxel heated at 1 K/s with no conduction or perfusion, from 60 K above body
/// temperature: 3 s to reach 100 °C, a plateau while the latent heat (≈ 497 K) is
/// absorbed, then 1 K/s again. After 600 s: 37 + 60 + 600 − capacity °C.
#[test]
fn heated_tissue_plateaus_at_100_c_for_exactly_its_latent_heat() {
    let tissue = Tissue {
        name: "inert".into(),
        conductivity_w_m_k: 1e-12,
        perfusion_per_s: 0.0,
        ..Tissue::liver()
    };
    let rc = tissue.density_kg_m3 * tissue.heat_capacity_j_kg_k;
    let capacity_k = Vaporisation::LIVER.capacity_k(tissue.heat_capacity_j_kg_k);
    let grid = centred_grid(5, 1.0);
    let mut problem = Problem::homogeneous(grid.clone(), tissue);
    // 1 K/s in every voxel: ρc · 1 K/s · 1 mm³ per voxel.
    problem.sources.push(Source::UniformSphere {
        center_lps: [0.0; 3],
        radius_mm: 10.0,
        power_w: rc * 1e-9 * grid.voxel_count() as f64,
    });
    let run = |seconds: f64| {
        let settings = Settings {
            duration_s: seconds,
            max_dt_s: Some(0.5),
            initial_rise_k: 60.0,
            damage: false,
            ..Settings::default()
        };
        solve(&problem, &settings).unwrap()
    };
    let centre = [0.0; 3];
    // Mid-plateau: held at 100 °C (linear Pennes would give 37 + 60 + 300 = 397 °C).
    let t_300 = run(300.0).temperature_c.sample_nearest(centre).unwrap() as f64;
    assert!((t_300 - 100.0).abs() < 1e-3, "{t_300}");
    // After the water is gone: heating resumes, with exactly the latent heat missing.
    let t_600 = run(600.0).temperature_c.sample_nearest(centre).unwrap() as f64;
    let expected = 37.0 + 60.0 + 600.0 - capacity_k;
    assert!((t_600 - expected).abs() < 0.05, "{t_600} vs {expected}");
}

/// Higher conductivity in hot tissue spreads the heat: the same source gives a cooler
/// centre and a warmer rim than with constant conductivity.
#[test]
fn conductivity_rising_with_temperature_flattens_the_temperature_profile() {
    let grid = centred_grid(41, 1.0);
    let mut problem = Problem::homogeneous(grid, Tissue::liver());
    problem.sources.push(Source::UniformSphere {
        center_lps: [0.0; 3],
        radius_mm: 3.0,
        power_w: 4.0,
    });
    let run = |physics: Physics| {
        let settings = Settings {
            duration_s: 300.0,
            damage: false,
            physics,
            ..Settings::default()
        };
        solve(&problem, &settings).unwrap()
    };
    let conductive = Physics {
        vaporisation: None,
        dry_absorption_fraction: 1.0,
        ..Physics::TISSUE
    };
    let (linear, warm) = (run(Physics::LINEAR), run(conductive));
    let at = |s: &pinhole_ablation::bioheat::Solution, x: f64| {
        s.temperature_c.sample_nearest([x, 0.0, 0.0]).unwrap() as f64
    };
    assert!(at(&linear, 0.0) > 60.0, "{}", at(&linear, 0.0));
    assert!(at(&warm, 0.0) < at(&linear, 0.0) - 1.0);
    assert!(at(&warm, 12.0) > at(&linear, 12.0));
}

/// Microwave absorption falls where the tissue dried: the antenna's power moves outwards,
/// so the coagulated zone grows across the axis compared with tissue that keeps
/// absorbing when dry.
#[test]
fn drying_tissue_pushes_microwave_heating_outwards() {
    let grid = centred_grid(61, 1.0);
    let app = Applicator::new([0.0, 0.0, 8.0], [0.0, 0.0, 1.0]).unwrap();
    let mut problem = Problem::homogeneous(grid, Tissue::liver());
    problem.sources.push(Source::microwave(app, 40.0));
    let run = |dry_absorption_fraction: f64| {
        let settings = Settings {
            duration_s: 300.0,
            physics: Physics {
                dry_absorption_fraction,
                ..Physics::TISSUE
            },
            ..Settings::default()
        };
        solve(&problem, &settings).unwrap()
    };
    let (keeps, dries) = (run(1.0), run(0.1));
    // The dried core heats less: its peak is lower.
    assert!(dries.max_temperature_c < keeps.max_temperature_c - 5.0);
    let count = |s: &pinhole_ablation::bioheat::Solution| {
        s.ablated(pinhole_ablation::damage::Criterion::Arrhenius)
            .data()
            .iter()
            .filter(|&&b| b)
            .count()
    };
    assert!(
        count(&dries) > count(&keeps),
        "{} vs {}",
        count(&dries),
        count(&keeps)
    );
}

/// Issue #17: uncalibrated linear Pennes reached 624–1105 °C with a 60 W antenna. With
/// the tissue physics the hottest voxel stays in the range measured next to microwave
/// antennas (boiling, then dried tissue), and most of the heated tissue sits at the
/// 100 °C plateau instead of above it.
#[test]
fn a_60_w_antenna_no_longer_heats_tissue_to_1000_c() {
    let grid = centred_grid(71, 1.0);
    let app = Applicator::new([0.0, 0.0, 10.0], [0.0, 0.0, 1.0]).unwrap();
    let mut problem = Problem::homogeneous(grid, Tissue::liver());
    problem.sources.push(Source::microwave(app, 60.0));
    let settings = Settings {
        duration_s: 360.0,
        ..Settings::default()
    };
    let tissue = solve(&problem, &settings).unwrap();
    let linear = solve(
        &problem,
        &Settings {
            physics: Physics::LINEAR,
            ..settings.clone()
        },
    )
    .unwrap();
    assert!(
        linear.max_temperature_c > 500.0,
        "{}",
        linear.max_temperature_c
    );
    assert!(
        (100.0..=300.0).contains(&tissue.max_temperature_c),
        "{}",
        tissue.max_temperature_c
    );
}
