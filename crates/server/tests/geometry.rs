//! Guidance metrics against hand-computed geometry, through the whole server path:
//! a RAS TRANSFORM in, the GuidanceMetrics STRING out.

use pinhole_igtl::{Body, Message, Transform};

use crate::common::*;

const S30: f64 = 0.5;
const C30: f64 = 0.866_025_403_784_438_6;

#[test]
fn hand_computed_metrics_and_left_right() {
    let server = TestServer::start(phantom_session(None), |_| {});
    let mut c = server.client();
    // The plan runs entry (0,−25,0) → target (0,0,0) LPS: towards −y in RAS.
    // 1. Tip on the line 10 mm before the target, axis along the plan.
    c.send_pose(&pose_ras([0.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
    let (m, msg) = c.metrics(1);
    assert_eq!(msg.version, 1, "a v1 client gets v1 replies");
    let tip = m["tip_lps"].as_array().unwrap();
    assert_close(f(&tip[0]), 0.0, 1e-6, "tip x");
    assert_close(
        f(&tip[1]),
        -10.0,
        1e-6,
        "tip y (RAS +10 anterior = LPS −10)",
    );
    assert_close(
        f(&m["lateral_deviation_mm"]),
        0.0,
        1e-6,
        "deviation on line",
    );
    assert_close(f(&m["angle_deg"]), 0.0, 1e-3, "angle on line");
    assert_close(f(&m["depth_remaining_mm"]), 10.0, 1e-6, "depth");
    assert_close(f(&m["tip_to_target_mm"]), 10.0, 1e-6, "tip to target");
    assert_eq!(m["inside_target"], false);
    assert_eq!(m["nearest_structure"]["name"], "aorta");
    assert_close(
        f(&m["nearest_structure"]["distance_mm"]),
        10.0,
        1e-4,
        "aorta at x=10",
    );
    assert_eq!(m["alert"], "ok");
    assert!(m["note"].as_str().unwrap().contains("Not for clinical use"));

    // 2. 3 mm to the patient's LEFT (RAS x = −3 → LPS x = +3): deviation 3, aorta 7 mm.
    c.send_pose(&pose_ras([-3.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
    let (m, _) = c.metrics(2);
    assert_close(f(&m["lateral_deviation_mm"]), 3.0, 1e-5, "3 mm off");
    assert_close(f(&m["tip_lps"][0]), 3.0, 1e-6, "left is +x in LPS");
    assert_eq!(m["nearest_structure"]["name"], "aorta");
    assert_close(
        f(&m["nearest_structure"]["distance_mm"]),
        7.0,
        1e-4,
        "aorta 7 mm",
    );
    assert_eq!(m["alert"], "caution", "{m}");

    // 3. Same distance to the patient's RIGHT (RAS x = +5 → LPS −5): the IVC at x = −18
    //    (13 mm) is nearer than the aorta (15 mm). A swapped RAS/LPS would say aorta 5 mm.
    c.send_pose(&pose_ras([5.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
    let (m, _) = c.metrics(3);
    assert_eq!(m["nearest_structure"]["name"], "inferior_vena_cava", "{m}");
    assert_close(
        f(&m["nearest_structure"]["distance_mm"]),
        13.0,
        1e-4,
        "IVC 13 mm",
    );
    let risks = m["risk_distances"].as_array().unwrap();
    let aorta = risks.iter().find(|r| r["group"] == "aorta_group").unwrap();
    assert_close(f(&aorta["distance_mm"]), 15.0, 1e-4, "aorta 15 mm");

    // 4. Needle tilted 30° towards the patient's left, tip on the line.
    c.send_pose(&pose_ras([0.0, 10.0, 0.0], [-S30, -C30, 0.0]));
    let (m, _) = c.metrics(4);
    assert_close(f(&m["angle_deg"]), 30.0, 1e-3, "tilt");
    assert_close(
        f(&m["lateral_deviation_mm"]),
        0.0,
        1e-6,
        "tip still on line",
    );
    assert_eq!(m["alert"], "caution");

    // 5. 2 mm from the aorta: danger.
    c.send_pose(&pose_ras([-8.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
    let (m, _) = c.metrics(5);
    assert_close(
        f(&m["nearest_structure"]["distance_mm"]),
        2.0,
        1e-4,
        "aorta 2 mm",
    );
    assert_eq!(m["alert"], "danger");

    // 6. 7 mm past the target along the plan: depth −7, danger (overshoot > 5 mm).
    c.send_pose(&pose_ras([0.0, -7.0, 0.0], [0.0, -1.0, 0.0]));
    let (m, _) = c.metrics(6);
    assert_close(f(&m["depth_remaining_mm"]), -7.0, 1e-6, "overshoot");
    assert_eq!(m["alert"], "danger");

    // 7. At the target: inside (5 mm sphere around the plan target).
    c.send_pose(&pose_ras([1.0, 1.0, 1.0], [0.0, -1.0, 0.0]));
    let (m, _) = c.metrics(7);
    assert_eq!(m["inside_target"], true);
    assert_close(
        f(&m["tip_to_target_mm"]),
        3f64.sqrt(),
        1e-6,
        "tip to target",
    );
}

#[test]
fn replies_follow_the_client_header_version_and_plan_transform() {
    let server = TestServer::start(phantom_session(None), |_| {});
    let mut c = server.client();
    let pose = pose_ras([0.0, 10.0, 0.0], [0.0, -1.0, 0.0]);
    let m = Message::new(
        "NeedleTipToReference",
        Body::Transform(Transform::from_matrix(&pose)),
    )
    .with_v2(
        3,
        vec![pinhole_igtl::MetaEntry::text("TransformStatus", "OK")],
    );
    c.send(&m);
    let (_, msg) = c.metrics(1);
    assert_eq!(msg.version, 2, "a v2 client gets v2 replies");
    assert_eq!(msg.metadata("Alert"), Some("ok"));
    // PlanToRAS follows: origin = target (RAS 0,0,0), z axis = plan direction in RAS (0,−1,0).
    loop {
        let m = c.recv();
        if m.device_name == "PlanToRAS" {
            let Body::Transform(t) = m.body else { panic!() };
            let p = t.to_matrix();
            assert_close(p[0][2], 0.0, 1e-6, "z.x");
            assert_close(p[1][2], -1.0, 1e-6, "z.y");
            assert_close(p[2][2], 0.0, 1e-6, "z.z");
            assert_eq!(m.version, 2);
            break;
        }
    }
}

#[test]
fn answers_get_capability_and_skips_unknown_types() {
    let server = TestServer::start(phantom_session(None), |_| {});
    let mut c = server.client();
    // An unknown type first: skipped (counted), the stream stays aligned.
    c.send(&Message::new(
        "Vendor",
        Body::Raw {
            type_name: "VENDORX".into(),
            data: vec![1, 2, 3],
        },
    ));
    c.send(&Message::new(
        "Query",
        Body::Query(pinhole_igtl::Query {
            kind: pinhole_igtl::QueryKind::Get,
            of: "CAPABILITY".into(),
            body: Vec::new(),
        }),
    ));
    loop {
        let m = c.recv();
        if let Body::Capability(types) = &m.body {
            assert!(types.iter().any(|t| t == "TRANSFORM"), "{types:?}");
            break;
        }
    }
    assert_eq!(server.running().shared.stats().unknown_messages, 1);
}

#[test]
fn tdata_and_position_inputs() {
    let server = TestServer::start(phantom_session(None), |_| {});
    let mut c = server.client();
    // TDATA with two tools: only the needle's item is used.
    let other = pose_ras([50.0, 50.0, 50.0], [0.0, 0.0, 1.0]);
    let needle = pose_ras([-3.0, 10.0, 0.0], [0.0, -1.0, 0.0]);
    let item = |name: &str, m| pinhole_igtl::TDataItem {
        name: name.into(),
        kind: 2,
        transform: Transform::from_matrix(m),
    };
    c.send(&Message::new(
        "Tracker",
        Body::TData(vec![
            item("Probe", &other),
            item("NeedleTipToReference", &needle),
        ]),
    ));
    let (m, _) = c.metrics(1);
    assert_close(f(&m["lateral_deviation_mm"]), 3.0, 1e-5, "TDATA pose");
    // POSITION: tip RAS (0, 4, 0); quaternion of a 90° rotation about x, which maps the
    // needle's +z to RAS −y (along the plan).
    let h = std::f32::consts::FRAC_1_SQRT_2;
    c.send(&Message::new(
        "NeedleTipToReference",
        Body::Position(pinhole_igtl::Position {
            position: [0.0, 4.0, 0.0],
            quaternion: [h, 0.0, 0.0, h],
            form: pinhole_igtl::PositionForm::Full,
        }),
    ));
    let (m, _) = c.metrics(2);
    assert_close(f(&m["depth_remaining_mm"]), 4.0, 1e-5, "POSITION depth");
    assert_close(
        f(&m["angle_deg"]),
        0.0,
        1e-3,
        "POSITION axis along the plan",
    );
}

#[test]
fn target_only_has_null_line_metrics() {
    let server = TestServer::start(phantom_target_session(), |_| {});
    let mut c = server.client();
    c.send_pose(&pose_ras([0.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
    let (m, _) = c.metrics(1);
    assert!(
        m["lateral_deviation_mm"].is_null() && m["angle_deg"].is_null(),
        "{m}"
    );
    assert!(m["plan_line"].as_str().unwrap().starts_with("undefined"));
    // Depth along the needle axis instead: 10 mm.
    assert_close(f(&m["depth_remaining_mm"]), 10.0, 1e-6, "depth along axis");
    // Default risk groups (TotalSegmentator names): both vessels are "great_vessels".
    assert_eq!(m["nearest_structure"]["group"], "great_vessels");
    assert_eq!(m["nearest_structure"]["name"], "aorta");
}

#[test]
fn registration_from_the_command_line_and_igtl() {
    // ReferenceToRAS = translation (10, 20, 30) RAS, as `--registration` gives it
    // (reading .tfm and 4×4 files is tested in pinhole-io's `transforms` tests).
    let mut m = pinhole_volume::math::IDENTITY4;
    m[0][3] = 10.0;
    m[1][3] = 20.0;
    m[2][3] = 30.0;
    // A 90° rotation about z: RAS x → y.
    let rot = [
        [0.0, -1.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];

    // Through the server: the needle at the tracker origin lands at RAS (10, 20, 30) =
    // LPS (−10, −20, 30).
    let server = TestServer::start(phantom_session(Some(m)), |_| {});
    let mut c = server.client();
    c.send_pose(&pose_ras([0.0, 0.0, 0.0], [0.0, -1.0, 0.0]));
    let (v, _) = c.metrics(1);
    for (a, e) in [-10.0, -20.0, 30.0].iter().enumerate() {
        assert_close(f(&v["tip_lps"][a]), *e, 1e-5, "registered tip");
    }
    // A ReferenceToRAS TRANSFORM replaces it: rotation about z by 90°, then a pose with
    // its tip at tracker (1, 0, 0) goes to RAS (0, 1, 0) = LPS (0, −1, 0).
    c.send(&Message::new(
        "ReferenceToRAS",
        Body::Transform(Transform::from_matrix(&rot)),
    ));
    c.send_pose(&pose_ras([1.0, 0.0, 0.0], [0.0, 0.0, 1.0]));
    let (v, _) = c.metrics(2);
    for (a, e) in [0.0, -1.0, 0.0].iter().enumerate() {
        assert_close(f(&v["tip_lps"][a]), *e, 1e-5, "re-registered tip");
    }
}
