//! `pinhole`: the command-line shell over Pinhole's libraries (argv → request →
//! `pinhole-pipeline` → files and terminal). Not for clinical use.

mod commands;
mod terminal;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Pinhole: an open engine for image-guided interventional radiology.
/// NOT FOR CLINICAL USE: research and engineering software only.
#[derive(Parser)]
#[command(name = "pinhole", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Record input files in reports with their full paths (default: the file name and
    /// its SHA-256 only, since folders are often named after the patient).
    #[arg(long, global = true)]
    record_full_paths: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a volume: geometry, value range, labels present (NIfTI, NRRD, DICOM folder).
    Info(commands::info::InfoArgs),
    /// Convert DICOM / NIfTI / NRRD to NIfTI, NRRD or a Slicer .seg.nrrd, keeping geometry.
    Convert(commands::info::ConvertArgs),
    /// Render a simulated fluoroscopy image (DRR) from a CT for a C-arm pose.
    Drr(Box<commands::drr::DrrArgs>),
    /// Run Pinhole on the small sample shipped with it (or on --data).
    Demo(commands::demo::DemoArgs),
    /// Plan an intervention: `pinhole plan needle|vessel|ablation ...`.
    #[command(subcommand)]
    Plan(commands::plan::PlanCommand),
    /// Measure structures: `pinhole measure vessel ...`.
    Measure(commands::vessel::MeasureArgs),
    /// Endovenous laser ablation dose (LEED, J/cm2 of vein wall, total energy, foam volume).
    Evla(commands::ablation::EvlaArgs),
    /// Live needle guidance: OpenIGTLink server (3D Slicer, PLUS) and HTTP/WebSocket API.
    Serve(Box<commands::serve::ServeArgs>),
    /// Send recorded (CSV) or synthesized needle poses to a guidance server.
    Replay(commands::serve::ReplayArgs),
    /// Find the CT's pose relative to the C-arm from a live X-ray (2D/3D registration).
    Register(Box<commands::register::RegisterArgs>),
    /// Ultrasound: `pinhole us simulate ...` (B-mode simulated from a CT).
    #[command(subcommand)]
    Us(commands::us::UsCommand),
    /// Register a control CT onto the planning CT (rigid; ITK transform for Slicer).
    RegisterCt(Box<commands::intraop::RegisterCtArgs>),
    /// Check a control CT: `pinhole verify needle ...` (the needle against the plan).
    #[command(subcommand)]
    Verify(commands::intraop::VerifyCommand),
    /// Confirm a treatment: `pinhole confirm ablation ...` (coverage, minimal ablative margin).
    #[command(subcommand)]
    Confirm(commands::intraop::ConfirmCommand),
    /// DICOM network and objects: `listen` (C-STORE / C-ECHO receiver), `push` (C-STORE
    /// sender), `echo`, `find` / `pull` (C-FIND / C-MOVE from a PACS), and results as
    /// DICOM of their CT series: `seg` (Segmentation), `sr` (Structured Report), `sc`
    /// (Secondary Capture).
    #[command(subcommand)]
    Dicom(commands::dicom::DicomCommand),
    /// Cohorts on Ray: `pinhole cohort run MANIFEST --procedure P --out DIR` (one needle
    /// plan per case, summary.csv/.parquet, resumable) and `pinhole cohort drr` (a DRR
    /// dataset); runs the Python package's `pinhole.cohort` (PINHOLE_PYTHON).
    Cohort(commands::cohort::CohortArgs),
    /// The site's case record: `pinhole cases list|show|export|create|assign --site DIR`
    /// (cases, received series, reports, recorded live sessions; pinhole-cases.sqlite).
    #[command(subcommand)]
    Cases(commands::cases::CasesCommand),
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    let terminal = terminal::Terminal::default();
    match command {
        Command::Info(args) => commands::info::run(&args, &terminal),
        Command::Convert(args) => commands::info::convert(&args, &terminal),
        Command::Drr(args) => commands::drr::run(&args, &terminal),
        Command::Demo(args) => commands::demo::run(&args, &terminal),
        Command::Plan(command) => commands::plan::run(&command, &terminal),
        Command::Measure(args) => commands::vessel::measure(&args, &terminal),
        Command::Evla(args) => commands::ablation::evla(&args),
        Command::Serve(args) => commands::serve::run(&args, &terminal),
        Command::Replay(args) => commands::serve::run_replay(&args),
        Command::Register(args) => commands::register::run(&args, &terminal),
        Command::Us(command) => commands::us::run(&command, &terminal),
        Command::RegisterCt(args) => commands::intraop::register_ct(&args, &terminal),
        Command::Verify(command) => commands::intraop::verify(&command, &terminal),
        Command::Confirm(command) => commands::intraop::confirm(&command, &terminal),
        Command::Dicom(command) => commands::dicom::run(&command, &terminal),
        Command::Cases(command) => commands::cases::run(&command),
        // The Python side's exit code (2: refused input) passes through.
        Command::Cohort(args) => return commands::cohort::run(&args),
    }?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pinhole_pipeline::provenance::record_full_paths(cli.record_full_paths);
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
