//! Image similarity between the X-ray and a DRR: normalised cross-correlation (NCC),
//! gradient NCC (Sobel) and patch NCC, with the fixed image prepared once per level.

use pinhole_xray::Image;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The similarity measure maximised by the registration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    /// NCC of the intensities (invariant to gain and offset).
    Ncc,
    /// Mean of the NCCs of the horizontal and vertical Sobel gradients: edges drive it,
    /// so smooth differences (scatter, heel effect, soft-tissue model) matter less.
    GradientNcc,
    /// Mean NCC over square patches of `size` pixels (local gain and offset).
    PatchNcc { size: usize },
    /// `(NCC + gradient NCC) / 2`.
    NccAndGradient,
}

impl Similarity {
    /// Parses `ncc`, `gradient-ncc`, `patch-ncc[:N]`, `ncc+gradient`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ncc" => Some(Self::Ncc),
            "gradient-ncc" | "gncc" => Some(Self::GradientNcc),
            "ncc+gradient" => Some(Self::NccAndGradient),
            _ => {
                let rest = s.strip_prefix("patch-ncc")?;
                let size = match rest.strip_prefix(':') {
                    Some(n) => n.parse().ok()?,
                    None if rest.is_empty() => 8,
                    None => return None,
                };
                (size >= 3).then_some(Self::PatchNcc { size })
            }
        }
    }
}

/// Zero-mean, unit-norm copy of `values` (all zeros when constant).
fn normalise(values: &[f32]) -> Vec<f32> {
    let n = values.len().max(1) as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let ss: f64 = values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum();
    let inv = if ss > 0.0 { 1.0 / ss.sqrt() } else { 0.0 };
    values
        .iter()
        .map(|&v| ((f64::from(v) - mean) * inv) as f32)
        .collect()
}

/// NCC of `moving` with an already normalised `fixed_n`.
fn ncc_prepared(fixed_n: &[f32], moving: &[f32]) -> f64 {
    let n = moving.len().max(1) as f64;
    let mean = moving.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut dot, mut ss) = (0.0f64, 0.0f64);
    for (&f, &m) in fixed_n.iter().zip(moving) {
        let d = f64::from(m) - mean;
        dot += f64::from(f) * d;
        ss += d * d;
    }
    if ss > 0.0 {
        dot / ss.sqrt()
    } else {
        0.0
    }
}

/// Normalised cross-correlation of two equally sized images, in [−1, 1].
pub fn ncc(a: &Image, b: &Image) -> f64 {
    ncc_prepared(&normalise(&a.data), &b.data)
}

/// Sobel gradients `(gx, gy)` over the interior (borders dropped), row-major
/// `(w − 2) × (h − 2)`.
pub fn sobel(image: &Image) -> (Vec<f32>, Vec<f32>) {
    let (w, h) = (image.width, image.height);
    if w < 3 || h < 3 {
        return (Vec::new(), Vec::new());
    }
    let d = &image.data;
    let at = |c: usize, r: usize| d[r * w + c];
    let mut gx = Vec::with_capacity((w - 2) * (h - 2));
    let mut gy = Vec::with_capacity((w - 2) * (h - 2));
    for r in 1..h - 1 {
        for c in 1..w - 1 {
            gx.push(
                (at(c + 1, r - 1) + 2.0 * at(c + 1, r) + at(c + 1, r + 1))
                    - (at(c - 1, r - 1) + 2.0 * at(c - 1, r) + at(c - 1, r + 1)),
            );
            gy.push(
                (at(c - 1, r + 1) + 2.0 * at(c, r + 1) + at(c + 1, r + 1))
                    - (at(c - 1, r - 1) + 2.0 * at(c, r - 1) + at(c + 1, r - 1)),
            );
        }
    }
    (gx, gy)
}

/// Gradient NCC: mean of the NCCs of the Sobel x and y gradients.
pub fn gradient_ncc(a: &Image, b: &Image) -> f64 {
    Prepared::new(a, Similarity::GradientNcc).score(b)
}

/// The fixed image prepared for one similarity (normalised once, scored many times).
#[derive(Debug, Clone)]
pub struct Prepared {
    kind: Similarity,
    width: usize,
    height: usize,
    fixed_n: Vec<f32>,
    gx_n: Vec<f32>,
    gy_n: Vec<f32>,
    patches: Vec<(Vec<usize>, Vec<f32>)>,
}

