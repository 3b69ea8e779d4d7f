//! Tracked ultrasound sequence files, as PLUS (IGSIO) and 3D Slicer write them: a stack
//! of 2-D frames, each with a timestamp and named transforms.
//!
//! **Read** ([`read_sequence`], [`read_sequence_bytes`]), detected by content:
//! * MetaImage sequence metafiles (`.seq.mha`, `.igs.mha`, any `.mha` whose
//!   `ElementDataFile = LOCAL`; `.mhd` / `.igs.mhd` with the data in a separate file,
//!   which must be a regular file in the header's folder or below it, as for NRRD);
//!   `CompressedData = True` is one zlib stream for all frames.
//! * Sequence NRRD (`.seq.nrrd`): PLUS / IGSIO's layout (`kinds: domain domain [domain]
//!   list`, frames one after the other) and Slicer's volume sequences (`kinds: list domain
//!   domain domain`, sizes `N width height 1`, frames interleaved), raw or gzip, with the
//!   same per-frame fields as `key:=value` lines. When no frame carries a timestamp, the
//!   numeric `axis N index values` Slicer writes become the timestamps (said in
//!   [`TrackedSequence::warnings`]).
//!
//! Frames are `width × height`, 8-bit (`MET_UCHAR`, `uchar`) or 16-bit (`MET_USHORT`,
//! `ushort`), one channel. A 3-D `DimSize` is `width height frames`; `NDims = 4` is
//! accepted with a third size of 1 (`width height 1 frames`), `NDims = 2` is one frame.
//!
//! Per-frame fields `Seq_FrameNNNN_<Name>` (any number of digits):
//! * `<X>Transform`: 12 or 16 numbers, a row-major 4×4 (12: the last row is `0 0 0 1`);
//! * `<X>TransformStatus`: `OK`, anything else (`INVALID`, `MISSING` …) is invalid;
//! * `Timestamp`: seconds;
//! * anything else (`FrameNumber`, `UnfilteredTimestamp`, `ImageStatus` …) is kept as text.
//!
//! Transforms stay **as given**: they are in the tracker's frames, PLUS convention
//! (`ImageToProbe`, `ProbeToReference`, …, RAS-like millimetres; the `ImageToProbe`
//! calibration includes the pixel scaling). No LPS conversion happens here, and a rotation
//! part that is not orthonormal is not a file error (calibrations scale); a non-finite
//! number is. A transform that a frame lacks (while other frames have it) is reported in
//! that frame as [`TransformStatus::Invalid`] without a matrix, and counted in
//! [`TrackedSequence::warnings`]; it is not a failure.
//!
//! `ElementSpacing` (MetaImage) and `space directions` (NRRD) are kept as
//! [`TrackedSequence::spacing_mm`]; PLUS does not use them (its calibration carries the
//! scale). `TransformMatrix`, `Offset`, `CenterOfRotation` and `AnatomicalOrientation` are
//! not read (PLUS: "kept only for compatibility").
//!
//! **Write** ([`write_sequence`]): a single-file `.seq.mha` (`ElementDataFile = LOCAL`),
//! written atomically (see [`crate::atomic`]), raw or zlib-compressed, readable by PLUS,
//! Slicer and SimpleITK (whose `GetMetaData` returns the per-frame fields).
//!
//! No reader allocates what a header merely claims: `width × height × frames × bytes` is
//! checked against the bytes present (or, compressed, against 1032× the compressed size,
//! zlib's largest ratio) before any frame buffer is made, and the data must be exactly that
//! long (more data than `DimSize` says is a frame-count mismatch, not ignored).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use pinhole_volume::Mat4;

use crate::atomic::AtomicFile;
use crate::error::{Error, ErrorKind, Result, WithPath};
use crate::nifti::{gunzip_prefix, MAX_DEFLATE_RATIO};

/// Most frames read: an hour at 30 frames per second is 108,000. Each frame costs some
/// hundred bytes beyond its pixels, so a file of a million one-pixel frames must not
/// become gigabytes of bookkeeping.
pub const MAX_FRAMES: usize = 1_000_000;

/// The per-frame field that holds the timestamp (seconds).
pub const TIMESTAMP_FIELD: &str = "Timestamp";
/// The prefix of every per-frame field.
pub const FRAME_PREFIX: &str = "Seq_Frame";

/// Pixel type of the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelType {
    /// `MET_UCHAR`.
    U8,
    /// `MET_USHORT`.
    U16,
}

impl PixelType {
    pub fn size_bytes(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::U16 => 2,
        }
    }
    fn met_name(self) -> &'static str {
        match self {
            Self::U8 => "MET_UCHAR",
            Self::U16 => "MET_USHORT",
        }
    }
}

/// One frame's pixels, row after row (`width` pixels each), `height` rows.
#[derive(Debug, Clone, PartialEq)]
pub enum FramePixels {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

impl FramePixels {
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::U16(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn pixel_type(&self) -> PixelType {
        match self {
            Self::U8(_) => PixelType::U8,
            Self::U16(_) => PixelType::U16,
        }
    }
}

/// Whether the tracker reported a transform as valid for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformStatus {
    Ok,
    Invalid,
}

/// A named transform of one frame, e.g. `ProbeToTracker` (from the field
/// `Seq_FrameNNNN_ProbeToTrackerTransform`).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameTransform {
    /// The name without the `Transform` suffix (`ProbeToTracker`, `ImageToProbe`).
    pub name: String,
    /// Row-major 4×4 as stored (PLUS convention, tracker frames, mm); `None` when the
    /// frame has no matrix for this name (its status is then `Invalid`).
    pub matrix: Option<Mat4>,
    pub status: TransformStatus,
}

impl FrameTransform {
    /// The matrix when present and marked `OK`.
    pub fn valid_matrix(&self) -> Option<&Mat4> {
        match self.status {
            TransformStatus::Ok => self.matrix.as_ref(),
            TransformStatus::Invalid => None,
        }
    }
}

