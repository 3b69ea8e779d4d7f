//! X-ray images for 2D/3D registration, chosen by content: PNG (8/16-bit grey, grey +
//! alpha, RGB(A) as Rec. 601 luminance), a single DICOM file (X-ray, XA, CR, DX, RF or
//! secondary capture; greyscale, modality LUT applied; the first frame, or the one
//! chosen with [`read_frame`] for cine XA / RF / DX) and otherwise a 2-D NIfTI (one
//! slice; `i` = column, `j` = row, as `pinhole drr --out-raw` writes).
//!
//! A DICOM file's acquisition geometry (SID, SOD, ImagerPixelSpacing, positioner
//! angles) comes with [`read_geometry`] as an [`XrayGeometry`]; values present but
//! unusable are ignored with a line in its `warnings`, which the caller must show.
//!
//! Every image comes back as [`Image2d`]: row-major, row 0 the displayed top. Nothing is
//! allocated because a header claims it: the DICOM path goes through [`crate::dicom`]'s
//! checked lengths and frame cap, NIfTI through [`crate::nifti`]'s bounds, and a PNG's
//! claimed pixel data must fit the deflate ratio of the file's size before decoding.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result, WithPath};
use crate::nifti::MAX_DEFLATE_RATIO;

pub use crate::dicom::XrayGeometry;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A greyscale 2-D image: `data[row * width + column]`, row 0 the displayed top.
#[derive(Debug, Clone, PartialEq)]
pub struct Image2d {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

impl Image2d {
    /// The value at (`column`, `row`); panics outside the image, like slice indexing.
    pub fn get(&self, column: usize, row: usize) -> f32 {
        self.data[row * self.width + column]
    }
}

/// The formats [`decode`] tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XrayFormat {
    Png,
    Dicom,
    Nifti,
}

/// The format of a file starting with `head`: the PNG signature, `DICM` at offset 128,
/// else NIfTI (plain or gzip-compressed).
pub fn sniff(head: &[u8]) -> XrayFormat {
    if head.starts_with(PNG_MAGIC) {
        XrayFormat::Png
    } else if head.get(128..132) == Some(b"DICM".as_slice()) {
        XrayFormat::Dicom
    } else {
        XrayFormat::Nifti
    }
}

/// Reads an X-ray image, choosing the format from the file's content.
pub fn read(path: &Path) -> Result<Image2d> {
    let bytes = std::fs::read(path).with_path(path)?;
    decode(&bytes, path)
}

/// [`read`] on bytes in memory; `origin` names them in errors.
pub fn decode(bytes: &[u8], origin: &Path) -> Result<Image2d> {
    match sniff(bytes) {
        XrayFormat::Png => decode_png(bytes, origin),
        XrayFormat::Dicom => decode_dicom(bytes, origin),
        XrayFormat::Nifti => decode_nifti(bytes, origin),
    }
}

/// Frame `frame` (0-based) of an X-ray image, choosing the format from the file's
/// content. PNG and NIfTI images hold one frame; an index at or beyond a DICOM file's
/// NumberOfFrames is refused, the error naming the file and the count.
pub fn read_frame(path: &Path, frame: usize) -> Result<Image2d> {
    let bytes = std::fs::read(path).with_path(path)?;
    decode_frame(&bytes, path, frame)
}

/// [`read_frame`] on bytes in memory; `origin` names them in errors.
pub fn decode_frame(bytes: &[u8], origin: &Path, frame: usize) -> Result<Image2d> {
    let format = sniff(bytes);
    if format == XrayFormat::Dicom {
        return decode_dicom_frame(bytes, origin, frame).map(|(image, _)| image);
    }
    if frame != 0 {
        return Err(Error::new(
            origin,
            ErrorKind::InvalidInput(format!(
                "frame {frame} requested, but a {} image holds 1 frame (frames are \
                 numbered from 0)",
                if format == XrayFormat::Png {
                    "PNG"
                } else {
                    "NIfTI"
                }
            )),
        ));
    }
    decode(bytes, origin)
}

/// The acquisition geometry of an X-ray file: `Some` for a DICOM file (every tag
/// optional), `None` for PNG and NIfTI, which record none. Reads the header, not the
/// pixels.
pub fn read_geometry(path: &Path) -> Result<Option<XrayGeometry>> {
    let bytes = std::fs::read(path).with_path(path)?;
    decode_geometry(&bytes, path)
}

/// [`read_geometry`] on bytes in memory; `origin` names them in errors.
pub fn decode_geometry(bytes: &[u8], origin: &Path) -> Result<Option<XrayGeometry>> {
    if sniff(bytes) != XrayFormat::Dicom {
        return Ok(None);
    }
    crate::dicom::read_geometry(bytes)
        .map(Some)
        .map_err(|kind| Error::new(origin, kind))
}

/// A PNG, 8 or 16 bits per sample; colour is converted to luminance (Rec. 601).
pub fn decode_png(bytes: &[u8], origin: &Path) -> Result<Image2d> {
    png_image(bytes).map_err(|kind| Error::new(origin, kind))
}

