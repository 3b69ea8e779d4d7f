//! `pinhole`: the command-line shell over Pinhole's libraries. Not for clinical use.

mod commands;
mod progress;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Pinhole: an open engine for image-guided interventional radiology.
/// NOT FOR CLINICAL USE: research and engineering software only.
#[derive(Parser)]
#[command(name = "pinhole", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a volume: geometry, value range, labels present (NIfTI, NRRD, DICOM folder).
    Info(commands::info::InfoArgs),
    /// Convert DICOM / NIfTI / NRRD to NIfTI, NRRD or a Slicer .seg.nrrd, keeping geometry.
    Convert(commands::convert::ConvertArgs),
    /// Render a simulated fluoroscopy image (DRR) from a CT for a C-arm pose.
    Drr(Box<commands::drr::DrrArgs>),
    /// Run Pinhole on the small sample shipped with it (or on --data).
    Demo(commands::demo::DemoArgs),
    /// Plan an intervention: `pinhole plan vessel ...`.
    Plan(commands::plan::PlanArgs),
    /// Measure structures: `pinhole measure vessel ...`.
    Measure(commands::measure::MeasureArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => commands::info::run(&args),
        Command::Convert(args) => commands::convert::run(&args),
        Command::Drr(args) => commands::drr::run(&args),
        Command::Demo(args) => commands::demo::run(&args),
        Command::Plan(args) => commands::plan::run(&args),
        Command::Measure(args) => commands::measure::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
