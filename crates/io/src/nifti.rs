//! NIfTI-1 and NIfTI-2 (`.nii`, `.nii.gz`) reader, NIfTI-1 writer.
//!
//! Geometry: `sform` when `sform_code > 0`, else `qform` when `qform_code > 0`, else the
//! ANALYZE-style base affine nibabel uses; the file's RAS affine is turned into LPS here.
//! `scl_slope`/`scl_inter` are applied (a slope of 0 or NaN means "no scaling"; values
//! outside [`crate::rescale`]'s limits are refused). Refused geometry: a qform
//! quaternion that is not a rotation, non-positive or non-finite voxel sizes where they
//! set the geometry, a non-finite or degenerate affine. A single-file
//! `vox_offset` below the header size means "right after the header" (352 / 544), as
//! nibabel reads it.

use std::io::{Read, Write};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use pinhole_volume::{Grid, Volume, Voxel};

use crate::atomic::AtomicFile;
use crate::error::{Error, ErrorKind, Result, WithPath};
use crate::image::{AnyVolume, ScalarType};
use crate::raw::{encode_samples, Endian};

const NIFTI1_HEADER: usize = 348;
const NIFTI1_DATA_START: usize = 352;
const NIFTI2_HEADER: usize = 540;
const NIFTI2_DATA_START: usize = 544;
/// deflate never expands data by more than this factor; bounds what a `.gz` may claim.
pub(crate) const MAX_DEFLATE_RATIO: u64 = 1032;

/// Reads a NIfTI file (`.nii` or gzip-compressed, detected by content), streaming: the
/// file is never held in memory, only the volume (peak: the volume plus 1 MiB).
pub fn read(path: &Path) -> Result<AnyVolume> {
    let file = std::fs::File::open(path).with_path(path)?;
    let file_bytes = file.metadata().with_path(path)?.len();
    read_stream(std::io::BufReader::new(file), file_bytes).map_err(|kind| Error::new(path, kind))
}

/// Reads a NIfTI image held in memory (possibly gzip-compressed).
pub fn read_bytes(raw: &[u8]) -> std::result::Result<AnyVolume, ErrorKind> {
    read_stream(raw, raw.len() as u64)
}

fn read_stream(
    mut input: impl std::io::BufRead,
    input_bytes: u64,
) -> std::result::Result<AnyVolume, ErrorKind> {
    let magic = input
        .fill_buf()
        .map_err(|e| ErrorKind::Truncated(format!("reading: {e}")))?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        let limit = input_bytes.saturating_mul(MAX_DEFLATE_RATIO);
        decode_stream(&mut MultiGzDecoder::new(input), Some(limit), "gzip stream")
    } else {
        decode_stream(&mut input, None, "reading")
    }
}

/// Header, then the samples straight from `stream` into the volume. `limit`: the most
/// bytes the stream can yield (a compressed file's bound), checked against the header's
/// claim before any sample is read.
fn decode_stream(
    stream: &mut dyn Read,
    limit: Option<u64>,
    what: &str,
) -> std::result::Result<AnyVolume, ErrorKind> {
    let io_error = |e: std::io::Error| ErrorKind::Truncated(format!("{what}: {e}"));
    let mut prefix = Vec::new();
    stream
        .take(NIFTI2_DATA_START as u64)
        .read_to_end(&mut prefix)
        .map_err(io_error)?;
    let header = parse_header(&prefix)?;
    let scalar = header.scalar_type()?;
    let end = header.data_end()?;
    if let Some(limit) = limit.filter(|&limit| end > limit) {
        return Err(ErrorKind::SizeExceedsFile {
            claimed: end,
            available: limit,
        });
    }
    let grid = grid_of(&header)?;
    let start = header.data_start;
    let consumed = prefix.len() as u64;
    let head = prefix.get(start.min(consumed) as usize..).unwrap_or(&[]);
    if start > consumed {
        let skipped = std::io::copy(&mut stream.take(start - consumed), &mut std::io::sink())
            .map_err(io_error)?;
        if skipped < start - consumed {
            return Err(ErrorKind::SizeExceedsFile {
                claimed: end - start,
                available: 0,
            });
        }
    }
    let mut payload = head.chain(stream);
    let stored = crate::raw::read_samples(grid, &mut payload, scalar, header.endian).map_err(
        |e| match e {
            crate::raw::ReadSamplesError::Short { expected, found } => ErrorKind::SizeExceedsFile {
                claimed: expected,
                available: found,
            },
            crate::raw::ReadSamplesError::Io(e) => io_error(e),
        },
    )?;
    apply_scaling(stored, header.scl_slope, header.scl_inter)
}

