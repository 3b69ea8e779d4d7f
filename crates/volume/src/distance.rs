//! Exact Euclidean distance transforms in millimetres (anisotropic spacing), linear time.
//!
//! Felzenszwalb & Huttenlocher, "Distance Transforms of Sampled Functions", Theory of
//! Computing 8 (2012): the squared distance is separable, so three passes of a 1-D lower
//! envelope of parabolas (one per axis, weighted by that axis' spacing) give the exact
//! squared Euclidean distance between voxel centres. Voxels outside the grid are ignored,
//! as in `scipy.ndimage.distance_transform_edt`.

use rayon::prelude::*;

use crate::volume::{Mask, Volume};

/// Distance in mm from every voxel centre to the nearest voxel centre where `mask` is
/// true (0 on the mask). `f32::INFINITY` everywhere when the mask is empty.
///
/// Equals `scipy.ndimage.distance_transform_edt(~mask, sampling=spacing)`.
pub fn distance_to(mask: &Mask) -> Volume<f32> {
    squared_distance_to(mask, |&m| m)
}

/// Distance in mm from every voxel inside `mask` to the nearest voxel outside it
/// (0 outside). Equals `scipy.ndimage.distance_transform_edt(mask, sampling=spacing)`.
pub fn distance_inside(mask: &Mask) -> Volume<f32> {
    squared_distance_to(mask, |&m| !m)
}

/// Signed distance in mm: positive outside the mask (distance to the nearest mask voxel),
/// negative inside (minus the distance to the nearest outside voxel), as ITK's signed
/// Maurer map with `insideIsPositive = false` and voxel-centre distances.
pub fn signed_distance(mask: &Mask) -> Volume<f32> {
    let outside = distance_to(mask);
    let inside = distance_inside(mask);
    let data = outside
        .data()
        .par_iter()
        .zip(inside.data().par_iter())
        .map(|(&o, &i)| if i > 0.0 { -i } else { o })
        .collect();
    Volume::from_grid_data(mask.grid().clone(), data)
}

/// Squared-distance transform to the voxels where `is_feature` holds, then `sqrt` to f32.
fn squared_distance_to(mask: &Mask, is_feature: impl Fn(&bool) -> bool + Sync) -> Volume<f32> {
    let grid = mask.grid();
    let [nx, ny, nz] = grid.dims();
    let [sx, sy, sz] = grid.spacing_mm();
    // Pass along i: on a binary input the 1-D transform is the squared distance to the
    // nearest feature in the row, found by one scan each way (no parabolas needed).
    let mut d2 = vec![0.0f64; grid.voxel_count()];
    d2.par_chunks_mut(nx)
        .zip(mask.data().par_chunks(nx))
        .for_each(|(row, m)| nearest_in_row(m, &is_feature, row, sx));
    // Pass along j: within each k-slice, gather every column.
    d2.par_chunks_mut(nx * ny).for_each_init(
        || (Envelope::new(ny), vec![0.0; ny]),
        |(env, line), slice| {
            for i in 0..nx {
                for (j, v) in line.iter_mut().enumerate() {
                    *v = slice[i + nx * j];
                }
                env.transform_in_place(line, sy);
                for (j, v) in line.iter().enumerate() {
                    slice[i + nx * j] = *v;
                }
            }
        },
    );
    // Pass along k: per j, transform all (i, k) lines into a block, then scatter.
    let plane = nx * ny;
    let blocks: Vec<Vec<f64>> = (0..ny)
        .into_par_iter()
        .map_init(
            || (Envelope::new(nz), vec![0.0; nz]),
            |(env, line), j| {
                let mut block = vec![0.0; nx * nz];
                for i in 0..nx {
                    for (k, v) in line.iter_mut().enumerate() {
                        *v = d2[i + nx * j + plane * k];
                    }
                    env.transform_in_place(line, sz);
                    block[i * nz..(i + 1) * nz].copy_from_slice(line);
                }
                block
            },
        )
        .collect();
    let mut out = vec![0.0f32; d2.len()];
    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(k, slice)| {
            for (j, block) in blocks.iter().enumerate() {
                for i in 0..nx {
                    slice[i + nx * j] = block[i * nz + k].sqrt() as f32;
                }
            }
        });
    Volume::from_grid_data(grid.clone(), out)
}

/// `out[i]` = (spacing·|i − q|)² for the nearest `q` in the row where `is_feature`
/// holds (∞ when there is none).
fn nearest_in_row(row: &[bool], is_feature: impl Fn(&bool) -> bool, out: &mut [f64], spacing: f64) {
    let mut last: Option<usize> = None;
    for (i, (m, o)) in row.iter().zip(out.iter_mut()).enumerate() {
        if is_feature(m) {
            last = Some(i);
        }
        *o = last.map_or(f64::INFINITY, |q| {
            let d = spacing * (i - q) as f64;
            d * d
        });
    }
    let mut next: Option<usize> = None;
    for (i, (m, o)) in row.iter().zip(out.iter_mut()).enumerate().rev() {
        if is_feature(m) {
            next = Some(i);
        }
        if let Some(q) = next {
            let d = spacing * (q - i) as f64;
            *o = o.min(d * d);
        }
    }
}

