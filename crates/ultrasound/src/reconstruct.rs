//! 3-D reconstruction of a tracked ultrasound sweep: pixel nearest neighbour (PNN)
//! compounding of the frames into a voxel grid, then hole filling, as PLUS's
//! `vtkPlusVolumeReconstructor` (and SlicerIGSIO's volume reconstruction) do.
//!
//! # Guarantees
//! * World coordinates are LPS millimetres; pixel `(i, j)`'s centre lies at
//!   `origin + i·step_x + j·step_y` of its frame's [`ImagePlane`]; pixel buffers (and the
//!   optional pixel mask) are row-major, `i` fastest, `width·height` long.
//! * **Nearest voxel**: a pixel goes to the voxel `floor(c + 0.5)` of its centre's
//!   continuous voxel index `c` (the round half up of ITK and of
//!   [`reslice`](mod@crate::reslice)'s labels); a pixel whose rounded index lies outside the
//!   grid (`c < −0.5` or `c ≥ n − 0.5` on an axis) is counted in
//!   [`Reconstruction::pixels_outside`] and dropped. Any grid direction is allowed.
//! * **Mean compounding**: a voxel's value is the mean of every pixel that fell into it,
//!   rounded to the nearest integer (half up); frames of any size, spacing and plane may
//!   be mixed. Sums are exact integers (`u32` sum, `u16` count); a voxel averages at most
//!   its first 65 535 pixels (further ones are ignored, never wrapped).
//! * **Hole filling** (when [`ReconstructOptions::fill_holes`]): every voxel no pixel fell
//!   into gets the mean (rounded half up) of the *hit* voxels' values in the cube of
//!   `hole_fill_radius_vox` voxels around it (`(2r + 1)³` voxels, cut at the grid's
//!   faces), provided at least `min_neighbours` hit voxels lie there. One pass, reading
//!   only originally hit voxels (a filled voxel never feeds another), in exact integer
//!   arithmetic: the result does not depend on the thread count. It does **not**
//!   interpolate along the beam or between frames (no distance weighting, no kernel),
//!   does not touch hit voxels, does not fill gaps wider than `2r` voxels, and it also
//!   extends the swept region outwards by up to `r` voxels wherever hit voxels are near.
//! * Voxels neither hit nor filled are 0 in [`Reconstruction::volume`] and
//!   [`STATE_EMPTY`] in [`Reconstruction::state`].
//! * The grid's size is checked against [`ReconstructOptions::max_voxels`] before
//!   anything is allocated; bad options, a pixel buffer or mask of the wrong length (with
//!   the frame's index) and an empty sweep are refused with a typed [`ReconstructError`];
//!   nothing panics on bad input.
//! * Memory: 8 bytes per voxel (the `u32` sum and `u16` count, the two `u8` outputs) plus
//!   a few slice-sized buffers per thread while filling; nothing is allocated per pixel
//!   or per frame.
//!
//! Speed: each pixel's index is `start_j + i·step` (two products per row, three
//! multiply-adds per pixel); frames are compounded in order on the calling thread (so the
//! same frames always give the same sums); hole filling runs over z-slabs on rayon with
//! separable running box sums (cost independent of the radius).

use pinhole_volume::math::{mat3_inverse, mat3_mul_vec, Vec3};
use pinhole_volume::{Grid, GridError, Volume};
use rayon::prelude::*;

use crate::plane::ImagePlane;

/// [`Reconstruction::state`] of a voxel no pixel fell into and hole filling left alone.
pub const STATE_EMPTY: u8 = 0;
/// [`Reconstruction::state`] of a voxel at least one pixel fell into.
pub const STATE_HIT: u8 = 1;
/// [`Reconstruction::state`] of a voxel given a value by hole filling.
pub const STATE_FILLED: u8 = 2;

/// Default voxel spacing (mm) of [`ReconstructOptions`].
pub const DEFAULT_SPACING_MM: f64 = 0.5;
/// Default bound on the reconstruction grid: 2²⁸ voxels (2 GiB of working memory).
pub const DEFAULT_MAX_VOXELS: usize = 1 << 28;
/// Largest hole-filling radius accepted (keeps the integer box sums far from overflow).
pub const MAX_HOLE_FILL_RADIUS_VOX: usize = 64;

