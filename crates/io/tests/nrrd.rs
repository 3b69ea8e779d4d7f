//! NRRD: round trips through NIfTI, and pynrrd reading what we write.

use pinhole_io::{nifti, nrrd};

use crate::common::*;
use crate::nifti::assert_matches_reference;

#[test]
fn nifti_to_nrrd_to_nifti_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    for (name, gzip) in [
        ("chest-ct/labels.nii.gz", true),
        ("abdomen-ct/example_ct.nii.gz", false),
    ] {
        let original = nifti::read(&shared_data(name)).unwrap();
        let nrrd_path = dir.path().join("v.nrrd");
        nrrd::write(
            &nrrd_path,
            &original,
            &nrrd::WriteOptions {
                gzip,
                key_values: vec![],
            },
        )
        .unwrap();
        let via_nrrd = nrrd::read(&nrrd_path).unwrap();
        assert_eq!(via_nrrd, original, "{name}: NRRD round trip");
        let nii_path = dir.path().join("v.nii.gz");
        nifti::write(&nii_path, &via_nrrd).unwrap();
        assert_eq!(
            nifti::read(&nii_path).unwrap(),
            original,
            "{name}: NIfTI → NRRD → NIfTI"
        );

        let raw = dir.path().join("voxels.f64");
        let reference = python_json(
            "nifti_reference.py",
            &["nrrd", nrrd_path.to_str().unwrap(), raw.to_str().unwrap()],
        );
        assert_eq!(reference["space"], "left-posterior-superior");
        assert_matches_reference(&original, &reference, &read_f64_le(&raw), name);
    }
}

#[test]
fn ras_space_nrrd_is_converted_to_lps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ras.nrrd");
    let header =
        "NRRD0004\ntype: uint8\ndimension: 3\nspace: right-anterior-superior\nsizes: 2 1 1\n\
                  space directions: (2,0,0) (0,1,0) (0,0,1)\nendian: little\nencoding: raw\n\
                  space origin: (10,20,30)\n\n";
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(&[0, 7]);
    std::fs::write(&path, bytes).unwrap();
    let v = nrrd::read(&path).unwrap();
    // RAS +x points to the patient's right, so RAS x = 10 is LPS x = -10.
    assert_eq!(v.grid().origin_lps(), [-10.0, -20.0, 30.0]);
    // i points right (RAS +x): LPS -x, orientation "RAS".
    assert_eq!(v.grid().orientation_code(), "RAS");
    assert_eq!(
        v.grid().index_to_world([1.0, 0.0, 0.0]),
        [-12.0, -20.0, 30.0]
    );
}

#[test]
fn custom_fields_survive_a_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.nrrd");
    let v = nifti::read(&shared_data("abdomen-ct/example_seg.nii.gz")).unwrap();
    let kv = vec![("Segment0_Name".to_string(), "liver".to_string())];
    nrrd::write(
        &path,
        &v,
        &nrrd::WriteOptions {
            gzip: true,
            key_values: kv.clone(),
        },
    )
    .unwrap();
    let back = nrrd::read_with_fields(&path).unwrap();
    assert_eq!(back.key_values, kv);
    assert_eq!(back.volume, v);
}
