//! Stenosis along a measured vessel.
//!
//! * Diameter per station: circle-equivalent (from the area), the inscribed-sphere
//!   diameter where the section is clipped.
//! * Analysed zone: stations more than one (median) lumen diameter from either end.
//! * Minimal lumen diameter (MLD): the smallest diameter in the zone.
//! * Lesion: the contiguous run around the MLD whose diameter is below
//!   `lesion_fraction` × the zone's median diameter.
//! * Reference diameter: *interpolated reference* (as DICOM PS3.17 §T.4 QVA): the mean
//!   diameter of the healthy segment proximal to the lesion and of the one distal to it
//!   (each `max(10 mm, 2 × median diameter)` long, next to the lesion), linearly
//!   interpolated to the MLD position; the one available side when the other is missing.
//! * % diameter stenosis = (1 − MLD / reference) × 100; % area stenosis assumes circles.
//! * NASCET = (1 − MLD / B) × 100, B = mean diameter over a user-given distal segment of
//!   normal vessel; ECST = (1 − MLD / C) × 100, C = the user's estimate of the original
//!   bulb diameter at the stenosis.
//! * Grade (NASCET when given, else % diameter stenosis): `< 50 %`, `50–69 %`, `≥ 70 %`;
//!   `near-occlusion (suspected)` when the residual lumen is ≤ 1 mm or the stenosis
//!   ≥ 95 %: a heuristic flag, since near-occlusion is defined by distal collapse.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::measure::Station;
use pinhole_volume::Vec3;

/// User choices for the stenosis summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StenosisOptions {
    /// Diameters below this fraction of the median belong to the lesion.
    pub lesion_fraction: f64,
    /// NASCET: arc range (mm, from the centerline start) of normal distal vessel.
    pub nascet_distal_arc_mm: Option<[f64; 2]>,
    /// ECST: estimated original diameter at the stenosis, mm.
    pub ecst_bulb_diameter_mm: Option<f64>,
}

impl Default for StenosisOptions {
    fn default() -> Self {
        Self {
            lesion_fraction: 0.9,
            nascet_distal_arc_mm: None,
            ecst_bulb_diameter_mm: None,
        }
    }
}

/// The stenosis summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Stenosis {
    pub mld_mm: f64,
    pub mld_arc_mm: f64,
    pub mld_point_lps: Vec3,
    pub reference_diameter_mm: f64,
    pub reference_method: String,
    pub proximal_reference_mm: Option<f64>,
    pub distal_reference_mm: Option<f64>,
    pub diameter_stenosis_pct: f64,
    pub area_stenosis_pct: f64,
    pub lesion_start_arc_mm: f64,
    pub lesion_end_arc_mm: f64,
    pub lesion_length_mm: f64,
    pub nascet_pct: Option<f64>,
    pub nascet_distal_diameter_mm: Option<f64>,
    pub ecst_pct: Option<f64>,
    pub grade: String,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for v in values {
        s += v;
        n += 1;
    }
    (n > 0).then(|| s / n as f64)
}

/// Grade text for a percentage stenosis and the residual lumen.
pub fn grade(pct: f64, mld_mm: f64) -> String {
    if pct >= 95.0 || mld_mm <= 1.0 {
        "near-occlusion (suspected)".into()
    } else if pct >= 70.0 {
        "≥ 70 % (severe)".into()
    } else if pct >= 50.0 {
        "50–69 % (moderate)".into()
    } else {
        "< 50 % (mild or none)".into()
    }
}

