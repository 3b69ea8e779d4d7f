//! DRR renderers behind one trait: the CPU renderer here, the GPU one (`pinhole-gpu`)
//! with the `gpu` feature. Both compute `pinhole_xray::render(.., TrilinearSamples(n))`.

use pinhole_volume::Volume;
use pinhole_xray::{Image, Integrator, Projection};
use rayon::prelude::*;

use crate::RegisterError;

/// Renders line-integral images of one μ volume for a batch of projections.
pub trait Renderer {
    /// One image per projection, in order.
    fn render_batch(&self, projections: &[Projection]) -> Result<Vec<Image>, RegisterError>;
    /// A short description (device, volume size, samples per ray).
    fn describe(&self) -> String;
}

/// Samples per ray for a volume: about one per voxel along its longest side.
pub fn samples_for(mu: &Volume<f32>) -> usize {
    let g = mu.grid();
    let extent = (0..3)
        .map(|a| g.dims()[a] as f64 * g.spacing_mm()[a])
        .fold(0.0, f64::max);
    let step = g.spacing_mm().iter().copied().fold(f64::INFINITY, f64::min);
    ((extent / step).ceil() as usize).clamp(32, 1024)
}

/// The CPU ray marcher (rayon over poses and detector rows).
pub struct CpuRenderer {
    mu: Volume<f32>,
    samples: usize,
}

impl CpuRenderer {
    /// `samples` trilinear samples per ray (`None`: [`samples_for`]).
    pub fn new(mu: Volume<f32>, samples: Option<usize>) -> Self {
        let samples = samples.unwrap_or_else(|| samples_for(&mu));
        Self { mu, samples }
    }

    pub fn volume(&self) -> &Volume<f32> {
        &self.mu
    }

    pub fn samples(&self) -> usize {
        self.samples
    }
}

impl Renderer for CpuRenderer {
    fn render_batch(&self, projections: &[Projection]) -> Result<Vec<Image>, RegisterError> {
        let integrator = Integrator::TrilinearSamples(self.samples);
        Ok(projections
            .par_iter()
            .map(|p| pinhole_xray::render(&self.mu, p, integrator))
            .collect())
    }

    fn describe(&self) -> String {
        let d = self.mu.grid().dims();
        let s = self.mu.grid().spacing_mm();
        format!(
            "CPU trilinear, {}x{}x{} at {:.2}x{:.2}x{:.2} mm, {} samples/ray",
            d[0], d[1], d[2], s[0], s[1], s[2], self.samples
        )
    }
}

/// The wgpu renderer of `pinhole-gpu` (feature `gpu`).
#[cfg(feature = "gpu")]
pub struct GpuRenderer {
    drr: pinhole_gpu::GpuDrr,
    dims: [usize; 3],
    samples: usize,
    adapter: String,
}

#[cfg(feature = "gpu")]
impl GpuRenderer {
    /// Uploads `mu` to the device of `ctx`.
    pub fn new(
        ctx: &pinhole_gpu::GpuContext,
        mu: &Volume<f32>,
        samples: Option<usize>,
    ) -> Result<Self, RegisterError> {
        let drr =
            pinhole_gpu::GpuDrr::new(ctx, mu).map_err(|e| RegisterError::Render(e.to_string()))?;
        Ok(Self {
            drr,
            dims: mu.grid().dims(),
            samples: samples.unwrap_or_else(|| samples_for(mu)),
            adapter: ctx.info().name.clone(),
        })
    }
}

/// One GPU renderer per level of a μ pyramid (coarse to fine), on the device of `ctx`.
#[cfg(feature = "gpu")]
pub fn gpu_renderers(
    ctx: &pinhole_gpu::GpuContext,
    pyramid: &[Volume<f32>],
) -> Result<Vec<Box<dyn Renderer>>, RegisterError> {
    pyramid
        .iter()
        .map(|mu| Ok(Box::new(GpuRenderer::new(ctx, mu, None)?) as Box<dyn Renderer>))
        .collect()
}

#[cfg(feature = "gpu")]
impl Renderer for GpuRenderer {
    fn render_batch(&self, projections: &[Projection]) -> Result<Vec<Image>, RegisterError> {
        self.drr
            .render_batch(projections, self.samples)
            .map_err(|e| RegisterError::Render(e.to_string()))
    }

    fn describe(&self) -> String {
        let d = self.dims;
        format!(
            "GPU {} ({}x{}x{}, {} samples/ray)",
            self.adapter, d[0], d[1], d[2], self.samples
        )
    }
}
