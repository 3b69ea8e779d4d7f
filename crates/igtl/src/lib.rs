//! OpenIGTLink codec: header version 1 and 2 (protocol v3 extended header, metadata and
//! message id), CRC-64/ECMA-182, all big-endian. Synchronous and allocation-bounded:
//! a header claiming more than [`DecodeOptions::max_body_bytes`] is rejected before
//! anything is allocated for its body. No input panics.
//!
//! Types interpreted: TRANSFORM, POSITION, IMAGE, STATUS, STRING, POINT, TDATA,
//! POLYDATA, CAPABILITY, COMMAND, RTS_COMMAND and the GET_/STT_/STP_/RTS_ queries. Any
//! other type decodes as [`Body::Raw`] and re-encodes byte-identical.
//!
//! ```
//! use pinhole_igtl::{decode, encode, Body, DecodeOptions, Message, Transform};
//! let mut m = [[0.0; 4]; 4];
//! for i in 0..4 { m[i][i] = 1.0; }
//! m[0][3] = 10.0;
//! let msg = Message::new("NeedleTipToReference", Body::Transform(Transform::from_matrix(&m)));
//! let bytes = encode(&msg)?;
//! let (back, used) = decode(&bytes, &DecodeOptions::default())?;
//! assert_eq!((back, used), (msg, bytes.len()));
//! # Ok::<(), pinhole_igtl::IgtlError>(())
//! ```

mod body;
mod crc;
mod error;
mod header;
mod image;
mod message;
mod wire;

pub use body::{
    encoding_for, Body, CellArray, Command, PointItem, PolyData, Position, PositionForm, Query,
    QueryKind, Status, StringBody, TDataItem, Transform, ENCODING_ASCII, ENCODING_UTF8,
};
pub use crc::crc64;
pub use error::{IgtlError, Result};
pub use header::{Header, Timestamp, DEVICE_NAME_SIZE, HEADER_SIZE, TYPE_NAME_SIZE};
pub use image::{Coordinate, Endian, ImageBody, ScalarType, IMAGE_HEADER_SIZE};
pub use message::{
    decode, encode, read_message, DecodeOptions, Extended, Message, MetaEntry, EXT_HEADER_SIZE,
};
