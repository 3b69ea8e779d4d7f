//! pyigtl 0.3.4 (tests/py/guidance_peer.py) as an independent client of our server and
//! as a server our codec reads from over a real socket.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pinhole_igtl::{read_message, Body, Coordinate, DecodeOptions, Endian, ScalarType};
use serde_json::Value;

use crate::common::*;

#[test]
fn pyigtl_client_sends_poses_and_reads_metrics() {
    let server = TestServer::start(phantom_session(None), |_| {});
    let port = server.igtl_port().to_string();
    let dir = tempfile::tempdir().unwrap();
    // A second client receives the IMAGE pyigtl sends (relayed, newest wins).
    let mut viewer = server.client();
    let relayed = std::thread::spawn(move || loop {
        let m = viewer.recv();
        if let Body::Image(_) = m.body {
            return m;
        }
    });
    let out = python_json(
        "guidance_peer.py",
        &["client", &port, dir.path().to_str().unwrap()],
    );
    // Pose 1, header v1: RAS (−3, 10, 0) = 3 mm to the patient's left of the line.
    let v1 = &out["v1"];
    assert_eq!(v1["header_version"], 1);
    let m = &v1["metrics"];
    assert_close(
        f(&m["lateral_deviation_mm"]),
        3.0,
        1e-5,
        "pyigtl pose 1 deviation",
    );
    assert_close(
        f(&m["depth_remaining_mm"]),
        10.0,
        1e-5,
        "pyigtl pose 1 depth",
    );
    assert_eq!(m["nearest_structure"]["name"], "aorta");
    assert_close(
        f(&m["nearest_structure"]["distance_mm"]),
        7.0,
        1e-4,
        "aorta",
    );
    // Pose 2, header v2 with metadata: answered in header v2 with our metadata.
    let v2 = &out["v2"];
    assert_eq!(v2["header_version"], 2);
    assert_eq!(v2["metadata"]["Alert"], "ok");
    let m = &v2["metrics"];
    assert_close(f(&m["lateral_deviation_mm"]), 0.0, 1e-5, "pose 2 on line");
    assert_close(f(&m["depth_remaining_mm"]), 4.0, 1e-5, "pose 2 depth");
    // PlanToRAS: origin at the target (RAS 0,0,0), z along the plan (RAS 0,−1,0).
    let p = &out["plan_to_ras"];
    assert_close(f(&p[1][2]), -1.0, 1e-6, "plan z.y");
    assert_close(f(&p[0][3]), 0.0, 1e-6, "plan origin");
    // The relayed IMAGE: bit-exact int16 voxels, same geometry, metadata kept. The viewer
    // never sent anything, so it gets header version 1 (no metadata).
    let m = relayed.join().unwrap();
    let Body::Image(img) = &m.body else { panic!() };
    assert_eq!(m.device_name, "Image_Reference");
    assert_eq!(img.scalar_type, ScalarType::I16);
    assert_eq!(img.size, [10, 9, 8]);
    let voxels = std::fs::read(dir.path().join("relay_i16.raw")).unwrap();
    assert!(img.pixels == voxels, "relayed voxels differ");
    assert_matrix_close(&img.ijk_to_world(), &out["image"]["ijk_to_world"], 1e-4);
    assert_eq!(m.version, 1);
}

#[test]
fn pyigtl_server_image_string_point() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let interpreter = std::env::var("PINHOLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Command::new(interpreter)
        .arg(repo_root().join("tests/py/guidance_peer.py"))
        .args(["server", &port.to_string(), dir.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "LISTENING");
    let end = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("cannot connect to pyigtl: {e}"),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    // CRC checked on every message (pyigtl fills it).
    let received: Vec<_> = (0..4)
        .map(|_| read_message(&mut reader, &DecodeOptions::default()).unwrap())
        .collect();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let sent: Value = serde_json::from_str(rest.trim()).unwrap();
    let voxels = std::fs::read(dir.path().join("volume_i16.raw")).unwrap();
    for (m, e) in received.iter().zip(sent.as_array().unwrap()) {
        assert_eq!(m.type_name(), e["type"].as_str().unwrap());
        assert_eq!(m.device_name, e["device"].as_str().unwrap());
        assert_eq!(u64::from(m.version), e["header_version"].as_u64().unwrap());
        if let Some(meta) = e["metadata"].as_object() {
            for (k, v) in meta {
                assert_eq!(m.metadata(k), Some(v.as_str().unwrap()), "metadata {k}");
            }
        }
        if let Some(id) = e["message_id"].as_u64() {
            assert_eq!(u64::from(m.extended.as_ref().unwrap().msg_id), id);
        }
        match &m.body {
            Body::Image(img) => {
                assert_eq!(img.scalar_type, ScalarType::I16);
                let kji: Vec<u64> = e["shape_kji"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect();
                assert_eq!(
                    img.size.map(u64::from),
                    [kji[2], kji[1], kji[0]],
                    "size i, j, k"
                );
                // Bit-exact voxels (little-endian int16 as pyigtl sends them).
                assert_eq!(img.endian, Endian::Little);
                assert!(img.pixels == voxels, "voxels differ");
                assert_eq!(e["world"], "lps");
                assert_eq!(img.coordinate, Coordinate::Lps);
                assert_matrix_close(&img.ijk_to_world(), &e["ijk_to_world"], 1e-4);
            }
            Body::String(s) => assert_eq!(s.as_str().unwrap(), e["string"].as_str().unwrap()),
            Body::Point(points) => {
                assert_eq!(points.len(), 2);
                for (i, p) in points.iter().enumerate() {
                    assert_eq!(p.name, e["names"][i].as_str().unwrap());
                    for a in 0..3 {
                        assert_close(
                            f64::from(p.position[a]),
                            f(&e["positions"][i][a]),
                            1e-6,
                            "point",
                        );
                    }
                    assert_close(f64::from(p.diameter), f(&e["diameters"][i]), 1e-6, "diam");
                    for c in 0..4 {
                        assert_eq!(u64::from(p.rgba[c]), e["rgba"][i][c].as_u64().unwrap());
                    }
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
