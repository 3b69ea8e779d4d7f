//! Pictures of a fused ultrasound frame, as pure functions on pixel buffers: label
//! contours, the plan projected on the image plane, the ultrasound blended with the CT
//! resliced on its pixels ([`blend`]) and the reslice alone ([`reslice_view`]).
//!
//! Every buffer is row-major on the frame's pixel grid (`i` fastest, `width × height`
//! pixels; RGB buffers hold `r g b` triples). Pixel coordinates are continuous
//! `[i, j]` with integers at pixel centres, as [`ImagePlane::lps_to_pixel`]. Nothing
//! here allocates per pixel; drawing outside the image is clipped, never an error.
//!
//! # Guarantees
//! * A pixel is on a label's contour when its label is not 0, has a colour in the
//!   [`LabelPalette`], and one of its 4 neighbours inside the image has another label:
//!   the contour of a labelled square is exactly its outermost ring of pixels.
//! * [`blend`] with `ct_weight` 0 gives the ultrasound grey, with 1 the CT grey (before
//!   overlays); in between `round((1 − w)·us + w·ct)`.
//! * The overlays are drawn in a fixed order: label contours, the ablation zone's
//!   contour, the plan path, the target (so the plan stays visible on top).

use pinhole_volume::math::Vec3;

use crate::plane::ImagePlane;

/// An 8-bit RGB colour.
pub type Rgb = [u8; 3];

/// Colour of the planned path (yellow).
pub const PLAN_COLOR: Rgb = [255, 220, 0];
/// Colour of the target mark (bright green).
pub const TARGET_COLOR: Rgb = [0, 255, 120];
/// Colour of the ablation zone's contour (orange-red, like the viewer's red overlay).
pub const ZONE_COLOR: Rgb = [255, 80, 0];
/// Colour of the tracked needle's shaft projected on the plane (cyan) when its tip is in
/// the plane, and when it is not (magenta); its predicted path is drawn thinner in the
/// same colour.
pub const NEEDLE_IN_PLANE_COLOR: Rgb = [0, 230, 255];
pub const NEEDLE_OUT_OF_PLANE_COLOR: Rgb = [255, 0, 200];

/// The tracked needle on a frame, in pixels: [`crate::NeedleInPlane`]'s projected shaft
/// (behind the tip) and predicted path (ahead of it), and whether the tip is in the plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NeedleMarks {
    pub shaft_px: [[f64; 2]; 2],
    pub path_px: [[f64; 2]; 2],
    pub in_plane: bool,
}

impl NeedleMarks {
    /// The marks of a needle-in-plane result.
    pub fn of(needle: &crate::NeedleInPlane) -> Self {
        Self {
            shaft_px: needle.needle_segment_px,
            path_px: needle.predicted_path_px,
            in_plane: needle.in_plane,
        }
    }
}

/// Half the size of the cross drawn at a target farther from the plane than its radius
/// (pixels).
pub const TARGET_CROSS_HALF_PX: f64 = 6.0;

/// Why a picture could not be composed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComposeError {
    #[error("{what} has {got} values, the {width_px} × {height_px} frame needs {expected}")]
    BufferSize {
        what: &'static str,
        got: usize,
        expected: usize,
        width_px: usize,
        height_px: usize,
    },
    #[error("the CT weight must be within 0–1, got {0}")]
    Weight(f32),
}

/// Label colours by id (ids above `u16::MAX` are ignored; ids without a colour, and 0,
/// are never drawn).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelPalette {
    colors: Vec<Option<Rgb>>,
}

impl LabelPalette {
    /// A palette from `(id, colour)` pairs (the later of two entries for one id wins).
    pub fn new(entries: impl IntoIterator<Item = (u32, Rgb)>) -> Self {
        let mut colors: Vec<Option<Rgb>> = Vec::new();
        for (id, color) in entries {
            let Ok(id) = u16::try_from(id) else { continue };
            if id == 0 {
                continue;
            }
            let i = usize::from(id);
            if colors.len() <= i {
                colors.resize(i + 1, None);
            }
            colors[i] = Some(color);
        }
        Self { colors }
    }

    /// The colour of label `id`, if it has one (never for 0).
    pub fn get(&self, id: u16) -> Option<Rgb> {
        self.colors.get(usize::from(id)).copied().flatten()
    }

    pub fn is_empty(&self) -> bool {
        self.colors.iter().all(Option::is_none)
    }
}

