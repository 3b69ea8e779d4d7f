//! The RAS ↔ LPS edge and the tracker registration.
//!
//! Tracked poses arrive as RAS mm (3D Slicer's frame), or in a tracker reference frame
//! that a registration `ReferenceToRAS` maps to RAS. The needle pose is
//! `NeedleTipToReference`: the tip at the origin, the needle axis along +z (column 2 of
//! the rotation). Conversion: `pose_lps = F · ReferenceToRAS · NeedleTipToReference`,
//! F = diag(−1, −1, 1, 1).
//!
//! Registration files (4×4 text, ITK `.tfm`) are read by `pinhole_io::transform`.

pub use pinhole_volume::math::{
    affine_inverse, mat4_mul, swap_lps_ras as flip_xy, Mat4, IDENTITY4,
};
use pinhole_volume::math::{unit, DVec3, Vec3};

use crate::engine::NeedlePose;

/// The needle pose in LPS from `NeedleTipToReference` (RAS-like tracker frame) and an
/// optional `ReferenceToRAS`. `None` when the axis is degenerate or values not finite.
pub fn needle_pose_lps(
    tip_to_reference: &Mat4,
    reference_to_ras: Option<&Mat4>,
) -> Option<NeedlePose> {
    let ras = match reference_to_ras {
        Some(r) => mat4_mul(r, tip_to_reference),
        None => *tip_to_reference,
    };
    let lps = flip_xy(&ras);
    let tip: Vec3 = [lps[0][3], lps[1][3], lps[2][3]];
    let axis = unit(DVec3::new(lps[0][2], lps[1][2], lps[2][2]))?;
    tip.iter().all(|v| v.is_finite()).then_some(NeedlePose {
        tip_lps: tip,
        axis_lps: axis.to_array(),
    })
}

/// A pose (RAS, row-major 4×4) whose origin is `target_lps` and whose z axis is
/// `direction_lps` (x and y completing a right-handed frame): `PlanToRAS`.
pub fn plan_to_ras(target_lps: Vec3, direction_lps: Option<Vec3>) -> Mat4 {
    let z = direction_lps
        .and_then(|d| unit(DVec3::from(d)))
        .unwrap_or(DVec3::Z);
    let (x, y) = perpendicular_frame(z);
    let mut lps = IDENTITY4;
    for r in 0..3 {
        lps[r][0] = x[r];
        lps[r][1] = y[r];
        lps[r][2] = z[r];
        lps[r][3] = target_lps[r];
    }
    flip_xy(&lps)
}

/// Two unit vectors completing the unit `z` to a right-handed frame (x, y, z).
pub fn perpendicular_frame(z: DVec3) -> (DVec3, DVec3) {
    // Any vector not parallel to z.
    let helper = if z.x.abs() < 0.9 { DVec3::X } else { DVec3::Y };
    let x = unit(helper.cross(z)).unwrap_or(DVec3::X);
    (x, z.cross(x))
}
