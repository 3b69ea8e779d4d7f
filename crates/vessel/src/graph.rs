//! A graph over the voxels of a vessel mask (26-neighbourhood), cropped to the mask's
//! bounding box, with the distance transform inside the mask and Dijkstra searches.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use pinhole_volume::{distance_inside, Grid, Mask, Vec3, Volume};

use crate::error::{Result, VesselError};

pub(crate) const NONE: u32 = u32::MAX;

/// Mask voxels as graph nodes on a cropped grid.
pub(crate) struct VoxelGraph {
    /// The cropped grid (same spacing and direction as the input).
    pub grid: Grid,
    /// The cropped mask (used for sub-voxel sampling).
    pub mask: Mask,
    /// Distance inside the mask, mm, on the cropped grid.
    pub edt: Volume<f32>,
    /// Node id per cropped voxel, [`NONE`] outside the mask.
    pub node_of: Vec<u32>,
    /// Offset in the cropped grid of each node.
    pub offsets: Vec<usize>,
    /// Neighbour steps: (di, dj, dk, length mm).
    steps: Vec<([i64; 3], f64)>,
}

impl VoxelGraph {
    /// Builds the graph of the true voxels of `mask` (on any grid). With `clean`, only the
    /// largest 26-connected component is kept and its enclosed cavities are filled.
    pub fn new(mask: &Mask, what: &str, clean: bool) -> Result<Self> {
        let grid = mask.grid();
        let d = grid.dims();
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        let mut any = false;
        for (o, &m) in mask.data().iter().enumerate() {
            if m {
                any = true;
                let ijk = grid.index_of_offset(o);
                for a in 0..3 {
                    lo[a] = lo[a].min(ijk[a]);
                    hi[a] = hi[a].max(ijk[a]);
                }
            }
        }
        if !any {
            return Err(VesselError::EmptyMask {
                what: what.to_string(),
            });
        }
        // One voxel of margin where the grid has it, so the boundary is seen as outside.
        for a in 0..3 {
            lo[a] = lo[a].saturating_sub(1);
            hi[a] = (hi[a] + 1).min(d[a] - 1);
        }
        let cd = [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1];
        let origin = grid.index_to_world([lo[0] as f64, lo[1] as f64, lo[2] as f64]);
        let crop = Grid::new(cd, grid.spacing_mm(), origin, grid.direction()).map_err(|e| {
            VesselError::EmptyMask {
                what: format!("{what}: cropped grid invalid: {e}"),
            }
        })?;
        let mut data = vec![false; crop.voxel_count()];
        for k in 0..cd[2] {
            for j in 0..cd[1] {
                for i in 0..cd[0] {
                    data[crop.offset([i, j, k])] =
                        mask.data()[grid.offset([i + lo[0], j + lo[1], k + lo[2]])];
                }
            }
        }
        let cropped = Mask::new(crop.clone(), data).map_err(|e| VesselError::EmptyMask {
            what: format!("{what}: {e}"),
        })?;
        let cropped = if clean {
            pinhole_volume::components::fill_holes(&pinhole_volume::components::largest_component(
                &cropped,
            ))
        } else {
            cropped
        };
        Ok(Self::from_cropped(cropped))
    }

