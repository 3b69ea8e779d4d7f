//! Catheter routes (`pinhole plan vessel`: `route.json` [`RouteReport`], `route.vtk`,
//! `route.mrk.json`, `route.png`) and vessel measurements (`pinhole measure vessel`:
//! `measurements.json` [`MeasureReport`], `centerline.vtk`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use pinhole_io::labels::LabelTable;
use pinhole_io::markups::{write_markups, ControlPoint, Markup, MarkupKind};
use pinhole_io::vtk::{write_polylines, PolyLines};
use pinhole_vessel::route::{is_venous, is_vessel};
pub use pinhole_vessel::DEFAULT_MIN_STENOSIS_PCT;
use pinhole_vessel::{
    analyse, junctions, measure_mask, sizing_decision, stations, suggest, suspected_occlusions,
    vessel_tree, CenterlineOptions, Endpoint, Junction, Route, RouteOptions, SizeRange,
    SizingRules, Station, Stenosis, StenosisOptions, SuspectedOcclusion, VesselMap,
};
use pinhole_volume::{Grid, Vec3, Volume};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, OrInvalid, Result};
use crate::figures::{route_picture, write_picture, RgbPicture};
use crate::inputs::{
    label_table, load_checked_ct, load_labels, load_named_labels_on, scan_edge_warning,
    unnamed_warning, NamedLabels, NotCt, UnnamedLabels,
};
use crate::observe::Observer;
use crate::provenance::recorded_path;
use crate::report::{unversioned, versioned_report, write_folder, Report, DISCLAIMER, VERSION};

/// A catheter route to plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRequest {
    /// Vessel label map.
    pub labels: PathBuf,
    pub labels_table: Option<String>,
    /// CT in HU: `route.png` on its DRR and lumen HU along the route.
    pub ct: Option<PathBuf>,
    /// Access: `label[:end]`, `label:centroid|deepest`, `x,y,z` or `narrowest:label`.
    pub from: String,
    /// Target, same forms.
    pub to: String,
    /// Vessel labels the route may use (empty: every artery, or every vein when an
    /// endpoint is a vein).
    pub vessels: Vec<String>,
    /// Point spacing along the route, mm.
    pub step_mm: f64,
    /// Also extract the whole vessel tree.
    pub tree: bool,
    /// Labelled voxels the table does not name: refuse (default), or go on (a route
    /// only ever uses named vessel labels) with a warning.
    pub unnamed_labels: UnnamedLabels,
    /// A `ct` that does not look like a CT in HU: refuse (default), or go on with a
    /// warning in the report (`--allow-non-ct`).
    pub not_ct: NotCt,
}

impl RouteRequest {
    pub fn new(labels: &Path, from: &str, to: &str) -> Self {
        Self {
            labels: labels.to_path_buf(),
            labels_table: None,
            ct: None,
            from: from.to_owned(),
            to: to.to_owned(),
            vessels: Vec::new(),
            step_mm: 1.0,
            tree: false,
            unnamed_labels: UnnamedLabels::default(),
            not_ct: NotCt::default(),
        }
    }
}

/// Input files of a vessel report (paths as given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VesselInputs {
    pub labels: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ct: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sizing: Option<String>,
}

/// A branch of the vessel tree (`--tree`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TreeBranch {
    pub parent: Option<usize>,
    pub branch_point_lps: Vec3,
    pub length_mm: f64,
    pub vessels: Vec<String>,
}

/// How the route's numbers are computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RouteMethods {
    pub centerline: String,
    pub min_diameter: String,
    pub turning_angle: String,
}

/// `route.json`. The route's points are in `route.points_lps` (the only place).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RouteReport {
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    pub note: String,
    pub version: String,
    pub procedure: String,
    pub inputs: VesselInputs,
    pub label_table: String,
    pub from: String,
    pub to: String,
    /// The labels the route could use.
    pub vessel_labels: Vec<String>,
    /// Summary of `route` (same values).
    pub length_mm: f64,
    pub vessels: Vec<String>,
    pub min_diameter_mm: f64,
    pub turning_angle_deg: f64,
    pub max_curvature_per_mm: f64,
    pub route: Route,
    pub junctions: Vec<Junction>,
    pub tree: Option<Vec<TreeBranch>>,
    /// Low-HU runs along the route (with a CT).
    pub suspected_occlusions: Option<Vec<SuspectedOcclusion>>,
    pub methods: RouteMethods,
    pub elapsed_s: f64,
    /// What the route could not use or check (also shown on the terminal).
    #[serde(default)]
    pub warnings: Vec<String>,
}

versioned_report!(RouteReport, "vessel-route", 1);

