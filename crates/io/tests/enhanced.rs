//! Enhanced multi-frame DICOM (one file holding a stack) against independent tools: the
//! real CT series converted by highdicom into a Legacy Converted Enhanced CT Image
//! (`tests/py/enhanced_reference.py`) must read exactly as the series it came from, and
//! as dcm2niix (Debian package) converts it; malformed variants are refused naming the
//! frames.

use std::path::{Path, PathBuf};

use pinhole_io::dicom::{self, DicomOptions, DicomSeries};
use pinhole_io::{nifti, ErrorKind};
use tempfile::TempDir;

use crate::common::*;

fn read(path: &Path) -> pinhole_io::Result<DicomSeries> {
    dicom::read_series(path, &DicomOptions::default(), &mut |_, _| {})
}

/// The shared CT series as one Legacy Converted Enhanced CT file (`variant`: see
/// `enhanced_reference.py legacy-ct`), written into its own folder of `dir`.
fn legacy_ct(dir: &TempDir, variant: &str) -> (PathBuf, serde_json::Value) {
    let folder = dir.path().join(variant);
    std::fs::create_dir_all(&folder).unwrap();
    let file = folder.join("enhanced.dcm");
    let made = python_json(
        "enhanced_reference.py",
        &[
            "legacy-ct",
            shared_data("dicom-ct-series").to_str().unwrap(),
            file.to_str().unwrap(),
            variant,
        ],
    );
    (file, made)
}

#[test]
fn legacy_converted_enhanced_ct_reads_as_its_source_series() {
    let source = read(&shared_data("dicom-ct-series")).unwrap();
    let dir = TempDir::new().unwrap();
    for variant in ["native", "j2k", "reversed"] {
        let (file, made) = legacy_ct(&dir, variant);
        assert_eq!(made["frames"], 20, "{variant}");
        assert_eq!(made["sop_class_uid"], "1.2.840.10008.5.1.4.1.1.2.2"); // Legacy Converted Enhanced CT
                                                                          // The file itself, and the folder holding it.
        for path in [file.as_path(), file.parent().unwrap()] {
            let enhanced = read(path).unwrap_or_else(|e| panic!("{variant}: {e}"));
            assert_eq!(enhanced.info.slices, 20, "{variant}");
            assert_eq!(
                enhanced.info.files,
                std::slice::from_ref(&file),
                "{variant}: one file, listed once"
            );
            assert_eq!(enhanced.info.modality, "CT");
            assert!(
                enhanced
                    .volume
                    .grid()
                    .same_geometry(source.volume.grid(), 1e-6),
                "{variant}: {:?} vs {:?}",
                enhanced.volume.grid(),
                source.volume.grid()
            );
            assert_eq!(enhanced.volume.scalar_type(), source.volume.scalar_type());
            assert!(
                enhanced.volume.to_volume::<f64>().data()
                    == source.volume.to_volume::<f64>().data(),
                "{variant}: voxels differ from the source series"
            );
            assert_eq!(enhanced.slice_thickness_mm, Some(3.0), "{variant}");
        }
    }
}

#[test]
fn enhanced_ct_matches_dcm2niix_voxel_for_voxel_in_world_coordinates() {
    let dir = TempDir::new().unwrap();
    let (file, _) = legacy_ct(&dir, "native");
    let converted = python_json(
        "enhanced_reference.py",
        &[
            "dcm2niix",
            file.to_str().unwrap(),
            dir.path().join("dcm2niix").to_str().unwrap(),
        ],
    );
    let theirs = nifti::read(Path::new(converted["nifti"].as_str().unwrap())).unwrap();
    let ours = read(&file).unwrap().volume;
    assert_eq!(ours.grid().dims(), theirs.grid().dims());
    let (ours_box, theirs_box) = (ours.grid().bounds_lps(), theirs.grid().bounds_lps());
    for a in 0..3 {
        assert!(
            (ours_box.0[a] - theirs_box.0[a]).abs() < 1e-3,
            "{ours_box:?} {theirs_box:?}"
        );
        assert!(
            (ours_box.1[a] - theirs_box.1[a]).abs() < 1e-3,
            "{ours_box:?} {theirs_box:?}"
        );
    }
    // dcm2niix stores rows bottom-up (LAS): every voxel centre of ours must land on a
    // voxel centre of theirs holding the same value.
    let (ours_values, theirs_values) = (ours.to_volume::<f64>(), theirs.to_volume::<f64>());
    let [ni, nj, nk] = ours.grid().dims();
    let mut compared = 0;
    for k in 0..nk {
        for j in (0..nj).step_by(3) {
            for i in (0..ni).step_by(3) {
                let world = ours.grid().index_to_world([i as f64, j as f64, k as f64]);
                let at = theirs.grid().world_to_index(world);
                let index = at.map(|x| x.round());
                assert!(
                    at.iter().zip(&index).all(|(x, r)| (x - r).abs() < 1e-3),
                    "voxel ({i}, {j}, {k}) falls between dcm2niix voxels at {at:?}"
                );
                let index = index.map(|x| x as usize);
                assert_eq!(
                    ours_values.get([i, j, k]),
                    theirs_values.get(index),
                    "voxel ({i}, {j}, {k}) vs dcm2niix {index:?}"
                );
                compared += 1;
            }
        }
    }
    assert_eq!(compared, 20 * 171 * 171);
}

#[test]
fn enhanced_object_with_two_stacks_is_refused_naming_the_frames() {
    let dir = TempDir::new().unwrap();
    let (file, made) = legacy_ct(&dir, "two-stacks");
    assert_eq!(made["frames"], 40);
    let err = read(&file).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::MixedSeries(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("frame") && text.contains("enhanced.dcm"),
        "{text}"
    );
    assert!(text.contains("several stacks"), "{text}");
}

#[test]
fn enhanced_object_whose_frame_count_disagrees_is_refused() {
    let dir = TempDir::new().unwrap();
    let (file, _) = legacy_ct(&dir, "bad-count");
    let err = read(&file).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::InvalidHeader(_)), "{err}");
    assert!(
        err.to_string()
            .contains("NumberOfFrames 21 but 20 Per-frame Functional Groups items"),
        "{err}"
    );
    assert_eq!(err.path, file);
}

#[test]
fn a_single_frame_file_is_refused_pointing_to_its_folder() {
    let slice = std::fs::read_dir(shared_data("dicom-ct-series"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let err = read(&slice).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("pass the folder"), "{err}");
}
