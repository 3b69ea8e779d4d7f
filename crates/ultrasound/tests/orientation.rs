//! Asymmetric orientation: frames through the kidneys of the abdomen CT (TotalSegmentator's
//! example, ids 2 = kidney_right, 3 = kidney_left) show each kidney where the frame's
//! `ImageToLps` says; a flipped axis anywhere between the label map and the pixels fails.

use pinhole_ultrasound::{reslice, ResliceOptions};
use pinhole_volume::Volume;

use crate::common::*;

const KIDNEY_RIGHT: u16 = 2;
const KIDNEY_LEFT: u16 = 3;

fn abdomen() -> (Volume<f32>, Volume<u16>) {
    let ct = pinhole_io::nifti::read(&shared_data("abdomen-ct/example_ct_sm.nii.gz")).unwrap();
    let labels = pinhole_io::nifti::read(&shared_data("abdomen-ct/example_seg.nii.gz")).unwrap();
    (ct.to_f32(), labels.to_labels().unwrap())
}

/// Mean pixel column of the pixels carrying `label`, and their count.
fn mean_column(labels: &[u16], width: usize, label: u16) -> (f64, usize) {
    let columns: Vec<usize> = labels
        .iter()
        .enumerate()
        .filter(|(_, &v)| v == label)
        .map(|(o, _)| o % width)
        .collect();
    let n = columns.len();
    (columns.iter().sum::<usize>() as f64 / n.max(1) as f64, n)
}

#[test]
fn a_frame_through_the_left_kidney_shows_it_and_not_the_right_one() {
    let (ct, labels) = abdomen();
    let left = centroid_lps(&labels, KIDNEY_LEFT);
    let right = centroid_lps(&labels, KIDNEY_RIGHT);
    // Anatomy, independent of this crate: LPS +x is the patient's left.
    assert!(left[0] > right[0] + 80.0, "left {left:?} right {right:?}");
    // A 60 × 60 mm axial frame centred on the left kidney (x → patient left, y posterior).
    let axial = rotation([0.0, 0.0, 1.0], 0.0);
    let plane = centred_plane(&axial, [0.25, 0.25], [240, 240], left);
    let frame = reslice(&ct, Some(&labels), &plane, &ResliceOptions::default()).unwrap();
    let frame_labels = frame.labels.unwrap();
    let (column, count) = mean_column(&frame_labels, 240, KIDNEY_LEFT);
    assert!(count > 2000, "left kidney pixels {count}");
    assert_eq!(mean_column(&frame_labels, 240, KIDNEY_RIGHT).1, 0);
    // The kidney's centroid is at the frame's centre, so its pixels are roughly centred.
    assert!((column - 119.5).abs() < 40.0, "mean column {column}");
    // Kidney parenchyma is soft tissue on the CT too.
    let hu: Vec<f32> = frame
        .ct_hu
        .iter()
        .zip(&frame_labels)
        .filter(|(_, &l)| l == KIDNEY_LEFT)
        .map(|(&v, _)| v)
        .collect();
    let mean_hu = hu.iter().map(|&v| f64::from(v)).sum::<f64>() / hu.len() as f64;
    assert!((0.0..300.0).contains(&mean_hu), "mean kidney HU {mean_hu}");
}

#[test]
fn the_lateral_side_of_the_frame_is_where_the_matrix_says() {
    let (ct, labels) = abdomen();
    let left = centroid_lps(&labels, KIDNEY_LEFT);
    let right = centroid_lps(&labels, KIDNEY_RIGHT);
    let between: [f64; 3] = std::array::from_fn(|a| (left[a] + right[a]) / 2.0);
    let width = 400;
    // Frame A: pixel x towards the patient's LEFT (+x LPS), y posterior.
    let to_left = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    // Frame B: the same plane with pixel x towards the patient's RIGHT (y anterior keeps
    // the normal's handedness: x × y = +S for both).
    let to_right = [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]];
    for (name, rotation, left_on_high_columns) in [
        ("x to left", to_left, true),
        ("x to right", to_right, false),
    ] {
        let plane = centred_plane(&rotation, [0.6, 0.6], [width, 300], between);
        let frame = reslice(&ct, Some(&labels), &plane, &ResliceOptions::default()).unwrap();
        let frame_labels = frame.labels.unwrap();
        let (left_column, left_count) = mean_column(&frame_labels, width, KIDNEY_LEFT);
        let (right_column, right_count) = mean_column(&frame_labels, width, KIDNEY_RIGHT);
        assert!(
            left_count > 1000 && right_count > 1000,
            "{name}: {left_count} {right_count}"
        );
        let centre = (width as f64 - 1.0) / 2.0;
        assert_eq!(
            left_column > centre,
            left_on_high_columns,
            "{name}: left kidney at column {left_column}"
        );
        assert_eq!(
            right_column < centre,
            left_on_high_columns,
            "{name}: right kidney at column {right_column}"
        );
        // Where the matrix says, to a few millimetres: the kidney centroids' projections.
        for (label, column, centroid) in [
            (KIDNEY_LEFT, left_column, left),
            (KIDNEY_RIGHT, right_column, right),
        ] {
            let expected = plane.lps_to_pixel(centroid)[0];
            assert!(
                (column - expected).abs() * 0.6 < 10.0,
                "{name}: label {label} at column {column}, matrix says {expected}"
            );
        }
    }
}
