//! HTTP API and WebSocket: health, session, latest metrics, WebSocket stream, static
//! files without path traversal.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use futures_util::StreamExt;
use pinhole_server::http::resolve_static;

use crate::common::*;

/// A minimal HTTP/1.1 GET with a raw socket: (status, body). The path is sent verbatim.
fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn static_folder() -> (tempfile::TempDir, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "<h1>viewer</h1>").unwrap();
    std::fs::create_dir(root.path().join("js")).unwrap();
    std::fs::write(root.path().join("js/app.js"), "let x = 1;").unwrap();
    std::fs::write(outside.path().join("secret.txt"), "SECRET").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        root.path().join("link.txt"),
    )
    .unwrap();
    (root, outside)
}

#[test]
fn api_endpoints_and_static_files() {
    let (root, outside) = static_folder();
    let root_path = root.path().to_path_buf();
    let server = TestServer::start(phantom_session(None), |c| {
        c.static_dir = Some(root_path);
    });
    let addr = server.http_addr();
    let (code, body) = get(addr, "/api/health");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ok");
    let (code, body) = get(addr, "/api/session");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["plan"]["line_defined"], true);
    assert_eq!(v["ct"]["dims"][0], 60);
    assert_eq!(v["plan"]["entry_lps"][1], -25.0);
    assert!(v["note"].as_str().unwrap().contains("Not for clinical use"));
    assert_eq!(v["risk_groups"][0]["labels"][0], "aorta");
    // No pose yet.
    assert_eq!(get(addr, "/api/guidance").0, 204);
    let mut c = server.client();
    c.send_pose(&pose_ras([-3.0, 10.0, 0.0], [0.0, -1.0, 0.0]));
    c.metrics(1);
    let (code, body) = get(addr, "/api/guidance");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_close(f(&v["lateral_deviation_mm"]), 3.0, 1e-5, "/api/guidance");

    // Static files.
    let (code, body) = get(addr, "/");
    assert_eq!((code, body.as_str()), (200, "<h1>viewer</h1>"));
    assert_eq!(get(addr, "/js/app.js").1, "let x = 1;");
    let secret = outside.path().join("secret.txt");
    for attack in [
        "/../secret.txt",
        "/js/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/js/%2e%2e/%2e%2e/secret.txt",
        "/..%5csecret.txt",
        "/link.txt",
        "/%00index.html",
        "/%zz",
    ] {
        let (code, body) = get(addr, attack);
        assert!(!body.contains("SECRET"), "{attack} leaked the file");
        assert!(code == 404 || code == 400, "{attack}: {code}");
    }
    let abs = format!("/{}", secret.display());
    assert!(!get(addr, &abs).1.contains("SECRET"));
    let abs_encoded = format!(
        "/%2F{}",
        secret.display().to_string().trim_start_matches('/')
    );
    assert!(!get(addr, &abs_encoded).1.contains("SECRET"));
}

#[test]
fn static_resolver_rejects_traversal() {
    let (root, outside) = static_folder();
    let r = root.path();
    let canonical = std::fs::canonicalize(r).unwrap();
    assert_eq!(resolve_static(r, "/"), Some(canonical.join("index.html")));
    assert_eq!(
        resolve_static(r, "/js/app.js"),
        Some(canonical.join("js/app.js"))
    );
    assert_eq!(resolve_static(r, "/js"), None, "no index in js/");
    for bad in [
        "/../x",
        "/%2e%2e/x",
        "/a/%2E%2E/%2e%2E/x",
        "/link.txt",
        "/missing.html",
        "/..\\x",
        "/%5c..%5cx",
        "/C:/x",
        "/%",
        "/%ff%fe",
    ] {
        assert_eq!(resolve_static(r, bad), None, "{bad}");
    }
    let abs = outside.path().join("secret.txt");
    assert_eq!(resolve_static(r, &abs.display().to_string()), None);
}

#[test]
fn websocket_streams_metrics() {
    let server = TestServer::start(phantom_session(None), |_| {});
    let url = format!("ws://{}/ws/guidance", server.http_addr());
    let (mut ws, _) = server
        .rt
        .block_on(tokio_tungstenite::connect_async(url))
        .unwrap();
    let mut c = server.client();
    for (i, y) in [10.0, 6.0].iter().enumerate() {
        c.send_pose(&pose_ras([0.0, *y, 0.0], [0.0, -1.0, 0.0]));
        let seq = i as u64 + 1;
        let v = server.rt.block_on(async {
            loop {
                let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["seq"].as_u64().unwrap() >= seq {
                        return v;
                    }
                }
            }
        });
        assert_close(f(&v["depth_remaining_mm"]), *y, 1e-5, "ws depth");
    }
}

