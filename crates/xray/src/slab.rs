//! Exact Siddon line integrals, slab by slab along each ray's main axis.
//!
//! A ray whose direction is dominated by axis `a` (the largest |component| in index
//! space) moves at most one voxel on each other axis while it crosses one slab (one
//! voxel layer) of `a`, so it crosses at most one boundary on each: the slab's path
//! splits into at most three voxel pieces whose lengths are the fractions of the slab
//! before and after those crossings. Voxels outside the grid weigh zero, which clips the
//! rays to the volume's box exactly. The sums equal the voxel walk of
//! [`crate::RayVolume::integrate`] up to f32 rounding.
//!
//! All rays of a detector row advance slab by slab together, several per SIMD vector: on
//! each slab they read neighbouring voxels, so the volume streams through the cache once
//! per row. The kernel is portable (`wide`, SSE2 on any x86-64); on CPUs with AVX2 and FMA
//! an 8-lane kernel with hardware gathers runs instead.

/// The two axes other than `axis`, in cyclic order.
fn other_axes(axis: usize) -> [usize; 2] {
    [(axis + 1) % 3, (axis + 2) % 3]
}

/// One ray set up for the slab kernels: on the two other axes, its index coordinate + 0.5
/// where it enters slab 0 of the main axis (cell `i` spans `[i, i + 1)` there), and the
/// change per slab (|slope| ≤ 1).
pub(crate) struct SlabRay {
    start: [f64; 2],
    slope: [f64; 2],
    /// World length of the ray across one slab, mm.
    pub(crate) mm_per_slab: f64,
}

impl SlabRay {
    /// The ray `o + t·d` (index space; world length `length` mm per unit t), main axis
    /// `axis` (the largest |d| component).
    pub(crate) fn new(o: [f64; 3], d: [f64; 3], axis: usize, length: f64) -> Self {
        let others = other_axes(axis);
        let t_at_slab0 = (-0.5 - o[axis]) / d[axis];
        Self {
            start: others.map(|a| o[a] + d[a] * t_at_slab0 + 0.5),
            slope: others.map(|a| d[a] / d[axis]),
            mm_per_slab: length / d[axis].abs(),
        }
    }

    /// Whether the ray stays at least one cell inside the grid on the other axes over all
    /// `slabs` (its cells change monotonically, so the first and last slab decide).
    fn stays_inside(&self, slabs: usize, n: [usize; 2]) -> bool {
        (0..2).all(|k| {
            let ends = [self.start[k], self.start[k] + slabs as f64 * self.slope[k]];
            ends.iter().all(|&x| x >= 1.0 && x < n[k] as f64 - 1.0)
        })
    }

    fn sign(&self, k: usize) -> i32 {
        if self.slope[k] > 0.0 {
            1
        } else if self.slope[k] < 0.0 {
            -1
        } else {
            0
        }
    }

    fn cell(&self, k: usize) -> i32 {
        self.start[k].floor() as i32
    }
}

/// The grid as the slab kernels see it for one main axis.
struct Slabs {
    /// Number of slabs (voxels along the main axis) and the main axis' stride.
    count: usize,
    stride: usize,
    /// Sizes and strides of the two other axes.
    n: [usize; 2],
    strides: [i32; 2],
}

impl Slabs {
    fn new(dims: [usize; 3], axis: usize) -> Self {
        let others = other_axes(axis);
        let strides = [1, dims[0], dims[0] * dims[1]];
        Self {
            count: dims[axis],
            stride: strides[axis],
            n: others.map(|a| dims[a]),
            strides: others.map(|a| strides[a] as i32),
        }
    }
}

/// The starting state of `L` rays in lanes, per other axis `k`: the ray's entry point on
/// slab 0 and its change per slab, the direction of travel (±1, 0 when the ray does not
/// move on the axis), its cell (kept only for clipping), the cell boundary it crosses
/// next, and the offset of its voxel in the slab (its two cells times their strides).
/// Lanes beyond the rays repeat the first ray (their sums are dropped), so that they
/// stay inside the grid when it does.
struct Init<const L: usize> {
    start: [[f32; L]; 2],
    slope: [[f32; L]; 2],
    inv_slope: [[f32; L]; 2],
    sign: [[f32; L]; 2],
    boundary: [[f32; L]; 2],
    cell: [[i32; L]; 2],
    offset: [i32; L],
    offset_step: [[i32; L]; 2],
}

