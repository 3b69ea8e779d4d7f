//! Centerlines with radius from a vessel mask.
//!
//! 1. Distance transform inside the mask (exact EDT, mm).
//! 2. Endpoints by farthest-point search on path length (TEASAR): from the deepest voxel
//!    to the geodesically farthest end A, then from A to the farthest end B; each end is
//!    moved from the rim voxel to the deepest voxel near it (on the axis about a radius
//!    from the end), so the path does not curl to the rim.
//! 3. Dijkstra on the 26-neighbourhood voxel graph with edge cost length/EDT², which keeps
//!    the path in the middle of the lumen.
//! 4. Sub-voxel refinement: each point moves to the centroid of its cross-section
//!    (perpendicular to the local tangent, mask interpolated trilinearly), twice; then a
//!    moving average smooths it. Points that would leave the lumen keep their old place.
//! 5. Free ends: the last stretch (as long as the end voxel's depth) is dropped and the
//!    line is extended along the tangent before it to where the lumen ends (trilinear
//!    mask 0.5 and nearest voxel inside).
//! 6. Uniform resampling; the radius is the maximal inscribed sphere radius (see
//!    [`inscribed_radius`]).

use pinhole_volume::{Mask, Vec3};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Result, VesselError};
use crate::geom::{arc_lengths, dist, resample, scale, smooth, sub, tangents, unit};
use crate::graph::VoxelGraph;
use crate::section::cross_section;

/// How centerlines are made and sampled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CenterlineOptions {
    /// Spacing of the output points (and measurement stations), mm.
    pub step_mm: f64,
    /// Half-width of the final moving-average smoothing, mm.
    pub smooth_mm: f64,
    /// Rounds of centroid refinement.
    pub refine_iterations: usize,
}

impl Default for CenterlineOptions {
    fn default() -> Self {
        Self {
            step_mm: 1.0,
            smooth_mm: 2.0,
            refine_iterations: 2,
        }
    }
}

/// A centerline: points (LPS mm) with the maximal inscribed sphere radius at each.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Centerline {
    pub points_lps: Vec<Vec3>,
    pub radius_mm: Vec<f64>,
}

impl Centerline {
    pub fn length_mm(&self) -> f64 {
        crate::geom::polyline_length(&self.points_lps)
    }
    pub fn arc_mm(&self) -> Vec<f64> {
        arc_lengths(&self.points_lps)
    }
}

/// The centerline of the longest path through `mask` (largest component, cavities
/// filled): end to end of the vessel.
pub fn centerline_of_mask(mask: &Mask, what: &str, opts: &CenterlineOptions) -> Result<Centerline> {
    let graph = VoxelGraph::new(mask, what, true)?;
    longest_centerline(&graph, what, opts)
}

pub(crate) fn longest_centerline(
    graph: &VoxelGraph,
    what: &str,
    opts: &CenterlineOptions,
) -> Result<Centerline> {
    let empty = || VesselError::EmptyMask {
        what: what.to_string(),
    };
    let seed = graph.deepest(|_| true).ok_or_else(empty)?;
    let a = graph
        .centred_end(&graph.geodesic(&[seed]), |_| true)
        .ok_or_else(empty)?;
    let b = graph
        .centred_end(&graph.geodesic(&[a]), |_| true)
        .ok_or_else(empty)?;
    let (_, parent) = graph.dijkstra(&[a], |u, v, l| graph.centred_cost(u, v, l), Some(b));
    let nodes = VoxelGraph::trace(&parent, b);
    polish(graph, &nodes, [true, true], opts, what)
}

/// True when `p` is in the lumen both by trilinear mask (≥ 0.5) and by nearest voxel.
pub(crate) fn inside(mask: &Mask, p: Vec3) -> bool {
    mask.sample_nearest(p) == Some(true) && mask.sample_trilinear(p).is_some_and(|m| m >= 0.5)
}

