//! `pinhole plan vessel` and `pinhole measure vessel`: catheter routes and vessel
//! measurements (pinhole-vessel). Not for clinical use.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use pinhole_io::labels::LabelTable;
use pinhole_io::markups::{write_markups, ControlPoint, Markup, MarkupKind};
use pinhole_io::vtk::{write_polylines, PolyLines};
use pinhole_vessel::route::{is_venous, is_vessel};
use pinhole_vessel::{
    analyse, junctions, measure_mask, stations, suggest, suspected_occlusions, vessel_tree,
    CenterlineOptions, Endpoint, RouteOptions, SizingRules, StenosisOptions, VesselMap,
};
use pinhole_volume::{Grid, Volume};
use pinhole_xray::display::{compose_with_organs, draw_line, fluoroscopy_gray, Window};
use pinhole_xray::{Attenuation, CArm, Detector, Integrator, Projection};
use serde_json::json;

use crate::report::DISCLAIMER;

#[derive(Args)]
pub struct PlanVesselArgs {
    /// Vessel label map (NIfTI, NRRD, DICOM SEG-free label volume).
    #[arg(long)]
    labels: PathBuf,
    /// Label names: `totalseg-v2` (default), `totalseg-v1` or a CSV / Slicer colour table.
    #[arg(long)]
    labels_table: Option<String>,
    /// CT in HU on the same patient space: route.png on its DRR, lumen HU along the route.
    #[arg(long)]
    ct: Option<PathBuf>,
    /// Access: `label` or `label:end` (the label's free end), `label:centroid|deepest`,
    /// `x,y,z` (LPS mm) or `narrowest:label`.
    #[arg(long, allow_hyphen_values = true)]
    from: String,
    /// Target, same forms as --from.
    #[arg(long, allow_hyphen_values = true)]
    to: String,
    /// Vessel labels the route may use (default: every artery, or every vein when an
    /// endpoint is a vein, present in the label map).
    #[arg(long, value_delimiter = ',')]
    vessels: Vec<String>,
    /// Point spacing along the route, mm.
    #[arg(long, default_value_t = 1.0)]
    step_mm: f64,
    /// Also extract the whole vessel tree (branches with lengths; slower).
    #[arg(long)]
    tree: bool,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct MeasureVesselArgs {
    /// Vessel label map.
    #[arg(long)]
    labels: PathBuf,
    /// Label names: `totalseg-v2` (default), `totalseg-v1` or a CSV / Slicer colour table.
    #[arg(long)]
    labels_table: Option<String>,
    /// The vessel to measure, by name.
    #[arg(long)]
    label: String,
    /// CT in HU: lumen HU per station and suspected occlusions.
    #[arg(long)]
    ct: Option<PathBuf>,
    /// Station spacing along the centerline, mm.
    #[arg(long, default_value_t = 1.0)]
    step_mm: f64,
    /// NASCET: arc range `a,b` (mm from the centerline start) of normal distal vessel.
    #[arg(long, value_parser = parse_range)]
    nascet_distal_mm: Option<[f64; 2]>,
    /// ECST: estimated original bulb diameter at the stenosis, mm.
    #[arg(long)]
    ecst_bulb_mm: Option<f64>,
    /// Sizing rules (TOML, see crates/vessel/src/sizing.toml; default: the built-in ones).
    #[arg(long)]
    sizing: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

fn parse_range(s: &str) -> Result<[f64; 2], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|t| t.trim().parse::<f64>().map_err(|e| format!("{t:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [a, b] if a.is_finite() && b.is_finite() => Ok([*a, *b]),
        _ => Err(format!("expected a,b in mm, got {s:?}")),
    }
}

fn load_labels(path: &Path) -> anyhow::Result<Volume<u16>> {
    super::load(path, None)?
        .volume
        .to_labels()
        .with_context(|| format!("{} is not a label map", path.display()))
}

fn load_ct(path: &Path) -> anyhow::Result<Volume<f32>> {
    let ct = super::load(path, None)?.volume;
    Ok(pinhole_io::with_volume!(&ct, v => v.map(|x| {
        use pinhole_volume::Voxel;
        x.to_f64() as f32
    })))
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

fn vessel_set(
    args: &PlanVesselArgs,
    labels: &Volume<u16>,
    table: &LabelTable,
) -> anyhow::Result<Vec<(u32, String)>> {
    if !args.vessels.is_empty() {
        return args
            .vessels
            .iter()
            .map(|name| {
                let name = name.trim();
                let id = table.id_of(name).with_context(|| {
                    format!("--vessels: no label named {name:?} in the label table")
                })?;
                Ok((id, name.to_string()))
            })
            .collect();
    }
    let venous = [&args.from, &args.to]
        .iter()
        .filter_map(|s| endpoint_label(s))
        .any(|n| is_venous(&n));
    let set: Vec<(u32, String)> = present_ids(labels)
        .into_iter()
        .filter_map(|id| table.name(id).map(|n| (id, n.to_string())))
        .filter(|(_, n)| is_vessel(n) && is_venous(n) == venous)
        .collect();
    if set.is_empty() {
        bail!(
            "{}: no {} label found (use --vessels and --labels-table)",
            args.labels.display(),
            if venous { "vein" } else { "artery" }
        );
    }
    Ok(set)
}

fn inputs(paths: &[(&str, Option<&Path>)]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (k, p) in paths {
        if let Some(p) = p {
            m.insert((*k).to_string(), json!(p.display().to_string()));
        }
    }
    serde_json::Value::Object(m)
}

/// Lumens thinner than two of the largest voxel spacings are not judged for HU.
fn min_lumen_mm(grid: &Grid) -> f64 {
    2.0 * grid.spacing_mm().into_iter().fold(0.0, f64::max)
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

pub fn plan(args: &PlanVesselArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let labels = load_labels(&args.labels)?;
    let (table_name, table) = super::label_table(args.labels_table.as_deref())?;
    let vessels = vessel_set(args, &labels, &table)?;
    let started = Instant::now();
    let map = VesselMap::new(&labels, vessels.clone())?;
    let opts = RouteOptions {
        centerline: CenterlineOptions {
            step_mm: args.step_mm,
            ..CenterlineOptions::default()
        },
        ..RouteOptions::default()
    };
    let route = map
        .route(&args.from, &args.to, &opts)
        .with_context(|| format!("route from {:?} to {:?}", args.from, args.to))?;
    let junctions = junctions(&map);
    let tree = if args.tree {
        Some(vessel_tree(&map, &opts.centerline, 10.0)?)
    } else {
        None
    };
    let elapsed_s = started.elapsed().as_secs_f64();
    let ct = args.ct.as_deref().map(load_ct).transpose()?;
    // Lumen HU along the route (needs the union mask: sample the label map's vessels).
    let occlusions = ct.as_ref().map(|ct| {
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
    });
    eprintln!(
        "route {:.1} mm through {} ({:.1} s)",
        route.length_mm,
        route.vessels.join(" → "),
        elapsed_s
    );
    let out = &args.out;
    let json = json!({
        "note": DISCLAIMER,
        "version": env!("CARGO_PKG_VERSION"),
        "procedure": "catheter route",
        "inputs": inputs(&[("labels", Some(&args.labels)), ("ct", args.ct.as_deref())]),
        "label_table": table_name,
        "from": args.from,
        "to": args.to,
        "vessel_labels": vessels.iter().map(|v| &v.1).collect::<Vec<_>>(),
        "length_mm": route.length_mm,
        "vessels": route.vessels,
        "min_diameter_mm": route.min_diameter_mm,
        "turning_angle_deg": route.turning_angle_deg,
        "max_curvature_per_mm": route.max_curvature_per_mm,
        "route": route,
        "junctions": junctions,
        "tree": tree.as_ref().map(|t| t.branches.iter().map(|b| json!({
            "parent": b.parent,
            "branch_point_lps": b.branch_point_lps,
            "length_mm": b.length_mm,
            "vessels": b.vessels,
        })).collect::<Vec<_>>()),
        "suspected_occlusions": occlusions,
        "methods": {
            "centerline": "centredness-weighted (length/EDT²) Dijkstra on the 26-connected union of the vessel labels, section-centroid refinement, moving-average smoothing; radius = maximal inscribed sphere",
            "min_diameter": "smallest inscribed-sphere diameter, excluding each end's own sphere",
            "turning_angle": format!("route smoothed over ±{0} mm, direction changes summed every {0} mm", opts.bend_step_mm),
        },
        "elapsed_s": elapsed_s,
    });
    write_json(&out.join("route.json"), &json)?;
    let polylines = PolyLines {
        points_lps: route.points_lps.clone(),
        lines: vec![(0..route.points_lps.len()).collect()],
        point_scalars: vec![
            ("radius_mm".into(), route.radius_mm.clone()),
            ("arc_mm".into(), route.arc_mm.clone()),
        ],
    };
    write_polylines(&out.join("route.vtk"), &polylines)?;
    eprintln!("wrote {}", out.join("route.vtk").display());
    // The curve markup: a control point every 5 mm plus the two ends.
    let every = ((5.0 / args.step_mm).round() as usize).max(1);
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
    let markup = Markup {
        kind: MarkupKind::Curve,
        name: "catheter route".into(),
        points,
        color_rgb: Some([1.0, 0.85, 0.0]),
    };
    write_markups(&out.join("route.mrk.json"), &[markup])?;
    eprintln!("wrote {}", out.join("route.mrk.json").display());
    write_png(
        &out.join("route.png"),
        &labels,
        ct.as_ref(),
        &vessels,
        &table,
        &route.points_lps,
    )?;
    Ok(())
}

/// The route drawn on a frontal projection: the CT's DRR when given, else the
/// projected vessel labels; the vessels in their label colours, the route in yellow.
fn write_png(
    path: &Path,
    labels: &Volume<u16>,
    ct: Option<&Volume<f32>>,
    vessels: &[(u32, String)],
    table: &LabelTable,
    route: &[[f64; 3]],
) -> anyhow::Result<()> {
    let grid: &Grid = ct.map_or(labels.grid(), |c| c.grid());
    let mut carm = CArm::new(grid.center_lps());
    carm.detector = Detector {
        width: 512,
        height: 512,
        pixel_mm: 0.9,
    };
    let projection: Projection = carm.projection()?;
    let ids: Vec<u16> = vessels
        .iter()
        .filter_map(|v| u16::try_from(v.0).ok())
        .collect();
    let gray = match ct {
        Some(ct) => {
            let mu = Attenuation::default().mu_volume(ct);
            let image = pinhole_xray::render(&mu, &projection, Integrator::TrilinearSamples(300));
            fluoroscopy_gray(&image, Window::from_percentiles(&image, 1.0, 99.0))
        }
        None => vec![255u8; projection.width * projection.height],
    };
    let organs: Vec<(u16, [u8; 3])> = ids
        .iter()
        .map(|&id| (id, table.color_of(u32::from(id))))
        .collect();
    let mut rgb = compose_with_organs(&gray, labels, &organs, &projection);
    for w in route.windows(2) {
        if let (Some(a), Some(b)) = (projection.project(w[0]), projection.project(w[1])) {
            for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)] {
                draw_line(
                    &mut rgb,
                    projection.width,
                    projection.height,
                    (a.0 + dx, a.1 + dy),
                    (b.0 + dx, b.1 + dy),
                    [255, 220, 0],
                );
            }
        }
    }
    pinhole_io::png::write_rgb8(
        path,
        projection.width as u32,
        projection.height as u32,
        &rgb,
    )?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

pub fn measure(args: &MeasureVesselArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let labels = load_labels(&args.labels)?;
    let (table_name, table) = super::label_table(args.labels_table.as_deref())?;
    let id = table
        .id_of(&args.label)
        .with_context(|| format!("no label named {:?} in the label table", args.label))?;
    let rules = match &args.sizing {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            SizingRules::parse(&text, &p.display().to_string())?
        }
        None => SizingRules::builtin()?,
    };
    let ct = args.ct.as_deref().map(load_ct).transpose()?;
    let started = Instant::now();
    let mask = labels.map(|v| u32::from(v) == id);
    let opts = CenterlineOptions {
        step_mm: args.step_mm,
        ..CenterlineOptions::default()
    };
    let m = measure_mask(&mask, &args.label, &opts, ct.as_ref())
        .with_context(|| format!("measuring {}", args.label))?;
    let stenosis_opts = StenosisOptions {
        nascet_distal_arc_mm: args.nascet_distal_mm,
        ecst_bulb_diameter_mm: args.ecst_bulb_mm,
        ..StenosisOptions::default()
    };
    let stenosis = analyse(&m.stations, &stenosis_opts);
    let sizing = stenosis.as_ref().map(|s| suggest(&rules, s));
    let occlusions = ct
        .as_ref()
        .map(|_| suspected_occlusions(&m.stations, min_lumen_mm(labels.grid())));
    let elapsed_s = started.elapsed().as_secs_f64();
    let length_mm = m.centerline.length_mm();
    eprintln!(
        "{}: centerline {:.1} mm, {} stations ({:.1} s)",
        args.label,
        length_mm,
        m.stations.len(),
        elapsed_s
    );
    let json = json!({
        "note": DISCLAIMER,
        "version": env!("CARGO_PKG_VERSION"),
        "inputs": inputs(&[("labels", Some(&args.labels)), ("ct", args.ct.as_deref()), ("sizing", args.sizing.as_deref())]),
        "label_table": table_name,
        "label": args.label,
        "label_id": id,
        "length_mm": length_mm,
        "step_mm": args.step_mm,
        "stations": m.stations,
        "stenosis": stenosis,
        "sizing": sizing,
        "sizing_rules": if args.sizing.is_some() { "user file" } else { "built-in (crates/vessel/src/sizing.toml): configurable data, not vendor claims" },
        "suspected_occlusions": occlusions,
        "methods": {
            "d_mis_mm": "maximal inscribed sphere diameter (distance transform)",
            "d_ce_mm": "circle-equivalent diameter 2·sqrt(area/π) of the section perpendicular to the centerline",
            "d_feret_mm": "maximum caliper diameter of the section; d_feret_perp_mm: caliper width perpendicular to it",
            "stenosis": "MLD = smallest station diameter (circle-equivalent; inscribed where the section is not closed) more than one diameter from the ends; reference = mean diameters of the healthy segments proximal and distal to the lesion interpolated to the MLD position (DICOM PS3.17 §T.4 interpolated reference); % = (1 − MLD/reference)·100",
        },
        "elapsed_s": elapsed_s,
    });
    write_json(&args.out.join("measurements.json"), &json)?;
    let s = &m.stations;
    let polylines = PolyLines {
        points_lps: m.centerline.points_lps.clone(),
        lines: vec![(0..s.len()).collect()],
        point_scalars: vec![
            ("radius_mm".into(), m.centerline.radius_mm.clone()),
            ("arc_mm".into(), s.iter().map(|x| x.arc_mm).collect()),
            ("d_ce_mm".into(), s.iter().map(|x| x.d_ce_mm).collect()),
            (
                "d_feret_mm".into(),
                s.iter().map(|x| x.d_feret_mm).collect(),
            ),
            ("area_mm2".into(), s.iter().map(|x| x.area_mm2).collect()),
        ],
    };
    let vtk = args.out.join("centerline.vtk");
    write_polylines(&vtk, &polylines)?;
    eprintln!("wrote {}", vtk.display());
    Ok(())
}
