//! DICOM series reader against pydicom (`tests/py/dicom_reference.py`) on the real CT
//! series in `../shared/data/dicom-ct-series` (TotalSegmentator test data, Apache-2.0)
//! and on pydicom's bundled test files.

use std::path::{Path, PathBuf};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use pinhole_io::dicom::{self, DicomOptions, DicomSeries};
use pinhole_io::{AnyVolume, ErrorKind};
use tempfile::TempDir;

use crate::common::*;

const CT_SERIES: &str = "dicom-ct-series";

fn ct_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(shared_data(CT_SERIES))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn read(dir: &Path) -> pinhole_io::Result<DicomSeries> {
    dicom::read_series(dir, &DicomOptions::default(), &mut |_, _| {})
}

fn copy_into(dir: &Path, files: &[PathBuf]) {
    for f in files {
        std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
    }
}

/// Copies `src` to `dst`, changing it with `edit`.
fn rewrite(src: &Path, dst: &Path, edit: impl FnOnce(&mut dicom_object::DefaultDicomObject)) {
    let mut obj = dicom_object::open_file(src).unwrap();
    edit(&mut obj);
    obj.write_to_file(dst).unwrap();
}

fn pydicom_test_file(name: &str) -> PathBuf {
    PathBuf::from(python("dicom_reference.py", &["testfile", name]).trim())
}

/// Reads `dir` with Pinhole and with pydicom; returns the maximum voxel difference
/// after asserting dims and geometry agree.
fn compare_with_pydicom(dir: &Path) -> (DicomSeries, f64) {
    let series = read(dir).unwrap_or_else(|e| panic!("{e}"));
    let raw = TempDir::new().unwrap();
    let raw_path = raw.path().join("voxels.npy");
    let reference = python_json(
        "dicom_reference.py",
        &["series", dir.to_str().unwrap(), raw_path.to_str().unwrap()],
    );
    let grid = series.volume.grid();
    let dims: Vec<usize> = reference["dims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(grid.dims().to_vec(), dims);
    assert_matrix_close(&grid.ijk_to_lps(), &reference["matrix"], 1e-4);
    let expected = read_voxels(&raw_path);
    let ours = series.volume.to_volume::<f64>();
    assert_eq!(ours.data().len(), expected.len());
    let worst = ours
        .data()
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    (series, worst)
}

#[test]
fn dicom_ct_series_matches_pydicom_exactly() {
    let (series, worst) = compare_with_pydicom(&shared_data(CT_SERIES));
    assert_eq!(worst, 0.0, "voxel values differ from pydicom");
    // Stored 12-bit unsigned with intercept -1024: fits int16.
    assert!(matches!(series.volume, AnyVolume::I16(_)));
    assert_eq!(series.info.slices, 20);
    assert_eq!(series.info.transfer_syntax, "1.2.840.10008.1.2.4.90");
    assert_eq!(series.volume.grid().orientation_code(), "LPS");
}

#[test]
fn dicom_slice_spacing_comes_from_positions_not_thickness() {
    let series = read(&shared_data(CT_SERIES)).unwrap();
    let spacing = series.volume.grid().spacing_mm();
    assert!((spacing[2] - 2.0).abs() < 1e-9, "{spacing:?}");
    assert!((spacing[0] - 0.9765625).abs() < 1e-9);
    assert_eq!(series.slice_thickness_mm, Some(3.0));
    assert!(
        series.warnings.iter().any(|w| w.contains("SliceThickness")),
        "{:?}",
        series.warnings
    );
}

#[test]
fn dicom_progress_reports_every_slice() {
    let mut calls = Vec::new();
    dicom::read_series(
        &shared_data(CT_SERIES),
        &DicomOptions::default(),
        &mut |done, total| calls.push((done, total)),
    )
    .unwrap();
    assert_eq!(calls.len(), 20);
    assert_eq!(calls.last(), Some(&(20, 20)));
}

#[test]
fn dicom_list_series_reads_headers() {
    let list = dicom::list_series(&shared_data(CT_SERIES)).unwrap();
    assert_eq!(list.len(), 1);
    let s = &list[0];
    assert_eq!((s.slices, s.rows, s.columns), (20, 512, 512));
    assert_eq!(s.modality, "CT");
    assert_eq!(s.files.len(), 20);
}

#[test]
fn dicom_missing_middle_slice_is_uneven_spacing() {
    let tmp = TempDir::new().unwrap();
    let mut files = ct_files();
    files.remove(10);
    copy_into(tmp.path(), &files);
    let err = read(tmp.path()).unwrap_err();
    assert_eq!(err.path, tmp.path());
    let message = err.to_string();
    assert!(matches!(err.kind, ErrorKind::Unsupported(_)), "{message}");
    assert!(message.contains("missing slice?"), "{message}");
    assert!(message.contains("4.000 mm"), "{message}");
}

#[test]
fn dicom_two_series_in_one_folder() {
    let tmp = TempDir::new().unwrap();
    let files = ct_files();
    copy_into(tmp.path(), &files[5..]);
    let other_uid = "1.2.826.0.1.3680043.8.498.1";
    for f in &files[..5] {
        rewrite(f, &tmp.path().join(f.file_name().unwrap()), |obj| {
            obj.put_str(tags::SERIES_INSTANCE_UID, VR::UI, other_uid);
        });
    }
    let list = dicom::list_series(tmp.path()).unwrap();
    assert_eq!(list.iter().map(|s| s.slices).collect::<Vec<_>>(), [15, 5]);
    assert_eq!(list[1].series_uid, other_uid);

    let default = read(tmp.path()).unwrap();
    assert_eq!(default.volume.grid().dims()[2], 15);
    assert_eq!(default.info.series_uid, list[0].series_uid);

    let options = DicomOptions {
        series_uid: Some(other_uid.into()),
    };
    let other = dicom::read_series(tmp.path(), &options, &mut |_, _| {}).unwrap();
    assert_eq!(other.volume.grid().dims()[2], 5);

    let unknown = DicomOptions {
        series_uid: Some("1.2.3".into()),
    };
    let err = dicom::read_series(tmp.path(), &unknown, &mut |_, _| {}).unwrap_err();
    assert_eq!(err.path, tmp.path());
    let message = err.to_string();
    assert!(
        message.contains("1.2.3") && message.contains(other_uid),
        "{message}"
    );
}

#[test]
fn dicom_empty_or_non_dicom_folder_is_a_clean_error() {
    let tmp = TempDir::new().unwrap();
    let err = read(tmp.path()).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::NotMedicalImage(_)), "{err}");
    assert_eq!(err.path, tmp.path());
    std::fs::write(tmp.path().join("notes.txt"), "not an image").unwrap();
    std::fs::write(tmp.path().join("empty.dcm"), b"").unwrap();
    std::fs::copy(&ct_files()[0], tmp.path().join(".hidden.dcm")).unwrap();
    let err = read(tmp.path()).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::NotMedicalImage(_)), "{err}");
    assert!(dicom::list_series(tmp.path()).is_err());
    let err = read(&tmp.path().join("does-not-exist")).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Io(_)), "{err}");
}

