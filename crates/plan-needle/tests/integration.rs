//! Synthetic phantoms with known answers (analytic geometry, no real data).

// Helpers outside `#[test]` functions unwrap too (`allow-unwrap-in-tests` covers only tests).
#![allow(clippy::unwrap_used)]

use pinhole_plan_needle::{PlanError, PlanOptions, PlanningContext, Profile};
use pinhole_volume::{Grid, LabelAim, TargetSpec, Volume};

const PROFILE: &str = r#"
name = "phantom"
description = "test"
[length]
max_mm = 200.0
source = "test"
[skin_angle]
max_deg = 90.0
source = "test"
[[risk_groups]]
name = "bone"
labels = ["bone"]
clearance_mm = 2.0
source = "test"
"#;

const SHELL_RADIUS_MM: f64 = 30.0;
const WINDOW_RADIUS_MM: f64 = 12.0;

/// A 120 mm cube of soft tissue (0 HU) in air, on an LAS grid (j runs anterior), with a
/// bone shell (r = 30 mm, 4 mm thick) around the centre, open in one window of radius
/// 12 mm towards the patient's left (+x LPS).
fn phantom() -> (PlanningContext, Vec<(u32, String)>, [f64; 3]) {
    let n = 70;
    let grid = Grid::new(
        [n, n, n],
        [2.0; 3],
        [-69.0, 69.0, -69.0],
        [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
    )
    .unwrap();
    let mut ct = Volume::filled(grid.clone(), -1000.0f32);
    let mut labels = Volume::filled(grid.clone(), 0u16);
    let centre = [0.0, 0.0, 0.0];
    for o in 0..grid.voxel_count() {
        let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
        if p.iter().all(|v| v.abs() <= 60.0) {
            ct.data_mut()[o] = 0.0;
        }
        let r = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
        let lateral = (p[1] * p[1] + p[2] * p[2]).sqrt();
        let in_window = p[0] > 0.0 && lateral < WINDOW_RADIUS_MM;
        if (SHELL_RADIUS_MM..SHELL_RADIUS_MM + 4.0).contains(&r) && !in_window {
            labels.data_mut()[o] = 1;
        }
    }
    let table = vec![(1, "bone".to_string()), (2, "organ".to_string())];
    (PlanningContext::new(ct, labels).unwrap(), table, centre)
}

#[test]
fn every_path_goes_through_the_only_window_on_the_left() {
    let (ctx, table, centre) = phantom();
    let profile = Profile::from_toml(PROFILE, "test").unwrap();
    let target = TargetSpec::Point(centre)
        .resolve(ctx.labels(), |_| None)
        .unwrap();
    let options = PlanOptions {
        candidates: 20_000,
        top_k: 3,
        entry_lps: None,
        ..PlanOptions::default()
    };
    let plan = ctx.plan(&profile, &table, &target, &options).unwrap();
    assert!(!plan.paths.is_empty());
    // A straight line from the centre stays 2 mm from the shell only through the window:
    // its direction is within asin((12 - 2) / 34) of +x (window rim at the outer shell
    // radius is the binding constraint).
    let max_angle = ((WINDOW_RADIUS_MM - 2.0) / SHELL_RADIUS_MM)
        .asin()
        .to_degrees()
        + 1.0;
    for p in &plan.paths {
        let angle = p.direction_lps[0].clamp(-1.0, 1.0).acos().to_degrees();
        assert!(
            angle <= max_angle,
            "path {} at {angle:.1} deg from +x",
            p.rank
        );
        // The patient's left: LPS x grows towards the entry (the grid is LAS).
        assert!(p.entry_lps[0] > 55.0, "entry {:?}", p.entry_lps);
        assert!(p.min_clearance_mm["bone"].expect("bone is in the map") >= 2.0);
        // The entry is where the trilinear CT crosses -500 HU: midway between the voxel
        // centres at x = 59 mm (0 HU) and x = 61 mm (-1000 HU), on the plane x = 60 mm.
        assert!(
            (p.entry_lps[0] - 60.0).abs() < 1e-3,
            "entry {:?}",
            p.entry_lps
        );
        assert!((p.length_mm - 60.0 / p.direction_lps[0]).abs() < 1e-3);
    }
    // Most candidates hit the shell.
    let shell = plan.rejected.get("clearance:bone").copied().unwrap_or(0);
    assert!(shell > options.candidates * 8 / 10, "{:?}", plan.rejected);
}

#[test]
fn a_target_beyond_the_length_limit_reports_counts_per_rule() {
    let (ctx, table, centre) = phantom();
    let short = PROFILE.replace("max_mm = 200.0", "max_mm = 40.0");
    let profile = Profile::from_toml(&short, "test").unwrap();
    let target = TargetSpec::Point(centre)
        .resolve(ctx.labels(), |_| None)
        .unwrap();
    let options = PlanOptions {
        candidates: 5_000,
        ..PlanOptions::default()
    };
    match ctx.plan(&profile, &table, &target, &options) {
        Err(PlanError::NoFeasiblePath {
            candidates,
            rejected,
            ..
        }) => {
            assert_eq!(candidates, 5_000);
            assert_eq!(rejected.values().sum::<usize>(), 5_000);
            // The skin is >= 60 mm away: rays through the window exceed the length,
            // the rest hit the shell first.
            assert!(rejected["max_length"] > 0);
            assert!(rejected["clearance:bone"] > 0);
            let message = PlanError::NoFeasiblePath {
                procedure: "phantom".into(),
                candidates,
                rejected,
            }
            .to_string();
            assert!(message.contains("max_length"), "{message}");
        }
        other => panic!(
            "expected no feasible path, got {:?}",
            other.map(|p| p.paths)
        ),
    }
}

#[test]
fn helpful_errors_for_outside_targets_and_missing_labels() {
    let (ctx, table, _) = phantom();
    let profile = Profile::from_toml(PROFILE, "test").unwrap();
    let outside = TargetSpec::Point([0.0, 0.0, 65.0])
        .resolve(ctx.labels(), |_| None)
        .unwrap();
    assert!(matches!(
        ctx.plan(&profile, &table, &outside, &PlanOptions::default()),
        Err(PlanError::TargetOutsideBody { .. })
    ));
    let inside = TargetSpec::Point([0.0; 3])
        .resolve(ctx.labels(), |_| None)
        .unwrap();
    let kidney = Profile::builtin("kidney-biopsy").unwrap();
    let err = ctx
        .plan(&kidney, &table, &inside, &PlanOptions::default())
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PlanError::MissingLabels { .. }));
    assert!(text.contains("aorta") && text.contains("colon"), "{text}");
}

