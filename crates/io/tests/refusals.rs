//! Wrong input is refused with a reason, not turned into a wrong answer (issue #25):
//! degenerate or non-finite geometry and scaling (NIfTI, DICOM, NRRD), NRRD detached
//! data outside the header's folder or not a regular file, deeply nested DICOM
//! sequences. Hostile files are made by mutating copies of the shared data's headers in
//! a temporary folder, or built here.

use std::path::{Path, PathBuf};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use pinhole_io::dicom::{self, DicomOptions};
use pinhole_io::{nifti, nrrd, ErrorKind};
use tempfile::TempDir;

use crate::common::*;

// ---------------------------------------------------------------- DICOM nesting

/// An explicit VR little endian DICOM file whose data set holds `depth` sequences of
/// undefined length nested inside each other (each with one item of undefined length),
/// then Rows and Columns.
fn deeply_nested_dicom(depth: usize) -> Vec<u8> {
    fn element(out: &mut Vec<u8>, group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) {
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
    }
    let mut meta = Vec::new();
    // (0002,0001) OB: long form.
    meta.extend_from_slice(&[0x02, 0x00, 0x01, 0x00, b'O', b'B', 0, 0]);
    meta.extend_from_slice(&2u32.to_le_bytes());
    meta.extend_from_slice(&[0, 1]);
    element(
        &mut meta,
        0x0002,
        0x0002,
        b"UI",
        b"1.2.840.10008.5.1.4.1.1.2\0",
    );
    element(&mut meta, 0x0002, 0x0003, b"UI", b"1.2.3.4\0");
    element(&mut meta, 0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0");
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    element(
        &mut out,
        0x0002,
        0x0000,
        b"UL",
        &(meta.len() as u32).to_le_bytes(),
    );
    out.extend_from_slice(&meta);
    for _ in 0..depth {
        // (0008,1115) SQ, undefined length; an item of undefined length.
        out.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0]);
        out.extend_from_slice(&u32::MAX.to_le_bytes());
        out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        out.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    for _ in 0..depth {
        out.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        out.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    }
    element(&mut out, 0x0028, 0x0010, b"US", &4u16.to_le_bytes());
    element(&mut out, 0x0028, 0x0011, b"US", &4u16.to_le_bytes());
    out
}

#[test]
fn dicom_ten_thousand_nested_sequences_are_refused_without_overflow() {
    let tmp = TempDir::new().unwrap();
    let bytes = deeply_nested_dicom(10_000);
    std::fs::write(tmp.path().join("deep.dcm"), &bytes).unwrap();
    let started = std::time::Instant::now();
    let err = dicom::read_series(tmp.path(), &DicomOptions::default(), &mut |_, _| {})
        .expect_err("10,000 nested sequences must be refused");
    assert!(err.to_string().contains("nested"), "{err}");
    assert!(err.to_string().contains("deep.dcm"), "{err}");
    let err = dicom::decode_file_bytes(&bytes).unwrap_err();
    assert!(err.contains("nested"), "{err}");
    assert!(started.elapsed().as_secs() < 10);
}

#[test]
fn dicom_moderate_nesting_is_not_refused_for_depth() {
    // Ten levels pass the depth check (the file then fails for lack of pixels).
    let err = dicom::decode_file_bytes(&deeply_nested_dicom(10)).unwrap_err();
    assert!(!err.contains("nested"), "{err}");
}

// ---------------------------------------------------------------- NIfTI

