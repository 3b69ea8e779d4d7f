//! Every frame of one DICOM file as 8-bit grey (ultrasound stills and cine loops):
//! MONOCHROME1/2, or colour (RGB, YBR_FULL, YBR_FULL_422; JPEG-family compressed colour
//! as the codec returns it, RGB; RLE colour; PALETTE COLOR through its red, green and
//! blue lookup tables, 16-bit entries cut to their high byte) converted to Rec. 601
//! luminance `0.299 R + 0.587 G + 0.114 B` (f32, rounded). Only 8-bit unsigned samples;
//! segmented palettes are refused.
//!
//! Nothing is allocated because a header claims it: native pixel data must hold every
//! frame (frames × rows × columns × samples bytes, its length already checked against
//! the file by `parse`), encapsulated data needs a fragment per frame, each frame is
//! capped at [`MAX_FRAME_BYTES`] and the decoded frames together at
//! [`MAX_DECODED_FRAMES_BYTES`] and at the file's size × the deflate ratio.

use std::path::PathBuf;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;

use super::header::SliceHeader;
use super::parse::parse;
use super::pixels::{check_transfer_syntax, decode_rle};
use super::{EXPLICIT_VR_BE, MAX_FRAME_BYTES, RLE_LOSSLESS};
use crate::error::ErrorKind;

/// Most bytes all decoded 8-bit frames of one file may take together (1 GiB).
pub const MAX_DECODED_FRAMES_BYTES: usize = 1 << 30;

/// The frames of one file, 8-bit grey, row 0 first.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomFrames {
    pub columns: usize,
    pub rows: usize,
    /// One `columns × rows` buffer per frame, row-major.
    pub frames: Vec<Vec<u8>>,
    pub modality: String,
    pub photometric: String,
    /// Pixel size `[x, y]` (mm) from the first Sequence of Ultrasound Regions item whose
    /// PhysicalDeltaX/Y are in cm (PhysicalUnits 3), else `PixelSpacing` (row, column
    /// order swapped to `[x, y]`), else `None`.
    pub spacing_mm: Option<[f64; 2]>,
    pub warnings: Vec<String>,
}

/// How a frame's samples are laid out.
// The palette's 256 grey levels make it 257 bytes: one per file, copied a few times.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    Grey {
        invert: bool,
    },
    /// Three samples per pixel, RGB; `planar`: `RRR… GGG… BBB…`.
    Rgb {
        planar: bool,
    },
    /// Three samples, Y first (YBR_FULL: Y is the Rec. 601 luminance itself).
    Ybr {
        planar: bool,
    },
    /// YBR_FULL_422 native: `Y Y Cb Cr` per pixel pair.
    Ybr422,
    /// PALETTE COLOR: each 8-bit index's luminance through the palette.
    Palette {
        grey: [u8; 256],
    },
    /// RLE colour as `decode_rle` lays it out: three bytes per pixel, the third sample
    /// first (`B G R`, or `Cr Cb Y` for YBR_FULL).
    RleColour {
        ybr: bool,
    },
}

/// Decodes every frame of a DICOM file held in memory (see the module documentation).
pub(crate) fn decode_all_frames_u8(bytes: &[u8]) -> Result<DicomFrames, ErrorKind> {
    let obj = parse(bytes, false).map_err(ErrorKind::Dicom)?;
    let h = SliceHeader::from_object(PathBuf::new(), &obj).map_err(ErrorKind::InvalidHeader)?;
    check_transfer_syntax(&h.transfer_syntax)?;
    if h.transfer_syntax == EXPLICIT_VR_BE {
        return Err(ErrorKind::UnsupportedTransferSyntax {
            uid: h.transfer_syntax.clone(),
            name: "big-endian (retired), not read for ultrasound frames".into(),
        });
    }
    let encapsulated = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .is_some_and(|e| e.fragments().is_some());
    let layout = layout_of(&obj, &h, encapsulated)?;
    let frames = frame_count(&h)?;
    let (rows, columns) = (usize::from(h.rows), usize::from(h.columns));
    let pixels = rows * columns;
    let frame_bytes = match layout {
        Layout::Grey { .. } | Layout::Palette { .. } => pixels,
        Layout::Ybr422 => pixels * 2,
        _ => pixels * 3,
    };
    if frame_bytes > MAX_FRAME_BYTES {
        return Err(ErrorKind::Unsupported(format!(
            "a frame of {columns}x{rows} pixels is larger than {MAX_FRAME_BYTES} bytes"
        )));
    }
    let decoded_total = (frames as u128) * (pixels as u128);
    let limit = (MAX_DECODED_FRAMES_BYTES as u128)
        .min(bytes.len() as u128 * u128::from(crate::nifti::MAX_DEFLATE_RATIO));
    if decoded_total > limit {
        return Err(ErrorKind::SizeExceedsFile {
            claimed: u64::try_from(decoded_total).unwrap_or(u64::MAX),
            available: u64::try_from(limit).unwrap_or(u64::MAX),
        });
    }
    let mut warnings = Vec::new();
    if h.slope != 1.0 || h.intercept != 0.0 {
        warnings.push(format!(
            "RescaleSlope {} / RescaleIntercept {} ignored: ultrasound frames are shown as stored",
            h.slope, h.intercept
        ));
    }
    let out = if encapsulated {
        decode_encapsulated(&obj, &h, layout, frames)?
    } else {
        decode_native(&obj, layout, frames, frame_bytes, pixels)?
    };
    Ok(DicomFrames {
        columns,
        rows,
        frames: out,
        modality: h.modality.clone(),
        photometric: h.photometric.clone(),
        spacing_mm: region_spacing_mm(&obj).or(h.pixel_spacing.map(|[r, c]| [c, r])),
        warnings,
    })
}

