//! Triangle surface of a binary mask (naive Surface Nets), in world LPS millimetres.
//!
//! The surface separates inside from outside voxel centres. Each *cell* — the cube
//! between eight neighbouring voxel centres — whose corners are not all alike gets one
//! vertex, at the mean of the midpoints of its edges that join an inside and an outside
//! corner (the 0.5 crossing of the binary mask). Each lattice edge joining an inside and
//! an outside voxel centre is crossed by one quad over the four cells around it, split
//! into two triangles along its shorter world diagonal.
//!
//! Guarantees of [`mask_surface`]:
//! * voxels outside the grid count as outside (virtual padding), so the surface is
//!   closed even where the mask touches the grid's edge;
//! * every vertex lies in a cell that straddles the boundary, at most half a cell
//!   diagonal from the crossings it averages, mapped through the grid's index→LPS
//!   affine (oblique and anisotropic grids are exact);
//! * triangles wind counter-clockwise seen from outside (right-hand normals point out
//!   of the mask), also on grids whose direction matrix is a reflection;
//! * where no two inside voxels touch only along an edge or a corner (no ambiguous
//!   cell), the mesh is a closed 2-manifold: every edge is shared by exactly two
//!   triangles;
//! * time is linear in the voxel count; memory is two layers of cell indices plus the
//!   mesh itself.

use crate::math::DVec3;
use crate::volume::Mask;

/// A triangle mesh in world coordinates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TriangleMesh {
    /// Vertices, LPS mm.
    pub vertices_lps: Vec<[f64; 3]>,
    /// Triangles as indices into `vertices_lps`, counter-clockwise seen from outside.
    pub triangles: Vec<[u32; 3]>,
}

impl TriangleMesh {
    /// Total area in mm².
    pub fn area_mm2(&self) -> f64 {
        self.triangles
            .iter()
            .map(|t| self.triangle_area_mm2(t))
            .sum()
    }

    /// Per-vertex area in mm²: a third of the area of each triangle using the vertex
    /// (sums to [`area_mm2`](Self::area_mm2)); for area-weighted statistics of per-vertex
    /// values.
    pub fn vertex_areas_mm2(&self) -> Vec<f64> {
        let mut areas = vec![0.0; self.vertices_lps.len()];
        for t in &self.triangles {
            let third = self.triangle_area_mm2(t) / 3.0;
            for &v in t {
                areas[v as usize] += third;
            }
        }
        areas
    }

    fn triangle_area_mm2(&self, t: &[u32; 3]) -> f64 {
        let [a, b, c] = t.map(|v| DVec3::from(self.vertices_lps[v as usize]));
        0.5 * (b - a).cross(c - a).length()
    }
}

/// Marks a cell without a vertex in the layer buffers.
const NO_VERTEX: u32 = u32::MAX;

/// The surface between the mask's inside and outside voxels (see the module docs).
/// An empty mask gives an empty mesh.
///
/// # Panics
/// If the mesh would need more than `u32::MAX - 1` vertices (a surface of about four
/// billion cells, far beyond memory for the mesh itself).
pub fn mask_surface(mask: &Mask) -> TriangleMesh {
    SurfaceNets::new(mask).run()
}

/// Cell `c` (per axis `-1..=dims-1`, stored shifted by one) has voxel corners `c..=c+1`.
struct SurfaceNets<'a> {
    mask: &'a Mask,
    dims: [usize; 3],
    /// Reverse every triangle: the index→LPS affine is a reflection.
    flip: bool,
    mesh: TriangleMesh,
    /// Vertex index per cell for two z-layers of cells, `(dims[0]+1) × (dims[1]+1)` each.
    layers: [Vec<u32>; 2],
}

impl<'a> SurfaceNets<'a> {
    fn new(mask: &'a Mask) -> Self {
        let grid = mask.grid();
        let dims = grid.dims();
        let m = grid.ijk_to_lps();
        let det = DVec3::new(m[0][0], m[1][0], m[2][0])
            .cross(DVec3::new(m[0][1], m[1][1], m[2][1]))
            .dot(DVec3::new(m[0][2], m[1][2], m[2][2]));
        let layer = vec![NO_VERTEX; (dims[0] + 1) * (dims[1] + 1)];
        Self {
            mask,
            dims,
            flip: det < 0.0,
            mesh: TriangleMesh::default(),
            layers: [layer.clone(), layer],
        }
    }

    fn run(mut self) -> TriangleMesh {
        if !self.mask.data().contains(&true) {
            return self.mesh;
        }
        let [nx, ny, nz] = self.dims.map(|d| d as isize);
        for z in -1..nz {
            self.layers[layer_of(z)].fill(NO_VERTEX);
            for y in -1..ny {
                for x in -1..nx {
                    self.visit_cell([x, y, z]);
                }
            }
        }
        self.mesh
    }

    /// Whether voxel `p` is inside (outside the grid counts as outside).
    #[inline]
    fn inside(&self, p: [isize; 3]) -> bool {
        let d = self.dims;
        if p[0] < 0 || p[1] < 0 || p[2] < 0 {
            return false;
        }
        let u = p.map(|v| v as usize);
        if u[0] >= d[0] || u[1] >= d[1] || u[2] >= d[2] {
            return false;
        }
        self.mask.data()[self.mask.grid().offset(u)]
    }

