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

        let raw = dir.path().join("voxels.npy");
        let reference = python_json(
            "nifti_reference.py",
            &["nrrd", nrrd_path.to_str().unwrap(), raw.to_str().unwrap()],
        );
        assert_eq!(reference["space"], "left-posterior-superior");
        assert_matches_reference(&original, &reference, &read_voxels(&raw), name);
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

/// A 3×2×2 `short` volume's detached header naming `image.raw`, without the blank line
/// that ends an attached header (`ending`: what follows the last field).
fn detached_header_without_blank_line(ending: &str) -> String {
    format!(
        "NRRD0004\n# no blank line: the header ends at the end of its file\ntype: short\n\
         dimension: 3\nspace: left-posterior-superior\nsizes: 3 2 2\n\
         space directions: (0.5,0,0) (0,0.75,0) (0,0,2.5)\nspace origin: (-10,20.5,30)\n\
         endian: little\nencoding: raw\ndata file: image.raw{ending}"
    )
}

/// Regression (FUZZING.md finding 3): a detached header may end at the end of its file.
#[test]
fn detached_header_may_end_at_the_end_of_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let values: [i16; 12] = [-1000, -3, 0, 7, 40, 1200, -32768, 32767, 5, 6, 9, 11];
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.path().join("image.raw"), &data).unwrap();
    for ending in ["\n", "", "\r\n"] {
        let header = dir.path().join("image.nhdr");
        std::fs::write(&header, detached_header_without_blank_line(ending)).unwrap();
        let read = nrrd::read(&header).unwrap_or_else(|e| panic!("ending {ending:?}: {e}"));
        let pinhole_io::AnyVolume::I16(volume) = &read else {
            panic!("ending {ending:?}: read as {:?}", read.scalar_type());
        };
        assert_eq!(volume.data(), values.as_slice(), "ending {ending:?}");
        let grid = read.grid();
        assert_eq!(grid.dims(), [3, 2, 2]);
        assert_eq!(grid.spacing_mm(), [0.5, 0.75, 2.5]);
        assert_eq!(grid.origin_lps(), [-10.0, 20.5, 30.0]);
        assert_eq!(grid.orientation_code(), "LPS");
    }
}

/// An attached header still needs its blank line: without it, where the data starts is
/// unknown, and the reader says so.
#[test]
fn attached_header_without_blank_line_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attached.nrrd");
    let mut bytes = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 1 1\nencoding: raw\n".to_vec();
    bytes.extend_from_slice(&[0, 7]);
    std::fs::write(&path, &bytes).unwrap();
    let err = nrrd::read(&path).expect_err("attached header without a blank line");
    assert!(
        err.to_string()
            .contains("NRRD header has no blank line before the data"),
        "{err}"
    );
    let err = nrrd::read_bytes(&bytes).expect_err("in memory");
    assert!(matches!(err, pinhole_io::ErrorKind::Truncated(_)), "{err}");
}
