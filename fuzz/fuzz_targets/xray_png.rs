//! Any bytes given to the registration's PNG X-ray decoder give an image or an error,
//! never a panic (the decoder's limits refuse sizes a header merely claims).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = pinhole_register::input::decode_png(Path::new("fuzz.png"), data) {
        assert_eq!(image.data.len(), image.width * image.height);
    }
});