/// One tracked frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedFrame {
    pub pixels: FramePixels,
    /// `Seq_FrameNNNN_Timestamp`, seconds.
    pub timestamp_s: Option<f64>,
    pub transforms: Vec<FrameTransform>,
    /// Other per-frame fields (`FrameNumber`, `UnfilteredTimestamp`, `ImageStatus` …) in
    /// file order, as text.
    pub fields: Vec<(String, String)>,
}

impl TrackedFrame {
    /// The transform called `name` (without the `Transform` suffix).
    pub fn transform(&self, name: &str) -> Option<&FrameTransform> {
        self.transforms.iter().find(|t| t.name == name)
    }

    /// The matrix of the transform called `name` when present and `OK`; else why not
    /// (`no ImageToProbeTransform`, `ImageToProbeTransform is not OK`).
    pub fn valid_transform(&self, name: &str) -> std::result::Result<&Mat4, String> {
        match self.transform(name) {
            None => Err(format!("no {name}Transform")),
            Some(t) => t
                .valid_matrix()
                .ok_or_else(|| format!("{name}Transform is not OK")),
        }
    }
}

/// A tracked ultrasound sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedSequence {
    pub width: usize,
    pub height: usize,
    pub pixel_type: PixelType,
    /// Pixel spacing along the width and the height (`ElementSpacing`'s first two values);
    /// informative only, PLUS's calibration carries the scale.
    pub spacing_mm: [f64; 2],
    /// `UltrasoundImageOrientation` (`MF`, `MN`, `UF`, `UN`, …) as written.
    pub orientation: Option<String>,
    pub frames: Vec<TrackedFrame>,
    /// Other sequence-level fields in file order (e.g. `UltrasoundImageType`,
    /// `DefaultFrameTransformName`); written back by [`write_sequence`].
    pub header_fields: Vec<(String, String)>,
    /// What reading noticed but did not refuse (transforms missing in some frames, frames
    /// without timestamps …). Not written.
    pub warnings: Vec<String>,
}

/// How to write a sequence file.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// zlib-compress the pixel data (`CompressedData = True`).
    pub compress: bool,
}

// ---------------------------------------------------------------------------------------
// Reading

/// Reads a sequence file (MetaImage `.mha` / `.mhd` or NRRD, detected by content).
pub fn read_sequence(path: &Path) -> Result<TrackedSequence> {
    let bytes = std::fs::read(path).with_path(path)?;
    let parsed = parse_any(&bytes).map_err(|kind| Error::new(path, kind))?;
    let detached;
    let payload: &[u8] = match &parsed.data_file {
        None => &bytes[parsed.data_start..],
        Some(name) => {
            let data_path = crate::nrrd::detached_path(path, name)?;
            detached = std::fs::read(&data_path).with_path(&data_path)?;
            &detached
        }
    };
    assemble(parsed, payload).map_err(|kind| Error::new(path, kind))
}

/// Reads a sequence held in memory (data in the same bytes: `ElementDataFile = LOCAL` or
/// an attached NRRD).
pub fn read_sequence_bytes(bytes: &[u8]) -> std::result::Result<TrackedSequence, ErrorKind> {
    let parsed = parse_any(bytes)?;
    if let Some(name) = &parsed.data_file {
        return Err(ErrorKind::Unsupported(format!(
            "data file {name:?} in an in-memory sequence"
        )));
    }
    let payload = &bytes[parsed.data_start..];
    assemble(parsed, payload)
}

fn invalid(msg: impl Into<String>) -> ErrorKind {
    ErrorKind::InvalidHeader(msg.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Zlib,
    Gzip,
}

/// A per-frame field line: frame index, field name (after `Seq_FrameNNNN_`), value.
type FrameLine = (usize, String, String);

/// A parsed header, either format.
#[derive(Debug)]
struct Parsed {
    width: usize,
    height: usize,
    frames: usize,
    pixel_type: PixelType,
    big_endian: bool,
    compression: Compression,
    /// Compressed bytes to use (MetaImage `CompressedDataSize`).
    compressed_size: Option<u64>,
    /// Frame index varies fastest (Slicer's `list domain domain domain`).
    interleaved: bool,
    spacing_mm: [f64; 2],
    orientation: Option<String>,
    header_fields: Vec<(String, String)>,
    frame_lines: Vec<FrameLine>,
    data_start: usize,
    data_file: Option<String>,
    /// Timestamps from NRRD `axis N index values`, used when no frame has one.
    index_values: Option<Vec<f64>>,
}

fn parse_any(bytes: &[u8]) -> std::result::Result<Parsed, ErrorKind> {
    if bytes.starts_with(b"NRRD000") {
        parse_nrrd(bytes)
    } else {
        parse_metaimage(bytes)
    }
}

/// `Seq_FrameNNNN_Name` → (NNNN, Name); `None` when `name` is not a frame field.
fn split_frame_field(name: &str) -> std::result::Result<Option<(usize, String)>, ErrorKind> {
    let Some(prefix) = name.get(..FRAME_PREFIX.len()) else {
        return Ok(None);
    };
    if !prefix.eq_ignore_ascii_case(FRAME_PREFIX) {
        return Ok(None);
    }
    let rest = &name[FRAME_PREFIX.len()..];
    let (digits, field) = rest
        .split_once('_')
        .ok_or_else(|| invalid(format!("frame field {name:?} has no '_' after the index")))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("frame field {name:?}: bad frame index")));
    }
    let index = digits
        .parse::<usize>()
        .map_err(|_| invalid(format!("frame field {name:?}: frame index too large")))?;
    if field.trim().is_empty() {
        return Err(invalid(format!("frame field {name:?} has no name")));
    }
    Ok(Some((index, field.to_string())))
}

