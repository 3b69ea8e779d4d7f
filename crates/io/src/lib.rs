//! Pinhole's medical image I/O.
//!
//! Every reader returns volumes in **LPS millimetres** (converting NIfTI's RAS at the
//! edge) and every error names the file and what was wrong; no reader panics on bad
//! input or allocates more than the file can hold.
//!
//! * [`nifti`]: NIfTI-1 and NIfTI-2, `.nii` / `.nii.gz`, read; NIfTI-1 write.
//! * [`nrrd`]: NRRD read and write (raw, gzip); [`segnrrd`]: Slicer `.seg.nrrd` writer.
//! * [`dicom`]: DICOM series from a folder (dicom-rs), JPEG 2000 / RLE / JPEG baseline.
//! * [`labels`]: label tables (TotalSegmentator v1/v2 built in, CSV, Slicer colour tables).
//! * [`markups`], [`vtk`], [`png`]: Slicer markups `.mrk.json`, legacy VTK polydata, PNG.
//! * [`open`]: format detection by content and extension.

pub mod dicom;
pub mod error;
pub mod image;
pub mod labels;
pub mod markups;
pub mod nifti;
pub mod nrrd;
pub mod open;
pub mod png;
pub(crate) mod raw;
pub mod segnrrd;
pub mod vtk;

pub use error::{Error, ErrorKind, Result};
pub use image::{AnyVolume, ScalarType};
