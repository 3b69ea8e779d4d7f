//! A volume whose voxel type is known only at run time, as read from a file.

use pinhole_volume::{Grid, Volume, Voxel};

/// Scalar types Pinhole reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    F64,
}

impl ScalarType {
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "uint8",
            Self::I8 => "int8",
            Self::U16 => "uint16",
            Self::I16 => "int16",
            Self::U32 => "uint32",
            Self::I32 => "int32",
            Self::F32 => "float32",
            Self::F64 => "float64",
        }
    }
    pub fn size_bytes(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }
    pub fn is_integer(self) -> bool {
        !matches!(self, Self::F32 | Self::F64)
    }
}

/// A volume of any supported scalar type.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyVolume {
    U8(Volume<u8>),
    I8(Volume<i8>),
    U16(Volume<u16>),
    I16(Volume<i16>),
    U32(Volume<u32>),
    I32(Volume<i32>),
    F32(Volume<f32>),
    F64(Volume<f64>),
}

/// Calls `$body` with `$v` bound to the typed volume inside an [`AnyVolume`].
#[macro_export]
macro_rules! with_volume {
    ($any:expr, $v:ident => $body:expr) => {
        match $any {
            $crate::AnyVolume::U8($v) => $body,
            $crate::AnyVolume::I8($v) => $body,
            $crate::AnyVolume::U16($v) => $body,
            $crate::AnyVolume::I16($v) => $body,
            $crate::AnyVolume::U32($v) => $body,
            $crate::AnyVolume::I32($v) => $body,
            $crate::AnyVolume::F32($v) => $body,
            $crate::AnyVolume::F64($v) => $body,
        }
    };
}

impl AnyVolume {
    pub fn grid(&self) -> &Grid {
        with_volume!(self, v => v.grid())
    }

    pub fn scalar_type(&self) -> ScalarType {
        match self {
            Self::U8(_) => ScalarType::U8,
            Self::I8(_) => ScalarType::I8,
            Self::U16(_) => ScalarType::U16,
            Self::I16(_) => ScalarType::I16,
            Self::U32(_) => ScalarType::U32,
            Self::I32(_) => ScalarType::I32,
            Self::F32(_) => ScalarType::F32,
            Self::F64(_) => ScalarType::F64,
        }
    }

    /// Smallest and largest value; `None` when every voxel is NaN.
    pub fn min_max(&self) -> Option<(f64, f64)> {
        with_volume!(self, v => v.min_max())
    }

    /// Every voxel converted to `T` (rounded and saturated for integer `T`).
    pub fn to_volume<T: Voxel>(&self) -> Volume<T> {
        with_volume!(self, v => v.map(|x| T::from_f64(x.to_f64())))
    }

    /// As `f32` (CT in HU for rendering and planning).
    pub fn to_f32(&self) -> Volume<f32> {
        self.to_volume()
    }

    /// As a label map, when every value is a non-negative integer ≤ 65535.
    pub fn to_labels(&self) -> Option<Volume<u16>> {
        match self {
            Self::U8(v) => Some(v.map(u16::from)),
            Self::U16(v) => Some(v.clone()),
            Self::F32(_)
            | Self::F64(_)
            | Self::I8(_)
            | Self::I16(_)
            | Self::U32(_)
            | Self::I32(_) => {
                let (lo, hi) = self.min_max()?;
                let integral =
                    with_volume!(self, v => v.data().iter().all(|x| x.to_f64().fract() == 0.0));
                (lo >= 0.0 && hi <= f64::from(u16::MAX) && integral).then(|| self.to_volume())
            }
        }
    }

    /// True when this looks like a label map: an integer type, non-negative, ≤ 65535.
    pub fn looks_like_labels(&self) -> bool {
        self.scalar_type().is_integer()
            && self
                .min_max()
                .is_some_and(|(lo, hi)| lo >= 0.0 && hi <= f64::from(u16::MAX) && hi < 2048.0)
    }
}

macro_rules! from_volume {
    ($($t:ty => $variant:ident),*) => {$(
        impl From<Volume<$t>> for AnyVolume {
            fn from(v: Volume<$t>) -> Self {
                Self::$variant(v)
            }
        }
    )*};
}
from_volume!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32, f64 => F64);
