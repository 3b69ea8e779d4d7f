//! Results as DICOM (`pinhole dicom seg|sr|sc`), each in the patient and study of the
//! DICOM CT series it was made on and referencing it, with a typed report:
//!
//! * [`run`]: a label map (a plan's label map, an ablation zone, a TotalSegmentator or
//!   Slicer segmentation) on the series' grid as a binary DICOM Segmentation
//!   (`pinhole_io::dicom::seg`), `dicom_seg.json` ([`SegExportReport`]). Every label of
//!   the map must be named by its table (an unnamed id is refused, never dropped); the
//!   table's names and colours become the segments' labels and recommended display
//!   colours. The label map must lie on the series' grid (size, spacing, orientation and
//!   origin within a small fraction of a voxel): a label map from another scan is refused
//!   with the mismatch in mm.
//! * [`run_sr`]: a needle plan as a TID 1500 Measurement Report with 3-D coordinates
//!   (`pinhole_io::dicom::sr`), `dicom_sr.json` ([`SrExportReport`]).
//! * [`run_sc`]: a picture as a Secondary Capture with "NOT FOR CLINICAL USE" burned in
//!   (`pinhole_io::dicom::sc`), `dicom_sc.json` ([`ScExportReport`]).

use std::path::{Path, PathBuf};

use pinhole_io::dicom::deidentify::{deidentify_file, DeidentifyKey};
use pinhole_io::dicom::derived::Code;
use pinhole_io::dicom::sc::{write_secondary_capture, RgbPicture, ScOptions};
use pinhole_io::dicom::seg::{write_segmentation, SegOptions, SegmentAlgorithm, SegmentSpec};
use pinhole_io::dicom::sr::{
    degree, millimeter, percent, ucum as sr_ucum, write_measurement_report, GraphicType3d,
    Measurement, MeasurementGroup, MeasurementReport, Region3d, SrOptions,
};
use pinhole_io::dicom::{list_series, SeriesInfo};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::deidentify::KeySource;
use crate::error::{Context, Error, Result};
use crate::inputs::{load_named_labels, InputFile, UnnamedLabels};
use crate::observe::{step, Observer};
use crate::report::{
    unversioned, versioned_report, write_folder_then_report, Report, DISCLAIMER, VERSION,
};

/// The SEG's file name in the output folder.
pub const SEG_FILE: &str = "segmentation.dcm";
/// The report's file name in the output folder.
pub const REPORT_FILE: &str = "dicom_seg.json";

/// A label map to write as a DICOM Segmentation of a CT series.
#[derive(Debug, Clone, PartialEq)]
pub struct SegExportRequest {
    /// The folder of the source series.
    pub series_dir: PathBuf,
    /// Which series of the folder (by SeriesInstanceUID) when it holds several.
    pub series_uid: Option<String>,
    pub labels: PathBuf,
    /// Label table (see [`crate::inputs::label_table`]).
    pub labels_table: Option<String>,
    /// SeriesDescription of the SEG (" NOT FOR CLINICAL USE" is appended).
    pub series_description: String,
    /// The program that made the label map, when it was made automatically
    /// (SegmentAlgorithmType AUTOMATIC with this name); otherwise MANUAL.
    pub algorithm_name: Option<String>,
    /// The output folder: [`SEG_FILE`] and [`REPORT_FILE`].
    pub out_dir: PathBuf,
    /// De-identify the SEG as written ([`crate::deidentify`]); with the key the series
    /// was de-identified with, it references that series' new UIDs.
    pub deidentify: Option<KeySource>,
}

/// One written segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SegmentRow {
    /// SegmentNumber in the SEG.
    pub number: u16,
    /// The label id in the label map.
    pub label: u16,
    pub name: String,
    pub voxels: usize,
    pub ml: f64,
}

/// `dicom_seg.json`: what was written and from what.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SegExportReport {
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    pub version: String,
    pub inputs: Vec<InputFile>,
    pub label_table: String,
    /// The source series' SeriesInstanceUID (empty when its data sets have none).
    pub source_series_uid: String,
    pub source_slices: usize,
    /// The SEG's file name in the output folder.
    pub file: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub frames: usize,
    pub segments: Vec<SegmentRow>,
    /// The object was de-identified as written (DICOM PS3.15 basic profile): the UIDs
    /// above are its new ones, `source_series_uid` the source's as the key maps it.
    #[serde(default)]
    pub deidentified: bool,
    pub warnings: Vec<String>,
    pub disclaimer: String,
}
versioned_report!(SegExportReport, "dicom-seg", 1);

