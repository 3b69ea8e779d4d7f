//! Encode → decode gives the same message, for every body variant we construct, in
//! header versions 1 and 2; and what cannot be encoded is an error.

use pinhole_igtl::*;

use crate::common::{be_u16, be_u32, be_u64};

fn round_trip(message: &Message) {
    let bytes = encode(message).unwrap_or_else(|e| panic!("{e}: {message:?}"));
    // Independent framing checks at fixed offsets.
    assert_eq!(be_u16(&bytes, 0), message.version);
    assert_eq!(be_u64(&bytes, 42) as usize, bytes.len() - 58);
    assert_eq!(be_u64(&bytes, 50), crc64(&bytes[58..]));
    assert_eq!(be_u64(&bytes, 34), message.timestamp.0);
    if message.version >= 2 {
        let ext = message.extended.clone().unwrap_or_default();
        assert_eq!(be_u16(&bytes, 58) as usize, 12 + ext.ext_header_extra.len());
        assert_eq!(be_u16(&bytes, 60) as usize, 2 + 8 * ext.metadata.len());
        assert_eq!(be_u32(&bytes, 66), ext.msg_id);
    }
    let (back, used) = decode(&bytes, &DecodeOptions::default()).unwrap();
    assert_eq!(used, bytes.len());
    let mut expected = message.clone();
    if expected.version >= 2 && expected.extended.is_none() {
        expected.extended = Some(Extended::default());
    }
    assert_eq!(back, expected);
    assert_eq!(encode(&back).unwrap(), bytes);
    let mut reader = std::io::Cursor::new(&bytes);
    assert_eq!(
        read_message(&mut reader, &DecodeOptions::default()).unwrap(),
        back
    );
}

fn both_versions(device: &str, body: Body) {
    let mut m = Message::new(device, body);
    m.timestamp = Timestamp::from_secs_f64(1_700_000_123.456);
    round_trip(&m);
    let v2 = m.clone().with_v2(
        77,
        vec![
            MetaEntry::text("TransformStatus", "OK"),
            MetaEntry::text("Größe", "ünïcode"),
            MetaEntry {
                key: "binary".into(),
                encoding: 0,
                value: vec![0, 255, 1],
            },
        ],
    );
    round_trip(&v2);
    let mut v2_extra = v2.clone();
    v2_extra.extended.as_mut().unwrap().ext_header_extra = vec![9, 8, 7, 6];
    round_trip(&v2_extra);
    let mut v2_bare = m;
    v2_bare.version = 2;
    round_trip(&v2_bare);
}

