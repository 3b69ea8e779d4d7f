//! Several DICOM files in one folder, assembled by the series reader (grouping by
//! SeriesInstanceUID, sorting along the normal, spacing and tilt checks, pixel decoding
//! and rescaling), give a volume or an error, never a panic.
//!
//! Input: up to 8 files separated by the 8 bytes `SLICE-->`; each is written to a
//! private folder (in `/dev/shm` when there is one) and the folder is read with
//! `pinhole_io::dicom::read_series`, then listed with `list_series`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "contained_panics.rs"]
mod contained_panics;
use pinhole_io::dicom::{list_series, read_series, DicomOptions};

const SEPARATOR: &[u8] = b"SLICE-->";
const MAX_FILES: usize = 8;

fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("pinhole-fuzz-dicom-series-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz folder");
        dir
    })
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut files = Vec::new();
    let mut rest = data;
    while files.len() + 1 < MAX_FILES {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                files.push(&rest[..at]);
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    files.push(rest);
    files
}

fuzz_target!(
    init: contained_panics::tolerate_contained_decoder_panics(),
    |data: &[u8]| {
        let dir = folder();
        let files = split(data);
        for i in 0..MAX_FILES {
            let path = dir.join(format!("slice{i}.dcm"));
            match files.get(i) {
                Some(bytes) => std::fs::write(&path, bytes).expect("write a slice"),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let _ = list_series(dir);
        if let Ok(series) = read_series(dir, &DicomOptions::default(), &mut |_, _| {}) {
            let grid = series.volume.grid();
            let _ = grid.bounds_lps();
            assert!(series.info.slices <= files.len());
        }
    }
);
