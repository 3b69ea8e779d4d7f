//! `pinhole plan <kind>`: the planners, one subcommand each.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum PlanCommand {
    /// Straight-needle paths for a percutaneous procedure (biopsy, FNA, nephrostomy ...).
    Needle(Box<super::plan_needle::NeedleArgs>),
}

pub fn run(command: &PlanCommand) -> anyhow::Result<()> {
    match command {
        PlanCommand::Needle(args) => super::plan_needle::run(args),
    }
}
