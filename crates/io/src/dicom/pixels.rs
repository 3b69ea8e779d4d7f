//! Pixel decoding: what can be decoded, one frame into stored values (native, RLE checked
//! here, compressed through dicom-pixeldata), and the rescaled voxel buffer.

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use pinhole_volume::{Grid, Volume};

use super::header::SliceHeader;
use super::parse::read_u32;
use super::{EXPLICIT_VR_BE, MAX_FRAME_BYTES, RLE_LOSSLESS};
use crate::error::ErrorKind;
use crate::image::AnyVolume;

/// Refuses what we cannot decode, before decoding.
pub(super) fn check_header(h: &SliceHeader) -> std::result::Result<(), ErrorKind> {
    check_transfer_syntax(&h.transfer_syntax)?;
    check_greyscale(h)?;
    check_single_frame(h)?;
    check_pixel_format(h)
}

/// Refuses multi-frame files without per-frame geometry (a series is one frame per file,
/// or one enhanced multi-frame object whose frames `enhanced` expanded into slices).
fn check_single_frame(h: &SliceHeader) -> std::result::Result<(), ErrorKind> {
    if h.frame.is_none() && h.frames.is_some_and(|f| f > 1) {
        return Err(ErrorKind::Unsupported(format!(
            "multi-frame images ({} frames) without per-frame functional groups (no \
             geometry per frame) are not supported",
            h.frames.unwrap_or_default()
        )));
    }
    Ok(())
}

/// Refuses pixels we cannot decode into greyscale values: colour, odd sample sizes, an
/// unusable rescale (outside [`crate::rescale`]'s limits), an empty matrix, and
/// geometry or rescale values present but not finite numbers (`SliceHeader::invalid`).
pub(super) fn check_pixel_format(h: &SliceHeader) -> std::result::Result<(), ErrorKind> {
    check_greyscale(h)?;
    if !matches!(h.bits_allocated, 8 | 16 | 32) {
        return Err(ErrorKind::UnsupportedDatatype(format!(
            "BitsAllocated {}",
            h.bits_allocated
        )));
    }
    if h.bits_stored == 0 || h.bits_stored > h.bits_allocated {
        return Err(ErrorKind::InvalidHeader(format!(
            "BitsStored {} with BitsAllocated {}",
            h.bits_stored, h.bits_allocated
        )));
    }
    if let Some(problem) = h.invalid.first() {
        return Err(ErrorKind::InvalidHeader(problem.clone()));
    }
    crate::rescale::check(h.slope, h.intercept, "RescaleSlope", "RescaleIntercept")?;
    if h.rows == 0 || h.columns == 0 {
        return Err(ErrorKind::InvalidHeader("Rows or Columns is 0".into()));
    }
    Ok(())
}

/// Refuses colour: greyscale volumes only here (colour: `colour::read_colour_series`).
fn check_greyscale(h: &SliceHeader) -> std::result::Result<(), ErrorKind> {
    if h.samples_per_pixel != 1 || !matches!(h.photometric.as_str(), "MONOCHROME1" | "MONOCHROME2")
    {
        return Err(ErrorKind::Unsupported(format!(
            "only greyscale images are read as volumes, not {} with {} samples per pixel \
             (`pinhole convert` writes a colour series as an RGB NRRD)",
            h.photometric, h.samples_per_pixel
        )));
    }
    Ok(())
}

/// `Ok` when this build decodes data sets and pixel data of the transfer syntax.
pub(super) fn check_transfer_syntax(uid: &str) -> std::result::Result<(), ErrorKind> {
    let unsupported = |name: &str| ErrorKind::UnsupportedTransferSyntax {
        uid: uid.to_string(),
        name: name.to_string(),
    };
    if super::jpegls::TRANSFER_SYNTAXES.contains(&uid) {
        return Ok(()); // decoded by `jpegls`, not by dicom-rs
    }
    let ts = TransferSyntaxRegistry
        .get(uid)
        .ok_or_else(|| unsupported("unknown"))?;
    // Data-set codecs (deflate) are refused here: `parse` inflates a deflated file into
    // Explicit VR Little Endian before anything else reads it, so none arrives here.
    if !ts.can_decode_all() || !(ts.is_codec_free() || ts.is_encapsulated_pixel_data()) {
        return Err(unsupported(ts.name()));
    }
    Ok(())
}

/// Decodes the one frame of a file into stored values (no modality LUT).
pub(super) fn decode_slice(
    obj: &DefaultDicomObject,
    h: &SliceHeader,
) -> std::result::Result<Vec<i64>, String> {
    check_header(h).map_err(|k| k.to_string())?;
    decode_first_frame(obj, h)
}

