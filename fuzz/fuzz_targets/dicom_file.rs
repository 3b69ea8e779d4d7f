//! Any bytes given to the DICOM file decoder give pixels or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pinhole_io::dicom::decode_file_bytes(data);
});
