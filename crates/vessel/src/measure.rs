//! Measurement stations along a centerline: cross-sections and lumen HU.

use pinhole_volume::{Mask, Vec3, Volume};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::centerline::{longest_centerline, Centerline, CenterlineOptions};
use crate::error::Result;
use crate::geom::tangents;
use crate::graph::VoxelGraph;
use crate::section::{core_mean, cross_section};

/// One cross-section along a centerline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Station {
    /// Arc length from the centerline's first point, mm.
    pub arc_mm: f64,
    pub point_lps: Vec3,
    /// Maximal inscribed sphere diameter (2 × radius), mm.
    pub d_mis_mm: f64,
    /// Circle-equivalent diameter from the area, mm.
    pub d_ce_mm: f64,
    /// Maximum Feret diameter, mm.
    pub d_feret_mm: f64,
    /// Caliper width perpendicular to the maximum Feret direction, mm.
    pub d_feret_perp_mm: f64,
    pub area_mm2: f64,
    /// The section was not closed within its disc (vessel end, bifurcation): the
    /// section diameters are unreliable there.
    pub clipped: bool,
    /// Mean CT value in the lumen core (inner half radius), HU, when a CT was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lumen_hu: Option<f64>,
}

impl Station {
    /// The diameter used for stenosis: circle-equivalent, or the inscribed-sphere diameter
    /// where the section is clipped.
    pub fn lumen_diameter_mm(&self) -> f64 {
        if self.clipped || self.d_ce_mm <= 0.0 {
            self.d_mis_mm
        } else {
            self.d_ce_mm
        }
    }
}

/// Cross-sections at every centerline point. `ct` (HU, any grid in the same LPS space)
/// adds the lumen-core mean HU.
pub fn stations(mask: &Mask, centerline: &Centerline, ct: Option<&Volume<f32>>) -> Vec<Station> {
    let sp = mask.grid().spacing_mm();
    let h = sp[0].min(sp[1]).min(sp[2]);
    let hmax = sp[0].max(sp[1]).max(sp[2]);
    let pts = &centerline.points_lps;
    let arc = centerline.arc_mm();
    let step = arc.get(1).copied().unwrap_or(1.0).max(1e-3);
    let t = tangents(pts, ((2.0 * hmax) / step).ceil() as usize);
    (0..pts.len())
        .into_par_iter()
        .map(|i| {
            let r = centerline.radius_mm[i];
            let section = cross_section(mask, pts[i], t[i], 2.5 * r + 3.0 * hmax, h / 3.0, true);
            let lumen_hu =
                ct.and_then(|ct| core_mean(ct, pts[i], t[i], (0.5 * r).max(0.5 * h), 0.5 * h));
            Station {
                arc_mm: arc[i],
                point_lps: pts[i],
                d_mis_mm: 2.0 * r,
                d_ce_mm: section.map_or(0.0, |s| s.d_ce_mm),
                d_feret_mm: section.map_or(0.0, |s| s.d_feret_mm),
                d_feret_perp_mm: section.map_or(0.0, |s| s.d_feret_perp_mm),
                area_mm2: section.map_or(0.0, |s| s.area_mm2),
                clipped: section.is_none_or(|s| s.clipped),
                lumen_hu,
            }
        })
        .collect()
}

/// A measured vessel: its end-to-end centerline and stations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VesselMeasurement {
    pub centerline: Centerline,
    pub stations: Vec<Station>,
}

/// Centerline (largest component, cavities filled) and stations of one vessel mask.
pub fn measure_mask(
    mask: &Mask,
    what: &str,
    opts: &CenterlineOptions,
    ct: Option<&Volume<f32>>,
) -> Result<VesselMeasurement> {
    let graph = VoxelGraph::new(mask, what, true)?;
    let centerline = longest_centerline(&graph, what, opts)?;
    let stations = stations(&graph.mask, &centerline, ct);
    Ok(VesselMeasurement {
        centerline,
        stations,
    })
}
