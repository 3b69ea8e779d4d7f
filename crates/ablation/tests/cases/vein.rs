//! EVLA dose by hand: 10 W at 1 mm/s (0.1 cm/s) → 100 J/cm; D = 5 mm → 100/(π·0.5) J/cm².

use pinhole_ablation::vein::{evla_dose, foam_volume_ml};

#[test]
fn evla_dose_figures_follow_their_definitions() {
    let d = evla_dose(10.0, 1.0, 5.0, 30.0).unwrap();
    assert!((d.leed_j_cm - 100.0).abs() < 1e-9);
    assert!((d.wall_fluence_j_cm2 - 63.661_977).abs() < 1e-5);
    assert!((d.total_energy_j - 3000.0).abs() < 1e-9);
    assert!((d.treatment_time_s - 300.0).abs() < 1e-9);
    // Cylinder r = 0.25 cm, 30 cm long: 5.890486 mL.
    assert!((d.segment_volume_ml - 5.890_486).abs() < 1e-5);
    assert!((foam_volume_ml(10.0, 1.0).unwrap() - std::f64::consts::PI * 0.25).abs() < 1e-12);
    assert!(evla_dose(0.0, 1.0, 5.0, 30.0).is_err());
    assert!(evla_dose(10.0, f64::NAN, 5.0, 30.0).is_err());
}