/// Turns a voxel path into a smooth sub-voxel centerline with radii. `extend` says, for
/// the start and the end, whether it is a free end to extend to the lumen's end.
pub(crate) fn polish(
    graph: &VoxelGraph,
    nodes: &[u32],
    extend: [bool; 2],
    opts: &CenterlineOptions,
    what: &str,
) -> Result<Centerline> {
    let mask = &graph.mask;
    let sp = graph.grid.spacing_mm();
    let h = graph.min_spacing();
    let hmax = sp[0].max(sp[1]).max(sp[2]);
    let voxel_pts: Vec<Vec3> = nodes.iter().map(|&n| graph.world(n)).collect();
    if voxel_pts.len() < 2 {
        return Err(VesselError::TooShort {
            what: what.to_string(),
            points: voxel_pts.len(),
        });
    }
    let fine = (0.5 * h).max(0.2);
    let mut pts = resample(&voxel_pts, fine);
    let smooth_half = |mm: f64| (mm / fine).ceil() as usize;
    // First smoothing: remove the voxel staircase (up to the largest spacing).
    pts = guarded(mask, &pts, &smooth(&pts, smooth_half(hmax)));
    let edt = |p: Vec3| graph.edt.sample_trilinear(p).unwrap_or(0.0);
    for _ in 0..opts.refine_iterations {
        let t = tangents(&pts, smooth_half(2.0 * hmax));
        let moved: Vec<Vec3> = pts
            .par_iter()
            .zip(t.par_iter())
            .map(|(&p, &t)| {
                let r = edt(p);
                match cross_section(mask, p, t, 1.5 * r + 2.0 * hmax, 0.5 * h, false) {
                    Some(s) if !s.clipped && dist(s.centroid_lps, p) <= r.max(h) => s.centroid_lps,
                    _ => p,
                }
            })
            .collect();
        pts = guarded(mask, &pts, &moved);
    }
    // Final smoothing over at least 1.5 of the largest spacing (thick slices wobble).
    let final_half = smooth_half(opts.smooth_mm.max(1.5 * hmax));
    pts = guarded(mask, &pts, &smooth(&pts, final_half));
    if extend[0] {
        pts.reverse();
        pts = extend_end(mask, &edt, pts, h, hmax);
        pts.reverse();
    }
    if extend[1] {
        pts = extend_end(mask, &edt, pts, h, hmax);
    }
    let sampled = resample(&pts, opts.step_mm);
    // A resampled point between two inside points may cut a corner: take the nearer of
    // the two polished points around its arc position there.
    let arc = arc_lengths(&pts);
    let points_lps: Vec<Vec3> = sampled
        .iter()
        .enumerate()
        .map(|(k, &p)| {
            if inside(mask, p) {
                return p;
            }
            let s = k as f64 * opts.step_mm;
            let j = arc
                .iter()
                .position(|&a| a >= s)
                .unwrap_or(arc.len() - 1)
                .max(1);
            if dist(pts[j - 1], p) <= dist(pts[j], p) {
                pts[j - 1]
            } else {
                pts[j]
            }
        })
        .collect();
    let radius_mm = points_lps
        .iter()
        .map(|&p| inscribed_radius(&graph.edt, p))
        .collect();
    Ok(Centerline {
        points_lps,
        radius_mm,
    })
}

/// Maximal inscribed sphere radius at `p`: the distance from `p` to the nearest outside
/// voxel centre, bounded through the 8 surrounding voxel centres q as
/// min(EDT(q) + |p − q|) (triangle inequality; exact when the nearest outside voxel lies
/// beyond q as seen from p), minus a quarter of the smallest spacing: the lumen surface
/// lies between the last inside and the first outside voxel centre, half a voxel nearer
/// than the outside centre for a grid-aligned wall and almost on it for a curved wall
/// seen from many directions; a quarter voxel splits the difference.
pub fn inscribed_radius(edt: &pinhole_volume::Volume<f32>, p: Vec3) -> f64 {
    let grid = edt.grid();
    let c = grid.world_to_index(p);
    let d = grid.dims();
    let sp = grid.spacing_mm();
    let h = sp[0].min(sp[1]).min(sp[2]);
    let mut best = f64::INFINITY;
    for corner in 0..8 {
        let mut ijk = [0usize; 3];
        let mut ok = true;
        for a in 0..3 {
            let f = c[a].floor() + ((corner >> a) & 1) as f64;
            if f < 0.0 || f > (d[a] - 1) as f64 {
                ok = false;
                break;
            }
            ijk[a] = f as usize;
        }
        if !ok {
            continue;
        }
        let e = f64::from(edt.data()[grid.offset(ijk)]);
        if e <= 0.0 {
            continue;
        }
        let q = grid.index_to_world(ijk.map(|v| v as f64));
        best = best.min(e + dist(p, q));
    }
    if best.is_finite() {
        (best - 0.25 * h).max(0.0)
    } else {
        0.0
    }
}

