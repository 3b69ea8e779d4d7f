//! Errors of the vessel library, each carrying what was being done and with what.

use pinhole_volume::TargetError;

/// Why a centerline, route or measurement could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VesselError {
    #[error("vessel mask {what} is empty")]
    EmptyMask { what: String },
    #[error("no vessel label of {names:?} is present in the label map")]
    NoVesselLabels { names: Vec<String> },
    #[error("label {0:?} is not in the label table")]
    UnknownLabel(String),
    #[error("label {name:?} (id {id}) has no voxel in the vessel mask")]
    EmptyLabel { name: String, id: u32 },
    #[error("endpoint {spec:?}: {reason}")]
    BadEndpoint { spec: String, reason: String },
    #[error("endpoint {spec:?}: point {point_lps:?} (LPS mm) is {distance_mm:.1} mm from the nearest vessel voxel (limit {limit_mm} mm)")]
    PointOffVessel {
        spec: String,
        point_lps: [f64; 3],
        distance_mm: f64,
        limit_mm: f64,
    },
    #[error("no connected vessel path from {from} to {to} (they lie in separate parts of the vessel mask)")]
    Unreachable { from: String, to: String },
    #[error("centerline of {what} is too short ({points} points)")]
    TooShort { what: String, points: usize },
    #[error("target: {0}")]
    Target(#[from] TargetError),
    #[error("sizing rules {source_name}: {reason}")]
    Sizing { source_name: String, reason: String },
    #[error("CT grid does not match the label map grid ({what})")]
    GridMismatch { what: String },
}

pub type Result<T, E = VesselError> = std::result::Result<T, E>;
