//! Parsing with checked lengths: every value length is checked against the bytes left
//! in the file before dicom-object (which allocates a claimed length first) sees it.

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, FileMetaTable, OpenFileOptions};
use dicom_parser::dataset::read::DataSetReaderOptions;
use dicom_parser::dataset::{DataSetReader, DataToken};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};

use super::header::dictionary_vr;
use super::pixels::check_transfer_syntax;
use super::{EXPLICIT_VR_BE, IMPLICIT_VR_LE, MAX_SEQUENCE_DEPTH};

/// Parses a file's bytes (preamble optional). `headers_only` stops before PixelData.
pub(super) fn parse(
    bytes: &[u8],
    headers_only: bool,
) -> std::result::Result<DefaultDicomObject, String> {
    let body = match (bytes.get(128..132), bytes.get(..4)) {
        (Some(b"DICM"), _) => bytes.get(128..).unwrap_or_default(),
        (_, Some(b"DICM")) => bytes,
        _ => return Err("not a DICOM file (no DICM magic)".into()),
    };
    let inflated = inflate_if_deflated(body)?;
    let body = inflated.as_deref().unwrap_or(body);
    check_lengths(body)?;
    check_token_lengths(body, headers_only)?;
    let mut options = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
    if headers_only {
        options = options.read_until(tags::PIXEL_DATA);
    }
    options.from_reader(body).map_err(|e| e.to_string())
}

/// Transfer syntax UID of Deflated Explicit VR Little Endian (PS3.5 A.5).
const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
/// Largest data set a deflated file may inflate to (deflate reaches ~1000:1: a 64 KiB
/// file could otherwise claim 64 MiB, a 1 MiB one a gigabyte). Deflated files in practice
/// are small (structured reports, single frames).
pub(super) const MAX_INFLATED_BYTES: u64 = 64 << 20;

/// A file in Deflated Explicit VR Little Endian as the same file in Explicit VR Little
/// Endian (`DICM`, the file meta group with the transfer syntax replaced, the inflated
/// data set), so that every later check and parse sees plain bytes; `None` for any other
/// transfer syntax. The data set is raw deflate (no zlib header); it is inflated as a
/// stream, refused beyond [`MAX_INFLATED_BYTES`], so a small file cannot claim gigabytes.
fn inflate_if_deflated(body: &[u8]) -> std::result::Result<Option<Vec<u8>>, String> {
    // Our own walk first: dicom-object's meta reader allocates what a length claims.
    let Some((transfer_syntax, meta_end)) = meta_group(body)? else {
        return Ok(None);
    };
    if transfer_syntax != DEFLATED_EXPLICIT_VR_LE {
        return Ok(None);
    }
    let (meta_bytes, compressed) = body.split_at(meta_end.min(body.len()));
    let Ok(mut meta) = FileMetaTable::from_reader(meta_bytes) else {
        return Ok(None); // refused by the parse that follows
    };
    meta.set_transfer_syntax(&dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN);
    let mut plain = b"DICM".to_vec();
    meta.write(&mut plain)
        .map_err(|e| format!("file meta group not rewritable: {e}"))?;
    let meta_len = plain.len() as u64;
    flate2::read::DeflateDecoder::new(compressed)
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_end(&mut plain)
        .map_err(|e| format!("deflated data set does not inflate: {e}"))?;
    if plain.len() as u64 - meta_len > MAX_INFLATED_BYTES {
        return Err(format!(
            "deflated data set inflates to more than {} MiB",
            MAX_INFLATED_BYTES >> 20
        ));
    }
    Ok(Some(plain))
}

/// A byte slice that counts what a parser has taken from it: the position to check a
/// claimed length against while dicom-rs's token reader owns the reader (also used by
/// `pinhole-dicomnet`'s data-set walk).
pub struct CountingReader<'a> {
    bytes: &'a [u8],
    taken: Rc<Cell<usize>>,
}

impl<'a> CountingReader<'a> {
    /// The reader and a shared count of the bytes taken so far.
    pub fn new(bytes: &'a [u8]) -> (Self, Rc<Cell<usize>>) {
        let taken = Rc::new(Cell::new(0usize));
        let reader = Self {
            bytes,
            taken: Rc::clone(&taken),
        };
        (reader, taken)
    }
}

