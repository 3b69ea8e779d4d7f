//! Synthesized needle insertions along a plan (for `pinhole replay --synthesize`, the
//! demo and tests): RAS `NeedleTipToReference` poses with a small, deterministic drift.

use pinhole_volume::math::{unit, DVec3, Mat4, Vec3};

use crate::pose::{flip_xy, perpendicular_frame, plan_to_ras};
use crate::session::PlannedNeedle;

pub use pinhole_io::pose_csv::TimedPose;

/// A needle pose (RAS) with its tip at `tip_lps` and axis `axis_lps`.
pub fn pose_ras(tip_lps: Vec3, axis_lps: Vec3) -> Mat4 {
    plan_to_ras(tip_lps, Some(axis_lps))
}

/// The LPS tip of a RAS pose (for printing).
pub fn tip_lps(m: &Mat4) -> Vec3 {
    let l = flip_xy(m);
    [l[0][3], l[1][3], l[2][3]]
}

/// An insertion along the plan's first path (entry → target), `duration_s` long at
/// `rate_hz`, in RAS: the tip advances uniformly from 10 mm outside the entry to the
/// target with a small drift — a lateral wander of up to 1.5 mm (two slow sinusoids,
/// vanishing at the start) and an axis wobble of up to about 1.5°. Deterministic.
pub fn insertion(plan: &PlannedNeedle, rate_hz: f64, duration_s: f64) -> Vec<TimedPose> {
    let target = DVec3::from(plan.path_target_lps);
    let entry = plan
        .entry_lps
        .map_or(target + DVec3::new(0.0, 80.0, 0.0), DVec3::from);
    let d = unit(target - entry).unwrap_or(DVec3::NEG_Y);
    // Two unit vectors perpendicular to the path.
    let (u, w) = perpendicular_frame(d);
    let start = entry - d * 10.0;
    let length = (target - start).length();
    let n = ((duration_s * rate_hz).round() as usize).max(2);
    (0..n)
        .map(|i| {
            let s = i as f64 / (n - 1) as f64;
            let t_s = i as f64 / rate_hz;
            let ramp = (s * std::f64::consts::PI).sin();
            let a = 1.5 * ramp * (2.0 * std::f64::consts::PI * 0.7 * t_s).sin() * 0.7;
            let b = 1.5 * ramp * (2.0 * std::f64::consts::PI * 0.3 * t_s).cos() * 0.7;
            let tip = start + d * length * s + u * a + w * b;
            let wobble = 0.025 * ramp * (2.0 * std::f64::consts::PI * 0.5 * t_s).sin();
            let axis = unit(d + u * wobble).unwrap_or(d);
            TimedPose {
                t_s,
                matrix: pose_ras(tip.to_array(), axis.to_array()),
            }
        })
        .collect()
}
