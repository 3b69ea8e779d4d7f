//! Pinhole's procedures as library calls, shared by the CLI, the guidance server, the
//! demo and the Python bindings: each module takes a typed request, returns a typed,
//! versioned report (`serde`, a JSON Schema in `docs/schemas/`) with the pictures and
//! geometry that go with it, and writes them. Not for clinical use.
//!
//! | module | request → outcome | files |
//! |---|---|---|
//! | [`info`] | a volume → [`info::VolumeReport`] | (stdout) |
//! | [`needle`] | [`needle::NeedleRequest`] → [`needle::NeedleReport`] | `plan.json`, `paths.mrk.json`, `skin_access.vtk`, `best.png` |
//! | [`vessel`] | [`vessel::RouteRequest`] → [`vessel::RouteReport`]; [`vessel::MeasureRequest`] → [`vessel::MeasureReport`] | `route.json`, `route.vtk`, `route.mrk.json`, `route.png`; `measurements.json`, `centerline.vtk` |
//! | [`ablation`] | [`ablation::AblationRequest`] → [`ablation::AblationReport`] | `ablation.json`, `zone.seg.nrrd`, `zone.vtk`, `zone.png` |
//! | [`register`] | [`register::RegistrationRequest`] → [`register::RegistrationReport`] | `pose.json`, `overlay.png` |
//! | [`drr`] | [`drr::DrrRequest`] → a picture and line integrals | PNG, NIfTI |
//! | [`evla`] | [`evla::EvlaRequest`] → [`evla::EvlaReport`] | (stdout) |
//! | [`control_ct`] | [`control_ct::CtRegistrationRequest`] → [`control_ct::CtRegistrationReport`] | `ct_registration.json`, `control_to_planning.tfm`, `registration.png` |
//! | [`confirm`] | [`confirm::ConfirmRequest`] → [`confirm::ConfirmationReport`] | `confirmation.json`, `margin.vtk`, `margin.png`, `zone_registered.seg.nrrd`, `post_to_pre.tfm` |
//! | [`verify`] | [`verify::NeedleCheckRequest`] → [`verify::NeedleCheckReport`] | `needle_check.json`, `needle_check.png`, `needle_check.mrk.json`, `control_to_planning.tfm` |
//! | [`dicom_export`] | [`dicom_export::SegExportRequest`] → [`dicom_export::SegExportReport`] | `segmentation.dcm` (DICOM SEG of the source series), `dicom_seg.json` |
//! | [`session`] | data + a plan → a live [`pinhole_guidance::Session`] | |
//!
//! Reports are written with sorted keys ([`report::write_json`]) and read back as types
//! ([`report::Report::read`]); a file from a newer format version is refused.
//! Long steps and warnings go to an [`observe::Observer`].

pub mod ablation;
pub mod confirm;
pub mod control_ct;
pub mod deidentify;
pub mod demo;
pub mod dicom_export;
pub mod drr;
pub mod error;
pub mod evla;
pub mod figures;
pub mod info;
pub mod inputs;
pub mod limits;
pub mod needle;
pub mod observe;
pub mod outputs;
pub mod provenance;
pub mod register;
pub mod report;
pub mod schemas;
pub mod session;
pub mod tracks;
pub mod verify;
pub mod vessel;

pub use error::{Error, Result};
pub use observe::{Observer, Quiet};
pub use report::{Report, DISCLAIMER};
