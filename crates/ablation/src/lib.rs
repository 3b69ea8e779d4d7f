//! Thermal ablation planning for Pinhole. **Not for clinical use.**
//!
//! * [`devices`]: device zone tables (TOML; shipped entries are examples with sources).
//! * [`zone`]: applicators and ellipsoidal zones in LPS mm.
//! * [`bioheat`]: Pennes bioheat solver (explicit finite differences, rayon slabs).
//! * [`physics`]: vaporisation, temperature-dependent conductivity, dehydration.
//! * [`calibration`]: device source models fitted to their zone tables (±15 %).
//! * [`damage`]: Arrhenius Ω and CEM43 (every report names its [`damage::Criterion`]).
//! * [`coverage`]: tumour / tumour + margin coverage, minimal signed margin, heat sinks.
//! * [`placement`]: insertion depth along a needle path; greedy multi-applicator cover.
//! * [`vein`]: endovenous laser ablation dose (LEED, J/cm²) and foam volume.
//! * [`plan`]: the pipeline used by `pinhole plan ablation`.
//!
//! World coordinates are LPS millimetres throughout.
//!
//! ```
//! use pinhole_ablation::vein::evla_dose;
//! // 10 W at 1 mm/s: 100 J/cm.
//! let dose = evla_dose(10.0, 1.0, 5.0, 30.0)?;
//! assert!((dose.leed_j_cm - 100.0).abs() < 1e-9);
//! # Ok::<(), pinhole_ablation::AblationError>(())
//! ```

pub mod bioheat;
pub mod calibration;
pub mod coverage;
pub mod damage;
pub mod devices;
mod error;
pub mod physics;
pub mod placement;
pub mod plan;
pub mod vein;
pub mod zone;

pub use error::AblationError;
