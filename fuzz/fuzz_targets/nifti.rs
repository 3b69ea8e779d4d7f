//! Any bytes given to the NIfTI reader give a volume or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(volume) = pinhole_io::nifti::read_bytes(data) {
        // A decoded volume's geometry must be usable.
        let _ = volume.grid().bounds_lps();
    }
});