/// Why a reconstruction (or its grid) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReconstructError {
    #[error("the voxel spacing must be finite and positive, got {0} mm")]
    BadSpacing(f64),
    #[error("hole_fill_radius_vox must be at most {MAX_HOLE_FILL_RADIUS_VOX}, got {0}")]
    HoleFillRadius(usize),
    #[error("min_neighbours must be at least 1")]
    ZeroMinNeighbours,
    #[error(
        "the reconstruction grid would hold {voxels} voxels, more than the limit of {max_voxels}"
    )]
    TooManyVoxels { voxels: u128, max_voxels: usize },
    #[error(
        "frame {frame}: {found} pixel values given for a {width_px} × {height_px} frame \
         ({expected} pixels)"
    )]
    PixelCount {
        frame: usize,
        width_px: usize,
        height_px: usize,
        expected: usize,
        found: usize,
    },
    #[error(
        "frame {frame}: the pixel mask has {found} entries but the frame has {expected} pixels"
    )]
    MaskLength {
        frame: usize,
        expected: usize,
        found: usize,
    },
    #[error("no frames to reconstruct")]
    NoFrames,
    #[error("the grid's voxel → LPS matrix cannot be inverted")]
    SingularGrid,
    #[error("the reconstruction grid cannot be built: {0}")]
    Grid(#[from] GridError),
}

/// Options of [`reconstruct`] (and the spacing callers pass to [`sweep_grid`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconstructOptions {
    /// Voxel spacing (mm) of the grid built by [`sweep_grid`]; finite and positive.
    /// Default 0.5 mm.
    pub spacing_mm: f64,
    /// Fill voxels no pixel fell into from their hit neighbours. Default `true`.
    pub fill_holes: bool,
    /// Half side `r` of the hole-filling cube, in voxels (at most
    /// [`MAX_HOLE_FILL_RADIUS_VOX`]). Default 2 (a 5 × 5 × 5 cube).
    pub hole_fill_radius_vox: usize,
    /// Fewest hit voxels in the cube for a hole to be filled; at least 1. Default 1.
    pub min_neighbours: usize,
    /// Largest grid accepted, in voxels; larger grids are refused before allocation.
    /// Default [`DEFAULT_MAX_VOXELS`].
    pub max_voxels: usize,
}

impl Default for ReconstructOptions {
    fn default() -> Self {
        Self {
            spacing_mm: DEFAULT_SPACING_MM,
            fill_holes: true,
            hole_fill_radius_vox: 2,
            min_neighbours: 1,
            max_voxels: DEFAULT_MAX_VOXELS,
        }
    }
}

impl ReconstructOptions {
    /// Checks every field (the spacing too, though [`reconstruct`] takes its grid given).
    pub fn validate(&self) -> Result<(), ReconstructError> {
        check_spacing(self.spacing_mm)?;
        if self.hole_fill_radius_vox > MAX_HOLE_FILL_RADIUS_VOX {
            return Err(ReconstructError::HoleFillRadius(self.hole_fill_radius_vox));
        }
        if self.min_neighbours == 0 {
            return Err(ReconstructError::ZeroMinNeighbours);
        }
        Ok(())
    }
}

/// A reconstructed sweep on the caller's grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconstruction {
    /// Compounded (and filled) values; 0 where [`Self::state`] is [`STATE_EMPTY`].
    pub volume: Volume<u8>,
    /// Per voxel: [`STATE_EMPTY`], [`STATE_HIT`] or [`STATE_FILLED`].
    pub state: Volume<u8>,
    pub voxels_hit: usize,
    pub voxels_filled: usize,
    pub voxels_empty: usize,
    /// Pixels (inside the mask) whose nearest voxel lies outside the grid.
    pub pixels_outside: usize,
    /// Pixels (inside the mask) added to a voxel.
    pub pixels_compounded: usize,
}