fn rotation_z(deg: f64, t: [f64; 3]) -> [[f64; 4]; 4] {
    let (s, c) = deg.to_radians().sin_cos();
    [
        [c, -s, 0.0, t[0]],
        [s, c, 0.0, t[1]],
        [0.0, 0.0, 1.0, t[2]],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

fn int16_volume() -> ImageBody {
    let size = [7u16, 5, 3];
    let pixels: Vec<u8> = (0..7 * 5 * 3)
        .flat_map(|v: i32| ((v * 937 - 30000) as i16).to_le_bytes())
        .collect();
    let mut m = rotation_z(20.0, [-12.5, 40.0, -100.0]);
    for r in 0..3 {
        m[r][0] *= 0.8;
        m[r][1] *= 0.9;
        m[r][2] *= 2.5;
    }
    ImageBody::new(
        size,
        ScalarType::I16,
        1,
        Endian::Little,
        Coordinate::Lps,
        &m,
        pixels,
    )
}

#[test]
fn every_body_variant_round_trips() {
    let transform = Transform::from_matrix(&rotation_z(30.0, [10.0, -20.5, 30.25]));
    both_versions("NeedleTipToReference", Body::Transform(transform));
    for form in [
        PositionForm::PositionOnly,
        PositionForm::QuaternionXyz,
        PositionForm::Full,
    ] {
        let quaternion = match form {
            PositionForm::PositionOnly => [0.0, 0.0, 0.0, 1.0],
            // w = √(1 − 0.36 − 0.64) = 0: exact in f32.
            PositionForm::QuaternionXyz => [0.0, 0.6, 0.8, 0.0],
            PositionForm::Full => [0.5, -0.5, 0.5, 0.5],
        };
        both_versions(
            "Tip",
            Body::Position(Position {
                position: [1.0, -2.5, 300.0],
                quaternion,
                form,
            }),
        );
    }
    both_versions("Image_Reference", Body::Image(int16_volume()));
    let mut sub = int16_volume();
    sub.subvolume_offset = [2, 1, 1];
    sub.subvolume_size = [3, 2, 1];
    sub.pixels = vec![0xAB; 3 * 2 * 2];
    both_versions("Sub", Body::Image(sub));
    let rgb = ImageBody::new(
        [2, 2, 1],
        ScalarType::F32,
        3,
        Endian::Big,
        Coordinate::Ras,
        &rotation_z(0.0, [0.0; 3]),
        (0..2 * 2 * 3 * 4).map(|v| v as u8).collect(),
    );
    both_versions("Vectors", Body::Image(rgb));
    both_versions(
        "Status",
        Body::Status(Status {
            code: 1,
            sub_code: -42,
            error_name: "ERROR_NAME_20_BYTES_".into(),
            message: "all fine".into(),
        }),
    );
    both_versions("Text", Body::String(StringBody::new("hello")));
    both_versions("Text", Body::String(StringBody::new("naïve – ünïcode")));
    both_versions("Text", Body::String(StringBody::new("")));
    both_versions(
        "Plan",
        Body::Point(vec![
            PointItem {
                name: "Entry".into(),
                group: "Fiducial".into(),
                rgba: [255, 0, 0, 255],
                position: [1.5, -2.0, 3.25],
                diameter: 1.0,
                owner: "Image_Reference".into(),
            },
            PointItem {
                name: "x".repeat(64),
                group: "y".repeat(32),
                rgba: [1, 2, 3, 4],
                position: [f32::MAX, f32::MIN_POSITIVE, -0.0],
                diameter: 0.0,
                owner: "z".repeat(20),
            },
        ]),
    );
    both_versions("Plan", Body::Point(vec![]));
    both_versions(
        "Tracker",
        Body::TData(vec![
            TDataItem {
                name: "Needle".into(),
                kind: 2,
                transform,
            },
            TDataItem {
                name: "Reference".into(),
                kind: 3,
                transform: Transform::IDENTITY,
            },
        ]),
    );
    let mut polys = Vec::new();
    for v in [4u32, 0, 1, 2, 3] {
        polys.extend_from_slice(&v.to_be_bytes());
    }
    both_versions(
        "Model",
        Body::PolyData(PolyData {
            points: (0..4 * 12).map(|v| v as u8).collect(),
            polygons: CellArray {
                count: 1,
                data: polys,
            },
            lines: CellArray {
                count: 0,
                data: vec![],
            },
            n_attributes: 1,
            attributes: vec![
                0, 1, 0, 0, 0, 4, b'a', 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
            ],
            ..PolyData::default()
        }),
    );
    both_versions(
        "Peer",
        Body::Capability(vec![
            "TRANSFORM".into(),
            "GET_TRANSFOR".into(),
            "STRING".into(),
        ]),
    );
    both_versions(
        "Cmd",
        Body::Command(Command::new(9, "Start", "<Command Name=\"Start\"/>")),
    );
    both_versions(
        "Cmd",
        Body::RtsCommand(Command::new(9, "Start", "<Command Status=\"SUCCESS\"/>")),
    );
    for (kind, body) in [
        (QueryKind::Get, vec![]),
        (QueryKind::Start, {
            let mut b = 50u32.to_be_bytes().to_vec();
            b.extend_from_slice(&[0u8; 32]);
            b
        }),
        (QueryKind::Stop, vec![]),
        (QueryKind::Rts, vec![0]),
    ] {
        both_versions(
            "",
            Body::Query(Query {
                kind,
                of: "TDATA".into(),
                body,
            }),
        );
    }
    both_versions(
        "Image_Reference",
        Body::Empty {
            type_name: "IMAGE".into(),
        },
    );
    both_versions(
        "Vendor",
        Body::Raw {
            type_name: "TRACKEDFRAME".into(),
            data: vec![1, 2, 3, 0, 255],
        },
    );
    both_versions(
        "Vendor",
        Body::Raw {
            type_name: "X".into(),
            data: vec![],
        },
    );
}

/// xorshift64*, for deterministic random messages.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn f32(&mut self) -> f32 {
        // Finite values over a wide range (NaN is not equal to itself).
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2000.0 - 1000.0) as f32
    }
    fn text(&mut self, max: usize) -> String {
        let len = (self.next() % (max as u64 + 1)) as usize;
        (0..len)
            .map(|_| char::from(b'!' + (self.next() % 94) as u8))
            .collect()
    }
}