/// Decodes the first frame of a file whose header passed [`check_pixel_format`] into
/// stored values (no modality LUT); see [`decode_frame`].
pub(super) fn decode_first_frame(
    obj: &DefaultDicomObject,
    h: &SliceHeader,
) -> std::result::Result<Vec<i64>, String> {
    decode_frame(obj, h, 0)
}

/// Decodes frame `index` (0-based; the caller has checked it against NumberOfFrames) of
/// a file whose header passed [`check_pixel_format`] into stored values (no modality
/// LUT). The frame is capped at [`MAX_FRAME_BYTES`]; native pixel data must hold frames
/// `0..=index` whole, and encapsulated data (RLE, JPEG 2000) a fragment for the frame,
/// before anything is decoded.
pub(super) fn decode_frame(
    obj: &DefaultDicomObject,
    h: &SliceHeader,
    index: u32,
) -> std::result::Result<Vec<i64>, String> {
    let pixels = usize::from(h.rows) * usize::from(h.columns);
    let bytes_per = usize::from(h.bits_allocated / 8);
    let frame_bytes = pixels
        .checked_mul(bytes_per)
        .filter(|n| *n <= MAX_FRAME_BYTES)
        .ok_or_else(|| format!("frame of {}x{} pixels is too large", h.rows, h.columns))?;
    // Native pixel data must hold the whole frame before anything is decoded.
    let element = obj
        .element_opt(tags::PIXEL_DATA)
        .map_err(|e| e.to_string())?
        .ok_or("no PixelData")?;
    let position = index as usize;
    if let Some(len) = element.header().len.get() {
        let needed = (position as u128 + 1) * frame_bytes as u128;
        if u128::from(len) < needed {
            return Err(format!(
                "PixelData holds {len} bytes, frame {index} of {}x{} pixels of {} bits \
                 needs {needed}",
                h.rows, h.columns, h.bits_allocated
            ));
        }
    } else if element.fragments().is_none_or(|f| f.is_empty()) {
        return Err("encapsulated PixelData without fragments".into());
    }
    let rle_frame;
    let jpegls_frame;
    let decoded;
    let data: &[u8] = if h.transfer_syntax == RLE_LOSSLESS {
        // dicom-rs 0.10.1's RLE decoder panics on malformed segment tables; ours checks.
        let fragment = element
            .fragments()
            .and_then(|f| f.get(position))
            .ok_or_else(|| format!("RLE PixelData without a fragment for frame {index}"))?;
        rle_frame = decode_rle(fragment, pixels, bytes_per)?;
        &rle_frame
    } else if super::jpegls::TRANSFER_SYNTAXES.contains(&h.transfer_syntax.as_str()) {
        let fragments = element.fragments().unwrap_or_default();
        jpegls_frame = decode_jpegls_frame(fragments, h, index)?;
        &jpegls_frame
    } else {
        decoded = decode_with_dicom_rs(obj, h, index)?;
        if decoded.rows() != u32::from(h.rows)
            || decoded.columns() != u32::from(h.columns)
            || decoded.samples_per_pixel() != 1
            || decoded.bits_allocated() != h.bits_allocated
        {
            return Err("decoded frame does not match the header".into());
        }
        decoded.data()
    };
    let data = data.get(..frame_bytes).ok_or_else(|| {
        format!(
            "decoded frame holds {} bytes, expected {frame_bytes}",
            data.len()
        )
    })?;
    let swapped;
    let data = if h.transfer_syntax == EXPLICIT_VR_BE && h.bits_allocated == 32 {
        // dicom-rs 0.10.1 reads big-endian native pixel data as 16-bit words: a 32-bit
        // sample comes out with its two halves still in big-endian order (pydicom's
        // rtdose_expb_1frame.dcm read 4.29e9 off before this).
        swapped = swap_16_bit_halves(data);
        &swapped[..]
    } else {
        data
    };
    let raw = stored_values(data, h);
    if raw.len() != pixels {
        return Err(format!("decoded {} values, expected {pixels}", raw.len()));
    }
    Ok(raw)
}

