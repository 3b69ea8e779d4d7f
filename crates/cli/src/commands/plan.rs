//! `pinhole plan <kind>`: planners, one subcommand each.

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct PlanArgs {
    #[command(subcommand)]
    pub command: PlanCommand,
}

#[derive(Subcommand)]
pub enum PlanCommand {
    /// Catheter route through the vessel tree from an access to a target (route.json,
    /// route.vtk, route.mrk.json, route.png).
    Vessel(Box<super::vessel::PlanVesselArgs>),
}

pub fn run(args: &PlanArgs) -> anyhow::Result<()> {
    match &args.command {
        PlanCommand::Vessel(a) => super::vessel::plan(a),
    }
}
