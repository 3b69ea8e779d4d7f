//! One error type for the case record: it always names the database file.

use std::path::{Path, PathBuf};

/// A case-record failure, with the database file it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct Error {
    pub path: PathBuf,
    pub kind: ErrorKind,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// [`crate::CaseRecord::open_existing`] found no record file.
    #[error("no case record here")]
    Missing,
    /// Not SQLite, or another application's SQLite database: left untouched.
    #[error("not a Pinhole case record: {0}")]
    NotARecord(String),
    /// Written by a newer Pinhole: refused rather than misread.
    #[error(
        "case record schema version {found} is newer than this build reads ({supported}); \
         refusing to open it: use a newer Pinhole"
    )]
    NewerSchema { found: i64, supported: i64 },
    #[error("SQLite: {0}")]
    Sqlite(Box<rusqlite::Error>),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A case, session or report id that the record does not hold.
    #[error("{0}")]
    NotFound(String),
    /// Data that cannot be recorded (non-finite time or matrix, …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A patient reference handed to a record not opened with patient data allowed.
    #[error(
        "a patient reference was given but this record keeps no patient data \
         (open it with patient data allowed to store one)"
    )]
    PatientDataNotAllowed,
    /// The session's writer thread stopped (its error), so nothing more is recorded.
    #[error("the session writer stopped: {0}")]
    WriterStopped(String),
    /// Writing an export file (the error names that file).
    #[error("export: {0}")]
    Export(Box<pinhole_io::Error>),
}

// Boxed: they are large, and every `Result` of this crate carries the error.
impl From<rusqlite::Error> for ErrorKind {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(Box::new(e))
    }
}

impl From<pinhole_io::Error> for ErrorKind {
    fn from(e: pinhole_io::Error) -> Self {
        Self::Export(Box::new(e))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(path: impl Into<PathBuf>, kind: impl Into<ErrorKind>) -> Self {
        Self {
            path: path.into(),
            kind: kind.into(),
        }
    }
}

/// Attaches the database path to errors of a lower layer.
pub(crate) trait WithPath<T> {
    fn with_path(self, path: &Path) -> Result<T>;
}

impl<T, E: Into<ErrorKind>> WithPath<T> for std::result::Result<T, E> {
    fn with_path(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::new(path, e))
    }
}
