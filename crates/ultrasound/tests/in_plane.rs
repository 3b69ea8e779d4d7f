//! Needle against the image plane, on constructed poses with closed-form answers.

use pinhole_ultrasound::{needle_in_plane, ImagePlane, InPlaneError, InPlaneOptions};

use crate::common::*;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// A frame in an oblique plane, so that no answer is an axis-aligned coincidence:
/// 0.2 mm × 0.25 mm pixels, pixel (0, 0) at `ORIGIN`.
const ORIGIN: [f64; 3] = [12.0, -40.0, 85.0];

fn frame() -> (ImagePlane, [f64; 3], [f64; 3], [f64; 3]) {
    let r = mat3_mul(
        &rotation([0.0, 0.0, 1.0], 25.0),
        &rotation([1.0, 0.0, 0.0], -60.0),
    );
    let (ux, uy, n) = (column(&r, 0), column(&r, 1), column(&r, 2));
    let plane = ImagePlane::from_steps(ORIGIN, ux.map(|v| v * 0.2), uy.map(|v| v * 0.25), 640, 480)
        .unwrap();
    (plane, ux, uy, n)
}

/// LPS point at pixel `(i, j)` of the frame, `h` mm along its normal.
fn at(ux: [f64; 3], uy: [f64; 3], n: [f64; 3], pixel: [f64; 2], h: f64) -> [f64; 3] {
    std::array::from_fn(|a| ORIGIN[a] + pixel[0] * 0.2 * ux[a] + pixel[1] * 0.25 * uy[a] + h * n[a])
}

#[test]
fn tip_exactly_in_plane_with_the_needle_in_plane() {
    let (plane, ux, uy, n) = frame();
    // The normal is col_x × col_y normalised: the rotation's third column.
    for a in 0..3 {
        assert!(close(plane.normal_lps()[a], n[a], 1e-12));
    }
    let tip = at(ux, uy, n, [300.0, 200.0], 0.0);
    // Needle in the plane, 30° below the pixel x axis (towards +y).
    let (s, c) = 30f64.to_radians().sin_cos();
    let dir: [f64; 3] = std::array::from_fn(|a| c * ux[a] + s * uy[a]);
    let m = needle_in_plane(tip, dir, &plane, &InPlaneOptions::default()).unwrap();
    assert!(close(m.tip_distance_mm, 0.0, 1e-9));
    assert!(close(m.angle_to_plane_deg, 0.0, 1e-6));
    assert!(
        m.crossing.is_none(),
        "a needle in the plane is parallel to it"
    );
    assert!(close(m.tip_pixel[0], 300.0, 1e-9) && close(m.tip_pixel[1], 200.0, 1e-9));
    // 50 mm of shaft behind the tip: −50·cos30° mm along x (0.2 mm pixels), −50·sin30°
    // along y (0.25 mm pixels).
    let back = m.needle_segment_px[0];
    assert!(close(back[0], 300.0 - 50.0 * c / 0.2, 1e-9), "{back:?}");
    assert!(close(back[1], 200.0 - 50.0 * s / 0.25, 1e-9), "{back:?}");
    let ahead = m.predicted_path_px[1];
    assert!(close(ahead[0], 300.0 + 50.0 * c / 0.2, 1e-9));
    assert!(close(ahead[1], 200.0 + 50.0 * s / 0.25, 1e-9));
    assert_eq!(m.needle_segment_px[1], m.tip_pixel);
    assert_eq!(m.predicted_path_px[0], m.tip_pixel);
    assert!(m.in_plane && !m.out_of_plane_alert);
}

#[test]
fn tip_five_millimetres_off_the_plane() {
    let (plane, ux, uy, n) = frame();
    for (h, pixel) in [(5.0, [100.0, 50.0]), (-5.0, [-20.0, 600.0])] {
        let tip = at(ux, uy, n, pixel, h);
        // Needle along the normal (perpendicular to the plane), pointing back to it.
        let dir = n.map(|v| -v * h.signum());
        let m = needle_in_plane(tip, dir, &plane, &InPlaneOptions::default()).unwrap();
        assert!(close(m.tip_distance_mm, h, 1e-9), "{}", m.tip_distance_mm);
        assert!(close(m.angle_to_plane_deg, 90.0, 1e-6));
        assert!(close(m.tip_pixel[0], pixel[0], 1e-9) && close(m.tip_pixel[1], pixel[1], 1e-9));
        let crossing = m.crossing.unwrap();
        // 5 mm ahead of the tip, at the tip's projection (also outside the frame).
        assert!(close(crossing.along_needle_from_tip_mm, 5.0, 1e-9));
        assert!(
            close(crossing.pixel[0], pixel[0], 1e-9) && close(crossing.pixel[1], pixel[1], 1e-9)
        );
        assert!(!m.in_plane && m.out_of_plane_alert);
        // A perpendicular needle projects to a point.
        assert!(close(m.needle_segment_px[0][0], pixel[0], 1e-9));
        // With a 6 mm tolerance it is in plane; with an 8 mm alert distance no alert.
        let loose = InPlaneOptions {
            in_plane_tolerance_mm: 6.0,
            alert_distance_mm: 8.0,
            ..InPlaneOptions::default()
        };
        let m = needle_in_plane(tip, dir, &plane, &loose).unwrap();
        assert!(m.in_plane && !m.out_of_plane_alert);
    }
}