impl<const L: usize> Init<L> {
    fn new(rays: &[(usize, SlabRay)], strides: [i32; 2]) -> Self {
        let pad = SlabRay {
            start: [-2.0; 2],
            slope: [0.0; 2],
            mm_per_slab: 0.0,
        };
        let ray = |l: usize| rays.get(l).or(rays.first()).map_or(&pad, |(_, r)| r);
        let f = |v: &dyn Fn(&SlabRay, usize) -> f32| -> [[f32; L]; 2] {
            std::array::from_fn(|k| std::array::from_fn(|l| v(ray(l), k)))
        };
        let i = |v: &dyn Fn(&SlabRay, usize) -> i32| -> [[i32; L]; 2] {
            std::array::from_fn(|k| std::array::from_fn(|l| v(ray(l), k)))
        };
        Self {
            start: f(&|r, k| r.start[k] as f32),
            slope: f(&|r, k| r.slope[k] as f32),
            inv_slope: f(&|r, k| {
                if r.slope[k] == 0.0 {
                    0.0
                } else {
                    (1.0 / r.slope[k]) as f32
                }
            }),
            sign: f(&|r, k| r.sign(k) as f32),
            boundary: f(&|r, k| (r.cell(k) + i32::from(r.sign(k) > 0)) as f32),
            cell: i(&|r, k| r.cell(k)),
            offset: std::array::from_fn(|l| {
                ray(l).cell(0) * strides[0] + ray(l).cell(1) * strides[1]
            }),
            offset_step: i(&|r, k| r.sign(k) * strides[k]),
        }
    }
}

/// The rays in batches of `L`, numbered, split into those that stay inside the grid on
/// the other axes (no clipping needed) and the others.
type Batches<T> = (Vec<(usize, T)>, Vec<(usize, T)>);

fn batches<const L: usize, T>(
    rays: &[(usize, SlabRay)],
    slabs: &Slabs,
    lanes: impl Fn(&Init<L>) -> T,
) -> Batches<T> {
    let mut inner = Vec::new();
    let mut outer = Vec::new();
    for (i, batch) in rays.chunks(L).enumerate() {
        let state = lanes(&Init::<L>::new(batch, slabs.strides));
        if batch
            .iter()
            .all(|(_, r)| r.stays_inside(slabs.count, slabs.n))
        {
            inner.push((i, state));
        } else {
            outer.push((i, state));
        }
    }
    (inner, outer)
}

/// Writes `sum × mm_per_slab` of each ray to `out[col]`, `sums` in batches of `L`.
fn write_out<const L: usize>(rays: &[(usize, SlabRay)], sums: &[[f32; L]], out: &mut [f32]) {
    for (batch, sum) in rays.chunks(L).zip(sums) {
        for ((col, ray), sum) in batch.iter().zip(sum) {
            out[*col] = (f64::from(*sum) * ray.mm_per_slab) as f32;
        }
    }
}

/// Line integrals of `rays` (all with main axis `axis`) through `mu` (grid `dims`) into
/// `out[col]`. Offsets are i32: the caller keeps `mu` below `i32::MAX / 4` voxels.
pub(crate) fn integrate(
    mu: &[f32],
    dims: [usize; 3],
    axis: usize,
    rays: &[(usize, SlabRay)],
    out: &mut [f32],
) {
    if mu.is_empty() || rays.is_empty() {
        return;
    }
    let slabs = Slabs::new(dims, axis);
    // The AVX2 kernel runs the portable one itself where the CPU lacks AVX2 or FMA.
    #[cfg(target_arch = "x86_64")]
    avx2::integrate(mu, &slabs, rays, out);
    #[cfg(not(target_arch = "x86_64"))]
    portable::integrate(mu, &slabs, rays, out);
}

