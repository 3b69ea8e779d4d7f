//! Thermal ablation planning (`pinhole plan ablation`): `ablation.json`
//! ([`AblationReport`]), `zone.seg.nrrd`, `zone.vtk` and `zone.png`.

use std::path::{Path, PathBuf};

use pinhole_ablation::bioheat::{Settings, Tissue};
use pinhole_ablation::calibration;
use pinhole_ablation::coverage::HeatSink;
use pinhole_ablation::damage::Criterion;
use pinhole_ablation::devices::{DeviceTable, Modality, ZoneLookup};
use pinhole_ablation::plan::{
    self, analysis_grid, labels_on, Mode, PlacedZone, Plan, Request, SimulationSummary,
};
use pinhole_io::labels::{LabelEntry, LabelTable};
use pinhole_volume::anatomy::is_vessel;
use pinhole_volume::target::{sphere_mask, TargetSpec};
use pinhole_volume::{Interpolation, Mask, Vec3, Volume};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, OrInvalid, Result};
use crate::figures::{applicator_slice, axial_contours, write_picture, RgbPicture};
use crate::inputs::{
    load_checked_ct, load_named_labels_on, scan_edge_warning, unnamed_warning, InputFile,
    NamedLabels, NotCt, UnnamedLabels,
};
use crate::limits;
use crate::needle::PlanPaths;
use crate::observe::Observer;
use crate::report::{unversioned, versioned_report, write_folder, Report, DISCLAIMER, VERSION};
use crate::tracks::{check_tracks, ApplicatorTrack, TrackCheck};

/// How the zone is obtained.
#[derive(Debug, Clone, PartialEq)]
pub enum ZoneSource {
    /// A device zone table's entry (`devices`: a TOML table; `None`: the built-in one).
    Device {
        name: String,
        devices: Option<PathBuf>,
    },
    /// A Pennes bioheat simulation: with `device`, that device's calibrated source model
    /// (from `devices`, or the built-in table); without, the first calibrated device of
    /// the `applicator` modality in the built-in table (or an uncalibrated default,
    /// flagged in the report's warnings).
    Simulate {
        applicator: Modality,
        criterion: Criterion,
        device: Option<String>,
        devices: Option<PathBuf>,
    },
}

/// An ablation to plan.
#[derive(Debug, Clone, PartialEq)]
pub struct AblationRequest {
    pub ct: PathBuf,
    pub labels: PathBuf,
    pub labels_table: Option<String>,
    /// Tumour: a label name, or a sphere `x,y,z,r` in LPS mm.
    pub tumor: String,
    /// Safety margin around the tumour, mm.
    pub margin_mm: f64,
    pub zone: ZoneSource,
    pub power_w: f64,
    pub minutes: f64,
    /// A needle plan whose best path the applicator follows.
    pub path: Option<PathBuf>,
    /// Analysis (and simulation) grid spacing, mm.
    pub grid_mm: f64,
    /// Most applicators when one zone cannot cover tumour + margin.
    pub max_applicators: usize,
    /// Labelled voxels the table does not name: refuse (default), or go on with a
    /// warning (they cannot be checked as heat sinks).
    pub unnamed_labels: UnnamedLabels,
    /// A CT that does not look like one: refuse (default) or go on with a warning.
    pub not_ct: NotCt,
}

impl AblationRequest {
    /// Refuses parameters outside [`crate::limits`] (before any file is read).
    pub fn validate(&self) -> Result<()> {
        limits::ABLATION_MARGIN_MM.check(self.margin_mm)?;
        limits::ABLATION_POWER_W.check(self.power_w)?;
        limits::ABLATION_MINUTES.check(self.minutes)?;
        limits::ABLATION_GRID_MM.check(self.grid_mm)?;
        limits::MAX_APPLICATORS.check_count(self.max_applicators)
    }

