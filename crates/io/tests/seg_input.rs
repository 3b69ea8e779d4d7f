//! DICOM Segmentation as label input, against highdicom: SEGs it writes from the shared
//! CT series (`tests/py/seg_reference.py highdicom-seg`: two overlapping segments, empty
//! frames omitted, BINARY and FRACTIONAL) must read into the label map it describes.

use std::path::{Path, PathBuf};

use pinhole_io::dicom::seg_input::{is_segmentation_file, read_segmentation, referenced_series};
use pinhole_io::ErrorKind;
use pinhole_volume::Grid;
use tempfile::TempDir;

use crate::common::*;
use crate::sr::ct_grid;

/// A highdicom SEG of the shared series and the label map it holds (i fastest).
fn highdicom_seg(dir: &Path, kind: &str) -> (PathBuf, Vec<f64>) {
    let (seg, expected, _) = highdicom_seg_of_series(dir, kind);
    (seg, expected)
}

/// As [`highdicom_seg`], with the source series' UID highdicom referenced.
fn highdicom_seg_of_series(dir: &Path, kind: &str) -> (PathBuf, Vec<f64>, String) {
    let seg = dir.join(format!("{kind}.dcm"));
    let expected = dir.join(format!("{kind}.npy"));
    let made = python_json(
        "seg_reference.py",
        &[
            "highdicom-seg",
            shared_data("dicom-ct-series").to_str().unwrap(),
            seg.to_str().unwrap(),
            expected.to_str().unwrap(),
            kind,
        ],
    );
    assert_eq!(made["frames"], 16, "{made}");
    let series = made["source_series_uid"].as_str().unwrap().to_string();
    (seg, read_voxels(&expected), series)
}

/// The series a Segmentation references (what `dicom listen --on-complete {seg}` matches
/// a CT by): highdicom's Referenced Series Sequence, read back.
#[test]
fn a_segmentation_names_the_series_it_references() {
    let tmp = TempDir::new().unwrap();
    let (path, _, series) = highdicom_seg_of_series(tmp.path(), "binary");
    assert!(!series.is_empty());
    assert_eq!(referenced_series(&path).unwrap(), vec![series]);
    let slice = std::fs::read_dir(shared_data("dicom-ct-series"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let err = referenced_series(&slice).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::NotMedicalImage(_)), "{err}");
}

#[test]
fn highdicom_segmentation_reads_onto_the_ct_grid() {
    let tmp = TempDir::new().unwrap();
    let grid = ct_grid();
    for kind in ["binary", "fractional"] {
        let (path, expected) = highdicom_seg(tmp.path(), kind);
        assert!(is_segmentation_file(&path));
        let seg = read_segmentation(&path, Some(&grid)).unwrap();
        assert!(seg.labels.grid().same_geometry(&grid, 1e-9), "{kind}");
        let ours: Vec<f64> = seg.labels.data().iter().map(|&v| f64::from(v)).collect();
        assert_eq!(ours.len(), expected.len());
        let wrong = ours.iter().zip(&expected).filter(|(a, b)| a != b).count();
        assert_eq!(
            wrong, 0,
            "{kind}: {wrong} voxels differ from highdicom's label map"
        );
        assert_eq!(seg.table.name(1), Some("liver"));
        assert_eq!(seg.table.name(2), Some("liver_tumor"));
        let text = seg.warnings.join("\n");
        // The tumour box (4 slices of 20 x 30) lies inside the liver box.
        assert!(
            text.contains("segments 1 (liver) and 2 (liver_tumor) overlap in 2400 voxels"),
            "{kind}: {text}"
        );
        assert_eq!(text.contains("FRACTIONAL"), kind == "fractional", "{text}");
    }
}

#[test]
fn highdicom_segmentation_on_its_own_grid_spans_its_frames() {
    let tmp = TempDir::new().unwrap();
    let grid = ct_grid();
    let (path, expected) = highdicom_seg(tmp.path(), "binary");
    let seg = read_segmentation(&path, None).unwrap();
    // Frames on CT slices 3..=14: twelve slices, starting at slice 3, same in-plane grid.
    let own = seg.labels.grid();
    assert_eq!(own.dims(), [512, 512, 12]);
    let start = grid.index_to_world([0.0, 0.0, 3.0]);
    for a in 0..3 {
        assert!(
            (own.origin_lps()[a] - start[a]).abs() < 1e-6,
            "{:?}",
            own.origin_lps()
        );
        assert!((own.spacing_mm()[a] - grid.spacing_mm()[a]).abs() < 1e-6);
    }
    let per_slice = 512 * 512;
    let ours: Vec<f64> = seg.labels.data().iter().map(|&v| f64::from(v)).collect();
    assert!(ours[..] == expected[3 * per_slice..15 * per_slice]);
}

#[test]
fn segmentation_off_the_grid_or_not_a_segmentation_is_refused() {
    let tmp = TempDir::new().unwrap();
    let grid = ct_grid();
    let (path, _) = highdicom_seg(tmp.path(), "binary");
    // The CT grid moved by half a slice: no frame lies on a slice.
    let half = grid.index_to_world([0.0, 0.0, 0.5]);
    let shifted = Grid::new(grid.dims(), grid.spacing_mm(), half, grid.direction()).unwrap();
    let err = read_segmentation(&path, Some(&shifted)).unwrap_err();
    assert!(
        err.to_string().contains("not on a slice of the CT's grid"),
        "{err}"
    );
    assert_eq!(err.path, path);
    // A CT slice is not a Segmentation.
    let slice = std::fs::read_dir(shared_data("dicom-ct-series"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    assert!(!is_segmentation_file(&slice));
    let err = read_segmentation(&slice, None).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::NotMedicalImage(_)), "{err}");
}

#[test]
fn a_segmentation_beside_its_ct_is_listed_as_one_entry_and_the_ct_is_read() {
    let tmp = TempDir::new().unwrap();
    let (seg, _) = highdicom_seg(tmp.path(), "binary");
    let folder = tmp.path().join("study");
    std::fs::create_dir(&folder).unwrap();
    for entry in std::fs::read_dir(shared_data("dicom-ct-series")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, folder.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::copy(&seg, folder.join("seg.dcm")).unwrap();
    let listed = pinhole_io::dicom::list_series(&folder).unwrap();
    let seg_entry = listed.iter().find(|s| s.modality == "SEG").unwrap();
    assert_eq!(seg_entry.slices, 1, "{listed:?}");
    let read = pinhole_io::dicom::read_series(
        &folder,
        &pinhole_io::dicom::DicomOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(read.volume.grid().dims(), [512, 512, 20]);
    assert_eq!(read.info.modality, "CT");
}