    /// Eight corner bits of cell `c`: bit `dx | dy << 1 | dz << 2` for corner `c + d`.
    #[inline]
    fn corners(&self, c: [isize; 3]) -> u8 {
        let mut bits = 0u8;
        for n in 0..8 {
            let d = [n & 1, (n >> 1) & 1, (n >> 2) & 1];
            if self.inside([c[0] + d[0], c[1] + d[1], c[2] + d[2]]) {
                bits |= 1 << n;
            }
        }
        bits
    }

    #[inline]
    fn slot(&self, c: [isize; 3]) -> usize {
        (c[0] + 1) as usize + (self.dims[0] + 1) * (c[1] + 1) as usize
    }

    fn vertex_of(&self, c: [isize; 3]) -> u32 {
        self.layers[layer_of(c[2])][self.slot(c)]
    }

    /// Adds cell `c`'s vertex if it straddles the surface, then the quads across the
    /// three lattice edges leaving its lowest corner (the other cells around those
    /// edges have lower indices, so their vertices exist already).
    fn visit_cell(&mut self, c: [isize; 3]) {
        let bits = self.corners(c);
        if bits == 0 || bits == 0xff {
            return;
        }
        let index = self.push_vertex(c, bits);
        let slot = self.slot(c);
        self.layers[layer_of(c[2])][slot] = index;
        for a in 0..3 {
            let lower = bits & 1 != 0;
            let upper = bits & (1 << (1 << a)) != 0;
            if lower != upper {
                self.push_quad(c, a, lower);
            }
        }
    }

    fn push_vertex(&mut self, c: [isize; 3], bits: u8) -> u32 {
        let mut sum = [0.0f64; 3];
        let mut count = 0u32;
        for n in 0..8usize {
            for a in 0..3 {
                let m = n | (1 << a);
                if m == n {
                    continue;
                }
                if ((bits >> n) & 1) != ((bits >> m) & 1) {
                    for (b, s) in sum.iter_mut().enumerate() {
                        let offset = if b == a { 0.5 } else { ((n >> b) & 1) as f64 };
                        *s += c[b] as f64 + offset;
                    }
                    count += 1;
                }
            }
        }
        let mean = sum.map(|s| s / f64::from(count));
        let index = u32::try_from(self.mesh.vertices_lps.len())
            .ok()
            .filter(|&i| i != NO_VERTEX);
        let Some(index) = index else {
            panic!("mask surface has more than {} vertices", NO_VERTEX - 1);
        };
        self.mesh
            .vertices_lps
            .push(self.mask.grid().index_to_world(mean));
        index
    }

    /// The quad across the edge from voxel `c` to `c + e_a`; `lower_inside` tells which
    /// end is inside, so the quad faces along `+a` (lower inside) or `-a`.
    fn push_quad(&mut self, c: [isize; 3], a: usize, lower_inside: bool) {
        let (b, e) = ((a + 1) % 3, (a + 2) % 3);
        let shift = |mut p: [isize; 3], axes: &[usize]| {
            for &x in axes {
                p[x] -= 1;
            }
            p
        };
        // Counter-clockwise around +a in the (b, e) plane, as b × e = a.
        let mut quad = [
            self.vertex_of(c),
            self.vertex_of(shift(c, &[b])),
            self.vertex_of(shift(c, &[b, e])),
            self.vertex_of(shift(c, &[e])),
        ];
        if quad.contains(&NO_VERTEX) {
            // Cannot happen: every cell around a crossed edge straddles the surface.
            debug_assert!(false, "missing cell vertex around a crossed edge");
            return;
        }
        if lower_inside == self.flip {
            quad.reverse();
        }
        let [q0, q1, q2, q3] = quad;
        let p = |i: u32| DVec3::from(self.mesh.vertices_lps[i as usize]);
        if p(q0).distance_squared(p(q2)) <= p(q1).distance_squared(p(q3)) {
            self.mesh.triangles.push([q0, q1, q2]);
            self.mesh.triangles.push([q0, q2, q3]);
        } else {
            self.mesh.triangles.push([q1, q2, q3]);
            self.mesh.triangles.push([q1, q3, q0]);
        }
    }
}

/// Which of the two layer buffers holds cell layer `z` (`z >= -1`).
#[inline]
fn layer_of(z: isize) -> usize {
    ((z + 1) & 1) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Grid;
    use crate::volume::Volume;

    #[test]
    fn two_voxels_give_a_closed_box() {
        let grid = Grid::axis_aligned([2, 1, 1], [1.0; 3], [0.0; 3]).unwrap();
        let mask = Volume::new(grid, vec![true, true]).unwrap();
        let mesh = mask_surface(&mask);
        // 12 cells around two voxels; 10 crossed edges → 20 triangles.
        assert_eq!(mesh.vertices_lps.len(), 12);
        assert_eq!(mesh.triangles.len(), 20);
    }
}