    /// A device-table zone (built-in table) for `tumor` at `power_w` for `minutes`, with
    /// the defaults of `pinhole plan ablation`: 5 mm margin, 1 mm grid, up to 3
    /// applicators, no needle path.
    pub fn device(
        ct: &Path,
        labels: &Path,
        tumor: &str,
        device: &str,
        power_w: f64,
        minutes: f64,
    ) -> Self {
        Self {
            ct: ct.to_path_buf(),
            labels: labels.to_path_buf(),
            labels_table: None,
            tumor: tumor.to_owned(),
            margin_mm: 5.0,
            zone: ZoneSource::Device {
                name: device.to_owned(),
                devices: None,
            },
            power_w,
            minutes,
            path: None,
            grid_mm: 1.0,
            max_applicators: 3,
            unnamed_labels: UnnamedLabels::default(),
            not_ct: NotCt::default(),
        }
    }
}

/// The tumour as planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TumorInfo {
    pub spec: String,
    pub description: String,
    pub volume_ml: f64,
    pub point_lps: Vec3,
}

/// The analysis grid (isotropic, axis-aligned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AnalysisGrid {
    pub dims: [usize; 3],
    pub spacing_mm: [f64; 3],
    pub origin_lps: Vec3,
    pub direction: [[f64; 3]; 3],
}

/// The files written beside `ablation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AblationOutputs {
    pub segmentation: String,
    pub zone_surface: String,
    pub image: String,
}

/// The device table used: a file, or the built-in example table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DevicesInput {
    File(InputFile),
    Builtin(String),
}

/// Input files of an ablation plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AblationInputs {
    pub ct: InputFile,
    pub labels: InputFile,
    pub labels_table: String,
    pub path: Option<InputFile>,
    pub devices: DevicesInput,
}

/// `ablation.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AblationReport {
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    pub procedure: String,
    /// `device` or `simulate`.
    pub mode: String,
    pub criterion: String,
    pub device: Option<ZoneLookup>,
    pub power_w: f64,
    pub minutes: f64,
    pub tumor: TumorInfo,
    pub margin_mm: f64,
    pub zones: Vec<PlacedZone>,
    pub applicator_count: usize,
    pub covered_margin_fraction_by_applicator_count: Vec<f64>,
    pub zone_volume_ml: f64,
    pub coverage_tumor_pct: f64,
    pub coverage_margin_pct: f64,
    pub min_margin_mm: Option<f64>,
    pub thinnest_margin_lps: Option<Vec3>,
    pub margin_method: String,
    pub heat_sinks: Vec<HeatSink>,
    pub heat_sink_rule: String,
    pub simulation: Option<SimulationSummary>,
    /// Each applicator's track under the rules of the needle plan (`--path`); empty
    /// without one.
    #[serde(default)]
    pub tracks: Vec<ApplicatorTrack>,
    pub analysis_grid: AnalysisGrid,
    pub outputs: AblationOutputs,
    pub inputs: AblationInputs,
    pub version: String,
    pub note: String,
    /// What the plan could not use or check (also shown on the terminal).
    #[serde(default)]
    pub warnings: Vec<String>,
}

versioned_report!(AblationReport, "ablation", 2);

/// A plan with the volumes and picture that go with it.
#[derive(Debug, Clone)]
pub struct AblationOutcome {
    pub report: AblationReport,
    /// Tumour / margin (ablated or not) and zone, one label per voxel.
    pub segmentation: Volume<u16>,
    /// The zone's outline on each axial slice.
    pub zone_contours: pinhole_io::vtk::PolyLines,
    /// The CT through the first applicator's axis.
    pub picture: RgbPicture,
}

