//! Endovenous laser ablation dose (`pinhole evla`): [`EvlaReport`].

use pinhole_ablation::vein::{evla_dose, EvlaDose};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::report::{unversioned, versioned_report, Report, DISCLAIMER, VERSION};

/// An EVLA treatment to dose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvlaRequest {
    pub power_w: f64,
    pub pullback_mm_s: f64,
    pub diameter_mm: f64,
    pub length_cm: f64,
}

/// How each dose quantity is computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EvlaFormulas {
    pub leed_j_cm: String,
    pub wall_fluence_j_cm2: String,
    pub total_energy_j: String,
    pub segment_volume_ml: String,
}

/// `pinhole evla --json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EvlaReport {
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    pub dose: EvlaDose,
    /// A dose outside the published span, with the source (empty: inside it).
    #[serde(default)]
    pub warnings: Vec<String>,
    pub formulas: EvlaFormulas,
    pub version: String,
    pub note: String,
}

versioned_report!(EvlaReport, "evla", 1);

/// Computes the dose.
pub fn run(request: &EvlaRequest) -> Result<EvlaReport> {
    let dose = evla_dose(
        request.power_w,
        request.pullback_mm_s,
        request.diameter_mm,
        request.length_cm,
    )?;
    Ok(EvlaReport {
        schema_version: EvlaReport::SCHEMA_VERSION,
        warnings: pinhole_ablation::vein::evla_warnings(&dose),
        dose,
        formulas: EvlaFormulas {
            leed_j_cm: "power_w / (pullback_mm_s / 10)".to_owned(),
            wall_fluence_j_cm2: "leed_j_cm / (pi * diameter_mm / 10)".to_owned(),
            total_energy_j: "leed_j_cm * length_cm".to_owned(),
            segment_volume_ml: "pi * (diameter_mm / 20)^2 * length_cm (cylinder)".to_owned(),
        },
        version: VERSION.to_owned(),
        note: DISCLAIMER.to_owned(),
    })
}

impl EvlaReport {
    /// The dose as the terminal shows it.
    pub fn to_text(&self) -> String {
        let d = &self.dose;
        format!(
            "EVLA: {} W, pullback {} mm/s, vein {} mm, {} cm\n  LEED                  {:>10.2} J/cm\n  energy per wall area  {:>10.2} J/cm2\n  total energy          {:>10.1} J\n  pullback time         {:>10.1} s\n  segment volume (foam) {:>10.2} mL (cylinder)\n{DISCLAIMER}\n",
            d.power_w,
            d.pullback_mm_s,
            d.diameter_mm,
            d.length_cm,
            d.leed_j_cm,
            d.wall_fluence_j_cm2,
            d.total_energy_j,
            d.treatment_time_s,
            d.segment_volume_ml
        )
    }
}
