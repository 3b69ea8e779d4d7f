//! All of pinhole-ultrasound's integration tests, in one binary (linking is slow on 2 cores).

// Test helpers outside `#[test]` functions unwrap too (`allow-unwrap-in-tests` covers only
// the test functions themselves).
#![allow(clippy::unwrap_used)]

mod common;
mod in_plane;
mod orientation;
mod reconstruct;
mod simpleitk;
mod simulate;
