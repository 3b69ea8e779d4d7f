//! The marches of [`Marcher`] for eight rays at a time, one per AVX2 lane: the screening
//! pass and the scoring march of the rays it lets through.
//!
//! Each lane marches one ray exactly as the one-ray march does — the same f64 index
//! arithmetic, the same cell values, the same jumps, the same order of events, the same
//! smallest values seen and the same capsule crossing — so every ray ends the same way.
//! A lane whose ray ends takes the next ray. Used where the CPU has AVX2 and FMA and the
//! rules need labels at most for the capsule (packed cells of one chunk).

use std::arch::x86_64::*;

use bytemuck::cast;
use pinhole_volume::Vec3;

use super::{CellExit, End, Marcher, Ray, Rule, SAME_CELL_MARGIN, SAME_CELL_MAX};
use crate::context::{Cell, CELL_LANES, FIELD_QUANTUM_MM};
use crate::plan::Traced;

const L: usize = 8;

/// Whether [`screen`] can run for `marcher`.
pub(super) fn applicable(marcher: &Marcher) -> bool {
    // Cell and label voxel offsets are computed in i32 lanes.
    let fits_i32 = |voxels: usize| voxels < i32::MAX as usize;
    marcher.chunks == 1
        && fits_i32(marcher.ctx.coarse.voxel_count())
        && fits_i32(marcher.ctx.labels.grid().voxel_count())
        && !marcher.collect()
        && !marcher.rules.labels_all_the_way
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
}

/// The screening pass of each of `dirs`: `Some` when it is rejected, `None` when it
/// reaches the skin.
#[allow(unsafe_code)]
pub(super) fn screen(marcher: &Marcher, dirs: &[Vec3]) -> Vec<Option<Traced>> {
    if !applicable(marcher) {
        return dirs.iter().map(|&dir| marcher.screen(dir)).collect();
    }
    // SAFETY: the CPU has AVX2 and FMA (checked by `applicable`), all `run` requires.
    unsafe { run::<false>(marcher, dirs) }
}

/// The full march of each of `dirs` (rays the screening pass let through), scored.
#[allow(unsafe_code)]
pub(super) fn trace(marcher: &Marcher, dirs: &[Vec3]) -> Vec<Traced> {
    if !applicable(marcher) {
        return dirs.iter().map(|&dir| marcher.trace(dir)).collect();
    }
    // SAFETY: the CPU has AVX2 and FMA (checked by `applicable`), all `run` requires.
    unsafe { run::<true>(marcher, dirs) }
        .into_iter()
        .zip(dirs)
        .map(|(traced, &dir)| traced.unwrap_or_else(|| marcher.trace(dir)))
        .collect()
}

/// The largest sample index `s` with `s · step ≤ limit` (the scalar march rejects for
/// length when `s · step > limit`).
fn last_sample(step_mm: f64, limit_mm: f64) -> i32 {
    if limit_mm.is_nan() {
        // No sample is too long: `s · step > NaN` never holds.
        return i32::MAX - 1;
    }
    if limit_mm < 0.0 {
        // Even sample 0 is too long.
        return -1;
    }
    let mut s = (limit_mm / step_mm)
        .floor()
        .clamp(0.0, f64::from(i32::MAX - 2)) as i32;
    while f64::from(s + 1) * step_mm <= limit_mm {
        s += 1;
    }
    while s > 0 && f64::from(s) * step_mm > limit_mm {
        s -= 1;
    }
    s
}

/// The rays in the lanes: their coarse and fine start indices and change per step (per
/// axis, as f64 lanes), sample index, and which ray of `dirs` each lane holds; when
/// scoring, the smallest value seen per cell lane (`seen[g][l]`) and the capsule state.
struct LaneRays {
    c0: [[f64; L]; 3],
    dc: [[f64; L]; 3],
    /// [`CellExit`] per axis.
    exit_slope: [[f64; L]; 3],
    exit_offset: [[f64; L]; 3],
    f0: [[f64; L]; 3],
    df: [[f64; L]; 3],
    s: [i32; L],
    ray: [usize; L],
    active: u32,
    next: usize,
    seen: [[f32; L]; CELL_LANES],
    /// Lanes still inside the target organ's labels, looking for the capsule.
    capsule_pending: u32,
    in_organ_prev: u32,
    /// Sample index where the ray left the target organ (−1: not yet).
    capsule_s: [i32; L],
}

