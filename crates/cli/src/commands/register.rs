//! `pinhole register`: the pose of the CT relative to the C-arm from a live X-ray
//! (intensity-based 2D/3D registration).

use std::path::PathBuf;

use clap::Args;
use pinhole_io::xray_image::XrayGeometry;
use pinhole_pipeline::register::{parse_similarity, RegistrationOutcome, RegistrationRequest};
use pinhole_pipeline::Observer;

#[derive(Args)]
pub struct RegisterArgs {
    /// CT in HU (NIfTI, NRRD or a DICOM folder).
    #[arg(long)]
    ct: PathBuf,
    /// Live X-ray: PNG (8/16-bit), a single-file DICOM (XA, RF, DX, CR, X-ray) or a 2-D
    /// NIfTI. Row 0 is the displayed top; in the frontal view the patient's right is on the
    /// viewer's left. A DICOM file's DistanceSourceToDetector, DistanceSourceToPatient,
    /// ImagerPixelSpacing and positioner angles stand in for --sid, --sod, --pixel-mm,
    /// --init-lao and --init-cran when those are not given (flags win over the header).
    #[arg(long)]
    xray: PathBuf,
    /// Frame of a multi-frame DICOM X-ray (XA / RF / DX cine), numbered from 0.
    #[arg(long, default_value_t = 0)]
    frame: usize,
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
    /// Nominal LAO (+) / RAO (−) angle of the C-arm, degrees [default: the DICOM
    /// header's PositionerPrimaryAngle, else 0].
    #[arg(value_parser = super::finite, long, allow_hyphen_values = true)]
    init_lao: Option<f64>,
    /// Nominal CRAN (+) / CAUD (−) angle, degrees [default: the DICOM header's
    /// PositionerSecondaryAngle, else 0].
    #[arg(value_parser = super::finite, long, allow_hyphen_values = true)]
    init_cran: Option<f64>,
    /// Source-to-image distance, mm [default: the DICOM header's
    /// DistanceSourceToDetector, else 1020].
    #[arg(value_parser = super::finite, long)]
    sid: Option<f64>,
    /// Source-to-isocentre distance, mm [default: the DICOM header's
    /// DistanceSourceToPatient, else 850].
    #[arg(value_parser = super::finite, long)]
    sod: Option<f64>,
    /// Detector pixel pitch, mm [default: the DICOM header's ImagerPixelSpacing (square
    /// pixels required, within 1 %), else a 400 mm detector across the image width].
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
    /// Voxel size (mm) of the CT at each level, coarse to fine: a global search (CMA-ES) on
    /// the first, Gauss–Newton refinements on the others; each level's detector is binned
    /// to pixels of about 1.25 voxels at the isocentre.
    #[arg(value_parser = super::finite, long, value_delimiter = ',', default_value = "8,4,2")]
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
    /// Skip the left-right check (the X-ray mirrored is registered through the first two
    /// levels too; when it fits clearly better the X-ray is taken to be flipped and
    /// refused).
    #[arg(long)]
    no_mirror_check: bool,
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

/// `--init-lao` / `--init-cran` without a flag or a header value, degrees.
const DEFAULT_ANGLE_DEG: f64 = 0.0;
/// `--sid` without a flag or a header value, mm.
const DEFAULT_SID_MM: f64 = 1020.0;
/// `--sod` without a flag or a header value, mm.
const DEFAULT_SOD_MM: f64 = 850.0;
/// Largest relative difference between ImagerPixelSpacing's row and column spacing
/// still taken as square pixels (the registration's detector has square pixels).
const SQUARE_PIXEL_TOLERANCE: f64 = 0.01;

/// The nominal C-arm: each value from its flag, else the X-ray's DICOM header, else the
/// default; `from_header` lists what came from the header, `warnings` the header's
/// unusable geometry tags.
struct NominalGeometry {
    lao_deg: f64,
    cran_deg: f64,
    sid_mm: f64,
    sod_mm: f64,
    pixel_mm: Option<f64>,
    from_header: Vec<String>,
    warnings: Vec<String>,
}

/// The flag's value, else the header's (recorded in `from_header`), else `default`.
fn pick(
    from_header: &mut Vec<String>,
    flag: Option<f64>,
    tag: Option<f64>,
    default: f64,
    shown: impl Fn(f64) -> String,
) -> f64 {
    match (flag, tag) {
        (Some(v), _) => v,
        (None, Some(v)) => {
            from_header.push(shown(v));
            v
        }
        (None, None) => default,
    }
}

fn nominal_geometry(
    args: &RegisterArgs,
    header: Option<&XrayGeometry>,
) -> anyhow::Result<NominalGeometry> {
    let mut from_header = Vec::new();
    let header_or_empty = header.cloned().unwrap_or_default();
    let h = &header_or_empty;
    let sid_mm = pick(
        &mut from_header,
        args.sid,
        h.distance_source_to_detector_mm,
        DEFAULT_SID_MM,
        |v| format!("SID {v} mm"),
    );
    let sod_mm = pick(
        &mut from_header,
        args.sod,
        h.distance_source_to_patient_mm,
        DEFAULT_SOD_MM,
        |v| format!("SOD {v} mm"),
    );
    let header_pixel_mm = match (args.pixel_mm, h.imager_pixel_spacing_mm) {
        (None, Some([row_mm, column_mm])) => {
            if (row_mm - column_mm).abs() > SQUARE_PIXEL_TOLERANCE * column_mm {
                anyhow::bail!(
                    "{}: ImagerPixelSpacing {row_mm} \\ {column_mm} mm (row \\ column) is not \
                     square (they differ by more than 1 %), and the registration assumes \
                     square detector pixels; give --pixel-mm to use one pitch anyway",
                    args.xray.display()
                );
            }
            Some(column_mm)
        }
        _ => None,
    };
    let pixel_mm = match header_pixel_mm {
        Some(v) => {
            from_header.push(format!("pixel {v} mm"));
            Some(v)
        }
        None => args.pixel_mm,
    };
    let lao_deg = pick(
        &mut from_header,
        args.init_lao,
        h.positioner_primary_angle_deg,
        DEFAULT_ANGLE_DEG,
        |v| format!("LAO {v}°"),
    );
    let cran_deg = pick(
        &mut from_header,
        args.init_cran,
        h.positioner_secondary_angle_deg,
        DEFAULT_ANGLE_DEG,
        |v| format!("CRAN {v}°"),
    );
    Ok(NominalGeometry {
        lao_deg,
        cran_deg,
        sid_mm,
        sod_mm,
        pixel_mm,
        from_header,
        warnings: h
            .warnings
            .iter()
            .map(|w| format!("X-ray DICOM header: {w}"))
            .collect(),
    })
}

fn register(args: &RegisterArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    let header = pinhole_io::xray_image::read_geometry(&args.xray)?;
    let nominal = nominal_geometry(args, header.as_ref())?;
    let mut extra_warnings = nominal.warnings.clone();
    for warning in &nominal.warnings {
        terminal.warn(warning);
    }
    if !nominal.from_header.is_empty() {
        let line = format!(
            "geometry from the DICOM header: {}",
            nominal.from_header.join(", ")
        );
        terminal.info(&line);
        extra_warnings.push(line);
    }
    if let Some(frames) = header
        .as_ref()
        .map(|h| h.number_of_frames)
        .filter(|n| *n > 1)
    {
        terminal.info(&format!(
            "{}: frame {} of {frames} (--frame, from 0)",
            args.xray.display(),
            args.frame
        ));
    }
    let request = RegistrationRequest {
        ct: args.ct.clone(),
        xray: args.xray.clone(),
        xray_frame: args.frame,
        extra_warnings,
        labels: args.labels.clone(),
        labels_table: args.labels_table.clone(),
        mask_labels: args.mask_labels.clone(),
        overlay: args.overlay.clone(),
        plan: args.plan.clone(),
        init_lao_deg: nominal.lao_deg,
        init_cran_deg: nominal.cran_deg,
        sid_mm: nominal.sid_mm,
        sod_mm: nominal.sod_mm,
        pixel_mm: nominal.pixel_mm,
        source_anterior: args.source_anterior,
        isocenter_lps: args.isocenter,
        invert: args.invert,
        similarity: parse_similarity(&args.similarity)?,
        levels_mm: args.levels_mm.clone(),
        seed: args.seed,
        gpu: args.gpu,
        min_similarity: args.min_similarity,
        mirror_check: !args.no_mirror_check,
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
