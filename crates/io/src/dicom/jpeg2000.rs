//! The JPEG 2000 codestream's own image size, read from its SIZ marker segment and
//! checked against the DICOM header before OpenJPEG sees the data: OpenJPEG allocates
//! what SIZ claims (a fuzzed 3 KB file whose SIZ said 256 × 4,161,024 made it allocate
//! 4 GB and run for minutes), and dicom-rs's adapter then indexes past the header's
//! frame. ITU-T T.800 A.5.1: a codestream starts with SOC (FF4F) followed at once by SIZ
//! (FF51).

/// JPEG 2000 transfer syntaxes (PS3.5 A.4.4, A.4.9): their pixel data is a codestream.
pub(super) const TRANSFER_SYNTAXES: [&str; 7] = [
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
];

const SOC: [u8; 2] = [0xFF, 0x4F];
const SIZ: [u8; 2] = [0xFF, 0x51];
/// Bytes of SIZ from its marker to the first component: marker, Lsiz, Rsiz, eight
/// 32-bit sizes and offsets, Csiz.
const SIZ_FIXED_BYTES: usize = 2 + 2 + 2 + 8 * 4 + 2;
/// Where a codestream wrapped in a JP2 file (not conformant in DICOM, but written by
/// some encoders) is looked for: its `jp2c` box within the first bytes.
const JP2_SEARCH_BYTES: usize = 4096;

/// What the codestream says of its image.
#[derive(Debug, PartialEq)]
pub(super) struct CodestreamSize {
    pub(super) columns: u32,
    pub(super) rows: u32,
    pub(super) components: u16,
    /// Bits of the first component.
    pub(super) precision_bits: u8,
}

fn be_u16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// Start of the codestream in a fragment: at 0, or after a JP2 `jp2c` box header.
fn codestream_start(fragment: &[u8]) -> Option<usize> {
    if fragment.starts_with(&SOC) {
        return Some(0);
    }
    let head = fragment.get(..fragment.len().min(JP2_SEARCH_BYTES))?;
    let box_type = head.windows(4).position(|w| w == b"jp2c")?;
    Some(box_type + 4).filter(|&at| fragment.get(at..at + 2) == Some(&SOC[..]))
}

/// Reads SIZ from the first fragment of a frame.
pub(super) fn codestream_size(fragment: &[u8]) -> Result<CodestreamSize, String> {
    let start = codestream_start(fragment)
        .ok_or("JPEG 2000 pixel data does not start with a codestream (no SOC marker)")?;
    let siz = fragment
        .get(start + 2..)
        .filter(|s| s.len() >= SIZ_FIXED_BYTES + 3 && s.starts_with(&SIZ))
        .ok_or("JPEG 2000 codestream: SOC is not followed by a SIZ marker segment")?;
    let field = |i: usize| be_u32(siz, 6 + 4 * i).unwrap_or(0);
    let (x, y, x_offset, y_offset) = (field(0), field(1), field(2), field(3));
    let (tile_x, tile_y) = (field(4), field(5));
    let components = be_u16(siz, SIZ_FIXED_BYTES - 2).unwrap_or(0);
    let length = usize::from(be_u16(siz, 2).unwrap_or(0));
    if length != SIZ_FIXED_BYTES - 2 + 3 * usize::from(components) {
        return Err(format!(
            "JPEG 2000 SIZ: length {length} does not match its {components} components"
        ));
    }
    if x <= x_offset || y <= y_offset || tile_x == 0 || tile_y == 0 || components == 0 {
        return Err(format!(
            "JPEG 2000 SIZ: empty image or tiles ({x}x{y}, offset {x_offset},{y_offset}, \
             tiles {tile_x}x{tile_y}, {components} components)"
        ));
    }
    let first = siz
        .get(SIZ_FIXED_BYTES..SIZ_FIXED_BYTES + 3)
        .unwrap_or(&[0; 3]);
    Ok(CodestreamSize {
        columns: x - x_offset,
        rows: y - y_offset,
        components,
        precision_bits: (first[0] & 0x7F) + 1,
    })
}

/// `Ok` when the codestream's image is the header's frame: same columns, rows and
/// samples per pixel, no more bits than allocated.
pub(super) fn check_codestream(
    fragment: &[u8],
    rows: u16,
    columns: u16,
    samples_per_pixel: u16,
    bits_allocated: u16,
) -> Result<(), String> {
    let size = codestream_size(fragment)?;
    if size.columns != u32::from(columns)
        || size.rows != u32::from(rows)
        || size.components != samples_per_pixel
        || u16::from(size.precision_bits) > bits_allocated
    {
        return Err(format!(
            "JPEG 2000 codestream is {}x{} with {} component(s) of {} bits, the header's \
             frame {columns}x{rows} with {samples_per_pixel} of {bits_allocated} bits",
            size.columns, size.rows, size.components, size.precision_bits
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOC + SIZ for one 12-bit component of `columns` x `rows` (tiles = image).
    fn codestream(columns: u32, rows: u32) -> Vec<u8> {
        let mut v = vec![0xFF, 0x4F, 0xFF, 0x51];
        v.extend_from_slice(&41u16.to_be_bytes());
        v.extend_from_slice(&0u16.to_be_bytes());
        for n in [columns, rows, 0, 0, columns, rows, 0, 0] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        v.extend_from_slice(&1u16.to_be_bytes());
        v.extend_from_slice(&[11, 1, 1]);
        v.extend_from_slice(&[0xFF, 0x52]);
        v
    }

    #[test]
    fn reads_the_size_of_a_constructed_codestream() {
        let size = codestream_size(&codestream(256, 1024)).unwrap();
        assert_eq!(
            size,
            CodestreamSize {
                columns: 256,
                rows: 1024,
                components: 1,
                precision_bits: 12
            }
        );
        assert!(check_codestream(&codestream(256, 1024), 1024, 256, 1, 16).is_ok());
    }

    #[test]
    fn a_codestream_larger_than_the_header_is_refused() {
        let err = check_codestream(&codestream(256, 4_161_024), 1024, 256, 1, 16).unwrap_err();
        assert!(err.contains("256x4161024"), "{err}");
        // More bits than allocated, or another sample count.
        assert!(check_codestream(&codestream(256, 1024), 1024, 256, 1, 8).is_err());
        assert!(check_codestream(&codestream(256, 1024), 1024, 256, 3, 16).is_err());
    }

    #[test]
    fn a_fragment_without_soc_and_siz_is_refused() {
        assert!(codestream_size(&[0xFF, 0x4F, 0x00, 0x00, 0x01]).is_err());
        assert!(codestream_size(b"not a codestream").is_err());
        assert!(codestream_size(&[]).is_err());
        let mut wrong_length = codestream(16, 16);
        wrong_length[5] = 44;
        assert!(codestream_size(&wrong_length).is_err());
    }

    #[test]
    fn a_jp2_wrapped_codestream_is_found_after_its_box() {
        let mut jp2 = vec![0, 0, 0, 12, b'j', b'P', b' ', b' ', 13, 10, 0x87, 10];
        jp2.extend_from_slice(&[0, 0, 0, 0, b'j', b'p', b'2', b'c']);
        jp2.extend_from_slice(&codestream(64, 32));
        let size = codestream_size(&jp2).unwrap();
        assert_eq!((size.columns, size.rows), (64, 32));
    }
}
