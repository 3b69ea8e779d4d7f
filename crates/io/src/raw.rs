//! Raw voxel buffers ↔ typed volumes, either byte order.

use pinhole_volume::{DataLengthMismatch, Grid, Volume, Voxel};

use crate::image::{AnyVolume, ScalarType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    Little,
    Big,
}

/// Fixed-size voxel encodings.
pub trait Sample: Voxel {
    const SIZE: usize;
    fn read(bytes: &[u8], endian: Endian) -> Self;
    fn write_le(self, out: &mut Vec<u8>);
}

macro_rules! sample {
    ($($t:ty),*) => {$(
        impl Sample for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn read(bytes: &[u8], endian: Endian) -> Self {
                let mut b = [0u8; std::mem::size_of::<$t>()];
                b.copy_from_slice(&bytes[..Self::SIZE]);
                match endian {
                    Endian::Little => <$t>::from_le_bytes(b),
                    Endian::Big => <$t>::from_be_bytes(b),
                }
            }
            #[inline]
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
sample!(u8, i8, u16, i16, u32, i32, f32, f64);

fn decode_typed<T: Sample>(
    grid: Grid,
    bytes: &[u8],
    endian: Endian,
) -> Result<Volume<T>, DataLengthMismatch>
where
{
    let expected = grid.voxel_count();
    if bytes.len() != expected * T::SIZE {
        return Err(DataLengthMismatch {
            expected: expected * T::SIZE,
            found: bytes.len(),
        });
    }
    let data = bytes
        .chunks_exact(T::SIZE)
        .map(|c| T::read(c, endian))
        .collect();
    Volume::new(grid, data)
}

/// Decodes exactly `grid.voxel_count()` samples of `scalar` from `bytes`.
pub fn decode_samples(
    grid: Grid,
    bytes: &[u8],
    scalar: ScalarType,
    endian: Endian,
) -> Result<AnyVolume, DataLengthMismatch> {
    Ok(match scalar {
        ScalarType::U8 => AnyVolume::U8(decode_typed(grid, bytes, endian)?),
        ScalarType::I8 => AnyVolume::I8(decode_typed(grid, bytes, endian)?),
        ScalarType::U16 => AnyVolume::U16(decode_typed(grid, bytes, endian)?),
        ScalarType::I16 => AnyVolume::I16(decode_typed(grid, bytes, endian)?),
        ScalarType::U32 => AnyVolume::U32(decode_typed(grid, bytes, endian)?),
        ScalarType::I32 => AnyVolume::I32(decode_typed(grid, bytes, endian)?),
        ScalarType::F32 => AnyVolume::F32(decode_typed(grid, bytes, endian)?),
        ScalarType::F64 => AnyVolume::F64(decode_typed(grid, bytes, endian)?),
    })
}

/// Why [`read_samples`] stopped.
#[derive(Debug)]
pub enum ReadSamplesError {
    /// The stream ended after `found` of the `expected` bytes.
    Short { expected: u64, found: u64 },
    /// The stream failed (a corrupt gzip stream, an I/O error).
    Io(std::io::Error),
}

/// Bytes read per step of [`read_samples`] (the only buffer besides the volume's).
const READ_CHUNK_BYTES: usize = 1 << 20;

fn read_typed<T: Sample>(
    grid: Grid,
    reader: &mut dyn std::io::Read,
    endian: Endian,
) -> Result<Volume<T>, ReadSamplesError> {
    let count = grid.voxel_count();
    let expected = count as u64 * T::SIZE as u64;
    let mut data: Vec<T> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES / T::SIZE * T::SIZE];
    while data.len() < count {
        let want = ((count - data.len()) * T::SIZE).min(chunk.len());
        let got = fill(reader, &mut chunk[..want]).map_err(ReadSamplesError::Io)?;
        data.extend(
            chunk[..got - got % T::SIZE]
                .chunks_exact(T::SIZE)
                .map(|c| T::read(c, endian)),
        );
        if got < want {
            return Err(ReadSamplesError::Short {
                expected,
                found: (data.len() * T::SIZE + got % T::SIZE) as u64,
            });
        }
    }
    Volume::new(grid, data).map_err(|e| {
        ReadSamplesError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.to_string(),
        ))
    })
}

/// Reads into `buf` until it is full or the stream ends; the number of bytes read.
fn fill(reader: &mut dyn std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads exactly `grid.voxel_count()` samples of `scalar` from a stream. The volume's
/// buffer grows only as bytes arrive (a header's claim allocates nothing), and no copy
/// of the encoded bytes is kept: peak memory is the volume plus 1 MiB.
pub fn read_samples(
    grid: Grid,
    reader: &mut dyn std::io::Read,
    scalar: ScalarType,
    endian: Endian,
) -> Result<AnyVolume, ReadSamplesError> {
    Ok(match scalar {
        ScalarType::U8 => AnyVolume::U8(read_typed(grid, reader, endian)?),
        ScalarType::I8 => AnyVolume::I8(read_typed(grid, reader, endian)?),
        ScalarType::U16 => AnyVolume::U16(read_typed(grid, reader, endian)?),
        ScalarType::I16 => AnyVolume::I16(read_typed(grid, reader, endian)?),
        ScalarType::U32 => AnyVolume::U32(read_typed(grid, reader, endian)?),
        ScalarType::I32 => AnyVolume::I32(read_typed(grid, reader, endian)?),
        ScalarType::F32 => AnyVolume::F32(read_typed(grid, reader, endian)?),
        ScalarType::F64 => AnyVolume::F64(read_typed(grid, reader, endian)?),
    })
}

/// Appends the samples little-endian.
pub fn encode_samples<T: Sample>(data: &[T], out: &mut Vec<u8>) {
    out.reserve(data.len() * T::SIZE);
    for &v in data {
        v.write_le(out);
    }
}
