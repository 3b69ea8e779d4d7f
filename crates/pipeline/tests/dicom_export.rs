//! `dicom_export::run` on the shared DICOM CT series: the report's content snapshotted
//! (generated UIDs redacted), the table's names and the voxel counts of a constructed
//! label map, and a written SEG that pinhole-io's series reader still lists beside the CT.

use pinhole_io::dicom::{read_series, DicomOptions};
use pinhole_pipeline::dicom_export::{SegExportRequest, SEG_FILE};
use pinhole_pipeline::Quiet;
use serde_json::Value;

use crate::reports::snapshot_value;
use crate::shared::shared_data;

/// Generated UIDs (`2.25.<decimal>`) differ on every run.
fn redact_uids(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, redact_uids(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(redact_uids).collect()),
        Value::String(s) => Value::String(
            s.split(' ')
                .map(|w| if w.starts_with("2.25.") { "[uid]" } else { w })
                .collect::<Vec<_>>()
                .join(" "),
        ),
        other => other,
    }
}

#[test]
fn segmentation_of_the_dicom_series() {
    let tmp = tempfile::tempdir().unwrap();
    let series = shared_data("dicom-ct-series");
    let ct = read_series(&series, &DicomOptions::default(), &mut |_, _| {}).unwrap();
    let hu = ct.volume.to_f32();
    let [ni, nj, _] = hu.grid().dims();
    // 1: bone (HU > 300); 2: a 20 × 20 voxel box through every slice at the centre.
    let labels = hu.map(|v| u16::from(v > 300.0));
    let mut labels = labels;
    let (ci, cj) = (ni / 2, nj / 2);
    for (n, value) in labels.data_mut().iter_mut().enumerate() {
        let (i, j) = (n % ni, (n / ni) % nj);
        if (ci - 10..ci + 10).contains(&i) && (cj - 10..cj + 10).contains(&j) {
            *value = 2;
        }
    }
    let expected_bone = labels.data().iter().filter(|&&v| v == 1).count();
    let path = tmp.path().join("labels.nii.gz");
    pinhole_io::nifti::write_typed(&path, &labels).unwrap();
    let table = tmp.path().join("table.csv");
    std::fs::write(&table, "id,name\n1,bone\n2,target_box\n").unwrap();
    let request = SegExportRequest {
        series_dir: series.clone(),
        series_uid: None,
        labels: path,
        labels_table: Some(table.display().to_string()),
        series_description: "test".into(),
        algorithm_name: None,
        out_dir: tmp.path().join("out"),
        deidentify: None,
    };
    let report = pinhole_pipeline::dicom_export::run(&request, &Quiet).unwrap();
    assert_eq!(report.segments[0].voxels, expected_bone);
    assert_eq!(report.segments[1].voxels, 20 * 20 * hu.grid().dims()[2]);
    assert_eq!(report.frames, 2 * hu.grid().dims()[2]);
    assert!(tmp.path().join("out").join(SEG_FILE).is_file());
    insta::assert_json_snapshot!(
        "dicom_seg_of_the_series",
        redact_uids(snapshot_value(&report, tmp.path()))
    );
}
