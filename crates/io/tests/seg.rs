//! DICOM Segmentation writer (`pinhole_io::dicom::seg`) against highdicom and pydicom
//! (`tests/py/seg_reference.py`) and DICOM's validator dciodvfy (dicom3tools), on label
//! maps made on the grid of the real CT series in `../shared/data/dicom-ct-series`.

use std::path::{Path, PathBuf};

use pinhole_io::dicom::seg::{
    write_segmentation, Code, SegOptions, SegWritten, SegmentAlgorithm, SegmentSpec,
};
use pinhole_io::dicom::{self, DicomOptions};
use pinhole_io::ErrorKind;
use pinhole_volume::{Grid, Volume};
use tempfile::TempDir;

use crate::common::*;

const CT_SERIES: &str = "dicom-ct-series";
const SPHERE_RADIUS_MM: f64 = 15.0;
const CENTROID_TOLERANCE_MM: f64 = 0.01;
const BONE_RGB: [u8; 3] = [241, 214, 145];
const SPHERE_RGB: [u8; 3] = [220, 60, 40];

pub(crate) fn ct_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(shared_data(CT_SERIES))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// The CT in HU.
fn ct() -> Volume<f32> {
    dicom::read_series(
        &shared_data(CT_SERIES),
        &DicomOptions::default(),
        &mut |_, _| {},
    )
    .unwrap()
    .volume
    .to_f32()
}

/// Label 1 where HU > 300 (bone), label 2 inside a sphere of [`SPHERE_RADIUS_MM`]
/// around `centre_lps` (over the bone), 0 elsewhere.
fn label_map(ct: &Volume<f32>, centre_lps: [f64; 3]) -> Volume<u16> {
    let grid = ct.grid().clone();
    let data = (0..grid.voxel_count())
        .map(|offset| {
            let ijk = grid.index_of_offset(offset).map(|v| v as f64);
            let lps = grid.index_to_world(ijk);
            let d2: f64 = (0..3).map(|a| (lps[a] - centre_lps[a]).powi(2)).sum();
            if d2 <= SPHERE_RADIUS_MM * SPHERE_RADIUS_MM {
                2
            } else if ct.data()[offset] > 300.0 {
                1
            } else {
                0
            }
        })
        .collect();
    Volume::new(grid, data).unwrap()
}

fn segments() -> Vec<SegmentSpec> {
    let mut bone = SegmentSpec::new(1, "Bone (HU > 300)");
    bone.rgb = Some(BONE_RGB);
    bone.property_type = Code::new("272673000", "SCT", "Bone");
    bone.algorithm = SegmentAlgorithm::Automatic {
        name: "HU threshold".into(),
    };
    let mut sphere = SegmentSpec::new(2, "Target sphere ø 30 mm");
    sphere.rgb = Some(SPHERE_RGB);
    let empty = SegmentSpec::new(5, "Nothing here");
    vec![bone, sphere, empty]
}

/// Rust's own statistics of `label`: voxel count, LPS centroid and per-slice counts
/// with each slice's position (first voxel, LPS mm).
struct Expected {
    count: usize,
    centroid_lps: [f64; 3],
    per_slice: Vec<([f64; 3], usize)>,
}

fn expected(labels: &Volume<u16>, label: u16) -> Expected {
    let grid = labels.grid();
    let [_, _, nz] = grid.dims();
    let mut per_slice = vec![0usize; nz];
    let mut sum = [0.0; 3];
    let mut count = 0;
    for (offset, v) in labels.data().iter().enumerate() {
        if *v == label {
            let ijk = grid.index_of_offset(offset);
            let lps = grid.index_to_world(ijk.map(|c| c as f64));
            (0..3).for_each(|a| sum[a] += lps[a]);
            per_slice[ijk[2]] += 1;
            count += 1;
        }
    }
    Expected {
        count,
        centroid_lps: sum.map(|s| s / count.max(1) as f64),
        per_slice: per_slice
            .into_iter()
            .enumerate()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (grid.index_to_world([0.0, 0.0, k as f64]), n))
            .collect(),
    }
}

fn write(
    labels: &Volume<u16>,
    segments: &[SegmentSpec],
    out: &Path,
) -> pinhole_io::Result<SegWritten> {
    write_segmentation(&ct_files(), labels, segments, &SegOptions::default(), out)
}

fn json_vec3(value: &serde_json::Value) -> [f64; 3] {
    [0, 1, 2].map(|a| {
        value[a]
            .as_f64()
            .unwrap_or_else(|| panic!("not a 3-vector: {value}"))
    })
}

