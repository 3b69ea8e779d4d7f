//! Ultrasound frames from files: PNG grey / RGB, a 2-D NIfTI whose geometry is worked out
//! by hand from an asymmetric sform, multi-frame DICOM US written by pydicom
//! (`tests/py/us_dicom.py`, checked pixel by pixel against pydicom's decoding and the
//! Rec. 601 luminance formula), and refusals.

use std::path::Path;

use pinhole_io::us_frame::{decode_us_frames, read_us_frames, sniff, UsFrameFormat};
use pinhole_io::ErrorKind;

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

/// Rec. 601 luminance, f32, rounded: the formula the reader documents.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    (0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b)).round() as u8
}

#[test]
fn grey_and_rgb_png_frames() {
    let grey: Vec<u8> = (0..12).map(|i| (i * 20) as u8).collect();
    let bytes = png_bytes(4, 3, png::ColorType::Grayscale, png::BitDepth::Eight, &grey);
    assert_eq!(sniff(&bytes), UsFrameFormat::Png);
    let frames = decode_us_frames(&bytes, Path::new("g.png")).unwrap();
    assert_eq!((frames.width, frames.height), (4, 3));
    assert_eq!(frames.frames, vec![grey]);
    assert_eq!(frames.image_to_lps, None);

    let rgb = [10u8, 200, 30, 0, 0, 255, 255, 255, 255, 1, 2, 3];
    let bytes = png_bytes(2, 2, png::ColorType::Rgb, png::BitDepth::Eight, &rgb);
    let frames = decode_us_frames(&bytes, Path::new("c.png")).unwrap();
    let expected: Vec<u8> = rgb.chunks(3).map(|c| luma(c[0], c[1], c[2])).collect();
    assert_eq!(frames.frames, vec![expected]);
    // 0.299·10 + 0.587·200 + 0.114·30 = 123.81 → 124, by hand.
    assert_eq!(frames.frames[0][0], 124);
}

#[test]
fn a_16_bit_png_is_refused_with_the_reason() {
    let bytes = png_bytes(
        2,
        1,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        &[0; 4],
    );
    let e = decode_us_frames(&bytes, Path::new("deep.png")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::UnsupportedDatatype(_)), "{e}");
    assert!(
        e.to_string().contains("deep.png") && e.to_string().contains("16-bit"),
        "{e}"
    );
}

/// A NIfTI-1 file (u8, or f32 when `float`) of `w × h × 1` with the given sform (RAS).
fn nifti_2d(w: i16, h: i16, srow: [[f32; 4]; 3], pixels: &[u8], float: bool) -> Vec<u8> {
    let mut b = vec![0u8; 352];
    b[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (k, d) in [2i16, w, h, 1, 1, 1, 1, 1].iter().enumerate() {
        b[40 + 2 * k..42 + 2 * k].copy_from_slice(&d.to_le_bytes());
    }
    let (datatype, bitpix) = if float { (16i16, 32i16) } else { (2, 8) };
    b[70..72].copy_from_slice(&datatype.to_le_bytes());
    b[72..74].copy_from_slice(&bitpix.to_le_bytes());
    let norm = |c: usize| (0..3).map(|r| srow[r][c].powi(2)).sum::<f32>().sqrt();
    for (k, p) in [1.0, norm(0), norm(1), norm(2)].iter().enumerate() {
        b[76 + 4 * k..80 + 4 * k].copy_from_slice(&p.to_le_bytes());
    }
    b[108..112].copy_from_slice(&352f32.to_le_bytes());
    b[254..256].copy_from_slice(&1i16.to_le_bytes()); // sform_code
    for (r, row) in srow.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            let at = 280 + 16 * r + 4 * c;
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
    }
    b[344..348].copy_from_slice(b"n+1\0");
    for &p in pixels {
        if float {
            b.extend_from_slice(&f32::from(p).to_le_bytes());
        } else {
            b.push(p);
        }
    }
    b
}

