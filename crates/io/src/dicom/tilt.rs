//! Gantry-tilted stacks: slices that are parallel planes but whose positions drift
//! sideways along the stack (the table moves along the patient's axis while the image
//! planes are tilted), resampled onto an orthogonal grid as dcm2niix does.
//!
//! A sorted slice `k` at `p_k` lies `d_k = (p_k − p_0)·n` along the normal `n` and is
//! displaced in its plane by `o_k = p_k − p_0 − d_k n`. Untilted stacks have `o_k ≈ 0`.
//! A tilt is a displacement growing linearly along the stack, `o_k = s d_k` for one
//! in-plane vector `s` (`tan(tilt) = |s|`); anything else (slices displaced at random) is
//! refused. Resampling keeps every slice on its own plane: output voxel `(i, j, k)` takes
//! slice `k`'s value at pixel `(i − o_k·row / Δi, j − o_k·col / Δj)` by bilinear
//! interpolation in that slice (rounded for integer data), so nothing is interpolated
//! across slices. The output grid grows in-plane to hold every slice whole; voxels no
//! slice covers take the series' lowest value (air for a CT), said in the warning.

use std::path::Path;

use super::geometry::{dot, position, Axes};
use super::header::SliceHeader;
use super::pixels::Values;
use crate::error::{Error, ErrorKind, Result};

/// Largest tilt accepted (degrees): CT gantries tilt up to ±30°.
pub(super) const MAX_TILT_DEG: f64 = 45.0;

/// Slices displaced less than this (mm, or this fraction of their distance along the
/// normal) count as stacked along the normal.
const STACKED_TOLERANCE_MM: f64 = 0.01;
const STACKED_TOLERANCE_FRACTION: f64 = 1e-3;
/// Largest departure (mm, or fraction of the distance along the normal) of a slice's
/// displacement from the stack's linear tilt.
const LINEAR_TOLERANCE_MM: f64 = 0.05;
const LINEAR_TOLERANCE_FRACTION: f64 = 1e-3;

/// How a tilted stack is resampled: each sorted slice's in-plane shift in pixels and the
/// output grid's extent.
#[derive(Debug, Clone)]
pub(super) struct Shear {
    /// Shift of each sorted slice (pixels along `i`, along `j`).
    shifts_px: Vec<[f64; 2]>,
    /// The output's first index in the input slices' pixel frame (≤ 0).
    start: [i64; 2],
    /// Output columns and rows.
    dims: [usize; 2],
    /// The tilt (degrees) and the largest shift (mm).
    pub(super) tilt_deg: f64,
    pub(super) max_shift_mm: f64,
}

impl Shear {
    /// Output columns and rows.
    pub(super) fn dims(&self) -> [usize; 2] {
        self.dims
    }

    /// Where the output grid starts: `origin` moved by the output's first index.
    pub(super) fn origin(&self, origin: [f64; 3], axes: &Axes, spacing: [f64; 2]) -> [f64; 3] {
        let [si, sj] = self.start;
        std::array::from_fn(|a| {
            origin[a] + si as f64 * spacing[0] * axes.row[a] + sj as f64 * spacing[1] * axes.col[a]
        })
    }
}

/// The stack's tilt, `None` when its slices are stacked along the normal. `slices` are
/// sorted along `axes.normal`, the first at `origin`; `spacing` is the in-plane pixel
/// size (mm along `i`, along `j`); `columns`, `rows` the slice matrix.
pub(super) fn stack_shear(
    dir: &Path,
    slices: &[SliceHeader],
    origin: [f64; 3],
    axes: &Axes,
    spacing: [f64; 2],
    [columns, rows]: [usize; 2],
) -> Result<Option<Shear>> {
    let displacement: Vec<(f64, [f64; 2])> = slices
        .iter()
        .map(|s| {
            let v: [f64; 3] = std::array::from_fn(|a| position(s)[a] - origin[a]);
            let along = dot(v, axes.normal);
            let off: [f64; 3] = std::array::from_fn(|a| v[a] - along * axes.normal[a]);
            (along, [dot(off, axes.row), dot(off, axes.col)])
        })
        .collect();
    let stacked = displacement.iter().all(|(along, [a, b])| {
        a.hypot(*b) <= STACKED_TOLERANCE_MM.max(STACKED_TOLERANCE_FRACTION * along.abs())
    });
    if stacked {
        return Ok(None);
    }
    let sum_along2: f64 = displacement.iter().map(|(d, _)| d * d).sum();
    let per_mm: [f64; 2] = std::array::from_fn(|c| {
        displacement.iter().map(|(d, o)| d * o[c]).sum::<f64>() / sum_along2.max(f64::MIN_POSITIVE)
    });
    let tilt_deg = per_mm[0].hypot(per_mm[1]).atan().to_degrees();
    for (s, (along, off)) in slices.iter().zip(&displacement) {
        let miss = (off[0] - per_mm[0] * along).hypot(off[1] - per_mm[1] * along);
        if miss > LINEAR_TOLERANCE_MM.max(LINEAR_TOLERANCE_FRACTION * along.abs()) {
            return Err(Error::new(
                &s.path,
                ErrorKind::Unsupported(format!(
                    "{} is displaced {:.3} mm sideways from the stack's line: the slice \
                     positions are neither stacked along the slice normal nor a uniform \
                     gantry tilt (sheared series are not supported)",
                    s.name(),
                    off[0].hypot(off[1])
                )),
            ));
        }
    }
    if tilt_deg.is_nan() || tilt_deg > MAX_TILT_DEG {
        return Err(Error::new(
            dir,
            ErrorKind::Unsupported(format!(
                "the slice positions imply a gantry tilt of {tilt_deg:.1} degrees (more than \
                 {MAX_TILT_DEG}): not a tilted CT stack"
            )),
        ));
    }
    let shifts_px: Vec<[f64; 2]> = displacement
        .iter()
        .map(|(_, o)| [o[0] / spacing[0], o[1] / spacing[1]])
        .collect();
    let extent = |c: usize, size: usize| {
        let lo = shifts_px.iter().map(|s| s[c]).fold(0.0, f64::min).floor();
        let hi = shifts_px.iter().map(|s| s[c]).fold(0.0, f64::max).ceil();
        (lo as i64, size + (hi - lo) as usize)
    };
    let ((start_i, ni), (start_j, nj)) = (extent(0, columns), extent(1, rows));
    let max_shift_mm = displacement
        .iter()
        .map(|(_, o)| o[0].hypot(o[1]))
        .fold(0.0, f64::max);
    Ok(Some(Shear {
        shifts_px,
        start: [start_i, start_j],
        dims: [ni, nj],
        tilt_deg,
        max_shift_mm,
    }))
}

