//! All of pinhole-dicomnet's integration tests, in one binary (linking is slow on 2 cores):
//! the listener against pynetdicom and faulty clients, the push (C-STORE SCU) against the
//! listener and pynetdicom, and both against Orthanc, a real PACS.

// Test helpers outside `#[test]` functions unwrap too (`allow-unwrap-in-tests` covers only
// the test functions themselves).
#![allow(clippy::unwrap_used)]

#[path = "../../../tests/support/shared.rs"]
mod shared;

mod common;
mod listener;
mod orthanc;
mod push;
mod query;
mod web;
