//! Bad input: flipped bytes, truncation, absurd BODY_SIZE, malformed layouts. Errors,
//! never panics, and no allocation before the size check.

use std::io::{Cursor, Read};

use pinhole_igtl::{crc64, decode, encode, read_message, Body, DecodeOptions, IgtlError};

use crate::common::{be_u16, be_u32, be_u64, golden, golden_files};

fn no_crc() -> DecodeOptions {
    DecodeOptions {
        verify_crc: false,
        ..DecodeOptions::default()
    }
}

/// Offset of the last non-zero content byte (before any v3 metadata): a byte whose
/// flip shows in the decoded message (a flipped NUL padding byte may not).
fn last_content_byte(bytes: &[u8]) -> usize {
    let mut end = bytes.len();
    if be_u16(bytes, 0) >= 2 {
        end -= be_u16(bytes, 60) as usize + be_u32(bytes, 62) as usize;
    }
    (58..end).rev().find(|&i| bytes[i] != 0).unwrap()
}

#[test]
fn every_flipped_body_byte_is_a_crc_error() {
    for (name, bytes) in golden_files() {
        let header_crc = be_u64(&bytes, 50);
        for at in 58..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x01;
            match decode(&bad, &DecodeOptions::default()) {
                Err(IgtlError::CrcMismatch {
                    expected,
                    computed,
                    type_name,
                    device_name,
                }) => {
                    assert_eq!(expected, header_crc);
                    assert_eq!(computed, crc64(&bad[58..]));
                    assert_eq!(
                        type_name.as_bytes(),
                        bytes[2..14].split(|&b| b == 0).next().unwrap()
                    );
                    assert!(device_name == "DeviceName" || name.contains("command"));
                }
                other => panic!("{name} byte {at}: {other:?}"),
            }
            // Without the check: a message or an error, never a panic.
            let _ = decode(&bad, &no_crc());
        }
    }
}

#[test]
fn flipped_payload_byte_decodes_without_crc_check() {
    for (name, bytes) in golden_files() {
        let at = last_content_byte(&bytes);
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        assert!(matches!(
            decode(&bad, &DecodeOptions::default()),
            Err(IgtlError::CrcMismatch { .. })
        ));
        let (good, _) = decode(&bytes, &DecodeOptions::default()).unwrap();
        let (flipped, used) = decode(&bad, &no_crc()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(used, bad.len());
        assert_ne!(
            flipped, good,
            "{name}: the flip must show in the decoded body"
        );
        // Re-encoding it gives a valid CRC again.
        let fixed = encode(&flipped).unwrap();
        assert!(decode(&fixed, &DecodeOptions::default()).is_ok(), "{name}");
    }
}

#[test]
fn every_truncation_is_an_error() {
    for (name, bytes) in golden_files() {
        for cut in 0..bytes.len() {
            let needed = if cut < 58 { 58 } else { bytes.len() as u64 };
            match decode(&bytes[..cut], &DecodeOptions::default()) {
                Err(IgtlError::Truncated {
                    needed: n,
                    available,
                }) => {
                    assert_eq!((n, available), (needed, cut as u64), "{name} cut {cut}");
                }
                other => panic!("{name} cut {cut}: {other:?}"),
            }
            // The same through a reader: clean EOF only at 0 bytes.
            match read_message(&mut Cursor::new(&bytes[..cut]), &DecodeOptions::default()) {
                Err(e) if cut == 0 => assert!(e.is_clean_eof(), "{e:?}"),
                Err(IgtlError::Truncated {
                    needed: n,
                    available,
                }) => {
                    assert_eq!((n, available), (needed, cut as u64), "{name} cut {cut}");
                }
                other => panic!("{name} cut {cut}: {other:?}"),
            }
        }
    }
}

/// A reader that fails the test if anything reads from it.
struct MustNotRead;

impl Read for MustNotRead {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        panic!("read past the header of an oversized message");
    }
}

