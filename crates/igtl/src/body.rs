//! Message bodies (the "content" part, without the v3 extended header and metadata).

use std::borrow::Cow;

use crate::error::Result;
use crate::image::ImageBody;
use crate::wire::{Cursor, Writer};

/// The content of a message, by type.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// TRANSFORM: the upper 3×4 of a homogeneous matrix (mm).
    Transform(Transform),
    /// POSITION: a position and (optionally) a quaternion.
    Position(Position),
    /// IMAGE: a volume or slice with its geometry.
    Image(ImageBody),
    /// STATUS: a code, a sub-code, an error name and a message.
    Status(Status),
    /// STRING: text with its MIBenum character set.
    String(StringBody),
    /// POINT: named fiducials.
    Point(Vec<PointItem>),
    /// TDATA: named tracker poses.
    TData(Vec<TDataItem>),
    /// POLYDATA: counts checked against the body, sections kept as bytes.
    PolyData(PolyData),
    /// CAPABILITY: the message types a peer supports.
    Capability(Vec<String>),
    /// COMMAND: a named command with its (XML) text.
    Command(Command),
    /// RTS_COMMAND: the reply to a COMMAND, same layout.
    RtsCommand(Command),
    /// GET_x / STT_x / STP_x / RTS_x (except RTS_COMMAND).
    Query(Query),
    /// A known type with an empty body: what a peer answers to GET_x when it has no x.
    /// (POINT, TDATA and CAPABILITY decode an empty body as an empty list instead.)
    Empty { type_name: String },
    /// A type this codec does not interpret (TRAJ, COLORT, IMGMETA, LBMETA, SENSOR,
    /// NDARRAY, BIND, VIDEOMETA, VIDEO, vendor types …); re-encodes byte-identical.
    Raw { type_name: String, data: Vec<u8> },
}

/// The wire order of a TRANSFORM (and a TDATA matrix): R11 R21 R31 R12 R22 R32 R13 R23
/// R33 TX TY TZ, i.e. the 3×3 rotation column by column, then the translation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform(pub [f32; 12]);

impl Transform {
    pub const IDENTITY: Transform =
        Transform([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);

    /// From a row-major 4×4 homogeneous matrix (the bottom row is not sent).
    pub fn from_matrix(m: &[[f64; 4]; 4]) -> Self {
        let mut w = [0f32; 12];
        for c in 0..3 {
            for r in 0..3 {
                w[c * 3 + r] = m[r][c] as f32;
            }
        }
        for r in 0..3 {
            w[9 + r] = m[r][3] as f32;
        }
        Transform(w)
    }

    /// The row-major 4×4 homogeneous matrix (bottom row 0 0 0 1).
    pub fn to_matrix(&self) -> [[f64; 4]; 4] {
        let w = &self.0;
        let mut m = [[0.0; 4]; 4];
        for c in 0..3 {
            for r in 0..3 {
                m[r][c] = f64::from(w[c * 3 + r]);
            }
        }
        for r in 0..3 {
            m[r][3] = f64::from(w[9 + r]);
        }
        m[3][3] = 1.0;
        m
    }

    /// TX TY TZ.
    pub fn translation(&self) -> [f32; 3] {
        [self.0[9], self.0[10], self.0[11]]
    }

    fn read(c: &mut Cursor<'_>) -> Result<Self> {
        Ok(Transform(c.f32s::<12>("matrix")?))
    }
}

/// How much of a POSITION body is sent: 12 bytes (position only), 24 (position and the
/// quaternion's x y z; w ≥ 0 is implied) or 28 (all of it, the usual form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PositionForm {
    PositionOnly,
    QuaternionXyz,
    #[default]
    Full,
}

/// POSITION (mm, and a unit quaternion x y z w).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub position: [f32; 3],
    /// OX OY OZ W. For [`PositionForm::PositionOnly`] decoded as (0, 0, 0, 1); for
    /// [`PositionForm::QuaternionXyz`] W is computed as √(1 − x² − y² − z²).
    pub quaternion: [f32; 4],
    pub form: PositionForm,
}