/// A route with its picture.
#[derive(Debug, Clone)]
pub struct RouteOutcome {
    pub report: RouteReport,
    /// The route on a frontal projection (the CT's DRR, else the vessel labels).
    pub picture: RgbPicture,
    step_mm: f64,
}

/// Plans a catheter route.
pub fn plan_route(request: &RouteRequest, observer: &dyn Observer) -> Result<RouteOutcome> {
    // The CT first: a refused one stops the run before the route search.
    let (ct, not_ct_warning) = checked_ct(request.ct.as_deref(), request.not_ct, observer)?;
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
        ct.as_ref().map(Volume::grid),
        observer,
    )?;
    let mut warnings: Vec<String> = not_ct_warning.into_iter().collect();
    warnings.extend(label_warnings);
    if !unnamed.is_empty() {
        let warning = unnamed_warning(
            &unnamed,
            "the route never enters them (it only follows named vessel labels); if one is a vessel, the route may miss a shorter way",
        );
        observer.warn(&warning);
        warnings.push(warning);
    }
    let vessels = vessel_set(request, &labels, &table)?;
    let started = Instant::now();
    let map = VesselMap::new(&labels, vessels.clone())?;
    let opts = RouteOptions {
        centerline: CenterlineOptions {
            step_mm: request.step_mm,
            ..CenterlineOptions::default()
        },
        ..RouteOptions::default()
    };
    let route = map
        .route(&request.from, &request.to, &opts)
        .with_context(|| format!("route from {:?} to {:?}", request.from, request.to))?;
    for (role, name) in [
        ("access vessel", route.vessels.first()),
        ("target vessel", route.vessels.last()),
    ] {
        let Some(id) = name.and_then(|n| table.id_of(n)) else {
            continue;
        };
        let sides = labels.scan_edges_where(|v| u32::from(v) == id);
        let what = format!("{role} {}", name.map_or("", String::as_str));
        if let Some(warning) = scan_edge_warning(&what, &sides) {
            observer.warn(&warning);
            warnings.push(warning);
        }
    }
    let junctions = junctions(&map);
    let tree = if request.tree {
        let tree = vessel_tree(&map, &opts.centerline, 10.0)?;
        Some(tree.branches.iter().map(tree_branch).collect())
    } else {
        None
    };
    let elapsed_s = started.elapsed().as_secs_f64();
    let occlusions = ct
        .as_ref()
        .map(|ct| route_occlusions(&labels, &vessels, &route, ct));
    observer.info(&format!(
        "route {:.1} mm through {} ({:.1} s)",
        route.length_mm,
        route.vessels.join(" → "),
        elapsed_s
    ));
    let picture = route_picture(&labels, ct.as_ref(), &vessels, &table, &route.points_lps)?;
    let report = RouteReport {
        schema_version: RouteReport::SCHEMA_VERSION,
        warnings,
        note: DISCLAIMER.to_owned(),
        version: VERSION.to_owned(),
        procedure: "catheter route".to_owned(),
        inputs: VesselInputs {
            labels: recorded_path(&request.labels),
            ct: request.ct.as_deref().map(recorded_path),
            sizing: None,
        },
        label_table: table_name,
        from: request.from.clone(),
        to: request.to.clone(),
        vessel_labels: vessels.iter().map(|v| v.1.clone()).collect(),
        length_mm: route.length_mm,
        vessels: route.vessels.clone(),
        min_diameter_mm: route.min_diameter_mm,
        turning_angle_deg: route.turning_angle_deg,
        max_curvature_per_mm: route.max_curvature_per_mm,
        route,
        junctions,
        tree,
        suspected_occlusions: occlusions,
        methods: RouteMethods {
            centerline: "centredness-weighted (length/EDT²) Dijkstra on the 26-connected union of the vessel labels, section-centroid refinement, moving-average smoothing; radius = maximal inscribed sphere".to_owned(),
            min_diameter: "smallest inscribed-sphere diameter, excluding each end's own sphere".to_owned(),
            turning_angle: format!("route smoothed over ±{0} mm, direction changes summed every {0} mm", opts.bend_step_mm),
        },
        elapsed_s,
    };
    Ok(RouteOutcome {
        report,
        picture,
        step_mm: request.step_mm,
    })
}

fn tree_branch(b: &pinhole_vessel::Branch) -> TreeBranch {
    TreeBranch {
        parent: b.parent,
        branch_point_lps: b.branch_point_lps,
        length_mm: b.length_mm,
        vessels: b.vessels.clone(),
    }
}