impl LaneRays {
    fn new() -> Self {
        Self {
            c0: [[0.0; L]; 3],
            dc: [[0.0; L]; 3],
            exit_slope: [[0.0; L]; 3],
            exit_offset: [[f64::INFINITY; L]; 3],
            f0: [[0.0; L]; 3],
            df: [[0.0; L]; 3],
            s: [0; L],
            ray: [0; L],
            active: 0,
            next: 0,
            seen: [[f32::INFINITY; L]; CELL_LANES],
            capsule_pending: 0,
            in_organ_prev: 0,
            capsule_s: [-1; L],
        }
    }

    /// Puts the next ray that passes the direction rules into lane `l` (rays the direction
    /// rules reject get their result here); the lane goes idle when none is left.
    fn refill<T>(
        &mut self,
        l: usize,
        marcher: &Marcher,
        dirs: &[Vec3],
        out: &mut [Option<T>],
        rejected: impl Fn(Rule) -> T,
    ) {
        let bit = 1 << l;
        while self.next < dirs.len() {
            let i = self.next;
            self.next += 1;
            if let Some(rule) = marcher.direction_rules(dirs[i]).next() {
                out[i] = Some(rejected(rule));
                continue;
            }
            let [c0, dc, f0, df] = marcher.indices(dirs[i]);
            let exit = CellExit::new(dc);
            for a in 0..3 {
                self.c0[a][l] = c0[a];
                self.dc[a][l] = dc[a];
                self.exit_slope[a][l] = exit.slope[a];
                self.exit_offset[a][l] = exit.offset[a];
                self.f0[a][l] = f0[a];
                self.df[a][l] = df[a];
            }
            for seen in &mut self.seen {
                seen[l] = f32::INFINITY;
            }
            self.s[l] = 0;
            self.ray[l] = i;
            self.active |= bit;
            self.capsule_pending =
                (self.capsule_pending & !bit) | if marcher.rules.needs_labels { bit } else { 0 };
            self.in_organ_prev |= bit;
            self.capsule_s[l] = -1;
            return;
        }
        self.active &= !bit;
        self.capsule_pending &= !bit;
    }

    /// The one-ray march state of lane `l`, ended at sample `s`.
    fn ray(&self, l: usize, marcher: &Marcher, dir: Vec3) -> Ray {
        let mut coarse_min = vec![[f32::INFINITY; CELL_LANES]; 1];
        for (g, seen) in self.seen.iter().enumerate() {
            coarse_min[0][g] = seen[l];
        }
        let capsule_at = (self.capsule_s[l] >= 0).then(|| {
            let t = f64::from(self.capsule_s[l]) * marcher.step_mm;
            [0, 1, 2].map(|a| marcher.target[a] + dir[a] * t)
        });
        Ray {
            dir,
            c0: [0, 1, 2].map(|a| self.c0[a][l]),
            dc: [0, 1, 2].map(|a| self.dc[a][l]),
            cell_exit: CellExit {
                slope: [0, 1, 2].map(|a| self.exit_slope[a][l]),
                offset: [0, 1, 2].map(|a| self.exit_offset[a][l]),
            },
            f0: [0, 1, 2].map(|a| self.f0[a][l]),
            df: [0, 1, 2].map(|a| self.df[a][l]),
            s: self.s[l].max(0) as usize,
            coarse_min,
            traverse_mm: Vec::new(),
            capsule_at,
            in_organ_prev: self.in_organ_prev & (1 << l) != 0,
            lobe_prev: 0,
            in_lung_prev: None,
            pleura: 0,
            violations: Vec::new(),
        }
    }