/// Writes the SEG and its report into `request.out_dir`.
pub fn run(request: &SegExportRequest, observer: &dyn Observer) -> Result<SegExportReport> {
    let series = choose_series(&request.series_dir, request.series_uid.as_deref())?;
    let named = step(observer, "reading the label map", || {
        load_named_labels(
            &request.labels,
            request.labels_table.as_deref(),
            UnnamedLabels::Refuse,
            observer,
        )
    })?;
    let rows = segment_rows(&named.labels, &named.table)?;
    let specs: Vec<SegmentSpec> = rows
        .iter()
        .map(|row| segment_spec(row, &named.table, request.algorithm_name.as_deref()))
        .collect();
    let options = SegOptions {
        series_description: request.series_description.clone(),
        ..SegOptions::default()
    };
    let mut inputs = vec![
        input(&request.series_dir, "ct")?,
        input(&request.labels, "labels")?,
    ];
    if let Some(table) = &request.labels_table {
        let path = Path::new(table);
        if path.is_file() {
            inputs.push(input(path, "label_table")?);
        }
    }
    let report = SegExportReport {
        schema_version: 1,
        version: VERSION.into(),
        inputs,
        label_table: named.table_name.clone(),
        source_series_uid: series.series_uid.clone(),
        source_slices: series.files.len(),
        file: SEG_FILE.into(),
        sop_instance_uid: String::new(),
        series_instance_uid: String::new(),
        frames: 0,
        segments: rows,
        deidentified: false,
        warnings: Vec::new(),
        disclaimer: DISCLAIMER.into(),
    };
    write_folder_then_report(&request.out_dir, REPORT_FILE, |dir| {
        let written = write_object(observer, "the DICOM Segmentation", || {
            let written = write_segmentation(
                &series.files,
                &named.labels,
                &specs,
                &options,
                &dir.join(SEG_FILE),
            )?;
            Ok((written.warnings.clone(), written))
        })?;
        let mut warnings = written.warnings;
        let key = deidentify_written(
            observer,
            &dir.join(SEG_FILE),
            request.deidentify.as_ref(),
            &mut warnings,
        )?;
        let uid = |u: &str| key.as_ref().map_or_else(|| u.to_owned(), |k| k.map_uid(u));
        Ok(SegExportReport {
            source_series_uid: uid(&report.source_series_uid),
            sop_instance_uid: uid(&written.sop_instance_uid),
            series_instance_uid: uid(&written.series_instance_uid),
            frames: written.frames,
            deidentified: key.is_some(),
            warnings,
            ..report
        })
    })
}

/// Writes one DICOM object (`write` gives its warnings and what it wrote) as the step
/// "writing `what`"; its warnings are told to the observer.
fn write_object<W>(
    observer: &dyn Observer,
    what: &str,
    write: impl FnOnce() -> pinhole_io::Result<(Vec<String>, W)>,
) -> Result<W> {
    let what = format!("writing {what}");
    let (warnings, written) = step(observer, &what, write).context(what.clone())?;
    for warning in &warnings {
        observer.warn(warning);
    }
    Ok(written)
}

/// With `key`, the object just written to `path` de-identified in place (the DICOM PS3.15
/// basic profile, `pinhole_io::dicom::deidentify`); its warnings join `warnings`. The key
/// is returned so that the report can name the new UIDs (the same key maps the same).
fn deidentify_written(
    observer: &dyn Observer,
    path: &Path,
    key: Option<&KeySource>,
    warnings: &mut Vec<String>,
) -> Result<Option<DeidentifyKey>> {
    let Some(source) = key else {
        return Ok(None);
    };
    if matches!(source, KeySource::Random) {
        observer.info(
            "de-identified with a key for this run only: its UIDs will not match a series \
             de-identified in another run (give the series' key file)",
        );
    }
    let key = source.key();
    let done = step(observer, "de-identifying", || {
        let done = deidentify_file(path, &key)?;
        done.write(path)?;
        Ok::<_, pinhole_io::Error>(done)
    })
    .context("de-identifying the written object")?;
    for warning in &done.summary.warnings {
        observer.warn(warning);
        warnings.push(warning.clone());
    }
    Ok(Some(key))
}

