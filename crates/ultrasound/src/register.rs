//! Automatic rigid registration of a tracked ultrasound sweep to the CT by LC² (Wein,
//! Ladikos, Fuerst, Shah, Sharma, Navab, "Global registration of ultrasound to MRI using
//! the LC² metric", MICCAI 2013), starting from the tracked pose.
//!
//! [`register_sweep`] finds the rigid correction `T` (LPS mm) that, applied to the frames'
//! planes (the CT is sampled at `T·x` for a pixel at `x`), maximises LC²:
//!
//! * **LC²**: around every sample, a patch of `(2r + 1)²` samples of the same frame; the
//!   ultrasound intensities `u` of the patch are regressed on the CT's intensity `p` and
//!   gradient magnitude `g` at the same places (`u ≈ α·p + β·g + γ`, least squares); the
//!   patch's similarity is `1 − residual variance / variance of u`. Patches are weighted
//!   by the variance of `u`, so LC² = Σ (explained variance) / Σ (variance of `u`), in
//!   `[0, 1]`. The denominator sums every patch in the fan, so frames slid off the CT
//!   lose similarity instead of leaving the best patches alone.
//! * **Which pixels**: pixels that are 0 in every frame of the same size (outside the fan
//!   or the image's scanned region) are ignored, and so are samples darker than
//!   [`UsRegisterOptions::dark_below`] (acoustic shadows, lost coupling: no anatomy to
//!   match; kept, their edges pulled the study's sweeps to false optima), and samples
//!   outside the CT (their patch then counts only the samples inside, or nothing below
//!   half a patch).
//! * **Speed**: at most [`UsRegisterOptions::max_frames_used`] frames (evenly chosen), the
//!   frames block-averaged to samples of each level's spacing, the CT resampled once per
//!   level onto an axis-aligned LPS grid around the frames (anti-aliased, clamped to
//!   [`UsRegisterOptions::ct_window_hu`], its gradient magnitude computed once, both
//!   standardised), patch sums from integral images (constant cost per patch), frames on
//!   rayon.
//! * **Search**: coarse to fine over [`UsRegisterOptions::levels`], in 6-D (translation in
//!   mm, rotation vector in degrees about the centroid of the frames' samples). On the
//!   first level a grid of `{−h, 0, h}` per parameter
//!   ([`UsRegisterOptions::translation_search_mm`],
//!   [`UsRegisterOptions::rotation_search_deg`]: 3⁶ = 729 poses) is scored and the best
//!   [`UsRegisterOptions::search_starts`] are refined by Nelder–Mead (adaptive
//!   coefficients of Gao & Han 2012; coarse levels stop at 10× the tolerance). The best
//!   [`UsRegisterOptions::candidates_carried`] results, and the tracked pose, are refined
//!   again on the next level (a coarse level can prefer a wrong pose the fine one would
//!   not); the best result of the last level is restarted once against a collapsed
//!   simplex.
//!
//! # Guarantees
//! * The result is a proper rigid transform (rotation from a unit quaternion), row-major
//!   LPS; the final LC² is the last level's, never lower than that level's LC² at the
//!   starting point of its refinement.
//! * Refused with a typed [`UsRegisterError`]: no frames, more than [`MAX_FRAMES`], a
//!   frame whose pixel count disagrees with its plane, frames blank everywhere, frames
//!   mostly off the CT at the start (fewer than [`UsRegisterOptions::min_inside_fraction`]
//!   of the samples inside), bad options, or a degenerate result (a CT or a sweep with no
//!   contrast, a non-finite similarity).
//! * Deterministic: the same input gives the same result whatever the thread count.
//!
//! What it is not: no deformation (breathing moves the liver by centimetres; the result
//! is the best rigid fit of the sweep), no global search beyond the grid of the first
//! level. Its accuracy is measured on simulated sweeps only (`docs/ultrasound.md`).

use pinhole_volume::math::{transform_direction, transform_point, Mat4, Vec3, IDENTITY4};
use pinhole_volume::Volume;
use rayon::prelude::*;
use serde::Serialize;
use std::sync::Mutex;

use crate::landmarks::rotation_from_quaternion;
use crate::plane::ImagePlane;

/// Most frames accepted in one call.
pub const MAX_FRAMES: usize = 10_000;
/// Fewest samples with a full patch needed to score a pose.
const MIN_PATCHES: usize = 16;
/// Coarse levels stop at this multiple of [`UsRegisterOptions::tolerance`].
const COARSE_TOLERANCE_FACTOR: f64 = 10.0;
/// Channels of the patch sums: n, u, uu, p, g, pp, gg, pg, up, ug.
const CHANNELS: usize = 10;

/// One level of the coarse-to-fine search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsRegisterLevel {
    /// Sample spacing in the frames (mm): pixels are block-averaged to it.
    pub spacing_mm: f64,
    /// Voxel size of the CT resampled for this level (mm).
    pub ct_spacing_mm: f64,
    /// Patch half-width `r` in samples (patches of `(2r + 1)²` samples).
    pub patch_radius: usize,
    /// Initial simplex step: translation (mm) and rotation (degrees).
    pub step_mm: f64,
    pub step_deg: f64,
    /// Room around the frames for the resampled CT (mm): how far the level may move them.
    pub margin_mm: f64,
}

/// Options of [`register_sweep`]; [`Default`] suits an abdominal sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsRegisterOptions {
    /// Frames used (evenly chosen across the sweep), ≥ 1.
    pub max_frames_used: usize,
    /// Coarse to fine, at least one.
    pub levels: Vec<UsRegisterLevel>,
    /// Half-width of the first level's translation grid (mm); 0 turns the grid off.
    pub translation_search_mm: f64,
    /// Half-width of the first level's rotation grid (degrees, about each axis); 0 turns
    /// it off. With both grids: 3⁶ = 729 poses scored.
    pub rotation_search_deg: f64,
    /// Best grid points refined on the first level, ≥ 1.
    pub search_starts: usize,
    /// Best results of a level refined again on the next one (with the tracked pose), ≥ 1.
    pub candidates_carried: usize,
    /// Most similarity evaluations of one Nelder–Mead run.
    pub max_evaluations: usize,
    /// A run has converged when every vertex of its simplex is within this of the best
    /// (mm and degrees alike).
    pub tolerance: f64,
    /// The CT is clamped to this window (HU) before resampling.
    pub ct_window_hu: [f32; 2],
    /// Fewest of the frames' samples inside the CT at the start, `(0, 1]`.
    pub min_inside_fraction: f64,
    /// Samples darker than this (mean grey level, 0…255) are ignored like pixels outside
    /// the fan: acoustic shadows and lost coupling carry no anatomy to match.
    pub dark_below: f32,
}

