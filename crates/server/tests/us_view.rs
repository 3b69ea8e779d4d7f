//! The web viewer's ultrasound pictures (issue #20): `/api/us/latest` and
//! `/api/us/frame.png` after a tracked frame, checked against closed-form geometry on the
//! phantom (vessels in known columns, plan along +y), and the 404 before any frame.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinhole_guidance::scene::{LabelColor, Viewer};
use pinhole_igtl::{Body, Coordinate, Endian, ImageBody, Message, ScalarType};
use pinhole_server::fusion::FusionCt;
use pinhole_volume::annotate::{Canvas, Edge};
use pinhole_volume::math::Mat4;
use pinhole_volume::Volume;
use serde_json::Value;

use crate::common::*;

const AORTA_COLOR: [u8; 3] = [250, 20, 30];
const IVC_COLOR: [u8; 3] = [20, 40, 250];
/// HU of the constant CT: the level of the soft-tissue window, grey 128.
const CT_HU: f32 = 40.0;

/// The phantom session with a viewer scene that colours the two vessels.
fn session_with_colours() -> pinhole_guidance::Session {
    let mut session = phantom_session(None);
    session.viewer = Some(Viewer {
        labels: vec![
            LabelColor {
                id: u32::from(AORTA),
                name: "aorta".into(),
                color: AORTA_COLOR,
            },
            LabelColor {
                id: u32::from(IVC),
                name: "inferior_vena_cava".into(),
                color: IVC_COLOR,
            },
        ],
        ..Viewer::default()
    });
    session
}

fn constant_ct() -> Volume<f32> {
    let grid = phantom_labels().grid().clone();
    let n = grid.voxel_count();
    Volume::new(grid, vec![CT_HU; n]).unwrap()
}

/// An IMAGE of `Image_Reference` on the plane with LPS origin and pixel steps; pixel
/// value `5·i` (so the blend is checkable per column).
fn frame(origin: [f64; 3], x: [f64; 3], y: [f64; 3], w: u16, h: u16) -> Message {
    let n = [
        x[1] * y[2] - x[2] * y[1],
        x[2] * y[0] - x[0] * y[2],
        x[0] * y[1] - x[1] * y[0],
    ];
    let mut m: Mat4 = [[0.0; 4]; 4];
    for r in 0..3 {
        m[r] = [x[r], y[r], n[r], origin[r]];
    }
    m[3][3] = 1.0;
    // LPS → RAS on the world side only.
    for row in m.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    let pixels = (0..usize::from(w) * usize::from(h))
        .map(|o| ((o % usize::from(w)) * 5).min(255) as u8)
        .collect();
    let body = ImageBody::new(
        [w, h, 1],
        ScalarType::U8,
        1,
        Endian::Big,
        Coordinate::Ras,
        &m,
        pixels,
    );
    Message::new("Image_Reference", Body::Image(body))
}

/// A GET: (status, headers in lower case, body).
fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    http_get_full(addr, path)
}

fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    decode_rgb_png(bytes)
}

/// Polls `/api/us/latest` until it describes frame `seq` or later (bounded).
fn latest(addr: std::net::SocketAddr, seq: u64) -> Value {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, body) = get(addr, "/api/us/latest");
        if status == 200 {
            let v: Value = serde_json::from_slice(&body).unwrap();
            if v["seq"].as_u64().unwrap() >= seq {
                return v;
            }
        } else {
            assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
        }
        assert!(Instant::now() < end, "no ultrasound view for frame {seq}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rgb_at(rgb: &[u8], width: usize, i: usize, j: usize) -> [u8; 3] {
    let o = 3 * (j * width + i);
    [rgb[o], rgb[o + 1], rgb[o + 2]]
}

