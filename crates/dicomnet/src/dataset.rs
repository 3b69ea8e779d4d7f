//! Reading a few top-level values out of an encoded data set (a DIMSE command or a
//! received instance) without trusting its lengths.
//!
//! dicom-rs's parser allocates a value's claimed length before reading it, so a
//! 100-byte object claiming a 4 GiB element would make it allocate 4 GiB. Here
//! dicom-rs's own token reader walks the bytes, and every element or item length is
//! checked against the bytes still unread *before* the reader takes (and allocates)
//! the value — the same guard `pinhole_io`'s DICOM reader applies to files. Sequences
//! may nest at most [`MAX_SEQUENCE_DEPTH`] deep. The whole data set is walked, so a
//! truncated or garbled one is refused even when the wanted values come first.

use dicom_core::{PrimitiveValue, Tag};
use dicom_parser::dataset::read::DataSetReaderOptions;
use dicom_parser::dataset::{DataSetReader, DataToken};
use dicom_transfer_syntax_registry::TransferSyntax;
use pinhole_io::dicom::CountingReader;

/// Deepest nesting of sequences accepted (as `pinhole_io::dicom::MAX_SEQUENCE_DEPTH`).
pub const MAX_SEQUENCE_DEPTH: usize = pinhole_io::dicom::MAX_SEQUENCE_DEPTH;

/// The wanted top-level values of a data set, as found.
#[derive(Debug, Default)]
pub struct Scanned {
    values: Vec<(Tag, PrimitiveValue)>,
}

impl Scanned {
    /// The value of `tag` as text, padding (spaces, NULs) removed; `None` when absent
    /// or empty.
    pub fn text(&self, tag: Tag) -> Option<String> {
        let value = self.value(tag)?;
        let text = value.to_str();
        let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
        (!text.is_empty()).then(|| text.to_string())
    }

    /// The first value of `tag` as an unsigned 16-bit number.
    pub fn u16(&self, tag: Tag) -> Option<u16> {
        self.value(tag)?.to_int::<u16>().ok()
    }

    fn value(&self, tag: Tag) -> Option<&PrimitiveValue> {
        self.values.iter().find(|(t, _)| *t == tag).map(|(_, v)| v)
    }
}

/// Walks the data set `bytes` (no preamble, no file meta group) encoded in `ts` and
/// returns the values of the `wanted` top-level elements. Refused with a message:
/// a deflated transfer syntax (its lengths cannot be checked before inflating), a
/// length beyond the bytes left, nesting deeper than [`MAX_SEQUENCE_DEPTH`], a
/// sequence left open, any error of dicom-rs's reader.
///
/// Allocates at most what `bytes` holds (plus small constant overhead) and never
/// panics.
pub fn scan(bytes: &[u8], ts: &TransferSyntax, wanted: &[Tag]) -> Result<Scanned, String> {
    if !ts.is_codec_free() && !ts.is_encapsulated_pixel_data() {
        return Err(format!(
            "transfer syntax {} ({}) is not accepted (deflated data sets)",
            ts.uid(),
            ts.name()
        ));
    }
    let (reader, taken) = CountingReader::new(bytes);
    let tokens = DataSetReader::new_with_ts_options(reader, ts, DataSetReaderOptions::default())
        .map_err(|e| format!("cannot start reading the data set: {e}"))?;
    // Every token takes at least one byte except the ends of defined-length sequences
    // and items, of which there are at most as many as starts: a reader that yields
    // more tokens than this makes no progress.
    let max_tokens = bytes.len().saturating_mul(2).saturating_add(16);
    let mut scanned = Scanned::default();
    // Open sequences, innermost last: true for encapsulated pixel data.
    let mut open: Vec<bool> = Vec::new();
    let mut capture: Option<Tag> = None;
    for (count, token) in tokens.enumerate() {
        if count > max_tokens {
            return Err(format!(
                "the data set yields more than {max_tokens} elements from {} bytes",
                bytes.len()
            ));
        }
        let token = token.map_err(|e| {
            format!(
                "malformed data set near byte {}: {}",
                taken.get(),
                error_chain(&e)
            )
        })?;
        let remaining = bytes.len().saturating_sub(taken.get());
        let too_long = |what: String, claimed: Option<u32>| match claimed {
            Some(len) if len as usize > remaining => Err(format!(
                "{what} near byte {} claims {len} bytes but only {remaining} remain",
                taken.get()
            )),
            _ => Ok(()),
        };
        match token {
            DataToken::ElementHeader(header) => {
                let Tag(group, element) = header.tag;
                too_long(
                    format!("element ({group:04X},{element:04X})"),
                    header.len.get(),
                )?;
                capture = (open.is_empty() && wanted.contains(&header.tag)).then_some(header.tag);
            }
            DataToken::ItemStart { len } => too_long("item".into(), len.get())?,
            DataToken::SequenceStart { .. } | DataToken::PixelSequenceStart => {
                open.push(matches!(token, DataToken::PixelSequenceStart));
                if open.len() > MAX_SEQUENCE_DEPTH {
                    return Err(format!(
                        "sequences nest deeper than {MAX_SEQUENCE_DEPTH} levels"
                    ));
                }
            }
            DataToken::SequenceEnd => {
                open.pop();
            }
            DataToken::PrimitiveValue(value) => {
                if let Some(tag) = capture.take() {
                    scanned.values.push((tag, value));
                }
            }
            _ => {}
        }
    }
    // dicom-rs accepts encapsulated pixel data whose sequence delimiter is missing at
    // the very end of the data set; any other open sequence means a truncated object.
    match open.as_slice() {
        [] | [true] => Ok(scanned),
        _ => Err(format!(
            "the data set ends inside {} open sequence(s) (truncated)",
            open.len()
        )),
    }
}

