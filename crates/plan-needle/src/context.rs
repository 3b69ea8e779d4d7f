//! Per-volume precomputation shared by every plan on one CT: the body mask and skin on a
//! coarse grid, coarse clearance distance fields per label set and exact boundary-voxel
//! indexes per label set (both computed on first use and cached, so replanning for a
//! moved target reuses them).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use pinhole_volume::math::{dot, norm};
use pinhole_volume::{distance_to, largest_component, Grid, Mask, Vec3, Volume};
use rayon::prelude::*;

use crate::PlanError;

/// HU above which a voxel counts as body (issue #3: HU > −500).
pub const BODY_THRESHOLD_HU: f32 = -500.0;
/// Target spacing of the coarse screening grid, mm.
pub const COARSE_SPACING_MM: f64 = 2.0;
/// Values per chunk of a packed coarse cell (see [`PlanningContext::packed`]).
pub(crate) const CELL_LANES: usize = 8;
/// One chunk of a packed coarse cell as the march computes with it, mm.
pub(crate) type Lanes = [f32; CELL_LANES];
/// One chunk of a packed coarse cell as stored: multiples of [`FIELD_QUANTUM_MM`].
pub(crate) type Cell = [u16; CELL_LANES];
/// Resolution of the packed fields, mm (a power of two, so every stored value is exact
/// in f32). Values are rounded down (lower bounds, as the jumps need) and saturate at
/// 65535 quanta (≈ 1024 mm). `value < clearance` then holds exactly when the unrounded
/// value is below the clearance, for every clearance that is a multiple of 1/64 mm.
pub(crate) const FIELD_QUANTUM_MM: f32 = 1.0 / 64.0;
/// Side of the bins that index boundary voxels for exact clearance checks, mm.
const BIN_MM: f64 = 8.0;

/// Boundary voxel centres of a label set, binned on a dense grid of `BIN_MM` cubes
/// (axis-aligned in LPS) for exact segment-distance queries.
pub struct Bins {
    origin: Vec3,
    dims: [usize; 3],
    cells: Vec<Vec<[f32; 3]>>,
}

impl Bins {
    /// Smallest distance (mm) from segment `a`–`b` to a boundary voxel centre, or `None`
    /// when none lies within `radius_mm` of the segment.
    pub fn segment_distance(&self, a: Vec3, b: Vec3, radius_mm: f64) -> Option<f64> {
        let mut lo = [0usize; 3];
        let mut hi = [0usize; 3];
        for axis in 0..3 {
            let min = a[axis].min(b[axis]) - radius_mm - self.origin[axis];
            let max = a[axis].max(b[axis]) + radius_mm - self.origin[axis];
            if max < 0.0 {
                return None;
            }
            lo[axis] = (min / BIN_MM).floor().max(0.0) as usize;
            hi[axis] = ((max / BIN_MM).floor() as usize).min(self.dims[axis] - 1);
            if lo[axis] > hi[axis] {
                return None;
            }
        }
        let ab = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
        let ab2 = dot(ab, ab).max(1e-12);
        let point_distance2 = |p: Vec3| {
            let ap = [p[0] - a[0], p[1] - a[1], p[2] - a[2]];
            let t = (dot(ap, ab) / ab2).clamp(0.0, 1.0);
            let d = [ap[0] - t * ab[0], ap[1] - t * ab[1], ap[2] - t * ab[2]];
            dot(d, d)
        };
        // The points of a bin lie at least (distance of its centre − half its diagonal)
        // from the segment: bins are visited nearest bound first, up to the radius and
        // while they could still hold a nearer point than the nearest found.
        let half_diagonal = 0.5 * BIN_MM * 3f64.sqrt();
        let mut near: Vec<(f64, usize)> = Vec::new();
        for k in lo[2]..=hi[2] {
            for j in lo[1]..=hi[1] {
                for i in lo[0]..=hi[0] {
                    let bin = i + self.dims[0] * (j + self.dims[1] * k);
                    if self.cells[bin].is_empty() {
                        continue;
                    }
                    let centre = [i, j, k].map(|v| (v as f64 + 0.5) * BIN_MM);
                    let centre = [0, 1, 2].map(|a| self.origin[a] + centre[a]);
                    let bound = (point_distance2(centre).sqrt() - half_diagonal).max(0.0);
                    if bound <= radius_mm {
                        near.push((bound, bin));
                    }
                }
            }
        }
        near.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let mut best = f64::INFINITY;
        for (bound, bin) in near {
            if bound * bound > best {
                break;
            }
            for p in &self.cells[bin] {
                best = best.min(point_distance2(p.map(f64::from)));
            }
        }
        (best.is_finite() && best.sqrt() <= radius_mm).then(|| best.sqrt())
    }
}

