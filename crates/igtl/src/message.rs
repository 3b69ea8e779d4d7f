//! Whole messages: framing, CRC, the v3 extended header and metadata.

use std::borrow::Cow;
use std::io::Read;

use crate::body::Body;
use crate::crc::crc64;
use crate::error::{IgtlError, Result};
use crate::header::{raw_body_size, Header, Timestamp, HEADER_SIZE};
use crate::wire::{Cursor, Writer};

/// Size of the v3 extended header this codec writes.
pub const EXT_HEADER_SIZE: usize = 12;

/// Decoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Check the CRC-64 of every body (default true).
    pub verify_crc: bool,
    /// Largest BODY_SIZE accepted (default 256 MiB); checked before allocating.
    pub max_body_bytes: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            verify_crc: true,
            max_body_bytes: 256 << 20,
        }
    }
}

/// One metadata pair of a header version 2 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaEntry {
    pub key: String,
    /// MIBenum of `value` (3 US-ASCII, 106 UTF-8).
    pub encoding: u16,
    pub value: Vec<u8>,
}

impl MetaEntry {
    /// A text pair (US-ASCII when it is, UTF-8 otherwise).
    pub fn text(key: &str, value: &str) -> Self {
        Self {
            key: key.to_owned(),
            encoding: crate::body::encoding_for(value),
            value: value.as_bytes().to_vec(),
        }
    }

    /// The value as text, when it is UTF-8 (ASCII included).
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

/// The protocol v3 part of a header version 2 message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extended {
    pub msg_id: u32,
    /// In wire order (keys may repeat).
    pub metadata: Vec<MetaEntry>,
    /// Extended-header bytes beyond the 12 this version defines (normally none).
    pub ext_header_extra: Vec<u8>,
}

impl Extended {
    /// The first value stored under `key`, as text.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|e| e.key == key)
            .and_then(MetaEntry::value_str)
    }
}

/// A decoded message. Its TYPE comes from the body ([`Message::type_name`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Header version: 1 (protocol v1/v2) or 2 (protocol v3: `extended` is sent).
    pub version: u16,
    /// At most 20 bytes.
    pub device_name: String,
    pub timestamp: Timestamp,
    /// Present when `version >= 2`. Encoding a version ≥ 2 message without it writes an
    /// empty one (message id 0, no metadata).
    pub extended: Option<Extended>,
    pub body: Body,
}

impl Message {
    /// A header version 1 message stamped now.
    pub fn new(device_name: &str, body: Body) -> Self {
        Self {
            version: 1,
            device_name: device_name.to_owned(),
            timestamp: Timestamp::now(),
            extended: None,
            body,
        }
    }

    /// The same message as header version 2 with a message id and metadata.
    pub fn with_v2(mut self, msg_id: u32, metadata: Vec<MetaEntry>) -> Self {
        self.version = 2;
        self.extended = Some(Extended {
            msg_id,
            metadata,
            ext_header_extra: Vec::new(),
        });
        self
    }

    /// The TYPE field.
    pub fn type_name(&self) -> Cow<'_, str> {
        self.body.type_name()
    }

    /// The metadata value under `key` (header version 2 only).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.extended.as_ref().and_then(|e| e.get(key))
    }

    /// Builds a message from a parsed header and its body bytes (CRC not checked here).
    pub fn from_parts(header: &Header, body: &[u8]) -> Result<Message> {
        let type_name = header.type_name.as_str();
        let (extended, content) = if header.version >= 2 {
            let (ext, content) = split_extended(type_name, body)?;
            (Some(ext), content)
        } else {
            (None, body)
        };
        Ok(Message {
            version: header.version,
            device_name: header.device_name.clone(),
            timestamp: header.timestamp,
            extended,
            body: Body::decode(type_name, content)?,
        })
    }
}