fn input(path: &Path, role: &str) -> Result<InputFile> {
    let mut file = InputFile::of(path)?;
    file.role = Some(role.into());
    Ok(file)
}

/// The folder's one series, or the one named.
fn choose_series(dir: &Path, uid: Option<&str>) -> Result<SeriesInfo> {
    let all = list_series(dir)?;
    let describe = |all: &[SeriesInfo]| {
        all.iter()
            .map(|s| format!("{:?} ({} slices, {})", s.series_uid, s.slices, s.modality))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match uid {
        Some(uid) => all
            .iter()
            .find(|s| s.series_uid == uid)
            .cloned()
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{}: no series {uid:?}; the folder holds {}",
                    dir.display(),
                    describe(&all)
                ))
            }),
        None if all.len() == 1 => Ok(all[0].clone()),
        None => Err(Error::invalid(format!(
            "{}: {} series; choose one with --series-uid: {}",
            dir.display(),
            all.len(),
            describe(&all)
        ))),
    }
}

/// Every non-zero label of the map (all named: [`load_named_labels`] refused the rest),
/// by id.
fn segment_rows(
    labels: &pinhole_volume::Volume<u16>,
    table: &pinhole_io::labels::LabelTable,
) -> Result<Vec<SegmentRow>> {
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for &id in labels.data().iter().filter(|&&id| id != 0) {
        *counts.entry(id).or_default() += 1;
    }
    if counts.is_empty() {
        return Err(Error::invalid(
            "the label map is empty (no voxel with a non-zero label): nothing to write",
        ));
    }
    let voxel_ml = labels.grid().voxel_volume_mm3() / 1000.0;
    counts
        .into_iter()
        .enumerate()
        .map(|(n, (label, voxels))| {
            let name = table
                .get(u32::from(label))
                .map(|e| e.name.clone())
                .ok_or_else(|| Error::invalid(format!("label {label} has no name")))?;
            Ok(SegmentRow {
                number: u16::try_from(n + 1)
                    .map_err(|_| Error::invalid("more than 65535 labels"))?,
                label,
                name,
                voxels,
                ml: voxels as f64 * voxel_ml,
            })
        })
        .collect()
}

fn segment_spec(
    row: &SegmentRow,
    table: &pinhole_io::labels::LabelTable,
    algorithm_name: Option<&str>,
) -> SegmentSpec {
    let mut spec = SegmentSpec::new(row.label, row.name.clone());
    spec.rgb = table.get(u32::from(row.label)).and_then(|e| e.color_rgb);
    if let Some(name) = algorithm_name {
        spec.algorithm = SegmentAlgorithm::Automatic { name: name.into() };
    }
    spec
}

impl SegExportReport {
    /// The terminal's summary.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "DICOM Segmentation (NOT FOR CLINICAL USE): {} segment(s), {} frame(s) over {} source slice(s)\n",
            self.segments.len(),
            self.frames,
            self.source_slices
        );
        for s in &self.segments {
            out.push_str(&format!(
                "  segment {:>3}: label {:>5} {:<32} {:>9} voxels {:>9.2} ml\n",
                s.number, s.label, s.name, s.voxels, s.ml
            ));
        }
        out.push_str(&format!(
            "  SOP Instance UID {}\n  Series Instance UID {}\n",
            self.sop_instance_uid, self.series_instance_uid
        ));
        out
    }
}

// ---------------------------------------------------------------------------------------
// A needle plan as a DICOM Structured Report (`pinhole dicom sr`)

/// The SR's file name in the output folder.
pub const SR_FILE: &str = "measurements_sr.dcm";
/// The SR report's file name in the output folder.
pub const SR_REPORT_FILE: &str = "dicom_sr.json";
/// Coding scheme of Pinhole's own concepts (a private scheme: `99` prefix, PS3.16 8.2).
pub const PINHOLE_SCHEME: &str = "99PINHOLE";

