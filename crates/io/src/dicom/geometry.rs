//! Geometry and slice ordering: one orientation for the series, no tilt, slices sorted
//! along the normal with even gaps, and the grid they make.

use std::path::Path;

use pinhole_volume::Grid;

use super::header::SliceHeader;
use super::listing::no_dicom;
use super::{
    DUPLICATE_TOLERANCE_MM, ORIENTATION_TOLERANCE, SPACING_TOLERANCE_FRACTION, SPACING_TOLERANCE_MM,
};
use crate::error::{Error, ErrorKind, Result};

use pinhole_volume::math::cross;
pub(super) use pinhole_volume::math::dot;

fn normalized(a: [f64; 3]) -> Option<[f64; 3]> {
    let n = dot(a, a).sqrt();
    (n.is_finite() && n > 1e-6).then(|| a.map(|x| x / n))
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// A slice's `ImagePositionPatient`, 0 when it has none (single slices only).
pub(super) fn position(s: &SliceHeader) -> [f64; 3] {
    s.position.unwrap_or([0.0; 3])
}

/// The stack's unit axes in LPS: along a row, down a column, and the slice normal
/// `row × column`.
pub(super) struct Axes {
    pub(super) row: [f64; 3],
    pub(super) col: [f64; 3],
    pub(super) normal: [f64; 3],
}

/// Where the slices lie along the normal once sorted: each slice's distance and the gaps
/// between neighbours (mm).
pub(super) struct Stack {
    pub(super) distances: Vec<f64>,
    pub(super) gaps: Vec<f64>,
}

/// The series' `ImageOrientationPatient`, the same for every slice (within
/// [`ORIENTATION_TOLERANCE`]); a lone slice without one is taken as axial.
pub(super) fn series_orientation(
    dir: &Path,
    slices: &[SliceHeader],
    first: &SliceHeader,
    warnings: &mut Vec<String>,
) -> Result<[f64; 6]> {
    let many = slices.len() > 1;
    let orientation = match first.orientation {
        Some(o) => o,
        None if !many => {
            warnings.push("no ImageOrientationPatient: assuming axial (identity)".into());
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        }
        None => {
            return Err(Error::new(
                &first.path,
                ErrorKind::InvalidHeader("missing ImageOrientationPatient".into()),
            ))
        }
    };
    for s in slices {
        let same = s.orientation.is_some_and(|o| {
            o.iter()
                .zip(&orientation)
                .all(|(a, b)| (a - b).abs() <= ORIENTATION_TOLERANCE)
        });
        if many && !same {
            return Err(Error::new(
                dir,
                ErrorKind::MixedSeries(format!(
                    "{} has ImageOrientationPatient {:?}, {} has {:?}",
                    s.name(),
                    s.orientation,
                    first.name(),
                    orientation
                )),
            ));
        }
    }
    Ok(orientation)
}

/// The unit axes of `orientation`, which must hold two perpendicular unit directions
/// (each norm within [`pinhole_volume::grid::ORTHOGONALITY_TOLERANCE`] of 1: cosines of
/// another length are a corrupt header, not something to normalise away).
pub(super) fn axes(first: &SliceHeader, orientation: [f64; 6]) -> Result<Axes> {
    let bad_orientation = || {
        Error::new(
            &first.path,
            ErrorKind::InvalidHeader(format!(
                "ImageOrientationPatient {orientation:?} is not two perpendicular unit \
                 directions"
            )),
        )
    };
    let row_raw = [orientation[0], orientation[1], orientation[2]];
    let col_raw = [orientation[3], orientation[4], orientation[5]];
    let unit = |v: [f64; 3]| {
        (dot(v, v).sqrt() - 1.0).abs() <= pinhole_volume::grid::ORTHOGONALITY_TOLERANCE
    };
    if !unit(row_raw) || !unit(col_raw) {
        return Err(bad_orientation());
    }
    let row = normalized(row_raw).ok_or_else(bad_orientation)?;
    let col = normalized(col_raw).ok_or_else(bad_orientation)?;
    if dot(row, col).abs() > 1e-3 {
        return Err(bad_orientation());
    }
    let normal = normalized(cross(row, col)).ok_or_else(bad_orientation)?;
    Ok(Axes { row, col, normal })
}

/// Refuses a gantry/detector tilt recorded in `GantryDetectorTilt` of a stack whose
/// positions and orientation describe no tilt (called only for such stacks): the tilt
/// would then live in that tag alone, which this reader does not apply.
pub(super) fn check_no_gantry_tilt(slices: &[SliceHeader]) -> Result<()> {
    for s in slices {
        if let Some(tilt) = s.gantry_tilt.filter(|t| t.abs() > 1e-3) {
            return Err(Error::new(
                &s.path,
                ErrorKind::Unsupported(format!(
                    "GantryDetectorTilt of {tilt} degrees, but the slice positions and \
                     orientation describe an untilted stack: the tilt is recorded only in \
                     that tag, which is not applied (the volume would be sheared); \
                     resample the series first"
                )),
            ));
        }
    }
    Ok(())
}

/// Every slice of a stack needs `ImagePositionPatient`; a lone slice gets origin 0.
pub(super) fn check_positions_present(
    dir: &Path,
    slices: &[SliceHeader],
    first: &SliceHeader,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let many = slices.len() > 1;
    if many && slices.iter().any(|s| s.position.is_none()) {
        let missing = slices
            .iter()
            .find(|s| s.position.is_none())
            .map(|s| s.path.clone());
        return Err(Error::new(
            missing.unwrap_or_else(|| dir.to_path_buf()),
            ErrorKind::InvalidHeader("missing ImagePositionPatient".into()),
        ));
    }
    if !many && first.position.is_none() {
        warnings.push("no ImagePositionPatient: origin set to 0".into());
    }
    Ok(())
}

/// Sorts the slices along `normal` and refuses duplicate positions
/// (closer than [`DUPLICATE_TOLERANCE_MM`]).
pub(super) fn sort_along_normal(
    dir: &Path,
    slices: &mut [SliceHeader],
    normal: [f64; 3],
) -> Result<Stack> {
    slices.sort_by(|a, b| dot(position(a), normal).total_cmp(&dot(position(b), normal)));
    let distances: Vec<f64> = slices.iter().map(|s| dot(position(s), normal)).collect();
    let gaps: Vec<f64> = distances.windows(2).map(|w| w[1] - w[0]).collect();
    for (k, gap) in gaps.iter().enumerate() {
        if *gap < DUPLICATE_TOLERANCE_MM {
            let name = |i: usize| slices.get(i).map(SliceHeader::name).unwrap_or_default();
            let several_stacks = if slices.get(k).is_some_and(|s| s.frame.is_some()) {
                " (a multi-frame object holding several stacks, echoes or time points is \
                 not supported: export one stack)"
            } else {
                ""
            };
            return Err(Error::new(
                dir,
                ErrorKind::MixedSeries(format!(
                    "duplicate slice position: {} and {} are both at {:.4} mm along the \
                     normal{several_stacks}",
                    name(k),
                    name(k + 1),
                    distances.get(k).copied().unwrap_or_default()
                )),
            ));
        }
    }
    Ok(Stack { distances, gaps })
}

/// The slice spacing (mm): the mean gap of an evenly spaced stack (every gap within
/// tolerance of the median), or a lone slice's `SpacingBetweenSlices` /
/// `SliceThickness` (1 mm when neither is given). Warns when `SliceThickness` disagrees.
pub(super) fn slice_spacing(
    dir: &Path,
    first: &SliceHeader,
    stack: &Stack,
    warnings: &mut Vec<String>,
) -> Result<f64> {
    let Stack { distances, gaps } = stack;
    let many = distances.len() > 1;
    let spacing_k = if let (Some(lo), Some(hi)) = (distances.first(), distances.last()) {
        if many {
            check_even_gaps(dir, gaps)?;
            (hi - lo) / (distances.len() - 1) as f64
        } else {
            match first.spacing_between_slices.or(first.slice_thickness) {
                Some(s) if s > 0.0 => s,
                Some(s) => {
                    return Err(Error::new(
                        &first.path,
                        ErrorKind::InvalidHeader(format!(
                            "single slice with SpacingBetweenSlices / SliceThickness {s} mm: \
                             the slice spacing must be positive"
                        )),
                    ))
                }
                None => {
                    warnings.push(
                        "single slice without SliceThickness: slice spacing set to 1 mm".into(),
                    );
                    1.0
                }
            }
        }
    } else {
        return Err(no_dicom(dir));
    };
    if let Some(t) = first.slice_thickness {
        if many && (t - spacing_k).abs() > SPACING_TOLERANCE_MM {
            warnings.push(format!(
                "SliceThickness {t} mm differs from the slice spacing {spacing_k:.4} mm \
                 (from ImagePositionPatient); using the latter"
            ));
        }
    }
    Ok(spacing_k)
}

/// Refuses gaps that deviate from the median gap by more than [`SPACING_TOLERANCE_MM`]
/// and [`SPACING_TOLERANCE_FRACTION`] of it (a missing slice, usually).
fn check_even_gaps(dir: &Path, gaps: &[f64]) -> Result<()> {
    let mut sorted = gaps.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(1.0);
    let tolerance = SPACING_TOLERANCE_MM.max(SPACING_TOLERANCE_FRACTION * median);
    let uneven: Vec<String> = gaps
        .iter()
        .enumerate()
        .filter(|(_, g)| (**g - median).abs() > tolerance)
        .take(10)
        .map(|(k, g)| format!("slices {k}->{}: {g:.3} mm", k + 1))
        .collect();
    if !uneven.is_empty() {
        return Err(Error::new(
            dir,
            ErrorKind::Unsupported(format!(
                "uneven slice spacing (missing slice?): most gaps are {median:.3} mm but {} \
                 (tolerance {tolerance:.3} mm)",
                uneven.join(", ")
            )),
        ));
    }
    Ok(())
}

/// The grid of `slices` sorted slices: ITK index order (`i` along a row with spacing
/// `PixelSpacing[1]`, `j` down a column with `PixelSpacing[0]`, `k` along the normal).
pub(super) fn series_grid(
    dir: &Path,
    first: &SliceHeader,
    axes: &Axes,
    spacing_k: f64,
    origin: [f64; 3],
    slices: usize,
    warnings: &mut Vec<String>,
) -> Result<Grid> {
    let pixel_spacing = match first.pixel_spacing {
        Some(p) => p,
        None => {
            warnings.push("no PixelSpacing: assuming 1 mm".into());
            [1.0, 1.0]
        }
    };
    let Axes { row, col, normal } = *axes;
    let direction = [
        [row[0], col[0], normal[0]],
        [row[1], col[1], normal[1]],
        [row[2], col[2], normal[2]],
    ];
    let dims = [usize::from(first.columns), usize::from(first.rows), slices];
    Grid::new(
        dims,
        [pixel_spacing[1], pixel_spacing[0], spacing_k],
        origin,
        direction,
    )
    .map_err(|e| Error::new(dir, e))
}