impl Default for UsRegisterOptions {
    /// 8 frames; 2.5 mm then 2 mm samples (patches of 7 × 7 samples: 17.5 mm, then
    /// 14 mm; larger patches gave false optima on the study's sweeps); a ±10 mm × ±10°
    /// grid (729 poses) with the best 8 refined, the best 4 of those carried to the 2 mm
    /// level with the tracked pose; samples darker than 20 ignored.
    fn default() -> Self {
        Self {
            max_frames_used: 8,
            levels: vec![
                UsRegisterLevel {
                    spacing_mm: 2.5,
                    ct_spacing_mm: 2.5,
                    patch_radius: 3,
                    step_mm: 3.75,
                    step_deg: 3.75,
                    margin_mm: 40.0,
                },
                UsRegisterLevel {
                    spacing_mm: 2.0,
                    ct_spacing_mm: 2.0,
                    patch_radius: 3,
                    step_mm: 3.0,
                    step_deg: 3.0,
                    margin_mm: 12.0,
                },
            ],
            translation_search_mm: 10.0,
            rotation_search_deg: 10.0,
            search_starts: 8,
            candidates_carried: 4,
            max_evaluations: 800,
            tolerance: 0.05,
            ct_window_hu: [-1000.0, 1500.0],
            min_inside_fraction: 0.3,
            dark_below: 20.0,
        }
    }
}

/// A registration's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsRegistration {
    /// Row-major 4×4, LPS mm: the correction `T` (the CT is sampled at `T·x` for a pixel
    /// at `x` of the frames' planes).
    pub correction_lps: Mat4,
    /// LC² of the last level at the tracked pose and at the result.
    pub lc2_initial: f64,
    pub lc2_final: f64,
    /// Nelder–Mead iterations and similarity evaluations, all levels together.
    pub iterations: usize,
    pub evaluations: usize,
    /// Whether the last level's refinement ended on the tolerance (not on the budget).
    pub converged: bool,
    /// Frames used.
    pub frames_used: usize,
    /// Centre of rotation of the search (centroid of the samples), LPS mm.
    pub centre_lps: Vec3,
    /// Size of the correction: rotation angle (degrees) and shift of the centre (mm).
    pub rotation_deg: f64,
    pub shift_at_centre_mm: f64,
}

/// Why a sweep cannot be registered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UsRegisterError {
    #[error("no frames to register")]
    NoFrames,
    #[error("{frames} frames: at most {MAX_FRAMES} are accepted")]
    TooManyFrames { frames: usize },
    #[error("frame {index} has {found} pixels but its plane has {expected}")]
    PixelCount {
        index: usize,
        expected: usize,
        found: usize,
    },
    #[error("option {name} = {value} is out of range: expected {expected}")]
    BadOption {
        name: &'static str,
        value: f64,
        expected: &'static str,
    },
    #[error("every pixel of every frame is 0: nothing to register")]
    BlankFrames,
    #[error(
        "the frames are off the CT: {inside_percent:.1} % of their samples inside, \
         {required_percent:.1} % required"
    )]
    OffCt {
        inside_percent: f64,
        required_percent: f64,
    },
    #[error("degenerate registration: {reason}")]
    Degenerate { reason: &'static str },
}

/// Registers the tracked sweep `frames` (each a plane and its 8-bit pixels, row-major) to
/// `ct` (HU) by LC², from the tracked pose (see the module docs).
pub fn register_sweep(
    ct: &Volume<f32>,
    frames: &[(ImagePlane, &[u8])],
    options: &UsRegisterOptions,
) -> Result<UsRegistration, UsRegisterError> {
    check_options(options)?;
    check_frames(frames)?;
    let used = choose_frames(frames.len(), options.max_frames_used);
    let masks = fan_masks(frames);
    let mut levels = Vec::with_capacity(options.levels.len());
    for level in &options.levels {
        let samples: Vec<FrameSamples> = used
            .iter()
            .map(|&k| {
                FrameSamples::new(
                    &frames[k].0,
                    frames[k].1,
                    &masks[k],
                    level,
                    options.dark_below,
                )
            })
            .collect();
        levels.push(samples);
    }
    let centre_lps = centroid(&levels[levels.len() - 1]).ok_or(UsRegisterError::BlankFrames)?;
    let mut search = Search {
        centre: centre_lps,
        evaluations: 0,
        iterations: 0,
    };
    // Candidates carried from level to level, best first (by that level's LC²).
    let mut candidates: Vec<[f64; 6]> = vec![[0.0; 6]];
    let mut last = None;
    for (index, (level, samples)) in options.levels.iter().zip(&levels).enumerate() {
        let mut poses: Vec<Mat4> = candidates.iter().map(|x| search.transform(x)).collect();
        poses.push(IDENTITY4);
        let scorer = Scorer::new(ct, samples, level, options, &poses)?;
        if index == 0 {
            check_inside(&scorer, &IDENTITY4, options)?;
        }
        let lc2_initial = scorer.score(&IDENTITY4).lc2;
        let starts = if index == 0 {
            grid_starts(&scorer, &mut search, options)
        } else {
            // The tracked pose too: a coarse level can mislead where the fine one would not.
            let mut s = candidates.clone();
            s.push([0.0; 6]);
            s
        };
        let step = [
            level.step_mm,
            level.step_mm,
            level.step_mm,
            level.step_deg,
            level.step_deg,
            level.step_deg,
        ];
        let last_level = index + 1 == options.levels.len();
        // Coarse levels only need to hand over a pose within the next level's reach.
        let tolerance = if last_level {
            options.tolerance
        } else {
            options.tolerance * COARSE_TOLERANCE_FACTOR
        };
        let mut results: Vec<Simplex> = starts
            .into_iter()
            .map(|x0| search.refine(&scorer, x0, step, tolerance, options.max_evaluations))
            .collect();
        results.sort_by(|a, b| a.value.total_cmp(&b.value));
        if last_level {
            // Restart the best once, against a simplex collapsed before the optimum.
            if let Some(first) = results.first_mut() {
                let again =
                    search.refine(&scorer, first.x, step, tolerance, options.max_evaluations);
                *first = Simplex {
                    iterations: first.iterations + again.iterations,
                    ..again
                };
            }
        }
        candidates = results
            .iter()
            .take(options.candidates_carried)
            .map(|r| r.x)
            .collect();
        let level_best = results
            .into_iter()
            .next()
            .ok_or(UsRegisterError::Degenerate {
                reason: "no start was refined",
            })?;
        last = Some((lc2_initial, level_best));
    }
    let (lc2_initial, run) = last.ok_or(UsRegisterError::Degenerate {
        reason: "no level was run",
    })?;
    let lc2_final = -run.value;
    if !lc2_final.is_finite() || lc2_final <= 0.0 {
        return Err(UsRegisterError::Degenerate {
            reason: "no similarity between the sweep and the CT at the result",
        });
    }
    let best = run.x;
    let correction_lps = search.transform(&best);
    let rotation_deg = norm3([best[3], best[4], best[5]]);
    Ok(UsRegistration {
        correction_lps,
        lc2_initial,
        lc2_final,
        iterations: search.iterations,
        evaluations: search.evaluations,
        converged: run.converged,
        frames_used: used.len(),
        centre_lps,
        rotation_deg,
        shift_at_centre_mm: norm3([best[0], best[1], best[2]]),
    })
}

