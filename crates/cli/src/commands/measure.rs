//! `pinhole measure <kind>`: measurements on label maps.

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct MeasureArgs {
    #[command(subcommand)]
    pub command: MeasureCommand,
}

#[derive(Subcommand)]
pub enum MeasureCommand {
    /// Centerline, cross-sections, stenosis and sizing of one vessel label
    /// (centerline.vtk, measurements.json).
    Vessel(Box<super::vessel::MeasureVesselArgs>),
}

pub fn run(args: &MeasureArgs) -> anyhow::Result<()> {
    match &args.command {
        MeasureCommand::Vessel(a) => super::vessel::measure(a),
    }
}
