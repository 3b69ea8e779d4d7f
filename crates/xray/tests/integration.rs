//! All of pinhole-xray's integration tests, in one binary (linking is slow on 2 cores).

// Test helpers outside `#[test]` functions unwrap too (`allow-unwrap-in-tests` covers only
// the test functions themselves).
#![allow(clippy::unwrap_used)]

mod common;
mod orientation;
mod peer;
mod phantom;
