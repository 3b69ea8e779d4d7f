//! Coverage of a tumour by an ablation zone: percentages, the minimal signed ablative
//! margin from distance transforms and where it is thinnest, and heat-sink flags.

use pinhole_volume::{distance_inside, distance_to, signed_distance, Mask, Vec3, Volume};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::AblationError;

/// Coverage figures of one zone (union of zones) against one tumour.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coverage {
    pub margin_mm: f64,
    pub tumor_volume_ml: f64,
    pub zone_volume_ml: f64,
    /// % of tumour voxels inside the zone.
    pub coverage_tumor_pct: f64,
    /// % of the tumour-plus-margin voxels (within `margin_mm` of the tumour) inside the zone.
    pub coverage_margin_pct: f64,
    /// Minimal signed ablative margin, mm: over all tumour voxels, the distance from the
    /// voxel centre to the zone boundary, positive inside the zone, negative outside.
    /// `None` when the zone is empty.
    pub min_margin_mm: Option<f64>,
    /// Tumour voxel where the margin is thinnest, LPS mm.
    pub thinnest_margin_lps: Option<Vec3>,
}

/// Tumour plus every voxel within `margin_mm` of it (voxel-centre distance).
pub fn margin_region(tumor: &Mask, margin_mm: f64) -> Mask {
    let d = distance_to(tumor);
    d.map(|x| f64::from(x) <= margin_mm + 1e-6)
}

/// Coverage of `tumor` by `zone` (same grid) with a `margin_mm` safety margin.
///
/// The signed distance of the zone is measured between voxel centres; it is shifted by
/// half a voxel towards the boundary (inside: d − h/2, outside: d − h/2 with the sign
/// flipped) so that it estimates the distance to the zone's surface, which lies halfway
/// between the last inside and the first outside voxel centre.
pub fn coverage(tumor: &Mask, zone: &Mask, margin_mm: f64) -> Result<Coverage, AblationError> {
    if !tumor.grid().same_geometry(zone.grid(), 1e-6) {
        return Err(crate::error::invalid(
            "coverage",
            "tumour and zone masks lie on different grids",
        ));
    }
    let tumor_n = tumor.data().iter().filter(|&&b| b).count();
    if tumor_n == 0 {
        return Err(AblationError::EmptyTumor);
    }
    let grid = tumor.grid();
    let voxel_ml = grid.voxel_volume_mm3() / 1000.0;
    let zone_n = zone.data().iter().filter(|&&b| b).count();
    let covered = count_and(tumor, zone);
    let region = margin_region(tumor, margin_mm);
    let region_n = region.data().iter().filter(|&&b| b).count();
    let region_covered = count_and(&region, zone);

    let (min_margin_mm, thinnest) = if zone_n == 0 {
        (None, None)
    } else {
        let h = grid
            .spacing_mm()
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let sd = signed_distance(zone);
        let mut best: Option<(f64, usize)> = None;
        for (o, (&t, &s)) in tumor.data().iter().zip(sd.data()).enumerate() {
            if !t {
                continue;
            }
            let margin = signed_margin_mm(s, h);
            if best.is_none_or(|b| margin < b.0) {
                best = Some((margin, o));
            }
        }
        match best {
            Some((m, o)) => {
                let ijk = grid.index_of_offset(o);
                (Some(m), Some(grid.index_to_world(ijk.map(|v| v as f64))))
            }
            None => (None, None),
        }
    };
    Ok(Coverage {
        margin_mm,
        tumor_volume_ml: tumor_n as f64 * voxel_ml,
        zone_volume_ml: zone_n as f64 * voxel_ml,
        coverage_tumor_pct: 100.0 * covered as f64 / tumor_n as f64,
        coverage_margin_pct: 100.0 * region_covered as f64 / region_n.max(1) as f64,
        min_margin_mm,
        thinnest_margin_lps: thinnest,
    })
}