/// The stenosis summary of `stations`; `None` when fewer than 3 stations can be analysed.
pub fn analyse(stations: &[Station], opts: &StenosisOptions) -> Option<Stenosis> {
    let n = stations.len();
    if n < 3 {
        return None;
    }
    let total = stations[n - 1].arc_mm;
    let mut all: Vec<f64> = stations.iter().map(Station::lumen_diameter_mm).collect();
    all.sort_by(f64::total_cmp);
    let margin = all[n / 2];
    let zone: Vec<usize> = (0..n)
        .filter(|&i| {
            let a = stations[i].arc_mm;
            a >= margin && a <= total - margin
        })
        .collect();
    let zone = if zone.len() >= 3 {
        zone
    } else {
        (0..n).collect()
    };
    let d = |i: usize| stations[i].lumen_diameter_mm();
    let mut sorted: Vec<f64> = zone.iter().map(|&i| d(i)).collect();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let (zpos, &imin) = zone
        .iter()
        .enumerate()
        .min_by(|a, b| d(*a.1).total_cmp(&d(*b.1)))?;
    let mld = d(imin);
    let limit = opts.lesion_fraction * median;
    let (mut z0, mut z1) = (zpos, zpos);
    while z0 > 0 && d(zone[z0 - 1]) < limit {
        z0 -= 1;
    }
    while z1 + 1 < zone.len() && d(zone[z1 + 1]) < limit {
        z1 += 1;
    }
    let (l0, l1) = (stations[zone[z0]].arc_mm, stations[zone[z1]].arc_mm);
    let width = (2.0 * median).max(10.0);
    let side = |lo: f64, hi: f64| {
        let members: Vec<usize> = zone
            .iter()
            .copied()
            .filter(|&i| stations[i].arc_mm >= lo && stations[i].arc_mm <= hi)
            .collect();
        let m = mean(members.iter().map(|&i| d(i)))?;
        let at = mean(members.iter().map(|&i| stations[i].arc_mm))?;
        Some((m, at))
    };
    let proximal = if z0 > 0 {
        side(l0 - width, l0 - 1e-9)
    } else {
        None
    };
    let distal = if z1 + 1 < zone.len() {
        side(l1 + 1e-9, l1 + width)
    } else {
        None
    };
    let mld_arc = stations[imin].arc_mm;
    let (reference, method) = match (proximal, distal) {
        (Some((dp, ap)), Some((dd, ad))) => {
            let t = if ad > ap {
                ((mld_arc - ap) / (ad - ap)).clamp(0.0, 1.0)
            } else {
                0.5
            };
            (
                dp + (dd - dp) * t,
                "interpolated between the mean diameters of the healthy proximal and distal segments",
            )
        }
        (Some((dp, _)), None) => (dp, "mean diameter of the healthy proximal segment"),
        (None, Some((dd, _))) => (dd, "mean diameter of the healthy distal segment"),
        (None, None) => (median, "median diameter of the vessel"),
    };
    let ratio = if reference > 0.0 {
        mld / reference
    } else {
        1.0
    };
    let ds = (1.0 - ratio) * 100.0;
    let nascet_b = opts.nascet_distal_arc_mm.and_then(|[a, b]| {
        mean(
            stations
                .iter()
                .filter(|s| s.arc_mm >= a.min(b) && s.arc_mm <= a.max(b))
                .map(Station::lumen_diameter_mm),
        )
    });
    let nascet = nascet_b.map(|b| (1.0 - mld / b) * 100.0);
    let ecst = opts.ecst_bulb_diameter_mm.map(|c| (1.0 - mld / c) * 100.0);
    Some(Stenosis {
        mld_mm: mld,
        mld_arc_mm: mld_arc,
        mld_point_lps: stations[imin].point_lps,
        reference_diameter_mm: reference,
        reference_method: method.to_string(),
        proximal_reference_mm: proximal.map(|p| p.0),
        distal_reference_mm: distal.map(|p| p.0),
        diameter_stenosis_pct: ds,
        area_stenosis_pct: (1.0 - ratio * ratio) * 100.0,
        lesion_start_arc_mm: l0,
        lesion_end_arc_mm: l1,
        lesion_length_mm: l1 - l0,
        nascet_pct: nascet,
        nascet_distal_diameter_mm: nascet_b,
        ecst_pct: ecst,
        grade: grade(nascet.unwrap_or(ds), mld),
    })
}
