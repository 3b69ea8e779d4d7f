//! Per-label statistics: voxel count, volume, centroid, bounding box.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::math::Vec3;
use crate::volume::{LabelVoxel, Volume};

/// Statistics of one label value.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelStats {
    pub id: u32,
    pub voxels: usize,
    /// Volume in millilitres (cm³).
    pub volume_ml: f64,
    /// Mean voxel-centre position, LPS mm.
    pub centroid_lps: Vec3,
    /// Inclusive index bounding box `(min, max)`.
    pub bbox_ijk: ([usize; 3], [usize; 3]),
}

#[derive(Clone)]
struct Accumulator {
    voxels: usize,
    sum_ijk: [f64; 3],
    min: [usize; 3],
    max: [usize; 3],
}

impl Accumulator {
    fn new() -> Self {
        Self {
            voxels: 0,
            sum_ijk: [0.0; 3],
            min: [usize::MAX; 3],
            max: [0; 3],
        }
    }
    fn add(&mut self, p: [usize; 3]) {
        self.voxels += 1;
        for (a, &x) in p.iter().enumerate() {
            self.sum_ijk[a] += x as f64;
            self.min[a] = self.min[a].min(x);
            self.max[a] = self.max[a].max(x);
        }
    }
    fn merge(&mut self, o: &Accumulator) {
        self.voxels += o.voxels;
        for a in 0..3 {
            self.sum_ijk[a] += o.sum_ijk[a];
            self.min[a] = self.min[a].min(o.min[a]);
            self.max[a] = self.max[a].max(o.max[a]);
        }
    }
}

/// Statistics of every non-zero label present, keyed by id.
pub fn label_stats<T: LabelVoxel>(labels: &Volume<T>) -> BTreeMap<u32, LabelStats> {
    let grid = labels.grid();
    let [nx, ny, _] = grid.dims();
    let merged = labels
        .data()
        .par_chunks(nx * ny)
        .enumerate()
        .fold(BTreeMap::<u32, Accumulator>::new, |mut acc, (k, slice)| {
            for (o, v) in slice.iter().enumerate() {
                let id = v.id();
                if id != 0 {
                    acc.entry(id)
                        .or_insert_with(Accumulator::new)
                        .add([o % nx, o / nx, k]);
                }
            }
            acc
        })
        .reduce(BTreeMap::new, |mut a, b| {
            for (id, acc) in b {
                a.entry(id).or_insert_with(Accumulator::new).merge(&acc);
            }
            a
        });
    let voxel_ml = grid.voxel_volume_mm3() / 1000.0;
    merged
        .into_iter()
        .map(|(id, acc)| {
            let n = acc.voxels as f64;
            let mean = acc.sum_ijk.map(|s| s / n);
            let stats = LabelStats {
                id,
                voxels: acc.voxels,
                volume_ml: n * voxel_ml,
                centroid_lps: grid.index_to_world(mean),
                bbox_ijk: (acc.min, acc.max),
            };
            (id, stats)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::Grid;

    #[test]
    fn stats_of_a_left_sided_label_stay_left() {
        // RAS-stored grid (i points right): a label at high i is on the patient's right,
        // i.e. at smaller LPS x.
        let grid = Grid::new(
            [4, 2, 1],
            [2.0, 1.0, 5.0],
            [0.0; 3],
            [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
        )
        .unwrap();
        let v = Volume::new(grid, vec![1u8, 1, 0, 2, 1, 0, 0, 2]).unwrap();
        let s = label_stats(&v);
        assert_eq!(s.len(), 2);
        let one = &s[&1];
        assert_eq!(one.voxels, 3);
        assert!((one.volume_ml - 3.0 * 10.0 / 1000.0).abs() < 1e-12);
        assert_eq!(one.bbox_ijk, ([0, 0, 0], [1, 1, 0]));
        let two = &s[&2];
        assert!(
            two.centroid_lps[0] < one.centroid_lps[0],
            "label 2 lies to the right"
        );
        assert!((two.centroid_lps[0] + 6.0).abs() < 1e-12);
    }
}