#[test]
fn dicom_truncated_and_empty_files_fail_without_panic() {
    let bytes = std::fs::read(&ct_files()[0]).unwrap();
    assert!(dicom::decode_file_bytes(&bytes).is_ok());
    assert!(
        dicom::decode_file_bytes(&bytes[128..]).is_ok(),
        "without preamble"
    );
    // (Cutting only the final sequence delimiter leaves the pixel data whole.)
    for cut in [
        0,
        4,
        100,
        132,
        140,
        300,
        1000,
        bytes.len() / 2,
        bytes.len() - 20,
    ] {
        assert!(
            dicom::decode_file_bytes(&bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    // In a series folder: the error names the truncated file.
    for cut in [300, bytes.len() / 2] {
        let tmp = TempDir::new().unwrap();
        let files = ct_files();
        copy_into(tmp.path(), &files[1..]);
        let broken = tmp.path().join(files[0].file_name().unwrap());
        std::fs::write(&broken, &bytes[..cut]).unwrap();
        let err = read(tmp.path()).unwrap_err();
        assert_eq!(err.path, broken, "cut at {cut}: {err}");
    }
    // A zero-length file is no DICOM file: skipped, the rest is read.
    let tmp = TempDir::new().unwrap();
    copy_into(tmp.path(), &ct_files());
    std::fs::write(tmp.path().join("zero.dcm"), b"").unwrap();
    assert_eq!(read(tmp.path()).unwrap().info.slices, 20);
}

#[test]
fn dicom_huge_claimed_length_is_refused_before_allocation() {
    // A text element claiming 4 GB in a small file must not be allocated.
    let mut bytes = std::fs::read(&ct_files()[0]).unwrap();
    // Patch the meta group's transfer syntax element length: (0002,0010) UI.
    let at = bytes
        .windows(6)
        .position(|w| w == [0x02, 0x00, 0x10, 0x00, b'U', b'I'])
        .unwrap();
    bytes[at + 6] = 0xFF;
    bytes[at + 7] = 0xFF;
    assert!(dicom::decode_file_bytes(&bytes).is_err());
    // An OB element claiming 0xFFFFFFF0 bytes in the data set.
    let mut bytes = std::fs::read(&ct_files()[0]).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == [0xE0, 0x7F, 0x10, 0x00])
        .unwrap();
    bytes[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let err = dicom::decode_file_bytes(&bytes).unwrap_err();
    assert!(err.contains("claims"), "{err}");
}

/// A transfer syntax this build cannot decode (JPIP Referenced: the pixels are
/// elsewhere), patched into a JPEG-LS file of the same UID length.
#[test]
fn dicom_unsupported_transfer_syntax_names_the_uid() {
    let tmp = TempDir::new().unwrap();
    let source = pydicom_test_file("JPEGLSNearLossless_08.dcm");
    let mut bytes = std::fs::read(&source).unwrap();
    let at = bytes
        .windows(22)
        .position(|w| w == b"1.2.840.10008.1.2.4.81")
        .unwrap();
    bytes[at..at + 22].copy_from_slice(b"1.2.840.10008.1.2.4.94");
    let file = tmp.path().join("jpip.dcm");
    std::fs::write(&file, &bytes).unwrap();
    let err = read(tmp.path()).unwrap_err();
    match &err.kind {
        ErrorKind::UnsupportedTransferSyntax { uid, name } => {
            assert_eq!(uid, "1.2.840.10008.1.2.4.94");
            assert!(name.contains("JPIP"), "{name}");
        }
        other => panic!("expected UnsupportedTransferSyntax, got {other}"),
    }
    assert_eq!(err.path, file);
    assert!(dicom::decode_file_bytes(&bytes)
        .unwrap_err()
        .contains("1.2.840.10008.1.2.4.94"));
}

/// Deflated Explicit VR Little Endian (PS3.5 A.5), written by pydicom from the shared CT
/// series: read voxel for voxel as pydicom reads it; a truncated deflate stream and
/// bytes that are not deflate are errors naming the file, never a panic.
#[test]
fn dicom_deflated_series_matches_pydicom() {
    let tmp = TempDir::new().unwrap();
    let deflated = tmp.path().join("deflated");
    let made = python_json(
        "dicom_reference.py",
        &[
            "deflate",
            shared_data(CT_SERIES).to_str().unwrap(),
            deflated.to_str().unwrap(),
        ],
    );
    assert_eq!(made["written"], 20);
    let (series, worst) = compare_with_pydicom(&deflated);
    assert_eq!(worst, 0.0, "voxel values differ from pydicom");
    assert_eq!(series.volume.grid().dims()[2], 20);

    let mut files: Vec<PathBuf> = std::fs::read_dir(&deflated)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let bytes = std::fs::read(&files[0]).unwrap();
    // The file meta group ends where the transfer syntax UID's group does; cut the
    // deflated data set in half, then replace it with bytes that are not deflate.
    let meta_end = bytes.len() - deflated_len(&bytes);
    for (what, broken) in [
        (
            "truncated",
            bytes[..meta_end + (bytes.len() - meta_end) / 2].to_vec(),
        ),
        (
            "not deflate",
            [&bytes[..meta_end], &[0xFF; 64][..]].concat(),
        ),
    ] {
        let err = dicom::decode_file_bytes(&broken).unwrap_err();
        assert!(!err.is_empty(), "{what}");
        let dir = tmp.path().join(what.replace(' ', "_"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("slice.dcm"), &broken).unwrap();
        let err = read(&dir).unwrap_err();
        assert_eq!(err.path, dir.join("slice.dcm"), "{what}: {err}");
    }
}

/// Bytes after the file meta group of a Part 10 file (preamble, DICM, group 0002 with
/// its group length first).
fn deflated_len(bytes: &[u8]) -> usize {
    // (0002,0000) UL 4 at 132: tag 4 + VR 2 + length 2 + value 4.
    let group_length = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
    bytes.len() - (144 + group_length)
}

/// Each pydicom file as a one-slice series, compared voxel for voxel.
#[test]
fn dicom_pydicom_test_files_match_exactly() {
    for name in [
        "MR_small_RLE.dcm",
        "MR_small.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_implicit.dcm",
        "CT_small.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_expb.dcm",
        "MR_small_padded.dcm",
        "JPEG2000.dcm",
        "693_J2KI.dcm",
        "examples_overlay.dcm",
        "image_dfl.dcm",
        "rtdose_1frame.dcm",
        "rtdose_rle_1frame.dcm",
        // Regression: 32-bit big-endian samples came out with their 16-bit halves
        // swapped (values off by up to 4.29e9) until `pixels::swap_16_bit_halves`.
        "rtdose_expb_1frame.dcm",
        // JPEG-LS (`dicom::jpegls`): near-lossless 8 and 16 bits, lossless signed 16.
        "JPEGLSNearLossless_08.dcm",
        "JPEGLSNearLossless_16.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
    ] {
        let tmp = TempDir::new().unwrap();
        copy_into(tmp.path(), &[pydicom_test_file(name)]);
        let (series, worst) = compare_with_pydicom(tmp.path());
        assert_eq!(worst, 0.0, "{name}: voxel values differ from pydicom");
        assert_eq!(series.volume.grid().dims()[2], 1, "{name}");
    }
}

/// JPEG-LS (`dicom::jpegls`, written from T.87) against CharLS (pyjpegls, the decoder
/// pydicom uses here): the shared CT series encoded lossless and near-lossless (NEAR 3,
/// 12-bit precision), and constructed images that reach the coder's corners (escape
/// codes, run segments of 2^15, one column / row, 2- and 4-bit precision, near-lossless
/// 8 / 12 bits) read with exactly pydicom's values and geometry.
#[test]
fn dicom_jpegls_matches_charls() {
    let tmp = TempDir::new().unwrap();
    let original = read(&shared_data(CT_SERIES))
        .unwrap()
        .volume
        .to_volume::<f64>();
    for (near, syntax) in [(0, "1.2.840.10008.1.2.4.80"), (3, "1.2.840.10008.1.2.4.81")] {
        let dst = tmp.path().join(format!("near{near}"));
        let made = python_json(
            "dicom_reference.py",
            &[
                "jpegls",
                shared_data(CT_SERIES).to_str().unwrap(),
                dst.to_str().unwrap(),
                &near.to_string(),
            ],
        );
        assert_eq!(made["written"], 20);
        let (series, worst) = compare_with_pydicom(&dst);
        assert_eq!(worst, 0.0, "NEAR {near}: voxel values differ from pydicom");
        assert_eq!(series.info.transfer_syntax, syntax);
        // Near-lossless: every voxel within NEAR of the source (RescaleSlope 1), and
        // the coder did use the allowance.
        let ours = series.volume.to_volume::<f64>();
        let error = ours
            .data()
            .iter()
            .zip(original.data())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert_eq!(error, f64::from(near), "NEAR {near}");
        assert_eq!(made["worst_error"], near);
    }
    let patterns = tmp.path().join("patterns");
    let made = python_json(
        "dicom_reference.py",
        &["jpegls_patterns", patterns.to_str().unwrap()],
    );
    let names = made["names"].as_array().unwrap();
    assert_eq!(names.len(), 8);
    for name in names {
        let (_, worst) = compare_with_pydicom(&patterns.join(name.as_str().unwrap()));
        assert_eq!(worst, 0.0, "{name}: voxel values differ from pydicom");
    }
}

/// A JPEG-LS codestream whose frame header disagrees with the DICOM header, or that is
/// cut short, is refused naming the file, never read as something else.
#[test]
fn dicom_jpegls_that_disagrees_with_its_header_is_refused() {
    let tmp = TempDir::new().unwrap();
    let source = pydicom_test_file("JPEGLSNearLossless_16.dcm");
    let bytes = std::fs::read(&source).unwrap();
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xF7]).unwrap();
    let mut wider = bytes.clone();
    wider[sof + 8] += 1; // the frame header's column count, low byte
    std::fs::write(tmp.path().join("wider.dcm"), &wider).unwrap();
    let err = read(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert_eq!(err.path, tmp.path().join("wider.dcm"));
    // Entropy-coded data replaced by zero bytes: the Golomb codes run past their limit.
    let sos = bytes.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    let mut zeroed = bytes.clone();
    let end = zeroed.len() - 16;
    zeroed[sos + 10..end].fill(0);
    let err = dicom::decode_file_bytes(&zeroed).unwrap_err();
    assert!(err.contains("JPEG-LS"), "{err}");
}

/// JPEG baseline is lossy and the IDCT is not standardised bit-exactly: libjpeg (used
/// by Pillow, pydicom's decoder here) and jpeg-decoder (dicom-rs) may round differently
/// by one grey level, so the comparison allows 2 levels.
#[test]
fn dicom_jpeg_baseline_matches_pydicom_within_idct_rounding() {
    let tmp = TempDir::new().unwrap();
    let file = tmp.path().join("mr_jpeg.dcm");
    python("dicom_reference.py", &["make_jpeg", file.to_str().unwrap()]);
    let (series, worst) = compare_with_pydicom(tmp.path());
    assert!(worst <= 2.0, "JPEG baseline differs by {worst}");
    assert_eq!(series.info.transfer_syntax, "1.2.840.10008.1.2.4.50");
}

#[test]
fn dicom_colour_and_multiframe_are_unsupported() {
    let tmp = TempDir::new().unwrap();
    copy_into(tmp.path(), &[pydicom_test_file("SC_rgb_rle.dcm")]);
    let err = read(tmp.path()).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unsupported(_)), "{err}");
    // A 3-frame X-ray cine: frames without a position each (`register --frame N`).
    let tmp = TempDir::new().unwrap();
    let cine = tmp.path().join("xa.dcm");
    python(
        "dicom_reference.py",
        &["xray", cine.to_str().unwrap(), "8", "6", "3"],
    );
    let err = read(tmp.path()).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::Unsupported(_)), "{err}");
    assert!(err.to_string().contains("3 frames"), "{err}");
}

