//! Suspected occlusion or filling defect on contrast CT: runs of stations whose lumen-core
//! HU falls far below the vessel's median (threshold: median − max(150 HU, 35 % of the
//! median)). Stations thinner than `min_lumen_mm` (partial volume makes their core HU
//! unreliable; use about two of the largest voxel spacings) and stations within one
//! lumen diameter of either end are not judged. Needs contrast in the lumen; the flag is
//! a hint to look, not a finding.

use pinhole_volume::Vec3;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::measure::Station;

/// A run of low-HU stations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SuspectedOcclusion {
    pub start_arc_mm: f64,
    pub end_arc_mm: f64,
    /// The lowest-HU station's point.
    pub point_lps: Vec3,
    pub min_hu: f64,
    pub median_hu: f64,
    pub threshold_hu: f64,
}

/// Low-HU runs along `stations` (empty without HU values).
pub fn suspected_occlusions(stations: &[Station], min_lumen_mm: f64) -> Vec<SuspectedOcclusion> {
    let total = stations.last().map_or(0.0, |s| s.arc_mm);
    let judged = |s: &Station| {
        s.d_mis_mm >= min_lumen_mm && s.arc_mm >= s.d_mis_mm && s.arc_mm <= total - s.d_mis_mm
    };
    let mut hu: Vec<f64> = stations
        .iter()
        .filter(|s| judged(s))
        .filter_map(|s| s.lumen_hu)
        .collect();
    if hu.len() < 3 {
        return Vec::new();
    }
    hu.sort_by(f64::total_cmp);
    let median = hu[hu.len() / 2];
    let threshold = median - 150f64.max(0.35 * median.abs());
    let mut out = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    let flush = |run: (usize, usize), out: &mut Vec<SuspectedOcclusion>| {
        let (a, b) = run;
        let (imin, min_hu) = (a..=b)
            .filter_map(|i| stations[i].lumen_hu.map(|h| (i, h)))
            .min_by(|x, y| x.1.total_cmp(&y.1))
            .unwrap_or((a, f64::NAN));
        out.push(SuspectedOcclusion {
            start_arc_mm: stations[a].arc_mm,
            end_arc_mm: stations[b].arc_mm,
            point_lps: stations[imin].point_lps,
            min_hu,
            median_hu: median,
            threshold_hu: threshold,
        });
    };
    for (i, s) in stations.iter().enumerate() {
        let low = judged(s) && s.lumen_hu.is_some_and(|h| h < threshold);
        run = match (run, low) {
            (None, true) => Some((i, i)),
            (Some((a, _)), true) => Some((a, i)),
            (Some(r), false) => {
                flush(r, &mut out);
                None
            }
            (None, false) => None,
        };
    }
    if let Some(r) = run {
        flush(r, &mut out);
    }
    out
}
