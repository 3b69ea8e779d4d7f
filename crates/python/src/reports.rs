//! The planners and the registration as Python calls: each builds the pipeline's
//! request from keyword arguments with the CLI's defaults, runs it with the GIL
//! released, writes the CLI's files when `out` is given, and returns the report as the
//! CLI's JSON text (sorted keys), which `pinhole.Report` wraps.

use std::path::{Path, PathBuf};

use pinhole_ablation::damage::Criterion;
use pinhole_ablation::devices::Modality;
use pinhole_pipeline::ablation::{AblationRequest, ZoneSource};
use pinhole_pipeline::inputs::{NotCt, UnnamedLabels};
use pinhole_pipeline::needle::NeedleRequest;
use pinhole_pipeline::register::RegistrationRequest;
use pinhole_pipeline::vessel::{MeasureRequest, RouteRequest};
use pinhole_pipeline::{report, Observer};
use pinhole_register::Similarity;
use pyo3::prelude::*;

use crate::{to_py_err, Collector, PinholeError};

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(plan_needle, m)?)?;
    m.add_function(wrap_pyfunction!(plan_vessel, m)?)?;
    m.add_function(wrap_pyfunction!(measure_vessel, m)?)?;
    m.add_function(wrap_pyfunction!(plan_ablation, m)?)?;
    m.add_function(wrap_pyfunction!(register_xray, m)?)?;
    Ok(())
}

/// Runs `work` without the GIL, then issues its warnings; errors become `PinholeError`.
pub(crate) fn run_released<T: Send>(
    py: Python<'_>,
    work: impl FnOnce(&dyn Observer) -> pinhole_pipeline::Result<T> + Send,
) -> PyResult<T> {
    let observer = Collector::default();
    let result = py.detach(|| work(&observer));
    observer.emit(py)?;
    result.map_err(to_py_err)
}

pub(crate) fn not_ct(allow_non_ct: bool) -> NotCt {
    if allow_non_ct {
        NotCt::Allow
    } else {
        NotCt::Refuse
    }
}

pub(crate) fn unnamed(policy: &str) -> PyResult<UnnamedLabels> {
    policy
        .parse()
        .map_err(|e: String| PinholeError::new_err(format!("unnamed_labels: {e}")))
}

/// `pinhole plan needle`: straight-needle paths; `plan.json`'s text.
#[pyfunction]
#[pyo3(signature = (ct, labels, *, procedure, target, labels_table=None, profile=None,
    candidates=40_000, top=5, entry_lps=None, unnamed_labels="refuse", allow_non_ct=false,
    out=None))]
#[allow(clippy::too_many_arguments)]
fn plan_needle(
    py: Python<'_>,
    ct: PathBuf,
    labels: PathBuf,
    procedure: String,
    target: String,
    labels_table: Option<String>,
    profile: Option<PathBuf>,
    candidates: usize,
    top: usize,
    entry_lps: Option<[f64; 3]>,
    unnamed_labels: &str,
    allow_non_ct: bool,
    out: Option<PathBuf>,
) -> PyResult<String> {
    let request = NeedleRequest {
        labels_table,
        profile,
        candidates,
        top,
        entry_lps,
        unnamed_labels: unnamed(unnamed_labels)?,
        not_ct: not_ct(allow_non_ct),
        ..NeedleRequest::new(&ct, &labels, &procedure, &target)
    };
    run_released(py, |observer| {
        let outcome = pinhole_pipeline::needle::run(&request, observer)?;
        write_if(out.as_deref(), |dir| outcome.write(dir))?;
        report::to_json(&outcome.report)
    })
}

/// `pinhole plan vessel`: a catheter route; `route.json`'s text.
#[pyfunction]
#[pyo3(signature = (labels, *, from_, to, ct=None, labels_table=None, vessels=Vec::new(),
    step_mm=1.0, tree=false, unnamed_labels="refuse", allow_non_ct=false, out=None))]
