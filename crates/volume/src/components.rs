//! 26-connected components, largest component and hole filling.

use crate::volume::{Mask, Volume};

/// Result of labelling connected components.
#[derive(Debug, Clone)]
pub struct Components {
    /// 0 = background; components are numbered 1.. in order of decreasing size.
    pub labels: Volume<u32>,
    /// Voxel count of component `n` at index `n - 1`.
    pub sizes: Vec<usize>,
}

/// Which voxels count as neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connectivity {
    /// Faces only.
    Six,
    /// Faces, edges and corners.
    TwentySix,
}

/// Labels the connected components of `mask` (numbered by decreasing size).
pub fn connected_components(mask: &Mask, connectivity: Connectivity) -> Components {
    let grid = mask.grid().clone();
    let [nx, ny, nz] = grid.dims();
    let offsets = neighbour_offsets(connectivity);
    let mut raw = vec![0u32; grid.voxel_count()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for seed in 0..raw.len() {
        if !mask.data()[seed] || raw[seed] != 0 {
            continue;
        }
        let id = sizes.len() as u32 + 1;
        raw[seed] = id;
        stack.push(seed);
        let mut size = 0usize;
        while let Some(o) = stack.pop() {
            size += 1;
            let [i, j, k] = grid.index_of_offset(o);
            for &[di, dj, dk] in &offsets {
                let (Some(a), Some(b), Some(c)) =
                    (step(i, di, nx), step(j, dj, ny), step(k, dk, nz))
                else {
                    continue;
                };
                let n = a + nx * (b + ny * c);
                if mask.data()[n] && raw[n] == 0 {
                    raw[n] = id;
                    stack.push(n);
                }
            }
        }
        sizes.push(size);
    }
    // Renumber by decreasing size (stable: ties keep scan order).
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]));
    let mut new_id = vec![0u32; sizes.len() + 1];
    for (rank, &old) in order.iter().enumerate() {
        new_id[old + 1] = rank as u32 + 1;
    }
    for v in &mut raw {
        *v = new_id[*v as usize];
    }
    let sizes = order.iter().map(|&o| sizes[o]).collect();
    let labels = Volume::from_grid_data(grid, raw);
    Components { labels, sizes }
}

/// The largest 26-connected component (empty when the mask is empty).
pub fn largest_component(mask: &Mask) -> Mask {
    let c = connected_components(mask, Connectivity::TwentySix);
    c.labels.map(|l| l == 1)
}

/// Fills background cavities: background regions (6-connected) that do not touch the
/// grid's border become foreground.
pub fn fill_holes(mask: &Mask) -> Mask {
    let background = mask.map(|m| !m);
    let c = connected_components(&background, Connectivity::Six);
    let d = mask.grid().dims();
    let mut touches_border = vec![false; c.sizes.len() + 1];
    for (o, &l) in c.labels.data().iter().enumerate() {
        if l == 0 {
            continue;
        }
        let p = mask.grid().index_of_offset(o);
        if (0..3).any(|a| p[a] == 0 || p[a] + 1 == d[a]) {
            touches_border[l as usize] = true;
        }
    }
    c.labels.map(|l| l == 0 || !touches_border[l as usize])
}

fn step(x: usize, delta: i8, n: usize) -> Option<usize> {
    let y = x.checked_add_signed(isize::from(delta))?;
    (y < n).then_some(y)
}

fn neighbour_offsets(connectivity: Connectivity) -> Vec<[i8; 3]> {
    let mut out = Vec::with_capacity(26);
    for dk in -1i8..=1 {
        for dj in -1i8..=1 {
            for di in -1i8..=1 {
                let nonzero = [di, dj, dk].iter().filter(|&&d| d != 0).count();
                let keep = match connectivity {
                    Connectivity::Six => nonzero == 1,
                    Connectivity::TwentySix => nonzero > 0,
                };
                if keep {
                    out.push([di, dj, dk]);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Grid;

    fn mask_from(dims: [usize; 3], on: &[[usize; 3]]) -> Mask {
        let grid = Grid::axis_aligned(dims, [1.0; 3], [0.0; 3]).unwrap();
        let mut m = Volume::filled(grid, false);
        for &p in on {
            let o = m.grid().offset(p);
            m.data_mut()[o] = true;
        }
        m
    }

    #[test]
    fn diagonal_corners_join_only_with_26_connectivity() {
        let m = mask_from([4, 4, 4], &[[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 0, 3]]);
        let c26 = connected_components(&m, Connectivity::TwentySix);
        assert_eq!(c26.sizes, vec![3, 1]);
        let c6 = connected_components(&m, Connectivity::Six);
        assert_eq!(c6.sizes, vec![1, 1, 1, 1]);
        assert_eq!(c26.labels.get([2, 2, 2]), Some(1));
        assert_eq!(c26.labels.get([3, 0, 3]), Some(2));
    }

    #[test]
    fn largest_component_keeps_the_big_one() {
        let m = mask_from([5, 1, 1], &[[0, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0]]);
        let l = largest_component(&m);
        assert_eq!(l.data(), &[false, false, true, true, true]);
    }

    #[test]
    fn fill_holes_fills_an_enclosed_cavity_only() {
        let mut shell = Vec::new();
        for k in 0..3 {
            for j in 0..3 {
                for i in 0..3 {
                    if [i, j, k] != [1, 1, 1] {
                        shell.push([i + 1, j + 1, k + 1]);
                    }
                }
            }
        }
        let m = mask_from([5, 5, 5], &shell);
        let filled = fill_holes(&m);
        assert_eq!(filled.get([2, 2, 2]), Some(true));
        assert_eq!(filled.get([0, 0, 0]), Some(false));
        assert_eq!(filled.data().iter().filter(|&&v| v).count(), 27);
    }
}