/// Interleaved fields, keyed by the label sets of their groups.
type PackedCache = HashMap<Vec<Vec<u16>>, Arc<Vec<Cell>>>;

/// Voxel count and lowest world z (LPS S, mm) of one label.
#[derive(Debug, Clone, Copy)]
pub struct LabelInfo {
    pub voxels: usize,
    pub min_z_mm: f64,
}

/// Candidate directions (Fibonacci sphere) and the order to march them in.
pub(crate) struct Directions {
    pub(crate) dirs: Vec<Vec3>,
    /// Indices of `dirs`, neighbouring directions together ([`crate::march::coherent_order`]).
    pub(crate) order: Vec<usize>,
}

/// Everything about one CT + label map that does not depend on the target.
pub struct PlanningContext {
    pub(crate) ct: Volume<f32>,
    pub(crate) labels: Volume<u16>,
    pub(crate) coarse: Grid,
    pub(crate) body: Vec<bool>,
    pub(crate) body_centroid_lps: Vec3,
    /// Coarse neighbours within the skin-normal radius.
    pub(crate) normal_stencil: Stencil,
    /// Fine neighbours within the capsule-normal radius.
    pub(crate) capsule_stencil: Stencil,
    factor: [usize; 3],
    fields: Mutex<HashMap<Vec<u16>, Arc<Vec<f32>>>>,
    bins: Mutex<HashMap<Vec<u16>, Arc<Bins>>>,
    packed: Mutex<PackedCache>,
    body_depth: OnceLock<Arc<Vec<f32>>>,
    label_info: OnceLock<HashMap<u16, LabelInfo>>,
    /// Skin normals computed so far, by coarse cell (they depend on the volume alone).
    skin_normals: CellCache<Option<Vec3>>,
    /// Fibonacci-sphere candidate directions and a cache-friendly order of them, by count.
    directions: Mutex<HashMap<usize, Arc<Directions>>>,
}

