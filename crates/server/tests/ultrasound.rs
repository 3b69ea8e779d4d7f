//! Live ultrasound over OpenIGTLink (issue #20): tracked IMAGE frames answered with the
//! CT and labels resliced on them, bad frames counted, and the needle against the
//! frame's plane in the guidance metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinhole_igtl::{Body, Coordinate, Endian, ImageBody, Message, ScalarType};
use pinhole_io::sequence::{
    FramePixels, FrameTransform, PixelType, TrackedFrame, TrackedSequence, TransformStatus,
};
use pinhole_server::fusion::{FusionCt, CT_RESLICE_DEVICE, LABEL_RESLICE_DEVICE};
use pinhole_server::replay::{place_frame, send_images, Placement, ReplayError};
use pinhole_ultrasound::{reslice, ImagePlane, ResliceOptions};
use pinhole_volume::math::Mat4;
use pinhole_volume::Volume;

use crate::common::*;

/// A CT on the phantom's grid: HU = 4·x + 2·y + z (LPS mm), so every reslice pixel
/// differs and a wrong axis or origin shows.
fn phantom_ct() -> Volume<f32> {
    let grid = phantom_labels().grid().clone();
    let data = (0..grid.voxel_count())
        .map(|o| {
            let [i, j, k] = grid.index_of_offset(o);
            let (x, y, z) = (i as f32 - 30.0, j as f32 - 30.0, k as f32 - 30.0);
            4.0 * x + 2.0 * y + z
        })
        .collect();
    Volume::new(grid, data).unwrap()
}

/// An ImageToLps from origin and pixel steps (LPS).
fn image_to_lps(origin: [f64; 3], x: [f64; 3], y: [f64; 3]) -> Mat4 {
    let n = [
        x[1] * y[2] - x[2] * y[1],
        x[2] * y[0] - x[0] * y[2],
        x[0] * y[1] - x[1] * y[0],
    ];
    let mut m = [[0.0; 4]; 4];
    for r in 0..3 {
        m[r] = [x[r], y[r], n[r], origin[r]];
    }
    m[3][3] = 1.0;
    m
}

/// IJK→LPS to IJK→RAS: only the world side (rows) flips; the pixel axes stay.
fn lps_to_ras_rows(m: &Mat4) -> Mat4 {
    let mut out = *m;
    for row in out.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    out
}

/// An 8-bit RAS IMAGE of `size` pixels on the plane `lps` (converted to RAS here).
fn frame(lps: &Mat4, size: [u16; 3], scalar: ScalarType) -> Message {
    let n = usize::from(size[0]) * usize::from(size[1]) * usize::from(size[2]);
    let body = ImageBody::new(
        size,
        scalar,
        1,
        Endian::Big,
        Coordinate::Ras,
        &lps_to_ras_rows(lps),
        vec![7; n * scalar.size()],
    );
    Message::new("Image_Reference", Body::Image(body))
}

fn image(m: &Message) -> &ImageBody {
    match &m.body {
        Body::Image(b) => b,
        _ => panic!("not an IMAGE"),
    }
}

/// Reads until an IMAGE of each device arrives (bounded).
fn fused_images(client: &mut Client) -> (ImageBody, ImageBody) {
    let (mut ct, mut labels) = (None, None);
    let end = Instant::now() + Duration::from_secs(20);
    while (ct.is_none() || labels.is_none()) && Instant::now() < end {
        let m = client.recv();
        match (&m.body, m.device_name.as_str()) {
            (Body::Image(b), CT_RESLICE_DEVICE) => ct = Some(b.clone()),
            (Body::Image(b), LABEL_RESLICE_DEVICE) => labels = Some(b.clone()),
            _ => {}
        }
    }
    (ct.expect("no CTReslice"), labels.expect("no LabelReslice"))
}

/// The documented window (W 400 / L 40), written out independently.
fn soft_tissue(hu: f32) -> u8 {
    ((hu - (40.0 - 200.0)) / 400.0 * 255.0)
        .round()
        .clamp(0.0, 255.0) as u8
}

/// What the server should send for `plane`: the CT windowed as `CTReslice` and the
/// labels as `LabelReslice`, from the library's reslice (an independent reference for
/// the server's own path).
fn expected_fused(ct: &Volume<f32>, plane: &ImagePlane) -> (Vec<u8>, Vec<u8>) {
    let labels = phantom_labels();
    let expected = reslice(ct, Some(&labels), plane, &ResliceOptions::default()).unwrap();
    let grey = expected.ct_hu.iter().map(|&hu| soft_tissue(hu)).collect();
    let ids = expected.labels.unwrap().iter().map(|&l| l as u8).collect();
    (grey, ids)
}

