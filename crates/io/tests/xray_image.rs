//! X-ray images for registration: PNG 8/16-bit, 2-D NIfTI, single-file DICOM (written by
//! pydicom, `tests/py/dicom_reference.py xray`), and inputs whose headers claim more than
//! the file holds.

use std::path::Path;

use pinhole_io::xray_image::{self, sniff, XrayFormat};
use pinhole_io::ErrorKind;
use pinhole_volume::{Grid, Volume};

use crate::common::python_json;

fn png_bytes(w: u32, h: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(data).unwrap();
    writer.finish().unwrap();
    out
}

fn write_png(path: &Path, w: u32, h: u32, depth: png::BitDepth, bytes: &[u8]) {
    let encoded = png_bytes(w, h, png::ColorType::Grayscale, depth, bytes);
    std::fs::write(path, encoded).unwrap();
}

#[test]
fn reads_8_and_16_bit_png_row_major_from_the_top() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (6u32, 3u32);
    let p8 = dir.path().join("x8.png");
    let v8: Vec<u8> = (0..w * h).map(|i| (i * 10) as u8).collect();
    write_png(&p8, w, h, png::BitDepth::Eight, &v8);
    let img = xray_image::read(&p8).unwrap();
    assert_eq!((img.width, img.height), (6, 3));
    assert_eq!(img.get(1, 0), 10.0);
    assert_eq!(img.get(0, 2), 120.0);

    let p16 = dir.path().join("x16.png");
    let v16: Vec<u16> = (0..w * h).map(|i| 1000 + i as u16 * 2000).collect();
    let bytes: Vec<u8> = v16.iter().flat_map(|v| v.to_be_bytes()).collect();
    write_png(&p16, w, h, png::BitDepth::Sixteen, &bytes);
    let img = xray_image::read(&p16).unwrap();
    assert_eq!(img.get(5, 2), f32::from(v16[17]));
    assert_eq!(img.get(2, 1), f32::from(v16[8]));
    // The same bytes in memory decode to the same image.
    let again = xray_image::decode(&std::fs::read(&p16).unwrap(), &p16).unwrap();
    assert_eq!(again, img);
}

#[test]
fn colour_png_becomes_rec601_luminance() {
    let rgb = [10u8, 200, 30, 0, 0, 255];
    let bytes = png_bytes(2, 1, png::ColorType::Rgb, png::BitDepth::Eight, &rgb);
    let img = xray_image::decode(&bytes, Path::new("rgb.png")).unwrap();
    assert_eq!(img.data.len(), 2);
    assert_eq!(img.get(0, 0), 0.299 * 10.0 + 0.587 * 200.0 + 0.114 * 30.0);
    assert_eq!(img.get(1, 0), 0.114 * 255.0);
    // Grey + alpha: the grey sample.
    let ga = png_bytes(
        1,
        1,
        png::ColorType::GrayscaleAlpha,
        png::BitDepth::Eight,
        &[77, 9],
    );
    assert_eq!(
        xray_image::decode(&ga, Path::new("ga.png")).unwrap().data,
        [77.0]
    );
}

/// Rewrites a PNG's IHDR width and height (and its CRC).
fn claim_size(png: &mut [u8], width: u32, height: u32) {
    // Signature (8), IHDR length (4), "IHDR" (4), then width, height, 5 more bytes, CRC.
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
}

#[test]
fn png_claiming_more_pixels_than_the_file_can_hold_is_refused_before_allocating() {
    let small = png_bytes(
        4,
        4,
        png::ColorType::Rgba,
        png::BitDepth::Sixteen,
        &[7; 128],
    );
    let mut huge = small.clone();
    // Rows small enough for the decoder's own limits, 2^24 of them: 8 TiB in all.
    claim_size(&mut huge, 1 << 16, 1 << 24);
    let e = xray_image::decode(&huge, Path::new("claims.png")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::SizeExceedsFile { .. }), "{e}");
    assert!(e.to_string().contains("claims.png"), "{e}");
    // Within the deflate bound but more than the data holds: a PNG error, no panic.
    let mut short = small;
    claim_size(&mut short, 64, 64);
    let e = xray_image::decode(&short, Path::new("short.png")).unwrap_err();
    assert!(e.to_string().contains("short.png"), "{e}");
}