/// Plans the ablation.
pub fn run(request: &AblationRequest, observer: &dyn Observer) -> Result<AblationOutcome> {
    request.validate()?;
    let spec: TargetSpec = request.tumor.parse()?;
    if let TargetSpec::Sphere { radius_mm, .. } = spec {
        limits::TUMOR_RADIUS_MM.check(radius_mm)?;
    }
    let (ct, not_ct_warning) = load_checked_ct(&request.ct, request.not_ct, observer)?;
    let NamedLabels {
        labels,
        table_name,
        table,
        unnamed,
        warnings: label_warnings,
    } = load_named_labels_on(
        &request.labels,
        request.labels_table.as_deref(),
        request.unnamed_labels,
        Some(ct.grid()),
        observer,
    )?;
    let mut warnings: Vec<String> = not_ct_warning.into_iter().collect();
    warnings.extend(label_warnings);
    if !unnamed.is_empty() {
        let warning = unnamed_warning(
            &unnamed,
            "not checked as heat sinks: if one is a vessel near the tumour, it may cool the zone and thin the margin",
        );
        observer.warn(&warning);
        warnings.push(warning);
    }
    let target = spec
        .resolve(&labels, |name| table.id_of(name))
        .with_context(|| format!("tumour {:?}", request.tumor))?;
    if let Some(warning) = scan_edge_warning(
        &format!("tumour {}", target.description),
        &target.region.scan_edges_touched(),
    ) {
        observer.warn(&warning);
        warnings.push(warning);
    }
    let mode = zone_mode(request)?;
    let simulate = matches!(request.zone, ZoneSource::Simulate { .. });
    // Analysis grid: isotropic, around the tumour, with room for zones (and, when
    // simulating, several perfusion lengths to the 37 °C faces).
    let pad_mm = request.margin_mm + if simulate { 40.0 } else { 25.0 };
    let grid = analysis_grid(&target.region, pad_mm, request.grid_mm)?;
    let tumor = match spec {
        TargetSpec::Sphere {
            center_lps,
            radius_mm,
        } => sphere_mask(&grid, center_lps, radius_mm),
        _ => target.region.resample(&grid, Interpolation::Nearest, false),
    };
    let labels_grid = labels_on(&grid, &labels);
    let vessels = vessels_present(&labels_grid, &table);
    let path = request.path.as_deref().map(best_path).transpose()?;
    let planner_request = Request {
        labels: labels_grid,
        tumor,
        margin_mm: request.margin_mm,
        vessels,
        liver_id: table.id_of("liver"),
        liver: Tissue::liver(),
        other_tissue: Tissue {
            name: "other soft tissue (liver values)".into(),
            ..Tissue::liver()
        },
        path,
        mode: mode.clone(),
        max_applicators: request.max_applicators,
    };
    let result = plan::plan(&planner_request)?;
    let track_check = match &request.path {
        Some(plan_path) => check_tracks(
            plan_path,
            &result.zones,
            &ct,
            &labels,
            &table,
            &unnamed,
        )?,
        None => TrackCheck {
            tracks: Vec::new(),
            warnings: vec![format!(
                "no needle plan (--path): the track of {} not checked against needle rules (plan one with `pinhole plan needle` and pass its plan.json)",
                if result.zones.len() == 1 {
                    "the applicator was".to_owned()
                } else {
                    format!("each of the {} applicators was", result.zones.len())
                }
            )],
        },
    };
    let heat_sink_warnings = heat_sink_warnings(&result, request.margin_mm, simulate);
    for warning in heat_sink_warnings
        .into_iter()
        .chain(track_check.warnings)
        .chain(simulation_warnings(result.simulation.as_ref()))
    {
        observer.warn(&warning);
        warnings.push(warning);
    }
    let picture = applicator_slice(&ct, &planner_request.tumor, &result)
        .or_invalid(|| "no zone to draw".to_owned())?;
    let report = AblationReport {
        schema_version: AblationReport::SCHEMA_VERSION,
        warnings,
        procedure: "thermal ablation".to_owned(),
        mode: if simulate { "simulate" } else { "device" }.to_owned(),
        criterion: result.criterion.clone(),
        device: match &mode {
            Mode::Device(lookup) => Some(lookup.clone()),
            Mode::Simulate { .. } => None,
        },
        power_w: request.power_w,
        minutes: request.minutes,
        tumor: TumorInfo {
            spec: request.tumor.clone(),
            description: target.description.clone(),
            volume_ml: result.coverage.tumor_volume_ml,
            point_lps: target.point_lps,
        },
        margin_mm: request.margin_mm,
        zones: result.zones.clone(),
        applicator_count: result.zones.len(),
        covered_margin_fraction_by_applicator_count: result.covered_fraction_by_count.clone(),
        zone_volume_ml: result.coverage.zone_volume_ml,
        coverage_tumor_pct: result.coverage.coverage_tumor_pct,
        coverage_margin_pct: result.coverage.coverage_margin_pct,
        min_margin_mm: result.coverage.min_margin_mm,
        thinnest_margin_lps: result.coverage.thinnest_margin_lps,
        margin_method: "signed Euclidean distance transform of the zone on the analysis grid, half-voxel corrected, minimum over tumour voxels (positive = inside the zone)".to_owned(),
        heat_sinks: result.heat_sinks.clone(),
        heat_sink_rule: format!(
            "labelled vessels >= {} mm diameter within {} mm of the tumour are flagged",
            plan::HEAT_SINK_MIN_DIAMETER_MM,
            plan::HEAT_SINK_MAX_DISTANCE_MM
        ),
        simulation: result.simulation.clone(),
        tracks: track_check.tracks,
        analysis_grid: AnalysisGrid {
            dims: grid.dims(),
            spacing_mm: grid.spacing_mm(),
            origin_lps: grid.origin_lps(),
            direction: grid.direction(),
        },
        outputs: AblationOutputs {
            segmentation: "zone.seg.nrrd".to_owned(),
            zone_surface: "zone.vtk".to_owned(),
            image: "zone.png".to_owned(),
        },
        inputs: AblationInputs {
            ct: InputFile::of(&request.ct)?,
            labels: InputFile::of(&request.labels)?,
            labels_table: table_name,
            path: request.path.as_deref().map(InputFile::of).transpose()?,
            devices: match &request.zone {
                ZoneSource::Device {
                    devices: Some(p), ..
                }
                | ZoneSource::Simulate {
                    devices: Some(p), ..
                } => DevicesInput::File(InputFile::of(p)?),
                _ => DevicesInput::Builtin("built-in example table".to_owned()),
            },
        },
        version: VERSION.to_owned(),
        note: format!("{DISCLAIMER} Not for clinical use: zone tables are examples and the bioheat model is simplified."),
    };
    Ok(AblationOutcome {
        segmentation: zone_segmentation(&planner_request.tumor, &result)?,
        zone_contours: axial_contours(&result.zone_mask),
        picture,
        report,
    })
}