/// The plan (entry → target) and the target projected on an image plane.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanProjection {
    /// The entry point's orthogonal projection, pixels (`None`: a target without a path).
    pub entry_px: Option<[f64; 2]>,
    /// The target's orthogonal projection, pixels.
    pub target_px: [f64; 2],
    /// Where the segment entry → target crosses the plane, pixels (`None`: no path, or
    /// the segment does not reach the plane).
    pub crossing_px: Option<[f64; 2]>,
    /// Signed distance of the target from the plane (mm, `+` along the plane normal).
    pub target_distance_mm: f64,
    /// The target ball's radius (mm).
    pub target_radius_mm: f64,
    /// Radius of the ball's cross-section with the plane (mm): `√(r² − d²)` when
    /// `|d| ≤ r`, else `None` (the target is then drawn as a cross at its projection).
    pub target_section_mm: Option<f64>,
    /// Pixel spacing `[x, y]` of the plane (mm), for the circle's radii in pixels.
    pub spacing_mm: [f64; 2],
}

/// Projects the plan on `plane`. `entry_lps`: the path's entry (none for a target only);
/// `target_radius_mm`: the target ball (negative or non-finite counts as 0).
pub fn plan_projection(
    plane: &ImagePlane,
    entry_lps: Option<Vec3>,
    target_lps: Vec3,
    target_radius_mm: f64,
) -> PlanProjection {
    let radius = if target_radius_mm.is_finite() {
        target_radius_mm.max(0.0)
    } else {
        0.0
    };
    let d_target = plane.signed_distance_mm(target_lps);
    let crossing_px = entry_lps.and_then(|entry| {
        let d_entry = plane.signed_distance_mm(entry);
        let denominator = d_entry - d_target;
        // The segment reaches the plane when its ends are on opposite sides (or on it).
        if d_entry * d_target > 0.0 || denominator == 0.0 {
            return None;
        }
        let t = d_entry / denominator;
        let point: Vec3 = std::array::from_fn(|a| entry[a] + t * (target_lps[a] - entry[a]));
        Some(plane.lps_to_pixel(point))
    });
    PlanProjection {
        entry_px: entry_lps.map(|e| plane.lps_to_pixel(e)),
        target_px: plane.lps_to_pixel(target_lps),
        crossing_px,
        target_distance_mm: d_target,
        target_radius_mm: radius,
        target_section_mm: (d_target.abs() <= radius)
            .then(|| (radius * radius - d_target * d_target).max(0.0).sqrt()),
        spacing_mm: plane.spacing_mm(),
    }
}

/// What is drawn over both views.
#[derive(Debug, Clone, Copy, Default)]
pub struct Overlay<'a> {
    /// Label ids on the frame's pixels and their colours: contours.
    pub labels: Option<(&'a [u16], &'a LabelPalette)>,
    /// Ablation zones on the frame's pixels (non-zero inside): contours in
    /// [`ZONE_COLOR`].
    pub zones: &'a [&'a [u16]],
    /// The plan: the path in [`PLAN_COLOR`], the target in [`TARGET_COLOR`].
    pub plan: Option<PlanProjection>,
    /// The tracked needle: its shaft, then its predicted path (thinner).
    pub needle: Option<NeedleMarks>,
    /// Line width of the path and target marks (pixels, at least 1).
    pub line_width_px: usize,
}

/// An RGB picture being drawn on.
struct Picture<'a> {
    rgb: &'a mut [u8],
    width: usize,
    height: usize,
}

impl Picture<'_> {
    fn put(&mut self, i: i64, j: i64, color: Rgb) {
        if i < 0 || j < 0 || i as usize >= self.width || j as usize >= self.height {
            return;
        }
        let o = 3 * (j as usize * self.width + i as usize);
        if let Some(px) = self.rgb.get_mut(o..o + 3) {
            px.copy_from_slice(&color);
        }
    }

    /// A square dot of `width` pixels centred on the pixel nearest `p`.
    fn dot(&mut self, p: [f64; 2], color: Rgb, width: usize) {
        let (ci, cj) = (p[0].round() as i64, p[1].round() as i64);
        let w = width.max(1) as i64;
        let low = -(w - 1) / 2;
        for dj in low..low + w {
            for di in low..low + w {
                self.put(ci + di, cj + dj, color);
            }
        }
    }
}

