//! Targets as users name them on the command line, shared by every planner and the
//! guidance server: a label name, a point `x,y,z` (LPS mm) or a sphere `x,y,z,r`.
//! A label name may say where to aim in it: `name:centroid`, `name:deepest`,
//! `name:lower-pole` or `name:lower-pole-cortex` (see [`LabelAim`]).
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

/// Depth below the organ surface at which [`LabelAim::LowerPoleCortex`] aims, mm: within
/// the renal cortex, whose mean thickness was 5.3-5.8 mm in patients with chronic kidney
/// disease (Korkmaz et al., Ultrasonography 2018;37(1):50-54, doi:10.14366/usg.17012)
/// and is larger in healthy kidneys. Derived: 5 mm.
pub const CORTEX_DEPTH_MM: f64 = 5.0;

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
    /// The deepest point of the caudal third of the label (a kidney's lower-pole
    /// collecting region, for nephrostomy); voxels on the scan's border count as outside.
    LowerPole,
    /// Lower-pole renal cortex, for a medical (non-targeted) renal biopsy, which samples
    /// the cortex of the lower pole (StatPearls "Renal Biopsy", statpearls.com/
    /// point-of-care/28337; Medscape "Kidney Biopsy Technique", emedicine.medscape.com/
    /// article/2093338-technique). Rule (derived): a voxel's depth is its distance to the
    /// nearest voxel centre outside the label (voxels on the scan's border counting as
    /// outside) less half the smallest voxel spacing (the surface lies between the two
    /// centres); among the voxels of the label's caudal third whose depth lies within
    /// half a voxel (at least 0.5 mm) of [`CORTEX_DEPTH_MM`], the most caudal one; ties
    /// go to the depth nearest 5 mm, then to the voxel nearest the caudal third's axis
    /// (its centroid in x, y). When no voxel lies at that depth (a label under about
    /// 10 mm thick), the caudal-third voxel whose depth is nearest 5 mm, most caudal
    /// first.
    LowerPoleCortex,
}

impl LabelAim {
    /// The aim as written after `name:` (`"auto"` for a bare label name).
    pub fn name(self) -> &'static str {
        match self {
            LabelAim::Auto => "auto",
            LabelAim::Centroid => "centroid",
            LabelAim::Deepest => "deepest",
            LabelAim::LowerPole => "lower-pole",
            LabelAim::LowerPoleCortex => "lower-pole-cortex",
        }
    }

    /// How a target description says it (`"lower-pole cortex"`).
    fn describe(self) -> &'static str {
        match self {
            LabelAim::Auto | LabelAim::Centroid => "centroid",
            LabelAim::Deepest => "deepest point",
            LabelAim::LowerPole => "lower pole: deepest point of the caudal third",
            LabelAim::LowerPoleCortex => "lower-pole cortex",
        }
    }
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
    #[error("target {0:?}: expected a label name (optionally name:centroid, name:deepest, name:lower-pole or name:lower-pole-cortex), x,y,z (LPS mm) or x,y,z,r")]
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
            Some((name, "lower-pole")) => (name, LabelAim::LowerPole),
            Some((name, "lower-pole-cortex")) => (name, LabelAim::LowerPoleCortex),
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
    /// The label's name when the target is a label.
    pub label_name: Option<String>,
    /// For a label target, the rule that chose `point_lps` (never [`LabelAim::Auto`]).
    pub aim: Option<LabelAim>,
    /// True when the target named its aim (`name:deepest`); false for a bare label name
    /// (which a procedure may aim elsewhere) and for points and spheres.
    pub aim_given: bool,
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
    let (point_lps, used) = aim_point(&region, aim);
    Ok(Target {
        point_lps,
        region,
        label_id: Some(id),
        label_name: Some(name.to_string()),
        aim: Some(used),
        aim_given: aim != LabelAim::Auto,
        description: format!("{name} ({})", used.describe()),
    })
}

/// The point `aim` chooses in a non-empty `region`, and the rule that chose it (never
/// `Auto`): `Auto` is the centroid when it lies inside the region, else the deepest
/// point; a lower-pole aim that finds no voxel off the scan's border falls back to the
/// deepest point.
pub fn aim_point(region: &Mask, aim: LabelAim) -> (Vec3, LabelAim) {
    let deepest = || (deepest_point(region), LabelAim::Deepest);
    match aim {
        LabelAim::Centroid => (centroid_lps(region), LabelAim::Centroid),
        LabelAim::Auto => {
            let centroid = centroid_lps(region);
            if region.sample_nearest(centroid).unwrap_or(false) {
                (centroid, LabelAim::Centroid)
            } else {
                deepest()
            }
        }
        LabelAim::Deepest => deepest(),
        LabelAim::LowerPole => lower_pole_point(region)
            .map(|p| (p, LabelAim::LowerPole))
            .unwrap_or_else(deepest),
        LabelAim::LowerPoleCortex => lower_pole_cortex_point(region)
            .map(|p| (p, LabelAim::LowerPoleCortex))
            .unwrap_or_else(deepest),
    }
}

