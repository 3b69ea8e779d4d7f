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

/// Appends the samples little-endian.
pub fn encode_samples<T: Sample>(data: &[T], out: &mut Vec<u8>) {
    out.reserve(data.len() * T::SIZE);
    for &v in data {
        v.write_le(out);
    }
}