/// Pixel i steps 0.5 mm anterior, pixel j 0.8 mm inferior, origin RAS (10, −20, 30): in
/// LPS (−10, 20, 30) + i·(0, −0.5, 0) + j·(0, 0, −0.8), worked out by hand.
#[test]
fn a_2d_nifti_brings_its_geometry_in_lps() {
    let srow = [
        [0.0, 0.0, 2.0, 10.0],
        [0.5, 0.0, 0.0, -20.0],
        [0.0, -0.8, 0.0, 30.0],
    ];
    let pixels: Vec<u8> = (0..15).map(|i| (i * 17) as u8).collect();
    let bytes = nifti_2d(5, 3, srow, &pixels, false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frame.nii");
    std::fs::write(&path, &bytes).unwrap();
    let frames = read_us_frames(&path).unwrap();
    assert_eq!(frames.format, UsFrameFormat::Nifti);
    assert_eq!((frames.width, frames.height), (5, 3));
    assert_eq!(frames.frames, vec![pixels.clone()]);
    let m = frames.image_to_lps.unwrap();
    for (i, j) in [(0.0, 0.0), (4.0, 0.0), (0.0, 2.0), (3.0, 1.0)] {
        let lps: Vec<f64> = (0..3)
            .map(|r| m[r][0] * i + m[r][1] * j + m[r][3])
            .collect();
        let expected = [-10.0, 20.0 - 0.5 * i, 30.0 - 0.8 * j];
        for a in 0..3 {
            assert!(
                (lps[a] - expected[a]).abs() < 1e-5,
                "pixel ({i}, {j}): {lps:?}"
            );
        }
    }
    assert_eq!(m[3], [0.0, 0.0, 0.0, 1.0]);

    // Float pixels within 0–255 are read; one outside is refused.
    let floats = nifti_2d(5, 3, srow, &pixels, true);
    let read = decode_us_frames(&floats, Path::new("f.nii")).unwrap();
    assert_eq!(read.frames, vec![pixels]);
    let mut out_of_range = floats.clone();
    out_of_range[352..356].copy_from_slice(&300f32.to_le_bytes());
    let e = decode_us_frames(&out_of_range, Path::new("hot.nii")).unwrap_err();
    assert!(
        e.to_string().contains("hot.nii") && e.to_string().contains("0–255"),
        "{e}"
    );
}

/// Writes a DICOM with `tests/py/us_dicom.py`; returns pydicom's decoding when written.
fn us_dicom(
    path: &Path,
    photometric: &str,
    w: u32,
    h: u32,
    frames: u32,
    extra: &[&str],
) -> Option<Vec<u8>> {
    let (ws, hs, fs) = (w.to_string(), h.to_string(), frames.to_string());
    let mut args = vec!["frames", path.to_str().unwrap(), photometric, &ws, &hs, &fs];
    args.extend_from_slice(extra);
    let out = python_json("us_dicom.py", &args);
    out["raw"].as_str().map(|raw| std::fs::read(raw).unwrap())
}

/// A greyscale cine in JPEG-LS (CharLS, a fragment per frame): every frame as pydicom
/// decodes it, and as the script defines it (lossless).
#[test]
fn multi_frame_jpegls_dicom_us_matches_pydicom() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cine_jpegls.dcm");
    let (w, h, n) = (33usize, 21usize, 4usize);
    let extra = ["8", "0", "US", "jpegls"];
    let reference = us_dicom(&path, "MONOCHROME2", w as u32, h as u32, n as u32, &extra);
    let reference = reference.unwrap();
    let frames = read_us_frames(&path).unwrap();
    assert_eq!(
        (frames.width, frames.height, frames.frames.len()),
        (w, h, n)
    );
    for f in 0..n {
        let expected = &reference[f * w * h..(f + 1) * w * h];
        assert_eq!(frames.frames[f], expected, "frame {f}");
        assert_eq!(usize::from(expected[w + 2]), (5 * 2 + 17 + 31 * f) % 256);
    }
}

/// An RGB cine in JPEG-LS (three components, CharLS through pydicom's encoder): each
/// frame's luminance of pydicom's decoded RGB.
#[test]
fn multi_frame_rgb_jpegls_dicom_us_becomes_luminance_of_pydicoms_colours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgb_jpegls.dcm");
    let (w, h, n) = (19usize, 11usize, 3usize);
    let extra = ["8", "0", "US", "jpegls"];
    let reference = us_dicom(&path, "RGB", w as u32, h as u32, n as u32, &extra).unwrap();
    assert_eq!(reference.len(), n * h * w * 3);
    let frames = read_us_frames(&path).unwrap();
    assert_eq!(frames.frames.len(), n);
    for f in 0..n {
        for p in 0..w * h {
            let at = (f * w * h + p) * 3;
            let px = &reference[at..at + 3];
            assert_eq!(
                frames.frames[f][p],
                luma(px[0], px[1], px[2]),
                "frame {f} pixel {p}"
            );
        }
    }
}