impl Target {
    /// The target aimed again by `aim` (a label target only; others are returned as
    /// they are). `by` says who chose the aim, for the description
    /// (`kidney_left (centroid) → lower-pole cortex (kidney-biopsy profile)`).
    pub fn reaimed(self, aim: LabelAim, by: &str) -> Target {
        if self.label_id.is_none() {
            return self;
        }
        let (point_lps, used) = aim_point(&self.region, aim);
        Target {
            point_lps,
            aim: Some(used),
            description: format!("{} → {} ({by})", self.description, used.describe()),
            ..self
        }
    }
}

/// `region` without its voxels on the scan's border (along axes longer than 2 voxels),
/// so that an organ cut by the scan is not aimed at its cut face.
fn without_scan_border(region: &Mask) -> Mask {
    let grid = region.grid();
    let dims = grid.dims();
    let mut inner = region.clone();
    for (o, v) in inner.data_mut().iter_mut().enumerate() {
        if *v {
            let ijk = grid.index_of_offset(o);
            if (0..3).any(|a| dims[a] > 2 && (ijk[a] == 0 || ijk[a] + 1 == dims[a])) {
                *v = false;
            }
        }
    }
    inner
}

/// World z (LPS, superior positive) of each voxel of `region`, by offset.
fn voxel_zs(region: &Mask) -> Vec<(usize, f64)> {
    let grid = region.grid();
    region
        .data()
        .iter()
        .enumerate()
        .filter(|(_, &b)| b)
        .map(|(o, _)| {
            let ijk = grid.index_of_offset(o).map(|v| v as f64);
            (o, grid.index_to_world(ijk)[2])
        })
        .collect()
}

/// The z below which a voxel lies in the caudal third of `region` (`None` if empty).
fn caudal_third_cut(zs: &[(usize, f64)]) -> Option<f64> {
    let lo = zs.iter().map(|z| z.1).fold(f64::INFINITY, f64::min);
    let hi = zs.iter().map(|z| z.1).fold(f64::NEG_INFINITY, f64::max);
    lo.is_finite().then(|| lo + (hi - lo) / 3.0)
}

fn point_of(grid: &crate::Grid, offset: usize) -> Vec3 {
    grid.index_to_world(grid.index_of_offset(offset).map(|v| v as f64))
}

/// [`LabelAim::LowerPole`]: the deepest point of the caudal third of `region`, voxels on
/// the scan's border counting as outside (`None` when no voxel is left).
pub fn lower_pole_point(region: &Mask) -> Option<Vec3> {
    let cut = caudal_third_cut(&voxel_zs(region))?;
    let grid = region.grid();
    let mut lower = without_scan_border(region);
    for (o, v) in lower.data_mut().iter_mut().enumerate() {
        if *v && point_of(grid, o)[2] > cut {
            *v = false;
        }
    }
    let depth = distance_inside(&lower);
    let (best, d) = depth
        .data()
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    (*d > 0.0).then(|| point_of(grid, best))
}

