//! From line integrals to what a fluoroscopy monitor shows, with coloured overlays.

use rayon::prelude::*;

use crate::geometry::Projection;
use crate::render::Image;

/// Display window over line integrals, from percentiles of the non-zero pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub low: f32,
    pub high: f32,
}

impl Window {
    /// The `low_pct`…`high_pct` percentiles of pixels that saw any attenuation.
    pub fn from_percentiles(image: &Image, low_pct: f64, high_pct: f64) -> Self {
        let mut values: Vec<f32> = image.data.iter().copied().filter(|v| *v > 0.0).collect();
        if values.is_empty() {
            return Self {
                low: 0.0,
                high: 1.0,
            };
        }
        let last = values.len() - 1;
        let rank = |p: f64| ((p / 100.0) * last as f64).round() as usize;
        let mut at = |p: f64| *values.select_nth_unstable_by(rank(p), f32::total_cmp).1;
        let (low, high) = (at(low_pct), at(high_pct));
        Self {
            low,
            high: if high > low { high } else { low + 1.0 },
        }
    }
}

/// 8-bit grey image as a fluoroscopy monitor shows it: transmitted intensity
/// `exp(−∫μ)`, log-compressed (which gives back `∫μ`), windowed, so dense structures
/// (bone, contrast) are dark and air is bright.
pub fn fluoroscopy_gray(line_integrals: &Image, window: Window) -> Vec<u8> {
    let span = window.high - window.low;
    line_integrals
        .data
        .iter()
        .map(|&l| {
            let t = ((l - window.low) / span).clamp(0.0, 1.0);
            (255.0 * (1.0 - t)).round() as u8
        })
        .collect()
}

/// An overlay: per-pixel path length (mm) through a structure, drawn in `color_rgb`.
pub struct Overlay<'a> {
    pub lengths_mm: &'a Image,
    pub color_rgb: [u8; 3],
}

/// RGB image: `gray` with the path length through each labelled organ `(id, colour)` of
/// `labels` tinted in its colour (the organ outlines every Pinhole picture shows).
pub fn compose_with_organs(
    gray: &[u8],
    labels: &pinhole_volume::Volume<u16>,
    organs: &[(u16, [u8; 3])],
    projection: &crate::Projection,
) -> Vec<u8> {
    let ids: Vec<u16> = organs.iter().map(|(id, _)| *id).collect();
    let lengths = crate::project_labels(labels, &ids, projection);
    let overlays: Vec<Overlay> = lengths
        .iter()
        .zip(organs)
        .map(|(img, (_, color))| Overlay {
            lengths_mm: img,
            color_rgb: *color,
        })
        .collect();
    compose_rgb(gray, &overlays)
}

/// RGB image: the grey fluoroscopy with each overlay blended where its path length is
/// non-zero (opacity grows with the length, up to 60 %).
pub fn compose_rgb(gray: &[u8], overlays: &[Overlay]) -> Vec<u8> {
    match overlays.first() {
        Some(first) => {
            let (w, h) = (first.lengths_mm.width, first.lengths_mm.height);
            compose_rgb_upsampled(gray, overlays, 1, w, h)
        }
        None => gray.iter().flat_map(|&g| [g; 3]).collect(),
    }
}

