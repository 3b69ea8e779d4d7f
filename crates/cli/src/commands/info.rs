//! `pinhole info` and `pinhole convert`.

use std::path::PathBuf;

use clap::Args;
use pinhole_pipeline::inputs::{label_table, labels_of, load_image, Image};
use pinhole_pipeline::Observer;

#[derive(Args)]
pub struct InfoArgs {
    /// NIfTI (.nii, .nii.gz), NRRD file, a folder holding a DICOM series, an enhanced
    /// multi-frame DICOM file, or a DICOM Segmentation (its segments name the labels).
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

pub fn run(args: &InfoArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    if args.path.is_dir() && args.series.is_none() {
        print_series_list(args)?;
    }
    let report = pinhole_pipeline::info::run(
        &args.path,
        args.series.clone(),
        args.labels_table.as_deref(),
        terminal,
    )?;
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

#[derive(Args)]
pub struct ConvertArgs {
    /// Input: NIfTI, NRRD, a DICOM series folder, an enhanced multi-frame DICOM file, or
    /// a DICOM Segmentation (to .seg.nrrd with its segment names).
    input: PathBuf,
    /// Output: .nii, .nii.gz, .nrrd, or .seg.nrrd (label map → Slicer segmentation).
    output: PathBuf,
    /// DICOM folder with several series: the SeriesInstanceUID to read.
    #[arg(long)]
    series: Option<String>,
    /// Segment names for .seg.nrrd output (default: a DICOM Segmentation's own, else
    /// TotalSegmentator v2).
    #[arg(long)]
    labels_table: Option<String>,
}

pub fn convert(args: &ConvertArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    super::refuse_overwriting_inputs(
        &[
            Some(args.input.as_path()),
            args.labels_table.as_deref().map(std::path::Path::new),
        ],
        std::slice::from_ref(&args.output),
    )?;
    let name = args.output.to_string_lossy().to_ascii_lowercase();
    let loaded = match load_image(&args.input, args.series.clone(), terminal)? {
        Image::Grey(loaded) => loaded,
        Image::Colour(colour) => return write_colour(args, &name, &colour),
    };
    if name.ends_with(".seg.nrrd") {
        let labels = labels_of(loaded.volume, &args.input)?;
        // A DICOM Segmentation's own segment names, unless a table is given.
        let table = match (loaded.label_table, args.labels_table.as_deref()) {
            (Some(own), None) => own,
            (_, spec) => label_table(spec)?.1,
        };
        pinhole_io::segnrrd::write_segmentation(&args.output, &labels, &table, true)?;
    } else {
        pinhole_io::open::write_volume(&args.output, &loaded.volume)?;
    }
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

/// A colour series to an RGB NRRD; a label-map output refused.
fn write_colour(
    args: &ConvertArgs,
    name: &str,
    colour: &pinhole_io::dicom::ColourSeries,
) -> anyhow::Result<()> {
    if name.ends_with(".seg.nrrd") || args.labels_table.is_some() {
        anyhow::bail!(
            "{}: a colour ({}) series is a picture, not a label map",
            args.input.display(),
            colour.photometric
        );
    }
    pinhole_io::open::write_rgb_volume(&args.output, &colour.volume)?;
    let [nx, ny, nz] = colour.volume.grid().dims();
    eprintln!(
        "wrote {} (RGB, {} bits per sample, {nx} x {ny} x {nz}, from {})",
        args.output.display(),
        colour.volume.samples().bits(),
        colour.photometric
    );
    Ok(())
}
