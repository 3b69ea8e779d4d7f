//! `pinhole plan <kind>`: the planners (needle, vessel, ablation) under one group.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum PlanCommand {
    /// Straight-needle paths for a percutaneous procedure (biopsy, FNA, nephrostomy ...).
    Needle(Box<super::plan_needle::NeedleArgs>),
    /// Catheter route through the vessel tree from an access to a target (route.json,
    /// route.vtk, route.mrk.json, route.png).
    Vessel(Box<super::vessel::PlanVesselArgs>),
    /// Thermal ablation: zone from a device table or a bioheat simulation, coverage of the
    /// tumour + margin, minimal ablative margin, heat sinks, applicator placement.
    Ablation(Box<super::ablation::AblationArgs>),
}

pub fn run(command: &PlanCommand) -> anyhow::Result<()> {
    match command {
        PlanCommand::Needle(args) => super::plan_needle::run(args),
        PlanCommand::Vessel(args) => super::vessel::plan(args),
        PlanCommand::Ablation(args) => super::ablation::run(args),
    }
}
