//! Typed voxel volumes on a [`Grid`], sampling and resampling.

use rayon::prelude::*;

use crate::grid::Grid;
use crate::math::Vec3;

/// A scalar voxel type.
pub trait Voxel: Copy + Send + Sync + PartialEq + std::fmt::Debug + 'static {
    /// Type name as NIfTI/NRRD users know it (`"int16"`, `"float32"` …).
    const NAME: &'static str;
    fn to_f64(self) -> f64;
    /// Converts from `f64`, rounding to nearest and saturating for integer types.
    fn from_f64(value: f64) -> Self;
}

macro_rules! integer_voxel {
    ($($t:ty => $name:literal),*) => {$(
        impl Voxel for $t {
            const NAME: &'static str = $name;
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn from_f64(value: f64) -> Self {
                // `as` saturates and maps NaN to 0.
                value.round() as $t
            }
        }
    )*};
}
integer_voxel!(u8 => "uint8", i8 => "int8", u16 => "uint16", i16 => "int16", u32 => "uint32", i32 => "int32");

impl Voxel for f32 {
    const NAME: &'static str = "float32";
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline]
    fn from_f64(value: f64) -> Self {
        value as f32
    }
}

impl Voxel for f64 {
    const NAME: &'static str = "float64";
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline]
    fn from_f64(value: f64) -> Self {
        value
    }
}

impl Voxel for bool {
    const NAME: &'static str = "bool";
    #[inline]
    fn to_f64(self) -> f64 {
        if self {
            1.0
        } else {
            0.0
        }
    }
    #[inline]
    fn from_f64(value: f64) -> Self {
        value >= 0.5
    }
}

/// Label voxel types: non-negative integers used as label ids.
pub trait LabelVoxel: Voxel + Eq + Ord + std::hash::Hash {
    fn id(self) -> u32;
}
impl LabelVoxel for u8 {
    fn id(self) -> u32 {
        u32::from(self)
    }
}
impl LabelVoxel for u16 {
    fn id(self) -> u32 {
        u32::from(self)
    }
}
impl LabelVoxel for u32 {
    fn id(self) -> u32 {
        self
    }
}

/// How to read values between voxel centres.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    Nearest,
    Trilinear,
}

/// The number of voxels on a grid did not match the data given for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("grid has {expected} voxels but {found} values were given")]
pub struct DataLengthMismatch {
    pub expected: usize,
    pub found: usize,
}

/// Voxels on a grid; `data[grid.offset([i, j, k])]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    grid: Grid,
    data: Vec<T>,
}

/// A binary mask.
pub type Mask = Volume<bool>;

impl<T: Voxel> Volume<T> {
    pub fn new(grid: Grid, data: Vec<T>) -> Result<Self, DataLengthMismatch> {
        if data.len() != grid.voxel_count() {
            return Err(DataLengthMismatch {
                expected: grid.voxel_count(),
                found: data.len(),
            });
        }
        Ok(Self { grid, data })
    }

    /// Wraps data computed on this crate's own grids, where the length is known to fit.
    pub(crate) fn from_grid_data(grid: Grid, data: Vec<T>) -> Self {
        debug_assert_eq!(data.len(), grid.voxel_count());
        Self { grid, data }
    }

    /// A volume filled with one value.
    pub fn filled(grid: Grid, value: T) -> Self {
        let data = vec![value; grid.voxel_count()];
        Self { grid, data }
    }

    pub fn grid(&self) -> &Grid {
        &self.grid
    }
    pub fn data(&self) -> &[T] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<T> {
        self.data
    }
    pub fn into_parts(self) -> (Grid, Vec<T>) {
        (self.grid, self.data)
    }

    /// Value at an integer index; `None` outside.
    #[inline]
    pub fn get(&self, ijk: [usize; 3]) -> Option<T> {
        let d = self.grid.dims();
        if ijk[0] < d[0] && ijk[1] < d[1] && ijk[2] < d[2] {
            Some(self.data[self.grid.offset(ijk)])
        } else {
            None
        }
    }

    /// Replaces the grid's geometry, keeping the voxels (dims must agree).
    pub fn with_grid(self, grid: Grid) -> Result<Self, DataLengthMismatch> {
        Self::new(grid, self.data)
    }

    /// Applies `f` to every voxel (in parallel).
    pub fn map<U: Voxel>(&self, f: impl Fn(T) -> U + Sync) -> Volume<U> {
        Volume {
            grid: self.grid.clone(),
            data: self.data.par_iter().map(|&v| f(v)).collect(),
        }
    }