#[test]
fn multi_frame_rgb_dicom_us_becomes_luminance_frame_by_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgb.dcm");
    let (w, h, n) = (7usize, 5usize, 3usize);
    let reference = us_dicom(&path, "RGB", w as u32, h as u32, n as u32, &[]).unwrap();
    assert_eq!(reference.len(), n * h * w * 3);
    let frames = read_us_frames(&path).unwrap();
    assert_eq!(frames.format, UsFrameFormat::Dicom);
    assert_eq!(
        (frames.width, frames.height, frames.frames.len()),
        (w, h, n)
    );
    assert!(frames.warnings.is_empty(), "{:?}", frames.warnings);
    for f in 0..n {
        for r in 0..h {
            for c in 0..w {
                let at = ((f * h + r) * w + c) * 3;
                let px = &reference[at..at + 3];
                // pydicom's decoding is the values the script documents.
                let defined = [
                    ((3 * c + 11 * r + 40 * f) % 256) as u8,
                    ((7 * c + 5 * r + 13 * f) % 256) as u8,
                    ((c * r + 29 * f) % 256) as u8,
                ];
                assert_eq!(px, defined);
                assert_eq!(
                    frames.frames[f][r * w + c],
                    luma(px[0], px[1], px[2]),
                    "frame {f} pixel ({c}, {r})"
                );
            }
        }
    }
    // The ultrasound region's PhysicalDeltaX/Y (0.02, 0.03 cm).
    let s = frames.spacing_mm.unwrap();
    assert!(
        (s[0] - 0.2).abs() < 1e-12 && (s[1] - 0.3).abs() < 1e-12,
        "{s:?}"
    );
}

#[test]
fn multi_frame_monochrome_dicom_and_another_modality() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grey.dcm");
    let (w, h, n) = (6usize, 4usize, 4usize);
    let reference = us_dicom(
        &path,
        "MONOCHROME2",
        w as u32,
        h as u32,
        n as u32,
        &["8", "0", "OT"],
    )
    .unwrap();
    let frames = read_us_frames(&path).unwrap();
    assert_eq!(frames.frames.len(), n);
    for f in 0..n {
        assert_eq!(frames.frames[f], reference[f * w * h..(f + 1) * w * h]);
        assert_eq!(frames.frames[f][w + 2], ((5 * 2 + 17 + 31 * f) % 256) as u8);
    }
    assert!(
        frames.warnings.iter().any(|w| w.contains("Modality is OT")),
        "{:?}",
        frames.warnings
    );
}

#[test]
fn bad_dicom_frames_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A million frames claimed in a file of a few hundred bytes.
    let claims = dir.path().join("claims.dcm");
    us_dicom(&claims, "MONOCHROME2", 5, 4, 2, &["8", "1000000"]);
    let e = read_us_frames(&claims).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::SizeExceedsFile { .. }), "{e}");
    assert!(e.to_string().contains("claims.dcm"), "{e}");
    // Three frames claimed, two stored: the pixel data is short.
    let short = dir.path().join("short.dcm");
    us_dicom(&short, "RGB", 5, 4, 2, &["8", "3"]);
    let e = read_us_frames(&short).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::SizeExceedsFile { .. }), "{e}");
    // The file cut inside its pixel data.
    let whole = dir.path().join("whole.dcm");
    us_dicom(&whole, "RGB", 5, 4, 2, &[]);
    let bytes = std::fs::read(&whole).unwrap();
    for cut in [bytes.len() - 1, bytes.len() - 50, 200, 131] {
        let e = decode_us_frames(&bytes[..cut], Path::new("cut.dcm")).unwrap_err();
        assert!(e.to_string().contains("cut.dcm"), "cut at {cut}: {e}");
    }
    // 16-bit samples.
    let deep = dir.path().join("deep.dcm");
    us_dicom(&deep, "MONOCHROME2", 5, 4, 2, &["16"]);
    let e = read_us_frames(&deep).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::UnsupportedDatatype(_)), "{e}");
    assert!(e.to_string().contains("8-bit"), "{e}");
}