/// STATUS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// 1 OK, 2 unknown error, 3 panic, 4 not found, 5 access denied, 6 busy, 7 time out,
    /// 8 overflow, 9 checksum error, 10 configuration error, 11 not enough resources,
    /// 12 unknown instruction, 13 not ready, 14 manual mode, 15 device disabled,
    /// 16 not present, 17 unknown version, 18 hardware failure, 19 shut down.
    pub code: u16,
    pub sub_code: i64,
    /// At most 20 bytes.
    pub error_name: String,
    /// Sent NUL-terminated; decoded up to the first NUL.
    pub message: String,
}

impl Status {
    pub const OK: u16 = 1;
}

/// STRING: bytes in the character set `encoding` (MIBenum: 3 US-ASCII, 106 UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringBody {
    pub encoding: u16,
    pub value: Vec<u8>,
}

/// MIBenum of US-ASCII.
pub const ENCODING_ASCII: u16 = 3;
/// MIBenum of UTF-8.
pub const ENCODING_UTF8: u16 = 106;

/// The MIBenum to declare for `text`: US-ASCII when it is, UTF-8 otherwise.
pub fn encoding_for(text: &str) -> u16 {
    if text.is_ascii() {
        ENCODING_ASCII
    } else {
        ENCODING_UTF8
    }
}

impl StringBody {
    /// `text` as US-ASCII when it is, UTF-8 otherwise.
    pub fn new(text: &str) -> Self {
        Self {
            encoding: encoding_for(text),
            value: text.as_bytes().to_vec(),
        }
    }

    /// The text, when the bytes are UTF-8 (ASCII included).
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }

    /// The text, invalid UTF-8 replaced.
    pub fn to_string_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// One POINT element (136 bytes on the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct PointItem {
    /// At most 64 bytes.
    pub name: String,
    /// At most 32 bytes (e.g. "Landmark", "Fiducial").
    pub group: String,
    pub rgba: [u8; 4],
    pub position: [f32; 3],
    pub diameter: f32,
    /// Device name of the owner image, at most 20 bytes.
    pub owner: String,
}

/// One TDATA element (70 bytes on the wire).
#[derive(Debug, Clone, PartialEq)]
pub struct TDataItem {
    /// At most 20 bytes.
    pub name: String,
    /// 1 tracker, 2 6D, 3 3D, 4 5D.
    pub kind: u8,
    pub transform: Transform,
}

/// A VTK cell array: `count` cells, `data` the big-endian u32 stream
/// (n, id₀ … idₙ₋₁, n, …) of SIZE bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CellArray {
    pub count: u32,
    pub data: Vec<u8>,
}

/// POLYDATA with its counts checked against the body; sections kept as bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolyData {
    /// NPOINTS × (x y z) as big-endian f32: 12 bytes per point.
    pub points: Vec<u8>,
    pub vertices: CellArray,
    pub lines: CellArray,
    pub polygons: CellArray,
    pub strips: CellArray,
    pub n_attributes: u32,
    /// The attribute headers (6 bytes each), names and data, as sent.
    pub attributes: Vec<u8>,
}

impl PolyData {
    /// The points as f32 triples.
    pub fn points_f32(&self) -> Vec<[f32; 3]> {
        self.points
            .chunks_exact(12)
            .map(|p| {
                let f = |i: usize| {
                    let mut b = [0u8; 4];
                    b.copy_from_slice(p.get(i * 4..i * 4 + 4).unwrap_or(&[0; 4]));
                    f32::from_be_bytes(b)
                };
                [f(0), f(1), f(2)]
            })
            .collect()
    }
}

/// COMMAND and RTS_COMMAND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub id: u32,
    /// At most 128 bytes.
    pub name: String,
    /// MIBenum of `command`.
    pub encoding: u16,
    pub command: Vec<u8>,
}

impl Command {
    pub fn new(id: u32, name: &str, text: &str) -> Self {
        Self {
            id,
            name: name.to_owned(),
            encoding: encoding_for(text),
            command: text.as_bytes().to_vec(),
        }
    }
}

/// Which query a `GET_`, `STT_`, `STP_` or `RTS_` type is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// `GET_x`: send one x.
    Get,
    /// `STT_x`: start streaming x.
    Start,
    /// `STP_x`: stop streaming x.
    Stop,
    /// `RTS_x`: the answer to STT_/STP_ (body: 1 byte, 0 ok, 1 error).
    Rts,
}