impl PlanningContext {
    /// Builds the body mask (HU > −500, largest component, holes filled per slice) on a
    /// coarse grid of about `COARSE_SPACING_MM`. `labels` must share the CT's grid.
    pub fn new(ct: Volume<f32>, labels: Volume<u16>) -> Result<Self, PlanError> {
        if !ct.grid().same_geometry(labels.grid(), 1e-3) {
            return Err(PlanError::GridMismatch {
                ct_dims: ct.grid().dims(),
                labels_dims: labels.grid().dims(),
            });
        }
        let fine = ct.grid().clone();
        let factor = fine
            .spacing_mm()
            .map(|s| ((COARSE_SPACING_MM / s).round() as usize).max(1));
        let coarse_dims = [0, 1, 2].map(|a| fine.dims()[a].div_ceil(factor[a]));
        let centre = [0, 1, 2].map(|a| (factor[a] as f64 - 1.0) / 2.0);
        let spacing = [0, 1, 2].map(|a| fine.spacing_mm()[a] * factor[a] as f64);
        let coarse = Grid::new(
            coarse_dims,
            spacing,
            fine.index_to_world(centre),
            fine.direction(),
        )
        .map_err(|e| PlanError::Geometry(e.to_string()))?;

        // Mean HU per coarse cell.
        let [cx, cy, cz] = coarse_dims;
        let [nx, ny, nz] = fine.dims();
        let ct_data = ct.data();
        let body_raw: Vec<bool> = (0..cz)
            .into_par_iter()
            .flat_map_iter(|kc| {
                let mut sum = vec![0.0f64; cx * cy];
                let mut count = vec![0u32; cx * cy];
                for k in kc * factor[2]..((kc + 1) * factor[2]).min(nz) {
                    for j in 0..ny {
                        let row = &ct_data[nx * (j + ny * k)..nx * (j + ny * k) + nx];
                        let jc = j / factor[1];
                        for (i, &v) in row.iter().enumerate() {
                            let c = i / factor[0] + cx * jc;
                            sum[c] += f64::from(v);
                            count[c] += 1;
                        }
                    }
                }
                sum.into_iter()
                    .zip(count)
                    .map(|(s, n)| n > 0 && s / f64::from(n) > f64::from(BODY_THRESHOLD_HU))
            })
            .collect();
        let raw =
            Mask::new(coarse.clone(), body_raw).map_err(|e| PlanError::Geometry(e.to_string()))?;
        let largest = largest_component(&raw);
        let body = fill_holes_per_slice(largest.data(), coarse_dims);
        let (mut sum, mut count) = ([0.0; 3], 0usize);
        for (o, _) in body.iter().enumerate().filter(|(_, &b)| b) {
            let p = coarse.index_to_world(coarse.index_of_offset(o).map(|v| v as f64));
            for a in 0..3 {
                sum[a] += p[a];
            }
            count += 1;
        }
        if count == 0 {
            return Err(PlanError::NoBody);
        }
        let body_centroid_lps = sum.map(|s| s / count as f64);
        let normal_stencil = Stencil::new(&coarse, 8.0, 1);
        let capsule_stencil = Stencil::new(labels.grid(), 5.0, 2);
        Ok(Self {
            ct,
            labels,
            coarse,
            body,
            body_centroid_lps,
            normal_stencil,
            capsule_stencil,
            factor,
            fields: Mutex::new(HashMap::new()),
            bins: Mutex::new(HashMap::new()),
            packed: Mutex::new(HashMap::new()),
            body_depth: OnceLock::new(),
            label_info: OnceLock::new(),
            skin_normals: CellCache::default(),
            directions: Mutex::new(HashMap::new()),
        })
    }

    pub fn ct(&self) -> &Volume<f32> {
        &self.ct
    }
    pub fn labels(&self) -> &Volume<u16> {
        &self.labels
    }
    /// The coarse grid the body mask and clearance fields live on.
    pub fn coarse_grid(&self) -> &Grid {
        &self.coarse
    }

    /// True when `p` (LPS mm) lies in the body mask.
    pub fn in_body(&self, p: Vec3) -> bool {
        self.coarse
            .world_to_voxel(p)
            .is_some_and(|v| self.body[self.coarse.offset(v)])
    }

    /// Label at the voxel nearest `p` (0 outside the grid).
    pub fn label_at(&self, p: Vec3) -> u16 {
        self.labels.sample_nearest(p).unwrap_or(0)
    }

    /// Voxel count and lowest z of every label present (one pass, cached).
    pub fn label_info(&self) -> &HashMap<u16, LabelInfo> {
        self.label_info.get_or_init(|| {
            let grid = self.labels.grid();
            let [nx, ny, nz] = grid.dims();
            let data = self.labels.data();
            (0..nz)
                .into_par_iter()
                .fold(HashMap::new, |mut acc: HashMap<u16, LabelInfo>, k| {
                    for j in 0..ny {
                        for i in 0..nx {
                            let l = data[i + nx * (j + ny * k)];
                            if l == 0 {
                                continue;
                            }
                            let z = grid.index_to_world([i as f64, j as f64, k as f64])[2];
                            let e = acc.entry(l).or_insert(LabelInfo {
                                voxels: 0,
                                min_z_mm: f64::INFINITY,
                            });
                            e.voxels += 1;
                            e.min_z_mm = e.min_z_mm.min(z);
                        }
                    }
                    acc
                })
                .reduce(HashMap::new, |mut a, b| {
                    for (l, info) in b {
                        let e = a.entry(l).or_insert(LabelInfo {
                            voxels: 0,
                            min_z_mm: f64::INFINITY,
                        });
                        e.voxels += info.voxels;
                        e.min_z_mm = e.min_z_mm.min(info.min_z_mm);
                    }
                    a
                })
        })
    }