    /// Smallest and largest value (as `f64`, NaN ignored); `None` when all NaN.
    pub fn min_max(&self) -> Option<(f64, f64)> {
        self.data
            .par_chunks(1 << 16)
            .map(|chunk| {
                chunk
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                        let x = v.to_f64();
                        (lo.min(x), hi.max(x))
                    })
            })
            .reduce(
                || (f64::INFINITY, f64::NEG_INFINITY),
                |a, b| (a.0.min(b.0), a.1.max(b.1)),
            )
            .into_some_if_finite()
    }

    /// Nearest-neighbour value at a world point; `None` outside the grid.
    pub fn sample_nearest(&self, lps: Vec3) -> Option<T> {
        self.grid
            .world_to_voxel(lps)
            .map(|ijk| self.data[self.grid.offset(ijk)])
    }

    /// Trilinear value at a world point; `None` outside the hull of voxel centres.
    pub fn sample_trilinear(&self, lps: Vec3) -> Option<f64> {
        self.trilinear_at_index(self.grid.world_to_index(lps))
    }

    /// Trilinear value at a continuous index; `None` outside the hull of voxel centres.
    pub fn trilinear_at_index(&self, c: Vec3) -> Option<f64> {
        let d = self.grid.dims();
        let mut base = [0usize; 3];
        let mut frac = [0.0f64; 3];
        for a in 0..3 {
            let max = (d[a] - 1) as f64;
            if !(c[a] >= 0.0 && c[a] <= max) {
                return None;
            }
            // c ≥ 0 here, so truncation is floor (and avoids a libm call on baseline x86-64).
            let b = (c[a] as usize).min(d[a].max(2) - 2);
            base[a] = b;
            frac[a] = c[a] - b as f64;
        }
        let step = [
            usize::from(d[0] > 1),
            usize::from(d[1] > 1) * d[0],
            usize::from(d[2] > 1) * d[0] * d[1],
        ];
        let o = self.grid.offset(base);
        let v = |di: usize, dj: usize, dk: usize| {
            self.data[o + di * step[0] + dj * step[1] + dk * step[2]].to_f64()
        };
        let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
        let c00 = lerp(v(0, 0, 0), v(1, 0, 0), frac[0]);
        let c10 = lerp(v(0, 1, 0), v(1, 1, 0), frac[0]);
        let c01 = lerp(v(0, 0, 1), v(1, 0, 1), frac[0]);
        let c11 = lerp(v(0, 1, 1), v(1, 1, 1), frac[0]);
        Some(lerp(
            lerp(c00, c10, frac[1]),
            lerp(c01, c11, frac[1]),
            frac[2],
        ))
    }

    /// Index bounding box (inclusive corners) of the voxels where `inside` holds; `None`
    /// when there are none.
    pub fn bounding_box_where(
        &self,
        inside: impl Fn(T) -> bool,
    ) -> Option<([usize; 3], [usize; 3])> {
        let mut low = [usize::MAX; 3];
        let mut high = [0usize; 3];
        for (offset, _) in self.data.iter().enumerate().filter(|(_, v)| inside(**v)) {
            let ijk = self.grid.index_of_offset(offset);
            for a in 0..3 {
                low[a] = low[a].min(ijk[a]);
                high[a] = high[a].max(ijk[a]);
            }
        }
        (low[0] != usize::MAX).then_some((low, high))
    }

    /// The box of voxels `start .. start + extent` (clamped to the volume) as a volume of
    /// its own, placed where it was (same spacing and direction, origin at `start`).
    pub fn crop(&self, start: [usize; 3], extent: [usize; 3]) -> Volume<T> {
        let dims = self.grid.dims();
        let start: [usize; 3] = std::array::from_fn(|a| start[a].min(dims[a] - 1));
        let extent: [usize; 3] = std::array::from_fn(|a| extent[a].clamp(1, dims[a] - start[a]));
        let origin = self.grid.index_to_world(start.map(|v| v as f64));
        let grid = Grid::new(
            extent,
            self.grid.spacing_mm(),
            origin,
            self.grid.direction(),
        )
        .expect("a box of a valid grid is a valid grid");
        let mut data = Vec::with_capacity(grid.voxel_count());
        for k in 0..extent[2] {
            for j in 0..extent[1] {
                let first = self.grid.offset([start[0], start[1] + j, start[2] + k]);
                data.extend_from_slice(&self.data[first..first + extent[0]]);
            }
        }
        Volume { grid, data }
    }

    /// Resamples onto `target`; points outside this volume get `fill`.
    pub fn resample(&self, target: &Grid, interpolation: Interpolation, fill: T) -> Volume<T> {
        let [nx, ny, _] = target.dims();
        let mut data = vec![fill; target.voxel_count()];
        data.par_chunks_mut(nx * ny)
            .enumerate()
            .for_each(|(k, slice)| {
                for j in 0..ny {
                    for i in 0..nx {
                        let world = target.index_to_world([i as f64, j as f64, k as f64]);
                        let value = match interpolation {
                            Interpolation::Nearest => self.sample_nearest(world),
                            Interpolation::Trilinear => {
                                self.sample_trilinear(world).map(T::from_f64)
                            }
                        };
                        if let Some(v) = value {
                            slice[i + nx * j] = v;
                        }
                    }
                }
            });
        Volume {
            grid: target.clone(),
            data,
        }
    }
}