/// The portable kernel only (tests compare it with the AVX2 one).
#[cfg(test)]
fn integrate_portable(
    mu: &[f32],
    dims: [usize; 3],
    axis: usize,
    rays: &[(usize, SlabRay)],
    out: &mut [f32],
) {
    portable::integrate(mu, &Slabs::new(dims, axis), rays, out);
}

mod portable {
    use bytemuck::cast;
    use wide::{f32x4, i32x4, CmpGt, CmpLt};

    use super::{Init, SlabRay, Slabs};

    const L: usize = 4;

    struct Lanes {
        start: [f32x4; 2],
        slope: [f32x4; 2],
        inv_slope: [f32x4; 2],
        sign: [f32x4; 2],
        boundary: [f32x4; 2],
        cell: [i32x4; 2],
        offset: i32x4,
        offset_step: [i32x4; 2],
    }

    impl Lanes {
        fn new(init: &Init<L>) -> Self {
            Self {
                start: init.start.map(f32x4::from),
                slope: init.slope.map(f32x4::from),
                inv_slope: init.inv_slope.map(f32x4::from),
                sign: init.sign.map(f32x4::from),
                boundary: init.boundary.map(f32x4::from),
                cell: init.cell.map(i32x4::from),
                offset: i32x4::from(init.offset),
                offset_step: init.offset_step.map(i32x4::from),
            }
        }
    }

    pub(super) fn integrate(mu: &[f32], slabs: &Slabs, rays: &[(usize, SlabRay)], out: &mut [f32]) {
        let (mut inner, mut outer) = super::batches::<L, _>(rays, slabs, Lanes::new);
        let n = slabs.n.map(|n| i32x4::splat(n as i32));
        let mut sums = vec![f32x4::ZERO; inner.len() + outer.len()];
        for j in 0..slabs.count {
            let slab_end = f32x4::splat((j + 1) as f32);
            let base = i32x4::splat((j * slabs.stride) as i32);
            for (i, lanes) in inner.iter_mut() {
                sums[*i] += step::<false>(mu, lanes, slab_end, base, n);
            }
            for (i, lanes) in outer.iter_mut() {
                sums[*i] += step::<true>(mu, lanes, slab_end, base, n);
            }
        }
        let sums: Vec<[f32; L]> = sums.iter().map(|s| s.to_array()).collect();
        super::write_out(rays, &sums, out);
    }

    fn gather(mu: &[f32], offsets: i32x4) -> f32x4 {
        let o = offsets.to_array();
        f32x4::from(std::array::from_fn::<f32, L, _>(|l| mu[o[l] as usize]))
    }