/// Number of Frames (absent: 1); 0 or negative is refused.
pub(super) fn frame_count(h: &SliceHeader) -> Result<usize, ErrorKind> {
    match h.frames {
        None => Ok(1),
        Some(n) if n >= 1 => {
            usize::try_from(n).map_err(|_| ErrorKind::InvalidHeader(format!("NumberOfFrames {n}")))
        }
        Some(n) => Err(ErrorKind::InvalidHeader(format!(
            "NumberOfFrames {n}: expected at least 1"
        ))),
    }
}

/// The sample layout, or why the pixels are not 8-bit grey or supported colour.
fn layout_of(
    obj: &DefaultDicomObject,
    h: &SliceHeader,
    encapsulated: bool,
) -> Result<Layout, ErrorKind> {
    if h.bits_allocated != 8 || h.bits_stored == 0 || h.bits_stored > 8 {
        return Err(ErrorKind::UnsupportedDatatype(format!(
            "BitsAllocated {} / BitsStored {}: ultrasound frames are read as 8-bit samples",
            h.bits_allocated, h.bits_stored
        )));
    }
    if h.signed {
        return Err(ErrorKind::UnsupportedDatatype(
            "signed 8-bit samples (PixelRepresentation 1)".into(),
        ));
    }
    if h.rows == 0 || h.columns == 0 {
        return Err(ErrorKind::InvalidHeader("Rows or Columns is 0".into()));
    }
    let planar = int_of(obj, tags::PLANAR_CONFIGURATION) == Some(1);
    let photometric = h.photometric.as_str();
    let rle = h.transfer_syntax == RLE_LOSSLESS;
    match (h.samples_per_pixel, photometric) {
        (1, "MONOCHROME2") => Ok(Layout::Grey { invert: false }),
        (1, "MONOCHROME1") => Ok(Layout::Grey { invert: true }),
        (1, "PALETTE COLOR") => Ok(Layout::Palette {
            grey: palette_grey(obj)?,
        }),
        (3, "RGB") if rle => Ok(Layout::RleColour { ybr: false }),
        (3, "YBR_FULL") if rle => Ok(Layout::RleColour { ybr: true }),
        (3, _) if rle => Err(ErrorKind::Unsupported(format!(
            "RLE-compressed {photometric} frames are not read (RGB and YBR_FULL are)"
        ))),
        // The codecs return RGB whatever the stored colour space.
        (3, "RGB" | "YBR_FULL" | "YBR_FULL_422" | "YBR_PARTIAL_420" | "YBR_ICT" | "YBR_RCT")
            if encapsulated =>
        {
            Ok(Layout::Rgb { planar: false })
        }
        (3, "RGB") => Ok(Layout::Rgb { planar }),
        (3, "YBR_FULL") => Ok(Layout::Ybr { planar }),
        (3, "YBR_FULL_422") => Ok(Layout::Ybr422),
        (samples, _) => Err(ErrorKind::Unsupported(format!(
            "{photometric} with {samples} samples per pixel: ultrasound frames must be \
             MONOCHROME1/2, PALETTE COLOR, RGB, YBR_FULL or YBR_FULL_422"
        ))),
    }
}

/// The luminance of every 8-bit index through the file's palette
/// ([`super::colour::Palette`]; 16-bit entries cut to their high byte).
fn palette_grey(obj: &DefaultDicomObject) -> Result<[u8; 256], ErrorKind> {
    let palette = super::colour::Palette::of(obj).map_err(|m| {
        if m.starts_with("segmented") {
            ErrorKind::Unsupported(m)
        } else {
            ErrorKind::InvalidHeader(m)
        }
    })?;
    let byte = |v: u16| {
        if palette.bits16 {
            (v >> 8) as u8
        } else {
            v as u8
        }
    };
    Ok(std::array::from_fn(|v| {
        let [r, g, b] = palette.rgb(v as i64).map(byte);
        luminance_u8(r, g, b)
    }))
}

