use std::path::PathBuf;

use clap::Args;

use crate::report::VolumeReport;

#[derive(Args)]
pub struct InfoArgs {
    /// NIfTI (.nii, .nii.gz), NRRD file, or a folder holding a DICOM series.
    path: PathBuf,
    /// Label names: `totalseg-v2` (default), `totalseg-v1`, a CSV (`id,name`) or a Slicer
    /// colour table. Implies the volume is a label map.
    #[arg(long)]
    labels_table: Option<String>,
    /// DICOM folder with several series: the SeriesInstanceUID to read.
    #[arg(long)]
    series: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &InfoArgs) -> anyhow::Result<()> {
    if args.path.is_dir() && args.series.is_none() {
        print_series_list(args)?;
    }
    let loaded = super::load(&args.path, args.series.clone())?;
    let (table_name, table) = super::label_table(args.labels_table.as_deref())?;
    let report = VolumeReport::new(
        &args.path.display().to_string(),
        &loaded,
        Some((&table_name, &table)),
        args.labels_table.is_some(),
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

/// Lists the series of a DICOM folder on stderr when there is more than one.
fn print_series_list(args: &InfoArgs) -> anyhow::Result<()> {
    let series = pinhole_io::dicom::list_series(&args.path)?;
    if series.len() > 1 {
        eprintln!(
            "{} series in {} (reading the first; choose with --series UID):",
            series.len(),
            args.path.display()
        );
        for s in &series {
            eprintln!(
                "  {}  {:>4} slices  {}  {}",
                s.series_uid, s.slices, s.modality, s.description
            );
        }
    }
    Ok(())
}
