//! Any bytes given to the ultrasound frame reader (PNG, 2-D NIfTI or DICOM US incl.
//! multi-frame, sniffed by content) give frames or an error, never a panic; every frame
//! has the size the result says, and nothing is allocated because a header merely claims
//! it (a DICOM claiming a million frames in a few hundred bytes is refused first).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[path = "contained_panics.rs"]
mod contained_panics;
use pinhole_io::us_frame;

fuzz_target!(
    init: contained_panics::tolerate_contained_decoder_panics(),
    |data: &[u8]| {
        if let Ok(read) = us_frame::decode_us_frames(data, Path::new("fuzz.us")) {
            assert!(!read.frames.is_empty());
            for frame in &read.frames {
                assert_eq!(frame.len(), read.width * read.height);
            }
            if let Some(m) = read.image_to_lps {
                assert!(m.iter().flatten().all(|v| v.is_finite()));
            }
        }
    }
);
