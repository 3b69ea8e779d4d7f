//! `pinhole plan <kind>`: the planners (needle, vessel, ablation) under one group.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum PlanCommand {
    /// Thermal ablation: zone from a device table or a bioheat simulation, coverage of the
    /// tumour + margin, minimal ablative margin, heat sinks, applicator placement.
    Ablation(Box<super::ablation::AblationArgs>),
}

pub fn run(command: &PlanCommand) -> anyhow::Result<()> {
    match command {
        PlanCommand::Ablation(args) => super::ablation::run(args),
    }
}