/// Low-HU runs along the route (sampled in the union of the route's vessel labels).
fn route_occlusions(
    labels: &Volume<u16>,
    vessels: &[(u32, String)],
    route: &Route,
    ct: &Volume<f32>,
) -> Vec<SuspectedOcclusion> {
    let ids: Vec<u16> = vessels
        .iter()
        .filter_map(|v| u16::try_from(v.0).ok())
        .collect();
    let union = labels.map(|v| v != 0 && ids.contains(&v));
    let line = pinhole_vessel::Centerline {
        points_lps: route.points_lps.clone(),
        radius_mm: route.radius_mm.clone(),
    };
    suspected_occlusions(
        &stations(&union, &line, Some(ct)),
        min_lumen_mm(labels.grid()),
    )
}

impl RouteOutcome {
    /// The files [`RouteOutcome::write`] puts in its folder (the report last).
    pub const FILES: [&'static str; 4] = ["route.vtk", "route.mrk.json", "route.png", "route.json"];

    /// Writes `route.json`, `route.vtk`, `route.mrk.json` and `route.png` into `out`.
    pub fn write(&self, out: &Path, observer: &dyn Observer) -> Result<()> {
        let route = &self.report.route;
        let written = Self::FILES;
        write_folder(out, written[3], &self.report, |out| {
            let polylines = PolyLines {
                points_lps: route.points_lps.clone(),
                lines: vec![(0..route.points_lps.len()).collect()],
                point_scalars: vec![
                    ("radius_mm".into(), route.radius_mm.clone()),
                    ("arc_mm".into(), route.arc_mm.clone()),
                ],
            };
            write_polylines(&out.join(written[0]), &polylines)?;
            write_markups(&out.join(written[1]), &[route_markup(route, self.step_mm)])?;
            write_picture(&out.join(written[2]), &self.picture)
        })?;
        for name in written {
            observer.info(&format!("wrote {}", out.join(name).display()));
        }
        Ok(())
    }
}

/// The route as a Slicer curve: a control point every 5 mm plus the two ends.
pub fn route_markup(route: &Route, step_mm: f64) -> Markup {
    let every = ((5.0 / step_mm).round() as usize).max(1);
    let n = route.points_lps.len();
    let points: Vec<ControlPoint> = (0..n)
        .filter(|&i| i % every == 0 || i + 1 == n)
        .map(|i| {
            let label = if i == 0 {
                "access".to_string()
            } else if i + 1 == n {
                "target".to_string()
            } else {
                format!("{:.0} mm", route.arc_mm[i])
            };
            ControlPoint::new(label, route.points_lps[i])
        })
        .collect();
    Markup {
        kind: MarkupKind::Curve,
        name: "catheter route".into(),
        points,
        color_rgb: Some([1.0, 0.85, 0.0]),
    }
}

/// Ids present in a label map.
fn present_ids(labels: &Volume<u16>) -> Vec<u32> {
    let mut seen = vec![false; 65536];
    for &v in labels.data() {
        seen[v as usize] = true;
    }
    (1..65536u32).filter(|&i| seen[i as usize]).collect()
}

/// The label name an endpoint refers to, if any.
fn endpoint_label(spec: &str) -> Option<String> {
    match spec.parse::<Endpoint>().ok()? {
        Endpoint::LabelEnd(n) | Endpoint::Narrowest(n) => Some(n),
        Endpoint::LabelPoint(pinhole_volume::TargetSpec::Label { name, .. }) => Some(name),
        _ => None,
    }
}

/// The vessel labels a route may use: the requested ones, else every artery (every vein
/// when an endpoint is a vein) present in the label map.
fn vessel_set(
    request: &RouteRequest,
    labels: &Volume<u16>,
    table: &LabelTable,
) -> Result<Vec<(u32, String)>> {
    if !request.vessels.is_empty() {
        return request
            .vessels
            .iter()
            .map(|name| {
                let name = name.trim();
                let id = table.id_of(name).or_invalid(|| {
                    format!("--vessels: no label named {name:?} in the label table")
                })?;
                Ok((id, name.to_string()))
            })
            .collect();
    }
    let venous = [&request.from, &request.to]
        .iter()
        .filter_map(|s| endpoint_label(s))
        .any(|n| is_venous(&n));
    let set: Vec<(u32, String)> = present_ids(labels)
        .into_iter()
        .filter_map(|id| table.name(id).map(|n| (id, n.to_string())))
        .filter(|(_, n)| is_vessel(n) && is_venous(n) == venous)
        .collect();
    if set.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no {} label found (use --vessels and --labels-table)",
            request.labels.display(),
            if venous { "vein" } else { "artery" }
        )));
    }
    Ok(set)
}

