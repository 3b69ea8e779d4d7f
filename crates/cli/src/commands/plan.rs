//! `pinhole plan <kind>`: the planners (needle, vessel, ablation) under one group.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use pinhole_pipeline::needle::{NeedleOutcome, NeedleRequest};
use pinhole_pipeline::Observer;

#[derive(Subcommand)]
pub enum PlanCommand {
    /// Straight-needle paths for a percutaneous procedure (biopsy, FNA, nephrostomy ...).
    Needle(Box<NeedleArgs>),
    /// Catheter route through the vessel tree from an access to a target (route.json,
    /// route.vtk, route.mrk.json, route.png).
    Vessel(Box<super::vessel::PlanVesselArgs>),
    /// Thermal ablation: zone from a device table or a bioheat simulation, coverage of the
    /// tumour + margin, minimal ablative margin, heat sinks, applicator placement.
    Ablation(Box<super::ablation::AblationArgs>),
}

pub fn run(command: &PlanCommand, terminal: &dyn Observer) -> anyhow::Result<()> {
    match command {
        PlanCommand::Needle(args) => {
            super::marking_failure(&args.out, "plan needle", || needle(args, terminal))
        }
        PlanCommand::Vessel(args) => super::vessel::plan(args, terminal),
        PlanCommand::Ablation(args) => super::ablation::run(args, terminal),
    }
}

#[derive(Args)]
pub struct NeedleArgs {
    #[command(flatten)]
    volumes: super::VolumeArgs,
    /// Procedure: kidney-biopsy, liver-biopsy, lung-biopsy, thyroid-fna, nephrostomy,
    /// biliary-drainage.
    #[arg(long)]
    procedure: String,
    /// A profile file (TOML) replacing the shipped profile of --procedure.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Target: a label name (`kidney_cyst_left`, `liver:deepest`,
    /// `kidney_left:lower-pole-cortex`), `x,y,z` or `x,y,z,r` (LPS mm).
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

fn needle(args: &NeedleArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    let request = NeedleRequest {
        ct: args.volumes.ct.clone(),
        labels: args.volumes.labels.clone(),
        labels_table: args.volumes.labels_table.clone(),
        procedure: args.procedure.clone(),
        profile: args.profile.clone(),
        target: args.target.clone(),
        candidates: args.candidates,
        top: args.top,
        entry_lps: args.entry,
        unnamed_labels: args.volumes.unnamed_labels,
        not_ct: args.volumes.not_ct(),
    };
    let [ct, labels, table] = args.volumes.files();
    super::refuse_overwriting_inputs(
        &[ct, labels, table, args.profile.as_deref()],
        &super::folder_files(&args.out, &NeedleOutcome::FILES),
    )?;
    let outcome = pinhole_pipeline::needle::run(&request, terminal)?;
    outcome.write(&args.out)?;
    let (lines, warnings) = outcome.report.summary();
    for warning in warnings.iter().chain(&outcome.report.plan.warnings) {
        terminal.warn(warning);
    }
    for line in lines {
        eprintln!("{line}");
    }
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