    fn from_cropped(mask: Mask) -> Self {
        let grid = mask.grid().clone();
        let edt = distance_inside(&mask);
        let mut node_of = vec![NONE; grid.voxel_count()];
        let mut offsets = Vec::new();
        for (o, &m) in mask.data().iter().enumerate() {
            if m {
                node_of[o] = offsets.len() as u32;
                offsets.push(o);
            }
        }
        let sp = grid.spacing_mm();
        let mut steps = Vec::with_capacity(26);
        for dk in -1i64..=1 {
            for dj in -1i64..=1 {
                for di in -1i64..=1 {
                    if di == 0 && dj == 0 && dk == 0 {
                        continue;
                    }
                    let len = ((di as f64 * sp[0]).powi(2)
                        + (dj as f64 * sp[1]).powi(2)
                        + (dk as f64 * sp[2]).powi(2))
                    .sqrt();
                    steps.push(([di, dj, dk], len));
                }
            }
        }
        Self {
            grid,
            mask,
            edt,
            node_of,
            offsets,
            steps,
        }
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn ijk(&self, node: u32) -> [usize; 3] {
        self.grid.index_of_offset(self.offsets[node as usize])
    }

    pub fn world(&self, node: u32) -> Vec3 {
        let ijk = self.ijk(node);
        self.grid
            .index_to_world([ijk[0] as f64, ijk[1] as f64, ijk[2] as f64])
    }

    pub fn edt_of(&self, node: u32) -> f64 {
        f64::from(self.edt.data()[self.offsets[node as usize]])
    }

    /// The node at a world point, if that voxel is in the mask.
    pub fn node_at(&self, lps: Vec3) -> Option<u32> {
        let ijk = self.grid.world_to_voxel(lps)?;
        let n = self.node_of[self.grid.offset(ijk)];
        (n != NONE).then_some(n)
    }

    /// The node nearest to a world point and its distance, mm (`filter` restricts nodes).
    pub fn nearest_node(&self, lps: Vec3, filter: impl Fn(u32) -> bool) -> Option<(u32, f64)> {
        if let Some(n) = self.node_at(lps).filter(|&n| filter(n)) {
            return Some((n, 0.0));
        }
        (0..self.len() as u32)
            .filter(|&n| filter(n))
            .map(|n| (n, crate::geom::dist(self.world(n), lps)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Calls `f(neighbour, step_length_mm)` for the mask neighbours of `node`.
    pub fn for_neighbours(&self, node: u32, mut f: impl FnMut(u32, f64)) {
        let d = self.grid.dims();
        let ijk = self.ijk(node);
        for (s, len) in &self.steps {
            let n = [
                ijk[0] as i64 + s[0],
                ijk[1] as i64 + s[1],
                ijk[2] as i64 + s[2],
            ];
            if n.iter().zip(d).any(|(&c, dim)| c < 0 || c >= dim as i64) {
                continue;
            }
            let o = self
                .grid
                .offset([n[0] as usize, n[1] as usize, n[2] as usize]);
            let m = self.node_of[o];
            if m != NONE {
                f(m, *len);
            }
        }
    }

    /// Dijkstra from `sources`; edge cost `cost(from, to, length_mm)`. Stops early when
    /// `stop` is reached. Returns (distance, parent) per node (`INFINITY` / [`NONE`]).
    pub fn dijkstra(
        &self,
        sources: &[u32],
        cost: impl Fn(u32, u32, f64) -> f64,
        stop: Option<u32>,
    ) -> (Vec<f64>, Vec<u32>) {
        let n = self.len();
        let mut dist = vec![f64::INFINITY; n];
        let mut parent = vec![NONE; n];
        let mut heap = BinaryHeap::new();
        for &s in sources {
            dist[s as usize] = 0.0;
            heap.push(Reverse((0u64, s)));
        }
        while let Some(Reverse((bits, u))) = heap.pop() {
            let du = f64::from_bits(bits);
            if du > dist[u as usize] {
                continue;
            }
            if Some(u) == stop {
                break;
            }
            self.for_neighbours(u, |v, len| {
                let nd = du + cost(u, v, len);
                if nd < dist[v as usize] {
                    dist[v as usize] = nd;
                    parent[v as usize] = u;
                    // Non-negative f64 bit patterns sort like the values.
                    heap.push(Reverse((nd.to_bits(), v)));
                }
            });
        }
        (dist, parent)
    }

    /// Geodesic (path length) distances from `sources`.
    pub fn geodesic(&self, sources: &[u32]) -> Vec<f64> {
        self.dijkstra(sources, |_, _, len| len, None).0
    }

    /// Centredness-weighted edge cost: length / (mean distance-to-wall)², so paths keep to
    /// the middle of the lumen at every vessel size (the ratio between centre and
    /// off-centre costs does not depend on the vessel's calibre).
    pub fn centred_cost(&self, u: u32, v: u32, len: f64) -> f64 {
        let d = 0.5 * (self.edt_of(u) + self.edt_of(v));
        let floor = 0.25 * self.min_spacing();
        len / (d.max(floor) * d.max(floor))
    }

    pub fn min_spacing(&self) -> f64 {
        let s = self.grid.spacing_mm();
        s[0].min(s[1]).min(s[2])
    }

    /// Node path from a source of `parent` to `to` (source first).
    pub fn trace(parent: &[u32], to: u32) -> Vec<u32> {
        let mut path = vec![to];
        let mut cur = to;
        while parent[cur as usize] != NONE {
            cur = parent[cur as usize];
            path.push(cur);
        }
        path.reverse();
        path
    }

    /// The node with the largest finite value among those passing `filter`.
    pub fn argmax(values: &[f64], filter: impl Fn(u32) -> bool) -> Option<u32> {
        values
            .iter()
            .enumerate()
            .filter(|(i, v)| v.is_finite() && filter(*i as u32))
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
    }

    /// A centred end near the far end of a distance field: the farthest node (largest
    /// finite `geo` passing `filter`) lies on the rim of the vessel's end; this returns the
    /// deepest node within a growing zone of that end (nodes with `geo ≥ max − ρ`, ρ grown
    /// to 1.5 × the depth found + one voxel), i.e. a node on the axis about one radius
    /// from the end.
    pub fn centred_end(&self, geo: &[f64], filter: impl Fn(u32) -> bool) -> Option<u32> {
        let far = Self::argmax(geo, &filter)?;
        let top = geo[far as usize];
        let sp = self.grid.spacing_mm();
        let hmax = sp[0].max(sp[1]).max(sp[2]);
        let mut rho = 2.0 * hmax;
        let mut best = far;
        for _ in 0..40 {
            let zone =
                |n: u32| filter(n) && geo[n as usize].is_finite() && geo[n as usize] >= top - rho;
            best = self.deepest(zone)?;
            let next = 1.5 * self.edt_of(best) + hmax;
            if next <= rho {
                break;
            }
            rho = next;
        }
        Some(best)
    }

    /// The deepest node (largest distance to the wall).
    pub fn deepest(&self, filter: impl Fn(u32) -> bool) -> Option<u32> {
        let depth: Vec<f64> = (0..self.len() as u32).map(|n| self.edt_of(n)).collect();
        Self::argmax(&depth, filter)
    }
}
