//! NRRD (`.nrrd`, attached header; `.nhdr` with one detached data file) read and write.
//!
//! Spaces `left-posterior-superior` (LPS) and `right-anterior-superior` (RAS, converted
//! to LPS) are read; files are always written in LPS, as 3D Slicer writes them.
//! Encodings: `raw` and `gzip`. Custom `key:=value` fields are kept. A detached data
//! file must be a regular file in the header's folder (or below it).

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use pinhole_volume::{Grid, Mat3};

use crate::atomic::AtomicFile;
use crate::error::{Error, ErrorKind, Result, WithPath};
use crate::image::{AnyVolume, ScalarType};
use crate::nifti::{gunzip_prefix, MAX_DEFLATE_RATIO};
use crate::raw::{decode_samples, encode_samples, Endian};

/// Longest header accepted: real headers are a few kB (a `.seg.nrrd` with hundreds of
/// segments stays well below).
const MAX_HEADER_BYTES: usize = 4 << 20;

/// How to write a NRRD file.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// gzip-compress the voxel data.
    pub gzip: bool,
    /// Extra `key:=value` lines (e.g. Slicer segmentation metadata), written in order.
    pub key_values: Vec<(String, String)>,
}

/// A NRRD image with its custom fields.
#[derive(Debug, Clone)]
pub struct NrrdImage {
    pub volume: AnyVolume,
    /// `key:=value` pairs in file order.
    pub key_values: Vec<(String, String)>,
}

/// Reads a NRRD file.
pub fn read(path: &Path) -> Result<AnyVolume> {
    read_with_fields(path).map(|image| image.volume)
}

/// Reads a NRRD file and its `key:=value` fields.
pub fn read_with_fields(path: &Path) -> Result<NrrdImage> {
    let bytes = std::fs::read(path).with_path(path)?;
    let header = parse_header(&bytes).map_err(|kind| Error::new(path, kind))?;
    let detached;
    let payload: &[u8] = match &header.data_file {
        None => &bytes[header.header_len..],
        Some(name) => {
            let data_path = detached_path(path, name)?;
            detached = std::fs::read(&data_path).with_path(&data_path)?;
            &detached
        }
    };
    let volume = decode_payload(&header, payload).map_err(|kind| Error::new(path, kind))?;
    Ok(NrrdImage {
        volume,
        key_values: header.key_values,
    })
}

/// Reads a NRRD image held in memory (attached data only).
pub fn read_bytes(bytes: &[u8]) -> std::result::Result<NrrdImage, ErrorKind> {
    let header = parse_header(bytes)?;
    if header.data_file.is_some() {
        return Err(ErrorKind::Unsupported(
            "detached data file in an in-memory NRRD".into(),
        ));
    }
    let volume = decode_payload(&header, &bytes[header.header_len..])?;
    Ok(NrrdImage {
        volume,
        key_values: header.key_values,
    })
}

/// The detached data file `name` of the header at `header_path` (NRRD `data file`,
/// MetaImage `ElementDataFile`): a regular file in the header's folder or below it, after
/// resolving `..` and symbolic links. Refused, naming the header: a file list or
/// numbered pattern (`LIST`, `name%03d.raw 1 10 1`), a path that resolves outside the
/// header's folder (`../x.raw`, `/etc/x`), and anything not a regular file (`/dev/zero`,
/// a folder, a pipe), which could be endless or never end.
pub(crate) fn detached_path(header_path: &Path, name: &str) -> Result<PathBuf> {
    let refuse = |kind: ErrorKind| Error::new(header_path, kind);
    if name.eq_ignore_ascii_case("LIST") || name.split_whitespace().count() > 1 {
        return Err(refuse(ErrorKind::Unsupported(format!(
            "data file {name:?}: lists and numbered patterns of detached data files"
        ))));
    }
    let folder = match header_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let folder = folder.canonicalize().with_path(folder)?;
    let joined = folder.join(name);
    let data = joined.canonicalize().with_path(&joined)?;
    if !data.starts_with(&folder) {
        return Err(refuse(ErrorKind::InvalidHeader(format!(
            "data file {name:?} resolves to {}, outside the header's folder {}: refused",
            data.display(),
            folder.display()
        ))));
    }
    let meta = std::fs::metadata(&data).with_path(&data)?;
    if !meta.is_file() {
        return Err(refuse(ErrorKind::InvalidHeader(format!(
            "data file {name:?} ({}) is not a regular file (a folder, device or pipe): \
             refused",
            data.display()
        ))));
    }
    Ok(data)
}