#[test]
fn random_messages_round_trip() {
    let mut rng = Rng(12345);
    for i in 0..500 {
        let body = match i % 5 {
            0 => Body::Transform(Transform(std::array::from_fn(|_| rng.f32()))),
            1 => Body::Point(
                (0..rng.next() % 4)
                    .map(|_| PointItem {
                        name: rng.text(64),
                        group: rng.text(32),
                        rgba: [rng.next() as u8, 2, 3, rng.next() as u8],
                        position: [rng.f32(), rng.f32(), rng.f32()],
                        diameter: rng.f32(),
                        owner: rng.text(20),
                    })
                    .collect(),
            ),
            2 => Body::TData(
                (0..rng.next() % 4)
                    .map(|_| TDataItem {
                        name: rng.text(20),
                        kind: rng.next() as u8,
                        transform: Transform(std::array::from_fn(|_| rng.f32())),
                    })
                    .collect(),
            ),
            3 => Body::Status(Status {
                code: rng.next() as u16,
                sub_code: rng.next() as i64,
                error_name: rng.text(20),
                message: rng.text(200),
            }),
            _ => Body::String(StringBody::new(&rng.text(300))),
        };
        let mut m = Message::new(&rng.text(20), body);
        m.timestamp = Timestamp(rng.next());
        if rng.next().is_multiple_of(2) {
            let metadata = (0..rng.next() % 4)
                .map(|_| MetaEntry::text(&rng.text(30), &rng.text(30)))
                .collect();
            m = m.with_v2(rng.next() as u32, metadata);
        }
        round_trip(&m);
    }
}

#[test]
fn transform_matrix_helpers() {
    let m = rotation_z(30.0, [10.0, -20.5, 30.25]);
    let t = Transform::from_matrix(&m);
    // Wire order: R11 R21 R31 R12 …
    let (s, c) = 30f64.to_radians().sin_cos();
    assert_eq!(t.0[0], c as f32);
    assert_eq!(t.0[1], s as f32);
    assert_eq!(t.0[3], -s as f32);
    assert_eq!(t.translation(), [10.0, -20.5, 30.25]);
    let back = t.to_matrix();
    for r in 0..4 {
        for k in 0..4 {
            assert!((back[r][k] - m[r][k]).abs() < 1e-6);
        }
    }
}

#[test]
fn image_geometry_helpers() {
    let image = int16_volume();
    assert_eq!(image.coordinate, Coordinate::Lps);
    // Centre = origin + M·(size − 1)/2, computed by hand for i = 3, j = 2, k = 1.
    let (s, c) = 20f64.to_radians().sin_cos();
    let centre = [
        -12.5 + 0.8 * c * 3.0 - 0.9 * s * 2.0,
        40.0 + 0.8 * s * 3.0 + 0.9 * c * 2.0,
        -100.0 + 2.5,
    ];
    for r in 0..3 {
        assert!((f64::from(image.centre[r]) - centre[r]).abs() < 1e-4);
    }
    let lps = image.ijk_to_lps();
    assert!((lps[0][3] + 12.5).abs() < 1e-4 && (lps[1][3] - 40.0).abs() < 1e-4);
    let ras = image.ijk_to_ras();
    assert!((ras[0][3] - 12.5).abs() < 1e-4 && (ras[1][3] + 40.0).abs() < 1e-4);
    assert!((ras[2][3] + 100.0).abs() < 1e-4);
    assert!((ras[0][0] + 0.8 * c).abs() < 1e-6);
    let spacing = image.spacing();
    for (a, b) in spacing.iter().zip([0.8, 0.9, 2.5]) {
        assert!((a - b).abs() < 1e-6);
    }
    assert_eq!(image.expected_pixel_bytes(), 7 * 5 * 3 * 2);
}

#[test]
fn unencodable_messages_are_errors() {
    let unencodable = |m: &Message| {
        assert!(
            matches!(encode(m), Err(IgtlError::Unencodable { .. })),
            "{m:?}"
        )
    };
    unencodable(&Message::new(
        &"d".repeat(21),
        Body::Transform(Transform::IDENTITY),
    ));
    unencodable(&Message::new("a\0b", Body::Transform(Transform::IDENTITY)));
    let mut v1_with_meta =
        Message::new("x", Body::Transform(Transform::IDENTITY)).with_v2(1, vec![]);
    v1_with_meta.version = 1;
    unencodable(&v1_with_meta);
    let mut image = int16_volume();
    image.pixels.pop();
    unencodable(&Message::new("x", Body::Image(image)));
    unencodable(&Message::new(
        "x",
        Body::String(StringBody::new(&"a".repeat(65536))),
    ));
    unencodable(&Message::new(
        "x",
        Body::Raw {
            type_name: "THIRTEEN_CHAR".into(),
            data: vec![],
        },
    ));
    unencodable(&Message::new(
        "x",
        Body::Point(vec![PointItem {
            name: "n".repeat(65),
            group: String::new(),
            rgba: [0; 4],
            position: [0.0; 3],
            diameter: 0.0,
            owner: String::new(),
        }]),
    ));
}

#[test]
fn timestamps() {
    let t = Timestamp::from_secs_f64(1_234_567_890.5);
    assert_eq!((t.seconds(), t.fraction()), (1_234_567_890, 1 << 31));
    let now = Timestamp::now().as_secs_f64();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - wall).abs() < 5.0);
}
