//! One error type for every opener and writer: it always names the file.

use std::path::{Path, PathBuf};

/// An I/O failure, with the file (or folder) it concerns.
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
    #[error("not a medical image: {0}")]
    NotMedicalImage(String),
    #[error("truncated: {0}")]
    Truncated(String),
    #[error("header claims {claimed} bytes of voxel data but the file holds only {available}")]
    SizeExceedsFile { claimed: u64, available: u64 },
    #[error("unsupported data type: {0}")]
    UnsupportedDatatype(String),
    #[error("unsupported transfer syntax {uid} ({name})")]
    UnsupportedTransferSyntax { uid: String, name: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("invalid geometry: {0}")]
    Geometry(#[from] pinhole_volume::GridError),
    #[error("mixed series: {0}")]
    MixedSeries(String),
    #[error("invalid header: {0}")]
    InvalidHeader(String),
    #[error("DICOM: {0}")]
    Dicom(String),
    #[error("PNG: {0}")]
    Png(String),
    /// A registration / transform file that does not hold a usable affine transform.
    #[error("invalid transform: {0}")]
    InvalidTransform(String),
    /// A line of a text table (pose CSV) that cannot be read; `line` is 1-based.
    #[error("line {line}: {what}")]
    InvalidLine { line: usize, what: String },
    #[error("invalid table: {0}")]
    InvalidTable(String),
    /// Data handed to a writer that cannot be written (bad index, wrong length, NaN …).
    #[error("invalid input: {0}")]
    InvalidInput(String),
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

/// Attaches a path to errors of a lower layer.
pub(crate) trait WithPath<T> {
    fn with_path(self, path: &Path) -> Result<T>;
}

impl<T, E: Into<ErrorKind>> WithPath<T> for std::result::Result<T, E> {
    fn with_path(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::new(path, e))
    }
}

/// An error and its causes joined by `: ` (as `anyhow`'s `{:#}` prints them, a cause
/// already in the text not repeated): for messages that leave Rust (Python exceptions,
/// DICOM network events).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
