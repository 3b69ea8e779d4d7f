//! `pinhole plan ablation`: ablation zone(s) for a tumour from a device table or a
//! bioheat simulation, coverage with margin, heat sinks; ablation.json, zone.seg.nrrd,
//! zone.vtk, zone.png.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use pinhole_ablation::bioheat::{Settings, Tissue};
use pinhole_ablation::damage::Criterion;
use pinhole_ablation::devices::{DeviceTable, Modality};
use pinhole_ablation::plan::{self, analysis_grid, is_vessel_name, labels_on, Mode, Plan, Request};
use pinhole_io::labels::{LabelEntry, LabelTable};
use pinhole_io::vtk::PolyLines;
use pinhole_volume::target::{sphere_mask, TargetSpec};
use pinhole_volume::{Interpolation, Mask, Vec3, Volume};
use serde_json::json;

use super::{label_table, load};
use crate::report::{input_record, DISCLAIMER};

#[derive(Args)]
pub struct AblationArgs {
    /// CT in HU (NIfTI, NRRD or a DICOM folder).
    #[arg(long)]
    ct: PathBuf,
    /// Label map (organs and vessels), e.g. TotalSegmentator output.
    #[arg(long)]
    labels: PathBuf,
    /// Label names: totalseg-v2 (default), totalseg-v1, a CSV or a Slicer colour table.
    #[arg(long)]
    labels_table: Option<String>,
    /// Tumour: a label name (`liver_tumor`), or a sphere `x,y,z,r` in LPS mm.
    #[arg(long, allow_hyphen_values = true)]
    tumor: String,
    /// Safety margin around the tumour, mm.
    #[arg(long, default_value_t = 5.0)]
    margin_mm: f64,
    /// Device from the zone table (see --devices).
    #[arg(
        long,
        required_unless_present = "simulate",
        conflicts_with = "simulate"
    )]
    device: Option<String>,
    /// Simulate the zone with the Pennes bioheat model instead of a table.
    #[arg(long)]
    simulate: bool,
    /// Power, W.
    #[arg(long)]
    power: f64,
    /// Heating time, minutes.
    #[arg(long)]
    minutes: f64,
    /// A needle plan (plan.json): the applicator follows `paths[0]` (entry → target).
    #[arg(long)]
    path: Option<PathBuf>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Device zone table (TOML) instead of the built-in example table.
    #[arg(long)]
    devices: Option<PathBuf>,
    /// Damage criterion for --simulate: arrhenius (Omega >= 1) or cem43 (>= 240 min).
    #[arg(long, default_value = "arrhenius")]
    criterion: Criterion,
    /// Applicator for --simulate: microwave or laser.
    #[arg(long, default_value = "microwave", value_parser = parse_modality)]
    applicator: Modality,
    /// Analysis (and simulation) grid spacing, mm (isotropic).
    #[arg(long, default_value_t = 1.0)]
    grid_mm: f64,
    /// Most applicators to propose when one zone cannot cover tumour + margin.
    #[arg(long, default_value_t = 3)]
    max_applicators: usize,
}

fn parse_modality(s: &str) -> Result<Modality, String> {
    match s {
        "microwave" => Ok(Modality::Microwave),
        "laser" => Ok(Modality::Laser),
        other => Err(format!("--applicator {other:?}: microwave or laser")),
    }
}

