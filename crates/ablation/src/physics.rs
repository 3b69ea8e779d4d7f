//! What limits real ablation zones, beyond linear Pennes: tissue water vaporisation near
//! 100 °C, temperature-dependent conductivity, and loss of microwave absorption in
//! dehydrated tissue. (Perfusion shut-down in coagulated tissue is
//! [`crate::bioheat::Settings::perfusion_stops_at_coagulation`].)
//!
//! Each effect, its numbers and their sources:
//!
//! * **Vaporisation** (enthalpy method): a voxel that would rise above
//!   [`Vaporisation::temperature_c`] (100 °C) stays there while its water boils off; the
//!   excess heat goes into latent heat until the voxel's water is gone. Capacity per
//!   voxel, as a temperature rise: water mass fraction × latent heat / c =
//!   0.78 × 2.257 MJ/kg / 3540 J/(kg·K) ≈ 497 K. Latent heat of water at 100 °C:
//!   2.257 MJ/kg (steam tables). Water mass fraction 0.78: a typical liver value
//!   (derived). Method: the effective-heat-capacity / enthalpy treatment of tissue water
//!   evaporation of Yang et al., IEEE Trans Biomed Eng 2007 ("Expanding the bioheat
//!   equation to include tissue internal water evaporation during heating") and Blauth
//!   et al. 2019 (arXiv 1910.12515, LITT in porcine liver: temperature plateaus at
//!   100 °C). Vapour transport and condensation are not modelled.
//! * **Conductivity** rises with temperature: ex-vivo porcine liver gained 45 % between
//!   35 °C and 90 °C (Guntur et al., Ultrasound Med Biol 2013, "Temperature-dependent
//!   thermal properties of ex vivo liver undergoing thermal ablation"); ex-vivo bovine
//!   liver rose up to 99 °C and fell above 100 °C ("Temperature dependence of thermal
//!   properties of ex vivo liver tissue up to ablative temperatures", 21–113 °C,
//!   Sapienza University of Rome). Model: k(T) =
//!   k₃₇·(1 + 0.0082·(T − 37 °C)), held at its 90 °C value above 90 °C (derived linear fit
//!   of the 45 %).
//! * **Dehydration** lowers microwave absorption: tissue dielectric properties fall
//!   steeply as water boils off (Ji & Brace, Phys Med Biol 2011, PMID 21791728: a
//!   sigmoidal temperature model "predicted substantial changes in heating pattern due to
//!   dehydration"). Model: a microwave source's absorption weight in a voxel scales with
//!   the voxel's remaining water (floor [`Physics::dry_absorption_fraction`] = 0.1,
//!   derived), and the antenna's power is renormalised over the pattern, so power moves
//!   outwards as the core dries. Laser sources keep their pattern (light transport in
//!   charred tissue is not modelled).
//!
//! Not modelled: lower heat capacity of dried tissue, vapour transport, charring, and
//! tissue contraction (Ji & Brace 2011 corrected their comparison for it).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bioheat::BODY_TEMPERATURE_C;
use crate::error::{invalid, AblationError};

/// Tissue water vaporisation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Vaporisation {
    /// Boiling temperature of tissue water, °C.
    pub temperature_c: f64,
    /// Latent heat of vaporisation of water, J/kg.
    pub latent_heat_j_kg: f64,
    /// Water mass fraction of the tissue (0..1).
    pub water_mass_fraction: f64,
}

/// Latent heat of vaporisation of water at 100 °C, J/kg (steam tables).
pub const WATER_LATENT_HEAT_J_KG: f64 = 2.257e6;

impl Vaporisation {
    /// 100 °C, 2.257 MJ/kg, water mass fraction 0.78.
    pub const LIVER: Vaporisation = Vaporisation {
        temperature_c: 100.0,
        latent_heat_j_kg: WATER_LATENT_HEAT_J_KG,
        water_mass_fraction: 0.78,
    };

    /// The latent heat a voxel holds, as the temperature rise it would otherwise cause
    /// in tissue of heat capacity `heat_capacity_j_kg_k`, K.
    pub fn capacity_k(&self, heat_capacity_j_kg_k: f64) -> f64 {
        self.water_mass_fraction * self.latent_heat_j_kg / heat_capacity_j_kg_k
    }
}