    /// The label voxels under the lanes' samples, as the one-ray march's `read_label`
    /// finds them: data offsets, and the bits of the lanes whose sample lies in the grid.
    #[target_feature(enable = "avx2,fma")]
    fn label_offsets(&self, dims: [usize; 3]) -> ([i32; L], u32) {
        let s: __m256i = cast(self.s);
        let s_halves = [
            _mm256_cvtepi32_pd(_mm256_castsi256_si128(s)),
            _mm256_cvtepi32_pd(_mm256_extracti128_si256::<1>(s)),
        ];
        let half = _mm256_set1_pd(0.5);
        let zero = _mm256_setzero_pd();
        let mut inside = 0xff;
        let mut index = [_mm256_setzero_si256(); 3];
        for a in 0..3 {
            let dim = _mm256_set1_pd(dims[a] as f64);
            let mut halves = [_mm_setzero_si128(); 2];
            for (h, s) in s_halves.iter().enumerate() {
                let f0: [f64; 4] = std::array::from_fn(|l| self.f0[a][l + 4 * h]);
                let df: [f64; 4] = std::array::from_fn(|l| self.df[a][l + 4 * h]);
                let fi = _mm256_add_pd(_mm256_add_pd(cast(f0), _mm256_mul_pd(cast(df), *s)), half);
                let ok = _mm256_and_pd(
                    _mm256_cmp_pd::<_CMP_GE_OQ>(fi, zero),
                    _mm256_cmp_pd::<_CMP_LT_OQ>(fi, dim),
                );
                inside &= (_mm256_movemask_pd(ok) as u32) << (4 * h) | !(0xf << (4 * h));
                halves[h] = _mm256_cvttpd_epi32(fi);
            }
            index[a] = _mm256_set_m128i(halves[1], halves[0]);
        }
        let offset = _mm256_add_epi32(
            index[0],
            _mm256_mullo_epi32(
                _mm256_set1_epi32(dims[0] as i32),
                _mm256_add_epi32(
                    index[1],
                    _mm256_mullo_epi32(_mm256_set1_epi32(dims[1] as i32), index[2]),
                ),
            ),
        );
        (cast(offset), inside)
    }

    /// Reads the label under lane `l`'s sample for the capsule, as the one-ray march's
    /// `read_label` does (`offsets` and `inside` from [`Self::label_offsets`]).
    fn read_capsule(&mut self, l: usize, marcher: &Marcher, offsets: &[i32; L], inside: u32) {
        let bit = 1 << l;
        let label = if inside & bit != 0 {
            marcher.ctx.labels.data()[offsets[l] as usize]
        } else {
            0
        };
        let in_organ = marcher.rules.organ_lut[label as usize];
        if self.in_organ_prev & bit != 0 && !in_organ {
            self.capsule_s[l] = self.s[l];
            self.capsule_pending &= !bit;
        }
        if in_organ {
            self.in_organ_prev |= bit;
        } else {
            self.in_organ_prev &= !bit;
        }
    }
}

/// Transposes eight stored rows of eight lanes into mm: `out[g][l] = rows[l][g] · quantum`.
#[target_feature(enable = "avx2,fma")]
fn transpose(r: [__m128i; 8]) -> [__m256; 8] {
    let t0 = _mm_unpacklo_epi16(r[0], r[1]);
    let t1 = _mm_unpackhi_epi16(r[0], r[1]);
    let t2 = _mm_unpacklo_epi16(r[2], r[3]);
    let t3 = _mm_unpackhi_epi16(r[2], r[3]);
    let t4 = _mm_unpacklo_epi16(r[4], r[5]);
    let t5 = _mm_unpackhi_epi16(r[4], r[5]);
    let t6 = _mm_unpacklo_epi16(r[6], r[7]);
    let t7 = _mm_unpackhi_epi16(r[6], r[7]);
    let u0 = _mm_unpacklo_epi32(t0, t2);
    let u1 = _mm_unpackhi_epi32(t0, t2);
    let u2 = _mm_unpacklo_epi32(t1, t3);
    let u3 = _mm_unpackhi_epi32(t1, t3);
    let u4 = _mm_unpacklo_epi32(t4, t6);
    let u5 = _mm_unpackhi_epi32(t4, t6);
    let u6 = _mm_unpacklo_epi32(t5, t7);
    let u7 = _mm_unpackhi_epi32(t5, t7);
    let quantum = _mm256_set1_ps(FIELD_QUANTUM_MM);
    let mm = |w: __m128i| _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(w)), quantum);
    [
        mm(_mm_unpacklo_epi64(u0, u4)),
        mm(_mm_unpackhi_epi64(u0, u4)),
        mm(_mm_unpacklo_epi64(u1, u5)),
        mm(_mm_unpackhi_epi64(u1, u5)),
        mm(_mm_unpacklo_epi64(u2, u6)),
        mm(_mm_unpackhi_epi64(u2, u6)),
        mm(_mm_unpacklo_epi64(u3, u7)),
        mm(_mm_unpackhi_epi64(u3, u7)),
    ]
}

