//! Straight-needle path planning for percutaneous procedures (biopsy, thyroid FNA,
//! ablation access, nephrostomy, biliary drainage) on a CT and its label map.
//! **Not for clinical use.**
//!
//! * [`PlanningContext`]: per-volume precomputation (body mask and skin from the CT,
//!   HU > −500; coarse clearance distance fields and exact boundary indexes per label
//!   set, cached), reused when the target moves.
//! * [`Profile`]: one procedure's rules as data (`profiles/*.toml`), each with a source.
//! * [`PlanningContext::plan`]: Fibonacci-sphere candidates from the target, marched to
//!   the skin every half coarse cell (a screening pass for the hard rules, then the
//!   survivors again for scores; samples no rule could react to are skipped, with the
//!   same results); the skin entry refined on the CT; hard rules (clearance per risk group, length, skin angle, axial angle,
//!   approach cones, entry below rib 12 or needle below rib 11, organ traversal, fissures and pleura);
//!   soft scores (length, clearance margins, skin angle, capsule angle) as a weighted
//!   sum plus the Pareto set; the top k paths that differ by an angle, each re-checked
//!   exactly against voxel centres.
//!
//! All coordinates are LPS millimetres.

pub mod context;
mod march;
pub mod plan;
pub mod profile;
pub mod render;

/// A small deterministic generator for the unit tests' random cases (xorshift64).
#[cfg(test)]
pub(crate) struct TestRng(u64);

#[cfg(test)]
impl TestRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

use std::collections::BTreeMap;

pub use context::PlanningContext;
pub use plan::{fibonacci_sphere, PathReport, Plan, PlanOptions};
pub use profile::{Profile, BUILTIN};

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("CT grid {ct_dims:?} and label map grid {labels_dims:?} differ; resample the labels onto the CT first")]
    GridMismatch {
        ct_dims: [usize; 3],
        labels_dims: [usize; 3],
    },
    #[error("geometry: {0}")]
    Geometry(String),
    #[error("no body found in the CT (no voxel above -500 HU)")]
    NoBody,
    #[error("unknown procedure {name:?}; available: {}", available.join(", "))]
    UnknownProcedure {
        name: String,
        available: Vec<String>,
    },
    #[error("profile {origin}: {message}")]
    Profile { origin: String, message: String },
    #[error("procedure {procedure} needs labels missing from the label table: {}", missing.join(", "))]
    MissingLabels {
        procedure: String,
        missing: Vec<String>,
    },
    #[error("target {point_lps:?} (LPS mm) lies outside the body")]
    TargetOutsideBody { point_lps: [f64; 3] },
    #[error("entry {entry_lps:?} (LPS mm) cannot be evaluated (equal to the target?)")]
    BadEntry { entry_lps: [f64; 3] },
    #[error(
        "no feasible path for {procedure} among {candidates} candidates; rejected by rule: {}",
        format_counts(rejected)
    )]
    NoFeasiblePath {
        procedure: String,
        candidates: usize,
        rejected: BTreeMap<String, usize>,
    },
}

fn format_counts(counts: &BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