/// [`LabelAim::LowerPoleCortex`]: see there for the rule (`None` when no voxel is left
/// off the scan's border).
pub fn lower_pole_cortex_point(region: &Mask) -> Option<Vec3> {
    let cut = caudal_third_cut(&voxel_zs(region))?;
    let grid = region.grid();
    let inner = without_scan_border(region);
    let depth = distance_inside(&inner);
    let spacing = grid.spacing_mm();
    let half_step = 0.5 * spacing.into_iter().fold(f64::INFINITY, f64::min);
    // (offset, z, depth below the surface) of the caudal third's voxels off the border.
    let lower: Vec<(usize, f64, f64)> = voxel_zs(&inner)
        .into_iter()
        .filter(|&(_, z)| z <= cut)
        .map(|(o, z)| (o, z, f64::from(depth.data()[o]) - half_step))
        .collect();
    if lower.is_empty() {
        return None;
    }
    let n = lower.len() as f64;
    let axis = lower.iter().fold([0.0; 2], |acc, &(o, _, _)| {
        let p = point_of(grid, o);
        [acc[0] + p[0] / n, acc[1] + p[1] / n]
    });
    let half_voxel = 0.5 * spacing.into_iter().fold(1.0, f64::max);
    let off_depth = |d: f64| (d - CORTEX_DEPTH_MM).abs();
    let at_depth: Vec<&(usize, f64, f64)> = lower
        .iter()
        .filter(|c| off_depth(c.2) <= half_voxel)
        .collect();
    let pool: Vec<&(usize, f64, f64)> = if at_depth.is_empty() {
        let nearest = lower
            .iter()
            .map(|c| off_depth(c.2))
            .fold(f64::INFINITY, f64::min);
        lower.iter().filter(|c| off_depth(c.2) == nearest).collect()
    } else {
        at_depth
    };
    let from_axis = |o: usize| {
        let p = point_of(grid, o);
        (p[0] - axis[0]).hypot(p[1] - axis[1])
    };
    let best = pool.into_iter().min_by(|a, b| {
        a.1.total_cmp(&b.1)
            .then(off_depth(a.2).total_cmp(&off_depth(b.2)))
            .then(from_axis(a.0).total_cmp(&from_axis(b.0)))
            .then(a.0.cmp(&b.0))
    })?;
    Some(point_of(grid, best.0))
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
        label_name: None,
        aim: None,
        aim_given: false,
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
        label_name: None,
        aim: None,
        aim_given: false,
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

/// The region voxel farthest from the region's outside (first in memory order on ties).
/// The distance transform runs on the region's bounding box with one voxel of margin: the
/// distances are the same as over the whole grid (every voxel beyond the margin is
/// outside, and the margin voxel with its coordinates clamped to the box is nearer), at a
/// fraction of the cost on a full CT.
fn deepest_point(region: &Mask) -> Vec3 {
    let dims = region.grid().dims();
    // Callers pass non-empty regions; an empty one yields the first voxel's box.
    let (low, high) = region
        .bounding_box_where(|inside| inside)
        .unwrap_or(([0; 3], [0; 3]));
    let start: [usize; 3] = std::array::from_fn(|a| low[a].saturating_sub(1));
    let extent: [usize; 3] = std::array::from_fn(|a| (high[a] + 2).min(dims[a]) - start[a]);
    let box_region = region.crop(start, extent);
    let depth = distance_inside(&box_region);
    let (offset, _) =
        depth.data().iter().enumerate().fold(
            (0, f32::MIN),
            |best, (o, &d)| if d > best.1 { (o, d) } else { best },
        );
    let ijk = box_region.grid().index_of_offset(offset);
    box_region
        .grid()
        .index_to_world([ijk[0] as f64, ijk[1] as f64, ijk[2] as f64])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Grid;

    /// The bounding-box shortcut finds the same deepest voxel as a transform over the
    /// whole grid (an L-shaped region in a rotated, anisotropic grid, and one touching
    /// the grid's edge).
    #[test]
    fn deepest_point_on_the_bounding_box_equals_the_whole_grid() {
        let grid = Grid::new(
            [30, 24, 12],
            [0.7, 0.9, 2.5],
            [5.0, -3.0, 11.0],
            [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        )
        .unwrap();
        for touching_edge in [false, true] {
            let data: Vec<bool> = (0..grid.voxel_count())
                .map(|o| {
                    let [i, j, k] = grid.index_of_offset(o);
                    let i_low = if touching_edge { 0 } else { 6 };
                    let arm = (i_low..20).contains(&i) && (5..9).contains(&j);
                    let leg = (12..19).contains(&i) && (5..20).contains(&j);
                    (arm || leg) && (2..10).contains(&k)
                })
                .collect();
            let region = Mask::new(grid.clone(), data).unwrap();
            let depth = distance_inside(&region);
            let (offset, _) = depth
                .data()
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (o, &d)| if d > b.1 { (o, d) } else { b });
            let ijk = grid.index_of_offset(offset).map(|v| v as f64);
            let expected = grid.index_to_world(ijk);
            let got = deepest_point(&region);
            for a in 0..3 {
                assert!(
                    (expected[a] - got[a]).abs() < 1e-9,
                    "{expected:?} vs {got:?}"
                );
            }
        }
    }

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
        for aim in [
            LabelAim::Centroid,
            LabelAim::Deepest,
            LabelAim::LowerPole,
            LabelAim::LowerPoleCortex,
        ] {
            assert_eq!(
                format!("kidney_left:{}", aim.name()).parse::<TargetSpec>(),
                Ok(TargetSpec::Label {
                    name: "kidney_left".into(),
                    aim
                })
            );
        }
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
