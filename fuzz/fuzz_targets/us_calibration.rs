//! Any bytes given to the ultrasound calibration reader (PLUS configuration XML, 4×4
//! text, ITK transform) give an affine `ImageToProbe` or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = pinhole_io::calibration::parse_calibration(data) {
        let bottom = c.image_to_probe[3];
        let off = bottom[0].abs() + bottom[1].abs() + bottom[2].abs() + (bottom[3] - 1.0).abs();
        assert!(off <= 1e-9, "bottom row {bottom:?}");
    }
    // The XML path with other frame names, on any text.
    let text = String::from_utf8_lossy(data);
    let _ = pinhole_io::calibration::parse_plus_config(&text, "Probe", "Tracker");
});
