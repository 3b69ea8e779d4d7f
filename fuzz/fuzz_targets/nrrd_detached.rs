//! A detached NRRD header (`.nhdr`) and its data file, read from a folder by
//! `pinhole_io::nrrd::read_with_fields`, give a volume or an error, never a panic, and no
//! more is allocated than the data file holds.
//!
//! Input: the header, the 8 bytes `DATA-->`, then the data file's bytes (written as
//! `image.raw` and `image.raw.gz` beside `image.nhdr`, so that `data file: image.raw`
//! and `data file: image.raw.gz` both resolve).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "scratch.rs"]
mod scratch;

const SEPARATOR: &[u8] = b"DATA--->";

fuzz_target!(|data: &[u8]| {
    let parts = scratch::split(data, SEPARATOR, 2);
    let (header, payload) = (parts[0], parts.get(1).copied().unwrap_or_default());
    let dir = scratch::folder("nrrd");
    let nhdr = dir.join("image.nhdr");
    std::fs::write(&nhdr, header).expect("write the header");
    std::fs::write(dir.join("image.raw"), payload).expect("write the data");
    std::fs::write(dir.join("image.raw.gz"), payload).expect("write the data");
    if let Ok(image) = pinhole_io::nrrd::read_with_fields(&nhdr) {
        let _ = image.volume.grid().bounds_lps();
    }
});