#[test]
fn a_frame_is_answered_with_the_ct_and_labels_resliced_on_its_pixels() {
    let ct = Arc::new(phantom_ct());
    let server = TestServer::start(phantom_session(None), |c| {
        c.fusion_ct = Some(FusionCt(ct.clone()));
    });
    let mut sender = server.client();
    let mut viewer = server.client();
    // The greeting: the viewer's stream is subscribed before the frame is sent.
    assert_eq!(viewer.recv().device_name, "GuidanceStatus");
    // Oblique: pixel x runs left and up at 36.87°, y posterior; 0.1 mm pixels, 512².
    let lps = image_to_lps([-20.0, -25.0, -10.0], [0.08, 0.0, 0.06], [0.0, 0.1, 0.0]);
    let sent = frame(&lps, [512, 512, 1], ScalarType::U8);
    sender.send(&sent);
    let (ct_image, label_image) = fused_images(&mut viewer);

    // Same geometry as the frame, bit for bit: Slicer overlays them.
    let sent = image(&sent);
    for got in [&ct_image, &label_image] {
        assert_eq!(got.size, sent.size);
        assert_eq!(got.axes, sent.axes);
        assert_eq!(got.centre, sent.centre);
        assert_eq!(got.coordinate, Coordinate::Ras);
        assert_eq!(got.ijk_to_ras(), sent.ijk_to_ras());
        assert_eq!((got.scalar_type, got.components), (ScalarType::U8, 1));
    }

    // Independent reference: the library's reslice on the frame's own (f32) geometry.
    let plane = ImagePlane::new(sent.ijk_to_lps(), 512, 512).unwrap();
    let labels = phantom_labels();
    let expected = reslice(&ct, Some(&labels), &plane, &ResliceOptions::default()).unwrap();
    let expected_ct: Vec<u8> = expected.ct_hu.iter().map(|&hu| soft_tissue(hu)).collect();
    let differing = expected_ct
        .iter()
        .zip(&ct_image.pixels)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(ct_image.pixels.len(), 512 * 512);
    assert_eq!(differing, 0, "CTReslice pixels differ from the reference");
    let expected_labels: Vec<u8> = expected
        .labels
        .unwrap()
        .iter()
        .map(|&l| u8::try_from(l).unwrap())
        .collect();
    assert_eq!(label_image.pixels, expected_labels);
    // Both vessels cross the frame: pixel (i, 0) lies at x = −20 + 0.08·i, so the aorta
    // (x ∈ [9.5, 12.5]) is at i ≈ 375 and the IVC (x ∈ [−20.5, −17.5]) at i ≈ 10.
    assert_eq!(label_image.pixels[375], AORTA as u8);
    assert_eq!(label_image.pixels[10], IVC as u8);
    // Pixel (0, 0) at LPS (−20, −25, −10): 4·(−20) + 2·(−25) − 10 = −140 HU.
    assert_eq!(ct_image.pixels[0], soft_tissue(-140.0));

    let stats = server.running().shared.stats();
    assert_eq!((stats.us_frames_in, stats.us_frames_refused), (1, 0));
    assert!(stats.us_frames_fused >= 1);
    eprintln!(
        "fusion of a 512x512 frame (CT + labels, encode): {:.2} ms (this build's profile)",
        stats.us_fusion_last_us as f64 / 1e3
    );
}

