//! `pinhole register` end to end on the small abdomen CT: an X-ray rendered by
//! `pinhole drr` at a known C-arm view (LAO 4, CAUD 3) is registered from the frontal
//! view; the reported angles must be the rendered ones, on the CPU and on the GPU
//! (lavapipe in CI), for a bone-dark 8-bit PNG and a bone-bright line-integral NIfTI.

use super::*;

/// `pinhole register` of `xray` on the small-detector settings these tests share.
fn register_args<'a>(ct: &'a Path, xray: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "register",
        "--ct",
        ct.to_str().unwrap(),
        "--xray",
        xray.to_str().unwrap(),
        "--pixel-mm",
        "6.25",
        "--levels-mm",
        "6,3",
        "--out",
        out.to_str().unwrap(),
    ]
}

fn register_json(ct: &Path, xray: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = register_args(ct, xray, out);
    args.extend_from_slice(extra);
    pinhole_ok(&args);
    let text = std::fs::read_to_string(out.join("pose.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A 64² DRR of `ct` at LAO 4, CAUD 3 (6.25 mm pixels): `DIR/NAME.png` and the line
/// integrals `DIR/NAME.nii`.
fn drr_at_lao4_caud3(
    ct: &Path,
    dir: &Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let png = dir.join(format!("{name}.png"));
    let raw = dir.join(format!("{name}.nii"));
    pinhole_ok(&[
        "drr",
        "--ct",
        ct.to_str().unwrap(),
        "--lao",
        "4",
        "--caud",
        "3",
        "--size",
        "64",
        "--pixel-mm",
        "6.25",
        "--out",
        png.to_str().unwrap(),
        "--out-raw",
        raw.to_str().unwrap(),
    ]);
    (png, raw)
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn register_recovers_the_carm_view_of_a_drr_on_cpu_and_gpu() {
    let ct = shared_data("abdomen-ct/example_ct.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let (png, raw) = drr_at_lao4_caud3(&ct, dir.path(), "xray");
    let mut found = Vec::new();
    for (xray, gpu, polarity) in [
        (&png, false, "inverted"),
        (&raw, false, "line_integral"),
        (&png, true, "inverted"),
    ] {
        let out = dir.path().join(format!("out-{gpu}-{polarity}"));
        let extra: &[&str] = if gpu { &["--gpu"] } else { &[] };
        let pose = register_json(&ct, xray, &out, extra);
        let (lao, cran) = (f(&pose["lao_deg"]), f(&pose["cran_deg"]));
        let t: Vec<f64> = (0..3).map(|i| f(&pose["translation_mm"][i])).collect();
        eprintln!(
            "gpu={gpu} {polarity}: LAO {lao:.3} CRAN {cran:.3} roll {:.3} t {t:?}, {} DRRs",
            f(&pose["roll_deg"]),
            pose["drrs_rendered"]
        );
        assert_eq!(pose["polarity"], polarity);
        assert!((lao - 4.0).abs() < 0.5, "gpu={gpu}: LAO {lao}");
        assert!((cran + 3.0).abs() < 0.5, "gpu={gpu}: CRAN {cran}");
        assert!(f(&pose["roll_deg"]).abs() < 0.5);
        assert!(t.iter().all(|v| v.abs() < 2.0), "translation {t:?}");
        // The matrix is rigid and maps the rotation centre by the translation.
        let m = json_matrix(&pose["matrix_lps"]);
        let c: Vec<f64> = (0..3).map(|i| f(&pose["center_lps"][i])).collect();
        for r in 0..3 {
            let mc: f64 = (0..3).map(|k| m[r][k] * c[k]).sum::<f64>() + m[r][3];
            assert!((mc - c[r] - t[r]).abs() < 1e-6);
        }
        assert!(f(&pose["similarity"]) > 0.5);
        assert!(pose["drrs_rendered"].as_u64().unwrap() > 100);
        assert!(f(&pose["seconds"]) > 0.0);
        assert!(pose["note"]
            .as_str()
            .unwrap()
            .contains("NOT FOR CLINICAL USE"));
        assert!(pose["version"].is_string() && pose["inputs"].as_array().unwrap().len() == 2);
        assert_eq!(pose["renderer"], if gpu { "gpu" } else { "cpu" });
        let device = pose["levels"][0]["renderer"].as_str().unwrap();
        assert!(
            device.starts_with(if gpu { "GPU" } else { "CPU" }),
            "{device}"
        );
        assert!(std::fs::metadata(out.join("overlay.png")).unwrap().len() > 100);
        found.push((lao, cran, t));
    }
    // CPU and GPU agree on the same image.
    let (cpu, gpu) = (&found[0], &found[2]);
    assert!(
        (cpu.0 - gpu.0).abs() < 0.3 && (cpu.1 - gpu.1).abs() < 0.3,
        "{cpu:?} vs {gpu:?}"
    );
    assert!(
        (0..3).all(|i| (cpu.2[i] - gpu.2[i]).abs() < 1.5),
        "{cpu:?} vs {gpu:?}"
    );
}

#[test]
fn register_rejects_a_mask_label_that_does_not_exist() {
    let ct = shared_data("abdomen-ct/example_ct_sm.nii.gz");
    let labels = shared_data("abdomen-ct/example_seg.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let xray = dir.path().join("x.png");
    pinhole_ok(&[
        "drr",
        "--ct",
        ct.to_str().unwrap(),
        "--size",
        "32",
        "--pixel-mm",
        "12",
        "--out",
        xray.to_str().unwrap(),
    ]);
    let out = pinhole(&[
        "register",
        "--ct",
        ct.to_str().unwrap(),
        "--xray",
        xray.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "--mask-labels",
        "no_such_organ",
        "--out",
        dir.path().join("o").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no_such_organ"), "{stderr}");
}

#[test]
fn register_on_a_label_mask_draws_outlines() {
    // The cropped CT and its segmentation share a grid: register on the vertebrae only.
    let ct = shared_data("abdomen-ct/example_ct_sm.nii.gz");
    let labels = shared_data("abdomen-ct/example_seg.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let xray = dir.path().join("x.png");
    pinhole_ok(&[
        "drr",
        "--ct",
        ct.to_str().unwrap(),
        "--lao",
        "3",
        "--size",
        "64",
        "--pixel-mm",
        "6",
        "--out",
        xray.to_str().unwrap(),
    ]);
    let out = dir.path().join("o");
    let pose = register_json_with(
        &ct,
        &xray,
        &out,
        &[
            "--pixel-mm",
            "6",
            "--labels",
            labels.to_str().unwrap(),
            "--mask-labels",
            "vertebrae",
        ],
    );
    assert!(!pose["mask_label_ids"].as_array().unwrap().is_empty());
    assert!(f(&pose["lao_deg"]).is_finite());
    let overlay = std::fs::read(out.join("overlay.png")).unwrap();
    assert!(overlay.len() > 100);
}

fn register_json_with(ct: &Path, xray: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "register",
        "--ct",
        ct.to_str().unwrap(),
        "--xray",
        xray.to_str().unwrap(),
        "--levels-mm",
        "6,3",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    pinhole_ok(&args);
    serde_json::from_str(&std::fs::read_to_string(out.join("pose.json")).unwrap()).unwrap()
}

/// Writes an 8-bit grey PNG.
fn write_gray_png(path: &Path, side: u32, pixels: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(pixels)
        .unwrap();
}

/// Regression (#25): a blank or pure-noise "X-ray" returned a pose with exit 0. Now the
/// registration says it did not converge (similarity below --min-similarity), exits
/// non-zero and writes no pose.
#[test]
fn register_on_a_blank_or_noise_image_does_not_converge() {
    let ct = shared_data("abdomen-ct/example_ct.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let side = 64u32;
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..side * side)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    for (name, pixels) in [
        ("blank", vec![128u8; (side * side) as usize]),
        ("noise", noise),
    ] {
        let xray = dir.path().join(format!("{name}.png"));
        write_gray_png(&xray, side, &pixels);
        let out = dir.path().join(name);
        let run = pinhole(&register_args(&ct, &xray, &out));
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{name}: {err}");
        assert!(err.contains("did not converge"), "{name}: {err}");
        assert!(
            !out.join("pose.json").exists(),
            "{name}: a pose was written"
        );
    }
}

#[test]
fn register_reads_a_chosen_frame_and_the_geometry_of_a_multi_frame_xa() {
    // Frame 1 of a 3-frame XA (pydicom) is a DRR at LAO 4, CAUD 3; frames 0 and 2 are
    // noise. The header holds the DRR's SID / SOD / pixel and a nominal LAO 2, CRAN -1.
    let ct = shared_data("abdomen-ct/example_ct.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let (_png, raw) = drr_at_lao4_caud3(&ct, dir.path(), "drr");
    let xa = dir.path().join("xa.dcm");
    let frames = dir.path().join("xa.f64");
    python_json(
        "dicom_reference.py",
        &[
            "xa_cine",
            xa.to_str().unwrap(),
            frames.to_str().unwrap(),
            "64",
            "64",
            "3",
            "6.25\\6.25",
            raw.to_str().unwrap(),
            "1020,850,2,-1",
        ],
    );
    let out = dir.path().join("out");
    let args = [
        "register",
        "--ct",
        ct.to_str().unwrap(),
        "--xray",
        xa.to_str().unwrap(),
        "--frame",
        "1",
        "--levels-mm",
        "6,3",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = pinhole(&args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let said =
        "geometry from the DICOM header: SID 1020 mm, SOD 850 mm, pixel 6.25 mm, LAO 2°, CRAN -1°";
    assert!(stderr.contains(said), "{stderr}");
    assert!(stderr.contains("frame 1 of 3"), "{stderr}");
    let pose: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("pose.json")).unwrap()).unwrap();
    let nominal = &pose["nominal"];
    assert_eq!(
        [
            f(&nominal["sid_mm"]),
            f(&nominal["sod_mm"]),
            f(&nominal["pixel_mm"]),
            f(&nominal["lao_deg"]),
            f(&nominal["cran_deg"])
        ],
        [1020.0, 850.0, 6.25, 2.0, -1.0]
    );
    assert!(
        pose["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str() == Some(said)),
        "{}",
        pose["warnings"]
    );
    let (lao, cran) = (f(&pose["lao_deg"]), f(&pose["cran_deg"]));
    assert!(
        (lao - 4.0).abs() < 0.5 && (cran + 3.0).abs() < 0.5,
        "LAO {lao} CRAN {cran}"
    );

    // A flag wins over the header; a frame beyond the count is refused naming the file.
    let mut beyond = args.to_vec();
    beyond[6] = "3";
    let run = pinhole(&beyond);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("xa.dcm") && stderr.contains("3 frames"),
        "{stderr}"
    );
    let mut flagged = args.to_vec();
    flagged.extend_from_slice(&["--sod", "800", "--init-lao", "0", "--min-similarity", "0"]);
    let run = pinhole(&flagged);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("geometry from the DICOM header: SID 1020 mm, pixel 6.25 mm, CRAN -1°"),
        "{stderr}"
    );
}

#[test]
fn register_refuses_non_square_header_pixels_naming_pixel_mm() {
    let dir = tempfile::tempdir().unwrap();
    let xa = dir.path().join("xa.dcm");
    let frames = dir.path().join("xa.f64");
    python_json(
        "dicom_reference.py",
        &[
            "xa_cine",
            xa.to_str().unwrap(),
            frames.to_str().unwrap(),
            "8",
            "8",
            "2",
            "0.31\\0.3",
        ],
    );
    let ct = shared_data("abdomen-ct/example_ct.nii.gz");
    let out = dir.path().join("out");
    let run = pinhole(&[
        "register",
        "--ct",
        ct.to_str().unwrap(),
        "--xray",
        xa.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("xa.dcm")
            && stderr.contains("ImagerPixelSpacing")
            && stderr.contains("--pixel-mm"),
        "{stderr}"
    );
}

/// Regression (#23): an X-ray flipped left-right was registered with a plausible
/// similarity (0.74) and a wrong pose. The mirrored image fits better: refused.
#[test]
fn register_refuses_an_x_ray_flipped_left_right() {
    let ct = shared_data("abdomen-ct/example_ct.nii.gz");
    let dir = tempfile::tempdir().unwrap();
    let (_png, raw) = drr_at_lao4_caud3(&ct, dir.path(), "xray");
    let image = pinhole_io::nifti::read(&raw).unwrap().to_f32();
    let [width, _, _] = image.grid().dims();
    let flipped_data: Vec<f32> = image
        .data()
        .chunks_exact(width)
        .flat_map(|row| row.iter().rev().copied())
        .collect();
    let flipped = pinhole_volume::Volume::new(image.grid().clone(), flipped_data).unwrap();
    let flipped_path = dir.path().join("flipped.nii");
    pinhole_io::nifti::write(&flipped_path, &pinhole_io::AnyVolume::from(flipped)).unwrap();
    let out = dir.path().join("flipped-out");
    let run = pinhole(&register_args(&ct, &flipped_path, &out));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{err}");
    assert!(err.contains("mirrored left-right fits better"), "{err}");
    assert!(!out.join("pose.json").exists());
    // The same image the right way round passes the check, and says so.
    let out = dir.path().join("right-out");
    let run = pinhole(&register_args(&ct, &raw, &out));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert!(
        err.contains("left-right check: the mirrored X-ray fits worse"),
        "{err}"
    );
}
