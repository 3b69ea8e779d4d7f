//! Simulated fluoroscopy (`pinhole drr`): a DRR for a C-arm pose with organ overlays and
//! a needle plan, as a PNG and optionally the line integrals as a NIfTI on the detector.

use std::path::{Path, PathBuf};

use pinhole_io::AnyVolume;
use pinhole_volume::{Grid, Vec3, Volume};
use pinhole_xray::display::{
    compose_rgb, draw_projected_polyline, fluoroscopy_gray, Overlay, Window,
};
use pinhole_xray::{Attenuation, CArm, Detector, Image, Integrator, Projection};

use crate::error::{OrInvalid, Result};
use crate::figures::{write_picture, RgbPicture};
use crate::inputs::{check_ct, label_table, labels_of, load, require_same_grid, NotCt};
use crate::limits::{self, check_finite_point};
use crate::needle::PlanPaths;
use crate::observe::Observer;
use crate::register::plan_lines;

/// How rays are integrated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DrrMethod {
    /// `n` trilinear samples per ray inside the volume.
    Trilinear(usize),
    /// Exact Siddon ray tracing.
    Siddon,
    /// The GPU (wgpu), `n` samples per ray.
    Gpu(usize),
}

/// A DRR to render.
#[derive(Debug, Clone, PartialEq)]
pub struct DrrRequest {
    pub ct: PathBuf,
    /// LAO (+) / RAO (−), degrees.
    pub lao_deg: f64,
    /// CRAN (+) / CAUD (−), degrees.
    pub cran_deg: f64,
    pub sid_mm: f64,
    pub sod_mm: f64,
    pub source_anterior: bool,
    /// Detector side (pixels, square) and pitch.
    pub size_px: usize,
    pub pixel_mm: f64,
    /// Rotation centre (default: the volume's centre).
    pub isocenter_lps: Option<Vec3>,
    pub method: DrrMethod,
    /// Label map (on the CT's grid) and table for `overlay`.
    pub labels: Option<PathBuf>,
    pub labels_table: Option<String>,
    /// Structures drawn in colour, by name.
    pub overlay: Vec<String>,
    /// A needle plan whose paths are projected.
    pub plan: Option<PathBuf>,
    /// A CT that does not look like one: refuse (default) or go on with a warning.
    pub not_ct: NotCt,
}

impl DrrRequest {
    /// The frontal view (LAO 0 / CRAN 0), 512² of 0.78 mm, 500 trilinear samples.
    pub fn new(ct: &Path) -> Self {
        Self {
            ct: ct.to_path_buf(),
            lao_deg: 0.0,
            cran_deg: 0.0,
            sid_mm: 1020.0,
            sod_mm: 850.0,
            source_anterior: false,
            size_px: 512,
            pixel_mm: 0.78125,
            isocenter_lps: None,
            method: DrrMethod::Trilinear(500),
            labels: None,
            labels_table: None,
            overlay: Vec::new(),
            plan: None,
            not_ct: NotCt::default(),
        }
    }

    /// Refuses parameters outside [`crate::limits`] (before any file is read).
    pub fn validate(&self) -> Result<()> {
        limits::check_carm(self.lao_deg, self.cran_deg, self.sid_mm, self.sod_mm)?;
        limits::DRR_SIZE_PX.check_count(self.size_px)?;
        limits::DRR_PIXEL_MM.check(self.pixel_mm)?;
        if let DrrMethod::Trilinear(n) | DrrMethod::Gpu(n) = self.method {
            limits::DRR_SAMPLES.check_count(n)?;
        }
        check_finite_point("--isocenter", self.isocenter_lps)
    }

    /// The C-arm of this request for a CT on `grid` (isocentre: the grid's centre unless
    /// given).
    pub fn carm(&self, grid: &Grid) -> CArm {
        let mut carm = CArm::new(self.isocenter_lps.unwrap_or_else(|| grid.center_lps()));
        carm.lao_deg = self.lao_deg;
        carm.cran_deg = self.cran_deg;
        carm.sid_mm = self.sid_mm;
        carm.sod_mm = self.sod_mm;
        carm.source_anterior = self.source_anterior;
        carm.detector = Detector {
            width: self.size_px,
            height: self.size_px,
            pixel_mm: self.pixel_mm,
        };
        carm
    }
}

/// A rendered DRR.
#[derive(Debug, Clone)]
pub struct DrrOutcome {
    /// What a fluoroscopy monitor shows (dense structures dark), overlays drawn.
    pub picture: RgbPicture,
    /// The line integrals (row 0 = displayed top).
    pub line_integrals: Image,
    pub projection: Projection,
    /// What the caller must show with the picture (an overridden CT check).
    pub warnings: Vec<String>,
}

