//! Any text given to the Slicer markups (`.mrk.json`) parser gives markups or an error,
//! never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(markups) = pinhole_io::markups::parse_markups(Path::new("fuzz.mrk.json"), &text) {
        let _ = markups.len();
    }
});
