//! Assembly: one series' slices checked, ordered and decoded into one volume.

use std::path::Path;

use rayon::prelude::*;

use super::geometry::{
    axes, check_no_gantry_tilt, check_positions_present, position, series_grid, series_orientation,
    slice_spacing, sort_along_normal,
};
use super::header::SliceHeader;
use super::listing::no_dicom;
use super::parse::parse;
use super::pixels::{check_header, decode_frame, decode_slice, Values};
use super::tilt::{resample, stack_shear, Shear};
use super::{DicomSeries, SeriesInfo};
use crate::error::{Error, ErrorKind, Result, WithPath};
use pinhole_volume::Grid;

/// Checks the series is one regular stack and returns it sorted, with its grid.
pub(super) fn assemble(
    dir: &Path,
    info: SeriesInfo,
    mut slices: Vec<SliceHeader>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<DicomSeries> {
    let mut warnings = Vec::new();
    let first = slices.first().cloned().ok_or_else(|| no_dicom(dir))?;
    check_matrix_and_format(dir, &slices, &first)?;
    let (grid, shear) = stack_grid(dir, &mut slices, &first, &mut warnings)?;
    let matrix = [usize::from(first.columns), usize::from(first.rows)];
    if let Some(units) = &first.dose_units {
        warnings.push(format!(
            "RT Dose grid: values are the stored values times DoseGridScaling {} (dose in \
             {units}{})",
            first.slope,
            if units == "GY" { "" } else { ", not Gy" }
        ));
    }
    if first.photometric == "MONOCHROME1" {
        warnings.push("MONOCHROME1: higher values display darker".into());
    }
    let mut values = decode_pixels(&slices, &first, progress)?;
    if let Some(shear) = &shear {
        let (resampled, fill) = resample(values, matrix, shear);
        values = resampled;
        warnings.push(tilt_warning(&first, shear, fill));
    }
    let volume = values
        .into_volume(grid)
        .map_err(|m| Error::new(dir, ErrorKind::Dicom(m)))?;
    Ok(DicomSeries {
        volume,
        info,
        warnings,
        slice_thickness_mm: first.slice_thickness,
    })
}

/// The stack's geometry: orientation, order along the normal (`slices` sorted in
/// place), spacing and grid; a gantry-tilted stack comes with its shear and the grid
/// it is resampled onto.
pub(super) fn stack_grid(
    dir: &Path,
    slices: &mut [SliceHeader],
    first: &SliceHeader,
    warnings: &mut Vec<String>,
) -> Result<(Grid, Option<Shear>)> {
    let orientation = series_orientation(dir, slices, first, warnings)?;
    let axes = axes(first, orientation)?;
    check_positions_present(dir, slices, first, warnings)?;
    let stack = sort_along_normal(dir, slices, axes.normal)?;
    let origin = position(&first_sorted(slices, first));
    let spacing_k = slice_spacing(dir, first, &stack, warnings)?;
    let mut grid = series_grid(dir, first, &axes, spacing_k, origin, slices.len(), warnings)?;
    let matrix = [usize::from(first.columns), usize::from(first.rows)];
    let [spacing_i, spacing_j, _] = grid.spacing_mm();
    let shear = stack_shear(dir, slices, origin, &axes, [spacing_i, spacing_j], matrix)?;
    match &shear {
        None => check_no_gantry_tilt(slices)?,
        Some(shear) => {
            let [ni, nj] = shear.dims();
            grid = Grid::new(
                [ni, nj, slices.len()],
                grid.spacing_mm(),
                shear.origin(origin, &axes, [spacing_i, spacing_j]),
                grid.direction(),
            )
            .map_err(|e| Error::new(dir, e))?;
        }
    }
    Ok((grid, shear))
}

/// What the reader did to a gantry-tilted stack, for the report.
fn tilt_warning(first: &SliceHeader, shear: &Shear, fill: f64) -> String {
    let recorded = match first.gantry_tilt {
        Some(t) if (t.abs() - shear.tilt_deg).abs() > 0.5 => format!(
            "; GantryDetectorTilt says {t} degrees, the positions {:.2}",
            shear.tilt_deg
        ),
        Some(t) => format!(" (GantryDetectorTilt {t})"),
        None => String::new(),
    };
    format!(
        "gantry tilt of {:.2} degrees{recorded}: slices resampled onto an orthogonal grid \
         by linear interpolation within each slice (shifted up to {:.1} mm), voxels no \
         slice covers set to {fill}",
        shear.tilt_deg, shear.max_shift_mm
    )
}

/// Same matrix size, one frame each, decodable transfer syntax.
fn check_matrix_and_format(dir: &Path, slices: &[SliceHeader], first: &SliceHeader) -> Result<()> {
    check_same_matrix(dir, slices, first)?;
    for s in slices {
        check_header(s).map_err(|k| Error::new(&s.path, k))?;
    }
    Ok(())
}

/// Every slice has the first slice's rows and columns.
pub(super) fn check_same_matrix(
    dir: &Path,
    slices: &[SliceHeader],
    first: &SliceHeader,
) -> Result<()> {
    for s in slices {
        if (s.rows, s.columns) != (first.rows, first.columns) {
            return Err(Error::new(
                dir,
                ErrorKind::MixedSeries(format!(
                    "{} is {}x{} but {} is {}x{} (rows x columns)",
                    s.name(),
                    s.rows,
                    s.columns,
                    first.name(),
                    first.rows,
                    first.columns
                )),
            ));
        }
    }
    Ok(())
}

/// Pixels: decoded in parallel a few slices at a time (JPEG 2000 decoding dominates),
/// collected and reported in slice order.
fn decode_pixels(
    slices: &[SliceHeader],
    first: &SliceHeader,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Values> {
    if slices.iter().any(|s| s.frame.is_some()) {
        return decode_frames(slices, first, progress);
    }
    let total = slices.len();
    let mut values = Values::Int(Vec::new());
    let batch = 2 * rayon::current_num_threads().max(1);
    let mut done = 0;
    for group in slices.chunks(batch) {
        let decoded: Vec<Result<(SliceHeader, Vec<i64>)>> = group
            .par_iter()
            .map(|s| read_slice_pixels(s, first))
            .collect();
        for result in decoded {
            let (header, raw) = result?;
            values.push(&raw, header.slope, header.intercept);
            done += 1;
            progress(done, total);
        }
    }
    Ok(values)
}

/// The frames of one enhanced multi-frame object (`slices` sorted, each naming its
/// frame): the file is read and parsed once, frames decoded in parallel batches.
fn decode_frames(
    slices: &[SliceHeader],
    first: &SliceHeader,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Values> {
    let path = &first.path;
    if let Some(other) = slices.iter().find(|s| s.path != *path || s.frame.is_none()) {
        return Err(Error::new(
            path,
            ErrorKind::MixedSeries(format!(
                "the series mixes a multi-frame object with {}: read them apart",
                other.name()
            )),
        ));
    }
    let bytes = std::fs::read(path).with_path(path)?;
    let obj = parse(&bytes, false).map_err(|m| Error::new(path, ErrorKind::Dicom(m)))?;
    let header = SliceHeader::from_object(path.clone(), &obj)
        .map_err(|m| Error::new(path, ErrorKind::InvalidHeader(m)))?;
    if (header.rows, header.columns, header.frames) != (first.rows, first.columns, first.frames) {
        return Err(Error::new(
            path,
            ErrorKind::MixedSeries("matrix size or frame count changed while reading".into()),
        ));
    }
    let total = slices.len();
    let mut values = Values::Int(Vec::new());
    let batch = 2 * rayon::current_num_threads().max(1);
    let mut done = 0;
    for group in slices.chunks(batch) {
        let decoded: Vec<Result<Vec<i64>>> = group
            .par_iter()
            .map(|s| {
                check_header(s).map_err(|k| Error::new(path, k))?;
                decode_frame(&obj, s, s.frame.unwrap_or(0))
                    .map_err(|m| Error::new(path, ErrorKind::Dicom(format!("{}: {m}", s.name()))))
            })
            .collect();
        for (s, raw) in group.iter().zip(decoded) {
            values.push(&raw?, s.slope, s.intercept);
            done += 1;
            progress(done, total);
        }
    }
    Ok(values)
}

/// Reads and decodes one slice of a series whose first slice is `first`.
fn read_slice_pixels(s: &SliceHeader, first: &SliceHeader) -> Result<(SliceHeader, Vec<i64>)> {
    let bytes = std::fs::read(&s.path).with_path(&s.path)?;
    let obj = parse(&bytes, false).map_err(|m| Error::new(&s.path, ErrorKind::Dicom(m)))?;
    // Re-read the header: the file might have changed since the listing.
    let header = SliceHeader::from_object(s.path.clone(), &obj)
        .map_err(|m| Error::new(&s.path, ErrorKind::InvalidHeader(m)))?;
    if (header.rows, header.columns) != (first.rows, first.columns) {
        return Err(Error::new(
            &s.path,
            ErrorKind::MixedSeries("matrix size changed while reading".into()),
        ));
    }
    check_header(&header).map_err(|k| Error::new(&s.path, k))?;
    let raw = decode_slice(&obj, &header).map_err(|m| Error::new(&s.path, ErrorKind::Dicom(m)))?;
    Ok((header, raw))
}

fn first_sorted(slices: &[SliceHeader], fallback: &SliceHeader) -> SliceHeader {
    slices.first().cloned().unwrap_or_else(|| fallback.clone())
}
