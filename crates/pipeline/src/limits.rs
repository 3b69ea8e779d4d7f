//! Bounds on request parameters. A value outside them would exhaust memory, run for
//! hours or mean nothing physically (a 100 000-pixel detector, a 0.01 mm grid, a
//! 10⁹-minute ablation, a NaN angle), so every procedure refuses it up front with the
//! parameter and the limit named — the CLI, the server and the Python bindings alike.

use crate::error::{Error, Result};

/// A closed range a parameter must lie in, with its unit (for the message).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    /// The parameter as the user wrote it (`--size`).
    pub name: &'static str,
    pub min: f64,
    pub max: f64,
    pub unit: &'static str,
}

impl Bound {
    pub const fn new(name: &'static str, min: f64, max: f64, unit: &'static str) -> Self {
        Self {
            name,
            min,
            max,
            unit,
        }
    }

    /// Refuses a non-finite value or one outside `min..=max`.
    pub fn check(&self, value: f64) -> Result<()> {
        if value.is_finite() && (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        Err(Error::invalid(format!(
            "{} {value}{unit} is outside the accepted range {}..={}{unit}",
            self.name, self.min, self.max
        )))
    }

    /// [`Bound::check`] for counts.
    pub fn check_count(&self, value: usize) -> Result<()> {
        self.check(value as f64)
    }
}

/// DRR detector side: 4096² is already 64 Mi rays.
pub const DRR_SIZE_PX: Bound = Bound::new("--size", 1.0, 4096.0, "px");
/// DRR detector pitch.
pub const DRR_PIXEL_MM: Bound = Bound::new("--pixel-mm", 0.01, 25.0, "mm");
/// Trilinear samples per ray.
pub const DRR_SAMPLES: Bound = Bound::new("--samples", 1.0, 20_000.0, "");
/// C-arm angles (LAO/RAO, CRAN/CAUD); a real C-arm turns well within this.
pub const CARM_ANGLE_DEG: Bound = Bound::new("C-arm angle", -360.0, 360.0, "°");
/// Source-to-image distance.
pub const SID_MM: Bound = Bound::new("--sid", 100.0, 5000.0, "mm");
/// Needle candidate directions (the default is 40 000).
pub const CANDIDATES: Bound = Bound::new("--candidates", 1.0, 2_000_000.0, "");
/// Needle paths returned.
pub const TOP_PATHS: Bound = Bound::new("--top", 1.0, 100.0, "");
/// Ablation analysis / simulation grid (the CT is resampled to it).
pub const ABLATION_GRID_MM: Bound = Bound::new("--grid-mm", 0.25, 5.0, "mm");
/// Ablation heating time (device tables stop at 10–15 min).
pub const ABLATION_MINUTES: Bound = Bound::new("--minutes", 0.01, 60.0, "min");
/// Ablation generator power (microwave generators deliver up to ~200 W).
pub const ABLATION_POWER_W: Bound = Bound::new("--power", 0.1, 500.0, "W");
/// Ablation safety margin.
pub const ABLATION_MARGIN_MM: Bound = Bound::new("--margin-mm", 0.0, 30.0, "mm");
/// The minimal ablative margin asked for by `confirm ablation`.
pub const CONFIRM_MARGIN_MM: Bound = Bound::new("--margin-mm", 0.0, 30.0, "mm");
/// The organ margin of a focused CT registration.
pub const ORGAN_MARGIN_MM: Bound = Bound::new("--organ-margin-mm", 0.0, 100.0, "mm");
/// A sphere tumour's radius (the largest ablated tumours are ~5 cm across).
pub const TUMOR_RADIUS_MM: Bound = Bound::new("tumour radius", 0.1, 100.0, "mm");
/// Applicators when one zone cannot cover.
pub const MAX_APPLICATORS: Bound = Bound::new("--max-applicators", 1.0, 12.0, "");
/// Registration pyramid levels (voxel size of each level).
pub const REGISTER_LEVEL_MM: Bound = Bound::new("--levels-mm", 0.25, 32.0, "mm");

/// The similarity a registration must reach (NCC-type measures lie in −1..=1).
pub const MIN_SIMILARITY: Bound = Bound::new("--min-similarity", -1.0, 1.0, "");
/// Replayed poses per second (trackers send 20–60 Hz; the bench goes to 1 kHz).
pub const REPLAY_RATE_HZ: Bound = Bound::new("--rate", 0.01, 1000.0, "Hz");
/// A synthesized insertion's length.
pub const REPLAY_DURATION_S: Bound = Bound::new("--duration", 0.01, 3600.0, "s");

/// Checks the C-arm geometry shared by DRRs and registration: finite angles in range,
/// SID in range and the isocentre between source and detector.
pub fn check_carm(lao_deg: f64, cran_deg: f64, sid_mm: f64, sod_mm: f64) -> Result<()> {
    CARM_ANGLE_DEG.check(lao_deg)?;
    CARM_ANGLE_DEG.check(cran_deg)?;
    SID_MM.check(sid_mm)?;
    if !(sod_mm.is_finite() && sod_mm > 0.0 && sod_mm < sid_mm) {
        return Err(Error::invalid(format!(
            "--sod {sod_mm} mm must lie between 0 and --sid ({sid_mm} mm)"
        )));
    }
    Ok(())
}

/// Refuses a point with a NaN or infinite coordinate.
pub fn check_finite_point(name: &str, point: Option<[f64; 3]>) -> Result<()> {
    match point {
        Some(p) if !p.iter().all(|c| c.is_finite()) => Err(Error::invalid(format!(
            "{name} {p:?}: coordinates must be finite (LPS mm)"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_parameter_and_the_limit() {
        let err = DRR_SIZE_PX.check(100_000.0).unwrap_err().to_string();
        assert!(err.contains("--size 100000 px"), "{err}");
        assert!(err.contains("1..=4096 px"), "{err}");
        assert!(DRR_SIZE_PX.check(512.0).is_ok());
        assert!(DRR_SIZE_PX.check(f64::NAN).is_err());
        assert!(ABLATION_MARGIN_MM.check(0.0).is_ok());
    }

    #[test]
    fn carm_refuses_nan_and_an_isocentre_behind_the_detector() {
        assert!(check_carm(0.0, 0.0, 1020.0, 850.0).is_ok());
        assert!(check_carm(f64::NAN, 0.0, 1020.0, 850.0).is_err());
        assert!(check_carm(0.0, f64::INFINITY, 1020.0, 850.0).is_err());
        assert!(check_carm(0.0, 0.0, 1020.0, 1100.0).is_err());
    }
}
