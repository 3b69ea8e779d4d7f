//! A byte stream as an OpenIGTLink client sends it, read message after message the way
//! the server reads a connection: a 58-byte header, BODY_SIZE checked against the limit
//! before the body is read, then the CRC and the body decoded. Never a panic, and never
//! more bytes consumed than the stream holds.
//!
//! The server's own frame reader (`pinhole-server`, `igtl_server::read_frame`) is async
//! (tokio) and private; this target drives the synchronous twin in `pinhole-igtl`
//! (`read_message`, the same `Header::parse` + `Message::from_parts` the server calls)
//! over a reader that hands the bytes out in uneven chunks, as a socket does.
//!
//! Input: the first byte picks the chunk size (1 to 64 bytes), the rest is the stream.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use pinhole_igtl::{crc64, read_message, DecodeOptions, Header, Message, HEADER_SIZE};

/// Hands out at most `chunk` bytes per read, like a socket with small segments.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    for verify_crc in [true, false] {
        let opts = DecodeOptions {
            verify_crc,
            max_body_bytes: 1 << 20,
        };
        let mut reader = Chunked {
            data: stream,
            chunk,
        };
        // At most one message per 58 bytes: the loop ends.
        for _ in 0..=stream.len() / HEADER_SIZE {
            let before = reader.data.len();
            let result = read_message(&mut reader, &opts);
            assert!(reader.data.len() <= before);
            if result.is_err() && reader.data.len() == before {
                break;
            }
        }
    }
    // The server's path: header, CRC compared by the caller, then the body decoded.
    if let Some(head) = stream.get(..HEADER_SIZE) {
        if let Ok(header) = Header::parse(head) {
            let body = &stream[HEADER_SIZE..];
            let body = &body[..body
                .len()
                .min(usize::try_from(header.body_size).unwrap_or(usize::MAX))];
            let _ = crc64(body) == header.crc;
            let _ = Message::from_parts(&header, body);
        }
    }
});