fn check_options(o: &UsRegisterOptions) -> Result<(), UsRegisterError> {
    let bad = |name, value: f64, expected| {
        Err(UsRegisterError::BadOption {
            name,
            value,
            expected,
        })
    };
    if o.max_frames_used == 0 {
        return bad("max_frames_used", 0.0, "≥ 1");
    }
    if o.levels.is_empty() {
        return bad("levels", 0.0, "at least one level");
    }
    for l in &o.levels {
        for (name, v) in [
            ("levels.spacing_mm", l.spacing_mm),
            ("levels.ct_spacing_mm", l.ct_spacing_mm),
        ] {
            if !(v.is_finite() && (0.1..=50.0).contains(&v)) {
                return bad(name, v, "0.1 ≤ spacing ≤ 50 mm");
            }
        }
        if !(1..=32).contains(&l.patch_radius) {
            return bad("levels.patch_radius", l.patch_radius as f64, "1…32");
        }
        for (name, v) in [
            ("levels.step_mm", l.step_mm),
            ("levels.step_deg", l.step_deg),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 90.0) {
                return bad(name, v, "0 < step ≤ 90");
            }
        }
        if !(l.margin_mm.is_finite() && (0.0..=200.0).contains(&l.margin_mm)) {
            return bad("levels.margin_mm", l.margin_mm, "0 ≤ margin_mm ≤ 200");
        }
    }
    let t = o.translation_search_mm;
    if !(t.is_finite() && (0.0..=100.0).contains(&t)) {
        return bad(
            "translation_search_mm",
            t,
            "0 ≤ translation_search_mm ≤ 100",
        );
    }
    let r = o.rotation_search_deg;
    if !(r.is_finite() && (0.0..=45.0).contains(&r)) {
        return bad("rotation_search_deg", r, "0 ≤ rotation_search_deg ≤ 45");
    }
    if !(1..=64).contains(&o.search_starts) {
        return bad("search_starts", o.search_starts as f64, "1…64");
    }
    if !(1..=64).contains(&o.candidates_carried) {
        return bad("candidates_carried", o.candidates_carried as f64, "1…64");
    }
    if o.max_evaluations < 10 {
        return bad("max_evaluations", o.max_evaluations as f64, "≥ 10");
    }
    if !(o.tolerance.is_finite() && o.tolerance > 0.0) {
        return bad("tolerance", o.tolerance, "> 0");
    }
    let [lo, hi] = o.ct_window_hu;
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return bad("ct_window_hu", f64::from(hi - lo), "finite, low < high");
    }
    if !(o.dark_below.is_finite() && (0.0..=255.0).contains(&o.dark_below)) {
        return bad(
            "dark_below",
            f64::from(o.dark_below),
            "0 ≤ dark_below ≤ 255",
        );
    }
    let f = o.min_inside_fraction;
    if !(f.is_finite() && f > 0.0 && f <= 1.0) {
        return bad("min_inside_fraction", f, "0 < fraction ≤ 1");
    }
    Ok(())
}

fn check_frames(frames: &[(ImagePlane, &[u8])]) -> Result<(), UsRegisterError> {
    if frames.is_empty() {
        return Err(UsRegisterError::NoFrames);
    }
    if frames.len() > MAX_FRAMES {
        return Err(UsRegisterError::TooManyFrames {
            frames: frames.len(),
        });
    }
    for (index, (plane, pixels)) in frames.iter().enumerate() {
        if pixels.len() != plane.pixel_count() {
            return Err(UsRegisterError::PixelCount {
                index,
                expected: plane.pixel_count(),
                found: pixels.len(),
            });
        }
    }
    if frames.iter().all(|(_, p)| p.iter().all(|&v| v == 0)) {
        return Err(UsRegisterError::BlankFrames);
    }
    Ok(())
}

/// `count` frame indices spread evenly over `0..n` (all of them when `n ≤ count`).
fn choose_frames(n: usize, count: usize) -> Vec<usize> {
    if n <= count {
        return (0..n).collect();
    }
    if count == 1 {
        return vec![n / 2];
    }
    let mut chosen: Vec<usize> = (0..count)
        .map(|k| ((k as f64) * (n - 1) as f64 / (count - 1) as f64).round() as usize)
        .collect();
    chosen.dedup();
    chosen
}

/// A field of view shared by the frames of one size.
type FanMask = std::sync::Arc<Vec<bool>>;

/// Per frame, its field of view: pixels non-zero in some frame of the same size.
fn fan_masks(frames: &[(ImagePlane, &[u8])]) -> Vec<FanMask> {
    let mut by_size: Vec<((usize, usize), FanMask)> = Vec::new();
    let mut masks = Vec::with_capacity(frames.len());
    for (plane, _) in frames {
        let size = (plane.width_px(), plane.height_px());
        if let Some((_, m)) = by_size.iter().find(|(s, _)| *s == size) {
            masks.push(m.clone());
            continue;
        }
        let mut mask = vec![false; plane.pixel_count()];
        for (p, px) in frames {
            if (p.width_px(), p.height_px()) == size {
                for (m, &v) in mask.iter_mut().zip(px.iter()) {
                    *m |= v != 0;
                }
            }
        }
        let mask = std::sync::Arc::new(mask);
        by_size.push((size, mask.clone()));
        masks.push(mask);
    }
    masks
}

/// A frame block-averaged to one level's sample spacing.
struct FrameSamples {
    /// LPS position of sample `(a, b)`: `origin + a·dx + b·dy`.
    origin: Vec3,
    dx: Vec3,
    dy: Vec3,
    nx: usize,
    ny: usize,
    /// Mean grey level of the sample's pixels; NaN outside the field of view.
    us: Vec<f32>,
}

impl FrameSamples {
    fn new(
        plane: &ImagePlane,
        pixels: &[u8],
        mask: &[bool],
        level: &UsRegisterLevel,
        dark_below: f32,
    ) -> Self {
        let [sx, sy] = plane.spacing_mm();
        let kx = ((level.spacing_mm / sx).round() as usize).max(1);
        let ky = ((level.spacing_mm / sy).round() as usize).max(1);
        let (w, h) = (plane.width_px(), plane.height_px());
        let (nx, ny) = (w / kx, h / ky);
        let mut us = vec![f32::NAN; nx * ny];
        for b in 0..ny {
            for a in 0..nx {
                let mut sum = 0u32;
                let mut inside = true;
                for j in b * ky..(b + 1) * ky {
                    for i in a * kx..(a + 1) * kx {
                        let o = i + w * j;
                        inside &= mask[o];
                        sum += u32::from(pixels[o]);
                    }
                }
                let mean = sum as f32 / (kx * ky) as f32;
                if inside && mean >= dark_below {
                    us[a + nx * b] = mean;
                }
            }
        }
        let half = |k: usize| (k as f64 - 1.0) / 2.0;
        let (step_x, step_y) = (plane.step_x_lps(), plane.step_y_lps());
        Self {
            origin: plane.pixel_to_lps([half(kx), half(ky)]),
            dx: step_x.map(|v| v * kx as f64),
            dy: step_y.map(|v| v * ky as f64),
            nx,
            ny,
            us,
        }
    }