impl Prepared {
    pub fn new(fixed: &Image, kind: Similarity) -> Self {
        let (gx, gy) = sobel(fixed);
        let patches = match kind {
            Similarity::PatchNcc { size } => patch_indices(fixed.width, fixed.height, size)
                .into_iter()
                .filter_map(|idx| {
                    let vals: Vec<f32> = idx.iter().map(|&i| fixed.data[i]).collect();
                    let n = normalise(&vals);
                    n.iter().any(|v| *v != 0.0).then_some((idx, n))
                })
                .collect(),
            _ => Vec::new(),
        };
        Self {
            kind,
            width: fixed.width,
            height: fixed.height,
            fixed_n: normalise(&fixed.data),
            gx_n: normalise(&gx),
            gy_n: normalise(&gy),
            patches,
        }
    }

    /// Similarity of `moving` (same size as the fixed image); higher is better, ≤ 1.
    pub fn score(&self, moving: &Image) -> f64 {
        if moving.width != self.width || moving.height != self.height {
            return f64::NEG_INFINITY;
        }
        let grad = || {
            let (gx, gy) = sobel(moving);
            0.5 * (ncc_prepared(&self.gx_n, &gx) + ncc_prepared(&self.gy_n, &gy))
        };
        match self.kind {
            Similarity::Ncc => ncc_prepared(&self.fixed_n, &moving.data),
            Similarity::GradientNcc => grad(),
            Similarity::NccAndGradient => {
                0.5 * (ncc_prepared(&self.fixed_n, &moving.data) + grad())
            }
            Similarity::PatchNcc { .. } => {
                if self.patches.is_empty() {
                    return 0.0;
                }
                let sum: f64 = self
                    .patches
                    .iter()
                    .map(|(idx, fixed_n)| {
                        let vals: Vec<f32> = idx.iter().map(|&i| moving.data[i]).collect();
                        ncc_prepared(fixed_n, &vals)
                    })
                    .sum();
                sum / self.patches.len() as f64
            }
        }
    }
}

impl Prepared {
    /// The least-squares form of the score: the fixed image's normalised blocks (the
    /// image, its two gradients, or its patches) minus the moving image's, stacked, so
    /// that `score = 1 − ‖r‖² / (2·blocks)` (a block of constant moving values counts as
    /// NCC 0 in [`Prepared::score`] but 0.5 here). `None` when the sizes differ.
    pub fn residual(&self, moving: &Image) -> Option<Vec<f32>> {
        if moving.width != self.width || moving.height != self.height {
            return None;
        }
        let diff = |fixed_n: &[f32], moving: &[f32], weight: f32, out: &mut Vec<f32>| {
            out.extend(
                fixed_n
                    .iter()
                    .zip(normalise(moving))
                    .map(|(f, m)| weight * (f - m)),
            );
        };
        let mut r = Vec::new();
        let grad = |r: &mut Vec<f32>| {
            let (gx, gy) = sobel(moving);
            diff(&self.gx_n, &gx, 1.0, r);
            diff(&self.gy_n, &gy, 1.0, r);
        };
        match self.kind {
            Similarity::Ncc => diff(&self.fixed_n, &moving.data, 1.0, &mut r),
            Similarity::GradientNcc => grad(&mut r),
            Similarity::NccAndGradient => {
                // The intensity NCC weighs as much as the two gradients together.
                diff(
                    &self.fixed_n,
                    &moving.data,
                    std::f32::consts::SQRT_2,
                    &mut r,
                );
                grad(&mut r);
            }
            Similarity::PatchNcc { .. } => {
                for (idx, fixed_n) in &self.patches {
                    let vals: Vec<f32> = idx.iter().map(|&i| moving.data[i]).collect();
                    diff(fixed_n, &vals, 1.0, &mut r);
                }
            }
        }
        Some(r)
    }

    /// How many normalised blocks [`Prepared::residual`] stacks, weighted (the intensity
    /// block of [`Similarity::NccAndGradient`] counts twice).
    pub fn blocks(&self) -> usize {
        match self.kind {
            Similarity::Ncc => 1,
            Similarity::GradientNcc => 2,
            Similarity::NccAndGradient => 4,
            Similarity::PatchNcc { .. } => self.patches.len(),
        }
    }
}

/// Pixel indices of the non-overlapping `size × size` patches covering the image.
fn patch_indices(w: usize, h: usize, size: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let size = size.max(1);
    for r0 in (0..h.saturating_sub(size - 1)).step_by(size) {
        for c0 in (0..w.saturating_sub(size - 1)).step_by(size) {
            out.push(
                (r0..r0 + size)
                    .flat_map(|r| (c0..c0 + size).map(move |c| r * w + c))
                    .collect(),
            );
        }
    }
    out
}