/// What a Measurement Report reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SrSource {
    /// `plan.json` of `pinhole plan needle` (planned on the series): the target, the best
    /// `paths` paths (1 or more) and their clearances.
    NeedlePlan { plan: PathBuf, paths: usize },
    /// `confirmation.json` of `pinhole confirm ablation` whose pre-ablation CT is the
    /// series (its coordinates are in that scan's frame; another series is refused): the
    /// minimal ablative margin, coverage, volumes, verdict and thinnest point.
    AblationConfirmation(PathBuf),
    /// `measurements.json` of `pinhole measure vessel` on the series' grid: the
    /// centerline and its length, and the stenosis (MLD, reference diameter, diameter and
    /// area stenosis, lesion length, NASCET / ECST when measured) with its MLD point.
    VesselMeasurements(PathBuf),
}

impl SrSource {
    /// The report file.
    pub fn path(&self) -> &Path {
        match self {
            Self::NeedlePlan { plan, .. } => plan,
            Self::AblationConfirmation(path) | Self::VesselMeasurements(path) => path,
        }
    }
}

/// A needle plan or an ablation confirmation to write as a TID 1500 Measurement Report
/// on its CT series.
#[derive(Debug, Clone, PartialEq)]
pub struct SrExportRequest {
    pub series_dir: PathBuf,
    pub series_uid: Option<String>,
    pub source: SrSource,
    pub series_description: String,
    pub out_dir: PathBuf,
    /// De-identify the SR as written (as [`SegExportRequest::deidentify`]).
    pub deidentify: Option<KeySource>,
}

/// One measurement group written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GroupRow {
    pub tracking_identifier: String,
    pub tracking_uid: String,
    /// `concept = value unit` of each measurement.
    pub measurements: Vec<String>,
    /// Graphic types of its 3-D regions (LPS, the series' Frame of Reference).
    pub regions: Vec<String>,
}

/// `dicom_sr.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SrExportReport {
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    pub version: String,
    pub inputs: Vec<InputFile>,
    pub source_series_uid: String,
    pub file: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub groups: Vec<GroupRow>,
    /// The object was de-identified as written (DICOM PS3.15 basic profile): the UIDs
    /// above are its new ones, `source_series_uid` the source's as the key maps it.
    #[serde(default)]
    pub deidentified: bool,
    pub warnings: Vec<String>,
    pub disclaimer: String,
}
versioned_report!(SrExportReport, "dicom-sr", 1);

/// Writes the SR and its report into `request.out_dir`.
pub fn run_sr(request: &SrExportRequest, observer: &dyn Observer) -> Result<SrExportReport> {
    if let SrSource::NeedlePlan { paths: 0, .. } = request.source {
        return Err(Error::invalid("--paths must be at least 1"));
    }
    let series = choose_series(&request.series_dir, request.series_uid.as_deref())?;
    let mut warnings = Vec::new();
    let (groups, role) = match &request.source {
        SrSource::NeedlePlan { plan, paths } => {
            let plan = crate::needle::NeedleReport::read(plan)?;
            (plan_groups(&plan.plan, *paths, &mut warnings), "plan")
        }
        SrSource::AblationConfirmation(path) => {
            let confirmation = crate::confirm::ConfirmationReport::read(path)?;
            check_confirmed_on(&confirmation, &request.series_dir, path)?;
            (
                confirmation_groups(&confirmation, &mut warnings),
                "confirmation",
            )
        }
        SrSource::VesselMeasurements(path) => {
            let measured = crate::vessel::MeasureReport::read(path)?;
            (vessel_groups(&measured, &mut warnings), "measurements")
        }
    };
    for warning in &warnings {
        observer.warn(warning);
    }
    let report =
        MeasurementReport::new(Code::new("77477000", "SCT", "Computed Tomography"), groups);
    let options = SrOptions {
        series_description: request.series_description.clone(),
        ..SrOptions::default()
    };
    let inputs = vec![
        input(&request.series_dir, "ct")?,
        input(request.source.path(), role)?,
    ];
    write_folder_then_report(&request.out_dir, SR_REPORT_FILE, |dir| {
        let written = write_object(observer, "the DICOM Structured Report", || {
            let written =
                write_measurement_report(&series.files, &report, &options, &dir.join(SR_FILE))?;
            Ok((written.warnings.clone(), written))
        })?;
        warnings.extend(written.warnings);
        let key = deidentify_written(
            observer,
            &dir.join(SR_FILE),
            request.deidentify.as_ref(),
            &mut warnings,
        )?;
        let uid = |u: &str| key.as_ref().map_or_else(|| u.to_owned(), |k| k.map_uid(u));
        let groups = report
            .groups
            .iter()
            .zip(&written.tracking_uids)
            .map(|(g, tracking)| group_row(g, &uid(tracking)))
            .collect();
        Ok(SrExportReport {
            schema_version: SrExportReport::SCHEMA_VERSION,
            version: VERSION.into(),
            inputs,
            source_series_uid: uid(&series.series_uid),
            file: SR_FILE.into(),
            sop_instance_uid: uid(&written.sop_instance_uid),
            series_instance_uid: uid(&written.series_instance_uid),
            groups,
            deidentified: key.is_some(),
            warnings,
            disclaimer: DISCLAIMER.into(),
        })
    })
}