/// The uncompressed bytes of a real NIfTI-1 file (the 30-slice abdomen CT crop).
fn real_nifti_bytes() -> Vec<u8> {
    use std::io::Read;
    let packed = std::fs::read(shared_data("abdomen-ct/example_ct_sm.nii.gz")).unwrap();
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&packed[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn put_f32(bytes: &mut [u8], at: usize, v: f32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_i16(bytes: &mut [u8], at: usize, v: i16) {
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// The real header switched to a qform-only geometry with quaternion (b, c, d).
fn qform_only(b: f32, c: f32, d: f32) -> Vec<u8> {
    let mut bytes = real_nifti_bytes();
    put_i16(&mut bytes, 252, 1); // qform_code
    put_i16(&mut bytes, 254, 0); // sform_code
    put_f32(&mut bytes, 256, b);
    put_f32(&mut bytes, 260, c);
    put_f32(&mut bytes, 264, d);
    bytes
}

fn read_nifti(dir: &Path, name: &str, bytes: &[u8]) -> pinhole_io::Result<pinhole_io::AnyVolume> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    nifti::read(&path)
}

#[test]
fn nifti_invalid_qform_quaternion_is_refused() {
    let tmp = TempDir::new().unwrap();
    // b² + c² + d² = 225: was read as a valid rotation scaled by 225 (675 mm voxels).
    let err = read_nifti(
        tmp.path(),
        "bad-quaternion.nii",
        &qform_only(10.0, 10.0, 5.0),
    )
    .expect_err("a quaternion with b²+c²+d² > 1 must be refused");
    assert!(matches!(err.kind, ErrorKind::InvalidHeader(_)), "{err}");
    assert!(err.to_string().contains("quaternion"), "{err}");
    assert!(err.to_string().contains("bad-quaternion.nii"), "{err}");
    // Just above 1 by float32 rounding is accepted (nibabel's threshold), as a = 0.
    let grid = read_nifti(
        tmp.path(),
        "rounding.nii",
        &qform_only(0.0, 0.0, 1.000_000_1),
    )
    .unwrap()
    .grid()
    .clone();
    assert!(
        grid.spacing_mm().iter().all(|s| (s - 3.0).abs() < 1e-5),
        "{:?}",
        grid.spacing_mm()
    );
    // A valid quaternion keeps working.
    let grid = read_nifti(tmp.path(), "identity.nii", &qform_only(0.0, 0.0, 0.0))
        .unwrap()
        .grid()
        .clone();
    assert_eq!(grid.spacing_mm(), [3.0, 3.0, 3.0]);
}

#[test]
fn nifti_unusable_pixdim_is_refused_where_it_sets_the_geometry() {
    let tmp = TempDir::new().unwrap();
    for (name, value) in [("zero", 0.0f32), ("negative", -2.0), ("nan", f32::NAN)] {
        let mut bytes = qform_only(0.0, 0.0, 0.0);
        put_f32(&mut bytes, 80 + 4, value); // pixdim[2]
        let err = read_nifti(tmp.path(), &format!("pixdim-{name}.nii"), &bytes)
            .expect_err("unusable pixdim must be refused");
        assert!(matches!(err.kind, ErrorKind::InvalidHeader(_)), "{err}");
        assert!(err.to_string().contains("pixdim"), "{name}: {err}");
    }
    // With an sform, pixdim does not set the geometry: an sform with a non-finite
    // entry is refused instead.
    let mut bytes = real_nifti_bytes();
    put_f32(&mut bytes, 280 + 4, f32::INFINITY); // srow_x[1]
    let err = read_nifti(tmp.path(), "sform-inf.nii", &bytes).unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
}

#[test]
fn nifti_unusable_scaling_is_refused() {
    let tmp = TempDir::new().unwrap();
    // A slope of 1e30 turns int16 HU into ±3e34: refused with the limit named.
    let mut bytes = real_nifti_bytes();
    put_f32(&mut bytes, 112, 1e30);
    put_f32(&mut bytes, 116, 0.0);
    let err = read_nifti(tmp.path(), "slope.nii", &bytes).unwrap_err();
    assert!(err.to_string().contains("scl_slope"), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("{:e}", pinhole_io::rescale::MAX_SLOPE)),
        "{err}"
    );
    // A usable slope with a NaN intercept was applied as if the intercept were absent.
    let mut bytes = real_nifti_bytes();
    put_f32(&mut bytes, 112, 1.0);
    put_f32(&mut bytes, 116, f32::NAN);
    let err = read_nifti(tmp.path(), "inter.nii", &bytes).unwrap_err();
    assert!(err.to_string().contains("scl_inter"), "{err}");
    // NaN slope means "no scaling" (nibabel writes it): unchanged values.
    let original = read_nifti(tmp.path(), "orig.nii", &real_nifti_bytes()).unwrap();
    let mut bytes = real_nifti_bytes();
    put_f32(&mut bytes, 112, f32::NAN);
    put_f32(&mut bytes, 116, f32::NAN);
    let unscaled = read_nifti(tmp.path(), "nan-slope.nii", &bytes).unwrap();
    assert_eq!(unscaled.min_max(), original.min_max());
}

// ---------------------------------------------------------------- DICOM geometry

fn ct_files(n: usize) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(shared_data("dicom-ct-series"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.truncate(n);
    files
}

/// Three real CT slices in a fresh folder, the first one edited by `edit`.
fn series_with_first_slice(
    edit: impl FnOnce(&mut dicom_object::DefaultDicomObject),
) -> (TempDir, PathBuf) {
    let tmp = TempDir::new().unwrap();
    let files = ct_files(3);
    for f in &files[1..] {
        std::fs::copy(f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    let edited = tmp.path().join(files[0].file_name().unwrap());
    let mut obj = dicom_object::open_file(&files[0]).unwrap();
    edit(&mut obj);
    obj.write_to_file(&edited).unwrap();
    (tmp, edited)
}

fn read_series(dir: &Path) -> pinhole_io::Result<dicom::DicomSeries> {
    dicom::read_series(dir, &DicomOptions::default(), &mut |_, _| {})
}

#[test]
fn dicom_unusable_geometry_and_rescale_are_refused() {
    let cases: [(&str, dicom_core::Tag, &str, &str); 9] = [
        // (what, tag, value, text the error must hold)
        (
            "nan pixel spacing",
            tags::PIXEL_SPACING,
            "nan\\nan",
            "PixelSpacing",
        ),
        (
            "zero pixel spacing",
            tags::PIXEL_SPACING,
            "0\\0.9",
            "PixelSpacing",
        ),
        ("huge slope", tags::RESCALE_SLOPE, "1e300", "RescaleSlope"),
        ("nan slope", tags::RESCALE_SLOPE, "nan", "RescaleSlope"),
        (
            "inf intercept",
            tags::RESCALE_INTERCEPT,
            "inf",
            "RescaleIntercept",
        ),
        (
            "nan position",
            tags::IMAGE_POSITION_PATIENT,
            "nan\\0\\0",
            "ImagePositionPatient",
        ),
        (
            "inf thickness",
            tags::SLICE_THICKNESS,
            "inf",
            "SliceThickness",
        ),
        (
            "nan orientation",
            tags::IMAGE_ORIENTATION_PATIENT,
            "1\\0\\0\\0\\nan\\0",
            "ImageOrientationPatient",
        ),
        (
            "cosines of length 2",
            tags::IMAGE_ORIENTATION_PATIENT,
            "2\\0\\0\\0\\2\\0",
            "ImageOrientationPatient",
        ),
    ];
    for (what, tag, value, expected) in cases {
        let (dir, _) = series_with_first_slice(|obj| {
            obj.put_str(tag, VR::DS, value);
        });
        let err = read_series(dir.path())
            .map(|s| format!("read with grid {:?}", s.volume.grid()))
            .expect_err(what);
        assert!(err.to_string().contains(expected), "{what}: {err}");
    }
}

#[test]
fn dicom_real_series_still_reads_with_its_geometry() {
    let tmp = TempDir::new().unwrap();
    for f in ct_files(3) {
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    let series = read_series(tmp.path()).unwrap();
    let spacing = series.volume.grid().spacing_mm();
    assert!((spacing[0] - 0.977).abs() < 1e-3, "{spacing:?}");
}

// ---------------------------------------------------------------- NRRD

#[test]
fn nrrd_degenerate_or_non_finite_geometry_is_refused() {
    let tmp = TempDir::new().unwrap();
    let cases: [(&str, &str); 4] = [
        ("spacings: nan 1 1\n", "spacing"),
        ("spacings: 1 0 1\n", "spacing"),
        (
            "space: left-posterior-superior\nspace directions: (1,0,0) (0,0,0) (0,0,1)\n",
            "spacing",
        ),
        (
            "space: left-posterior-superior\nspace directions: (1,0,0) (0,inf,0) (0,0,1)\n",
            "finite",
        ),
    ];
    for (n, (geometry, expected)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("g{n}.nrrd"));
        let mut bytes = format!(
            "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\n{geometry}encoding: raw\n\n"
        )
        .into_bytes();
        bytes.extend_from_slice(&[0u8; 8]);
        std::fs::write(&path, bytes).unwrap();
        let err = nrrd::read(&path).expect_err(geometry);
        assert!(err.to_string().contains(expected), "{geometry}: {err}");
    }
}

/// A 2×2×2 uint8 header in `dir` whose detached data file is `data_file`.
fn nhdr(dir: &Path, data_file: &str) -> PathBuf {
    let path = dir.join("image.nhdr");
    std::fs::write(
        &path,
        format!(
            "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n\
             data file: {data_file}\n\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn nrrd_detached_data_outside_the_folder_or_not_a_file_is_refused() {
    let tmp = TempDir::new().unwrap();
    let folder = tmp.path().join("images");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(tmp.path().join("outside.raw"), [7u8; 8]).unwrap();
    std::fs::write(folder.join("image.raw"), [1u8, 2, 3, 4, 5, 6, 7, 8]).unwrap();

    // `..` and an absolute path elsewhere (both were read).
    let outside = tmp.path().join("outside.raw");
    for name in ["../outside.raw", outside.to_str().unwrap()] {
        let header = nhdr(&folder, name);
        let err = nrrd::read(&header).expect_err(name);
        assert_eq!(err.path, header, "{err}");
        assert!(
            err.to_string().contains("outside the header's folder"),
            "{err}"
        );
    }
    // Devices (endless: reading /dev/zero never ended) and a symbolic link to one.
    for name in ["/dev/zero", "/dev/urandom"] {
        let err = nrrd::read(&nhdr(&folder, name)).expect_err(name);
        assert!(
            err.to_string().contains("outside the header's folder"),
            "{err}"
        );
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("/dev/zero", folder.join("zero.raw")).unwrap();
        let err = nrrd::read(&nhdr(&folder, "zero.raw")).expect_err("symlink");
        assert!(
            err.to_string().contains("outside the header's folder"),
            "{err}"
        );
    }
    // A folder, and a named pipe, inside the header's folder: not regular files.
    std::fs::create_dir(folder.join("sub")).unwrap();
    let err = nrrd::read(&nhdr(&folder, "sub")).expect_err("folder");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let fifo = folder.join("pipe.raw");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let err = nrrd::read(&nhdr(&folder, "pipe.raw")).expect_err("fifo");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
    // The normal case keeps working: a regular file next to the header (or below it).
    let volume = nrrd::read(&nhdr(&folder, "image.raw")).unwrap();
    assert_eq!(volume.min_max(), Some((1.0, 8.0)));
    std::fs::write(folder.join("sub").join("inner.raw"), [9u8; 8]).unwrap();
    let volume = nrrd::read(&nhdr(&folder, "sub/inner.raw")).unwrap();
    assert_eq!(volume.min_max(), Some((9.0, 9.0)));
}