/// The axis-aligned LPS grid of `spacing_mm` voxels covering a sweep: centred on the
/// bounding box of every frame's four corner pixel centres (which bounds every pixel
/// centre), with `ceil(extent / spacing) + 1` voxels per axis, so the voxel boxes reach at
/// least half a voxel beyond every pixel centre. The voxel count is checked against
/// `max_voxels` before anything is built.
pub fn sweep_grid(
    planes: &[ImagePlane],
    spacing_mm: f64,
    max_voxels: usize,
) -> Result<Grid, ReconstructError> {
    check_spacing(spacing_mm)?;
    let (min, max) = corner_bounds(planes).ok_or(ReconstructError::NoFrames)?;
    let dims_f64: [f64; 3] = std::array::from_fn(|a| ((max[a] - min[a]) / spacing_mm).ceil() + 1.0);
    let voxels = dims_f64.iter().product::<f64>();
    // An overflowing extent gives an infinite (or, inf − inf, NaN) count: refused too.
    if voxels.is_nan() || voxels > max_voxels as f64 {
        return Err(ReconstructError::TooManyVoxels {
            voxels: voxels as u128,
            max_voxels,
        });
    }
    let dims = dims_f64.map(|n| n as usize);
    let origin =
        std::array::from_fn(|a| (min[a] + max[a]) / 2.0 - (dims[a] - 1) as f64 / 2.0 * spacing_mm);
    Ok(Grid::axis_aligned(dims, [spacing_mm; 3], origin)?)
}

/// Reconstructs tracked frames on `grid`: each frame is its plane and its `u8` pixels
/// (row-major, `i` fastest). Pixels whose `pixel_mask` entry is `false` (e.g. outside a
/// convex probe's fan) are skipped; a mask applies to every frame, which must then all
/// have its length. See the module's guarantees for compounding and hole filling.
pub fn reconstruct<'a>(
    frames: impl IntoIterator<Item = (&'a ImagePlane, &'a [u8])>,
    grid: &Grid,
    pixel_mask: Option<&[bool]>,
    options: &ReconstructOptions,
) -> Result<Reconstruction, ReconstructError> {
    options.validate()?;
    let voxel_count = grid.voxel_count();
    if voxel_count > options.max_voxels {
        return Err(ReconstructError::TooManyVoxels {
            voxels: voxel_count as u128,
            max_voxels: options.max_voxels,
        });
    }
    let mut frames = frames.into_iter().peekable();
    if frames.peek().is_none() {
        return Err(ReconstructError::NoFrames);
    }
    let world_to_index = WorldToIndex::new(grid)?;
    let mut acc = Accumulator::new(grid.dims());
    for (frame, (plane, pixels)) in frames.enumerate() {
        check_frame(frame, plane, pixels, pixel_mask)?;
        acc.add_frame(&world_to_index, plane, pixels, pixel_mask);
    }
    let fill = options
        .fill_holes
        .then_some((options.hole_fill_radius_vox, options.min_neighbours));
    let mut volume = Volume::filled(grid.clone(), 0u8);
    let mut state = Volume::filled(grid.clone(), STATE_EMPTY);
    let counts = acc.finish(volume.data_mut(), state.data_mut(), fill);
    Ok(Reconstruction {
        volume,
        state,
        voxels_hit: counts.hit,
        voxels_filled: counts.filled,
        voxels_empty: counts.empty,
        pixels_outside: acc.pixels_outside,
        pixels_compounded: acc.pixels_compounded,
    })
}

fn check_spacing(spacing_mm: f64) -> Result<(), ReconstructError> {
    if spacing_mm.is_finite() && spacing_mm > 0.0 {
        Ok(())
    } else {
        Err(ReconstructError::BadSpacing(spacing_mm))
    }
}