fn pinhole_code(value: &str, meaning: &str) -> Code {
    Code::new(value, PINHOLE_SCHEME, meaning)
}

/// The target, then per path (best first) its line, length and angles, and one group per
/// risk group with its clearance (a group the plan could not check is left out and said).
fn plan_groups(
    plan: &pinhole_plan_needle::Plan,
    paths: usize,
    warnings: &mut Vec<String>,
) -> Vec<MeasurementGroup> {
    let mut target = MeasurementGroup::new(format!("target ({})", plan.target));
    target.finding = Some(pinhole_code("TARGET", "Needle target"));
    target
        .regions
        .push(Region3d::new(GraphicType3d::Point, vec![plan.target_lps]));
    let mut groups = vec![target];
    for path in plan.paths.iter().take(paths) {
        groups.push(path_group(path));
        for (risk, clearance) in &path.min_clearance_mm {
            match clearance {
                Some(mm) => groups.push(clearance_group(path, risk, *mm)),
                None => warnings.push(format!(
                    "path {}: no clearance to {risk} (not in the label map): not in the SR",
                    path.rank
                )),
            }
        }
    }
    if plan.paths.is_empty() {
        warnings.push("the plan has no feasible path: the SR holds the target only".into());
    }
    groups
}

/// Refuses a confirmation whose pre-ablation CT is not `series_dir` (same content hash):
/// its coordinates would land in another scan's frame.
fn check_confirmed_on(
    confirmation: &crate::confirm::ConfirmationReport,
    series_dir: &Path,
    path: &Path,
) -> Result<()> {
    let pre = confirmation
        .inputs
        .iter()
        .find(|i| i.role.as_deref() == Some("pre_ct"))
        .ok_or_else(|| {
            Error::invalid(format!(
                "{}: names no pre-ablation CT among its inputs",
                path.display()
            ))
        })?;
    let series = InputFile::of(series_dir)?;
    if series.sha256 != pre.sha256 {
        return Err(Error::invalid(format!(
            "{} was confirmed on another pre-ablation CT ({}, SHA-256 {}…) than {} (SHA-256 \
             {}…): its coordinates are in that scan's frame. Give the series it was \
             confirmed on",
            path.display(),
            pre.path,
            &pre.sha256[..pre.sha256.len().min(12)],
            series_dir.display(),
            &series.sha256[..series.sha256.len().min(12)]
        )));
    }
    Ok(())
}

