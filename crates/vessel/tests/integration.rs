//! All of pinhole-vessel's integration tests, in one binary (linking is slow on 2 cores).

// Test helpers outside `#[test]` functions unwrap too.
#![allow(clippy::unwrap_used)]

#[path = "../../../tests/support/shared.rs"]
mod shared;

mod chest;
mod phantom;
mod synthetic;