    /// Advances `lanes` across one slab (ending at `slab_end`, voxel offset `base`);
    /// returns each ray's Σ μ · (fraction of the slab). `CLIP`: check the cells against
    /// the grid (`n`); without it every lane must stay inside.
    #[inline(always)]
    fn step<const CLIP: bool>(
        mu: &[f32],
        lanes: &mut Lanes,
        slab_end: f32x4,
        base: i32x4,
        n: [i32x4; 2],
    ) -> f32x4 {
        let below = i32x4::splat(-1);
        let all = i32x4::splat(-1);
        let mut frac = [f32x4::ONE; 2];
        let mut valid_in = [all; 2];
        let mut valid_out = [all; 2];
        let mut moved = [i32x4::ZERO; 2];
        let mut crossed = [i32x4::ZERO; 2];
        for k in 0..2 {
            let x_out = lanes.start[k] + slab_end * lanes.slope[k];
            let bound = lanes.boundary[k];
            // The fraction of the slab before the next boundary: below 1 when it is
            // crossed in this slab (1 / slope carries the direction; 0 for no motion).
            let f = (bound - x_out) * lanes.inv_slope[k] + f32x4::ONE;
            let cross = f.cmp_lt(f32x4::ONE);
            let cross_i: i32x4 = cast(cross);
            crossed[k] = cross_i;
            frac[k] = f.fast_max(f32x4::ZERO).fast_min(f32x4::ONE);
            if CLIP {
                let cell = lanes.cell[k];
                let cell_out = cell + (lanes.sign[k].round_int() & cross_i);
                valid_in[k] = cell.cmp_gt(below) & cell.cmp_lt(n[k]);
                valid_out[k] = cell_out.cmp_gt(below) & cell_out.cmp_lt(n[k]);
                lanes.cell[k] = cell_out;
            }
            moved[k] = lanes.offset_step[k] & cross_i;
            lanes.boundary[k] = bound + (lanes.sign[k] & cross);
        }
        let off = lanes.offset;
        let in_valid = valid_in[0] & valid_in[1];
        if !(crossed[0] | crossed[1]).any() {
            // No lane leaves its voxel in this slab (the common case for near-axial
            // rays): the whole slab is the entry voxel, weight 1, and one gather does.
            return gather(mu, (base + off) & in_valid) & cast::<i32x4, f32x4>(in_valid);
        }
        let first = frac[0].fast_min(frac[1]);
        let end_off = off + moved[0] + moved[1];
        lanes.offset = end_off;
        let out_valid = valid_out[0] & valid_out[1];
        let w_in = first & cast::<i32x4, f32x4>(in_valid);
        let w_out = (f32x4::ONE - first) & cast::<i32x4, f32x4>(out_valid);
        let end = gather(mu, (base + end_off) & out_valid);
        let mut sum = w_in * gather(mu, (base + off) & in_valid) + w_out * end;
        // With one crossing or none the slab splits in two pieces. A ray crossing on both
        // axes (rare) has a middle piece in the voxel past the first boundary: the
        // two-piece sum counted it in the end voxel.
        let both = crossed[0] & crossed[1];
        if both.any() {
            let last = frac[0].fast_max(frac[1]);
            let first_is_0: i32x4 = cast(frac[0].cmp_lt(frac[1]));
            let mid_off = off + first_is_0.blend(moved[0], moved[1]);
            let mid_valid =
                first_is_0.blend(valid_out[0] & valid_in[1], valid_in[0] & valid_out[1]) & both;
            let mid = gather(mu, (base + mid_off) & mid_valid) & cast::<i32x4, f32x4>(mid_valid);
            let end = end & cast::<i32x4, f32x4>(out_valid);
            sum += ((last - first) * (mid - end)) & cast::<i32x4, f32x4>(both);
        }
        sum
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use bytemuck::cast;

    use super::{Init, SlabRay, Slabs};

    const L: usize = 8;

    struct Lanes {
        start: [__m256; 2],
        slope: [__m256; 2],
        inv_slope: [__m256; 2],
        sign: [__m256; 2],
        boundary: [__m256; 2],
        cell: [__m256i; 2],
        offset: __m256i,
        offset_step: [__m256i; 2],
    }

    impl Lanes {
        fn new(init: &Init<L>) -> Self {
            Self {
                start: init.start.map(cast),
                slope: init.slope.map(cast),
                inv_slope: init.inv_slope.map(cast),
                sign: init.sign.map(cast),
                boundary: init.boundary.map(cast),
                cell: init.cell.map(cast),
                offset: cast(init.offset),
                offset_step: init.offset_step.map(cast),
            }
        }
    }

    fn available() -> bool {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }

    #[allow(unsafe_code)]
    pub(super) fn integrate(mu: &[f32], slabs: &Slabs, rays: &[(usize, SlabRay)], out: &mut [f32]) {
        if !available() {
            return super::portable::integrate(mu, slabs, rays, out);
        }
        // SAFETY: the CPU has AVX2 and FMA, the only requirement of `integrate_avx2`.
        unsafe { integrate_avx2(mu, slabs, rays, out) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn integrate_avx2(mu: &[f32], slabs: &Slabs, rays: &[(usize, SlabRay)], out: &mut [f32]) {
        let (mut inner, mut outer) = super::batches::<L, _>(rays, slabs, Lanes::new);
        let n = [
            _mm256_set1_epi32(slabs.n[0] as i32),
            _mm256_set1_epi32(slabs.n[1] as i32),
        ];
        let mut sums = vec![_mm256_setzero_ps(); inner.len() + outer.len()];
        for j in 0..slabs.count {
            let slab_end = _mm256_set1_ps((j + 1) as f32);
            let base = _mm256_set1_epi32((j * slabs.stride) as i32);
            for (i, lanes) in inner.iter_mut() {
                sums[*i] = _mm256_add_ps(sums[*i], step::<false>(mu, lanes, slab_end, base, n));
            }
            for (i, lanes) in outer.iter_mut() {
                sums[*i] = _mm256_add_ps(sums[*i], step::<true>(mu, lanes, slab_end, base, n));
            }
        }
        let sums: Vec<[f32; L]> = sums.iter().map(|s| cast(*s)).collect();
        super::write_out(rays, &sums, out);
    }

    /// μ at `offsets` in the lanes where `valid` is set, 0 elsewhere.
    #[target_feature(enable = "avx2,fma")]
    #[allow(unsafe_code)]
    fn gather(mu: &[f32], offsets: __m256i, valid: __m256i) -> __m256 {
        // `mu` holds fewer than i32::MAX voxels (see `slab::integrate`).
        let last = _mm256_set1_epi32(mu.len() as i32 - 1);
        let clamped = _mm256_min_epi32(_mm256_max_epi32(offsets, _mm256_setzero_si256()), last);
        // SAFETY: every lane's offset is clamped into 0..mu.len(), so the gather reads
        // inside `mu` (and only the lanes where `valid` is set).
        unsafe {
            _mm256_mask_i32gather_ps::<4>(
                _mm256_setzero_ps(),
                mu.as_ptr(),
                clamped,
                _mm256_castsi256_ps(valid),
            )
        }
    }

    /// The AVX2 twin of the portable `step`: same arithmetic, 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    fn step<const CLIP: bool>(
        mu: &[f32],
        lanes: &mut Lanes,
        slab_end: __m256,
        base: __m256i,
        n: [__m256i; 2],
    ) -> __m256 {
        let one = _mm256_set1_ps(1.0);
        let zero = _mm256_setzero_ps();
        let below = _mm256_set1_epi32(-1);
        let all = _mm256_set1_epi32(-1);
        let mut frac = [one; 2];
        let mut valid_in = [all; 2];
        let mut valid_out = [all; 2];
        let mut moved = [_mm256_setzero_si256(); 2];
        let mut crossed = [_mm256_setzero_si256(); 2];
        for k in 0..2 {
            let x_out = _mm256_fmadd_ps(slab_end, lanes.slope[k], lanes.start[k]);
            let bound = lanes.boundary[k];
            let f = _mm256_fmadd_ps(_mm256_sub_ps(bound, x_out), lanes.inv_slope[k], one);
            let cross = _mm256_cmp_ps::<_CMP_LT_OQ>(f, one);
            let cross_i = _mm256_castps_si256(cross);
            crossed[k] = cross_i;
            frac[k] = _mm256_min_ps(_mm256_max_ps(f, zero), one);
            if CLIP {
                let cell = lanes.cell[k];
                let cell_out = _mm256_add_epi32(
                    cell,
                    _mm256_and_si256(_mm256_cvtps_epi32(lanes.sign[k]), cross_i),
                );
                valid_in[k] = _mm256_and_si256(
                    _mm256_cmpgt_epi32(cell, below),
                    _mm256_cmpgt_epi32(n[k], cell),
                );
                valid_out[k] = _mm256_and_si256(
                    _mm256_cmpgt_epi32(cell_out, below),
                    _mm256_cmpgt_epi32(n[k], cell_out),
                );
                lanes.cell[k] = cell_out;
            }
            moved[k] = _mm256_and_si256(lanes.offset_step[k], cross_i);
            lanes.boundary[k] = _mm256_add_ps(bound, _mm256_and_ps(lanes.sign[k], cross));
        }
        let off = lanes.offset;
        let in_valid = _mm256_and_si256(valid_in[0], valid_in[1]);
        let any_crossed = _mm256_or_si256(crossed[0], crossed[1]);
        if _mm256_testz_si256(any_crossed, any_crossed) == 1 {
            // No lane leaves its voxel in this slab (the common case for near-axial
            // rays): the whole slab is the entry voxel, weight 1, and one gather does.
            return gather(mu, _mm256_add_epi32(base, off), in_valid);
        }
        let first = _mm256_min_ps(frac[0], frac[1]);
        let end_off = _mm256_add_epi32(_mm256_add_epi32(off, moved[0]), moved[1]);
        lanes.offset = end_off;
        let out_valid = _mm256_and_si256(valid_out[0], valid_out[1]);
        let w_in = _mm256_and_ps(first, _mm256_castsi256_ps(in_valid));
        let w_out = _mm256_and_ps(_mm256_sub_ps(one, first), _mm256_castsi256_ps(out_valid));
        let end = gather(mu, _mm256_add_epi32(base, end_off), out_valid);
        let at_in = gather(mu, _mm256_add_epi32(base, off), in_valid);
        let mut sum = _mm256_fmadd_ps(w_in, at_in, _mm256_mul_ps(w_out, end));
        let both = _mm256_and_si256(crossed[0], crossed[1]);
        if _mm256_movemask_ps(_mm256_castsi256_ps(both)) != 0 {
            let last = _mm256_max_ps(frac[0], frac[1]);
            let first_is_0 = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(frac[0], frac[1]));
            let mid_step = _mm256_blendv_epi8(moved[1], moved[0], first_is_0);
            let mid_valid = _mm256_and_si256(
                _mm256_blendv_epi8(
                    _mm256_and_si256(valid_in[0], valid_out[1]),
                    _mm256_and_si256(valid_out[0], valid_in[1]),
                    first_is_0,
                ),
                both,
            );
            let mid = gather(
                mu,
                _mm256_add_epi32(base, _mm256_add_epi32(off, mid_step)),
                mid_valid,
            );
            let diff = _mm256_mul_ps(_mm256_sub_ps(last, first), _mm256_sub_ps(mid, end));
            sum = _mm256_add_ps(sum, _mm256_and_ps(diff, _mm256_castsi256_ps(both)));
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 kernel (where the CPU has it) and the portable one give the same sums
    /// on a textured grid, for rays along every main axis, leaving the grid on its sides
    /// and crossing two boundaries in one slab.
    #[test]
    fn avx2_and_portable_kernels_agree() {
        let dims = [13, 11, 7];
        let mu: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|i| ((i * 7919) % 101) as f32 / 1000.0)
            .collect();
        for axis in 0..3 {
            let mut rays = Vec::new();
            for n in 0..29 {
                let t = n as f64;
                // Through a point in (or near) the grid, mostly along `axis`, with
                // slopes of both signs up to 0.9 on the other axes.
                let p = [
                    6.0 + 7.0 * t.sin(),
                    5.0 + 6.0 * t.cos(),
                    3.0 + 4.0 * (2.0 * t).sin(),
                ];
                let mut d = [
                    0.9 * (1.3 * t).sin(),
                    0.9 * (0.7 * t).cos(),
                    0.9 * (1.9 * t).sin(),
                ];
                d[axis] = if n % 2 == 0 { 1.0 } else { -1.0 };
                let source: [f64; 3] = std::array::from_fn(|a| p[a] - 50.0 * d[a]);
                rays.push((rays.len(), SlabRay::new(source, d, axis, 1.0)));
            }
            assert!(rays.len() > 8, "axis {axis}: {} rays", rays.len());
            let mut auto = vec![0.0; rays.len()];
            let mut portable = vec![0.0; rays.len()];
            integrate(&mu, dims, axis, &rays, &mut auto);
            integrate_portable(&mu, dims, axis, &rays, &mut portable);
            assert!(portable.iter().any(|&v| v > 0.0));
            for (a, p) in auto.iter().zip(&portable) {
                assert!(
                    (a - p).abs() <= 1e-6 + 1e-5 * p.abs(),
                    "axis {axis}: {a} vs {p}"
                );
            }
        }
    }
}
