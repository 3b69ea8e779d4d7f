//! `pinhole us simulate` on the real abdomen CT (`../shared/data/abdomen-ct`,
//! TotalSegmentator's test files, Apache-2.0).

use super::*;

/// A probe on the anterior skin over the CT's centre, pressed 10 mm in, beam posterior.
fn anterior_pose(ct_path: &Path) -> [f64; 3] {
    let ct = pinhole_io::nifti::read(ct_path).unwrap().to_f32();
    let c = ct.grid().center_lps();
    let mut y = c[1];
    while ct
        .sample_trilinear([c[0], y - 1.0, c[2]])
        .is_some_and(|hu| hu > -300.0)
    {
        y -= 1.0;
    }
    [c[0], y + 10.0, c[2]]
}

#[test]
fn us_simulate_writes_a_png_and_its_image_to_lps() {
    let ct = shared_data("abdomen-ct/example_ct.nii.gz");
    let labels = shared_data("abdomen-ct/example_seg.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("us.png");
    let [x, y, z] = anterior_pose(&ct);
    let pose = format!("{x},{y},{z}");
    let stdout = pinhole_ok(&[
        "us",
        "simulate",
        "--ct",
        ct.to_str().unwrap(),
        "--probe",
        "convex",
        "--pose",
        &pose,
        "--direction",
        "0,1,0",
        "--size",
        "320",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.contains("NOT FOR CLINICAL USE"), "{stdout}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0u8; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (320, 320));
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let lit = pixels.iter().filter(|&&p| p > 0).count();
    assert!(lit > 320 * 320 / 5, "{lit} lit pixels");

    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("us.png.json")).unwrap())
            .unwrap();
    assert!(sidecar["note"]
        .as_str()
        .unwrap()
        .contains("NOT FOR CLINICAL USE"));
    assert_eq!(sidecar["lit_pixels"].as_u64(), Some(lit as u64));
    // ImageToLps: x along the patient's left (the default lateral), y posterior (the beam),
    // square pixels.
    let m = &sidecar["image_to_lps"];
    let s = sidecar["pixel_mm"].as_f64().unwrap();
    assert!((m[0][0].as_f64().unwrap() - s).abs() < 1e-9, "{m}");
    assert!((m[1][1].as_f64().unwrap() - s).abs() < 1e-9, "{m}");
    assert_eq!(m[3], serde_json::json!([0.0, 0.0, 0.0, 1.0]));
    assert!(sidecar["structures"].is_null());

    // --labels: the structures the frame crosses (the abdomen crop's label map lies on
    // another grid, so the frame may miss it; the key is there either way).
    let out2 = dir.path().join("us2.png");
    pinhole_ok(&[
        "us",
        "simulate",
        "--ct",
        ct.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--probe",
        "linear",
        "--depth-mm",
        "80",
        "--frequency-mhz",
        "7.5",
        "--pose",
        &pose,
        "--direction",
        "0,1,0",
        "--lateral",
        "0,0,-1",
        "--size",
        "128",
        "--out",
        out2.to_str().unwrap(),
    ]);
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("us2.png.json")).unwrap())
            .unwrap();
    assert!(sidecar["structures"].is_array(), "{sidecar}");
    assert_eq!(sidecar["probe"]["kind"], "linear");
    // A sagittal frame: x towards the feet.
    let m = &sidecar["image_to_lps"];
    assert!(m[2][0].as_f64().unwrap() < 0.0, "{m}");
    assert_ne!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());

    // A probe outside the CT: a blank image, said in the sidecar's warnings.
    let out3 = dir.path().join("us3.png");
    pinhole_ok(&[
        "us",
        "simulate",
        "--ct",
        ct.to_str().unwrap(),
        "--pose",
        "0,-900,0",
        "--direction",
        "0,1,0",
        "--size",
        "64",
        "--out",
        out3.to_str().unwrap(),
    ]);
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("us3.png.json")).unwrap())
            .unwrap();
    assert_eq!(sidecar["lit_pixels"], 0);
    let warnings = sidecar["warnings"].to_string();
    assert!(
        warnings.contains("outside the CT") && warnings.contains("blank"),
        "{warnings}"
    );
}

