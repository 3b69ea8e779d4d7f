//! Intraprocedural CT for Pinhole: what a control scan says. **Not for clinical use.**
//!
//! * [`rigid`]: rigid registration of a control or post-ablation CT (short z-range, other
//!   dose or contrast phase, metal in it) onto the planning CT.
//! * [`deformable`]: B-spline free-form deformation inside an organ, on top of the rigid
//!   result (breathing, the needle's push).
//! * [`needle`]: the needle or applicator in a CT: its metal line, tip and axis, with a
//!   confidence, or "not found" with the reason.
//! * [`margin`]: ablation confirmation: coverage and the 3-D minimal ablative margin over
//!   the tumour surface.
//!
//! World coordinates are LPS millimetres throughout; transforms are row-major 4×4
//! matrices acting on LPS points.

pub mod deformable;
mod error;
pub mod margin;
pub mod needle;
pub mod rigid;
mod tip_model;

pub use error::IntraopError;
