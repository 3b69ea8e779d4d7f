//! 3D Slicer markups (`.mrk.json`, schema v1.0.3): write point lists, lines and curves in
//! LPS millimetres; read control points back (converting RAS files to LPS).

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::error::WithPath;
use crate::{Error, ErrorKind, Result};

/// The `@schema` URL written into every file.
pub const MARKUPS_SCHEMA_V1_0_3: &str = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#";

/// Markup types. The writer handles the point-only types; [`MarkupKind::Other`] is what
/// [`read_markups`] reports for types it does not model (Plane, ROI …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkupKind {
    /// A point list (`"Fiducial"`).
    Fiducial,
    /// A line segment: exactly two control points.
    Line,
    /// An open curve through its control points.
    Curve,
    /// A closed curve through its control points.
    ClosedCurve,
    /// An angle: three control points.
    Angle,
    /// Any other Slicer type (read only).
    Other(String),
}

impl MarkupKind {
    /// The Slicer `type` string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Fiducial => "Fiducial",
            Self::Line => "Line",
            Self::Curve => "Curve",
            Self::ClosedCurve => "ClosedCurve",
            Self::Angle => "Angle",
            Self::Other(name) => name,
        }
    }

    fn from_type(name: &str) -> Self {
        match name {
            "Fiducial" => Self::Fiducial,
            "Line" => Self::Line,
            "Curve" => Self::Curve,
            "ClosedCurve" => Self::ClosedCurve,
            "Angle" => Self::Angle,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The exact number of control points this type needs, if fixed.
    fn required_points(&self) -> Option<usize> {
        match self {
            Self::Line => Some(2),
            Self::Angle => Some(3),
            _ => None,
        }
    }
}

/// One control point, LPS mm.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlPoint {
    /// Slicer's point id; the writer uses the 1-based index when empty.
    pub id: String,
    pub label: String,
    pub position_lps: [f64; 3],
}

impl ControlPoint {
    /// A point with an automatic id.
    pub fn new(label: impl Into<String>, position_lps: [f64; 3]) -> Self {
        Self {
            id: String::new(),
            label: label.into(),
            position_lps,
        }
    }
}

/// One markup node.
#[derive(Debug, Clone, PartialEq)]
pub struct Markup {
    pub kind: MarkupKind,
    pub name: String,
    pub points: Vec<ControlPoint>,
    /// Display colour, components in 0..=1.
    pub color_rgb: Option<[f64; 3]>,
}

#[derive(Serialize)]
struct FileJson<'a> {
    #[serde(rename = "@schema")]
    schema: &'static str,
    markups: Vec<MarkupJson<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MarkupJson<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    name: &'a str,
    coordinate_system: &'static str,
    coordinate_units: &'static str,
    control_points: Vec<ControlPointJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    display: Option<DisplayJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ControlPointJson<'a> {
    id: String,
    label: &'a str,
    position: [f64; 3],
    position_status: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DisplayJson {
    color: [f64; 3],
    /// Slicer draws unselected points in `color` and selected ones (the default) in
    /// `selectedColor`, so both carry the colour.
    selected_color: [f64; 3],
}

/// Writes `markups` into one `.mrk.json` file (LPS, mm).
pub fn write_markups(path: &Path, markups: &[Markup]) -> Result<()> {
    let bad = |message: String| Error::new(path, ErrorKind::InvalidInput(message));
    let mut json = Vec::with_capacity(markups.len());
    for markup in markups {
        json.push(markup_json(markup).map_err(bad)?);
    }
    let file = FileJson {
        schema: MARKUPS_SCHEMA_V1_0_3,
        markups: json,
    };
    let mut text = serde_json::to_string_pretty(&file)
        .map_err(|e| Error::new(path, ErrorKind::InvalidInput(e.to_string())))?;
    text.push('\n');
    crate::atomic::write_atomic(path, text.as_ref())
}

