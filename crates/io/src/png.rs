//! 8-bit PNG writer (grayscale and RGB) for slice snapshots and reports, and a reader of
//! any PNG as 8-bit RGB (pictures to be stored as DICOM Secondary Capture).

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

/// Largest picture [`read_rgb8`] accepts (pixels).
pub const MAX_READ_PIXELS: u64 = 1 << 26;

/// Reads a PNG file as 8-bit RGB `(width, height, pixels)`: [`decode_rgb8`] of its bytes.
pub fn read_rgb8(path: &Path) -> Result<(u32, u32, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::new(path, e))?;
    decode_rgb8(path, &bytes)
}

/// Deflate expands at most about 1032:1; a PNG whose header claims more pixel bytes than
/// its bytes could inflate to is refused before anything is allocated for them.
const MAX_INFLATE_RATIO: u64 = 1100;

/// Decodes PNG bytes as 8-bit RGB `(width, height, pixels)`, row-major `r g b` triples:
/// palette and low bit depths expanded, 16-bit samples cut to their high byte, grey
/// replicated into the three channels, alpha dropped (not composited). Pictures over
/// [`MAX_READ_PIXELS`] pixels, or larger than their bytes could hold, are refused before
/// decoding. `path` names the picture in errors.
pub fn decode_rgb8(path: &Path, bytes: &[u8]) -> Result<(u32, u32, Vec<u8>)> {
    let png_error = |m: String| Error::new(path, ErrorKind::Png(m));
    let mut decoder = ::png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(::png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| png_error(e.to_string()))?;
    let (width, height) = (reader.info().width, reader.info().height);
    if u64::from(width) * u64::from(height) > MAX_READ_PIXELS {
        return Err(png_error(format!(
            "{width} × {height} pixels: at most {MAX_READ_PIXELS}"
        )));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| png_error(format!("{width} × {height} is too large")))?;
    let raw_bytes = reader.info().raw_bytes() as u64;
    if raw_bytes > (bytes.len() as u64).saturating_mul(MAX_INFLATE_RATIO) {
        return Err(png_error(format!(
            "{width} × {height} pixels cannot be held in {} bytes: truncated or corrupt",
            bytes.len()
        )));
    }
    let mut buffer = vec![0u8; size];
    let frame = reader
        .next_frame(&mut buffer)
        .map_err(|e| png_error(e.to_string()))?;
    buffer.truncate(frame.buffer_size());
    let channels = match frame.color_type {
        ::png::ColorType::Grayscale => 1,
        ::png::ColorType::GrayscaleAlpha => 2,
        ::png::ColorType::Rgb => 3,
        ::png::ColorType::Rgba => 4,
        ::png::ColorType::Indexed => {
            return Err(png_error("palette not expanded".into()));
        }
    };
    let rgb = buffer
        .chunks_exact(channels)
        .flat_map(|px| {
            if channels < 3 {
                [px[0]; 3]
            } else {
                [px[0], px[1], px[2]]
            }
        })
        .collect();
    Ok((width, height, rgb))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(
        width: u32,
        height: u32,
        color: ::png::ColorType,
        depth: ::png::BitDepth,
        data: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = ::png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn grey_sixteen_bit_and_alpha_become_rgb8() {
        let name = Path::new("t.png");
        let grey = png_bytes(
            2,
            1,
            ::png::ColorType::Grayscale,
            ::png::BitDepth::Eight,
            &[10, 200],
        );
        assert_eq!(
            decode_rgb8(name, &grey).unwrap(),
            (2, 1, vec![10, 10, 10, 200, 200, 200])
        );
        // Big-endian 16-bit samples: the high byte is kept.
        let wide = png_bytes(
            1,
            2,
            ::png::ColorType::Grayscale,
            ::png::BitDepth::Sixteen,
            &[0x12, 0x34, 0xAB, 0xCD],
        );
        assert_eq!(
            decode_rgb8(name, &wide).unwrap(),
            (1, 2, vec![0x12, 0x12, 0x12, 0xAB, 0xAB, 0xAB])
        );
        let rgba = png_bytes(
            1,
            1,
            ::png::ColorType::Rgba,
            ::png::BitDepth::Eight,
            &[1, 2, 3, 0],
        );
        assert_eq!(decode_rgb8(name, &rgba).unwrap(), (1, 1, vec![1, 2, 3]));
        let grey_alpha = png_bytes(
            1,
            1,
            ::png::ColorType::GrayscaleAlpha,
            ::png::BitDepth::Eight,
            &[7, 9],
        );
        assert_eq!(
            decode_rgb8(name, &grey_alpha).unwrap(),
            (1, 1, vec![7, 7, 7])
        );
    }

    #[test]
    fn a_header_claiming_more_than_the_bytes_can_hold_is_refused() {
        // 4000 × 4000 grey (16 MB of samples) cut to its first 200 bytes: the header is
        // whole, the data is not; refused before a 16 MB buffer is allocated.
        let full = png_bytes(
            4000,
            4000,
            ::png::ColorType::Grayscale,
            ::png::BitDepth::Eight,
            &vec![0; 16_000_000],
        );
        let error = decode_rgb8(Path::new("cut.png"), &full[..200]).unwrap_err();
        assert!(
            error.to_string().contains("cannot be held in 200 bytes"),
            "{error}"
        );
        // The whole file decodes.
        let (w, h, rgb) = decode_rgb8(Path::new("full.png"), &full).unwrap();
        assert_eq!((w, h, rgb.len()), (4000, 4000, 48_000_000));
    }
}
