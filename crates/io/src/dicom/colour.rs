//! Colour series read as RGB volumes (secondary captures, photographs, colour Doppler
//! stills, screen captures): what `pinhole convert` writes as an RGB NRRD that 3D
//! Slicer shows as a vector volume. Planning and every other reader need greyscale and
//! refuse these with a pointer here.
//!
//! * Photometric interpretations: RGB (8, 16 or 32 bits per sample), YBR_FULL and
//!   YBR_FULL_422 (8 bits, converted to RGB with pydicom's formula: PS3.3 C.7.6.3.1.2,
//!   float32, rounded half up, clipped to 0..255), PALETTE COLOR (8- or 16-bit indices
//!   through the red, green and blue tables; 8- or 16-bit entries give 8- or 16-bit
//!   samples; indices outside the table take its first or last entry, as pydicom's
//!   `apply_color_lut` does; segmented tables refused).
//! * Encodings: native (pixel- or plane-interleaved), RLE Lossless (our checked decoder),
//!   JPEG and JPEG 2000 through dicom-pixeldata (the codecs return RGB whatever the
//!   stored colour space: YBR_FULL_422, YBR_ICT, YBR_RCT; baseline JPEG decoded without
//!   the codec's colour transform, see `JPEG_SYNTAXES`), JPEG-LS of three components
//!   (`jpegls`: no colour transform, RGB or YBR_FULL as stored).
//! * Geometry exactly as the greyscale reader's (`assemble::stack_grid`): one frame per
//!   file; a multi-frame colour object without geometry per frame (a cine loop, a set
//!   of pictures) reads alone, its frames stacked along k in file order with a warning
//!   that k is the frame number (ultrasound reads cines frame by frame,
//!   `crate::us_frame`); a gantry-tilted colour stack is refused.
//! * No modality LUT: a RescaleSlope / RescaleIntercept other than 1 / 0 is ignored with
//!   a warning. Signed samples are refused.
//!
//! Nothing is allocated because a header claims it: native pixel data must hold the
//! frame, encapsulated data a fragment for it, a frame is capped at
//! [`super::MAX_FRAME_BYTES`] and a file's decoded frames at
//! [`super::MAX_DECODED_FRAMES_BYTES`] and at the file's size × the deflate ratio.

use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use pinhole_volume::Grid;
use rayon::prelude::*;

use super::assemble::{check_same_matrix, stack_grid};
use super::header::SliceHeader;
use super::listing::no_dicom;
use super::parse::parse;
use super::pixels::{check_transfer_syntax, decode_rle};
use super::{select_series, DicomOptions, SeriesInfo, MAX_FRAME_BYTES, RLE_LOSSLESS};
use crate::error::{Error, ErrorKind, Result, WithPath};

/// Interleaved `R G B` samples, `i` fastest, then `j`, then `k`.
#[derive(Debug, Clone, PartialEq)]
pub enum RgbSamples {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl RgbSamples {
    /// Number of samples (three per voxel).
    pub fn len(&self) -> usize {
        match self {
            RgbSamples::U8(v) => v.len(),
            RgbSamples::U16(v) => v.len(),
            RgbSamples::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bits per sample: 8, 16 or 32.
    pub fn bits(&self) -> u8 {
        match self {
            RgbSamples::U8(_) => 8,
            RgbSamples::U16(_) => 16,
            RgbSamples::U32(_) => 32,
        }
    }

    fn empty_like(&self) -> RgbSamples {
        match self {
            RgbSamples::U8(_) => RgbSamples::U8(Vec::new()),
            RgbSamples::U16(_) => RgbSamples::U16(Vec::new()),
            RgbSamples::U32(_) => RgbSamples::U32(Vec::new()),
        }
    }

    /// Appends `other`; `false` (nothing appended) when the sample sizes differ.
    fn append(&mut self, other: RgbSamples) -> bool {
        match (self, other) {
            (RgbSamples::U8(a), RgbSamples::U8(b)) => a.extend(b),
            (RgbSamples::U16(a), RgbSamples::U16(b)) => a.extend(b),
            (RgbSamples::U32(a), RgbSamples::U32(b)) => a.extend(b),
            _ => return false,
        }
        true
    }
}

/// A colour volume: three samples per voxel on an LPS grid.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbVolume {
    grid: Grid,
    samples: RgbSamples,
}

impl RgbVolume {
    /// Fails unless `samples` holds exactly three per voxel of `grid`.
    pub fn new(grid: Grid, samples: RgbSamples) -> std::result::Result<Self, String> {
        let expected = grid.voxel_count() * 3;
        if samples.len() != expected {
            return Err(format!(
                "{} RGB samples for {} voxels (expected {expected})",
                samples.len(),
                grid.voxel_count()
            ));
        }
        Ok(Self { grid, samples })
    }

    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    pub fn samples(&self) -> &RgbSamples {
        &self.samples
    }

