//! Panics that Pinhole contains on purpose are not findings.
//!
//! `pinhole_io::dicom` decodes compressed pixel data inside `catch_unwind` because
//! dicom-rs 0.10.1's JPEG 2000 adapter indexes out of bounds on some codestreams
//! (`crates/io/src/dicom/pixels.rs`; regression `dicom_regression_fuzzed_jpeg2000_does_not_abort`).
//! libfuzzer-sys's panic hook aborts on every panic, even one that is caught, so without
//! this the DICOM targets stop at that known, contained panic. The hook installed here
//! lets panics raised inside the wrapped decoder crates unwind silently to Pinhole's
//! `catch_unwind`; any other panic aborts at once as before, and a decoder panic that
//! Pinhole did not catch still aborts in libfuzzer-sys's own `catch_unwind`.

/// Crates that run only under Pinhole's `catch_unwind` around `decode_pixel_data_frame`.
const CONTAINED: [&str; 4] = [
    "/dicom-transfer-syntax-registry-",
    "/dicom-pixeldata-",
    "/jpeg2k-",
    "/jpeg-decoder-",
];

pub fn tolerate_contained_decoder_panics() {
    let abort_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let contained = info
            .location()
            .is_some_and(|at| CONTAINED.iter().any(|c| at.file().contains(c)));
        if !contained {
            abort_hook(info);
        }
    }));
}
