//! Bad input: every opener returns an error naming the file; none panics or over-allocates.

use std::io::Write;
use std::path::Path;

use pinhole_io::open::{read_volume, ReadOptions};
use pinhole_io::{nifti, nrrd, ErrorKind};

use crate::common::*;

fn open(path: &Path) -> pinhole_io::Error {
    read_volume(path, &ReadOptions::default(), &mut |_, _| {}).expect_err("bad input must fail")
}

fn assert_names_file(err: &pinhole_io::Error, path: &Path) {
    assert_eq!(err.path, path);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn zero_length_and_wrong_magic_files() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.nii");
    std::fs::write(&empty, b"").unwrap();
    let err = open(&empty);
    assert_names_file(&err, &empty);
    assert!(matches!(err.kind, ErrorKind::NotMedicalImage(_)), "{err}");

    let text = dir.path().join("notes.nii");
    std::fs::write(&text, b"this is not an image at all, just text\n").unwrap();
    let err = open(&text);
    assert_names_file(&err, &text);
    assert!(matches!(err.kind, ErrorKind::NotMedicalImage(_)), "{err}");

    let err = nifti::read(&text).unwrap_err();
    assert!(
        matches!(
            err.kind,
            ErrorKind::NotMedicalImage(_) | ErrorKind::Truncated(_)
        ),
        "{err}"
    );
    let err = nrrd::read(&text).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::NotMedicalImage(_)), "{err}");
}

#[test]
fn truncated_nifti_files_fail_cleanly_at_every_length() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.nii");
    let volume = nifti::read(&shared_data("abdomen-ct/example_seg.nii.gz")).unwrap();
    nifti::write(&good, &volume).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.nii");
    for len in [
        1,
        100,
        347,
        348,
        351,
        352,
        353,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let err = nifti::read(&cut).unwrap_err();
        assert_names_file(&err, &cut);
        assert!(
            matches!(
                err.kind,
                ErrorKind::Truncated(_)
                    | ErrorKind::SizeExceedsFile { .. }
                    | ErrorKind::NotMedicalImage(_)
            ),
            "{len}: {err}"
        );
    }
    // A truncated gzip stream.
    let gz_bytes = gz(&bytes);
    let cut_gz = dir.path().join("cut.nii.gz");
    std::fs::write(&cut_gz, &gz_bytes[..gz_bytes.len() / 2]).unwrap();
    let err = nifti::read(&cut_gz).unwrap_err();
    assert_names_file(&err, &cut_gz);
}

/// A NIfTI-1 header claiming `dims` of uint8.
fn nifti_header(dims: [i16; 3], datatype: i16) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    h[40..42].copy_from_slice(&3i16.to_le_bytes());
    for (a, d) in dims.iter().enumerate() {
        h[42 + 2 * a..44 + 2 * a].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&datatype.to_le_bytes());
    for a in 0..4 {
        h[76 + 4 * a..80 + 4 * a].copy_from_slice(&1f32.to_le_bytes());
    }
    h[344..348].copy_from_slice(b"n+1\0");
    h
}

#[test]
fn absurd_dimensions_are_rejected_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // 32767³ float64 voxels = 281 TB claimed by a 352-byte file, plain and gzipped.
    let header = nifti_header([32767, 32767, 32767], 64);
    let plain = dir.path().join("huge.nii");
    std::fs::write(&plain, &header).unwrap();
    let err = nifti::read(&plain).unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::SizeExceedsFile { .. }),
        "{err}"
    );
    let packed = dir.path().join("huge.nii.gz");
    std::fs::write(&packed, gz(&header)).unwrap();
    let err = nifti::read(&packed).unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::SizeExceedsFile { .. }),
        "{err}"
    );

    let negative = dir.path().join("negative.nii");
    std::fs::write(&negative, nifti_header([4, -3, 2], 2)).unwrap();
    let err = nifti::read(&negative).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::InvalidHeader(_)), "{err}");

    let nrrd_path = dir.path().join("huge.nrrd");
    std::fs::write(
        &nrrd_path,
        b"NRRD0004\ntype: double\ndimension: 3\nsizes: 100000 100000 100000\nencoding: gzip\n\n\x1f\x8b",
    )
    .unwrap();
    let err = nrrd::read(&nrrd_path).unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::SizeExceedsFile { .. }),
        "{err}"
    );
    let overflow = dir.path().join("overflow.nrrd");
    std::fs::write(
        &overflow,
        b"NRRD0004\ntype: double\ndimension: 3\nsizes: 18446744073709551615 2 2\nencoding: raw\n\n",
    )
    .unwrap();
    assert!(nrrd::read(&overflow).is_err());
}

