//! `pinhole us reconstruct` and `pinhole us landmarks` on constructed inputs with known
//! answers.

use super::*;
use pinhole_io::markups::{write_markups, ControlPoint, Markup, MarkupKind};
use pinhole_io::sequence::{
    write_sequence, FramePixels, FrameTransform, PixelType, TrackedFrame, TrackedSequence,
    TransformStatus,
};

const W: usize = 40;
const H: usize = 30;
/// Columns from here on are 0 in every frame: outside the probe's field of view.
const FOV_COLUMNS: usize = 36;

/// Pixel (i, j) of every frame: 50 + 4·i inside the field of view (so the value says the
/// LPS x it was imaged at), 0 outside.
fn frame_pixels() -> Vec<u8> {
    (0..W * H)
        .map(|p| {
            let i = p % W;
            if i < FOV_COLUMNS {
                50 + 4 * i as u8
            } else {
                0
            }
        })
        .collect()
}

fn transform(name: &str, m: [[f64; 4]; 4]) -> FrameTransform {
    FrameTransform {
        name: name.to_owned(),
        matrix: Some(m),
        status: TransformStatus::Ok,
    }
}

/// Axial frames at LPS z = 0.5·k, pixel x along LPS +x (RAS −x), y along LPS +y, 0.5 mm
/// pixels, origin LPS (10, −5, z). Frame 3 carries ProbeToReference + ImageToProbe
/// instead (the same plane), frame 5 nothing (skipped).
fn sweep() -> TrackedSequence {
    let frames = (0..10)
        .map(|k| {
            let z = 0.5 * k as f64;
            let image_to_ras = [
                [-0.5, 0.0, 0.0, -10.0],
                [0.0, -0.5, 0.0, 5.0],
                [0.0, 0.0, 0.5, z],
                [0.0, 0.0, 0.0, 1.0],
            ];
            let transforms = match k {
                3 => {
                    // Probe 90° about S at (−10, 5, z) RAS; calibration the inverse turn.
                    let probe = [
                        [0.0, -1.0, 0.0, -10.0],
                        [1.0, 0.0, 0.0, 5.0],
                        [0.0, 0.0, 1.0, z],
                        [0.0, 0.0, 0.0, 1.0],
                    ];
                    let calibration = [
                        [0.0, -0.5, 0.0, 0.0],
                        [0.5, 0.0, 0.0, 0.0],
                        [0.0, 0.0, 0.5, 0.0],
                        [0.0, 0.0, 0.0, 1.0],
                    ];
                    vec![
                        transform("ProbeToReference", probe),
                        transform("ImageToProbe", calibration),
                    ]
                }
                5 => Vec::new(),
                _ => vec![transform("ImageToReference", image_to_ras)],
            };
            TrackedFrame {
                pixels: FramePixels::U8(frame_pixels()),
                timestamp_s: Some(k as f64 / 30.0),
                transforms,
                fields: Vec::new(),
            }
        })
        .collect();
    TrackedSequence {
        width: W,
        height: H,
        pixel_type: PixelType::U8,
        spacing_mm: [0.5, 0.5],
        orientation: Some("MF".into()),
        frames,
        header_fields: Vec::new(),
        warnings: Vec::new(),
    }
}