/// RT Dose grids (PS3.3 C.8.8.3): the 15 frames of pydicom's `rtdose*.dcm` (native,
/// RLE, big endian) stacked by GridFrameOffsetVector and scaled by DoseGridScaling read
/// as pydicom's frames placed and scaled by the standard's rule; the warning names the
/// scaling and the units. The same grid with absolute z offsets reads the same.
#[test]
fn dicom_rt_dose_grids_match_pydicom() {
    for name in ["rtdose.dcm", "rtdose_rle.dcm", "rtdose_expb.dcm"] {
        let tmp = TempDir::new().unwrap();
        copy_into(tmp.path(), &[pydicom_test_file(name)]);
        let (series, worst) = compare_with_pydicom(tmp.path());
        assert_eq!(worst, 0.0, "{name}: voxel values differ from pydicom");
        assert_eq!(series.volume.grid().dims()[2], 15, "{name}");
        assert_eq!(series.volume.grid().spacing_mm()[2], 5.0, "{name}");
        let text = series.warnings.join("\n");
        assert!(
            text.contains("DoseGridScaling 0.000001") && text.contains("RELATIVE, not Gy"),
            "{name}: {text}"
        );
    }
    let tmp = TempDir::new().unwrap();
    let relative = read_dir_of(&pydicom_test_file("rtdose.dcm"), tmp.path(), "relative");
    let absolute = tmp.path().join("absolute");
    std::fs::create_dir_all(&absolute).unwrap();
    rewrite(
        &pydicom_test_file("rtdose.dcm"),
        &absolute.join("rtdose.dcm"),
        |obj| {
            let z: Vec<String> = (0..15)
                .map(|k| format!("{}", -761.87 + 5.0 * f64::from(k)))
                .collect();
            obj.put(dicom_core::DataElement::new(
                tags::GRID_FRAME_OFFSET_VECTOR,
                VR::DS,
                dicom_core::PrimitiveValue::Strs(z.into()),
            ));
        },
    );
    let absolute = read(&absolute).unwrap();
    assert!(absolute
        .volume
        .grid()
        .same_geometry(relative.volume.grid(), 1e-6));
    assert_eq!(
        absolute.volume.to_volume::<f64>().data(),
        relative.volume.to_volume::<f64>().data()
    );
}