/// MetaImage field names PLUS writes for other software and that are not read.
const METAIMAGE_IGNORED: [&str; 9] = [
    "TransformMatrix",
    "Offset",
    "Origin",
    "Position",
    "CenterOfRotation",
    "AnatomicalOrientation",
    "Orientation",
    "Rotation",
    "ElementSize",
];

/// MetaImage fields interpreted by the reader (and written by the writer).
const METAIMAGE_STANDARD: [&str; 14] = [
    "ObjectType",
    "NDims",
    "DimSize",
    "ElementType",
    "ElementNumberOfChannels",
    "BinaryData",
    "BinaryDataByteOrderMSB",
    "ElementByteOrderMSB",
    "CompressedData",
    "CompressedDataSize",
    "ElementSpacing",
    "HeaderSize",
    "Kinds",
    "ElementDataFile",
];

const ORIENTATION_FIELD: &str = "UltrasoundImageOrientation";

fn is_reserved_header_name(name: &str) -> bool {
    METAIMAGE_STANDARD
        .iter()
        .chain(METAIMAGE_IGNORED.iter())
        .chain(std::iter::once(&ORIENTATION_FIELD))
        .any(|s| s.eq_ignore_ascii_case(name))
}

fn parse_bool(name: &str, value: &str) -> std::result::Result<bool, ErrorKind> {
    if value.eq_ignore_ascii_case("true") || value == "1" {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") || value == "0" {
        Ok(false)
    } else {
        Err(invalid(format!(
            "{name} = {value:?}: expected True or False"
        )))
    }
}

fn parse_sizes(name: &str, value: &str) -> std::result::Result<Vec<usize>, ErrorKind> {
    value
        .split_whitespace()
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| invalid(format!("{name}: bad size {s:?}")))
        })
        .collect()
}

fn parse_finite(what: &str, s: &str) -> std::result::Result<f64, ErrorKind> {
    let v = s
        .trim()
        .parse::<f64>()
        .map_err(|_| invalid(format!("{what}: {s:?} is not a number")))?;
    if !v.is_finite() {
        return Err(invalid(format!("{what}: {s:?} is not finite")));
    }
    Ok(v)
}

/// The (width, height, frames) of a MetaImage `DimSize` with `NDims` and `Kinds`.
fn metaimage_dims(
    ndims: usize,
    sizes: &[usize],
    kinds: Option<&str>,
) -> std::result::Result<[usize; 3], ErrorKind> {
    if sizes.len() != ndims {
        return Err(invalid(format!(
            "DimSize has {} values for NDims = {ndims}",
            sizes.len()
        )));
    }
    if let Some(kinds) = kinds {
        let kinds: Vec<&str> = kinds.split_whitespace().collect();
        let expected_list = ndims >= 3;
        let ok = kinds.len() == ndims
            && kinds.iter().enumerate().all(|(i, k)| {
                if expected_list && i == ndims - 1 {
                    k.eq_ignore_ascii_case("list") || k.eq_ignore_ascii_case("time")
                } else {
                    k.eq_ignore_ascii_case("domain")
                }
            });
        if !ok {
            return Err(ErrorKind::Unsupported(format!(
                "Kinds = {}: only 2-D frames along a last list/time axis are read",
                kinds.join(" ")
            )));
        }
    }
    match *sizes {
        [w, h] => Ok([w, h, 1]),
        [w, h, n] => Ok([w, h, n]),
        [w, h, 1, n] => Ok([w, h, n]),
        [_, _, d, _] => Err(ErrorKind::Unsupported(format!(
            "frames of depth {d} (3-D frames); only 2-D frames are read"
        ))),
        _ => Err(ErrorKind::Unsupported(format!("NDims = {ndims}"))),
    }
}

