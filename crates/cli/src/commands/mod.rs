//! One module per command group: clap arguments → a pipeline request → files and
//! terminal output. No geometry, no report assembly: that lives in `pinhole-pipeline`.

pub mod ablation;
pub mod demo;
pub mod drr;
pub mod info;
pub mod plan;
pub mod register;
pub mod serve;
pub mod vessel;

use std::path::PathBuf;

use clap::Args;

/// The CT, its label map and the label names: what every planner and the server read.
#[derive(Args)]
pub struct VolumeArgs {
    /// CT in HU (NIfTI, NRRD or a DICOM folder).
    #[arg(long)]
    pub ct: PathBuf,
    /// Label map (organs and vessels, e.g. TotalSegmentator output) on the CT's grid.
    #[arg(long)]
    pub labels: PathBuf,
    /// Label names: totalseg-v2 (default), totalseg-v1, a CSV or a Slicer colour table.
    #[arg(long)]
    pub labels_table: Option<String>,
    /// Label ids in the map that the table does not name: `refuse` (default) or
    /// `forbid` (avoid them as unknown structures, with a warning in the report).
    #[arg(long, default_value = "refuse")]
    pub unnamed_labels: pinhole_pipeline::inputs::UnnamedLabels,
}

/// Parses `x,y,z` (LPS mm) for clap.
pub fn parse_point(s: &str) -> Result<[f64; 3], String> {
    match parse_numbers(s)?.as_slice() {
        [x, y, z] => Ok([*x, *y, *z]),
        _ => Err(format!("expected x,y,z in mm, got {s:?}")),
    }
}

/// Parses `a,b` (mm) for clap.
pub fn parse_range(s: &str) -> Result<[f64; 2], String> {
    match parse_numbers(s)?.as_slice() {
        [a, b] => Ok([*a, *b]),
        _ => Err(format!("expected a,b in mm, got {s:?}")),
    }
}

/// Comma-separated finite numbers.
fn parse_numbers(s: &str) -> Result<Vec<f64>, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|t| t.trim().parse::<f64>().map_err(|e| format!("{t:?}: {e}")))
        .collect::<Result<_, _>>()?;
    if v.iter().all(|c| c.is_finite()) {
        Ok(v)
    } else {
        Err(format!("expected finite numbers in mm, got {s:?}"))
    }
}
