//! A tracked needle against the ultrasound image plane, in closed form.
//!
//! All inputs and outputs are LPS millimetres or continuous pixel coordinates of the
//! frame (`[i, j]`, integers at pixel centres, as [`ImagePlane::pixel_to_lps`]).

use pinhole_volume::math::{dot, norm, Vec3};
use serde::{Deserialize, Serialize};

use crate::plane::ImagePlane;

/// Default in-plane tolerance (mm). A linear probe's beam is a few millimetres thick in
/// the elevational direction (about 1–3 mm at the elevation focus, wider away from it);
/// a needle tip within ±2 mm of the nominal plane is normally seen in the image, one
/// farther away is not, or only as a partial-volume ghost.
pub const DEFAULT_IN_PLANE_TOLERANCE_MM: f64 = 2.0;

/// Below this |sin| of the needle–plane angle the needle counts as parallel to the plane
/// and its line has no crossing point.
pub const PARALLEL_SINE: f64 = 1e-9;

/// Why the metrics could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InPlaneError {
    #[error("the needle tip must be finite, got {0:?}")]
    NonFiniteTip(Vec3),
    #[error("the needle direction must be finite and non-zero, got {0:?}")]
    BadDirection(Vec3),
    #[error("{name} must be finite and non-negative, got {value} mm")]
    BadOption { name: &'static str, value: f64 },
}

/// Options of [`needle_in_plane`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InPlaneOptions {
    /// `in_plane` holds when the tip is at most this far from the plane (mm).
    /// Default [`DEFAULT_IN_PLANE_TOLERANCE_MM`]: a linear probe's elevational beam width.
    pub in_plane_tolerance_mm: f64,
    /// `out_of_plane_alert` is raised when the tip is farther than this from the plane
    /// (mm). Default: the in-plane tolerance, so the alert is "not in plane"; set it
    /// larger to alert only on a clear departure.
    pub alert_distance_mm: f64,
    /// Length of shaft behind the tip drawn as the projected needle (mm).
    pub shaft_shown_mm: f64,
    /// Length of the predicted path ahead of the tip (mm).
    pub path_ahead_mm: f64,
}

impl Default for InPlaneOptions {
    fn default() -> Self {
        Self {
            in_plane_tolerance_mm: DEFAULT_IN_PLANE_TOLERANCE_MM,
            alert_distance_mm: DEFAULT_IN_PLANE_TOLERANCE_MM,
            shaft_shown_mm: 50.0,
            path_ahead_mm: 50.0,
        }
    }
}

/// Where the needle's line crosses the image plane.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlaneCrossing {
    /// The crossing point, LPS mm.
    pub point_lps: Vec3,
    /// The crossing point in pixel coordinates `[i, j]` (may lie outside the frame).
    pub pixel: [f64; 2],
    /// Signed distance from the tip to the crossing along the needle (mm): `+` ahead of
    /// the tip (the needle will reach the plane), `−` behind it (it already crossed).
    pub along_needle_from_tip_mm: f64,
}

/// The needle against the image plane.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NeedleInPlane {
    /// Signed distance of the tip from the plane (mm), `+` along the plane normal
    /// `col_x × col_y` of `ImageToLps`.
    pub tip_distance_mm: f64,
    /// Angle between the needle and the plane (degrees, 0 = needle in the plane's
    /// direction, 90 = needle along the normal).
    pub angle_to_plane_deg: f64,
    /// Where the needle's line crosses the plane; `None` when it is parallel.
    pub crossing: Option<PlaneCrossing>,
    /// The tip projected onto the plane, pixel coordinates `[i, j]`.
    pub tip_pixel: [f64; 2],
    /// The projected needle: from the shaft point `shaft_shown_mm` behind the tip to the
    /// tip, pixel coordinates `[[i, j] back, [i, j] tip]`.
    pub needle_segment_px: [[f64; 2]; 2],
    /// The predicted path: from the tip to `path_ahead_mm` ahead of it, pixel coordinates.
    pub predicted_path_px: [[f64; 2]; 2],
    /// |tip distance| ≤ `in_plane_tolerance_mm`.
    pub in_plane: bool,
    /// |tip distance| > `alert_distance_mm`.
    pub out_of_plane_alert: bool,
    /// The tolerance and alert distance used (mm), for the reader of a report.
    pub in_plane_tolerance_mm: f64,
    pub alert_distance_mm: f64,
}

/// The needle (tip in LPS, direction pointing towards the tip, i.e. the direction of
/// insertion) against the image plane. The direction need not be unit length.
pub fn needle_in_plane(
    tip_lps: Vec3,
    direction_lps: Vec3,
    plane: &ImagePlane,
    options: &InPlaneOptions,
) -> Result<NeedleInPlane, InPlaneError> {
    if tip_lps.iter().any(|v| !v.is_finite()) {
        return Err(InPlaneError::NonFiniteTip(tip_lps));
    }
    let length = norm(direction_lps);
    if !(length.is_finite() && length > 0.0) {
        return Err(InPlaneError::BadDirection(direction_lps));
    }
    for (name, value) in [
        ("in_plane_tolerance_mm", options.in_plane_tolerance_mm),
        ("alert_distance_mm", options.alert_distance_mm),
        ("shaft_shown_mm", options.shaft_shown_mm),
        ("path_ahead_mm", options.path_ahead_mm),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(InPlaneError::BadOption { name, value });
        }
    }
    let d = direction_lps.map(|v| v / length);
    let n = plane.normal_lps();
    let tip_distance_mm = plane.signed_distance_mm(tip_lps);
    let sine = dot(d, n);
    let angle_to_plane_deg = sine.abs().min(1.0).asin().to_degrees();
    let along = |t: f64| -> Vec3 { std::array::from_fn(|a| tip_lps[a] + t * d[a]) };
    let crossing = (sine.abs() >= PARALLEL_SINE).then(|| {
        let t = -tip_distance_mm / sine;
        let point_lps = along(t);
        PlaneCrossing {
            point_lps,
            pixel: plane.lps_to_pixel(point_lps),
            along_needle_from_tip_mm: t,
        }
    });
    let tip_pixel = plane.lps_to_pixel(tip_lps);
    let back_pixel = plane.lps_to_pixel(along(-options.shaft_shown_mm));
    let ahead_pixel = plane.lps_to_pixel(along(options.path_ahead_mm));
    Ok(NeedleInPlane {
        tip_distance_mm,
        angle_to_plane_deg,
        crossing,
        tip_pixel,
        needle_segment_px: [back_pixel, tip_pixel],
        predicted_path_px: [tip_pixel, ahead_pixel],
        in_plane: tip_distance_mm.abs() <= options.in_plane_tolerance_mm,
        out_of_plane_alert: tip_distance_mm.abs() > options.alert_distance_mm,
        in_plane_tolerance_mm: options.in_plane_tolerance_mm,
        alert_distance_mm: options.alert_distance_mm,
    })
}
