//! Cross-sections of a vessel mask perpendicular to its centerline.
//!
//! The mask is sampled on a square grid in the plane through the centre point and
//! perpendicular to the tangent, at sub-voxel spacing, with trilinear interpolation of
//! the 0/1 mask (inside where ≥ 0.5: the surface halfway between inside and outside voxel
//! centres). Only the 4-connected part containing the centre counts, so a neighbouring
//! vessel cut by the same plane is ignored.

use pinhole_volume::{Mask, Vec3};
use serde::Serialize;

use crate::geom::{add, plane_basis, scale, sub};

/// One cross-section.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Section {
    /// Lumen area, mm².
    pub area_mm2: f64,
    /// Circle-equivalent diameter 2·√(area/π), mm.
    pub d_ce_mm: f64,
    /// Maximum Feret (caliper) diameter, mm.
    pub d_feret_mm: f64,
    /// Caliper width perpendicular to the maximum Feret direction, mm.
    pub d_feret_perp_mm: f64,
    /// Centroid of the section, LPS mm.
    pub centroid_lps: Vec3,
    /// True when the lumen reached the edge of the sampled disc (section not closed:
    /// near a vessel end or a bifurcation; diameters are then lower bounds) or when the
    /// section has fewer than 16 samples (the lumen's very end).
    pub clipped: bool,
}

/// Samples the section of `mask` through `center` perpendicular to `tangent` (unit) on a
/// disc of radius `max_radius_mm` with sample spacing `step_mm`. `None` when the centre
/// itself is outside the lumen. Without `feret` the caliper diameters are left at 0.
pub fn cross_section(
    mask: &Mask,
    center: Vec3,
    tangent: Vec3,
    max_radius_mm: f64,
    step_mm: f64,
    feret: bool,
) -> Option<Section> {
    let (u, v) = plane_basis(tangent);
    let half = (max_radius_mm / step_mm).ceil().max(1.0) as i64;
    let side = (2 * half + 1) as usize;
    // The plane's samples in continuous index space: world→index is affine, so one
    // transform of the centre and of each in-plane step serves every sample.
    let grid = mask.grid();
    let center_ijk = grid.world_to_index(center);
    let step_ijk = |axis: Vec3| {
        sub(
            grid.world_to_index(add(center, scale(axis, step_mm))),
            center_ijk,
        )
    };
    let (u_ijk, v_ijk) = (step_ijk(u), step_ijk(v));
    let at = |a: i64, b: i64| -> Vec3 {
        add(
            center_ijk,
            add(
                scale(u_ijk, (a - half) as f64),
                scale(v_ijk, (b - half) as f64),
            ),
        )
    };
    let inside = |ijk: Vec3| mask.trilinear_at_index(ijk).is_some_and(|m| m >= 0.5);
    if !inside(center_ijk) {
        return None;
    }
    // Flood fill from the centre, evaluating samples lazily (0 unknown, 1 in, 2 out).
    let mut state = vec![0u8; side * side];
    let r2 = (half * half) as f64;
    let mut stack = vec![(half, half)];
    state[(half as usize) * side + half as usize] = 1;
    let mut members: Vec<(i64, i64)> = Vec::new();
    let mut clipped = false;
    while let Some((a, b)) = stack.pop() {
        members.push((a, b));
        for (da, db) in [(1i64, 0i64), (-1, 0), (0, 1), (0, -1)] {
            let (na, nb) = (a + da, b + db);
            let rr = ((na - half).pow(2) + (nb - half).pow(2)) as f64;
            if rr > r2 {
                clipped = true;
                continue;
            }
            let idx = nb as usize * side + na as usize;
            if state[idx] != 0 {
                continue;
            }
            if inside(at(na, nb)) {
                state[idx] = 1;
                stack.push((na, nb));
            } else {
                state[idx] = 2;
            }
        }
    }
    // Too few samples to measure a shape (the lumen's very end): flag it like a clipped one.
    let clipped = clipped || members.len() < 16;
    let cell = step_mm * step_mm;
    let area_mm2 = members.len() as f64 * cell;
    let (mut sa, mut sb) = (0.0, 0.0);
    for &(a, b) in &members {
        sa += (a - half) as f64;
        sb += (b - half) as f64;
    }
    let n = members.len() as f64;
    let centroid_lps = add(
        center,
        add(scale(u, sa / n * step_mm), scale(v, sb / n * step_mm)),
    );
    if !feret {
        return Some(Section {
            area_mm2,
            d_ce_mm: 2.0 * (area_mm2 / std::f64::consts::PI).sqrt(),
            d_feret_mm: 0.0,
            d_feret_perp_mm: 0.0,
            centroid_lps,
            clipped,
        });
    }
    // Boundary points: where the interpolated mask crosses 0.5 between a member and a
    // non-member 4-neighbour (linear between the two samples).
    let is_member = |a: i64, b: i64| {
        a >= 0
            && b >= 0
            && a < side as i64
            && b < side as i64
            && state[b as usize * side + a as usize] == 1
    };
    let value = |a: i64, b: i64| mask.trilinear_at_index(at(a, b)).unwrap_or(0.0);
    let mut boundary: Vec<(f64, f64)> = Vec::new();
    for &(a, b) in &members {
        for (da, db) in [(1i64, 0i64), (-1, 0), (0, 1), (0, -1)] {
            if is_member(a + da, b + db) {
                continue;
            }
            let v_in = value(a, b);
            let v_out = value(a + da, b + db);
            let t = if v_in > v_out {
                ((v_in - 0.5) / (v_in - v_out)).clamp(0.0, 1.0)
            } else {
                0.5
            };
            boundary.push((
                ((a - half) as f64 + t * da as f64) * step_mm,
                ((b - half) as f64 + t * db as f64) * step_mm,
            ));
        }
    }
    // Caliper widths every degree. A width is the extent of the projections, which the
    // convex hull's vertices alone attain: measure those (tens instead of hundreds).
    let hull = convex_hull(boundary);
    let width = |deg: f64| {
        let (s, c) = deg.to_radians().sin_cos();
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in &hull {
            let p = x * c + y * s;
            lo = lo.min(p);
            hi = hi.max(p);
        }
        (hi - lo).max(step_mm)
    };
    let (mut best_deg, mut d_feret_mm) = (0.0, 0.0);
    for k in 0..180 {
        let w = width(k as f64);
        if w > d_feret_mm {
            d_feret_mm = w;
            best_deg = k as f64;
        }
    }
    Some(Section {
        area_mm2,
        d_ce_mm: 2.0 * (area_mm2 / std::f64::consts::PI).sqrt(),
        d_feret_mm,
        d_feret_perp_mm: width(best_deg + 90.0),
        centroid_lps,
        clipped,
    })
}