/// `values` (sorted slices of `columns × rows`, `i` fastest) resampled onto the
/// shear's orthogonal grid; uncovered voxels take the lowest value, returned with it.
pub(super) fn resample(
    values: Values,
    [columns, rows]: [usize; 2],
    shear: &Shear,
) -> (Values, f64) {
    match values {
        Values::Int(v) => {
            let fill = v.iter().copied().min().unwrap_or(0);
            let out = resample_slices(&v, [columns, rows], shear, f64::from(fill), |x| {
                f64::from(x)
            });
            // Bilinear weights sum to 1: the result lies between its corners, so the
            // rounded value fits i32 like they do.
            let ints = out.iter().map(|&x| x.round() as i32).collect();
            (Values::Int(ints), f64::from(fill))
        }
        Values::Float(v) => {
            let fill = v.iter().copied().fold(f64::INFINITY, f64::min);
            let fill = if fill.is_finite() { fill } else { 0.0 };
            let out = resample_slices(&v, [columns, rows], shear, fill, |x| x);
            (Values::Float(out), fill)
        }
    }
}

fn resample_slices<T: Copy>(
    data: &[T],
    [columns, rows]: [usize; 2],
    shear: &Shear,
    fill: f64,
    as_f64: impl Fn(T) -> f64,
) -> Vec<f64> {
    let [ni, nj] = shear.dims;
    let per_slice = columns * rows;
    let mut out = Vec::with_capacity(ni * nj * shear.shifts_px.len());
    for (k, shift) in shear.shifts_px.iter().enumerate() {
        let slice = &data[k * per_slice..(k + 1) * per_slice];
        let at = |i: usize, j: usize| as_f64(slice[j * columns + i]);
        for jo in 0..nj {
            let y = (jo as i64 + shear.start[1]) as f64 - shift[1];
            for io in 0..ni {
                let x = (io as i64 + shear.start[0]) as f64 - shift[0];
                out.push(bilinear(&at, x, y, columns, rows).unwrap_or(fill));
            }
        }
    }
    out
}

/// The slice's value at pixel `(x, y)` by bilinear interpolation, `None` outside it
/// (a hair's breadth beyond the edge counts as on it).
fn bilinear(
    at: &impl Fn(usize, usize) -> f64,
    x: f64,
    y: f64,
    columns: usize,
    rows: usize,
) -> Option<f64> {
    const EDGE: f64 = 1e-6;
    let (max_x, max_y) = ((columns - 1) as f64, (rows - 1) as f64);
    if !(x >= -EDGE && y >= -EDGE && x <= max_x + EDGE && y <= max_y + EDGE) {
        return None;
    }
    let (x, y) = (x.clamp(0.0, max_x), y.clamp(0.0, max_y));
    let (i0, j0) = (x.floor() as usize, y.floor() as usize);
    let (i1, j1) = ((i0 + 1).min(columns - 1), (j0 + 1).min(rows - 1));
    let (fx, fy) = (x - i0 as f64, y - j0 as f64);
    let top = at(i0, j0) * (1.0 - fx) + at(i1, j0) * fx;
    let bottom = at(i0, j1) * (1.0 - fx) + at(i1, j1) * fx;
    Some(top * (1.0 - fy) + bottom * fy)
}
