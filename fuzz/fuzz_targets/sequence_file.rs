//! Any bytes given to the tracked-sequence reader (`.seq.mha` with LOCAL data, `.seq.nrrd`
//! attached) give a sequence or an error, never a panic, and no more is allocated than
//! the data holds. A sequence that reads and that the writer accepts reads back the same
//! after writing (raw and zlib).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinhole_io::sequence::{read_sequence_bytes, to_bytes, WriteOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(mut sequence) = read_sequence_bytes(data) else {
        return;
    };
    sequence.warnings.clear();
    for compress in [false, true] {
        if let Ok(bytes) = to_bytes(&sequence, &WriteOptions { compress }) {
            let mut again = read_sequence_bytes(&bytes).expect("written sequence reads back");
            again.warnings.clear();
            assert_eq!(again, sequence, "round trip (compress={compress})");
        }
    }
});
