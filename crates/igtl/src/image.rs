//! IMAGE: the 72-byte image header and the pixels, with the geometry helpers.
//!
//! Geometry on the wire: T, S, N are the i, j, k axis directions multiplied by the
//! spacing (the columns of the 3×3 part of IJK→world), and P is the world position of
//! the volume's centre, `origin + M·(size − 1)/2` (as pyigtl and OpenIGTLinkIO compute
//! it), for the full volume `size`, not the sub-volume. The world frame is the one the
//! COORDINATE field names (1 RAS, 2 LPS). 3D Slicer (OpenIGTLinkIO) ignores that field
//! and always takes the matrix as IJK→RAS; pyigtl writes LPS by default.

use crate::error::Result;
use crate::wire::{Cursor, Writer};

/// Size of the image header at the start of an IMAGE body.
pub const IMAGE_HEADER_SIZE: usize = 72;

/// Pixel scalar type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarType {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    F32,
    F64,
}

impl ScalarType {
    /// The wire code (2 i8, 3 u8, 4 i16, 5 u16, 6 i32, 7 u32, 10 f32, 11 f64).
    pub fn code(self) -> u8 {
        match self {
            ScalarType::I8 => 2,
            ScalarType::U8 => 3,
            ScalarType::I16 => 4,
            ScalarType::U16 => 5,
            ScalarType::I32 => 6,
            ScalarType::U32 => 7,
            ScalarType::F32 => 10,
            ScalarType::F64 => 11,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            2 => ScalarType::I8,
            3 => ScalarType::U8,
            4 => ScalarType::I16,
            5 => ScalarType::U16,
            6 => ScalarType::I32,
            7 => ScalarType::U32,
            10 => ScalarType::F32,
            11 => ScalarType::F64,
            _ => return None,
        })
    }

    /// Bytes per scalar.
    pub fn size(self) -> usize {
        match self {
            ScalarType::I8 | ScalarType::U8 => 1,
            ScalarType::I16 | ScalarType::U16 => 2,
            ScalarType::I32 | ScalarType::U32 | ScalarType::F32 => 4,
            ScalarType::F64 => 8,
        }
    }
}

/// Byte order of the pixels (every other field is big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endian {
    Big,
    Little,
    /// Kept as sent.
    Other(u8),
}

impl Endian {
    pub fn code(self) -> u8 {
        match self {
            Endian::Big => 1,
            Endian::Little => 2,
            Endian::Other(c) => c,
        }
    }
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Endian::Big,
            2 => Endian::Little,
            c => Endian::Other(c),
        }
    }
}

/// The world frame the matrix maps into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coordinate {
    Ras,
    Lps,
    /// Kept as sent; treated as RAS (the C++ library's default, what Slicer assumes).
    Other(u8),
}

impl Coordinate {
    pub fn code(self) -> u8 {
        match self {
            Coordinate::Ras => 1,
            Coordinate::Lps => 2,
            Coordinate::Other(c) => c,
        }
    }
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Coordinate::Ras,
            2 => Coordinate::Lps,
            c => Coordinate::Other(c),
        }
    }
}

/// An IMAGE body.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBody {
    /// Image header version (1).
    pub version: u16,
    /// Components per pixel (interleaved).
    pub components: u8,
    pub scalar_type: ScalarType,
    pub endian: Endian,
    pub coordinate: Coordinate,
    /// RI RJ RK: the full volume.
    pub size: [u16; 3],
    /// T, S, N: the i, j, k axis directions × spacing, in the `coordinate` frame (mm).
    pub axes: [[f32; 3]; 3],
    /// P: the centre of the full volume.
    pub centre: [f32; 3],
    /// DI DJ DK: index of the first voxel sent.
    pub subvolume_offset: [u16; 3],
    /// DRI DRJ DRK: extent of the voxels sent.
    pub subvolume_size: [u16; 3],
    /// DRI × DRJ × DRK × components scalars, i fastest, in `endian` order.
    pub pixels: Vec<u8>,
}

