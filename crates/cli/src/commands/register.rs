//! `pinhole register`: the pose of the CT relative to the C-arm from a live X-ray
//! (intensity-based 2D/3D registration).

use std::path::PathBuf;

use clap::Args;
use pinhole_pipeline::register::{parse_similarity, RegistrationOutcome, RegistrationRequest};
use pinhole_pipeline::Observer;

#[derive(Args)]
pub struct RegisterArgs {
    /// CT in HU (NIfTI, NRRD or a DICOM folder).
    #[arg(long)]
    ct: PathBuf,
    /// Live X-ray: PNG (8/16-bit), a single-file DICOM (XA, RF, DX, CR, X-ray) or a 2-D
    /// NIfTI. Row 0 is the displayed top; in the frontal view the patient's right is on the
    /// viewer's left.
    #[arg(long)]
    xray: PathBuf,
    /// Label map on the CT's grid: organ outlines on the overlay, and --mask-labels.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Label names (default: TotalSegmentator v2), or a CSV `id,structure`.
    #[arg(long)]
    labels_table: Option<String>,
    /// Register on these structures only (their DRR); a name that is not a label selects
    /// every label starting with it and `_`, e.g. `vertebrae,rib`.
    #[arg(long, value_delimiter = ',', requires = "labels")]
    mask_labels: Vec<String>,
    /// Structures outlined on the overlay (default: the mask labels, else the 8 largest).
    #[arg(long, value_delimiter = ',', requires = "labels")]
    overlay: Vec<String>,
    /// A needle plan (`plan.json`) drawn on the overlay at the registered pose.
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Nominal LAO (+) / RAO (−) angle of the C-arm, degrees.
    #[arg(value_parser = super::finite, long, default_value_t = 0.0, allow_hyphen_values = true)]
    init_lao: f64,
    /// Nominal CRAN (+) / CAUD (−) angle, degrees.
    #[arg(value_parser = super::finite, long, default_value_t = 0.0, allow_hyphen_values = true)]
    init_cran: f64,
    /// Source-to-image distance, mm.
    #[arg(value_parser = super::finite, long, default_value_t = 1020.0)]
    sid: f64,
    /// Source-to-isocentre distance, mm.
    #[arg(value_parser = super::finite, long, default_value_t = 850.0)]
    sod: f64,
    /// Detector pixel pitch, mm (default: a 400 mm detector across the image width).
    #[arg(value_parser = super::finite, long)]
    pixel_mm: Option<f64>,
    /// Source anterior (radiographic AP) instead of under the table.
    #[arg(long)]
    source_anterior: bool,
    /// Rotation centre `x,y,z` in LPS mm (default: the CT's centre).
    #[arg(long, value_parser = super::parse_point, allow_hyphen_values = true)]
    isocenter: Option<[f64; 3]>,
    /// Bone dark (a display image or raw intensity): skips polarity detection.
    #[arg(long)]
    invert: bool,
    /// Similarity: gradient-ncc (default), ncc, ncc+gradient, patch-ncc[:N].
    #[arg(long, default_value = "gradient-ncc")]
    similarity: String,
    /// Voxel size (mm) of the CT at each level, coarse to fine: a global search on a ~64²
    /// detector, then refinements on ~128² (and ~256²).
    #[arg(value_parser = super::finite, long, value_delimiter = ',', default_value = "4,2")]
    levels_mm: Vec<f64>,
    /// Random seed of the optimiser.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Render the DRRs on the GPU (wgpu; backend from `WGPU_BACKEND`).
    #[arg(long)]
    gpu: bool,
    /// Final similarity below which the registration has not converged: it exits with
    /// an error and writes no pose (a blank or noise X-ray, or another body part).
    #[arg(value_parser = super::finite, long, default_value_t = pinhole_pipeline::register::DEFAULT_MIN_SIMILARITY)]
    min_similarity: f64,
    /// Go on when the CT does not look like a CT in Hounsfield units (MR, PET, NM …);
    /// pose.json's warnings record it. Default: refuse.
    #[arg(long)]
    allow_non_ct: bool,
    /// Output folder: pose.json and overlay.png.
    #[arg(long)]
    out: PathBuf,
}
pub fn run(args: &RegisterArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    super::marking_failure(&args.out, "register", || register(args, terminal))
}

fn register(args: &RegisterArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    let request = RegistrationRequest {
        ct: args.ct.clone(),
        xray: args.xray.clone(),
        labels: args.labels.clone(),
        labels_table: args.labels_table.clone(),
        mask_labels: args.mask_labels.clone(),
        overlay: args.overlay.clone(),
        plan: args.plan.clone(),
        init_lao_deg: args.init_lao,
        init_cran_deg: args.init_cran,
        sid_mm: args.sid,
        sod_mm: args.sod,
        pixel_mm: args.pixel_mm,
        source_anterior: args.source_anterior,
        isocenter_lps: args.isocenter,
        invert: args.invert,
        similarity: parse_similarity(&args.similarity)?,
        levels_mm: args.levels_mm.clone(),
        seed: args.seed,
        gpu: args.gpu,
        min_similarity: args.min_similarity,
        not_ct: super::not_ct_policy(args.allow_non_ct),
    };
    super::refuse_overwriting_inputs(
        &[
            Some(args.ct.as_path()),
            Some(args.xray.as_path()),
            args.labels.as_deref(),
            args.labels_table.as_deref().map(std::path::Path::new),
            args.plan.as_deref(),
        ],
        &super::folder_files(&args.out, &RegistrationOutcome::FILES),
    )?;
    pinhole_pipeline::register::run(&request, terminal)?.write(&args.out, terminal)?;
    Ok(())
}
