//! DICOM series (placeholder API; the reader lands from the `dicom` branch).

use std::path::{Path, PathBuf};

use crate::{AnyVolume, Error, ErrorKind, Result};

#[derive(Debug, Clone)]
pub struct SeriesInfo {
    pub series_uid: String,
    pub description: String,
    pub modality: String,
    pub slices: usize,
    pub rows: usize,
    pub columns: usize,
    pub transfer_syntax: String,
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct DicomOptions {
    pub series_uid: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DicomSeries {
    pub volume: AnyVolume,
    pub info: SeriesInfo,
    pub warnings: Vec<String>,
    pub slice_thickness_mm: Option<f64>,
}

pub fn list_series(dir: &Path) -> Result<Vec<SeriesInfo>> {
    Err(Error::new(dir, ErrorKind::Unsupported("DICOM".into())))
}

pub fn read_series(
    dir: &Path,
    _options: &DicomOptions,
    _progress: &mut dyn FnMut(usize, usize),
) -> Result<DicomSeries> {
    Err(Error::new(dir, ErrorKind::Unsupported("DICOM".into())))
}

pub fn is_dicom_file(_path: &Path) -> bool {
    false
}
