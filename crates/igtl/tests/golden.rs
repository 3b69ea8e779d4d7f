//! The upstream OpenIGTLink test vectors: every one decodes, re-encodes to the same
//! bytes, and carries the values the upstream tests put in it.

use pinhole_igtl::{decode, encode, Body, DecodeOptions, Message, PositionForm, QueryKind};

use crate::common::{be_f32, be_u16, be_u32, be_u64, golden, golden_files};

fn decode_all(bytes: &[u8]) -> Message {
    let (message, used) = decode(bytes, &DecodeOptions::default()).unwrap();
    assert_eq!(used, bytes.len());
    message
}

/// The rotation and translation of upstream's igtl_transform_test.c (also used by
/// its TDATA, IMAGE and POSITION tests), in wire order.
const UPSTREAM_TRANSFORM: [f32; 12] = [
    -0.954892, 0.196632, -0.222525, -0.196632, 0.142857, 0.970014, 0.222525, 0.970014, -0.0977491,
    46.0531, 19.4709, 46.0531,
];

fn assert_f32s(ours: &[f32], expected: &[f32], tol: f32) {
    assert_eq!(ours.len(), expected.len());
    for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
        assert!((a - b).abs() <= tol, "[{i}]: {a} vs {b}\n{ours:?}");
    }
}

#[test]
fn every_golden_file_decodes_and_reencodes_byte_identical() {
    for (name, bytes) in golden_files() {
        // Each file is exactly one message: 58 + BODY_SIZE (read at offset 42) bytes.
        // That holds for the `*_full.bin` "header + body pairs" too: upstream keeps
        // header and body in two C arrays, and joined they are one message.
        assert_eq!(
            58 + be_u64(&bytes, 42) as usize,
            bytes.len(),
            "{name}: file is not one message"
        );
        let message = decode_all(&bytes);
        let type_field = &bytes[2..14];
        let type_field = std::str::from_utf8(type_field)
            .unwrap()
            .trim_end_matches('\0');
        assert_eq!(message.type_name(), type_field, "{name}");
        assert_eq!(message.version, be_u16(&bytes, 0), "{name}");
        assert_eq!(message.extended.is_some(), message.version == 2, "{name}");
        let interpreted = !matches!(message.body, Body::Raw { .. });
        let expect_interpreted = [
            "TRANSFORM",
            "POSITION",
            "IMAGE",
            "STATUS",
            "STRING",
            "POINT",
            "TDATA",
            "POLYDATA",
            "CAPABILITY",
            "COMMAND",
        ]
        .contains(&type_field);
        assert_eq!(
            interpreted, expect_interpreted,
            "{name}: {:?}",
            message.body
        );
        let again = encode(&message).unwrap();
        assert!(again == bytes, "{name}: re-encoding differs");
    }
}

#[test]
fn header_fields_of_the_upstream_vectors() {
    for (name, bytes) in golden_files() {
        let header = pinhole_igtl::Header::parse(&bytes).unwrap();
        // The device name upstream's tests use (COMMAND v1 leaves it empty).
        let device = match name.as_str() {
            "test_command_message.bin" => "",
            "test_command_messageFormat2.bin" => "OpticalTracker",
            _ => "DeviceName",
        };
        assert_eq!(header.device_name, device, "{name}");
        if device == "DeviceName" {
            // Upstream's tests store the raw u64 1234567892 (0x499602D4), i.e. 0 s and a
            // fraction of 1234567892 / 2^32 s, not 1234567892 seconds.
            assert_eq!(header.timestamp.0, 1_234_567_892, "{name}");
            assert_eq!(header.timestamp.seconds(), 0, "{name}");
            assert!(
                (header.timestamp.as_secs_f64() - 1_234_567_892.0 / 4_294_967_296.0).abs() < 1e-12
            );
        }
        assert_eq!(header.crc, pinhole_igtl::crc64(&bytes[58..]), "{name}");
    }
}

#[test]
fn transform_v1_matrix() {
    let message = decode_all(&golden("test_transform_message.bin"));
    let Body::Transform(t) = &message.body else {
        panic!("{:?}", message.body)
    };
    assert_f32s(&t.0, &UPSTREAM_TRANSFORM, 1e-6);
    // Column-major on the wire: R21 is the second float, R12 the fourth.
    let m = t.to_matrix();
    assert!((m[1][0] - 0.196632).abs() < 1e-6);
    assert!((m[0][1] + 0.196632).abs() < 1e-6);
    assert!((m[1][2] - 0.970014).abs() < 1e-6);
    assert_eq!(m[3], [0.0, 0.0, 0.0, 1.0]);
    // A proper rotation: det = +1.
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    assert!((det - 1.0).abs() < 1e-5, "det {det}");
}

