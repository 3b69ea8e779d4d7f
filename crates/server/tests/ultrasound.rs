//! Live ultrasound over OpenIGTLink (issue #20): tracked IMAGE frames answered with the
//! CT and labels resliced on them, bad frames counted, and the needle against the
//! frame's plane in the guidance metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinhole_igtl::{Body, Coordinate, Endian, ImageBody, Message, ScalarType};
use pinhole_server::fusion::{FusionCt, CT_RESLICE_DEVICE, LABEL_RESLICE_DEVICE};
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