impl QueryKind {
    pub fn prefix(self) -> &'static str {
        match self {
            QueryKind::Get => "GET_",
            QueryKind::Start => "STT_",
            QueryKind::Stop => "STP_",
            QueryKind::Rts => "RTS_",
        }
    }
}

/// A query. On the wire the type name is truncated to 12 bytes, so `of` holds at most
/// 8 (`GET_TRANSFOR`); use [`Query::is_for`] to match it against a full type name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub kind: QueryKind,
    pub of: String,
    /// Kept as sent (empty for GET_; RESOL u32 + COORD_NAME char[32] for STT_TDATA …).
    pub body: Vec<u8>,
}

impl Query {
    /// Whether this query is about `type_name` (e.g. "TRANSFORM" for `GET_TRANSFOR`).
    pub fn is_for(&self, type_name: &str) -> bool {
        let wire = self.wire_type_name();
        let full = format!("{}{}", self.kind.prefix(), type_name);
        truncate_type(&full) == wire
    }

    /// The type name as sent: prefix + `of`, truncated to 12 bytes.
    pub fn wire_type_name(&self) -> String {
        truncate_type(&format!("{}{}", self.kind.prefix(), self.of)).to_owned()
    }
}

fn truncate_type(s: &str) -> &str {
    let mut end = s.len().min(crate::header::TYPE_NAME_SIZE);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or(s)
}

impl Body {
    /// The TYPE field this body is sent with.
    pub fn type_name(&self) -> Cow<'_, str> {
        Cow::Borrowed(match self {
            Body::Transform(_) => "TRANSFORM",
            Body::Position(_) => "POSITION",
            Body::Image(_) => "IMAGE",
            Body::Status(_) => "STATUS",
            Body::String(_) => "STRING",
            Body::Point(_) => "POINT",
            Body::TData(_) => "TDATA",
            Body::PolyData(_) => "POLYDATA",
            Body::Capability(_) => "CAPABILITY",
            Body::Command(_) => "COMMAND",
            Body::RtsCommand(_) => "RTS_COMMAND",
            Body::Query(q) => return Cow::Owned(q.wire_type_name()),
            Body::Empty { type_name } | Body::Raw { type_name, .. } => type_name,
        })
    }

    /// Interprets `content` as a `type_name` body.
    pub fn decode(type_name: &str, content: &[u8]) -> Result<Body> {
        let mut c = Cursor::new(content, type_name);
        let fixed_layout = matches!(
            type_name,
            "TRANSFORM"
                | "POSITION"
                | "IMAGE"
                | "STATUS"
                | "STRING"
                | "POLYDATA"
                | "COMMAND"
                | "RTS_COMMAND"
        );
        if fixed_layout && content.is_empty() {
            return Ok(Body::Empty {
                type_name: type_name.to_owned(),
            });
        }
        let body = match type_name {
            "TRANSFORM" => Body::Transform(Transform::read(&mut c)?),
            "POSITION" => Body::Position(read_position(&mut c)?),
            "IMAGE" => Body::Image(ImageBody::read(&mut c)?),
            "STATUS" => Body::Status(read_status(&mut c)?),
            "STRING" => Body::String(read_string(&mut c)?),
            "POINT" => Body::Point(read_items(&mut c, 136, read_point)?),
            "TDATA" => Body::TData(read_items(&mut c, 70, read_tdata)?),
            "POLYDATA" => Body::PolyData(read_polydata(&mut c)?),
            "CAPABILITY" => {
                Body::Capability(read_items(&mut c, 12, |c| c.fixed_str(12, "type name"))?)
            }
            "COMMAND" => Body::Command(read_command(&mut c)?),
            "RTS_COMMAND" => Body::RtsCommand(read_command(&mut c)?),
            _ => match query_kind(type_name) {
                Some((kind, of)) => Body::Query(Query {
                    kind,
                    of: of.to_owned(),
                    body: c.rest().to_vec(),
                }),
                None => Body::Raw {
                    type_name: type_name.to_owned(),
                    data: c.rest().to_vec(),
                },
            },
        };
        if c.remaining() != 0 {
            return Err(c.malformed(format!("{} bytes after the content", c.remaining())));
        }
        Ok(body)
    }

    /// The content bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let type_name = self.type_name();
        let mut w = Writer::new(&type_name);
        match self {
            Body::Transform(t) => w.f32s(&t.0),
            Body::Position(p) => {
                w.f32s(&p.position);
                match p.form {
                    PositionForm::PositionOnly => {}
                    PositionForm::QuaternionXyz => w.f32s(&p.quaternion[..3]),
                    PositionForm::Full => w.f32s(&p.quaternion),
                }
            }
            Body::Image(image) => image.write(&mut w)?,
            Body::Status(s) => {
                w.u16(s.code);
                w.i64(s.sub_code);
                w.fixed_str(&s.error_name, 20, "error name")?;
                crate::wire::check_fixed(&s.message, usize::MAX, "status message")
                    .map_err(|e| w.fail(e))?;
                w.bytes(s.message.as_bytes());
                w.u8(0);
            }
            Body::String(s) => {
                w.u16(s.encoding);
                let len = w.len_u16(s.value.len(), "string")?;
                w.u16(len);
                w.bytes(&s.value);
            }
            Body::Point(items) => {
                for p in items {
                    w.fixed_str(&p.name, 64, "point name")?;
                    w.fixed_str(&p.group, 32, "point group")?;
                    w.bytes(&p.rgba);
                    w.f32s(&p.position);
                    w.f32s(&[p.diameter]);
                    w.fixed_str(&p.owner, 20, "point owner")?;
                }
            }
            Body::TData(items) => {
                for t in items {
                    w.fixed_str(&t.name, 20, "tracking data name")?;
                    w.u8(t.kind);
                    w.u8(0);
                    w.f32s(&t.transform.0);
                }
            }
            Body::PolyData(p) => write_polydata(&mut w, p)?,
            Body::Capability(types) => {
                for t in types {
                    w.fixed_str(t, 12, "type name")?;
                }
            }
            Body::Command(cmd) | Body::RtsCommand(cmd) => {
                w.u32(cmd.id);
                w.fixed_str(&cmd.name, 128, "command name")?;
                w.u16(cmd.encoding);
                let len = w.len_u32(cmd.command.len(), "command")?;
                w.u32(len);
                w.bytes(&cmd.command);
            }
            Body::Query(q) => w.bytes(&q.body),
            Body::Empty { .. } => {}
            Body::Raw { data, .. } => w.bytes(data),
        }
        Ok(w.out)
    }
}