#[derive(Debug)]
struct Header {
    header_len: usize,
    scalar: ScalarType,
    dims: [usize; 3],
    endian: Endian,
    gzip: bool,
    byte_skip: usize,
    data_file: Option<String>,
    directions: Option<Mat3>,
    spacings: Option<[f64; 3]>,
    origin: [f64; 3],
    ras: bool,
    key_values: Vec<(String, String)>,
}

fn invalid(msg: impl Into<String>) -> ErrorKind {
    ErrorKind::InvalidHeader(msg.into())
}

fn parse_header(bytes: &[u8]) -> std::result::Result<Header, ErrorKind> {
    if !bytes.starts_with(b"NRRD000") {
        return Err(ErrorKind::NotMedicalImage(
            "no NRRD magic (NRRD000x)".into(),
        ));
    }
    let end = header_end(bytes)?;
    let text = std::str::from_utf8(&bytes[..end.0])
        .map_err(|_| invalid("NRRD header is not UTF-8 text"))?;
    let mut fields = std::collections::HashMap::new();
    let mut key_values = Vec::new();
    for line in text.lines().skip(1) {
        let line = line.trim_end_matches('\r');
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.split_once(":=") {
            key_values.push((k.to_string(), v.to_string()));
        } else if let Some((k, v)) = line.split_once(": ") {
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        } else {
            return Err(invalid(format!("unreadable header line {line:?}")));
        }
    }
    let field = |name: &str| fields.get(name).map(String::as_str);
    let dimension: usize = field("dimension")
        .ok_or_else(|| invalid("missing field 'dimension'"))?
        .parse()
        .map_err(|_| invalid("bad 'dimension'"))?;
    let sizes: Vec<usize> = field("sizes")
        .ok_or_else(|| invalid("missing field 'sizes'"))?
        .split_whitespace()
        .map(|s| s.parse().map_err(|_| invalid(format!("bad size {s:?}"))))
        .collect::<std::result::Result<_, _>>()?;
    if sizes.len() != dimension {
        return Err(invalid(format!(
            "'sizes' has {} entries for dimension {dimension}",
            sizes.len()
        )));
    }
    let dims = spatial_sizes(&sizes)?;
    let leading_list_axis = dimension == 4;
    let scalar = scalar_type(field("type").ok_or_else(|| invalid("missing field 'type'"))?)?;
    let encoding = field("encoding").ok_or_else(|| invalid("missing field 'encoding'"))?;
    let gzip = match encoding {
        "raw" => false,
        "gzip" | "gz" => true,
        other => return Err(ErrorKind::Unsupported(format!("NRRD encoding '{other}'"))),
    };
    let endian = match field("endian") {
        Some("big") => Endian::Big,
        Some("little") | None => Endian::Little,
        Some(other) => return Err(invalid(format!("endian '{other}'"))),
    };
    let space = field("space").unwrap_or("left-posterior-superior");
    let ras = match space {
        "left-posterior-superior" | "LPS" => false,
        "right-anterior-superior" | "RAS" => true,
        other => return Err(ErrorKind::Unsupported(format!("NRRD space '{other}'"))),
    };
    let directions = field("space directions")
        .map(|s| parse_directions(s, leading_list_axis))
        .transpose()?;
    let spacings = field("spacings")
        .map(|s| parse_spacings(s, leading_list_axis))
        .transpose()?;
    let origin = field("space origin")
        .map(parse_vector)
        .transpose()?
        .unwrap_or([0.0; 3]);
    let byte_skip = match field("byte skip") {
        None => 0,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| ErrorKind::Unsupported(format!("byte skip '{s}'")))?,
    };
    let data_file = field("data file").or(field("datafile")).map(str::to_string);
    Ok(Header {
        header_len: end.1,
        scalar,
        dims,
        endian,
        gzip,
        byte_skip,
        data_file,
        directions,
        spacings,
        origin,
        ras,
        key_values,
    })
}

