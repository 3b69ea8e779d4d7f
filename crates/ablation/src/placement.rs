//! Applicator placement: insertion depth along a given needle path, and a greedy set
//! cover with parallel applicators when one zone cannot cover tumour + margin.

use pinhole_volume::math::dot;
use pinhole_volume::{Mask, Vec3};
use rayon::prelude::*;
use serde::Serialize;

use crate::devices::ZoneEntry;
use crate::error::AblationError;
use crate::zone::{add, perpendicular_pair, scale, sub, unit, Applicator, EllipsoidZone};

/// Applicators chosen for one zone type, and what they cover.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Placement {
    pub applicators: Vec<Applicator>,
    pub zones: Vec<EllipsoidZone>,
    /// Fraction (0..1) of the points to cover that the union of zones covers.
    pub covered_fraction: f64,
    /// Covered fraction after 1, 2, ... applicators.
    pub covered_fraction_by_count: Vec<f64>,
}

/// World centres of the voxels of `mask`, every `stride`-th one.
pub fn mask_points(mask: &Mask, stride: usize) -> Vec<Vec3> {
    let grid = mask.grid();
    mask.data()
        .iter()
        .enumerate()
        .filter(|(_, &b)| b)
        .map(|(o, _)| o)
        .step_by(stride.max(1))
        .map(|o| grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64)))
        .collect()
}

fn count_inside(zone: &EllipsoidZone, points: &[Vec3]) -> usize {
    points.iter().filter(|p| zone.contains(**p)).count()
}

fn centroid(points: &[Vec3]) -> Vec3 {
    let n = points.len().max(1) as f64;
    let s = points.iter().fold([0.0; 3], |acc, p| add(acc, *p));
    scale(s, 1.0 / n)
}

/// The tip position along the path `entry_lps → target_lps` (any depth, also beyond the
/// target) whose zone covers the most of `region_points` (tumour + margin), then the most
/// of `tumor_points`, then lies closest to centring the zone on the tumour; 0.5 mm steps.
pub fn best_depth(
    entry_lps: Vec3,
    target_lps: Vec3,
    zone: &ZoneEntry,
    region_points: &[Vec3],
    tumor_points: &[Vec3],
) -> Result<Applicator, AblationError> {
    let axis = unit(sub(target_lps, entry_lps))?;
    let c = centroid(tumor_points);
    // Depth (distance from entry) of the tip that centres the zone at the projection of c.
    let centre_depth = dot(sub(c, entry_lps), axis);
    let shift = zone.beyond_tip_mm - zone.long_axis_mm / 2.0;
    let tip_centred = centre_depth - shift;
    let steps = (zone.long_axis_mm / 0.5).ceil() as i64;
    let best = (-steps..=steps)
        .into_par_iter()
        .map(|s| {
            let depth = tip_centred + s as f64 * 0.5;
            let app = Applicator {
                tip_lps: add(entry_lps, scale(axis, depth)),
                axis_lps: axis,
            };
            let z = EllipsoidZone::from_applicator(&app, zone);
            (
                count_inside(&z, region_points),
                count_inside(&z, tumor_points),
                -s.abs(),
                app,
            )
        })
        .max_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)))
        .map(|t| t.3);
    best.ok_or_else(|| crate::error::invalid("needle path", "no candidate depth"))
}

