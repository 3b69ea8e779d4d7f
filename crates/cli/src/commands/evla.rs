//! `pinhole evla`: endovenous laser ablation dose and foam volume for a vein segment.

use clap::Args;
use pinhole_ablation::vein::evla_dose;

use crate::report::DISCLAIMER;

#[derive(Args)]
pub struct EvlaArgs {
    /// Laser power, W.
    #[arg(long)]
    power: f64,
    /// Fibre pullback speed, mm/s.
    #[arg(long)]
    pullback_mm_s: f64,
    /// Vein diameter, mm.
    #[arg(long)]
    diameter_mm: f64,
    /// Treated length, cm.
    #[arg(long)]
    length_cm: f64,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &EvlaArgs) -> anyhow::Result<()> {
    let d = evla_dose(
        args.power,
        args.pullback_mm_s,
        args.diameter_mm,
        args.length_cm,
    )?;
    if args.json {
        let out = serde_json::json!({
            "dose": d,
            "formulas": {
                "leed_j_cm": "power_w / (pullback_mm_s / 10)",
                "wall_fluence_j_cm2": "leed_j_cm / (pi * diameter_mm / 10)",
                "total_energy_j": "leed_j_cm * length_cm",
                "segment_volume_ml": "pi * (diameter_mm / 20)^2 * length_cm (cylinder)",
            },
            "version": env!("CARGO_PKG_VERSION"),
            "note": DISCLAIMER,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "EVLA: {} W, pullback {} mm/s, vein {} mm, {} cm",
        d.power_w, d.pullback_mm_s, d.diameter_mm, d.length_cm
    );
    println!("  LEED                  {:>10.2} J/cm", d.leed_j_cm);
    println!(
        "  energy per wall area  {:>10.2} J/cm2",
        d.wall_fluence_j_cm2
    );
    println!("  total energy          {:>10.1} J", d.total_energy_j);
    println!("  pullback time         {:>10.1} s", d.treatment_time_s);
    println!(
        "  segment volume (foam) {:>10.2} mL (cylinder)",
        d.segment_volume_ml
    );
    println!("{DISCLAIMER}");
    Ok(())
}
