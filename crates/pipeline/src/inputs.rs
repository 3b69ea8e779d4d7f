//! Reading a pipeline's inputs (volumes, label maps, label tables) and recording them in
//! reports (path and SHA-256).

use std::io::Read;
use std::path::Path;

use pinhole_io::labels::LabelTable;
use pinhole_io::open::{read_volume, Loaded, ReadOptions};
use pinhole_io::AnyVolume;
use pinhole_plan_needle::profile::RiskGroup;
use pinhole_volume::{Vec3, Volume, Voxel};
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

/// A volume as [`load`] reads it, or a colour DICOM series read as RGB.
#[derive(Debug)]
pub enum Image {
    Grey(Loaded),
    Colour(pinhole_io::dicom::ColourSeries),
}

/// Reads `path` as [`load`] does; a DICOM series `load` refuses because it is colour
/// (RGB, YBR, PALETTE COLOR: screen captures, photographs) is read as an RGB volume
/// instead. Only a refused read looks for colour, so greyscale inputs are read once.
pub fn load_image(
    path: &Path,
    series_uid: Option<String>,
    observer: &dyn Observer,
) -> Result<Image> {
    match load(path, series_uid.clone(), observer) {
        Ok(loaded) => Ok(Image::Grey(loaded)),
        // Not colour: `load`'s own error. Colour that fails to read: that failure.
        Err(error) => match load_colour(path, series_uid, observer)? {
            Some(colour) => Ok(Image::Colour(colour)),
            None => Err(error),
        },
    }
}

/// A colour DICOM series read as an RGB volume, or `None` when `path` is not (or not
/// readably) a DICOM series of colour images; an error only when a series whose headers
/// say colour fails to read. Warnings go to `observer`.
fn load_colour(
    path: &Path,
    series_uid: Option<String>,
    observer: &dyn Observer,
) -> Result<Option<pinhole_io::dicom::ColourSeries>> {
    if pinhole_io::open::detect(path).ok() != Some(pinhole_io::open::Format::DicomSeries) {
        return Ok(None);
    }
    let options = pinhole_io::dicom::DicomOptions { series_uid };
    // Whatever the headers do not show to be colour is left to `load`, whose errors
    // (a lone file, a missing series, …) are the ones to report.
    if !pinhole_io::dicom::series_is_colour(path, &options).unwrap_or(false) {
        return Ok(None);
    }
    observer.begin("reading colour series");
    let series = pinhole_io::dicom::read_colour_series(path, &options, &mut |done, total| {
        observer.advance(done, total)
    });
    observer.end();
    let series = series?;
    for warning in &series.warnings {
        observer.warn(&format!("{}: {warning}", path.display()));
    }
    Ok(Some(series))
}

/// What a procedure does with a "CT" input that does not look like a CT (an MR, PET or
/// NM volume, a normalised or rescaled image): its values are not Hounsfield units, so
/// attenuation, body outline and tissue thresholds would be silently wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotCt {
    /// Refuse with the reason (the default).
    #[default]
    Refuse,
    /// Go on, with a warning in the report that the check was overridden
    /// (`--allow-non-ct`).
    Allow,
}

/// At least this fraction of voxels must be air or lung (≤ [`CT_AIR_HU`]).
pub const CT_MIN_AIR_FRACTION: f64 = 0.001;
/// Air (≈ −1000 HU) and lung (≈ −800 HU) lie at or below this.
pub const CT_AIR_HU: f64 = -500.0;
/// At least this fraction of voxels must be soft tissue, fat or water
/// ([`CT_SOFT_TISSUE_HU`]).
pub const CT_MIN_SOFT_TISSUE_FRACTION: f64 = 0.02;
/// Fat (≈ −100 HU), water (0) and soft tissue (≈ +40 HU), with margin.
pub const CT_SOFT_TISSUE_HU: (f64, f64) = (-200.0, 300.0);
/// At most this fraction of voxels may lie above [`CT_BRIGHT_HU`].
pub const CT_MAX_BRIGHT_FRACTION: f64 = 0.01;
/// Cortical bone stays below about +2000 HU; metal is a few voxels.
pub const CT_BRIGHT_HU: f64 = 3000.0;
/// Voxels examined at most (a regular subsample of larger volumes).
const CT_CHECK_SAMPLES: usize = 1 << 21;