/// `file` alone in `dir/name`, read.
fn read_dir_of(file: &Path, dir: &Path, name: &str) -> DicomSeries {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    copy_into(&folder, &[file.to_path_buf()]);
    read(&folder).unwrap()
}

#[test]
fn dicom_duplicate_positions_are_refused() {
    let tmp = TempDir::new().unwrap();
    let files = ct_files();
    copy_into(tmp.path(), &files[..4]);
    std::fs::copy(&files[2], tmp.path().join("copy-of-slice-2")).unwrap();
    let err = read(tmp.path()).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::MixedSeries(_)), "{err}");
    assert!(err.to_string().contains("duplicate"), "{err}");
}

/// A tilted series from `tests/py/tilt_reference.py make` (12 slices 48 x 40 whose
/// pixels hold round(2x - 3y + 5z + 100) - 1000 of their own LPS position).
fn tilted_series(dir: &Path, tilt_deg: &str, record: &str) -> PathBuf {
    let folder = dir.join(format!("tilt{tilt_deg}{record}"));
    python_json(
        "tilt_reference.py",
        &["make", folder.to_str().unwrap(), tilt_deg, record],
    );
    folder
}

fn field_hu(lps: [f64; 3]) -> f64 {
    (2.0 * lps[0] - 3.0 * lps[1] + 5.0 * lps[2] + 100.0).round() - 1000.0
}

