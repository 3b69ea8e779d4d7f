//! Live ultrasound geometry for Pinhole, synchronous and transport-free: the CT and its
//! labels resliced on a tracked ultrasound frame, and a tracked needle against the frame's
//! plane. No I/O, no async, no GPU.
//!
//! * [`plane`]: [`ImagePlane`], a frame's `ImageToLps` (PLUS's `ImageToReference` with
//!   pixel scaling, expressed in LPS mm) and size, validated.
//! * [`reslice`](mod@reslice): the CT (trilinear) and labels (nearest) on the frame's pixels.
//! * [`in_plane`]: tip distance from the plane, needle–plane angle, where the needle's
//!   line crosses the plane, the needle and its predicted path in pixels, in-plane state
//!   and the out-of-plane alert.
//! * [`tracking`]: `ImageToLps` from `ImageToReference`, or from `ProbeToReference` and
//!   the `ImageToProbe` calibration, with the registration (rigid checks on the tracker).
//! * [`simulate`](mod@simulate): B-mode ultrasound simulated from the CT (after Wein et al.
//!   2008) for a linear or convex probe at a pose, with its [`ImagePlane`].
//! * [`reconstruct`](mod@reconstruct): a tracked sweep compounded into an LPS voxel grid
//!   (PLUS's pixel nearest neighbour, mean compounding) with hole filling.
//! * [`register`]: automatic rigid registration of a tracked sweep to the CT by LC²
//!   (Wein et al. 2013), from the tracked pose, coarse to fine.
//! * [`compose`](mod@compose): the fused frame as pictures: label and ablation-zone
//!   contours, the plan path and target projected on the plane, the ultrasound blended
//!   with the CT reslice ([`blend`]) and the reslice alone ([`reslice_view`]).
//!
//! # Guarantees
//! * World coordinates are LPS millimetres (`pinhole_volume`'s convention); pixel
//!   `(i, j)`'s centre lies at `origin + i·col_x + j·col_y` of `ImageToLps`; images are
//!   row-major, `i` fastest.
//! * A plane with non-finite entries, a non-affine bottom row, a degenerate pixel step,
//!   sheared in-plane axes (|cos| > [`plane::SHEAR_TOLERANCE`]) or an empty / oversized
//!   frame is refused with a typed [`PlaneError`]; nothing panics on bad input.
//! * The reslice equals ITK's `ResampleImageFilter` (SimpleITK `sitk.Resample`, linear and
//!   nearest-neighbour, identity transform) on the same geometry: the same inside test,
//!   border clamping and rounding (tested against SimpleITK on a real CT). Output values
//!   are never NaN: the outside value must be finite.
//! * The reslice allocates nothing per pixel or row; `reslice_*_into` reuse the caller's
//!   buffers across frames.
//!
//! ```
//! use pinhole_ultrasound::{needle_in_plane, reslice, ImagePlane, InPlaneOptions, ResliceOptions};
//! use pinhole_volume::{Grid, Volume};
//!
//! // A 1 mm CT whose HU value is 10·x (x = LPS mm towards the patient's left).
//! let grid = Grid::axis_aligned([20, 20, 20], [1.0; 3], [0.0; 3])?;
//! let data = (0..grid.voxel_count()).map(|o| 10.0 * grid.index_of_offset(o)[0] as f32).collect();
//! let ct = Volume::new(grid, data)?;
//!
//! // An axial frame at z = 5 mm: pixel x along patient left, y posterior, 0.5 mm pixels.
//! let plane = ImagePlane::from_steps([2.0, 2.0, 5.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0], 16, 16)?;
//! let frame = reslice(&ct, None, &plane, &ResliceOptions::default())?;
//! assert_eq!(frame.ct_hu[3], 35.0); // pixel (3, 0) at x = 3.5 mm
//!
//! // A needle 3 mm above the plane (+S is the plane normal here) going down at 45°.
//! let needle = needle_in_plane([6.0, 4.0, 8.0], [1.0, 0.0, -1.0], &plane, &InPlaneOptions::default())?;
//! assert!((needle.tip_distance_mm - 3.0).abs() < 1e-12);
//! assert!((needle.angle_to_plane_deg - 45.0).abs() < 1e-9);
//! let crossing = needle.crossing.expect("not parallel");
//! assert!((crossing.point_lps[0] - 9.0).abs() < 1e-12); // 3 mm further left
//! assert!(!needle.in_plane && needle.out_of_plane_alert);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod compose;
pub mod in_plane;
pub mod landmarks;
pub mod plane;
pub mod reconstruct;
pub mod register;
pub mod reslice;
pub mod simulate;
pub mod sweep;
pub mod tracking;

pub use compose::{
    blend, plan_projection, reslice_view, ComposeError, LabelPalette, Overlay, PlanProjection,
};
pub use in_plane::{needle_in_plane, InPlaneError, InPlaneOptions, NeedleInPlane, PlaneCrossing};
pub use plane::{ImagePlane, PlaneError};
pub use reconstruct::{
    reconstruct, sweep_grid, ReconstructError, ReconstructOptions, Reconstruction,
};
pub use reslice::{
    reslice, reslice_both_into, reslice_ct_into, reslice_labels_into, Reslice, ResliceError,
    ResliceOptions,
};
pub use simulate::{
    simulate, Probe, ProbePose, SimulateError, SimulatedFrame, SimulationParams, Simulator,
};
pub use sweep::{sweep_poses, SweepError, SweepMotion};
