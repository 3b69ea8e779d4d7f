//! Pinhole's vessel library: centerlines with radius from vessel masks, routes through a
//! vessel tree made of several labels, cross-sections (inscribed-sphere, circle-equivalent
//! and Feret diameters, area), stenosis summaries, device sizing from configurable rules
//! and suspected occlusions on contrast CT. Coordinates are LPS mm. Not for clinical use.
//!
//! ```
//! use pinhole_volume::{Grid, Mask};
//! use pinhole_vessel::{centerline_of_mask, CenterlineOptions};
//! // A straight tube of radius 4 mm along z.
//! let grid = Grid::axis_aligned([24, 24, 60], [0.5, 0.5, 0.5], [-6.0, -6.0, 0.0])?;
//! let data = (0..grid.voxel_count()).map(|o| {
//!     let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
//!     p[0] * p[0] + p[1] * p[1] <= 16.0 && p[2] > 2.0 && p[2] < 27.0
//! }).collect();
//! let tube = Mask::new(grid, data)?;
//! let line = centerline_of_mask(&tube, "tube", &CenterlineOptions::default())?;
//! assert!((line.length_mm() - 25.0).abs() < 0.6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod centerline;
pub mod error;
pub mod geom;
mod graph;
pub mod measure;
pub mod occlusion;
pub mod route;
pub mod section;
pub mod sizing;
pub mod stenosis;
pub mod tree;

pub use centerline::{centerline_of_mask, Centerline, CenterlineOptions};
pub use error::{Result, VesselError};
pub use measure::{measure_mask, stations, Station, VesselMeasurement};
pub use occlusion::{suspected_occlusions, SuspectedOcclusion};
pub use route::{Endpoint, Route, RouteOptions, VesselMap};
pub use section::{cross_section, Section};
pub use sizing::{
    sizing_decision, suggest, SizeRange, SizingDecision, SizingRules, DEFAULT_MIN_STENOSIS_PCT,
};
pub use stenosis::{analyse, Stenosis, StenosisOptions};
pub use tree::{junctions, vessel_tree, Branch, Junction, VesselTree};
