//! Targets as users name them on the command line, shared by every planner and the
//! guidance server: a label name, a point `x,y,z` (LPS mm) or a sphere `x,y,z,r`.
//!
//! ```
//! use pinhole_volume::target::{TargetSpec, LabelAim};
//! assert_eq!("10,-2.5,30".parse::<TargetSpec>()?, TargetSpec::Point([10.0, -2.5, 30.0]));
//! assert_eq!(
//!     "kidney_cyst_left:deepest".parse::<TargetSpec>()?,
//!     TargetSpec::Label { name: "kidney_cyst_left".into(), aim: LabelAim::Deepest }
//! );
//! # Ok::<(), pinhole_volume::target::TargetError>(())
//! ```

use std::str::FromStr;

use crate::distance::distance_inside;
use crate::math::Vec3;
use crate::volume::{LabelVoxel, Mask, Volume};

/// Where to aim inside a labelled target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelAim {
    /// The centroid when it lies inside the label, else the deepest point.
    #[default]
    Auto,
    /// The label's centroid, even if it falls outside a non-convex label.
    Centroid,
    /// The voxel farthest from the label's boundary (maximal inscribed sphere centre).
    Deepest,
}

/// A target as written by the user.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetSpec {
    Label { name: String, aim: LabelAim },
    Point(Vec3),
    Sphere { center_lps: Vec3, radius_mm: f64 },
}

/// Why a target could not be parsed or found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetError {
    #[error("target {0:?}: expected a label name, x,y,z (LPS mm) or x,y,z,r")]
    Malformed(String),
    #[error("target {spec:?}: sphere radius must be positive, got {radius_mm} mm")]
    BadRadius { spec: String, radius_mm: f64 },
    #[error("target label {0:?} is not in the label table")]
    UnknownLabel(String),
    #[error("target label {name:?} (id {id}) has no voxel in the label map")]
    EmptyLabel { name: String, id: u32 },
    #[error("target point {point_lps:?} (LPS mm) lies outside the volume")]
    OutsideVolume { point_lps: Vec3 },
    #[error("target sphere at {center_lps:?} r={radius_mm} mm covers no voxel of the volume")]
    EmptySphere { center_lps: Vec3, radius_mm: f64 },
}

impl FromStr for TargetSpec {
    type Err = TargetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let malformed = || TargetError::Malformed(text.to_string());
        if text.is_empty() {
            return Err(malformed());
        }
        let looks_numeric = text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.'));
        if looks_numeric {
            let numbers = text
                .split(',')
                .map(|part| part.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
                .collect::<Option<Vec<f64>>>()
                .ok_or_else(malformed)?;
            return match numbers[..] {
                [x, y, z] => Ok(TargetSpec::Point([x, y, z])),
                [x, y, z, r] if r > 0.0 => Ok(TargetSpec::Sphere {
                    center_lps: [x, y, z],
                    radius_mm: r,
                }),
                [_, _, _, r] => Err(TargetError::BadRadius {
                    spec: text.to_string(),
                    radius_mm: r,
                }),
                _ => Err(malformed()),
            };
        }
        let (name, aim) = match text.rsplit_once(':') {
            Some((name, "centroid")) => (name, LabelAim::Centroid),
            Some((name, "deepest")) => (name, LabelAim::Deepest),
            Some(_) => return Err(malformed()),
            None => (text, LabelAim::Auto),
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(malformed());
        }
        Ok(TargetSpec::Label {
            name: name.to_string(),
            aim,
        })
    }
}

/// A target located on a label map's grid.
#[derive(Debug, Clone)]
pub struct Target {
    /// The point to aim at, LPS mm.
    pub point_lps: Vec3,
    /// The target region on the label grid (label voxels, sphere voxels, or the single
    /// voxel holding a point target).
    pub region: Mask,
    /// The label id when the target is a label.
    pub label_id: Option<u32>,
    /// Human-readable description for reports (`kidney_cyst_left (deepest point)`, ...).
    pub description: String,
}

impl TargetSpec {
    /// Locates the target on `labels`; `id_of` maps a label name to its id (a label table).
    pub fn resolve<T: LabelVoxel>(
        &self,
        labels: &Volume<T>,
        id_of: impl Fn(&str) -> Option<u32>,
    ) -> Result<Target, TargetError> {
        match self {
            TargetSpec::Label { name, aim } => {
                let id = id_of(name).ok_or_else(|| TargetError::UnknownLabel(name.clone()))?;
                resolve_label(labels, name, id, *aim)
            }
            TargetSpec::Point(point_lps) => resolve_point(labels, *point_lps),
            TargetSpec::Sphere {
                center_lps,
                radius_mm,
            } => resolve_sphere(labels, *center_lps, *radius_mm),
        }
    }
}

fn resolve_label<T: LabelVoxel>(
    labels: &Volume<T>,
    name: &str,
    id: u32,
    aim: LabelAim,
) -> Result<Target, TargetError> {
    let grid = labels.grid().clone();
    let region_data: Vec<bool> = labels.data().iter().map(|v| v.id() == id).collect();
    let count = region_data.iter().filter(|&&b| b).count();
    if count == 0 {
        return Err(TargetError::EmptyLabel {
            name: name.to_string(),
            id,
        });
    }
    let region = Mask::new(grid.clone(), region_data).map_err(|_| TargetError::EmptyLabel {
        name: name.to_string(),
        id,
    })?;
    let centroid = centroid_lps(&region);
    let centroid_inside = region.sample_nearest(centroid).unwrap_or(false);
    let (point_lps, how) = match aim {
        LabelAim::Centroid => (centroid, "centroid"),
        LabelAim::Auto if centroid_inside => (centroid, "centroid"),
        LabelAim::Auto | LabelAim::Deepest => (deepest_point(&region), "deepest point"),
    };
    Ok(Target {
        point_lps,
        region,
        label_id: Some(id),
        description: format!("{name} ({how})"),
    })
}

