//! One module per command group: clap arguments → a pipeline request → files and
//! terminal output. No geometry, no report assembly: that lives in `pinhole-pipeline`.

pub mod ablation;
pub mod cases;
pub mod cohort;
pub mod demo;
pub mod dicom;
pub mod dicom_query;
pub mod dicom_web;
pub mod drr;
pub mod feed;
pub mod info;
pub mod intraop;
pub mod on_complete;
pub mod plan;
pub mod register;
pub mod serve;
pub mod us;
pub mod us_fuse;
pub mod us_tracked;
pub mod vessel;

use std::path::{Path, PathBuf};

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
    /// Go on when the CT does not look like a CT in Hounsfield units (DICOM Modality MR,
    /// PT, NM …; no air; values rescaled): the report's warnings record it. Default:
    /// refuse.
    #[arg(long)]
    pub allow_non_ct: bool,
}

/// `--allow-non-ct` as the pipeline's policy.
pub fn not_ct_policy(allow_non_ct: bool) -> pinhole_pipeline::inputs::NotCt {
    if allow_non_ct {
        pinhole_pipeline::inputs::NotCt::Allow
    } else {
        pinhole_pipeline::inputs::NotCt::Refuse
    }
}

impl VolumeArgs {
    /// `--allow-non-ct` as the pipeline's policy.
    pub fn not_ct(&self) -> pinhole_pipeline::inputs::NotCt {
        not_ct_policy(self.allow_non_ct)
    }

    /// The input files (the label table when it names a file).
    pub fn files(&self) -> [Option<&Path>; 3] {
        [
            Some(self.ct.as_path()),
            Some(self.labels.as_path()),
            self.labels_table.as_deref().map(Path::new),
        ]
    }
}

/// Refuses to start when an output would replace one of the inputs (`None`s and
/// non-file label-table names are skipped).
pub fn refuse_overwriting_inputs(
    inputs: &[Option<&Path>],
    outputs: &[PathBuf],
) -> anyhow::Result<()> {
    let inputs: Vec<&Path> = inputs.iter().flatten().copied().collect();
    Ok(pinhole_pipeline::outputs::refuse_overwriting_inputs(
        &inputs, outputs,
    )?)
}

/// Runs `work`; when it fails, leaves [`pinhole_pipeline::report::FAILED_MARKER`] in
/// `out` (when that folder exists) so that an earlier run's files are not mistaken for
/// this run's result.
pub fn marking_failure(
    out: &Path,
    command: &str,
    work: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let result = work();
    if let Err(err) = &result {
        if let Some(marker) =
            pinhole_pipeline::report::mark_failed(out, command, &format!("{err:#}"))
        {
            eprintln!("wrote {} (this run failed)", marker.display());
        }
    }
    result
}

/// Removes `path`; a file already absent is fine.
pub fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::new(e).context(format!("removing {}", path.display())))
        }
        _ => Ok(()),
    }
}

/// A result folder's files, for [`refuse_overwriting_inputs`].
pub fn folder_files(dir: &Path, names: &[&str]) -> Vec<PathBuf> {
    pinhole_pipeline::outputs::files_in(dir, names)
}

/// Parses a finite number for clap (NaN and infinities are refused here; each
/// procedure checks its own ranges).
pub fn finite(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("expected a finite number, got {v}")),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
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
