//! Deformable (B-spline) registration on a constructed pair from the real chest CT: the
//! control scan is the planning scan seen through a known rigid motion and a known smooth
//! displacement of the liver, so the answer is known at every liver point. The ITK file
//! that carries the result is read back by SimpleITK (ITK's own reader).

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use pinhole_intraop::deformable::{
    planning_to_control_point, register_deformable, BSplineField, DeformableSettings,
};
use pinhole_intraop::rigid::{register_rigid, RigidSettings};
use pinhole_volume::math::{affine_inverse, distance, Mat4, Vec3, IDENTITY};
use pinhole_volume::{dilate, Grid, Mask, Volume};

use crate::rigid::{apply, chest_ct, rigid};

const LIVER: f32 = 5.0;

fn chest_liver() -> &'static Mask {
    static LIVER_MASK: OnceLock<Mask> = OnceLock::new();
    LIVER_MASK.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/chest-ct/labels.nii.gz");
        pinhole_io::nifti::read(&path)
            .expect("shared chest labels")
            .to_f32()
            .map(|v| v == LIVER)
    })
}

/// The liver's centroid, LPS.
fn centroid(mask: &Mask) -> Vec3 {
    let grid = mask.grid();
    let (mut sum, mut n) = ([0.0; 3], 0.0);
    for (o, &v) in mask.data().iter().enumerate() {
        if v {
            let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
            for a in 0..3 {
                sum[a] += p[a];
            }
            n += 1.0;
        }
    }
    sum.map(|s| s / n)
}

/// Planning-side displacement: a Gaussian bump of `peak_mm` along `direction`.
struct Bump {
    centre: Vec3,
    sigma_mm: f64,
    peak: Vec3,
}

impl Bump {
    fn displacement(&self, p: Vec3) -> Vec3 {
        let r2: f64 = (0..3).map(|a| (p[a] - self.centre[a]).powi(2)).sum();
        let g = (-r2 / (2.0 * self.sigma_mm * self.sigma_mm)).exp();
        self.peak.map(|v| v * g)
    }
    fn forward(&self, p: Vec3) -> Vec3 {
        let u = self.displacement(p);
        std::array::from_fn(|a| p[a] + u[a])
    }
    /// Fixed-point inverse (the bump's gradient is well below one).
    fn inverse(&self, q: Vec3) -> Vec3 {
        let mut p = q;
        for _ in 0..60 {
            let u = self.displacement(p);
            p = std::array::from_fn(|a| q[a] - u[a]);
        }
        p
    }
}

/// The control scan: `control(y) = planning(D(T y))`, a slab of `z_mm` around `centre`,
/// 0.8 × 0.8 × 2.5 mm, with deterministic noise.
fn deformed_control(
    planning: &Volume<f32>,
    control_to_planning: &Mat4,
    bump: &Bump,
    centre: Vec3,
    z_mm: f64,
) -> Volume<f32> {
    let spacing = [0.8, 0.8, 2.5];
    let dims = [420, 340, (z_mm / 2.5) as usize];
    let origin: Vec3 = std::array::from_fn(|a| centre[a] - 0.5 * spacing[a] * dims[a] as f64);
    let grid = Grid::new(dims, spacing, origin, IDENTITY).expect("grid");
    let mut state = 777u64;
    let data = (0..grid.voxel_count())
        .map(|o| {
            let y = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
            let x = bump.forward(apply(control_to_planning, y));
            let v = planning.sample_trilinear(x).unwrap_or(-1000.0) as f32;
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = ((state >> 33) as f64 / (1u64 << 31) as f64) as f32 - 0.5;
            v + 40.0 * u
        })
        .collect();
    Volume::new(grid, data).expect("data")
}

/// Liver points (planning LPS) whose true control position lies well inside the slab.
fn liver_points(liver: &Mask, truth: &dyn Fn(Vec3) -> Vec3, control: &Grid) -> Vec<Vec3> {
    let grid = liver.grid();
    let (low, high) = control.bounds_lps();
    let inside = |y: Vec3| (0..3).all(|a| y[a] > low[a] + 12.0 && y[a] < high[a] - 12.0);
    liver
        .data()
        .iter()
        .enumerate()
        .filter(|(_, &v)| v)
        .step_by(97)
        .map(|(o, _)| grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64)))
        .filter(|&p| inside(truth(p)))
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn recovers_a_smooth_liver_deformation_on_top_of_the_rigid_motion() {
    let planning = chest_ct();
    let liver = chest_liver();
    let c = centroid(liver);
    let control_to_planning = rigid([0.2, -0.3, 0.933], 4.0, [6.0, -5.0, 9.0], c);
    let bump = Bump {
        centre: [c[0] + 15.0, c[1] - 10.0, c[2] + 5.0],
        sigma_mm: 35.0,
        peak: [3.0, -4.0, 2.5],
    };
    let control = deformed_control(planning, &control_to_planning, &bump, c, 100.0);
    let planning_to_control = affine_inverse(&control_to_planning).expect("invertible");
    // Truth: planning x -> control T⁻¹ D⁻¹ x.
    let truth = |x: Vec3| apply(&planning_to_control, bump.inverse(x));
    let points = liver_points(liver, &truth, control.grid());
    assert!(points.len() > 300, "{} liver points", points.len());

    let organ = dilate(liver, 15.0);
    let rigid_result = register_rigid(
        planning,
        &control,
        &RigidSettings {
            planning_mask: Some(organ.clone()),
            ..RigidSettings::default()
        },
    )
    .expect("rigid");
    assert!(rigid_result.converged, "{:?}", rigid_result.reason);
    let rigid_p2c = affine_inverse(&rigid_result.control_to_planning).expect("invertible");
    let result = register_deformable(
        planning,
        &control,
        &rigid_p2c,
        &organ,
        &DeformableSettings::default(),
    )
    .expect("deformable");
    let errors = |field: Option<&BSplineField>| -> Vec<f64> {
        points
            .iter()
            .map(|&p| distance(planning_to_control_point(&rigid_p2c, field, p), truth(p)))
            .collect()
    };
    let (rigid_errors, deformable_errors) = (errors(None), errors(Some(&result.field)));
    let (rigid_mean, deformable_mean) = (mean(&rigid_errors), mean(&deformable_errors));
    let deformable_max = deformable_errors.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "{} points: rigid mean {rigid_mean:.2} mm, deformable mean {deformable_mean:.2} max {deformable_max:.2} mm; NCC {:.4} -> {:.4}, max displacement {:.2} mm, min Jacobian {:.3}, levels {:?}",
        points.len(),
        result.ncc_rigid,
        result.ncc,
        result.max_displacement_mm,
        result.min_jacobian,
        result.levels
    );
    assert!(result.converged, "{:?}", result.reason);
    assert!(
        rigid_mean > 1.0,
        "the constructed deformation is visible: {rigid_mean}"
    );
    assert!(deformable_mean < 0.5, "mean error {deformable_mean} mm");
    assert!(deformable_max < 1.5, "largest error {deformable_max} mm");
    assert!(deformable_mean < 0.4 * rigid_mean);
    assert!(result.ncc > result.ncc_rigid);
    assert!(result.min_jacobian > 0.5);
}