/// Bits of the lanes where the 64-bit lanes of `lo` (lanes 0–3) and `hi` (4–7) are set.
#[target_feature(enable = "avx2,fma")]
fn mask_pd(lo: __m256d, hi: __m256d) -> u32 {
    (_mm256_movemask_pd(lo) | (_mm256_movemask_pd(hi) << 4)) as u32
}

/// All-ones 32-bit lanes where `bits` has a 1.
#[target_feature(enable = "avx2,fma")]
fn lane_mask(bits: u32) -> __m256i {
    let lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let spread = _mm256_and_si256(_mm256_set1_epi32(bits as i32), lane_bits);
    _mm256_cmpeq_epi32(spread, lane_bits)
}

/// What every step of a march reads, in lanes: the packed cells and the coarse grid, the
/// step and the last sample within the length limit, and the per-group thresholds.
struct MarchConsts<'a> {
    packed: &'a [Cell],
    label_dims: [usize; 3],
    cells_max: __m256i,
    dim_pd: [__m256d; 3],
    dim_x: __m256i,
    dim_y: __m256i,
    step: f64,
    step_pd: __m256d,
    half: __m256d,
    zero_pd: __m256d,
    last: __m256i,
    one: __m256i,
    clear: [__m256; CELL_LANES],
    skip: [__m256; CELL_LANES],
    seen_slack: [__m256; CELL_LANES],
}

impl<'a> MarchConsts<'a> {
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn new<const SCORE: bool>(marcher: &'a Marcher, packed: &'a [Cell]) -> Self {
        let dims = marcher.ctx.coarse.dims();
        let step = marcher.step_mm;
        let lanes_of =
            |values: [f32; CELL_LANES]| -> [__m256; CELL_LANES] { values.map(|v| cast([v; L])) };
        Self {
            packed,
            label_dims: marcher.ctx.labels.grid().dims(),
            cells_max: _mm256_set1_epi32(packed.len().min(i32::MAX as usize) as i32 - 1),
            dim_pd: dims.map(|d| _mm256_set1_pd(d as f64)),
            dim_x: _mm256_set1_epi32(dims[0] as i32),
            dim_y: _mm256_set1_epi32(dims[1] as i32),
            step,
            step_pd: _mm256_set1_pd(step),
            half: _mm256_set1_pd(0.5),
            zero_pd: _mm256_setzero_pd(),
            last: _mm256_set1_epi32(last_sample(step, marcher.limit_mm)),
            one: _mm256_set1_epi32(1),
            clear: lanes_of(marcher.clear[0]),
            skip: lanes_of(if SCORE {
                marcher.skip[0]
            } else {
                marcher.screen_skip[0]
            }),
            seen_slack: lanes_of(marcher.seen_slack[0]),
        }
    }
}

/// Where the lanes' current samples are: past the length limit, outside the coarse grid,
/// their coarse cell index per axis, and the samples left to each cell's boundary
/// (`CellExit::samples_left`, lanes 0–3 and 4–7).
struct Sample {
    s: __m256i,
    too_long: u32,
    outside: u32,
    index: [__m256i; 3],
    left: [__m256d; 2],
}