pub fn run(args: &AblationArgs) -> anyhow::Result<()> {
    if !(args.margin_mm.is_finite() && args.margin_mm >= 0.0) {
        bail!("--margin-mm must be >= 0, got {}", args.margin_mm);
    }
    let spec: TargetSpec = args.tumor.parse()?;
    let (table_name, table) = label_table(args.labels_table.as_deref())?;
    let ct = load(&args.ct, None)?.volume.to_f32();
    let labels_loaded = load(&args.labels, None)?;
    let labels = labels_loaded
        .volume
        .to_labels()
        .with_context(|| format!("{} is not a label map", args.labels.display()))?;
    let target = spec
        .resolve(&labels, |name| table.id_of(name))
        .with_context(|| format!("tumour {:?}", args.tumor))?;

    let mode = if args.simulate {
        Mode::Simulate {
            modality: args.applicator,
            power_w: args.power,
            minutes: args.minutes,
            criterion: args.criterion,
            settings: Settings::default(),
        }
    } else {
        let devices = match &args.devices {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading device table {}", p.display()))?;
                DeviceTable::parse(&text, &p.display().to_string())?
            }
            None => DeviceTable::builtin()?,
        };
        let name = args.device.as_deref().unwrap_or_default();
        Mode::Device(devices.lookup(name, args.power, args.minutes)?)
    };

    // Analysis grid: isotropic, around the tumour, with room for zones (and, when
    // simulating, several perfusion lengths to the 37 °C faces).
    let pad_mm = args.margin_mm + if args.simulate { 40.0 } else { 25.0 };
    let grid = analysis_grid(&target.region, pad_mm, args.grid_mm)?;
    let tumor = match spec {
        TargetSpec::Sphere {
            center_lps,
            radius_mm,
        } => sphere_mask(&grid, center_lps, radius_mm),
        _ => target.region.resample(&grid, Interpolation::Nearest, false),
    };
    let labels_grid = labels_on(&grid, &labels);
    let present: std::collections::BTreeSet<u16> = labels_grid.data().iter().copied().collect();
    let vessels: Vec<(u32, String)> = table
        .iter()
        .filter(|(id, e)| {
            is_vessel_name(&e.name) && u16::try_from(*id).is_ok_and(|v| present.contains(&v))
        })
        .map(|(id, e)| (id, e.name.clone()))
        .collect();
    let path = match &args.path {
        Some(p) => Some(read_path(p)?),
        None => None,
    };
    let other = Tissue {
        name: "other soft tissue (liver values)".into(),
        ..Tissue::liver()
    };
    let request = Request {
        labels: labels_grid,
        tumor,
        margin_mm: args.margin_mm,
        vessels,
        liver_id: table.id_of("liver"),
        liver: Tissue::liver(),
        other_tissue: other,
        path,
        mode: mode.clone(),
        max_applicators: args.max_applicators,
    };
    let result = plan::plan(&request)?;

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_segmentation(&args.out.join("zone.seg.nrrd"), &request.tumor, &result)?;
    write_zone_vtk(&args.out.join("zone.vtk"), &result.zone_mask)?;
    write_png(&args.out.join("zone.png"), &ct, &request.tumor, &result)?;

    let report = json!({
        "procedure": "thermal ablation",
        "mode": if args.simulate { "simulate" } else { "device" },
        "criterion": result.criterion,
        "device": match &mode { Mode::Device(l) => serde_json::to_value(l)?, _ => serde_json::Value::Null },
        "power_w": args.power,
        "minutes": args.minutes,
        "tumor": {
            "spec": args.tumor,
            "description": target.description,
            "volume_ml": result.coverage.tumor_volume_ml,
            "point_lps": target.point_lps,
        },
        "margin_mm": args.margin_mm,
        "zones": result.zones,
        "applicator_count": result.zones.len(),
        "covered_margin_fraction_by_applicator_count": result.covered_fraction_by_count,
        "zone_volume_ml": result.coverage.zone_volume_ml,
        "coverage_tumor_pct": result.coverage.coverage_tumor_pct,
        "coverage_margin_pct": result.coverage.coverage_margin_pct,
        "min_margin_mm": result.coverage.min_margin_mm,
        "thinnest_margin_lps": result.coverage.thinnest_margin_lps,
        "margin_method": "signed Euclidean distance transform of the zone on the analysis grid, half-voxel corrected, minimum over tumour voxels (positive = inside the zone)",
        "heat_sinks": result.heat_sinks,
        "heat_sink_rule": format!(
            "labelled vessels >= {} mm diameter within {} mm of the tumour are flagged",
            plan::HEAT_SINK_MIN_DIAMETER_MM, plan::HEAT_SINK_MAX_DISTANCE_MM
        ),
        "simulation": result.simulation,
        "analysis_grid": {
            "dims": grid.dims(),
            "spacing_mm": grid.spacing_mm(),
            "origin_lps": grid.origin_lps(),
            "direction": grid.direction(),
        },
        "outputs": {
            "segmentation": "zone.seg.nrrd",
            "zone_surface": "zone.vtk",
            "image": "zone.png",
        },
        "inputs": {
            "ct": input_record(&args.ct)?,
            "labels": input_record(&args.labels)?,
            "labels_table": table_name,
            "path": match &args.path { Some(p) => input_record(p)?, None => serde_json::Value::Null },
            "devices": match &args.devices { Some(p) => input_record(p)?, None => json!("built-in example table") },
        },
        "version": env!("CARGO_PKG_VERSION"),
        "note": format!("{DISCLAIMER} Not for clinical use: zone tables are examples and the bioheat model is simplified."),
    });
    let json_path = args.out.join("ablation.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;

    let c = &result.coverage;
    println!("criterion: {}", result.criterion);
    println!(
        "{} applicator(s); tumour covered {:.1} %, tumour + {} mm margin covered {:.1} %",
        result.zones.len(),
        c.coverage_tumor_pct,
        args.margin_mm,
        c.coverage_margin_pct
    );
    match (c.min_margin_mm, c.thinnest_margin_lps) {
        (Some(m), Some(p)) => println!(
            "minimal ablative margin {m:.1} mm at ({:.1}, {:.1}, {:.1}) LPS",
            p[0], p[1], p[2]
        ),
        _ => println!("no ablation zone"),
    }
    for s in result.heat_sinks.iter().filter(|s| s.flagged) {
        println!(
            "heat sink: {} ({:.1} mm wide, {:.1} mm from the tumour)",
            s.name, s.diameter_mm, s.distance_mm
        );
    }
    println!("wrote {}", args.out.display());
    println!("{DISCLAIMER}");
    Ok(())
}