#[test]
fn a_frame_gives_annotated_pictures_with_contours_where_geometry_puts_them() {
    let ct = Arc::new(constant_ct());
    let server = TestServer::start(session_with_colours(), |c| {
        c.fusion_ct = Some(FusionCt(ct.clone()));
    });
    let addr = server.http_addr();

    // Before any frame: the picture is a 404 with a JSON reason; the description is
    // "no content" (as `/api/guidance` before a pose: a polling viewer logs no error).
    for path in [
        "/api/us/frame.png?view=blend",
        "/api/us/frame.png?view=reslice",
    ] {
        let (status, head, body) = get(addr, path);
        assert_eq!(status, 404, "{path}");
        assert!(head.contains("application/json"), "{path}: {head}");
        let reason: Value = serde_json::from_slice(&body).unwrap();
        assert!(reason["error"]
            .as_str()
            .unwrap()
            .contains("no ultrasound frame"));
    }
    let (status, _, body) = get(addr, "/api/us/latest");
    assert_eq!((status, body.len()), (204, 0));

    // An axial frame at z = 5 mm: pixel x towards the patient's left (+x LPS), y
    // posterior (+y), 1 mm pixels, pixel (0, 0) at (−25, −20). The aorta fills
    // x ∈ [10, 12] mm: pixel columns 35–37; the IVC x ∈ [−20, −18]: columns 5–7. (Wide
    // enough that the scale bar's label stays clear of the bottom letter.)
    let (w, h) = (120u16, 40u16);
    let mut sender = server.client();
    sender.send(&frame(
        [-25.0, -20.0, 5.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        w,
        h,
    ));
    let v = latest(addr, 1);
    assert_eq!(v["width_px"], 120);
    assert_eq!(v["height_px"], 40);
    assert_eq!(v["pixel_spacing_mm"], serde_json::json!([1.0, 1.0]));
    // Radiological-style letters: +x is the patient's left, on the right edge.
    assert_eq!(
        v["letters"],
        serde_json::json!({"left": "R", "right": "L", "top": "A", "bottom": "P"})
    );
    assert!(v["age_ms"].as_f64().unwrap() >= 0.0);

    let (w, h) = (usize::from(w), usize::from(h));
    let (status, head, png) = get(addr, "/api/us/frame.png?view=blend");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: image/png"));
    assert!(head.contains("x-pinhole-us-seq: 1"), "{head}");
    let (pw, ph, mut blend) = decode_png(&png);
    assert_eq!((pw, ph), (w, h));
    let (status, _, png) = get(addr, "/api/us/frame.png?view=reslice");
    assert_eq!(status, 200);
    let (pw, ph, reslice) = decode_png(&png);
    assert_eq!((pw, ph), (w, h));

    // Row 12, away from the letters, the scale bar and the plan (column 25).
    let j = 12;
    for picture in [&blend, &reslice] {
        // The vessels' outer columns are their contours; their inside is not.
        for i in [35, 37] {
            assert_eq!(rgb_at(picture, w, i, j), AORTA_COLOR, "aorta column {i}");
        }
        for i in [5, 7] {
            assert_eq!(rgb_at(picture, w, i, j), IVC_COLOR, "IVC column {i}");
        }
        assert_ne!(rgb_at(picture, w, 36, j), AORTA_COLOR);
    }
    // Outside the contours: the reslice is the CT window's grey (40 HU → 128), the blend
    // the rounded mean of the ultrasound (5·i) and the CT.
    for i in [15, 30, 36] {
        assert_eq!(rgb_at(&reslice, w, i, j), [128; 3], "reslice column {i}");
        let mean = ((5.0 * i as f32 + 128.0) / 2.0).round() as u8;
        assert_eq!(rgb_at(&blend, w, i, j), [mean; 3], "blend column {i}");
    }
    // The plan runs entry (0, −25, 0) → target (0, 0, 0): projected on column 25 from
    // row −5 to row 20; the target is 5 mm from the plane, its default radius: a dot.
    assert_eq!(
        rgb_at(&blend, w, 25, 15),
        pinhole_ultrasound::compose::PLAN_COLOR
    );

    // The letters are drawn where the annotation layout puts them.
    let canvas = Canvas {
        rgb: &mut blend,
        width: w,
        height: h,
    };
    for (letters, edge) in [
        ("L", Edge::Right),
        ("R", Edge::Left),
        ("A", Edge::Top),
        ("P", Edge::Bottom),
    ] {
        let (x, y, scale) = canvas.letters_position(letters, edge);
        assert!(
            canvas.shows_text(x, y, letters, scale),
            "{letters} on {edge:?}"
        );
    }

    // A second, sagittal frame: pixel x anterior (−y LPS), y inferior (−z).
    sender.send(&frame(
        [0.0, 10.0, 10.0],
        [0.0, -0.5, 0.0],
        [0.0, 0.0, -0.5],
        512,
        384,
    ));
    let v = latest(addr, 2);
    assert_eq!(
        v["letters"],
        serde_json::json!({"left": "P", "right": "A", "top": "S", "bottom": "I"})
    );
    assert_eq!(v["pixel_spacing_mm"], serde_json::json!([0.5, 0.5]));
    let (status, _, png) = get(addr, "/api/us/frame.png?view=reslice");
    assert_eq!(status, 200);
    assert_eq!(decode_png(&png).0, 512);

    let (status, _, body) = get(addr, "/api/us/frame.png?view=mri");
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("blend or reslice"));
}

/// The tracked needle is drawn on the pictures where `needle_in_plane` projects it: a tip
/// in the axial frame's plane (z = 0) at LPS (−5, 0, 0), the needle along +x (towards the
/// patient's left), so its shaft runs left of the tip and its path right of it, on the
/// tip's row.
#[test]
fn the_tracked_needle_is_drawn_on_the_pictures() {
    let ct = Arc::new(constant_ct());
    let server = TestServer::start(session_with_colours(), |c| {
        c.fusion_ct = Some(FusionCt(ct.clone()));
    });
    let addr = server.http_addr();
    assert_eq!(get(addr, "/api/us/latest").0, 204);
    let mut client = server.client();
    // RAS: tip (5, 0, 0), axis (−1, 0, 0) = LPS tip (−5, 0, 0), axis +x.
    client.send_pose(&pose_ras([5.0, 0.0, 0.0], [-1.0, 0.0, 0.0]));
    client.metrics(1);
    // Axial frame at z = 0, 1 mm pixels, pixel (0, 0) at LPS (−25, −20): the tip at
    // pixel (20, 20).
    client.send(&frame(
        [-25.0, -20.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        120,
        40,
    ));
    latest(addr, 1);
    let (status, _, png) = get(addr, "/api/us/frame.png?view=reslice");
    assert_eq!(status, 200);
    let (w, _, rgb) = decode_png(&png);
    let needle = pinhole_ultrasound::compose::NEEDLE_IN_PLANE_COLOR;
    // Shaft behind the tip (columns < 20), path ahead (> 20), on row 20; the plan's
    // column (25) is crossed by the path, so look at 15 and 45.
    assert_eq!(rgb_at(&rgb, w, 15, 20), needle, "shaft");
    assert_eq!(rgb_at(&rgb, w, 45, 20), needle, "predicted path");
    assert_ne!(rgb_at(&rgb, w, 15, 30), needle, "off the needle's row");
}