fn check(what: &'static str, got: usize, width: usize, height: usize) -> Result<(), ComposeError> {
    let expected = width.saturating_mul(height);
    if got != expected {
        return Err(ComposeError::BufferSize {
            what,
            got,
            expected,
            width_px: width,
            height_px: height,
        });
    }
    Ok(())
}

/// Whether pixel `o` (label `l` ≠ 0) has a 4-neighbour inside the image with another
/// label.
fn on_contour(labels: &[u16], width: usize, height: usize, o: usize, l: u16) -> bool {
    let (i, j) = (o % width, o / width);
    (i > 0 && labels[o - 1] != l)
        || (i + 1 < width && labels[o + 1] != l)
        || (j > 0 && labels[o - width] != l)
        || (j + 1 < height && labels[o + width] != l)
}

/// Draws every label's contour in its colour into `rgb` (`3·width·height` bytes);
/// returns how many pixels were drawn.
pub fn draw_label_contours(
    rgb: &mut [u8],
    labels: &[u16],
    width: usize,
    height: usize,
    palette: &LabelPalette,
) -> Result<usize, ComposeError> {
    check("the label image", labels.len(), width, height)?;
    check("the RGB buffer (triples)", rgb.len() / 3, width, height)?;
    let mut drawn = 0;
    for (o, &l) in labels.iter().enumerate() {
        if l == 0 {
            continue;
        }
        let Some(color) = palette.get(l) else {
            continue;
        };
        if on_contour(labels, width, height, o, l) {
            rgb[3 * o..3 * o + 3].copy_from_slice(&color);
            drawn += 1;
        }
    }
    Ok(drawn)
}

/// Draws the contour of a mask's non-zero region (any non-zero value is inside) in
/// `color`; returns how many pixels were drawn.
pub fn draw_mask_contour(
    rgb: &mut [u8],
    mask: &[u16],
    width: usize,
    height: usize,
    color: Rgb,
) -> Result<usize, ComposeError> {
    check("the mask", mask.len(), width, height)?;
    check("the RGB buffer (triples)", rgb.len() / 3, width, height)?;
    let inside = |o: usize| mask[o] != 0;
    let mut drawn = 0;
    for o in 0..mask.len() {
        if !inside(o) {
            continue;
        }
        let (i, j) = (o % width, o / width);
        let edge = (i > 0 && !inside(o - 1))
            || (i + 1 < width && !inside(o + 1))
            || (j > 0 && !inside(o - width))
            || (j + 1 < height && !inside(o + width));
        if edge {
            rgb[3 * o..3 * o + 3].copy_from_slice(&color);
            drawn += 1;
        }
    }
    Ok(drawn)
}

/// Clips the segment `a → b` to the image's pixel area `[−0.5, w − 0.5] × [−0.5, h − 0.5]`
/// (Liang–Barsky); `None` when it misses it or is not finite.
fn clip(a: [f64; 2], b: [f64; 2], width: usize, height: usize) -> Option<([f64; 2], [f64; 2])> {
    if a.iter().chain(&b).any(|v| !v.is_finite()) {
        return None;
    }
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    let (x_max, y_max) = (width as f64 - 0.5, height as f64 - 0.5);
    for (p, q) in [
        (-dx, a[0] + 0.5),
        (dx, x_max - a[0]),
        (-dy, a[1] + 0.5),
        (dy, y_max - a[1]),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
            continue;
        }
        let r = q / p;
        if p < 0.0 {
            t0 = t0.max(r);
        } else {
            t1 = t1.min(r);
        }
        if t0 > t1 {
            return None;
        }
    }
    Some((
        [a[0] + t0 * dx, a[1] + t0 * dy],
        [a[0] + t1 * dx, a[1] + t1 * dy],
    ))
}

/// Draws the segment `from → to` (pixel coordinates, clipped to the image) `line_width`
/// pixels wide: every pixel nearest a point of the segment, sampled at most ½ pixel
/// apart, is drawn.
pub fn draw_segment(
    rgb: &mut [u8],
    width: usize,
    height: usize,
    from: [f64; 2],
    to: [f64; 2],
    color: Rgb,
    line_width: usize,
) -> Result<(), ComposeError> {
    check("the RGB buffer (triples)", rgb.len() / 3, width, height)?;
    let Some((a, b)) = clip(from, to, width, height) else {
        return Ok(());
    };
    let mut picture = Picture { rgb, width, height };
    let length = (b[0] - a[0]).abs().max((b[1] - a[1]).abs());
    // Clipped to the image: at most 2·(w + h) samples.
    let steps = (2.0 * length).ceil() as usize;
    for s in 0..=steps {
        let t = if steps == 0 {
            0.0
        } else {
            s as f64 / steps as f64
        };
        let p = [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])];
        picture.dot(p, color, line_width);
    }
    Ok(())
}

