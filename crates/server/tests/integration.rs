//! pinhole-server tests: guidance geometry, registration, OpenIGTLink faults, pyigtl
//! interop, HTTP/WebSocket, and the chest CT against scipy.

#![allow(clippy::unwrap_used)]

mod common;

mod chest;
mod control_ct;
mod faults;
mod frame_reader;
mod geometry;
mod http;
mod interop;
mod ultrasound;
mod us_view;