#[test]
fn transform_v2_metadata_and_message_id() {
    let bytes = golden("test_transform_message_Format2.bin");
    // Fixed offsets (interop.md §1): body at 58; extended header 58..70; content 70..118;
    // metadata header 118..136 (count, then 8 bytes per entry); key/value bytes 136..175.
    assert_eq!(be_u16(&bytes, 58), 12);
    assert_eq!(be_u16(&bytes, 60), 2 + 8 * 2);
    assert_eq!(be_u32(&bytes, 62), 39);
    assert_eq!(be_u32(&bytes, 66), 1);
    assert_eq!(be_f32(&bytes, 70), UPSTREAM_TRANSFORM[0]);
    assert_eq!(be_u16(&bytes, 118), 2);
    assert_eq!(&bytes[136..153], b"First patient age");
    assert_eq!(&bytes[153..155], b"22");
    assert_eq!(&bytes[155..173], b"Second patient age");
    assert_eq!(&bytes[173..175], b"25");

    let message = decode_all(&bytes);
    assert_eq!(message.version, 2);
    let ext = message.extended.as_ref().unwrap();
    assert_eq!(ext.msg_id, 1);
    assert!(ext.ext_header_extra.is_empty());
    let pairs: Vec<_> = ext
        .metadata
        .iter()
        .map(|e| (e.key.as_str(), e.value_str().unwrap(), e.encoding))
        .collect();
    assert_eq!(
        pairs,
        [
            ("First patient age", "22", 3),
            ("Second patient age", "25", 3)
        ]
    );
    assert_eq!(message.metadata("Second patient age"), Some("25"));
    let Body::Transform(t) = &message.body else {
        panic!()
    };
    assert_f32s(&t.0, &UPSTREAM_TRANSFORM, 1e-6);
}

#[test]
fn position_v1_and_v2() {
    for name in [
        "test_position_message.bin",
        "test_position_messageFormat2.bin",
    ] {
        let message = decode_all(&golden(name));
        let Body::Position(p) = &message.body else {
            panic!("{name}: {:?}", message.body)
        };
        assert_eq!(p.form, PositionForm::Full);
        assert_f32s(&p.position, &[46.0531, 19.4709, 46.0531], 1e-4);
        assert_f32s(&p.quaternion, &[0.0, 0.5773503, 0.5773503, 0.3333333], 1e-6);
    }
}

#[test]
fn image_v1() {
    let bytes = golden("test_image_message.bin");
    let message = decode_all(&bytes);
    let Body::Image(image) = &message.body else {
        panic!("{:?}", message.body)
    };
    use pinhole_igtl::{Coordinate, Endian, ScalarType};
    assert_eq!(image.version, 1);
    assert_eq!(image.components, 1);
    assert_eq!(image.scalar_type, ScalarType::U8);
    assert_eq!(image.endian, Endian::Little);
    assert_eq!(image.coordinate, Coordinate::Ras);
    assert_eq!(image.size, [50, 50, 1]);
    assert_eq!(image.subvolume_offset, [0, 0, 0]);
    assert_eq!(image.subvolume_size, [50, 50, 1]);
    assert_eq!(image.pixels.len(), 2500);
    // Pixels start right after the 72-byte image header.
    assert_eq!(image.pixels[..], bytes[58 + 72..]);
    let flat: Vec<f32> = image.axes.iter().flatten().copied().collect();
    assert_f32s(&flat, &UPSTREAM_TRANSFORM[..9], 1e-6);
    assert_f32s(&image.centre, &UPSTREAM_TRANSFORM[9..], 1e-4);
    // Geometry: the centre voxel (24.5, 24.5, 0) maps to P.
    let m = image.ijk_to_world();
    for r in 0..3 {
        let x = m[r][0] * 24.5 + m[r][1] * 24.5 + m[r][3];
        assert!((x - f64::from(image.centre[r])).abs() < 1e-4);
    }
    assert_eq!(image.ijk_to_ras(), m, "RAS image: no flip");
}

#[test]
fn status_string_capability() {
    let m = decode_all(&golden("test_status_message.bin"));
    let Body::Status(s) = &m.body else { panic!() };
    assert_eq!(
        (
            s.code,
            s.sub_code,
            s.error_name.as_str(),
            s.message.as_str()
        ),
        (15, 10, "ACTUATOR_DISABLED", "Actuator A is disabled.")
    );

    let m = decode_all(&golden("test_string_message.bin"));
    let Body::String(s) = &m.body else { panic!() };
    assert_eq!(s.encoding, 3);
    assert_eq!(s.as_str(), Some("Welcome to OpenIGTLink"));

    let m = decode_all(&golden("test_capability_message.bin"));
    let Body::Capability(types) = &m.body else {
        panic!()
    };
    assert_eq!(types, &["IMAGE", "GET_IMAGE", "TRANSFORM", "GET_TRANS"]);
}

#[test]
fn point_items() {
    let m = decode_all(&golden("test_point_message.bin"));
    let Body::Point(points) = &m.body else {
        panic!()
    };
    let expected = [
        ([255, 0, 0, 255], [10.0, 15.0, 20.0], 5.0),
        ([0, 255, 0, 255], [25.0, 30.0, 35.0], 3.0),
        ([0, 0, 255, 255], [40.0, 45.0, 50.0], 1.0),
    ];
    assert_eq!(points.len(), 3);
    for (i, (p, (rgba, xyz, d))) in points.iter().zip(expected).enumerate() {
        assert_eq!(p.name, format!("POINT_DESCRIPTION_{i}"));
        assert_eq!(p.group, "Landmark");
        assert_eq!(p.owner, "IMAGE_0");
        assert_eq!(p.rgba, rgba);
        assert_eq!(p.position, xyz);
        assert_eq!(p.diameter, d);
    }
}