/// Per-axis minimum and maximum of every plane's four corner pixel centres.
fn corner_bounds(planes: &[ImagePlane]) -> Option<(Vec3, Vec3)> {
    let mut bounds: Option<(Vec3, Vec3)> = None;
    for plane in planes {
        let (last_i, last_j) = (
            (plane.width_px() - 1) as f64,
            (plane.height_px() - 1) as f64,
        );
        for corner in [[0.0, 0.0], [last_i, 0.0], [0.0, last_j], [last_i, last_j]] {
            let p = plane.pixel_to_lps(corner);
            let (min, max) = bounds.get_or_insert((p, p));
            for a in 0..3 {
                min[a] = min[a].min(p[a]);
                max[a] = max[a].max(p[a]);
            }
        }
    }
    bounds
}

fn check_frame(
    frame: usize,
    plane: &ImagePlane,
    pixels: &[u8],
    pixel_mask: Option<&[bool]>,
) -> Result<(), ReconstructError> {
    let expected = plane.pixel_count();
    if pixels.len() != expected {
        return Err(ReconstructError::PixelCount {
            frame,
            width_px: plane.width_px(),
            height_px: plane.height_px(),
            expected,
            found: pixels.len(),
        });
    }
    match pixel_mask {
        Some(mask) if mask.len() != expected => Err(ReconstructError::MaskLength {
            frame,
            expected,
            found: mask.len(),
        }),
        _ => Ok(()),
    }
}

/// The grid's LPS → continuous-index map, split into its matrix and origin.
struct WorldToIndex {
    matrix: [[f64; 3]; 3],
    origin_lps: Vec3,
}

impl WorldToIndex {
    fn new(grid: &Grid) -> Result<Self, ReconstructError> {
        let m = grid.ijk_to_lps();
        let index_to_world = std::array::from_fn(|r| [m[r][0], m[r][1], m[r][2]]);
        // The same inverse `Grid::world_to_index` uses.
        let matrix = mat3_inverse(&index_to_world).ok_or(ReconstructError::SingularGrid)?;
        Ok(Self {
            matrix,
            origin_lps: grid.origin_lps(),
        })
    }

    /// Continuous index of pixel (0, 0) and the index steps of one pixel along x and y.
    fn stepping(&self, plane: &ImagePlane) -> (Vec3, Vec3, Vec3) {
        let o = plane.origin_lps();
        let g = self.origin_lps;
        (
            mat3_mul_vec(&self.matrix, [o[0] - g[0], o[1] - g[1], o[2] - g[2]]),
            mat3_mul_vec(&self.matrix, plane.step_x_lps()),
            mat3_mul_vec(&self.matrix, plane.step_y_lps()),
        )
    }
}

/// Exact per-voxel sums and counts of the compounded pixels.
struct Accumulator {
    dims: [usize; 3],
    /// `n` per axis as `f64`: a rounded index is inside when `0 ≤ r < n`.
    limit: [f64; 3],
    sum: Vec<u32>,
    count: Vec<u16>,
    pixels_outside: usize,
    pixels_compounded: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct VoxelCounts {
    hit: usize,
    filled: usize,
    empty: usize,
}

impl std::ops::Add for VoxelCounts {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            hit: self.hit + o.hit,
            filled: self.filled + o.filled,
            empty: self.empty + o.empty,
        }
    }
}

impl Accumulator {
    fn new(dims: [usize; 3]) -> Self {
        let n = dims[0] * dims[1] * dims[2];
        Self {
            dims,
            limit: dims.map(|d| d as f64),
            sum: vec![0; n],
            count: vec![0; n],
            pixels_outside: 0,
            pixels_compounded: 0,
        }
    }

    /// Adds one (checked) frame's pixels to their nearest voxels.
    fn add_frame(
        &mut self,
        world_to_index: &WorldToIndex,
        plane: &ImagePlane,
        pixels: &[u8],
        pixel_mask: Option<&[bool]>,
    ) {
        let (start, step_x, step_y) = world_to_index.stepping(plane);
        let width = plane.width_px();
        for (j, row) in pixels.chunks_exact(width).enumerate() {
            let t = j as f64;
            let row_start: Vec3 = std::array::from_fn(|a| start[a] + t * step_y[a]);
            let mask_row = pixel_mask.map(|m| &m[j * width..(j + 1) * width]);
            for (i, &value) in row.iter().enumerate() {
                if mask_row.is_some_and(|m| !m[i]) {
                    continue;
                }
                let s = i as f64;
                let c: Vec3 = std::array::from_fn(|a| row_start[a] + s * step_x[a]);
                match self.offset_of(c) {
                    Some(offset) => self.add(offset, value),
                    None => self.pixels_outside += 1,
                }
            }
        }
    }