#[test]
fn a_given_entry_is_evaluated_and_its_violations_named() {
    let (ctx, table, centre) = phantom();
    let profile = Profile::from_toml(PROFILE, "test").unwrap();
    let target = TargetSpec::Point(centre)
        .resolve(ctx.labels(), |_| None)
        .unwrap();
    let through_window = PlanOptions {
        entry_lps: Some([60.0, 0.0, 0.0]),
        ..PlanOptions::default()
    };
    let plan = ctx
        .plan(&profile, &table, &target, &through_window)
        .unwrap();
    assert!(plan.paths[0].feasible, "{:?}", plan.paths[0].violations);
    assert!((plan.paths[0].length_mm - 60.0).abs() < 1e-9);
    // Through the shell towards the patient's right: broken.
    let through_bone = PlanOptions {
        entry_lps: Some([-60.0, 0.0, 0.0]),
        ..PlanOptions::default()
    };
    let plan = ctx.plan(&profile, &table, &target, &through_bone).unwrap();
    assert!(!plan.paths[0].feasible);
    assert!(plan.paths[0]
        .violations
        .contains(&"clearance:bone".to_string()));
    assert!(plan.paths[0].min_clearance_mm["bone"].expect("bone is in the map") < 2.0);
}

/// The lane-wise (SIMD) marches must end and score every ray as the one-ray march does:
/// on a phantom with two risk groups, a length limit, a skin-angle limit and a target
/// inside its own organ (the capsule angle needs labels on the way out), both give the
/// same plan, rule counts, paths and skin points.
/// (Where the CPU has no AVX2 both runs take the one-ray march and agree trivially.)
#[test]
fn lane_marches_equal_one_ray_marches() {
    let (ctx, mut table, centre) = phantom();
    table.push((3, "organ".to_string()));
    table.push((4, "lesion_organ".to_string()));
    let (grid, ct, mut labels) = (
        ctx.labels().grid().clone(),
        ctx.ct().clone(),
        ctx.labels().clone(),
    );
    for o in 0..grid.voxel_count() {
        let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
        let dist = |c: [f64; 3]| {
            ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2)).sqrt()
        };
        // In the way of part of the window's rays, and just under the skin beside them
        // (the sample where a ray leaves the body must not count towards its margins).
        if dist([45.0, 6.0, 0.0]) < 6.0 || dist([57.0, -14.0, 0.0]) < 3.0 {
            labels.data_mut()[o] = 3;
        }
        // The target's own organ, off-centre: the march reads labels until it leaves it
        // (the capsule angle).
        if dist([3.0, -7.0, 1.0]) < 9.0 {
            labels.data_mut()[o] = 4;
        }
    }
    let ctx = PlanningContext::new(ct, labels).unwrap();
    let profile = PROFILE
        .replace("max_mm = 200.0", "max_mm = 58.0")
        .replace("max_deg = 90.0", "max_deg = 50.0")
        + r#"