fn resolve_point<T: LabelVoxel>(
    labels: &Volume<T>,
    point_lps: Vec3,
) -> Result<Target, TargetError> {
    let grid = labels.grid().clone();
    let voxel = grid
        .world_to_voxel(point_lps)
        .ok_or(TargetError::OutsideVolume { point_lps })?;
    let mut region = Mask::filled(grid.clone(), false);
    let offset = grid.offset(voxel);
    region.data_mut()[offset] = true;
    Ok(Target {
        point_lps,
        region,
        label_id: None,
        description: format!(
            "point ({:.1}, {:.1}, {:.1}) LPS mm",
            point_lps[0], point_lps[1], point_lps[2]
        ),
    })
}

fn resolve_sphere<T: LabelVoxel>(
    labels: &Volume<T>,
    center_lps: Vec3,
    radius_mm: f64,
) -> Result<Target, TargetError> {
    let region = sphere_mask(labels.grid(), center_lps, radius_mm);
    if !region.data().iter().any(|&b| b) {
        return Err(TargetError::EmptySphere {
            center_lps,
            radius_mm,
        });
    }
    Ok(Target {
        point_lps: center_lps,
        region,
        label_id: None,
        description: format!(
            "sphere ({:.1}, {:.1}, {:.1}) LPS mm, r = {radius_mm:.1} mm",
            center_lps[0], center_lps[1], center_lps[2]
        ),
    })
}

/// Voxels whose centres lie within `radius_mm` of `center_lps`.
pub fn sphere_mask(grid: &crate::Grid, center_lps: Vec3, radius_mm: f64) -> Mask {
    let [nx, ny, nz] = grid.dims();
    let mut data = vec![false; grid.voxel_count()];
    let r2 = radius_mm * radius_mm;
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let p = grid.index_to_world([i as f64, j as f64, k as f64]);
                let d2: f64 = (0..3).map(|a| (p[a] - center_lps[a]).powi(2)).sum();
                if d2 <= r2 {
                    data[i + nx * (j + ny * k)] = true;
                }
            }
        }
    }
    Mask::new(grid.clone(), data).unwrap_or_else(|_| Mask::filled(grid.clone(), false))
}

fn centroid_lps(region: &Mask) -> Vec3 {
    let grid = region.grid();
    let mut sum = [0.0; 3];
    let mut count = 0usize;
    for (offset, _) in region.data().iter().enumerate().filter(|(_, &b)| b) {
        let ijk = grid.index_of_offset(offset);
        for a in 0..3 {
            sum[a] += ijk[a] as f64;
        }
        count += 1;
    }
    let n = count.max(1) as f64;
    grid.index_to_world([sum[0] / n, sum[1] / n, sum[2] / n])
}

fn deepest_point(region: &Mask) -> Vec3 {
    let depth = distance_inside(region);
    let (offset, _) =
        depth.data().iter().enumerate().fold(
            (0, f32::MIN),
            |best, (o, &d)| if d > best.1 { (o, d) } else { best },
        );
    let ijk = region.grid().index_of_offset(offset);
    region
        .grid()
        .index_to_world([ijk[0] as f64, ijk[1] as f64, ijk[2] as f64])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Grid;

    #[test]
    fn parses_every_form_and_rejects_garbage() {
        assert_eq!(
            "1,2,3,4".parse::<TargetSpec>(),
            Ok(TargetSpec::Sphere {
                center_lps: [1.0, 2.0, 3.0],
                radius_mm: 4.0
            })
        );
        assert!(matches!(
            "1,2,3,-4".parse::<TargetSpec>(),
            Err(TargetError::BadRadius { .. })
        ));
        for bad in [
            "",
            "1,2",
            "1,2,x",
            "liver:middle",
            "a b",
            "1,2,3,4,5",
            "1,2,nan",
        ] {
            assert!(bad.parse::<TargetSpec>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn hollow_label_aims_at_its_deepest_point_not_its_empty_centroid() {
        // A hollow square: its centroid falls in the hole.
        let grid = Grid::axis_aligned([20, 20, 1], [1.0; 3], [0.0; 3]).unwrap();
        let mut labels = Volume::filled(grid, 0u8);
        for j in 0..20 {
            for i in 0..20 {
                let ring = (2..18).contains(&i) && (2..18).contains(&j);
                let gap = (6..14).contains(&i) && (6..14).contains(&j);
                if ring && !gap {
                    labels.data_mut()[i + 20 * j] = 5;
                }
            }
        }
        let spec: TargetSpec = "lesion".parse().unwrap();
        let target = spec
            .resolve(&labels, |n| (n == "lesion").then_some(5))
            .unwrap();
        assert!(labels.sample_nearest(target.point_lps) == Some(5));
        assert_eq!(target.label_id, Some(5));
        let err = "other"
            .parse::<TargetSpec>()
            .unwrap()
            .resolve(&labels, |_| None);
        assert_eq!(err.unwrap_err(), TargetError::UnknownLabel("other".into()));
    }
}