#[test]
fn us_simulate_refuses_bad_parameters_by_name_and_non_ct_input() {
    let ct = shared_data("abdomen-ct/example_ct.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("us.png");
    let base = |extra: &[&str], ct: &Path| {
        let mut args = vec![
            "us",
            "simulate",
            "--ct",
            ct.to_str().unwrap(),
            "--pose",
            "0,0,0",
            "--direction",
            "0,1,0",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        pinhole(&args)
    };
    for (extra, name) in [
        (&["--fov-deg", "200"][..], "fov_deg"),
        (&["--frequency-mhz", "0.5"][..], "frequency_mhz"),
        (&["--depth-mm", "-5"][..], "depth_mm"),
        (&["--probe", "linear", "--width-mm", "0"][..], "width_mm"),
        (&["--lateral", "0,2,0"][..], "parallel"),
    ] {
        let done = base(extra, &ct);
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(!done.status.success(), "{extra:?} accepted");
        assert!(stderr.contains(name), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(!out.exists());
    // A label map is not a CT in HU: refused unless --allow-non-ct.
    let labels = shared_data("abdomen-ct/example_seg.nii.gz");
    let done = base(&[], &labels);
    assert!(!done.status.success());
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(stderr.contains("allow-non-ct"), "{stderr}");
    assert!(!out.exists());
}

/// `a ≈ b` entry by entry.
fn assert_vec_close(a: [f64; 3], b: [f64; 3], what: &str) {
    for i in 0..3 {
        assert!((a[i] - b[i]).abs() < 1e-9, "{what}: {a:?} vs {b:?}");
    }
}

/// Column `c` of a row-major 4×4.
fn column(m: &[[f64; 4]; 4], c: usize) -> [f64; 3] {
    [m[0][c], m[1][c], m[2][c]]
}

#[test]
fn us_sweep_writes_a_tracked_sequence_with_each_frames_ras_plane() {
    use pinhole_io::sequence::{read_sequence, FramePixels, PixelType, TransformStatus};

    let ct = shared_data("abdomen-ct/example_ct.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep.seq.mha");
    let c = anterior_pose(&ct);
    let pose = format!("{},{},{}", c[0], c[1], c[2]);
    // An oblique beam (3-4-5: posterior and superior, not unit length), a linear probe
    // 40 mm wide, 60 mm deep, 64 × 64: square pixels of max(40, 60) / 64 mm.
    let stdout = pinhole_ok(&[
        "us",
        "sweep",
        "--ct",
        ct.to_str().unwrap(),
        "--probe",
        "linear",
        "--depth-mm",
        "60",
        "--pose",
        &pose,
        "--direction",
        "0,3,4",
        "--lateral",
        "1,0,0",
        "--size",
        "64",
        "--frames",
        "5",
        "--step-mm",
        "2.5",
        "--fps",
        "20",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.contains("NOT FOR CLINICAL USE"), "{stdout}");
    let seq = read_sequence(&out).unwrap();
    assert_eq!(
        (seq.width, seq.height, seq.pixel_type),
        (64, 64, PixelType::U8)
    );
    assert_eq!(seq.orientation.as_deref(), Some("MF"));
    let s = 60.0 / 64.0;
    assert_eq!(seq.spacing_mm, [s, s]);
    assert_eq!(seq.frames.len(), 5);

    let beam = [0.0, 0.6, 0.8];
    let lateral = [1.0, 0.0, 0.0];
    // The default sweep direction: the image normal lateral × beam = (0, −0.8, 0.6).
    let normal = [0.0, -0.8, 0.6];
    // LPS → RAS on the world side: negate x and y.
    let ras = |v: [f64; 3]| [-v[0], -v[1], v[2]];
    let mut lit = 0;
    for (k, frame) in seq.frames.iter().enumerate() {
        assert_eq!(frame.timestamp_s, Some(k as f64 / 20.0));
        let t = frame.transform("ImageToReference").unwrap();
        assert_eq!(t.status, TransformStatus::Ok);
        let m = t.matrix.unwrap();
        // Pixel (0, 0): the transducer centre slid (k − 2)·2.5 mm along the normal, then
        // half the image width to the patient's right (−lateral) and half a pixel down
        // the beam (a linear probe's first row).
        let o = (k as f64 - 2.0) * 2.5;
        let pixel00: [f64; 3] = std::array::from_fn(|a| {
            c[a] + o * normal[a] - 31.5 * s * lateral[a] + 0.5 * s * beam[a]
        });
        assert_vec_close(column(&m, 3), ras(pixel00), "pixel (0, 0)");
        assert_vec_close(column(&m, 0), ras(lateral.map(|v| v * s)), "x step");
        assert_vec_close(column(&m, 1), ras(beam.map(|v| v * s)), "y step");
        assert_vec_close(column(&m, 2), ras(normal), "normal");
        assert_eq!(m[3], [0.0, 0.0, 0.0, 1.0]);
        let FramePixels::U8(pixels) = &frame.pixels else {
            panic!("not 8-bit")
        };
        lit += pixels.iter().filter(|&&p| p > 0).count();
    }
    assert!(lit > 0, "every frame blank");

    // A tilt sweep: the centre stays, the beam (y column / s, back to LPS) turns by
    // (k − 1)·10° about the lateral axis.
    let tilt = dir.path().join("tilt.seq.mha");
    pinhole_ok(&[
        "us",
        "sweep",
        "--ct",
        ct.to_str().unwrap(),
        "--probe",
        "linear",
        "--depth-mm",
        "60",
        "--pose",
        &pose,
        "--direction",
        "0,3,4",
        "--lateral",
        "1,0,0",
        "--size",
        "64",
        "--frames",
        "3",
        "--tilt-deg",
        "10",
        "--out",
        tilt.to_str().unwrap(),
    ]);
    let seq = read_sequence(&tilt).unwrap();
    for (k, frame) in seq.frames.iter().enumerate() {
        assert_eq!(frame.timestamp_s, Some(k as f64 / 30.0), "default 30 fps");
        let m = frame.transform("ImageToReference").unwrap().matrix.unwrap();
        let b = ras(column(&m, 1)).map(|v| v / s);
        let angle = (k as f64 - 1.0) * 10f64.to_radians();
        let dot = |u: [f64; 3], v: [f64; 3]| u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
        assert!((dot(b, beam) - angle.cos()).abs() < 1e-9, "frame {k}");
        assert!((dot(b, normal) - angle.sin()).abs() < 1e-9, "frame {k}");
        // The transducer centre: pixel (31.5, −0.5) is the centre of the face.
        let centre: [f64; 3] = std::array::from_fn(|a| {
            let l = ras(column(&m, 0));
            ras([m[0][3], m[1][3], m[2][3]])[a] + 31.5 * l[a] - 0.5 * b[a] * s
        });
        assert_vec_close(centre, c, "tilt centre");
    }

    // Refused: no motion, both motions, an output that is not .mha (the CT), a bad fps,
    // a tilt sweep wider than ±90°.
    let base = [
        "us",
        "sweep",
        "--ct",
        ct.to_str().unwrap(),
        "--pose",
        &pose,
        "--direction",
        "0,1,0",
        "--size",
        "32",
        "--frames",
        "3",
    ];
    for extra in [
        &["--out", out.to_str().unwrap()][..],
        &[
            "--step-mm",
            "1",
            "--tilt-deg",
            "2",
            "--out",
            out.to_str().unwrap(),
        ][..],
        &["--step-mm", "1", "--out", ct.to_str().unwrap()][..],
        &[
            "--step-mm",
            "1",
            "--fps",
            "0",
            "--out",
            out.to_str().unwrap(),
        ][..],
        &["--tilt-deg", "60", "--out", out.to_str().unwrap()][..],
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let done = pinhole(&args);
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(!done.status.success(), "{extra:?} accepted");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// An RGB PNG's pixels.
fn read_rgb_png(path: &Path) -> (usize, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0u8; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    (info.width as usize, info.height as usize, pixels)
}

/// `us simulate` a frame, then `us fuse` it with its sidecar and a label map made here:
/// label 1 on the patient's left (LPS x > centre + 15 mm), label 2 on the right (x <
/// centre − 15 mm). The reslice picture equals `pinhole_ultrasound::reslice` of the same
/// plane windowed as the server windows it (away from letters and contours); label 1's
/// contour lies on the image side the plane's x axis points to the patient's left.
#[test]
fn us_fuse_reslices_the_ct_on_a_simulated_frame_with_its_sidecar() {
    let ct_path = shared_data("abdomen-ct/example_ct.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let frame = dir.path().join("us.png");
    let [x, y, z] = anterior_pose(&ct_path);
    let size = 320usize;
    pinhole_ok(&[
        "us",
        "simulate",
        "--ct",
        ct_path.to_str().unwrap(),
        "--pose",
        &format!("{x},{y},{z}"),
        "--direction",
        "0,1,0",
        "--size",
        &size.to_string(),
        "--out",
        frame.to_str().unwrap(),
    ]);
    let ct = pinhole_io::nifti::read(&ct_path).unwrap().to_f32();
    let centre_x = ct.grid().center_lps()[0];
    let grid = ct.grid().clone();
    let ids: Vec<u16> = (0..grid.voxel_count())
        .map(|o| {
            let lps = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
            if lps[0] > centre_x + 15.0 {
                1
            } else if lps[0] < centre_x - 15.0 {
                2
            } else {
                0
            }
        })
        .collect();
    let labels_path = dir.path().join("sides.nii.gz");
    let labels = pinhole_volume::Volume::new(grid, ids).unwrap();
    pinhole_io::open::write_volume(&labels_path, &pinhole_io::AnyVolume::U16(labels)).unwrap();

    let sidecar = dir.path().join("us.png.json");
    let out = dir.path().join("fused");
    let stdout = pinhole_ok(&[
        "us",
        "fuse",
        frame.to_str().unwrap(),
        "--ct",
        ct_path.to_str().unwrap(),
        "--labels",
        labels_path.to_str().unwrap(),
        "--image-to-lps",
        sidecar.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.contains("NOT FOR CLINICAL USE"), "{stdout}");
    let text = std::fs::read_to_string(out.join("fuse.json")).unwrap();
    // Regression (#25): file names only, not the folders above them (which may be named
    // after the patient).
    assert!(
        !text.contains(dir.path().to_str().unwrap()),
        "fuse.json records full paths: {text}"
    );
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(report["note"]
        .as_str()
        .unwrap()
        .contains("NOT FOR CLINICAL USE"));
    assert_eq!(report["frames"].as_array().unwrap().len(), 1);
    let crossed: Vec<u64> = report["labels_crossed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["label"].as_u64().unwrap())
        .collect();
    assert_eq!(crossed, [1, 2]);

    // The reference: the same plane resliced and windowed here.
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap()).unwrap();
    let m = common::json_matrix(&side["image_to_lps"]);
    let plane = pinhole_ultrasound::ImagePlane::new(m, size, size).unwrap();
    let reference = pinhole_ultrasound::reslice(&ct, None, &plane, &Default::default()).unwrap();
    let (w, h, rgb) = read_rgb_png(&out.join("reslice_000.png"));
    assert_eq!((w, h), (size, size));
    let margin = size / 6;
    let (mut grey, mut interior) = (0, 0);
    for j in margin..h - margin {
        for i in margin..w - margin {
            interior += 1;
            let px = &rgb[3 * (j * w + i)..3 * (j * w + i) + 3];
            if px[0] == px[1] && px[1] == px[2] {
                grey += 1;
                let expected = pinhole_server::fusion::window_u8(reference.ct_hu[j * w + i]);
                assert_eq!(px[0], expected, "pixel ({i}, {j})");
            }
        }
    }
    assert!(grey * 10 > interior * 9, "{grey} grey of {interior}");
    assert!(
        reference.ct_hu.iter().any(|&hu| hu > 0.0) && reference.ct_hu.iter().any(|&hu| hu < -200.0),
        "the frame shows tissue and air"
    );

    // Label 1 (patient's left) on the side the plane's x axis points to the left.
    let table = pinhole_io::labels::LabelTable::totalsegmentator_v2();
    let (left_colour, right_colour) = (table.color_of(1), table.color_of(2));
    assert!(left_colour != right_colour && left_colour.iter().any(|&c| c != left_colour[0]));
    let x_to_left = m[0][0] > 0.0;
    for name in ["reslice_000.png", "fused_000.png"] {
        let (w, _, rgb) = read_rgb_png(&out.join(name));
        let columns = |colour: [u8; 3]| -> Vec<usize> {
            rgb.chunks(3)
                .enumerate()
                .filter(|(_, px)| *px == colour)
                .map(|(o, _)| o % w)
                .collect()
        };
        let (left, right) = (columns(left_colour), columns(right_colour));
        assert!(
            left.len() > 20 && right.len() > 20,
            "{name}: {} / {}",
            left.len(),
            right.len()
        );
        let on_image_right = |c: &usize| *c > w / 2;
        assert!(
            left.iter().all(|c| on_image_right(c) == x_to_left),
            "{name}: {left:?}"
        );
        assert!(
            right.iter().all(|c| on_image_right(c) != x_to_left),
            "{name}: {right:?}"
        );
    }
    assert_eq!(
        report["geometry"]["right_lps"][0].as_f64().unwrap() > 0.0,
        x_to_left
    );
}

/// Multi-frame DICOM US through `us fuse` (every frame, or `--frame-index`), and the
/// refusals: no geometry, a frame of another size than the sidecar's, a sheared
/// ImageToReference, a frame index past the end, overwriting an input.
#[test]
fn us_fuse_reads_every_dicom_frame_and_refuses_bad_geometry() {
    let ct_path = shared_data("abdomen-ct/example_ct.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let frame = dir.path().join("us.png");
    let [x, y, z] = anterior_pose(&ct_path);
    pinhole_ok(&[
        "us",
        "simulate",
        "--ct",
        ct_path.to_str().unwrap(),
        "--pose",
        &format!("{x},{y},{z}"),
        "--direction",
        "0,1,0",
        "--size",
        "64",
        "--out",
        frame.to_str().unwrap(),
    ]);
    let sidecar = dir.path().join("us.png.json");
    let dicom = dir.path().join("cine.dcm");
    common::python_json(
        "us_dicom.py",
        &["frames", dicom.to_str().unwrap(), "RGB", "64", "64", "3"],
    );
    let out = dir.path().join("all");
    let ct = ct_path.to_str().unwrap();
    pinhole_ok(&[
        "us",
        "fuse",
        dicom.to_str().unwrap(),
        "--ct",
        ct,
        "--image-to-lps",
        sidecar.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    for k in 0..3 {
        assert!(out.join(format!("fused_{k:03}.png")).exists());
        assert!(out.join(format!("reslice_{k:03}.png")).exists());
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fuse.json")).unwrap()).unwrap();
    assert_eq!(report["frames_in_file"], 3);
    assert_eq!(report["format"], "dicom");
    let one = dir.path().join("one");
    let fuse_frame = |index: &str| {
        pinhole(&[
            "us",
            "fuse",
            dicom.to_str().unwrap(),
            "--ct",
            ct,
            "--image-to-lps",
            sidecar.to_str().unwrap(),
            "--frame-index",
            index,
            "--out",
            one.to_str().unwrap(),
        ])
    };
    assert!(fuse_frame("2").status.success());
    assert!(one.join("fused_002.png").exists() && !one.join("fused_000.png").exists());
    // Regression (#25): a failed run marks its folder (the files there are an earlier
    // run's); the next complete run clears the mark.
    assert!(!fuse_frame("9").status.success());
    assert!(one.join("pinhole-failed.txt").is_file());
    assert!(fuse_frame("1").status.success());
    assert!(!one.join("pinhole-failed.txt").exists());

    let small = dir.path().join("small.dcm");
    common::python_json(
        "us_dicom.py",
        &[
            "frames",
            small.to_str().unwrap(),
            "MONOCHROME2",
            "32",
            "64",
            "1",
        ],
    );
    let sheared = dir.path().join("sheared.txt");
    std::fs::write(&sheared, "0.5 0.3 0 0\n0 0.5 0 0\n0 0 1 0\n0 0 0 1\n").unwrap();
    // A geometry file named like an output in the output folder.
    let inside = dir.path().join("fuse.json");
    std::fs::copy(&sidecar, &inside).unwrap();
    let bad = dir.path().join("bad");
    let (b, s, d) = (
        bad.to_str().unwrap(),
        sidecar.to_str().unwrap(),
        dicom.to_str().unwrap(),
    );
    for (args, expected) in [
        (vec![d, "--ct", ct, "--out", b], "--image-to-lps"),
        (
            vec![
                small.to_str().unwrap(),
                "--ct",
                ct,
                "--image-to-lps",
                s,
                "--out",
                b,
            ],
            "64 × 64",
        ),
        (
            vec![
                d,
                "--ct",
                ct,
                "--image-to-reference",
                sheared.to_str().unwrap(),
                "--out",
                b,
            ],
            "ImageToLps",
        ),
        (
            vec![
                d,
                "--ct",
                ct,
                "--image-to-lps",
                s,
                "--frame-index",
                "3",
                "--out",
                b,
            ],
            "holds 3 frame",
        ),
        (
            vec![
                d,
                "--ct",
                ct,
                "--image-to-lps",
                inside.to_str().unwrap(),
                "--out",
                dir.path().to_str().unwrap(),
            ],
            "fuse.json",
        ),
    ] {
        let mut all = vec!["us", "fuse"];
        all.extend_from_slice(&args);
        let done = pinhole(&all);
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(!done.status.success(), "{args:?} accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
