//! 8-bit PNG writer (grayscale and RGB) for slice snapshots and reports.

use std::path::Path;

use crate::{Error, ErrorKind, Result};

/// Writes an 8-bit grayscale image; `pixels` is row-major, `width × height` bytes.
pub fn write_gray8(path: &Path, width: u32, height: u32, pixels: &[u8]) -> Result<()> {
    write(path, width, height, pixels, ::png::ColorType::Grayscale, 1)
}

/// Writes an 8-bit RGB image; `pixels` is row-major `r g b` triples, `3 × width × height` bytes.
pub fn write_rgb8(path: &Path, width: u32, height: u32, pixels: &[u8]) -> Result<()> {
    write(path, width, height, pixels, ::png::ColorType::Rgb, 3)
}

/// Encodes an 8-bit RGB image as PNG bytes in memory (e.g. for HTTP); `name` stands for
/// the image in errors.
pub fn encode_rgb8(name: &str, width: u32, height: u32, pixels: &[u8]) -> Result<Vec<u8>> {
    let path = Path::new(name);
    check(path, width, height, pixels, 3)?;
    encode(width, height, pixels, ::png::ColorType::Rgb)
        .map_err(|e| Error::new(path, ErrorKind::InvalidInput(e.to_string())))
}

/// [`encode_rgb8`] with fast compression (larger files, several times quicker), for
/// images made on request such as the viewer's live fluoroscopy.
pub fn encode_rgb8_fast(name: &str, width: u32, height: u32, pixels: &[u8]) -> Result<Vec<u8>> {
    let path = Path::new(name);
    check(path, width, height, pixels, 3)?;
    encode_with(
        width,
        height,
        pixels,
        ::png::ColorType::Rgb,
        ::png::Compression::Fast,
    )
    .map_err(|e| Error::new(path, ErrorKind::InvalidInput(e.to_string())))
}

fn write(
    path: &Path,
    width: u32,
    height: u32,
    pixels: &[u8],
    color: ::png::ColorType,
    channels: usize,
) -> Result<()> {
    check(path, width, height, pixels, channels)?;
    let bytes = encode(width, height, pixels, color)
        .map_err(|e| Error::new(path, ErrorKind::InvalidInput(e.to_string())))?;
    crate::atomic::write_atomic(path, bytes.as_ref())
}

/// The image is not empty and `pixels` holds exactly `width × height × channels` bytes.
fn check(path: &Path, width: u32, height: u32, pixels: &[u8], channels: usize) -> Result<()> {
    let bad = |message: String| Error::new(path, ErrorKind::InvalidInput(message));
    if width == 0 || height == 0 {
        return Err(bad(format!(
            "image must not be empty, got {width} × {height}"
        )));
    }
    let expected = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(channels))
        .ok_or_else(|| bad(format!("image {width} × {height} is too large")))?;
    if pixels.len() != expected {
        return Err(bad(format!(
            "{width} × {height} × {channels} needs {expected} bytes, got {}",
            pixels.len()
        )));
    }
    Ok(())
}

/// Encodes in memory, so that every I/O error surfaces from the final write.
fn encode(
    width: u32,
    height: u32,
    pixels: &[u8],
    color: ::png::ColorType,
) -> Result<Vec<u8>, ::png::EncodingError> {
    encode_with(width, height, pixels, color, ::png::Compression::default())
}

fn encode_with(
    width: u32,
    height: u32,
    pixels: &[u8],
    color: ::png::ColorType,
    compression: ::png::Compression,
) -> Result<Vec<u8>, ::png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = ::png::Encoder::new(&mut out, width, height);
    encoder.set_color(color);
    encoder.set_compression(compression);
    encoder.set_depth(::png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(pixels)?;
    writer.finish()?;
    Ok(out)
}
