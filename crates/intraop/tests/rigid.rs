//! Rigid CT-to-CT registration on constructed pairs from the real chest CT: the control
//! scan is the planning scan seen through a known rigid motion on a short z-range grid of
//! its own, so the answer is known exactly.

use std::path::Path;
use std::sync::OnceLock;

use pinhole_intraop::rigid::{register_rigid, RigidSettings};
use pinhole_volume::math::{mat4_mul, Mat4, Vec3, IDENTITY};
use pinhole_volume::{Grid, Interpolation, Volume};

pub(crate) fn chest_ct() -> &'static Volume<f32> {
    static CT: OnceLock<Volume<f32>> = OnceLock::new();
    CT.get_or_init(|| {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/chest-ct/ct.nii.gz");
        pinhole_io::nifti::read(&path)
            .expect("shared chest CT")
            .to_f32()
    })
}

/// Rotation about `axis` (unit) by `deg`, then a shift, about `centre`.
pub(crate) fn rigid(axis: Vec3, deg: f64, shift: Vec3, centre: Vec3) -> Mat4 {
    let (s, c) = deg.to_radians().sin_cos();
    let t = 1.0 - c;
    let [x, y, z] = axis;
    let r = [
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ];
    let rc = pinhole_volume::math::mat3_mul_vec(&r, centre);
    let b: Vec3 = std::array::from_fn(|a| centre[a] - rc[a] + shift[a]);
    [
        [r[0][0], r[0][1], r[0][2], b[0]],
        [r[1][0], r[1][1], r[1][2], b[1]],
        [r[2][0], r[2][1], r[2][2], b[2]],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

pub(crate) fn apply(m: &Mat4, p: Vec3) -> Vec3 {
    std::array::from_fn(|r| m[r][0] * p[0] + m[r][1] * p[1] + m[r][2] * p[2] + m[r][3])
}

/// A control scan: `z_mm` long around `centre`, 0.8 × 0.8 × 3 mm, showing the planning
/// scan through `control_to_planning`, plus deterministic noise of `noise_hu`.
fn control_scan(
    planning: &Volume<f32>,
    control_to_planning: &Mat4,
    centre: Vec3,
    z_mm: f64,
    noise_hu: f32,
) -> Volume<f32> {
    let spacing = [0.8, 0.8, 3.0];
    let dims = [400, 320, (z_mm / 3.0) as usize];
    let origin = [
        centre[0] - 0.5 * spacing[0] * dims[0] as f64,
        centre[1] - 0.5 * spacing[1] * dims[1] as f64,
        centre[2] - 0.5 * spacing[2] * dims[2] as f64,
    ];
    let grid = Grid::new(dims, spacing, origin, IDENTITY).expect("grid");
    let mut state = 12345u64;
    let mut data = Vec::with_capacity(grid.voxel_count());
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let x = grid.index_to_world([i as f64, j as f64, k as f64]);
                let v = planning
                    .sample_trilinear(apply(control_to_planning, x))
                    .unwrap_or(-1000.0) as f32;
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((state >> 33) as f64 / (1u64 << 31) as f64) as f32 - 0.5;
                data.push(v + noise_hu * 2.0 * u);
            }
        }
    }
    let _ = Interpolation::Nearest;
    Volume::new(grid, data).expect("data")
}

/// Largest distance between where the result and the truth put control points of the
/// scan's central region.
fn worst_error_mm(found: &Mat4, truth: &Mat4, control: &Volume<f32>) -> f64 {
    let (low, high) = control.grid().bounds_lps();
    let mut worst = 0.0f64;
    for fx in [0.2, 0.5, 0.8] {
        for fy in [0.2, 0.5, 0.8] {
            for fz in [0.0, 0.5, 1.0] {
                let f = [fx, fy, fz];
                let p: Vec3 = std::array::from_fn(|a| low[a] + f[a] * (high[a] - low[a]));
                worst = worst.max(pinhole_volume::math::distance(
                    apply(found, p),
                    apply(truth, p),
                ));
            }
        }
    }
    worst
}

#[test]
fn recovers_a_known_rigid_motion_of_a_short_control_scan() {
    let planning = chest_ct();
    let centre = planning.grid().center_lps();
    let focus = [centre[0] - 40.0, centre[1], centre[2] - 60.0];
    let truth = rigid([0.3, 0.2, 0.933], 6.0, [8.0, -6.0, 14.0], focus);
    let control = control_scan(planning, &truth, focus, 60.0, 30.0);
    let result = register_rigid(planning, &control, &RigidSettings::default()).expect("registers");
    let error = worst_error_mm(&result.control_to_planning, &truth, &control);
    eprintln!("{result:?}\nworst error {error:.3} mm");
    assert!(result.converged, "{:?}", result.reason);
    assert!(error < 1.0, "worst error {error} mm");
    let _ = mat4_mul;
}

#[test]
fn another_patient_does_not_converge() {
    let planning = chest_ct();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/abdomen-ct/example_ct.nii.gz");
    let other = pinhole_io::nifti::read(&path).expect("abdomen CT").to_f32();
    // Placed where the planning scan is, so that only the anatomy can tell them apart.
    let grid = other.grid().clone();
    let (c_other, c_planning) = (grid.center_lps(), planning.grid().center_lps());
    let origin: Vec3 = std::array::from_fn(|a| grid.origin_lps()[a] - c_other[a] + c_planning[a]);
    let moved = Grid::new(grid.dims(), grid.spacing_mm(), origin, grid.direction()).expect("grid");
    let other = other.with_grid(moved).expect("same size");
    let result = register_rigid(planning, &other, &RigidSettings::default()).expect("runs");
    eprintln!(
        "{:?} ncc {} overlap {}",
        result.reason, result.ncc, result.overlap
    );
    assert!(!result.converged);
    assert!(result
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("similarity") || r.contains("overlap")));
}

#[test]
fn a_scan_outside_the_planning_range_does_not_converge() {
    let planning = chest_ct();
    let centre = planning.grid().center_lps();
    // The control scan's anatomy is the planning scan's, but the scanner table moved
    // 250 mm: nothing of it lies in the planning volume under the identity start.
    let truth = rigid([0.0, 0.0, 1.0], 0.0, [0.0, 0.0, 0.0], centre);
    let mut control = control_scan(planning, &truth, centre, 45.0, 10.0);
    let grid = control.grid().clone();
    let moved = Grid::new(
        grid.dims(),
        grid.spacing_mm(),
        [
            grid.origin_lps()[0],
            grid.origin_lps()[1],
            grid.origin_lps()[2] + 250.0,
        ],
        IDENTITY,
    )
    .expect("grid");
    control = control.with_grid(moved).expect("same size");
    let result = register_rigid(planning, &control, &RigidSettings::default()).expect("runs");
    eprintln!(
        "{:?} ncc {} overlap {}",
        result.reason, result.ncc, result.overlap
    );
    assert!(!result.converged);
    assert!(result
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("overlap")));
}