fn parse_metaimage(bytes: &[u8]) -> std::result::Result<Parsed, ErrorKind> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut frame_lines: Vec<FrameLine> = Vec::new();
    let mut pos = 0usize;
    let mut line_no = 0usize;
    let mut data: Option<(usize, String)> = None;
    while pos < bytes.len() {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| pos + i);
        let next = (end + 1).min(bytes.len());
        let raw = &bytes[pos..end];
        line_no += 1;
        pos = next;
        let Ok(line) = std::str::from_utf8(raw) else {
            if line_no == 1 {
                return Err(ErrorKind::NotMedicalImage(
                    "not a MetaImage file (the first line is not text)".into(),
                ));
            }
            return Err(invalid(format!("header line {line_no} is not UTF-8 text")));
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            if line_no == 1 {
                return Err(ErrorKind::NotMedicalImage(
                    "not a MetaImage file (no 'ObjectType = Image' line)".into(),
                ));
            }
            return Err(invalid(format!(
                "header line {line_no} {line:?} is not 'Name = Value'"
            )));
        };
        let (name, value) = (name.trim(), value.trim());
        if fields.is_empty() && frame_lines.is_empty() {
            if !name.eq_ignore_ascii_case("ObjectType") {
                return Err(ErrorKind::NotMedicalImage(
                    "not a MetaImage file (the first field is not ObjectType)".into(),
                ));
            }
            if !value.eq_ignore_ascii_case("Image") {
                return Err(ErrorKind::Unsupported(format!(
                    "MetaImage ObjectType = {value}"
                )));
            }
        }
        if name.is_empty() {
            return Err(invalid(format!("header line {line_no} has no field name")));
        }
        if let Some((frame, field)) = split_frame_field(name)? {
            frame_lines.push((frame, field, value.to_string()));
            continue;
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(invalid(format!("field {name} appears twice")));
        }
        if name.eq_ignore_ascii_case("ElementDataFile") {
            data = Some((pos, value.to_string()));
            break;
        }
        fields.push((name.to_string(), value.to_string()));
    }
    let Some((data_start, data_file)) = data else {
        return Err(ErrorKind::Truncated(
            "MetaImage header has no ElementDataFile line (no pixel data)".into(),
        ));
    };
    let data_file = if data_file.eq_ignore_ascii_case("LOCAL") {
        None
    } else if data_file.is_empty() {
        return Err(invalid("ElementDataFile is empty"));
    } else {
        Some(data_file)
    };

    let lookup: HashMap<String, &str> = fields
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    let field = |name: &str| lookup.get(&name.to_ascii_lowercase()).copied();
    let ndims: usize = field("NDims")
        .ok_or_else(|| invalid("missing field NDims"))?
        .parse()
        .map_err(|_| invalid("bad NDims"))?;
    if !(2..=4).contains(&ndims) {
        return Err(ErrorKind::Unsupported(format!(
            "NDims = {ndims}: a sequence has 3 (width height frames)"
        )));
    }
    let sizes = parse_sizes(
        "DimSize",
        field("DimSize").ok_or_else(|| invalid("missing field DimSize"))?,
    )?;
    let [width, height, frames] = metaimage_dims(ndims, &sizes, field("Kinds"))?;
    let pixel_type =
        match field("ElementType").ok_or_else(|| invalid("missing field ElementType"))? {
            "MET_UCHAR" => PixelType::U8,
            "MET_USHORT" => PixelType::U16,
            other => {
                return Err(ErrorKind::UnsupportedDatatype(format!(
                    "ElementType {other}: sequences of MET_UCHAR (8-bit) or MET_USHORT are read"
                )))
            }
        };
    if let Some(channels) = field("ElementNumberOfChannels") {
        if channels != "1" {
            return Err(ErrorKind::Unsupported(format!(
                "ElementNumberOfChannels = {channels} (colour or RF frames); one channel is read"
            )));
        }
    }
    if let Some(binary) = field("BinaryData") {
        if !parse_bool("BinaryData", binary)? {
            return Err(ErrorKind::Unsupported(
                "BinaryData = False (text pixels)".into(),
            ));
        }
    }
    let big_endian = match field("BinaryDataByteOrderMSB").or(field("ElementByteOrderMSB")) {
        Some(v) => parse_bool("BinaryDataByteOrderMSB", v)?,
        None => false,
    };
    let compressed = match field("CompressedData") {
        Some(v) => parse_bool("CompressedData", v)?,
        None => false,
    };
    let compressed_size = match field("CompressedDataSize") {
        Some(v) if compressed => Some(
            v.parse::<u64>()
                .map_err(|_| invalid(format!("CompressedDataSize = {v:?}")))?,
        ),
        _ => None,
    };
    if let Some(h) = field("HeaderSize") {
        if h != "0" {
            return Err(ErrorKind::Unsupported(format!("HeaderSize = {h}")));
        }
    }
    let spacing_mm = match field("ElementSpacing") {
        None => [1.0, 1.0],
        Some(v) => {
            let values: Vec<f64> = v
                .split_whitespace()
                .map(|s| parse_finite("ElementSpacing", s))
                .collect::<std::result::Result<_, _>>()?;
            match values.as_slice() {
                [sx, sy, ..] if *sx > 0.0 && *sy > 0.0 => [*sx, *sy],
                _ => {
                    return Err(invalid(format!(
                        "ElementSpacing = {v:?}: needs two positive values"
                    )))
                }
            }
        }
    };
    let orientation = field(ORIENTATION_FIELD).map(str::to_string);
    let header_fields = fields
        .into_iter()
        .filter(|(k, _)| !is_reserved_header_name(k))
        .collect();
    Ok(Parsed {
        width,
        height,
        frames,
        pixel_type,
        big_endian,
        compression: if compressed {
            Compression::Zlib
        } else {
            Compression::None
        },
        compressed_size,
        interleaved: false,
        spacing_mm,
        orientation,
        header_fields,
        frame_lines,
        data_start,
        data_file,
        index_values: None,
    })
}

fn is_domain(kind: &str) -> bool {
    kind.eq_ignore_ascii_case("domain") || kind.eq_ignore_ascii_case("space")
}

fn is_list(kind: &str) -> bool {
    kind.eq_ignore_ascii_case("list") || kind.eq_ignore_ascii_case("time")
}

/// Norm of an NRRD vector `(a,b[,c])`.
fn vector_norm(s: &str) -> std::result::Result<f64, ErrorKind> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| invalid(format!("bad vector {s:?}")))?;
    let mut sum = 0.0;
    for v in inner.split(',') {
        let x = parse_finite("space directions", v)?;
        sum += x * x;
    }
    Ok(sum.sqrt())
}