/// The optional CT, checked to look like one ([`crate::inputs::check_ct`]), with the
/// report's warning when the check was overridden.
fn checked_ct(
    path: Option<&Path>,
    policy: NotCt,
    observer: &dyn Observer,
) -> Result<(Option<Volume<f32>>, Option<String>)> {
    let Some(path) = path else {
        return Ok((None, None));
    };
    let (ct, warning) = load_checked_ct(path, policy, observer)?;
    Ok((Some(ct), warning))
}

/// Lumens thinner than two of the largest voxel spacings are not judged for HU.
fn min_lumen_mm(grid: &Grid) -> f64 {
    2.0 * grid.spacing_mm().into_iter().fold(0.0, f64::max)
}

/// One vessel to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasureRequest {
    pub labels: PathBuf,
    pub labels_table: Option<String>,
    /// The vessel, by name.
    pub label: String,
    /// CT in HU: lumen HU per station and suspected occlusions.
    pub ct: Option<PathBuf>,
    /// Station spacing along the centerline, mm.
    pub step_mm: f64,
    /// NASCET: arc range (mm from the centerline start) of normal distal vessel.
    pub nascet_distal_mm: Option<[f64; 2]>,
    /// ECST: estimated original bulb diameter at the stenosis, mm.
    pub ecst_bulb_mm: Option<f64>,
    /// Sizing rules (TOML); default: the built-in ones.
    pub sizing: Option<PathBuf>,
    /// Stenosis (%) from which sizes are proposed
    /// ([`pinhole_vessel::DEFAULT_MIN_STENOSIS_PCT`]).
    pub sizing_min_stenosis_pct: f64,
    /// A `ct` that does not look like a CT in HU: refuse (default), or go on with a
    /// warning in the report (`--allow-non-ct`).
    pub not_ct: NotCt,
}

impl MeasureRequest {
    pub fn new(labels: &Path, label: &str) -> Self {
        Self {
            labels: labels.to_path_buf(),
            labels_table: None,
            label: label.to_owned(),
            ct: None,
            step_mm: 1.0,
            nascet_distal_mm: None,
            ecst_bulb_mm: None,
            sizing: None,
            sizing_min_stenosis_pct: DEFAULT_MIN_STENOSIS_PCT,
            not_ct: NotCt::default(),
        }
    }
}

/// How the measurements are defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MeasureMethods {
    pub d_mis_mm: String,
    pub d_ce_mm: String,
    pub d_feret_mm: String,
    pub stenosis: String,
}

/// `measurements.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MeasureReport {
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    pub note: String,
    pub version: String,
    pub inputs: VesselInputs,
    pub label_table: String,
    pub label: String,
    pub label_id: u32,
    pub length_mm: f64,
    pub step_mm: f64,
    pub stations: Vec<Station>,
    pub stenosis: Option<Stenosis>,
    /// Balloon / stent size ranges, only for a significant stenosis (see `sizing_status`).
    pub sizing: Option<Vec<SizeRange>>,
    /// Stenosis (%) from which sizes are proposed.
    #[serde(default)]
    pub sizing_threshold_pct: f64,
    /// Whether sizes were proposed, and why ("no significant stenosis: …").
    #[serde(default)]
    pub sizing_status: String,
    pub sizing_rules: String,
    pub suspected_occlusions: Option<Vec<SuspectedOcclusion>>,
    pub methods: MeasureMethods,
    pub elapsed_s: f64,
    /// What the measurements must be read with (an overridden CT check); absent when
    /// none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

versioned_report!(MeasureReport, "vessel-measurements", 1);

/// Measurements with the centerline they were taken on.
#[derive(Debug, Clone)]
pub struct MeasureOutcome {
    pub report: MeasureReport,
    /// Centerline points with radius, one per station.
    pub centerline: pinhole_vessel::Centerline,
}