/// One DICOM file (with or without its preamble): the first frame, greyscale, modality
/// LUT applied.
pub fn decode_dicom(bytes: &[u8], origin: &Path) -> Result<Image2d> {
    decode_dicom_frame(bytes, origin, 0).map(|(image, _)| image)
}

/// Frame `frame` (0-based) of one DICOM file (with or without its preamble), greyscale,
/// modality LUT applied, with the file's geometry. An index at or beyond NumberOfFrames
/// is refused, naming the file and the count.
pub fn decode_dicom_frame(
    bytes: &[u8],
    origin: &Path,
    frame: usize,
) -> Result<(Image2d, XrayGeometry)> {
    let decoded = crate::dicom::decode_frame_rescaled(bytes, frame)
        .map_err(|kind| Error::new(origin, kind))?;
    Ok((
        Image2d {
            width: decoded.columns,
            height: decoded.rows,
            data: decoded.values,
        },
        decoded.geometry,
    ))
}

/// A 2-D NIfTI (`nz = 1`), plain or gzip-compressed.
pub fn decode_nifti(bytes: &[u8], origin: &Path) -> Result<Image2d> {
    let volume = crate::nifti::read_bytes(bytes).map_err(|kind| Error::new(origin, kind))?;
    let [width, height, depth] = volume.grid().dims();
    if depth != 1 {
        return Err(Error::new(
            origin,
            ErrorKind::Unsupported(format!(
                "expected a 2-D image, got {width}x{height}x{depth} voxels"
            )),
        ));
    }
    Ok(Image2d {
        width,
        height,
        data: volume.to_f32().into_data(),
    })
}

fn png_error(e: ::png::DecodingError) -> ErrorKind {
    ErrorKind::Png(e.to_string())
}

fn png_image(bytes: &[u8]) -> std::result::Result<Image2d, ErrorKind> {
    let mut decoder = ::png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(::png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(png_error)?;
    check_png_size(reader.info(), bytes.len())?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| ErrorKind::Png("PNG too large".into()))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(png_error)?;
    let (width, height) = (info.width as usize, info.height as usize);
    let channels = match info.color_type {
        ::png::ColorType::Grayscale => 1,
        ::png::ColorType::GrayscaleAlpha => 2,
        ::png::ColorType::Rgb => 3,
        ::png::ColorType::Rgba => 4,
        ::png::ColorType::Indexed => {
            return Err(ErrorKind::Png("indexed PNG was not expanded".into()))
        }
    };
    let bytes_per_sample = match info.bit_depth {
        ::png::BitDepth::Sixteen => 2,
        ::png::BitDepth::Eight => 1,
        d => {
            return Err(ErrorKind::UnsupportedDatatype(format!(
                "PNG bit depth {d:?}"
            )))
        }
    };
    let data = luminance(&buf, width * height, channels, bytes_per_sample)
        .ok_or_else(|| ErrorKind::Truncated("PNG frame shorter than its size".into()))?;
    Ok(Image2d {
        width,
        height,
        data,
    })
}

/// Refuses a PNG whose header claims more filtered image data than deflate can make of
/// the whole file (`MAX_DEFLATE_RATIO`), before the output buffer is allocated.
fn check_png_size(info: &::png::Info, file_bytes: usize) -> std::result::Result<(), ErrorKind> {
    let bits_per_pixel = info.bits_per_pixel() as u128;
    let row_bytes = 1 + (u128::from(info.width) * bits_per_pixel).div_ceil(8);
    let claimed = u128::from(info.height) * row_bytes;
    let available = file_bytes as u128 * u128::from(MAX_DEFLATE_RATIO);
    if claimed > available {
        return Err(ErrorKind::SizeExceedsFile {
            claimed: u64::try_from(claimed).unwrap_or(u64::MAX),
            available: u64::try_from(available).unwrap_or(u64::MAX),
        });
    }
    Ok(())
}

/// Grey values of `pixels` interleaved pixels of `channels` big-endian samples each: the
/// first sample, or Rec. 601 luminance of the first three. `None` when `buf` is short.
fn luminance(
    buf: &[u8],
    pixels: usize,
    channels: usize,
    bytes_per_sample: usize,
) -> Option<Vec<f32>> {
    if buf.len() < pixels * channels * bytes_per_sample {
        return None;
    }
    let sample = |pixel: usize, c: usize| -> f32 {
        let at = (pixel * channels + c) * bytes_per_sample;
        if bytes_per_sample == 2 {
            f32::from(u16::from_be_bytes([buf[at], buf[at + 1]]))
        } else {
            f32::from(buf[at])
        }
    };
    Some(
        (0..pixels)
            .map(|p| {
                if channels >= 3 {
                    0.299 * sample(p, 0) + 0.587 * sample(p, 1) + 0.114 * sample(p, 2)
                } else {
                    sample(p, 0)
                }
            })
            .collect(),
    )
}
