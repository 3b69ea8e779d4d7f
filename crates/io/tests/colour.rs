//! Colour series (`dicom::read_colour_series`) against pydicom's RGB (`pixel_array`,
//! which converts YBR; `apply_color_lut` for palettes) on pydicom's bundled files.

use std::path::Path;

use pinhole_io::dicom::{self, ColourSeries, DicomOptions, RgbSamples};
use pinhole_io::ErrorKind;
use tempfile::TempDir;

use crate::common::*;

fn pydicom_test_file(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(python("dicom_reference.py", &["testfile", name]).trim())
}

/// `name` alone in a folder.
fn folder_with(name: &str) -> TempDir {
    let tmp = TempDir::new().unwrap();
    std::fs::copy(pydicom_test_file(name), tmp.path().join(name)).unwrap();
    tmp
}

fn read_colour(dir: &Path) -> pinhole_io::Result<ColourSeries> {
    dicom::read_colour_series(dir, &DicomOptions::default(), &mut |_, _| {})
}

fn as_f64(samples: &RgbSamples) -> Vec<f64> {
    match samples {
        RgbSamples::U8(v) => v.iter().map(|&s| f64::from(s)).collect(),
        RgbSamples::U16(v) => v.iter().map(|&s| f64::from(s)).collect(),
        RgbSamples::U32(v) => v.iter().map(|&s| f64::from(s)).collect(),
    }
}