#[test]
fn gantry_tilted_series_is_resampled_onto_an_orthogonal_grid() {
    let tmp = TempDir::new().unwrap();
    for (tilt, record) in [("20", "yes"), ("-15", "yes"), ("12.5", "none")] {
        let series = read(&tilted_series(tmp.path(), tilt, record)).unwrap();
        let tilt_deg: f64 = tilt.parse().unwrap();
        let grid = series.volume.grid();
        // Slices stay on their planes: 12 of them, 2.5 mm of table feed apart along S,
        // so 2.5 cos(tilt) apart along the tilted normal; in-plane spacing unchanged.
        assert_eq!(grid.dims()[2], 12, "{tilt}");
        let spacing = grid.spacing_mm();
        assert!(
            (spacing[2] - 2.5 * tilt_deg.to_radians().cos()).abs() < 1e-6,
            "{tilt}: {spacing:?}"
        );
        assert_eq!([spacing[0], spacing[1]], [0.8, 0.7]);
        // Rows grow by the largest shift (11 slices x 2.5 sin(tilt) mm / 0.7 mm), ceiled.
        let grown = (11.0 * 2.5 * tilt_deg.to_radians().sin().abs() / 0.7).ceil() as usize;
        assert_eq!(grid.dims()[..2], [48, 40 + grown], "{tilt}");
        let text = series.warnings.join("\n");
        assert!(
            text.contains(&format!("gantry tilt of {:.2} degrees", tilt_deg.abs())),
            "{tilt}: {text}"
        );
        // Every voxel a slice covers holds the field at its own position (±1 for the
        // rounding of the stored values and of the interpolated one); the others hold
        // the series' lowest value, as the warning says.
        let values = series.volume.to_volume::<f64>();
        let fill = values.data().iter().copied().fold(f64::INFINITY, f64::min);
        assert!(text.contains(&format!("set to {fill}")), "{text}");
        let (mut covered, mut filled) = (0, 0);
        let [ni, nj, nk] = grid.dims();
        for k in 0..nk {
            for j in 0..nj {
                for i in 0..ni {
                    let v = values.get([i, j, k]).unwrap();
                    let want = field_hu(grid.index_to_world([i as f64, j as f64, k as f64]));
                    if (v - want).abs() <= 1.0 {
                        covered += 1;
                    } else {
                        assert_eq!(
                            v, fill,
                            "{tilt}: voxel ({i}, {j}, {k}) holds {v}, the field {want}"
                        );
                        filled += 1;
                    }
                }
            }
        }
        // Each slice covers its 48 columns over 40 rows (39 where its shift is a fraction
        // of a pixel: the rows between its edges); the rest of the grown rows are filled.
        assert_eq!(covered + filled, ni * nj * nk);
        assert!(
            (48 * 39 * 12..=48 * 40 * 12).contains(&covered),
            "{tilt}: {covered}"
        );
    }
}