/// Why `volume` does not look like a CT in Hounsfield units, or `None` when it does.
///
/// A DICOM `Modality` other than `CT` decides alone. Otherwise (NIfTI, NRRD, or DICOM
/// saying CT) the values must look like HU: some air or lung (at least
/// [`CT_MIN_AIR_FRACTION`] of the voxels at or below [`CT_AIR_HU`]), some soft tissue
/// (at least [`CT_MIN_SOFT_TISSUE_FRACTION`] within [`CT_SOFT_TISSUE_HU`]) and few
/// voxels brighter than dense bone (at most [`CT_MAX_BRIGHT_FRACTION`] above
/// [`CT_BRIGHT_HU`]). The shared data's CTs have 36–63 % air, 33–61 % soft tissue and
/// under 0.02 % above +3000 HU; an MR (0 … a few thousand, no negatives) or a CT rescaled
/// to 0 … 1 has no air. A tight crop inside the body (no air at all) is refused too: use
/// the override.
pub fn not_ct_reason(volume: &AnyVolume, modality: Option<&str>) -> Option<String> {
    if let Some(m) = modality.map(str::trim).filter(|m| !m.is_empty()) {
        if !m.eq_ignore_ascii_case("CT") {
            return Some(format!(
                "the DICOM Modality is {m}, not CT: its values are not Hounsfield units"
            ));
        }
    }
    let stride = ct_check_stride(volume.grid().voxel_count());
    pinhole_io::with_volume!(volume, v => {
        hu_not_ct_reason(v.data().iter().step_by(stride).map(|x| x.to_f64()))
    })
}

/// The step between the voxels [`not_ct_reason`] examines in a volume of `voxel_count`
/// (a regular subsample of at most 2²¹ voxels).
pub fn ct_check_stride(voxel_count: usize) -> usize {
    voxel_count.div_ceil(CT_CHECK_SAMPLES).max(1)
}

/// The value test of [`not_ct_reason`] on a sample of voxel values (HU expected), for
/// volumes that did not come from a file (the Python bindings' arrays).
pub fn hu_not_ct_reason(samples: impl Iterator<Item = f64>) -> Option<String> {
    let (mut n, mut air, mut soft, mut bright) = (0usize, 0usize, 0usize, 0usize);
    let mut lowest = f64::INFINITY;
    for hu in samples.filter(|hu| hu.is_finite()) {
        n += 1;
        lowest = lowest.min(hu);
        air += usize::from(hu <= CT_AIR_HU);
        soft += usize::from((CT_SOFT_TISSUE_HU.0..=CT_SOFT_TISSUE_HU.1).contains(&hu));
        bright += usize::from(hu > CT_BRIGHT_HU);
    }
    if n == 0 {
        return Some("no finite values".into());
    }
    let fraction = |k: usize| k as f64 / n as f64;
    if fraction(air) < CT_MIN_AIR_FRACTION {
        return Some(format!(
            "no air: {:.2} % of the voxels are at or below {CT_AIR_HU} HU (a CT has air around \
             the body or in the lungs at about -1000 HU; at least {} % needed), lowest value \
             {lowest}",
            100.0 * fraction(air),
            100.0 * CT_MIN_AIR_FRACTION
        ));
    }
    if fraction(soft) < CT_MIN_SOFT_TISSUE_FRACTION {
        return Some(format!(
            "little soft tissue: {:.2} % of the voxels lie within {} .. {} HU (fat, water, \
             soft tissue; at least {} % needed)",
            100.0 * fraction(soft),
            CT_SOFT_TISSUE_HU.0,
            CT_SOFT_TISSUE_HU.1,
            100.0 * CT_MIN_SOFT_TISSUE_FRACTION
        ));
    }
    if fraction(bright) > CT_MAX_BRIGHT_FRACTION {
        return Some(format!(
            "too bright: {:.2} % of the voxels lie above {CT_BRIGHT_HU} HU (denser than bone; \
             at most {} % allowed)",
            100.0 * fraction(bright),
            100.0 * CT_MAX_BRIGHT_FRACTION
        ));
    }
    None
}