    /// The `[R, G, B]` of voxel `[i, j, k]`, or `None` outside the grid.
    pub fn rgb_at(&self, ijk: [usize; 3]) -> Option<[u32; 3]> {
        let [ni, nj, nk] = self.grid.dims();
        if ijk[0] >= ni || ijk[1] >= nj || ijk[2] >= nk {
            return None;
        }
        let at = 3 * (ijk[0] + ni * (ijk[1] + nj * ijk[2]));
        Some(match &self.samples {
            RgbSamples::U8(v) => [v[at], v[at + 1], v[at + 2]].map(u32::from),
            RgbSamples::U16(v) => [v[at], v[at + 1], v[at + 2]].map(u32::from),
            RgbSamples::U32(v) => [v[at], v[at + 1], v[at + 2]],
        })
    }
}

/// A colour series read into an RGB volume.
#[derive(Debug, Clone)]
pub struct ColourSeries {
    pub volume: RgbVolume,
    pub info: SeriesInfo,
    /// The stored PhotometricInterpretation (the volume is RGB whatever it was).
    pub photometric: String,
    pub warnings: Vec<String>,
}

/// Three samples per pixel, or one through a palette.
pub(super) fn is_colour(h: &SliceHeader) -> bool {
    h.samples_per_pixel == 3 || h.photometric == "PALETTE COLOR"
}

/// Reads one colour series of `dir` into an RGB volume (see the module documentation);
/// `progress(done, total)` after each slice.
pub fn read_colour_series(
    dir: &Path,
    options: &DicomOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ColourSeries> {
    let (info, mut slices) = select_series(dir, options)?;
    let first = slices.first().cloned().ok_or_else(|| no_dicom(dir))?;
    check_same_matrix(dir, &slices, &first)?;
    for s in &slices {
        check_colour_header(s, &first).map_err(|k| Error::new(&s.path, k))?;
    }
    let frames = super::frames::frame_count(&first).map_err(|k| Error::new(&first.path, k))?;
    if let Some(multi) = slices.iter().find(|s| s.frames.is_some_and(|n| n > 1)) {
        if slices.len() > 1 {
            return Err(Error::new(
                dir,
                ErrorKind::MixedSeries(format!(
                    "{} holds {} frames beside {} other files: read a multi-frame colour \
                     object alone",
                    multi.name(),
                    multi.frames.unwrap_or_default(),
                    slices.len() - 1
                )),
            ));
        }
    }
    let mut warnings = Vec::new();
    let (mut grid, shear) = stack_grid(dir, &mut slices, &first, &mut warnings)?;
    if frames > 1 {
        grid = frames_along_k(dir, &grid, frames)?;
        warnings.push(format!(
            "{frames} frames without geometry per frame (a cine loop or a set of pictures) \
             stacked along k in file order, {} mm apart: k is the frame number, not a \
             position",
            grid.spacing_mm()[2]
        ));
    }
    if shear.is_some() {
        return Err(Error::new(
            dir,
            ErrorKind::Unsupported(
                "a gantry-tilted colour stack is not resampled (greyscale stacks are)".into(),
            ),
        ));
    }
    if first.slope != 1.0 || first.intercept != 0.0 {
        warnings.push(format!(
            "RescaleSlope {} / RescaleIntercept {} ignored: colour samples are written as stored",
            first.slope, first.intercept
        ));
    }
    let samples = decode_colour_slices(&slices, progress)?;
    let volume = RgbVolume::new(grid, samples).map_err(|m| Error::new(dir, ErrorKind::Dicom(m)))?;
    Ok(ColourSeries {
        volume,
        info,
        photometric: first.photometric.clone(),
        warnings,
    })
}

/// The one-slice `grid` of a multi-frame object with one plane per frame.
fn frames_along_k(dir: &Path, grid: &Grid, frames: usize) -> Result<Grid> {
    let [ni, nj, _] = grid.dims();
    Grid::new(
        [ni, nj, frames],
        grid.spacing_mm(),
        grid.origin_lps(),
        grid.direction(),
    )
    .map_err(|e| Error::new(dir, e))
}

/// Refuses what this reader cannot decode, before decoding; every slice must match the
/// first's photometric interpretation and sample size.
fn check_colour_header(h: &SliceHeader, first: &SliceHeader) -> std::result::Result<(), ErrorKind> {
    check_transfer_syntax(&h.transfer_syntax)?;
    if !is_colour(first) {
        return Err(ErrorKind::Unsupported(format!(
            "not a colour series ({} with {} samples per pixel): greyscale series are read \
             as volumes by the series reader",
            first.photometric, first.samples_per_pixel
        )));
    }
    if !is_colour(h) {
        return Err(ErrorKind::MixedSeries(format!(
            "{} is {} in a colour series",
            h.name(),
            h.photometric
        )));
    }
    if (h.photometric.as_str(), h.bits_allocated)
        != (first.photometric.as_str(), first.bits_allocated)
    {
        return Err(ErrorKind::MixedSeries(format!(
            "{} is {} of {} bits, {} is {} of {} bits",
            h.name(),
            h.photometric,
            h.bits_allocated,
            first.name(),
            first.photometric,
            first.bits_allocated
        )));
    }
    super::frames::frame_count(h)?;
    if h.signed {
        return Err(ErrorKind::UnsupportedDatatype(
            "signed colour samples (PixelRepresentation 1)".into(),
        ));
    }
    if !matches!(h.bits_allocated, 8 | 16 | 32)
        || h.bits_stored == 0
        || h.bits_stored > h.bits_allocated
    {
        return Err(ErrorKind::UnsupportedDatatype(format!(
            "colour samples of BitsAllocated {} / BitsStored {} (8, 16 or 32 are read)",
            h.bits_allocated, h.bits_stored
        )));
    }
    if h.rows == 0 || h.columns == 0 {
        return Err(ErrorKind::InvalidHeader("Rows or Columns is 0".into()));
    }
    if let Some(problem) = h.invalid.first() {
        return Err(ErrorKind::InvalidHeader(problem.clone()));
    }
    let pixels = usize::from(h.rows) * usize::from(h.columns);
    if pixels * 3 * usize::from(h.bits_allocated / 8) > MAX_FRAME_BYTES {
        return Err(ErrorKind::Unsupported(format!(
            "a colour frame of {}x{} pixels is larger than {MAX_FRAME_BYTES} bytes",
            h.columns, h.rows
        )));
    }
    Ok(())
}

/// Decodes the slices in parallel batches, appended in slice order.
fn decode_colour_slices(
    slices: &[SliceHeader],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RgbSamples> {
    let total = slices.len();
    let mut samples: Option<RgbSamples> = None;
    let batch = 2 * rayon::current_num_threads().max(1);
    let mut done = 0;
    for group in slices.chunks(batch) {
        let decoded: Vec<Result<RgbSamples>> = group.par_iter().map(read_colour_slice).collect();
        for (s, result) in group.iter().zip(decoded) {
            let slice = result?;
            let all = samples.get_or_insert_with(|| slice.empty_like());
            if !all.append(slice) {
                return Err(Error::new(
                    &s.path,
                    ErrorKind::MixedSeries("sample size changed while reading".into()),
                ));
            }
            done += 1;
            progress(done, total);
        }
    }
    samples.ok_or_else(|| Error::new(Path::new(""), ErrorKind::Dicom("no slices".into())))
}

/// Reads one file and decodes its frame to RGB.
fn read_colour_slice(s: &SliceHeader) -> Result<RgbSamples> {
    let bytes = std::fs::read(&s.path).with_path(&s.path)?;
    decode_colour_bytes(&bytes, Some(s)).map_err(|k| Error::new(&s.path, k))
}

/// Parses one in-memory file and decodes its frame to RGB; `listed`, the header the
/// listing saw, must still match (the file may have changed since). For fuzzing with
/// `None`: never panics, never allocates more than the input justifies.
pub(super) fn decode_colour_bytes(
    bytes: &[u8],
    listed: Option<&SliceHeader>,
) -> std::result::Result<RgbSamples, ErrorKind> {
    let obj = parse(bytes, false).map_err(ErrorKind::Dicom)?;
    let path = listed.map(|s| s.path.clone()).unwrap_or_default();
    let h = SliceHeader::from_object(path, &obj).map_err(ErrorKind::InvalidHeader)?;
    let first = listed.unwrap_or(&h);
    if (h.rows, h.columns) != (first.rows, first.columns) {
        return Err(ErrorKind::MixedSeries(
            "matrix size changed while reading".into(),
        ));
    }
    check_colour_header(&h, first)?;
    let frames = super::frames::frame_count(&h)?;
    let pixels = usize::from(h.rows) * usize::from(h.columns);
    let decoded = (frames as u128) * (pixels as u128) * 3 * u128::from(h.bits_allocated / 8);
    let limit = (super::MAX_DECODED_FRAMES_BYTES as u128)
        .min(bytes.len() as u128 * u128::from(crate::nifti::MAX_DEFLATE_RATIO));
    if decoded > limit {
        return Err(ErrorKind::SizeExceedsFile {
            claimed: u64::try_from(decoded).unwrap_or(u64::MAX),
            available: u64::try_from(limit).unwrap_or(u64::MAX),
        });
    }
    let mut all = decode_colour_frame(&obj, &h, 0).map_err(ErrorKind::Dicom)?;
    for index in 1..frames {
        let frame = decode_colour_frame(&obj, &h, index).map_err(ErrorKind::Dicom)?;
        if !all.append(frame) {
            return Err(ErrorKind::Dicom(format!(
                "frame {index} changed sample size"
            )));
        }
    }
    Ok(all)
}

/// How the stored samples become RGB.
enum Stored {
    Rgb,
    Ybr,
    Ybr422,
    Palette(Palette),
}

fn stored_kind(
    obj: &DefaultDicomObject,
    h: &SliceHeader,
    encapsulated: bool,
) -> std::result::Result<Stored, String> {
    let rle = h.transfer_syntax == RLE_LOSSLESS;
    let eight_bit_only = |kind: Stored| {
        if h.bits_allocated == 8 {
            Ok(kind)
        } else {
            Err(format!(
                "{} of {} bits (8 are read)",
                h.photometric, h.bits_allocated
            ))
        }
    };
    match (h.samples_per_pixel, h.photometric.as_str()) {
        (1, "PALETTE COLOR") => Ok(Stored::Palette(Palette::of(obj)?)),
        // The JPEG and JPEG 2000 codecs return RGB whatever the stored colour space.
        (3, "RGB" | "YBR_FULL" | "YBR_FULL_422" | "YBR_PARTIAL_420" | "YBR_ICT" | "YBR_RCT")
            if encapsulated && !rle =>
        {
            Ok(Stored::Rgb)
        }
        (3, "RGB") => Ok(Stored::Rgb),
        (3, "YBR_FULL") => eight_bit_only(Stored::Ybr),
        (3, "YBR_FULL_422") if !rle => eight_bit_only(Stored::Ybr422),
        (samples, photometric) => Err(format!(
            "{photometric} with {samples} samples per pixel{} is not read as colour (RGB, \
             YBR_FULL, YBR_FULL_422 and PALETTE COLOR are)",
            if rle { " in RLE" } else { "" }
        )),
    }
}

/// Decodes the one frame of a checked colour file to interleaved RGB.
fn decode_colour_frame(
    obj: &DefaultDicomObject,
    h: &SliceHeader,
    index: usize,
) -> std::result::Result<RgbSamples, String> {
    let element = obj
        .element_opt(tags::PIXEL_DATA)
        .map_err(|e| e.to_string())?
        .ok_or("no PixelData")?;
    let encapsulated = element.fragments().is_some();
    let frames = h.frames.unwrap_or(1).max(1) as usize;
    // An encapsulated frame: its own fragment, or every fragment of a single frame.
    let codestream = || -> std::result::Result<Vec<u8>, String> {
        let fragments = element.fragments().unwrap_or_default();
        if frames == 1 {
            Ok(fragments.concat())
        } else if fragments.len() == frames {
            Ok(fragments[index].clone())
        } else {
            Err(format!(
                "{frames} frames in {} fragments (one per frame expected)",
                fragments.len()
            ))
        }
    };
    let stored = stored_kind(obj, h, encapsulated)?;
    let pixels = usize::from(h.rows) * usize::from(h.columns);
    let bytes_per = usize::from(h.bits_allocated / 8);
    let samples_per = usize::from(h.samples_per_pixel);
    let planar = int_of(obj, tags::PLANAR_CONFIGURATION) == Some(1);
    let interleaved: Vec<u8> = if !encapsulated {
        let data = element.to_bytes().map_err(|e| e.to_string())?;
        let frame_bytes = match stored {
            Stored::Ybr422 => pixels.div_ceil(2) * 4,
            _ => pixels * samples_per * bytes_per,
        };
        let frame = data
            .get(index * frame_bytes..(index + 1) * frame_bytes)
            .ok_or_else(|| {
                format!(
                    "PixelData holds {} bytes, frame {index} of {}x{} {} needs {}",
                    data.len(),
                    h.columns,
                    h.rows,
                    h.photometric,
                    (index + 1) * frame_bytes
                )
            })?;
        if planar && samples_per == 3 && !matches!(stored, Stored::Ybr422) {
            interleave_planes(frame, pixels, bytes_per)
        } else {
            frame.to_vec()
        }
    } else if h.transfer_syntax == RLE_LOSSLESS {
        let fragment = element
            .fragments()
            .and_then(|f| f.get(index))
            .ok_or_else(|| format!("RLE PixelData without a fragment for frame {index}"))?;
        let decoded = decode_rle(fragment, pixels, samples_per * bytes_per)?;
        rle_to_interleaved(&decoded, samples_per, bytes_per)
    } else if super::jpegls::TRANSFER_SYNTAXES.contains(&h.transfer_syntax.as_str()) {
        // JPEG-LS applies no colour transform of its own: the components are as stored.
        let image = super::pixels::decode_jpegls_components(
            &codestream()?,
            h,
            samples_per,
            h.bits_allocated,
        )?;
        let bytes: Vec<u8> = match bytes_per {
            1 => image.samples.iter().map(|&v| v as u8).collect(),
            _ => image.samples.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let stored = match (samples_per, h.photometric.as_str()) {
            (3, "RGB") => Stored::Rgb,
            (3, "YBR_FULL") if bytes_per == 1 => Stored::Ybr,
            (1, _) => stored,
            (_, photometric) => {
                return Err(format!(
                    "JPEG-LS colour of {photometric} is not read (RGB and YBR_FULL are)"
                ))
            }
        };
        return Ok(to_rgb(&bytes, &stored, pixels, bytes_per));
    } else if is_colour_jpeg(h) {
        return Ok(RgbSamples::U8(jpeg_frame_rgb(&codestream()?, h, pixels)?));
    } else {
        decode_with_codec(obj, h, index, pixels, samples_per, bytes_per)?
    };
    Ok(to_rgb(&interleaved, &stored, pixels, bytes_per))
}

/// JPEG baseline, extended, lossless and lossless SV1: colour decoded here (with
/// `jpeg-decoder`, no colour transform) rather than through dicom-pixeldata, whose
/// decoder converts every three-component image from YCbCr even when its components are
/// RGB (pydicom's `SC_jpeg_no_color_transform.dcm` came out off by up to 137).
const JPEG_SYNTAXES: [&str; 4] = [
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
];

/// An 8-bit three-component image in one of [`JPEG_SYNTAXES`]: decoded here, not by
/// dicom-pixeldata.
pub(super) fn is_colour_jpeg(h: &SliceHeader) -> bool {
    JPEG_SYNTAXES.contains(&h.transfer_syntax.as_str())
        && h.samples_per_pixel == 3
        && h.bits_allocated == 8
}

/// One colour JPEG frame as interleaved 8-bit RGB: the codec's components as stored,
/// converted from YBR when the header (YBR_FULL / YBR_FULL_422) or the JPEG's own Adobe
/// marker says so (pydicom's reading), else taken as RGB.
pub(super) fn jpeg_frame_rgb(
    codestream: &[u8],
    h: &SliceHeader,
    pixels: usize,
) -> std::result::Result<Vec<u8>, String> {
    let raw = decode_jpeg_untransformed(codestream, h, pixels)?;
    let ybr = h.photometric.starts_with("YBR_FULL") || adobe_transform(codestream) == Some(1);
    Ok(if ybr {
        raw.chunks_exact(3)
            .flat_map(|c| ybr_full_to_rgb(c[0], c[1], c[2]))
            .collect()
    } else {
        raw
    })
}

/// One 8-bit, three-component JPEG frame as its components, untransformed; its size
/// must be the header's (the decoder's buffer is capped at the frame's size).
fn decode_jpeg_untransformed(
    codestream: &[u8],
    h: &SliceHeader,
    pixels: usize,
) -> std::result::Result<Vec<u8>, String> {
    let mut decoder = jpeg_decoder::Decoder::new(codestream);
    decoder.set_color_transform(jpeg_decoder::ColorTransform::RGB);
    decoder.set_max_decoding_buffer_size(3 * pixels);
    decoder
        .read_info()
        .map_err(|e| format!("cannot read the JPEG header: {e}"))?;
    let info = decoder.info().ok_or("a JPEG without a frame header")?;
    if (usize::from(info.width), usize::from(info.height))
        != (usize::from(h.columns), usize::from(h.rows))
        || info.pixel_format != jpeg_decoder::PixelFormat::RGB24
    {
        return Err(format!(
            "JPEG frame of {}x{} {:?} does not match the header's {}x{} of three 8-bit samples",
            info.width, info.height, info.pixel_format, h.columns, h.rows
        ));
    }
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decoder.decode()));
    let data = attempt
        .map_err(|_| "the JPEG decoder failed on malformed data".to_string())?
        .map_err(|e| format!("cannot decode the JPEG frame: {e}"))?;
    if data.len() != 3 * pixels {
        return Err(format!(
            "the JPEG frame decoded to {} bytes, expected {}",
            data.len(),
            3 * pixels
        ));
    }
    Ok(data)
}

/// The colour transform an Adobe APP14 marker declares (0 none, 1 YCbCr), if the JPEG
/// has one before its first scan.
fn adobe_transform(codestream: &[u8]) -> Option<u8> {
    let mut at = 2; // after SOI
    while at + 4 <= codestream.len() {
        if codestream[at] != 0xFF {
            return None;
        }
        let marker = codestream[at + 1];
        if marker == 0xDA {
            return None; // start of scan
        }
        let length = usize::from(u16::from_be_bytes([codestream[at + 2], codestream[at + 3]]));
        let segment = codestream.get(at + 4..at + 2 + length)?;
        if marker == 0xEE && segment.starts_with(b"Adobe") {
            return segment.get(11).copied();
        }
        at += 2 + length;
    }
    None
}

/// JPEG / JPEG 2000 through dicom-pixeldata (panics contained), checked against the
/// header, as interleaved little-endian samples.
fn decode_with_codec(
    obj: &DefaultDicomObject,
    h: &SliceHeader,
    index: usize,
    pixels: usize,
    samples_per: usize,
    bytes_per: usize,
) -> std::result::Result<Vec<u8>, String> {
    let index = u32::try_from(index).map_err(|_| "too many frames".to_string())?;
    let decoded = super::pixels::decode_with_dicom_rs(obj, h, index)?;
    if decoded.rows() != u32::from(h.rows)
        || decoded.columns() != u32::from(h.columns)
        || usize::from(decoded.samples_per_pixel()) != samples_per
        || decoded.bits_allocated() != h.bits_allocated
    {
        return Err("decoded frame does not match the header".into());
    }
    let need = pixels * samples_per * bytes_per;
    let data = decoded.data().get(..need).ok_or_else(|| {
        format!(
            "decoded frame holds {} bytes, expected {need}",
            decoded.data().len()
        )
    })?;
    let planar = decoded.planar_configuration() == dicom_pixeldata::PlanarConfiguration::PixelFirst;
    Ok(if planar && samples_per == 3 {
        interleave_planes(data, pixels, bytes_per)
    } else {
        data.to_vec()
    })
}

/// `RRR… GGG… BBB…` (samples of `bytes_per` bytes) to `RGB RGB …`.
fn interleave_planes(data: &[u8], pixels: usize, bytes_per: usize) -> Vec<u8> {
    let plane = pixels * bytes_per;
    let mut out = Vec::with_capacity(3 * plane);
    for p in 0..pixels {
        for c in 0..3 {
            let at = c * plane + p * bytes_per;
            out.extend_from_slice(&data[at..at + bytes_per]);
        }
    }
    out
}

/// `decode_rle`'s pixels (every byte of a pixel reversed: the last sample's low byte
/// first) to interleaved little-endian samples in stored order.
fn rle_to_interleaved(data: &[u8], samples_per: usize, bytes_per: usize) -> Vec<u8> {
    let group = samples_per * bytes_per;
    let mut out = Vec::with_capacity(data.len());
    for pixel in data.chunks_exact(group) {
        for c in 0..samples_per {
            let at = (samples_per - 1 - c) * bytes_per;
            out.extend_from_slice(&pixel[at..at + bytes_per]);
        }
    }
    out
}

/// Interleaved little-endian stored samples (RGB, YBR, YBR 4:2:2 pairs or palette
/// indices) to RGB.
fn to_rgb(data: &[u8], stored: &Stored, pixels: usize, bytes_per: usize) -> RgbSamples {
    match stored {
        Stored::Rgb if bytes_per == 1 => RgbSamples::U8(data[..3 * pixels].to_vec()),
        Stored::Rgb if bytes_per == 2 => RgbSamples::U16(
            data.chunks_exact(2)
                .take(3 * pixels)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        Stored::Rgb => RgbSamples::U32(
            data.chunks_exact(4)
                .take(3 * pixels)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Stored::Ybr => RgbSamples::U8(
            data.chunks_exact(3)
                .take(pixels)
                .flat_map(|c| ybr_full_to_rgb(c[0], c[1], c[2]))
                .collect(),
        ),
        Stored::Ybr422 => {
            let mut out = Vec::with_capacity(3 * pixels);
            for quad in data.chunks_exact(4) {
                let (cb, cr) = (quad[2], quad[3]);
                out.extend(ybr_full_to_rgb(quad[0], cb, cr));
                out.extend(ybr_full_to_rgb(quad[1], cb, cr));
            }
            // An odd pixel count leaves a last pair with one pixel.
            out.truncate(3 * pixels);
            RgbSamples::U8(out)
        }
        Stored::Palette(palette) => {
            let index = |p: usize| -> i64 {
                if bytes_per == 1 {
                    i64::from(data[p])
                } else {
                    i64::from(u16::from_le_bytes([data[2 * p], data[2 * p + 1]]))
                }
            };
            if palette.bits16 {
                RgbSamples::U16((0..pixels).flat_map(|p| palette.rgb(index(p))).collect())
            } else {
                RgbSamples::U8(
                    (0..pixels)
                        .flat_map(|p| palette.rgb(index(p)).map(|v| v as u8))
                        .collect(),
                )
            }
        }
    }
}

/// YBR_FULL to RGB as pydicom 3 computes it (PS3.3 C.7.6.3.1.2): float32, the matrix
/// `R = Y + 1.402 Cr'`, `G = Y − 0.114·1.772/0.587 Cb' − 0.299·1.402/0.587 Cr'`,
/// `B = Y + 1.772 Cb'` (`Cb' = Cb − 128`), rounded half up, clipped to 0..255.
pub(super) fn ybr_full_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (f32::from(y), f32::from(cb) - 128.0, f32::from(cr) - 128.0);
    let g_cb = -0.114f32 * 1.772 / 0.587;
    let g_cr = -0.299f32 * 1.402 / 0.587;
    let to_u8 = |v: f32| (v + 0.5).floor().clamp(0.0, 255.0) as u8;
    [
        to_u8(y + 0.0 * cb + 1.402 * cr),
        to_u8(y + g_cb * cb + g_cr * cr),
        to_u8(y + 1.772 * cb + 0.0 * cr),
    ]
}

/// A PALETTE COLOR object's red, green and blue lookup tables (PS3.3 C.7.6.3.1.5).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Palette {
    /// Entries of each table, as stored (8- or 16-bit values).
    tables: [Vec<u16>; 3],
    /// The first stored value mapped (descriptor's second value).
    first: i64,
    /// 16-bit entries (else 8-bit).
    pub(super) bits16: bool,
}

impl Palette {
    /// Reads the three descriptors and tables: descriptor `[entries (0: 65536), first
    /// mapped value, bits per entry]`; 8-bit entries may come one per byte or one per
    /// 16-bit word (low byte). Segmented tables are refused.
    pub(super) fn of(obj: &DefaultDicomObject) -> std::result::Result<Palette, String> {
        if obj
            .element_opt(tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA)
            .ok()
            .flatten()
            .is_some()
        {
            return Err("segmented palette colour lookup tables are not read".into());
        }
        let red = table(
            obj,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "red",
        )?;
        let green = table(
            obj,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "green",
        )?;
        let blue = table(
            obj,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            "blue",
        )?;
        if (red.1, red.2) != (green.1, green.2) || (red.1, red.2) != (blue.1, blue.2) {
            return Err("the red, green and blue palette descriptors disagree".into());
        }
        Ok(Palette {
            first: red.1,
            bits16: red.2,
            tables: [red.0, green.0, blue.0],
        })
    }

    /// The `[R, G, B]` entries for stored value `value` (clamped into the table).
    pub(super) fn rgb(&self, value: i64) -> [u16; 3] {
        self.tables.each_ref().map(|t| {
            let at = (value - self.first).clamp(0, t.len() as i64 - 1) as usize;
            t[at]
        })
    }
}

/// One table: entries, first mapped value, 16-bit entries.
fn table(
    obj: &DefaultDicomObject,
    descriptor: Tag,
    data: Tag,
    name: &str,
) -> std::result::Result<(Vec<u16>, i64, bool), String> {
    let d = obj
        .element_opt(descriptor)
        .ok()
        .flatten()
        .and_then(|e| e.to_multi_int::<i64>().ok())
        .filter(|d| d.len() == 3)
        .ok_or_else(|| format!("PALETTE COLOR without a usable {name} descriptor"))?;
    let entries = if d[0] == 0 { 65536 } else { d[0] };
    let entries = usize::try_from(entries)
        .ok()
        .filter(|n| (1..=65536).contains(n))
        .ok_or_else(|| format!("{name} descriptor: {} entries", d[0]))?;
    let bytes = obj
        .element_opt(data)
        .ok()
        .flatten()
        .and_then(|e| e.to_bytes().ok())
        .ok_or_else(|| format!("PALETTE COLOR without {name} data"))?;
    let values: Vec<u16> = match d[2] {
        16 if bytes.len() >= 2 * entries => bytes
            .chunks_exact(2)
            .take(entries)
            .map(|w| u16::from_le_bytes([w[0], w[1]]))
            .collect(),
        8 if bytes.len() >= 2 * entries => bytes
            .chunks_exact(2)
            .take(entries)
            .map(|w| u16::from(w[0]))
            .collect(),
        8 if bytes.len() >= entries => bytes[..entries].iter().map(|&b| u16::from(b)).collect(),
        bits => {
            return Err(format!(
                "{name}: {entries} entries of {bits} bits in {} bytes",
                bytes.len()
            ))
        }
    };
    Ok((values, d[1], d[2] == 16))
}

fn int_of(obj: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    obj.element_opt(tag).ok()??.to_int::<i64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ybr_grey_stays_grey_and_primaries_come_back() {
        assert_eq!(ybr_full_to_rgb(100, 128, 128), [100, 100, 100]);
        // Pure red through the forward YBR_FULL equations (PS3.3 C.7.6.3.1.2).
        let (r, g, b) = (255.0f64, 0.0, 0.0);
        let y = 0.299 * r + 0.587 * g + 0.114 * b;
        let cb = -0.1687 * r - 0.3313 * g + 0.5 * b + 128.0;
        let cr = 0.5 * r - 0.4187 * g - 0.0813 * b + 128.0;
        let rgb = ybr_full_to_rgb(y.round() as u8, cb.round() as u8, cr.round() as u8);
        assert!(rgb[0] >= 253 && rgb[1] <= 2 && rgb[2] <= 2, "{rgb:?}");
    }

    #[test]
    fn planes_and_rle_pixels_interleave_in_stored_order() {
        // Two pixels, RGB planes of 8 bits.
        assert_eq!(
            interleave_planes(&[1, 2, 3, 4, 5, 6], 2, 1),
            vec![1, 3, 5, 2, 4, 6]
        );
        // decode_rle's 16-bit RGB pixel: B lo, B hi, G lo, G hi, R lo, R hi.
        let pixel = [0xB0, 0xB1, 0x60, 0x61, 0x20, 0x21];
        assert_eq!(
            rle_to_interleaved(&pixel, 3, 2),
            vec![0x20, 0x21, 0x60, 0x61, 0xB0, 0xB1]
        );
    }

    #[test]
    fn the_adobe_marker_is_found_before_the_scan_only() {
        let app14 = |t: u8| {
            let mut s = vec![0xFF, 0xD8, 0xFF, 0xEE, 0x00, 0x0E];
            s.extend_from_slice(b"Adobe\x00\x64\x00\x00\x00\x00");
            s.push(t);
            s.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x02]);
            s
        };
        assert_eq!(adobe_transform(&app14(1)), Some(1));
        assert_eq!(adobe_transform(&app14(0)), Some(0));
        // A scan first: whatever follows is entropy-coded data, not a marker.
        let mut late = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02];
        late.extend_from_slice(&app14(1)[2..]);
        assert_eq!(adobe_transform(&late), None);
        assert_eq!(adobe_transform(&[0xFF, 0xD8, 0xFF]), None);
    }

    #[test]
    fn rgb_at_reads_i_fastest_and_refuses_outside() {
        let grid = Grid::new(
            [2, 1, 1],
            [1.0; 3],
            [0.0; 3],
            pinhole_volume::math::IDENTITY,
        )
        .unwrap();
        let v = RgbVolume::new(grid, RgbSamples::U8(vec![1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(v.rgb_at([1, 0, 0]), Some([4, 5, 6]));
        assert_eq!(v.rgb_at([2, 0, 0]), None);
        let grid = v.grid().clone();
        assert!(RgbVolume::new(grid, RgbSamples::U8(vec![0; 5])).is_err());
    }
}
