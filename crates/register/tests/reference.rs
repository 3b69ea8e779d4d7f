//! Similarity measures and pose matrices against independent numpy/scipy code.

use pinhole_register::similarity::{gradient_ncc, ncc, Prepared, Similarity};
use pinhole_register::Pose;
use pinhole_xray::Image;

use crate::shared::python_json;

fn pattern(w: usize, h: usize, seed: u32) -> Image {
    let data = (0..w * h)
        .map(|i| {
            let (c, r) = ((i % w) as f32, (i / w) as f32);
            let n = ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 20) as f32;
            (c * 0.3 + seed as f32).sin() * 40.0 + r * r * 0.05 + n * 0.01
        })
        .collect();
    Image {
        width: w,
        height: h,
        data,
    }
}

fn write_f32(path: &std::path::Path, image: &Image) {
    let bytes: Vec<u8> = image.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn ncc_and_gradient_ncc_match_numpy_and_scipy_sobel() {
    let (w, h) = (37, 29);
    let (a, b) = (pattern(w, h, 3), pattern(w, h, 4));
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.f32"), dir.path().join("b.f32"));
    write_f32(&pa, &a);
    write_f32(&pb, &b);
    let reference = python_json(
        "register_reference.py",
        &[
            "similarity",
            pa.to_str().unwrap(),
            pb.to_str().unwrap(),
            &w.to_string(),
            &h.to_string(),
        ],
    );
    let want_ncc = reference["ncc"].as_f64().unwrap();
    let want_gncc = reference["gradient_ncc"].as_f64().unwrap();
    assert!(
        (ncc(&a, &b) - want_ncc).abs() < 1e-5,
        "{} vs {want_ncc}",
        ncc(&a, &b)
    );
    assert!((gradient_ncc(&a, &b) - want_gncc).abs() < 1e-5);
    let prepared = Prepared::new(&a, Similarity::NccAndGradient);
    assert!((prepared.score(&b) - 0.5 * (want_ncc + want_gncc)).abs() < 1e-5);
}

#[test]
fn pose_rotation_matches_scipy_extrinsic_xyz() {
    let angles = [3.0, -7.0, 11.0];
    let reference = python_json("register_reference.py", &["rotation", "3", "-7", "11"]);
    let pose = Pose::from_params(&[angles[0], angles[1], angles[2], 0.0, 0.0, 0.0], [0.0; 3]);
    let r = pose.rotation();
    for i in 0..3 {
        for j in 0..3 {
            let want = reference["matrix"][i][j].as_f64().unwrap();
            assert!(
                (r[i][j] - want).abs() < 1e-12,
                "R[{i}][{j}] {} vs {want}",
                r[i][j]
            );
        }
    }
}