/// Frame `index` decoded by dicom-pixeldata (JPEG, JPEG 2000, native): a JPEG 2000
/// frame's codestream is first checked against the header (one fragment per frame
/// beyond the first), and a panic in the codec is contained as an error.
pub(super) fn decode_with_dicom_rs<'a>(
    obj: &'a DefaultDicomObject,
    h: &SliceHeader,
    index: u32,
) -> std::result::Result<dicom_pixeldata::DecodedPixelData<'a>, String> {
    if super::jpeg2000::TRANSFER_SYNTAXES.contains(&h.transfer_syntax.as_str()) {
        let element = obj
            .element_opt(tags::PIXEL_DATA)
            .map_err(|e| e.to_string())?
            .ok_or("no PixelData")?;
        let fragments = element.fragments().unwrap_or_default();
        if index > 0 && h.frames.is_none_or(|n| n != fragments.len() as i64) {
            return Err(
                "JPEG 2000 frames split over several fragments are not read beyond the first"
                    .into(),
            );
        }
        let fragment = fragments
            .get(index as usize)
            .ok_or_else(|| format!("JPEG 2000 PixelData without a fragment for frame {index}"))?;
        super::jpeg2000::check_codestream(
            fragment,
            h.rows,
            h.columns,
            h.samples_per_pixel,
            h.bits_allocated,
        )?;
    }
    // dicom-rs 0.10.1's JPEG 2000 adapter indexes out of bounds (a panic) when the
    // codestream holds more samples than the header's frame: contain it as an error.
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        obj.decode_pixel_data_frame(index)
    }));
    attempt
        .map_err(|_| "the pixel-data decoder failed on malformed compressed data".to_string())?
        .map_err(|e| format!("cannot decode pixel data: {e}"))
}

/// Decodes one greyscale JPEG-LS codestream that must hold the header's rows × columns
/// samples of at most `max_precision_bits` bits.
pub(super) fn decode_jpegls_checked(
    codestream: &[u8],
    h: &SliceHeader,
    max_precision_bits: u16,
) -> std::result::Result<super::jpegls::JpegLsImage, String> {
    decode_jpegls_components(codestream, h, 1, max_precision_bits)
}

/// Decodes one JPEG-LS codestream that must hold the header's rows × columns pixels of
/// `components` samples of at most `max_precision_bits` bits.
pub(super) fn decode_jpegls_components(
    codestream: &[u8],
    h: &SliceHeader,
    components: usize,
    max_precision_bits: u16,
) -> std::result::Result<super::jpegls::JpegLsImage, String> {
    let pixels = usize::from(h.rows) * usize::from(h.columns);
    let image = super::jpegls::decode(codestream, pixels * components)?;
    if (image.rows, image.columns, image.components)
        != (usize::from(h.rows), usize::from(h.columns), components)
        || u16::from(image.precision_bits) > max_precision_bits
    {
        return Err(format!(
            "JPEG-LS frame of {}x{} pixels of {} component(s) of {} bits does not match the \
             header's {}x{} of {components} of {max_precision_bits} bits",
            image.columns, image.rows, image.components, image.precision_bits, h.columns, h.rows,
        ));
    }
    Ok(image)
}

/// Decodes frame `index` of JPEG-LS pixel data into little-endian samples of the
/// header's size: one fragment per frame, or a single frame spread over all fragments.
fn decode_jpegls_frame(
    fragments: &[Vec<u8>],
    h: &SliceHeader,
    index: u32,
) -> std::result::Result<Vec<u8>, String> {
    let frames = h.frames.unwrap_or(1).max(1) as usize;
    let joined;
    let codestream = if fragments.len() == frames {
        fragments
            .get(index as usize)
            .ok_or_else(|| format!("JPEG-LS PixelData without a fragment for frame {index}"))?
    } else if frames == 1 {
        joined = fragments.concat();
        &joined
    } else {
        return Err(format!(
            "JPEG-LS PixelData of {frames} frames in {} fragments (one per frame expected)",
            fragments.len()
        ));
    };
    let image = decode_jpegls_checked(codestream, h, h.bits_allocated.min(16))?;
    Ok(match h.bits_allocated {
        8 => image.samples.iter().map(|&v| v as u8).collect(),
        16 => image.samples.iter().flat_map(|v| v.to_le_bytes()).collect(),
        _ => image
            .samples
            .iter()
            .flat_map(|&v| u32::from(v).to_le_bytes())
            .collect(),
    })
}

/// Each 4-byte sample with its two 16-bit halves exchanged.
fn swap_16_bit_halves(data: &[u8]) -> Vec<u8> {
    data.chunks_exact(4)
        .flat_map(|c| [c[2], c[3], c[0], c[1]])
        .collect()
}

/// Little-endian samples of `h.bits_allocated` bits as stored values, sign-extended from
/// `h.bits_stored` bits when signed.
fn stored_values(data: &[u8], h: &SliceHeader) -> Vec<i64> {
    let shift = 64 - u32::from(h.bits_stored);
    let sign_extend = |v: u64| -> i64 {
        if h.signed {
            ((v << shift) as i64) >> shift
        } else {
            v as i64
        }
    };
    match h.bits_allocated {
        8 => data.iter().map(|&b| sign_extend(u64::from(b))).collect(),
        16 => data
            .chunks_exact(2)
            .map(|c| sign_extend(u64::from(u16::from_le_bytes([c[0], c[1]]))))
            .collect(),
        _ => data
            .chunks_exact(4)
            .map(|c| sign_extend(u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))))
            .collect(),
    }
}