/// The planner's mode: a device table lookup or a simulation.
fn zone_mode(request: &AblationRequest) -> Result<Mode> {
    Ok(match &request.zone {
        ZoneSource::Simulate {
            applicator,
            criterion,
            device,
            devices,
        } => {
            let table = device_table(devices.as_deref())?;
            let (modality, model, calibration) = match device {
                Some(name) => {
                    let (modality, model, note) = calibration::device_model(&table, name)?;
                    (modality, model, Some(note))
                }
                None => {
                    let (model, note) = calibration::default_model(&table, *applicator);
                    (*applicator, model, note)
                }
            };
            Mode::Simulate {
                modality,
                model,
                calibration,
                power_w: request.power_w,
                minutes: request.minutes,
                criterion: *criterion,
                settings: Settings::default(),
            }
        }
        ZoneSource::Device { name, devices } => {
            let table = device_table(devices.as_deref())?;
            Mode::Device(table.lookup(name, request.power_w, request.minutes)?)
        }
    })
}

/// One warning per flagged heat sink: which side of the tumour its cooling threatens,
/// how much of the margin lies within its reach and the thinnest margin there; with
/// full margin coverage, the caveat that it assumes no cooling.
fn heat_sink_warnings(result: &Plan, margin_mm: f64, simulated: bool) -> Vec<String> {
    let full = result.coverage.coverage_margin_pct >= 99.95;
    result
        .heat_sinks
        .iter()
        .filter(|s| s.flagged)
        .filter_map(|sink| {
            let t = sink.threatened_margin.as_ref()?;
            let thinnest = t
                .min_margin_within_reach_mm
                .map_or("no zone".to_owned(), |m| format!("{m:.1} mm"));
            let model = if simulated {
                "simulated with the vessel as a 37 °C wall, not its flow"
            } else {
                "the table's zone assumes no vessel"
            };
            let mut text = format!(
                "heat sink {} ({:.1} mm wide, {:.1} mm from the tumour) threatens the {} margin: {:.0} % of the {margin_mm} mm margin shell and {:.0} % of the tumour lie within {} mm of it, thinnest margin there {thinnest} ({model}); cooling can shrink the zone on that side",
                sink.name,
                sink.diameter_mm,
                sink.distance_mm,
                t.side,
                t.margin_shell_within_reach_pct,
                t.tumor_within_reach_pct,
                plan::HEAT_SINK_MAX_DISTANCE_MM,
            );
            if full {
                text.push_str(&format!(
                    "; the 100 % margin coverage does not hold if it does (check the {} side on the control scan)",
                    t.side
                ));
            }
            Some(text)
        })
        .collect()
}

