//! X-ray images in: PNG (8/16-bit grey, grey+alpha, RGB(A) as luminance), a 2-D NIfTI
//! (one slice; i = column, j = row, as `pinhole drr --out-raw` writes) and a single-file
//! DICOM (X-ray, XA, CR, DX, RF or secondary capture; first frame, modality LUT applied).
//! Row 0 is the displayed top.

use std::io::Read;
use std::path::Path;

use pinhole_xray::Image;

use crate::RegisterError;

fn err(path: &Path, reason: impl Into<String>) -> RegisterError {
    RegisterError::Image {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Reads an X-ray image, choosing the format from the file's content.
pub fn read_xray(path: &Path) -> Result<Image, RegisterError> {
    let mut head = [0u8; 132];
    let mut file = std::fs::File::open(path).map_err(|e| err(path, e.to_string()))?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(err(path, e.to_string())),
        }
    }
    let head = &head[..n];
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        read_png(path)
    } else if head.len() >= 132 && &head[128..132] == b"DICM" {
        read_dicom(path)
    } else {
        read_nifti(path)
    }
}

/// PNG, 8 or 16 bits per sample; colour is converted to luminance (Rec. 601).
pub fn read_png(path: &Path) -> Result<Image, RegisterError> {
    let file = std::fs::File::open(path).map_err(|e| err(path, e.to_string()))?;
    decode_png_from(path, std::io::BufReader::new(file))
}

/// [`read_png`] on bytes in memory; `origin` names them in errors.
pub fn decode_png(origin: &Path, bytes: &[u8]) -> Result<Image, RegisterError> {
    decode_png_from(origin, std::io::Cursor::new(bytes))
}

fn decode_png_from<R: std::io::BufRead + std::io::Seek>(
    path: &Path,
    reader: R,
) -> Result<Image, RegisterError> {
    let mut decoder = png::Decoder::new(reader);
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| err(path, e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| err(path, "PNG too large"))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| err(path, e.to_string()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(err(path, "indexed PNG was not expanded")),
    };
    let bytes = match info.bit_depth {
        png::BitDepth::Sixteen => 2,
        png::BitDepth::Eight => 1,
        d => return Err(err(path, format!("unsupported PNG bit depth {d:?}"))),
    };
    let sample = |pixel: usize, c: usize| -> f32 {
        let at = (pixel * channels + c) * bytes;
        if bytes == 2 {
            f32::from(u16::from_be_bytes([buf[at], buf[at + 1]]))
        } else {
            f32::from(buf[at])
        }
    };
    let data = (0..w * h)
        .map(|p| {
            if channels >= 3 {
                0.299 * sample(p, 0) + 0.587 * sample(p, 1) + 0.114 * sample(p, 2)
            } else {
                sample(p, 0)
            }
        })
        .collect();
    Ok(Image {
        width: w,
        height: h,
        data,
    })
}

/// A 2-D NIfTI (`nz = 1`).
pub fn read_nifti(path: &Path) -> Result<Image, RegisterError> {
    let volume = pinhole_io::nifti::read(path).map_err(|e| err(path, e.to_string()))?;
    let [w, h, d] = volume.grid().dims();
    if d != 1 {
        return Err(err(
            path,
            format!("expected a 2-D image, got {w}x{h}x{d} voxels"),
        ));
    }
    Ok(Image {
        width: w,
        height: h,
        data: volume.to_f32().into_data(),
    })
}

/// One DICOM file: the first frame, modality LUT (rescale) applied.
pub fn read_dicom(path: &Path) -> Result<Image, RegisterError> {
    use dicom_pixeldata::PixelDecoder;
    let obj = dicom_object::open_file(path).map_err(|e| err(path, e.to_string()))?;
    let decoded = obj
        .decode_pixel_data_frame(0)
        .map_err(|e| err(path, format!("cannot decode pixel data: {e}")))?;
    if decoded.samples_per_pixel() != 1 {
        return Err(err(
            path,
            format!(
                "expected a greyscale image, got {} samples per pixel",
                decoded.samples_per_pixel()
            ),
        ));
    }
    let (w, h) = (decoded.columns() as usize, decoded.rows() as usize);
    let data: Vec<f32> = decoded
        .to_vec_frame(0)
        .map_err(|e| err(path, format!("cannot convert pixel data: {e}")))?;
    if data.len() != w * h {
        return Err(err(
            path,
            format!("decoded {} values for {w}x{h} pixels", data.len()),
        ));
    }
    Ok(Image {
        width: w,
        height: h,
        data,
    })
}
