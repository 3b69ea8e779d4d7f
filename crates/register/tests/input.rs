//! X-ray readers: PNG 8/16-bit, 2-D NIfTI, single-file DICOM (written by pydicom).

use pinhole_register::input::read_xray;
use pinhole_volume::{Grid, Volume};

use crate::shared::python_json;

fn write_png(path: &std::path::Path, w: u32, h: u32, depth: png::BitDepth, bytes: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(depth);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(bytes).unwrap();
    writer.finish().unwrap();
}

#[test]
fn reads_8_and_16_bit_png_row_major_from_the_top() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (6u32, 3u32);
    let p8 = dir.path().join("x8.png");
    let v8: Vec<u8> = (0..w * h).map(|i| (i * 10) as u8).collect();
    write_png(&p8, w, h, png::BitDepth::Eight, &v8);
    let img = read_xray(&p8).unwrap();
    assert_eq!((img.width, img.height), (6, 3));
    assert_eq!(img.get(1, 0), 10.0);
    assert_eq!(img.get(0, 2), 120.0);

    let p16 = dir.path().join("x16.png");
    let v16: Vec<u16> = (0..w * h).map(|i| 1000 + i as u16 * 2000).collect();
    let bytes: Vec<u8> = v16.iter().flat_map(|v| v.to_be_bytes()).collect();
    write_png(&p16, w, h, png::BitDepth::Sixteen, &bytes);
    let img = read_xray(&p16).unwrap();
    assert_eq!(img.get(5, 2), f32::from(v16[17]));
    assert_eq!(img.get(2, 1), f32::from(v16[8]));
}

#[test]
fn reads_a_2d_nifti_with_i_as_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.nii.gz");
    let grid = Grid::axis_aligned([4, 3, 1], [1.0; 3], [0.0; 3]).unwrap();
    let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
    let v = Volume::new(grid, data).unwrap();
    pinhole_io::open::write_volume(&path, &pinhole_io::AnyVolume::F32(v)).unwrap();
    let img = read_xray(&path).unwrap();
    assert_eq!((img.width, img.height), (4, 3));
    assert_eq!(img.get(3, 0), 1.5);
    assert_eq!(img.get(0, 2), 4.0);
}

#[test]
fn reads_a_single_file_xa_dicom_as_pydicom_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xa.dcm");
    let reference = python_json(
        "register_reference.py",
        &["dicom", path.to_str().unwrap(), "9", "5"],
    );
    let img = read_xray(&path).unwrap();
    assert_eq!((img.width, img.height), (9, 5));
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

#[test]
fn rejects_a_3d_nifti_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vol.nii");
    let grid = Grid::axis_aligned([2, 2, 2], [1.0; 3], [0.0; 3]).unwrap();
    let v = Volume::filled(grid, 1.0f32);
    pinhole_io::open::write_volume(&path, &pinhole_io::AnyVolume::F32(v)).unwrap();
    let e = read_xray(&path).unwrap_err().to_string();
    assert!(e.contains("vol.nii") && e.contains("2-D"), "{e}");
}