/// Peak temperature above which the report says the model is past what it represents
/// well (dried, charring tissue), °C.
pub const CHARRING_WARNING_C: f64 = 150.0;

/// What a simulation's numbers cannot be trusted for: an uncalibrated source model,
/// tissue heated past drying.
fn simulation_warnings(simulation: Option<&SimulationSummary>) -> Vec<String> {
    let Some(sim) = simulation else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    if sim.calibration.is_none() {
        warnings.push(format!(
            "the {:?} source model is not calibrated against any zone table: the simulated zone's size is unvalidated (name a device with a [device.simulation] model, --device)",
            sim.modality
        ).to_lowercase());
    }
    if sim.max_temperature_c > CHARRING_WARNING_C {
        warnings.push(format!(
            "peak simulated temperature {:.0} °C: tissue next to the applicator dried out and may char; vapour transport, charring and tissue contraction are not modelled, so the zone there is less certain",
            sim.max_temperature_c
        ));
    }
    warnings
}

/// A device table from `path`, or the built-in one.
fn device_table(path: Option<&Path>) -> Result<DeviceTable> {
    Ok(match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Error::Io(pinhole_io::Error::new(p, pinhole_io::ErrorKind::Io(e))))?;
            DeviceTable::parse(&text, &p.display().to_string())?
        }
        None => DeviceTable::builtin()?,
    })
}

/// Vessel labels (by the shared vessel names) present on the analysis grid.
fn vessels_present(labels: &Volume<u16>, table: &LabelTable) -> Vec<(u32, String)> {
    let present: std::collections::BTreeSet<u16> = labels.data().iter().copied().collect();
    table
        .iter()
        .filter(|(id, e)| {
            is_vessel(&e.name) && u16::try_from(*id).is_ok_and(|v| present.contains(&v))
        })
        .map(|(id, e)| (id, e.name.clone()))
        .collect()
}

/// `paths[0]` of a needle plan: (entry, target) in LPS mm.
fn best_path(path: &Path) -> Result<(Vec3, Vec3)> {
    let plan = PlanPaths::read(path)?;
    let first = plan
        .paths
        .first()
        .or_invalid(|| format!("{}: the plan has no path", path.display()))?;
    Ok((first.entry_lps, first.target_lps))
}