[[risk_groups]]
name = "organ"
labels = ["organ"]
clearance_mm = 5.0
source = "test"
"#;
    let profile = Profile::from_toml(&profile, "test").unwrap();
    let target = TargetSpec::Point([centre[0] + 3.0, centre[1] - 2.0, centre[2] + 1.0])
        .resolve(ctx.labels(), |_| None)
        .unwrap();
    let plan = |simd: bool| {
        let options = PlanOptions {
            candidates: 20_000,
            simd,
            ..PlanOptions::default()
        };
        ctx.plan(&profile, &table, &target, &options)
    };
    let (lanes, single) = (plan(true), plan(false));
    match (lanes, single) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.rejected, b.rejected);
            for rule in ["clearance:bone", "clearance:organ", "max_length"] {
                assert!(
                    a.rejected.get(rule).copied().unwrap_or(0) > 0,
                    "{rule}: {:?}",
                    a.rejected
                );
            }
            assert_eq!(a.feasible, b.feasible);
            assert_eq!(a.skin_points, b.skin_points);
            assert!(a.paths.iter().all(|p| p.capsule_angle_deg.is_some()));
            assert_eq!(
                serde_json::to_value(&a.paths).unwrap(),
                serde_json::to_value(&b.paths).unwrap()
            );
        }
        (a, b) => panic!(
            "expected two plans, got {:?} and {:?}",
            a.map(|p| p.rejected),
            b.map(|p| p.rejected)
        ),
    }
}

/// A 120 mm cube of soft tissue (0 HU) in air on the LAS grid of [`phantom`] (2 mm
/// voxels, centres at odd mm), with `paint(p)` giving each voxel's label.
fn tissue_cube(paint: impl Fn([f64; 3]) -> u16) -> PlanningContext {
    let (ctx, _, _) = phantom();
    let grid = ctx.labels().grid().clone();
    let mut ct = Volume::filled(grid.clone(), -1000.0f32);
    let mut labels = Volume::filled(grid.clone(), 0u16);
    for o in 0..grid.voxel_count() {
        let p = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
        if p.iter().all(|v| v.abs() <= 60.0) {
            ct.data_mut()[o] = 0.0;
        }
        labels.data_mut()[o] = paint(p);
    }
    PlanningContext::new(ct, labels).unwrap()
}

/// The rib of [`a_rib_rule_on_the_footprint_keeps_needles_below_the_rib_only_where_they_run_over_it`]:
/// a bar posterior to the target, x in [-20, 20], y (posterior) in [28, 32], z in [-2, 2]
/// mm (voxel centres x = -19..19, y = 29, 31, z = -1, 1).
fn in_rib(p: [f64; 3]) -> bool {
    p[0].abs() < 20.0 && (28.0..32.0).contains(&p[1]) && p[2].abs() < 2.0
}