/// The signed ablative margin at a voxel from the zone's signed distance `sd` there
/// (negative inside), shifted half a voxel `h` to the zone's surface: positive inside.
fn signed_margin_mm(sd: f32, h: f64) -> f64 {
    let s = f64::from(sd);
    if s < 0.0 {
        -s - h / 2.0
    } else {
        -s + h / 2.0
    }
}

fn count_and(a: &Mask, b: &Mask) -> usize {
    a.data()
        .iter()
        .zip(b.data())
        .filter(|(&x, &y)| x && y)
        .count()
}

/// A labelled vessel near the tumour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HeatSink {
    pub label_id: u32,
    pub name: String,
    /// Largest local diameter of the vessel within `max_distance_mm` of the tumour, mm:
    /// 2·(maximal inscribed distance − h/2).
    pub diameter_mm: f64,
    /// Shortest voxel-centre distance between the vessel and the tumour, mm.
    pub distance_mm: f64,
    /// Vessel voxel closest to the tumour, LPS mm.
    pub nearest_lps: Vec3,
    /// True when the vessel is ≥ `min_diameter_mm` wide and within `max_distance_mm`.
    pub flagged: bool,
    /// For a flagged vessel: the part of the margin its cooling threatens.
    #[serde(default)]
    pub threatened_margin: Option<ThreatenedMargin>,
}

/// The part of the tumour's margin that a heat-sink vessel threatens: the tumour's face
/// within the vessel's reach (`max_distance_mm` of [`heat_sinks`]), where the zone may be
/// cooled short of what the table or simulation shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ThreatenedMargin {
    /// From the tumour's centre towards the vessel's nearest voxel (unit vector, LPS).
    pub direction_lps: Vec3,
    /// That direction in patient terms, e.g. `posterior-inferior`.
    pub side: String,
    /// % of tumour voxels within reach of the vessel.
    pub tumor_within_reach_pct: f64,
    /// % of the margin shell (within the margin of the tumour, outside it) within reach.
    pub margin_shell_within_reach_pct: f64,
    /// Smallest signed margin (as `min_margin_mm`) over the tumour voxels within reach,
    /// mm; None when the zone is empty.
    pub min_margin_within_reach_mm: Option<f64>,
}

/// The dominant patient directions of an LPS vector in words, e.g. `posterior-inferior`:
/// the orientation letters of [`pinhole_volume::annotate::patient_letters`], spelt out.
pub fn patient_side(direction_lps: Vec3) -> String {
    let letters = pinhole_volume::annotate::patient_letters(direction_lps);
    if letters.is_empty() {
        return "at the tumour".to_owned();
    }
    letters
        .chars()
        .map(pinhole_volume::volume::side_name)
        .collect::<Vec<_>>()
        .join("-")
}

