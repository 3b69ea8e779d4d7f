//! Any bytes given to the NRRD reader give a volume or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = pinhole_io::nrrd::read_bytes(data) {
        let _ = image.volume.grid().bounds_lps();
    }
});