/// Checks that the volume loaded from `path` as a procedure's CT looks like one
/// ([`not_ct_reason`]). `Refuse`: an error naming the file and the reason; `Allow`: the
/// warning the report must carry (also sent to `observer`), `None` when it is CT-like.
pub fn check_ct(
    path: &Path,
    loaded: &Loaded,
    policy: NotCt,
    observer: &dyn Observer,
) -> Result<Option<String>> {
    let Some(reason) = not_ct_reason(&loaded.volume, loaded.modality.as_deref()) else {
        return Ok(None);
    };
    match policy {
        NotCt::Refuse => Err(Error::invalid(format!(
            "{} does not look like a CT in Hounsfield units: {reason}. Give a CT, or \
             --allow-non-ct to go on anyway (the report records it)",
            path.display()
        ))),
        NotCt::Allow => {
            let warning = format!(
                "--allow-non-ct: {} does not look like a CT in Hounsfield units ({reason}); \
                 results that depend on HU (attenuation, body outline, tissue) are unreliable",
                crate::provenance::recorded_path(path)
            );
            observer.warn(&warning);
            Ok(Some(warning))
        }
    }
}

/// A procedure's CT as f32 HU, checked ([`check_ct`]), with the report's warning when
/// the check was overridden.
pub fn load_checked_ct(
    path: &Path,
    policy: NotCt,
    observer: &dyn Observer,
) -> Result<(Volume<f32>, Option<String>)> {
    let loaded = load(path, None, observer)?;
    let warning = check_ct(path, &loaded, policy, observer)?;
    Ok((loaded.volume.to_f32(), warning))
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
    /// What reading the labels decided that the report must carry (a DICOM
    /// Segmentation's overlapping segments, its fractional threshold ...); already shown
    /// to the observer.
    pub warnings: Vec<String>,
}

/// Loads a label map and its table (`table_spec`, see [`label_table`]) and checks them
/// against each other ([`check_unnamed`]).
pub fn load_named_labels(
    path: &Path,
    table_spec: Option<&str>,
    policy: UnnamedLabels,
    observer: &dyn Observer,
) -> Result<NamedLabels> {
    load_named_labels_on(path, table_spec, policy, None, observer)
}

/// [`load_named_labels`], placing a DICOM Segmentation on `ct_grid` when given (its
/// frames usually cover only some of the CT's slices; without the grid it spans its own
/// frames and may not match the CT). A Segmentation's own segment labels are its table
/// unless `table_spec` names one.
pub fn load_named_labels_on(
    path: &Path,
    table_spec: Option<&str>,
    policy: UnnamedLabels,
    ct_grid: Option<&pinhole_volume::Grid>,
    observer: &dyn Observer,
) -> Result<NamedLabels> {
    if !pinhole_io::dicom::seg_input::is_segmentation_file(path) {
        let (table_name, table) = label_table(table_spec)?;
        let labels = load_labels(path, observer)?;
        let unnamed = check_unnamed(&labels, &table, &table_name, path, policy)?;
        return Ok(NamedLabels {
            labels,
            table_name,
            table,
            unnamed,
            warnings: Vec::new(),
        });
    }
    observer.begin(&format!("reading {}", path.display()));
    let seg = pinhole_io::dicom::seg_input::read_segmentation(path, ct_grid);
    observer.end();
    let seg = seg?;
    let recorded = crate::provenance::recorded_path(path);
    let warnings: Vec<String> = seg
        .warnings
        .iter()
        .map(|w| format!("{recorded}: {w}"))
        .collect();
    for warning in &warnings {
        observer.warn(warning);
    }
    let (table_name, table) = match table_spec {
        Some(spec) => label_table(Some(spec))?,
        None => (format!("segments of {recorded}"), seg.table),
    };
    let unnamed = check_unnamed(&seg.labels, &table, &table_name, path, policy)?;
    Ok(NamedLabels {
        labels: seg.labels,
        table_name,
        table,
        unnamed,
        warnings,
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
    /// The file's name (its full path only with `--record-full-paths`: folders may be
    /// named after the patient).
    pub path: String,
    /// SHA-256 of the file (of a folder: of its files in name order, names included).
    pub sha256: String,
}

impl InputFile {
    /// Hashes `path` (a file or a DICOM folder).
    pub fn of(path: &Path) -> Result<Self> {
        Ok(Self {
            role: None,
            path: crate::provenance::recorded_path(path),
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