impl Read for CountingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.bytes.read(buf)?;
        self.taken.set(self.taken.get() + n);
        Ok(n)
    }
}

/// Runs dicom-rs's own token reader over the file, with the options dicom-object uses,
/// and refuses a value or fragment that claims more bytes than remain *before* the
/// reader takes (and allocates) it. `check_lengths` walks the file with its own rules
/// and so can part ways with dicom-rs on hostile input (each such divergence found by
/// fuzzing made dicom-rs allocate over a gigabyte from a 3 KB file); here the lengths are
/// read exactly where dicom-rs reads them. With `headers_only` it stops where dicom-object
/// will (PixelData at the top level). Errors of the reader itself are left to
/// dicom-object, which reports them.
fn check_token_lengths(body: &[u8], headers_only: bool) -> std::result::Result<(), String> {
    let (mut reader, taken) = CountingReader::new(body);
    let Ok(meta) = FileMetaTable::from_reader(&mut reader) else {
        return Ok(());
    };
    let Some(ts) = TransferSyntaxRegistry.get(meta.transfer_syntax()) else {
        return Ok(());
    };
    if !ts.is_codec_free() && !ts.is_encapsulated_pixel_data() {
        return Ok(()); // refused by `check_lengths` (deflated) or dicom-object
    }
    let Ok(tokens) =
        DataSetReader::new_with_ts_options(reader, ts, DataSetReaderOptions::default())
    else {
        return Ok(());
    };
    // Every token takes at least one byte except the ends of defined-length sequences
    // and items, of which there are at most as many as starts: a reader that yields
    // more tokens than this makes no progress.
    let max_tokens = body.len().saturating_mul(2).saturating_add(16);
    let mut depth = 0usize;
    for (count, token) in tokens.enumerate() {
        if count > max_tokens {
            return Err(format!(
                "the data set yields more than {max_tokens} elements from {} bytes",
                body.len()
            ));
        }
        let Ok(token) = token else {
            return Ok(());
        };
        let stops_here = |tag: Tag| headers_only && depth == 0 && tag >= tags::PIXEL_DATA;
        let (what, claimed) = match &token {
            DataToken::ElementHeader(header) if stops_here(header.tag) => break,
            DataToken::ElementHeader(header) => {
                let (group, element) = (header.tag.0, header.tag.1);
                (
                    format!("element ({group:04X},{element:04X})"),
                    header.len.get(),
                )
            }
            DataToken::SequenceStart { tag, .. } if stops_here(*tag) => break,
            DataToken::PixelSequenceStart if stops_here(tags::PIXEL_DATA) => break,
            DataToken::SequenceStart { .. } | DataToken::PixelSequenceStart => {
                depth += 1;
                continue;
            }
            DataToken::SequenceEnd => {
                depth = depth.saturating_sub(1);
                continue;
            }
            DataToken::ItemStart { len } => ("item".to_string(), len.get()),
            _ => continue,
        };
        let remaining = body.len().saturating_sub(taken.get());
        if let Some(len) = claimed.filter(|&len| len as usize > remaining) {
            return Err(format!(
                "{what} at byte {} claims {len} bytes but only {remaining} remain in the file",
                taken.get()
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    ExplicitLe,
    ExplicitBe,
    ImplicitLe,
}

const UNDEFINED: u32 = u32::MAX;

fn read_u16(data: &[u8], at: usize, big: bool) -> Option<u16> {
    let b: [u8; 2] = data.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(if big {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    })
}

pub(super) fn read_u32(data: &[u8], at: usize, big: bool) -> Option<u32> {
    let b: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

/// Element header at `at`: (tag, VR, header bytes, value length).
fn element_header(data: &[u8], at: usize, enc: Encoding) -> Option<(Tag, VR, usize, u32)> {
    let big = enc == Encoding::ExplicitBe;
    let tag = Tag(read_u16(data, at, big)?, read_u16(data, at + 2, big)?);
    if tag.0 == 0xFFFE {
        return Some((tag, VR::UN, 8, read_u32(data, at + 4, big)?));
    }
    match enc {
        Encoding::ImplicitLe => {
            let vr = if tag == tags::PIXEL_DATA {
                VR::OW
            } else {
                dictionary_vr(tag).unwrap_or(VR::UN)
            };
            Some((tag, vr, 8, read_u32(data, at + 4, false)?))
        }
        Encoding::ExplicitLe | Encoding::ExplicitBe => {
            let code = data.get(at + 4..at + 6)?;
            let vr = VR::from_binary([*code.first()?, *code.get(1)?]).unwrap_or(VR::UN);
            use VR::*;
            if matches!(
                vr,
                AE | AS
                    | AT
                    | CS
                    | DA
                    | DS
                    | DT
                    | FL
                    | FD
                    | IS
                    | LO
                    | LT
                    | PN
                    | SH
                    | SL
                    | SS
                    | ST
                    | TM
                    | UI
                    | UL
                    | US
            ) {
                Some((tag, vr, 8, u32::from(read_u16(data, at + 6, big)?)))
            } else {
                Some((tag, vr, 12, read_u32(data, at + 8, big)?))
            }
        }
    }
}

/// The size of one value of a binary VR whose length must be a multiple of it.
fn fixed_value_size(vr: VR) -> Option<usize> {
    match vr {
        VR::SS | VR::US | VR::OW => Some(2),
        VR::SL | VR::UL | VR::FL | VR::AT | VR::OL | VR::OF => Some(4),
        VR::FD | VR::SV | VR::UV | VR::OD | VR::OV => Some(8),
        _ => None,
    }
}

/// Walks the file the way dicom-object will and fails when a value claims more bytes
/// than remain, so that no buffer larger than the file is ever allocated, or when
/// sequences nest deeper than [`MAX_SEQUENCE_DEPTH`]. `body` starts
/// at the `DICM` magic. Where the structure is unclear it stops and lets the parser
/// report the problem.
/// The file meta group of `body` (from `DICM`), each element's length checked against
/// the bytes left: its transfer syntax UID and where the data set starts. `None` when the
/// group does not start with its group length (dicom-object refuses such files).
fn meta_group(body: &[u8]) -> std::result::Result<Option<(String, usize)>, String> {
    Ok(meta_fields(body)?.map(|m| (m.transfer_syntax, m.end)))
}

/// What the file meta group says, from a checked walk of it.
pub(super) struct MetaFields {
    pub(super) transfer_syntax: String,
    /// MediaStorageSOPClassUID (0002,0002), empty when absent.
    pub(super) sop_class: String,
    /// Offset of the first data-set byte in `body`.
    pub(super) end: usize,
}

/// Walks the file meta group of `body` (from `DICM`) with every length checked against
/// the bytes given; `None` without a group length. Needs only the group's bytes.
pub(super) fn meta_fields(body: &[u8]) -> std::result::Result<Option<MetaFields>, String> {
    let too_long = |tag: Tag, len: u32, at: usize| {
        format!(
            "element ({:04X},{:04X}) claims {len} bytes but only {} remain in the file",
            tag.0,
            tag.1,
            body.len().saturating_sub(at)
        )
    };
    // (0002,0000) group length, then elements until it is used up.
    let mut pos = 4;
    let Some((tag, _, header, len)) = element_header(body, pos, Encoding::ExplicitLe) else {
        return Err("truncated file meta group".into());
    };
    if tag != Tag(0x0002, 0x0000) || len != 4 {
        return Ok(None);
    }
    let group_length = read_u32(body, pos + header, false).ok_or("truncated file meta group")?;
    pos += header + 4;
    let meta_end = pos.saturating_add(group_length as usize);
    let mut transfer_syntax = String::new();
    let mut sop_class = String::new();
    while pos < meta_end {
        let Some((tag, _, header, len)) = element_header(body, pos, Encoding::ExplicitLe) else {
            return Err("truncated file meta group".into());
        };
        let start = pos + header;
        let end = start
            .checked_add(len as usize)
            .filter(|e| len != UNDEFINED && *e <= body.len())
            .ok_or_else(|| too_long(tag, len, start))?;
        let value = || {
            String::from_utf8_lossy(body.get(start..end).unwrap_or_default())
                .trim_end_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_string()
        };
        if tag == Tag(0x0002, 0x0010) {
            transfer_syntax = value();
        } else if tag == Tag(0x0002, 0x0002) {
            sop_class = value();
        }
        pos = end;
    }
    Ok(Some(MetaFields {
        transfer_syntax,
        sop_class,
        end: pos,
    }))
}

fn check_lengths(body: &[u8]) -> std::result::Result<(), String> {
    let too_long = |tag: Tag, len: u32, at: usize| {
        format!(
            "element ({:04X},{:04X}) claims {len} bytes but only {} remain in the file",
            tag.0,
            tag.1,
            body.len().saturating_sub(at)
        )
    };
    let Some((transfer_syntax, mut pos)) = meta_group(body)? else {
        return Ok(()); // the parser refuses it
    };
    let enc = match transfer_syntax.as_str() {
        IMPLICIT_VR_LE => Encoding::ImplicitLe,
        EXPLICIT_VR_BE => Encoding::ExplicitBe,
        _ => Encoding::ExplicitLe,
    };
    if check_transfer_syntax(&transfer_syntax).is_err()
        && TransferSyntaxRegistry
            .get(&transfer_syntax)
            .is_none_or(|ts| !ts.is_encapsulated_pixel_data() && !ts.is_codec_free())
    {
        // Deflated or unknown: dicom-object must not parse it; refuse here.
        return Err(format!("unsupported transfer syntax {transfer_syntax}"));
    }
    // Data set: step into sequences and items, skip values, check every length, and
    // count how deeply sequences nest. `open` holds the sequences and items we are
    // inside: `Some(end)` for a defined length, `None` until its delimiter.
    let mut in_pixel_sequence = false;
    let mut open: Vec<Option<usize>> = Vec::new();
    while pos < body.len() {
        while open.last().is_some_and(|end| end.is_some_and(|e| pos >= e)) {
            open.pop();
        }
        let Some((tag, vr, header, len)) = element_header(body, pos, enc) else {
            return Ok(()); // trailing bytes; the parser decides
        };
        let start = pos + header;
        let defined = len != UNDEFINED;
        if defined && (len as usize) > body.len().saturating_sub(start) {
            return Err(too_long(tag, len, start));
        }
        if let Some(size) =
            fixed_value_size(vr).filter(|&n| defined && !(len as usize).is_multiple_of(n))
        {
            // dicom-rs reads whole values and then parses the leftover bytes as the next
            // element header: a fuzzed SL of 6 bytes made it allocate 1.2 GB.
            return Err(format!(
                "element ({:04X},{:04X}) {vr:?} has {len} bytes, not a multiple of its \
                 {size}-byte values",
                tag.0, tag.1
            ));
        }
        let end = defined.then(|| start + len as usize);
        pos = match (tag, in_pixel_sequence) {
            (Tag(0xFFFE, 0xE000), true) if defined => start + len as usize,
            (Tag(0xFFFE, 0xE000), true) => return Ok(()),
            (Tag(0xFFFE, 0xE0DD), true) => {
                in_pixel_sequence = false;
                start
            }
            (Tag(0xFFFE, 0xE000), false) => {
                if open.is_empty() {
                    // As for stray delimiters: dicom-rs parts ways with this walk there.
                    return Err(format!("item at byte {pos} outside any sequence"));
                }
                open.push(end);
                start
            }
            (Tag(0xFFFE, 0xE00D | 0xE0DD), false) => {
                match open.last() {
                    Some(None) => {
                        open.pop();
                    }
                    Some(Some(_)) => {}
                    // dicom-rs reads on from a stray delimiter differently from this walk
                    // (a fuzzed file allocated 1.1 GB after one).
                    None => {
                        return Err(format!(
                            "delimiter ({:04X},{:04X}) at byte {pos} outside any sequence",
                            tag.0, tag.1
                        ))
                    }
                }
                start
            }
            (Tag(0xFFFE, 0xE00D), true) => start,
            (Tag(0xFFFE, element), _) => {
                return Err(format!(
                    "unknown item tag (FFFE,{element:04X}) at byte {pos}"
                ))
            }
            _ if tag == tags::PIXEL_DATA && !defined => {
                in_pixel_sequence = true;
                start
            }
            _ if vr == VR::SQ || !defined => {
                open.push(end);
                start
            }
            _ => start + len as usize,
        };
        // A sequence and its item make two levels.
        if open.len() > 2 * MAX_SEQUENCE_DEPTH {
            return Err(format!(
                "sequences nested more than {MAX_SEQUENCE_DEPTH} deep (at byte {pos}): refused \
                 (the parser recurses once per level)"
            ));
        }
    }
    Ok(())
}
