//! Any bytes given as a picture to store as DICOM Secondary Capture (`pinhole dicom sc`,
//! `pinhole_io::png::decode_rgb8`): an RGB picture of the size the header says, or an
//! error, never a panic; no allocation beyond what the bytes could inflate to.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((width, height, rgb)) =
        pinhole_io::png::decode_rgb8(std::path::Path::new("fuzz.png"), data)
    {
        assert_eq!(rgb.len() as u64, 3 * u64::from(width) * u64::from(height));
    }
});
