//! Registration files (ITK `.tfm`, 4×4 text) and replay pose CSV.

use std::path::Path;

use pinhole_io::pose_csv::{self, TimedPose};
use pinhole_io::transform::{parse_registration, read_registration};
use pinhole_io::ErrorKind;

fn assert_close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
}

#[test]
fn registration_from_tfm_and_text() {
    // Slicer's to-parent ReferenceToRAS = translation (10, 20, 30) RAS. ITK stores the
    // inverse in LPS: F·M⁻¹·F = translation (10, 20, −30); with a centre it is unchanged.
    let dir = tempfile::tempdir().unwrap();
    let tfm = dir.path().join("reg.tfm");
    std::fs::write(
        &tfm,
        "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 10 20 -30\nFixedParameters: 5 5 5\n",
    )
    .unwrap();
    let m = read_registration(&tfm).unwrap();
    for (r, expected) in [10.0, 20.0, 30.0].iter().enumerate() {
        assert_close(m[r][3], *expected, 1e-12, "translation");
    }
    // A 90° rotation about z (RAS x → y) stored by ITK as its inverse: F R⁻¹ F = R⁻¹.
    let rot = parse_registration(
        "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 0 1 0 -1 0 0 0 0 1 0 0 0\nFixedParameters: 0 0 0\n",
    )
    .unwrap();
    assert_close(rot[1][0], 1.0, 1e-12, "R maps x to y");
    assert_close(rot[0][1], -1.0, 1e-12, "R maps y to −x");
    // 4×4 text, row-major.
    let text = parse_registration("1 0 0 10\n0 1 0 20\n0 0 1 30\n0 0 0 1\n").unwrap();
    assert_eq!(text, m);
    assert!(parse_registration("1 2 3").is_err());
}

#[test]
fn itk_centre_and_rotation_follow_the_lps_resampling_convention() {
    // ITK (LPS, resampling direction): x ↦ A (x − c) + t + c with A = Rz(90°) in LPS,
    // c = (1, 2, 3), t = (4, 5, 6). ReferenceToRAS = F · T⁻¹ · F, checked on points:
    // a RAS point p maps to q with F q = T⁻¹ (F p), i.e. T (F q) = F p.
    let m = parse_registration(
        "#Insight Transform File V1.0\nTransform: MatrixOffsetTransformBase_double_3_3\nParameters: 0 -1 0 1 0 0 0 0 1 4 5 6\nFixedParameters: 1 2 3\n",
    )
    .unwrap();
    let t = |x: [f64; 3]| {
        let c = [1.0, 2.0, 3.0];
        let d = [x[0] - c[0], x[1] - c[1], x[2] - c[2]];
        let a = [-d[1], d[0], d[2]];
        [a[0] + 4.0 + c[0], a[1] + 5.0 + c[1], a[2] + 6.0 + c[2]]
    };
    let flip = |x: [f64; 3]| [-x[0], -x[1], x[2]];
    for p in [[0.0, 0.0, 0.0], [10.0, -3.0, 7.5], [-2.0, 8.0, -1.0]] {
        let q: Vec<f64> = (0..3)
            .map(|r| (0..3).map(|k| m[r][k] * p[k]).sum::<f64>() + m[r][3])
            .collect();
        let back = t(flip([q[0], q[1], q[2]]));
        for (a, b) in back.iter().zip(flip(p)) {
            assert_close(*a, b, 1e-12, "T (F q) = F p");
        }
    }
    assert_eq!(m[3], [0.0, 0.0, 0.0, 1.0]);
}

#[test]
fn bad_registrations_say_why() {
    let cases = [
        ("#Insight Transform File V1.0\n", "no 'Transform:' line"),
        (
            "#Insight Transform File V1.0\nTransform: BSplineTransform_double_3_3\n",
            "not supported",
        ),
        (
            "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nTransform: AffineTransform_double_3_3\n",
            "composite",
        ),
        (
            "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 0 0\n",
            "needs 12 parameters",
        ),
        (
            "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 0 0 0\nFixedParameters: 1 2\n",
            "FixedParameters must be 3 numbers",
        ),
        (
            "#Insight Transform File V1.0\nTransform: AffineTransform_double_3_3\nParameters: 0 0 0 0 1 0 0 0 1 0 0 0\n",
            "singular",
        ),
        ("1 0 0 0 0 1 0 0 0 0 1 0 1 0 0 1", "bottom row"),
        ("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 x", "not a number"),
        ("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 NaN", "non-finite"),
    ];
    for (text, expected) in cases {
        let e = parse_registration(text).unwrap_err();
        assert!(e.contains(expected), "{text:?}: {e}");
    }
    // 12 numbers: the bottom row is implied; commas and comments are allowed.
    let m = parse_registration("# top rows\n1,0,0,1\n0,1,0,2\n0,0,1,3 # z\n").unwrap();
    assert_eq!(m[3], [0.0, 0.0, 0.0, 1.0]);
    assert_eq!([m[0][3], m[1][3], m[2][3]], [1.0, 2.0, 3.0]);
}

#[test]
fn registration_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.tfm");
    std::fs::write(&path, "1 2 3").unwrap();
    let e = read_registration(&path).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::InvalidTransform(_)), "{e}");
    assert!(e.to_string().contains("bad.tfm"), "{e}");
    let missing = read_registration(Path::new("/nonexistent/reg.tfm")).unwrap_err();
    assert!(matches!(missing.kind, ErrorKind::Io(_)), "{missing}");
}