#[test]
fn gantry_tilted_series_matches_dcm2niix_tilt_correction() {
    let tmp = TempDir::new().unwrap();
    let folder = tilted_series(tmp.path(), "20", "yes");
    let ours = read(&folder).unwrap().volume;
    let converted = python_json(
        "tilt_reference.py",
        &[
            "dcm2niix",
            folder.to_str().unwrap(),
            tmp.path().join("d").to_str().unwrap(),
        ],
    );
    let tilt_corrected = converted["niftis"][0].as_str().unwrap();
    assert!(tilt_corrected.contains("_Tilt_"), "{converted}");
    let theirs = pinhole_io::nifti::read(Path::new(tilt_corrected)).unwrap();
    // The same box: dcm2niix also keeps every slice whole on a grown grid.
    assert_eq!(ours.grid().dims(), theirs.grid().dims());
    let (a, b) = (ours.grid().bounds_lps(), theirs.grid().bounds_lps());
    for axis in 0..3 {
        assert!(
            (a.0[axis] - b.0[axis]).abs() < 1e-3 && (a.1[axis] - b.1[axis]).abs() < 1e-3,
            "{a:?} {b:?}"
        );
    }
    // Voxel for voxel at the same world positions, where both hold data.
    let (ours_v, theirs_v) = (ours.to_volume::<f64>(), theirs.to_volume::<f64>());
    let fill = ours_v.data().iter().copied().fold(f64::INFINITY, f64::min);
    let [ni, nj, nk] = ours.grid().dims();
    let mut compared = 0;
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let mine = ours_v.get([i, j, k]).unwrap();
                let world = ours.grid().index_to_world([i as f64, j as f64, k as f64]);
                let at = theirs
                    .grid()
                    .world_to_index(world)
                    .map(|x| x.round() as usize);
                let other = theirs_v.get(at).unwrap();
                if mine == fill || other <= fill {
                    continue;
                }
                assert!(
                    (mine - other).abs() <= 1.0,
                    "({i}, {j}, {k}): ours {mine}, dcm2niix {other}"
                );
                compared += 1;
            }
        }
    }
    assert!(
        compared > 48 * 40 * 12 * 9 / 10,
        "compared only {compared} voxels"
    );
}

