//! Any bytes given to the JPEG-LS decoder give an image or an error, never a panic; an
//! image holds `columns * rows * components` samples (one or three components) within
//! its precision, and no more samples than
//! the limit the caller gives (nothing allocated because a frame header claims it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinhole_io::dicom::jpegls;

const MAX_SAMPLES: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = jpegls::decode(data, MAX_SAMPLES) {
        assert!(image.components == 1 || image.components == 3);
        assert_eq!(
            image.samples.len(),
            image.columns * image.rows * image.components
        );
        assert!(image.samples.len() <= MAX_SAMPLES);
        let max_value = (1u32 << image.precision_bits) - 1;
        assert!(image.samples.iter().all(|&v| u32::from(v) <= max_value));
    }
});
