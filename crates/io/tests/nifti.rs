//! NIfTI against nibabel on every real volume, plus the EDT against scipy.

use pinhole_io::{nifti, AnyVolume, ScalarType};
use pinhole_volume::Voxel;

use crate::common::*;

const NIFTI_FILES: [&str; 5] = [
    "chest-ct/ct.nii.gz",
    "chest-ct/labels.nii.gz",
    "abdomen-ct/example_ct.nii.gz",
    "abdomen-ct/example_ct_sm.nii.gz",
    "abdomen-ct/example_seg.nii.gz",
];

/// Geometry within 1e-4 mm and every voxel exactly equal to nibabel's `get_fdata()`.
pub fn assert_matches_reference(
    ours: &AnyVolume,
    reference: &serde_json::Value,
    voxels: &[f64],
    what: &str,
) {
    let dims: Vec<usize> = serde_json::from_value(reference["dims"].clone()).unwrap();
    assert_eq!(ours.grid().dims().to_vec(), dims, "{what}: dims");
    assert_matrix_close(&ours.grid().ijk_to_lps(), &reference["ijk_to_lps"], 1e-4);
    assert_eq!(
        voxels.len(),
        ours.grid().voxel_count(),
        "{what}: voxel count"
    );
    let mismatches = pinhole_io::with_volume!(ours, v => v
        .data()
        .iter()
        .zip(voxels)
        .filter(|(a, b)| a.to_f64() != **b)
        .count());
    assert_eq!(mismatches, 0, "{what}: voxels differing from the reference");
}

#[test]
fn every_real_nifti_matches_nibabel() {
    let dir = tempfile::tempdir().unwrap();
    for name in NIFTI_FILES {
        let path = shared_data(name);
        let raw = dir.path().join("voxels.npy");
        let reference = python_json(
            "nifti_reference.py",
            &["nifti", path.to_str().unwrap(), raw.to_str().unwrap()],
        );
        let ours = nifti::read(&path).unwrap();
        assert_matches_reference(&ours, &reference, &read_voxels(&raw), name);
    }
}

#[test]
fn chest_ct_applies_scl_inter_and_vox_offset_zero() {
    // int16 stored, scl_inter = -1024, vox_offset = 0 (meaning 352).
    let ct = nifti::read(&shared_data("chest-ct/ct.nii.gz")).unwrap();
    assert_eq!(ct.scalar_type(), ScalarType::I16);
    let (lo, hi) = ct.min_max().unwrap();
    assert_eq!((lo, hi), (-2048.0, 3071.0));
    // The file is LAS: i to the patient's left, j anterior.
    assert_eq!(ct.grid().orientation_code(), "LAS");
}

#[test]
fn left_kidney_lies_left_of_right_kidney() {
    // TotalSegmentator v2: 2 = kidney_right, 3 = kidney_left. LPS x grows to the left.
    let labels = nifti::read(&shared_data("chest-ct/labels.nii.gz")).unwrap();
    let stats = pinhole_volume::label_stats(&labels.to_labels().unwrap());
    assert!(stats[&3].centroid_lps[0] > stats[&2].centroid_lps[0] + 50.0);
}

#[test]
fn nifti_write_read_is_exact_and_nibabel_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let original = nifti::read(&shared_data("abdomen-ct/example_ct_sm.nii.gz")).unwrap();
    for name in ["copy.nii", "copy.nii.gz"] {
        let out = dir.path().join(name);
        nifti::write(&out, &original).unwrap();
        let back = nifti::read(&out).unwrap();
        assert_eq!(back.scalar_type(), original.scalar_type());
        assert_eq!(back, original, "{name}: our own round trip");
        let raw = dir.path().join("voxels.npy");
        let reference = python_json(
            "nifti_reference.py",
            &["nifti", out.to_str().unwrap(), raw.to_str().unwrap()],
        );
        assert_matches_reference(&original, &reference, &read_voxels(&raw), name);
    }
}

#[test]
fn distance_transform_matches_scipy_on_the_liver() {
    let path = shared_data("chest-ct/labels.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let (inside_path, outside_path) = (
        dir.path().join("inside.f32"),
        dir.path().join("outside.f32"),
    );
    let liver_id = 5; // TotalSegmentator v2 "liver"
    python_json(
        "nifti_reference.py",
        &[
            "edt",
            path.to_str().unwrap(),
            "5",
            inside_path.to_str().unwrap(),
            outside_path.to_str().unwrap(),
        ],
    );
    let labels = nifti::read(&path).unwrap().to_labels().unwrap();
    let liver = labels.mask_of(liver_id);
    let read_f32 = |p: &std::path::Path| -> Vec<f32> {
        std::fs::read(p)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    for (ours, reference, what) in [
        (
            pinhole_volume::distance_inside(&liver),
            read_f32(&inside_path),
            "inside",
        ),
        (
            pinhole_volume::distance_to(&liver),
            read_f32(&outside_path),
            "outside",
        ),
    ] {
        let worst = ours
            .data()
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-4,
            "{what}: largest difference from scipy {worst} mm"
        );
    }
}

#[test]
fn header_variants_written_by_nibabel_read_like_nibabel() {
    // NIfTI-2 big-endian, qform-only geometry, and a non-integer scl_slope: each written by
    // nibabel from a real CT with a non-identity direction, then compared with nibabel.
    let dir = tempfile::tempdir().unwrap();
    let src = shared_data("abdomen-ct/example_ct_sm.nii.gz");
    for kind in ["nifti2-be", "qform-only", "float-scaled"] {
        let out = dir.path().join(format!("{kind}.nii"));
        python_json(
            "nifti_reference.py",
            &[
                "variant",
                src.to_str().unwrap(),
                out.to_str().unwrap(),
                kind,
            ],
        );
        let raw = dir.path().join("voxels.npy");
        let reference = python_json(
            "nifti_reference.py",
            &["nifti", out.to_str().unwrap(), raw.to_str().unwrap()],
        );
        let ours = nifti::read(&out).unwrap();
        assert_matches_reference(&ours, &reference, &read_voxels(&raw), kind);
    }
}

/// A served label map says NIFTI_INTENT_LABEL (1002, `intent_code` at byte 68 of the
/// NIfTI-1 header per nifti1.h), so viewers look its colours up exactly, and it reads back
/// voxel for voxel.
#[test]
fn label_map_bytes_carry_the_label_intent() {
    use std::io::Read;
    let labels = nifti::read(&shared_data("abdomen-ct/example_seg.nii.gz")).unwrap();
    let gz = nifti::label_map_to_gzip_bytes(&labels, "labels.nii.gz").unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(i16::from_le_bytes([raw[68], raw[69]]), 1002);
    let plain = nifti::to_gzip_bytes(&labels, "labels.nii.gz").unwrap();
    let mut raw_plain = Vec::new();
    flate2::read::GzDecoder::new(&plain[..])
        .read_to_end(&mut raw_plain)
        .unwrap();
    assert_eq!(i16::from_le_bytes([raw_plain[68], raw_plain[69]]), 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.nii.gz");
    std::fs::write(&path, &gz).unwrap();
    assert_eq!(nifti::read(&path).unwrap(), labels);
}
