//! Any bytes given to the registration's X-ray image decoder (PNG, single-file DICOM or
//! 2-D NIfTI, sniffed by content; any frame, chosen by the first byte; the DICOM
//! geometry tags) give an image or an error, never a panic, and nothing is allocated
//! because a header merely claims it.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[path = "contained_panics.rs"]
mod contained_panics;
use pinhole_io::xray_image;

fuzz_target!(
    init: contained_panics::tolerate_contained_decoder_panics(),
    |data: &[u8]| {
        if let Ok(image) = xray_image::decode(data, Path::new("fuzz.img")) {
            assert_eq!(image.data.len(), image.width * image.height);
        }
        // A frame chosen by the first byte, and the geometry, through the frame reader.
        let frame = usize::from(data.first().copied().unwrap_or(0));
        if let Ok(image) = xray_image::decode_frame(data, Path::new("fuzz.img"), frame) {
            assert_eq!(image.data.len(), image.width * image.height);
        }
        if let Ok((image, geometry)) =
            xray_image::decode_dicom_frame(data, Path::new("fuzz.img"), frame)
        {
            assert_eq!(image.data.len(), image.width * image.height);
            assert!(frame < geometry.number_of_frames);
        }
        let _ = xray_image::decode_geometry(data, Path::new("fuzz.img"));
        // Each decoder on its own too, so that PNG and DICOM mutations reach them whatever
        // the first bytes say.
        for decode in [
            xray_image::decode_png,
            xray_image::decode_dicom,
            xray_image::decode_nifti,
        ] {
            if let Ok(image) = decode(data, Path::new("fuzz.img")) {
                assert_eq!(image.data.len(), image.width * image.height);
            }
        }
    }
);
