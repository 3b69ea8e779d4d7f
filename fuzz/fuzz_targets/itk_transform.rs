//! Any text given to the registration parser (ITK `.tfm` or a 4×4 text matrix) gives an
//! affine matrix or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let itk = format!("#Insight Transform File V1.0\n{text}");
    for text in [text.as_ref(), itk.as_str()] {
        if let Ok(m) = pinhole_io::transform::parse_registration(text) {
            // The bottom row is checked to 1e-9 (text) or exact (ITK). Finiteness is not
            // asserted: an ITK matrix with a subnormal determinant inverts to infinities.
            let bottom = m[3];
            let off = bottom[0].abs() + bottom[1].abs() + bottom[2].abs() + (bottom[3] - 1.0).abs();
            assert!(off <= 1e-9, "bottom row {bottom:?}");
        }
    }
});