/// Decompresses at most `limit` bytes of a gzip stream (never more than it yields).
pub(crate) fn gunzip_prefix(raw: &[u8], limit: u64) -> std::result::Result<Vec<u8>, ErrorKind> {
    let mut out = Vec::new();
    MultiGzDecoder::new(raw)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| ErrorKind::Truncated(format!("gzip stream: {e}")))?;
    Ok(out)
}

#[derive(Debug, Clone)]
struct Header {
    endian: Endian,
    data_start: u64,
    dims: [usize; 3],
    datatype: i16,
    pixdim: [f64; 4],
    qform_code: i32,
    sform_code: i32,
    quatern: [f64; 3],
    qoffset: [f64; 3],
    srow: [[f64; 4]; 3],
    scl_slope: f64,
    scl_inter: f64,
}

impl Header {
    fn scalar_type(&self) -> std::result::Result<ScalarType, ErrorKind> {
        Ok(match self.datatype {
            2 => ScalarType::U8,
            4 => ScalarType::I16,
            8 => ScalarType::I32,
            16 => ScalarType::F32,
            64 => ScalarType::F64,
            256 => ScalarType::I8,
            512 => ScalarType::U16,
            768 => ScalarType::U32,
            other => {
                return Err(ErrorKind::UnsupportedDatatype(format!(
                    "NIfTI datatype {other} ({})",
                    datatype_name(other)
                )))
            }
        })
    }

    /// The product of the dimensions, `None` when it overflows `u64` (a fuzzed NIfTI-2
    /// header panicked here).
    fn voxel_count(&self) -> Option<u64> {
        self.dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
    }

    fn data_end(&self) -> std::result::Result<u64, ErrorKind> {
        let sample_bytes = self.scalar_type()?.size_bytes() as u64;
        let bytes = self
            .voxel_count()
            .and_then(|n| n.checked_mul(sample_bytes))
            .and_then(|n| n.checked_add(self.data_start))
            .ok_or_else(|| {
                ErrorKind::InvalidHeader(format!("absurd dimensions {:?}", self.dims))
            })?;
        Ok(bytes)
    }
}

fn datatype_name(code: i16) -> &'static str {
    match code {
        0 => "unknown",
        1 => "binary",
        32 => "complex64",
        128 => "RGB24",
        1024 => "int64",
        1280 => "uint64",
        1536 => "float128",
        1792 => "complex128",
        2048 => "complex256",
        2304 => "RGBA32",
        _ => "not a NIfTI type",
    }
}

struct Fields<'a> {
    bytes: &'a [u8],
    endian: Endian,
}

impl Fields<'_> {
    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[at..at + N]);
        out
    }
    fn i16(&self, at: usize) -> i16 {
        let b = self.array::<2>(at);
        match self.endian {
            Endian::Little => i16::from_le_bytes(b),
            Endian::Big => i16::from_be_bytes(b),
        }
    }
    fn i32(&self, at: usize) -> i32 {
        let b = self.array::<4>(at);
        match self.endian {
            Endian::Little => i32::from_le_bytes(b),
            Endian::Big => i32::from_be_bytes(b),
        }
    }
    fn i64(&self, at: usize) -> i64 {
        let b = self.array::<8>(at);
        match self.endian {
            Endian::Little => i64::from_le_bytes(b),
            Endian::Big => i64::from_be_bytes(b),
        }
    }
    fn f32(&self, at: usize) -> f64 {
        let b = self.array::<4>(at);
        f64::from(match self.endian {
            Endian::Little => f32::from_le_bytes(b),
            Endian::Big => f32::from_be_bytes(b),
        })
    }
    fn f64(&self, at: usize) -> f64 {
        let b = self.array::<8>(at);
        match self.endian {
            Endian::Little => f64::from_le_bytes(b),
            Endian::Big => f64::from_be_bytes(b),
        }
    }
}