/// Checks one markup and converts it to its JSON form.
fn markup_json(markup: &Markup) -> Result<MarkupJson<'_>, String> {
    let name = &markup.name;
    if let MarkupKind::Other(kind) = &markup.kind {
        return Err(format!("markup '{name}': cannot write type '{kind}'"));
    }
    if let Some(n) = markup.kind.required_points() {
        if markup.points.len() != n {
            return Err(format!(
                "markup '{name}': a {} needs {n} control points, got {}",
                markup.kind.as_str(),
                markup.points.len()
            ));
        }
    }
    let control_points = markup
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| control_point_json(name, i, p))
        .collect::<Result<Vec<_>, String>>()?;
    let display = match markup.color_rgb {
        Some(c) if c.iter().all(|v| (0.0..=1.0).contains(v)) => Some(DisplayJson {
            color: c,
            selected_color: c,
        }),
        Some(c) => return Err(format!("markup '{name}': colour {c:?} is not within 0..1")),
        None => None,
    };
    Ok(MarkupJson {
        kind: markup.kind.as_str(),
        name,
        coordinate_system: "LPS",
        coordinate_units: "mm",
        control_points,
        display,
    })
}

fn control_point_json<'a>(
    markup: &str,
    index: usize,
    point: &'a ControlPoint,
) -> Result<ControlPointJson<'a>, String> {
    if point.position_lps.iter().any(|v| !v.is_finite()) {
        return Err(format!(
            "markup '{markup}': point {index} has a non-finite position {:?}",
            point.position_lps
        ));
    }
    let id = if point.id.is_empty() {
        (index + 1).to_string()
    } else {
        point.id.clone()
    };
    Ok(ControlPointJson {
        id,
        label: &point.label,
        position: point.position_lps,
        position_status: "defined",
    })
}

/// Reads every markup of a `.mrk.json` file with positions in **LPS** mm (a RAS file has
/// x and y negated). Control points whose `positionStatus` is `undefined` are skipped.
pub fn read_markups(path: &Path) -> Result<Vec<Markup>> {
    let text = std::fs::read_to_string(path).with_path(path)?;
    parse_markups(path, &text)
}

/// Parses `.mrk.json` text (as [`read_markups`]); `path` names it in errors.
pub fn parse_markups(path: &Path, text: &str) -> Result<Vec<Markup>> {
    let bad = |message: String| Error::new(path, ErrorKind::InvalidHeader(message));
    let root: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let schema = root
        .get("@schema")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !schema.contains("markups-schema-v1.") {
        return Err(bad(format!(
            "not a Slicer markups file (@schema '{schema}')"
        )));
    }
    let list = root
        .get("markups")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no 'markups' array".to_owned()))?;
    list.iter()
        .enumerate()
        .map(|(i, m)| read_markup(m).map_err(|e| bad(format!("markup {i}: {e}"))))
        .collect()
}

/// One markup object of a file.
fn read_markup(markup: &Value) -> Result<Markup, String> {
    let kind = markup
        .get("type")
        .and_then(Value::as_str)
        .ok_or("no 'type'")?;
    let flip = match markup.get("coordinateSystem").and_then(Value::as_str) {
        None | Some("LPS") => [1.0, 1.0, 1.0],
        Some("RAS") => [-1.0, -1.0, 1.0],
        Some(other) => return Err(format!("unknown coordinateSystem '{other}'")),
    };
    match markup.get("coordinateUnits").and_then(Value::as_str) {
        None | Some("mm") => {}
        Some(other) => return Err(format!("unsupported coordinateUnits '{other}'")),
    }
    let points = markup
        .get("controlPoints")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        if let Some(point) = read_control_point(p, flip).map_err(|e| format!("point {i}: {e}"))? {
            out.push(point);
        }
    }
    Ok(Markup {
        kind: MarkupKind::from_type(kind),
        name: string_field(markup, "name"),
        points: out,
        color_rgb: markup.get("display").and_then(|d| vec3(d.get("color")?)),
    })
}

/// A control point in LPS; `None` when its position is undefined.
fn read_control_point(point: &Value, flip: [f64; 3]) -> Result<Option<ControlPoint>, String> {
    if point.get("positionStatus").and_then(Value::as_str) == Some("undefined") {
        return Ok(None);
    }
    let position = point
        .get("position")
        .and_then(vec3)
        .ok_or("'position' must be three numbers")?;
    Ok(Some(ControlPoint {
        id: string_field(point, "id"),
        label: string_field(point, "label"),
        position_lps: [0, 1, 2].map(|a| position[a] * flip[a]),
    }))
}

fn string_field(object: &Value, key: &str) -> String {
    object
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Three finite numbers.
fn vec3(value: &Value) -> Option<[f64; 3]> {
    let items = value.as_array()?;
    if items.len() != 3 {
        return None;
    }
    let mut out = [0.0; 3];
    for (o, item) in out.iter_mut().zip(items) {
        *o = item.as_f64().filter(|v| v.is_finite())?;
    }
    Some(out)
}
