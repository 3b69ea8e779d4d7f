//! Control CT in the live session (issue #21): a control scan POSTed to a server on the
//! chest CT is registered onto it and its needle measured against the plan. The control
//! scan is built here: the planning CT seen through a known small rigid motion on a
//! short z-range grid of its own (as `crates/intraop/tests/rigid.rs`), with a straight
//! metal needle (3000 HU, radius 1 mm) burned in, whose tip and axis in the planning
//! frame are therefore known exactly. Also: what is refused (not a CT, unreadable, too
//! large by its declared length, a session without a plan line), and the OpenIGTLink
//! `ControlCT` IMAGE path.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use pinhole_guidance::{PlanSource, PlannedNeedle, Session, SessionInputs};
use pinhole_igtl::{Body, Coordinate, Endian, ImageBody, Message, ScalarType};
use pinhole_io::image::AnyVolume;
use pinhole_server::fusion::FusionCt;
use pinhole_volume::math::{Mat4, Vec3, IDENTITY};
use pinhole_volume::{Grid, Volume};
use serde_json::Value;

use crate::common::*;

fn chest_ct() -> Arc<Volume<f32>> {
    static CT: OnceLock<Arc<Volume<f32>>> = OnceLock::new();
    CT.get_or_init(|| {
        let path = shared_data("chest-ct/ct.nii.gz");
        Arc::new(pinhole_io::nifti::read(&path).unwrap().to_f32())
    })
    .clone()
}

fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn dot(a: Vec3, b: Vec3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn norm(a: Vec3) -> f64 {
    dot(a, a).sqrt()
}
fn unit(a: Vec3) -> Vec3 {
    let n = norm(a);
    a.map(|v| v / n)
}
fn along(p: Vec3, d: Vec3, s: f64) -> Vec3 {
    [p[0] + s * d[0], p[1] + s * d[1], p[2] + s * d[2]]
}
fn apply(m: &Mat4, p: Vec3) -> Vec3 {
    std::array::from_fn(|r| m[r][0] * p[0] + m[r][1] * p[1] + m[r][2] * p[2] + m[r][3])
}

/// Rotation about `axis` (unit) by `deg` about `centre`, then a shift (Rodrigues).
fn rigid(axis: Vec3, deg: f64, shift: Vec3, centre: Vec3) -> Mat4 {
    let (s, c) = deg.to_radians().sin_cos();
    let t = 1.0 - c;
    let [x, y, z] = axis;
    let r = [
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ];
    let rc: Vec3 = std::array::from_fn(|i| dot(r[i], centre));
    let b: Vec3 = std::array::from_fn(|a| centre[a] - rc[a] + shift[a]);
    [
        [r[0][0], r[0][1], r[0][2], b[0]],
        [r[1][0], r[1][1], r[1][2], b[1]],
        [r[2][0], r[2][1], r[2][2], b[2]],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// Inverse of a rigid transform (Rᵀ, −Rᵀb).
fn rigid_inverse(m: &Mat4) -> Mat4 {
    let mut inv = [[0.0; 4]; 4];
    for r in 0..3 {
        for c in 0..3 {
            inv[r][c] = m[c][r];
        }
        inv[r][3] = -(0..3).map(|c| m[c][r] * m[c][3]).sum::<f64>();
    }
    inv[3][3] = 1.0;
    inv
}

/// The case: the plan, where the needle really is (planning frame), and the motion.
struct Case {
    entry_lps: Vec3,
    target_lps: Vec3,
    tip_lps: Vec3,
    /// Hub → tip, unit.
    axis_lps: Vec3,
    control_to_planning: Mat4,
}

/// Plan towards the middle of the chest CT's right lower region (entry 58 mm away,
/// anterior and to the patient's right); the needle stopped 20 mm short of the target,
/// 3 mm beside the plan line, tilted 4° off it; the control scan moved by 3° and 7 mm.
fn case(planning: &Volume<f32>) -> Case {
    let c = planning.grid().center_lps();
    let target_lps = [c[0] - 50.0, c[1] + 10.0, c[2] - 60.0];
    let entry_lps = [
        target_lps[0] - 40.0,
        target_lps[1] - 40.0,
        target_lps[2] + 10.0,
    ];
    let plan_axis = unit(sub(target_lps, entry_lps));
    // A unit vector perpendicular to the plan (in the axial plane).
    let side = unit([-plan_axis[1], plan_axis[0], 0.0]);
    let tilt = 4f64.to_radians();
    let axis_lps = unit(along(plan_axis.map(|v| v * tilt.cos()), side, tilt.sin()));
    let tip_lps = along(along(target_lps, plan_axis, -20.0), side, 3.0);
    let control_to_planning = rigid(unit([0.2, 0.3, 0.93]), 3.0, [4.0, -3.0, 5.0], tip_lps);
    Case {
        entry_lps,
        target_lps,
        tip_lps,
        axis_lps,
        control_to_planning,
    }
}

/// The control scan: 0.8 × 0.8 × 2.5 mm, 60 mm of z around the needle's tip, showing the
/// planning CT through `control_to_planning`, with the needle (3000 HU, [`in_needle`],
/// from the tip 80 mm back) burned in where the motion puts it; as int16 HU, as a
/// scanner writes it.
fn control_scan(planning: &Volume<f32>, case: &Case) -> Volume<i16> {
    let to_control = rigid_inverse(&case.control_to_planning);
    let tip_c = apply(&to_control, case.tip_lps);
    let hub_c = apply(&to_control, along(case.tip_lps, case.axis_lps, -80.0));
    let axis_c = unit(sub(tip_c, hub_c));
    let spacing = [0.8, 0.8, 2.5];
    let dims = [300usize, 300, 24];
    let origin: Vec3 = std::array::from_fn(|a| tip_c[a] - 0.5 * spacing[a] * (dims[a] - 1) as f64);
    let grid = Grid::new(dims, spacing, origin, IDENTITY).unwrap();
    let mut data = Vec::with_capacity(grid.voxel_count());
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let x = grid.index_to_world([i as f64, j as f64, k as f64]);
                let hu = if in_needle(x, hub_c, axis_c, 80.0, 0.5 * spacing[2]) {
                    3000.0
                } else {
                    planning
                        .sample_trilinear(apply(&case.control_to_planning, x))
                        .unwrap_or(-1000.0)
                };
                data.push(hu.round().clamp(-1024.0, 3071.0) as i16);
            }
        }
    }
    Volume::new(grid, data).unwrap()
}