#[test]
fn us_reconstruct_compounds_a_sweep_where_its_frames_lie() {
    let dir = tempfile::tempdir().unwrap();
    let seq = dir.path().join("sweep.seq.mha");
    write_sequence(&seq, &sweep()).unwrap();
    let out = dir.path().join("volume.nrrd");
    let state = dir.path().join("state.nii.gz");
    let stdout = pinhole_ok(&[
        "us",
        "reconstruct",
        seq.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--state-out",
        state.to_str().unwrap(),
        "--spacing-mm",
        "0.5",
        "--fill-radius",
        "1",
    ]);
    let report: serde_json::Value =
        serde_json::from_str(stdout.split("\nPinhole is research").next().unwrap()).unwrap();
    assert_eq!(report["frames_used"], 9, "{report}");
    assert_eq!(
        report["placed_by"]["probe_to_reference_times_image_to_probe"],
        1
    );
    let warning = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_str())
        .find(|w| w.contains("not used"))
        .unwrap_or_else(|| panic!("no warning about the skipped frame: {report}"));
    assert!(
        warning.contains("1 of 10 frame(s) not used") && warning.contains("5 ("),
        "{warning}"
    );
    assert_eq!(
        report["pixels_outside_field_of_view"],
        (W - FOV_COLUMNS) * H
    );

    let volume = pinhole_io::nrrd::read(&out).unwrap().to_f32();
    let states = pinhole_io::nifti::read(&state).unwrap().to_f32();
    // Inside the field of view every voxel holds the value imaged there: 50 + 4·i at
    // LPS x = 10 + 0.5·i; frame 5 (z = 2.5) is missing, its voxels filled with the mean
    // of the hit voxels around (z = 2 and 3, x ± 0.5 mm: equal to the value there, the
    // image being linear in x, away from the edges of the field of view).
    for i in [0usize, 7, 20, 35] {
        for (y, z) in [(-5.0, 0.0), (2.0, 2.5), (9.5, 4.5)] {
            if z == 2.5 && (i == 0 || i == 35) {
                continue;
            }
            let p = [10.0 + 0.5 * i as f64, y, z];
            let v = volume.sample_nearest(p).unwrap();
            assert_eq!(v, 50.0 + 4.0 * i as f32, "value at {p:?}");
            let s = states.sample_nearest(p).unwrap();
            assert_eq!(s, if z == 2.5 { 2.0 } else { 1.0 }, "state at {p:?}");
        }
    }
    // Beyond the field of view (columns 36–39) nothing was compounded: filled one voxel
    // out (radius 1), empty beyond.
    assert_eq!(
        states
            .sample_nearest([10.0 + 0.5 * 36.0, 0.0, 1.0])
            .unwrap(),
        2.0
    );
    assert_eq!(
        states
            .sample_nearest([10.0 + 0.5 * 38.0, 0.0, 1.0])
            .unwrap(),
        0.0
    );
    assert_eq!(
        volume
            .sample_nearest([10.0 + 0.5 * 38.0, 0.0, 1.0])
            .unwrap(),
        0.0
    );
}

#[test]
fn us_reconstruct_refuses_a_sequence_it_cannot_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sweep();
    for f in &mut s.frames {
        f.transforms.clear();
    }
    let seq = dir.path().join("untracked.seq.mha");
    write_sequence(&seq, &s).unwrap();
    let out = pinhole(&[
        "us",
        "reconstruct",
        seq.to_str().unwrap(),
        "--out",
        dir.path().join("v.nrrd").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("none of the sequence's 10 frame(s) can be placed")
            && err.contains("no ImageToReferenceTransform"),
        "{err}"
    );
    assert!(!dir.path().join("v.nrrd").exists());
}

fn markups(path: &Path, points: &[(&str, [f64; 3])]) {
    let m = Markup {
        kind: MarkupKind::Fiducial,
        name: "F".into(),
        points: points
            .iter()
            .map(|(l, p)| ControlPoint::new(*l, *p))
            .collect(),
        color_rgb: None,
    };
    write_markups(path, &[m]).unwrap();
}