#[test]
fn truncated_pngs_give_errors() {
    let bytes = png_bytes(
        5,
        4,
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        &[3; 20],
    );
    // (A missing IEND is tolerated by the decoder, so cuts stop inside IDAT.)
    for cut in [8, 20, 33, 40, bytes.len() - 13] {
        assert!(
            xray_image::decode(&bytes[..cut], Path::new("cut.png")).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn reads_a_2d_nifti_with_i_as_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.nii.gz");
    let grid = Grid::axis_aligned([4, 3, 1], [1.0; 3], [0.0; 3]).unwrap();
    let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
    let v = Volume::new(grid, data).unwrap();
    pinhole_io::open::write_volume(&path, &pinhole_io::AnyVolume::F32(v)).unwrap();
    let img = xray_image::read(&path).unwrap();
    assert_eq!((img.width, img.height), (4, 3));
    assert_eq!(img.get(3, 0), 1.5);
    assert_eq!(img.get(0, 2), 4.0);
}

#[test]
fn reads_a_single_file_xa_dicom_as_pydicom_does() {
    let dir = tempfile::tempdir().unwrap();
    for frames in ["1", "3"] {
        let path = dir.path().join(format!("xa{frames}.dcm"));
        let reference = python_json(
            "dicom_reference.py",
            &["xray", path.to_str().unwrap(), "9", "5", frames],
        );
        let img = xray_image::read(&path).unwrap();
        assert_eq!((img.width, img.height), (9, 5), "{frames} frames");
        for c in 0..3 {
            assert_eq!(
                f64::from(img.get(c, 0)),
                reference["first"][c].as_f64().unwrap()
            );
        }
        assert_eq!(
            f64::from(img.get(8, 4)),
            reference["last"].as_f64().unwrap()
        );
    }
}

#[test]
fn dicom_cut_short_or_with_a_lying_length_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xa.dcm");
    python_json(
        "dicom_reference.py",
        &["xray", path.to_str().unwrap(), "9", "5"],
    );
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(sniff(&bytes), XrayFormat::Dicom);
    for cut in [140, 300, bytes.len() - 10] {
        let e = xray_image::decode(&bytes[..cut], &path).unwrap_err();
        assert!(e.to_string().contains("xa.dcm"), "{e}");
    }
    // PixelData's length (last element, explicit VR OW: 4-byte length 12 bytes before
    // the 90 values) claims 4 GB.
    let mut lying = bytes.clone();
    let at = lying.len() - 90 - 4;
    lying[at..at + 4].copy_from_slice(&u32::MAX.wrapping_sub(1).to_le_bytes());
    let e = xray_image::decode(&lying, &path).unwrap_err();
    assert!(e.to_string().contains("claims"), "{e}");
}

#[test]
fn sniffing_follows_the_content_not_the_name() {
    assert_eq!(sniff(b"\x89PNG\r\n\x1a\n rest"), XrayFormat::Png);
    let mut dicom = vec![0u8; 132];
    dicom[128..132].copy_from_slice(b"DICM");
    assert_eq!(sniff(&dicom), XrayFormat::Dicom);
    assert_eq!(sniff(&dicom[..131]), XrayFormat::Nifti);
    assert_eq!(sniff(b""), XrayFormat::Nifti);
    let e = xray_image::decode(b"not an image", Path::new("x.png")).unwrap_err();
    assert!(e.to_string().starts_with("x.png: "), "{e}");
}

#[test]
fn rejects_a_3d_nifti_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vol.nii");
    let grid = Grid::axis_aligned([2, 2, 2], [1.0; 3], [0.0; 3]).unwrap();
    let v = Volume::filled(grid, 1.0f32);
    pinhole_io::open::write_volume(&path, &pinhole_io::AnyVolume::F32(v)).unwrap();
    let e = xray_image::read(&path).unwrap_err().to_string();
    assert!(e.contains("vol.nii") && e.contains("2-D"), "{e}");
}

#[test]
fn missing_file_names_it() {
    let e = xray_image::read(Path::new("/nonexistent/x.png")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Io(_)), "{e}");
    assert!(e.to_string().contains("/nonexistent/x.png"), "{e}");
}

#[test]
fn mutated_images_give_images_or_errors() {
    // A cheap stand-in for the `xray_image` fuzz target: every byte of a PNG and of a
    // DICOM file overwritten in turn with a pseudo-random value.
    let dir = tempfile::tempdir().unwrap();
    let dcm = dir.path().join("xa.dcm");
    python_json(
        "dicom_reference.py",
        &["xray", dcm.to_str().unwrap(), "4", "3"],
    );
    let png = png_bytes(
        3,
        2,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        &[9; 12],
    );
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for original in [png, std::fs::read(&dcm).unwrap()] {
        for at in 0..original.len() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = original.clone();
            bytes[at] = state as u8;
            if let Ok(img) = xray_image::decode(&bytes, Path::new("m")) {
                assert_eq!(img.data.len(), img.width * img.height);
            }
        }
    }
}

/// A 3-frame 64×48 XA cine with the geometry tags, written by pydicom
/// (`dicom_reference.py xa_cine`): its JSON and every frame's rescaled values.
fn xa_cine(dir: &Path, spacing: &str) -> (std::path::PathBuf, serde_json::Value, Vec<f64>) {
    let path = dir.join("cine.dcm");
    let raw = dir.join("cine.f64");
    let reference = python_json(
        "dicom_reference.py",
        &[
            "xa_cine",
            path.to_str().unwrap(),
            raw.to_str().unwrap(),
            "64",
            "48",
            "3",
            spacing,
        ],
    );
    (path, reference, crate::common::read_f64_le(&raw))
}