fn parse_header(bytes: &[u8]) -> std::result::Result<Header, ErrorKind> {
    if bytes.len() < 4 {
        return Err(ErrorKind::Truncated(format!(
            "{} bytes, too short for a NIfTI header",
            bytes.len()
        )));
    }
    let size_le = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let size_be = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let (version, endian) = match (size_le, size_be) {
        (348, _) => (1, Endian::Little),
        (_, 348) => (1, Endian::Big),
        (540, _) => (2, Endian::Little),
        (_, 540) => (2, Endian::Big),
        _ => {
            return Err(ErrorKind::NotMedicalImage(
                "no NIfTI header (sizeof_hdr is neither 348 nor 540)".into(),
            ))
        }
    };
    let header_len = if version == 1 {
        NIFTI1_HEADER
    } else {
        NIFTI2_HEADER
    };
    if bytes.len() < header_len {
        return Err(ErrorKind::Truncated(format!(
            "{} bytes, the NIfTI-{version} header needs {header_len}",
            bytes.len()
        )));
    }
    let f = Fields { bytes, endian };
    if version == 1 {
        parse_nifti1(&f)
    } else {
        parse_nifti2(&f)
    }
}

fn check_magic(magic: &[u8]) -> std::result::Result<(), ErrorKind> {
    match magic {
        [b'n', b'+', b'1' | b'2', 0, ..] => Ok(()),
        [b'n', b'i', b'1' | b'2', 0, ..] => Err(ErrorKind::Unsupported(
            "NIfTI header/image pair (.hdr/.img); convert to a single .nii file".into(),
        )),
        _ => Err(ErrorKind::NotMedicalImage(format!(
            "bad NIfTI magic {:?}",
            String::from_utf8_lossy(&magic[..magic.len().min(4)])
        ))),
    }
}

fn spatial_dims(dim: [i64; 8]) -> std::result::Result<[usize; 3], ErrorKind> {
    let ndim = dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(ErrorKind::InvalidHeader(format!(
            "dim[0] = {ndim} is not in 1..7"
        )));
    }
    let mut dims = [1usize; 3];
    for a in 0..ndim as usize {
        let d = dim[a + 1];
        if d < 1 {
            return Err(ErrorKind::InvalidHeader(format!("dim[{}] = {d}", a + 1)));
        }
        if a >= 3 {
            if d > 1 {
                return Err(ErrorKind::Unsupported(format!(
                    "{ndim}-D image (dim = {:?}); only 3-D volumes are supported",
                    &dim[1..=ndim as usize]
                )));
            }
        } else {
            dims[a] = usize::try_from(d)
                .map_err(|_| ErrorKind::InvalidHeader(format!("dim[{}] = {d}", a + 1)))?;
        }
    }
    Ok(dims)
}

fn parse_nifti1(f: &Fields) -> std::result::Result<Header, ErrorKind> {
    check_magic(&f.bytes[344..348])?;
    let dim = std::array::from_fn(|n| i64::from(f.i16(40 + 2 * n)));
    let vox_offset = f.f32(108);
    Ok(Header {
        endian: f.endian,
        data_start: data_start(vox_offset, NIFTI1_DATA_START)?,
        dims: spatial_dims(dim)?,
        datatype: f.i16(70),
        pixdim: std::array::from_fn(|n| f.f32(76 + 4 * n)),
        qform_code: i32::from(f.i16(252)),
        sform_code: i32::from(f.i16(254)),
        quatern: std::array::from_fn(|n| f.f32(256 + 4 * n)),
        qoffset: std::array::from_fn(|n| f.f32(268 + 4 * n)),
        srow: std::array::from_fn(|r| std::array::from_fn(|c| f.f32(280 + 16 * r + 4 * c))),
        scl_slope: f.f32(112),
        scl_inter: f.f32(116),
    })
}

