//! One error type for every pipeline; each library's error passes through unchanged,
//! with the step that failed added as context (`Error::Context`).

use std::path::Path;

/// Why a pipeline failed. Display shows one line; `source()` walks the chain, so
/// `anyhow`'s `{:#}` prints `context: cause`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Io(#[from] pinhole_io::Error),
    #[error(transparent)]
    Grid(#[from] pinhole_volume::GridError),
    #[error(transparent)]
    DataLength(#[from] pinhole_volume::DataLengthMismatch),
    #[error(transparent)]
    IoKind(#[from] pinhole_io::ErrorKind),
    #[error(transparent)]
    Target(#[from] pinhole_volume::target::TargetError),
    #[error(transparent)]
    Geometry(#[from] pinhole_xray::GeometryError),
    #[error(transparent)]
    Needle(#[from] pinhole_plan_needle::PlanError),
    #[error(transparent)]
    Vessel(#[from] pinhole_vessel::VesselError),
    #[error(transparent)]
    Ablation(#[from] pinhole_ablation::AblationError),
    #[error(transparent)]
    Intraop(#[from] pinhole_intraop::IntraopError),
    #[error(transparent)]
    Register(#[from] pinhole_register::RegisterError),
    #[cfg(feature = "gpu")]
    #[error(transparent)]
    Gpu(#[from] pinhole_gpu::GpuError),
    /// A report file that could not be read back (`plan.json`, `route.json`).
    #[error("{path}: {reason}")]
    Report { path: String, reason: String },
    /// A file that could not be written.
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    /// A request the pipeline refuses, with the reason.
    #[error("{0}")]
    Invalid(String),
    /// What the pipeline was doing when `source` failed.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<Error>,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A refused request.
    pub fn invalid(reason: impl Into<String>) -> Self {
        Error::Invalid(reason.into())
    }

    /// An output file that could not be written.
    pub fn write(path: &Path, source: std::io::Error) -> Self {
        Error::Write {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Adds what was being done to an error (`.context(...)`, `.with_context(|| ...)`).
pub trait Context<T> {
    fn context(self, context: impl Into<String>) -> Result<T>;
    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: context.into(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: context().into(),
            source: Box::new(e.into()),
        })
    }
}

/// `Option` → refused request with a reason.
pub trait OrInvalid<T> {
    fn or_invalid(self, reason: impl FnOnce() -> String) -> Result<T>;
}

impl<T> OrInvalid<T> for Option<T> {
    fn or_invalid(self, reason: impl FnOnce() -> String) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(reason()))
    }
}
