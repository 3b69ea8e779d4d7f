//! 2D/3D registration: the rigid pose of the CT relative to the C-arm, found from a live
//! X-ray by maximising the similarity of DRRs to it. Not for clinical use.
//!
//! * [`pose`]: six parameters ↔ 4×4 LPS matrix ↔ C-arm angles plus table translation.
//! * [`similarity`]: NCC, gradient NCC (Sobel), patch NCC, detector binning.
//! * [`cmaes`]: a compact batch CMA-ES (one render batch per generation): the global
//!   search of the coarse level.
//! * [`gauss_newton`]: Levenberg–Marquardt on the similarity's least-squares form
//!   (forward-difference Jacobian, one batch of six DRRs per iteration): the local
//!   refinement of the finer levels.
//! * [`renderer`]: the [`Renderer`] trait, the CPU renderer, and the GPU one with the
//!   `gpu` feature (off by default, so this crate stays free of wgpu).
//! * [`register`]: polarity detection and the coarse-to-fine driver.
//! * [`volume_prep`]: μ volumes (optionally masked to labels) and block downsampling.
//! * [`simulate`]: simulated X-rays and target registration error for validation.
//!
//! X-ray images are read by `pinhole_io::xray_image` (PNG, 2-D NIfTI, single-file DICOM).

pub mod cmaes;
pub mod gauss_newton;
pub mod pose;
pub mod register;
pub mod renderer;
pub mod similarity;
pub mod simulate;
pub mod volume_prep;

pub use pose::{CArmPose, Pose};
pub use register::{
    default_levels, register, LevelReport, LevelSpec, Polarity, Registration, Search, Settings,
    DEFAULT_LEVELS_MM,
};
#[cfg(feature = "gpu")]
pub use renderer::{gpu_renderers, GpuRenderer};
pub use renderer::{CpuRenderer, Renderer};
pub use similarity::Similarity;

/// What went wrong in a registration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    #[error("geometry: {0}")]
    Geometry(#[from] pinhole_xray::GeometryError),
    #[error("rendering failed: {0}")]
    Render(String),
    #[error("volume: {0}")]
    Volume(String),
    #[error("input: {0}")]
    Input(String),
}
