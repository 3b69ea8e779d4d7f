//! A detached NRRD header (`.nhdr`) and its data file, read from a folder by
//! `pinhole_io::nrrd::read_with_fields`, give a volume or an error, never a panic, and no
//! more is allocated than the data file holds.
//!
//! Input: the header, the 8 bytes `DATA-->`, then the data file's bytes (written as
//! `image.raw` and `image.raw.gz` beside `image.nhdr`, so that `data file: image.raw`
//! and `data file: image.raw.gz` both resolve).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

const SEPARATOR: &[u8] = b"DATA--->";

fn folder() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("pinhole-fuzz-nrrd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz folder");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let (header, payload) = match data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        Some(at) => (&data[..at], &data[at + SEPARATOR.len()..]),
        None => (data, &[][..]),
    };
    let dir = folder();
    let nhdr = dir.join("image.nhdr");
    std::fs::write(&nhdr, header).expect("write the header");
    std::fs::write(dir.join("image.raw"), payload).expect("write the data");
    std::fs::write(dir.join("image.raw.gz"), payload).expect("write the data");
    if let Ok(image) = pinhole_io::nrrd::read_with_fields(&nhdr) {
        let _ = image.volume.grid().bounds_lps();
    }
});