    fn position(&self, a: usize, b: usize) -> Vec3 {
        std::array::from_fn(|r| self.origin[r] + a as f64 * self.dx[r] + b as f64 * self.dy[r])
    }
}

/// Centroid of the samples in the field of view; `None` when there are none.
fn centroid(frames: &[FrameSamples]) -> Option<Vec3> {
    let mut sum = [0.0; 3];
    let mut n = 0usize;
    for f in frames {
        for b in 0..f.ny {
            for a in 0..f.nx {
                if f.us[a + f.nx * b].is_finite() {
                    let p = f.position(a, b);
                    for r in 0..3 {
                        sum[r] += p[r];
                    }
                    n += 1;
                }
            }
        }
    }
    (n > 0).then(|| sum.map(|s| s / n as f64))
}

/// The CT resampled for one level: clamped, anti-aliased intensity and gradient
/// magnitude, both standardised, on an axis-aligned LPS grid; NaN outside the CT.
struct LevelCt {
    origin: Vec3,
    spacing: f64,
    dims: [usize; 3],
    /// `[p, g]` per voxel, x fastest.
    data: Vec<[f32; 2]>,
}

impl LevelCt {
    /// Covers the samples moved by each of `poses`, plus `margin_mm`, within the CT's
    /// bounds.
    fn new(
        ct: &Volume<f32>,
        frames: &[FrameSamples],
        poses: &[Mat4],
        level: &UsRegisterLevel,
        window: [f32; 2],
    ) -> Result<Self, UsRegisterError> {
        let (ct_lo, ct_hi) = ct.grid().bounds_lps();
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for f in frames {
            for b in 0..f.ny {
                for a in 0..f.nx {
                    if f.us[a + f.nx * b].is_finite() {
                        for pose in poses {
                            let p = transform_point(pose, f.position(a, b));
                            for r in 0..3 {
                                lo[r] = lo[r].min(p[r]);
                                hi[r] = hi[r].max(p[r]);
                            }
                        }
                    }
                }
            }
        }
        let s = level.ct_spacing_mm;
        for r in 0..3 {
            lo[r] = (lo[r] - level.margin_mm).max(ct_lo[r].min(ct_hi[r]));
            hi[r] = (hi[r] + level.margin_mm).min(ct_hi[r].max(ct_lo[r]));
        }
        if (0..3).any(|r| !positive(hi[r] - lo[r] - 2.0 * s)) {
            return Err(UsRegisterError::OffCt {
                inside_percent: 0.0,
                required_percent: 0.0,
            });
        }
        let dims: [usize; 3] = std::array::from_fn(|r| ((hi[r] - lo[r]) / s).floor() as usize + 1);
        let [nx, ny, _] = dims;
        let q = s / 4.0;
        let mut p = vec![f32::NAN; dims[0] * dims[1] * dims[2]];
        p.par_chunks_mut(nx * ny).enumerate().for_each(|(k, slab)| {
            for j in 0..ny {
                for i in 0..nx {
                    let c = [
                        lo[0] + i as f64 * s,
                        lo[1] + j as f64 * s,
                        lo[2] + k as f64 * s,
                    ];
                    slab[i + nx * j] = anti_aliased(ct, c, q, window);
                }
            }
        });
        let g = gradient_magnitude(&p, dims, s);
        let data = standardise(&p, &g)?;
        Ok(Self {
            origin: lo,
            spacing: s,
            dims,
            data,
        })
    }

    /// Trilinear `[p, g]` at a continuous index; `None` outside (or on a NaN voxel).
    #[inline(always)]
    fn sample(&self, c: Vec3) -> Option<[f32; 2]> {
        let mut base = 0usize;
        let mut f = [0.0f32; 3];
        let stride = [1, self.dims[0], self.dims[0] * self.dims[1]];
        for r in 0..3 {
            let last = (self.dims[r] - 1) as f64;
            if !(c[r] >= 0.0 && c[r] <= last) {
                return None;
            }
            let cell = (c[r] as usize).min(self.dims[r].max(2) - 2);
            f[r] = (c[r] - cell as f64) as f32;
            base += cell * stride[r];
        }
        let d = &self.data;
        let lerp =
            |a: [f32; 2], b: [f32; 2], t: f32| [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t];
        let (sx, sy, sz) = (stride[0], stride[1], stride[2]);
        let c00 = lerp(d[base], d[base + sx], f[0]);
        let c10 = lerp(d[base + sy], d[base + sx + sy], f[0]);
        let c01 = lerp(d[base + sz], d[base + sx + sz], f[0]);
        let c11 = lerp(d[base + sy + sz], d[base + sx + sy + sz], f[0]);
        let v = lerp(lerp(c00, c10, f[1]), lerp(c01, c11, f[1]), f[2]);
        (v[0].is_finite() && v[1].is_finite()).then_some(v)
    }
}

/// Mean of the clamped CT at the 8 points `c ± q` (each axis); NaN if one is outside.
fn anti_aliased(ct: &Volume<f32>, c: Vec3, q: f64, window: [f32; 2]) -> f32 {
    let mut sum = 0.0f64;
    for corner in 0..8 {
        let p = std::array::from_fn(|r| c[r] + if corner >> r & 1 == 1 { q } else { -q });
        match ct.sample_trilinear(p) {
            Some(v) => sum += (v as f32).clamp(window[0], window[1]) as f64,
            None => return f32::NAN,
        }
    }
    (sum / 8.0) as f32
}

/// Central-difference gradient magnitude; NaN on the border and next to NaN voxels.
fn gradient_magnitude(p: &[f32], dims: [usize; 3], s: f64) -> Vec<f32> {
    let [nx, ny, nz] = dims;
    let stride = [1, nx, nx * ny];
    let mut g = vec![f32::NAN; p.len()];
    let inv = (0.5 / s) as f32;
    g.par_chunks_mut(nx * ny).enumerate().for_each(|(k, slab)| {
        if k == 0 || k + 1 >= nz {
            return;
        }
        for j in 1..ny.saturating_sub(1) {
            for i in 1..nx.saturating_sub(1) {
                let o = i + nx * j + nx * ny * k;
                let mut sq = 0.0f32;
                for st in stride {
                    let d = (p[o + st] - p[o - st]) * inv;
                    sq += d * d;
                }
                slab[i + nx * j] = sq.sqrt();
            }
        }
    });
    g
}