/// Regression (#17): the kidney-biopsy rule "below rib 11" is measured where the needle
/// runs over the rib (its axial footprint), not at the rib's lowest voxel: a needle
/// running over the rib passes below it; one beside the rib's end may pass higher.
#[test]
fn a_rib_rule_on_the_footprint_keeps_needles_below_the_rib_only_where_they_run_over_it() {
    let ctx = tissue_cube(|p| if in_rib(p) { 5 } else { 0 });
    let table = vec![(1, "bone".to_string()), (5, "rib".to_string())];
    let rule = |level: &str| {
        format!(
            "{PROFILE}\n[entry_caudal_to]\nleft = [\"rib\"]\nright = [\"rib\"]\nfallback = [\"rib\"]\nlevel = \"{level}\"\nsource = \"test\"\n"
        )
        .replace("labels = [\"bone\"]", "labels = [\"bone\"]\noptional = true")
    };
    let target = TargetSpec::Point([0.0, 0.0, 0.0])
        .resolve(ctx.labels(), |_| None)
        .unwrap();
    let options = PlanOptions {
        candidates: 20_000,
        ..PlanOptions::default()
    };
    let footprint = Profile::from_toml(&rule("footprint"), "test").unwrap();
    let plan = ctx.plan(&footprint, &table, &target, &options).unwrap();
    assert!(plan.rejected.get("entry_caudal_to").copied().unwrap_or(0) > 0);
    assert_eq!(plan.profile.entry_caudal_to_z_mm, None);
    // Where each feasible needle crosses the rib's plane y = 30 mm before the skin.
    let crossings: Vec<[f64; 3]> = plan
        .skin_points
        .iter()
        .filter(|(entry, dir, feasible, _)| *feasible && dir[1] > 0.05 && entry[1] > 30.0)
        .map(|(_, dir, _, _)| dir.map(|d| d * 30.0 / dir[1]))
        .collect();
    let over_rib = crossings.iter().filter(|p| p[0].abs() < 19.0);
    assert!(over_rib.clone().count() > 10);
    for p in over_rib {
        // Below the rib's lowest voxel centres (z = -1), to the 1 mm sampling.
        assert!(p[2] <= -0.5, "a feasible needle runs over the rib at {p:?}");
    }
    assert!(
        crossings.iter().any(|p| p[0].abs() > 23.0 && p[2] > 5.0),
        "no needle passes beside the rib's end above its level"
    );
    for path in &plan.paths {
        if let Some(m) = path.entry_caudal_to_margin_mm {
            assert!(m >= 0.0, "path {}: margin {m}", path.rank);
        }
    }
    // A given entry straight over the rib (posterior and cranial) breaks the rule.
    let over = PlanOptions {
        entry_lps: Some([0.0, 60.0, 20.0]),
        ..options.clone()
    };
    let given = ctx.plan(&footprint, &table, &target, &over).unwrap();
    let path = &given.paths[0];
    assert_eq!(path.violations, vec!["entry_caudal_to".to_string()]);
    // Over the footprint (columns y = 27..33, the rib's widened by a voxel) the needle
    // runs at z = y / 3 = 9..11 (to the sampling), the rib's lowest centre at z = -1.
    let margin = path.entry_caudal_to_margin_mm.unwrap();
    assert!((-12.5..=-11.5).contains(&margin), "margin {margin}");

    // The lowest-voxel level: every entry below z = -1, beside the rib or not.
    let lowest = Profile::from_toml(&rule("lowest-voxel"), "test").unwrap();
    let plan = ctx.plan(&lowest, &table, &target, &options).unwrap();
    assert_eq!(plan.profile.entry_caudal_to_z_mm, Some(-1.0));
    assert!(plan
        .skin_points
        .iter()
        .filter(|s| s.2)
        .all(|(entry, _, _, _)| entry[2] <= -1.0));
}

