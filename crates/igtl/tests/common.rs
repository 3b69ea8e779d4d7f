//! Helpers shared by the integration tests: the golden OpenIGTLink messages from
//! `../shared/data/openigtlink` and the pyigtl reference script in `tests/py`.

#![allow(dead_code)]

use std::path::PathBuf;

#[path = "../../../tests/support/shared.rs"]
mod shared;
pub use shared::*;

/// The golden-vector folder (`$PINHOLE_DATA/openigtlink` or `../shared/data/openigtlink`).
pub fn golden_dir() -> PathBuf {
    let base = std::env::var_os("PINHOLE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"));
    let dir = base.join("openigtlink");
    assert!(dir.is_dir(), "missing real test data {}", dir.display());
    dir
}

/// Every golden `.bin` file, sorted by name, with its bytes.
pub fn golden_files() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    // The upstream set: 14 header v1, 6 header v2 and 3 header + body pairs.
    assert_eq!(files.len(), 23, "golden files: {:?}", names(&files));
    files
}

fn names(files: &[(String, Vec<u8>)]) -> Vec<&str> {
    files.iter().map(|(n, _)| n.as_str()).collect()
}

/// One golden file's bytes.
pub fn golden(name: &str) -> Vec<u8> {
    std::fs::read(golden_dir().join(name)).unwrap()
}

/// Big-endian readers at fixed offsets, independent of the decoder.
pub fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}
pub fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
pub fn be_f32(b: &[u8], at: usize) -> f32 {
    f32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}