/// Segments of `zone.seg.nrrd`: id, name, colour.
const SEGMENTS: [(u16, &str, [u8; 3]); 5] = [
    (1, "tumor_ablated", [230, 200, 40]),
    (2, "tumor_not_ablated", [255, 0, 255]),
    (3, "margin_ablated", [60, 200, 220]),
    (4, "margin_not_ablated", [40, 60, 255]),
    (5, "ablation_zone", [230, 60, 40]),
];

/// One label per voxel: tumour / margin shell, each ablated or not, and the rest of the
/// zone.
fn zone_segmentation(tumor: &Mask, plan: &Plan) -> Result<Volume<u16>> {
    let data: Vec<u16> = tumor
        .data()
        .iter()
        .zip(plan.margin_region.data())
        .zip(plan.zone_mask.data())
        .map(|((&t, &m), &z)| match (t, m, z) {
            (true, _, true) => 1,
            (true, _, false) => 2,
            (false, true, true) => 3,
            (false, true, false) => 4,
            (false, false, true) => 5,
            _ => 0,
        })
        .collect();
    Ok(Volume::new(tumor.grid().clone(), data)?)
}

/// The label table of `zone.seg.nrrd`.
fn segment_table() -> LabelTable {
    let mut table = LabelTable::new();
    for (id, name, rgb) in SEGMENTS {
        table.insert(
            u32::from(id),
            LabelEntry {
                name: name.into(),
                color_rgb: Some(rgb),
            },
        );
    }
    table
}

impl AblationOutcome {
    /// The files [`AblationOutcome::write`] puts in its folder.
    pub const FILES: [&'static str; 4] = ["zone.seg.nrrd", "zone.vtk", "zone.png", "ablation.json"];

    /// Writes `zone.seg.nrrd`, `zone.vtk`, `zone.png` and `ablation.json` into `out`.
    pub fn write(&self, out: &Path) -> Result<()> {
        write_folder(out, "ablation.json", &self.report, |out| {
            pinhole_io::segnrrd::write_segmentation(
                &out.join("zone.seg.nrrd"),
                &self.segmentation,
                &segment_table(),
                true,
            )?;
            pinhole_io::vtk::write_polylines(&out.join("zone.vtk"), &self.zone_contours)?;
            write_picture(&out.join("zone.png"), &self.picture)
        })
    }
}

impl AblationReport {
    /// What the terminal shows.
    pub fn summary(&self) -> Vec<String> {
        let threatened: Vec<String> = self
            .heat_sinks
            .iter()
            .filter_map(|s| {
                let t = s.threatened_margin.as_ref()?;
                Some(format!("{} ({} side)", s.name, t.side))
            })
            .collect();
        let caveat = if threatened.is_empty() {
            String::new()
        } else {
            format!(", assuming no cooling by {}", threatened.join(", "))
        };
        let mut lines = vec![
            format!("criterion: {}", self.criterion),
            format!(
                "{} applicator(s); tumour covered {:.1} %, tumour + {} mm margin covered {:.1} %{caveat}",
                self.zones.len(),
                self.coverage_tumor_pct,
                self.margin_mm,
                self.coverage_margin_pct
            ),
        ];
        lines.push(match (self.min_margin_mm, self.thinnest_margin_lps) {
            (Some(m), Some(p)) => format!(
                "minimal ablative margin {m:.1} mm at ({:.1}, {:.1}, {:.1}) LPS",
                p[0], p[1], p[2]
            ),
            _ => "no ablation zone".to_owned(),
        });
        for s in self.heat_sinks.iter().filter(|s| s.flagged) {
            lines.push(format!(
                "heat sink: {} ({:.1} mm wide, {:.1} mm from the tumour)",
                s.name, s.diameter_mm, s.distance_mm
            ));
        }
        if let Some(first) = self.tracks.first() {
            let kept = self.tracks.iter().filter(|t| t.feasible).count();
            lines.push(format!(
                "applicator tracks under the {} rules: {kept} of {} keep them",
                first.procedure,
                self.tracks.len()
            ));
        }
        lines
    }
}
