//! Limits on the linear rescale (`value = slope · stored + intercept`) that NIfTI
//! (`scl_slope` / `scl_inter`) and DICOM (`RescaleSlope` / `RescaleIntercept`) headers
//! apply to stored samples.
//!
//! A slope or intercept outside these limits is refused rather than applied: no imaging
//! modality needs them, and values such as `RescaleSlope 1e300` turn every voxel into an
//! absurd number (or infinity once narrowed to `f32`) without any other sign of trouble.

use crate::error::ErrorKind;

/// Largest accepted `|slope|`.
pub const MAX_SLOPE: f64 = 1e6;
/// Smallest accepted non-zero `|slope|` (below it every stored value maps to ~0).
pub const MIN_SLOPE: f64 = 1e-6;
/// Largest accepted `|intercept|` (CT uses about -1024; PET and MR 0).
pub const MAX_INTERCEPT: f64 = 1e6;

/// `Ok` when `slope` and `intercept` are finite and within the limits above; the error
/// names the header fields (`slope_name`, `intercept_name`) and the limit broken.
pub(crate) fn check(
    slope: f64,
    intercept: f64,
    slope_name: &str,
    intercept_name: &str,
) -> Result<(), ErrorKind> {
    let bad = |what: String| ErrorKind::InvalidHeader(what);
    if !slope.is_finite() || !(MIN_SLOPE..=MAX_SLOPE).contains(&slope.abs()) {
        return Err(bad(format!(
            "{slope_name} {slope} is outside the accepted range: |slope| must be finite and \
             within {MIN_SLOPE:e}..{MAX_SLOPE:e}"
        )));
    }
    if !intercept.is_finite() || intercept.abs() > MAX_INTERCEPT {
        return Err(bad(format!(
            "{intercept_name} {intercept} is outside the accepted range: it must be finite \
             with |intercept| at most {MAX_INTERCEPT:e}"
        )));
    }
    Ok(())
}