/// Whether the voxel centred at `x` shows the needle (radius 1 mm, `length_mm` from `hub`
/// along the unit `axis`): some part of the axis within the voxel's slice (z within
/// `half_slice_mm`) passes within 1 mm of `x` in the slice plane. (A 3-D distance to the
/// voxel centre would break an almost in-plane needle into dashes between slices.)
fn in_needle(x: Vec3, hub: Vec3, axis: Vec3, length_mm: f64, half_slice_mm: f64) -> bool {
    let (s0, s1) = if axis[2].abs() < 1e-9 {
        if (x[2] - hub[2]).abs() > half_slice_mm {
            return false;
        }
        (0.0, length_mm)
    } else {
        let a = (x[2] - half_slice_mm - hub[2]) / axis[2];
        let b = (x[2] + half_slice_mm - hub[2]) / axis[2];
        (a.min(b).max(0.0), a.max(b).min(length_mm))
    };
    if s0 > s1 {
        return false;
    }
    let d = [x[0] - hub[0], x[1] - hub[1]];
    let n2 = axis[0] * axis[0] + axis[1] * axis[1];
    let s = if n2 > 0.0 {
        ((d[0] * axis[0] + d[1] * axis[1]) / n2).clamp(s0, s1)
    } else {
        s0
    };
    (d[0] - s * axis[0]).hypot(d[1] - s * axis[1]) <= 1.0
}

/// The chest CT session with the case's plan (no risk groups: not what is tested here).
fn session(case: &Case) -> Session {
    session_on(&chest_ct(), case)
}

