use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct ConvertArgs {
    /// Input: NIfTI, NRRD, or a DICOM series folder.
    input: PathBuf,
    /// Output: .nii, .nii.gz, .nrrd, or .seg.nrrd (label map → Slicer segmentation).
    output: PathBuf,
    /// DICOM folder with several series: the SeriesInstanceUID to read.
    #[arg(long)]
    series: Option<String>,
    /// Segment names for .seg.nrrd output (default: TotalSegmentator v2).
    #[arg(long)]
    labels_table: Option<String>,
}

pub fn run(args: &ConvertArgs) -> anyhow::Result<()> {
    let loaded = super::load(&args.input, args.series.clone())?;
    let name = args.output.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".seg.nrrd") {
        let labels = loaded.volume.to_labels().with_context(|| {
            format!(
                "{} is not a label map (needs non-negative integers ≤ 65535)",
                args.input.display()
            )
        })?;
        let (_, table) = super::label_table(args.labels_table.as_deref())?;
        pinhole_io::segnrrd::write_segmentation(&args.output, &labels, &table, true)?;
    } else {
        pinhole_io::open::write_volume(&args.output, &loaded.volume)?;
    }
    eprintln!("wrote {}", args.output.display());
    Ok(())
}