/// `[p, g]` standardised (p to zero mean, both to unit standard deviation over the
/// voxels where both are finite).
fn standardise(p: &[f32], g: &[f32]) -> Result<Vec<[f32; 2]>, UsRegisterError> {
    let mut n = 0.0f64;
    let mut s = [0.0f64; 4];
    for (&a, &b) in p.iter().zip(g) {
        if a.is_finite() && b.is_finite() {
            let (a, b) = (f64::from(a), f64::from(b));
            n += 1.0;
            s[0] += a;
            s[1] += a * a;
            s[2] += b;
            s[3] += b * b;
        }
    }
    let degenerate = UsRegisterError::Degenerate {
        reason: "the CT has no contrast around the frames",
    };
    if n < 8.0 {
        return Err(degenerate);
    }
    let mean_p = s[0] / n;
    let sd_p = (s[1] / n - mean_p * mean_p).max(0.0).sqrt();
    let mean_g = s[2] / n;
    let sd_g = (s[3] / n - mean_g * mean_g).max(0.0).sqrt();
    if !(sd_p > 1e-6 && sd_g > 1e-9) {
        return Err(degenerate);
    }
    Ok(p.iter()
        .zip(g)
        .map(|(&a, &b)| {
            if a.is_finite() && b.is_finite() {
                [
                    ((f64::from(a) - mean_p) / sd_p) as f32,
                    (f64::from(b) / sd_g) as f32,
                ]
            } else {
                [f32::NAN; 2]
            }
        })
        .collect())
}

/// A pose's similarity.
#[derive(Debug, Clone, Copy)]
struct Score {
    lc2: f64,
    /// Samples of the field of view inside the CT.
    inside: usize,
    /// Samples of the field of view.
    total: usize,
}

/// LC² of one level's samples against its resampled CT.
struct Scorer<'a> {
    frames: &'a [FrameSamples],
    /// One integral-image buffer per frame, reused across evaluations.
    buffers: Vec<Mutex<Vec<[f64; CHANNELS]>>>,
    ct: LevelCt,
    radius: usize,
    /// Σ over patches of the ultrasound variance (the pose-independent denominator).
    weight: f64,
}

impl<'a> Scorer<'a> {
    fn new(
        ct: &Volume<f32>,
        frames: &'a [FrameSamples],
        level: &UsRegisterLevel,
        options: &UsRegisterOptions,
        poses: &[Mat4],
    ) -> Result<Self, UsRegisterError> {
        let level_ct = LevelCt::new(ct, frames, poses, level, options.ct_window_hu)?;
        let radius = level.patch_radius;
        // Every sample of the field of view counts here (a CT value of 0 stands in).
        let weights: Vec<f64> = frames
            .par_iter()
            .map_init(Vec::new, |scratch, f| {
                let us_variance =
                    |s: &[f64; CHANNELS], _: usize| (s[2] - s[1] * s[1] / s[0]) / s[0];
                patch_sums(f, radius, scratch, |_, _| Some([0.0, 0.0]), us_variance).0
            })
            .collect();
        let weight: f64 = weights.iter().sum();
        if !positive(weight) {
            return Err(UsRegisterError::Degenerate {
                reason: "the sweep has no contrast (constant grey levels)",
            });
        }
        Ok(Self {
            frames,
            buffers: frames.iter().map(|_| Mutex::new(Vec::new())).collect(),
            ct: level_ct,
            radius,
            weight,
        })
    }

    fn score(&self, t: &Mat4) -> Score {
        let ct = &self.ct;
        let inv = 1.0 / ct.spacing;
        let results: Vec<(f64, usize, usize)> = self
            .frames
            .par_iter()
            .zip(self.buffers.par_iter())
            .map(|(f, buffer)| {
                // Each frame's buffer is only ever used by this frame's job: never contended.
                let mut scratch = buffer.lock().unwrap_or_else(|e| e.into_inner());
                // Index of sample (a, b): c0 + a·da + b·db.
                let o = transform_point(t, f.origin);
                let c0: Vec3 = std::array::from_fn(|r| (o[r] - ct.origin[r]) * inv);
                let da = transform_direction(t, f.dx).map(|v| v * inv);
                let db = transform_direction(t, f.dy).map(|v| v * inv);
                let (sum, inside, total) = patch_sums(
                    f,
                    self.radius,
                    &mut scratch,
                    |a, b| {
                        let (a, b) = (a as f64, b as f64);
                        ct.sample(std::array::from_fn(|r| c0[r] + a * da[r] + b * db[r]))
                    },
                    explained_per_sample,
                );
                (sum, inside, total)
            })
            .collect();
        let (mut sum, mut inside, mut total) = (0.0, 0, 0);
        for (s, i, n) in results {
            sum += s;
            inside += i;
            total += n;
        }
        Score {
            lc2: sum / self.weight,
            inside,
            total,
        }
    }
}

/// Patch sums of one frame: calls `ct(a, b)` for each sample of the field of view, builds
/// the integral images of the channels, and adds `patch(sums, radius)` over the samples
/// whose patch holds at least half its samples. Returns that total, the samples with a
/// CT value and the samples of the field of view.
fn patch_sums(
    f: &FrameSamples,
    radius: usize,
    scratch: &mut Vec<[f64; CHANNELS]>,
    ct: impl Fn(usize, usize) -> Option<[f32; 2]>,
    patch: impl Fn(&[f64; CHANNELS], usize) -> f64,
) -> (f64, usize, usize) {
    let (nx, ny) = (f.nx, f.ny);
    let w = nx + 1;
    // Row 0 and column 0 stay zero; every other cell is written below, so a buffer of the
    // right size is reused as it is.
    if scratch.len() != w * (ny + 1) {
        scratch.clear();
        scratch.resize(w * (ny + 1), [0.0; CHANNELS]);
    }
    let mut inside = 0usize;
    let mut total = 0usize;
    for b in 0..ny {
        let mut row = [0.0f64; CHANNELS];
        for a in 0..nx {
            let u = f.us[a + nx * b];
            if u.is_finite() {
                total += 1;
                if let Some([p, g]) = ct(a, b) {
                    inside += 1;
                    let (u, p, g) = (f64::from(u), f64::from(p), f64::from(g));
                    let v = [1.0, u, u * u, p, g, p * p, g * g, p * g, u * p, u * g];
                    for c in 0..CHANNELS {
                        row[c] += v[c];
                    }
                }
            }
            let above = scratch[(a + 1) + w * b];
            let cell = &mut scratch[(a + 1) + w * (b + 1)];
            for c in 0..CHANNELS {
                cell[c] = above[c] + row[c];
            }
        }
    }
    let full = ((2 * radius + 1) * (2 * radius + 1)) as f64;
    let mut sum = 0.0;
    for b in 0..ny {
        let (b0, b1) = (b.saturating_sub(radius), (b + radius + 1).min(ny));
        for a in 0..nx {
            if !f.us[a + nx * b].is_finite() {
                continue;
            }
            let (a0, a1) = (a.saturating_sub(radius), (a + radius + 1).min(nx));
            let (p11, p01) = (&scratch[a1 + w * b1], &scratch[a0 + w * b1]);
            let (p10, p00) = (&scratch[a1 + w * b0], &scratch[a0 + w * b0]);
            let sums: [f64; CHANNELS] = std::array::from_fn(|c| p11[c] - p01[c] - p10[c] + p00[c]);
            if sums[0] >= 0.5 * full {
                sum += patch(&sums, radius);
            }
        }
    }
    (sum, inside, total)
}