fn parse_nifti2(f: &Fields) -> std::result::Result<Header, ErrorKind> {
    check_magic(&f.bytes[4..12])?;
    let dim = std::array::from_fn(|n| f.i64(16 + 8 * n));
    let vox_offset = f.i64(168) as f64;
    Ok(Header {
        endian: f.endian,
        data_start: data_start(vox_offset, NIFTI2_DATA_START)?,
        dims: spatial_dims(dim)?,
        datatype: f.i16(12),
        pixdim: std::array::from_fn(|n| f.f64(104 + 8 * n)),
        qform_code: f.i32(344),
        sform_code: f.i32(348),
        quatern: std::array::from_fn(|n| f.f64(352 + 8 * n)),
        qoffset: std::array::from_fn(|n| f.f64(376 + 8 * n)),
        srow: std::array::from_fn(|r| std::array::from_fn(|c| f.f64(400 + 32 * r + 8 * c))),
        scl_slope: f.f64(176),
        scl_inter: f.f64(184),
    })
}

fn data_start(vox_offset: f64, minimum: usize) -> std::result::Result<u64, ErrorKind> {
    if !vox_offset.is_finite() || !(0.0..=1e15).contains(&vox_offset) {
        return Err(ErrorKind::InvalidHeader(format!(
            "vox_offset = {vox_offset}"
        )));
    }
    Ok((vox_offset as u64).max(minimum as u64))
}

/// `value = slope · stored + inter`, keeping an integer type when the result is integral
/// and fits (the chest CT: int16 with `scl_inter = -1024` stays int16).
///
/// A slope of 0 or a non-finite slope means "no scaling" (the NIfTI standard and
/// nibabel; nibabel itself writes NaN there). A usable slope with a non-finite
/// intercept, or values outside [`crate::rescale`]'s limits, are refused.
fn apply_scaling(
    stored: AnyVolume,
    slope: f64,
    inter: f64,
) -> std::result::Result<AnyVolume, ErrorKind> {
    if slope == 0.0 || !slope.is_finite() {
        return Ok(stored);
    }
    crate::rescale::check(slope, inter, "scl_slope", "scl_inter")?;
    if slope == 1.0 && inter == 0.0 {
        return Ok(stored);
    }
    let scale = move |x: f64| slope * x + inter;
    if stored.scalar_type().is_integer() && slope.fract() == 0.0 && inter.fract() == 0.0 {
        if let Some((lo, hi)) = stored.min_max() {
            let (a, b) = (scale(lo), scale(hi));
            let (lo, hi) = (a.min(b), a.max(b));
            if lo >= f64::from(i16::MIN) && hi <= f64::from(i16::MAX) {
                if let AnyVolume::I16(mut v) = stored {
                    // In place: no second copy of a CT stored as int16.
                    for x in v.data_mut() {
                        *x = scale(f64::from(*x)) as i16;
                    }
                    return Ok(AnyVolume::I16(v));
                }
                return Ok(AnyVolume::I16(
                    crate::with_volume!(&stored, v => v.map(|x| scale(x.to_f64()) as i16)),
                ));
            }
            if lo >= f64::from(i32::MIN) && hi <= f64::from(i32::MAX) {
                return Ok(AnyVolume::I32(
                    crate::with_volume!(&stored, v => v.map(|x| scale(x.to_f64()) as i32)),
                ));
            }
        }
    }
    Ok(AnyVolume::F64(
        crate::with_volume!(&stored, v => v.map(|x| scale(x.to_f64()))),
    ))
}

/// Most negative `1 - (b² + c² + d²)` of a qform quaternion still taken as rounding (and
/// then as `a = 0`): nibabel's threshold for float32 headers, `-3 · eps(f32)`.
const QUATERNION_TOLERANCE: f64 = 3.0 * f32::EPSILON as f64;