    /// Coarse distance field (mm, between coarse cell centres) to the cells holding any
    /// voxel of `ids` (sorted). Cached.
    pub fn field(&self, ids: &[u16]) -> Arc<Vec<f32>> {
        self.prepare(&[ids.to_vec()]);
        match lock(&self.fields).get(ids) {
            Some(f) => f.clone(),
            None => Arc::new(vec![f32::INFINITY; self.coarse.voxel_count()]),
        }
    }

    /// Computes and caches the coarse fields and boundary bins of several label sets
    /// (each sorted) together: one pass over the label map per 8 sets for the coarse
    /// occupancy, one for the boundary voxels, then the distance transforms side by side.
    pub fn prepare(&self, sets: &[Vec<u16>]) {
        let mut missing: Vec<Vec<u16>> = sets
            .iter()
            .filter(|ids| {
                !lock(&self.fields).contains_key(ids.as_slice())
                    || !lock(&self.bins).contains_key(ids.as_slice())
            })
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        for batch in missing.chunks(8) {
            let mut lut = vec![0u8; usize::from(u16::MAX) + 1];
            for (g, ids) in batch.iter().enumerate() {
                for &id in ids {
                    lut[usize::from(id)] |= 1 << g;
                }
            }
            let occupancy = self.coarse_occupancy(&lut);
            let points = self.boundary_points(&lut, batch.len());
            let fields: Vec<Vec<f32>> = (0..batch.len())
                .into_par_iter()
                .map(|g| self.field_of(occupancy.iter().map(|&b| b & (1 << g) != 0).collect()))
                .collect();
            for ((ids, field), points) in batch.iter().zip(fields).zip(points) {
                lock(&self.fields).insert(ids.clone(), Arc::new(field));
                lock(&self.bins).insert(ids.clone(), Arc::new(self.bin(points)));
            }
        }
    }

    fn field_of(&self, occupancy: Vec<bool>) -> Vec<f32> {
        match Mask::new(self.coarse.clone(), occupancy) {
            Ok(mask) if mask.data().iter().any(|&b| b) => distance_to(&mask).into_data(),
            _ => vec![f32::INFINITY; self.coarse.voxel_count()],
        }
    }

    /// Distance (mm) from each coarse body cell centre to the nearest non-body cell
    /// centre (0 outside the body). Cached.
    fn body_depth(&self) -> Arc<Vec<f32>> {
        self.body_depth
            .get_or_init(|| {
                let outside = self.body.iter().map(|&b| !b).collect();
                let depth = match Mask::new(self.coarse.clone(), outside) {
                    Ok(mask) => distance_to(&mask).into_data(),
                    Err(_) => vec![0.0; self.body.len()],
                };
                Arc::new(depth)
            })
            .clone()
    }

    /// The body depth (0 outside) and the fields of several label sets interleaved per
    /// coarse voxel, in chunks of [`CELL_LANES`] (padded with the largest value), in
    /// quanta of [`FIELD_QUANTUM_MM`]: one 16-byte row per ray sample instead of one
    /// cache line per field, and lanes the compiler can compare at once. Cached.
    pub(crate) fn packed(&self, keys: &[Vec<u16>], fields: &[Arc<Vec<f32>>]) -> Arc<Vec<Cell>> {
        if let Some(p) = lock(&self.packed).get(keys) {
            return p.clone();
        }
        let chunks = (fields.len() + 1).div_ceil(CELL_LANES);
        let depth = self.body_depth();
        let mut packed = vec![[u16::MAX; CELL_LANES]; self.body.len() * chunks];
        packed
            .par_chunks_mut(chunks)
            .enumerate()
            .for_each(|(o, cell)| {
                // Inside the body the depth is at least one quantum: 0 means outside.
                let body = if self.body[o] {
                    quantize(depth[o]).max(1)
                } else {
                    0
                };
                let values = std::iter::once(body).chain(fields.iter().map(|f| quantize(f[o])));
                for (k, v) in values.enumerate() {
                    cell[k / CELL_LANES][k % CELL_LANES] = v;
                }
            });
        let packed = Arc::new(packed);
        lock(&self.packed).insert(keys.to_vec(), packed.clone());
        packed
    }

