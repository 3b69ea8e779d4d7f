//! GPU digitally reconstructed radiographs (DRR): a WGSL compute kernel over the μ volume
//! held in a 3-D texture, through wgpu (Vulkan; Mesa lavapipe in CI).
//!
//! [`GpuDrr`] computes the same line integral as the CPU reference
//! `pinhole_xray::render(mu, projection, Integrator::TrilinearSamples(n))`: the ray from the
//! source through each pixel centre, clipped to the voxel-face box of the volume, `n`
//! midpoint samples, each a clamp-to-edge trilinear sample, Σ·dt·length. The trilinear
//! samples come from the hardware filter at normalised coordinate `(index + 0.5) / dims`
//! with clamp-to-edge addressing, which reproduces the CPU's clamping exactly. The
//! volume is stored as `R32Float` when the adapter offers `FLOAT32_FILTERABLE`, else as
//! `R16Float`.
//!
//! The volume is uploaded once in [`GpuDrr::new`]; every render reuses it. A batch of
//! poses is one dispatch (the dispatch's z dimension is the pose index, the poses sit in a
//! storage buffer).
//!
//! ```no_run
//! # use pinhole_volume::{Grid, Volume};
//! # use pinhole_xray::CArm;
//! let mu = Volume::filled(Grid::axis_aligned([64, 64, 64], [1.0; 3], [0.0; 3])?, 0.02f32);
//! let ctx = pinhole_gpu::GpuContext::new()?;
//! println!("{}", ctx.adapter_info());
//! let drr = pinhole_gpu::GpuDrr::new(&ctx, &mu)?;
//! let projection = CArm::new(mu.grid().center_lps()).projection()?;
//! let image = drr.render(&projection, 500)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The backend comes from the environment (`WGPU_BACKEND`, default: all native ones).

mod context;
mod drr;

pub use context::GpuContext;
pub use drr::{GpuDrr, TimedBatch};

/// What failed on the GPU path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// No adapter matched (no Vulkan driver, or `WGPU_BACKEND` excluded it).
    #[error("no GPU adapter found for backends {backends}: {reason} (install a Vulkan driver, e.g. Mesa lavapipe: apt-get install mesa-vulkan-drivers libvulkan1)")]
    NoAdapter { backends: String, reason: String },
    /// The adapter refused the device request.
    #[error("requesting a device from adapter {adapter} failed: {reason}")]
    RequestDevice { adapter: String, reason: String },
    /// The volume does not fit the adapter's 3-D texture limit.
    #[error("volume {dims:?} exceeds the adapter's 3-D texture limit of {max} texels per side")]
    VolumeTooLarge { dims: [usize; 3], max: u32 },
    /// A detector or batch too large for the adapter's buffer limits.
    #[error(
        "output of {pixels} pixels exceeds the adapter's storage-buffer limit of {max_bytes} bytes"
    )]
    OutputTooLarge { pixels: usize, max_bytes: u64 },
    /// A feature this call needs is missing on the device.
    #[error("device lacks feature {0}")]
    FeatureMissing(&'static str),
    /// wgpu reported a validation or out-of-memory error during `what`.
    #[error("wgpu error while {what}: {reason}")]
    Wgpu { what: &'static str, reason: String },
    /// Mapping a readback buffer failed.
    #[error("mapping the {what} readback buffer failed: {reason}")]
    BufferMap { what: &'static str, reason: String },
    /// The device did not finish in time (or was lost).
    #[error("waiting for the GPU while {what} failed: {reason}")]
    Poll { what: &'static str, reason: String },
}
