pub mod ablation;
pub mod convert;
pub mod demo;
pub mod drr;
pub mod evla;
pub mod info;
pub mod measure;
pub mod plan;
pub mod plan_needle;
pub mod register;
pub mod serve;
pub mod vessel;
pub mod viewer;

use std::path::Path;

use anyhow::Context;
use pinhole_io::labels::LabelTable;
use pinhole_io::open::{read_volume, Loaded, ReadOptions};

use crate::progress::Progress;

/// Reads any supported volume with a progress bar (hidden when not on a terminal).
pub fn load(path: &Path, series_uid: Option<String>) -> anyhow::Result<Loaded> {
    let progress = if path.is_dir() {
        Progress::new("reading")
    } else {
        Progress::spinner(&format!("reading {}", path.display()))
    };
    let options = ReadOptions { series_uid };
    let loaded = read_volume(path, &options, &mut |done, total| {
        progress.update(done, total)
    })?;
    for warning in &loaded.warnings {
        eprintln!("warning: {}: {warning}", path.display());
    }
    Ok(loaded)
}

/// The label table named by `--labels-table` (default: TotalSegmentator v2 names).
pub fn label_table(spec: Option<&str>) -> anyhow::Result<(String, LabelTable)> {
    let spec = spec.unwrap_or("totalseg-v2");
    let table = LabelTable::load(spec).with_context(|| format!("loading label table {spec}"))?;
    Ok((spec.to_string(), table))
}

/// Parses `x,y,z` (LPS mm) for clap.
pub fn parse_point(s: &str) -> Result<[f64; 3], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|t| t.trim().parse::<f64>().map_err(|e| format!("{t:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        [x, y, z] if v.iter().all(|c| c.is_finite()) => Ok([*x, *y, *z]),
        _ => Err(format!("expected x,y,z in mm, got {s:?}")),
    }
}

/// One path of a needle plan (`plan.json` from `pinhole plan needle`).
pub struct PlannedPath {
    pub entry_lps: [f64; 3],
    pub target_lps: [f64; 3],
    pub length_mm: Option<f64>,
}

/// The procedure name and every `paths[]` entry (best first) of a needle plan; errors
/// name the file and the faulty field.
pub fn read_plan_paths(plan: &Path) -> anyhow::Result<(String, Vec<PlannedPath>)> {
    let text =
        std::fs::read_to_string(plan).with_context(|| format!("reading {}", plan.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", plan.display()))?;
    let paths = json["paths"]
        .as_array()
        .with_context(|| format!("{}: no \"paths\" array", plan.display()))?;
    let procedure = json["procedure"].as_str().unwrap_or("plan").to_string();
    let paths = paths
        .iter()
        .enumerate()
        .map(|(n, path)| {
            let point = |key: &str| -> anyhow::Result<[f64; 3]> {
                let v: Vec<f64> = serde_json::from_value(path[key].clone()).with_context(|| {
                    format!("{}: paths[{n}].{key} must be [x, y, z]", plan.display())
                })?;
                v.try_into().map_err(|_| {
                    anyhow::anyhow!("{}: paths[{n}].{key} must have 3 numbers", plan.display())
                })
            };
            Ok(PlannedPath {
                entry_lps: point("entry_lps")?,
                target_lps: point("target_lps")?,
                length_mm: path["length_mm"].as_f64(),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((procedure, paths))
}