/// Vertices of the convex hull of `points` (Andrew's monotone chain), counter-clockwise.
fn convex_hull(mut points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    points.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.total_cmp(&q.1)));
    points.dedup();
    if points.len() < 3 {
        return points;
    }
    let turn = |o: (f64, f64), a: (f64, f64), b: (f64, f64)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut hull: Vec<(f64, f64)> = Vec::with_capacity(points.len() + 1);
    for pass in 0..2 {
        let floor = hull.len();
        let ordered: Box<dyn Iterator<Item = &(f64, f64)>> = if pass == 0 {
            Box::new(points.iter())
        } else {
            Box::new(points.iter().rev())
        };
        for &p in ordered {
            while hull.len() >= floor + 2
                && turn(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull
}

/// Mean of `ct` over the section samples within `radius_mm` of `center` (the lumen core,
/// away from partial-volume walls); `None` when no sample falls in the CT.
pub fn core_mean<T: pinhole_volume::Voxel>(
    ct: &pinhole_volume::Volume<T>,
    center: Vec3,
    tangent: Vec3,
    radius_mm: f64,
    step_mm: f64,
) -> Option<f64> {
    let (u, v) = plane_basis(tangent);
    let half = (radius_mm / step_mm).floor() as i64;
    let (mut sum, mut n) = (0.0, 0usize);
    for b in -half..=half {
        for a in -half..=half {
            if ((a * a + b * b) as f64) * step_mm * step_mm > radius_mm * radius_mm {
                continue;
            }
            let p = add(
                center,
                add(scale(u, a as f64 * step_mm), scale(v, b as f64 * step_mm)),
            );
            if let Some(x) = ct.sample_trilinear(p) {
                sum += x;
                n += 1;
            }
        }
    }
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::convex_hull;

    #[test]
    fn hull_of_a_square_with_inner_and_edge_points_is_its_four_corners() {
        let mut pts = vec![(0.0, 0.0), (2.0, 0.0), (2.0, 2.0), (0.0, 2.0)];
        pts.extend([(1.0, 1.0), (1.0, 0.0), (0.5, 1.5), (2.0, 1.0), (0.0, 0.0)]);
        let mut hull = convex_hull(pts);
        hull.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.total_cmp(&q.1)));
        assert_eq!(hull, vec![(0.0, 0.0), (0.0, 2.0), (2.0, 0.0), (2.0, 2.0)]);
    }
}
