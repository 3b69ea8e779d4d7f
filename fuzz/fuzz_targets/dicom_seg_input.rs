//! Any bytes given as a DICOM Segmentation label input (`--labels seg.dcm`, `pinhole info
//! seg.dcm`) give a label map or an error, never a panic, and never allocate more than
//! the input justifies.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "contained_panics.rs"]
mod contained_panics;

fuzz_target!(
    init: contained_panics::tolerate_contained_decoder_panics(),
    |data: &[u8]| {
        let _ = pinhole_io::dicom::seg_input::decode_segmentation_bytes(data);
    }
);
