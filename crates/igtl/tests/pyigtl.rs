//! Interop with pyigtl 0.3.4 on bytes (no sockets): pyigtl's `pack` is decoded here,
//! our `encode` is unpacked by pyigtl (tests/py/igtl_reference.py).

use pinhole_igtl::*;
use serde_json::Value;

use crate::common::{assert_matrix_close, close, python_json};

fn decode_file(path: &std::path::Path) -> Message {
    let bytes = std::fs::read(path).unwrap();
    let (m, used) = decode(&bytes, &DecodeOptions::default()).unwrap();
    assert_eq!(used, bytes.len());
    m
}

fn check_common(m: &Message, e: &Value) {
    assert_eq!(m.type_name(), e["type"].as_str().unwrap());
    assert_eq!(m.device_name, e["device"].as_str().unwrap());
    assert_eq!(m.version, e["header_version"].as_u64().unwrap() as u16);
    // pyigtl's fraction is the upstream bit-by-bit nanosecond approximation: ~1 ns.
    assert!(close(
        m.timestamp.as_secs_f64(),
        e["timestamp"].as_f64().unwrap(),
        1e-6
    ));
    if m.version == 2 {
        let ext = m.extended.as_ref().unwrap();
        assert_eq!(u64::from(ext.msg_id), e["message_id"].as_u64().unwrap());
        let meta = e["metadata"].as_object().unwrap();
        assert_eq!(ext.metadata.len(), meta.len());
        for (k, v) in meta {
            assert_eq!(m.metadata(k), Some(v.as_str().unwrap()), "{k}");
        }
    } else {
        assert!(m.extended.is_none());
    }
}

#[test]
fn we_decode_what_pyigtl_packs() {
    let dir = tempfile::tempdir().unwrap();
    let expected = python_json(
        "igtl_reference.py",
        &["write", dir.path().to_str().unwrap()],
    );
    let entries = expected.as_object().unwrap();
    assert_eq!(entries.len(), 7);
    for (name, e) in entries {
        let m = decode_file(&dir.path().join(e["file"].as_str().unwrap()));
        check_common(&m, e);
        match &m.body {
            Body::Transform(t) => assert_matrix_close(&t.to_matrix(), &e["matrix"], 1e-6),
            Body::Image(image) => {
                assert_eq!(image.scalar_type, ScalarType::I16);
                assert_eq!(image.components, 1);
                assert_eq!(image.endian, Endian::Little);
                let kji: Vec<u16> = e["shape_kji"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u16)
                    .collect();
                assert_eq!(image.size, [kji[2], kji[1], kji[0]]);
                assert_eq!(image.subvolume_size, image.size);
                // Bit-exact voxels.
                let pixels =
                    std::fs::read(dir.path().join(e["pixels_file"].as_str().unwrap())).unwrap();
                assert!(image.pixels == pixels, "{name}: voxels differ");
                // Geometry as pyigtl meant it: its matrix maps IJK to its world frame,
                // LPS unless it was told RAS; the COORDINATE field says which.
                let world = e["world"].as_str().unwrap();
                let reference = &e["ijk_to_world"];
                assert_matrix_close(&image.ijk_to_world(), reference, 1e-4);
                let flip = |m: &Value| -> Value {
                    let mut m = m.clone();
                    for r in 0..2 {
                        for c in 0..4 {
                            m[r][c] = (-m[r][c].as_f64().unwrap()).into();
                        }
                    }
                    m
                };
                match world {
                    "lps" => {
                        assert_eq!(image.coordinate, Coordinate::Lps, "pyigtl's default");
                        assert_matrix_close(&image.ijk_to_lps(), reference, 1e-4);
                        assert_matrix_close(&image.ijk_to_ras(), &flip(reference), 1e-4);
                    }
                    "ras" => {
                        assert_eq!(image.coordinate, Coordinate::Ras);
                        assert_matrix_close(&image.ijk_to_ras(), reference, 1e-4);
                        assert_matrix_close(&image.ijk_to_lps(), &flip(reference), 1e-4);
                    }
                    other => panic!("{other}"),
                }
                // The matrix the script gave pyigtl, by hand: 20° about z, spacing
                // 0.8 / 0.9 / 2.5, origin (−12.5, 40, −100).
                let (s, c) = 20f64.to_radians().sin_cos();
                let m = image.ijk_to_world();
                assert!(close(m[0][0], 0.8 * c, 1e-6) && close(m[1][1], 0.9 * c, 1e-6));
                assert!(close(m[0][1], -0.9 * s, 1e-6) && close(m[2][2], 2.5, 1e-6));
                assert!(close(m[0][3], -12.5, 1e-4) && close(m[1][3], 40.0, 1e-4));
                assert!(close(m[2][3], -100.0, 1e-4));
            }
            Body::String(s) => {
                assert_eq!(s.as_str().unwrap(), e["string"].as_str().unwrap());
                assert_eq!(s.encoding, ENCODING_ASCII);
            }
            Body::Point(points) => {
                let reference = e["points"].as_array().unwrap();
                assert_eq!(points.len(), reference.len());
                for (p, r) in points.iter().zip(reference) {
                    assert_eq!(p.name, r["name"].as_str().unwrap());
                    assert_eq!(p.group, r["group"].as_str().unwrap());
                    assert_eq!(p.owner, r["owner"].as_str().unwrap());
                    let rgba: Vec<u8> = r["rgba"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap() as u8)
                        .collect();
                    assert_eq!(p.rgba[..], rgba[..]);
                    for k in 0..3 {
                        assert_eq!(f64::from(p.position[k]), r["position"][k].as_f64().unwrap());
                    }
                    assert_eq!(f64::from(p.diameter), r["diameter"].as_f64().unwrap());
                }
                assert_eq!(points[1].name, "Target");
                assert_eq!(points[2].position, [-7.0, 0.0, 0.5]);
            }
            other => panic!("{name}: unexpected {other:?}"),
        }
    }
}

