//! Thermal damage models: Arrhenius damage integral Ω and cumulative equivalent minutes at
//! 43 °C (CEM43). Every report names which one made a zone ([`Criterion`]).
//!
//! * Arrhenius: Ω(t) = ∫ A·exp(−Ea / (R·T(t))) dt, T in kelvin; tissue counts as ablated
//!   where Ω ≥ 1 (63 % of cells dead). Liver: A = 7.39e39 s⁻¹, Ea = 2.577e5 J/mol (the
//!   values of COMSOL's `microwave_cancer_therapy` application; see
//!   `shared/reference/vessel_ablation.md` §4b).
//! * CEM43 = ∫ R^(43 − T(t)) dt in minutes, R = 0.5 at T ≥ 43 °C and 0.25 below
//!   (Sapareto & Dewey 1984); ablated where CEM43 ≥ 240 min.

use serde::Serialize;

/// Molar gas constant, J/(mol·K) (CODATA 2018, exact).
pub const GAS_CONSTANT_J_MOL_K: f64 = 8.314_462_618;
/// 0 °C in kelvin.
pub const ZERO_CELSIUS_K: f64 = 273.15;
/// The CEM43 threshold for ablation, minutes.
pub const CEM43_THRESHOLD_MIN: f64 = 240.0;

/// Arrhenius parameters: frequency factor and activation energy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Arrhenius {
    pub frequency_factor_per_s: f64,
    pub activation_energy_j_mol: f64,
}

/// Liver (COMSOL `microwave_cancer_therapy`): A = 7.39e39 s⁻¹, Ea = 2.577e5 J/mol.
pub const LIVER_ARRHENIUS: Arrhenius = Arrhenius {
    frequency_factor_per_s: 7.39e39,
    activation_energy_j_mol: 2.577e5,
};

impl Arrhenius {
    /// dΩ/dt at `temperature_c`, s⁻¹. Computed as exp(ln A − Ea/RT) so it never
    /// overflows.
    #[inline]
    pub fn rate_per_s(&self, temperature_c: f64) -> f64 {
        let t_k = temperature_c + ZERO_CELSIUS_K;
        (self.frequency_factor_per_s.ln()
            - self.activation_energy_j_mol / (GAS_CONSTANT_J_MOL_K * t_k))
            .exp()
    }

    /// Closed form at constant temperature: Ω = A·t·exp(−Ea/RT).
    pub fn omega_at_constant(&self, temperature_c: f64, seconds: f64) -> f64 {
        self.rate_per_s(temperature_c) * seconds
    }

    /// Seconds at constant `temperature_c` until Ω reaches `omega`.
    pub fn seconds_to_omega(&self, temperature_c: f64, omega: f64) -> f64 {
        omega / self.rate_per_s(temperature_c)
    }
}

/// d(CEM43)/dt at `temperature_c`, in minutes per second.
#[inline]
pub fn cem43_rate_min_per_s(temperature_c: f64) -> f64 {
    let r: f64 = if temperature_c >= 43.0 { 0.5 } else { 0.25 };
    r.powf(43.0 - temperature_c) / 60.0
}

/// Closed form at constant temperature: CEM43 = (t / 60 s)·R^(43 − T) minutes.
pub fn cem43_at_constant(temperature_c: f64, seconds: f64) -> f64 {
    cem43_rate_min_per_s(temperature_c) * seconds
}

/// Which damage model decides whether a voxel is ablated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Criterion {
    /// Arrhenius Ω ≥ 1 (liver parameters).
    Arrhenius,
    /// CEM43 ≥ 240 min.
    Cem43,
}

impl Criterion {
    /// A sentence for reports.
    pub fn describe(self) -> String {
        match self {
            Criterion::Arrhenius => format!(
                "Arrhenius damage integral Omega >= 1 (liver A = {:e} 1/s, Ea = {:e} J/mol)",
                LIVER_ARRHENIUS.frequency_factor_per_s, LIVER_ARRHENIUS.activation_energy_j_mol
            ),
            Criterion::Cem43 => format!(
                "CEM43 >= {CEM43_THRESHOLD_MIN} min (R = 0.5 at >= 43 C, 0.25 below; Sapareto & Dewey 1984)"
            ),
        }
    }
}

impl std::str::FromStr for Criterion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "arrhenius" => Ok(Criterion::Arrhenius),
            "cem43" => Ok(Criterion::Cem43),
            other => Err(format!("unknown criterion {other:?} (arrhenius or cem43)")),
        }
    }
}