fn int_of(obj: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    obj.element_opt(tag).ok()??.to_int::<i64>().ok()
}

/// Native pixel data: every frame must be there before anything is decoded.
fn decode_native(
    obj: &DefaultDicomObject,
    layout: Layout,
    frames: usize,
    frame_bytes: usize,
    pixels: usize,
) -> Result<Vec<Vec<u8>>, ErrorKind> {
    let element = obj
        .element_opt(tags::PIXEL_DATA)
        .map_err(|e| ErrorKind::Dicom(e.to_string()))?
        .ok_or_else(|| ErrorKind::Dicom("no PixelData".into()))?;
    let data = element
        .to_bytes()
        .map_err(|e| ErrorKind::Dicom(format!("cannot read PixelData: {e}")))?;
    let needed = (frames as u128) * (frame_bytes as u128);
    if (data.len() as u128) < needed {
        return Err(ErrorKind::SizeExceedsFile {
            claimed: u64::try_from(needed).unwrap_or(u64::MAX),
            available: data.len() as u64,
        });
    }
    Ok(data
        .chunks_exact(frame_bytes)
        .take(frames)
        .map(|frame| to_grey(frame, layout, pixels))
        .collect())
}

/// Encapsulated pixel data: one fragment per frame at least; each frame decoded on its
/// own (RLE by our checked decoder, the rest by dicom-pixeldata, panics contained).
fn decode_encapsulated(
    obj: &DefaultDicomObject,
    h: &SliceHeader,
    layout: Layout,
    frames: usize,
) -> Result<Vec<Vec<u8>>, ErrorKind> {
    let dicom = |e: String| ErrorKind::Dicom(e);
    let element = obj
        .element_opt(tags::PIXEL_DATA)
        .map_err(|e| dicom(e.to_string()))?
        .ok_or_else(|| dicom("no PixelData".into()))?;
    let fragments = element.fragments().unwrap_or_default();
    if fragments.len() < frames {
        return Err(ErrorKind::Truncated(format!(
            "NumberOfFrames {frames} but the pixel data holds {} fragments",
            fragments.len()
        )));
    }
    let jpeg2000 = super::jpeg2000::TRANSFER_SYNTAXES.contains(&h.transfer_syntax.as_str());
    if jpeg2000 && fragments.len() != frames {
        return Err(ErrorKind::Unsupported(
            "JPEG 2000 frames split over several fragments are not read".into(),
        ));
    }
    let pixels = usize::from(h.rows) * usize::from(h.columns);
    let samples = if matches!(layout, Layout::Grey { .. } | Layout::Palette { .. }) {
        1
    } else {
        3
    };
    let mut out = Vec::with_capacity(frames);
    for (k, fragment) in fragments.iter().enumerate().take(frames) {
        if h.transfer_syntax == RLE_LOSSLESS {
            let bytes_per_pixel = usize::from(samples);
            out.push(to_grey(
                &decode_rle(fragment, pixels, bytes_per_pixel).map_err(dicom)?,
                layout,
                pixels,
            ));
            continue;
        }
        if super::jpegls::TRANSFER_SYNTAXES.contains(&h.transfer_syntax.as_str()) {
            out.push(decode_jpegls_grey(fragment, h, layout, pixels).map_err(dicom)?);
            continue;
        }
        if samples == 3 && fragments.len() == frames && super::colour::is_colour_jpeg(h) {
            let rgb = super::colour::jpeg_frame_rgb(fragment, h, pixels).map_err(dicom)?;
            out.push(to_grey(&rgb, Layout::Rgb { planar: false }, pixels));
            continue;
        }
        if jpeg2000 {
            super::jpeg2000::check_codestream(fragment, h.rows, h.columns, samples, 8)
                .map_err(dicom)?;
        }
        let index = u32::try_from(k).map_err(|_| dicom("too many frames".into()))?;
        let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            obj.decode_pixel_data_frame(index)
        }));
        let decoded = attempt
            .map_err(|_| {
                dicom("the pixel-data decoder failed on malformed compressed data".into())
            })?
            .map_err(|e| dicom(format!("cannot decode frame {k}: {e}")))?;
        if decoded.rows() != u32::from(h.rows)
            || decoded.columns() != u32::from(h.columns)
            || decoded.samples_per_pixel() != samples
            || decoded.bits_allocated() != 8
        {
            return Err(dicom(format!(
                "decoded frame {k} does not match the header"
            )));
        }
        let planar =
            decoded.planar_configuration() == dicom_pixeldata::PlanarConfiguration::PixelFirst;
        let layout = match layout {
            Layout::Rgb { .. } => Layout::Rgb { planar },
            other => other,
        };
        let need = pixels * usize::from(samples);
        let data = decoded.data().get(..need).ok_or_else(|| {
            dicom(format!(
                "decoded frame {k} holds {} bytes, expected {need}",
                decoded.data().len()
            ))
        })?;
        out.push(to_grey(data, layout, pixels));
    }
    Ok(out)
}

