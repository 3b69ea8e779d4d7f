//! All of pinhole-io's integration tests, in one binary (linking is slow on 2 cores).

mod common;
mod dicom;
mod nifti;
mod nrrd;
mod robustness;
mod writers;