/// The index→RAS affine, by nibabel's `get_best_affine` rules. Refused: a qform
/// quaternion whose `b² + c² + d²` exceeds 1 (beyond [`QUATERNION_TOLERANCE`]; it is
/// not a rotation, and would scale the voxel size), and voxel sizes (`pixdim[1..=3]`)
/// that are not finite and positive where the affine uses them (qform or none; an axis
/// one voxel thick gets 1 mm).
fn ras_affine(h: &Header) -> std::result::Result<[[f64; 4]; 3], ErrorKind> {
    if h.sform_code > 0 {
        return Ok(h.srow);
    }
    // An axis one voxel thick (a 2-D image's third) has no extent: any size will do.
    let zooms: [f64; 3] = std::array::from_fn(|a| {
        let z = h.pixdim[a + 1];
        if h.dims[a] == 1 && !(z.is_finite() && z > 0.0) {
            1.0
        } else {
            z
        }
    });
    if zooms.iter().any(|z| !z.is_finite() || *z <= 0.0) {
        return Err(ErrorKind::InvalidHeader(format!(
            "pixdim[1..=3] = {zooms:?}: voxel sizes must be finite and positive (the file \
             has no sform, so they set the geometry)"
        )));
    }
    if h.qform_code > 0 {
        let [b, c, d] = h.quatern;
        let norm2 = b * b + c * c + d * d;
        if !norm2.is_finite() || 1.0 - norm2 < -QUATERNION_TOLERANCE {
            return Err(ErrorKind::InvalidHeader(format!(
                "qform quaternion (b, c, d) = ({b}, {c}, {d}) is not a rotation: \
                 b² + c² + d² = {norm2} exceeds 1"
            )));
        }
        let a = (1.0 - norm2).max(0.0).sqrt();
        let r = [
            [
                a * a + b * b - c * c - d * d,
                2.0 * (b * c - a * d),
                2.0 * (b * d + a * c),
            ],
            [
                2.0 * (b * c + a * d),
                a * a + c * c - b * b - d * d,
                2.0 * (c * d - a * b),
            ],
            [
                2.0 * (b * d - a * c),
                2.0 * (c * d + a * b),
                a * a + d * d - c * c - b * b,
            ],
        ];
        let qfac = if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let scale = [zooms[0], zooms[1], zooms[2] * qfac];
        return Ok(std::array::from_fn(|row| {
            let mut out = [0.0; 4];
            for col in 0..3 {
                out[col] = r[row][col] * scale[col];
            }
            out[3] = h.qoffset[row];
            out
        }));
    }
    // ANALYZE base affine: x flipped, origin at the volume centre.
    let centre = h.dims.map(|d| (d as f64 - 1.0) / 2.0);
    let diag = [-zooms[0], zooms[1], zooms[2]];
    Ok(std::array::from_fn(|row| {
        let mut out = [0.0; 4];
        out[row] = diag[row];
        out[3] = -centre[row] * diag[row];
        out
    }))
}

fn grid_of(h: &Header) -> std::result::Result<Grid, ErrorKind> {
    let ras = ras_affine(h)?;
    if ras.iter().flatten().any(|v| !v.is_finite()) {
        return Err(ErrorKind::InvalidHeader(format!(
            "non-finite affine {ras:?}"
        )));
    }
    let mut lps = [[0.0; 4]; 4];
    for r in 0..3 {
        let sign = if r < 2 { -1.0 } else { 1.0 };
        for c in 0..4 {
            lps[r][c] = sign * ras[r][c];
        }
    }
    lps[3][3] = 1.0;
    Ok(Grid::from_ijk_to_lps(h.dims, &lps)?)
}