#[test]
fn tdata_items_v1_and_v2() {
    for name in ["test_tdata_message.bin", "test_tdata_messageFormat2.bin"] {
        let m = decode_all(&golden(name));
        let Body::TData(items) = &m.body else {
            panic!()
        };
        assert_eq!(items.len(), 3, "{name}");
        for (i, item) in items.iter().enumerate() {
            assert_eq!(item.name, format!("Tracker{i}"));
            assert_eq!(item.kind, 2, "6D");
            assert_f32s(&item.transform.0, &UPSTREAM_TRANSFORM, 1e-6);
        }
        if m.version == 2 {
            assert_eq!(m.metadata("First patient age"), Some("22"));
            assert_eq!(m.extended.as_ref().unwrap().msg_id, 1);
        }
    }
}

#[test]
fn command_v1_and_v2() {
    for (name, device) in [
        ("test_command_message.bin", ""),
        ("test_command_messageFormat2.bin", "OpticalTracker"),
    ] {
        let m = decode_all(&golden(name));
        assert_eq!(m.device_name, device);
        let Body::Command(c) = &m.body else { panic!() };
        assert_eq!(c.id, 5);
        assert_eq!(c.name, "This is a test command");
        assert_eq!(c.encoding, 3);
        assert_eq!(c.command, b"Start the tracking machine");
    }
}

#[test]
fn polydata_counts_and_sections() {
    let bytes = golden("polydata_full.bin");
    let m = decode_all(&bytes);
    let Body::PolyData(p) = &m.body else { panic!() };
    // A unit cube: 8 points, 6 quads (each 4 bytes count + 4 × 4 bytes ids), one point
    // scalar attribute "attr" = 0 … 7.
    assert_eq!(be_u32(&bytes, 58), 8);
    let cube = [
        [0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0],
        [1.0, 1.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 0.0, 1.0],
        [1.0, 1.0, 1.0],
        [0.0, 1.0, 1.0],
    ];
    assert_eq!(p.points_f32(), cube);
    assert_eq!((p.vertices.count, p.vertices.data.len()), (0, 0));
    assert_eq!((p.lines.count, p.lines.data.len()), (0, 0));
    assert_eq!((p.polygons.count, p.polygons.data.len()), (6, 120));
    assert_eq!(be_u32(&p.polygons.data, 0), 4);
    assert_eq!((p.strips.count, p.strips.data.len()), (0, 0));
    assert_eq!(p.n_attributes, 1);
    assert_eq!(p.attributes.len(), 6 + 6 + 8 * 4);
    assert_eq!(&p.attributes[6..11], b"attr\0");
    assert_eq!(be_f32(&p.attributes, 12 + 7 * 4), 7.0);
}

#[test]
fn uninterpreted_types_are_raw_and_kept() {
    for (name, type_name) in [
        ("ndarray_full.bin", "NDARRAY"),
        ("bind_full.bin", "BIND"),
        ("test_trajectory_message.bin", "TRAJ"),
        ("test_trajectory_message_Format2.bin", "TRAJ"),
        ("test_colortable_message.bin", "COLORT"),
        ("test_imgmeta_message.bin", "IMGMETA"),
        ("test_lbmeta_message.bin", "LBMETA"),
        ("test_sensor_message.bin", "SENSOR"),
        ("test_videometa_message.bin", "VIDEOMETA"),
    ] {
        let bytes = golden(name);
        let m = decode_all(&bytes);
        let Body::Raw { type_name: t, data } = &m.body else {
            panic!("{name}")
        };
        assert_eq!(t, type_name);
        if m.version == 1 {
            assert_eq!(data[..], bytes[58..]);
        }
    }
    // VIDEOMETA v2 has no metadata but still carries INDEX_COUNT = 0 (2 bytes).
    let m = decode_all(&golden("test_videometa_message.bin"));
    let ext = m.extended.unwrap();
    assert!(ext.metadata.is_empty());
    assert_eq!(ext.msg_id, 0);
}

#[test]
fn queries_decode_from_their_type_names() {
    use pinhole_igtl::Query;
    let q = Query {
        kind: QueryKind::Get,
        of: "TRANSFORM".into(),
        body: vec![],
    };
    assert_eq!(q.wire_type_name(), "GET_TRANSFOR");
    let bytes = encode(&Message::new("", Body::Query(q))).unwrap();
    assert_eq!(&bytes[2..14], b"GET_TRANSFOR");
    let m = decode_all(&bytes);
    let Body::Query(q) = &m.body else { panic!() };
    assert_eq!((q.kind, q.of.as_str()), (QueryKind::Get, "TRANSFOR"));
    assert!(q.is_for("TRANSFORM"));
    assert!(!q.is_for("TRANSFER"));
    assert!(!q.is_for("IMAGE"));
}