/// Area-average binning by `factor` (the remainder rows/columns are dropped).
pub fn bin(image: &Image, factor: usize) -> Image {
    let f = factor.max(1);
    if f == 1 {
        return image.clone();
    }
    let (w, h) = (image.width / f, image.height / f);
    let mut data = vec![0.0f32; w * h];
    let inv = 1.0 / (f * f) as f32;
    for r in 0..h {
        for c in 0..w {
            let mut s = 0.0f32;
            for rr in r * f..(r + 1) * f {
                let row = &image.data[rr * image.width + c * f..rr * image.width + (c + 1) * f];
                s += row.iter().sum::<f32>();
            }
            data[r * w + c] = s * inv;
        }
    }
    Image {
        width: w,
        height: h,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(w: usize, h: usize, f: impl Fn(usize, usize) -> f32) -> Image {
        Image {
            width: w,
            height: h,
            data: (0..h)
                .flat_map(|r| (0..w).map(move |c| (r, c)))
                .map(|(r, c)| f(c, r))
                .collect(),
        }
    }

    #[test]
    fn ncc_is_gain_and_offset_invariant_and_sign_sensitive() {
        let a = img(16, 12, |c, r| ((c * 7 + r * 3) % 11) as f32);
        let b = img(16, 12, |c, r| 3.0 * ((c * 7 + r * 3) % 11) as f32 + 5.0);
        let n = img(16, 12, |c, r| -(((c * 7 + r * 3) % 11) as f32));
        assert!((ncc(&a, &b) - 1.0).abs() < 1e-6);
        assert!((ncc(&a, &n) + 1.0).abs() < 1e-6);
        assert!((gradient_ncc(&a, &b) - 1.0).abs() < 1e-6);
        assert!((gradient_ncc(&a, &n) + 1.0).abs() < 1e-6);
        let p = Prepared::new(&a, Similarity::PatchNcc { size: 4 });
        assert!((p.score(&b) - 1.0).abs() < 1e-5);
    }

    /// `score = 1 − ‖r‖² / (2·blocks)` for every measure, on unrelated textured images.
    #[test]
    fn residual_is_the_least_squares_form_of_the_score() {
        let fixed = img(24, 20, |c, r| {
            ((c * 7 + r * 13) % 11) as f32 + (c as f32 * 0.3).sin()
        });
        let moving = img(24, 20, |c, r| {
            ((c * 5 + r * 3) % 7) as f32 * 0.7 + r as f32 * 0.1
        });
        for kind in [
            Similarity::Ncc,
            Similarity::GradientNcc,
            Similarity::NccAndGradient,
            Similarity::PatchNcc { size: 6 },
        ] {
            let p = Prepared::new(&fixed, kind);
            let r = p.residual(&moving).unwrap();
            let ss: f64 = r.iter().map(|&v| f64::from(v).powi(2)).sum();
            let from_residual = 1.0 - ss / (2.0 * p.blocks() as f64);
            let score = p.score(&moving);
            assert!(
                (from_residual - score).abs() < 1e-5,
                "{kind:?}: {from_residual} vs {score}"
            );
            assert!(
                score.abs() < 0.9,
                "{kind:?}: the images are unrelated ({score})"
            );
        }
        let small = img(23, 20, |_, _| 0.0);
        assert!(Prepared::new(&fixed, Similarity::Ncc)
            .residual(&small)
            .is_none());
    }

    #[test]
    fn binning_averages_blocks() {
        let a = img(5, 4, |c, r| (c + 10 * r) as f32);
        let b = bin(&a, 2);
        assert_eq!((b.width, b.height), (2, 2));
        assert_eq!(b.data[0], (0.0 + 1.0 + 10.0 + 11.0) / 4.0);
        assert_eq!(b.data[3], (22.0 + 23.0 + 32.0 + 33.0) / 4.0);
    }

    #[test]
    fn parses_names() {
        assert_eq!(Similarity::parse("ncc"), Some(Similarity::Ncc));
        assert_eq!(
            Similarity::parse("patch-ncc:12"),
            Some(Similarity::PatchNcc { size: 12 })
        );
        assert_eq!(
            Similarity::parse("patch-ncc"),
            Some(Similarity::PatchNcc { size: 8 })
        );
        assert_eq!(Similarity::parse("nope"), None);
    }
}
