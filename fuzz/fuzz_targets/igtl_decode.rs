//! Any bytes given to the OpenIGTLink decoder give a message or an error, never a panic;
//! a decoded message re-encodes, and that decodes to the same message and bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinhole_igtl::{decode, encode, DecodeOptions};

fuzz_target!(|data: &[u8]| {
    // Without the CRC check, so that mutated bodies reach the body parsers.
    let lenient = DecodeOptions {
        verify_crc: false,
        max_body_bytes: 1 << 20,
    };
    let _ = decode(data, &DecodeOptions::default());
    if let Ok((message, used)) = decode(data, &lenient) {
        assert!(used <= data.len());
        let bytes = encode(&message).expect("a decoded message encodes");
        let (again, used) = decode(&bytes, &DecodeOptions::default()).expect("re-decodes");
        assert_eq!(used, bytes.len());
        // Debug text, not ==: NaN floats compare unequal to themselves.
        assert_eq!(format!("{again:?}"), format!("{message:?}"));
        assert_eq!(encode(&again).expect("encodes again"), bytes);
    }
});
