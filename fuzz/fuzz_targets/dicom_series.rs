//! Several DICOM files in one folder, assembled by the series reader (grouping by
//! SeriesInstanceUID, sorting along the normal, spacing and tilt checks, pixel decoding
//! and rescaling), give a volume or an error, never a panic.
//!
//! Input: up to 8 files separated by the 8 bytes `SLICE-->`; each is written to a
//! private folder (in `/dev/shm` when there is one) and the folder is read with
//! `pinhole_io::dicom::read_series`, then listed with `list_series`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "contained_panics.rs"]
mod contained_panics;
#[path = "scratch.rs"]
mod scratch;
use pinhole_io::dicom::{list_series, read_series, DicomOptions};

const SEPARATOR: &[u8] = b"SLICE-->";
const MAX_FILES: usize = 8;

fuzz_target!(
    init: contained_panics::tolerate_contained_decoder_panics(),
    |data: &[u8]| {
        let dir = scratch::folder("dicom-series");
        let files = scratch::split(data, SEPARATOR, MAX_FILES);
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
            // One slice per file, or per frame of an enhanced multi-frame file.
            assert!(series.info.files.len() <= files.len());
            assert_eq!(grid.dims()[2], series.info.slices);
        }
    }
);
