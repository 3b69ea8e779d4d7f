//! Endovenous laser ablation (EVLA) dose and foam sclerotherapy volume.
//!
//! * LEED (linear endovenous energy density), J/cm = power (W) / pullback speed (cm/s).
//! * Energy per vein-wall area, J/cm² = LEED / (π·D), D the vein diameter in cm (the
//!   inner wall of a cylinder of length 1 cm has area π·D cm²).
//! * Total energy for a treated length L (cm), J = LEED · L; treatment time = L / speed.
//! * Foam volume to fill a segment, modelled as a cylinder: V (mL = cm³) = π·(D/2)²·L.
//!
//! Doses reported in the literature (shared/reference/vessel_ablation.md §4f): 1470 nm
//! radial fibres closed veins at 20–30 J/cm and 5 W against 80 J/cm and 12 W at 980 nm
//! (PMID 19628516); Malskat 2014 argues power and speed matter more than J/cm. No single
//! threshold decides a treatment; [`evla_warnings`] flags a LEED outside the span of
//! those published doses (below 20 J/cm, or above 100 J/cm, well over the 80 J/cm of the
//! 980 nm arm).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{positive, AblationError};

/// Dose figures of one EVLA pullback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EvlaDose {
    pub power_w: f64,
    pub pullback_mm_s: f64,
    pub diameter_mm: f64,
    pub length_cm: f64,
    /// J/cm.
    pub leed_j_cm: f64,
    /// J/cm² of inner vein wall.
    pub wall_fluence_j_cm2: f64,
    /// J over the whole length.
    pub total_energy_j: f64,
    /// s to pull back over the whole length.
    pub treatment_time_s: f64,
    /// mL of foam (or sclerosant) to fill the segment as a cylinder.
    pub segment_volume_ml: f64,
}

/// Lowest LEED in the published comparison (1470 nm, radial fibre), J/cm.
pub const EVLA_LEED_PUBLISHED_MIN_J_CM: f64 = 20.0;
/// LEED above which a dose is far beyond the published ones (80 J/cm at 980 nm), J/cm.
pub const EVLA_LEED_PUBLISHED_MAX_J_CM: f64 = 100.0;
/// Where the LEED span comes from.
pub const EVLA_LEED_SOURCE: &str = "20-30 J/cm at 1470 nm with a radial fibre vs 80 J/cm at 980 nm closed veins (PMID 19628516; reference/vessel_ablation.md section 4f)";

/// Vein diameter from which EVLA is at or beyond what some clinicians take as its upper
/// limit, mm.
pub const EVLA_LARGE_VEIN_MM: f64 = 15.0;
/// Where the large-vein limit comes from.
pub const EVLA_LARGE_VEIN_SOURCE: &str = "15 mm has been recommended as the upper limit for EVLA by some clinicians; 334 of 1,929 great saphenous veins of >= 15 mm were occluded with a multi-pass technique (Dabbs et al., Phlebology 2017, 'smile sign')";
/// Vein diameter below which the vein is narrower than the introducer sheath a laser
/// fibre is passed through (4-5 F, 1.3-1.7 mm; derived), mm.
pub const EVLA_SMALL_VEIN_MM: f64 = 2.0;

/// What a user should know about a dose or a vein outside the published span (empty:
/// inside it). Physically impossible input (zero, negative, non-finite) is refused by
/// [`evla_dose`] instead.
pub fn evla_warnings(dose: &EvlaDose) -> Vec<String> {
    let leed = dose.leed_j_cm;
    let mut warnings = Vec::new();
    if leed < EVLA_LEED_PUBLISHED_MIN_J_CM {
        warnings.push(format!(
            "LEED {leed:.1} J/cm is below the published doses ({EVLA_LEED_SOURCE}): the vein may not close"
        ));
    } else if leed > EVLA_LEED_PUBLISHED_MAX_J_CM {
        warnings.push(format!(
            "LEED {leed:.1} J/cm is far above the published doses ({EVLA_LEED_SOURCE}): risk of perforation, burns and nerve injury; check power and pullback speed"
        ));
    }
    let d = dose.diameter_mm;
    if d >= EVLA_LARGE_VEIN_MM {
        warnings.push(format!(
            "vein diameter {d:.1} mm is at or above {EVLA_LARGE_VEIN_MM} mm ({EVLA_LARGE_VEIN_SOURCE}): expect incomplete wall contact; the J/cm2 of wall is low for the LEED"
        ));
    } else if d < EVLA_SMALL_VEIN_MM {
        warnings.push(format!(
            "vein diameter {d:.1} mm is below {EVLA_SMALL_VEIN_MM} mm, narrower than the 4-5 F introducer sheath (1.3-1.7 mm) a laser fibre is passed through (derived): check the measurement"
        ));
    }
    warnings
}

/// EVLA dose for `power_w` at `pullback_mm_s` in a vein of `diameter_mm` over `length_cm`.
pub fn evla_dose(
    power_w: f64,
    pullback_mm_s: f64,
    diameter_mm: f64,
    length_cm: f64,
) -> Result<EvlaDose, AblationError> {
    positive("power_w", power_w)?;
    positive("pullback_mm_s", pullback_mm_s)?;
    positive("diameter_mm", diameter_mm)?;
    positive("length_cm", length_cm)?;
    let speed_cm_s = pullback_mm_s / 10.0;
    let diameter_cm = diameter_mm / 10.0;
    let leed_j_cm = power_w / speed_cm_s;
    Ok(EvlaDose {
        power_w,
        pullback_mm_s,
        diameter_mm,
        length_cm,
        leed_j_cm,
        wall_fluence_j_cm2: leed_j_cm / (std::f64::consts::PI * diameter_cm),
        total_energy_j: leed_j_cm * length_cm,
        treatment_time_s: length_cm / speed_cm_s,
        segment_volume_ml: foam_volume_ml(diameter_mm, length_cm)?,
    })
}

/// Volume of a cylindrical vein segment, mL: π·(D/2)²·L with D in cm and L in cm.
pub fn foam_volume_ml(diameter_mm: f64, length_cm: f64) -> Result<f64, AblationError> {
    positive("diameter_mm", diameter_mm)?;
    positive("length_cm", length_cm)?;
    let r_cm = diameter_mm / 20.0;
    Ok(std::f64::consts::PI * r_cm * r_cm * length_cm)
}
