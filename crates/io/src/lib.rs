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
//! * [`xray_image`]: X-ray images for registration (PNG, single DICOM file, 2-D NIfTI).
//! * [`us_frame`]: ultrasound frames (PNG, 2-D NIfTI with its geometry, DICOM US incl.
//!   multi-frame) as 8-bit grey.
//! * [`transform`]: registrations (ITK `.tfm` affine transforms, 4×4 text matrices).
//! * [`pose_csv`]: timed needle poses (replay CSV), read and written.
//! * [`sequence`]: tracked ultrasound sequences (PLUS `.seq.mha` / `.mhd`, `.seq.nrrd`).
//! * [`atomic`]: every writer writes a temporary file and renames it into place.
//! * [`calibration`]: ultrasound probe calibrations (`ImageToProbe`) from PLUS XML or 4×4.

pub mod atomic;
pub mod calibration;
pub mod dicom;
pub mod error;
pub mod image;
pub mod labels;
pub mod markups;
pub mod nifti;
pub mod nrrd;
pub mod open;
pub mod png;
pub mod pose_csv;
pub mod raw;
pub mod rescale;
pub mod segnrrd;
pub mod sequence;
pub mod transform;
pub mod us_frame;
pub mod vtk;
pub mod xray_image;

pub use error::{Error, ErrorKind, Result};
pub use image::{AnyVolume, ScalarType};