/// Renders the DRR.
pub fn run(request: &DrrRequest, observer: &dyn Observer) -> Result<DrrOutcome> {
    request.validate()?;
    let loaded = load(&request.ct, None, observer)?;
    let warnings: Vec<String> = check_ct(&request.ct, &loaded, request.not_ct, observer)?
        .into_iter()
        .collect();
    let ct = loaded.volume;
    let mu = pinhole_io::with_volume!(&ct, v => Attenuation::default().mu_volume(v));
    let projection = request.carm(ct.grid()).projection()?;
    let image = match request.method {
        DrrMethod::Gpu(samples) => render_on_gpu(&mu, &projection, samples, observer)?,
        DrrMethod::Siddon => pinhole_xray::render(&mu, &projection, Integrator::Siddon),
        DrrMethod::Trilinear(n) => {
            pinhole_xray::render(&mu, &projection, Integrator::TrilinearSamples(n))
        }
    };
    let gray = fluoroscopy_gray(&image, Window::from_percentiles(&image, 1.0, 99.0));
    let overlays = overlay_images(request, ct.grid(), &projection, observer)?;
    let overlay_refs: Vec<Overlay> = overlays
        .iter()
        .map(|(img, color)| Overlay {
            lengths_mm: img,
            color_rgb: *color,
        })
        .collect();
    let mut rgb = compose_rgb(&gray, &overlay_refs);
    if let Some(plan) = &request.plan {
        for (points, color) in plan_lines(&PlanPaths::read(plan)?) {
            draw_projected_polyline(&mut rgb, &projection, &points, color, 1);
        }
    }
    Ok(DrrOutcome {
        picture: RgbPicture {
            width: projection.width,
            height: projection.height,
            rgb,
        },
        line_integrals: image,
        projection,
        warnings,
    })
}

#[cfg(feature = "gpu")]
fn render_on_gpu(
    mu: &Volume<f32>,
    projection: &Projection,
    samples: usize,
    observer: &dyn Observer,
) -> Result<Image> {
    use crate::error::Context;
    let ctx = pinhole_gpu::GpuContext::new().context("--gpu: no usable GPU adapter")?;
    observer.info(&format!("GPU: {}", ctx.adapter_info()));
    let drr = pinhole_gpu::GpuDrr::new(&ctx, mu)?;
    Ok(drr.render(projection, samples)?)
}

#[cfg(not(feature = "gpu"))]
fn render_on_gpu(
    _mu: &Volume<f32>,
    _projection: &Projection,
    _samples: usize,
    _observer: &dyn Observer,
) -> Result<Image> {
    Err(crate::Error::invalid(
        "--gpu: this build has no GPU support (feature `gpu`)",
    ))
}

/// Path lengths through each overlaid structure, with its colour.
fn overlay_images(
    request: &DrrRequest,
    ct_grid: &Grid,
    projection: &Projection,
    observer: &dyn Observer,
) -> Result<Vec<(Image, [u8; 3])>> {
    if request.overlay.is_empty() {
        return Ok(Vec::new());
    }
    let labels_path = request
        .labels
        .as_deref()
        .or_invalid(|| "--overlay needs --labels".to_owned())?;
    let labels = load(labels_path, None, observer)?.volume;
    require_same_grid(labels.grid(), ct_grid, labels_path)?;
    let labels = labels_of(labels, labels_path)?;
    let (_, table) = label_table(request.labels_table.as_deref())?;
    let ids = request
        .overlay
        .iter()
        .map(|name| {
            let id = table
                .id_of(name.trim())
                .or_invalid(|| format!("no label named {name:?} in the label table"))?;
            u16::try_from(id)
                .ok()
                .or_invalid(|| format!("label id {id} exceeds 65535"))
        })
        .collect::<Result<Vec<u16>>>()?;
    let images = pinhole_xray::project_labels(&labels, &ids, projection);
    Ok(images
        .into_iter()
        .zip(&ids)
        .map(|(img, &id)| (img, table.color_of(u32::from(id))))
        .collect())
}

impl DrrOutcome {
    /// Writes the picture as PNG.
    pub fn write_png(&self, path: &Path) -> Result<()> {
        write_picture(path, &self.picture)
    }

    /// Writes the line integrals as a float32 NIfTI/NRRD placed on the detector plane
    /// (i = column, j = row).
    pub fn write_raw(&self, path: &Path) -> Result<()> {
        let grid = self.projection.detector_grid()?;
        let volume = Volume::new(grid, self.line_integrals.data.clone())?;
        pinhole_io::open::write_volume(path, &AnyVolume::F32(volume))?;
        Ok(())
    }
}