/// Decodes one greyscale RLE Lossless frame (PS3.5 Annex G) into little-endian samples:
/// segment `s` holds byte `bytes_per - 1 - s` of every sample. Every offset and run is
/// checked; the output never exceeds `pixels * bytes_per` bytes.
pub(super) fn decode_rle(
    fragment: &[u8],
    pixels: usize,
    bytes_per: usize,
) -> std::result::Result<Vec<u8>, String> {
    let word = |at: usize| read_u32(fragment, at, false).map(|v| v as usize);
    let segments = word(0).ok_or("RLE fragment shorter than its header")?;
    if segments != bytes_per || fragment.len() < 64 {
        return Err(format!(
            "RLE frame has {segments} segments, expected {bytes_per} (one per sample byte)"
        ));
    }
    let mut offsets = Vec::with_capacity(segments + 1);
    for s in 0..segments {
        offsets.push(word(4 + 4 * s).ok_or("truncated RLE header")?);
    }
    offsets.push(fragment.len());
    let mut out = vec![0u8; pixels * bytes_per];
    for s in 0..segments {
        let (start, end) = (offsets[s], offsets[s + 1]);
        let segment = fragment.get(start..end).ok_or_else(|| {
            format!("RLE segment {s} spans bytes {start}..{end}, outside the fragment")
        })?;
        let mut plane = Vec::with_capacity(pixels);
        let mut at = 0;
        while plane.len() < pixels {
            let Some(&header) = segment.get(at) else {
                break;
            };
            at += 1;
            let n = header as i8;
            if n >= 0 {
                let count = (n as usize + 1).min(pixels - plane.len());
                let literal = segment
                    .get(at..at + count)
                    .ok_or("RLE literal run past the segment end")?;
                plane.extend_from_slice(literal);
                at += n as usize + 1;
            } else if n != -128 {
                let value = *segment
                    .get(at)
                    .ok_or("RLE repeat run past the segment end")?;
                at += 1;
                let count = (1 - isize::from(n)) as usize;
                plane.resize(plane.len() + count.min(pixels - plane.len()), value);
            }
        }
        if plane.len() < pixels {
            return Err(format!(
                "RLE segment {s} decodes to {} bytes, expected {pixels}",
                plane.len()
            ));
        }
        let byte = bytes_per - 1 - s;
        for (p, value) in plane.iter().enumerate() {
            if let Some(slot) = out.get_mut(p * bytes_per + byte) {
                *slot = *value;
            }
        }
    }
    Ok(out)
}

/// The voxel buffer, integral while it can be.
pub(super) enum Values {
    Int(Vec<i32>),
    Float(Vec<f64>),
}

impl Values {
    pub(super) fn push(&mut self, raw: &[i64], slope: f64, intercept: f64) {
        let integral = slope == 1.0 && intercept.fract() == 0.0 && intercept.abs() < 1e15;
        if let Self::Int(v) = self {
            if integral {
                let start = v.len();
                v.reserve(raw.len());
                let offset = intercept as i64;
                for &r in raw {
                    match i32::try_from(r + offset) {
                        Ok(x) => v.push(x),
                        Err(_) => {
                            v.truncate(start);
                            break;
                        }
                    }
                }
                if v.len() == start + raw.len() {
                    return;
                }
            }
            let floats: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
            *self = Self::Float(floats);
        }
        if let Self::Float(v) = self {
            v.reserve(raw.len());
            v.extend(raw.iter().map(|&r| r as f64 * slope + intercept));
        }
    }

    pub(super) fn into_volume(self, grid: Grid) -> std::result::Result<AnyVolume, String> {
        let bad = |e: pinhole_volume::DataLengthMismatch| format!("{e:?}");
        match self {
            Self::Int(v) => {
                let fits = v.iter().all(|&x| i16::try_from(x).is_ok());
                if fits {
                    let narrow: Vec<i16> = v.iter().map(|&x| x as i16).collect();
                    Ok(Volume::new(grid, narrow).map_err(bad)?.into())
                } else {
                    Ok(Volume::new(grid, v).map_err(bad)?.into())
                }
            }
            Self::Float(v) => Ok(Volume::new(grid, v).map_err(bad)?.into()),
        }
    }
}
