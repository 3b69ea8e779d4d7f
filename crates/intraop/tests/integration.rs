//! Integration tests of pinhole-intraop.
mod needle;
mod rigid;