/// The nonlinear tissue physics of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Physics {
    /// Water vaporisation (None: temperatures are unbounded, linear Pennes).
    pub vaporisation: Option<Vaporisation>,
    /// Relative conductivity rise per K above 37 °C (0: constant conductivity).
    pub conductivity_rise_per_k: f64,
    /// Temperature above which conductivity stays at its value there, °C.
    pub conductivity_rise_until_c: f64,
    /// Microwave absorption of fully dried tissue relative to wet tissue (1: no
    /// dehydration effect). Only acts with `vaporisation`.
    pub dry_absorption_fraction: f64,
}

impl Physics {
    /// Linear Pennes: no vaporisation, constant properties (analytic verification).
    pub const LINEAR: Physics = Physics {
        vaporisation: None,
        conductivity_rise_per_k: 0.0,
        conductivity_rise_until_c: BODY_TEMPERATURE_C,
        dry_absorption_fraction: 1.0,
    };

    /// Liver with the sourced effects of the module docs.
    pub const TISSUE: Physics = Physics {
        vaporisation: Some(Vaporisation::LIVER),
        conductivity_rise_per_k: 0.0082,
        conductivity_rise_until_c: 90.0,
        dry_absorption_fraction: 0.1,
    };

    /// True when any effect makes the step depend on temperature.
    pub fn is_nonlinear(&self) -> bool {
        self.vaporisation.is_some() || self.conductivity_rise_per_k != 0.0
    }

    /// The largest conductivity factor k(T)/k₃₇ (bounds the stable time step).
    pub fn max_conductivity_factor(&self) -> f64 {
        self.conductivity_factor(self.conductivity_rise_until_c - BODY_TEMPERATURE_C)
    }

    /// k(T)/k₃₇ at a rise `rise_k` above 37 °C.
    pub fn conductivity_factor(&self, rise_k: f64) -> f64 {
        let capped = rise_k.clamp(
            0.0,
            (self.conductivity_rise_until_c - BODY_TEMPERATURE_C).max(0.0),
        );
        1.0 + self.conductivity_rise_per_k * capped
    }

    /// The Kirchhoff transform U(θ) = ∫₀^θ k(θ')/k₃₇ dθ' (K): with it, ∇·(k∇T) =
    /// k₃₇·∇²U, so the conservative heat flux of a temperature-dependent conductivity
    /// is the constant-conductivity stencil applied to U. θ ≤ 0 maps to itself.
    pub fn kirchhoff(&self, rise_k: f64) -> f64 {
        if rise_k <= 0.0 {
            return rise_k;
        }
        let beta = self.conductivity_rise_per_k;
        let knee = (self.conductivity_rise_until_c - BODY_TEMPERATURE_C).max(0.0);
        if rise_k <= knee {
            rise_k + 0.5 * beta * rise_k * rise_k
        } else {
            knee + 0.5 * beta * knee * knee + (1.0 + beta * knee) * (rise_k - knee)
        }
    }

    /// The absorption weight of a voxel holding `water_left` (1 wet .. 0 dry).
    pub fn absorption(&self, water_left: f64) -> f64 {
        let floor = self.dry_absorption_fraction;
        floor + (1.0 - floor) * water_left.clamp(0.0, 1.0)
    }