#[test]
fn dicom_tilt_only_in_the_header_or_random_displacements_are_refused() {
    let files = ct_files();
    // Positions displaced sideways at random, not growing along the stack.
    let tmp = TempDir::new().unwrap();
    for (k, f) in files[..4].iter().enumerate() {
        rewrite(f, &tmp.path().join(format!("s{k}")), |obj| {
            let ipp = obj
                .element(tags::IMAGE_POSITION_PATIENT)
                .unwrap()
                .to_multi_float64()
                .unwrap();
            let sideways = [0.0, 3.0, -1.0, 2.0][k];
            let shifted = format!("{}\\{}\\{}", ipp[0], ipp[1] + sideways, ipp[2]);
            obj.put_str(tags::IMAGE_POSITION_PATIENT, VR::DS, shifted);
        });
    }
    let err = read(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("neither stacked"), "{err}");
    // A GantryDetectorTilt that the positions and orientation do not show.
    let tmp = TempDir::new().unwrap();
    copy_into(tmp.path(), &files[1..4]);
    rewrite(&files[0], &tmp.path().join("tilted"), |obj| {
        obj.put_str(tags::GANTRY_DETECTOR_TILT, VR::DS, "12");
    });
    let err = read(tmp.path()).unwrap_err();
    assert!(
        err.to_string().contains("GantryDetectorTilt of 12"),
        "{err}"
    );
}

#[test]
fn real_series_sheared_as_a_tilt_reads_with_its_slices_unchanged_where_the_shift_is_whole() {
    // The shared series with each slice displaced along j by a whole number of pixels per
    // slice (0.9765625 mm x 2 per 2 mm of feed, 44.3 degrees): each output slice is its
    // source slice moved by whole pixels, so no value is interpolated.
    let files = ct_files();
    let position = |f: &PathBuf| {
        dicom_object::open_file(f)
            .unwrap()
            .element(tags::IMAGE_POSITION_PATIENT)
            .unwrap()
            .to_multi_float64()
            .unwrap()
    };
    let lowest_z = files[..4]
        .iter()
        .map(|f| position(f)[2])
        .fold(f64::INFINITY, f64::min);
    let tmp = TempDir::new().unwrap();
    for (k, f) in files[..4].iter().enumerate() {
        rewrite(f, &tmp.path().join(format!("s{k}")), |obj| {
            let ipp = position(f);
            // 2 pixels (0.9765625 mm each) per 2 mm of feed above the lowest slice.
            let shifted = format!(
                "{}\\{}\\{}",
                ipp[0],
                ipp[1] + 0.9765625 * (ipp[2] - lowest_z),
                ipp[2]
            );
            obj.put_str(tags::IMAGE_POSITION_PATIENT, VR::DS, shifted);
        });
    }
    let sheared = read(tmp.path()).unwrap();
    let plain = {
        let only = TempDir::new().unwrap();
        copy_into(only.path(), &files[..4]);
        read(only.path()).unwrap()
    };
    let (s, p) = (
        sheared.volume.to_volume::<f64>(),
        plain.volume.to_volume::<f64>(),
    );
    assert_eq!(sheared.volume.grid().dims(), [512, 512 + 6, 4]);
    let text = sheared.warnings.join("\n");
    assert!(text.contains("gantry tilt of 44.3"), "{text}");
    // Sorted slices run along +z; the positions' first slice is the lowest.
    for k in 0..4 {
        for j in (0..512).step_by(7) {
            for i in (0..512).step_by(5) {
                assert_eq!(
                    s.get([i, j + 2 * k, k]),
                    p.get([i, j, k]),
                    "({i}, {j}, {k})"
                );
            }
        }
    }
}

#[test]
fn dicom_mixed_sizes_are_refused() {
    let tmp = TempDir::new().unwrap();
    let files = ct_files();
    copy_into(tmp.path(), &files[..3]);
    copy_into(tmp.path(), &[pydicom_test_file("CT_small.dcm")]);
    // CT_small has another series UID: rewrite it into ours.
    let uid = dicom::list_series(tmp.path()).unwrap()[0]
        .series_uid
        .clone();
    let small = tmp.path().join("CT_small.dcm");
    rewrite(&small.clone(), &small, |obj| {
        obj.put_str(tags::SERIES_INSTANCE_UID, VR::UI, uid);
    });
    let err = read(tmp.path()).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::MixedSeries(_)), "{err}");
}

#[test]
fn dicom_is_dicom_file_checks_the_magic() {
    assert!(dicom::is_dicom_file(&ct_files()[0]));
    let tmp = TempDir::new().unwrap();
    let p = tmp.path().join("x");
    std::fs::write(&p, b"hello").unwrap();
    assert!(!dicom::is_dicom_file(&p));
    assert!(!dicom::is_dicom_file(&tmp.path().join("missing")));
}