fn session_on(planning: &Volume<f32>, case: &Case) -> Session {
    let grid = planning.grid().clone();
    let labels = Volume::new(grid.clone(), vec![0u16; grid.voxel_count()]).unwrap();
    Session::new(
        &grid,
        labels,
        BTreeMap::new(),
        PlanSource::Plan(PlannedNeedle {
            target_lps: case.target_lps,
            entry_lps: Some(case.entry_lps),
            path_target_lps: case.target_lps,
            risk_groups: Some(Vec::new()),
        }),
        None,
        SessionInputs::default(),
    )
}

/// A request on a fresh connection: (status, body). `declared` replaces the
/// Content-Length (the body is then not sent).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    declared: Option<u64>,
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let length = declared.unwrap_or(body.len() as u64);
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    if declared.is_none() {
        s.write_all(body).unwrap();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = out[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn post(addr: SocketAddr, body: &[u8]) -> (u16, Value) {
    let (status, body) = request(addr, "POST", "/api/control-ct", body, None);
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Polls `/api/control-ct/latest` until check `seq` is no longer processing (bounded).
fn finished(addr: SocketAddr, seq: u64) -> Value {
    let end = Instant::now() + Duration::from_secs(600);
    loop {
        let (status, body) = request(addr, "GET", "/api/control-ct/latest", b"", None);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["seq"].as_u64().unwrap() >= seq, "{v}");
        if v["seq"].as_u64() == Some(seq) && v["state"] != "processing" {
            return v;
        }
        assert!(Instant::now() < end, "check {seq} did not finish: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn vec3(v: &Value) -> Vec3 {
    std::array::from_fn(|i| f(&v[i]))
}

/// Asserts the check found the case's needle: tip within 1.5 mm, axis within 2°.
fn assert_found(check: &Value, case: &Case) {
    assert_eq!(check["state"], "done", "{check}");
    assert_eq!(check["alignment"]["converged"], true, "{check}");
    let findings = &check["findings"];
    assert_eq!(findings["found"], true, "{check}");
    let needle = &findings["needle"];
    let tip = vec3(&needle["tip_planning_lps"]);
    let tip_error_mm = norm(sub(tip, case.tip_lps));
    eprintln!("control CT check: tip {tip_error_mm:.2} mm from the truth");
    assert!(
        tip_error_mm <= 1.5,
        "tip {tip:?} vs {:?}: {tip_error_mm} mm",
        case.tip_lps
    );
    let hub_to_tip = unit(sub(tip, vec3(&needle["hub_end_planning_lps"])));
    let angle_deg = dot(hub_to_tip, case.axis_lps)
        .clamp(-1.0, 1.0)
        .acos()
        .to_degrees();
    assert!(angle_deg <= 2.0, "axis {angle_deg}° off the truth");
    let axis = vec3(&needle["axis_planning_lps"]);
    let axis_deg = dot(axis, case.axis_lps).abs().min(1.0).acos().to_degrees();
    assert!(axis_deg <= 2.0, "reported axis {axis_deg}° off the truth");
    // The metrics against the plan, by hand from the truth (within what the tip and
    // axis errors allow).
    let metrics = &findings["metrics"];
    let truth_tip_to_target = norm(sub(case.target_lps, case.tip_lps));
    assert_close(
        f(&metrics["tip_to_target_mm"]),
        truth_tip_to_target,
        1.5,
        "tip to target",
    );
    let plan_axis = unit(sub(case.target_lps, case.entry_lps));
    let truth_angle = dot(case.axis_lps, plan_axis).acos().to_degrees();
    assert_close(
        f(&metrics["angle_to_plan_deg"]),
        truth_angle,
        2.0,
        "angle to plan",
    );
    assert!(findings["correction"]["text"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(vec3(&check["plan_target_lps"]), case.target_lps);
}

#[test]
fn a_posted_control_scan_gives_the_needle_in_the_planning_frame() {
    let _heavy = heavy_lock();
    let planning = chest_ct();
    let case = case(&planning);
    let scan = control_scan(&planning, &case);
    let server = TestServer::start(session(&case), |c| {
        c.fusion_ct = Some(FusionCt(planning.clone()));
    });
    let addr = server.http_addr();
    let (status, _) = request(addr, "GET", "/api/control-ct/latest", b"", None);
    assert_eq!(status, 204, "before any control scan");

    let bytes = pinhole_io::nifti::to_gzip_bytes(&AnyVolume::I16(scan), "control.nii.gz").unwrap();
    let (status, accepted) = post(addr, &bytes);
    assert_eq!(status, 202, "{accepted}");
    let seq = accepted["seq"].as_u64().unwrap();
    let check = finished(addr, seq);
    assert_found(&check, &case);
    assert!(f(&check["finished_unix_s"]) >= f(&check["received_unix_s"]));
}

#[test]
fn a_control_ct_image_over_openigtlink_is_checked_the_same_way() {
    let _heavy = heavy_lock();
    let planning = chest_ct();
    let case = case(&planning);
    let scan = control_scan(&planning, &case);
    let server = TestServer::start(session(&case), |c| {
        c.fusion_ct = Some(FusionCt(planning.clone()));
    });
    // As 3D Slicer sends a volume: int16, IJK → RAS (the LPS grid flipped in x and y
    // on the world side), little endian.
    let g = scan.grid();
    let mut ijk_to_ras = [[0.0; 4]; 4];
    for r in 0..3 {
        let sign = if r < 2 { -1.0 } else { 1.0 };
        for a in 0..3 {
            ijk_to_ras[r][a] = sign * g.direction()[r][a] * g.spacing_mm()[a];
        }
        ijk_to_ras[r][3] = sign * g.origin_lps()[r];
    }
    ijk_to_ras[3][3] = 1.0;
    let dims = g.dims().map(|d| d as u16);
    let pixels: Vec<u8> = scan.data().iter().flat_map(|v| v.to_le_bytes()).collect();
    let image = ImageBody::new(
        dims,
        ScalarType::I16,
        1,
        Endian::Little,
        Coordinate::Ras,
        &ijk_to_ras,
        pixels,
    );
    let mut client = server.client();
    client.send(&Message::new("ControlCT", Body::Image(image)));
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let m = client.recv();
        if let (Body::Status(s), "ControlCT") = (&m.body, m.device_name.as_str()) {
            break s.clone();
        }
        assert!(Instant::now() < end, "no ControlCT STATUS");
    };
    assert_eq!(status.code, 1, "{status:?}");
    let check = finished(server.http_addr(), 1);
    assert!(check["source"].as_str().unwrap().starts_with("igtl client"));
    assert_found(&check, &case);
}

#[test]
fn what_cannot_be_checked_is_refused_with_a_reason() {
    let planning = chest_ct();
    let case = case(&planning);
    let server = TestServer::start(session(&case), |c| {
        c.fusion_ct = Some(FusionCt(planning.clone()));
    });
    let addr = server.http_addr();

    // Not a CT: a readable NIfTI of water only (no air).
    let grid = Grid::axis_aligned([20, 20, 10], [1.0; 3], [0.0; 3]).unwrap();
    let water = Volume::new(grid.clone(), vec![0i16; grid.voxel_count()]).unwrap();
    let bytes = pinhole_io::nifti::to_gzip_bytes(&AnyVolume::I16(water), "w.nii.gz").unwrap();
    let (status, body) = post(addr, &bytes);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not a CT"),
        "{body}"
    );

    // Unreadable.
    let (status, body) = post(addr, b"this is not a volume");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("cannot be read"),
        "{body}"
    );

    // Too large by its declared length: answered without the body being sent.
    let declared = pinhole_server::control_ct::DEFAULT_MAX_CONTROL_CT_BYTES + 1;
    let (status, body) = request(addr, "POST", "/api/control-ct", b"", Some(declared));
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");

    // Nothing was accepted.
    let (status, _) = request(addr, "GET", "/api/control-ct/latest", b"", None);
    assert_eq!(status, 204);
}

#[test]
fn a_target_only_session_refuses_control_scans() {
    let ct = Volume::new(
        phantom_labels().grid().clone(),
        vec![-1000.0f32; phantom_labels().grid().voxel_count()],
    )
    .unwrap();
    let server = TestServer::start(phantom_target_session(), |c| {
        c.fusion_ct = Some(FusionCt(Arc::new(ct)));
    });
    let (status, body) = post(server.http_addr(), b"anything");
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no planned line"),
        "{body}"
    );
}
