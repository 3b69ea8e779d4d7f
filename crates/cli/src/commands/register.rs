//! `pinhole register`: the pose of the CT relative to the C-arm from a live X-ray
//! (intensity-based 2D/3D registration, `pinhole-register`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use pinhole_io::labels::LabelTable;
use pinhole_register::volume_prep::mu_pyramid;
use pinhole_register::{
    default_levels, register, CArmPose, CpuRenderer, LevelSpec, Polarity, Pose, Renderer, Settings,
    Similarity,
};
use pinhole_volume::Volume;
use pinhole_xray::display::{fluoroscopy_gray, Window};
use pinhole_xray::{Attenuation, CArm, Detector, Image, Projection};
use serde_json::json;

use crate::report::DISCLAIMER;

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
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    init_lao: f64,
    /// Nominal CRAN (+) / CAUD (−) angle, degrees.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    init_cran: f64,
    /// Source-to-image distance, mm.
    #[arg(long, default_value_t = 1020.0)]
    sid: f64,
    /// Source-to-isocentre distance, mm.
    #[arg(long, default_value_t = 850.0)]
    sod: f64,
    /// Detector pixel pitch, mm (default: a 400 mm detector across the image width).
    #[arg(long)]
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
    #[arg(long, value_delimiter = ',', default_value = "4,2")]
    levels_mm: Vec<f64>,
    /// Random seed of the optimiser.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Render the DRRs on the GPU (wgpu; backend from `WGPU_BACKEND`).
    #[arg(long)]
    gpu: bool,
    /// Output folder: pose.json and overlay.png.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: &RegisterArgs) -> anyhow::Result<()> {
    let similarity = Similarity::parse(&args.similarity)
        .with_context(|| format!("--similarity: unknown measure {:?}", args.similarity))?;
    if args.levels_mm.is_empty() || args.levels_mm.iter().any(|v| v.is_nan() || *v <= 0.0) {
        bail!(
            "--levels-mm needs positive voxel sizes, got {:?}",
            args.levels_mm
        );
    }
    let xray = pinhole_register::input::read_xray(&args.xray)?;
    eprintln!(
        "X-ray {}: {}x{}",
        args.xray.display(),
        xray.width,
        xray.height
    );
    let ct = super::load(&args.ct, None)?.volume;
    let grid = ct.grid().clone();
    let ct_hu = ct.to_f32();
    drop(ct);

    let (table_name, table) = super::label_table(args.labels_table.as_deref())?;
    let labels = match &args.labels {
        Some(path) => {
            let l = super::load(path, None)?.volume;
            if !l.grid().same_geometry(&grid, 1e-3) {
                bail!("{}: label map is not on the CT's grid", path.display());
            }
            Some(
                l.to_labels()
                    .with_context(|| format!("{} is not a label map", path.display()))?,
            )
        }
        None => None,
    };
    let mask_ids = match &labels {
        Some(l) if !args.mask_labels.is_empty() => resolve_names(&args.mask_labels, &table, l)?,
        _ => Vec::new(),
    };
    let mask = labels
        .as_ref()
        .filter(|_| !mask_ids.is_empty())
        .map(|l| (l, mask_ids.as_slice()));

    let mut carm = CArm::new(args.isocenter.unwrap_or_else(|| grid.center_lps()));
    carm.lao_deg = args.init_lao;
    carm.cran_deg = args.init_cran;
    carm.sid_mm = args.sid;
    carm.sod_mm = args.sod;
    carm.source_anterior = args.source_anterior;
    carm.detector = Detector {
        width: xray.width,
        height: xray.height,
        pixel_mm: args.pixel_mm.unwrap_or(400.0 / xray.width as f64),
    };
    let nominal = carm.projection()?;

    let pyramid = mu_pyramid(&ct_hu, &Attenuation::default(), mask, &args.levels_mm)?;
    let renderers: Vec<Box<dyn Renderer>> = if args.gpu {
        let ctx = pinhole_gpu::GpuContext::new().context("--gpu: no usable GPU adapter")?;
        eprintln!("GPU: {}", ctx.adapter_info());
        pyramid
            .iter()
            .map(|mu| {
                Ok(
                    Box::new(pinhole_register::GpuRenderer::new(&ctx, mu, None)?)
                        as Box<dyn Renderer>,
                )
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        pyramid
            .into_iter()
            .map(|mu| Box::new(CpuRenderer::new(mu, None)) as Box<dyn Renderer>)
            .collect()
    };
    let specs = default_levels(xray.width, renderers.len());
    let levels: Vec<(&dyn Renderer, LevelSpec)> =
        renderers.iter().map(|r| r.as_ref()).zip(specs).collect();
    let settings = Settings {
        similarity,
        polarity: args.invert.then_some(Polarity::Inverted),
        seed: args.seed,
        ..Settings::default()
    };
    let start = Pose::identity(carm.isocenter_lps);
    let reg = register(&xray, &nominal, &start, &levels, &settings)?;
    let angles = CArmPose::from_pose(&reg.pose, &carm)?;
    eprintln!(
        "registered in {:.1} s, {} DRRs ({:.0}/s): LAO {:.2}°, CRAN {:.2}°, table {:.1?} mm, similarity {:.4}",
        reg.seconds,
        reg.drrs_rendered,
        reg.drrs_per_second(),
        angles.lao_deg,
        angles.cran_deg,
        angles.translation_mm,
        reg.similarity
    );

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let input = |p: &Path| {
        json!({"path": p.display().to_string(),
               "bytes": std::fs::metadata(p).map(|m| m.len()).ok()})
    };
    let mut inputs = vec![input(&args.ct), input(&args.xray)];
    if let Some(l) = &args.labels {
        inputs.push(input(l));
    }
    let report = json!({
        "lao_deg": angles.lao_deg,
        "cran_deg": angles.cran_deg,
        "roll_deg": angles.roll_deg,
        "translation_mm": angles.translation_mm,
        "rotation_deg": reg.pose.rotation_deg,
        "center_lps": reg.pose.center_lps,
        "matrix_lps": reg.pose.matrix(),
        "matrix_lps_meaning": "row-major 4x4, CT LPS mm -> C-arm room LPS mm (the CT's pose for the nominal C-arm)",
        "similarity": reg.similarity,
        "similarity_measure": similarity,
        "drrs_rendered": reg.drrs_rendered,
        "drrs_per_second": reg.drrs_per_second(),
        "seconds": reg.seconds,
        "polarity": reg.polarity,
        "polarity_detected": !args.invert,
        "polarity_scores": reg.polarity_scores,
        "renderer": if args.gpu { "gpu" } else { "cpu" },
        "levels": reg.levels,
        "mask_label_ids": mask_ids,
        "nominal": {"lao_deg": args.init_lao, "cran_deg": args.init_cran, "sid_mm": args.sid,
                    "sod_mm": args.sod, "pixel_mm": carm.detector.pixel_mm,
                    "isocenter_lps": carm.isocenter_lps, "source_anterior": args.source_anterior},
        "label_table": table_name,
        "inputs": inputs,
        "version": env!("CARGO_PKG_VERSION"),
        "note": DISCLAIMER,
    });
    let pose_path = args.out.join("pose.json");
    std::fs::write(&pose_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", pose_path.display()))?;
    eprintln!("wrote {}", pose_path.display());

    let registered = reg.pose.projection(&nominal)?;
    let rgb = overlay(
        args,
        &xray,
        reg.polarity,
        labels.as_ref(),
        &table,
        &mask_ids,
        &registered,
    )?;
    let overlay_path = args.out.join("overlay.png");
    pinhole_io::png::write_rgb8(&overlay_path, xray.width as u32, xray.height as u32, &rgb)?;
    eprintln!("wrote {}", overlay_path.display());
    Ok(())
}

/// Label ids for names: exact names, else every label `name_*` present in the map.
fn resolve_names(
    names: &[String],
    table: &LabelTable,
    labels: &Volume<u16>,
) -> anyhow::Result<Vec<u16>> {
    let present = pinhole_volume::label_stats(labels);
    let mut ids = Vec::new();
    for name in names {
        let name = name.trim();
        if let Some(id) = table.id_of(name) {
            ids.push(u16::try_from(id).with_context(|| format!("label id {id} exceeds 65535"))?);
            continue;
        }
        let prefix = format!("{name}_");
        let group: Vec<u16> = present
            .keys()
            .filter(|&&id| table.name(id).is_some_and(|n| n.starts_with(&prefix)))
            .filter_map(|&id| u16::try_from(id).ok())
            .collect();
        if group.is_empty() {
            bail!("no label named {name:?} (nor {prefix}*) in the label table");
        }
        ids.extend(group);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// The live image (bone dark) with the outlines of the projected structures and the plan.
fn overlay(
    args: &RegisterArgs,
    xray: &Image,
    polarity: Polarity,
    labels: Option<&Volume<u16>>,
    table: &LabelTable,
    mask_ids: &[u16],
    registered: &Projection,
) -> anyhow::Result<Vec<u8>> {
    let integral = polarity.apply(xray);
    let window = Window::from_percentiles(&shifted_positive(&integral), 1.0, 99.0);
    let gray = fluoroscopy_gray(&shifted_positive(&integral), window);
    let mut rgb: Vec<u8> = gray.iter().flat_map(|&g| [g; 3]).collect();
    if let Some(labels) = labels {
        let ids = if !args.overlay.is_empty() {
            resolve_names(&args.overlay, table, labels)?
        } else if !mask_ids.is_empty() {
            mask_ids.to_vec()
        } else {
            let mut stats: Vec<_> = pinhole_volume::label_stats(labels).into_values().collect();
            stats.sort_by_key(|s| std::cmp::Reverse(s.voxels));
            stats
                .iter()
                .take(8)
                .filter_map(|s| u16::try_from(s.id).ok())
                .collect()
        };
        let images = pinhole_xray::project_labels(labels, &ids, registered);
        for (img, &id) in images.iter().zip(&ids) {
            draw_outline(&mut rgb, img, table.color_of(u32::from(id)));
        }
    }
    if let Some(plan) = &args.plan {
        super::drr::draw_plan(plan, registered, &mut rgb)?;
    }
    Ok(rgb)
}

/// The image shifted so its minimum is just above zero (the display window ignores zeros).
fn shifted_positive(image: &Image) -> Image {
    let min = image.data.iter().copied().fold(f32::INFINITY, f32::min);
    Image {
        width: image.width,
        height: image.height,
        data: image.data.iter().map(|v| v - min + 1e-6).collect(),
    }
}

/// Pixels inside the projection whose 4-neighbourhood leaves it.
fn draw_outline(rgb: &mut [u8], lengths: &Image, color: [u8; 3]) {
    let (w, h) = (lengths.width, lengths.height);
    let inside = |c: usize, r: usize| lengths.data[r * w + c] > 0.0;
    for r in 0..h {
        for c in 0..w {
            if !inside(c, r) {
                continue;
            }
            let edge = c == 0
                || r == 0
                || c + 1 == w
                || r + 1 == h
                || !inside(c - 1, r)
                || !inside(c + 1, r)
                || !inside(c, r - 1)
                || !inside(c, r + 1);
            if edge {
                rgb[3 * (r * w + c)..3 * (r * w + c) + 3].copy_from_slice(&color);
            }
        }
    }
}
