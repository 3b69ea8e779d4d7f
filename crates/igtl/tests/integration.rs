//! All of pinhole-igtl's integration tests, in one binary (linking is slow on 2 cores).

// Test helpers outside `#[test]` functions unwrap too (`allow-unwrap-in-tests` covers only
// the test functions themselves).
#![allow(clippy::unwrap_used)]

mod common;
mod faults;
mod golden;
mod pyigtl;
mod roundtrip;