fn parse_nrrd(bytes: &[u8]) -> std::result::Result<Parsed, ErrorKind> {
    let (text_end, data_start) = crate::nrrd::find_blank_line(bytes).ok_or_else(|| {
        ErrorKind::Truncated("NRRD header has no blank line before the data".into())
    })?;
    let text = std::str::from_utf8(&bytes[..text_end])
        .map_err(|_| invalid("NRRD header is not UTF-8 text"))?;
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut key_values: Vec<(String, String)> = Vec::new();
    let mut seen_keys = std::collections::HashSet::new();
    let mut frame_lines: Vec<FrameLine> = Vec::new();
    for line in text.lines().skip(1) {
        let line = line.trim_end_matches('\r');
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some((k, v)) = line.split_once(":=") {
            let (k, v) = (k.trim(), v.trim());
            if let Some((frame, field)) = split_frame_field(k)? {
                frame_lines.push((frame, field, v.to_string()));
            } else {
                if !seen_keys.insert(k.to_string()) {
                    return Err(invalid(format!("key {k:?} appears twice")));
                }
                key_values.push((k.to_string(), v.to_string()));
            }
        } else if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if fields.insert(k.clone(), v.trim().to_string()).is_some() {
                return Err(invalid(format!("field {k:?} appears twice")));
            }
        } else {
            return Err(invalid(format!("unreadable header line {line:?}")));
        }
    }
    let field = |name: &str| fields.get(name).map(String::as_str);
    let dimension: usize = field("dimension")
        .ok_or_else(|| invalid("missing field 'dimension'"))?
        .parse()
        .map_err(|_| invalid("bad 'dimension'"))?;
    let sizes = parse_sizes(
        "sizes",
        field("sizes").ok_or_else(|| invalid("missing field 'sizes'"))?,
    )?;
    if sizes.len() != dimension || !(2..=4).contains(&dimension) {
        return Err(ErrorKind::Unsupported(format!(
            "NRRD of dimension {dimension} with sizes {sizes:?}: a sequence has 2-D frames \
             and one list axis"
        )));
    }
    let kinds: Vec<String> = match field("kinds") {
        Some(k) => k.split_whitespace().map(str::to_string).collect(),
        None if dimension == 4 => {
            return Err(invalid(
                "4-D NRRD without 'kinds': which axis is the frame?",
            ))
        }
        None => {
            let mut k = vec!["domain".to_string(); dimension];
            if dimension == 3 {
                k[2] = "list".into();
            }
            k
        }
    };
    if kinds.len() != dimension {
        return Err(invalid(format!(
            "'kinds' has {} entries for dimension {dimension}",
            kinds.len()
        )));
    }
    let list_axes: Vec<usize> = (0..dimension).filter(|&i| is_list(&kinds[i])).collect();
    if let Some(bad) = kinds.iter().find(|k| !is_domain(k) && !is_list(k)) {
        return Err(ErrorKind::Unsupported(format!(
            "NRRD kind {bad:?} (colour or vector frames); one channel is read"
        )));
    }
    let (list_axis, domain_axes): (Option<usize>, Vec<usize>) = match list_axes.as_slice() {
        [] => (None, (0..dimension).collect()),
        [a] if *a == 0 || *a == dimension - 1 => {
            (Some(*a), (0..dimension).filter(|i| i != a).collect())
        }
        _ => {
            return Err(ErrorKind::Unsupported(format!(
                "NRRD kinds {kinds:?}: the frame (list) axis must be the first or the last"
            )))
        }
    };
    let domain_sizes: Vec<usize> = domain_axes.iter().map(|&i| sizes[i]).collect();
    let (width, height) = match domain_sizes.as_slice() {
        [w, h] | [w, h, 1] => (*w, *h),
        [_, _, d] => {
            return Err(ErrorKind::Unsupported(format!(
                "frames of depth {d} (3-D frames); only 2-D frames are read"
            )))
        }
        _ => return Err(invalid(format!("NRRD sizes {sizes:?}"))),
    };
    let frames = list_axis.map_or(1, |a| sizes[a]);
    let pixel_type = match field("type").ok_or_else(|| invalid("missing field 'type'"))? {
        "uchar" | "unsigned char" | "uint8" | "uint8_t" => PixelType::U8,
        "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => {
            PixelType::U16
        }
        other => {
            return Err(ErrorKind::UnsupportedDatatype(format!(
                "NRRD type '{other}': sequences of uchar (8-bit) or ushort are read"
            )))
        }
    };
    let compression = match field("encoding").ok_or_else(|| invalid("missing field 'encoding'"))? {
        "raw" => Compression::None,
        "gzip" | "gz" => Compression::Gzip,
        other => return Err(ErrorKind::Unsupported(format!("NRRD encoding '{other}'"))),
    };
    let big_endian = match field("endian") {
        Some("big") => true,
        Some("little") | None => false,
        Some(other) => return Err(invalid(format!("endian '{other}'"))),
    };
    for skip in ["byte skip", "line skip"] {
        if let Some(v) = field(skip) {
            if v != "0" {
                return Err(ErrorKind::Unsupported(format!("NRRD {skip} {v}")));
            }
        }
    }
    let spacing_mm = if let Some(dirs) = field("space directions") {
        let tokens: Vec<&str> = dirs.split_whitespace().collect();
        if tokens.len() != dimension {
            return Err(invalid(format!(
                "'space directions' has {} entries for dimension {dimension}",
                tokens.len()
            )));
        }
        let sx = vector_norm(tokens[domain_axes[0]])?;
        let sy = vector_norm(tokens[domain_axes[1]])?;
        [sx, sy]
    } else if let Some(sp) = field("spacings") {
        let values: Vec<&str> = sp.split_whitespace().collect();
        if values.len() != dimension {
            return Err(invalid(format!("'spacings' {sp:?}")));
        }
        [
            parse_finite("spacings", values[domain_axes[0]])?,
            parse_finite("spacings", values[domain_axes[1]])?,
        ]
    } else {
        [1.0, 1.0]
    };
    if !spacing_mm.iter().all(|v| v.is_finite() && *v > 0.0) {
        return Err(invalid(format!(
            "pixel spacing {spacing_mm:?} must be finite and positive"
        )));
    }
    let data_file = field("data file").or(field("datafile")).map(str::to_string);
    let mut orientation = None;
    let mut index_values = None;
    let mut header_fields = Vec::new();
    for (k, v) in key_values {
        if k == ORIENTATION_FIELD {
            orientation = Some(v);
            continue;
        }
        if let Some(axis) = list_axis {
            if k == format!("axis {axis} index values") {
                let numeric = v
                    .split_whitespace()
                    .map(|s| s.parse::<f64>().ok().filter(|x| x.is_finite()))
                    .collect::<Option<Vec<f64>>>();
                if let Some(values) = numeric.filter(|vals| vals.len() == frames) {
                    index_values = Some(values);
                }
            }
        }
        header_fields.push((k, v));
    }
    Ok(Parsed {
        width,
        height,
        frames,
        pixel_type,
        big_endian,
        compression,
        compressed_size: None,
        interleaved: list_axis == Some(0) && frames > 1,
        spacing_mm,
        orientation,
        header_fields,
        frame_lines,
        data_start,
        data_file,
        index_values,
    })
}

