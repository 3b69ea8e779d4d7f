//! Ablation source models against the device zone tables.
//!
//! `ablation-calibrate [--devices TABLE.toml] [--grid-mm 1]`: simulates every row of every
//! device that has a `[device.simulation]` model and prints the Markdown table of
//! BENCHMARKS.md (simulated vs table axes, errors, peak temperature).
//!
//! `ablation-calibrate --fit DEVICE [--grid-mm 2]`: a coarse search over the microwave
//! model's efficiency and pattern for DEVICE, printing each candidate's worst axis error
//! (JSON lines), best last. Refine the best by hand and check it with the first form.

use anyhow::Context;
use pinhole_ablation::calibration::{calibrate, calibrate_device, markdown, SourceModel};
use pinhole_ablation::devices::DeviceTable;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let table = match value("--devices") {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
            DeviceTable::parse(&text, path)?
        }
        None => DeviceTable::builtin()?,
    };
    if let Some(name) = value("--fit") {
        let grid_mm: f64 = value("--grid-mm").map_or(Ok(2.0), |v| v.parse())?;
        return fit(&table, name, grid_mm);
    }
    let grid_mm: f64 = value("--grid-mm").map_or(Ok(1.0), |v| v.parse())?;
    let start = std::time::Instant::now();
    let (rows, uncalibrated) = calibrate(&table, grid_mm)?;
    print!("{}", markdown(&rows));
    let failing = rows.iter().filter(|r| !r.passes()).count();
    println!(
        "\n{} rows, {failing} outside ±15 %, grid {grid_mm} mm, {:.1} s; devices without a model: {}",
        rows.len(),
        start.elapsed().as_secs_f64(),
        if uncalibrated.is_empty() {
            "none".to_owned()
        } else {
            uncalibrated.join(", ")
        }
    );
    Ok(())
}

fn fit(table: &DeviceTable, name: &str, grid_mm: f64) -> anyhow::Result<()> {
    let device = table.device(name)?;
    let tissue = device
        .simulation
        .as_ref()
        .map_or_else(pinhole_ablation::bioheat::Tissue::liver, |s| {
            s.table_tissue()
        });
    let mut best: Option<(f64, SourceModel)> = None;
    for efficiency in [0.2, 0.3, 0.4, 0.5, 0.65] {
        for hotspot in [2.0, 6.0, 10.0] {
            for sigma_axial in [3.0, 6.0, 10.0] {
                for sigma_radial in [2.0, 4.0] {
                    let model = SourceModel::Microwave {
                        efficiency,
                        hotspot_behind_tip_mm: hotspot,
                        sigma_axial_mm: sigma_axial,
                        sigma_radial_mm: sigma_radial,
                    };
                    let rows = calibrate_device(device, &model, &tissue, grid_mm)?;
                    let worst = rows
                        .iter()
                        .map(|r| {
                            r.long_axis_error_pct
                                .abs()
                                .max(r.short_axis_error_pct.abs())
                        })
                        .fold(0.0, f64::max);
                    println!(
                        "{}",
                        serde_json::json!({"model": model, "worst_pct": worst,
                            "errors": rows.iter().map(|r| [r.long_axis_error_pct, r.short_axis_error_pct]).collect::<Vec<_>>()})
                    );
                    if best.as_ref().is_none_or(|b| worst < b.0) {
                        best = Some((worst, model));
                    }
                }
            }
        }
    }
    if let Some((worst, model)) = best {
        println!("{}", serde_json::json!({"best": model, "worst_pct": worst}));
    }
    Ok(())
}
