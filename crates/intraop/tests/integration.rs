//! Integration tests of pinhole-intraop.
mod deformable;
mod margin;
mod needle;
mod rigid;
