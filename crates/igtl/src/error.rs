//! One error type for decoding and encoding.

/// What went wrong while decoding or encoding a message.
///
/// Framing after an error: `decode` and `read_message` check BODY_SIZE against the limit
/// and then take the whole body before anything else is checked, so after
/// [`CrcMismatch`](IgtlError::CrcMismatch) or [`Malformed`](IgtlError::Malformed) the
/// stream is still aligned on the next message (with `decode`, skip
/// `HEADER_SIZE + header.body_size` bytes). After `Truncated`, `BodyTooLarge` or `Io`
/// it is not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IgtlError {
    /// The bytes (or the stream) end before the header or the body does.
    #[error("truncated message: {needed} bytes needed, {available} available")]
    Truncated { needed: u64, available: u64 },
    /// The header claims a body larger than [`DecodeOptions::max_body_bytes`](crate::DecodeOptions).
    /// Raised before anything is allocated for the body.
    #[error("body size {claimed} exceeds the limit of {limit} bytes")]
    BodyTooLarge { claimed: u64, limit: u64 },
    /// The CRC-64 in the header does not match the body.
    #[error("CRC mismatch in {type_name} message from '{device_name}': header says {expected:#018x}, body gives {computed:#018x}")]
    CrcMismatch {
        expected: u64,
        computed: u64,
        type_name: String,
        device_name: String,
    },
    /// The header or body does not follow the layout of its type.
    #[error("malformed {type_name} message: {what}")]
    Malformed { type_name: String, what: String },
    /// A message that cannot be put on the wire (a name too long for its field, a
    /// pixel buffer of the wrong size, metadata in a header version 1 message …).
    #[error("cannot encode {type_name} message: {what}")]
    Unencodable { type_name: String, what: String },
    /// The reader failed. `read_message` reports a stream that ends cleanly between
    /// two messages as `Io` with kind `UnexpectedEof` (see [`IgtlError::is_clean_eof`])
    /// and one that ends inside a message as `Truncated`.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl IgtlError {
    /// True when a reader ended exactly at a message boundary (the peer closed the
    /// connection between messages).
    pub fn is_clean_eof(&self) -> bool {
        matches!(self, IgtlError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
    }

    pub(crate) fn malformed(type_name: &str, what: impl Into<String>) -> Self {
        IgtlError::Malformed {
            type_name: type_name.to_owned(),
            what: what.into(),
        }
    }

    pub(crate) fn unencodable(type_name: &str, what: impl Into<String>) -> Self {
        IgtlError::Unencodable {
            type_name: type_name.to_owned(),
            what: what.into(),
        }
    }
}

pub type Result<T, E = IgtlError> = std::result::Result<T, E>;