#[test]
fn an_organ_outside_the_control_scan_is_not_deformed() {
    let planning = chest_ct();
    let liver = chest_liver();
    let c = centroid(liver);
    let identity = rigid([0.0, 0.0, 1.0], 0.0, [0.0; 3], c);
    let bump = Bump {
        centre: c,
        sigma_mm: 30.0,
        peak: [0.0; 3],
    };
    // A 40 mm slab 150 mm above the liver's centre.
    let above = [c[0], c[1], c[2] + 150.0];
    let control = deformed_control(planning, &identity, &bump, above, 40.0);
    let result = register_deformable(
        planning,
        &control,
        &identity,
        &dilate(liver, 5.0),
        &DeformableSettings::default(),
    )
    .expect("runs");
    assert!(!result.converged);
    let reason = result.reason.unwrap_or_default();
    assert!(reason.contains("barely covers the organ"), "{reason}");
    assert_eq!(result.field.max_displacement_mm(), 0.0);
}

/// SimpleITK reads the composite file and maps points exactly as the engine does, inside
/// the B-spline's valid region and outside it (rigid part only).
#[test]
fn the_itk_composite_file_maps_points_as_simpleitk_reads_it() {
    let mut field =
        BSplineField::covering([-60.0, 20.0, -310.0], [45.0, 110.0, -240.0], 17.0).expect("grid");
    let [nx, ny, _] = field.dims();
    let coefficients = (0..field.coefficients_mm().len())
        .map(|o| {
            let (i, j, k) = (
                (o % nx) as f64,
                ((o / nx) % ny) as f64,
                (o / (nx * ny)) as f64,
            );
            [
                3.0 * (0.7 * i + 0.3 * j).sin(),
                -2.0 * (0.4 * j - 0.9 * k).cos(),
                1.5 * (0.5 * i * k).sin() + 0.25,
            ]
        })
        .collect();
    field
        .set_coefficients_mm(coefficients)
        .expect("coefficients");
    let to_parent = rigid([0.6, 0.0, 0.8], 7.0, [4.0, -11.0, 2.5], [0.0, 60.0, -280.0]);
    let planning_to_control = affine_inverse(&to_parent).expect("invertible");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("control_to_planning.tfm");
    let spacing = field.spacing_mm();
    pinhole_io::transform::write_itk_bspline_transform(
        &path,
        &to_parent,
        &pinhole_io::transform::ItkBSpline {
            dims: field.dims(),
            origin_lps: field.origin_lps(),
            spacing_mm: [spacing; 3],
            direction: IDENTITY,
            coefficients_mm: field.coefficients_mm(),
        },
        "test",
    )
    .expect("written");
    let mut points: Vec<Vec3> = Vec::new();
    for a in 0..6 {
        for b in 0..5 {
            for c in 0..4 {
                points.push([
                    -58.0 + 20.3 * a as f64,
                    22.0 + 21.7 * b as f64,
                    -305.0 + 19.1 * c as f64,
                ]);
            }
        }
    }
    points.extend([
        [-200.0, 0.0, 0.0],
        [0.0, 300.0, -270.0],
        [10.0, 60.0, -100.0],
    ]);
    let points_path = dir.path().join("points.json");
    std::fs::write(&points_path, serde_json::to_string(&points).expect("json")).expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py/slicer_reference.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg("itk-transform")
        .arg(&path)
        .arg(&points_path)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json reply");
    assert_eq!(
        reply["type"],
        serde_json::json!(["CompositeTransform", "AffineTransform", "BSplineTransform"])
    );
    let mapped = reply["points"].as_array().expect("points");
    let mut inside_valid_region = 0;
    for (p, q) in points.iter().zip(mapped) {
        let q: Vec3 = std::array::from_fn(|a| q[a].as_f64().expect("number"));
        let ours = planning_to_control_point(&planning_to_control, Some(&field), *p);
        assert!(
            distance(ours, q) < 1e-6,
            "{p:?}: ours {ours:?}, SimpleITK {q:?}"
        );
        if field.displacement_mm(*p) != [0.0; 3] {
            inside_valid_region += 1;
        }
    }
    assert!(inside_valid_region > 60, "{inside_valid_region}");
}