/// `paths[0]` of a needle plan: (entry, target) in LPS mm.
fn read_path(path: &Path) -> anyhow::Result<(Vec3, Vec3)> {
    let (_, paths) = super::read_plan_paths(path)?;
    let first = paths
        .first()
        .with_context(|| format!("{}: the plan has no path", path.display()))?;
    Ok((first.entry_lps, first.target_lps))
}

const SEGMENTS: [(u16, &str, [u8; 3]); 5] = [
    (1, "tumor_ablated", [230, 200, 40]),
    (2, "tumor_not_ablated", [255, 0, 255]),
    (3, "margin_ablated", [60, 200, 220]),
    (4, "margin_not_ablated", [40, 60, 255]),
    (5, "ablation_zone", [230, 60, 40]),
];

/// One label per voxel: tumour / margin shell, each ablated or not, and the rest of the zone.
fn write_segmentation(path: &Path, tumor: &Mask, plan: &Plan) -> anyhow::Result<()> {
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
    let labels = Volume::new(tumor.grid().clone(), data)?;
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
    pinhole_io::segnrrd::write_segmentation(path, &labels, &table, true)
        .with_context(|| format!("writing {}", path.display()))
}

/// Zone boundary as contour lines on every axial slice (marching squares at 0.5), LPS.
fn write_zone_vtk(path: &Path, zone: &Mask) -> anyhow::Result<()> {
    let grid = zone.grid();
    let [nx, ny, nz] = grid.dims();
    let at = |i: usize, j: usize, k: usize| zone.data()[i + nx * (j + ny * k)];
    let mut lines = PolyLines::default();
    for k in 0..nz {
        for j in 0..ny.saturating_sub(1) {
            for i in 0..nx.saturating_sub(1) {
                let c = [
                    at(i, j, k),
                    at(i + 1, j, k),
                    at(i + 1, j + 1, k),
                    at(i, j + 1, k),
                ];
                if c.iter().all(|&b| b == c[0]) {
                    continue;
                }
                // Edge midpoints (index space) where the corners differ, in edge order.
                let corners = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)];
                let mut cross = Vec::with_capacity(4);
                for e in 0..4 {
                    if c[e] != c[(e + 1) % 4] {
                        let (a, b) = (corners[e], corners[(e + 1) % 4]);
                        cross.push([
                            i as f64 + (a.0 + b.0) / 2.0,
                            j as f64 + (a.1 + b.1) / 2.0,
                            k as f64,
                        ]);
                    }
                }
                let pairs: &[(usize, usize)] = if cross.len() == 4 {
                    &[(0, 1), (2, 3)]
                } else {
                    &[(0, 1)]
                };
                for &(a, b) in pairs {
                    let n = lines.points_lps.len();
                    lines.points_lps.push(grid.index_to_world(cross[a]));
                    lines.points_lps.push(grid.index_to_world(cross[b]));
                    lines.lines.push(vec![n, n + 1]);
                }
            }
        }
    }
    pinhole_io::vtk::write_polylines(path, &lines)
        .with_context(|| format!("writing {}", path.display()))
}

