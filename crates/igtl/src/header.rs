//! The 58-byte message header and the 32.32 fixed-point timestamp.

use crate::error::{IgtlError, Result};
use crate::wire::{Cursor, Writer};

/// Size of the header that starts every message.
pub const HEADER_SIZE: usize = 58;
/// Bytes of the TYPE field.
pub const TYPE_NAME_SIZE: usize = 12;
/// Bytes of the DEVICE_NAME field.
pub const DEVICE_NAME_SIZE: usize = 20;

/// Seconds since 1970-01-01 as unsigned 32.32 fixed point (upper 32 bits: whole
/// seconds, lower 32 bits: fraction of a second in units of 2⁻³² s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

const FRAC: f64 = 4_294_967_296.0; // 2^32

impl Timestamp {
    /// The current system time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        Timestamp(((d.as_secs() & 0xFFFF_FFFF) << 32) | frac)
    }

    /// From seconds since 1970; negative, NaN and out-of-range values saturate.
    pub fn from_secs_f64(seconds: f64) -> Self {
        if seconds.is_nan() || seconds <= 0.0 {
            return Timestamp(0);
        }
        let fixed = (seconds * FRAC).round();
        if fixed >= u64::MAX as f64 {
            Timestamp(u64::MAX)
        } else {
            Timestamp(fixed as u64)
        }
    }

    /// Seconds since 1970.
    pub fn as_secs_f64(self) -> f64 {
        self.seconds() as f64 + f64::from(self.fraction()) / FRAC
    }

    /// Whole seconds.
    pub fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Fraction of a second in units of 2⁻³² s.
    pub fn fraction(self) -> u32 {
        (self.0 & 0xFFFF_FFFF) as u32
    }
}

/// A parsed message header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 1: protocol v1/v2 layout; 2: protocol v3 (extended header and metadata in the body).
    pub version: u16,
    pub type_name: String,
    pub device_name: String,
    pub timestamp: Timestamp,
    pub body_size: u64,
    pub crc: u64,
}

impl Header {
    /// Parses the first 58 bytes of `bytes` (big-endian, NUL-padded names, which must be
    /// UTF-8; text after the first NUL is ignored).
    pub fn parse(bytes: &[u8]) -> Result<Header> {
        let head = bytes.get(..HEADER_SIZE).ok_or(IgtlError::Truncated {
            needed: HEADER_SIZE as u64,
            available: bytes.len() as u64,
        })?;
        let type_field = head.get(2..2 + TYPE_NAME_SIZE).unwrap_or_default();
        let lossy_type = String::from_utf8_lossy(type_field);
        let lossy_type = lossy_type.trim_end_matches('\0');
        let mut c = Cursor::new(head, lossy_type);
        let version = c.u16("version")?;
        let type_name = c.fixed_str(TYPE_NAME_SIZE, "type name")?;
        let device_name = c.fixed_str(DEVICE_NAME_SIZE, "device name")?;
        let timestamp = Timestamp(u64_be(c.take(8, "timestamp")?));
        let body_size = u64_be(c.take(8, "body size")?);
        let crc = u64_be(c.take(8, "CRC")?);
        Ok(Header {
            version,
            type_name,
            device_name,
            timestamp,
            body_size,
            crc,
        })
    }

    /// The 58 header bytes.
    pub fn to_bytes(&self) -> Result<[u8; HEADER_SIZE]> {
        let mut w = Writer::new(&self.type_name);
        w.u16(self.version);
        w.fixed_str(&self.type_name, TYPE_NAME_SIZE, "type name")?;
        w.fixed_str(&self.device_name, DEVICE_NAME_SIZE, "device name")?;
        w.bytes(&self.timestamp.0.to_be_bytes());
        w.bytes(&self.body_size.to_be_bytes());
        w.bytes(&self.crc.to_be_bytes());
        let mut out = [0u8; HEADER_SIZE];
        if w.out.len() != HEADER_SIZE {
            return Err(w.fail("header is not 58 bytes"));
        }
        out.copy_from_slice(&w.out);
        Ok(out)
    }
}

/// BODY_SIZE read straight from the raw header (no name validation), so that the size
/// limit is checked first.
pub(crate) fn raw_body_size(head: &[u8]) -> Option<u64> {
    head.get(42..50).map(u64_be)
}

fn u64_be(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trip() {
        let t = Timestamp::from_secs_f64(1_700_000_000.25);
        assert_eq!(t.seconds(), 1_700_000_000);
        assert_eq!(t.fraction(), 1 << 30);
        assert_eq!(t.as_secs_f64(), 1_700_000_000.25);
        assert_eq!(Timestamp::from_secs_f64(-1.0), Timestamp(0));
        assert_eq!(Timestamp::from_secs_f64(f64::NAN), Timestamp(0));
        assert_eq!(Timestamp::from_secs_f64(1e30), Timestamp(u64::MAX));
    }
}