/// Draws the outline of the ellipse centred on `centre` with radii `radii_px` (pixels).
fn draw_ellipse(
    rgb: &mut [u8],
    width: usize,
    height: usize,
    centre: [f64; 2],
    radii_px: [f64; 2],
    color: Rgb,
    line_width: usize,
) {
    let mut picture = Picture { rgb, width, height };
    let r = radii_px[0].max(radii_px[1]);
    if !(r.is_finite() && centre.iter().all(|v| v.is_finite())) {
        return;
    }
    // Points at most ½ pixel apart along the outline; a huge ellipse is clipped anyway,
    // so its sampling is capped (its visible arc then looks dotted, not slow).
    let n = ((4.0 * std::f64::consts::PI * r).ceil() as usize).clamp(8, 1 << 16);
    for s in 0..n {
        let angle = s as f64 / n as f64 * std::f64::consts::TAU;
        let p = [
            centre[0] + radii_px[0] * angle.cos(),
            centre[1] + radii_px[1] * angle.sin(),
        ];
        picture.dot(p, color, line_width);
    }
}

/// Draws the plan: the path (entry → target projected) in [`PLAN_COLOR`] with its
/// crossing of the plane as a dot, and the target in [`TARGET_COLOR`]: its
/// cross-section with the plane as a circle when it is within its radius of the plane,
/// else a cross (half size [`TARGET_CROSS_HALF_PX`]) at its projection.
pub fn draw_plan(
    rgb: &mut [u8],
    width: usize,
    height: usize,
    plan: &PlanProjection,
    line_width: usize,
) -> Result<(), ComposeError> {
    check("the RGB buffer (triples)", rgb.len() / 3, width, height)?;
    if let Some(entry) = plan.entry_px {
        draw_segment(
            rgb,
            width,
            height,
            entry,
            plan.target_px,
            PLAN_COLOR,
            line_width,
        )?;
    }
    if let Some(crossing) = plan.crossing_px {
        Picture { rgb, width, height }.dot(crossing, PLAN_COLOR, line_width + 4);
    }
    let t = plan.target_px;
    match plan.target_section_mm {
        Some(section_mm) => {
            let radii = [
                section_mm / plan.spacing_mm[0],
                section_mm / plan.spacing_mm[1],
            ];
            draw_ellipse(rgb, width, height, t, radii, TARGET_COLOR, line_width);
        }
        None => {
            let h = TARGET_CROSS_HALF_PX;
            for (a, b) in [
                ([t[0] - h, t[1] - h], [t[0] + h, t[1] + h]),
                ([t[0] - h, t[1] + h], [t[0] + h, t[1] - h]),
            ] {
                draw_segment(rgb, width, height, a, b, TARGET_COLOR, line_width)?;
            }
        }
    }
    Ok(())
}

/// Draws the overlay (contours, zone, plan) on an RGB picture of the frame.
pub fn draw_overlay(
    rgb: &mut [u8],
    width: usize,
    height: usize,
    overlay: &Overlay<'_>,
) -> Result<(), ComposeError> {
    if let Some((labels, palette)) = overlay.labels {
        draw_label_contours(rgb, labels, width, height, palette)?;
    }
    for zone in overlay.zones {
        draw_mask_contour(rgb, zone, width, height, ZONE_COLOR)?;
    }
    if let Some(plan) = &overlay.plan {
        draw_plan(rgb, width, height, plan, overlay.line_width_px.max(1))?;
    }
    if let Some(needle) = &overlay.needle {
        let color = if needle.in_plane {
            NEEDLE_IN_PLANE_COLOR
        } else {
            NEEDLE_OUT_OF_PLANE_COLOR
        };
        let wide = overlay.line_width_px.max(1) + 1;
        let [a, b] = needle.path_px;
        draw_segment(rgb, width, height, a, b, color, 1)?;
        let [a, b] = needle.shaft_px;
        draw_segment(rgb, width, height, a, b, color, wide)?;
    }
    Ok(())
}

