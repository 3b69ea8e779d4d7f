//! NRRD read and write (in progress).

use std::path::Path;

use crate::{AnyVolume, Error, ErrorKind, Result};

/// How to write a NRRD file.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// gzip-compress the voxel data.
    pub gzip: bool,
    /// Extra `key:=value` lines (e.g. Slicer segmentation metadata), written in order.
    pub key_values: Vec<(String, String)>,
}

/// Writes `volume` as a single-file NRRD in LPS space.
pub fn write(path: &Path, _volume: &AnyVolume, _options: &WriteOptions) -> Result<()> {
    Err(Error::new(path, ErrorKind::Unsupported("NRRD writer in progress".into())))
}