/// The lanes' current samples, with the same arithmetic as the one-ray march:
/// (c0 + dc · s) + 0.5, then truncation.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn sample(lanes: &LaneRays, k: &MarchConsts) -> Sample {
    let s: __m256i = cast(lanes.s);
    let too_long = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(s, k.last))) as u32;
    let s_lo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(s));
    let s_hi = _mm256_cvtepi32_pd(_mm256_extracti128_si256::<1>(s));
    let mut outside = 0u32;
    let mut index = [_mm256_setzero_si256(); 3];
    let mut left_lo = _mm256_set1_pd(f64::INFINITY);
    let mut left_hi = left_lo;
    for a in 0..3 {
        let c0: [[f64; 4]; 2] = [
            std::array::from_fn(|l| lanes.c0[a][l]),
            std::array::from_fn(|l| lanes.c0[a][l + 4]),
        ];
        let dc: [[f64; 4]; 2] = [
            std::array::from_fn(|l| lanes.dc[a][l]),
            std::array::from_fn(|l| lanes.dc[a][l + 4]),
        ];
        let lo = _mm256_add_pd(
            _mm256_add_pd(cast(c0[0]), _mm256_mul_pd(cast(dc[0]), s_lo)),
            k.half,
        );
        let hi = _mm256_add_pd(
            _mm256_add_pd(cast(c0[1]), _mm256_mul_pd(cast(dc[1]), s_hi)),
            k.half,
        );
        let below_lo = _mm256_cmp_pd::<_CMP_LT_OQ>(lo, k.zero_pd);
        let below_hi = _mm256_cmp_pd::<_CMP_LT_OQ>(hi, k.zero_pd);
        let above_lo = _mm256_cmp_pd::<_CMP_GE_OQ>(lo, k.dim_pd[a]);
        let above_hi = _mm256_cmp_pd::<_CMP_GE_OQ>(hi, k.dim_pd[a]);
        outside |= mask_pd(
            _mm256_or_pd(below_lo, above_lo),
            _mm256_or_pd(below_hi, above_hi),
        );
        index[a] = _mm256_set_m128i(_mm256_cvttpd_epi32(hi), _mm256_cvttpd_epi32(lo));
        let halves = |v: &[[f64; L]; 3]| -> [__m256d; 2] {
            [
                cast::<[f64; 4], __m256d>(std::array::from_fn(|l| v[a][l])),
                cast::<[f64; 4], __m256d>(std::array::from_fn(|l| v[a][l + 4])),
            ]
        };
        let [slope_lo, slope_hi] = halves(&lanes.exit_slope);
        let [offset_lo, offset_hi] = halves(&lanes.exit_offset);
        const TRUNCATE: i32 = _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC;
        let u_lo = _mm256_sub_pd(lo, _mm256_round_pd::<TRUNCATE>(lo));
        let u_hi = _mm256_sub_pd(hi, _mm256_round_pd::<TRUNCATE>(hi));
        left_lo = _mm256_min_pd(left_lo, _mm256_fmadd_pd(u_lo, slope_lo, offset_lo));
        left_hi = _mm256_min_pd(left_hi, _mm256_fmadd_pd(u_hi, slope_hi, offset_hi));
    }
    Sample {
        s,
        too_long,
        outside,
        index,
        left: [left_lo, left_hi],
    }
}

/// `same_cell_advance`, lane-wise: the samples certainly still in the current cell, + 1.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn same_cell_advance(left: [__m256d; 2], k: &MarchConsts) -> __m256i {
    let certain = |left: __m256d| {
        let c = _mm256_sub_pd(
            _mm256_mul_pd(left, _mm256_set1_pd(1.0 - SAME_CELL_MARGIN)),
            _mm256_set1_pd(SAME_CELL_MARGIN),
        );
        _mm256_cvttpd_epi32(_mm256_min_pd(
            _mm256_max_pd(c, k.zero_pd),
            _mm256_set1_pd(SAME_CELL_MAX),
        ))
    };
    _mm256_add_epi32(_mm256_set_m128i(certain(left[1]), certain(left[0])), k.one)
}

/// The packed cells under the lanes' samples: their offsets and values in mm per group
/// (`v[g]`, group 0 the body depth). Lanes that left the grid (or idle ones) read some
/// cell; their values are unused.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn read_cells(index: [__m256i; 3], k: &MarchConsts) -> ([i32; L], [__m256; CELL_LANES]) {
    let offset = _mm256_add_epi32(
        index[0],
        _mm256_mullo_epi32(
            k.dim_x,
            _mm256_add_epi32(index[1], _mm256_mullo_epi32(k.dim_y, index[2])),
        ),
    );
    let offset = _mm256_min_epi32(
        _mm256_max_epi32(offset, _mm256_setzero_si256()),
        k.cells_max,
    );
    let offsets: [i32; L] = cast(offset);
    let rows: [__m128i; L] = std::array::from_fn(|l| cast(k.packed[offsets[l] as usize]));
    (offsets, transpose(rows))
}