/// Checks the pixel data against the header and splits it into frames.
fn decode_frames(p: &Parsed, payload: &[u8]) -> std::result::Result<Vec<FramePixels>, ErrorKind> {
    if p.width == 0 || p.height == 0 {
        return Err(ErrorKind::Unsupported(format!(
            "frames of {} × {} pixels (a tracking-only sequence without images)",
            p.width, p.height
        )));
    }
    if p.frames > MAX_FRAMES {
        return Err(ErrorKind::Unsupported(format!(
            "{} frames (at most {MAX_FRAMES} are read)",
            p.frames
        )));
    }
    let frame_pixels = (p.width as u64)
        .checked_mul(p.height as u64)
        .ok_or_else(|| invalid(format!("absurd frame size {} × {}", p.width, p.height)))?;
    let needed = frame_pixels
        .checked_mul(p.frames as u64)
        .and_then(|n| n.checked_mul(p.pixel_type.size_bytes() as u64))
        .ok_or_else(|| {
            invalid(format!(
                "absurd sizes {} × {} × {} frames",
                p.width, p.height, p.frames
            ))
        })?;
    let decompressed;
    let data: &[u8] = match p.compression {
        Compression::None => payload,
        Compression::Zlib | Compression::Gzip => {
            let compressed = match p.compressed_size {
                Some(size) if size > payload.len() as u64 => {
                    return Err(ErrorKind::Truncated(format!(
                        "CompressedDataSize = {size} but only {} bytes follow the header",
                        payload.len()
                    )))
                }
                Some(size) => &payload[..size as usize],
                None => payload,
            };
            let limit = (compressed.len() as u64).saturating_mul(MAX_DEFLATE_RATIO);
            if needed > limit {
                return Err(ErrorKind::SizeExceedsFile {
                    claimed: needed,
                    available: limit,
                });
            }
            // One byte more than needed tells "more frames than DimSize" apart.
            let take = needed.saturating_add(1);
            decompressed = if p.compression == Compression::Zlib {
                let mut out = Vec::new();
                ZlibDecoder::new(compressed)
                    .take(take)
                    .read_to_end(&mut out)
                    .map_err(|e| ErrorKind::Truncated(format!("zlib stream: {e}")))?;
                out
            } else {
                gunzip_prefix(compressed, take)?
            };
            &decompressed
        }
    };
    let available = data.len() as u64;
    if available < needed {
        return Err(ErrorKind::SizeExceedsFile {
            claimed: needed,
            available,
        });
    }
    if available > needed {
        return Err(invalid(format!(
            "the pixel data holds more than the {needed} bytes of {} frames of {} × {} {} \
             pixels: the frame count does not match the data",
            p.frames,
            p.width,
            p.height,
            p.pixel_type.met_name()
        )));
    }
    let n = frame_pixels as usize;
    // The 16-bit sample `i` of the data.
    let sample16 = |i: usize| -> u16 {
        let b = [data[2 * i], data[2 * i + 1]];
        if p.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let mut frames = Vec::with_capacity(p.frames);
    for f in 0..p.frames {
        // Element index of pixel `k` of frame `f`.
        let index = |k: usize| {
            if p.interleaved {
                k * p.frames + f
            } else {
                f * n + k
            }
        };
        frames.push(match p.pixel_type {
            PixelType::U8 if !p.interleaved => FramePixels::U8(data[f * n..(f + 1) * n].to_vec()),
            PixelType::U8 => FramePixels::U8((0..n).map(|k| data[index(k)]).collect()),
            PixelType::U16 => FramePixels::U16((0..n).map(|k| sample16(index(k))).collect()),
        });
    }
    Ok(frames)
}

#[derive(Default)]
struct FrameMeta {
    timestamp_s: Option<f64>,
    matrices: HashMap<String, Mat4>,
    statuses: HashMap<String, TransformStatus>,
    fields: Vec<(String, String)>,
}

fn parse_matrix(what: &str, value: &str) -> std::result::Result<Mat4, ErrorKind> {
    let values: Vec<f64> = value
        .split_whitespace()
        .map(|s| parse_finite(what, s))
        .collect::<std::result::Result<_, _>>()?;
    if values.len() != 12 && values.len() != 16 {
        return Err(invalid(format!(
            "{what}: {} numbers; a transform has 12 or 16",
            values.len()
        )));
    }
    let mut m = [[0.0; 4]; 4];
    m[3][3] = 1.0;
    for (i, v) in values.iter().enumerate() {
        m[i / 4][i % 4] = *v;
    }
    Ok(m)
}

/// Sorts the per-frame fields into frames and builds the sequence.
fn assemble(p: Parsed, payload: &[u8]) -> std::result::Result<TrackedSequence, ErrorKind> {
    let pixels = decode_frames(&p, payload)?;
    let mut metas: Vec<FrameMeta> = (0..p.frames).map(|_| FrameMeta::default()).collect();
    // Transform names in order of first appearance in the file.
    let mut names: Vec<String> = Vec::new();
    let mut name_index: HashMap<String, usize> = HashMap::new();
    let mut transform_lines = 0usize;
    let mut add_name = |names: &mut Vec<String>, name: &str| {
        if !name_index.contains_key(name) {
            name_index.insert(name.to_string(), names.len());
            names.push(name.to_string());
        }
    };
    let mut seen_fields = std::collections::HashSet::new();
    for (frame, field, value) in &p.frame_lines {
        let what = format!("{FRAME_PREFIX}{frame:04}_{field}");
        let meta = metas.get_mut(*frame).ok_or_else(|| {
            invalid(format!(
                "{what}: frame {frame}, but the header has {} frames",
                p.frames
            ))
        })?;
        let duplicate = || invalid(format!("{what} appears twice"));
        if field == TIMESTAMP_FIELD {
            if meta.timestamp_s.is_some() {
                return Err(duplicate());
            }
            meta.timestamp_s = Some(parse_finite(&what, value)?);
        } else if let Some(name) = field.strip_suffix("TransformStatus") {
            let status = match value.as_str() {
                "" => return Err(invalid(format!("{what} is empty"))),
                v if v.eq_ignore_ascii_case("OK") => TransformStatus::Ok,
                _ => TransformStatus::Invalid,
            };
            if meta.statuses.insert(name.to_string(), status).is_some() {
                return Err(duplicate());
            }
            add_name(&mut names, name);
            transform_lines += 1;
        } else if let Some(name) = field.strip_suffix("Transform") {
            let m = parse_matrix(&what, value)?;
            if meta.matrices.insert(name.to_string(), m).is_some() {
                return Err(duplicate());
            }
            add_name(&mut names, name);
            transform_lines += 1;
        } else {
            if !seen_fields.insert((*frame, field.as_str())) {
                return Err(duplicate());
            }
            meta.fields.push((field.clone(), value.clone()));
        }
    }
    // Every frame gets an entry per transform name: bounded by the transform lines present
    // (a real file names each transform in every frame or most of them), so that many
    // names each used once among many frames cannot make frames × names entries.
    let entries = (p.frames as u64).saturating_mul(names.len() as u64);
    if entries > 16 * (transform_lines as u64) + 1024 {
        return Err(invalid(format!(
            "{} transform names over {} frames but only {transform_lines} transform lines: \
             most transforms would be missing from most frames",
            names.len(),
            p.frames
        )));
    }
    let mut warnings = Vec::new();
    let mut missing: Vec<(usize, usize)> = vec![(0, 0); names.len()]; // (count, first)
    let mut ok_without_matrix: Vec<(usize, usize)> = vec![(0, 0); names.len()];
    let mut frames = Vec::with_capacity(p.frames);
    for (f, (meta, pixels)) in metas.into_iter().zip(pixels).enumerate() {
        let mut transforms = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let matrix = meta.matrices.get(name).copied();
            let stated = meta.statuses.get(name).copied();
            let status = match (matrix, stated) {
                (Some(_), s) => s.unwrap_or(TransformStatus::Ok),
                (None, s) => {
                    let tally = match s {
                        None => Some(&mut missing[i]),
                        Some(TransformStatus::Ok) => Some(&mut ok_without_matrix[i]),
                        Some(TransformStatus::Invalid) => None,
                    };
                    if let Some(tally) = tally {
                        if tally.0 == 0 {
                            tally.1 = f;
                        }
                        tally.0 += 1;
                    }
                    TransformStatus::Invalid
                }
            };
            transforms.push(FrameTransform {
                name: name.clone(),
                matrix,
                status,
            });
        }
        frames.push(TrackedFrame {
            pixels,
            timestamp_s: meta.timestamp_s,
            transforms,
            fields: meta.fields,
        });
    }
    for (i, name) in names.iter().enumerate() {
        let (count, first) = missing[i];
        if count > 0 {
            warnings.push(format!(
                "{name}Transform is missing in {count} of {} frames (first: frame {first}); \
                 those frames mark it INVALID",
                frames.len()
            ));
        }
        let (count, first) = ok_without_matrix[i];
        if count > 0 {
            warnings.push(format!(
                "{name}TransformStatus is OK without a matrix in {count} frames (first: \
                 frame {first}); those frames mark it INVALID"
            ));
        }
    }
    let untimed: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.timestamp_s.is_none())
        .map(|(i, _)| i)
        .collect();
    if untimed.len() == frames.len() && !frames.is_empty() {
        if let Some(values) = p.index_values {
            for (frame, t) in frames.iter_mut().zip(values) {
                frame.timestamp_s = Some(t);
            }
            warnings.push(
                "no frame has a Seq_FrameNNNN_Timestamp: timestamps taken from the NRRD list \
                 axis index values (Slicer's sequence index)"
                    .into(),
            );
        } else {
            warnings.push("no frame has a timestamp".into());
        }
    } else if let Some(first) = untimed.first() {
        warnings.push(format!(
            "{} of {} frames have no timestamp (first: frame {first})",
            untimed.len(),
            frames.len()
        ));
    }
    Ok(TrackedSequence {
        width: p.width,
        height: p.height,
        pixel_type: p.pixel_type,
        spacing_mm: p.spacing_mm,
        orientation: p.orientation,
        frames,
        header_fields: p.header_fields,
        warnings,
    })
}