    /// Boundary voxel centres of `ids` (sorted), binned. Cached.
    pub fn bins(&self, ids: &[u16]) -> Arc<Bins> {
        self.prepare(&[ids.to_vec()]);
        match lock(&self.bins).get(ids) {
            Some(b) => b.clone(),
            None => Arc::new(self.bin(Vec::new())),
        }
    }

    /// Centres of the voxels on the boundary of each set `g < sets` (bit g of `lut`): in
    /// the set, with a 6-neighbour outside it or on the grid's edge.
    fn boundary_points(&self, lut: &[u8], sets: usize) -> Vec<Vec<[f32; 3]>> {
        let grid = self.labels.grid();
        let [nx, ny, nz] = grid.dims();
        let data = self.labels.data();
        let bits = |i: usize, j: usize, k: usize| lut[usize::from(data[i + nx * (j + ny * k)])];
        let per_slab: Vec<Vec<Vec<[f32; 3]>>> = (0..nz)
            .into_par_iter()
            .map(|k| {
                let mut out = vec![Vec::new(); sets];
                for j in 0..ny {
                    for i in 0..nx {
                        let here = bits(i, j, k);
                        if here == 0 {
                            continue;
                        }
                        let edge =
                            i == 0 || j == 0 || k == 0 || i + 1 == nx || j + 1 == ny || k + 1 == nz;
                        let border = if edge {
                            here
                        } else {
                            let all_neighbours = bits(i - 1, j, k)
                                & bits(i + 1, j, k)
                                & bits(i, j - 1, k)
                                & bits(i, j + 1, k)
                                & bits(i, j, k - 1)
                                & bits(i, j, k + 1);
                            here & !all_neighbours
                        };
                        if border == 0 {
                            continue;
                        }
                        let p = grid
                            .index_to_world([i as f64, j as f64, k as f64])
                            .map(|v| v as f32);
                        for (g, points) in out.iter_mut().enumerate() {
                            if border & (1 << g) != 0 {
                                points.push(p);
                            }
                        }
                    }
                }
                out
            })
            .collect();
        let mut points = vec![Vec::new(); sets];
        for slab in per_slab {
            for (all, part) in points.iter_mut().zip(slab) {
                all.extend(part);
            }
        }
        points
    }

    fn bin(&self, points: Vec<[f32; 3]>) -> Bins {
        let (lo, hi) = self.labels.grid().bounds_lps();
        let dims = [0, 1, 2].map(|a| (((hi[a] - lo[a]) / BIN_MM).floor() as usize) + 1);
        let mut cells = vec![Vec::new(); dims[0] * dims[1] * dims[2]];
        for p in points {
            let c = [0, 1, 2].map(|a| {
                (((f64::from(p[a]) - lo[a]) / BIN_MM).floor().max(0.0) as usize).min(dims[a] - 1)
            });
            cells[c[0] + dims[0] * (c[1] + dims[1] * c[2])].push(p);
        }
        Bins {
            origin: lo,
            dims,
            cells,
        }
    }

    /// Coarse cells holding a voxel of each set: bit g of the result from bit g of `lut`.
    fn coarse_occupancy(&self, lut: &[u8]) -> Vec<u8> {
        let [cx, cy, cz] = self.coarse.dims();
        let [nx, ny, nz] = self.labels.grid().dims();
        let f = self.factor;
        let data = self.labels.data();
        (0..cz)
            .into_par_iter()
            .flat_map_iter(|kc| {
                let mut occ = vec![0u8; cx * cy];
                for k in kc * f[2]..((kc + 1) * f[2]).min(nz) {
                    for j in 0..ny {
                        let row = &data[nx * (j + ny * k)..nx * (j + ny * k) + nx];
                        let base = cx * (j / f[1]);
                        for (i, &l) in row.iter().enumerate() {
                            occ[base + i / f[0]] |= lut[usize::from(l)];
                        }
                    }
                }
                occ
            })
            .collect()
    }

    /// `n` candidate directions on the Fibonacci sphere and the order to march them in
    /// (computed once per count).
    pub(crate) fn directions(&self, n: usize) -> Arc<Directions> {
        if let Some(dirs) = lock(&self.directions).get(&n) {
            return dirs.clone();
        }
        let fibonacci = crate::plan::fibonacci_sphere(n);
        let dirs = Arc::new(Directions {
            order: crate::march::coherent_order(&fibonacci),
            dirs: fibonacci,
        });
        lock(&self.directions).insert(n, dirs.clone());
        dirs
    }

