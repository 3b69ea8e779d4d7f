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