/// [`compose_rgb`] for overlays computed on a detector `factor` times coarser than the
/// `width` × `height` grey image (see [`crate::coarse::coarse_projection`]): the blend is
/// worked out per coarse pixel and upsampled once, whatever the number of overlays.
pub fn compose_rgb_upsampled(
    gray: &[u8],
    overlays: &[Overlay],
    factor: usize,
    width: usize,
    height: usize,
) -> Vec<u8> {
    let Some(first) = overlays.first() else {
        return gray.iter().flat_map(|&g| [g; 3]).collect();
    };
    // Successive blends v ← v·(1 − α) + c·α fold into v ← v·keep + add per pixel.
    let n = first.lengths_mm.data.len();
    let mut keep = vec![1.0f32; n];
    let mut add = [vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]];
    for overlay in overlays {
        let max = overlay
            .lengths_mm
            .data
            .iter()
            .copied()
            .fold(0.0f32, f32::max);
        if max <= 0.0 {
            continue;
        }
        for (p, &len) in overlay.lengths_mm.data.iter().enumerate().take(n) {
            if len <= 0.0 {
                continue;
            }
            let alpha = 0.25 + 0.35 * (len / max).min(1.0);
            keep[p] *= 1.0 - alpha;
            for c in 0..3 {
                add[c][p] = add[c][p] * (1.0 - alpha) + f32::from(overlay.color_rgb[c]) * alpha;
            }
        }
    }
    let blend = |v: u8, keep: f32, add: [f32; 3]| {
        let v = f32::from(v) * keep;
        add.map(|a| (v + a).round().clamp(0.0, 255.0) as u8)
    };
    if factor <= 1 {
        return gray
            .iter()
            .enumerate()
            .flat_map(|(p, &v)| blend(v, keep[p], [add[0][p], add[1][p], add[2][p]]))
            .collect();
    }
    // One pass: each output pixel interpolates the coarse blend (bilinear, edges clamped).
    let coarse_width = first.lengths_mm.width;
    let columns = crate::coarse::taps(width, coarse_width, factor);
    let rows = crate::coarse::taps(height, first.lengths_mm.height, factor);
    let mut rgb = vec![0u8; 3 * width * height];
    rgb.par_chunks_mut(3 * width.max(1))
        .zip(gray.par_chunks(width.max(1)))
        .zip(&rows)
        .for_each(|((line, gray_row), &(r0, r1, fr))| {
            let (top, bottom) = (r0 * coarse_width, r1 * coarse_width);
            for ((out, &v), &(c0, c1, fc)) in line.chunks_mut(3).zip(gray_row).zip(&columns) {
                let sample = |layer: &[f32]| {
                    let upper = layer[top + c0] + (layer[top + c1] - layer[top + c0]) * fc;
                    let lower = layer[bottom + c0] + (layer[bottom + c1] - layer[bottom + c0]) * fc;
                    upper + (lower - upper) * fr
                };
                let add = [sample(&add[0]), sample(&add[1]), sample(&add[2])];
                out.copy_from_slice(&blend(v, sample(&keep), add));
            }
        });
    rgb
}

/// Draws a line segment (pixel coordinates) into an RGB image, clipped to it.
pub fn draw_line(
    rgb: &mut [u8],
    width: usize,
    height: usize,
    from: (f64, f64),
    to: (f64, f64),
    color: [u8; 3],
) {
    let steps =
        ((to.0 - from.0).abs().max((to.1 - from.1).abs()).ceil() as usize).clamp(1, 1 << 16);
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let (x, y) = (from.0 + (to.0 - from.0) * t, from.1 + (to.1 - from.1) * t);
        let (c, r) = (x.round(), y.round());
        if c >= 0.0 && r >= 0.0 && (c as usize) < width && (r as usize) < height {
            let n = 3 * (r as usize * width + c as usize);
            rgb[n..n + 3].copy_from_slice(&color);
        }
    }
}

/// Draws a polyline given in LPS mm, projected by `projection`, into an RGB image of the
/// projection's size; segments with an end behind the source are skipped. `width_px` 1
/// draws one line, 2 adds copies one pixel right and one pixel down.
pub fn draw_projected_polyline(
    rgb: &mut [u8],
    projection: &Projection,
    points_lps: &[[f64; 3]],
    color: [u8; 3],
    width_px: usize,
) {
    let offsets: &[(f64, f64)] = if width_px >= 2 {
        &[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]
    } else {
        &[(0.0, 0.0)]
    };
    for pair in points_lps.windows(2) {
        let (Some(a), Some(b)) = (projection.project(pair[0]), projection.project(pair[1])) else {
            continue;
        };
        for (dx, dy) in offsets {
            draw_line(
                rgb,
                projection.width,
                projection.height,
                (a.0 + dx, a.1 + dy),
                (b.0 + dx, b.1 + dy),
                color,
            );
        }
    }
}

/// Colours the outline of a projected structure: pixels with a positive path length
/// (`lengths`, e.g. from `project_labels`) whose 4-neighbourhood leaves it or the image.
pub fn draw_outline(rgb: &mut [u8], lengths: &Image, color: [u8; 3]) {
    let (w, h) = (lengths.width, lengths.height);
    let inside = |c: usize, r: usize| lengths.data[r * w + c] > 0.0;
    for r in 0..h {
        for c in 0..w {
            if !inside(c, r) {
                continue;
            }
            let edge = c == 0
                || r == 0
                || c + 1 == w
                || r + 1 == h
                || !inside(c - 1, r)
                || !inside(c + 1, r)
                || !inside(c, r - 1)
                || !inside(c, r + 1);
            if edge {
                rgb[3 * (r * w + c)..3 * (r * w + c) + 3].copy_from_slice(&color);
            }
        }
    }
}