/// CT slice through the (first) applicator axis: soft-tissue window, outlines of the
/// tumour (yellow), tumour + margin (cyan), zone (red), applicator axes (green).
fn write_png(path: &Path, ct: &Volume<f32>, tumor: &Mask, plan: &Plan) -> anyhow::Result<()> {
    let Some(first) = plan.zones.first() else {
        bail!("no zone to draw");
    };
    let axis = first.axis_lps;
    // In-plane direction across the axis: the LPS axis most perpendicular to it.
    let helper = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
        .into_iter()
        .min_by(|a, b| dot(*a, axis).abs().total_cmp(&dot(*b, axis).abs()))
        .unwrap_or([1.0, 0.0, 0.0]);
    let across = normalise(sub(helper, scale(axis, dot(helper, axis))));
    let centre = first.center_lps;
    let (size, pixel_mm) = (320usize, 0.4);
    let half = size as f64 * pixel_mm / 2.0;
    let world = |r: usize, c: usize| -> Vec3 {
        let u = -half + (c as f64 + 0.5) * pixel_mm;
        let v = -half + (r as f64 + 0.5) * pixel_mm;
        add(centre, add(scale(across, u), scale(axis, v)))
    };
    let mut rgb = vec![0u8; size * size * 3];
    let mut masks = vec![[false; 3]; size * size];
    for r in 0..size {
        for c in 0..size {
            let p = world(r, c);
            let hu = ct.sample_trilinear(p).unwrap_or(-1000.0);
            let g = (((hu - (40.0 - 200.0)) / 400.0).clamp(0.0, 1.0) * 255.0) as u8;
            let o = (r * size + c) * 3;
            rgb[o..o + 3].copy_from_slice(&[g, g, g]);
            masks[r * size + c] = [
                tumor.sample_nearest(p).unwrap_or(false),
                plan.margin_region.sample_nearest(p).unwrap_or(false),
                plan.zone_mask.sample_nearest(p).unwrap_or(false),
            ];
        }
    }
    let colours = [[255u8, 220, 0], [0, 220, 255], [255, 40, 40]];
    for r in 1..size - 1 {
        for c in 1..size - 1 {
            for (m, colour) in colours.iter().enumerate() {
                let here = masks[r * size + c][m];
                let edge = here
                    && [(r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)]
                        .iter()
                        .any(|&(rr, cc)| !masks[rr * size + cc][m]);
                if edge {
                    let o = (r * size + c) * 3;
                    rgb[o..o + 3].copy_from_slice(colour);
                }
            }
        }
    }
    // Applicator shafts: from the tip back along the axis, projected onto the plane.
    for z in &plan.zones {
        for s in 0..(3.0 * half / pixel_mm) as usize {
            let p = sub(z.tip_lps, scale(axis, s as f64 * pixel_mm));
            let d = sub(p, centre);
            let c = ((dot(d, across) + half) / pixel_mm).floor();
            let r = ((dot(d, axis) + half) / pixel_mm).floor();
            if (0.0..size as f64).contains(&c) && (0.0..size as f64).contains(&r) {
                let o = (r as usize * size + c as usize) * 3;
                rgb[o..o + 3].copy_from_slice(&[40, 255, 40]);
            }
        }
    }
    pinhole_io::png::write_rgb8(path, size as u32, size as u32, &rgb)
        .with_context(|| format!("writing {}", path.display()))
}

fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn scale(a: Vec3, s: f64) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}
fn normalise(a: Vec3) -> Vec3 {
    let n = dot(a, a).sqrt().max(1e-12);
    scale(a, 1.0 / n)
}
