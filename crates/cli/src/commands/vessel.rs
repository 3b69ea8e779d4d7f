//! `pinhole plan vessel` and `pinhole measure vessel`: catheter routes and vessel
//! measurements. Not for clinical use.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use pinhole_pipeline::vessel::{MeasureOutcome, MeasureRequest, RouteOutcome, RouteRequest};
use pinhole_pipeline::Observer;

#[derive(Args)]
pub struct PlanVesselArgs {
    /// Vessel label map (NIfTI, NRRD, DICOM SEG-free label volume).
    #[arg(long)]
    labels: PathBuf,
    /// Label names: `totalseg-v2` (default), `totalseg-v1` or a CSV / Slicer colour table.
    #[arg(long)]
    labels_table: Option<String>,
    /// CT in HU on the same patient space: route.png on its DRR, lumen HU along the route.
    #[arg(long)]
    ct: Option<PathBuf>,
    /// Access: `label` or `label:end` (the label's free end), `label:centroid|deepest`,
    /// `x,y,z` (LPS mm) or `narrowest:label`.
    #[arg(long, allow_hyphen_values = true)]
    from: String,
    /// Target, same forms as --from.
    #[arg(long, allow_hyphen_values = true)]
    to: String,
    /// Vessel labels the route may use (default: every artery, or every vein when an
    /// endpoint is a vein, present in the label map).
    #[arg(long, value_delimiter = ',')]
    vessels: Vec<String>,
    /// Point spacing along the route, mm.
    #[arg(value_parser = super::finite, long, default_value_t = 1.0)]
    step_mm: f64,
    /// Also extract the whole vessel tree (branches with lengths; slower).
    #[arg(long)]
    tree: bool,
    /// Label ids in the map that the table does not name: `refuse` (default) or
    /// `forbid` (the route never enters them; a warning in route.json).
    #[arg(long, default_value = "refuse")]
    unnamed_labels: pinhole_pipeline::inputs::UnnamedLabels,
    /// Go on when --ct does not look like a CT in Hounsfield units (DICOM Modality MR,
    /// PT, NM …; no air; values rescaled): the report's warnings record it. Default:
    /// refuse.
    #[arg(long)]
    allow_non_ct: bool,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

pub fn plan(args: &PlanVesselArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    super::marking_failure(&args.out, "plan vessel", || route(args, terminal))
}

fn route(args: &PlanVesselArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    let request = RouteRequest {
        labels: args.labels.clone(),
        labels_table: args.labels_table.clone(),
        ct: args.ct.clone(),
        from: args.from.clone(),
        to: args.to.clone(),
        vessels: args.vessels.clone(),
        step_mm: args.step_mm,
        tree: args.tree,
        unnamed_labels: args.unnamed_labels,
        not_ct: super::not_ct_policy(args.allow_non_ct),
    };
    super::refuse_overwriting_inputs(
        &[
            Some(args.labels.as_path()),
            args.ct.as_deref(),
            args.labels_table.as_deref().map(std::path::Path::new),
        ],
        &super::folder_files(&args.out, &RouteOutcome::FILES),
    )?;
    pinhole_pipeline::vessel::plan_route(&request, terminal)?.write(&args.out, terminal)?;
    Ok(())
}

#[derive(Args)]
pub struct MeasureArgs {
    #[command(subcommand)]
    pub command: MeasureCommand,
}

#[derive(Subcommand)]
pub enum MeasureCommand {
    /// Centerline, cross-sections, stenosis and sizing of one vessel label
    /// (centerline.vtk, measurements.json).
    Vessel(Box<MeasureVesselArgs>),
}

#[derive(Args)]
pub struct MeasureVesselArgs {
    /// Vessel label map.
    #[arg(long)]
    labels: PathBuf,
    /// Label names: `totalseg-v2` (default), `totalseg-v1` or a CSV / Slicer colour table.
    #[arg(long)]
    labels_table: Option<String>,
    /// The vessel to measure, by name.
    #[arg(long)]
    label: String,
    /// CT in HU: lumen HU per station and suspected occlusions.
    #[arg(long)]
    ct: Option<PathBuf>,
    /// Station spacing along the centerline, mm.
    #[arg(value_parser = super::finite, long, default_value_t = 1.0)]
    step_mm: f64,
    /// NASCET: arc range `a,b` (mm from the centerline start) of normal distal vessel.
    #[arg(long, value_parser = super::parse_range)]
    nascet_distal_mm: Option<[f64; 2]>,
    /// ECST: estimated original bulb diameter at the stenosis, mm.
    #[arg(value_parser = super::finite, long)]
    ecst_bulb_mm: Option<f64>,
    /// Sizing rules (TOML, see crates/vessel/src/sizing.toml; default: the built-in ones).
    #[arg(long)]
    sizing: Option<PathBuf>,
    /// Propose balloon / stent sizes only from this stenosis (%, NASCET when measured,
    /// else diameter stenosis; default: NASCET's moderate grade).
    #[arg(value_parser = super::finite, long, default_value_t = pinhole_pipeline::vessel::DEFAULT_MIN_STENOSIS_PCT)]
    sizing_min_stenosis_pct: f64,
    /// Go on when --ct does not look like a CT in Hounsfield units (DICOM Modality MR,
    /// PT, NM …; no air; values rescaled): the report's warnings record it. Default:
    /// refuse.
    #[arg(long)]
    allow_non_ct: bool,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

pub fn measure(args: &MeasureArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    let MeasureCommand::Vessel(args) = &args.command;
    super::marking_failure(&args.out, "measure vessel", || {
        measure_vessel(args, terminal)
    })
}

fn measure_vessel(args: &MeasureVesselArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    let request = MeasureRequest {
        labels: args.labels.clone(),
        labels_table: args.labels_table.clone(),
        label: args.label.clone(),
        ct: args.ct.clone(),
        step_mm: args.step_mm,
        nascet_distal_mm: args.nascet_distal_mm,
        ecst_bulb_mm: args.ecst_bulb_mm,
        sizing: args.sizing.clone(),
        sizing_min_stenosis_pct: args.sizing_min_stenosis_pct,
        not_ct: super::not_ct_policy(args.allow_non_ct),
    };
    super::refuse_overwriting_inputs(
        &[
            Some(args.labels.as_path()),
            args.ct.as_deref(),
            args.labels_table.as_deref().map(std::path::Path::new),
            args.sizing.as_deref(),
        ],
        &super::folder_files(&args.out, &MeasureOutcome::FILES),
    )?;
    pinhole_pipeline::vessel::measure(&request, terminal)?.write(&args.out, terminal)?;
    Ok(())
}