/// (end of header text, start of attached data): the first empty line; without one, the
/// end of the file when the header names a detached data file (the NRRD format lets a
/// detached header end at the end of its file; only attached data needs the blank line).
fn header_end(bytes: &[u8]) -> std::result::Result<(usize, usize), ErrorKind> {
    let search = &bytes[..bytes.len().min(MAX_HEADER_BYTES)];
    if let Some(end) = find_blank_line(search) {
        return Ok(end);
    }
    let whole_detached_header =
        bytes.len() <= MAX_HEADER_BYTES && std::str::from_utf8(bytes).is_ok_and(names_data_file);
    if whole_detached_header {
        return Ok((bytes.len(), bytes.len()));
    }
    Err(ErrorKind::Truncated(
        "NRRD header has no blank line before the data".into(),
    ))
}

/// Whether header `text` has a `data file:` (or `datafile:`) field, read the way
/// [`parse_header`] reads its lines.
fn names_data_file(text: &str) -> bool {
    text.lines().skip(1).any(|line| {
        let line = line.trim_end_matches('\r');
        !line.starts_with('#')
            && !line.contains(":=")
            && line.split_once(": ").is_some_and(|(k, _)| {
                let key = k.trim().to_ascii_lowercase();
                key == "data file" || key == "datafile"
            })
    })
}

/// Returns (end of header text, start of data) for the first empty line (also used for
/// the NRRD form of tracked sequences).
pub(crate) fn find_blank_line(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'\n' {
            if bytes[i + 1] == b'\n' {
                return Some((i, i + 2));
            }
            if bytes[i + 1] == b'\r' && bytes.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

fn spatial_sizes(sizes: &[usize]) -> std::result::Result<[usize; 3], ErrorKind> {
    match sizes {
        [x, y, z] => Ok([*x, *y, *z]),
        [1, x, y, z] => Ok([*x, *y, *z]),
        [x, y] => Ok([*x, *y, 1]),
        [n, ..] if sizes.len() == 4 => Err(ErrorKind::Unsupported(format!(
            "4-D NRRD with {n} components or layers; only one is supported"
        ))),
        _ => Err(ErrorKind::Unsupported(format!("{}-D NRRD", sizes.len()))),
    }
}

fn scalar_type(name: &str) -> std::result::Result<ScalarType, ErrorKind> {
    Ok(match name {
        "uchar" | "unsigned char" | "uint8" | "uint8_t" => ScalarType::U8,
        "signed char" | "int8" | "int8_t" => ScalarType::I8,
        "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => {
            ScalarType::I16
        }
        "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => {
            ScalarType::U16
        }
        "int" | "signed int" | "int32" | "int32_t" => ScalarType::I32,
        "uint" | "unsigned int" | "uint32" | "uint32_t" => ScalarType::U32,
        "float" => ScalarType::F32,
        "double" => ScalarType::F64,
        other => {
            return Err(ErrorKind::UnsupportedDatatype(format!(
                "NRRD type '{other}'"
            )))
        }
    })
}

fn parse_vector(s: &str) -> std::result::Result<[f64; 3], ErrorKind> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| invalid(format!("bad vector {s:?}")))?;
    let values: Vec<f64> = inner
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| invalid(format!("bad vector {s:?}")))
        })
        .collect::<std::result::Result<_, _>>()?;
    match values.as_slice() {
        [x, y, z] if values.iter().all(|v| v.is_finite()) => Ok([*x, *y, *z]),
        _ => Err(invalid(format!(
            "vector {s:?} must have 3 finite components"
        ))),
    }
}