/// A JPEG-LS frame of 8-bit samples as grey: greyscale or palette (one component), or
/// three components as stored (JPEG-LS has no colour transform of its own: RGB, or
/// YBR_FULL whose first component is the luminance).
fn decode_jpegls_grey(
    fragment: &[u8],
    h: &SliceHeader,
    layout: Layout,
    pixels: usize,
) -> Result<Vec<u8>, String> {
    let (components, layout) = match layout {
        Layout::Grey { .. } | Layout::Palette { .. } => (1, layout),
        _ => match h.photometric.as_str() {
            "RGB" => (3, Layout::Rgb { planar: false }),
            "YBR_FULL" => (3, Layout::Ybr { planar: false }),
            other => return Err(format!("JPEG-LS frames of {other} are not read")),
        },
    };
    let image = super::pixels::decode_jpegls_components(fragment, h, components, 8)?;
    let bytes: Vec<u8> = image.samples.iter().map(|&v| v as u8).collect();
    Ok(to_grey(&bytes, layout, pixels))
}

/// Rec. 601 luminance of 8-bit RGB, rounded (the formula [`crate::xray_image`] uses).
pub fn luminance_u8(r: u8, g: u8, b: u8) -> u8 {
    let y = 0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b);
    y.round().clamp(0.0, 255.0) as u8
}

/// One frame's grey values; `data` holds at least the frame's bytes for `layout`.
fn to_grey(data: &[u8], layout: Layout, pixels: usize) -> Vec<u8> {
    match layout {
        Layout::Grey { invert } => data
            .iter()
            .take(pixels)
            .map(|&v| if invert { 255 - v } else { v })
            .collect(),
        Layout::Rgb { planar: false } => data
            .chunks_exact(3)
            .take(pixels)
            .map(|c| luminance_u8(c[0], c[1], c[2]))
            .collect(),
        Layout::Rgb { planar: true } => {
            let (r, rest) = data.split_at(pixels.min(data.len()));
            let (g, b) = rest.split_at(pixels.min(rest.len()));
            r.iter()
                .zip(g)
                .zip(b)
                .map(|((&r, &g), &b)| luminance_u8(r, g, b))
                .collect()
        }
        Layout::Palette { grey } => data
            .iter()
            .take(pixels)
            .map(|&i| grey[usize::from(i)])
            .collect(),
        Layout::RleColour { ybr: false } => data
            .chunks_exact(3)
            .take(pixels)
            .map(|c| luminance_u8(c[2], c[1], c[0]))
            .collect(),
        Layout::RleColour { ybr: true } => {
            data.chunks_exact(3).take(pixels).map(|c| c[2]).collect()
        }
        Layout::Ybr { planar: false } => data.chunks_exact(3).take(pixels).map(|c| c[0]).collect(),
        Layout::Ybr { planar: true } => data.iter().take(pixels).copied().collect(),
        Layout::Ybr422 => {
            let mut out = Vec::with_capacity(pixels);
            for quad in data.chunks_exact(4) {
                out.extend_from_slice(&quad[..2]);
            }
            // An odd pixel count leaves a last pair with one pixel.
            out.truncate(pixels);
            if out.len() < pixels {
                if let Some(&y) = data.get(2 * out.len()) {
                    out.push(y);
                }
            }
            out
        }
    }
}

/// PhysicalDeltaX/Y of the first ultrasound region in cm (PhysicalUnitsX/YDirection 3),
/// as mm; `None` when there is none, or it is not positive and finite.
fn region_spacing_mm(obj: &DefaultDicomObject) -> Option<[f64; 2]> {
    let regions = obj
        .element_opt(tags::SEQUENCE_OF_ULTRASOUND_REGIONS)
        .ok()??;
    regions.items()?.iter().find_map(|item| {
        let unit = |tag| item.element_opt(tag).ok()??.to_int::<i64>().ok();
        let delta = |tag| item.element_opt(tag).ok()??.to_float64().ok();
        if unit(tags::PHYSICAL_UNITS_X_DIRECTION)? != 3
            || unit(tags::PHYSICAL_UNITS_Y_DIRECTION)? != 3
        {
            return None;
        }
        let (dx, dy) = (
            delta(tags::PHYSICAL_DELTA_X)?,
            delta(tags::PHYSICAL_DELTA_Y)?,
        );
        let ok = |v: f64| v.is_finite() && v > 0.0;
        (ok(dx) && ok(dy)).then_some([dx * 10.0, dy * 10.0])
    })
}
