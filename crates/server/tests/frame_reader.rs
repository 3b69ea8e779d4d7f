//! The server's own OpenIGTLink frame reader (`igtl_server::read_frame`) over bytes in
//! memory, through `pinhole_server::fuzzing::read_frames` (what the fuzz target
//! `igtl_server_frames` runs; it asserts its invariants itself: bytes consumed, BODY_SIZE,
//! budget held and returned).

use pinhole_igtl::{
    encode, Body, Coordinate, Endian, IgtlError, ImageBody, Message, ScalarType, Transform,
    HEADER_SIZE,
};
use pinhole_server::fuzzing::{read_frames, FramesEnd, FramesOptions};

const MAX_BODY_BYTES: u64 = 1 << 20;

fn options(chunk_bytes: usize, budget_bytes: u32) -> FramesOptions {
    FramesOptions {
        chunk_bytes,
        max_body_bytes: MAX_BODY_BYTES,
        budget_bytes,
        verify_crc: true,
    }
}

fn transform_bytes() -> Vec<u8> {
    let m = [
        [1.0, 0.0, 0.0, 10.0],
        [0.0, 1.0, 0.0, -20.0],
        [0.0, 0.0, 1.0, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    encode(&Message::new(
        "NeedleTipToReference",
        Body::Transform(Transform::from_matrix(&m)),
    ))
    .unwrap()
}

/// A 320 × 300 8-bit IMAGE: its body (96,072 bytes) is over the first 64 KiB step of
/// the reader's buffer, so the buffer grows twice.
fn image_bytes() -> Vec<u8> {
    let pixels: Vec<u8> = (0..320 * 300).map(|i| (i % 251) as u8).collect();
    let identity = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let image = ImageBody::new(
        [320, 300, 1],
        ScalarType::U8,
        1,
        Endian::Little,
        Coordinate::Ras,
        &identity,
        pixels,
    );
    encode(&Message::new("Video", Body::Image(image))).unwrap()
}

fn body_bytes(frame: &[u8]) -> usize {
    frame.len() - HEADER_SIZE
}

#[test]
fn server_frame_reader_reads_two_golden_messages_in_any_chunking() {
    let (transform, image) = (transform_bytes(), image_bytes());
    let stream = [transform.as_slice(), image.as_slice()].concat();
    for chunk in [1, 13, 64, 1 << 20] {
        let read = read_frames(&stream, &options(chunk, 1 << 20)).unwrap();
        assert!(
            matches!(read.end, FramesEnd::Clean),
            "chunk {chunk}: {:?}",
            read.end
        );
        assert_eq!(read.consumed_bytes, stream.len(), "chunk {chunk}");
        let names: Vec<_> = read
            .frames
            .iter()
            .map(|f| (f.type_name.as_str(), f.device_name.as_str(), f.body_bytes))
            .collect();
        assert_eq!(
            names,
            [
                ("TRANSFORM", "NeedleTipToReference", body_bytes(&transform)),
                ("IMAGE", "Video", body_bytes(&image)),
            ],
            "chunk {chunk}"
        );
        assert!(read.frames.iter().all(|f| f.decode_error.is_none()));
        // The image's whole body was held, never more.
        assert_eq!(read.peak_budget_bytes, body_bytes(&image), "chunk {chunk}");
    }

    // A bad CRC skips that message only: the stream stays aligned.
    let mut bad = transform.clone();
    *bad.last_mut().unwrap() ^= 0x40;
    let stream = [bad.as_slice(), transform.as_slice()].concat();
    let read = read_frames(&stream, &options(7, 1 << 20)).unwrap();
    assert!(matches!(read.end, FramesEnd::Clean), "{:?}", read.end);
    assert_eq!(read.frames.len(), 2);
    let error = read.frames[0].decode_error.as_deref().unwrap_or_default();
    assert!(error.contains("CRC mismatch"), "{error}");
    assert_eq!(read.frames[1].decode_error, None);
}

#[test]
fn server_frame_reader_refuses_a_body_over_the_limit_before_reading_it() {
    let mut oversized = transform_bytes();
    let claimed = MAX_BODY_BYTES + 1;
    oversized[42..50].copy_from_slice(&claimed.to_be_bytes());
    oversized.extend(std::iter::repeat_n(0u8, 4096));
    for stream in [oversized.clone(), [transform_bytes(), oversized].concat()] {
        let before = stream.len() - 4096 - transform_bytes().len();
        let read = read_frames(&stream, &options(64, 1 << 20)).unwrap();
        assert!(
            matches!(
                read.end,
                FramesEnd::Refused(IgtlError::BodyTooLarge { claimed: c, limit })
                    if c == claimed && limit == MAX_BODY_BYTES
            ),
            "{:?}",
            read.end
        );
        assert_eq!(read.frames.len(), usize::from(before > 0));
        // The header only: none of the claimed body read, none of the budget taken.
        assert_eq!(read.consumed_bytes, before + HEADER_SIZE);
        assert_eq!(read.peak_budget_bytes, before.saturating_sub(HEADER_SIZE));
    }

    // A body within the limit but over the budget: refused when its buffer would grow
    // past the budget (after the first 64 KiB arrived), the budget returned.
    let image = image_bytes();
    let read = read_frames(&image, &options(4096, 80_000)).unwrap();
    let FramesEnd::Budget(why) = &read.end else {
        panic!("{:?}", read.end);
    };
    assert!(why.contains("max_buffered_body_bytes"), "{why}");
    assert!(read.frames.is_empty());
    assert_eq!(read.consumed_bytes, HEADER_SIZE + 64 * 1024);
    assert_eq!(read.peak_budget_bytes, 64 * 1024);
}

#[test]
fn server_frame_reader_reports_a_truncated_body_or_header() {
    let transform = transform_bytes();
    let cut = HEADER_SIZE + 20;
    let read = read_frames(&transform[..cut], &options(5, 1 << 20)).unwrap();
    assert!(
        matches!(
            read.end,
            FramesEnd::Refused(IgtlError::Truncated { needed, available })
                if needed == transform.len() as u64 && available == cut as u64
        ),
        "{:?}",
        read.end
    );
    assert!(read.frames.is_empty());
    assert_eq!(read.consumed_bytes, cut);

    // A whole message, then 30 bytes of the next header.
    let stream = [transform.as_slice(), &transform[..30]].concat();
    let read = read_frames(&stream, &options(64, 1 << 20)).unwrap();
    assert!(
        matches!(
            read.end,
            FramesEnd::Refused(IgtlError::Truncated { needed, available })
                if needed == HEADER_SIZE as u64 && available == 30
        ),
        "{:?}",
        read.end
    );
    assert_eq!(read.frames.len(), 1);
    assert_eq!(read.consumed_bytes, stream.len());
}