/// A kidney-like ellipsoid label: semi-axes 30 (x), 24 (y) and 54 (z) mm about the
/// origin, with a 6 mm "cyst" (label 23) in its upper half.
fn ellipsoid_kidney(p: [f64; 3]) -> u16 {
    let e = (p[0] / 30.0).powi(2) + (p[1] / 24.0).powi(2) + (p[2] / 54.0).powi(2);
    let cyst = (p[0].powi(2) + p[1].powi(2) + (p[2] - 20.0).powi(2)).sqrt() < 6.0;
    match (e <= 1.0, cyst) {
        (_, true) => 23,
        (true, false) => 3,
        _ => 0,
    }
}

/// Distance from `p` (inside) to the ellipsoid's surface, by dense sampling of it.
fn depth_in_ellipsoid(p: [f64; 3]) -> f64 {
    let mut best = f64::INFINITY;
    for a in 0..720 {
        let theta = std::f64::consts::PI * f64::from(a) / 719.0;
        for b in 0..720 {
            let phi = 2.0 * std::f64::consts::PI * f64::from(b) / 720.0;
            let q = [
                30.0 * theta.sin() * phi.cos(),
                24.0 * theta.sin() * phi.sin(),
                54.0 * theta.cos(),
            ];
            let d = (0..3).map(|k| (p[k] - q[k]).powi(2)).sum::<f64>().sqrt();
            best = best.min(d);
        }
    }
    best
}

/// `kidney_left:lower-pole-cortex` on an ellipsoid of known geometry lands in the lower
/// pole, in the cortex (3-8 mm inside the surface), far from the centroid; the
/// kidney-biopsy profile aims a bare `kidney_left` there and leaves a lesion label alone.
#[test]
fn lower_pole_cortex_lands_in_the_cortex_of_the_lower_pole() {
    let ctx = tissue_cube(ellipsoid_kidney);
    let id_of = |name: &str| match name {
        "kidney_left" => Some(3),
        "kidney_cyst_left" => Some(23),
        _ => None,
    };
    let resolve = |spec: &str| {
        spec.parse::<TargetSpec>()
            .unwrap()
            .resolve(ctx.labels(), id_of)
            .unwrap()
    };
    let cortex = resolve("kidney_left:lower-pole-cortex");
    assert_eq!(cortex.aim, Some(LabelAim::LowerPoleCortex));
    assert!(cortex.aim_given);
    let p = cortex.point_lps;
    assert_eq!(ctx.labels().sample_nearest(p), Some(3));
    let depth = depth_in_ellipsoid(p);
    let centroid = resolve("kidney_left:centroid").point_lps;
    let off = (0..3)
        .map(|a| (p[a] - centroid[a]).powi(2))
        .sum::<f64>()
        .sqrt();
    eprintln!("lower-pole cortex at {p:?}: {depth:.2} mm inside the surface, {off:.1} mm from the centroid {centroid:?}");
    assert!((3.0..=8.0).contains(&depth), "depth {depth:.2} mm at {p:?}");
    assert!(p[2] < -54.0 / 3.0, "not in the caudal third: {p:?}");
    assert!(off > 40.0, "{off:.1} mm from the centroid");

    // The profile: a bare kidney is moved there (and says so); a lesion is not.
    let profile = Profile::builtin("kidney-biopsy").unwrap();
    let bare = resolve("kidney_left");
    assert_eq!(bare.aim, Some(LabelAim::Centroid));
    let aimed = ctx.aim(&profile, bare);
    assert_eq!(aimed.point_lps, p);
    assert_eq!(aimed.aim, Some(LabelAim::LowerPoleCortex));
    assert!(
        aimed
            .description
            .contains("lower-pole cortex (kidney-biopsy profile)"),
        "{}",
        aimed.description
    );
    let deepest = ctx.aim(&profile, resolve("kidney_left:deepest"));
    assert_eq!(deepest.aim, Some(LabelAim::Deepest));
    let lesion = ctx.aim(&profile, resolve("kidney_cyst_left"));
    assert_eq!(lesion.aim, Some(LabelAim::Centroid));
    assert!(
        (lesion.point_lps[2] - 20.0).abs() < 2.0,
        "{:?}",
        lesion.point_lps
    );
}