/// A GET returning (status, body bytes).
fn get_bytes(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = out[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
}

fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// The viewer's endpoints: `/data/<name>` serves only registered in-memory files (no
/// traversal possible), `/api/session` lists them with lines, `/api/drr` renders a PNG in
/// which a dense bar on the patient's LEFT appears on the image's right (radiological
/// display), clamps the size, and refuses absurd angles.
#[test]
fn viewer_data_and_drr_endpoints() {
    use pinhole_guidance::scene::{DrrScene, Line, Viewer};
    let labels = phantom_labels();
    let mu = labels.map(|l| if l == AORTA { 0.05f32 } else { 0.0 });
    let mut session = phantom_session(None);
    let plan = Line {
        name: "needle #1 (best)".into(),
        kind: "plan".into(),
        points_lps: vec![[0.0, -25.0, 0.0], [0.0, 0.0, 0.0]],
        length_mm: Some(25.0),
    };
    let mut viewer = Viewer {
        title: "phantom".into(),
        lines: vec![plan.clone()],
        drr: Some(DrrScene::new(mu, &labels, &[], Vec::new(), None)),
        ..Viewer::default()
    };
    let ct_bytes: std::sync::Arc<[u8]> = std::sync::Arc::from(b"not really a NIfTI".to_vec());
    viewer.files.insert(
        "ct.nii.gz".into(),
        ("application/octet-stream", ct_bytes.clone()),
    );
    session.viewer = Some(viewer);
    let server = TestServer::start(session, |_| {});
    let addr = server.http_addr();

    let (status, body) = get(addr, "/api/session");
    assert_eq!(status, 200);
    let session: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(session["volumes"]["ct"]["url"], "/data/ct.nii.gz");
    assert!(session["volumes"]["labels"].is_null());
    assert_eq!(session["lines"][0]["kind"], "plan");
    assert_eq!(session["target_lps"], serde_json::json!([0.0, 0.0, 0.0]));

    assert_eq!(get_bytes(addr, "/data/ct.nii.gz"), (200, ct_bytes.to_vec()));
    for bad in [
        "/data/other.nii.gz",
        "/data/..%2F..%2Fetc%2Fpasswd",
        "/data/%2Fetc%2Fpasswd",
        "/data/../api/health",
        "/data/",
    ] {
        let (status, body) = get(addr, bad);
        assert!(status == 404 || status == 400, "{bad}: {status}");
        assert!(!body.contains("root:"), "{bad}");
    }

    // Both qualities (the exact one and the slider preview) show the bar on the right.
    for quality in ["full", "preview"] {
        let (status, png_bytes) = get_bytes(
            addr,
            &format!("/api/drr?lao_deg=0&cran_deg=0&size=96&quality={quality}"),
        );
        assert_eq!(status, 200, "{quality}");
        let (w, h, rgb) = decode_png(&png_bytes);
        assert_eq!((w, h), (96, 96));
        let column_mean = |x0: usize, x1: usize| -> f64 {
            let mut sum = 0.0;
            for y in 0..96 {
                for x in x0..x1 {
                    sum += f64::from(rgb[3 * (y * 96 + x)]);
                }
            }
            sum / (96.0 * (x1 - x0) as f64)
        };
        // Attenuation shows dark; the bar (patient left, x = +11 mm, ~3 detector pixels
        // at 4.2 mm/pixel and magnification 1.2) is the darkest column, right of centre.
        let darkest = (0..96)
            .min_by(|&a, &b| column_mean(a, a + 1).total_cmp(&column_mean(b, b + 1)))
            .unwrap();
        assert!(
            (49..56).contains(&darkest),
            "{quality}: darkest column {darkest} ({} vs background {})",
            column_mean(darkest, darkest + 1),
            column_mean(0, 40)
        );
        assert!(column_mean(darkest, darkest + 1) + 20.0 < column_mean(0, 40));
    }
    assert_eq!(get(addr, "/api/drr?quality=draft").0, 400);
    let (status, tiny) = get_bytes(addr, "/api/drr?lao_deg=90&size=8");
    assert_eq!(status, 200);
    assert_eq!(decode_png(&tiny).0, 64, "size is clamped to 64..1024");
    let (status, _) = get(addr, "/api/drr?lao_deg=500");
    assert_eq!(status, 400);
    let (status, _) = get(addr, "/api/drr?lao_deg=abc");
    assert_eq!(status, 400);
}

/// Without a viewer (API-only session) the viewer endpoints answer 404, not 500.
#[test]
fn viewer_endpoints_without_a_viewer() {
    let server = TestServer::start(phantom_session(None), |_| {});
    let addr = server.http_addr();
    assert_eq!(get(addr, "/api/drr?lao_deg=0").0, 404);
    assert_eq!(get(addr, "/data/ct.nii.gz").0, 404);
}
