//! Integration tests for pinhole-pipeline (one test binary): every report on real data as
//! an `insta` snapshot (the report formats' contract), the published JSON Schemas equal
//! to the types, and typed reading back of written reports.

// Helpers outside `#[test]` functions unwrap too (`allow-unwrap-in-tests` covers only tests).
#![allow(clippy::unwrap_used)]

#[path = "../../../tests/support/shared.rs"]
mod shared;

mod ablation;
mod dicom_export;
mod intraop;
mod kidney;
mod live;
mod not_ct;
mod pictures;
mod reports;
mod schemas;
mod unnamed;