/// Scratch space for the 1-D lower envelope of parabolas.
struct Envelope {
    /// Sample index of each parabola on the envelope.
    vertex: Vec<usize>,
    /// Boundaries between envelope parabolas, in sample units.
    boundary: Vec<f64>,
    values: Vec<f64>,
}

impl Envelope {
    fn new(n: usize) -> Self {
        Self {
            vertex: vec![0; n],
            boundary: vec![0.0; n + 1],
            values: vec![0.0; n],
        }
    }

    /// `f[p] ← min_q f[q] + (spacing·(p − q))²`, ignoring infinite `f[q]`.
    fn transform_in_place(&mut self, f: &mut [f64], spacing: f64) {
        let n = f.len();
        self.values[..n].copy_from_slice(f);
        let f_in = &self.values[..n];
        let s2 = spacing * spacing;
        // Intersection (in sample units) of the parabolas rooted at q and r (q > r).
        let intersect = |q: usize, r: usize| {
            let (qf, rf) = (q as f64, r as f64);
            ((f_in[q] / s2 + qf * qf) - (f_in[r] / s2 + rf * rf)) / (2.0 * (qf - rf))
        };
        let mut count = 0usize;
        for (q, value) in f_in.iter().enumerate() {
            if !value.is_finite() {
                continue;
            }
            if count == 0 {
                self.vertex[0] = q;
                self.boundary[0] = f64::NEG_INFINITY;
                self.boundary[1] = f64::INFINITY;
                count = 1;
                continue;
            }
            let mut s = intersect(q, self.vertex[count - 1]);
            while s <= self.boundary[count - 1] {
                count -= 1;
                if count == 0 {
                    break;
                }
                s = intersect(q, self.vertex[count - 1]);
            }
            if count == 0 {
                self.vertex[0] = q;
                self.boundary[0] = f64::NEG_INFINITY;
            } else {
                self.vertex[count] = q;
                self.boundary[count] = s;
            }
            count += 1;
            self.boundary[count] = f64::INFINITY;
        }
        if count == 0 {
            return; // no feature on this line: stays infinite
        }
        let mut seg = 0usize;
        for (p, out) in f.iter_mut().enumerate() {
            let pf = p as f64;
            while self.boundary[seg + 1] < pf {
                seg += 1;
            }
            let q = self.vertex[seg];
            let d = spacing * (pf - q as f64);
            *out = d * d + f_in[q];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Grid;

    fn pseudo_random_mask(dims: [usize; 3], spacing: [f64; 3], seed: u64, density: u64) -> Mask {
        let grid = Grid::axis_aligned(dims, spacing, [0.0; 3]).unwrap();
        let mut state = seed;
        let data = (0..grid.voxel_count())
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 33) % 100 < density
            })
            .collect();
        Volume::new(grid, data).unwrap()
    }

    fn brute_force_distance(mask: &Mask, target: bool) -> Vec<f64> {
        let g = mask.grid();
        let s = g.spacing_mm();
        let targets: Vec<[usize; 3]> = (0..g.voxel_count())
            .filter(|&o| mask.data()[o] == target)
            .map(|o| g.index_of_offset(o))
            .collect();
        (0..g.voxel_count())
            .map(|o| {
                if mask.data()[o] == target {
                    return 0.0;
                }
                let p = g.index_of_offset(o);
                targets
                    .iter()
                    .map(|q| {
                        (0..3)
                            .map(|a| (s[a] * (p[a] as f64 - q[a] as f64)).powi(2))
                            .sum::<f64>()
                    })
                    .fold(f64::INFINITY, f64::min)
                    .sqrt()
            })
            .collect()
    }

    #[test]
    fn matches_brute_force_with_anisotropic_spacing() {
        for (seed, density) in [(1, 3), (2, 20), (3, 60), (4, 1)] {
            let mask = pseudo_random_mask([9, 7, 6], [0.7, 1.3, 2.5], seed, density);
            let fast = distance_to(&mask);
            let slow = brute_force_distance(&mask, true);
            for (a, b) in fast.data().iter().zip(&slow) {
                assert!((f64::from(*a) - b).abs() < 1e-4 || (a.is_infinite() && b.is_infinite()));
            }
            let inside = distance_inside(&mask);
            let slow_inside = brute_force_distance(&mask, false);
            for (a, b) in inside.data().iter().zip(&slow_inside) {
                assert!((f64::from(*a) - b).abs() < 1e-4 || (a.is_infinite() && b.is_infinite()));
            }
        }
    }

    #[test]
    fn empty_mask_is_infinitely_far() {
        let grid = Grid::axis_aligned([3, 3, 3], [1.0; 3], [0.0; 3]).unwrap();
        let d = distance_to(&Volume::filled(grid, false));
        assert!(d.data().iter().all(|v| v.is_infinite()));
    }

    #[test]
    fn signed_distance_is_negative_inside() {
        let grid = Grid::axis_aligned([7, 1, 1], [2.0, 1.0, 1.0], [0.0; 3]).unwrap();
        let mask = Volume::new(grid, vec![false, false, true, true, true, false, false]).unwrap();
        let s = signed_distance(&mask);
        assert_eq!(s.data(), &[4.0, 2.0, -2.0, -4.0, -2.0, 2.0, 4.0]);
    }
}