#[test]
fn bad_frames_are_counted_and_the_session_still_serves_poses() {
    let server = TestServer::start(phantom_session(None), |_| {});
    let mut client = server.client();
    let axial = image_to_lps([-8.0, -8.0, 0.0], [0.25, 0.0, 0.0], [0.0, 0.25, 0.0]);
    client.send(&frame(&axial, [64, 64, 1], ScalarType::U16));
    client.send(&frame(&axial, [64, 64, 2], ScalarType::U8));
    let zero_axis = image_to_lps([-8.0, -8.0, 0.0], [0.0; 3], [0.0, 0.25, 0.0]);
    client.send(&frame(&zero_axis, [64, 64, 1], ScalarType::U8));
    client.send_pose(&pose_ras([0.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
    let (metrics, _) = client.metrics(1);
    assert!(metrics.get("us_plane").is_none(), "{metrics}");
    let stats = server.running().shared.stats();
    assert_eq!((stats.us_frames_in, stats.us_frames_refused), (0, 3));
    assert_eq!(stats.us_frames_fused, 0);
    // Still serving.
    client.send_pose(&pose_ras([0.0, 12.0, 0.0], [0.0, -1.0, 0.0]));
    let (metrics, _) = client.metrics(2);
    assert_close(f(&metrics["tip_lps"][1]), -12.0, 1e-9, "tip y");
}

#[test]
fn the_needle_against_the_frame_plane_joins_the_metrics() {
    let server = TestServer::start(phantom_session(None), |_| {});
    let mut client = server.client();
    // Axial at z = 0 LPS, 0.125 mm pixels from (−32, −32): normal x × y = +z (superior).
    let axial = image_to_lps([-32.0, -32.0, 0.0], [0.125, 0.0, 0.0], [0.0, 0.125, 0.0]);
    client.send(&frame(&axial, [512, 512, 1], ScalarType::U8));
    // Tip at LPS (1, −10, 0), needle along +y (posterior): in the plane.
    client.send_pose(&pose_ras([-1.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
    let (m, _) = client.metrics(1);
    let us = &m["us_plane"];
    assert_close(f(&us["tip_distance_mm"]), 0.0, 1e-9, "distance in plane");
    assert_close(f(&us["angle_to_plane_deg"]), 0.0, 1e-9, "angle in plane");
    assert!(us["crossing"].is_null(), "parallel: no crossing");
    assert_eq!(us["in_plane"], true);
    assert_eq!(us["out_of_plane_alert"], false);
    assert!(
        !m["alert_reasons"].to_string().contains("ultrasound"),
        "{}",
        m["alert_reasons"]
    );
    // Pixel of the tip: ((1 + 32) / 0.125, (−10 + 32) / 0.125).
    assert_close(f(&us["tip_pixel"][0]), 264.0, 1e-9, "tip i");
    assert_close(f(&us["tip_pixel"][1]), 176.0, 1e-9, "tip j");
    assert_eq!(us["frame_seq"], 1);
    assert_eq!(us["frame_device"], "Image_Reference");

    // 5 mm superior (LPS z = +5): distance +5 mm along the normal, out of plane.
    client.send_pose(&pose_ras([-1.0, 10.0, 5.0], [0.0, -1.0, 0.0]));
    let (m, _) = client.metrics(2);
    let us = &m["us_plane"];
    assert_close(f(&us["tip_distance_mm"]), 5.0, 1e-9, "distance 5 mm off");
    assert_eq!(us["in_plane"], false);
    assert_eq!(us["out_of_plane_alert"], true);
    // The out-of-plane alert raises the guidance alert (the tip is far from any vessel
    // of the phantom, so it would be "ok" otherwise) and says why.
    assert_eq!(m["alert"], "caution", "{m}");
    let reasons = m["alert_reasons"].to_string();
    assert!(
        reasons.contains("5.0 mm out of the ultrasound image plane"),
        "{reasons}"
    );

    // Tilted 30° towards the plane (LPS direction (0, cos 30°, −sin 30°)): the line
    // crosses it 5 / sin 30° = 10 mm ahead of the tip, at y = −10 + 10·cos 30°.
    let (s, c) = 30f64.to_radians().sin_cos();
    client.send_pose(&pose_ras([-1.0, 10.0, 5.0], [0.0, -c, -s]));
    let (m, _) = client.metrics(3);
    let us = &m["us_plane"];
    assert_close(f(&us["tip_distance_mm"]), 5.0, 1e-6, "tilted distance");
    assert_close(f(&us["angle_to_plane_deg"]), 30.0, 1e-6, "tilted angle");
    let crossing = &us["crossing"];
    // The pose travels as f32: 1e-5 mm.
    assert_close(
        f(&crossing["along_needle_from_tip_mm"]),
        10.0,
        1e-5,
        "crossing ahead",
    );
    assert_close(
        f(&crossing["point_lps"][1]),
        -10.0 + 10.0 * c,
        1e-5,
        "crossing y",
    );
    assert_close(f(&crossing["point_lps"][2]), 0.0, 1e-5, "crossing z");
}

#[test]
fn an_old_frame_does_not_join_the_metrics() {
    let server = TestServer::start(phantom_session(None), |c| {
        c.us_plane_max_age = Duration::from_millis(50);
    });
    let mut client = server.client();
    let axial = image_to_lps([-8.0, -8.0, 0.0], [0.25, 0.0, 0.0], [0.0, 0.25, 0.0]);
    client.send(&frame(&axial, [64, 64, 1], ScalarType::U8));
    std::thread::sleep(Duration::from_millis(200));
    client.send_pose(&pose_ras([0.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
    let (metrics, _) = client.metrics(1);
    assert!(metrics.get("us_plane").is_none(), "{metrics}");
    assert_eq!(server.running().shared.stats().us_frames_in, 1);
}

/// `ImageToProbe` as PLUS computes it (pixel scaling included): the image's x along the
/// probe's y at 0.25 mm, its y (depth) along the probe's x at 0.5 mm. Every number is a
/// binary fraction, so the products below are exact.
const IMAGE_TO_PROBE: Mat4 = [
    [0.0, 0.5, 0.0, -4.0],
    [0.25, 0.0, 0.0, -8.0],
    [0.0, 0.0, 0.5, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// The tracked probe (RAS): 90° about S (x → y, y → −x) and a shift.
const PROBE_TO_REFERENCE: Mat4 = [
    [0.0, -1.0, 0.0, 3.0],
    [1.0, 0.0, 0.0, -4.0],
    [0.0, 0.0, 1.0, 5.0],
    [0.0, 0.0, 0.0, 1.0],
];

fn transform(device: &str, m: &Mat4) -> Message {
    Message::new(
        device,
        Body::Transform(pinhole_igtl::Transform::from_matrix(m)),
    )
}

#[test]
fn a_tracked_probe_times_its_calibration_places_the_frame() {
    let ct = Arc::new(phantom_ct());
    let server = TestServer::start(phantom_session(None), |c| {
        c.fusion_ct = Some(FusionCt(ct.clone()));
        c.us_image_to_probe = Some(IMAGE_TO_PROBE);
    });
    let mut sender = server.client();
    let mut viewer = server.client();
    assert_eq!(viewer.recv().device_name, "GuidanceStatus");
    sender.send(&transform("ProbeToReference", &PROBE_TO_REFERENCE));
    // The IMAGE's own matrix puts it far outside the CT: it must not be used.
    let elsewhere = image_to_lps([100.0, 100.0, 100.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]);
    sender.send(&frame(&elsewhere, [96, 48, 1], ScalarType::U8));
    let (ct_image, label_image) = fused_images(&mut viewer);

    // By hand: ImageToReference = ProbeToReference · ImageToProbe has pixel x along RAS
    // −R at 0.25 mm, y along +A at 0.5 mm, origin R·(−4, −8, 0) + t = (8, −4, 0) +
    // (3, −4, 5) = (11, −8, 5) RAS; in LPS: origin (−11, 8, 5), x (0.25, 0, 0), y (0, −0.5, 0).
    let expected_ras = [
        [-0.25, 0.0, 0.0, 11.0],
        [0.0, 0.5, 0.0, -8.0],
        [0.0, 0.0, 0.5, 5.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    for got in [&ct_image, &label_image] {
        let m = got.ijk_to_ras();
        for r in 0..3 {
            for c in [0, 1, 3] {
                assert_close(m[r][c], expected_ras[r][c], 1e-5, "fused image matrix");
            }
        }
    }
    let plane = ImagePlane::new(
        image_to_lps([-11.0, 8.0, 5.0], [0.25, 0.0, 0.0], [0.0, -0.5, 0.0]),
        96,
        48,
    )
    .unwrap();
    let (expected_ct, expected_labels) = expected_fused(&ct, &plane);
    assert_eq!(
        ct_image.pixels, expected_ct,
        "CTReslice on the calibrated plane"
    );
    assert_eq!(label_image.pixels, expected_labels);
    // The aorta (x = 10–12 mm LPS, the patient's left) lies at pixel columns
    // (10 + 11) / 0.25 = 84 to (12 + 11) / 0.25 = 92, nearest-neighbour rounding aside.
    let aorta_columns: Vec<usize> = (0..label_image.pixels.len())
        .filter(|&p| u16::from(label_image.pixels[p]) == AORTA)
        .map(|p| p % 96)
        .collect();
    assert!(!aorta_columns.is_empty(), "the plane misses the aorta");
    assert!(
        aorta_columns.iter().all(|c| (82..=94).contains(c)),
        "aorta columns {:?}",
        (aorta_columns.iter().min(), aorta_columns.iter().max())
    );
    let stats = server.running().shared.stats();
    assert_eq!((stats.us_frames_in, stats.us_frames_refused), (1, 0));
}

#[test]
fn without_a_rigid_recent_probe_pose_calibrated_frames_are_refused() {
    let server = TestServer::start(phantom_session(None), |c| {
        c.us_image_to_probe = Some(IMAGE_TO_PROBE);
        c.us_plane_max_age = Duration::from_millis(150);
    });
    let mut client = server.client();
    let axial = image_to_lps([-8.0, -8.0, 0.0], [0.25, 0.0, 0.0], [0.0, 0.25, 0.0]);
    let barrier = |client: &mut Client, n: u64| {
        client.send_pose(&pose_ras([0.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
        client.metrics(n);
    };
    // No probe pose yet.
    client.send(&frame(&axial, [16, 16, 1], ScalarType::U8));
    barrier(&mut client, 1);
    assert_eq!(server.running().shared.stats().us_frames_refused, 1);
    // A probe pose that scales is not a tracker pose: refused, the frame too.
    let mut scaled = PROBE_TO_REFERENCE;
    scaled[0][1] = -2.0;
    client.send(&transform("ProbeToReference", &scaled));
    client.send(&frame(&axial, [16, 16, 1], ScalarType::U8));
    barrier(&mut client, 2);
    let stats = server.running().shared.stats();
    assert_eq!((stats.us_probe_refused, stats.us_frames_refused), (1, 2));
    // A rigid one is used ...
    client.send(&transform("ProbeToReference", &PROBE_TO_REFERENCE));
    client.send(&frame(&axial, [16, 16, 1], ScalarType::U8));
    barrier(&mut client, 3);
    assert_eq!(server.running().shared.stats().us_frames_in, 1);
    // ... until it is older than us_plane_max_age.
    std::thread::sleep(Duration::from_millis(400));
    client.send(&frame(&axial, [16, 16, 1], ScalarType::U8));
    barrier(&mut client, 4);
    let stats = server.running().shared.stats();
    assert_eq!((stats.us_frames_in, stats.us_frames_refused), (1, 3));
}

/// A tracked frame of 32 × 32 pixels (value 7) with the given transforms (all `OK`).
fn tracked_frame(t_s: f64, transforms: &[(&str, Mat4)]) -> TrackedFrame {
    TrackedFrame {
        pixels: FramePixels::U8(vec![7; 32 * 32]),
        timestamp_s: Some(t_s),
        transforms: transforms
            .iter()
            .map(|(name, m)| FrameTransform {
                name: (*name).to_owned(),
                matrix: Some(*m),
                status: TransformStatus::Ok,
            })
            .collect(),
        fields: Vec::new(),
    }
}

fn sequence_of(frames: Vec<TrackedFrame>) -> TrackedSequence {
    TrackedSequence {
        width: 32,
        height: 32,
        pixel_type: PixelType::U8,
        spacing_mm: [0.5, 0.5],
        orientation: Some("MF".to_owned()),
        frames,
        header_fields: Vec::new(),
        warnings: Vec::new(),
    }
}

/// Writes `sequence` to a `.seq.mha` and reads it back (the file is what is replayed).
fn through_file(sequence: &TrackedSequence) -> TrackedSequence {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sweep.seq.mha");
    pinhole_io::sequence::write_sequence(&path, sequence).unwrap();
    pinhole_io::sequence::read_sequence(&path).unwrap()
}

/// Reads until an IMAGE of `device` whose IJK→RAS equals `expected` (f32 on the wire)
/// arrives; every earlier IMAGE of that device must match one of `allowed`.
fn wait_for_image(client: &mut Client, device: &str, expected: &Mat4, allowed: &[Mat4]) {
    let close = |a: &Mat4, b: &Mat4| {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() < 1e-4)
    };
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        let m = client.recv();
        if let (Body::Image(b), d) = (&m.body, m.device_name.as_str()) {
            if d != device {
                continue;
            }
            let got = b.ijk_to_ras();
            if close(&got, expected) {
                assert_eq!(b.size, [32, 32, 1]);
                assert_eq!(b.coordinate, Coordinate::Ras);
                return;
            }
            assert!(
                allowed.iter().any(|a| close(&got, a)),
                "{device}: unexpected matrix {got:?}"
            );
        }
    }
    panic!("no {device} IMAGE with the matrix {expected:?}");
}

#[test]
fn a_replayed_sequence_is_fused_with_each_frames_image_to_reference() {
    let ct = Arc::new(phantom_ct());
    let server = TestServer::start(phantom_session(None), |c| {
        c.fusion_ct = Some(FusionCt(ct.clone()));
    });
    let mut viewer = server.client();
    assert_eq!(viewer.recv().device_name, "GuidanceStatus");
    // Three oblique RAS planes 2 mm apart (0.5 mm pixels), from a sweep of the library.
    let simulator = pinhole_ultrasound::Simulator::new(pinhole_ultrasound::SimulationParams {
        probe: pinhole_ultrasound::Probe::Linear { width_mm: 16.0 },
        depth_mm: 16.0,
        width_px: 32,
        height_px: 32,
        ..Default::default()
    })
    .unwrap();
    let start = pinhole_ultrasound::ProbePose {
        centre_lps: [3.0, -8.0, 1.0],
        beam_lps: [0.0, 3.0, 4.0],
        lateral_lps: [1.0, 0.0, 0.0],
    };
    let motion = pinhole_ultrasound::SweepMotion::Translate {
        direction_lps: [0.0, 0.0, 1.0],
        step_mm: 2.0,
    };
    let poses = pinhole_ultrasound::sweep_poses(&start, &motion, 3).unwrap();
    let frames: Vec<TrackedFrame> = poses
        .iter()
        .enumerate()
        .map(|(k, p)| {
            let lps = simulator.plane(p).unwrap().image_to_lps();
            tracked_frame(
                k as f64 * 0.05,
                &[("ImageToReference", lps_to_ras_rows(&lps))],
            )
        })
        .collect();
    let sequence = through_file(&sequence_of(frames));
    let matrices: Vec<Mat4> = sequence
        .frames
        .iter()
        .map(|f| f.transform("ImageToReference").unwrap().matrix.unwrap())
        .collect();
    let summary = send_images(
        &sequence,
        "127.0.0.1",
        server.igtl_port(),
        "Image_Reference",
        None,
        2,
    )
    .unwrap();
    assert_eq!((summary.sent, summary.skipped), (3, 0));
    assert_eq!(summary.placed_by_image_to_reference, 3);
    assert_eq!(summary.rate_hz, None, "the file's timestamps are followed");
    // The last frame is never superseded: its CT reslice and the relayed frame reach the
    // viewer with the file's matrix (earlier ones may be skipped, newest wins, but any
    // that arrives carries its own frame's matrix).
    let last = matrices[2];
    wait_for_image(&mut viewer, CT_RESLICE_DEVICE, &last, &matrices);
    let stats = server.running().shared.stats();
    assert_eq!((stats.us_frames_in, stats.us_frames_refused), (3, 0));
    assert!(stats.us_frames_fused >= 1);
}

#[test]
fn a_frame_without_image_to_reference_is_placed_by_probe_pose_times_calibration() {
    let ct = Arc::new(phantom_ct());
    let server = TestServer::start(phantom_session(None), |c| {
        c.fusion_ct = Some(FusionCt(ct.clone()));
    });
    let mut viewer = server.client();
    assert_eq!(viewer.recv().device_name, "GuidanceStatus");
    // ProbeToReference: 90° about +z, then (5, −3, 2); ImageToProbe: 0.4 mm pixels from
    // (−6, −6, 0). Their product by hand: x step (0, 0.4, 0), y step (−0.4, 0, 0),
    // origin (0·−6 − 1·−6 + 5, 1·−6 − 3, 2) = (11, −9, 2).
    let probe_to_reference = [
        [0.0, -1.0, 0.0, 5.0],
        [1.0, 0.0, 0.0, -3.0],
        [0.0, 0.0, 1.0, 2.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let image_to_probe = [
        [0.4, 0.0, 0.0, -6.0],
        [0.0, 0.4, 0.0, -6.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let expected = [
        [0.0, -0.4, 0.0, 11.0],
        [0.4, 0.0, 0.0, -9.0],
        [0.0, 0.0, 1.0, 2.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let mut invalid_direct = tracked_frame(
        0.05,
        &[
            ("ProbeToReference", probe_to_reference),
            ("ImageToProbe", image_to_probe),
        ],
    );
    // An ImageToReference marked INVALID is not used: the product places the frame.
    invalid_direct.transforms.push(FrameTransform {
        name: "ImageToReference".to_owned(),
        matrix: Some(pinhole_volume::math::IDENTITY4),
        status: TransformStatus::Invalid,
    });
    let sequence = through_file(&sequence_of(vec![
        // Frame 0: nothing to place it by: skipped and named.
        tracked_frame(0.0, &[]),
        invalid_direct,
    ]));
    let summary = send_images(
        &sequence,
        "127.0.0.1",
        server.igtl_port(),
        "Image_Reference",
        Some(50.0),
        2,
    )
    .unwrap();
    assert_eq!((summary.sent, summary.skipped), (1, 1));
    assert_eq!(summary.placed_by_probe_and_calibration, 1);
    assert!(
        summary.warnings.iter().any(|w| w.starts_with("frame 0 ")),
        "{:?}",
        summary.warnings
    );
    // The server received the product: relayed as sent, and fused on it.
    wait_for_image(&mut viewer, "Image_Reference", &expected, &[]);
    let stats = server.running().shared.stats();
    assert_eq!((stats.us_frames_in, stats.us_frames_refused), (1, 0));

    // The placement by itself, and a mirrored probe pose refused.
    let (m, how) = place_frame(&sequence.frames[1], 32, 32).unwrap();
    assert_eq!(how, Placement::ProbeToReferenceTimesImageToProbe);
    for (a, b) in m.iter().flatten().zip(expected.iter().flatten()) {
        assert!((a - b).abs() < 1e-12, "{m:?}");
    }
    let mut mirrored = probe_to_reference;
    mirrored[0][1] = 1.0;
    let frame = tracked_frame(
        0.0,
        &[
            ("ProbeToReference", mirrored),
            ("ImageToProbe", image_to_probe),
        ],
    );
    let why = place_frame(&frame, 32, 32).unwrap_err();
    assert!(why.contains("ProbeToReference"), "{why}");
}

#[test]
fn sixteen_bit_and_unplaceable_sequences_are_refused_before_connecting() {
    let mut sequence = sequence_of(vec![tracked_frame(0.0, &[])]);
    // Port 1: nothing listens; the refusal comes first.
    let err = send_images(&sequence, "127.0.0.1", 1, "Image_Reference", None, 2).unwrap_err();
    assert!(
        matches!(err, ReplayError::NothingToSend { frames: 1, .. }),
        "{err}"
    );
    sequence.pixel_type = PixelType::U16;
    sequence.frames[0].pixels = FramePixels::U16(vec![7; 32 * 32]);
    let err = send_images(&sequence, "127.0.0.1", 1, "Image_Reference", None, 2).unwrap_err();
    assert!(matches!(err, ReplayError::SixteenBit), "{err}");
    assert!(err.to_string().contains("8-bit"), "{err}");
}

/// Regression: the fused pair of a 512 × 512 frame (512 KiB) went through the client's
/// 8 KiB send buffer a few segments per delayed acknowledgement (~190 ms on loopback in
/// a release build), so a Slicer client reading the fused stream at 30 fps was dropped
/// as behind after its first frame (`bench/us_fusion.sh`). A client sent images now gets
/// a larger send buffer (counted: `igtl_send_buffers_grown`); it is not dropped and
/// reads the last frame's fused images. `igtl_max_lag` is raised to 2 s here so that a
/// debug-build reader starved by a loaded CI machine is not what the test measures.
#[test]
fn a_client_reading_fused_frames_at_video_rate_is_not_dropped() {
    let ct = Arc::new(phantom_ct());
    let server = TestServer::start(phantom_session(None), |c| {
        c.fusion_ct = Some(FusionCt(ct.clone()));
        c.igtl_max_lag = Duration::from_secs(2);
    });
    let mut viewer = server.client();
    assert_eq!(viewer.recv().device_name, "GuidanceStatus");
    // The timestamp of the newest frame whose CTReslice the viewer has read.
    let newest_read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let newest_read = newest_read.clone();
        std::thread::spawn(move || {
            while let Some(m) = viewer.try_recv() {
                if m.device_name == CT_RESLICE_DEVICE {
                    newest_read.store(m.timestamp.0, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
    };
    let mut sender = server.client();
    let lps = image_to_lps([-20.0, -25.0, -10.0], [0.08, 0.0, 0.06], [0.0, 0.1, 0.0]);
    let mut last = 0;
    for k in 1..=45u64 {
        let mut m = frame(&lps, [512, 512, 1], ScalarType::U8);
        m.timestamp = pinhole_igtl::Timestamp(k << 32);
        sender.send(&m);
        last = k << 32;
        std::thread::sleep(Duration::from_millis(33));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while newest_read.load(std::sync::atomic::Ordering::SeqCst) != last && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stats = server.running().shared.stats();
    assert_eq!(stats.igtl_dropped_slow, 0, "{stats:?}");
    // The viewer's buffer grew (for the relayed frame, then the larger fused pair).
    assert!(stats.igtl_send_buffers_grown >= 1, "{stats:?}");
    assert_eq!(
        newest_read.load(std::sync::atomic::Ordering::SeqCst) >> 32,
        45,
        "the viewer did not read the last frame's CTReslice: {stats:?}"
    );
    drop(sender);
    drop(server);
    reader.join().unwrap();
}

#[test]
fn the_out_of_plane_alert_distance_is_configurable() {
    let server = TestServer::start(phantom_session(None), |c| {
        c.us_in_plane.alert_distance_mm = 10.0;
    });
    let mut client = server.client();
    let axial = image_to_lps([-32.0, -32.0, 0.0], [0.125, 0.0, 0.0], [0.0, 0.125, 0.0]);
    client.send(&frame(&axial, [512, 512, 1], ScalarType::U8));
    // 5 mm off: out of the plane (tolerance 2 mm), but within the 10 mm alert distance.
    client.send_pose(&pose_ras([-1.0, 10.0, 5.0], [0.0, -1.0, 0.0]));
    let (m, _) = client.metrics(1);
    assert_eq!(m["us_plane"]["in_plane"], false);
    assert_eq!(m["us_plane"]["out_of_plane_alert"], false);
    assert!(
        !m["alert_reasons"].to_string().contains("ultrasound"),
        "{m}"
    );
    // 12 mm off: beyond it.
    client.send_pose(&pose_ras([-1.0, 10.0, -12.0], [0.0, -1.0, 0.0]));
    let (m, _) = client.metrics(2);
    assert_eq!(m["us_plane"]["out_of_plane_alert"], true);
    let reasons = m["alert_reasons"].to_string();
    assert!(
        reasons.contains("12.0 mm out of the ultrasound image plane (alert beyond 10 mm)"),
        "{reasons}"
    );
}

/// Interop: pyigtl 0.3.4 (tests/py/guidance_peer.py `us-frame`) sends a 2-D 8-bit IMAGE
/// with its default LPS matrix; our server fuses it and pyigtl reads `CTReslice` and
/// `LabelReslice` back with the frame's geometry.
#[test]
fn a_frame_sent_by_pyigtl_is_fused_and_read_back_by_pyigtl() {
    let ct = Arc::new(phantom_ct());
    let server = TestServer::start(phantom_session(None), |c| {
        c.fusion_ct = Some(FusionCt(ct.clone()));
    });
    let dir = tempfile::tempdir().unwrap();
    let port = server.igtl_port().to_string();
    let out = python_json(
        "guidance_peer.py",
        &["us-frame", &port, dir.path().to_str().unwrap()],
    );
    assert_eq!(out["sent"]["world"], "lps", "pyigtl's default frame: {out}");
    // The plane as the script defined it, by hand (LPS): x (0.5 cos 20°, 0.5 sin 20°, 0),
    // y (0, 0, −0.5), origin (−15, −10, 12), 64 × 48.
    let (s, c) = 20f64.to_radians().sin_cos();
    let plane = ImagePlane::new(
        image_to_lps(
            [-15.0, -10.0, 12.0],
            [0.5 * c, 0.5 * s, 0.0],
            [0.0, 0.0, -0.5],
        ),
        64,
        48,
    )
    .unwrap();
    let labels = phantom_labels();
    let expected = reslice(&ct, Some(&labels), &plane, &ResliceOptions::default()).unwrap();
    let ct_px = std::fs::read(dir.path().join("ct_reslice.u8")).unwrap();
    let label_px = std::fs::read(dir.path().join("label_reslice.u8")).unwrap();
    assert_eq!((ct_px.len(), label_px.len()), (64 * 48, 64 * 48), "{out}");
    // The matrix travels as f32: a pixel on a window step may round the other way.
    let worst = expected
        .ct_hu
        .iter()
        .zip(&ct_px)
        .map(|(&hu, &got)| (i32::from(soft_tissue(hu)) - i32::from(got)).abs())
        .max()
        .unwrap();
    assert!(worst <= 1, "CTReslice differs by {worst} grey levels");
    let expected_labels = expected.labels.unwrap();
    let label_mismatch = expected_labels
        .iter()
        .zip(&label_px)
        .filter(|(&e, &g)| e as u8 != g)
        .count();
    assert!(
        label_mismatch <= 64 * 48 / 100,
        "{label_mismatch} label pixels differ"
    );
    assert!(
        label_px.contains(&(AORTA as u8)),
        "the frame crosses the aorta"
    );
    // pyigtl reads the fused images' geometry as the frame's (same matrix, its frame).
    for name in ["CTReslice", "LabelReslice"] {
        let m = &out[name]["ijk_to_world"];
        let sent = &out["sent"]["ijk_to_world"];
        for r in 0..3 {
            for k in [0, 1, 3] {
                let (a, b) = (m[r][k].as_f64().unwrap(), sent[r][k].as_f64().unwrap());
                assert_eq!(
                    out[name]["world"], "lps",
                    "read in the frame it was sent in"
                );
                assert!(
                    (a - b).abs() < 1e-4,
                    "{name} [{r}][{k}]: {a} vs {b} ({out})"
                );
            }
        }
    }
}

/// The upstream OpenIGTLink library's example `ImagerClient` (Debian
/// `openigtlink-examples` + `libopenigtlink-dev`, compiled here with g++) sends 8-bit
/// 256 × 256 IMAGEs, 1 mm pixels, matrix x = R, y = −A, centred at the RAS origin: our
/// server (`us_device = "ImagerClient"`) fuses them, equal to the reslice of that plane
/// defined by hand from the example's source.
#[test]
fn frames_from_the_upstream_cpp_imager_client_are_fused() {
    let examples = std::path::Path::new("/usr/share/doc/openigtlink-examples/examples/Imager");
    let headers = std::path::Path::new("/usr/include/openigtlink");
    assert!(
        examples.join("ImagerClient.cxx").is_file() && headers.is_dir(),
        "install Debian's openigtlink-examples and libopenigtlink-dev (as .ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("ImagerClient");
    let built = std::process::Command::new("g++")
        .arg("-O1")
        .arg("-o")
        .arg(&binary)
        .arg(examples.join("ImagerClient.cxx"))
        .arg(format!("-I{}", headers.display()))
        .arg("-lOpenIGTLink")
        .output()
        .expect("g++");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ct = Arc::new(phantom_ct());
    let server = TestServer::start(phantom_session(None), |c| {
        c.fusion_ct = Some(FusionCt(ct.clone()));
        c.us_device = "ImagerClient".into();
    });
    let mut viewer = server.client();
    assert_eq!(viewer.recv().device_name, "GuidanceStatus");
    let mut client = std::process::Command::new(&binary)
        .args(["127.0.0.1", &server.igtl_port().to_string(), "30"])
        .arg(examples.join("img"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (ct_image, label_image) = fused_images(&mut viewer);
    let _ = client.kill();
    let _ = client.wait();
    // The example's plane (ImagerClient.cxx): RAS x (1, 0, 0), y (0, −1, 0), 1 mm, the
    // matrix translation (0, 0, 0) is the image centre (OpenIGTLink's convention). LPS:
    // x (−1, 0, 0), y (0, 1, 0), origin = −127.5·(x + y) = (127.5, −127.5, 0).
    let plane = ImagePlane::new(
        image_to_lps([127.5, -127.5, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
        256,
        256,
    )
    .unwrap();
    let (expected_ct, expected_labels) = expected_fused(&ct, &plane);
    assert_eq!(
        ct_image.pixels, expected_ct,
        "CTReslice of the example's frame"
    );
    assert_eq!(label_image.pixels, expected_labels);
    assert!(expected_labels.contains(&(IVC as u8)));
    let stats = server.running().shared.stats();
    assert_eq!(stats.us_frames_refused, 0, "{stats:?}");
}
