//! CLI tests (in progress)
