//! Errors of the intraprocedural-CT library, each naming what was wrong.

/// Why a control scan could not be registered, searched or measured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IntraopError {
    #[error("invalid {what}: {message}")]
    InvalidParameter { what: &'static str, message: String },
    #[error("{0}")]
    Grid(#[from] pinhole_volume::GridError),
}

pub(crate) fn invalid(what: &'static str, message: impl Into<String>) -> IntraopError {
    IntraopError::InvalidParameter {
        what,
        message: message.into(),
    }
}
