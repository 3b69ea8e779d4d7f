//! `pinhole plan needle`: straight-needle paths from the skin to a target, per procedure
//! profile, written as plan.json, Slicer lines, a skin accessibility map and a picture.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use pinhole_io::labels::LabelTable;
use pinhole_io::markups::{write_markups, ControlPoint, Markup, MarkupKind};
use pinhole_io::vtk::{write_polylines, PolyLines};
use pinhole_plan_needle::{render, Plan, PlanOptions, PlanningContext, Profile};
use pinhole_volume::TargetSpec;
use serde_json::json;

use crate::progress::Progress;
use crate::report::{sha256_of, DISCLAIMER};

#[derive(Args)]
pub struct NeedleArgs {
    /// CT in HU (NIfTI, NRRD or a DICOM folder).
    #[arg(long)]
    ct: PathBuf,
    /// Label map on the CT's grid.
    #[arg(long)]
    labels: PathBuf,
    /// Label names: totalseg-v2 (default), totalseg-v1, a CSV or a Slicer colour table.
    #[arg(long)]
    labels_table: Option<String>,
    /// Procedure: kidney-biopsy, liver-biopsy, lung-biopsy, thyroid-fna, nephrostomy,
    /// biliary-drainage.
    #[arg(long)]
    procedure: String,
    /// A profile file (TOML) replacing the shipped profile of --procedure.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Target: a label name (`kidney_cyst_left`, `liver:deepest`), `x,y,z` or
    /// `x,y,z,r` (LPS mm).
    #[arg(long, allow_hyphen_values = true)]
    target: String,
    /// Candidate directions on the Fibonacci sphere.
    #[arg(long, default_value_t = 40_000)]
    candidates: usize,
    /// Paths to return.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Evaluate only the path from this skin point `x,y,z` (LPS mm).
    #[arg(long, value_parser = super::parse_point, allow_hyphen_values = true)]
    entry: Option<[f64; 3]>,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: &NeedleArgs) -> anyhow::Result<()> {
    let profile = match &args.profile {
        Some(path) => Profile::from_toml_file(path)?,
        None => Profile::builtin(&args.procedure)?,
    };
    let spec: TargetSpec = args.target.parse()?;
    let (table_name, table) = super::label_table(args.labels_table.as_deref())?;
    let ct = super::load(&args.ct, None)?.volume.to_f32();
    let labels_any = super::load(&args.labels, None)?.volume;
    let labels = labels_any
        .to_labels()
        .with_context(|| format!("{} is not a label map", args.labels.display()))?;
    let entries: Vec<(u32, String)> = table.iter().map(|(id, e)| (id, e.name.clone())).collect();

    let progress = Progress::spinner("planning");
    let ctx = PlanningContext::new(ct, labels)?;
    let target = spec.resolve(ctx.labels(), |name| table.id_of(name))?;
    let target = ctx.aim(&profile, target);
    let options = PlanOptions {
        candidates: args.candidates,
        top_k: args.top,
        entry_lps: args.entry,
        ..PlanOptions::default()
    };
    let plan = ctx.plan(&profile, &entries, &target, &options)?;
    drop(progress);

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut value = serde_json::to_value(&plan)?;
    let inputs = json!([
        {"role": "ct", "path": args.ct.display().to_string(), "sha256": sha256_of(&args.ct)?},
        {"role": "labels", "path": args.labels.display().to_string(), "sha256": sha256_of(&args.labels)?},
    ]);
    if let Some(obj) = value.as_object_mut() {
        obj.insert("labels_table".into(), json!(table_name));
        if let Some(p) = &args.profile {
            obj.insert(
                "profile_file".into(),
                json!({"path": p.display().to_string(), "sha256": sha256_of(p)?}),
            );
        }
        obj.insert("inputs".into(), inputs);
        obj.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        obj.insert(
            "note".into(),
            json!(format!("{DISCLAIMER} Not for clinical use: paths are proposals from label maps and must be checked by a physician.")),
        );
    }
    let plan_path = args.out.join("plan.json");
    std::fs::write(&plan_path, serde_json::to_string_pretty(&value)?)
        .with_context(|| format!("writing {}", plan_path.display()))?;
    write_outputs(args, &ctx, &plan, &table)?;
    for p in plan.paths.iter().filter(|p| !p.feasible) {
        eprintln!(
            "warning: the path from --entry breaks: {}",
            p.violations.join(", ")
        );
    }
    for p in &plan.paths {
        eprintln!(
            "path {}: entry {:.1},{:.1},{:.1}  length {:.1} mm  skin angle {:.0} deg  score {:.3}",
            p.rank,
            p.entry_lps[0],
            p.entry_lps[1],
            p.entry_lps[2],
            p.length_mm,
            p.skin_angle_deg,
            p.score
        );
    }
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

fn write_outputs(
    args: &NeedleArgs,
    ctx: &PlanningContext,
    plan: &Plan,
    table: &LabelTable,
) -> anyhow::Result<()> {
    let markups: Vec<Markup> = plan
        .paths
        .iter()
        .map(|p| Markup {
            kind: MarkupKind::Line,
            name: if p.rank == 1 {
                format!("{} best", plan.procedure)
            } else {
                format!("{} alternative {}", plan.procedure, p.rank - 1)
            },
            points: vec![
                ControlPoint::new("entry", p.entry_lps),
                ControlPoint::new("target", p.target_lps),
            ],
            color_rgb: Some(if p.rank == 1 {
                [1.0, 0.15, 0.15]
            } else {
                [1.0, 0.8, 0.0]
            }),
        })
        .collect();
    write_markups(&args.out.join("paths.mrk.json"), &markups)?;

    // Skin accessibility: a 3 mm hair along the needle axis at every skin point reached,
    // with scalars `accessible` (0/1) and `score`.
    let mut vtk = PolyLines::default();
    let mut accessible = Vec::new();
    let mut score = Vec::new();
    for (entry, dir, ok, s) in &plan.skin_points {
        let base = vtk.points_lps.len();
        vtk.points_lps.push(*entry);
        vtk.points_lps
            .push([0, 1, 2].map(|a| entry[a] + 3.0 * dir[a]));
        vtk.lines.push(vec![base, base + 1]);
        for _ in 0..2 {
            accessible.push(if *ok { 1.0 } else { 0.0 });
            score.push(*s);
        }
    }
    vtk.point_scalars = vec![("accessible".into(), accessible), ("score".into(), score)];
    write_polylines(&args.out.join("skin_access.vtk"), &vtk)?;

    let color_of = |id: u16| table.color_of(u32::from(id));
    let image = render::needle_plane(ctx, plan, &color_of, 512, 0.5);
    pinhole_io::png::write_rgb8(
        &args.out.join("best.png"),
        image.width as u32,
        image.height as u32,
        &image.rgb,
    )?;
    Ok(())
}