/// YBR_FULL_422 native (`Y Y Cb Cr` per pixel pair): the grey frame is the Y samples. The
/// fuzz seed (`fuzz/make_seeds.py`) holds bytes `(37 k) mod 256`, k the byte's index.
#[test]
fn ybr_full_422_frames_are_their_luma_samples() {
    let path = crate::common::repo_root().join("fuzz/corpus/us_frame/us_ybr422_2frames.dcm");
    let frames = read_us_frames(&path).unwrap();
    let (w, h) = (frames.width, frames.height);
    assert_eq!((w, h, frames.frames.len()), (6, 4, 2));
    for (f, frame) in frames.frames.iter().enumerate() {
        for p in 0..w * h {
            let k = f * w * h * 2 + (p / 2) * 4 + p % 2;
            assert_eq!(frame[p], ((37 * k) % 256) as u8, "frame {f} pixel {p}");
        }
    }
    // Every seed reads, each frame the size reported; the fuzz findings kept as seeds
    // (`fuzz-*`) are refused.
    for entry in std::fs::read_dir(path.parent().unwrap()).unwrap() {
        let seed = entry.unwrap().path();
        let name = seed.file_name().unwrap().to_string_lossy();
        if name.starts_with("fuzz-") {
            assert!(read_us_frames(&seed).is_err(), "{seed:?}");
            continue;
        }
        let read = read_us_frames(&seed).unwrap();
        assert!(
            read.frames
                .iter()
                .all(|f| f.len() == read.width * read.height),
            "{seed:?}"
        );
    }
}

/// One of pydicom's test files: `us_dicom.py pydicom-luma`'s answer and luminance bytes,
/// and our frames.
fn ours_and_pydicom_luma(
    dir: &Path,
    name: &str,
) -> (serde_json::Value, Vec<u8>, pinhole_io::us_frame::UsFrames) {
    let raw = dir.join(format!("{name}.raw"));
    let made = python_json(
        "us_dicom.py",
        &["pydicom-luma", name, raw.to_str().unwrap()],
    );
    let reference = std::fs::read(&raw).unwrap();
    let frames = read_us_frames(Path::new(made["path"].as_str().unwrap()))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (made, reference, frames)
}

/// pydicom's own colour test files: a PALETTE COLOR ultrasound image (16-bit palette
/// entries, cut to their high byte) and RLE-compressed RGB secondary captures (one and two
/// frames) read as the Rec. 601 luminance of pydicom's decoding, pixel for pixel.
#[test]
fn palette_and_rle_colour_frames_match_pydicom() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "examples_palette.dcm",
        "SC_rgb_rle.dcm",
        "SC_rgb_rle_2frame.dcm",
    ] {
        let (made, reference, frames) = ours_and_pydicom_luma(dir.path(), name);
        let (w, h) = (frames.width, frames.height);
        assert_eq!(
            (w as u64, h as u64, frames.frames.len() as u64),
            (
                made["columns"].as_u64().unwrap(),
                made["rows"].as_u64().unwrap(),
                made["frames"].as_u64().unwrap()
            ),
            "{name}"
        );
        let ours: Vec<u8> = frames.frames.concat();
        let differing = ours.iter().zip(&reference).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing, 0,
            "{name}: {differing} pixels differ from pydicom's"
        );
    }
}

/// Colour JPEG frames read as luminance within 2 levels of pydicom's (libjpeg and
/// jpeg-decoder differ in IDCT and chroma upsampling): the 30-frame YBR_FULL_422 cine,
/// and the RGB JPEG without a colour-transform marker whose components are RGB as
/// stored (through dicom-pixeldata's decoder, which converts from YCbCr regardless, its
/// luminance was off by up to 77 levels: the regression case).
#[test]
fn colour_jpeg_frames_are_within_two_levels_of_pydicom() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["examples_ybr_color.dcm", "SC_jpeg_no_color_transform.dcm"] {
        let (made, reference, frames) = ours_and_pydicom_luma(dir.path(), name);
        assert_eq!(
            frames.frames.len() as u64,
            made["frames"].as_u64().unwrap(),
            "{name}"
        );
        let ours: Vec<u8> = frames.frames.concat();
        assert_eq!(ours.len(), reference.len(), "{name}");
        let worst = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 2, "{name}: luminance off by up to {worst}");
    }
}