/// Splits a v3 body into the extended header + metadata and the content.
fn split_extended<'a>(type_name: &'a str, body: &'a [u8]) -> Result<(Extended, &'a [u8])> {
    let mut c = Cursor::new(body, type_name);
    let ext_size = c.u16("extended header size")?;
    let meta_header_size = c.u16("metadata header size")?;
    let meta_size = c.u32("metadata size")?;
    let msg_id = c.u32("message id")?;
    let ext_size = usize::from(ext_size);
    if ext_size < EXT_HEADER_SIZE {
        return Err(c.malformed(format!(
            "extended header size {ext_size} < {EXT_HEADER_SIZE}"
        )));
    }
    let ext_header_extra = c
        .take(ext_size - EXT_HEADER_SIZE, "extended header")?
        .to_vec();
    let tail = u64::from(meta_header_size) + u64::from(meta_size);
    let left = c.remaining() as u64;
    if tail > left {
        return Err(c.malformed(format!(
            "metadata of {tail} bytes does not fit the {left} bytes after the extended header"
        )));
    }
    let content_len = (left - tail) as usize; // ≤ left, so fits usize
    let content = c.take(content_len, "content")?;
    let meta_header = c.take(usize::from(meta_header_size), "metadata header")?;
    let meta = c.rest();
    let metadata = parse_metadata(type_name, meta_header, meta)?;
    Ok((
        Extended {
            msg_id,
            metadata,
            ext_header_extra,
        },
        content,
    ))
}

fn parse_metadata(type_name: &str, header: &[u8], data: &[u8]) -> Result<Vec<MetaEntry>> {
    if header.is_empty() {
        if !data.is_empty() {
            return Err(IgtlError::malformed(
                type_name,
                "metadata without a metadata header",
            ));
        }
        return Ok(Vec::new());
    }
    let mut h = Cursor::new(header, type_name);
    let count = h.u16("metadata index count")?;
    if header.len() != 2 + 8 * usize::from(count) {
        return Err(h.malformed(format!(
            "metadata header of {} bytes for {count} entries (needs {})",
            header.len(),
            2 + 8 * usize::from(count)
        )));
    }
    let mut d = Cursor::new(data, type_name);
    let mut entries = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let key_size = h.u16("metadata key size")?;
        let encoding = h.u16("metadata value encoding")?;
        let value_size = h.u32("metadata value size")?;
        let key = d.take(usize::from(key_size), "metadata key")?;
        let key = std::str::from_utf8(key)
            .map_err(|_| d.malformed("metadata key is not UTF-8"))?
            .to_owned();
        let value = d
            .take_u64(u64::from(value_size), "metadata value")?
            .to_vec();
        entries.push(MetaEntry {
            key,
            encoding,
            value,
        });
    }
    if d.remaining() != 0 {
        return Err(d.malformed(format!(
            "{} metadata bytes not covered by the metadata header",
            d.remaining()
        )));
    }
    Ok(entries)
}

/// Decodes the message at the start of `bytes`; returns it and the bytes it took
/// (58 + BODY_SIZE). Order of checks: header length, BODY_SIZE against the limit,
/// body length, names, CRC, body layout.
pub fn decode(bytes: &[u8], opts: &DecodeOptions) -> Result<(Message, usize)> {
    let body_size = checked_body_size(bytes, opts)?;
    let total = (HEADER_SIZE as u64).saturating_add(body_size);
    let frame = usize::try_from(total)
        .ok()
        .and_then(|t| bytes.get(..t))
        .ok_or(IgtlError::Truncated {
            needed: total,
            available: bytes.len() as u64,
        })?;
    let header = Header::parse(frame)?;
    let body = frame.get(HEADER_SIZE..).unwrap_or_default();
    let message = check_and_build(&header, body, opts)?;
    Ok((message, frame.len()))
}

/// BODY_SIZE from the first 58 bytes, checked against the limit.
fn checked_body_size(bytes: &[u8], opts: &DecodeOptions) -> Result<u64> {
    let body_size = raw_body_size(bytes.get(..HEADER_SIZE).unwrap_or_default()).ok_or(
        IgtlError::Truncated {
            needed: HEADER_SIZE as u64,
            available: bytes.len() as u64,
        },
    )?;
    if body_size > opts.max_body_bytes {
        return Err(IgtlError::BodyTooLarge {
            claimed: body_size,
            limit: opts.max_body_bytes,
        });
    }
    Ok(body_size)
}