#[test]
fn huge_body_size_is_rejected_before_allocation() {
    let mut bytes = golden("test_transform_message.bin");
    for claimed in [1u64 << 63, u64::MAX, (256 << 20) + 1] {
        bytes[42..50].copy_from_slice(&claimed.to_be_bytes());
        match decode(&bytes, &DecodeOptions::default()) {
            Err(IgtlError::BodyTooLarge { claimed: c, limit }) => {
                assert_eq!((c, limit), (claimed, 256 << 20));
            }
            other => panic!("{other:?}"),
        }
        // Header only, then a reader that must not be touched.
        let mut reader = Cursor::new(bytes[..58].to_vec()).chain(MustNotRead);
        match read_message(&mut reader, &DecodeOptions::default()) {
            Err(IgtlError::BodyTooLarge { claimed: c, .. }) => assert_eq!(c, claimed),
            other => panic!("{other:?}"),
        }
        // Even with no limit the claimed size never turns into an allocation.
        let unlimited = DecodeOptions {
            max_body_bytes: u64::MAX,
            ..DecodeOptions::default()
        };
        assert!(matches!(
            decode(&bytes, &unlimited),
            Err(IgtlError::Truncated { .. })
        ));
        let mut reader = Cursor::new(bytes.clone());
        assert!(matches!(
            read_message(&mut reader, &unlimited),
            Err(IgtlError::Truncated { .. })
        ));
    }
}

#[test]
fn body_limit_is_inclusive() {
    let bytes = golden("test_transform_message.bin");
    let limit = |max_body_bytes| DecodeOptions {
        max_body_bytes,
        ..DecodeOptions::default()
    };
    assert!(decode(&bytes, &limit(48)).is_ok());
    assert!(matches!(
        decode(&bytes, &limit(47)),
        Err(IgtlError::BodyTooLarge {
            claimed: 48,
            limit: 47
        })
    ));
}