#[test]
fn unsupported_datatypes_and_geometry_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let rgb = dir.path().join("rgb.nii");
    let mut bytes = nifti_header([2, 2, 2], 128);
    bytes.extend_from_slice(&[0u8; 24]);
    std::fs::write(&rgb, &bytes).unwrap();
    let err = nifti::read(&rgb).unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::UnsupportedDatatype(_)),
        "{err}"
    );
    assert!(err.to_string().contains("RGB24"), "{err}");

    let sheared = dir.path().join("sheared.nrrd");
    std::fs::write(
        &sheared,
        b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1 1 1\nspace: left-posterior-superior\n\
          space directions: (1,0,0) (1,1,0) (0,0,1)\nencoding: raw\n\n\x00",
    )
    .unwrap();
    let err = nrrd::read(&sheared).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Geometry(_)), "{err}");
    assert!(err.to_string().contains("orthonormal"), "{err}");
}

// ------------------------------------------------ fuzz campaign findings (FUZZING.md)

/// Regression (fuzz target `nifti`): a NIfTI-2 header whose dimensions multiply past
/// u64 (`dim = [3, 4, 4, 0x7fff02ff0000005b…]`) overflowed in the voxel count (a panic
/// with overflow checks, a wrapped count without). It must be refused as absurd.
#[test]
fn nifti_regression_fuzzed_dims_product_overflow_is_refused() {
    let bytes = std::fs::read(
        repo_root().join("crates/io/tests/fixtures/fuzz-nifti2-dims-product-overflow.nii"),
    )
    .unwrap();
    let outcome = std::panic::catch_unwind(|| nifti::read_bytes(&bytes).map(|_| ()));
    let result = outcome.expect("the NIfTI reader panicked on overflowing dimensions");
    assert!(result.is_err(), "overflowing dimensions were accepted");
}

/// Regression (fuzz target `dicom_file`): a 2.7 KB DICOM file made dicom-parser's
/// `read_value_ob` allocate and zero-fill about 1.1 GB (peak RSS 1.18 GB in a debug
/// build; a 30 s timeout in the instrumented fuzz build) before Pinhole saw the object:
/// a claimed length that `parse::check_lengths` does not bound. Run in a child process
/// of this test binary so that the peak RSS measured is this file's alone.
#[cfg(target_os = "linux")]
#[test]
fn dicom_regression_fuzzed_ob_value_does_not_allocate_a_gigabyte() {
    const NAME: &str = "robustness::dicom_regression_fuzzed_ob_value_does_not_allocate_a_gigabyte";
    const CHILD: &str = "PINHOLE_TEST_CHILD_DICOM_OB";
    if std::env::var_os(CHILD).is_some() {
        // The second, from the `xray_image` target, took the same path.
        for name in [
            "fuzz-dicom-slow-ob-value.dcm",
            "fuzz-dicom-slow-ob-value-native.dcm",
            // Found by a CI run's 20 s of `dicom_file`: an item outside any sequence (1.3 GB).
            "fuzz-dicom-stray-item.dcm",
            // Found by `dicom_file` (CI's fixed-seed run): JPEG 2000 files where the
            // length walk and dicom-rs read lengths at different places (1.3 GB, minutes);
            // refused since lengths are checked on dicom-rs's own tokens.
            "fuzz-dicom-timeout-35ec73a0.dcm",
            "fuzz-dicom-timeout-d6990f30.dcm",
            // Found by `dicom_file` and `us_frame` (CI's fixed-seed run) once deflated
            // files were read: the file meta group went to dicom-object's meta reader
            // before any length check (2.6 GB from 2.7 KB); our walk refuses it first.
            "fuzz-deflate-meta-oom.dcm",
            "fuzz-us-frame-deflate-meta-oom.dcm",
        ] {
            let bytes =
                std::fs::read(repo_root().join("crates/io/tests/fixtures").join(name)).unwrap();
            let _ = pinhole_io::dicom::decode_file_bytes(&bytes);
            let _ = pinhole_io::us_frame::decode_us_frames(&bytes, std::path::Path::new(name));
        }
        let peak_kb = peak_rss_kb();
        assert!(
            peak_kb < 256 * 1024,
            "decoding seven small DICOM files peaked at {} MB",
            peak_kb / 1024
        );
        return;
    }
    passes_in_child(NAME, CHILD);
}
