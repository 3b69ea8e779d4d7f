//! The reslice against SimpleITK's `sitk.Resample` (ITK's ResampleImageFilter) on the chest
//! CT and its labels: same geometry, identity transform, linear and nearest-neighbour.

use pinhole_ultrasound::{reslice, ImagePlane, ResliceOptions};

use crate::common::*;

const OUTSIDE_HU: f32 = -1000.0;

/// Planes in several orientations, all oblique to the CT's axes so that no nearest-
/// neighbour lookup sits exactly on a half-voxel tie (where round-off decides).
fn planes(centre: [f64; 3], z_top_mm: f64) -> Vec<(&'static str, ImagePlane)> {
    let l = [1.0, 0.0, 0.0];
    let p = [0.0, 1.0, 0.0];
    let s = [0.0, 0.0, 1.0];
    // Axial-ish: pixel x towards patient left, y posterior, tilted 4° and 2.5°.
    let axial = mat3_mul(&rotation(p, 4.0), &rotation(l, 2.5));
    // Oblique one way: turned 30° about S, then 40° about the new x axis.
    let oblique_a = mat3_mul(&rotation(s, 30.0), &rotation(l, 40.0));
    // Oblique the other way, sagittal-ish (x posterior, y inferior), through the top of
    // the scan so that part of the frame lies outside it.
    let sagittal = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]];
    let oblique_b = mat3_mul(
        &mat3_mul(&rotation(s, -50.0), &rotation(p, -35.0)),
        &sagittal,
    );
    let near_top = [centre[0] + 20.0, centre[1] - 10.0, z_top_mm - 30.0];
    vec![
        (
            "axial-ish",
            centred_plane(&axial, [0.5, 0.45], [512, 400], centre),
        ),
        (
            "oblique +30/+40",
            centred_plane(
                &oblique_a,
                [0.3, 0.3],
                [512, 512],
                [centre[0], centre[1], centre[2] + 15.0],
            ),
        ),
        (
            "oblique -50/-35 across the top edge",
            centred_plane(&oblique_b, [0.6, 0.4], [384, 512], near_top),
        ),
    ]
}

#[test]
fn reslice_equals_simpleitk_on_the_chest_ct() {
    let (ct, labels) = chest();
    let (_, high) = ct.grid().bounds_lps();
    let planes = planes(ct.grid().center_lps(), high[2]);
    let dir = tempfile::tempdir().unwrap();
    let json: Vec<serde_json::Value> = planes
        .iter()
        .map(|(_, plane)| {
            serde_json::json!({
                "image_to_lps": plane.image_to_lps(),
                "width": plane.width_px(),
                "height": plane.height_px(),
            })
        })
        .collect();
    let planes_path = dir.path().join("planes.json");
    std::fs::write(&planes_path, serde_json::to_string(&json).unwrap()).unwrap();
    let reference = python_json(
        "ultrasound_reference.py",
        &[
            shared_data("chest-ct/ct.nii.gz").to_str().unwrap(),
            shared_data("chest-ct/labels.nii.gz").to_str().unwrap(),
            planes_path.to_str().unwrap(),
            dir.path().to_str().unwrap(),
            &OUTSIDE_HU.to_string(),
        ],
    );
    let hu_range = reference["hu_max"].as_f64().unwrap() - reference["hu_min"].as_f64().unwrap();
    let (low, high) = ct.min_max().unwrap();
    assert_eq!(
        (low, high),
        (
            reference["hu_min"].as_f64().unwrap(),
            reference["hu_max"].as_f64().unwrap()
        )
    );
    let options = ResliceOptions {
        outside_hu: OUTSIDE_HU,
    };
    for (n, (name, plane)) in planes.iter().enumerate() {
        let ours = reslice(ct, Some(labels), plane, &options).unwrap();
        let theirs_ct = read_f32_le(&dir.path().join(format!("{n}_ct.f32")));
        let theirs_labels: Vec<u16> = std::fs::read(dir.path().join(format!("{n}_labels.u16")))
            .unwrap()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(theirs_ct.len(), plane.pixel_count(), "{name}");
        let max_diff = ours
            .ct_hu
            .iter()
            .zip(&theirs_ct)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .fold(0.0, f64::max);
        let outside = theirs_ct.iter().filter(|&&v| v == OUTSIDE_HU).count();
        let ours_labels = ours.labels.as_ref().unwrap();
        let label_mismatches = ours_labels
            .iter()
            .zip(&theirs_labels)
            .filter(|(a, b)| a != b)
            .count();
        let labelled = theirs_labels.iter().filter(|&&v| v != 0).count();
        eprintln!(
            "{name}: max |ours - SimpleITK| = {max_diff:.2e} HU (range {hu_range} HU), \
             {outside} pixels outside, {labelled} labelled, {label_mismatches} label mismatches"
        );
        assert!(
            max_diff <= 1e-3 * hu_range,
            "{name}: max difference {max_diff} HU > 1e-3 of {hu_range} HU"
        );
        assert_eq!(label_mismatches, 0, "{name}: labels differ from SimpleITK");
        // The comparison means something: the frame shows anatomy and labels.
        assert!(
            labelled > plane.pixel_count() / 20,
            "{name}: {labelled} labelled pixels"
        );
        assert!(outside < plane.pixel_count() / 2, "{name}: mostly outside");
        // The plane across the top edge tests the border (ITK's half-voxel rule).
        if name.contains("edge") {
            assert!(
                outside > plane.pixel_count() / 20,
                "{name}: {outside} outside"
            );
        }
    }
}
