//! Polyline geometry in LPS mm: length, resampling, smoothing, tangents, turning angle
//! and curvature.

pub(crate) use pinhole_volume::math::{add, distance as dist, scale, sub};
use pinhole_volume::math::{cross, dot, norm};
use pinhole_volume::Vec3;
/// `a` scaled to unit length, or `None` for a (near) zero vector.
pub(crate) fn unit(a: Vec3) -> Option<Vec3> {
    let n = norm(a);
    (n > 1e-12).then(|| scale(a, 1.0 / n))
}

/// Two unit vectors completing `t` (unit) to an orthonormal basis.
pub(crate) fn plane_basis(t: Vec3) -> (Vec3, Vec3) {
    let helper = if t[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let u = unit(cross(t, helper)).unwrap_or([0.0, 0.0, 1.0]);
    let v = cross(t, u);
    (u, v)
}

/// Cumulative arc length at every point (first = 0).
pub fn arc_lengths(points: &[Vec3]) -> Vec<f64> {
    let mut out = Vec::with_capacity(points.len());
    let mut s = 0.0;
    for (i, p) in points.iter().enumerate() {
        if i > 0 {
            s += dist(points[i - 1], *p);
        }
        out.push(s);
    }
    out
}

/// Total length, mm.
pub fn polyline_length(points: &[Vec3]) -> f64 {
    arc_lengths(points).last().copied().unwrap_or(0.0)
}

/// Points at uniform arc spacing `step_mm` from the first to the last point (both kept;
/// the last interval may be shorter).
pub fn resample(points: &[Vec3], step_mm: f64) -> Vec<Vec3> {
    if points.len() < 2 || step_mm <= 0.0 {
        return points.to_vec();
    }
    let arc = arc_lengths(points);
    let total = arc[arc.len() - 1];
    let n = (total / step_mm).floor() as usize;
    let mut out: Vec<Vec3> = Vec::with_capacity(n + 2);
    let mut j = 1;
    for k in 0..=n {
        let s = k as f64 * step_mm;
        while j < arc.len() - 1 && arc[j] < s {
            j += 1;
        }
        let (a0, a1) = (arc[j - 1], arc[j]);
        let t = if a1 > a0 {
            ((s - a0) / (a1 - a0)).clamp(0.0, 1.0)
        } else {
            0.0
        };
        out.push(add(points[j - 1], scale(sub(points[j], points[j - 1]), t)));
    }
    if total - n as f64 * step_mm > 1e-6 * step_mm.max(1.0) {
        out.push(points[points.len() - 1]);
    }
    out
}

/// Moving average over `half` neighbours on each side (window shrinks at the ends so the
/// end points stay fixed).
pub fn smooth(points: &[Vec3], half: usize) -> Vec<Vec3> {
    let n = points.len();
    (0..n)
        .map(|i| {
            let h = half.min(i).min(n - 1 - i);
            let mut acc = [0.0; 3];
            for p in &points[i - h..=i + h] {
                acc = add(acc, *p);
            }
            scale(acc, 1.0 / (2 * h + 1) as f64)
        })
        .collect()
}

/// Unit tangents by central differences over `half` points each side.
pub fn tangents(points: &[Vec3], half: usize) -> Vec<Vec3> {
    let n = points.len();
    let mut last = [0.0, 0.0, 1.0];
    (0..n)
        .map(|i| {
            let a = i.saturating_sub(half.max(1));
            let b = (i + half.max(1)).min(n - 1);
            if let Some(t) = unit(sub(points[b], points[a])) {
                last = t;
            }
            last
        })
        .collect()
}

/// Bending of a polyline sampled at `step_mm`: cumulative turning angle (deg) and the
/// maximum Menger curvature (1/mm) with its point index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bending {
    pub turning_angle_deg: f64,
    pub max_curvature_per_mm: f64,
    pub max_curvature_index: usize,
}

/// Turning angle and curvature measured on the polyline resampled at `step_mm`
/// (the scale at which bends are seen; 2 mm suits catheters and suppresses voxel noise).
/// The returned index refers to `points`.
pub fn bending(points: &[Vec3], step_mm: f64) -> Bending {
    let samples = resample(points, step_mm);
    let mut turning = 0.0;
    let mut kmax = 0.0;
    let mut kpos = samples.first().copied().unwrap_or([0.0; 3]);
    for w in samples.windows(3) {
        let (a, b) = (sub(w[1], w[0]), sub(w[2], w[1]));
        let (na, nb) = (norm(a), norm(b));
        if na < 1e-9 || nb < 1e-9 {
            continue;
        }
        let cos = (dot(a, b) / (na * nb)).clamp(-1.0, 1.0);
        let angle = cos.acos();
        turning += angle;
        let chord = dist(w[0], w[2]);
        // Menger curvature: 4·area / (|ab| |bc| |ca|) = 2 sin(angle) / |ca|.
        let k = if chord > 1e-9 {
            2.0 * angle.sin() / chord
        } else {
            0.0
        };
        if k > kmax {
            kmax = k;
            kpos = w[1];
        }
    }
    let max_curvature_index = points
        .iter()
        .enumerate()
        .min_by(|a, b| dist(*a.1, kpos).total_cmp(&dist(*b.1, kpos)))
        .map_or(0, |(i, _)| i);
    Bending {
        turning_angle_deg: turning.to_degrees(),
        max_curvature_per_mm: kmax,
        max_curvature_index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resample_keeps_length_of_a_straight_line() {
        let pts = vec![[0.0, 0.0, 0.0], [0.0, 0.0, 3.3], [0.0, 0.0, 10.0]];
        let r = resample(&pts, 1.0);
        assert_eq!(r.len(), 11);
        assert!((polyline_length(&r) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn circle_turning_and_curvature() {
        let radius = 20.0;
        let pts: Vec<Vec3> = (0..=900)
            .map(|i| {
                let a = std::f64::consts::PI * i as f64 / 900.0;
                [radius * a.cos(), radius * a.sin(), 0.0]
            })
            .collect();
        let b = bending(&pts, 2.0);
        // Chords of 2 mm on a 20 mm radius, the last one shorter: the half angles the first
        // and the last chord subtend are not turned through.
        let length = std::f64::consts::PI * radius;
        let last = length - 2.0 * (length / 2.0).floor();
        let expected = 180.0 - ((2.0 + last) / (2.0 * radius)).to_degrees();
        assert!((b.turning_angle_deg - expected).abs() < 1.0, "{b:?}");
        assert!(
            (b.max_curvature_per_mm - 1.0 / radius).abs() < 1e-3,
            "{b:?}"
        );
    }
}