    /// Memory offset of the voxel `floor(c + 0.5)`, `None` outside the grid (or NaN).
    #[inline(always)]
    fn offset_of(&self, c: Vec3) -> Option<usize> {
        let r = c.map(|x| (x + 0.5).floor());
        if (0..3).all(|a| r[a] >= 0.0 && r[a] < self.limit[a]) {
            let [i, j, k] = r.map(|x| x as usize);
            Some(i + self.dims[0] * (j + self.dims[1] * k))
        } else {
            None
        }
    }

    #[inline(always)]
    fn add(&mut self, offset: usize, value: u8) {
        let count = &mut self.count[offset];
        if *count < u16::MAX {
            *count += 1;
            self.sum[offset] += u32::from(value);
        }
        self.pixels_compounded += 1;
    }

    /// Writes the compounded means (and, with `fill = Some((radius, min_neighbours))`, the
    /// filled holes) into `volume` and `state`, z-slab by z-slab on rayon.
    fn finish(
        &self,
        volume: &mut [u8],
        state: &mut [u8],
        fill: Option<(usize, usize)>,
    ) -> VoxelCounts {
        let [nx, ny, nz] = self.dims;
        let slice = nx * ny;
        let slab_slices = nz.div_ceil(4 * rayon::current_num_threads().max(1)).max(1);
        volume
            .par_chunks_mut(slab_slices * slice)
            .zip(state.par_chunks_mut(slab_slices * slice))
            .enumerate()
            .map(|(slab, (volume, state))| {
                let z0 = slab * slab_slices;
                match fill {
                    Some((radius, min_neighbours)) => {
                        self.fill_slab(z0, radius, min_neighbours, volume, state)
                    }
                    None => self.means_slab(z0, volume, state),
                }
            })
            .reduce(VoxelCounts::default, |a, b| a + b)
    }

    /// The hit voxel's rounded mean, or `None` when no pixel fell into it.
    #[inline(always)]
    fn mean(&self, offset: usize) -> Option<u8> {
        let count = u32::from(self.count[offset]);
        (count > 0).then(|| round_mean(u64::from(self.sum[offset]), u64::from(count)))
    }

    /// Means only (no hole filling) of the slab starting at slice `z0`.
    fn means_slab(&self, z0: usize, volume: &mut [u8], state: &mut [u8]) -> VoxelCounts {
        let base = z0 * self.dims[0] * self.dims[1];
        let mut counts = VoxelCounts::default();
        for (o, (v, s)) in volume.iter_mut().zip(state.iter_mut()).enumerate() {
            if let Some(mean) = self.mean(base + o) {
                (*v, *s) = (mean, STATE_HIT);
                counts.hit += 1;
            } else {
                counts.empty += 1;
            }
        }
        counts
    }