/// Writes a NIfTI-1 file (gzip when the name ends in `.gz`) with sform and qform set to
/// the grid's RAS affine (code 1, scanner-anatomical), units mm.
pub fn write(path: &Path, volume: &AnyVolume) -> Result<()> {
    let bytes = encode(volume).map_err(|kind| Error::new(path, kind))?;
    let mut file = AtomicFile::create(path)?;
    let gzip = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    if gzip {
        let mut encoder = GzEncoder::new(&mut file, flate2::Compression::new(6));
        encoder.write_all(&bytes).with_path(path)?;
        encoder.finish().with_path(path)?;
    } else {
        file.write_all(&bytes).with_path(path)?;
    }
    file.commit()
}

/// The bytes of a NIfTI-1 file (header and samples, uncompressed) for `volume`.
fn encode(volume: &AnyVolume) -> std::result::Result<Vec<u8>, ErrorKind> {
    let mut bytes = header_bytes(volume)?;
    crate::with_volume!(volume, v => encode_samples(v.data(), &mut bytes));
    Ok(bytes)
}

/// The bytes of a `.nii.gz` file for `volume` (fast gzip level; for serving over HTTP).
/// `name` only labels errors.
pub fn to_gzip_bytes(volume: &AnyVolume, name: &str) -> Result<Vec<u8>> {
    let origin = Path::new(name);
    let bytes = encode(volume).map_err(|kind| Error::new(origin, kind))?;
    gzip_fast(bytes, origin)
}

/// NIfTI-1 `intent_code` of a label map (`NIFTI_INTENT_LABEL`): values are indices into
/// a label table, not intensities, so viewers look colours up exactly (NiiVue's atlas
/// shader) instead of interpolating a colour ramp.
pub const NIFTI_INTENT_LABEL: i16 = 1002;

/// [`to_gzip_bytes`] for a label map: the header says `NIFTI_INTENT_LABEL`.
pub fn label_map_to_gzip_bytes(volume: &AnyVolume, name: &str) -> Result<Vec<u8>> {
    let origin = Path::new(name);
    let mut bytes = encode(volume).map_err(|kind| Error::new(origin, kind))?;
    bytes[INTENT_CODE_AT..INTENT_CODE_AT + 2].copy_from_slice(&NIFTI_INTENT_LABEL.to_le_bytes());
    gzip_fast(bytes, origin)
}

/// Byte offset of `intent_code` in a NIfTI-1 header.
const INTENT_CODE_AT: usize = 68;

fn gzip_fast(bytes: Vec<u8>, origin: &Path) -> Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&bytes).with_path(origin)?;
    encoder.finish().with_path(origin)
}

fn datatype_code(scalar: ScalarType) -> (i16, i16) {
    match scalar {
        ScalarType::U8 => (2, 8),
        ScalarType::I16 => (4, 16),
        ScalarType::I32 => (8, 32),
        ScalarType::F32 => (16, 32),
        ScalarType::F64 => (64, 64),
        ScalarType::I8 => (256, 8),
        ScalarType::U16 => (512, 16),
        ScalarType::U32 => (768, 32),
    }
}