/// The lanes below a clearance, and how far each lane may jump (mm): the smallest margin
/// of a value over its bound. Scoring updates the smallest values seen (not in lanes that
/// leave the body here, `exit`).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn clearance_and_jump<const SCORE: bool>(
    lanes: &mut LaneRays,
    v: &[__m256; CELL_LANES],
    exit: u32,
    k: &MarchConsts,
) -> (u32, __m256) {
    // A lane that leaves the body here ends before this sample's values count.
    let keep = _mm256_castsi256_ps(lane_mask(!exit & 0xff));
    let mut below = _mm256_setzero_ps();
    let mut jump = _mm256_set1_ps(f32::INFINITY);
    for g in 0..CELL_LANES {
        below = _mm256_or_ps(below, _mm256_cmp_ps::<_CMP_LT_OQ>(v[g], k.clear[g]));
        let bound = if SCORE {
            // The smallest value seen so far (this sample included) + slack, at most
            // the value above which the score no longer changes.
            let seen: __m256 = cast(lanes.seen[g]);
            let seen = _mm256_blendv_ps(seen, _mm256_min_ps(seen, v[g]), keep);
            lanes.seen[g] = cast(seen);
            _mm256_min_ps(_mm256_add_ps(seen, k.seen_slack[g]), k.skip[g])
        } else {
            k.skip[g]
        };
        jump = _mm256_min_ps(jump, _mm256_sub_ps(v[g], bound));
    }
    (_mm256_movemask_ps(below) as u32, jump)
}

/// Samples each lane advances: s += ⌊jump / step⌋ where jump > step, else 1 (in f64, as
/// the one-ray march), at least the same-cell advance; 1 while a lane still reads labels
/// for the capsule; idle lanes stay.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn advance<const SCORE: bool>(
    lanes: &LaneRays,
    jump: __m256,
    same_cell: __m256i,
    k: &MarchConsts,
) -> __m256i {
    let jump_lo = _mm256_cvtps_pd(_mm256_castps256_ps128(jump));
    let jump_hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(jump));
    let mut far = mask_pd(
        _mm256_cmp_pd::<_CMP_GT_OQ>(jump_lo, k.step_pd),
        _mm256_cmp_pd::<_CMP_GT_OQ>(jump_hi, k.step_pd),
    );
    if SCORE {
        far &= !lanes.capsule_pending;
    }
    let cap = _mm256_set1_pd(1e9);
    let skips = _mm256_set_m128i(
        _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_div_pd(jump_hi, k.step_pd), cap)),
        _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_div_pd(jump_lo, k.step_pd), cap)),
    );
    let jump_samples = _mm256_blendv_epi8(k.one, skips, lane_mask(far));
    let same_cell = if SCORE {
        _mm256_blendv_epi8(k.one, same_cell, lane_mask(!lanes.capsule_pending))
    } else {
        same_cell
    };
    let advance = _mm256_max_epi32(jump_samples, same_cell);
    _mm256_and_si256(advance, lane_mask(lanes.active))
}

/// Label reads of this sample for the capsule, in the lanes that go on.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn read_capsules(lanes: &mut LaneRays, marcher: &Marcher, ended: u32, k: &MarchConsts) {
    let mut reading = lanes.capsule_pending & lanes.active & !ended;
    if reading != 0 {
        let (offsets, inside) = lanes.label_offsets(k.label_dims);
        while reading != 0 {
            let l = reading.trailing_zeros() as usize;
            reading &= reading - 1;
            lanes.read_capsule(l, marcher, &offsets, inside);
        }
    }
}

/// Why lanes end at this step (bits per lane), at which samples and packed cells, and
/// the step (mm).
struct Ends {
    too_long: u32,
    outside: u32,
    exit: u32,
    s_now: [i32; L],
    offsets: [i32; L],
    step: f64,
}

