//! Secondary Capture writer (`pinhole_io::dicom::sc`) against pydicom
//! (`tests/py/sc_reference.py`) and DICOM's validator dciodvfy (dicom3tools), with the
//! patient and study of the real CT series in `../shared/data/dicom-ct-series`.

use std::path::Path;

use pinhole_io::dicom::sc::{
    write_secondary_capture, RgbPicture, ScOptions, ScWritten, NOT_FOR_CLINICAL_USE,
};
use pinhole_io::ErrorKind;
use pinhole_volume::annotate::Canvas;
use serde_json::Value;
use tempfile::TempDir;

use crate::common::*;
use crate::seg::{assert_dciodvfy_clean, ct_files};

const CT_SERIES: &str = "dicom-ct-series";
/// Odd width and height: 321 × 201 × 3 bytes of PixelData is odd, so it is padded.
const WIDTH: usize = 321;
const HEIGHT: usize = 201;

/// A colour gradient: red along x, green along y, blue a diagonal ramp kept off black.
fn picture(width: usize, height: usize) -> RgbPicture {
    let rgb = (0..height)
        .flat_map(|y| {
            (0..width).flat_map(move |x| {
                [
                    (x * 255 / (width - 1)) as u8,
                    (y * 255 / (height - 1)) as u8,
                    (64 + (x + 2 * y) % 192) as u8,
                ]
            })
        })
        .collect();
    RgbPicture::new(width, height, rgb)
}

fn write(picture: &RgbPicture, options: &ScOptions, out: &Path) -> pinhole_io::Result<ScWritten> {
    write_secondary_capture(&ct_files(), picture, options, out)
}

/// pydicom's header and decoded pixels (rows, columns, RGB) of `sc`.
fn read_back(sc: &Path, dir: &Path) -> (Value, Vec<u8>) {
    let decoded = dir.join("pixels.rgb");
    let ct_dir = shared_data(CT_SERIES);
    let header = python_json(
        "sc_reference.py",
        &[
            "check",
            sc.to_str().unwrap(),
            ct_dir.to_str().unwrap(),
            decoded.to_str().unwrap(),
        ],
    );
    (header, std::fs::read(decoded).unwrap())
}

fn assert_header(header: &Value) {
    assert_eq!(header["sop_class"], "1.2.840.10008.5.1.4.1.1.7");
    assert_eq!(header["modality"], "OT");
    assert_eq!(header["rows"], HEIGHT);
    assert_eq!(header["columns"], WIDTH);
    assert_eq!(header["samples_per_pixel"], 3);
    assert_eq!(header["photometric"], "RGB");
    assert_eq!(header["planar_configuration"], 0);
    assert_eq!(header["bits_allocated"], 8);
    assert_eq!(header["bits_stored"], 8);
    assert_eq!(header["conversion_type"], "WSD");
    assert_eq!(header["burned_in_annotation"], "YES");
    assert_eq!(
        header["image_type"],
        serde_json::json!(["DERIVED", "SECONDARY"])
    );
    assert!(header["series_description"]
        .as_str()
        .unwrap()
        .contains(NOT_FOR_CLINICAL_USE));
    assert_eq!(header["has_frame_of_reference"], false);
    assert_eq!(header["patient"], header["ct_patient"]);
    assert!(header["study_uid"].as_str().unwrap().starts_with("2.25."));
    assert_dciodvfy_clean(&header["dciodvfy"]);
}

#[test]
fn secondary_capture_matches_pydicom_with_the_banner_burned_in_and_validates() {
    let picture = picture(WIDTH, HEIGHT);
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("sc.dcm");
    let written = write(&picture, &ScOptions::default(), &out).unwrap();
    let banner = written.banner.unwrap();
    assert!(written
        .warnings
        .join("\n")
        .contains("viewers will not group the SC"));
    let (header, mut decoded) = read_back(&out, dir.path());
    assert_header(&header);
    assert_eq!(decoded.len(), picture.rgb.len(), "decoded bytes");

    // Below the band every pixel is the picture's; in it most differ (a black band).
    let band = banner.rows * WIDTH * 3;
    assert!(banner.rows > 0 && banner.rows < HEIGHT / 4, "{banner:?}");
    assert!(
        decoded[band..] == picture.rgb[band..],
        "pixels below the banner differ from the picture"
    );
    let differing = decoded[..band]
        .chunks_exact(3)
        .zip(picture.rgb[..band].chunks_exact(3))
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        differing > banner.rows * WIDTH * 9 / 10,
        "only {differing} banner pixels differ"
    );
    // The words, read off pydicom's pixels: every glyph pixel white, its outline black.
    let canvas = Canvas {
        rgb: &mut decoded,
        width: WIDTH,
        height: HEIGHT,
    };
    assert!(
        canvas.shows_text(
            banner.text_x,
            banner.text_y,
            NOT_FOR_CLINICAL_USE,
            banner.scale
        ),
        "\"{NOT_FOR_CLINICAL_USE}\" not readable at {banner:?}"
    );
    assert_eq!(banner.scale, 2, "{banner:?}");
}

#[test]
fn a_png_that_carries_the_notice_is_stored_as_it_is() {
    let picture = picture(WIDTH, HEIGHT);
    let dir = TempDir::new().unwrap();
    let png = dir.path().join("picture.png");
    pinhole_io::png::write_rgb8(&png, WIDTH as u32, HEIGHT as u32, &picture.rgb).unwrap();
    let from_png = RgbPicture::from_png(&png).unwrap();
    assert_eq!(from_png, picture);
    let options = ScOptions {
        banner_already_present: true,
        ..ScOptions::default()
    };
    let out = dir.path().join("sc.dcm");
    let written = write(&from_png, &options, &out).unwrap();
    assert_eq!(written.banner, None);
    let (header, decoded) = read_back(&out, dir.path());
    assert_header(&header);
    assert!(decoded == picture.rgb, "pixels differ from the picture");
}

#[test]
fn unusable_pictures_are_refused() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("sc.dcm");
    let mut short = picture(WIDTH, HEIGHT);
    short.rgb.pop();
    let cases = [
        (picture(100, HEIGHT), "pixels wide"),
        (picture(WIDTH, 20), "pixels high"),
        (short, "bytes, got"),
        (RgbPicture::new(0, 0, Vec::new()), "empty picture"),
    ];
    for (bad, expected) in cases {
        let error = write(&bad, &ScOptions::default(), &out).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error.kind, ErrorKind::InvalidInput(_)),
            "{message}"
        );
        assert!(message.contains(expected), "{expected:?} not in {message}");
        assert!(!out.exists());
    }
}
