//! Integration tests of pinhole-intraop.
mod deformable;
mod needle;
mod rigid;