/// The blended view into `out` (resized to `3·width·height`): each pixel grey
/// `round((1 − ct_weight)·us + ct_weight·ct)`, then the overlay on top.
pub fn blend(
    us_grey: &[u8],
    ct_grey: &[u8],
    width: usize,
    height: usize,
    ct_weight: f32,
    overlay: &Overlay<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ComposeError> {
    if !(0.0..=1.0).contains(&ct_weight) {
        return Err(ComposeError::Weight(ct_weight));
    }
    check("the ultrasound image", us_grey.len(), width, height)?;
    check("the CT reslice", ct_grey.len(), width, height)?;
    out.clear();
    out.reserve(3 * us_grey.len());
    let w = ct_weight;
    for (&u, &c) in us_grey.iter().zip(ct_grey) {
        let g = ((1.0 - w) * f32::from(u) + w * f32::from(c))
            .round()
            .clamp(0.0, 255.0) as u8;
        out.extend_from_slice(&[g, g, g]);
    }
    draw_overlay(out, width, height, overlay)
}

/// The CT reslice alone into `out` (resized to `3·width·height`), with the overlay.
pub fn reslice_view(
    ct_grey: &[u8],
    width: usize,
    height: usize,
    overlay: &Overlay<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ComposeError> {
    check("the CT reslice", ct_grey.len(), width, height)?;
    out.clear();
    out.reserve(3 * ct_grey.len());
    for &c in ct_grey {
        out.extend_from_slice(&[c, c, c]);
    }
    draw_overlay(out, width, height, overlay)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: Rgb = [255, 0, 0];

    fn px(rgb: &[u8], width: usize, i: usize, j: usize) -> Rgb {
        let o = 3 * (j * width + i);
        [rgb[o], rgb[o + 1], rgb[o + 2]]
    }

    /// A 4 × 4 square of label 7 at (3..7, 2..6) on a 10 × 8 image: its contour is its
    /// outer ring, 12 pixels, and nothing else.
    #[test]
    fn a_square_label_gives_its_outline_exactly() {
        let (w, h) = (10, 8);
        let mut labels = vec![0u16; w * h];
        for j in 2..6 {
            for i in 3..7 {
                labels[j * w + i] = 7;
            }
        }
        let palette = LabelPalette::new([(7, RED), (9, [0, 0, 255])]);
        let mut rgb = vec![50u8; 3 * w * h];
        let drawn = draw_label_contours(&mut rgb, &labels, w, h, &palette).unwrap();
        assert_eq!(drawn, 12);
        for j in 0..h {
            for i in 0..w {
                let ring = (3..7).contains(&i)
                    && (2..6).contains(&j)
                    && (i == 3 || i == 6 || j == 2 || j == 5);
                let expected = if ring { RED } else { [50; 3] };
                assert_eq!(px(&rgb, w, i, j), expected, "pixel ({i}, {j})");
            }
        }
    }

    /// Labels touching each other both get their edge; the image border is no contour;
    /// a label without a colour is not drawn.
    #[test]
    fn touching_labels_and_the_image_border() {
        let (w, h) = (6, 3);
        // Left half label 1, right half label 2, every row.
        let labels: Vec<u16> = (0..w * h).map(|o| if o % w < 3 { 1 } else { 2 }).collect();
        let mut rgb = vec![0u8; 3 * w * h];
        let palette = LabelPalette::new([(1, RED), (2, [0, 255, 0])]);
        assert_eq!(
            draw_label_contours(&mut rgb, &labels, w, h, &palette).unwrap(),
            6
        );
        for j in 0..h {
            assert_eq!(px(&rgb, w, 2, j), RED);
            assert_eq!(px(&rgb, w, 3, j), [0, 255, 0]);
            assert_eq!(px(&rgb, w, 0, j), [0; 3]);
            assert_eq!(px(&rgb, w, 5, j), [0; 3]);
        }
        let mut rgb = vec![0u8; 3 * w * h];
        let only_one = LabelPalette::new([(2, [0, 255, 0])]);
        assert_eq!(
            draw_label_contours(&mut rgb, &labels, w, h, &only_one).unwrap(),
            3
        );
        assert_eq!(px(&rgb, w, 2, 0), [0; 3]);
        // The mask contour treats every non-zero value as inside: no edge here.
        let mut rgb = vec![0u8; 3 * w * h];
        assert_eq!(draw_mask_contour(&mut rgb, &labels, w, h, RED).unwrap(), 0);
    }

    /// An axial plane at z = 2 mm, 0.5 mm pixels from (0, 0): the path from
    /// (1, 2, 12) to (9, 6, −8) crosses z = 2 halfway, at (5, 4, 2) = pixel (10, 8); the
    /// ends project to pixels (2, 4) and (18, 12).
    #[test]
    fn a_path_crossing_the_plane_projects_where_geometry_says() {
        let plane =
            ImagePlane::from_steps([0.0, 0.0, 2.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], 24, 16)
                .unwrap();
        let plan = plan_projection(&plane, Some([1.0, 2.0, 12.0]), [9.0, 6.0, -8.0], 5.0);
        let close = |a: [f64; 2], b: [f64; 2]| (a[0] - b[0]).abs() + (a[1] - b[1]).abs() < 1e-12;
        assert!(close(plan.entry_px.unwrap(), [2.0, 4.0]), "{plan:?}");
        assert!(close(plan.target_px, [18.0, 12.0]), "{plan:?}");
        assert!(close(plan.crossing_px.unwrap(), [10.0, 8.0]), "{plan:?}");
        // The normal is +z (x × y): the target is 10 mm below, beyond its 5 mm radius.
        assert!((plan.target_distance_mm + 10.0).abs() < 1e-12);
        assert_eq!(plan.target_section_mm, None);

        let (w, h) = (24, 16);
        let mut rgb = vec![0u8; 3 * w * h];
        draw_plan(&mut rgb, w, h, &plan, 1).unwrap();
        // The path passes through pixel centres (2, 4), (10, 8): slope ½.
        for (i, j) in [(2, 4), (6, 6), (10, 8), (14, 10)] {
            assert_eq!(px(&rgb, w, i, j), PLAN_COLOR, "({i}, {j})");
        }
        // The target's cross: the diagonal through (18, 12), drawn last.
        for d in [-3i64, 3] {
            let (i, j) = ((18 + d) as usize, (12 + d) as usize);
            assert_eq!(px(&rgb, w, i, j), TARGET_COLOR, "({i}, {j})");
        }
        // Far from the path: untouched.
        assert_eq!(px(&rgb, w, 2, 14), [0; 3]);

        // A path that stays on one side has no crossing.
        let above = plan_projection(&plane, Some([1.0, 2.0, 12.0]), [9.0, 6.0, 4.0], 5.0);
        assert_eq!(above.crossing_px, None);
    }

    /// A target 3 mm from the plane with a 5 mm radius cuts it in a circle of 4 mm
    /// (3-4-5): 8 pixels at 0.5 mm, drawn at 8 pixels from the centre, not at the centre.
    #[test]
    fn a_target_near_the_plane_is_its_cross_section() {
        let plane =
            ImagePlane::from_steps([0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], 40, 40)
                .unwrap();
        let plan = plan_projection(&plane, None, [10.0, 10.0, 3.0], 5.0);
        assert!((plan.target_section_mm.unwrap() - 4.0).abs() < 1e-12);
        assert_eq!(plan.entry_px, None);
        let (w, h) = (40, 40);
        let mut rgb = vec![0u8; 3 * w * h];
        draw_plan(&mut rgb, w, h, &plan, 1).unwrap();
        for (i, j) in [(28, 20), (12, 20), (20, 28), (20, 12)] {
            assert_eq!(px(&rgb, w, i, j), TARGET_COLOR, "({i}, {j})");
        }
        assert_eq!(px(&rgb, w, 20, 20), [0; 3]);
        assert_eq!(px(&rgb, w, 24, 20), [0; 3]);
    }

    #[test]
    fn blend_weights_at_0_and_1_give_the_inputs() {
        let (w, h) = (5, 3);
        let us: Vec<u8> = (0..15).map(|v| v * 17).collect();
        let ct: Vec<u8> = (0..15).map(|v| 250 - v * 10).collect();
        let none = Overlay::default();
        let grey = |g: &[u8]| -> Vec<u8> { g.iter().flat_map(|&v| [v, v, v]).collect() };
        let mut out = Vec::new();
        blend(&us, &ct, w, h, 0.0, &none, &mut out).unwrap();
        assert_eq!(out, grey(&us));
        blend(&us, &ct, w, h, 1.0, &none, &mut out).unwrap();
        assert_eq!(out, grey(&ct));
        // Halfway: the rounded mean.
        blend(&us, &ct, w, h, 0.5, &none, &mut out).unwrap();
        let mean: Vec<u8> = us
            .iter()
            .zip(&ct)
            .map(|(&a, &b)| ((f32::from(a) + f32::from(b)) / 2.0).round() as u8)
            .collect();
        assert_eq!(out, grey(&mean));
        reslice_view(&ct, w, h, &none, &mut out).unwrap();
        assert_eq!(out, grey(&ct));
        assert_eq!(
            blend(&us, &ct, w, h, 1.5, &none, &mut out),
            Err(ComposeError::Weight(1.5))
        );
        assert!(matches!(
            blend(&us[1..], &ct, w, h, 0.5, &none, &mut out),
            Err(ComposeError::BufferSize { got: 14, .. })
        ));
    }

    /// Contours are drawn on top of the blend in both views, the same pixels.
    #[test]
    fn both_views_carry_the_same_contours() {
        let (w, h) = (6, 6);
        let mut labels = vec![0u16; w * h];
        for j in 1..4 {
            for i in 1..4 {
                labels[j * w + i] = 3;
            }
        }
        let palette = LabelPalette::new([(3, RED)]);
        let zone: Vec<u16> = (0..w * h).map(|o| u16::from(o % w >= 4)).collect();
        let zones = [zone.as_slice()];
        let overlay = Overlay {
            labels: Some((&labels, &palette)),
            zones: &zones,
            plan: None,
            needle: None,
            line_width_px: 1,
        };
        let us = vec![100u8; w * h];
        let ct = vec![200u8; w * h];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        blend(&us, &ct, w, h, 0.5, &overlay, &mut a).unwrap();
        reslice_view(&ct, w, h, &overlay, &mut b).unwrap();
        assert_eq!(px(&a, w, 1, 1), RED);
        assert_eq!(px(&b, w, 1, 1), RED);
        assert_eq!(px(&a, w, 2, 2), [150; 3]);
        assert_eq!(px(&b, w, 2, 2), [200; 3]);
        // The zone's edge column (i = 4) next to the outside; i = 5 is at the border.
        assert_eq!(px(&a, w, 4, 0), ZONE_COLOR);
        assert_eq!(px(&a, w, 5, 0), [150; 3]);
    }

    #[test]
    fn the_needle_is_drawn_in_its_state_colour_shaft_then_path() {
        let (w, h) = (40, 20);
        let grey = vec![100u8; w * h];
        let needle = NeedleMarks {
            shaft_px: [[2.0, 10.0], [20.0, 10.0]],
            path_px: [[20.0, 10.0], [38.0, 10.0]],
            in_plane: true,
        };
        let mut overlay = Overlay {
            labels: None,
            zones: &[],
            plan: None,
            needle: Some(needle),
            line_width_px: 1,
        };
        let mut rgb = Vec::new();
        reslice_view(&grey, w, h, &overlay, &mut rgb).unwrap();
        assert_eq!(px(&rgb, w, 10, 10), NEEDLE_IN_PLANE_COLOR, "shaft");
        assert_eq!(px(&rgb, w, 30, 10), NEEDLE_IN_PLANE_COLOR, "path");
        // The shaft is wider than the path: a row off the line is drawn only beside it.
        assert_eq!(px(&rgb, w, 10, 11), NEEDLE_IN_PLANE_COLOR, "shaft width");
        assert_eq!(px(&rgb, w, 30, 11), [100; 3], "path width");
        overlay.needle = Some(NeedleMarks {
            in_plane: false,
            ..needle
        });
        reslice_view(&grey, w, h, &overlay, &mut rgb).unwrap();
        assert_eq!(px(&rgb, w, 10, 10), NEEDLE_OUT_OF_PLANE_COLOR);
    }

    #[test]
    fn segments_far_outside_are_clipped_not_walked() {
        let (w, h) = (8, 8);
        let mut rgb = vec![0u8; 3 * w * h];
        draw_segment(&mut rgb, w, h, [-1e12, 3.0], [1e12, 3.0], RED, 1).unwrap();
        for i in 0..w {
            assert_eq!(px(&rgb, w, i, 3), RED);
        }
        let mut rgb2 = vec![0u8; 3 * w * h];
        draw_segment(&mut rgb2, w, h, [-10.0, -10.0], [-2.0, 20.0], RED, 1).unwrap();
        draw_segment(&mut rgb2, w, h, [f64::NAN, 0.0], [3.0, 3.0], RED, 1).unwrap();
        assert!(rgb2.iter().all(|&v| v == 0));
    }
}