#[allow(clippy::too_many_arguments)]
fn plan_vessel(
    py: Python<'_>,
    labels: PathBuf,
    from_: String,
    to: String,
    ct: Option<PathBuf>,
    labels_table: Option<String>,
    vessels: Vec<String>,
    step_mm: f64,
    tree: bool,
    unnamed_labels: &str,
    allow_non_ct: bool,
    out: Option<PathBuf>,
) -> PyResult<String> {
    let request = RouteRequest {
        labels_table,
        ct,
        vessels,
        step_mm,
        tree,
        unnamed_labels: unnamed(unnamed_labels)?,
        not_ct: not_ct(allow_non_ct),
        ..RouteRequest::new(&labels, &from_, &to)
    };
    run_released(py, |observer| {
        let outcome = pinhole_pipeline::vessel::plan_route(&request, observer)?;
        write_if(out.as_deref(), |dir| outcome.write(dir, observer))?;
        report::to_json(&outcome.report)
    })
}

/// `pinhole measure`: diameters and stenosis along one vessel; `measurements.json`.
#[pyfunction]
#[pyo3(signature = (labels, *, label, ct=None, labels_table=None, step_mm=1.0,
    nascet_distal_mm=None, ecst_bulb_mm=None, sizing=None, sizing_min_stenosis_pct=None,
    allow_non_ct=false, out=None))]
#[allow(clippy::too_many_arguments)]
fn measure_vessel(
    py: Python<'_>,
    labels: PathBuf,
    label: String,
    ct: Option<PathBuf>,
    labels_table: Option<String>,
    step_mm: f64,
    nascet_distal_mm: Option<[f64; 2]>,
    ecst_bulb_mm: Option<f64>,
    sizing: Option<PathBuf>,
    sizing_min_stenosis_pct: Option<f64>,
    allow_non_ct: bool,
    out: Option<PathBuf>,
) -> PyResult<String> {
    let defaults = MeasureRequest::new(&labels, &label);
    let request = MeasureRequest {
        labels_table,
        ct,
        step_mm,
        nascet_distal_mm,
        ecst_bulb_mm,
        sizing,
        sizing_min_stenosis_pct: sizing_min_stenosis_pct
            .unwrap_or(defaults.sizing_min_stenosis_pct),
        not_ct: not_ct(allow_non_ct),
        ..defaults
    };
    run_released(py, |observer| {
        let outcome = pinhole_pipeline::vessel::measure(&request, observer)?;
        write_if(out.as_deref(), |dir| outcome.write(dir, observer))?;
        report::to_json(&outcome.report)
    })
}

/// `pinhole plan ablation`: zone, coverage and margin; `ablation.json`'s text.
#[pyfunction]
#[pyo3(signature = (ct, labels, *, tumor, power_w, minutes, device=None, devices=None,
    simulate=false, applicator="microwave", criterion="arrhenius", margin_mm=5.0, path=None,
    grid_mm=1.0, max_applicators=3, labels_table=None, unnamed_labels="refuse",
    allow_non_ct=false, out=None))]
