//! Any bytes given to the de-identifier (`pinhole dicom deidentify`, `dicom push
//! --deidentify`) give a de-identified data set that encodes, or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinhole_io::dicom::deidentify::{deidentify_bytes, DeidentifyKey};

#[path = "contained_panics.rs"]
mod contained_panics;

fuzz_target!(
    init: contained_panics::tolerate_contained_decoder_panics(),
    |data: &[u8]| {
        let key = DeidentifyKey::from_secret("fuzzing key");
        if let Ok(done) = deidentify_bytes(data, &key) {
            let _ = done.data_set_bytes();
        }
    }
);
