//! The picture an IR doctor checks: the CT resliced in the plane that contains the best
//! needle path (the most axial such plane), labels overlaid, the path drawn, with
//! orientation letters and a scale bar.

use pinhole_volume::annotate::Canvas;
use pinhole_volume::math::{cross, dot, norm};
use pinhole_volume::Vec3;

use crate::plan::{in_plane_partner, unit, Plan};
use crate::PlanningContext;

/// An RGB image, row 0 at the top.
#[derive(Debug, Clone)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

/// Soft-tissue window (level 40 HU, width 400 HU).
const LEVEL_HU: f64 = 40.0;
const WIDTH_HU: f64 = 400.0;

/// Image axes for a plane spanned by `d` and `w`: right = the patient's left as far as
/// the plane allows (radiological view), down = posterior (or inferior).
fn image_axes(d: Vec3, w: Vec3) -> (Vec3, Vec3) {
    let project = |v: Vec3| {
        let a = dot(v, d);
        let b = dot(v, w);
        [0, 1, 2].map(|i| a * d[i] + b * w[i])
    };
    let mut e1 = project([1.0, 0.0, 0.0]);
    if norm(e1) < 0.3 {
        e1 = project([0.0, 1.0, 0.0]);
    }
    let e1 = unit(e1);
    let n = unit(cross(d, w));
    let mut e2 = unit(cross(n, e1));
    let down = if e2[1].abs() > 0.3 { e2[1] } else { -e2[2] };
    if down < 0.0 {
        e2 = e2.map(|v| -v);
    }
    (e1, e2)
}

/// Renders `size`² pixels of `pixel_mm` around the best path. `color_of` gives each
/// label's colour. Alternatives are drawn projected onto the plane, dimmer.
pub fn needle_plane(
    ctx: &PlanningContext,
    plan: &Plan,
    color_of: &dyn Fn(u16) -> [u8; 3],
    size: usize,
    pixel_mm: f64,
) -> RgbImage {
    let size = size.max(16);
    let Some(best) = plan.paths.first() else {
        return RgbImage {
            width: size,
            height: size,
            rgb: vec![0; 3 * size * size],
        };
    };
    let d = unit(best.direction_lps);
    let w = in_plane_partner(d);
    let (e1, e2) = image_axes(d, w);
    let centre = [0, 1, 2].map(|a| 0.5 * (best.entry_lps[a] + best.target_lps[a]));
    let half = size as f64 / 2.0;
    let world = |c: f64, r: f64| {
        [0, 1, 2].map(|a| centre[a] + (c - half) * pixel_mm * e1[a] + (r - half) * pixel_mm * e2[a])
    };
    let mut rgb = vec![0u8; 3 * size * size];
    for r in 0..size {
        for c in 0..size {
            let p = world(c as f64, r as f64);
            let n = 3 * (r * size + c);
            let Some(hu) = ctx.ct().sample_trilinear(p) else {
                continue;
            };
            let g = ((hu - (LEVEL_HU - WIDTH_HU / 2.0)) / WIDTH_HU).clamp(0.0, 1.0) * 255.0;
            let mut px = [g; 3];
            let label = ctx.label_at(p);
            if label != 0 {
                let col = color_of(label);
                for k in 0..3 {
                    px[k] = 0.65 * px[k] + 0.35 * f64::from(col[k]);
                }
            }
            for k in 0..3 {
                rgb[n + k] = px[k].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    let to_px = |p: Vec3| {
        let v = [0, 1, 2].map(|a| p[a] - centre[a]);
        (dot(v, e1) / pixel_mm + half, dot(v, e2) / pixel_mm + half)
    };
    for alt in plan.paths.iter().skip(1) {
        line(
            &mut rgb,
            size,
            to_px(alt.entry_lps),
            to_px(alt.target_lps),
            [255, 210, 0],
            0,
        );
    }
    line(
        &mut rgb,
        size,
        to_px(best.entry_lps),
        to_px(best.target_lps),
        [255, 40, 40],
        1,
    );
    let (tx, ty) = to_px(best.target_lps);
    for dy in -3i32..=3 {
        for dx in -3i32..=3 {
            if dx * dx + dy * dy <= 9 {
                put(
                    &mut rgb,
                    size,
                    tx + f64::from(dx),
                    ty + f64::from(dy),
                    [0, 255, 0],
                );
            }
        }
    }
    // Orientation letters (radiological when the plane allows: the patient's left on
    // the right) and a scale bar.
    let mut canvas = Canvas {
        rgb: &mut rgb,
        width: size,
        height: size,
    };
    canvas.orientation_letters(e1, e2);
    canvas.scale_bar(pixel_mm);
    RgbImage {
        width: size,
        height: size,
        rgb,
    }
}

fn put(rgb: &mut [u8], size: usize, x: f64, y: f64, color: [u8; 3]) {
    let (c, r) = (x.round(), y.round());
    if c >= 0.0 && r >= 0.0 && (c as usize) < size && (r as usize) < size {
        let n = 3 * (r as usize * size + c as usize);
        rgb[n..n + 3].copy_from_slice(&color);
    }
}

fn line(rgb: &mut [u8], size: usize, a: (f64, f64), b: (f64, f64), color: [u8; 3], thick: i32) {
    let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).clamp(1, 1 << 14);
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let (x, y) = (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
        for dy in -thick..=thick {
            for dx in -thick..=thick {
                put(rgb, size, x + f64::from(dx), y + f64::from(dy), color);
            }
        }
    }
}