#[allow(clippy::too_many_arguments)]
fn plan_ablation(
    py: Python<'_>,
    ct: PathBuf,
    labels: PathBuf,
    tumor: String,
    power_w: f64,
    minutes: f64,
    device: Option<String>,
    devices: Option<PathBuf>,
    simulate: bool,
    applicator: &str,
    criterion: &str,
    margin_mm: f64,
    path: Option<PathBuf>,
    grid_mm: f64,
    max_applicators: usize,
    labels_table: Option<String>,
    unnamed_labels: &str,
    allow_non_ct: bool,
    out: Option<PathBuf>,
) -> PyResult<String> {
    let zone = if simulate {
        let applicator = match applicator {
            "microwave" => Modality::Microwave,
            "laser" => Modality::Laser,
            other => {
                return Err(PinholeError::new_err(format!(
                    "applicator {other:?}: microwave or laser"
                )))
            }
        };
        let criterion: Criterion = criterion
            .parse()
            .map_err(|e: String| PinholeError::new_err(format!("criterion: {e}")))?;
        ZoneSource::Simulate {
            applicator,
            criterion,
            device,
            devices,
        }
    } else {
        ZoneSource::Device {
            name: device.unwrap_or_default(),
            devices,
        }
    };
    let request = AblationRequest {
        labels_table,
        margin_mm,
        zone,
        path,
        grid_mm,
        max_applicators,
        unnamed_labels: unnamed(unnamed_labels)?,
        not_ct: not_ct(allow_non_ct),
        ..AblationRequest::device(&ct, &labels, &tumor, "", power_w, minutes)
    };
    run_released(py, |observer| {
        let outcome = pinhole_pipeline::ablation::run(&request, observer)?;
        write_if(out.as_deref(), |dir| outcome.write(dir))?;
        report::to_json(&outcome.report)
    })
}

/// `pinhole register`: the CT's pose from a live X-ray; `pose.json`'s text.
#[pyfunction]
#[pyo3(name = "register", signature = (ct, xray, *, frame=0, labels=None, labels_table=None,
    mask_labels=Vec::new(), lao_deg=0.0, cran_deg=0.0, sid_mm=1020.0, sod_mm=850.0,
    pixel_mm=None, source_anterior=false, isocenter_lps=None, invert=false,
    similarity="gradient-ncc", levels_mm=None, seed=1, gpu=false, min_similarity=None,
    mirror_check=true, allow_non_ct=false, out=None))]
#[allow(clippy::too_many_arguments)]
fn register_xray(
    py: Python<'_>,
    ct: PathBuf,
    xray: PathBuf,
    frame: usize,
    labels: Option<PathBuf>,
    labels_table: Option<String>,
    mask_labels: Vec<String>,
    lao_deg: f64,
    cran_deg: f64,
    sid_mm: f64,
    sod_mm: f64,
    pixel_mm: Option<f64>,
    source_anterior: bool,
    isocenter_lps: Option<[f64; 3]>,
    invert: bool,
    similarity: &str,
    levels_mm: Option<Vec<f64>>,
    seed: u64,
    gpu: bool,
    min_similarity: Option<f64>,
    mirror_check: bool,
    allow_non_ct: bool,
    out: Option<PathBuf>,
) -> PyResult<String> {
    let defaults = RegistrationRequest::new(&ct, &xray);
    let similarity = Similarity::parse(similarity).ok_or_else(|| {
        PinholeError::new_err(format!(
            "similarity {similarity:?}: ncc, gradient-ncc, patch-ncc[:SIZE] or ncc+gradient"
        ))
    })?;
    let request = RegistrationRequest {
        xray_frame: frame,
        labels,
        labels_table,
        mask_labels,
        init_lao_deg: lao_deg,
        init_cran_deg: cran_deg,
        sid_mm,
        sod_mm,
        pixel_mm,
        source_anterior,
        isocenter_lps,
        invert,
        similarity,
        levels_mm: levels_mm.unwrap_or(defaults.levels_mm.clone()),
        seed,
        gpu,
        min_similarity: min_similarity.unwrap_or(defaults.min_similarity),
        mirror_check,
        not_ct: not_ct(allow_non_ct),
        ..defaults
    };
    run_released(py, |observer| {
        let outcome = pinhole_pipeline::register::run(&request, observer)?;
        write_if(out.as_deref(), |dir| outcome.write(dir, observer))?;
        report::to_json(&outcome.report)
    })
}

fn write_if(
    out: Option<&Path>,
    write: impl FnOnce(&Path) -> pinhole_pipeline::Result<()>,
) -> pinhole_pipeline::Result<()> {
    match out {
        Some(dir) => write(dir),
        None => Ok(()),
    }
}
