//! Simulated fluoroscopy: digitally reconstructed radiographs (DRR) from CT on the CPU.
//!
//! * [`geometry`]: cone-beam projections from C-arm angles (LAO/RAO, CRAN/CAUD, SID,
//!   SOD), a 3×4 matrix or a 4×4 pose, all in LPS mm.
//! * [`attenuation`]: HU → μ (bilinear water/bone model, nanodrr's defaults).
//! * [`render`]: line integrals by trilinear ray marching or exact Siddon (rayon over
//!   rows), per-label path lengths for overlays.
//! * [`coarse`]: block-averaged volumes, cropped organ occupancy and half-resolution
//!   projections for interactive DRRs (the viewer's C-arm sliders).
//! * [`display`]: fluoroscopy-monitor image (Beer–Lambert, log, inverted, percentile
//!   window) and coloured overlays.
//!
//! The GPU renderer (`pinhole-gpu`) implements the same integral and is tested against
//! [`render::render`] with [`render::Integrator::TrilinearSamples`].

pub mod attenuation;
pub mod coarse;
pub mod display;
pub mod geometry;
pub mod render;
mod slab;
#[cfg(target_arch = "x86_64")]
mod trilinear_avx2;

pub use attenuation::Attenuation;
pub use geometry::{CArm, Detector, GeometryError, Projection};
pub use render::{project_labels, render, render_batch, Image, Integrator, RayVolume};
