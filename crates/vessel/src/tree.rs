//! The vessel tree across labels: where labels join (junctions) and the branches of the
//! union found TEASAR-style (Sato et al. 2000): from a root at a free end, repeatedly the
//! uncovered voxel farthest along the vessels is connected to the tree by the
//! centredness-weighted path; voxels within a tube around each path (1.5 × the local
//! distance to the wall + two voxels) count as covered. Branches shorter than
//! `min_branch_mm` beyond their join's own radius are bumps, not branches.

use pinhole_volume::Vec3;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::centerline::{polish, CenterlineOptions};
use crate::error::{Result, VesselError};
use crate::geom::polyline_length;
use crate::graph::{VoxelGraph, NONE};
use crate::route::VesselMap;

/// Two vessel labels touching each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Junction {
    pub vessels: [String; 2],
    pub label_ids: [u32; 2],
    /// Voxels of either label with a 26-neighbour of the other.
    pub contact_voxels: usize,
    /// Centroid of the contact voxels, LPS mm.
    pub point_lps: Vec3,
}

/// One branch (segment between a branch point and a free end, or the root path).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Branch {
    /// The branch it leaves from (`None` for the root path).
    pub parent: Option<usize>,
    /// Where it leaves its parent (the branch point), LPS mm.
    pub branch_point_lps: Vec3,
    pub length_mm: f64,
    /// Vessel labels along it, in order.
    pub vessels: Vec<String>,
    pub points_lps: Vec<Vec3>,
    pub radius_mm: Vec<f64>,
}

/// Junctions and branches of a vessel map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VesselTree {
    pub junctions: Vec<Junction>,
    pub branches: Vec<Branch>,
}

/// The pairs of vessel labels that touch (26-neighbourhood), with their contact point.
pub fn junctions(map: &VesselMap) -> Vec<Junction> {
    let g = &map.graph;
    let labels = &map.node_label;
    let mut contacts: std::collections::BTreeMap<(u32, u32), (usize, [f64; 3])> =
        Default::default();
    for n in 0..g.len() as u32 {
        let a = labels[n as usize];
        let mut others: Vec<u32> = Vec::new();
        g.for_neighbours(n, |m, _| {
            let b = labels[m as usize];
            if b != a && !others.contains(&b) {
                others.push(b);
            }
        });
        let p = g.world(n);
        for b in others {
            let e = contacts
                .entry((a.min(b), a.max(b)))
                .or_insert((0, [0.0; 3]));
            e.0 += 1;
            for k in 0..3 {
                e.1[k] += p[k];
            }
        }
    }
    contacts
        .into_iter()
        .map(|((a, b), (count, sum))| Junction {
            vessels: [map.name_of(a), map.name_of(b)],
            label_ids: [a, b],
            contact_voxels: count,
            point_lps: sum.map(|s| s / count as f64),
        })
        .collect()
}

/// Builds the tree of `map`'s largest connected part.
pub fn vessel_tree(
    map: &VesselMap,
    opts: &CenterlineOptions,
    min_branch_mm: f64,
) -> Result<VesselTree> {
    let g = &map.graph;
    let labels = &map.node_label;
    let junctions = junctions(map);
    // Branches.
    let empty = || VesselError::EmptyMask {
        what: "vessel tree".into(),
    };
    let seed = g.deepest(|_| true).ok_or_else(empty)?;
    let root = VoxelGraph::argmax(&g.geodesic(&[seed]), |_| true).ok_or_else(empty)?;
    let geo = g.geodesic(&[root]);
    let (_, parent) = g.dijkstra(&[root], |u, v, l| g.centred_cost(u, v, l), None);
    let mut covered = vec![false; g.len()];
    let mut branch_of = vec![NONE; g.len()];
    branch_of[root as usize] = 0;
    let sp = g.grid.spacing_mm();
    let hmax = sp[0].max(sp[1]).max(sp[2]);
    let dims = g.grid.dims();
    let mut branches: Vec<Branch> = Vec::new();
    let mut first = true;
    while let Some(far) = VoxelGraph::argmax(&geo, |n| !covered[n as usize]) {
        let mut chain = vec![far];
        let mut cur = far;
        while branch_of[cur as usize] == NONE && parent[cur as usize] != NONE {
            cur = parent[cur as usize];
            chain.push(cur);
        }
        // Cover a tube around the chain.
        for &n in &chain {
            let c = g.ijk(n);
            let r = 1.5 * g.edt_of(n) + 2.0 * hmax;
            let reach = [0, 1, 2].map(|a| (r / sp[a]).ceil() as usize);
            for k in c[2].saturating_sub(reach[2])..=(c[2] + reach[2]).min(dims[2] - 1) {
                for j in c[1].saturating_sub(reach[1])..=(c[1] + reach[1]).min(dims[1] - 1) {
                    for i in c[0].saturating_sub(reach[0])..=(c[0] + reach[0]).min(dims[0] - 1) {
                        let m = g.node_of[g.grid.offset([i, j, k])];
                        if m == NONE || covered[m as usize] {
                            continue;
                        }
                        let d2: f64 = (0..3)
                            .map(|a| {
                                let d = ([i, j, k][a] as f64 - c[a] as f64) * sp[a];
                                d * d
                            })
                            .sum();
                        if d2 <= r * r {
                            covered[m as usize] = true;
                        }
                    }
                }
            }
        }
        covered[far as usize] = true;
        let join = *chain.last().unwrap_or(&far);
        let pts: Vec<Vec3> = chain.iter().map(|&n| g.world(n)).collect();
        let long_enough = polyline_length(&pts) - g.edt_of(join) >= min_branch_mm;
        if !(first || long_enough) || chain.len() < 2 {
            continue;
        }
        let index = branches.len();
        let parent_branch = (!first).then(|| branch_of[join as usize] as usize);
        for &n in &chain {
            if branch_of[n as usize] == NONE {
                branch_of[n as usize] = index as u32;
            }
        }
        chain.reverse();
        let line = polish(g, &chain, [first, true], opts, "vessel tree branch")?;
        let mut vessels: Vec<String> = Vec::new();
        for &p in &line.points_lps {
            if let Some(n) = g.node_at(p) {
                let name = map.name_of(labels[n as usize]);
                if vessels.last() != Some(&name) {
                    vessels.push(name);
                }
            }
        }
        branches.push(Branch {
            parent: parent_branch,
            branch_point_lps: g.world(join),
            length_mm: line.length_mm(),
            vessels,
            points_lps: line.points_lps,
            radius_mm: line.radius_mm,
        });
        first = false;
    }
    Ok(VesselTree {
        junctions,
        branches,
    })
}