    /// Means and hole filling of the slab starting at slice `z0`: the cube sums of every
    /// output slice are a running sum along z of 2-D box sums of the input slices, each
    /// packed as `value_sum << 32 | hit_count` (both far below 2³²: at most
    /// `255·129³` and `129³`), so one integer add or subtract updates both exactly.
    fn fill_slab(
        &self,
        z0: usize,
        radius: usize,
        min_neighbours: usize,
        volume: &mut [u8],
        state: &mut [u8],
    ) -> VoxelCounts {
        let [nx, ny, nz] = self.dims;
        let slice = nx * ny;
        let slices = volume.len() / slice;
        let mut boxes = BoxScratch::new(nx, ny);
        let mut window = vec![0u64; slice];
        // Slices z0 − r ..= z0 + r − 1 (cut at the faces): the first step adds z0 + r.
        for k in z0.saturating_sub(radius)..(z0 + radius).min(nz) {
            boxes.add_slice_box(self, k, radius, &mut window, true);
        }
        let mut counts = VoxelCounts::default();
        for dz in 0..slices {
            let z = z0 + dz;
            // The window becomes slices z − r ..= z + r.
            if z + radius < nz {
                boxes.add_slice_box(self, z + radius, radius, &mut window, true);
            }
            if let Some(leaving) = z.checked_sub(radius + 1).filter(|_| dz > 0) {
                boxes.add_slice_box(self, leaving, radius, &mut window, false);
            }
            let out = dz * slice..(dz + 1) * slice;
            for ((o, v), s) in out
                .clone()
                .zip(&mut volume[out.clone()])
                .zip(&mut state[out])
            {
                if let Some(mean) = self.mean(z0 * slice + o) {
                    (*v, *s) = (mean, STATE_HIT);
                    counts.hit += 1;
                    continue;
                }
                let packed = window[o - dz * slice];
                let hits = packed & 0xffff_ffff;
                if hits > 0 && hits >= min_neighbours as u64 {
                    (*v, *s) = (round_mean(packed >> 32, hits), STATE_FILLED);
                    counts.filled += 1;
                } else {
                    counts.empty += 1;
                }
            }
        }
        counts
    }
}

/// `round(sum / count)` half up, for `count > 0`; the mean of `u8` values fits a `u8`.
#[inline(always)]
fn round_mean(sum: u64, count: u64) -> u8 {
    u8::try_from((2 * sum + count) / (2 * count)).unwrap_or(u8::MAX)
}

/// Scratch rows of a 2-D box sum (x pass, then y pass), reused slice after slice.
struct BoxScratch {
    nx: usize,
    ny: usize,
    /// Hit voxels of one slice packed as `value << 32 | 1`, 0 when not hit.
    packed: Vec<u64>,
    /// The x-pass box sums of the slice.
    along_x: Vec<u64>,
    /// Running sum of `along_x` rows over the y window.
    column_window: Vec<u64>,
}

impl BoxScratch {
    fn new(nx: usize, ny: usize) -> Self {
        Self {
            nx,
            ny,
            packed: vec![0; nx * ny],
            along_x: vec![0; nx * ny],
            column_window: vec![0; nx],
        }
    }

    /// Adds (or subtracts) slice `k`'s 2-D box sums of radius `r` to `window`.
    fn add_slice_box(
        &mut self,
        acc: &Accumulator,
        k: usize,
        r: usize,
        window: &mut [u64],
        add: bool,
    ) {
        let (nx, ny) = (self.nx, self.ny);
        let base = k * nx * ny;
        for (o, p) in self.packed.iter_mut().enumerate() {
            *p = acc.mean(base + o).map_or(0, |v| (u64::from(v) << 32) | 1);
        }
        for (row, out) in self
            .packed
            .chunks_exact(nx)
            .zip(self.along_x.chunks_exact_mut(nx))
        {
            running_box(row, out, r);
        }
        // y pass: a running sum of whole rows, written straight into the window.
        self.column_window.fill(0);
        for y in 0..r.min(ny) {
            add_row(&mut self.column_window, &self.along_x[y * nx..(y + 1) * nx]);
        }
        for y in 0..ny {
            if y + r < ny {
                add_row(
                    &mut self.column_window,
                    &self.along_x[(y + r) * nx..(y + r + 1) * nx],
                );
            }
            if let Some(leaving) = y.checked_sub(r + 1) {
                sub_row(
                    &mut self.column_window,
                    &self.along_x[leaving * nx..(leaving + 1) * nx],
                );
            }
            let target = &mut window[y * nx..(y + 1) * nx];
            if add {
                add_row(target, &self.column_window);
            } else {
                sub_row(target, &self.column_window);
            }
        }
    }
}