/// Up to `max_applicators` parallel applicators along `axis_lps` covering `points`
/// (tumour + margin), greedily: each step adds the zone (centre on a lattice over the
/// points' bounding box, spacing max(2 mm, short axis / 6)) that covers the most points not
/// yet covered, then moves each applicator in turn to the lattice position that covers
/// most of what the others leave (two rounds of coordinate descent); stops once
/// `goal_fraction` is reached. `first` (e.g. the best depth on the planned path) is the
/// first applicator when given; with more than one, all may move.
pub fn greedy_cover(
    axis_lps: Vec3,
    zone: &ZoneEntry,
    points: &[Vec3],
    first: Option<Applicator>,
    max_applicators: usize,
    goal_fraction: f64,
) -> Result<Placement, AblationError> {
    let axis = unit(axis_lps)?;
    if points.is_empty() {
        return Err(AblationError::EmptyTumor);
    }
    let (u, v) = perpendicular_pair(axis);
    let frame = [u, v, axis];
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for p in points {
        for a in 0..3 {
            let x = dot(*p, frame[a]);
            lo[a] = lo[a].min(x);
            hi[a] = hi[a].max(x);
        }
    }
    let step = (zone.short_axis_mm / 6.0).max(2.0);
    let counts: Vec<usize> = (0..3)
        .map(|a| ((hi[a] - lo[a]) / step).floor() as usize + 1)
        .collect();
    let mut candidates = Vec::with_capacity(counts.iter().product());
    for a in 0..counts[0] {
        for b in 0..counts[1] {
            for c in 0..counts[2] {
                let coords = [
                    lo[0] + (hi[0] - lo[0] - step * (counts[0] - 1) as f64) / 2.0 + a as f64 * step,
                    lo[1] + (hi[1] - lo[1] - step * (counts[1] - 1) as f64) / 2.0 + b as f64 * step,
                    lo[2] + (hi[2] - lo[2] - step * (counts[2] - 1) as f64) / 2.0 + c as f64 * step,
                ];
                let centre = add(
                    add(scale(frame[0], coords[0]), scale(frame[1], coords[1])),
                    scale(frame[2], coords[2]),
                );
                candidates.push(Applicator {
                    tip_lps: EllipsoidZone::tip_for_center(centre, axis, zone),
                    axis_lps: axis,
                });
            }
        }
    }
    let gain_of = |app: &Applicator, covered: &[bool]| -> usize {
        let z = EllipsoidZone::from_applicator(app, zone);
        points
            .iter()
            .zip(covered)
            .filter(|(p, &c)| !c && z.contains(**p))
            .count()
    };
    let best_candidate = |covered: &[bool]| -> Option<(usize, Applicator)> {
        candidates
            .par_iter()
            .enumerate()
            .map(|(i, app)| (gain_of(app, covered), std::cmp::Reverse(i)))
            .max()
            .map(|(g, std::cmp::Reverse(i))| (g, candidates[i]))
    };
    let covered_by = |apps: &[Applicator], skip: Option<usize>| -> Vec<bool> {
        let zones: Vec<EllipsoidZone> = apps
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(_, a)| EllipsoidZone::from_applicator(a, zone))
            .collect();
        points
            .iter()
            .map(|p| zones.iter().any(|z| z.contains(*p)))
            .collect()
    };
    let fraction =
        |covered: &[bool]| covered.iter().filter(|&&c| c).count() as f64 / points.len() as f64;

    let mut apps: Vec<Applicator> = Vec::new();
    let mut by_count = Vec::new();
    let max_n = max_applicators.max(1);
    while apps.len() < max_n {
        let covered = covered_by(&apps, None);
        let next = if apps.is_empty() {
            first.or_else(|| best_candidate(&covered).map(|b| b.1))
        } else {
            best_candidate(&covered).filter(|b| b.0 > 0).map(|b| b.1)
        };
        let Some(next) = next else { break };
        apps.push(next);
        // Coordinate descent: move each applicator (but a seeded single one) to the
        // candidate that covers the most of what the others leave.
        if apps.len() > 1 {
            for _round in 0..2 {
                for i in 0..apps.len() {
                    let others = covered_by(&apps, Some(i));
                    if let Some((g, app)) = best_candidate(&others) {
                        if g > gain_of(&apps[i], &others) {
                            apps[i] = app;
                        }
                    }
                }
            }
        }
        let f = fraction(&covered_by(&apps, None));
        by_count.push(f);
        if f >= goal_fraction {
            break;
        }
    }
    let zones = apps
        .iter()
        .map(|a| EllipsoidZone::from_applicator(a, zone))
        .collect();
    Ok(Placement {
        covered_fraction: by_count.last().copied().unwrap_or(0.0),
        covered_fraction_by_count: by_count,
        applicators: apps,
        zones,
    })
}

/// The longest principal axis of `points` (unit), oriented anterior → posterior (+y in
/// LPS, the usual direction of a percutaneous insertion); for a nearly round set (largest
/// two eigenvalues within 10 %), the anterior → posterior axis itself.
pub fn principal_axis(points: &[Vec3]) -> Vec3 {
    let c = centroid(points);
    let mut cov = [[0.0; 3]; 3];
    for p in points {
        let d = sub(*p, c);
        for r in 0..3 {
            for k in 0..3 {
                cov[r][k] += d[r] * d[k];
            }
        }
    }
    let default = [0.0, 1.0, 0.0];
    let mult = |v: Vec3| -> Vec3 { [dot(cov[0], v), dot(cov[1], v), dot(cov[2], v)] };
    let mut v = [0.577, 0.577, 0.577];
    for _ in 0..200 {
        let w = mult(v);
        match unit(w) {
            Ok(w) => v = w,
            Err(_) => return default,
        }
    }
    let l1 = dot(v, mult(v));
    // Second eigenvalue: power iteration on the deflated matrix.
    let mut w = perpendicular_pair(v).0;
    for _ in 0..200 {
        let x = mult(w);
        let x = sub(x, scale(v, dot(x, v)));
        match unit(x) {
            Ok(x) => w = x,
            Err(_) => break,
        }
    }
    let l2 = dot(w, mult(w));
    if l1 <= 0.0 || l2 >= 0.9 * l1 {
        return default;
    }
    if v[1] < 0.0 || (v[1] == 0.0 && v[2] > 0.0) {
        v = scale(v, -1.0);
    }
    v
}