/// `GET_x` etc. (RTS_COMMAND is a command, not a query).
fn query_kind(type_name: &str) -> Option<(QueryKind, &str)> {
    [
        QueryKind::Get,
        QueryKind::Start,
        QueryKind::Stop,
        QueryKind::Rts,
    ]
    .into_iter()
    .find_map(|k| type_name.strip_prefix(k.prefix()).map(|of| (k, of)))
}

fn read_items<'a, T>(
    c: &mut Cursor<'a>,
    item_size: usize,
    mut read: impl FnMut(&mut Cursor<'a>) -> Result<T>,
) -> Result<Vec<T>> {
    if !c.remaining().is_multiple_of(item_size) {
        return Err(c.malformed(format!(
            "body of {} bytes is not a whole number of {item_size}-byte elements",
            c.remaining()
        )));
    }
    let mut items = Vec::with_capacity(c.remaining() / item_size);
    while c.remaining() > 0 {
        items.push(read(c)?);
    }
    Ok(items)
}

fn read_position(c: &mut Cursor<'_>) -> Result<Position> {
    let position = c.f32s::<3>("position")?;
    let (quaternion, form) = match c.remaining() {
        0 => ([0.0, 0.0, 0.0, 1.0], PositionForm::PositionOnly),
        12 => {
            let [x, y, z] = c.f32s::<3>("quaternion")?;
            // Clamped: rounding may leave 1 − x² − y² − z² slightly below 0.
            let w = (1.0 - x * x - y * y - z * z).max(0.0).sqrt();
            ([x, y, z, w], PositionForm::QuaternionXyz)
        }
        16 => (c.f32s::<4>("quaternion")?, PositionForm::Full),
        n => {
            return Err(c.malformed(format!(
                "body is {} bytes; POSITION has 12, 24 or 28",
                n + 12
            )))
        }
    };
    Ok(Position {
        position,
        quaternion,
        form,
    })
}