/// `out[x] = Σ row[x − r ..= x + r]` (cut at the ends), by a running sum.
fn running_box(row: &[u64], out: &mut [u64], r: usize) {
    let n = row.len();
    let mut sum: u64 = row[..r.min(n)].iter().sum();
    for x in 0..n {
        if x + r < n {
            sum += row[x + r];
        }
        if let Some(leaving) = x.checked_sub(r + 1) {
            sum -= row[leaving];
        }
        out[x] = sum;
    }
}

fn add_row(target: &mut [u64], row: &[u64]) {
    for (t, v) in target.iter_mut().zip(row) {
        *t += v;
    }
}

fn sub_row(target: &mut [u64], row: &[u64]) {
    for (t, v) in target.iter_mut().zip(row) {
        *t -= v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(origin: Vec3, x: Vec3, y: Vec3, w: usize, h: usize) -> ImagePlane {
        ImagePlane::from_steps(origin, x, y, w, h).unwrap()
    }

    #[test]
    fn sweep_grid_is_centred_on_the_corner_bounds() {
        // Axial 11 × 6 frames of 1 mm pixels at z = 0 and z = 4: corners x ∈ [0, 10],
        // y ∈ [0, 5], z ∈ [0, 4].
        let planes = [
            plane([0.0; 3], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], 11, 6),
            plane([0.0, 0.0, 4.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], 11, 6),
        ];
        let grid = sweep_grid(&planes, 1.0, 1000).unwrap();
        // ceil(10) + 1, ceil(5) + 1, ceil(4) + 1; centre (5, 2.5, 2).
        assert_eq!(grid.dims(), [11, 6, 5]);
        assert_eq!(grid.origin_lps(), [0.0, 0.0, 0.0]);
        assert_eq!(grid.direction(), pinhole_volume::math::IDENTITY);
        // 2 mm: ceil(5) + 1 = 6 → origin 5 − 2.5·2 = 0; ceil(2.5) + 1 = 4 → 2.5 − 1.5·2;
        // ceil(2) + 1 = 3 → 2 − 2.
        let grid = sweep_grid(&planes, 2.0, 1000).unwrap();
        assert_eq!(grid.dims(), [6, 4, 3]);
        assert_eq!(grid.origin_lps(), [0.0, -0.5, 0.0]);
        assert_eq!(grid.spacing_mm(), [2.0; 3]);
    }

    #[test]
    fn sweep_grid_covers_a_tilted_plane_by_half_a_voxel() {
        // A sagittal 21 × 11 frame at x = 3: pixel x → superior, y → anterior, 0.5 mm.
        // Corners: x = 3, y ∈ [−5, 0], z ∈ [10, 20].
        let p = plane([3.0, 0.0, 10.0], [0.0, 0.0, 0.5], [0.0, -0.5, 0.0], 21, 11);
        let grid = sweep_grid(std::slice::from_ref(&p), 0.75, 10_000).unwrap();
        // extents 0, 5, 10 → ceil(0) + 1 = 1, ceil(6.67) + 1 = 8, ceil(13.3) + 1 = 15.
        assert_eq!(grid.dims(), [1, 8, 15]);
        let o = grid.origin_lps();
        let expected = [3.0, -2.5 - 3.5 * 0.75, 15.0 - 7.0 * 0.75];
        assert!((0..3).all(|a| (o[a] - expected[a]).abs() < 1e-12), "{o:?}");
        let (min, max) = (
            grid.index_to_world([-0.5; 3]),
            grid.index_to_world([0.5, 7.5, 14.5]),
        );
        for corner in [[3.0, -5.0, 10.0], [3.0, 0.0, 20.0]] {
            for a in 0..3 {
                assert!(corner[a] - min[a] >= 0.375 - 1e-12, "{corner:?} {min:?}");
                assert!(max[a] - corner[a] >= 0.375 - 1e-12, "{corner:?} {max:?}");
            }
        }
    }

    #[test]
    fn sweep_grid_refuses_bad_input() {
        let p = plane([0.0; 3], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], 10, 10);
        assert_eq!(sweep_grid(&[], 1.0, 1000), Err(ReconstructError::NoFrames));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                sweep_grid(std::slice::from_ref(&p), bad, 1000),
                Err(ReconstructError::BadSpacing(_))
            ));
        }
        // 10 × 10 × 1 voxels against a limit of 99.
        assert_eq!(
            sweep_grid(std::slice::from_ref(&p), 1.0, 99),
            Err(ReconstructError::TooManyVoxels {
                voxels: 100,
                max_voxels: 99
            })
        );
        let far = plane([1e300, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], 10, 10);
        assert!(matches!(
            sweep_grid(&[p, far], 1.0, usize::MAX),
            Err(ReconstructError::TooManyVoxels { .. })
        ));
    }

    /// The naive cube search the separable box sums must reproduce exactly.
    fn naive_fill(acc: &Accumulator, radius: usize, min_neighbours: usize) -> (Vec<u8>, Vec<u8>) {
        let [nx, ny, nz] = acc.dims;
        let (mut volume, mut state) = (vec![0u8; nx * ny * nz], vec![STATE_EMPTY; nx * ny * nz]);
        let range = |c: usize, n: usize| c.saturating_sub(radius)..(c + radius + 1).min(n);
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let o = x + nx * (y + ny * z);
                    if let Some(mean) = acc.mean(o) {
                        (volume[o], state[o]) = (mean, STATE_HIT);
                        continue;
                    }
                    let (mut sum, mut hits) = (0u64, 0u64);
                    for zz in range(z, nz) {
                        for yy in range(y, ny) {
                            for xx in range(x, nx) {
                                if let Some(v) = acc.mean(xx + nx * (yy + ny * zz)) {
                                    sum += u64::from(v);
                                    hits += 1;
                                }
                            }
                        }
                    }
                    if hits > 0 && hits >= min_neighbours as u64 {
                        (volume[o], state[o]) = (round_mean(sum, hits), STATE_FILLED);
                    }
                }
            }
        }
        (volume, state)
    }

    #[test]
    fn hole_filling_equals_a_naive_cube_search() {
        let dims = [13, 11, 37];
        let mut acc = Accumulator::new(dims);
        // A fixed pseudo-random pattern: ~1 voxel in 7 hit by 1–3 pixels.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for o in 0..acc.sum.len() {
            if next() % 7 == 0 {
                for _ in 0..1 + next() % 3 {
                    acc.add(o, (next() % 256) as u8);
                }
            }
        }
        let n = acc.sum.len();
        for (radius, min_neighbours) in [(0, 1), (1, 1), (2, 1), (2, 5), (3, 20), (5, 1)] {
            let (mut volume, mut state) = (vec![0u8; n], vec![0u8; n]);
            let counts = acc.finish(&mut volume, &mut state, Some((radius, min_neighbours)));
            let (expected_volume, expected_state) = naive_fill(&acc, radius, min_neighbours);
            assert_eq!(state, expected_state, "r = {radius}, min {min_neighbours}");
            assert_eq!(
                volume, expected_volume,
                "r = {radius}, min {min_neighbours}"
            );
            let filled = state.iter().filter(|&&s| s == STATE_FILLED).count();
            assert_eq!(counts.filled, filled);
            assert_eq!(counts.hit + counts.filled + counts.empty, n);
        }
        let (mut volume, mut state) = (vec![0u8; n], vec![0u8; n]);
        let counts = acc.finish(&mut volume, &mut state, None);
        assert_eq!(counts.filled, 0);
        assert_eq!(state, naive_fill(&acc, 0, 1).1);
    }

    #[test]
    fn running_box_sums_a_clipped_window() {
        let row = [1u64, 2, 3, 4, 5];
        let mut out = [0u64; 5];
        running_box(&row, &mut out, 1);
        assert_eq!(out, [3, 6, 9, 12, 9]);
        running_box(&row, &mut out, 0);
        assert_eq!(out, row);
        running_box(&row, &mut out, 7);
        assert_eq!(out, [15; 5]);
    }

    #[test]
    fn rounding_of_means_is_half_up() {
        assert_eq!(round_mean(5, 2), 3);
        assert_eq!(round_mean(4, 3), 1);
        assert_eq!(round_mean(255 * 7, 7), 255);
    }
}
