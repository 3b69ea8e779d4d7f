//! Ultrasound calibration files: PLUS configurations and 4×4 text.

use pinhole_io::calibration::{
    parse_calibration, parse_plus_config, read_calibration, CalibrationSource,
    MAX_CALIBRATION_BYTES,
};

/// A PLUS device-set configuration as the PLUS user manual shows them: devices, then the
/// coordinate definitions with the calibration among other transforms.
const PLUS_CONFIG: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<PlusConfiguration version="2.1">
  <DataCollection StartupDelaySec="1.0">
    <DeviceSet Name="Test: tracked probe" Description="for Pinhole's reader" />
    <Device Id="VideoDevice" Type="SavedDataSource" SequenceFile="x.igs.mha">
      <DataSources>
        <DataSource Type="Video" Id="Video" PortUltrasoundImageOrientation="MF" />
      </DataSources>
    </Device>
  </DataCollection>
  <CoordinateDefinitions>
    <Transform From="StylusTip" To="Stylus"
      Matrix="1 0 0 210.0  0 1 0 0  0 0 1 0  0 0 0 1" />
    <Transform From="Image" To="Probe"
      Matrix="
        0.107535  0.00094824  0.0044213  -65.0944
        -0.00370072  -0.106722  -0.0104906  -15.4298
        -0.000358  0.0114953  -0.0905823  -4.03253
        0  0  0  1"
      Error="0.554951" Date="012617_105449" />
  </CoordinateDefinitions>
</PlusConfiguration>
"#;

#[test]
fn plus_configuration_image_to_probe() {
    let c = parse_calibration(PLUS_CONFIG.as_bytes()).unwrap();
    assert_eq!(
        c.image_to_probe[0],
        [0.107535, 0.00094824, 0.0044213, -65.0944]
    );
    assert_eq!(c.image_to_probe[2][2], -0.0905823);
    assert_eq!(c.image_to_probe[3], [0.0, 0.0, 0.0, 1.0]);
    assert_eq!(
        c.source,
        CalibrationSource::PlusConfig {
            from: "Image".into(),
            to: "Probe".into(),
            inverted: false,
            error_mm: Some(0.554951),
            date: Some("012617_105449".into()),
        }
    );
}

#[test]
fn a_stored_probe_to_image_is_inverted() {
    // ProbeToImage: x_img = 5·x_p − 15, so ImageToProbe: x_p = 0.2·x_img + 3.
    let text = r#"<PlusConfiguration><CoordinateDefinitions>
        <Transform From="Probe" To="Image" Matrix="5 0 0 -15 0 5 0 0 0 0 5 0 0 0 0 1"/>
        </CoordinateDefinitions></PlusConfiguration>"#;
    let c = parse_calibration(text.as_bytes()).unwrap();
    let m = c.image_to_probe;
    for (row, expected) in [
        [0.2, 0.0, 0.0, 3.0],
        [0.0, 0.2, 0.0, 0.0],
        [0.0, 0.0, 0.2, 0.0],
    ]
    .iter()
    .enumerate()
    {
        for (got, want) in m[row].iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "row {row}: {:?}", m[row]);
        }
    }
    assert!(matches!(
        c.source,
        CalibrationSource::PlusConfig { inverted: true, .. }
    ));
}

#[test]
fn other_frame_names_and_missing_calibrations() {
    let c = parse_plus_config(PLUS_CONFIG, "StylusTip", "Stylus").unwrap();
    assert_eq!(c.image_to_probe[0][3], 210.0);
    let err = parse_plus_config(PLUS_CONFIG, "Image", "Tracker").unwrap_err();
    assert!(
        err.contains("no ImageToTracker") && err.contains("StylusTipToStylus, ImageToProbe"),
        "{err}"
    );
    let err = parse_calibration(b"<PlusConfiguration/>").unwrap_err();
    assert!(err.contains("defines: nothing"), "{err}");
}

#[test]
fn broken_calibrations_are_refused_with_a_reason() {
    let cases: [(&[u8], &str); 6] = [
        (b"<PlusConfiguration><CoordinateDefinitions>", "not valid XML"),
        (
            br#"<a><CoordinateDefinitions><Transform From="Image" To="Probe"/></CoordinateDefinitions></a>"#,
            "no Matrix",
        ),
        (
            br#"<a><CoordinateDefinitions><Transform From="Image" To="Probe" Matrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 0"/></CoordinateDefinitions></a>"#,
            "bottom row",
        ),
        (
            br#"<a><CoordinateDefinitions><Transform From="Image" To="Probe" Matrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1" Error="x"/></CoordinateDefinitions></a>"#,
            "Error attribute",
        ),
        (b"1 0 0 0 0 1 0 0 0 0 0 0 0 0 0 1", "singular"),
        (&[0xff, 0xfe, 0x00], "not UTF-8"),
    ];
    for (bytes, expected) in cases {
        let err = parse_calibration(bytes).unwrap_err();
        assert!(err.contains(expected), "{err:?} should say {expected:?}");
    }
}

#[test]
fn files_are_read_and_oversized_ones_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("ImageToProbe.txt");
    std::fs::write(&text, "0.1 0 0 1\n0 0.1 0 2\n0 0 0.1 3\n0 0 0 1\n").unwrap();
    let c = read_calibration(&text).unwrap();
    assert_eq!(c.image_to_probe[1], [0.0, 0.1, 0.0, 2.0]);
    assert_eq!(c.source, CalibrationSource::Matrix);

    let big = dir.path().join("big.xml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(MAX_CALIBRATION_BYTES + 1).unwrap();
    let err = read_calibration(&big).unwrap_err().to_string();
    assert!(
        err.contains("big.xml") && err.contains("larger than"),
        "{err}"
    );
    let missing = read_calibration(&dir.path().join("none.xml")).unwrap_err();
    assert!(missing.to_string().contains("none.xml"));
}