/// How the march of lane `l` ended: too long, out of the scan, out of the body (scored
/// when `SCORE`, else `None`), or below a clearance in its cell. `None` when no group is
/// named after all: the march goes on.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn lane_end<const SCORE: bool>(
    marcher: &Marcher,
    lanes: &LaneRays,
    l: usize,
    dirs: &[Vec3],
    ends: &Ends,
) -> Option<Option<Traced>> {
    let bit = 1 << l;
    Some(if ends.too_long & bit != 0 {
        Some(Traced::Rejected(Rule::MaxLength))
    } else if ends.outside & bit != 0 {
        Some(Traced::Missed)
    } else if ends.exit & bit != 0 {
        SCORE.then(|| {
            let dir = dirs[lanes.ray[l]];
            let t_mm = f64::from(ends.s_now[l]) * ends.step;
            marcher.finish(lanes.ray(l, marcher, dir), End::Exit { t_mm })
        })
    } else {
        // A value below its clearance always names a group; were it not so, the march
        // goes on as the one-ray march does.
        let cell = &marcher.rules.packed[ends.offsets[l] as usize];
        Some(Traced::Rejected(marcher.first_broken_clearance(cell)?))
    })
}

/// Marches `dirs` in lanes. `SCORE = false`: the screening pass (`None`: reaches the
/// skin). `SCORE = true`: the scoring march, every ray finished (`None` only if a lane
/// could not follow the one-ray march, which then redoes that ray).
#[target_feature(enable = "avx2,fma")]
fn run<const SCORE: bool>(marcher: &Marcher, dirs: &[Vec3]) -> Vec<Option<Traced>> {
    let mut out: Vec<Option<Traced>> = std::iter::repeat_with(|| None).take(dirs.len()).collect();
    let packed = marcher.rules.packed.as_slice();
    if packed.is_empty() {
        return out;
    }
    let k = MarchConsts::new::<SCORE>(marcher, packed);
    let rejected = |rule| Traced::Rejected(rule);

    let mut lanes = LaneRays::new();
    for l in 0..L {
        lanes.refill(l, marcher, dirs, &mut out, rejected);
    }
    while lanes.active != 0 {
        let at = sample(&lanes, &k);
        let same_cell = same_cell_advance(at.left, &k);
        let (offsets, v) = read_cells(at.index, &k);
        let exit =
            _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(v[0], _mm256_setzero_ps())) as u32;
        let (below, jump) = clearance_and_jump::<SCORE>(&mut lanes, &v, exit, &k);
        let advance = advance::<SCORE>(&lanes, jump, same_cell, &k);
        let ended = (at.too_long | at.outside | exit | below) & lanes.active;
        if SCORE {
            read_capsules(&mut lanes, marcher, ended, &k);
        }
        let s_now = lanes.s;
        lanes.s = cast(_mm256_add_epi32(at.s, advance));
        if ended == 0 {
            continue;
        }
        let ends = Ends {
            too_long: at.too_long,
            outside: at.outside,
            exit,
            s_now,
            offsets,
            step: k.step,
        };
        let mut bits = ended;
        while bits != 0 {
            let l = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let Some(result) = lane_end::<SCORE>(marcher, &lanes, l, dirs, &ends) else {
                continue;
            };
            out[lanes.ray[l]] = result;
            lanes.refill(l, marcher, dirs, &mut out, rejected);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::last_sample;

    /// The last sample index within the length limit, as the one-ray march decides it
    /// (`s · step > limit` rejects), for limits on and between sample positions.
    #[test]
    fn last_sample_is_the_last_index_the_one_ray_march_accepts() {
        for step in [0.35, 0.5, 1.0, 1.25] {
            for limit in [-1.0, 0.0, 0.3, 1.0, 7.0, 100.0, 100.35, 150.5 + 1e-9] {
                let brute = (0..2000)
                    .take_while(|&s| f64::from(s) * step <= limit)
                    .last()
                    .unwrap_or(-1);
                assert_eq!(last_sample(step, limit), brute, "step {step} limit {limit}");
            }
        }
        assert!(last_sample(1.0, f64::NAN) > 1_000_000);
    }
}