trait FiniteRange {
    fn into_some_if_finite(self) -> Option<(f64, f64)>;
}
impl FiniteRange for (f64, f64) {
    fn into_some_if_finite(self) -> Option<(f64, f64)> {
        (self.0 <= self.1).then_some(self)
    }
}

impl<T: LabelVoxel> Volume<T> {
    /// Voxels equal to `label`.
    pub fn mask_of(&self, label: T) -> Mask {
        self.map(|v| v == label)
    }

    /// Voxels whose label is in `labels`.
    pub fn mask_of_any(&self, labels: &[T]) -> Mask {
        self.map(|v| labels.contains(&v))
    }
}

impl<T: Voxel> Volume<T> {
    /// The faces of the scan where some voxel satisfies `select`, as the side each faces
    /// (orientation letters of [`Grid::orientation_code`]: `'I'` is the slice towards
    /// the feet in a head-up scan), in axis order, low face first. Only the six faces are
    /// read. A structure that touches a face may continue outside the scan.
    pub fn scan_edges_where(&self, select: impl Fn(T) -> bool) -> Vec<char> {
        let dims = self.grid.dims();
        let code: Vec<char> = self.grid.orientation_code().chars().collect();
        let mut sides = Vec::new();
        for axis in 0..3 {
            let toward = code.get(axis).copied().unwrap_or('?');
            for (index, side) in [(0, opposite_side(toward)), (dims[axis] - 1, toward)] {
                if !sides.contains(&side) && self.face_has(axis, index, &select) {
                    sides.push(side);
                }
            }
        }
        sides
    }

    /// Whether the slice `index` across `axis` holds a voxel satisfying `select`.
    fn face_has(&self, axis: usize, index: usize, select: &impl Fn(T) -> bool) -> bool {
        let dims = self.grid.dims();
        let (u, v) = ((axis + 1) % 3, (axis + 2) % 3);
        (0..dims[u]).any(|a| {
            (0..dims[v]).any(|b| {
                let mut ijk = [0; 3];
                ijk[axis] = index;
                ijk[u] = a;
                ijk[v] = b;
                select(self.data[self.grid.offset(ijk)])
            })
        })
    }
}

impl Volume<bool> {
    /// The faces of the scan this mask touches ([`Volume::scan_edges_where`]).
    pub fn scan_edges_touched(&self) -> Vec<char> {
        self.scan_edges_where(|v| v)
    }
}

/// The orientation letter of the opposite side (`'L'` ↔ `'R'`, `'A'` ↔ `'P'`,
/// `'S'` ↔ `'I'`).
pub fn opposite_side(side: char) -> char {
    match side {
        'L' => 'R',
        'R' => 'L',
        'A' => 'P',
        'P' => 'A',
        'S' => 'I',
        'I' => 'S',
        other => other,
    }
}

