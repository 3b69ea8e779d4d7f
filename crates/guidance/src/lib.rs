//! Pinhole's live needle guidance, synchronous and transport-free: what the guidance
//! server (`pinhole-server`, tokio), the Python bindings, live ultrasound or a DICOM
//! receiver share. Not for clinical use.
//!
//! - [`engine`]: pure geometry — a needle pose (LPS) → [`GuidanceMetrics`] (distance to
//!   target, deviation, angle, depth, nearest risk structure, alert).
//! - [`pose`]: the RAS ↔ LPS edge (tracked poses arrive in RAS) and 4×4 helpers.
//! - [`session`]: the plan (a needle plan or a target), the risk model and the
//!   registration, described by [`SessionDescription`] (`/api/session`).
//! - [`scene`]: what the web viewer gets (volumes, labels, lines, overlays, DRRs).
//! - [`synthesize`]: deterministic needle insertions along a plan.
//!
//! Coordinates are LPS mm inside; RAS enters and leaves only through [`pose`].
//!
//! ```
//! use std::collections::BTreeMap;
//! use pinhole_guidance::{Guidance, NeedlePose, PlanGeometry, TargetZone, Thresholds};
//! use pinhole_volume::{Grid, Volume};
//!
//! let grid = Grid::axis_aligned([20, 20, 20], [1.0; 3], [0.0; 3])?;
//! let labels = Volume::new(grid.clone(), vec![0u16; grid.voxel_count()])?;
//! let plan = PlanGeometry { target_lps: [10.0, 10.0, 10.0], entry_lps: Some([10.0, 0.0, 10.0]) };
//! let zone = TargetZone::Sphere { center_lps: [10.0, 10.0, 10.0], radius_mm: 2.0 };
//! let guidance = Guidance::new(plan, zone, labels, BTreeMap::new(), &[], &[], Thresholds::default());
//! // The tip 4 mm short of the target, on the planned line.
//! let pose = NeedlePose { tip_lps: [10.0, 6.0, 10.0], axis_lps: [0.0, 1.0, 0.0] };
//! let m = guidance.evaluate(&pose, 1, 0.0, "NeedleTipToReference");
//! assert!((m.depth_remaining_mm - 4.0).abs() < 1e-9);
//! assert_eq!(m.lateral_deviation_mm, Some(0.0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod engine;
pub mod pose;
pub mod scene;
pub mod session;
pub mod synthesize;

pub use engine::{
    default_risk_groups, Alert, FieldTiming, Guidance, GuidanceMetrics, NeedlePose, PlanGeometry,
    RiskGroup, TargetZone, Thresholds, UsPlaneCrossing, UsPlaneMetrics,
};
pub use session::{PlanSource, PlannedNeedle, Session, SessionDescription, SessionInputs};
