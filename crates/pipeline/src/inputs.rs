//! Reading a pipeline's inputs (volumes, label maps, label tables) and recording them in
//! reports (path and SHA-256).

use std::io::Read;
use std::path::Path;

use pinhole_io::labels::LabelTable;
use pinhole_io::open::{read_volume, Loaded, ReadOptions};
use pinhole_io::AnyVolume;
use pinhole_plan_needle::profile::RiskGroup;
use pinhole_volume::{Vec3, Volume};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Context, Error, Result};
use crate::observe::Observer;

/// The label table used when a request names none.
pub const DEFAULT_LABEL_TABLE: &str = "totalseg-v2";

/// Reads any supported volume (NIfTI, NRRD, DICOM folder), reporting progress and the
/// reader's warnings to `observer`.
pub fn load(path: &Path, series_uid: Option<String>, observer: &dyn Observer) -> Result<Loaded> {
    let what = if path.is_dir() {
        "reading".to_owned()
    } else {
        format!("reading {}", path.display())
    };
    observer.begin(&what);
    let options = ReadOptions { series_uid };
    let loaded = read_volume(path, &options, &mut |done, total| {
        observer.advance(done, total)
    });
    observer.end();
    let loaded = loaded?;
    for warning in &loaded.warnings {
        observer.warn(&format!("{}: {warning}", path.display()));
    }
    Ok(loaded)
}

/// A CT (any voxel type) as f32 HU.
pub fn load_ct(path: &Path, observer: &dyn Observer) -> Result<Volume<f32>> {
    Ok(load(path, None, observer)?.volume.to_f32())
}

/// A label map (non-negative integers ≤ 65535).
pub fn load_labels(path: &Path, observer: &dyn Observer) -> Result<Volume<u16>> {
    let volume = load(path, None, observer)?.volume;
    labels_of(volume, path)
}

/// `volume` as a label map, or an error naming `path`.
pub fn labels_of(volume: AnyVolume, path: &Path) -> Result<Volume<u16>> {
    volume
        .to_labels()
        .ok_or_else(|| Error::invalid(format!("{} is not a label map", path.display())))
}

/// Fails unless `labels` lies on `ct`'s grid.
pub fn require_same_grid(
    labels: &pinhole_volume::Grid,
    ct: &pinhole_volume::Grid,
    labels_path: &Path,
) -> Result<()> {
    if labels.same_geometry(ct, 1e-3) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{}: label map is not on the CT's grid",
            labels_path.display()
        )))
    }
}

/// The label table named by `spec` (`totalseg-v2` when `None`, `totalseg-v1`, a CSV or a
/// Slicer colour table) and the name it goes by in reports.
pub fn label_table(spec: Option<&str>) -> Result<(String, LabelTable)> {
    let spec = spec.unwrap_or(DEFAULT_LABEL_TABLE);
    let table = LabelTable::load(spec).with_context(|| format!("loading label table {spec}"))?;
    Ok((spec.to_string(), table))
}

/// What a planner does with labelled voxels whose id the label table does not name
/// (e.g. a TotalSegmentator v1 map read with the v2 table). Ignoring them would let a
/// plan run through them silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnnamedLabels {
    /// Refuse, naming the ids and their voxel counts (the default).
    #[default]
    Refuse,
    /// Treat them as structures to avoid (`unnamed_label_<id>`), with a warning.
    Forbid,
}

impl std::str::FromStr for UnnamedLabels {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "refuse" => Ok(Self::Refuse),
            "forbid" => Ok(Self::Forbid),
            other => Err(format!("{other:?}: refuse or forbid")),
        }
    }
}

/// Label ids present in `labels` (0 aside) that `table` does not name, with their voxel
/// counts, by id.
pub fn unnamed_labels(labels: &Volume<u16>, table: &LabelTable) -> Vec<(u16, usize)> {
    let mut counts = vec![0usize; usize::from(u16::MAX) + 1];
    for &v in labels.data() {
        counts[usize::from(v)] += 1;
    }
    (1..=u16::MAX)
        .filter(|&id| counts[usize::from(id)] > 0 && table.name(u32::from(id)).is_none())
        .map(|id| (id, counts[usize::from(id)]))
        .collect()
}

/// The name an unnamed label id goes by when it is treated as a structure to avoid.
pub fn unnamed_label_name(id: u16) -> String {
    format!("unnamed_label_{id}")
}

