//! What the file-based fuzz targets share (included with `#[path]`, not a target): a
//! private scratch folder per process, and splitting one input into several files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `pinhole-fuzz-<name>-<pid>` in `/dev/shm` when there is one (else the temporary
/// folder), created once per process; `scripts/fuzz.sh` removes those of dead processes.
pub fn folder(name: &str) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("pinhole-fuzz-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz folder");
        dir
    })
}

/// `data` cut at each `separator`, into at most `max_parts` parts (the last keeps the rest).
#[allow(dead_code)] // not every target splits its input
pub fn split<'a>(data: &'a [u8], separator: &[u8], max_parts: usize) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < max_parts {
        match rest.windows(separator.len()).position(|w| w == separator) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + separator.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}
