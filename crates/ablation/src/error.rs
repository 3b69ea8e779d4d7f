//! Errors of the ablation planner, each naming what was wrong and where.

use pinhole_volume::GridError;

/// Why an ablation plan or simulation could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AblationError {
    #[error("device table {origin}: {message}")]
    DeviceTable { origin: String, message: String },
    #[error("device {name:?} is not in the device table (known: {known})")]
    UnknownDevice { name: String, known: String },
    #[error("device {name:?} has no zone for {power_w} W (table powers: {available} W)")]
    NoZoneForPower {
        name: String,
        power_w: f64,
        available: String,
    },
    #[error(
        "device {name:?} at {power_w} W: {minutes} min lies outside the table's {min_minutes}..{max_minutes} min"
    )]
    TimeOutsideTable {
        name: String,
        power_w: f64,
        minutes: f64,
        min_minutes: f64,
        max_minutes: f64,
    },
    #[error("invalid {what}: {message}")]
    InvalidParameter { what: &'static str, message: String },
    #[error("the tumour has no voxel on the analysis grid")]
    EmptyTumor,
    #[error("analysis grid: {0}")]
    Grid(#[from] GridError),
}

pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> AblationError {
    AblationError::InvalidParameter {
        what,
        message: message.into(),
    }
}

/// Checks a value is finite and positive.
pub(crate) fn positive(what: &'static str, value: f64) -> Result<f64, AblationError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(invalid(
            what,
            format!("must be finite and > 0, got {value}"),
        ))
    }
}