/// `118 (12345 voxels), 120 (7 voxels)`.
fn describe_unnamed(unnamed: &[(u16, usize)]) -> String {
    unnamed
        .iter()
        .map(|(id, n)| format!("{id} ({n} voxels)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a label map against its table. `Refuse`: an error naming the unnamed ids;
/// `Forbid`: the unnamed ids (empty when every id is named), for the caller to avoid.
pub fn check_unnamed(
    labels: &Volume<u16>,
    table: &LabelTable,
    table_name: &str,
    labels_path: &Path,
    policy: UnnamedLabels,
) -> Result<Vec<(u16, usize)>> {
    let unnamed = unnamed_labels(labels, table);
    if unnamed.is_empty() || policy == UnnamedLabels::Forbid {
        return Ok(unnamed);
    }
    Err(Error::invalid(format!(
        "{} holds label ids that the label table {table_name} does not name: {}. A plan that \
         ignored them could pass through them: give the table that names them \
         (--labels-table), or --unnamed-labels forbid to treat them as structures to avoid",
        labels_path.display(),
        describe_unnamed(&unnamed)
    )))
}

/// A warning when a structure (`what`: "target kidney_left") touches the scan's edge on
/// `sides` ([`pinhole_volume::Volume::scan_edges_where`]): it may continue outside the
/// scan (a kidney's lower pole, an access vessel).
pub fn scan_edge_warning(what: &str, sides: &[char]) -> Option<String> {
    if sides.is_empty() {
        return None;
    }
    let names: Vec<&str> = sides
        .iter()
        .map(|&side| pinhole_volume::volume::side_name(side))
        .collect();
    Some(format!(
        "{what} touches the scan's {} edge: part of it may lie outside the scan and was not planned for",
        names.join(" and ")
    ))
}

/// A risk structure cut by a face of the scan, and a path that comes closer to that face
/// than the structure's clearance: beyond the face the structure may continue unseen,
/// so the clearance there is not checked. One warning per (group, side), naming the
/// closest path.
pub fn cut_risk_structure_warnings(
    labels: &Volume<u16>,
    risk_groups: &[RiskGroup],
    table: &[(u32, String)],
    paths: &[(usize, Vec3, Vec3)],
) -> Vec<String> {
    let grid = labels.grid();
    let mut warnings = Vec::new();
    for group in risk_groups {
        let ids: Vec<u16> = group
            .labels
            .iter()
            .filter_map(|name| table.iter().find(|(_, n)| n == name))
            .filter_map(|(id, _)| u16::try_from(*id).ok())
            .collect();
        if ids.is_empty() {
            continue;
        }
        for side in labels.scan_edges_where(|v| v != 0 && ids.contains(&v)) {
            let closest = paths
                .iter()
                .filter_map(|&(rank, entry, target)| {
                    let d = grid
                        .distance_to_side_mm(entry, side)?
                        .min(grid.distance_to_side_mm(target, side)?);
                    Some((rank, d))
                })
                .min_by(|a, b| a.1.total_cmp(&b.1));
            let Some((rank, gap_mm)) = closest.filter(|c| c.1 < group.clearance_mm) else {
                continue;
            };
            let cut: Vec<&str> = group
                .labels
                .iter()
                .filter(|name| {
                    table.iter().any(|(id, n)| {
                        n == *name
                            && u16::try_from(*id).is_ok_and(|id| {
                                labels.scan_edges_where(|v| v == id).contains(&side)
                            })
                    })
                })
                .map(String::as_str)
                .collect();
            warnings.push(format!(
                "risk group {} ({}) is cut by the scan's {} edge and path {rank} comes within {gap_mm:.1} mm of that edge (clearance {} mm): the structure may continue outside the scan, where its clearance is not checked",
                group.name,
                cut.join(", "),
                pinhole_volume::volume::side_name(side),
                group.clearance_mm
            ));
        }
    }
    warnings
}

/// A label map, its table, and the ids the table does not name (empty unless forbidden).
pub struct NamedLabels {
    pub labels: Volume<u16>,
    /// The table's name or file, as reports record it.
    pub table_name: String,
    pub table: LabelTable,
    pub unnamed: Vec<(u16, usize)>,
}

/// Loads a label map and its table (`table_spec`, see [`label_table`]) and checks them
/// against each other ([`check_unnamed`]).
pub fn load_named_labels(
    path: &Path,
    table_spec: Option<&str>,
    policy: UnnamedLabels,
    observer: &dyn Observer,
) -> Result<NamedLabels> {
    let (table_name, table) = label_table(table_spec)?;
    let labels = load_labels(path, observer)?;
    let unnamed = check_unnamed(&labels, &table, &table_name, path, policy)?;
    Ok(NamedLabels {
        labels,
        table_name,
        table,
        unnamed,
    })
}

/// The warning a report carries when unnamed labels were forbidden: what was done.
pub fn unnamed_warning(unnamed: &[(u16, usize)], treatment: &str) -> String {
    format!(
        "label ids not in the label table: {}; {treatment}",
        describe_unnamed(unnamed)
    )
}

/// `(id, name)` of every entry of a label table.
pub fn table_entries(table: &LabelTable) -> Vec<(u32, String)> {
    table.iter().map(|(id, e)| (id, e.name.clone())).collect()
}

/// An input file as reports record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InputFile {
    /// What the file is (`ct`, `labels`), where a report lists several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub path: String,
    /// SHA-256 of the file (of a folder: of its files in name order, names included).
    pub sha256: String,
}

impl InputFile {
    /// Hashes `path` (a file or a DICOM folder).
    pub fn of(path: &Path) -> Result<Self> {
        Ok(Self {
            role: None,
            path: path.display().to_string(),
            sha256: sha256_of(path)?,
        })
    }

    /// [`InputFile::of`] with a role.
    pub fn with_role(role: &str, path: &Path) -> Result<Self> {
        Ok(Self {
            role: Some(role.to_owned()),
            ..Self::of(path)?
        })
    }
}

/// SHA-256 of an input file (a folder: every file below it in name order, relative names
/// included), as lowercase hex.
pub fn sha256_of(path: &Path) -> Result<String> {
    let files = files_below(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in &files {
        if path.is_dir() {
            hasher.update(
                f.strip_prefix(path)
                    .unwrap_or(f)
                    .to_string_lossy()
                    .as_bytes(),
            );
        }
        let mut file = std::fs::File::open(f).map_err(|e| io_error(f, e))?;
        loop {
            let n = file.read(&mut buf).map_err(|e| io_error(f, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    let digest = hasher.finalize();
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// `path` itself, or every file below the folder `path` in name order.
fn files_below(path: &Path) -> Result<Vec<std::path::PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io_error(&dir, e))? {
            let p = entry.map_err(|e| io_error(&dir, e))?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io(pinhole_io::Error::new(
        path,
        pinhole_io::ErrorKind::Io(source),
    ))
}