/// Our samples and pydicom's, row by row (R, G, B per pixel).
fn ours_and_pydicom(name: &str) -> (ColourSeries, Vec<f64>, Vec<f64>) {
    let tmp = folder_with(name);
    let series = read_colour(tmp.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let raw = tmp.path().join("rgb.npy");
    let reference = python_json(
        "dicom_reference.py",
        &[
            "colour",
            tmp.path().join(name).to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    let dims = series.volume.grid().dims();
    assert_eq!(
        [dims[0] as u64, dims[1] as u64, dims[2] as u64],
        [
            reference["columns"].as_u64().unwrap(),
            reference["rows"].as_u64().unwrap(),
            reference["frames"].as_u64().unwrap()
        ],
        "{name}"
    );
    assert_eq!(
        u64::from(series.volume.samples().bits()),
        reference["bits"].as_u64().unwrap(),
        "{name}: sample size"
    );
    let ours = as_f64(series.volume.samples());
    (series, ours, read_voxels(&raw))
}

/// Lossless colour in every encoding this reader takes: native RGB (pixel- and
/// plane-interleaved, little and big endian, odd sizes), YBR_FULL and YBR_FULL_422
/// native, RLE RGB 8 and 16 bits, JPEG 2000 YBR_RCT, JPEG lossless, PALETTE COLOR
/// (16-bit entries): pydicom's values exactly. The greyscale reader refuses each one
/// with a pointer to the colour path instead of reading it.
#[test]
fn dicom_colour_files_match_pydicom_exactly() {
    for name in [
        "examples_rgb_color.dcm",
        "SC_rgb_small_odd.dcm",
        "SC_rgb_small_odd_big_endian.dcm",
        "ExplVR_BigEnd.dcm",
        "SC_rgb_dcmtk_+eb+cr.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_rle.dcm",
        "SC_rgb_rle_16bit.dcm",
        "examples_jpeg2k.dcm",
        "GDCMJ2K_TextGBR.dcm",
        "SC_rgb_jpeg_dcmd.dcm",
        "SC_rgb_small_odd_jpeg.dcm",
        "examples_palette.dcm",
        // JPEG-LS near-lossless colour, lines and pixels interleaved (`dicom::jpegls`).
        "SC_rgb_jls_lossy_line.dcm",
        "SC_rgb_jls_lossy_sample.dcm",
        // 32-bit RGB, and multi-frame objects without geometry: frames along k.
        "SC_rgb_rle_32bit.dcm",
        "SC_rgb_rle_2frame.dcm",
        "SC_rgb_rle_16bit_2frame.dcm",
        "SC_rgb_rle_32bit_2frame.dcm",
    ] {
        let (series, ours, reference) = ours_and_pydicom(name);
        assert_eq!(ours.len(), reference.len(), "{name}");
        assert!(ours == reference, "{name}: samples differ from pydicom");
        assert_eq!(series.info.slices, 1);
        let frames = series.volume.grid().dims()[2];
        assert_eq!(
            series
                .warnings
                .iter()
                .any(|w| w.contains("k is the frame number")),
            frames > 1,
            "{name}: {:?}",
            series.warnings
        );
        let tmp = folder_with(name);
        let refusal = dicom::read_series(tmp.path(), &DicomOptions::default(), &mut |_, _| {})
            .expect_err(name)
            .to_string();
        assert!(refusal.contains("pinhole convert"), "{name}: {refusal}");
        assert!(dicom::series_is_colour(tmp.path(), &DicomOptions::default()).unwrap());
    }
}

/// Lossy JPEG colour (baseline YBR_FULL_422 / YBR_FULL, RGB without a colour transform,
/// with an Adobe marker, a 30-frame cine): pydicom decodes with libjpeg (Pillow), we
/// with jpeg-decoder, and the two IDCTs and chroma upsamplers may differ by a few
/// levels. Within 3, and nearly all samples equal. `SC_jpeg_no_color_transform.dcm` (RGB components, no
/// Adobe marker) came out off by up to 137 through dicom-pixeldata's decoder, which
/// converts every three-component JPEG from YCbCr: the regression case.
#[test]
fn dicom_lossy_jpeg_colour_is_within_three_levels_of_pydicom() {
    for name in [
        "SC_jpeg_no_color_transform.dcm",
        "SC_jpeg_no_color_transform_2.dcm",
        "SC_rgb_jpeg_app14_dcmd.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "SC_rgb_dcmtk_+eb+cy+np.dcm",
        "SC_rgb_jpeg_lossy_gdcm.dcm",
        // 30 frames of YBR_FULL_422 JPEG baseline.
        "examples_ybr_color.dcm",
    ] {
        let (_, ours, reference) = ours_and_pydicom(name);
        assert_eq!(ours.len(), reference.len(), "{name}");
        let differences: Vec<f64> = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let worst = differences.iter().cloned().fold(0.0, f64::max);
        let differing = differences.iter().filter(|&&d| d > 0.0).count() as f64;
        assert!(worst <= 3.0, "{name}: off by up to {worst}");
        assert!(
            differing / (ours.len() as f64) < 0.2,
            "{name}: {differing} of {} samples differ",
            ours.len()
        );
    }
}

/// Colour JPEG-LS (T.87 Annex B) against CharLS (pyjpegls, pydicom's decoder): a
/// photograph and a constructed image (flat blocks for run mode over whole pixels, one
/// component changing to interrupt it, noise, ramps) in every interleave mode — by
/// plane (three scans), by line, by pixel — lossless and NEAR 3, and 12-bit noise:
/// pydicom's values exactly.
#[test]
fn dicom_colour_jpegls_matches_charls_in_every_interleave_mode() {
    let tmp = TempDir::new().unwrap();
    let made = python_json(
        "dicom_reference.py",
        &["jpegls_colour", tmp.path().to_str().unwrap()],
    );
    let names = made["names"].as_array().unwrap();
    assert_eq!(names.len(), 14);
    for name in names {
        let name = name.as_str().unwrap();
        let folder = tmp.path().join(name);
        let series = read_colour(&folder).unwrap_or_else(|e| panic!("{name}: {e}"));
        let raw = folder.join("rgb.npy");
        python_json(
            "dicom_reference.py",
            &[
                "colour",
                folder.join("image.dcm").to_str().unwrap(),
                raw.to_str().unwrap(),
            ],
        );
        let ours = as_f64(series.volume.samples());
        assert!(
            ours == read_voxels(&raw),
            "{name}: samples differ from CharLS"
        );
    }
}

/// What the colour reader does not take is refused with the reason, not misread.
#[test]
fn dicom_colour_it_cannot_read_is_refused_with_the_reason() {
    // A multi-frame object beside other files: which frame goes where is unknown.
    let tmp = folder_with("SC_rgb_rle_2frame.dcm");
    std::fs::copy(
        pydicom_test_file("SC_rgb_rle.dcm"),
        tmp.path().join("SC_rgb_rle.dcm"),
    )
    .unwrap();
    let error = read_colour(tmp.path()).expect_err("mixed");
    assert!(error.to_string().contains("alone"), "{error}");
    // A greyscale series is not a colour one.
    let tmp = folder_with("CT_small.dcm");
    assert!(!dicom::series_is_colour(tmp.path(), &DicomOptions::default()).unwrap());
    let error = read_colour(tmp.path()).expect_err("greyscale");
    assert!(
        matches!(error.kind, ErrorKind::Unsupported(_))
            && error.to_string().contains("MONOCHROME2"),
        "{error}"
    );
}