fn check_and_build(header: &Header, body: &[u8], opts: &DecodeOptions) -> Result<Message> {
    if opts.verify_crc {
        let computed = crc64(body);
        if computed != header.crc {
            return Err(IgtlError::CrcMismatch {
                expected: header.crc,
                computed,
                type_name: header.type_name.clone(),
                device_name: header.device_name.clone(),
            });
        }
    }
    Message::from_parts(header, body)
}

/// Reads one message: the 58-byte header, then exactly BODY_SIZE bytes once BODY_SIZE
/// has passed the limit (the buffer grows with the bytes that actually arrive).
pub fn read_message<R: Read>(reader: &mut R, opts: &DecodeOptions) -> Result<Message> {
    let mut head = [0u8; HEADER_SIZE];
    let mut got = 0;
    while got < HEADER_SIZE {
        let slot = head.get_mut(got..).unwrap_or_default();
        match reader.read(slot) {
            Ok(0) if got == 0 => {
                return Err(IgtlError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "stream ended between messages",
                )))
            }
            Ok(0) => {
                return Err(IgtlError::Truncated {
                    needed: HEADER_SIZE as u64,
                    available: got as u64,
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(IgtlError::Io(e)),
        }
    }
    let body_size = checked_body_size(&head, opts)?;
    let mut body = Vec::new();
    reader.take(body_size).read_to_end(&mut body)?;
    if (body.len() as u64) < body_size {
        return Err(IgtlError::Truncated {
            needed: (HEADER_SIZE as u64).saturating_add(body_size),
            available: (HEADER_SIZE + body.len()) as u64,
        });
    }
    let header = Header::parse(&head)?;
    check_and_build(&header, &body, opts)
}

/// Encodes a message: BODY_SIZE and CRC-64 filled in; header version 2 writes the
/// extended header and metadata around the content.
pub fn encode(message: &Message) -> Result<Vec<u8>> {
    let type_name = message.type_name();
    let content = message.body.encode()?;
    let body = if message.version >= 2 {
        let default = Extended::default();
        let ext = message.extended.as_ref().unwrap_or(&default);
        wrap_extended(&type_name, ext, content)?
    } else {
        if message.extended.is_some() {
            return Err(IgtlError::unencodable(
                &type_name,
                "extended header / metadata need header version 2",
            ));
        }
        content
    };
    let header = Header {
        version: message.version,
        type_name: type_name.into_owned(),
        device_name: message.device_name.clone(),
        timestamp: message.timestamp,
        body_size: body.len() as u64,
        crc: crc64(&body),
    };
    let mut out = Vec::with_capacity(HEADER_SIZE + body.len());
    out.extend_from_slice(&header.to_bytes()?);
    out.extend_from_slice(&body);
    Ok(out)
}

fn wrap_extended(type_name: &str, ext: &Extended, content: Vec<u8>) -> Result<Vec<u8>> {
    let mut meta_header = Writer::new(type_name);
    let mut meta = Writer::new(type_name);
    let count = meta_header.len_u16(ext.metadata.len(), "metadata entry count")?;
    meta_header.u16(count);
    for e in &ext.metadata {
        let key_size = meta_header.len_u16(e.key.len(), "metadata key")?;
        let value_size = meta_header.len_u32(e.value.len(), "metadata value")?;
        meta_header.u16(key_size);
        meta_header.u16(e.encoding);
        meta_header.u32(value_size);
        meta.bytes(e.key.as_bytes());
        meta.bytes(&e.value);
    }
    let mut w = Writer::new(type_name);
    let ext_size = w.len_u16(
        EXT_HEADER_SIZE + ext.ext_header_extra.len(),
        "extended header",
    )?;
    let meta_header_size = w.len_u16(meta_header.out.len(), "metadata header")?;
    let meta_size = w.len_u32(meta.out.len(), "metadata")?;
    w.u16(ext_size);
    w.u16(meta_header_size);
    w.u32(meta_size);
    w.u32(ext.msg_id);
    w.bytes(&ext.ext_header_extra);
    w.bytes(&content);
    w.bytes(&meta_header.out);
    w.bytes(&meta.out);
    Ok(w.out)
}