/// One group: the tumour's coverage, minimal ablative margin (with the required one),
/// tumour and zone volumes; the finding is the verdict; the thinnest point and the
/// tumour's centroid as points. The confirmation's own warnings are carried.
fn confirmation_groups(
    confirmation: &crate::confirm::ConfirmationReport,
    warnings: &mut Vec<String>,
) -> Vec<MeasurementGroup> {
    use pinhole_intraop::margin::Verdict;
    let m = &confirmation.margin;
    let mut group = MeasurementGroup::new(format!(
        "ablation confirmation ({})",
        confirmation.tumor.spec
    ));
    group.finding = Some(match m.verdict {
        Verdict::Sufficient => pinhole_code("MARGINOK", "Sufficient ablative margin"),
        Verdict::InsufficientMargin => pinhole_code("MARGINLOW", "Insufficient ablative margin"),
        Verdict::TumorNotCovered => {
            pinhole_code("NOTCOVERED", "Tumour not covered by the ablation zone")
        }
    });
    let milliliter = sr_ucum("ml", "milliliter");
    let mut mam = Measurement::new(
        pinhole_code("MAM", "Minimal ablative margin"),
        m.minimal_margin_mm,
        millimeter(),
    );
    mam.derivation = Some(Code::new("255605001", "SCT", "Minimum"));
    group.measurements = vec![
        mam,
        Measurement::new(
            pinhole_code("MARGINREQ", "Required ablative margin"),
            m.required_mm,
            millimeter(),
        ),
        Measurement::new(
            pinhole_code("COVERAGE", "Tumour volume inside the ablation zone"),
            m.coverage_tumor_pct,
            percent(),
        ),
        Measurement::new(
            pinhole_code("TUMORVOL", "Tumour volume"),
            m.tumor_volume_ml,
            milliliter.clone(),
        ),
        Measurement::new(
            pinhole_code("ZONEVOL", "Ablation zone volume near the tumour"),
            m.zone_volume_ml,
            milliliter,
        ),
    ];
    let mut thinnest = Region3d::new(GraphicType3d::Point, vec![m.thinnest_lps]);
    thinnest.concept = pinhole_code("THINNEST", "Thinnest margin point");
    let mut centre = Region3d::new(GraphicType3d::Point, vec![m.tumor_centroid_lps]);
    centre.concept = pinhole_code("TUMORCENTRE", "Tumour centroid");
    group.regions = vec![thinnest, centre];
    warnings.extend(
        confirmation
            .warnings
            .iter()
            .map(|w| format!("the confirmation says: {w}")),
    );
    vec![group]
}

/// One group per measured vessel: its centerline (POLYLINE) and length, and when a
/// stenosis was measured its MLD, reference diameter, diameter / area stenosis, lesion
/// length, NASCET / ECST when measured, the grade in the group's identifier and the MLD
/// point. The measurement records its CT by name only: said in `warnings`.
fn vessel_groups(
    measured: &crate::vessel::MeasureReport,
    warnings: &mut Vec<String>,
) -> Vec<MeasurementGroup> {
    let mut group = MeasurementGroup::new(format!("vessel {}", measured.label));
    group.measurements = vec![Measurement::new(
        Code::new("410668003", "SCT", "Length"),
        measured.length_mm,
        millimeter(),
    )];
    if measured.stations.len() >= 2 {
        let mut centerline = Region3d::new(
            GraphicType3d::Polyline,
            measured.stations.iter().map(|s| s.point_lps).collect(),
        );
        centerline.concept = pinhole_code("CENTERLINE", "Vessel centerline");
        group.regions.push(centerline);
    } else {
        warnings.push("fewer than two centerline stations: no centerline in the SR".into());
    }
    match &measured.stenosis {
        Some(st) => {
            group.tracking_identifier = format!("vessel {}: {}", measured.label, st.grade);
            group.finding = Some(pinhole_code("STENOSIS", "Vessel stenosis"));
            let mut mld = Measurement::new(
                pinhole_code("MLD", "Minimal lumen diameter"),
                st.mld_mm,
                millimeter(),
            );
            mld.derivation = Some(Code::new("255605001", "SCT", "Minimum"));
            group.measurements.extend([
                mld,
                Measurement::new(
                    pinhole_code("REFDIAM", "Reference vessel diameter"),
                    st.reference_diameter_mm,
                    millimeter(),
                ),
                Measurement::new(
                    pinhole_code("DIAMSTEN", "Diameter stenosis"),
                    st.diameter_stenosis_pct,
                    percent(),
                ),
                Measurement::new(
                    pinhole_code("AREASTEN", "Area stenosis"),
                    st.area_stenosis_pct,
                    percent(),
                ),
                Measurement::new(
                    pinhole_code("LESIONLEN", "Lesion length"),
                    st.lesion_length_mm,
                    millimeter(),
                ),
            ]);
            let graded = [
                ("NASCET", "Stenosis (NASCET)", st.nascet_pct),
                ("ECST", "Stenosis (ECST)", st.ecst_pct),
            ];
            for (value, meaning, pct) in graded {
                if let Some(pct) = pct {
                    group.measurements.push(Measurement::new(
                        pinhole_code(value, meaning),
                        pct,
                        percent(),
                    ));
                }
            }
            let mut point = Region3d::new(GraphicType3d::Point, vec![st.mld_point_lps]);
            point.concept = pinhole_code("MLDPOINT", "Minimal lumen diameter point");
            group.regions.push(point);
        }
        None => warnings.push(format!(
            "vessel {}: no stenosis measured; the SR holds its centerline and length",
            measured.label
        )),
    }
    warnings.push(format!(
        "the measurements record their label map ({}) and CT ({}) by name only: check \
         they are on this series",
        measured.inputs.labels,
        measured.inputs.ct.as_deref().unwrap_or("none given")
    ));
    warnings.extend(
        measured
            .warnings
            .iter()
            .map(|w| format!("the measurements say: {w}")),
    );
    vec![group]
}