#[test]
fn each_frame_of_a_multi_frame_xa_equals_pydicoms() {
    let dir = tempfile::tempdir().unwrap();
    let (path, reference, values) = xa_cine(dir.path(), "0.3\\0.3");
    let frames = reference["frames"].as_u64().unwrap() as usize;
    assert_eq!(frames, 3);
    let pixels = 64 * 48;
    assert_eq!(values.len(), frames * pixels);
    for k in 0..frames {
        let img = xray_image::read_frame(&path, k).unwrap();
        assert_eq!((img.width, img.height), (64, 48), "frame {k}");
        let expected = &values[k * pixels..(k + 1) * pixels];
        let ours: Vec<f64> = img.data.iter().map(|&v| f64::from(v)).collect();
        assert_eq!(ours, expected, "frame {k}");
    }
    // The frames differ, so a reader that always gives frame 0 fails above.
    assert_ne!(values[..pixels], values[pixels..2 * pixels]);
    // `read` is frame 0.
    assert_eq!(
        xray_image::read(&path).unwrap(),
        xray_image::read_frame(&path, 0).unwrap()
    );
}

#[test]
fn xa_geometry_tags_equal_pydicoms() {
    let dir = tempfile::tempdir().unwrap();
    let (path, reference, _) = xa_cine(dir.path(), "0.31\\0.3");
    let g = xray_image::read_geometry(&path).unwrap().unwrap();
    let f = |key: &str| reference[key].as_f64().unwrap();
    assert_eq!(g.distance_source_to_detector_mm, Some(f("sid_mm")));
    assert_eq!(g.distance_source_to_patient_mm, Some(f("sod_mm")));
    let spacing = &reference["imager_pixel_spacing_mm"];
    assert_eq!(
        g.imager_pixel_spacing_mm,
        Some([spacing[0].as_f64().unwrap(), spacing[1].as_f64().unwrap()])
    );
    assert_eq!(
        g.imager_pixel_spacing_mm,
        Some([0.31, 0.3]),
        "row\\column order"
    );
    assert_eq!(g.positioner_primary_angle_deg, Some(f("primary_deg")));
    assert_eq!(g.positioner_secondary_angle_deg, Some(f("secondary_deg")));
    assert_eq!(g.number_of_frames, 3);
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    // The frame decoder gives the same geometry.
    let bytes = std::fs::read(&path).unwrap();
    let (_, again) = xray_image::decode_dicom_frame(&bytes, &path, 2).unwrap();
    assert_eq!(again, g);
}

#[test]
fn unusable_geometry_tags_are_ignored_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = xa_cine(dir.path(), "0.3\\0.3");
    let mut bytes = std::fs::read(&path).unwrap();
    // DS values of the same length: SID "1020.5" → "-020.5", spacing "0.3" → "nan".
    let replace = |bytes: &mut Vec<u8>, from: &[u8], to: &[u8]| {
        let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
        bytes[at..at + from.len()].copy_from_slice(to);
    };
    replace(&mut bytes, b"1020.5", b"-020.5");
    replace(&mut bytes, b"0.3\\0.3", b"nan\\0.3");
    let g = xray_image::decode_geometry(&bytes, &path).unwrap().unwrap();
    assert_eq!(g.distance_source_to_detector_mm, None);
    assert_eq!(g.imager_pixel_spacing_mm, None);
    assert_eq!(g.distance_source_to_patient_mm, Some(765.25));
    let joined = g.warnings.join("\n");
    assert!(
        joined.contains("DistanceSourceToDetector") && joined.contains("ImagerPixelSpacing"),
        "{joined}"
    );
    // The image is still read.
    assert!(xray_image::decode_frame(&bytes, &path, 1).is_ok());
}

#[test]
fn a_frame_beyond_the_count_is_refused_naming_the_file_and_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = xa_cine(dir.path(), "0.3\\0.3");
    let e = xray_image::read_frame(&path, 3).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::InvalidInput(_)), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("cine.dcm") && text.contains("frame 3") && text.contains("3 frames"),
        "{text}"
    );
    assert!(xray_image::read_frame(&path, usize::MAX).is_err());
    // A PNG has one frame; it has no geometry.
    let png = dir.path().join("x.png");
    write_png(&png, 2, 2, png::BitDepth::Eight, &[1, 2, 3, 4]);
    assert!(xray_image::read_frame(&png, 0).is_ok());
    let e = xray_image::read_frame(&png, 1).unwrap_err().to_string();
    assert!(e.contains("x.png") && e.contains("1 frame"), "{e}");
    assert_eq!(xray_image::read_geometry(&png).unwrap(), None);
}
