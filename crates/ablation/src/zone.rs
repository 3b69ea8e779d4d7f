//! Applicators and ellipsoidal ablation zones in LPS millimetres.

pub(crate) use pinhole_volume::math::{add, scale, sub};
use pinhole_volume::math::{dot, norm};
use pinhole_volume::{Grid, Mask, Vec3};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::devices::ZoneEntry;
use crate::error::{invalid, AblationError};

/// A needle-like applicator: its active tip and its axis (unit vector pointing from the
/// skin entry towards the tip, i.e. the direction of insertion), LPS mm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Applicator {
    pub tip_lps: Vec3,
    pub axis_lps: Vec3,
}

impl Applicator {
    /// An applicator with its axis normalised; fails for a zero or non-finite axis.
    pub fn new(tip_lps: Vec3, axis_lps: Vec3) -> Result<Self, AblationError> {
        Ok(Self {
            tip_lps,
            axis_lps: unit(axis_lps)?,
        })
    }
}

/// A spheroidal zone: long axis along the applicator, circular cross-section.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EllipsoidZone {
    pub center_lps: Vec3,
    /// Unit long-axis direction (the applicator's insertion direction).
    pub axis_lps: Vec3,
    /// Full length along the axis, mm.
    pub long_axis_mm: f64,
    /// Full diameter across the axis, mm.
    pub short_axis_mm: f64,
}

impl EllipsoidZone {
    /// The zone a table entry gives for `applicator`: it ends `beyond_tip_mm` past the tip.
    pub fn from_applicator(applicator: &Applicator, entry: &ZoneEntry) -> Self {
        let shift = entry.beyond_tip_mm - entry.long_axis_mm / 2.0;
        Self {
            center_lps: add(applicator.tip_lps, scale(applicator.axis_lps, shift)),
            axis_lps: applicator.axis_lps,
            long_axis_mm: entry.long_axis_mm,
            short_axis_mm: entry.short_axis_mm,
        }
    }

    /// The applicator tip that puts this zone's centre at `center_lps` along `axis`.
    pub fn tip_for_center(center_lps: Vec3, axis_lps: Vec3, entry: &ZoneEntry) -> Vec3 {
        let shift = entry.beyond_tip_mm - entry.long_axis_mm / 2.0;
        sub(center_lps, scale(axis_lps, shift))
    }

    /// True when `p` lies inside (or on) the zone.
    #[inline]
    pub fn contains(&self, p: Vec3) -> bool {
        let d = sub(p, self.center_lps);
        let t = dot(d, self.axis_lps);
        let radial2 = (dot(d, d) - t * t).max(0.0);
        let a = self.long_axis_mm / 2.0;
        let b = self.short_axis_mm / 2.0;
        (t * t) / (a * a) + radial2 / (b * b) <= 1.0
    }

    /// Volume in mL (4/3·π·a·b², a and b the semi-axes in mm).
    pub fn volume_ml(&self) -> f64 {
        let a = self.long_axis_mm / 2.0;
        let b = self.short_axis_mm / 2.0;
        4.0 / 3.0 * std::f64::consts::PI * a * b * b / 1000.0
    }

    /// Voxels of `grid` whose centres lie inside the zone.
    pub fn mask(&self, grid: &Grid) -> Mask {
        union_mask(grid, std::slice::from_ref(self))
    }
}

/// Voxels of `grid` whose centres lie in any of `zones`.
pub fn union_mask(grid: &Grid, zones: &[EllipsoidZone]) -> Mask {
    let [nx, ny, _] = grid.dims();
    let mut data = vec![false; grid.voxel_count()];
    data.par_chunks_mut(nx * ny)
        .enumerate()
        .for_each(|(k, slab)| {
            for (o, v) in slab.iter_mut().enumerate() {
                let p = grid.index_to_world([(o % nx) as f64, (o / nx) as f64, k as f64]);
                *v = zones.iter().any(|z| z.contains(p));
            }
        });
    volume_from(grid, data, false)
}

pub(crate) fn unit(v: Vec3) -> Result<Vec3, AblationError> {
    let n = norm(v);
    if !n.is_finite() || n < 1e-9 {
        return Err(invalid(
            "applicator axis",
            format!("must be a finite non-zero vector, got {v:?}"),
        ));
    }
    Ok(scale(v, 1.0 / n))
}

/// Two unit vectors perpendicular to `axis` and to each other.
pub(crate) fn perpendicular_pair(axis: Vec3) -> (Vec3, Vec3) {
    let helper = if axis[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let u = pinhole_volume::math::cross(axis, helper);
    let nu = norm(u).max(1e-12);
    let u = scale(u, 1.0 / nu);
    let v = pinhole_volume::math::cross(axis, u);
    (u, v)
}

/// A volume over `grid` from `data` of the grid's length (built by this crate, so the
/// length always matches; `fill` is the fallback should it not).
pub(crate) fn volume_from<T: pinhole_volume::Voxel>(
    grid: &Grid,
    data: Vec<T>,
    fill: T,
) -> pinhole_volume::Volume<T> {
    pinhole_volume::Volume::new(grid.clone(), data)
        .unwrap_or_else(|_| pinhole_volume::Volume::filled(grid.clone(), fill))
}