#[test]
fn pyigtl_unpacks_what_we_encode() {
    let dir = tempfile::tempdir().unwrap();
    let ts = Timestamp::from_secs_f64(1_700_000_000.75);
    let stamp = |mut m: Message| {
        m.timestamp = ts;
        m
    };
    let rigid = {
        let (s, c) = 30f64.to_radians().sin_cos();
        [
            [c, -s, 0.0, 10.0],
            [s, c, 0.0, -20.5],
            [0.0, 0.0, 1.0, 30.25],
            [0.0, 0.0, 0.0, 1.0],
        ]
    };
    let voxels: Vec<i16> = (0..6 * 4 * 3)
        .map(|v: i32| (v * 911 - 32000) as i16)
        .collect();
    let mut ijk = rigid;
    for r in 0..3 {
        ijk[r][0] *= 0.5;
        ijk[r][2] *= 3.0;
    }
    let image = ImageBody::new(
        [6, 4, 3],
        ScalarType::I16,
        1,
        Endian::Little,
        Coordinate::Ras,
        &ijk,
        voxels.iter().flat_map(|v| v.to_le_bytes()).collect(),
    );
    let messages = [
        (
            "transform_v1",
            stamp(Message::new(
                "NeedleTipToReference",
                Body::Transform(Transform::from_matrix(&rigid)),
            )),
        ),
        (
            "transform_v2",
            stamp(
                Message::new("PlanToRAS", Body::Transform(Transform::from_matrix(&rigid))).with_v2(
                    5,
                    vec![
                        MetaEntry::text("TransformStatus", "OK"),
                        MetaEntry::text("Source", "pinhole"),
                    ],
                ),
            ),
        ),
        (
            "image_v1",
            stamp(Message::new("CT", Body::Image(image.clone()))),
        ),
        (
            "image_v2",
            stamp(
                Message::new("CT", Body::Image(image))
                    .with_v2(6, vec![MetaEntry::text("Modality", "CT")]),
            ),
        ),
        (
            "string_v1",
            stamp(Message::new(
                "GuidanceMetrics",
                Body::String(StringBody::new("{\"tip_to_target_mm\": 12.5}")),
            )),
        ),
        (
            "string_v2",
            stamp(
                Message::new(
                    "GuidanceMetrics",
                    Body::String(StringBody::new("{\"alert\": \"none\"}")),
                )
                .with_v2(8, vec![MetaEntry::text("Format", "json")]),
            ),
        ),
        // pyigtl cannot pack non-ASCII text (it catches the wrong exception) but reads
        // MIBenum 106 (UTF-8).
        (
            "string_utf8",
            stamp(Message::new(
                "GuidanceMetrics",
                Body::String(StringBody::new("Nadel – Spitze ✓")),
            )),
        ),
        (
            "point_v1",
            stamp(Message::new(
                "Plan",
                Body::Point(vec![
                    PointItem {
                        name: "Entry".into(),
                        group: "Fiducial".into(),
                        rgba: [255, 0, 0, 255],
                        position: [1.5, -2.0, 3.25],
                        diameter: 1.0,
                        owner: "CT".into(),
                    },
                    PointItem {
                        name: "Target".into(),
                        group: "Fiducial".into(),
                        rgba: [0, 255, 0, 128],
                        position: [10.0, 20.0, 30.0],
                        diameter: 2.5,
                        owner: String::new(),
                    },
                ]),
            )),
        ),
    ];
    let mut files = Vec::new();
    for (name, m) in &messages {
        let path = dir.path().join(format!("{name}.bin"));
        std::fs::write(&path, encode(m).unwrap()).unwrap();
        files.push(path.to_str().unwrap().to_owned());
    }
    let mut args = vec!["read"];
    args.extend(files.iter().map(String::as_str));
    let results = python_json("igtl_reference.py", &args);
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), messages.len());
    for ((name, m), r) in messages.iter().zip(results) {
        assert!(r["crc_ok"].as_bool().unwrap(), "{name}: CRC");
        assert!(r["length_ok"].as_bool().unwrap(), "{name}: BODY_SIZE");
        check_common(m, r);
        match &m.body {
            Body::Transform(_) => assert_matrix_close(&rigid, &r["matrix"], 1e-6),
            Body::Image(image) => {
                assert_eq!(r["world"], "ras");
                assert_eq!(r["dtype"], "int16");
                assert_eq!(r["shape_kji"], serde_json::json!([3, 4, 6]));
                let theirs: Vec<i16> = r["voxels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as i16)
                    .collect();
                assert_eq!(theirs, voxels);
                // pyigtl recovers the origin from our centre: the matrix we meant.
                assert_matrix_close(&ijk, &r["ijk_to_world"], 1e-4);
                assert_matrix_close(&image.ijk_to_ras(), &r["ijk_to_world"], 1e-4);
            }
            Body::String(s) => assert_eq!(r["string"].as_str(), s.as_str()),
            Body::Point(points) => {
                let theirs = r["points"].as_array().unwrap();
                assert_eq!(theirs.len(), points.len());
                for (p, t) in points.iter().zip(theirs) {
                    assert_eq!(t["name"].as_str().unwrap(), p.name);
                    assert_eq!(t["group"].as_str().unwrap(), p.group);
                    assert_eq!(t["owner"].as_str().unwrap(), p.owner);
                    assert_eq!(t["rgba"], serde_json::json!(p.rgba));
                    assert_eq!(t["position"], serde_json::json!(p.position.map(f64::from)));
                    assert_eq!(t["diameter"].as_f64().unwrap(), f64::from(p.diameter));
                }
            }
            other => panic!("{other:?}"),
        }
    }
}