pub(crate) use pinhole_io::error::error_chain;

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::tags;
    use dicom_transfer_syntax_registry::entries::{
        EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
    };

    /// An explicit VR little-endian element with a 2-byte length.
    fn element(tag: Tag, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn reads_wanted_values_and_refuses_claims_beyond_the_bytes() {
        let ts = EXPLICIT_VR_LITTLE_ENDIAN.erased();
        let mut bytes = element(tags::SOP_INSTANCE_UID, b"UI", b"1.2.3\0");
        bytes.extend(element(tags::SERIES_INSTANCE_UID, b"UI", b"1.2.4\0"));
        let scanned = scan(&bytes, &ts, &[tags::SOP_INSTANCE_UID]).unwrap();
        assert_eq!(
            scanned.text(tags::SOP_INSTANCE_UID).as_deref(),
            Some("1.2.3")
        );
        assert_eq!(scanned.text(tags::SERIES_INSTANCE_UID), None);

        // OB with a 4-byte length claiming 4 GiB − 2 in a 20-byte buffer.
        let mut huge = element(tags::SOP_INSTANCE_UID, b"UI", b"1.2\0");
        huge.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0]);
        huge.extend_from_slice(&0xFFFF_FFFEu32.to_le_bytes());
        huge.extend_from_slice(&[0; 4]);
        let err = scan(&huge, &ts, &[]).unwrap_err();
        assert!(err.contains("claims 4294967294 bytes"), "{err}");

        // Truncated value.
        let mut cut = element(tags::PATIENT_NAME, b"PN", b"DOE^JOHN");
        cut.truncate(cut.len() - 3);
        assert!(scan(&cut, &ts, &[]).is_err());
    }

    #[test]
    fn refuses_deep_nesting_and_open_sequences() {
        let ts = IMPLICIT_VR_LITTLE_ENDIAN.erased();
        // (0008,1115) ReferencedSeriesSequence, undefined length, nested 100 deep.
        let mut bytes = Vec::new();
        for _ in 0..100 {
            bytes.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
            bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let err = scan(&bytes, &ts, &[]).unwrap_err();
        assert!(
            err.contains("nest deeper") || err.contains("malformed"),
            "{err}"
        );
        let err = scan(&bytes[..16], &ts, &[]).unwrap_err();
        assert!(
            err.contains("open sequence") || err.contains("malformed"),
            "{err}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let ts = EXPLICIT_VR_LITTLE_ENDIAN.erased();
        let mut state = 0x1234_5678u32;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            let _ = scan(&bytes, &ts, &[tags::SOP_INSTANCE_UID]);
        }
    }
}