/// A cheap stand-in for the `dicom_file` fuzz target that runs with the tests: random
/// byte changes and truncations of real files (J2K, RLE, native, implicit VR, big
/// endian) must give pixels or an error, never a panic.
#[test]
fn dicom_mutated_files_never_panic() {
    let mut seeds = vec![std::fs::read(&ct_files()[0]).unwrap()];
    for name in [
        "MR_small_RLE.dcm",
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
    ] {
        seeds.push(std::fs::read(pydicom_test_file(name)).unwrap());
    }
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in &seeds {
        for _ in 0..150 {
            let mut bytes = seed.clone();
            for _ in 0..1 + next() % 6 {
                // Mostly the header, where lengths and tags live.
                let span = if next() % 4 == 0 {
                    bytes.len()
                } else {
                    bytes.len().min(1500)
                };
                let at = (next() as usize) % span;
                bytes[at] = match next() % 3 {
                    0 => 0xFF,
                    1 => 0x00,
                    _ => next() as u8,
                };
            }
            if next() % 4 == 0 {
                let keep = (next() as usize) % bytes.len();
                bytes.truncate(keep);
            }
            let _ = dicom::decode_file_bytes(&bytes);
        }
    }
}

/// Regression: dicom-rs 0.10.1's RLE decoder indexes past its buffers on a bad segment
/// table (found by `dicom_mutated_files_never_panic`); RLE is decoded by our own code.
#[test]
fn dicom_bad_rle_segment_table_is_an_error() {
    let bytes = std::fs::read(pydicom_test_file("MR_small_RLE.dcm")).unwrap();
    // The RLE header follows the first fragment's item tag; 2 segments for 16 bits.
    let item = [0xFE, 0xFF, 0x00, 0xE0];
    let first = bytes.windows(4).position(|w| w == item).unwrap();
    let second = first
        + 8
        + bytes[first + 4..first + 8]
            .iter()
            .rev()
            .fold(0usize, |a, b| a * 256 + *b as usize);
    let header = second + 8;
    assert_eq!(bytes[header..header + 4], [2, 0, 0, 0]);
    for (offset, value) in [
        (0, 1000u32),
        (0, 1),
        (8, 0xFFFF_FFF0),
        (8, 64),
        (4, 0xFFFF_FFF0),
    ] {
        let mut bad = bytes.clone();
        bad[header + offset..header + offset + 4].copy_from_slice(&value.to_le_bytes());
        assert!(
            dicom::decode_file_bytes(&bad).is_err(),
            "offset {offset} = {value}"
        );
    }
}

/// Regression: a fuzzed JPEG 2000 slice made the pure-Rust `openjp2` port abort while
/// freeing its tile (undefined behaviour, not a catchable panic). The reader now uses the
/// C OpenJPEG library (`openjpeg-sys`); this input must give an error or an image.
#[test]
fn dicom_regression_fuzzed_jpeg2000_does_not_abort() {
    let bytes = std::fs::read(
        crate::common::repo_root().join("crates/io/tests/fixtures/fuzz-openjp2-dealloc-crash.dcm"),
    )
    .unwrap();
    let _ = pinhole_io::dicom::decode_file_bytes(&bytes);
}

/// Regression: a fuzzed JPEG 2000 slice whose codestream holds more samples than the
/// DICOM frame made dicom-rs's JPEG 2000 adapter index out of bounds; it is an error now.
#[test]
fn dicom_regression_oversized_jpeg2000_codestream_is_an_error() {
    let bytes = std::fs::read(
        crate::common::repo_root().join("crates/io/tests/fixtures/fuzz-jpeg2k-adapter-overrun.dcm"),
    )
    .unwrap();
    assert!(pinhole_io::dicom::decode_file_bytes(&bytes).is_err());
}

/// Regression: with deflate support, the file meta group of a deflated-looking file was
/// read by dicom-object's meta reader before any length check, and a fuzzed element
/// length made it allocate gigabytes (fuzz targets `dicom_file`, `us_frame`). Our own
/// walk now refuses the length first. The memory bound itself is checked in a child
/// process by `robustness::dicom_regression_fuzzed_ob_value_does_not_allocate_a_gigabyte`
/// and by both files being seeds of those fuzz targets (2 GiB RSS limit in CI).
#[test]
fn dicom_regression_meta_group_lengths_are_checked_before_inflating() {
    for name in [
        "fuzz-deflate-meta-oom.dcm",
        "fuzz-us-frame-deflate-meta-oom.dcm",
    ] {
        let bytes = std::fs::read(
            crate::common::repo_root()
                .join("crates/io/tests/fixtures")
                .join(name),
        )
        .unwrap();
        let err = pinhole_io::dicom::decode_file_bytes(&bytes).unwrap_err();
        assert!(err.contains("claims"), "{name}: {err}");
        let err = pinhole_io::us_frame::decode_us_frames(&bytes, std::path::Path::new(name))
            .unwrap_err()
            .to_string();
        assert!(!err.is_empty(), "{name}");
    }
}
