//! Pinhole's volume core: grid geometry in LPS millimetres, typed volumes and label maps,
//! sampling and resampling, exact distance transforms, morphology, connected components
//! and label statistics; orientation letters and scale bars for pictures (`annotate`).
//! No I/O, no async, no GPU.
//!
//! # Coordinate convention
//! World coordinates are **LPS millimetres** (x to the patient's left, y posterior,
//! z superior), as in DICOM and in the files 3D Slicer writes. Readers convert at the
//! edge (NIfTI stores RAS). Index order is ITK's: `i` varies fastest in memory.
//!
//! ```
//! use pinhole_volume::{Grid, Volume};
//! let grid = Grid::axis_aligned([4, 4, 4], [0.5, 0.5, 2.0], [-1.0, -1.0, 0.0])?;
//! let ct = Volume::filled(grid, -1000i16);
//! assert_eq!(ct.sample_nearest([0.0, 0.0, 2.0]), Some(-1000));
//! assert_eq!(ct.grid().orientation_code(), "LPS");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod anatomy;
pub mod annotate;
pub mod components;
pub mod distance;
pub mod grid;
pub mod labels;
pub mod math;
pub mod morphology;
pub mod surface;
pub mod target;
pub mod volume;

pub use components::{
    connected_components, fill_holes, largest_component, Components, Connectivity,
};
pub use distance::{distance_inside, distance_to, signed_distance};
pub use grid::{Grid, GridError};
pub use labels::{label_stats, LabelStats};
pub use math::{DVec3, Mat3, Mat4, Vec3};
pub use morphology::{close, dilate, erode, open};
pub use surface::{mask_surface, TriangleMesh};
pub use target::{LabelAim, Target, TargetError, TargetSpec};
pub use volume::{DataLengthMismatch, Interpolation, LabelVoxel, Mask, Volume, Voxel};