/// The variance of `u` explained by the least-squares fit `u ≈ α·p + β·g + γ` over a
/// patch, per sample (`n·var(u)·LC²_patch / n`: the patch's LC² weighted by var(u)).
fn explained_per_sample(s: &[f64; CHANNELS], _radius: usize) -> f64 {
    let n = s[0];
    let (mu, mp, mg) = (s[1] / n, s[3] / n, s[4] / n);
    let suu = s[2] - s[1] * mu;
    let spp = s[5] - s[3] * mp;
    let sgg = s[6] - s[4] * mg;
    let spg = s[7] - s[3] * mg;
    let sup = s[8] - s[1] * mp;
    let sug = s[9] - s[1] * mg;
    if !positive(suu - 1e-9 * n) {
        return 0.0;
    }
    // A small ridge keeps a patch where p and g are (nearly) collinear or constant solvable.
    let ridge = 1e-6 * (spp + sgg) + 1e-12 * n;
    let (c00, c11, c01) = (spp + ridge, sgg + ridge, spg);
    let det = c00 * c11 - c01 * c01;
    if !positive(det) {
        return 0.0;
    }
    let explained = (c11 * sup * sup - 2.0 * c01 * sup * sug + c00 * sug * sug) / det;
    explained.clamp(0.0, suu) / n
}

/// The search's parameters: translation (mm) and rotation vector (degrees) about `centre`.
struct Search {
    centre: Vec3,
    evaluations: usize,
    iterations: usize,
}

/// A Nelder–Mead run's end.
struct Simplex {
    x: [f64; 6],
    value: f64,
    iterations: usize,
    converged: bool,
}

impl Search {
    /// `T(x) = R(θ)·(x − c) + c + t`.
    fn transform(&self, x: &[f64; 6]) -> Mat4 {
        let v = [x[3], x[4], x[5]].map(f64::to_radians);
        let angle = norm3(v);
        let q = if angle < 1e-15 {
            [1.0, 0.0, 0.0, 0.0]
        } else {
            let (s, c) = (angle / 2.0).sin_cos();
            [c, s * v[0] / angle, s * v[1] / angle, s * v[2] / angle]
        };
        let r = rotation_from_quaternion(q);
        let c = self.centre;
        let mut m = [[0.0; 4]; 4];
        for a in 0..3 {
            let rc: f64 = (0..3).map(|b| r[a][b] * c[b]).sum();
            m[a] = [r[a][0], r[a][1], r[a][2], c[a] + x[a] - rc];
        }
        m[3][3] = 1.0;
        m
    }

    /// −LC² at parameters `x` (what Nelder–Mead minimises).
    fn cost(&mut self, scorer: &Scorer, x: &[f64; 6]) -> f64 {
        self.evaluations += 1;
        let lc2 = scorer.score(&self.transform(x)).lc2;
        if lc2.is_finite() {
            -lc2
        } else {
            0.0
        }
    }

    /// The first level's grid (`{−h, 0, h}` per parameter, a half-width of 0 keeping the
    /// parameter at 0), best first.
    fn grid(&mut self, scorer: &Scorer, half: [f64; 6]) -> Vec<(f64, [f64; 6])> {
        let mut points = vec![[0.0; 6]];
        for (k, &h) in half.iter().enumerate() {
            if h > 0.0 {
                points = points
                    .iter()
                    .flat_map(|p| {
                        [-h, 0.0, h].map(|v| {
                            let mut q = *p;
                            q[k] = v;
                            q
                        })
                    })
                    .collect();
            }
        }
        let mut scored: Vec<(f64, [f64; 6])> = points
            .into_iter()
            .map(|p| (self.cost(scorer, &p), p))
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        scored
    }

    /// Nelder–Mead from `x0` with the initial steps `step`, adaptive coefficients
    /// (Gao & Han 2012) for 6 dimensions.
    fn refine(
        &mut self,
        scorer: &Scorer,
        x0: [f64; 6],
        step: [f64; 6],
        tolerance: f64,
        max_evaluations: usize,
    ) -> Simplex {
        const N: usize = 6;
        let nf = N as f64;
        let (alpha, beta, gamma, delta) = (1.0, 1.0 + 2.0 / nf, 0.75 - 0.5 / nf, 1.0 - 1.0 / nf);
        let mut pts: Vec<[f64; N]> = vec![x0];
        for k in 0..N {
            let mut p = x0;
            p[k] += step[k];
            pts.push(p);
        }
        let mut vals: Vec<f64> = pts.iter().map(|p| self.cost(scorer, p)).collect();
        let mut evals = N + 1;
        let mut iterations = 0;
        let mut converged = false;
        while evals < max_evaluations {
            let mut order: Vec<usize> = (0..=N).collect();
            order.sort_by(|&a, &b| vals[a].total_cmp(&vals[b]));
            pts = order.iter().map(|&i| pts[i]).collect();
            vals = order.iter().map(|&i| vals[i]).collect();
            let size = pts[1..]
                .iter()
                .map(|p| (0..N).map(|k| (p[k] - pts[0][k]).abs()).fold(0.0, f64::max))
                .fold(0.0, f64::max);
            if size < tolerance {
                converged = true;
                break;
            }
            iterations += 1;
            let centroid: [f64; N] =
                std::array::from_fn(|k| pts[..N].iter().map(|p| p[k]).sum::<f64>() / nf);
            let along = |t: f64, worst: &[f64; N]| -> [f64; N] {
                std::array::from_fn(|k| centroid[k] + t * (worst[k] - centroid[k]))
            };
            let worst = pts[N];
            let xr = along(-alpha, &worst);
            let fr = self.cost(scorer, &xr);
            evals += 1;
            if fr < vals[0] {
                let xe = along(-alpha * beta, &worst);
                let fe = self.cost(scorer, &xe);
                evals += 1;
                (pts[N], vals[N]) = if fe < fr { (xe, fe) } else { (xr, fr) };
            } else if fr < vals[N - 1] {
                (pts[N], vals[N]) = (xr, fr);
            } else {
                let (xc, fc) = if fr < vals[N] {
                    let xc = along(-alpha * gamma, &worst);
                    (xc, self.cost(scorer, &xc))
                } else {
                    let xc = along(gamma, &worst);
                    (xc, self.cost(scorer, &xc))
                };
                evals += 1;
                if fc < vals[N].min(fr) {
                    (pts[N], vals[N]) = (xc, fc);
                } else {
                    for k in 1..=N {
                        pts[k] =
                            std::array::from_fn(|d| pts[0][d] + delta * (pts[k][d] - pts[0][d]));
                        vals[k] = self.cost(scorer, &pts[k]);
                    }
                    evals += N;
                }
            }
        }
        let best = (0..=N)
            .min_by(|&a, &b| vals[a].total_cmp(&vals[b]))
            .unwrap_or(0);
        self.iterations += iterations;
        Simplex {
            x: pts[best],
            value: vals[best],
            iterations,
            converged,
        }
    }
}