impl ImageBody {
    /// A whole volume (no sub-volume) from its IJK→world matrix (row-major 4×4, world =
    /// `coordinate` frame) and its pixels in `endian` order.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        size: [u16; 3],
        scalar_type: ScalarType,
        components: u8,
        endian: Endian,
        coordinate: Coordinate,
        ijk_to_world: &[[f64; 4]; 4],
        pixels: Vec<u8>,
    ) -> Self {
        let mut axes = [[0f32; 3]; 3];
        for a in 0..3 {
            for r in 0..3 {
                axes[a][r] = ijk_to_world[r][a] as f32;
            }
        }
        let half = size.map(|s| (f64::from(s) - 1.0) / 2.0);
        let mut centre = [0f32; 3];
        for r in 0..3 {
            let m = &ijk_to_world[r];
            centre[r] = (m[3] + m[0] * half[0] + m[1] * half[1] + m[2] * half[2]) as f32;
        }
        Self {
            version: 1,
            components,
            scalar_type,
            endian,
            coordinate,
            size,
            axes,
            centre,
            subvolume_offset: [0; 3],
            subvolume_size: size,
            pixels,
        }
    }

    /// IJK (of the full volume) → world in the frame `coordinate` names, row-major 4×4.
    pub fn ijk_to_world(&self) -> [[f64; 4]; 4] {
        let mut m = [[0.0; 4]; 4];
        for a in 0..3 {
            for r in 0..3 {
                m[r][a] = f64::from(self.axes[a][r]);
            }
        }
        let half = self.size.map(|s| (f64::from(s) - 1.0) / 2.0);
        for r in 0..3 {
            m[r][3] = f64::from(self.centre[r])
                - (m[r][0] * half[0] + m[r][1] * half[1] + m[r][2] * half[2]);
        }
        m[3][3] = 1.0;
        m
    }

    /// IJK → RAS, honouring the COORDINATE field (an LPS matrix is flipped in x and y).
    /// Slicer instead always uses [`ijk_to_world`](Self::ijk_to_world) as IJK→RAS.
    pub fn ijk_to_ras(&self) -> [[f64; 4]; 4] {
        let m = self.ijk_to_world();
        match self.coordinate {
            Coordinate::Lps => flip_xy(m),
            Coordinate::Ras | Coordinate::Other(_) => m,
        }
    }

    /// IJK → LPS, honouring the COORDINATE field.
    pub fn ijk_to_lps(&self) -> [[f64; 4]; 4] {
        let m = self.ijk_to_world();
        match self.coordinate {
            Coordinate::Lps => m,
            Coordinate::Ras | Coordinate::Other(_) => flip_xy(m),
        }
    }

    /// Spacing along i, j, k (mm): the lengths of T, S, N.
    pub fn spacing(&self) -> [f64; 3] {
        self.axes
            .map(|a| a.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt())
    }

    /// Pixel bytes the header calls for: DRI·DRJ·DRK·components·scalar size.
    pub fn expected_pixel_bytes(&self) -> u64 {
        self.subvolume_size
            .iter()
            .fold(u64::from(self.components), |n, &s| n * u64::from(s))
            * self.scalar_type.size() as u64
    }

    fn check(&self) -> Result<(), String> {
        for a in 0..3 {
            let end = u32::from(self.subvolume_offset[a]) + u32::from(self.subvolume_size[a]);
            if end > u32::from(self.size[a]) {
                return Err(format!(
                    "sub-volume {}+{} exceeds the size {} along axis {a}",
                    self.subvolume_offset[a], self.subvolume_size[a], self.size[a]
                ));
            }
        }
        let expected = self.expected_pixel_bytes();
        if expected != self.pixels.len() as u64 {
            return Err(format!(
                "{} pixel bytes, the image header calls for {expected}",
                self.pixels.len()
            ));
        }
        Ok(())
    }

    pub(crate) fn read(c: &mut Cursor<'_>) -> Result<Self> {
        let version = c.u16("image header version")?;
        let components = c.u8("components")?;
        let scalar = c.u8("scalar type")?;
        let scalar_type = ScalarType::from_code(scalar)
            .ok_or_else(|| c.malformed(format!("unknown scalar type {scalar}")))?;
        let endian = Endian::from_code(c.u8("endian")?);
        let coordinate = Coordinate::from_code(c.u8("coordinate")?);
        let size = c.u16s::<3>("size")?;
        let mut axes = [[0f32; 3]; 3];
        for axis in axes.iter_mut() {
            *axis = c.f32s::<3>("matrix")?;
        }
        let centre = c.f32s::<3>("centre")?;
        let subvolume_offset = c.u16s::<3>("sub-volume offset")?;
        let subvolume_size = c.u16s::<3>("sub-volume size")?;
        let pixels = c.rest().to_vec();
        let image = Self {
            version,
            components,
            scalar_type,
            endian,
            coordinate,
            size,
            axes,
            centre,
            subvolume_offset,
            subvolume_size,
            pixels,
        };
        image.check().map_err(|e| c.malformed(e))?;
        Ok(image)
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<()> {
        self.check().map_err(|e| w.fail(e))?;
        w.u16(self.version);
        w.u8(self.components);
        w.u8(self.scalar_type.code());
        w.u8(self.endian.code());
        w.u8(self.coordinate.code());
        w.u16s(&self.size);
        for axis in &self.axes {
            w.f32s(axis);
        }
        w.f32s(&self.centre);
        w.u16s(&self.subvolume_offset);
        w.u16s(&self.subvolume_size);
        w.bytes(&self.pixels);
        Ok(())
    }
}

fn flip_xy(mut m: [[f64; 4]; 4]) -> [[f64; 4]; 4] {
    for r in 0..2 {
        for c in 0..4 {
            m[r][c] = -m[r][c];
        }
    }
    m
}