/// Measures one vessel label.
pub fn measure(request: &MeasureRequest, observer: &dyn Observer) -> Result<MeasureOutcome> {
    let labels = load_labels(&request.labels, observer)?;
    let (table_name, table) = label_table(request.labels_table.as_deref())?;
    let id = table
        .id_of(&request.label)
        .or_invalid(|| format!("no label named {:?} in the label table", request.label))?;
    let rules = match &request.sizing {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Error::Io(pinhole_io::Error::new(p, pinhole_io::ErrorKind::Io(e))))?;
            SizingRules::parse(&text, &p.display().to_string())?
        }
        None => SizingRules::builtin()?,
    };
    let (ct, not_ct_warning) = checked_ct(request.ct.as_deref(), request.not_ct, observer)?;
    let started = Instant::now();
    let mask = labels.map(|v| u32::from(v) == id);
    let opts = CenterlineOptions {
        step_mm: request.step_mm,
        ..CenterlineOptions::default()
    };
    let m = measure_mask(&mask, &request.label, &opts, ct.as_ref())
        .with_context(|| format!("measuring {}", request.label))?;
    let stenosis_opts = StenosisOptions {
        nascet_distal_arc_mm: request.nascet_distal_mm,
        ecst_bulb_diameter_mm: request.ecst_bulb_mm,
        ..StenosisOptions::default()
    };
    let stenosis = analyse(&m.stations, &stenosis_opts);
    let decision = sizing_decision(stenosis.as_ref(), request.sizing_min_stenosis_pct);
    let sizing = stenosis
        .as_ref()
        .filter(|_| decision.propose)
        .map(|s| suggest(&rules, s));
    observer.info(&format!("sizing: {}", decision.status));
    let occlusions = ct
        .as_ref()
        .map(|_| suspected_occlusions(&m.stations, min_lumen_mm(labels.grid())));
    let elapsed_s = started.elapsed().as_secs_f64();
    let length_mm = m.centerline.length_mm();
    observer.info(&format!(
        "{}: centerline {:.1} mm, {} stations ({:.1} s)",
        request.label,
        length_mm,
        m.stations.len(),
        elapsed_s
    ));
    let report = MeasureReport {
        schema_version: MeasureReport::SCHEMA_VERSION,
        note: DISCLAIMER.to_owned(),
        version: VERSION.to_owned(),
        inputs: VesselInputs {
            labels: recorded_path(&request.labels),
            ct: request.ct.as_deref().map(recorded_path),
            sizing: request.sizing.as_deref().map(recorded_path),
        },
        label_table: table_name,
        label: request.label.clone(),
        label_id: id,
        length_mm,
        step_mm: request.step_mm,
        stations: m.stations,
        stenosis,
        sizing,
        sizing_threshold_pct: request.sizing_min_stenosis_pct,
        sizing_status: decision.status,
        sizing_rules: if request.sizing.is_some() {
            "user file"
        } else {
            "built-in (crates/vessel/src/sizing.toml): configurable data, not vendor claims"
        }
        .to_owned(),
        suspected_occlusions: occlusions,
        methods: MeasureMethods {
            d_mis_mm: "maximal inscribed sphere diameter (distance transform)".to_owned(),
            d_ce_mm: "circle-equivalent diameter 2·sqrt(area/π) of the section perpendicular to the centerline".to_owned(),
            d_feret_mm: "maximum caliper diameter of the section; d_feret_perp_mm: caliper width perpendicular to it".to_owned(),
            stenosis: "MLD = smallest station diameter (circle-equivalent; inscribed where the section is not closed) more than one diameter from the ends; reference = mean diameters of the healthy segments proximal and distal to the lesion interpolated to the MLD position (DICOM PS3.17 §T.4 interpolated reference); % = (1 − MLD/reference)·100".to_owned(),
        },
        elapsed_s,
        warnings: not_ct_warning.into_iter().collect(),
    };
    Ok(MeasureOutcome {
        report,
        centerline: m.centerline,
    })
}

impl MeasureOutcome {
    /// The files [`MeasureOutcome::write`] puts in its folder.
    pub const FILES: [&'static str; 2] = ["measurements.json", "centerline.vtk"];

    /// Writes `measurements.json` and `centerline.vtk` into `out`.
    pub fn write(&self, out: &Path, observer: &dyn Observer) -> Result<()> {
        let json = out.join("measurements.json");
        let vtk = out.join("centerline.vtk");
        write_folder(out, "measurements.json", &self.report, |_| {
            Ok(write_polylines(&vtk, &self.centerline_polylines())?)
        })?;
        observer.info(&format!("wrote {}", json.display()));
        observer.info(&format!("wrote {}", vtk.display()));
        Ok(())
    }

    /// The centerline with its per-station measurements as point scalars.
    fn centerline_polylines(&self) -> PolyLines {
        let s = &self.report.stations;
        PolyLines {
            points_lps: self.centerline.points_lps.clone(),
            lines: vec![(0..s.len()).collect()],
            point_scalars: vec![
                ("radius_mm".into(), self.centerline.radius_mm.clone()),
                ("arc_mm".into(), s.iter().map(|x| x.arc_mm).collect()),
                ("d_ce_mm".into(), s.iter().map(|x| x.d_ce_mm).collect()),
                (
                    "d_feret_mm".into(),
                    s.iter().map(|x| x.d_feret_mm).collect(),
                ),
                ("area_mm2".into(), s.iter().map(|x| x.area_mm2).collect()),
            ],
        }
    }
}