/// The first level's starts: the best `search_starts` points of the translation grid (the
/// tracked pose alone when the grid is off).
fn grid_starts(scorer: &Scorer, search: &mut Search, options: &UsRegisterOptions) -> Vec<[f64; 6]> {
    let (t, r) = (options.translation_search_mm, options.rotation_search_deg);
    if t <= 0.0 && r <= 0.0 {
        return vec![[0.0; 6]];
    }
    search
        .grid(scorer, [t, t, t, r, r, r])
        .into_iter()
        .take(options.search_starts)
        .map(|(_, p)| p)
        .collect()
}

/// Refuses a start with too few samples on the CT.
fn check_inside(
    scorer: &Scorer,
    start: &Mat4,
    options: &UsRegisterOptions,
) -> Result<(), UsRegisterError> {
    let s = scorer.score(start);
    let fraction = s.inside as f64 / s.total.max(1) as f64;
    let patches_possible = s.inside >= MIN_PATCHES;
    if fraction < options.min_inside_fraction || !patches_possible {
        return Err(UsRegisterError::OffCt {
            inside_percent: 100.0 * fraction,
            required_percent: 100.0 * options.min_inside_fraction,
        });
    }
    Ok(())
}

/// `x > 0`, false for NaN.
fn positive(x: f64) -> bool {
    x > 0.0
}

