//! Volumes across the boundary: `load(path)` hands the reader's buffer to NumPy without
//! a copy; `grid_of` checks an array + affine from Python the way a file header is.

use std::path::PathBuf;

use numpy::ndarray::{Array3, ShapeBuilder};
use numpy::{Element, PyArray2, PyArray3, PyReadonlyArray2};
use pinhole_io::AnyVolume;
use pinhole_volume::{Grid, Volume};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::{to_py_err, Collector, PinholeError};

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(check_affine, m)?)?;
    Ok(())
}

/// `(array, affine_lps, info)` of [`load`].
type Loaded<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyArray2<f64>>,
    Bound<'py, PyAny>,
);

/// Reads a volume (NIfTI, NRRD, a DICOM folder) as `(array, affine_lps, info)`.
///
/// `array` has shape `(I, J, K)` in Fortran order (`array[i, j, k]`, `i` fastest as in
/// the file) and the file's voxel type after rescaling (HU for a CT); it owns the
/// reader's buffer (no copy). `affine_lps` maps `(i, j, k, 1)` to LPS mm. `info` holds
/// `format`, `warnings`, `modality`, `series_uid`.
#[pyfunction]
#[pyo3(signature = (path, series_uid=None))]
fn load<'py>(py: Python<'py>, path: PathBuf, series_uid: Option<String>) -> PyResult<Loaded<'py>> {
    let observer = Collector::default();
    let loaded = py
        .detach(|| pinhole_pipeline::inputs::load(&path, series_uid, &observer))
        .map_err(to_py_err)?;
    observer.emit(py)?;
    let affine = affine_array(py, loaded.volume.grid());
    let info = pyo3::types::PyDict::new(py);
    info.set_item("format", format!("{:?}", loaded.format))?;
    info.set_item("warnings", PyList::new(py, &loaded.warnings)?)?;
    info.set_item("modality", loaded.modality.clone())?;
    info.set_item("series_uid", loaded.series_uid.clone())?;
    let array = match loaded.volume {
        AnyVolume::U8(v) => owned_array(py, v)?,
        AnyVolume::I8(v) => owned_array(py, v)?,
        AnyVolume::U16(v) => owned_array(py, v)?,
        AnyVolume::I16(v) => owned_array(py, v)?,
        AnyVolume::U32(v) => owned_array(py, v)?,
        AnyVolume::I32(v) => owned_array(py, v)?,
        AnyVolume::F32(v) => owned_array(py, v)?,
        AnyVolume::F64(v) => owned_array(py, v)?,
    };
    Ok((array, affine, info.into_any()))
}

/// Checks that `affine_lps` (4×4) describes a grid of `dims` voxels (positive finite
/// spacing, orthonormal directions, last row 0 0 0 1); returns `(spacing_mm,
/// orientation)`, e.g. `((0.8, 0.8, 2.5), "LPS")`.
#[pyfunction]
fn check_affine(
    dims: [usize; 3],
    affine_lps: PyReadonlyArray2<'_, f64>,
) -> PyResult<([f64; 3], String)> {
    let grid = grid_of(dims, &affine_lps)?;
    Ok((grid.spacing_mm(), grid.orientation_code()))
}

/// The grid of an array of `dims` voxels with the index→LPS `affine`.
pub(crate) fn grid_of(dims: [usize; 3], affine: &PyReadonlyArray2<'_, f64>) -> PyResult<Grid> {
    let matrix = matrix4(affine, "affine")?;
    if !has_affine_bottom_row(&matrix) {
        return Err(PinholeError::new_err(format!(
            "affine: the last row must be 0 0 0 1, got {:?}",
            matrix[3]
        )));
    }
    Grid::from_ijk_to_lps(dims, &matrix).map_err(|e| PinholeError::new_err(format!("affine: {e}")))
}

/// Whether the last row is `0 0 0 1` (to 1e-9), as an affine transform's is.
pub(crate) fn has_affine_bottom_row(m: &[[f64; 4]; 4]) -> bool {
    m[3].iter()
        .zip([0.0, 0.0, 0.0, 1.0])
        .all(|(a, b)| (a - b).abs() < 1e-9)
}

/// A 4×4 float matrix from NumPy, refused when not 4×4 or not finite.
pub(crate) fn matrix4(array: &PyReadonlyArray2<'_, f64>, what: &str) -> PyResult<[[f64; 4]; 4]> {
    let view = array.as_array();
    if view.shape() != [4, 4] {
        return Err(PinholeError::new_err(format!(
            "{what}: expected a 4x4 matrix, got shape {:?}",
            view.shape()
        )));
    }
    let mut m = [[0.0; 4]; 4];
    for (r, row) in m.iter_mut().enumerate() {
        for (c, value) in row.iter_mut().enumerate() {
            *value = view[[r, c]];
            if !value.is_finite() {
                return Err(PinholeError::new_err(format!(
                    "{what}: element [{r}, {c}] is not finite"
                )));
            }
        }
    }
    Ok(m)
}

fn affine_array<'py>(py: Python<'py>, grid: &Grid) -> Bound<'py, PyArray2<f64>> {
    let m = grid.ijk_to_lps();
    let array = numpy::ndarray::Array2::from_shape_fn((4, 4), |(r, c)| m[r][c]);
    PyArray2::from_owned_array(py, array)
}

/// The volume's buffer as a Fortran-order `(I, J, K)` array (moved, not copied).
fn owned_array<'py, T: Element + pinhole_volume::Voxel>(
    py: Python<'py>,
    volume: Volume<T>,
) -> PyResult<Bound<'py, PyAny>> {
    let (grid, data) = volume.into_parts();
    let [i, j, k] = grid.dims();
    let array = Array3::from_shape_vec((i, j, k).f(), data)
        .map_err(|e| PinholeError::new_err(format!("volume buffer: {e}")))?;
    Ok(PyArray3::from_owned_array(py, array).into_any())
}