#[test]
fn us_landmarks_writes_the_registration_that_moves_the_us_onto_the_ct() {
    let dir = tempfile::tempdir().unwrap();
    // CT = R_z(10°) · US + (3, −2, 4), LPS; the CT file lists the points in another order
    // (paired by label).
    let (s, c) = 10f64.to_radians().sin_cos();
    let moved = |p: [f64; 3]| {
        [
            c * p[0] - s * p[1] + 3.0,
            s * p[0] + c * p[1] - 2.0,
            p[2] + 4.0,
        ]
    };
    let us = [
        ("portal vein", [10.0, 20.0, 30.0]),
        ("gallbladder", [40.0, 25.0, 10.0]),
        ("cyst", [15.0, -10.0, 5.0]),
        ("vessel fork", [0.0, 5.0, 45.0]),
    ];
    let ct: Vec<(&str, [f64; 3])> = us.iter().rev().map(|(l, p)| (*l, moved(*p))).collect();
    let (us_path, ct_path) = (
        dir.path().join("us.mrk.json"),
        dir.path().join("ct.mrk.json"),
    );
    markups(&us_path, &us);
    markups(&ct_path, &ct);
    let registration = dir.path().join("reg.txt");
    // The registration in force: a 7 mm shift along R.
    std::fs::write(&registration, "1 0 0 7\n0 1 0 0\n0 0 1 0\n0 0 0 1\n").unwrap();
    let out = dir.path().join("corrected.txt");
    let stdout = pinhole_ok(&[
        "us",
        "landmarks",
        "--us-points",
        us_path.to_str().unwrap(),
        "--ct-points",
        ct_path.to_str().unwrap(),
        "--registration",
        registration.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let report: serde_json::Value =
        serde_json::from_str(stdout.split("\nPinhole is research").next().unwrap()).unwrap();
    assert!(report["fre_rms_mm"].as_f64().unwrap() < 1e-9, "{report}");
    assert!((report["rotation_deg"].as_f64().unwrap() - 10.0).abs() < 1e-9);
    let corrected = pinhole_io::transform::read_registration(&out).unwrap();
    // A tracker point whose RAS under the old registration is the US point's RAS must
    // land on the CT point's RAS: corrected · old⁻¹ · ras(us) = ras(ct).
    for (label, p) in us {
        let q = moved(p);
        let tracker = [-p[0] - 7.0, -p[1], p[2]]; // old⁻¹ of RAS(p)
        let got: Vec<f64> = (0..3)
            .map(|r| (0..3).map(|k| corrected[r][k] * tracker[k]).sum::<f64>() + corrected[r][3])
            .collect();
        let want = [-q[0], -q[1], q[2]];
        for a in 0..3 {
            assert!(
                (got[a] - want[a]).abs() < 1e-9,
                "{label}: {got:?} vs {want:?}"
            );
        }
    }
}

#[test]
fn us_landmarks_refuses_points_on_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let line: Vec<(&str, [f64; 3])> = (0..4).map(|i| ("", [i as f64 * 10.0, 0.0, 0.0])).collect();
    let (us_path, ct_path) = (
        dir.path().join("us.mrk.json"),
        dir.path().join("ct.mrk.json"),
    );
    markups(&us_path, &line);
    markups(&ct_path, &line);
    let out = pinhole(&[
        "us",
        "landmarks",
        "--us-points",
        us_path.to_str().unwrap(),
        "--ct-points",
        ct_path.to_str().unwrap(),
        "--out",
        dir.path().join("c.txt").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lie on a line"), "{err}");
}

/// `us register` on a simulated sweep whose tracking is off by a known rigid error:
/// the corrected registration puts the frames back where they were simulated (the
/// registration study in BENCHMARKS.md covers 50 such cases; this is one, end to end).
#[test]
fn us_register_undoes_a_known_tracking_error_on_a_simulated_sweep() {
    let ct = shared_data("abdomen-ct/example_ct.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let truth = dir.path().join("truth.seq.mha");
    // The probe on the anterior skin over the liver (LPS (−95, −185, 375), where the
    // liver fills the patient's right anterior abdomen, as in the registration study),
    // pressed 8 mm in, beam posterior.
    let volume = pinhole_io::nifti::read(&ct).unwrap().to_f32();
    let mut y = -185.0;
    while volume
        .sample_trilinear([-95.0, y - 1.0, 375.0])
        .is_some_and(|hu| hu > -300.0)
    {
        y -= 1.0;
    }
    let pose = format!("-95,{},375", y + 8.0);
    pinhole_ok(&[
        "us",
        "sweep",
        "--ct",
        ct.to_str().unwrap(),
        "--probe",
        "convex",
        "--pose",
        &pose,
        "--direction",
        "0,1,0",
        "--size",
        "256",
        "--depth-mm",
        "150",
        "--frames",
        "11",
        "--tilt-deg",
        "2",
        "--out",
        truth.to_str().unwrap(),
    ]);
    // The tracking error E (LPS): 3° about S and (3, −2, 2) mm; the file says E·P for
    // every true plane P (on the world side: RAS rows F·E·F).
    let (s, co) = 3f64.to_radians().sin_cos();
    let e_lps = [
        [co, -s, 0.0, 3.0],
        [s, co, 0.0, -2.0],
        [0.0, 0.0, 1.0, 2.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let e_ras = pinhole_volume::math::swap_lps_ras(&e_lps);
    let mut sequence = pinhole_io::sequence::read_sequence(&truth).unwrap();
    let true_planes: Vec<[[f64; 4]; 4]> = sequence
        .frames
        .iter()
        .map(|f| *f.valid_transform("ImageToReference").unwrap())
        .collect();
    for f in &mut sequence.frames {
        let t = f
            .transforms
            .iter_mut()
            .find(|t| t.name == "ImageToReference")
            .unwrap();
        t.matrix = Some(pinhole_volume::math::mat4_mul(&e_ras, &t.matrix.unwrap()));
    }
    let off = dir.path().join("off.seq.mha");
    write_sequence(&off, &sequence).unwrap();
    let out = dir.path().join("corrected.txt");
    let stdout = pinhole_ok(&[
        "us",
        "register",
        off.to_str().unwrap(),
        "--ct",
        ct.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains("Validated on simulated sweeps only"),
        "{stdout}"
    );
    let corrected = pinhole_io::transform::read_registration(&out).unwrap();
    // Each frame's centre pixel, placed through the corrected registration, against
    // where it was simulated (both RAS).
    let (w, h) = (sequence.width as f64, sequence.height as f64);
    let centre = [(w - 1.0) / 2.0, (h - 1.0) / 2.0, 0.0, 1.0];
    let apply = |m: &[[f64; 4]; 4], p: [f64; 4]| -> [f64; 3] {
        std::array::from_fn(|r| (0..4).map(|k| m[r][k] * p[k]).sum())
    };
    let mut worst: f64 = 0.0;
    for (f, truth) in sequence.frames.iter().zip(&true_planes) {
        let placed = pinhole_volume::math::mat4_mul(
            &corrected,
            f.valid_transform("ImageToReference").unwrap(),
        );
        let (a, b) = (apply(&placed, centre), apply(truth, centre));
        worst = worst
            .max(((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt());
    }
    // Before the correction the centres were ~4–5 mm off.
    assert!(
        worst < 2.0,
        "frame centres {worst:.2} mm from the truth after correction:\n{stdout}"
    );
}

/// Pairs that disagree (one CT point 10 mm off) are still fitted, but the summary and the
/// terminal say that the fiducial registration error is above 2 mm.
#[test]
fn us_landmarks_warns_when_the_pairs_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let us = [
        ("a", [10.0, 20.0, 30.0]),
        ("b", [40.0, 25.0, 10.0]),
        ("c", [15.0, -10.0, 5.0]),
        ("d", [0.0, 5.0, 45.0]),
    ];
    let mut ct = us;
    ct[1].1[0] += 10.0;
    let (us_path, ct_path) = (
        dir.path().join("us.mrk.json"),
        dir.path().join("ct.mrk.json"),
    );
    markups(&us_path, &us);
    markups(&ct_path, &ct);
    let out = pinhole(&[
        "us",
        "landmarks",
        "--us-points",
        us_path.to_str().unwrap(),
        "--ct-points",
        ct_path.to_str().unwrap(),
        "--out",
        dir.path().join("c.txt").to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value =
        serde_json::from_str(stdout.split("\nPinhole is research").next().unwrap()).unwrap();
    assert!(report["fre_rms_mm"].as_f64().unwrap() > 2.0, "{report}");
    let warning = report["warnings"][0].as_str().unwrap();
    assert!(warning.contains("fiducial registration error"), "{warning}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fiducial registration error"), "{stderr}");
}