fn assert_close_mm(ours: [f64; 3], theirs: [f64; 3], what: &str) {
    let d = (0..3)
        .map(|a| (ours[a] - theirs[a]).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(
        d <= CENTROID_TOLERANCE_MM,
        "{what}: ours {ours:?}, reference {theirs:?} ({d:.4} mm apart)"
    );
}

/// Per-slice counts from highdicom's source-instance indexing against ours, by position.
fn assert_per_source(reference: &serde_json::Value, ours: &Expected, what: &str) {
    let theirs = reference.as_array().unwrap();
    assert_eq!(
        theirs.len(),
        ours.per_slice.len(),
        "{what}: slices with voxels"
    );
    for (position, count) in &ours.per_slice {
        let entry = theirs
            .iter()
            .find(|e| {
                let p = json_vec3(&e[0]);
                (0..3).all(|a| (p[a] - position[a]).abs() <= CENTROID_TOLERANCE_MM)
            })
            .unwrap_or_else(|| panic!("{what}: no source slice at {position:?} in {reference}"));
        assert_eq!(
            entry[1].as_u64().unwrap() as usize,
            *count,
            "{what} at {position:?}"
        );
    }
}

/// Stored CIELab against highdicom's `CIELabColor.from_rgb`: L* equal; a* and b* within
/// 3 of 65535 units (0.012), the effect of Pinhole's reference white (the sRGB matrix's
/// row sums, so that white is neutral) against highdicom's 95.047 / 108.883.
fn assert_cielab(segment: &serde_json::Value, what: &str) {
    let stored = segment["cielab"].as_array().unwrap();
    let reference = segment["cielab_from_rgb"].as_array().unwrap();
    for (c, (a, b)) in stored.iter().zip(reference).enumerate() {
        let (a, b) = (a.as_i64().unwrap(), b.as_i64().unwrap());
        let tolerance = if c == 0 { 0 } else { 3 };
        assert!(
            (a - b).abs() <= tolerance,
            "{what}: CIELab {stored:?} vs highdicom {reference:?}"
        );
    }
}

/// Every voxel as highdicom decodes it (segment numbers on the CT grid) against the label
/// map: no voxel may differ.
fn assert_same_voxels(labels: &Volume<u16>, segments: &[SegmentSpec], decoded: &Path) {
    let bytes = std::fs::read(decoded).unwrap();
    let theirs: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(theirs.len(), labels.data().len(), "decoded voxel count");
    let number_of = |label: u16| {
        segments
            .iter()
            .position(|s| s.label == label)
            .map_or(0, |n| n as u16 + 1)
    };
    let differing: Vec<usize> = labels
        .data()
        .iter()
        .zip(&theirs)
        .enumerate()
        .filter(|(_, (ours, theirs))| number_of(**ours) != **theirs)
        .map(|(offset, _)| offset)
        .collect();
    assert!(
        differing.is_empty(),
        "{} voxels differ from highdicom's decoding, first at index {:?}",
        differing.len(),
        differing.first().map(|o| labels.grid().index_of_offset(*o))
    );
}

/// dciodvfy's verdict: no "Error" lines; the warnings are printed.
pub(crate) fn assert_dciodvfy_clean(report: &serde_json::Value) {
    assert!(
        report["available"].as_bool().unwrap(),
        "dciodvfy not found: install dicom3tools (Debian/Ubuntu: apt-get install \
         dicom3tools) to validate the written Segmentation"
    );
    for warning in report["warnings"].as_array().unwrap() {
        println!("dciodvfy: {}", warning.as_str().unwrap_or_default());
    }
    let errors = report["errors"].as_array().unwrap();
    assert!(errors.is_empty(), "dciodvfy errors: {errors:#?}");
}

#[test]
fn segmentation_matches_highdicom_and_pydicom_and_validates() {
    let ct = ct();
    let centre_lps = ct.grid().index_to_world([300.0, 240.0, 9.4]);
    let labels = label_map(&ct, centre_lps);
    let segments = segments();
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("seg.dcm");
    let written = write(&labels, &segments, &out).unwrap();
    let ours: Vec<Expected> = segments
        .iter()
        .map(|s| expected(&labels, s.label))
        .collect();
    assert!(
        ours[0].count > 1000 && ours[1].count > 1000,
        "test data lacks content"
    );
    let frames: usize = ours.iter().map(|e| e.per_slice.len()).sum();
    assert_eq!((written.frames, written.segments), (frames, 3));
    let warnings = written.warnings.join("\n");
    assert!(
        warnings.contains("\"Nothing here\" (label 5) has no voxels"),
        "{warnings}"
    );
    assert!(warnings.contains("viewers will not group"), "{warnings}");

    let rgb = [
        format!("1={},{},{}", BONE_RGB[0], BONE_RGB[1], BONE_RGB[2]),
        format!("2={},{},{}", SPHERE_RGB[0], SPHERE_RGB[1], SPHERE_RGB[2]),
    ];
    let ct_dir = shared_data(CT_SERIES);
    let decoded = dir.path().join("segment_numbers.u16");
    let reference = python_json(
        "seg_reference.py",
        &[
            "check",
            out.to_str().unwrap(),
            ct_dir.to_str().unwrap(),
            decoded.to_str().unwrap(),
            &rgb[0],
            &rgb[1],
        ],
    );
    assert_same_voxels(&labels, &segments, &decoded);
    assert_eq!(reference["sop_class"], "1.2.840.10008.5.1.4.1.1.66.4");
    assert_eq!(reference["modality"], "SEG");
    assert_eq!(reference["segmentation_type"], "BINARY");
    assert_eq!(
        reference["number_of_frames"].as_u64().unwrap() as usize,
        frames
    );
    assert_eq!(reference["referenced_instances"].as_u64().unwrap(), 20);
    let theirs = reference["segments"].as_array().unwrap();
    assert_eq!(theirs.len(), 3);
    for ((segment, spec), ours) in theirs.iter().zip(&segments).zip(&ours) {
        let what = format!("segment {:?}", spec.name);
        assert_eq!(segment["label"], spec.name.as_str(), "{what}");
        assert_eq!(
            segment["frames"].as_u64().unwrap() as usize,
            ours.per_slice.len()
        );
        for key in ["count_pixels", "count_volume"] {
            assert_eq!(
                segment[key].as_u64().unwrap() as usize,
                ours.count,
                "{what} {key}"
            );
        }
        if ours.count == 0 {
            continue;
        }
        for key in ["centroid_pixels_lps", "centroid_volume_lps"] {
            assert_close_mm(
                ours.centroid_lps,
                json_vec3(&segment[key]),
                &format!("{what} {key}"),
            );
        }
        assert_per_source(&segment["per_source"], ours, &what);
        assert_cielab(segment, &what);
    }
    assert_eq!(theirs[0]["algorithm_type"], "AUTOMATIC");
    assert_eq!(theirs[0]["type"][0], "272673000");
    assert_eq!(theirs[1]["category"][0], "123037004");
    assert_eq!(theirs[1]["type"][0], "85756007");
    assert!(theirs[2]["cielab"].is_null());
    assert_dciodvfy_clean(&reference["dciodvfy"]);
}

#[test]
fn label_grid_off_the_series_grid_is_refused() {
    let ct = ct();
    let labels = label_map(&ct, ct.grid().index_to_world([256.0, 256.0, 10.0]));
    let grid = labels.grid();
    let mut origin = grid.origin_lps();
    origin[0] += 0.5;
    let shifted = Grid::new(grid.dims(), grid.spacing_mm(), origin, grid.direction()).unwrap();
    let shifted = labels.clone().with_grid(shifted).unwrap();
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("seg.dcm");
    let error = write(&shifted, &segments(), &out).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error.kind, ErrorKind::InvalidInput(_)),
        "{message}"
    );
    assert!(
        message.contains("not on the source series grid"),
        "{message}"
    );
    assert!(message.contains("0.500 mm apart"), "{message}");
    assert!(!out.exists());

    let mut spacing = grid.spacing_mm();
    spacing[2] *= 1.01;
    let stretched = Grid::new(grid.dims(), spacing, grid.origin_lps(), grid.direction()).unwrap();
    let stretched = labels.clone().with_grid(stretched).unwrap();
    let message = write(&stretched, &segments(), &out)
        .unwrap_err()
        .to_string();
    assert!(message.contains("mm from the series'"), "{message}");

    let [nx, ny, nz] = grid.dims();
    let cropped = labels.crop([0, 0, 0], [nx, ny, nz - 1]);
    let message = write(&cropped, &segments(), &out).unwrap_err().to_string();
    assert!(
        message.contains("voxels but the source series is"),
        "{message}"
    );
}

#[test]
fn labels_missing_from_the_segment_list_are_refused() {
    let ct = ct();
    let mut labels = label_map(&ct, ct.grid().index_to_world([256.0, 256.0, 10.0]));
    labels.data_mut()[12_345] = 7;
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("seg.dcm");
    let error = write(&labels, &segments(), &out).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error.kind, ErrorKind::InvalidInput(_)),
        "{message}"
    );
    assert!(message.contains("not in the segment list"), "{message}");
    assert!(message.contains("7 (1 voxels)"), "{message}");
    let error = write(&labels, &[], &out).unwrap_err();
    assert!(error.to_string().contains("no segments"), "{error}");
    assert!(!out.exists());
}