#[test]
fn needle_at_thirty_degrees_crosses_at_the_known_point() {
    let (plane, ux, uy, n) = frame();
    // The needle will cross the plane at pixel (250, 180); it makes 30° with the plane,
    // its in-plane component along −y. The tip is 20 mm before the crossing, i.e. 10 mm
    // above the plane (sin 30° · 20).
    let cross_pixel = [250.0, 180.0];
    let crossing_lps = at(ux, uy, n, cross_pixel, 0.0);
    let (s, c) = 30f64.to_radians().sin_cos();
    let dir: [f64; 3] = std::array::from_fn(|a| -c * uy[a] - s * n[a]);
    let tip: [f64; 3] = std::array::from_fn(|a| crossing_lps[a] - 20.0 * dir[a]);
    let m = needle_in_plane(
        tip,
        dir.map(|v| v * 3.0),
        &plane,
        &InPlaneOptions::default(),
    )
    .unwrap();
    assert!(close(m.tip_distance_mm, 10.0, 1e-9));
    assert!(close(m.angle_to_plane_deg, 30.0, 1e-9));
    let crossing = m.crossing.unwrap();
    assert!(close(crossing.along_needle_from_tip_mm, 20.0, 1e-9));
    for a in 0..3 {
        assert!(close(crossing.point_lps[a], crossing_lps[a], 1e-9));
    }
    assert!(close(crossing.pixel[0], 250.0, 1e-9) && close(crossing.pixel[1], 180.0, 1e-9));
    // Tip projection: 20·cos30° mm before the crossing along −y → +y pixels.
    assert!(close(m.tip_pixel[1], 180.0 + 20.0 * c / 0.25, 1e-9));
    assert!(close(m.tip_pixel[0], 250.0, 1e-9));
    // Going the other way the line crossed 20 mm behind the tip.
    let m = needle_in_plane(tip, dir.map(|v| -v), &plane, &InPlaneOptions::default()).unwrap();
    assert!(close(
        m.crossing.unwrap().along_needle_from_tip_mm,
        -20.0,
        1e-9
    ));
    // Serialises with units in the names.
    let json = serde_json::to_value(m).unwrap();
    assert!(json["tip_distance_mm"].is_f64() && json["angle_to_plane_deg"].is_f64());
}

#[test]
fn parallel_needle_has_no_crossing() {
    let (plane, ux, uy, n) = frame();
    let tip = at(ux, uy, n, [10.0, 10.0], 3.0);
    let m = needle_in_plane(tip, ux, &plane, &InPlaneOptions::default()).unwrap();
    assert!(m.crossing.is_none());
    assert!(close(m.angle_to_plane_deg, 0.0, 1e-9));
    assert!(close(m.tip_distance_mm, 3.0, 1e-9));
    assert!(close(m.predicted_path_px[1][0], 10.0 + 50.0 / 0.2, 1e-9));
    let json = serde_json::to_value(m).unwrap();
    assert!(json["crossing"].is_null());
}

#[test]
fn refuses_bad_needles() {
    let (plane, ..) = frame();
    let options = InPlaneOptions::default();
    assert!(matches!(
        needle_in_plane([f64::NAN, 0.0, 0.0], [1.0, 0.0, 0.0], &plane, &options),
        Err(InPlaneError::NonFiniteTip(_))
    ));
    assert!(matches!(
        needle_in_plane([0.0; 3], [0.0; 3], &plane, &options),
        Err(InPlaneError::BadDirection(_))
    ));
    let negative = InPlaneOptions {
        in_plane_tolerance_mm: -1.0,
        ..options
    };
    assert!(matches!(
        needle_in_plane([0.0; 3], [1.0, 0.0, 0.0], &plane, &negative),
        Err(InPlaneError::BadOption { .. })
    ));
}
