//! Arrhenius Ω and CEM43 accumulated by the solver at constant temperature vs their
//! closed forms, and the thresholds of shared/reference/vessel_ablation.md §4b.

use pinhole_ablation::bioheat::{solve, Problem, Settings, Tissue};
use pinhole_ablation::damage::{cem43_at_constant, Criterion, LIVER_ARRHENIUS};

use crate::centred_grid;

#[test]
fn solver_damage_at_constant_temperature_matches_closed_forms_to_0_1_percent() {
    // Negligible conduction and no perfusion: the centre voxel keeps its initial rise.
    let tissue = Tissue {
        name: "inert".into(),
        conductivity_w_m_k: 1e-12,
        perfusion_per_s: 0.0,
        ..Tissue::liver()
    };
    let problem = Problem::homogeneous(centred_grid(9, 1.0), tissue);
    for (t_c, seconds) in [
        (43.0, 600.0),
        (45.0, 300.0),
        (50.0, 90.0),
        (55.0, 20.0),
        (60.0, 5.0),
    ] {
        let settings = Settings {
            duration_s: seconds,
            max_dt_s: Some(seconds / 500.0),
            initial_rise_k: t_c - 37.0,
            perfusion_stops_at_coagulation: false,
            physics: pinhole_ablation::physics::Physics::LINEAR,
            ..Settings::default()
        };
        let s = solve(&problem, &settings).unwrap();
        assert_eq!(s.steps, 500);
        let centre = [0.0; 3];
        let t_end = s.temperature_c.sample_nearest(centre).unwrap() as f64;
        assert!((t_end - t_c).abs() < 1e-4, "temperature drifted to {t_end}");
        let omega = s.omega.as_ref().unwrap().sample_nearest(centre).unwrap() as f64;
        let cem = s
            .cem43_min
            .as_ref()
            .unwrap()
            .sample_nearest(centre)
            .unwrap() as f64;
        // Closed forms written out independently of the library's helpers.
        let r_gas = 8.314_462_618;
        let omega_closed = 7.39e39 * seconds * (-2.577e5 / (r_gas * (t_c + 273.15))).exp();
        let r: f64 = if t_c >= 43.0 { 0.5 } else { 0.25 };
        let cem_closed = seconds / 60.0 * r.powf(43.0 - t_c);
        assert!(
            (omega / omega_closed - 1.0).abs() < 1e-3,
            "{t_c} C: Ω {omega} vs {omega_closed}"
        );
        assert!(
            (cem / cem_closed - 1.0).abs() < 1e-3,
            "{t_c} C: CEM43 {cem} vs {cem_closed}"
        );
        assert!(
            (LIVER_ARRHENIUS.omega_at_constant(t_c, seconds) / omega_closed - 1.0).abs() < 1e-12
        );
        assert!((cem43_at_constant(t_c, seconds) / cem_closed - 1.0).abs() < 1e-12);
    }
}

#[test]
fn times_to_damage_agree_with_the_reference_table() {
    // shared/reference/vessel_ablation.md §4b: Ω = 1 after 513 / 277 / 61 / 14 / 3.4 s at
    // 43 / 45 / 50 / 55 / 60 °C; CEM43 = 240 min after 4 h / 60 min / 112 s / 3.5 s.
    for (t_c, s_ref) in [
        (43.0, 513.0),
        (45.0, 277.0),
        (50.0, 61.0),
        (55.0, 14.0),
        (60.0, 3.4),
    ] {
        let s = LIVER_ARRHENIUS.seconds_to_omega(t_c, 1.0);
        assert!(
            (s / s_ref - 1.0).abs() < 0.03,
            "{t_c} C: {s} s vs {s_ref} s"
        );
    }
    for (t_c, s_ref) in [
        (43.0, 4.0 * 3600.0),
        (45.0, 3600.0),
        (50.0, 112.0),
        (55.0, 3.5),
    ] {
        let s = 240.0 / cem43_at_constant(t_c, 1.0);
        assert!(
            (s / s_ref - 1.0).abs() < 0.03,
            "{t_c} C: {s} s vs {s_ref} s"
        );
    }
    assert!(Criterion::Arrhenius.describe().contains("7.39e39"));
    assert!(Criterion::Cem43.describe().contains("240"));
}