// ---------------------------------------------------------------------------------------
// Writing

/// Writes `sequence` as a single-file sequence metafile (`.seq.mha`, raw pixel data),
/// atomically.
pub fn write_sequence(path: &Path, sequence: &TrackedSequence) -> Result<()> {
    write_sequence_with(path, sequence, &WriteOptions::default())
}

/// Writes `sequence` as a single-file sequence metafile with `options`, atomically.
pub fn write_sequence_with(
    path: &Path,
    sequence: &TrackedSequence,
    options: &WriteOptions,
) -> Result<()> {
    let bytes = to_bytes(sequence, options).map_err(|kind| Error::new(path, kind))?;
    let mut file = AtomicFile::create(path)?;
    file.write_all(&bytes).with_path(path)?;
    file.commit()
}

fn bad_input(msg: impl Into<String>) -> ErrorKind {
    ErrorKind::InvalidInput(msg.into())
}

/// A name the reader gives back unchanged: not empty, no `=`, no line break, no
/// surrounding white space.
fn check_name(what: &str, name: &str) -> std::result::Result<(), ErrorKind> {
    if name.is_empty()
        || name.contains(['=', '\n', '\r'])
        || name.trim() != name
        || name.contains(':')
    {
        return Err(bad_input(format!(
            "{what} {name:?}: names must be non-empty, without '=', ':', line breaks or \
             surrounding spaces"
        )));
    }
    Ok(())
}

fn check_value(what: &str, value: &str) -> std::result::Result<(), ErrorKind> {
    if value.contains(['\n', '\r']) || value.trim() != value {
        return Err(bad_input(format!(
            "{what} = {value:?}: values must be one line without surrounding spaces"
        )));
    }
    Ok(())
}