/// Re-frames `body` under `header` with a correct BODY_SIZE and CRC.
fn reframe(header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = header[..58].to_vec();
    out[42..50].copy_from_slice(&(body.len() as u64).to_be_bytes());
    out[50..58].copy_from_slice(&crc64(body).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn assert_malformed(bytes: &[u8], what: &str) {
    match decode(bytes, &DecodeOptions::default()) {
        Err(IgtlError::Malformed { .. }) => {}
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn malformed_layouts_are_errors() {
    let t = golden("test_transform_message.bin");
    assert_malformed(&reframe(&t, &t[58..105]), "TRANSFORM of 47 bytes");
    assert_malformed(
        &reframe(&t, &[t[58..].to_vec(), vec![0]].concat()),
        "TRANSFORM of 49",
    );
    let mut bad_name = t.clone();
    bad_name[14] = 0xFF;
    assert_malformed(&bad_name, "device name not UTF-8");

    let v2 = golden("test_transform_message_Format2.bin");
    let body = &v2[58..];
    let mut b = body.to_vec();
    b[0..2].copy_from_slice(&11u16.to_be_bytes());
    assert_malformed(&reframe(&v2, &b), "extended header size 11");
    let mut b = body.to_vec();
    b[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_malformed(&reframe(&v2, &b), "metadata size 2^32-1");
    let mut b = body.to_vec();
    b[60..62].copy_from_slice(&3u16.to_be_bytes());
    assert_malformed(
        &reframe(&v2, &b),
        "index count 3 for an 18-byte metadata header",
    );
    assert_malformed(&reframe(&v2, &body[..8]), "extended header cut short");

    let image = golden("test_image_message.bin");
    assert_malformed(
        &reframe(&image, &image[58..image.len() - 1]),
        "one pixel byte short",
    );
    let mut b = image[58..].to_vec();
    b[3] = 9;
    assert_malformed(&reframe(&image, &b), "scalar type 9");
    let mut b = image[58..].to_vec();
    b[60..62].copy_from_slice(&1u16.to_be_bytes()); // DI = 1 with DRI = 50 = RI
    assert_malformed(&reframe(&image, &b), "sub-volume outside the volume");

    let s = golden("test_string_message.bin");
    let mut b = s[58..].to_vec();
    b[2..4].copy_from_slice(&u16::MAX.to_be_bytes());
    assert_malformed(&reframe(&s, &b), "STRING length past the body");

    let p = golden("polydata_full.bin");
    let mut b = p[58..].to_vec();
    b[0..4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_malformed(&reframe(&p, &b), "NPOINTS 2^32-1");
    let mut b = p[58..].to_vec();
    b[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_malformed(&reframe(&p, &b), "NATTRIBUTES 2^32-1");

    let point = golden("test_point_message.bin");
    assert_malformed(
        &reframe(&point, &point[58..point.len() - 1]),
        "POINT not n×136",
    );
}

#[test]
fn empty_bodies_of_fixed_layout_types_are_empty_replies() {
    let t = golden("test_transform_message.bin");
    let (m, _) = decode(&reframe(&t, &[]), &DecodeOptions::default()).unwrap();
    assert_eq!(
        m.body,
        Body::Empty {
            type_name: "TRANSFORM".into()
        }
    );
    assert_eq!(encode(&m).unwrap(), reframe(&t, &[]));
    let point = golden("test_point_message.bin");
    let (m, _) = decode(&reframe(&point, &[]), &DecodeOptions::default()).unwrap();
    assert_eq!(m.body, Body::Point(vec![]));
}

#[test]
fn stream_stays_aligned_after_crc_and_layout_errors() {
    let good = golden("test_string_message.bin");
    let mut crc_bad = golden("test_transform_message.bin");
    crc_bad[70] ^= 0x80;
    let t = golden("test_transform_message.bin");
    let layout_bad = reframe(&t, &t[58..100]);
    let stream = [crc_bad.clone(), good.clone(), layout_bad, good.clone()].concat();
    let mut reader = Cursor::new(stream);
    let opts = DecodeOptions::default();
    assert!(matches!(
        read_message(&mut reader, &opts),
        Err(IgtlError::CrcMismatch { .. })
    ));
    assert!(matches!(
        read_message(&mut reader, &opts).unwrap().body,
        Body::String(_)
    ));
    assert!(matches!(
        read_message(&mut reader, &opts),
        Err(IgtlError::Malformed { .. })
    ));
    assert!(matches!(
        read_message(&mut reader, &opts).unwrap().body,
        Body::String(_)
    ));
    assert!(read_message(&mut reader, &opts).unwrap_err().is_clean_eof());
}

#[test]
fn all_golden_files_read_back_to_back_from_one_stream() {
    let files = golden_files();
    let stream: Vec<u8> = files.iter().flat_map(|(_, b)| b.clone()).collect();
    let mut reader = Cursor::new(&stream);
    let mut offset = 0;
    for (name, bytes) in &files {
        let m = read_message(&mut reader, &DecodeOptions::default()).unwrap();
        assert_eq!(&encode(&m).unwrap(), bytes, "{name}");
        let (again, used) = decode(&stream[offset..], &DecodeOptions::default()).unwrap();
        assert_eq!((again, used), (m, bytes.len()));
        offset += used;
    }
    assert!(read_message(&mut reader, &DecodeOptions::default())
        .unwrap_err()
        .is_clean_eof());
}

/// xorshift64*: deterministic mutations without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_mutations_never_panic_and_round_trip() {
    let files = golden_files();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut decoded = 0;
    for _ in 0..20_000 {
        let (_, original) = &files[rng.below(files.len())];
        let mut bytes = original.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[at] = rng.next() as u8,
                1 => bytes[at] ^= 1 << rng.below(8),
                _ => bytes.truncate(at.max(1)),
            }
        }
        if let Ok((m, used)) = decode(&bytes, &no_crc()) {
            decoded += 1;
            assert!(used <= bytes.len());
            let again = encode(&m).unwrap_or_else(|e| panic!("{e}\n{m:?}"));
            let (m2, used2) = decode(&again, &DecodeOptions::default()).unwrap();
            assert_eq!(used2, again.len());
            assert_eq!(format!("{m2:?}"), format!("{m:?}"));
            assert_eq!(encode(&m2).unwrap(), again);
        }
    }
    assert!(decoded > 1000, "only {decoded} mutants decoded");
}

#[test]
fn pyigtl_style_position_is_malformed_not_fatal() {
    // pyigtl 0.3.4 packs POSITION like POINT plus a quaternion: 152 bytes per item
    // (name 64, group 32, rgba 4, xyz 12, quaternion 16, diameter 4, owner 20), not the
    // spec's 12 / 24 / 28 bytes. It is rejected as malformed; the stream stays aligned.
    let p = golden("test_position_message.bin");
    let bad = reframe(&p, &[0u8; 152]);
    let stream = [bad, golden("test_string_message.bin")].concat();
    let mut reader = Cursor::new(stream);
    match read_message(&mut reader, &DecodeOptions::default()) {
        Err(IgtlError::Malformed { type_name, what }) => {
            assert_eq!(type_name, "POSITION");
            assert!(what.contains("152"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    assert!(read_message(&mut reader, &DecodeOptions::default()).is_ok());
}
