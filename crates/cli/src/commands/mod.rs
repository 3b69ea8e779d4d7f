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
