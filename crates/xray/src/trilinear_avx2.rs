//! Trilinear ray marching of a detector row, eight rays per AVX2 vector: the same
//! samples and clamp-to-edge taps as the portable `Sampler` in `render.rs`, with
//! hardware gathers for the eight taps and FMA for the interpolation.

use std::arch::x86_64::*;

use bytemuck::cast;

use crate::render::MarchRay;

const L: usize = 8;

/// Marches `rays` through `mu` (grid `dims`) into `out` when the CPU has AVX2 and FMA;
/// false (nothing written) otherwise, or when the grid is too large for i32 offsets.
#[allow(unsafe_code)]
pub(crate) fn march_row(mu: &[f32], dims: [usize; 3], rays: &[MarchRay], out: &mut [f32]) -> bool {
    let fits = mu.len() == dims.iter().product::<usize>() && mu.len() < i32::MAX as usize;
    if mu.is_empty()
        || !fits
        || !std::is_x86_feature_detected!("avx2")
        || !std::is_x86_feature_detected!("fma")
    {
        return false;
    }
    // SAFETY: the CPU has AVX2 and FMA (checked above), all `run` requires.
    unsafe { run(mu, dims, rays, out) };
    true
}

/// The rays of one vector: start, step and sample count per lane.
struct Lanes {
    start: [__m256; 3],
    step: [__m256; 3],
    samples: __m256,
}

impl Lanes {
    fn new(rays: &[MarchRay]) -> Self {
        let lane = |f: &dyn Fn(&MarchRay) -> f32| -> __m256 {
            cast(std::array::from_fn::<f32, L, _>(|l| {
                rays.get(l).map_or(0.0, f)
            }))
        };
        Self {
            start: [0, 1, 2].map(|a| lane(&|r| r.start[a])),
            step: [0, 1, 2].map(|a| lane(&|r| r.step[a])),
            // Lanes beyond the rays take no samples.
            samples: lane(&|r| r.n as f32),
        }
    }
}

/// μ at `base + tap` in every lane.
#[target_feature(enable = "avx2,fma")]
#[allow(unsafe_code)]
fn gather(mu: &[f32], base: __m256i, tap: i32) -> __m256 {
    let offsets = _mm256_add_epi32(base, _mm256_set1_epi32(tap));
    // SAFETY: `base` is clamped so that `base + tap` lies in 0..mu.len() (see `run`).
    unsafe { _mm256_i32gather_ps::<4>(mu.as_ptr(), offsets) }
}

#[target_feature(enable = "avx2,fma")]
fn run(mu: &[f32], dims: [usize; 3], rays: &[MarchRay], out: &mut [f32]) {
    let [nx, ny, nz] = dims;
    let hi: [__m256; 3] = dims.map(|n| cast([(n - 1) as f32; L]));
    let index_max: [__m256i; 3] = dims.map(|n| cast([n.saturating_sub(2) as i32; L]));
    let (sy, sz) = (
        _mm256_set1_epi32(nx as i32),
        _mm256_set1_epi32((nx * ny) as i32),
    );
    // Tap offsets; zero along a single-voxel axis (both taps are the same voxel).
    let tx = i32::from(nx > 1);
    let ty = if ny > 1 { nx as i32 } else { 0 };
    let tz = if nz > 1 { (nx * ny) as i32 } else { 0 };
    // The largest base whose farthest tap is still inside `mu` (only a guard: clamped
    // indices never exceed it).
    let base_max = _mm256_set1_epi32(mu.len() as i32 - 1 - tx - ty - tz);
    let zero = _mm256_setzero_ps();
    let mut batches: Vec<Lanes> = rays.chunks(L).map(Lanes::new).collect();
    let mut sums = vec![zero; batches.len()];
    let samples_max = rays.iter().map(|r| r.n).max().unwrap_or(0);
    for i in 0..samples_max {
        let fi = _mm256_set1_ps(i as f32);
        for (lanes, sum) in batches.iter_mut().zip(sums.iter_mut()) {
            let mut pos = [zero; 3];
            let mut cell = [_mm256_setzero_si256(); 3];
            let mut frac = [zero; 3];
            for a in 0..3 {
                // max/min return the bound for NaN, so cells stay in range.
                let p = _mm256_fmadd_ps(fi, lanes.step[a], lanes.start[a]);
                pos[a] = _mm256_min_ps(_mm256_max_ps(p, zero), hi[a]);
                cell[a] = _mm256_min_epi32(_mm256_cvttps_epi32(pos[a]), index_max[a]);
                frac[a] = _mm256_sub_ps(pos[a], _mm256_cvtepi32_ps(cell[a]));
            }
            let base = _mm256_add_epi32(
                cell[0],
                _mm256_add_epi32(
                    _mm256_mullo_epi32(cell[1], sy),
                    _mm256_mullo_epi32(cell[2], sz),
                ),
            );
            let base = _mm256_min_epi32(_mm256_max_epi32(base, _mm256_setzero_si256()), base_max);
            let lerp = |a: __m256, b: __m256, t: __m256| _mm256_fmadd_ps(_mm256_sub_ps(b, a), t, a);
            let c00 = lerp(gather(mu, base, 0), gather(mu, base, tx), frac[0]);
            let c10 = lerp(gather(mu, base, ty), gather(mu, base, ty + tx), frac[0]);
            let c01 = lerp(gather(mu, base, tz), gather(mu, base, tz + tx), frac[0]);
            let c11 = lerp(
                gather(mu, base, tz + ty),
                gather(mu, base, tz + ty + tx),
                frac[0],
            );
            let value = lerp(lerp(c00, c10, frac[1]), lerp(c01, c11, frac[1]), frac[2]);
            let sampled = _mm256_cmp_ps::<_CMP_LT_OQ>(fi, lanes.samples);
            *sum = _mm256_add_ps(*sum, _mm256_and_ps(value, sampled));
        }
    }
    for ((batch, sum), out) in rays.chunks(L).zip(sums).zip(out.chunks_mut(L)) {
        let sum: [f32; L] = cast(sum);
        for ((ray, sum), o) in batch.iter().zip(sum).zip(out) {
            *o = (f64::from(sum) * ray.scale) as f32;
        }
    }
}
