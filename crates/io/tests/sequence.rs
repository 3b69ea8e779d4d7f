//! Tracked ultrasound sequences (`pinhole_io::sequence`): round trip, SimpleITK reading
//! what Pinhole writes, Pinhole reading what an independent writer following the PLUS
//! format description writes (`tests/py/sequence_reference.py`), and refusals.

use std::path::Path;

use pinhole_io::sequence::{
    read_sequence, read_sequence_bytes, to_bytes, write_sequence, write_sequence_with, FramePixels,
    FrameTransform, PixelType, TrackedFrame, TrackedSequence, TransformStatus, WriteOptions,
};
use pinhole_io::ErrorKind;

use crate::common::*;

fn rigid(angle_deg: f64, t: [f64; 3]) -> [[f64; 4]; 4] {
    let (s, c) = angle_deg.to_radians().sin_cos();
    [
        [c, -s, 0.0, t[0]],
        [s, c, 0.0, t[1]],
        [0.0, 0.0, 1.0, t[2]],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// 7 × 5 frames, 4 of them: pixels with a known pattern, a probe pose per frame, a scaled
/// (non-orthonormal) calibration, a needle that is INVALID in frame 1 and absent (no
/// matrix) in frame 3.
fn sample(pixel_type: PixelType) -> TrackedSequence {
    let (width, height) = (7, 5);
    let frames = (0..4)
        .map(|f| {
            let pixels = match pixel_type {
                PixelType::U8 => FramePixels::U8(
                    (0..width * height)
                        .map(|i| ((i * 7 + f * 31) % 256) as u8)
                        .collect(),
                ),
                PixelType::U16 => FramePixels::U16(
                    (0..width * height)
                        .map(|i| ((i * 977 + f * 3001) % 65536) as u16)
                        .collect(),
                ),
            };
            let mut calibration = rigid(90.0, [-1.5, 2.0, 0.1]);
            for row in calibration.iter_mut().take(3) {
                for v in row.iter_mut().take(3) {
                    *v *= 0.2;
                }
            }
            let needle = match f {
                3 => FrameTransform {
                    name: "NeedleToTracker".into(),
                    matrix: None,
                    status: TransformStatus::Invalid,
                },
                _ => FrameTransform {
                    name: "NeedleToTracker".into(),
                    matrix: Some(rigid(-5.0, [0.1 * f as f64, 1.0 / 3.0, -7.0])),
                    status: if f == 1 {
                        TransformStatus::Invalid
                    } else {
                        TransformStatus::Ok
                    },
                },
            };
            TrackedFrame {
                pixels,
                timestamp_s: Some(1234.5678 + f as f64 / 30.0),
                transforms: vec![
                    FrameTransform {
                        name: "ProbeToTracker".into(),
                        matrix: Some(rigid(
                            10.0 * f as f64 + 3.0,
                            [12.5 + f as f64, -40.25, 101.0 / 3.0],
                        )),
                        status: TransformStatus::Ok,
                    },
                    FrameTransform {
                        name: "ImageToProbe".into(),
                        matrix: Some(calibration),
                        status: TransformStatus::Ok,
                    },
                    needle,
                ],
                fields: vec![
                    ("FrameNumber".into(), (100 + f).to_string()),
                    ("ImageStatus".into(), "OK".into()),
                ],
            }
        })
        .collect();
    TrackedSequence {
        width,
        height,
        pixel_type,
        spacing_mm: [0.2, 0.25],
        orientation: Some("MF".into()),
        frames,
        header_fields: vec![("UltrasoundImageType".into(), "BRIGHTNESS".into())],
        warnings: Vec::new(),
    }
}

#[test]
fn write_then_read_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    for pixel_type in [PixelType::U8, PixelType::U16] {
        for compress in [false, true] {
            let sequence = sample(pixel_type);
            let path = dir
                .path()
                .join(format!("{pixel_type:?}-{compress}.seq.mha"));
            write_sequence_with(&path, &sequence, &WriteOptions { compress }).unwrap();
            let back = read_sequence(&path).unwrap();
            assert_eq!(back, sequence, "{pixel_type:?} compressed={compress}");
            assert!(back.warnings.is_empty(), "{:?}", back.warnings);
            // The same through the in-memory reader.
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(read_sequence_bytes(&bytes).unwrap(), sequence);
        }
    }
    // Atomic: nothing but the four files, no temporary left.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4);
}

#[test]
fn simpleitk_reads_what_pinhole_writes() {
    let dir = tempfile::tempdir().unwrap();
    for (pixel_type, compress) in [(PixelType::U8, false), (PixelType::U16, true)] {
        let sequence = sample(pixel_type);
        let path = dir.path().join(format!("pinhole-{compress}.seq.mha"));
        write_sequence_with(&path, &sequence, &WriteOptions { compress }).unwrap();
        let sitk = python_json("sequence_reference.py", &["sitk", path.to_str().unwrap()]);
        assert_eq!(sitk["size"], serde_json::json!([7, 5, 4]));
        assert_eq!(sitk["spacing"], serde_json::json!([0.2, 0.25, 1.0]));
        let ours: Vec<u64> = sequence
            .frames
            .iter()
            .flat_map(|f| match &f.pixels {
                FramePixels::U8(v) => v.iter().map(|&x| u64::from(x)).collect::<Vec<_>>(),
                FramePixels::U16(v) => v.iter().map(|&x| u64::from(x)).collect(),
            })
            .collect();
        let theirs: Vec<u64> = sitk["pixels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(theirs, ours, "pixels as SimpleITK reads them");
        let meta = &sitk["metadata"];
        let field = |name: String| -> String {
            meta[&name]
                .as_str()
                .unwrap_or_else(|| panic!("SimpleITK has no metadata {name}"))
                .to_string()
        };
        assert_eq!(field("UltrasoundImageOrientation".into()), "MF");
        for (f, frame) in sequence.frames.iter().enumerate() {
            let t: f64 = field(format!("Seq_Frame{f:04}_Timestamp")).parse().unwrap();
            assert_eq!(Some(t), frame.timestamp_s);
            for transform in &frame.transforms {
                let name = &transform.name;
                let status = field(format!("Seq_Frame{f:04}_{name}TransformStatus"));
                let expected_status = match transform.status {
                    TransformStatus::Ok => "OK",
                    TransformStatus::Invalid => "INVALID",
                };
                assert_eq!(status, expected_status, "frame {f} {name}");
                let key = format!("Seq_Frame{f:04}_{name}Transform");
                match transform.matrix {
                    Some(m) => {
                        let values: Vec<f64> = field(key)
                            .split_whitespace()
                            .map(|s| s.parse().unwrap())
                            .collect();
                        let ours: Vec<f64> = m.iter().flatten().copied().collect();
                        assert_eq!(values, ours, "frame {f} {name}");
                    }
                    None => assert!(meta.get(&key).is_none(), "frame {f}: {key} written"),
                }
            }
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(1.0)
}

/// Compares a sequence Pinhole read with the JSON the independent writer printed.
fn assert_matches_reference(ours: &TrackedSequence, reference: &serde_json::Value, what: &str) {
    assert_eq!(
        ours.width as u64,
        reference["width"].as_u64().unwrap(),
        "{what}"
    );
    assert_eq!(
        ours.height as u64,
        reference["height"].as_u64().unwrap(),
        "{what}"
    );
    for a in 0..2 {
        assert!(
            close(
                ours.spacing_mm[a],
                reference["spacing"][a].as_f64().unwrap()
            ),
            "{what}: spacing {:?}",
            ours.spacing_mm
        );
    }
    assert_eq!(
        ours.orientation.as_deref(),
        reference["orientation"].as_str(),
        "{what}"
    );
    let frames = reference["frames"].as_array().unwrap();
    assert_eq!(ours.frames.len(), frames.len(), "{what}: frame count");
    for (f, (frame, expected)) in ours.frames.iter().zip(frames).enumerate() {
        let pixels: Vec<u64> = match &frame.pixels {
            FramePixels::U8(v) => v.iter().map(|&x| u64::from(x)).collect(),
            FramePixels::U16(v) => v.iter().map(|&x| u64::from(x)).collect(),
        };
        let expected_pixels: Vec<u64> = expected["pixels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(pixels, expected_pixels, "{what}: frame {f} pixels");
        let t = expected["timestamp"].as_f64().unwrap();
        assert!(
            close(frame.timestamp_s.unwrap(), t),
            "{what}: frame {f} timestamp {:?} vs {t}",
            frame.timestamp_s
        );
        let transforms = expected["transforms"].as_object().unwrap();
        for (name, value) in transforms {
            let ours = frame
                .transform(name)
                .unwrap_or_else(|| panic!("{what}: frame {f} has no {name}"));
            let status = match ours.status {
                TransformStatus::Ok => "OK",
                TransformStatus::Invalid => "INVALID",
            };
            assert_eq!(
                status,
                value["status"].as_str().unwrap(),
                "{what}: {f} {name}"
            );
            let m = ours.matrix.unwrap();
            let reference = json_matrix(&value["matrix"]);
            for r in 0..4 {
                for c in 0..4 {
                    assert!(
                        close(m[r][c], reference[r][c]),
                        "{what}: frame {f} {name}[{r}][{c}]: {} vs {}",
                        m[r][c],
                        reference[r][c]
                    );
                }
            }
        }
        // Names the frame does not carry are INVALID without a matrix.
        for t in &frame.transforms {
            if !transforms.contains_key(&t.name) {
                assert_eq!(t.status, TransformStatus::Invalid, "{what}: {f} {}", t.name);
                assert_eq!(t.matrix, None, "{what}: {f} {}", t.name);
            }
        }
    }
}

#[test]
fn pinhole_reads_sequences_of_an_independent_plus_format_writer() {
    let dir = tempfile::tempdir().unwrap();
    for (mode, name) in [
        ("mha", "a.seq.mha"),
        ("mha-zlib", "b.igs.mha"),
        ("mhd", "c.seq.mhd"),
        ("missing", "d.seq.mha"),
        ("ushort", "e.seq.mha"),
        ("igs-nrrd", "f.seq.nrrd"),
        ("slicer-nrrd", "g.seq.nrrd"),
    ] {
        let path = dir.path().join(name);
        let reference = python_json(
            "sequence_reference.py",
            &["write", path.to_str().unwrap(), mode],
        );
        let ours = read_sequence(&path).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_matches_reference(&ours, &reference, mode);
        match mode {
            "missing" => {
                let probe = ours.frames[2].transform("ProbeToTracker").unwrap();
                assert_eq!(probe.status, TransformStatus::Invalid);
                assert_eq!(probe.matrix, None);
                assert!(
                    ours.warnings
                        .iter()
                        .any(|w| w.contains("ProbeToTrackerTransform")
                            && w.contains("1 of 3 frames")
                            && w.contains("frame 2")),
                    "{:?}",
                    ours.warnings
                );
                // INVALID with its matrix: kept, not usable.
                let needle = ours.frames[1].transform("NeedleToTracker").unwrap();
                assert!(needle.matrix.is_some() && needle.valid_matrix().is_none());
            }
            "slicer-nrrd" => {
                assert!(
                    ours.warnings.iter().any(|w| w.contains("index values")),
                    "{:?}",
                    ours.warnings
                );
                assert!(ours.frames.iter().all(|f| f.transforms.is_empty()));
            }
            _ => assert!(ours.warnings.is_empty(), "{mode}: {:?}", ours.warnings),
        }
        if mode == "mha" {
            // Other per-frame fields are kept as text; the scaled calibration is no error.
            let frame = &ours.frames[1];
            assert_eq!(
                frame.fields,
                vec![
                    ("FrameNumber".to_string(), "101".to_string()),
                    ("ImageStatus".to_string(), "OK".to_string())
                ]
            );
            assert_eq!(
                ours.header_fields,
                vec![("UltrasoundImageType".to_string(), "BRIGHTNESS".to_string())]
            );
            // Pinhole's own writing of it reads back the same.
            let again = dir.path().join("again.seq.mha");
            write_sequence(&again, &ours).unwrap();
            assert_eq!(read_sequence(&again).unwrap(), ours);
        }
    }
}

/// A valid 2 × 2 × 2 header + data with `frame_fields` and `dim_size` replaced.
fn small_mha(dim_size: &str, element_type: &str, frame_fields: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nCompressedData = False\n\
         DimSize = {dim_size}\nElementType = {element_type}\n{frame_fields}\
         ElementDataFile = LOCAL\n"
    )
    .into_bytes();
    bytes.extend_from_slice(data);
    bytes
}

fn refusal(dir: &Path, name: &str, bytes: &[u8]) -> pinhole_io::Error {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let err = read_sequence(&path).expect_err(name);
    assert_eq!(err.path, path, "{name}: the error names the file");
    assert!(err.to_string().contains(name), "{err}");
    err
}

#[test]
fn truncated_extra_and_missing_data_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = to_bytes(&sample(PixelType::U8), &WriteOptions::default()).unwrap();
    for cut in [1, 35, 100] {
        let err = refusal(dir.path(), "cut.seq.mha", &good[..good.len() - cut]);
        assert!(
            matches!(err.kind, ErrorKind::SizeExceedsFile { claimed: 140, available } if available == 140 - cut as u64),
            "{err}"
        );
    }
    // One frame more in the data than DimSize says.
    let mut extra = good.clone();
    extra.extend_from_slice(&[0; 35]);
    let err = refusal(dir.path(), "extra.seq.mha", &extra);
    assert!(err.to_string().contains("frame count"), "{err}");
    // Compressed and cut: the zlib stream ends early.
    let zipped = to_bytes(&sample(PixelType::U8), &WriteOptions { compress: true }).unwrap();
    let err = refusal(dir.path(), "zcut.seq.mha", &zipped[..zipped.len() - 20]);
    assert!(
        matches!(
            err.kind,
            ErrorKind::Truncated(_) | ErrorKind::SizeExceedsFile { .. }
        ),
        "{err}"
    );
    // A header without ElementDataFile has no data.
    let err = refusal(
        dir.path(),
        "nodata.seq.mha",
        b"ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n",
    );
    assert!(matches!(err.kind, ErrorKind::Truncated(_)), "{err}");
    // Frame fields beyond DimSize's frame count.
    let err = refusal(
        dir.path(),
        "count.seq.mha",
        &small_mha(
            "2 2 2",
            "MET_UCHAR",
            "Seq_Frame0002_Timestamp = 1\n",
            &[0; 8],
        ),
    );
    assert!(err.to_string().contains("frame 2"), "{err}");
    // Wrong element type, colour frames.
    let err = refusal(
        dir.path(),
        "float.seq.mha",
        &small_mha("2 2 2", "MET_FLOAT", "", &[0; 32]),
    );
    assert!(
        matches!(err.kind, ErrorKind::UnsupportedDatatype(_)),
        "{err}"
    );
    // Not a MetaImage at all.
    let err = refusal(dir.path(), "junk.seq.mha", b"\x89PNG\r\n\x1a\n....");
    assert!(matches!(err.kind, ErrorKind::NotMedicalImage(_)), "{err}");
}

#[test]
fn bad_numbers_are_refused_and_scaled_rotations_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let identity12 = "1 0 0 0 0 1 0 0 0 0 1 0";
    for (name, field) in [
        (
            "nan",
            "Seq_Frame0000_ProbeToTrackerTransform = 1 0 0 nan 0 1 0 0 0 0 1 0\n",
        ),
        (
            "inf",
            "Seq_Frame0001_ProbeToTrackerTransform = 1 0 0 inf 0 1 0 0 0 0 1 0\n",
        ),
        (
            "eleven",
            "Seq_Frame0000_ProbeToTrackerTransform = 1 0 0 0 0 1 0 0 0 0 1\n",
        ),
        (
            "word",
            "Seq_Frame0000_ProbeToTrackerTransform = 1 0 0 x 0 1 0 0 0 0 1 0\n",
        ),
        ("time", "Seq_Frame0001_Timestamp = 1.5s\n"),
        ("timenan", "Seq_Frame0001_Timestamp = NaN\n"),
    ] {
        let file = format!("{name}.seq.mha");
        let err = refusal(
            dir.path(),
            &file,
            &small_mha("2 2 2", "MET_UCHAR", field, &[0; 8]),
        );
        assert!(matches!(err.kind, ErrorKind::InvalidHeader(_)), "{err}");
        assert!(err.to_string().contains("Seq_Frame000"), "{name}: {err}");
    }
    // A calibration that scales and shears is not a file error; 12 numbers imply 0 0 0 1.
    let path = dir.path().join("scaled.seq.mha");
    std::fs::write(
        &path,
        small_mha(
            "2 2 2",
            "MET_UCHAR",
            &format!(
                "Seq_Frame0000_ImageToProbeTransform = 0.2 0.05 0 1 0 0.3 0 2 0 0 7 3\n\
                 Seq_Frame0001_ImageToProbeTransform = {identity12}\n"
            ),
            &[1, 2, 3, 4, 5, 6, 7, 8],
        ),
    )
    .unwrap();
    let s = read_sequence(&path).unwrap();
    let m = s.frames[0]
        .transform("ImageToProbe")
        .unwrap()
        .valid_matrix()
        .copied();
    assert_eq!(
        m,
        Some([
            [0.2, 0.05, 0.0, 1.0],
            [0.0, 0.3, 0.0, 2.0],
            [0.0, 0.0, 7.0, 3.0],
            [0.0, 0.0, 0.0, 1.0]
        ])
    );
    assert_eq!(s.frames[1].pixels, FramePixels::U8(vec![5, 6, 7, 8]));
    // The writer refuses what it could not read back, and leaves no file.
    let mut bad = sample(PixelType::U8);
    bad.frames[2].transforms[0].matrix.as_mut().unwrap()[0][3] = f64::NAN;
    let out = dir.path().join("nan-out.seq.mha");
    let err = write_sequence(&out, &bad).unwrap_err();
    assert!(matches!(err.kind, ErrorKind::InvalidInput(_)), "{err}");
    assert!(!out.exists());
}

#[test]
fn detached_data_must_stay_in_the_headers_folder() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    std::fs::write(dir.path().join("outside.raw"), [0u8; 8]).unwrap();
    let header = "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n\
                  ElementDataFile = ../outside.raw\n";
    let path = inner.join("escape.seq.mhd");
    std::fs::write(&path, header).unwrap();
    let err = read_sequence(&path).unwrap_err();
    assert_eq!(err.path, path);
    assert!(
        err.to_string().contains("outside the header's folder"),
        "{err}"
    );
    // The same data beside the header is read.
    std::fs::write(inner.join("ok.raw"), [9u8; 8]).unwrap();
    let path = inner.join("ok.seq.mhd");
    std::fs::write(&path, header.replace("../outside.raw", "ok.raw")).unwrap();
    assert_eq!(read_sequence(&path).unwrap().frames.len(), 2);
    // In memory, a data file cannot be followed.
    assert!(matches!(
        read_sequence_bytes(header.as_bytes()),
        Err(ErrorKind::Unsupported(_))
    ));
}

/// A header claiming 10^12 bytes (10^6 × 10^6 pixels × 1 frame) in a file of a few hundred
/// bytes, raw and zlib: refused before allocating. Run in a child process of this test
/// binary so that the peak RSS measured is these reads' alone.
#[cfg(target_os = "linux")]
#[test]
fn absurd_dim_size_is_refused_without_allocating() {
    const NAME: &str = "sequence::absurd_dim_size_is_refused_without_allocating";
    const CHILD: &str = "PINHOLE_TEST_CHILD_SEQUENCE_DIMSIZE";
    if std::env::var_os(CHILD).is_some() {
        let dir = tempfile::tempdir().unwrap();
        let raw = small_mha("1000000 1000000 1", "MET_UCHAR", "", &[7; 300]);
        let err = refusal(dir.path(), "huge.seq.mha", &raw);
        assert!(
            matches!(
                err.kind,
                ErrorKind::SizeExceedsFile {
                    claimed: 1_000_000_000_000,
                    available: 300
                }
            ),
            "{err}"
        );
        let zipped = String::from_utf8(small_mha("1000000 1000000 1", "MET_UCHAR", "", &[]))
            .unwrap()
            .replace("CompressedData = False", "CompressedData = True");
        let mut bytes = zipped.into_bytes();
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut e, &[0u8; 100_000]).unwrap();
        bytes.extend_from_slice(&e.finish().unwrap());
        let err = refusal(dir.path(), "huge-z.seq.mha", &bytes);
        assert!(
            matches!(err.kind, ErrorKind::SizeExceedsFile { .. }),
            "{err}"
        );
        // Overflowing sizes and a 10^12-byte NRRD sequence.
        let err = refusal(
            dir.path(),
            "overflow.seq.mha",
            &small_mha("4294967296 4294967296 4", "MET_USHORT", "", &[0; 8]),
        );
        assert!(matches!(err.kind, ErrorKind::InvalidHeader(_)), "{err}");
        let nrrd = b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 1000000 1000000 1\n\
                     kinds: domain domain list\nencoding: raw\n\nabc";
        let err = refusal(dir.path(), "huge.seq.nrrd", nrrd);
        assert!(
            matches!(err.kind, ErrorKind::SizeExceedsFile { .. }),
            "{err}"
        );
        let peak_kb = peak_rss_kb();
        assert!(
            peak_kb < 256 * 1024,
            "refusing absurd sequence headers peaked at {} MB",
            peak_kb / 1024
        );
        return;
    }
    passes_in_child(NAME, CHILD);
}