#[test]
fn pose_csv_both_forms() {
    // Same pose as 4×4 and as position + quaternion (identity rotation: axis +z).
    let text = "t,m00,m01,m02,m03,m10,m11,m12,m13,m20,m21,m22,m23,m30,m31,m32,m33\n0,1,0,0,1.5,0,1,0,-2,0,0,1,3,0,0,0,1\n";
    let a = pose_csv::parse(text).unwrap();
    let b = pose_csv::parse("# comment\n0.5,1.5,-2,3,0,0,0,1\n").unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].matrix, b[0].matrix);
    assert_eq!(b[0].t_s, 0.5);
    // 90° about z as a quaternion: (0, 0, sin 45°, cos 45°) → x axis to y.
    let q = pose_csv::parse("0,0,0,0,0,0,0.7071067811865476,0.7071067811865476\n").unwrap();
    assert_close(q[0].matrix[1][0], 1.0, 1e-12, "quaternion rotation");
    assert!(pose_csv::parse("1,2,3\n").is_err());
}

#[test]
fn pose_csv_writes_what_replay_wrote_and_reads_it_back() {
    let poses = [
        TimedPose {
            t_s: 0.0,
            matrix: [
                [1.0, 0.0, 0.0, -12.5],
                [0.0, -1.0, 0.0, 0.1],
                [0.0, 0.0, 1.0, 1e-7],
                [0.0, 0.0, 0.0, 1.0],
            ],
        },
        TimedPose {
            t_s: 0.05,
            matrix: [
                [0.0, -1.0, 0.0, 1.0 / 3.0],
                [1.0, 0.0, 0.0, -0.0],
                [0.0, 0.0, 1.0, 123456.75],
                [0.0, 0.0, 0.0, 1.0],
            ],
        },
    ];
    let text = pose_csv::to_text(&poses);
    assert_eq!(
        text,
        "# Not for clinical use. NeedleTipToReference poses, RAS mm\n\
         t,m00,m01,m02,m03,m10,m11,m12,m13,m20,m21,m22,m23,m30,m31,m32,m33\n\
         0,1,0,0,-12.5,0,-1,0,0.1,0,0,1,0.0000001,0,0,0,1\n\
         0.05,0,-1,0,0.3333333333333333,1,0,0,-0,0,0,1,123456.75,0,0,0,1\n"
    );
    assert_eq!(pose_csv::parse(&text).unwrap(), poses);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("poses.csv");
    pose_csv::write(&path, &poses).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(pose_csv::read(&path).unwrap(), poses);
    // Errors name the file and the line.
    std::fs::write(&path, "t,x\n0,1,2\n").unwrap();
    let e = pose_csv::read(&path).unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::InvalidLine { line: 2, .. }),
        "{e}"
    );
    assert!(
        e.to_string().contains("poses.csv: line 2: 3 columns"),
        "{e}"
    );
}

#[test]
fn a_written_registration_reads_back_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrected.txt");
    let m = [
        [
            0.996_194_698_091_745_5,
            -0.087_155_742_747_658_17,
            0.0,
            12.345_678_901_234,
        ],
        [0.087_155_742_747_658_17, 0.996_194_698_091_745_5, 0.0, -0.1],
        [0.0, 0.0, 1.0, 1e-17],
        [0.0, 0.0, 0.0, 1.0],
    ];
    pinhole_io::transform::write_registration(&path, &m, "ReferenceToRAS\nby a test").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("# ReferenceToRAS\n# by a test\n"),
        "{text}"
    );
    assert_eq!(pinhole_io::transform::read_registration(&path).unwrap(), m);
    let mut singular = m;
    singular[3] = [0.0, 0.0, 0.0, 0.0];
    let err = pinhole_io::transform::write_registration(&path, &singular, "").unwrap_err();
    assert!(err.to_string().contains("bottom row"), "{err}");
}

/// A scan-to-scan transform written for Slicer reads back as the to-parent matrix in RAS
/// (`F · M · F`), and its file holds the inverse in LPS, as ITK and elastix store it.
#[test]
fn itk_transform_between_scans_round_trips_with_the_inverse_in_the_file() {
    use pinhole_io::transform::{read_registration, write_itk_transform};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control_to_planning.tfm");
    // A quarter turn about z plus an asymmetric shift, LPS.
    let to_parent_lps = [
        [0.0, -1.0, 0.0, 10.0],
        [1.0, 0.0, 0.0, -4.0],
        [0.0, 0.0, 1.0, 25.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    write_itk_transform(&path, &to_parent_lps, "control CT -> planning CT").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("#Insight Transform File V1.0\n"));
    // Inverse: x = R⁻¹ (y − b): R⁻¹ = [[0,1,0],[-1,0,0],[0,0,1]], −R⁻¹ b = (4, 10, −25).
    assert!(
        text.contains("Parameters: 0 1 0 -1 0 0 0 0 1 4 10 -25\n"),
        "{text}"
    );
    let ras = read_registration(&path).unwrap();
    let flip = [-1.0, -1.0, 1.0, 1.0];
    for r in 0..4 {
        for c in 0..4 {
            let expected = flip[r] * to_parent_lps[r][c] * flip[c];
            assert!((ras[r][c] - expected).abs() < 1e-12, "{r},{c}: {ras:?}");
        }
    }
}