fn read_status(c: &mut Cursor<'_>) -> Result<Status> {
    let code = c.u16("code")?;
    let sub_code = c.i64("sub-code")?;
    let error_name = c.fixed_str(20, "error name")?;
    let rest = c.rest();
    let message = crate::wire::text_until_nul(rest)
        .ok_or_else(|| c.malformed("status message is not UTF-8"))?;
    Ok(Status {
        code,
        sub_code,
        error_name,
        message,
    })
}

fn read_string(c: &mut Cursor<'_>) -> Result<StringBody> {
    let encoding = c.u16("encoding")?;
    let len = c.u16("length")?;
    let value = c.take(usize::from(len), "string")?.to_vec();
    Ok(StringBody { encoding, value })
}

fn read_point(c: &mut Cursor<'_>) -> Result<PointItem> {
    let name = c.fixed_str(64, "point name")?;
    let group = c.fixed_str(32, "point group")?;
    let rgba = [c.u8("r")?, c.u8("g")?, c.u8("b")?, c.u8("a")?];
    let position = c.f32s::<3>("position")?;
    let diameter = c.f32("diameter")?;
    let owner = c.fixed_str(20, "owner")?;
    Ok(PointItem {
        name,
        group,
        rgba,
        position,
        diameter,
        owner,
    })
}

fn read_tdata(c: &mut Cursor<'_>) -> Result<TDataItem> {
    let name = c.fixed_str(20, "tracking data name")?;
    let kind = c.u8("type")?;
    let _reserved = c.u8("reserved")?;
    let transform = Transform::read(c)?;
    Ok(TDataItem {
        name,
        kind,
        transform,
    })
}

fn read_command(c: &mut Cursor<'_>) -> Result<Command> {
    let id = c.u32("command id")?;
    let name = c.fixed_str(128, "command name")?;
    let encoding = c.u16("encoding")?;
    let len = c.u32("length")?;
    let command = c.take_u64(u64::from(len), "command")?.to_vec();
    Ok(Command {
        id,
        name,
        encoding,
        command,
    })
}

const CELL_NAMES: [&str; 4] = ["vertices", "lines", "polygons", "triangle strips"];

fn read_polydata(c: &mut Cursor<'_>) -> Result<PolyData> {
    let n_points = c.u32("NPOINTS")?;
    let mut counts = [(0u32, 0u32); 4];
    for (name, slot) in CELL_NAMES.iter().zip(counts.iter_mut()) {
        *slot = (c.u32(name)?, c.u32(name)?);
    }
    let n_attributes = c.u32("NATTRIBUTES")?;
    let points = c.take_u64(u64::from(n_points) * 12, "points")?.to_vec();
    let mut arrays = Vec::with_capacity(4);
    for (&(count, size), name) in counts.iter().zip(CELL_NAMES) {
        let data = c.take_u64(u64::from(size), name)?.to_vec();
        arrays.push(CellArray { count, data });
    }
    let mut arrays = arrays.into_iter();
    let mut next = || arrays.next().unwrap_or_default();
    let (vertices, lines, polygons, strips) = (next(), next(), next(), next());
    let attributes = c.rest().to_vec();
    if u64::from(n_attributes) * 6 > attributes.len() as u64 {
        return Err(c.malformed(format!(
            "{n_attributes} attributes need {} header bytes, {} left",
            u64::from(n_attributes) * 6,
            attributes.len()
        )));
    }
    Ok(PolyData {
        points,
        vertices,
        lines,
        polygons,
        strips,
        n_attributes,
        attributes,
    })
}

fn write_polydata(w: &mut Writer<'_>, p: &PolyData) -> Result<()> {
    if !p.points.len().is_multiple_of(12) {
        return Err(w.fail("points are not a whole number of 12-byte triples"));
    }
    let n_points = w.len_u32(p.points.len() / 12, "point count")?;
    w.u32(n_points);
    for cells in [&p.vertices, &p.lines, &p.polygons, &p.strips] {
        w.u32(cells.count);
        let size = w.len_u32(cells.data.len(), "cell array")?;
        w.u32(size);
    }
    w.u32(p.n_attributes);
    w.bytes(&p.points);
    for cells in [&p.vertices, &p.lines, &p.polygons, &p.strips] {
        w.bytes(&cells.data);
    }
    if u64::from(p.n_attributes) * 6 > p.attributes.len() as u64 {
        return Err(w.fail("attribute section shorter than its headers"));
    }
    w.bytes(&p.attributes);
    Ok(())
}
