//! Live needle guidance without a server: `pinhole.Guidance(ct, labels, plan=...)`
//! builds the same engine as `pinhole serve` (risk distance fields, target zone) and
//! `evaluate(tip_lps, axis_lps)` returns the metrics the server sends at every update.

use std::path::PathBuf;

use pinhole_guidance::{NeedlePose, Session, SessionInputs};
use pinhole_pipeline::inputs::label_table;
use pinhole_pipeline::needle::PlanPaths;
use pinhole_pipeline::session::{build_guidance, load_volumes, GuidancePlan, SessionData};
use pinhole_pipeline::{provenance, report};
use pyo3::prelude::*;

use crate::reports::{not_ct, run_released, unnamed};
use crate::{to_py_err, PinholeError};

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Guidance>()?;
    Ok(())
}

/// A guidance session: the plan (a `plan.json`, or only a target) on the CT's label
/// map. Building computes the risk structures' distance fields (seconds on a full CT).
#[pyclass(frozen, module = "pinhole._native")]
pub struct Guidance {
    session: Session,
}

#[pymethods]
impl Guidance {
    #[new]
    #[pyo3(signature = (ct, labels, *, plan=None, target=None, labels_table=None,
        registration=None, unnamed_labels="refuse", allow_non_ct=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        ct: PathBuf,
        labels: PathBuf,
        plan: Option<PathBuf>,
        target: Option<String>,
        labels_table: Option<String>,
        registration: Option<PathBuf>,
        unnamed_labels: &str,
        allow_non_ct: bool,
    ) -> PyResult<Self> {
        let unnamed_labels = unnamed(unnamed_labels)?;
        let guided = match (&plan, &target) {
            (Some(_), Some(_)) => {
                return Err(PinholeError::new_err("give plan or target, not both"));
            }
            (None, None) => return Err(PinholeError::new_err("give plan=plan.json or target")),
            (Some(path), None) => {
                GuidancePlan::Needle(Box::new(PlanPaths::read(path).map_err(to_py_err)?))
            }
            (None, Some(text)) => GuidancePlan::Target(text.clone()),
        };
        let session = run_released(py, |observer| {
            let (ct_volume, labels_volume, _) =
                load_volumes(&ct, &labels, not_ct(allow_non_ct), observer)?;
            let (table_spec, table) = label_table(labels_table.as_deref())?;
            let reference_to_ras = match &registration {
                Some(p) => Some(pinhole_io::transform::read_registration(p)?),
                None => None,
            };
            let show = |p: &PathBuf| Some(provenance::recorded_path(p));
            let data = SessionData {
                ct: &ct_volume,
                labels: &labels_volume,
                table: &table,
                plan: guided,
                registration: reference_to_ras,
                unnamed_labels,
                inputs: SessionInputs {
                    ct: show(&ct),
                    labels: show(&labels),
                    labels_table: Some(table_spec),
                    plan: plan.as_ref().and_then(show),
                    target: target.clone(),
                    registration: registration.as_ref().and_then(show),
                },
            };
            build_guidance(&data, observer)
        })?;
        Ok(Self { session })
    }

    /// `/api/session`'s description (plan, risk groups, thresholds, warnings) as JSON.
    fn description(&self) -> PyResult<String> {
        report::to_json(&self.session.description).map_err(to_py_err)
    }

    /// The metrics for a needle tip and axis (LPS mm; the axis points from the hub to
    /// the tip), as JSON: distance to target, depth remaining, lateral deviation, angle,
    /// nearest risk structure, trajectory hit, alert.
    #[pyo3(signature = (tip_lps, axis_lps, *, seq=0, timestamp_s=0.0, device="python"))]
    fn evaluate(
        &self,
        py: Python<'_>,
        tip_lps: [f64; 3],
        axis_lps: [f64; 3],
        seq: u64,
        timestamp_s: f64,
        device: &str,
    ) -> PyResult<String> {
        if tip_lps.iter().chain(&axis_lps).any(|v| !v.is_finite()) {
            return Err(PinholeError::new_err("tip_lps and axis_lps must be finite"));
        }
        if axis_lps.iter().all(|v| *v == 0.0) {
            return Err(PinholeError::new_err("axis_lps must not be zero"));
        }
        let pose = NeedlePose { tip_lps, axis_lps };
        let metrics = py.detach(|| {
            self.session
                .guidance
                .evaluate(&pose, seq, timestamp_s, device)
        });
        report::to_json(&metrics).map_err(to_py_err)
    }
}