fn check_finite(what: &str, v: f64) -> std::result::Result<(), ErrorKind> {
    if !v.is_finite() {
        return Err(bad_input(format!("{what} is not finite ({v})")));
    }
    Ok(())
}

fn matrix_text(m: &Mat4) -> String {
    m.iter()
        .flatten()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The bytes of the `.seq.mha` [`write_sequence_with`] writes.
pub fn to_bytes(
    sequence: &TrackedSequence,
    options: &WriteOptions,
) -> std::result::Result<Vec<u8>, ErrorKind> {
    let s = sequence;
    if s.width == 0 || s.height == 0 {
        return Err(bad_input(format!(
            "frames of {} × {} pixels",
            s.width, s.height
        )));
    }
    let n = s
        .width
        .checked_mul(s.height)
        .ok_or_else(|| bad_input("frame size overflows"))?;
    for (i, v) in s.spacing_mm.iter().enumerate() {
        check_finite(&format!("spacing_mm[{i}]"), *v)?;
        if *v <= 0.0 {
            return Err(bad_input(format!("spacing_mm[{i}] = {v} is not positive")));
        }
    }
    let mut header = String::from("ObjectType = Image\nNDims = 3\n");
    header += "BinaryData = True\nBinaryDataByteOrderMSB = False\n";
    header += &format!(
        "CompressedData = {}\n",
        if options.compress { "True" } else { "False" }
    );
    header += "TransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\n";
    header += "CenterOfRotation = 0 0 0\nAnatomicalOrientation = RAI\n";
    header += &format!(
        "ElementSpacing = {} {} 1\n",
        s.spacing_mm[0], s.spacing_mm[1]
    );
    header += &format!(
        "DimSize = {} {} {}\nKinds = domain domain list\n",
        s.width,
        s.height,
        s.frames.len()
    );
    header += &format!(
        "ElementType = {}\nElementNumberOfChannels = 1\n",
        s.pixel_type.met_name()
    );
    if let Some(o) = &s.orientation {
        check_value(ORIENTATION_FIELD, o)?;
        header += &format!("{ORIENTATION_FIELD} = {o}\n");
    }
    for (k, v) in &s.header_fields {
        check_name("header field", k)?;
        check_value(k, v)?;
        if is_reserved_header_name(k) {
            return Err(bad_input(format!(
                "header field {k:?} is written by the writer itself or is a frame field"
            )));
        }
        if k.get(..FRAME_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(FRAME_PREFIX))
        {
            return Err(bad_input(format!(
                "header field {k:?} starts with {FRAME_PREFIX}"
            )));
        }
        header += &format!("{k} = {v}\n");
    }
    let mut data = Vec::with_capacity(n * s.frames.len() * s.pixel_type.size_bytes());
    for (f, frame) in s.frames.iter().enumerate() {
        let prefix = format!("{FRAME_PREFIX}{f:04}_");
        if frame.pixels.len() != n || frame.pixels.pixel_type() != s.pixel_type {
            return Err(bad_input(format!(
                "frame {f}: {} {:?} pixels, the sequence has {} × {} {:?}",
                frame.pixels.len(),
                frame.pixels.pixel_type(),
                s.width,
                s.height,
                s.pixel_type
            )));
        }
        match &frame.pixels {
            FramePixels::U8(v) => data.extend_from_slice(v),
            FramePixels::U16(v) => v
                .iter()
                .for_each(|x| data.extend_from_slice(&x.to_le_bytes())),
        }
        for (i, t) in frame.transforms.iter().enumerate() {
            check_name(&format!("frame {f} transform"), &t.name)?;
            if frame.transforms[..i].iter().any(|u| u.name == t.name) {
                return Err(bad_input(format!(
                    "frame {f}: transform {} appears twice",
                    t.name
                )));
            }
            if let Some(m) = &t.matrix {
                for v in m.iter().flatten() {
                    check_finite(&format!("frame {f} {}Transform", t.name), *v)?;
                }
                header += &format!("{prefix}{}Transform = {}\n", t.name, matrix_text(m));
            }
            let status = match (t.status, t.matrix.is_some()) {
                (TransformStatus::Ok, true) => "OK",
                (TransformStatus::Ok, false) => {
                    return Err(bad_input(format!(
                        "frame {f}: transform {} is OK but has no matrix",
                        t.name
                    )))
                }
                (TransformStatus::Invalid, _) => "INVALID",
            };
            header += &format!("{prefix}{}TransformStatus = {status}\n", t.name);
        }
        if let Some(t) = frame.timestamp_s {
            check_finite(&format!("frame {f} timestamp"), t)?;
            header += &format!("{prefix}{TIMESTAMP_FIELD} = {t}\n");
        }
        for (i, (k, v)) in frame.fields.iter().enumerate() {
            check_name(&format!("frame {f} field"), k)?;
            check_value(k, v)?;
            if k == TIMESTAMP_FIELD || k.ends_with("Transform") || k.ends_with("TransformStatus") {
                return Err(bad_input(format!(
                    "frame {f} field {k:?} would be read back as a timestamp or a transform"
                )));
            }
            if frame.fields[..i].iter().any(|(other, _)| other == k) {
                return Err(bad_input(format!("frame {f}: field {k:?} appears twice")));
            }
            header += &format!("{prefix}{k} = {v}\n");
        }
    }
    let payload = if options.compress {
        let mut encoder = ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(&data).map_err(ErrorKind::Io)?;
        encoder.finish().map_err(ErrorKind::Io)?
    } else {
        data
    };
    if options.compress {
        header += &format!("CompressedDataSize = {}\n", payload.len());
    }
    header += "ElementDataFile = LOCAL\n";
    let mut out = header.into_bytes();
    out.extend_from_slice(&payload);
    Ok(out)
}
