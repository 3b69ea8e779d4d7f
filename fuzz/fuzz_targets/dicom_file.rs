//! Any bytes given to the DICOM file decoder give pixels or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "contained_panics.rs"]
mod contained_panics;

fuzz_target!(
    init: contained_panics::tolerate_contained_decoder_panics(),
    |data: &[u8]| {
        let _ = pinhole_io::dicom::decode_file_bytes(data);
    }
);
