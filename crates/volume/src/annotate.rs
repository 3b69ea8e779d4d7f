//! Orientation letters and a scale bar on RGB pictures (row 0 at the top), so that every
//! picture Pinhole writes can be read on its own: which side is the patient's left, how
//! long a centimetre is.
//!
//! The letters name the patient direction each edge of the picture faces (`L`/`R`,
//! `A`/`P`, `S`/`I`; two letters, strongest first, for an oblique direction), as 3D
//! Slicer and PACS viewers label their views. A picture in the radiological convention
//! therefore shows `R` on its left edge and `L` on its right.

use crate::Vec3;

/// The 8 neighbours of a pixel (a glyph's outline).
const NEIGHBOURS: [(i64, i64); 8] = [
    (-1, 0),
    (1, 0),
    (0, -1),
    (0, 1),
    (-1, -1),
    (1, 1),
    (-1, 1),
    (1, -1),
];

/// Glyph width and height of the built-in 5 × 7 font, in font pixels.
const GLYPH_W: usize = 5;
const GLYPH_H: usize = 7;

/// The 5 × 7 bitmap of `c` (rows top to bottom, bit 4 = leftmost column); characters
/// outside the small set (orientation letters, digits, `m`, `.`, and the other letters of
/// "NOT FOR CLINICAL USE") draw as blanks.
fn glyph(c: char) -> [u8; GLYPH_H] {
    match c {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'N' => [17, 25, 21, 19, 17, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'm' => [0, 0, 26, 21, 21, 17, 17],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        _ => [0; GLYPH_H],
    }
}

/// An RGB picture being annotated: `rgb` holds `width × height` pixels, row-major.
pub struct Canvas<'a> {
    pub rgb: &'a mut [u8],
    pub width: usize,
    pub height: usize,
}