fn parse_directions(s: &str, leading_list_axis: bool) -> std::result::Result<Mat3, ErrorKind> {
    let mut columns: Vec<[f64; 3]> = Vec::new();
    for (n, token) in s.split_whitespace().enumerate() {
        if token == "none" {
            if leading_list_axis && n == 0 {
                continue;
            }
            return Err(invalid("'none' space direction on a spatial axis"));
        }
        columns.push(parse_vector(token)?);
    }
    let [a, b, c] = columns.as_slice() else {
        return Err(invalid(format!(
            "'space directions' needs 3 vectors, got {s:?}"
        )));
    };
    Ok([[a[0], b[0], c[0]], [a[1], b[1], c[1]], [a[2], b[2], c[2]]])
}

fn parse_spacings(s: &str, leading_list_axis: bool) -> std::result::Result<[f64; 3], ErrorKind> {
    let values: Vec<f64> = s
        .split_whitespace()
        .skip(usize::from(leading_list_axis))
        .map(|v| {
            v.parse::<f64>()
                .map_err(|_| invalid(format!("bad spacings {s:?}")))
        })
        .collect::<std::result::Result<_, _>>()?;
    match values.as_slice() {
        [x, y, z] => Ok([*x, *y, *z]),
        _ => Err(invalid(format!("'spacings' needs 3 values, got {s:?}"))),
    }
}

fn grid_of(h: &Header) -> std::result::Result<Grid, ErrorKind> {
    let mut affine = [[0.0; 4]; 4];
    match (h.directions, h.spacings) {
        (Some(d), _) => {
            for r in 0..3 {
                affine[r][..3].copy_from_slice(&d[r]);
            }
        }
        (None, Some(s)) => {
            for a in 0..3 {
                affine[a][a] = s[a];
            }
        }
        (None, None) => {
            for a in 0..3 {
                affine[a][a] = 1.0;
            }
        }
    }
    for r in 0..3 {
        affine[r][3] = h.origin[r];
    }
    if h.ras {
        for row in affine.iter_mut().take(2) {
            for v in row.iter_mut() {
                *v = -*v;
            }
        }
    }
    affine[3][3] = 1.0;
    Ok(Grid::from_ijk_to_lps(h.dims, &affine)?)
}

fn decode_payload(h: &Header, payload: &[u8]) -> std::result::Result<AnyVolume, ErrorKind> {
    let grid = grid_of(h)?;
    let needed = (grid.voxel_count() as u64)
        .checked_mul(h.scalar.size_bytes() as u64)
        .ok_or_else(|| invalid(format!("absurd sizes {:?}", h.dims)))?;
    let decompressed;
    let data: &[u8] = if h.gzip {
        let limit = (payload.len() as u64).saturating_mul(MAX_DEFLATE_RATIO);
        if needed > limit {
            return Err(ErrorKind::SizeExceedsFile {
                claimed: needed,
                available: limit,
            });
        }
        decompressed = gunzip_prefix(payload, needed.saturating_add(h.byte_skip as u64))?;
        decompressed.get(h.byte_skip..).unwrap_or_default()
    } else {
        payload.get(h.byte_skip..).unwrap_or_default()
    };
    if (data.len() as u64) < needed {
        return Err(ErrorKind::SizeExceedsFile {
            claimed: needed,
            available: data.len() as u64,
        });
    }
    let exact = &data[..needed as usize];
    decode_samples(grid, exact, h.scalar, h.endian).map_err(|e| invalid(e.to_string()))
}

fn nrrd_type(scalar: ScalarType) -> &'static str {
    match scalar {
        ScalarType::U8 => "uint8",
        ScalarType::I8 => "int8",
        ScalarType::U16 => "uint16",
        ScalarType::I16 => "int16",
        ScalarType::U32 => "uint32",
        ScalarType::I32 => "int32",
        ScalarType::F32 => "float",
        ScalarType::F64 => "double",
    }
}

fn vector(v: [f64; 3]) -> String {
    format!("({},{},{})", v[0], v[1], v[2])
}

/// The header text for `volume` (without the blank line that ends it).
pub fn header_text(volume: &AnyVolume, options: &WriteOptions) -> String {
    header_for(
        volume.grid(),
        nrrd_type(volume.scalar_type()),
        false,
        options,
    )
}

