//! Slicer segmentation writer (placeholder API; lands from the `writers` branch).

use std::path::Path;

use pinhole_volume::Volume;

use crate::labels::LabelTable;
use crate::{Error, ErrorKind, Result};

pub fn write_segmentation(
    path: &Path,
    _labels: &Volume<u16>,
    _table: &LabelTable,
    _gzip: bool,
) -> Result<()> {
    Err(Error::new(path, ErrorKind::Unsupported("seg.nrrd".into())))
}