/// `new[i]` where it is inside the lumen, else the point nearest to `new[i]` on the
/// segment towards `old[i]` that is inside (bisection), else `old[i]`.
fn guarded(mask: &Mask, old: &[Vec3], new: &[Vec3]) -> Vec<Vec3> {
    old.iter()
        .zip(new)
        .map(|(&o, &n)| {
            if inside(mask, n) {
                return n;
            }
            // t = 0 at the old point (inside), 1 at the new one (outside).
            let (mut lo, mut hi) = (0.0, 1.0);
            for _ in 0..6 {
                let mid = 0.5 * (lo + hi);
                if inside(mask, crate::geom::add(o, scale(sub(n, o), mid))) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            crate::geom::add(o, scale(sub(n, o), lo))
        })
        .collect()
}

/// Extends the line along its end tangent to where the lumen ends.
fn extend_end(
    mask: &Mask,
    edt: &impl Fn(Vec3) -> f64,
    mut pts: Vec<Vec3>,
    h: f64,
    hmax: f64,
) -> Vec<Vec3> {
    if pts.len() < 3 {
        return pts;
    }
    // The last stretch (as long as the end node's depth, i.e. its distance to the end
    // wall) may bend towards the end's rim: drop it and extend along the tangent of the
    // stretch before it.
    let arc = arc_lengths(&pts);
    let total = arc[arc.len() - 1];
    let cut = edt(pts[pts.len() - 1]).min(0.25 * total);
    let keep = arc
        .iter()
        .rposition(|&a| a <= total - cut)
        .unwrap_or(pts.len() - 1)
        .max(1);
    pts.truncate(keep + 1);
    let last = pts[pts.len() - 1];
    let end_arc = arc[keep];
    let back = edt(last).max(2.0 * hmax);
    let from = arc[..=keep]
        .iter()
        .position(|&a| a >= end_arc - back)
        .unwrap_or(0)
        .min(pts.len() - 2);
    let Some(dir) = unit(sub(last, pts[from])) else {
        return pts;
    };
    // Track the lumen: step one voxel along the direction, re-centre on the section's
    // centroid, update the direction; stop where the section is no longer closed or the
    // lumen ends, then march straight to the lumen's end.
    let mut dir = dir;
    let mut last = last;
    let limit = 4.0 * edt(last) + 4.0 * hmax;
    let mut tracked = 0.0;
    while tracked < limit {
        let ahead = crate::geom::add(last, scale(dir, h));
        if !inside(mask, ahead) {
            break;
        }
        let r = edt(last);
        let next = match cross_section(mask, ahead, dir, 1.5 * r + 2.0 * hmax, 0.5 * h, false) {
            Some(sec) if !sec.clipped && inside(mask, sec.centroid_lps) => sec.centroid_lps,
            _ => break,
        };
        let Some(step_dir) = unit(sub(next, last)) else {
            break;
        };
        dir = unit(crate::geom::add(dir, step_dir)).unwrap_or(dir);
        tracked += dist(next, last);
        pts.push(next);
        last = next;
    }
    let step = 0.05 * h;
    let limit = 2.0 * edt(last) + 2.0 * hmax;
    let mut s = step;
    let mut end = last;
    while s <= limit {
        let p = crate::geom::add(last, scale(dir, s));
        if !inside(mask, p) {
            break;
        }
        end = p;
        s += step;
    }
    if dist(end, last) > 1e-9 {
        pts.push(end);
    }
    pts
}
