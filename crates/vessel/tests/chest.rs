//! The real chest CT's label map (`../shared/data/chest-ct`, ids from its structures.csv):
//! a catheter route from the right subclavian artery to the left common carotid artery,
//! checked point by point against the label map read independently with nibabel, and the
//! label junctions against scipy's.

use std::sync::OnceLock;

use pinhole_io::labels::LabelTable;
use pinhole_io::open::{read_volume, ReadOptions};
use pinhole_vessel::route::{is_venous, is_vessel};
use pinhole_vessel::{vessel_tree, CenterlineOptions, RouteOptions, VesselMap};
use pinhole_volume::Volume;

use crate::shared::{python_json, shared_data};

struct Chest {
    labels: Volume<u16>,
    arteries: Vec<(u32, String)>,
}

fn chest() -> &'static Chest {
    static CHEST: OnceLock<Chest> = OnceLock::new();
    CHEST.get_or_init(|| {
        let path = shared_data("chest-ct/labels.nii.gz");
        let loaded = read_volume(&path, &ReadOptions::default(), &mut |_, _| {}).unwrap();
        let labels = loaded.volume.to_labels().unwrap();
        let table = shared_data("chest-ct/structures.csv");
        let table = LabelTable::load(table.to_str().unwrap()).unwrap();
        let arteries = table
            .iter()
            .filter(|(_, e)| is_vessel(&e.name) && !is_venous(&e.name))
            .map(|(id, e)| (id, e.name.clone()))
            .collect();
        Chest { labels, arteries }
    })
}

#[test]
fn route_right_subclavian_to_left_carotid_stays_in_the_arteries() {
    let chest = chest();
    let map = VesselMap::new(&chest.labels, chest.arteries.clone()).unwrap();
    let route = map
        .route(
            "subclavian_artery_right",
            "common_carotid_artery_left",
            &RouteOptions::default(),
        )
        .unwrap();
    // Vessels in anatomical order.
    let order = [
        "subclavian_artery_right",
        "brachiocephalic_trunk",
        "aorta",
        "common_carotid_artery_left",
    ];
    assert_eq!(
        route.vessels.first().map(String::as_str),
        Some(order[0]),
        "{:?}",
        route.vessels
    );
    assert_eq!(
        route.vessels.last().map(String::as_str),
        Some(order[3]),
        "{:?}",
        route.vessels
    );
    let mut next = 0;
    for v in &route.vessels {
        if next < order.len() && v == order[next] {
            next += 1;
        }
    }
    assert_eq!(next, order.len(), "vessels passed: {:?}", route.vessels);
    // Left stays left: the left carotid end lies at larger LPS x than the right
    // subclavian start.
    assert!(
        route.to_lps[0] > route.from_lps[0] + 20.0,
        "{:?} -> {:?}",
        route.from_lps,
        route.to_lps
    );
    // Every point inside the arterial labels, by nibabel's reading of the file.
    let dir = tempfile::tempdir().unwrap();
    let points = dir.path().join("points.json");
    std::fs::write(&points, serde_json::to_string(&route.points_lps).unwrap()).unwrap();
    let values = python_json(
        "vessel_reference.py",
        &[
            "labels-at",
            shared_data("chest-ct/labels.nii.gz").to_str().unwrap(),
            points.to_str().unwrap(),
        ],
    );
    let values = values.as_array().unwrap();
    assert_eq!(values.len(), route.points_lps.len());
    let ids: Vec<i64> = chest.arteries.iter().map(|a| i64::from(a.0)).collect();
    for (p, v) in route.points_lps.iter().zip(values) {
        let v = v.as_i64().unwrap();
        assert!(
            ids.contains(&v),
            "route point {p:?} has label {v}, not an artery"
        );
    }
    // Radii are positive inside the lumen and the route is continuous.
    assert!(route.radius_mm.iter().all(|&r| r > 0.0));
    for w in route.points_lps.windows(2) {
        let d = ((w[1][0] - w[0][0]).powi(2)
            + (w[1][1] - w[0][1]).powi(2)
            + (w[1][2] - w[0][2]).powi(2))
        .sqrt();
        assert!(d <= 2.0, "gap of {d} mm");
    }
    assert!(
        route.min_diameter_mm > 0.0
            && route.min_diameter_mm < 2.0 * route.radius_mm.iter().cloned().fold(0.0, f64::max)
    );
}

#[test]
fn junctions_match_scipy_adjacency() {
    let chest = chest();
    let names = [
        "aorta",
        "brachiocephalic_trunk",
        "subclavian_artery_right",
        "subclavian_artery_left",
        "common_carotid_artery_right",
        "common_carotid_artery_left",
    ];
    let vessels: Vec<(u32, String)> = chest
        .arteries
        .iter()
        .filter(|a| names.contains(&a.1.as_str()))
        .cloned()
        .collect();
    assert_eq!(vessels.len(), names.len());
    let map = VesselMap::new(&chest.labels, vessels.clone()).unwrap();
    let tree = vessel_tree(&map, &CenterlineOptions::default(), 10.0).unwrap();
    let mut ours: Vec<[u32; 2]> = tree.junctions.iter().map(|j| j.label_ids).collect();
    ours.sort();
    let ids: Vec<String> = vessels.iter().map(|v| v.0.to_string()).collect();
    let mut args = vec![
        "adjacency".to_string(),
        shared_data("chest-ct/labels.nii.gz")
            .to_str()
            .unwrap()
            .to_string(),
    ];
    args.extend(ids);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reference = python_json("vessel_reference.py", &args);
    let reference: Vec<[u32; 2]> = reference
        .as_array()
        .unwrap()
        .iter()
        .map(|p| [p[0].as_u64().unwrap() as u32, p[1].as_u64().unwrap() as u32])
        .collect();
    assert_eq!(ours, reference);
    // The arch tree: a root path plus at least the supra-aortic branches, each leaving
    // from an earlier branch.
    assert!(tree.branches.len() >= 4, "{} branches", tree.branches.len());
    for (i, b) in tree.branches.iter().enumerate().skip(1) {
        assert!(b.parent.is_some_and(|p| p < i));
        assert!(b.length_mm >= 10.0);
    }
}
