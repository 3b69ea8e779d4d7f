//! pinhole-register integration tests: simulated registrations on the real chest CT,
//! similarity and pose maths against numpy/scipy.

// Helpers outside `#[test]` functions unwrap too (`allow-unwrap-in-tests` covers only tests).
#![allow(clippy::unwrap_used)]

#[path = "../../../tests/support/shared.rs"]
mod shared;

mod reference;
mod simulated;