impl Canvas<'_> {
    fn put(&mut self, x: i64, y: i64, color: [u8; 3]) {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            return;
        }
        let o = 3 * (y as usize * self.width + x as usize);
        if let Some(px) = self.rgb.get_mut(o..o + 3) {
            px.copy_from_slice(&color);
        }
    }

    /// Pixels of one glyph at `(x, y)` (top-left), each font pixel `scale` pixels wide.
    fn glyph_pixels(x: i64, y: i64, c: char, scale: i64) -> Vec<(i64, i64)> {
        let rows = glyph(c);
        let mut out = Vec::new();
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..GLYPH_W {
                if bits & (1 << (GLYPH_W - 1 - col)) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            out.push((x + col as i64 * scale + dx, y + r as i64 * scale + dy));
                        }
                    }
                }
            }
        }
        out
    }

    /// Width and height of `text` in pixels at `scale`.
    pub fn text_size(text: &str, scale: usize) -> (usize, usize) {
        let n = text.chars().count();
        (
            (n * (GLYPH_W + 1)).saturating_sub(1) * scale,
            GLYPH_H * scale,
        )
    }

    /// The pixels of `text` with its top-left at `(x, y)`.
    fn text_pixels(x: i64, y: i64, text: &str, scale: i64) -> Vec<(i64, i64)> {
        text.chars()
            .enumerate()
            .flat_map(|(i, c)| {
                Self::glyph_pixels(x + i as i64 * (GLYPH_W as i64 + 1) * scale, y, c, scale)
            })
            .collect()
    }

    /// Draws `text` with its top-left at `(x, y)`: white with a black outline, readable
    /// on any grey.
    pub fn text(&mut self, x: i64, y: i64, text: &str, scale: usize) {
        let pixels = Self::text_pixels(x, y, text, scale.max(1) as i64);
        for &(px, py) in &pixels {
            for (dx, dy) in NEIGHBOURS {
                self.put(px + dx, py + dy, [0, 0, 0]);
            }
        }
        for &(px, py) in &pixels {
            self.put(px, py, [255, 255, 255]);
        }
    }

    /// Whether `text` is drawn with its top-left at `(x, y)` at `scale`: every glyph
    /// pixel white and every pixel touching one (its outline) black. What a test reads
    /// back off a picture.
    pub fn shows_text(&self, x: usize, y: usize, text: &str, scale: usize) -> bool {
        let pixels = Self::text_pixels(x as i64, y as i64, text, scale.max(1) as i64);
        let on: std::collections::HashSet<(i64, i64)> = pixels.iter().copied().collect();
        let color = |px: i64, py: i64| -> Option<[u8; 3]> {
            if px < 0 || py < 0 || px as usize >= self.width || py as usize >= self.height {
                return None;
            }
            let o = 3 * (py as usize * self.width + px as usize);
            self.rgb.get(o..o + 3).map(|c| [c[0], c[1], c[2]])
        };
        !on.is_empty()
            && on.iter().all(|&(px, py)| {
                color(px, py) == Some([255, 255, 255])
                    && NEIGHBOURS.iter().all(|&(dx, dy)| {
                        let n = (px + dx, py + dy);
                        on.contains(&n) || color(n.0, n.1).is_none_or(|c| c == [0, 0, 0])
                    })
            })
    }

    /// Where [`Canvas::orientation_letters`] puts `letters` on `edge` (top-left corner)
    /// and at which font scale.
    pub fn letters_position(&self, letters: &str, edge: Edge) -> (usize, usize, usize) {
        let scale = self.font_scale();
        let margin = 3 * scale;
        let (tw, th) = Self::text_size(letters, scale);
        let (w, h) = (self.width, self.height);
        let (x, y) = match edge {
            Edge::Right => (w.saturating_sub(tw + margin), h.saturating_sub(th) / 2),
            Edge::Left => (margin, h.saturating_sub(th) / 2),
            Edge::Bottom => (w.saturating_sub(tw) / 2, h.saturating_sub(th + margin)),
            Edge::Top => (w.saturating_sub(tw) / 2, margin),
        };
        (x, y, scale)
    }

    /// Orientation letters at the middle of each edge: `right_lps` is the patient
    /// direction of one pixel to the right, `down_lps` of one pixel down.
    pub fn orientation_letters(&mut self, right_lps: Vec3, down_lps: Vec3) {
        let neg = |v: Vec3| v.map(|c| -c);
        let edges = [
            (patient_letters(right_lps), Edge::Right),
            (patient_letters(neg(right_lps)), Edge::Left),
            (patient_letters(down_lps), Edge::Bottom),
            (patient_letters(neg(down_lps)), Edge::Top),
        ];
        for (letters, edge) in edges {
            let (x, y, scale) = self.letters_position(&letters, edge);
            self.text(x as i64, y as i64, &letters, scale);
        }
    }

    /// A scale bar in the bottom-left corner: the longest of 5, 10, 20, 50 or 100 mm that
    /// fits in a quarter of the width, labelled, for pictures of `pixel_mm` per pixel.
    /// Returns the bar's length in mm (None: the scale is unknown or too small to draw).
    pub fn scale_bar(&mut self, pixel_mm: f64) -> Option<f64> {
        if !(pixel_mm > 0.0 && pixel_mm.is_finite()) {
            return None;
        }
        let limit_px = self.width as f64 / 4.0;
        let length_mm = [100.0, 50.0, 20.0, 10.0, 5.0]
            .into_iter()
            .find(|mm| mm / pixel_mm <= limit_px)?;
        let length_px = (length_mm / pixel_mm).round() as i64;
        if length_px < 4 {
            return None;
        }
        let scale = self.font_scale();
        let margin = 3 * scale as i64;
        let thick = scale.max(2) as i64;
        let y = self.height as i64 - margin - thick;
        let x0 = margin;
        for x in x0 - 1..=x0 + length_px {
            for dy in -1..=thick {
                self.put(x, y + dy, [0, 0, 0]);
            }
        }
        for x in x0..x0 + length_px {
            for dy in 0..thick {
                self.put(x, y + dy, [255, 255, 255]);
            }
        }
        let label = format!("{length_mm:.0} mm");
        let (_, th) = Self::text_size(&label, scale);
        self.text(x0, y - th as i64 - 2 * scale as i64, &label, scale);
        Some(length_mm)
    }

    /// Font pixels per glyph pixel: 1 below 256 px, 2 up to 767 px, then 3.
    fn font_scale(&self) -> usize {
        (self.width.min(self.height) / 256).clamp(1, 3)
    }
}

