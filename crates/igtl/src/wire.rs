//! Bounds-checked big-endian reading and writing. Every read goes through [`Cursor`],
//! which returns `Malformed` instead of indexing past the end.

use crate::error::{IgtlError, Result};

/// Reads big-endian fields from one message part; errors name the message type.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    type_name: &'a str,
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8], type_name: &'a str) -> Self {
        Self {
            buf,
            pos: 0,
            type_name,
        }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn malformed(&self, what: impl Into<String>) -> IgtlError {
        IgtlError::malformed(self.type_name, what)
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.buf.get(self.pos..end)) {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => Err(self.malformed(format!(
                "{what} needs {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            ))),
        }
    }

    /// The next `n` bytes where `n` comes from the message (u64): bounded by what is left.
    pub fn take_u64(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        match usize::try_from(n) {
            Ok(n) => self.take(n, what),
            Err(_) => Err(self.malformed(format!("{what} claims {n} bytes"))),
        }
    }

    /// Everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        self.pos = self.buf.len();
        rest
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    pub fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    pub fn i64(&mut self, what: &str) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }
    pub fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_be_bytes(self.array(what)?))
    }
    pub fn f32s<const N: usize>(&mut self, what: &str) -> Result<[f32; N]> {
        let mut out = [0f32; N];
        for v in out.iter_mut() {
            *v = self.f32(what)?;
        }
        Ok(out)
    }
    pub fn u16s<const N: usize>(&mut self, what: &str) -> Result<[u16; N]> {
        let mut out = [0u16; N];
        for v in out.iter_mut() {
            *v = self.u16(what)?;
        }
        Ok(out)
    }

    /// A NUL-padded text field of `n` bytes: the text up to the first NUL, UTF-8.
    pub fn fixed_str(&mut self, n: usize, what: &str) -> Result<String> {
        let bytes = self.take(n, what)?;
        text_until_nul(bytes).ok_or_else(|| self.malformed(format!("{what} is not UTF-8")))
    }
}

/// The bytes up to the first NUL (or all of them) as UTF-8 text.
pub(crate) fn text_until_nul(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(bytes.get(..end)?)
        .ok()
        .map(str::to_owned)
}

/// Writes big-endian fields; errors name the message type.
pub(crate) struct Writer<'a> {
    pub out: Vec<u8>,
    type_name: &'a str,
}

impl<'a> Writer<'a> {
    pub fn new(type_name: &'a str) -> Self {
        Self {
            out: Vec::new(),
            type_name,
        }
    }
    pub fn fail(&self, what: impl Into<String>) -> IgtlError {
        IgtlError::unencodable(self.type_name, what)
    }
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    pub fn f32s(&mut self, values: &[f32]) {
        for v in values {
            self.out.extend_from_slice(&v.to_be_bytes());
        }
    }
    pub fn u16s(&mut self, values: &[u16]) {
        for v in values {
            self.u16(*v);
        }
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.out.extend_from_slice(b);
    }
    /// A length that must fit in a u16 field.
    pub fn len_u16(&self, len: usize, what: &str) -> Result<u16> {
        u16::try_from(len).map_err(|_| self.fail(format!("{what} is {len} bytes (max 65535)")))
    }
    /// A length that must fit in a u32 field.
    pub fn len_u32(&self, len: usize, what: &str) -> Result<u32> {
        u32::try_from(len)
            .map_err(|_| self.fail(format!("{what} is {len} bytes (max {})", u32::MAX)))
    }
    /// Text into a NUL-padded field of `n` bytes (it may fill the field completely).
    pub fn fixed_str(&mut self, s: &str, n: usize, what: &str) -> Result<()> {
        check_fixed(s, n, what).map_err(|e| self.fail(e))?;
        self.out.extend_from_slice(s.as_bytes());
        self.out.resize(self.out.len() + (n - s.len()), 0);
        Ok(())
    }
}

/// Whether `s` fits a NUL-padded field of `n` bytes and reads back unchanged.
pub(crate) fn check_fixed(s: &str, n: usize, what: &str) -> Result<(), String> {
    if s.len() > n {
        return Err(format!("{what} '{s}' is {} bytes (max {n})", s.len()));
    }
    if s.contains('\0') {
        return Err(format!("{what} contains a NUL byte"));
    }
    Ok(())
}
