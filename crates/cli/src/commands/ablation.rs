//! `pinhole plan ablation` (zones, coverage, margins, heat sinks) and `pinhole evla`.

use std::path::PathBuf;

use clap::Args;
use pinhole_ablation::damage::Criterion;
use pinhole_ablation::devices::Modality;
use pinhole_pipeline::ablation::{AblationOutcome, AblationRequest, ZoneSource};
use pinhole_pipeline::evla::EvlaRequest;
use pinhole_pipeline::{Observer, DISCLAIMER};

#[derive(Args)]
pub struct AblationArgs {
    #[command(flatten)]
    volumes: super::VolumeArgs,
    /// Tumour: a label name (`liver_tumor`), or a sphere `x,y,z,r` in LPS mm.
    #[arg(long, allow_hyphen_values = true)]
    tumor: String,
    /// Safety margin around the tumour, mm.
    #[arg(value_parser = super::finite, long, default_value_t = 5.0)]
    margin_mm: f64,
    /// Device from the zone table (see --devices). With --simulate: simulate with the
    /// device's calibrated source model.
    #[arg(long, required_unless_present = "simulate")]
    device: Option<String>,
    /// Simulate the zone with the Pennes bioheat model instead of a table (the source
    /// model: --device's, else the first calibrated device of --applicator's kind).
    #[arg(long)]
    simulate: bool,
    /// Power, W.
    #[arg(value_parser = super::finite, long)]
    power: f64,
    /// Heating time, minutes.
    #[arg(value_parser = super::finite, long)]
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
    #[arg(value_parser = super::finite, long, default_value_t = 1.0)]
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

pub fn run(args: &AblationArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    super::marking_failure(&args.out, "plan ablation", || plan(args, terminal))
}

fn plan(args: &AblationArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    let zone = if args.simulate {
        ZoneSource::Simulate {
            applicator: args.applicator,
            criterion: args.criterion,
            device: args.device.clone(),
            devices: args.devices.clone(),
        }
    } else {
        ZoneSource::Device {
            name: args.device.clone().unwrap_or_default(),
            devices: args.devices.clone(),
        }
    };
    let request = AblationRequest {
        ct: args.volumes.ct.clone(),
        labels: args.volumes.labels.clone(),
        labels_table: args.volumes.labels_table.clone(),
        tumor: args.tumor.clone(),
        margin_mm: args.margin_mm,
        zone,
        power_w: args.power,
        minutes: args.minutes,
        path: args.path.clone(),
        grid_mm: args.grid_mm,
        max_applicators: args.max_applicators,
        unnamed_labels: args.volumes.unnamed_labels,
        not_ct: args.volumes.not_ct(),
    };
    let [ct, labels, table] = args.volumes.files();
    super::refuse_overwriting_inputs(
        &[
            ct,
            labels,
            table,
            args.path.as_deref(),
            args.devices.as_deref(),
        ],
        &super::folder_files(&args.out, &AblationOutcome::FILES),
    )?;
    let outcome = pinhole_pipeline::ablation::run(&request, terminal)?;
    outcome.write(&args.out)?;
    for line in outcome.report.summary() {
        println!("{line}");
    }
    println!("wrote {}", args.out.display());
    println!("{DISCLAIMER}");
    Ok(())
}

#[derive(Args)]
pub struct EvlaArgs {
    /// Laser power, W.
    #[arg(value_parser = super::finite, long)]
    power: f64,
    /// Fibre pullback speed, mm/s.
    #[arg(value_parser = super::finite, long)]
    pullback_mm_s: f64,
    /// Vein diameter, mm.
    #[arg(value_parser = super::finite, long)]
    diameter_mm: f64,
    /// Treated length, cm.
    #[arg(value_parser = super::finite, long)]
    length_cm: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn evla(args: &EvlaArgs) -> anyhow::Result<()> {
    let report = pinhole_pipeline::evla::run(&EvlaRequest {
        power_w: args.power,
        pullback_mm_s: args.pullback_mm_s,
        diameter_mm: args.diameter_mm,
        length_cm: args.length_cm,
    })?;
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if args.json {
        println!("{}", pinhole_pipeline::report::to_json(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