    /// Outward skin normal at `p` (LPS): minus the mean offset of body cells within
    /// 8 mm (the gradient direction of the box-smoothed body mask). Cached per coarse
    /// cell, so later plans on the same volume look it up.
    pub fn skin_normal(&self, p: Vec3) -> Option<Vec3> {
        let c = self.coarse.world_to_index(p);
        let dims = self.coarse.dims();
        let centre = [0, 1, 2].map(|a| c[a].round() as isize);
        let key = (0..3)
            .all(|a| centre[a] >= 0 && centre[a] < dims[a] as isize)
            .then(|| self.coarse.offset(centre.map(|v| v as usize)));
        match key {
            Some(k) => self
                .skin_normals
                .get_or_insert_with(k, || self.skin_normal_at(centre)),
            None => self.skin_normal_at(centre),
        }
    }

    /// The outward normal of the coarse body mask around the cell `centre`: minus the
    /// sum of the offsets to the body cells within the stencil, normalised.
    fn skin_normal_at(&self, centre: [isize; 3]) -> Option<Vec3> {
        self.normal_stencil.outward_normal(centre, |o| self.body[o])
    }
}

/// `value_mm` in quanta of [`FIELD_QUANTUM_MM`], rounded down, saturating (NaN: 0).
pub(crate) fn quantize(value_mm: f32) -> u16 {
    let quanta = (f64::from(value_mm) / f64::from(FIELD_QUANTUM_MM)).floor();
    if quanta >= f64::from(u16::MAX) {
        u16::MAX
    } else if quanta >= 0.0 {
        quanta as u16
    } else {
        0
    }
}

/// A stored cell chunk in mm (exact).
#[inline(always)]
pub(crate) fn dequantize(cell: &Cell) -> Lanes {
    cell.map(|q| f32::from(q) * FIELD_QUANTUM_MM)
}

/// Values cached by coarse cell, shared between threads: split into shards by cell so
/// that threads seldom wait for each other, with a hash for cell numbers.
pub(crate) struct CellCache<T> {
    shards: Vec<Mutex<HashMap<usize, T, BuildHasherDefault<CellHasher>>>>,
}

impl<T> Default for CellCache<T> {
    fn default() -> Self {
        Self {
            shards: (0..CELL_CACHE_SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }
}

const CELL_CACHE_SHARDS: usize = 16;

impl<T: Copy> CellCache<T> {
    /// The value cached for `cell`, computed by `make` (outside the lock) when missing.
    pub(crate) fn get_or_insert_with(&self, cell: usize, make: impl FnOnce() -> T) -> T {
        // Middle bits of the hash: the shard's map indexes its buckets with the low bits
        // and tags them with the high ones.
        let shard = &self.shards[(fibonacci_hash(cell) >> 32) as usize % CELL_CACHE_SHARDS];
        if let Some(&value) = lock(shard).get(&cell) {
            return value;
        }
        let value = make();
        lock(shard).insert(cell, value);
        value
    }
}

/// Multiplicative (Fibonacci) hashing of a cell number, high bits folded down.
fn fibonacci_hash(n: usize) -> u64 {
    let h = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 32)
}

/// [`fibonacci_hash`] as a [`Hasher`] for cell numbers (the default hasher resists
/// collision attacks, which cell numbers cannot mount, at several times the cost).
#[derive(Default)]
pub(crate) struct CellHasher(u64);

impl Hasher for CellHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = fibonacci_hash((self.0 ^ u64::from(b)) as usize);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = fibonacci_hash(n);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A lookup table over all u16 ids.
pub(crate) fn lut_of(ids: &[u16]) -> Vec<bool> {
    let mut lut = vec![false; usize::from(u16::MAX) + 1];
    for &id in ids {
        lut[id as usize] = true;
    }
    lut
}

/// The voxels within a radius of a centre voxel (every `stride`-th in-plane), for normals
/// as minus the mean offset to the voxels of a region nearby.
pub(crate) struct Stencil {
    /// Index offsets.
    index: Vec<[isize; 3]>,
    /// The same as offsets into the grid's data.
    linear: Vec<isize>,
    /// World offsets, mm.
    offset_mm: Vec<Vec3>,
    /// The largest index offset per axis.
    reach: [isize; 3],
    /// The grid's dimensions (those of `linear`).
    dims: [usize; 3],
}

impl Stencil {
    fn new(grid: &Grid, radius_mm: f64, stride: usize) -> Self {
        let s = grid.spacing_mm();
        let dims = grid.dims();
        let reach = [0, 1, 2].map(|a| (radius_mm / s[a]).floor() as isize);
        let origin = grid.index_to_world([0.0; 3]);
        let mut stencil = Self {
            index: Vec::new(),
            linear: Vec::new(),
            offset_mm: Vec::new(),
            reach,
            dims,
        };
        for dk in -reach[2]..=reach[2] {
            for dj in (-reach[1]..=reach[1]).step_by(stride) {
                for di in (-reach[0]..=reach[0]).step_by(stride) {
                    let w = grid.index_to_world([di as f64, dj as f64, dk as f64]);
                    let off = [w[0] - origin[0], w[1] - origin[1], w[2] - origin[2]];
                    if norm(off) <= radius_mm && (di, dj, dk) != (0, 0, 0) {
                        stencil.index.push([di, dj, dk]);
                        let row = dims[0] as isize;
                        stencil.linear.push(di + row * (dj + dims[1] as isize * dk));
                        stencil.offset_mm.push(off);
                    }
                }
            }
        }
        stencil
    }

