//! The chest CT (../shared/data/chest-ct): a plan to the liver's deepest point, a
//! synthetic insertion along it, nearest-structure distances checked against a brute
//! force numpy computation on nibabel's geometry (tests/py/guidance_reference.py).

use std::collections::BTreeMap;

use pinhole_guidance::synthesize::{insertion, tip_lps};
use pinhole_guidance::{default_risk_groups, PlanSource, PlannedNeedle, Session, SessionInputs};
use pinhole_io::labels::LabelTable;
use pinhole_io::open::{read_volume, ReadOptions};
use pinhole_volume::target::TargetSpec;

use crate::common::*;

#[test]
fn chest_ct_insertion_nearest_structure_matches_brute_force() {
    let _heavy = heavy_lock();
    let labels_path = shared_data("chest-ct/labels.nii.gz");
    let table_path = shared_data("chest-ct/structures.csv");
    let labels = read_volume(&labels_path, &ReadOptions::default(), &mut |_, _| {})
        .unwrap()
        .volume
        .to_labels()
        .unwrap();
    let table = LabelTable::from_csv(&table_path).unwrap();
    let target = "liver:deepest"
        .parse::<TargetSpec>()
        .unwrap()
        .resolve(&labels, |n| table.id_of(n))
        .unwrap();
    let t = target.point_lps;
    // Entry ~58 mm towards the patient's right (−x in LPS), anterior (−y) and up (+z).
    let entry = [t[0] - 40.0, t[1] - 40.0, t[2] + 10.0];
    let plan = PlannedNeedle {
        target_lps: t,
        entry_lps: Some(entry),
        path_target_lps: t,
        risk_groups: None,
    };
    let names: BTreeMap<u32, String> = table.iter().map(|(id, e)| (id, e.name.clone())).collect();
    let grid = labels.grid().clone();
    let session = Session::new(
        &grid,
        labels,
        names,
        PlanSource::Plan(plan.clone()),
        None,
        SessionInputs::default(),
    );
    let server = TestServer::start(session, |_| {});
    let mut client = server.client();

    // Synthetic insertion (RAS poses with drift); tips snapped to voxel centres so the
    // brute-force voxel-centre distances are exact references.
    let poses = insertion(&plan, 10.0, 2.0);
    let mut tips = Vec::new();
    let mut results = Vec::new();
    let picked = (0..poses.len()).step_by(4).chain([poses.len() - 1]);
    for (n, p) in picked.map(|i| &poses[i]).enumerate() {
        let tip = tip_lps(&p.matrix);
        let ijk = grid.world_to_voxel(tip).unwrap();
        let snapped = grid.index_to_world(ijk.map(|v| v as f64));
        let axis_ras = [p.matrix[0][2], p.matrix[1][2], p.matrix[2][2]];
        client.send_pose(&pose_ras([-snapped[0], -snapped[1], snapped[2]], axis_ras));
        let (m, _) = client.metrics(n as u64 + 1);
        tips.push(snapped);
        results.push(m);
    }
    let labels_in_groups: Vec<String> = default_risk_groups()
        .into_iter()
        .flat_map(|g| g.labels)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let query = dir.path().join("query.json");
    std::fs::write(
        &query,
        serde_json::json!({"points_lps": tips, "labels": labels_in_groups}).to_string(),
    )
    .unwrap();
    let reference = python_json(
        "guidance_reference.py",
        &[
            labels_path.to_str().unwrap(),
            table_path.to_str().unwrap(),
            query.to_str().unwrap(),
        ],
    );
    let mut names_seen = Vec::new();
    for (i, m) in results.iter().enumerate() {
        let d = reference["distances"][i].as_object().unwrap();
        let (best_name, best) = d
            .iter()
            .map(|(k, v)| (k.clone(), f(v)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        let ours = &m["nearest_structure"];
        assert_close(
            f(&ours["distance_mm"]),
            best,
            0.01,
            &format!("point {i} distance"),
        );
        // Our name must be a label at that minimal distance (ties allowed).
        let name = ours["name"].as_str().unwrap();
        assert_close(
            f(&d[name]),
            best,
            0.01,
            &format!("point {i}: {name} vs {best_name}"),
        );
        names_seen.push(name.to_owned());
        // The plan geometry itself, by hand.
        let tip = tips[i];
        let dist = ((0..3).map(|a| (t[a] - tip[a]).powi(2)).sum::<f64>()).sqrt();
        assert_close(f(&m["tip_to_target_mm"]), dist, 1e-3, "tip to target");
    }
    // The insertion ends at the liver's deepest point: inside the target zone, in liver.
    let last = results.last().unwrap();
    assert_eq!(last["inside_target"], true);
    assert_eq!(
        reference["label_at"].as_array().unwrap().last().unwrap(),
        "liver"
    );
    assert!(f(&last["lateral_deviation_mm"]) < 1.0);
    eprintln!("nearest structures along the insertion: {names_seen:?}");
}