/// Fills [`HeatSink::threatened_margin`] of every flagged vessel: which side of the
/// tumour, how much of the tumour and of its `margin_mm` shell lie within
/// `reach_mm` of the vessel, and the thinnest margin there under `zone`.
pub fn assess_threatened_margins(
    sinks: &mut [HeatSink],
    labels: &Volume<u16>,
    tumor: &Mask,
    zone: &Mask,
    margin_mm: f64,
    reach_mm: f64,
) {
    let grid = tumor.grid();
    let h = grid
        .spacing_mm()
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let points: Vec<(usize, Vec3)> = tumor
        .data()
        .iter()
        .enumerate()
        .filter(|(_, &b)| b)
        .map(|(o, _)| {
            (
                o,
                grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64)),
            )
        })
        .collect();
    if points.is_empty() {
        return;
    }
    let n = points.len() as f64;
    let centre = points.iter().fold([0.0; 3], |c, (_, p)| {
        [c[0] + p[0] / n, c[1] + p[1] / n, c[2] + p[2] / n]
    });
    let to_tumor = distance_to(tumor);
    let zone_sd = zone
        .data()
        .iter()
        .any(|&b| b)
        .then(|| signed_distance(zone));
    for sink in sinks.iter_mut().filter(|s| s.flagged) {
        let Ok(value) = u16::try_from(sink.label_id) else {
            continue;
        };
        let to_vessel = distance_to(&labels.mask_of(value));
        let near = |o: usize| f64::from(to_vessel.data()[o]) <= reach_mm;
        let tumor_near: Vec<usize> = points.iter().map(|p| p.0).filter(|&o| near(o)).collect();
        let (mut shell, mut shell_near) = (0usize, 0usize);
        for (o, &d) in to_tumor.data().iter().enumerate() {
            let d = f64::from(d);
            if d > 0.0 && d <= margin_mm + 1e-6 {
                shell += 1;
                if near(o) {
                    shell_near += 1;
                }
            }
        }
        let min_margin = zone_sd.as_ref().and_then(|sd| {
            tumor_near
                .iter()
                .map(|&o| signed_margin_mm(sd.data()[o], h))
                .reduce(f64::min)
        });
        let d = [0, 1, 2].map(|a| sink.nearest_lps[a] - centre[a]);
        let len = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
        let direction_lps = if len > 0.0 {
            d.map(|c| c / len)
        } else {
            [0.0; 3]
        };
        sink.threatened_margin = Some(ThreatenedMargin {
            direction_lps,
            side: patient_side(direction_lps),
            tumor_within_reach_pct: 100.0 * tumor_near.len() as f64 / n,
            margin_shell_within_reach_pct: 100.0 * shell_near as f64 / shell.max(1) as f64,
            min_margin_within_reach_mm: min_margin,
        });
    }
}

/// Vessels (label ids with names) within `max_distance_mm` of the tumour on the tumour's
/// grid, with their local diameter; `flagged` marks those ≥ `min_diameter_mm` (the
/// issue's rule: ≥ 3 mm within 10 mm cools the zone, e.g. PLOS ONE 2015, Thanos 2008).
pub fn heat_sinks(
    labels: &Volume<u16>,
    tumor: &Mask,
    vessels: &[(u32, String)],
    min_diameter_mm: f64,
    max_distance_mm: f64,
) -> Vec<HeatSink> {
    let grid = tumor.grid();
    let h = grid
        .spacing_mm()
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let to_tumor = distance_to(tumor);
    let mut out = Vec::new();
    for (id, name) in vessels {
        let Ok(value) = u16::try_from(*id) else {
            continue;
        };
        let vessel = labels.mask_of(value);
        let mut nearest: Option<(f32, usize)> = None;
        let mut any_close = false;
        for (o, (&v, &d)) in vessel.data().iter().zip(to_tumor.data()).enumerate() {
            if v && f64::from(d) <= max_distance_mm {
                any_close = true;
                if nearest.is_none_or(|n| d < n.0) {
                    nearest = Some((d, o));
                }
            }
        }
        let (Some((distance, offset)), true) = (nearest, any_close) else {
            continue;
        };
        let inside = distance_inside(&vessel);
        let max_inside = vessel
            .data()
            .iter()
            .zip(inside.data())
            .zip(to_tumor.data())
            .filter(|((&v, _), &d)| v && f64::from(d) <= max_distance_mm)
            .map(|((_, &r), _)| f64::from(r))
            .fold(0.0, f64::max);
        let diameter_mm = (2.0 * (max_inside - h / 2.0)).max(h);
        let ijk = grid.index_of_offset(offset);
        out.push(HeatSink {
            label_id: *id,
            name: name.clone(),
            diameter_mm,
            distance_mm: f64::from(distance),
            nearest_lps: grid.index_to_world(ijk.map(|v| v as f64)),
            flagged: diameter_mm >= min_diameter_mm,
            threatened_margin: None,
        });
    }
    out.sort_by(|a, b| a.distance_mm.total_cmp(&b.distance_mm));
    out
}