    pub(crate) fn validate(&self) -> Result<(), AblationError> {
        let bad = |what: &'static str, v: f64| invalid(what, format!("got {v}"));
        if let Some(v) = self.vaporisation {
            if !(v.temperature_c > BODY_TEMPERATURE_C && v.temperature_c.is_finite()) {
                return Err(bad(
                    "vaporisation temperature (must exceed 37 °C)",
                    v.temperature_c,
                ));
            }
            if !(v.latent_heat_j_kg > 0.0 && v.latent_heat_j_kg.is_finite()) {
                return Err(bad("latent heat", v.latent_heat_j_kg));
            }
            if !(0.0..=1.0).contains(&v.water_mass_fraction) {
                return Err(bad("water mass fraction (0..1)", v.water_mass_fraction));
            }
        }
        if !(self.conductivity_rise_per_k >= 0.0 && self.conductivity_rise_per_k < 0.1) {
            return Err(bad(
                "conductivity rise per K (0..0.1)",
                self.conductivity_rise_per_k,
            ));
        }
        if !self.conductivity_rise_until_c.is_finite() {
            return Err(bad(
                "conductivity rise limit",
                self.conductivity_rise_until_c,
            ));
        }
        if !(self.dry_absorption_fraction > 0.0 && self.dry_absorption_fraction <= 1.0) {
            return Err(bad(
                "dry absorption fraction (0..1]",
                self.dry_absorption_fraction,
            ));
        }
        Ok(())
    }
}

impl Default for Physics {
    fn default() -> Self {
        Physics::TISSUE
    }
}

/// Holds `theta` (rise above 37 °C, K) at the boiling rise while `latent_left` (K of
/// latent heat still to absorb) lasts; returns nothing, mutates both in place.
pub(crate) fn vaporise(theta: &mut [f32], latent_left: &mut [f32], boiling_rise_k: f32) {
    for (t, l) in theta.iter_mut().zip(latent_left.iter_mut()) {
        if *t > boiling_rise_k && *l > 0.0 {
            let absorbed = (*t - boiling_rise_k).min(*l);
            *t -= absorbed;
            *l -= absorbed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latent_capacity_of_liver_is_about_500_k() {
        let k = Vaporisation::LIVER.capacity_k(3540.0);
        assert!((k - 0.78 * 2.257e6 / 3540.0).abs() < 1e-9);
        assert!((490.0..505.0).contains(&k), "{k}");
    }

    #[test]
    fn vaporise_holds_boiling_until_the_water_is_gone() {
        let mut theta = [70.0f32, 70.0, 50.0];
        let mut latent = [100.0f32, 3.0, 100.0];
        vaporise(&mut theta, &mut latent, 63.0);
        // Enough water: back to 63 K, 7 K absorbed.
        assert_eq!((theta[0], latent[0]), (63.0, 93.0));
        // Only 3 K of water left: 67 K, dry.
        assert_eq!((theta[1], latent[1]), (67.0, 0.0));
        // Below boiling: untouched.
        assert_eq!((theta[2], latent[2]), (50.0, 100.0));
    }

    #[test]
    fn conductivity_rises_45_percent_by_90_c_then_stays() {
        let p = Physics::TISSUE;
        assert!((p.conductivity_factor(0.0) - 1.0).abs() < 1e-12);
        let at_90 = p.conductivity_factor(53.0);
        assert!((at_90 - 1.4346).abs() < 1e-3, "{at_90}");
        assert_eq!(p.conductivity_factor(80.0), at_90);
        assert_eq!(p.max_conductivity_factor(), at_90);
        assert_eq!(Physics::LINEAR.max_conductivity_factor(), 1.0);
    }

    #[test]
    fn kirchhoff_transform_integrates_the_conductivity_factor() {
        let p = Physics::TISSUE;
        // Numerical integral of k(θ)/k₃₇ against the closed form, below and above 90 °C.
        for rise in [0.0, 10.0, 53.0, 70.0, 150.0] {
            let n = 10_000;
            let h = rise / n as f64;
            let integral: f64 = (0..n)
                .map(|i| p.conductivity_factor((i as f64 + 0.5) * h) * h)
                .sum();
            assert!((p.kirchhoff(rise) - integral).abs() < 1e-6, "{rise}");
        }
        assert_eq!(Physics::LINEAR.kirchhoff(42.0), 42.0);
        assert_eq!(p.kirchhoff(-1.0), -1.0);
    }

    #[test]
    fn absorption_falls_to_the_floor_when_dry() {
        let p = Physics::TISSUE;
        assert_eq!(p.absorption(1.0), 1.0);
        assert!((p.absorption(0.0) - 0.1).abs() < 1e-12);
        assert!((p.absorption(0.5) - 0.55).abs() < 1e-12);
    }
}
