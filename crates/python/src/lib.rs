//! `pinhole._native`: the Rust side of the `pinhole` Python package (PyO3, abi3).
//!
//! The Python layer (`python/pinhole/__init__.py`) wraps these functions in a `Volume`
//! class and a `Report` class; everything here is a thin shell over
//! [`pinhole_pipeline`], the same library calls the CLI makes, so a report from Python
//! is the CLI's JSON text for the same inputs. Guarantees:
//!
//! - the GIL is released while a pipeline, a reader or a renderer works
//!   ([`Python::detach`]), so threads run in parallel;
//! - volumes come back as NumPy arrays without a copy (the reader's buffer becomes the
//!   array's, Fortran order, `array[i, j, k]` with `i` fastest as in the file);
//! - errors are `pinhole.PinholeError` with the CLI's message; warnings go to Python's
//!   `warnings` module (category `pinhole.PinholeWarning`) and into the reports.
//!
//! Coordinates are LPS mm; `affine` is index → LPS (`affine_ras` is computed in Python).
//! Not for clinical use.

mod drr;
mod guidance;
mod reports;
mod volume;

use std::sync::Mutex;

use pinhole_pipeline::Observer;
use pinhole_plan_needle::PlanError;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyUserWarning};
use pyo3::prelude::*;

create_exception!(
    pinhole,
    PinholeError,
    PyException,
    "A request Pinhole refuses or cannot complete (the CLI's error message)."
);
create_exception!(
    pinhole,
    NoFeasiblePathError,
    PinholeError,
    "A needle plan found no path that keeps every hard rule: an answer, not a fault \
     (`candidates`: how many were tried; `rejected`: how many each rule rejected)."
);
create_exception!(
    pinhole,
    PinholeWarning,
    PyUserWarning,
    "Something the result's user must know (also in the report's `warnings`)."
);

/// A pipeline error as a Python exception (`NoFeasiblePathError` carries the counts).
pub(crate) fn to_py_err(err: pinhole_pipeline::Error) -> PyErr {
    let text = pinhole_io::error::error_chain(&err);
    if let pinhole_pipeline::Error::Needle(PlanError::NoFeasiblePath {
        candidates,
        rejected,
        ..
    }) = &err
    {
        return Python::attach(|py| {
            let exception = NoFeasiblePathError::new_err(text);
            let value = exception.value(py);
            let attached = value
                .setattr("candidates", *candidates)
                .and_then(|()| value.setattr("rejected", rejected.clone()));
            attached.err().unwrap_or(exception)
        });
    }
    PinholeError::new_err(text)
}

/// Collects warnings while the GIL is released; [`Collector::emit`] hands them to
/// Python's `warnings` module afterwards.
#[derive(Default)]
pub(crate) struct Collector {
    warnings: Mutex<Vec<String>>,
}

impl Observer for Collector {
    fn warn(&self, message: &str) {
        if let Ok(mut warnings) = self.warnings.lock() {
            warnings.push(message.to_owned());
        }
    }
}

impl Collector {
    /// Issues every collected warning (category `PinholeWarning`).
    pub(crate) fn emit(&self, py: Python<'_>) -> PyResult<()> {
        let warnings = match self.warnings.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(_) => Vec::new(),
        };
        let category = py.get_type::<PinholeWarning>();
        for warning in warnings {
            let message = std::ffi::CString::new(warning.replace('\0', " "))
                .map_err(|e| PinholeError::new_err(e.to_string()))?;
            PyErr::warn(py, &category, &message, 1)?;
        }
        Ok(())
    }
}

/// The package's version (the workspace's).
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The disclaimer every report carries.
#[pyfunction]
fn disclaimer() -> &'static str {
    pinhole_pipeline::DISCLAIMER
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("PinholeError", py.get_type::<PinholeError>())?;
    m.add("NoFeasiblePathError", py.get_type::<NoFeasiblePathError>())?;
    m.add("PinholeWarning", py.get_type::<PinholeWarning>())?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(disclaimer, m)?)?;
    volume::register(m)?;
    drr::register(m)?;
    reports::register(m)?;
    guidance::register(m)?;
    Ok(())
}
