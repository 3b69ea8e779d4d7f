//! All of pinhole-io's integration tests, in one binary (linking is slow on 2 cores).

// Test helpers outside `#[test]` functions unwrap too (`allow-unwrap-in-tests` covers only
// the test functions themselves).
#![allow(clippy::unwrap_used)]

mod calibration;
mod colour;
#[path = "../../../tests/support/shared.rs"]
mod common;
mod dicom;
mod enhanced;
mod nifti;
mod nrrd;
mod refusals;
mod robustness;
mod sc;
mod seg;
mod seg_input;
mod sequence;
mod sr;
mod transforms;
mod us_frame;
mod vtk_surface;
mod writers;
mod xray_image;
