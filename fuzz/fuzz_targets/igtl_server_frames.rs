//! The server's own OpenIGTLink frame reader (`pinhole-server`, `igtl_server::read_frame`,
//! async, tokio) over a stream in memory, through `pinhole_server::fuzzing::read_frames`:
//! the 58-byte header, BODY_SIZE checked against the limit before anything is allocated,
//! the body's buffer grown as bytes arrive and paid for from a shared budget, then each
//! frame's CRC and body decoded as the server's read loop does. `read_frames` asserts the
//! reader's guarantees (bytes consumed, BODY_SIZE, budget held and returned, no
//! timeout; see its module docs): a broken one is a panic.
//!
//! Input: the first byte picks the chunk size (its low 6 bits: 1 to 64 bytes per read),
//! the budget (bit 6: 1 MiB, or 100,000 bytes, which a body over it exceeds when its
//! buffer grows past the first 64 KiB) and the CRC check (bit 7 set: off, so that
//! bodies with a wrong CRC reach the decoder); the rest is the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinhole_server::fuzzing::{read_frames, FramesOptions};

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let options = FramesOptions {
        chunk_bytes: usize::from(first % 64) + 1,
        max_body_bytes: 1 << 20,
        budget_bytes: if first & 0x40 == 0 { 1 << 20 } else { 100_000 },
        verify_crc: first & 0x80 == 0,
    };
    if let Ok(read) = read_frames(stream, &options) {
        assert!(read.consumed_bytes <= stream.len());
    }
});