fn path_line(path: &pinhole_plan_needle::PathReport) -> Region3d {
    let mut line = Region3d::new(
        GraphicType3d::Polyline,
        vec![path.entry_lps, path.target_lps],
    );
    line.concept = pinhole_code("NEEDLEPATH", "Planned needle path");
    line
}

fn path_group(path: &pinhole_plan_needle::PathReport) -> MeasurementGroup {
    let mut group = MeasurementGroup::new(format!("needle path {}", path.rank));
    group.finding = Some(pinhole_code("NEEDLEPATH", "Planned needle path"));
    group.measurements = vec![
        Measurement::new(
            Code::new("410668003", "SCT", "Length"),
            path.length_mm,
            millimeter(),
        ),
        Measurement::new(
            pinhole_code("SKINANGLE", "Angle to the skin normal"),
            path.skin_angle_deg,
            degree(),
        ),
        Measurement::new(
            pinhole_code("AXIALANGLE", "Angle to the axial plane"),
            path.axial_angle_deg,
            degree(),
        ),
    ];
    let mut entry = Region3d::new(GraphicType3d::Point, vec![path.entry_lps]);
    entry.concept = pinhole_code("ENTRY", "Skin entry point");
    group.regions = vec![path_line(path), entry];
    group
}

fn clearance_group(
    path: &pinhole_plan_needle::PathReport,
    risk: &str,
    clearance_mm: f64,
) -> MeasurementGroup {
    let mut group =
        MeasurementGroup::new(format!("needle path {}: clearance to {risk}", path.rank));
    group.finding = Some(pinhole_code("CLEARANCE", "Clearance of the needle path"));
    let mut distance = Measurement::new(
        Code::new("121206", "DCM", "Distance"),
        clearance_mm,
        millimeter(),
    );
    distance.derivation = Some(Code::new("255605001", "SCT", "Minimum"));
    group.measurements = vec![distance];
    group.regions = vec![path_line(path)];
    group
}

fn group_row(group: &MeasurementGroup, uid: &str) -> GroupRow {
    GroupRow {
        tracking_identifier: group.tracking_identifier.clone(),
        tracking_uid: uid.into(),
        measurements: group
            .measurements
            .iter()
            .map(|m| format!("{} = {} {}", m.concept.meaning, m.value, m.unit.value))
            .collect(),
        regions: group
            .regions
            .iter()
            .map(|r| r.graphic_type.as_str().to_string())
            .collect(),
    }
}

impl SrExportReport {
    /// The terminal's summary.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "DICOM Structured Report (NOT FOR CLINICAL USE): {} measurement group(s)\n",
            self.groups.len()
        );
        for g in &self.groups {
            out.push_str(&format!(
                "  {}: {}\n",
                g.tracking_identifier,
                if g.measurements.is_empty() {
                    g.regions.join(", ")
                } else {
                    g.measurements.join("; ")
                }
            ));
        }
        out.push_str(&format!("  SOP Instance UID {}\n", self.sop_instance_uid));
        out
    }
}