/// The word for an orientation letter (`'I'` → `"inferior"`).
pub fn side_name(side: char) -> &'static str {
    match side {
        'L' => "left",
        'R' => "right",
        'A' => "anterior",
        'P' => "posterior",
        'S' => "superior",
        'I' => "inferior",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crop keeps every voxel's value and world position, and clamps to the volume.
    #[test]
    fn crop_keeps_values_and_positions() {
        let grid = Grid::new(
            [7, 6, 5],
            [0.5, 1.5, 3.0],
            [10.0, -4.0, 2.0],
            [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        )
        .unwrap();
        let volume = Volume::new(grid.clone(), (0..210).map(|v| v as u16).collect()).unwrap();
        let crop = volume.crop([2, 1, 3], [3, 4, 9]);
        assert_eq!(crop.grid().dims(), [3, 4, 2], "clamped at the far k edge");
        for (i, j, k) in [(0, 0, 0), (2, 3, 1), (1, 2, 0)] {
            let full = [2 + i, 1 + j, 3 + k];
            assert_eq!(crop.get([i, j, k]), volume.get(full));
            let a = crop.grid().index_to_world([i as f64, j as f64, k as f64]);
            let b = grid.index_to_world(full.map(|v| v as f64));
            assert!(
                (0..3).all(|n| (a[n] - b[n]).abs() < 1e-12),
                "{a:?} vs {b:?}"
            );
        }
    }

    /// Asymmetric case: a 4×5×6 grid whose j axis points anterior (−y, "LAS"); a mask
    /// touching i = 0 (patient's right) and k = 5 (superior) only.
    #[test]
    fn scan_edges_touched_name_the_sides() {
        let direction = [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]];
        let grid = Grid::new([4, 5, 6], [1.0; 3], [0.0; 3], direction).unwrap();
        let mut mask = Volume::new(grid.clone(), vec![false; grid.voxel_count()]).unwrap();
        assert!(mask.scan_edges_touched().is_empty());
        let o = grid.offset([0, 2, 3]);
        mask.data_mut()[o] = true;
        let o = grid.offset([2, 2, 5]);
        mask.data_mut()[o] = true;
        assert_eq!(mask.scan_edges_touched(), vec!['R', 'S']);
        // j = 4 is the last index along an axis pointing anterior: the anterior face.
        let o = grid.offset([2, 4, 2]);
        mask.data_mut()[o] = true;
        assert_eq!(mask.scan_edges_touched(), vec!['R', 'A', 'S']);
        assert_eq!(side_name(opposite_side('A')), "posterior");
    }

    fn ramp() -> Volume<f32> {
        let grid = Grid::axis_aligned([4, 3, 2], [1.0, 2.0, 3.0], [10.0, 0.0, 0.0]).unwrap();
        let data = (0..24)
            .map(|n| {
                let ijk = grid.index_of_offset(n);
                (ijk[0] + 10 * ijk[1] + 100 * ijk[2]) as f32
            })
            .collect();
        Volume::new(grid, data).unwrap()
    }

    #[test]
    fn trilinear_is_exact_on_linear_fields() {
        let v = ramp();
        // index (1.5, 0.25, 0.5) → 1.5 + 2.5 + 50
        let world = v.grid().index_to_world([1.5, 0.25, 0.5]);
        let value = v.sample_trilinear(world).unwrap();
        assert!((value - 54.0).abs() < 1e-9, "{value}");
        // last voxel centre is inside; beyond is not
        assert_eq!(v.trilinear_at_index([3.0, 2.0, 1.0]), Some(123.0));
        assert_eq!(v.trilinear_at_index([3.01, 2.0, 1.0]), None);
    }

    #[test]
    fn nearest_rounds_to_the_closest_centre() {
        let v = ramp();
        let world = v.grid().index_to_world([2.4, 1.6, 0.4]);
        assert_eq!(v.sample_nearest(world), Some(22.0));
        assert_eq!(v.sample_nearest([-100.0, 0.0, 0.0]), None);
    }

    #[test]
    fn resample_to_half_spacing_interpolates() {
        let v = ramp();
        let target = Grid::axis_aligned([7, 5, 3], [0.5, 1.0, 1.5], [10.0, 0.0, 0.0]).unwrap();
        let r = v.resample(&target, Interpolation::Trilinear, -1.0);
        assert_eq!(r.get([1, 0, 0]), Some(0.5));
        assert_eq!(r.get([0, 1, 0]), Some(5.0));
        assert_eq!(r.get([0, 0, 1]), Some(50.0));
    }

    #[test]
    fn rejects_wrong_data_length() {
        let grid = Grid::axis_aligned([2, 2, 2], [1.0; 3], [0.0; 3]).unwrap();
        assert!(Volume::new(grid, vec![0u8; 7]).is_err());
    }

    #[test]
    fn single_slice_volumes_interpolate_in_plane() {
        let grid = Grid::axis_aligned([2, 2, 1], [1.0; 3], [0.0; 3]).unwrap();
        let v = Volume::new(grid, vec![0.0f32, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(v.trilinear_at_index([0.5, 0.5, 0.0]), Some(1.5));
    }
}