    /// Minus the normalised sum of the world offsets to the stencil voxels around
    /// `centre` whose data offset `inside` accepts; `None` when they cancel out.
    pub(crate) fn outward_normal(
        &self,
        centre: [isize; 3],
        inside: impl Fn(usize) -> bool,
    ) -> Option<Vec3> {
        let dims = self.dims;
        let mut sum = [0.0; 3];
        let interior = (0..3)
            .all(|a| centre[a] >= self.reach[a] && centre[a] + self.reach[a] < dims[a] as isize);
        // The centre's data offset (outside the grid near an edge; only in-grid sums used).
        let base = centre[0] + dims[0] as isize * (centre[1] + dims[1] as isize * centre[2]);
        if interior {
            // Every stencil voxel lies in the grid: no per-voxel bounds checks.
            for (&d, off) in self.linear.iter().zip(&self.offset_mm) {
                let weight = f64::from(u8::from(inside((base + d) as usize)));
                for a in 0..3 {
                    sum[a] += weight * off[a];
                }
            }
        } else {
            for ((d, &o), off) in self.index.iter().zip(&self.linear).zip(&self.offset_mm) {
                let idx = [0, 1, 2].map(|a| centre[a] + d[a]);
                if (0..3).any(|a| idx[a] < 0 || idx[a] >= dims[a] as isize) {
                    continue;
                }
                if inside((base + o) as usize) {
                    for a in 0..3 {
                        sum[a] += off[a];
                    }
                }
            }
        }
        let n = norm(sum);
        (n > 1e-9).then(|| sum.map(|v| -v / n))
    }
}

/// Fills background regions of each k-slice that do not touch the slice border (lungs,
/// bowel gas, airways inside the body outline).
fn fill_holes_per_slice(mask: &[bool], dims: [usize; 3]) -> Vec<bool> {
    let [nx, ny, nz] = dims;
    let plane = nx * ny;
    let slices: Vec<Vec<bool>> = (0..nz)
        .into_par_iter()
        .map(|k| {
            let slice = &mask[k * plane..(k + 1) * plane];
            let mut outside = vec![false; plane];
            let mut stack = Vec::new();
            for j in 0..ny {
                for i in 0..nx {
                    if (i == 0 || j == 0 || i + 1 == nx || j + 1 == ny) && !slice[i + nx * j] {
                        outside[i + nx * j] = true;
                        stack.push((i, j));
                    }
                }
            }
            while let Some((i, j)) = stack.pop() {
                let mut visit = |a: usize, b: usize| {
                    let o = a + nx * b;
                    if !slice[o] && !outside[o] {
                        outside[o] = true;
                        stack.push((a, b));
                    }
                };
                if i > 0 {
                    visit(i - 1, j);
                }
                if i + 1 < nx {
                    visit(i + 1, j);
                }
                if j > 0 {
                    visit(i, j - 1);
                }
                if j + 1 < ny {
                    visit(i, j + 1);
                }
            }
            outside.into_iter().map(|o| !o).collect()
        })
        .collect();
    slices.concat()
}

#[cfg(test)]
mod tests {
    use super::{dequantize, quantize, Bins, CellCache, BIN_MM, FIELD_QUANTUM_MM};
    use crate::TestRng;