fn norm3(v: Vec3) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinhole_volume::math::mat4_mul;
    use pinhole_volume::Grid;

    /// Gaussian blobs `(centre, sigma_mm, amplitude_hu)` on a 40 HU background.
    fn blobs() -> Vec<(Vec3, f64, f64)> {
        let mut state = 12345u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..14)
            .map(|k| {
                let centre = [0, 1, 2].map(|_| -45.0 + 90.0 * next());
                let sigma = 5.0 + 7.0 * next();
                let sign = if k % 3 == 0 { -1.0 } else { 1.0 };
                (centre, sigma, sign * (120.0 + 200.0 * next()))
            })
            .collect()
    }

    /// The blob CT's value and gradient magnitude at `x`, in closed form.
    fn ct_at(blobs: &[(Vec3, f64, f64)], x: Vec3) -> (f64, f64) {
        let mut value = 40.0;
        let mut grad = [0.0; 3];
        for &(c, s, a) in blobs {
            let d: Vec3 = std::array::from_fn(|r| x[r] - c[r]);
            let e = a * (-(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]) / (2.0 * s * s)).exp();
            value += e;
            for r in 0..3 {
                grad[r] -= e * d[r] / (s * s);
            }
        }
        (value, norm3(grad))
    }

    /// A 2 mm CT of the blobs, 128 mm wide, centred on the origin.
    fn blob_ct(blobs: &[(Vec3, f64, f64)]) -> Volume<f32> {
        let grid = Grid::axis_aligned([64; 3], [2.0; 3], [-63.0; 3]).unwrap();
        let data = (0..grid.voxel_count())
            .map(|o| {
                let x = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
                ct_at(blobs, x).0 as f32
            })
            .collect();
        Volume::new(grid, data).unwrap()
    }

    /// A rigid transform: rotation of `deg` about the unit `axis` through `centre`, then
    /// a shift.
    fn rigid(axis: Vec3, deg: f64, centre: Vec3, shift: Vec3) -> Mat4 {
        let (s, c) = (deg.to_radians() / 2.0).sin_cos();
        let r = rotation_from_quaternion([c, s * axis[0], s * axis[1], s * axis[2]]);
        let mut m = IDENTITY4;
        for a in 0..3 {
            let rc: f64 = (0..3).map(|b| r[a][b] * centre[b]).sum();
            m[a] = [r[a][0], r[a][1], r[a][2], centre[a] - rc + shift[a]];
        }
        m
    }

    /// True planes of a 3-frame sweep (1 mm pixels, 100 × 80), tilted about the x axis.
    fn true_planes() -> Vec<Mat4> {
        [-12.0, 0.0, 12.0]
            .iter()
            .map(|&deg| {
                // Image x along LPS x, image y along the beam (posterior, tilted towards S).
                let tilt = rigid([1.0, 0.0, 0.0], deg, [0.0, -40.0, 0.0], [0.0; 3]);
                let image = [
                    [1.0, 0.0, 0.0, -49.5],
                    [0.0, 0.0, 0.0, -40.0],
                    [0.0, 0.0, 0.0, 0.0],
                    [0.0, 0.0, 0.0, 1.0],
                ];
                let mut m = image;
                // Column y (the beam): +y LPS.
                m[1][1] = 1.0;
                // Column z: the normal (not used by pixels).
                m[2][2] = 1.0;
                mat4_mul(&tilt, &m)
            })
            .collect()
    }

    /// Frames seen by a probe at the true planes, placed at `error · plane`: grey = a
    /// linear function of the CT value and its gradient magnitude, plus noise; 0 outside a
    /// fan.
    fn frames(blobs: &[(Vec3, f64, f64)], error: &Mat4) -> Vec<(ImagePlane, Vec<u8>)> {
        let mut state = 99u64;
        true_planes()
            .iter()
            .map(|m| {
                let truth = ImagePlane::new(*m, 100, 80).unwrap();
                let mut pixels = vec![0u8; 100 * 80];
                for j in 0..80 {
                    for i in 0..100 {
                        // Fan: ±35° from the apex 10 mm above the top centre, 15–90 mm.
                        let (dx, dy) = (i as f64 - 49.5, j as f64 + 10.0);
                        let r = dx.hypot(dy);
                        if dx.atan2(dy).abs() > 35f64.to_radians() || !(15.0..90.0).contains(&r) {
                            continue;
                        }
                        let (v, g) = ct_at(blobs, truth.pixel_to_lps([i as f64, j as f64]));
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        let noise = (state >> 40) as f64 / (1u64 << 24) as f64 - 0.5;
                        let grey = 60.0 + 0.25 * v + 4.0 * g + 30.0 * noise;
                        pixels[i + 100 * j] = grey.clamp(1.0, 255.0) as u8;
                    }
                }
                (
                    ImagePlane::new(mat4_mul(error, m), 100, 80).unwrap(),
                    pixels,
                )
            })
            .collect()
    }

    fn as_input(frames: &[(ImagePlane, Vec<u8>)]) -> Vec<(ImagePlane, &[u8])> {
        frames
            .iter()
            .map(|(p, v)| (p.clone(), v.as_slice()))
            .collect()
    }

    /// Largest distance between `a·x` and `b·x` over the frames' fan corners.
    fn worst_distance_mm(a: &Mat4, b: &Mat4, frames: &[(ImagePlane, Vec<u8>)]) -> f64 {
        let mut worst = 0.0f64;
        for (plane, _) in frames {
            for pixel in [[20.0, 70.0], [80.0, 70.0], [50.0, 10.0], [50.0, 50.0]] {
                let x = plane.pixel_to_lps(pixel);
                let (p, q) = (transform_point(a, x), transform_point(b, x));
                worst = worst.max(norm3(std::array::from_fn(|r| p[r] - q[r])));
            }
        }
        worst
    }

    fn test_options() -> UsRegisterOptions {
        UsRegisterOptions {
            translation_search_mm: 6.0,
            search_starts: 2,
            max_evaluations: 400,
            ..UsRegisterOptions::default()
        }
    }

    #[test]
    fn a_known_offset_is_recovered() {
        let blobs = blobs();
        let ct = blob_ct(&blobs);
        // 7 mm off and 6° about an oblique axis through the sweep.
        let axis = [0.6, 0.0, 0.8];
        let error = rigid(axis, 6.0, [0.0, 0.0, 0.0], [5.0, -3.0, 4.0]);
        let frames = frames(&blobs, &error);
        let result = register_sweep(&ct, &as_input(&frames), &test_options()).unwrap();
        // The correction undoes the error: T · error = identity at the frames.
        let undone = mat4_mul(&result.correction_lps, &error);
        let residual = worst_distance_mm(&undone, &IDENTITY4, &frames);
        let before = worst_distance_mm(&error, &IDENTITY4, &frames);
        assert!(before > 8.0, "error at the frames {before} mm");
        assert!(
            residual < 1.0,
            "residual {residual} mm (before {before} mm)"
        );
        assert!(result.lc2_final > result.lc2_initial);
        assert!(result.lc2_final > 0.5 && result.lc2_final <= 1.0);
        assert_eq!(result.frames_used, 3);
        // A proper rotation.
        let r = result.correction_lps;
        let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
            - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
            + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
        assert!((det - 1.0).abs() < 1e-9);
        assert!(
            (result.rotation_deg - 6.0).abs() < 1.0,
            "{}",
            result.rotation_deg
        );
    }

    #[test]
    fn the_true_pose_stays_put() {
        let blobs = blobs();
        let ct = blob_ct(&blobs);
        let frames = frames(&blobs, &IDENTITY4);
        let options = UsRegisterOptions {
            levels: vec![UsRegisterOptions::default().levels[1].clone()],
            translation_search_mm: 0.0,
            ..test_options()
        };
        let result = register_sweep(&ct, &as_input(&frames), &options).unwrap();
        let moved = worst_distance_mm(&result.correction_lps, &IDENTITY4, &frames);
        assert!(moved < 0.7, "moved {moved} mm");
        assert!(result.lc2_final >= result.lc2_initial);
    }

    #[test]
    fn a_patch_that_is_a_linear_function_of_ct_and_gradient_scores_one() {
        // u = 2p − 3g + 5 over 9 samples: the regression explains all of var(u).
        let mut s = [0.0; CHANNELS];
        let (mut su, mut suu) = (0.0, 0.0);
        for k in 0..9 {
            let (p, g) = (k as f64 * 0.7 - 2.0, ((k * k) % 5) as f64);
            let u = 2.0 * p - 3.0 * g + 5.0;
            let v = [1.0, u, u * u, p, g, p * p, g * g, p * g, u * p, u * g];
            for c in 0..CHANNELS {
                s[c] += v[c];
            }
            su += u;
            suu += u * u;
        }
        let variance = suu / 9.0 - (su / 9.0) * (su / 9.0);
        let explained = explained_per_sample(&s, 1);
        assert!(
            (explained - variance).abs() < 1e-5 * variance,
            "{explained} vs {variance}"
        );
        // u unrelated to p and g (orthogonal by construction): nothing explained.
        let mut t = [0.0; CHANNELS];
        for (u, p, g) in [
            (1.0, 1.0, 1.0),
            (-1.0, 1.0, 1.0),
            (1.0, -1.0, 0.0),
            (-1.0, -1.0, 0.0),
        ] {
            let v = [1.0, u, u * u, p, g, p * p, g * g, p * g, u * p, u * g];
            for c in 0..CHANNELS {
                t[c] += v[c];
            }
        }
        assert!(explained_per_sample(&t, 1).abs() < 1e-12);
    }

    #[test]
    fn frames_are_chosen_evenly() {
        assert_eq!(choose_frames(3, 8), vec![0, 1, 2]);
        assert_eq!(choose_frames(9, 3), vec![0, 4, 8]);
        assert_eq!(choose_frames(10, 1), vec![5]);
    }

    #[test]
    fn bad_input_is_refused() {
        let blobs = blobs();
        let ct = blob_ct(&blobs);
        let options = test_options();
        assert_eq!(
            register_sweep(&ct, &[], &options).unwrap_err(),
            UsRegisterError::NoFrames
        );
        let sweep = frames(&blobs, &IDENTITY4);
        let mut input = as_input(&sweep);
        input[1].1 = &sweep[1].1[..10];
        assert!(matches!(
            register_sweep(&ct, &input, &options).unwrap_err(),
            UsRegisterError::PixelCount {
                index: 1,
                found: 10,
                ..
            }
        ));
        let tiny =
            ImagePlane::from_steps([0.0; 3], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], 1, 1).unwrap();
        let many = vec![(tiny, &[7u8][..]); MAX_FRAMES + 1];
        assert_eq!(
            register_sweep(&ct, &many, &options).unwrap_err(),
            UsRegisterError::TooManyFrames {
                frames: MAX_FRAMES + 1
            }
        );
        let blank: Vec<(ImagePlane, Vec<u8>)> = sweep
            .iter()
            .map(|(p, v)| (p.clone(), vec![0; v.len()]))
            .collect();
        assert_eq!(
            register_sweep(&ct, &as_input(&blank), &options).unwrap_err(),
            UsRegisterError::BlankFrames
        );
        // A metre to the patient's left.
        let far = frames(
            &blobs,
            &rigid([1.0, 0.0, 0.0], 0.0, [0.0; 3], [1000.0, 0.0, 0.0]),
        );
        assert!(matches!(
            register_sweep(&ct, &as_input(&far), &options).unwrap_err(),
            UsRegisterError::OffCt { .. }
        ));
        let no_levels = UsRegisterOptions {
            levels: Vec::new(),
            ..test_options()
        };
        assert!(matches!(
            register_sweep(&ct, &as_input(&sweep), &no_levels).unwrap_err(),
            UsRegisterError::BadOption { name: "levels", .. }
        ));
        // A uniform CT has no contrast to register to.
        let flat = Volume::filled(ct.grid().clone(), 40.0f32);
        assert!(matches!(
            register_sweep(&flat, &as_input(&sweep), &options).unwrap_err(),
            UsRegisterError::Degenerate { .. }
        ));
    }
}