/// The header text for an RGB volume: a leading `RGB-color` axis of three samples,
/// which 3D Slicer loads as a vector volume shown in colour.
pub fn rgb_header_text(volume: &crate::dicom::RgbVolume, options: &WriteOptions) -> String {
    let scalar = match volume.samples() {
        crate::dicom::RgbSamples::U8(_) => "uint8",
        crate::dicom::RgbSamples::U16(_) => "uint16",
        crate::dicom::RgbSamples::U32(_) => "uint32",
    };
    header_for(volume.grid(), scalar, true, options)
}

/// A single-file LPS header for `grid`; `rgb` adds the leading `RGB-color` axis.
fn header_for(grid: &Grid, scalar: &str, rgb: bool, options: &WriteOptions) -> String {
    let m = grid.ijk_to_lps();
    let column = |c: usize| vector([m[0][c], m[1][c], m[2][c]]);
    let [nx, ny, nz] = grid.dims();
    let (dimension, size, direction, kind) = if rgb {
        (4, "3 ", "none ", "RGB-color ")
    } else {
        (3, "", "", "")
    };
    let mut h = String::from("NRRD0004\n# Written by Pinhole (not for clinical use)\n");
    h += &format!("type: {scalar}\n");
    h += &format!("dimension: {dimension}\nspace: left-posterior-superior\n");
    h += &format!("sizes: {size}{nx} {ny} {nz}\n");
    h += &format!(
        "space directions: {direction}{} {} {}\n",
        column(0),
        column(1),
        column(2)
    );
    h += &format!("kinds: {kind}domain domain domain\nendian: little\n");
    h += &format!("encoding: {}\n", if options.gzip { "gzip" } else { "raw" });
    h += &format!("space origin: {}\n", vector(grid.origin_lps()));
    for (k, v) in &options.key_values {
        h += &format!("{k}:={v}\n");
    }
    h
}

/// Writes an RGB volume as a single-file NRRD in LPS space (see [`rgb_header_text`]).
pub fn write_rgb(
    path: &Path,
    volume: &crate::dicom::RgbVolume,
    options: &WriteOptions,
) -> Result<()> {
    check_key_values(path, options)?;
    let data: Vec<u8> = match volume.samples() {
        crate::dicom::RgbSamples::U8(v) => v.clone(),
        crate::dicom::RgbSamples::U16(v) => v.iter().flat_map(|s| s.to_le_bytes()).collect(),
        crate::dicom::RgbSamples::U32(v) => v.iter().flat_map(|s| s.to_le_bytes()).collect(),
    };
    write_file(path, rgb_header_text(volume, options), &data, options.gzip)
}

/// Refuses key/value pairs that would break the header.
fn check_key_values(path: &Path, options: &WriteOptions) -> Result<()> {
    if let Some((k, _)) = options
        .key_values
        .iter()
        .find(|(k, v)| k.contains(":=") || k.contains('\n') || v.contains('\n'))
    {
        return Err(Error::new(
            path,
            invalid(format!("key/value {k:?} contains ':=' or a newline")),
        ));
    }
    Ok(())
}

/// Header, blank line, payload (gzip or raw), written atomically.
fn write_file(path: &Path, header: String, data: &[u8], gzip: bool) -> Result<()> {
    let mut w = AtomicFile::create(path)?;
    w.write_all(header.as_bytes()).with_path(path)?;
    w.write_all(b"\n").with_path(path)?;
    if gzip {
        let mut encoder = GzEncoder::new(&mut w, flate2::Compression::new(6));
        encoder.write_all(data).with_path(path)?;
        encoder.finish().with_path(path)?;
    } else {
        w.write_all(data).with_path(path)?;
    }
    w.commit()
}

/// Writes `volume` as a single-file NRRD in LPS space.
pub fn write(path: &Path, volume: &AnyVolume, options: &WriteOptions) -> Result<()> {
    check_key_values(path, options)?;
    let mut data = Vec::new();
    crate::with_volume!(volume, v => encode_samples(v.data(), &mut data));
    write_file(path, header_text(volume, options), &data, options.gzip)
}