/// An edge of a picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Right,
    Left,
    Bottom,
    Top,
}

/// The patient direction(s) `direction_lps` points to as orientation letters: each axis
/// whose component is at least half the largest, strongest first (`L`, `PI`, …).
pub fn patient_letters(direction_lps: Vec3) -> String {
    let letters = [('R', 'L'), ('A', 'P'), ('I', 'S')];
    let largest = direction_lps.iter().map(|c| c.abs()).fold(0.0, f64::max);
    if largest == 0.0 || !largest.is_finite() {
        return String::new();
    }
    let mut parts: Vec<(f64, char)> = (0..3)
        .filter(|&a| direction_lps[a].abs() >= 0.5 * largest)
        .map(|a| {
            let (neg, pos) = letters[a];
            (
                direction_lps[a].abs(),
                if direction_lps[a] > 0.0 { pos } else { neg },
            )
        })
        .collect();
    parts.sort_by(|x, y| y.0.total_cmp(&x.0));
    parts.iter().map(|p| p.1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_name_the_patient_direction_strongest_first() {
        assert_eq!(patient_letters([1.0, 0.0, 0.0]), "L");
        assert_eq!(patient_letters([-1.0, 0.0, 0.0]), "R");
        assert_eq!(patient_letters([0.0, -2.0, 0.0]), "A");
        assert_eq!(patient_letters([0.0, 0.0, 3.0]), "S");
        // Oblique: posterior more than inferior; a weak left component is left out.
        assert_eq!(patient_letters([0.2, 0.9, -0.6]), "PI");
        assert_eq!(patient_letters([0.0; 3]), "");
    }

    /// An axial slice in the radiological convention (one pixel right = patient's left,
    /// one pixel down = posterior): `R` on the left edge, `L` on the right, `A` on top,
    /// `P` at the bottom, each where the layout puts it.
    #[test]
    fn an_axial_radiological_picture_gets_r_left_l_right_a_top_p_bottom() {
        let (w, h) = (300usize, 200usize);
        let mut rgb = vec![60u8; 3 * w * h];
        let mut canvas = Canvas {
            rgb: &mut rgb,
            width: w,
            height: h,
        };
        canvas.orientation_letters([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]);
        // Scale 1 (200 px high): glyphs 5 × 7, margin 3 px.
        let mid_y = (h - GLYPH_H) / 2;
        assert!(canvas.shows_text(w - GLYPH_W - 3, mid_y, "L", 1));
        assert!(canvas.shows_text(3, mid_y, "R", 1));
        assert!(canvas.shows_text((w - GLYPH_W) / 2, 3, "A", 1));
        assert!(canvas.shows_text((w - GLYPH_W) / 2, h - GLYPH_H - 3, "P", 1));
        assert!(!canvas.shows_text(3, mid_y, "L", 1));
        assert_eq!(
            canvas.letters_position("L", Edge::Right),
            (w - GLYPH_W - 3, mid_y, 1)
        );
    }

    #[test]
    fn the_scale_bar_is_as_long_as_it_says() {
        let (w, h) = (512usize, 512usize);
        let mut rgb = vec![0u8; 3 * w * h];
        let mut canvas = Canvas {
            rgb: &mut rgb,
            width: w,
            height: h,
        };
        // 0.5 mm pixels: a quarter of 512 px is 64 mm, so a 50 mm bar of 100 px.
        assert_eq!(canvas.scale_bar(0.5), Some(50.0));
        // Scale 2: margin 6, thickness 2: the bar's top row is h − 6 − 2.
        let row = h - 8;
        let white: Vec<usize> = (0..w)
            .filter(|&x| canvas.rgb[3 * (row * w + x)..3 * (row * w + x) + 3] == [255, 255, 255])
            .collect();
        assert_eq!(white.len(), 100);
        assert_eq!(white[0], 6);
        assert_eq!(canvas.scale_bar(f64::NAN), None);
        assert_eq!(canvas.scale_bar(100.0), None);
    }
}