/// The Secondary Capture's file name in the output folder.
pub const SC_FILE: &str = "capture.dcm";
/// The SC report's file name in the output folder.
pub const SC_REPORT_FILE: &str = "dicom_sc.json";

/// A picture (a PNG of `pinhole plan`, `ablation`, `intraop`, `drr`) to store as a
/// Secondary Capture in the patient and study of a DICOM series.
#[derive(Debug, Clone, PartialEq)]
pub struct ScExportRequest {
    pub series_dir: PathBuf,
    pub series_uid: Option<String>,
    /// The picture: 8- or 16-bit PNG, grey or colour (alpha dropped).
    pub picture: PathBuf,
    /// The picture already shows "NOT FOR CLINICAL USE" at its top: do not burn it in
    /// again. Pinhole's own pictures carry their banner lower down: leave this off.
    pub banner_already_present: bool,
    pub series_description: String,
    pub out_dir: PathBuf,
    /// De-identify the capture as written (as [`SegExportRequest::deidentify`]).
    pub deidentify: Option<KeySource>,
}

/// `dicom_sc.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ScExportReport {
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    pub version: String,
    pub inputs: Vec<InputFile>,
    pub source_series_uid: String,
    pub file: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub columns: usize,
    pub rows: usize,
    /// Rows `0..banner_rows` hold the burned-in "NOT FOR CLINICAL USE" (0: the picture
    /// carried it, nothing burned in).
    pub banner_rows: usize,
    /// The object was de-identified as written (DICOM PS3.15 basic profile): the UIDs
    /// above are its new ones, `source_series_uid` the source's as the key maps it.
    #[serde(default)]
    pub deidentified: bool,
    pub warnings: Vec<String>,
    pub disclaimer: String,
}
versioned_report!(ScExportReport, "dicom-sc", 1);

/// Writes the Secondary Capture and its report into `request.out_dir`.
pub fn run_sc(request: &ScExportRequest, observer: &dyn Observer) -> Result<ScExportReport> {
    let series = choose_series(&request.series_dir, request.series_uid.as_deref())?;
    let picture = step(observer, "reading the picture", || {
        RgbPicture::from_png(&request.picture)
    })
    .context("reading the picture")?;
    let options = ScOptions {
        series_description: request.series_description.clone(),
        banner_already_present: request.banner_already_present,
        ..ScOptions::default()
    };
    let inputs = vec![
        input(&request.series_dir, "ct")?,
        input(&request.picture, "picture")?,
    ];
    write_folder_then_report(&request.out_dir, SC_REPORT_FILE, |dir| {
        let written = write_object(observer, "the DICOM Secondary Capture", || {
            let written =
                write_secondary_capture(&series.files, &picture, &options, &dir.join(SC_FILE))?;
            Ok((written.warnings.clone(), written))
        })?;
        let mut warnings = written.warnings;
        let key = deidentify_written(
            observer,
            &dir.join(SC_FILE),
            request.deidentify.as_ref(),
            &mut warnings,
        )?;
        let uid = |u: &str| key.as_ref().map_or_else(|| u.to_owned(), |k| k.map_uid(u));
        Ok(ScExportReport {
            schema_version: ScExportReport::SCHEMA_VERSION,
            version: VERSION.into(),
            inputs,
            source_series_uid: uid(&series.series_uid),
            file: SC_FILE.into(),
            sop_instance_uid: uid(&written.sop_instance_uid),
            series_instance_uid: uid(&written.series_instance_uid),
            columns: picture.width,
            rows: picture.height,
            banner_rows: written.banner.map_or(0, |b| b.rows),
            deidentified: key.is_some(),
            warnings,
            disclaimer: DISCLAIMER.into(),
        })
    })
}

impl ScExportReport {
    /// The terminal's summary.
    pub fn to_text(&self) -> String {
        let banner = if self.banner_rows == 0 {
            "the picture's own notice kept".to_string()
        } else {
            format!(
                "\"NOT FOR CLINICAL USE\" burned into rows 0-{}",
                self.banner_rows - 1
            )
        };
        format!(
            "DICOM Secondary Capture (NOT FOR CLINICAL USE): {} x {} RGB, {banner}\n  SOP Instance UID {}\n",
            self.columns, self.rows, self.sop_instance_uid
        )
    }
}