    /// Stored values are lower bounds within one quantum, saturate instead of wrapping,
    /// and keep every clearance decision for clearances on the 1/64 mm grid.
    #[test]
    fn quantized_fields_round_down_and_keep_clearance_decisions() {
        let mut rng = TestRng::new(0x2545_f491_4f6c_dd1d);
        for _ in 0..100_000 {
            let d = (rng.unit() * 40.0) as f32;
            let q = dequantize(&[quantize(d); 8])[0];
            assert!(q <= d && d - q < FIELD_QUANTUM_MM, "{d} -> {q}");
            for clearance_mm in [1.0f32, 2.0, 2.5, 3.0, 5.0, 10.0, 3.015625] {
                assert_eq!(q < clearance_mm, d < clearance_mm, "{d} vs {clearance_mm}");
            }
        }
        assert_eq!(quantize(f32::INFINITY), u16::MAX);
        assert_eq!(quantize(5000.0), u16::MAX);
        assert_eq!(quantize(-1.0), 0);
        assert_eq!(quantize(f32::NAN), 0);
        assert_eq!(quantize(1.0), 64);
    }

    /// Skipping the bins far from the segment changes no answer (brute force over random
    /// points and segments).
    #[test]
    fn segment_distance_equals_brute_force() {
        let mut rng = TestRng::new(0x1234_5678_9abc_def1);
        let dims = [12, 10, 9];
        let origin = [-40.0, -30.0, -20.0];
        let mut cells = vec![Vec::new(); dims[0] * dims[1] * dims[2]];
        let mut points = Vec::new();
        for _ in 0..3000 {
            let c = [0, 1, 2].map(|a| (rng.unit() * dims[a] as f64) as usize);
            let p = [0, 1, 2].map(|a| (origin[a] + (c[a] as f64 + rng.unit()) * BIN_MM) as f32);
            cells[c[0] + dims[0] * (c[1] + dims[1] * c[2])].push(p);
            points.push(p);
        }
        let bins = Bins {
            origin,
            dims,
            cells,
        };
        for _ in 0..300 {
            let mut point = || [0, 1, 2].map(|a| origin[a] + rng.unit() * 80.0);
            let (a, b) = (point(), point());
            let radius = 1.0 + rng.unit() * 12.0;
            let brute = points
                .iter()
                .map(|p| {
                    let p = p.map(f64::from);
                    let ab = [0, 1, 2].map(|k| b[k] - a[k]);
                    let ap = [0, 1, 2].map(|k| p[k] - a[k]);
                    let ab2 = (ab[0] * ab[0] + ab[1] * ab[1] + ab[2] * ab[2]).max(1e-12);
                    let t = ((ap[0] * ab[0] + ap[1] * ab[1] + ap[2] * ab[2]) / ab2).clamp(0.0, 1.0);
                    let d = [0, 1, 2].map(|k| ap[k] - t * ab[k]);
                    (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
                })
                .fold(f64::INFINITY, f64::min);
            let expected = (brute <= radius).then_some(brute);
            assert_eq!(bins.segment_distance(a, b, radius), expected);
        }
    }

    /// A cached value is computed once and then returned as stored.
    #[test]
    fn cell_cache_computes_each_cell_once() {
        let cache: CellCache<u32> = CellCache::default();
        let mut calls = 0;
        for round in 0..3 {
            for cell in 0..1000usize {
                let value = cache.get_or_insert_with(cell * 7919, || {
                    calls += 1;
                    cell as u32 + round
                });
                assert_eq!(value, cell as u32);
            }
        }
        assert_eq!(calls, 1000);
    }
}