fn header_bytes(volume: &AnyVolume) -> std::result::Result<Vec<u8>, ErrorKind> {
    let grid = volume.grid();
    let dims = grid.dims();
    let mut h = vec![0u8; NIFTI1_DATA_START];
    let put_i16 =
        |h: &mut Vec<u8>, at: usize, v: i16| h[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put_f32 = |h: &mut Vec<u8>, at: usize, v: f64| {
        h[at..at + 4].copy_from_slice(&(v as f32).to_le_bytes())
    };
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    put_i16(&mut h, 40, 3);
    for (a, &d) in dims.iter().enumerate() {
        let d = i16::try_from(d).map_err(|_| {
            ErrorKind::Unsupported(format!("dimension {d} exceeds NIfTI-1's limit of 32767"))
        })?;
        put_i16(&mut h, 42 + 2 * a, d);
    }
    for a in 4..8 {
        put_i16(&mut h, 40 + 2 * a, 1);
    }
    let (code, bits) = datatype_code(volume.scalar_type());
    put_i16(&mut h, 70, code);
    put_i16(&mut h, 72, bits);
    let ras = grid.ijk_to_ras();
    let (quatern, qfac) = quaternion_of(&grid.direction());
    put_f32(&mut h, 76, qfac);
    for (a, s) in grid.spacing_mm().iter().enumerate() {
        put_f32(&mut h, 80 + 4 * a, *s);
    }
    put_f32(&mut h, 108, NIFTI1_DATA_START as f64);
    put_f32(&mut h, 112, 1.0);
    h[123] = 10; // xyzt_units: mm + s
    put_i16(&mut h, 252, 1);
    put_i16(&mut h, 254, 1);
    for (n, q) in quatern.iter().enumerate() {
        put_f32(&mut h, 256 + 4 * n, *q);
    }
    for r in 0..3 {
        put_f32(&mut h, 268 + 4 * r, ras[r][3]);
        for c in 0..4 {
            put_f32(&mut h, 280 + 16 * r + 4 * c, ras[r][c]);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    Ok(h)
}

/// Quaternion (b, c, d) and qfac of the RAS rotation for a LPS direction matrix.
fn quaternion_of(direction_lps: &pinhole_volume::Mat3) -> ([f64; 3], f64) {
    let mut r = *direction_lps;
    for row in r.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    let det = pinhole_volume::math::mat3_determinant(&r);
    let qfac = if det < 0.0 { -1.0 } else { 1.0 };
    for row in &mut r {
        row[2] *= qfac;
    }
    // Shepperd's method on a proper rotation.
    let trace = r[0][0] + r[1][1] + r[2][2];
    let (a, b, c, d);
    if trace > 0.0 {
        let s = (trace + 1.0).sqrt() * 2.0;
        a = 0.25 * s;
        b = (r[2][1] - r[1][2]) / s;
        c = (r[0][2] - r[2][0]) / s;
        d = (r[1][0] - r[0][1]) / s;
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt() * 2.0;
        a = (r[2][1] - r[1][2]) / s;
        b = 0.25 * s;
        c = (r[0][1] + r[1][0]) / s;
        d = (r[0][2] + r[2][0]) / s;
    } else if r[1][1] > r[2][2] {
        let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt() * 2.0;
        a = (r[0][2] - r[2][0]) / s;
        b = (r[0][1] + r[1][0]) / s;
        c = 0.25 * s;
        d = (r[1][2] + r[2][1]) / s;
    } else {
        let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt() * 2.0;
        a = (r[1][0] - r[0][1]) / s;
        b = (r[0][2] + r[2][0]) / s;
        c = (r[1][2] + r[2][1]) / s;
        d = 0.25 * s;
    }
    // NIfTI stores (b, c, d) with a ≥ 0.
    let sign = if a < 0.0 { -1.0 } else { 1.0 };
    ([b * sign, c * sign, d * sign], qfac)
}

/// A volume typed for writing (re-exported for callers holding a typed volume).
pub fn write_typed<T: Voxel>(path: &Path, volume: &Volume<T>) -> Result<()>
where
    AnyVolume: From<Volume<T>>,
{
    write(path, &AnyVolume::from(volume.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quaternion_round_trips_through_the_qform_formula() {
        let dirs: [pinhole_volume::Mat3; 3] = [
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
            [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        ];
        for d in dirs {
            let grid = Grid::new([2, 3, 4], [0.5, 0.7, 2.5], [1.0, 2.0, 3.0], d).unwrap();
            let (q, qfac) = quaternion_of(&grid.direction());
            let header = Header {
                endian: Endian::Little,
                data_start: 352,
                dims: [2, 3, 4],
                datatype: 2,
                pixdim: [qfac, 0.5, 0.7, 2.5],
                qform_code: 1,
                sform_code: 0,
                quatern: q,
                qoffset: grid.ijk_to_ras().map(|row| row[3])[..3].try_into().unwrap(),
                srow: [[0.0; 4]; 3],
                scl_slope: 1.0,
                scl_inter: 0.0,
            };
            let back = grid_of(&header).unwrap();
            assert!(back.same_geometry(&grid, 1e-9), "{d:?}");
        }
    }
}
