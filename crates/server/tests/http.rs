//! HTTP API and WebSocket: health, session, latest metrics, WebSocket stream, static
//! files without path traversal; Host / Origin checks, the access token, timeouts, the
//! connection cap, shutdown with idle clients, shared `/data` bytes, fresh guidance for
//! slow viewers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

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
    let (status, _, body) = http_get_full(addr, path);
    (status, body)
}

fn decode_png(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    decode_rgb_png(bytes)
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
    // … and says so.
    let clamped = |path: &str| {
        let (status, head, _) = get_with(addr, path, "Host: localhost\r\n");
        assert_eq!(status, 200, "{path}");
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-pinhole-size-clamped")
                .then(|| v.trim().to_owned())
        })
    };
    assert_eq!(
        clamped("/api/drr?lao_deg=90&size=8").as_deref(),
        Some("requested=8 served=64")
    );
    assert_eq!(
        clamped("/api/drr?size=100000").as_deref(),
        Some("requested=100000 served=1024")
    );
    assert_eq!(clamped("/api/drr?size=96"), None);
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

/// A raw HTTP exchange: sends `request` verbatim and returns (status, head, body).
fn exchange(addr: std::net::SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn get_with(addr: std::net::SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n"),
    )
}

/// WebSocket handshake with extra headers: Ok(()) when upgraded, Err(status) otherwise.
fn ws_connect(
    server: &TestServer,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    u16,
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
    let mut request = format!("ws://{}{path}", server.http_addr())
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    match server
        .rt
        .block_on(tokio_tungstenite::connect_async(request))
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// DNS rebinding: a `Host` that names another site is refused (it got the CT before);
/// localhost, loopback addresses and names given in the configuration are served. A
/// WebSocket opened by a page of another site (its `Origin`) is refused.
#[test]
fn host_and_origin_are_checked() {
    let server = TestServer::start(phantom_session(None), |c| {
        c.allowed_hosts = vec!["viewer.lan".into()];
    });
    let addr = server.http_addr();
    let port = addr.port();
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        "localhost:abc".to_owned(),
        "[::1".to_owned(),
    ] {
        let (status, _, body) = get_with(addr, "/api/session", &format!("Host: {host}\r\n"));
        assert_eq!(status, 403, "Host {host}");
        assert!(body.contains("does not name this server"), "{host}: {body}");
        assert!(!body.contains("ijk_to_lps"), "{host} got the session");
    }
    for host in [
        format!("localhost:{port}"),
        "LOCALHOST".to_owned(),
        format!("127.0.0.1:{port}"),
        format!("127.8.9.10:{port}"),
        format!("[::1]:{port}"),
        format!("viewer.lan:{port}"),
        "Viewer.LAN.".to_owned(),
    ] {
        let (status, _, body) = get_with(addr, "/api/session", &format!("Host: {host}\r\n"));
        assert_eq!(status, 200, "Host {host}: {body}");
    }
    // The fallback (static files) is guarded too.
    let (status, _, _) = get_with(addr, "/index.html", "Host: evil.example\r\n");
    assert_eq!(status, 403);
    // Origin on the WebSocket upgrade.
    let refused = ws_connect(
        &server,
        "/ws/guidance",
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(refused.err(), Some(403));
    assert_eq!(
        ws_connect(&server, "/ws/guidance", &[("Origin", "null")]).err(),
        Some(403)
    );
    for origin in [
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
        "https://viewer.lan".to_owned(),
    ] {
        assert!(
            ws_connect(&server, "/ws/guidance", &[("Origin", &origin)]).is_ok(),
            "{origin}"
        );
    }
    assert!(
        ws_connect(&server, "/ws/guidance", &[]).is_ok(),
        "no Origin"
    );
}

/// With a token configured, every request and the WebSocket need it (bearer header,
/// `?token=` which sets a cookie, or that cookie); binding HTTP beyond loopback without
/// one is refused at start.
#[test]
fn token_is_required_when_configured() {
    const TOKEN: &str = "0123456789abcdef0123";
    let server = TestServer::start(phantom_session(None), |c| {
        c.token = Some(TOKEN.into());
    });
    let addr = server.http_addr();
    let (status, head, body) = get_with(addr, "/api/session", "Host: localhost\r\n");
    assert_eq!(status, 401, "{head}");
    assert!(body.contains("access token"), "{body}");
    assert_eq!(
        get_with(addr, "/api/health?token=wrong", "Host: localhost\r\n").0,
        401
    );
    assert_eq!(
        get_with(
            addr,
            "/api/health",
            "Host: localhost\r\nAuthorization: Bearer 0123456789abcdef0124\r\n"
        )
        .0,
        401
    );
    let bearer = format!("Host: localhost\r\nAuthorization: Bearer {TOKEN}\r\n");
    assert_eq!(get_with(addr, "/api/session", &bearer).0, 200);
    let (status, head, _) = get_with(
        addr,
        &format!("/api/health?token={TOKEN}"),
        "Host: localhost\r\n",
    );
    assert_eq!(status, 200);
    let cookie_line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie set: {head}"));
    assert!(cookie_line.contains(&format!("pinhole_token={TOKEN}")));
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"));
    let cookie = format!("Host: localhost\r\nCookie: a=b; pinhole_token={TOKEN}\r\n");
    assert_eq!(get_with(addr, "/api/session", &cookie).0, 200);
    assert_eq!(ws_connect(&server, "/ws/guidance", &[]).err(), Some(401));
    assert!(ws_connect(&server, &format!("/ws/guidance?token={TOKEN}"), &[]).is_ok());
    let auth = format!("Bearer {TOKEN}");
    assert!(ws_connect(&server, "/ws/guidance", &[("Authorization", &auth)]).is_ok());

    // Beyond loopback without a token: refused before listening.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = pinhole_server::ServerConfig {
        igtl_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: Some("0.0.0.0:0".parse().unwrap()),
        verbose: false,
        ..Default::default()
    };
    let err = rt
        .block_on(pinhole_server::start(phantom_session(None), config))
        .err()
        .expect("a non-loopback bind without a token was accepted");
    assert!(err.to_string().contains("without an access token"), "{err}");
    let token = pinhole_server::generate_token().unwrap();
    assert_eq!(token.len(), 32);
    assert_ne!(token, pinhole_server::generate_token().unwrap());
}

/// Half-open and idle HTTP connections are closed after the (lowered) header timeout;
/// before, they were kept forever.
#[test]
fn half_open_and_idle_http_connections_time_out() {
    let server = TestServer::start(phantom_session(None), |c| {
        c.http_header_timeout = Duration::from_millis(200);
    });
    let addr = server.http_addr();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /api/health HTTP/1.1\r\nHo").unwrap();
    let mut idle = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    for (s, what) in [(&mut half, "half-open"), (&mut idle, "idle")] {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = Vec::new();
        let r = s.read_to_end(&mut buf);
        assert!(
            r.is_ok()
                || !matches!(
                    r.as_ref().unwrap_err().kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            "{what} connection kept open"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // Requests still work.
    assert_eq!(get(addr, "/api/health").0, 200);
}

/// Over the (lowered) cap, a connection is answered 503 with the reason; once the
/// others leave, requests are served again.
#[test]
fn http_connection_cap() {
    let server = TestServer::start(phantom_session(None), |c| {
        c.max_http_connections = 4;
    });
    let addr = server.http_addr();
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let (status, _, body) = get_with(addr, "/api/health", "Host: localhost\r\n");
    assert_eq!(status, 503);
    assert!(body.contains("4 HTTP connections"), "{body}");
    assert!(server.running().shared.stats().http_refused >= 1);
    drop(idle);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        if get_with(addr, "/api/health", "Host: localhost\r\n").0 == 200 {
            break;
        }
        assert!(Instant::now() < end, "never served again");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Shutdown does not wait for idle or half-open clients (HTTP, WebSocket, OpenIGTLink).
#[test]
fn shutdown_does_not_wait_for_idle_clients() {
    let mut server = TestServer::start(phantom_session(None), |_| {});
    let addr = server.http_addr();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /api/health HTTP/1.1\r\nHo").unwrap();
    let _idle = TcpStream::connect(addr).unwrap();
    let _keepalive = {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        s
    };
    let _ws = ws_connect(&server, "/ws/guidance", &[]).unwrap();
    let _igtl = TcpStream::connect(("127.0.0.1", server.igtl_port())).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let running = server.running.take().unwrap();
    let started = Instant::now();
    let done = server.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), running.shutdown())
            .await
            .is_ok()
    });
    assert!(done, "shutdown waited for idle clients");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// `/data/<name>` shares the session's bytes: eight unread requests for a 32 MiB volume
/// do not copy it eight times (before: +256 MiB).
#[test]
fn data_files_are_shared_not_copied() {
    let _heavy = heavy_lock();
    let mut session = phantom_session(None);
    let bytes: std::sync::Arc<[u8]> = std::sync::Arc::from(vec![7u8; 32 << 20]);
    let mut viewer = pinhole_guidance::scene::Viewer::default();
    viewer
        .files
        .insert("ct.nii.gz".into(), ("application/octet-stream", bytes));
    session.viewer = Some(viewer);
    let server = TestServer::start(session, |_| {});
    let addr = server.http_addr();
    let before = rss_kb();
    let readers: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /data/ct.nii.gz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let growth_kb = rss_kb().saturating_sub(before);
    assert!(
        growth_kb < 96 * 1024,
        "8 unread /data requests grew memory by {growth_kb} kB"
    );
    // And the bytes are right.
    drop(readers);
    let (status, body) = get_bytes(addr, "/data/ct.nii.gz");
    assert_eq!(status, 200);
    assert_eq!(body.len(), 32 << 20);
    assert!(body.iter().all(|&b| b == 7));
}

/// A viewer that reads slowly (one message per 100 ms while poses arrive at ~500 Hz)
/// always gets fresh guidance: at most one update is queued towards it, so what it reads
/// is at most its own reading delay old (before: seconds, from the socket buffers).
#[test]
fn slow_websocket_reader_never_gets_stale_guidance() {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let server = TestServer::start(phantom_session(None), |_| {});
    let mut ws = ws_connect(&server, "/ws/guidance", &[]).unwrap();
    let published: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let shared = server.running().shared.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let published = published.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let y = 10.0 + (i % 5) as f64;
                let m = pose_ras([0.0, y, 0.0], [0.0, -1.0, 0.0]);
                let u = shared
                    .publish_pose(&m, 0.0, "NeedleTipToReference")
                    .unwrap();
                published.lock().unwrap().insert(u.seq, Instant::now());
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut texts = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let msg = server.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
        });
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            assert!(v["published_unix_s"].as_f64().is_some(), "no server stamp");
            let at = published.lock().unwrap().get(&seq).copied();
            if let Some(at) = at {
                worst = worst.max(at.elapsed());
            }
            texts += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    publisher.join().unwrap();
    assert!(texts >= 5, "{texts} updates read");
    assert!(
        worst < Duration::from_millis(400),
        "a slow viewer read guidance {worst:?} old"
    );
}

/// Regression (#25): `/api/drr`'s newest-wins was server-wide, so the newest request of
/// ANY viewer cancelled every other viewer's render and two viewers starved each other.
/// Now each client (`client=`, else its address) has at most one render in flight and
/// only its own newer request cancels it; a server-wide cap answers 503 beyond it.
///
/// A 200³ CT rendered full at 1024² takes long enough to overlap requests: client `a`'s
/// and client `b`'s renders run together and both complete while a third client gets a
/// 503 at the cap of two; `a`'s second request cancels its first (409) and completes.
#[test]
fn drr_renders_are_per_client_and_capped() {
    use pinhole_guidance::scene::{DrrScene, Viewer};
    use pinhole_volume::{Grid, Volume};
    let n = 200;
    let grid = Grid::axis_aligned([n, n, n], [1.0; 3], [-100.0; 3]).unwrap();
    let labels = Volume::new(grid.clone(), vec![0u16; grid.voxel_count()]).unwrap();
    let mu = Volume::new(grid.clone(), vec![0.02f32; grid.voxel_count()]).unwrap();
    let mut session = phantom_session(None);
    session.viewer = Some(Viewer {
        title: "slow renders".into(),
        drr: Some(DrrScene::new(mu, &labels, &[], Vec::new(), None)),
        ..Viewer::default()
    });
    let server = TestServer::start(session, |c| c.max_drr_renders = 2);
    let addr = server.http_addr();
    let shared = server.running().shared.clone();
    let rendering = move || shared.stats().drr_rendering;
    let wait_for = |what: &str, ok: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let request = |client: &str, lao: i32| {
        let path = format!("/api/drr?lao_deg={lao}&size=1024&quality=full&client={client}");
        std::thread::spawn(move || {
            let started = Instant::now();
            let (status, body) = get_bytes(addr, &path);
            (status, body, started.elapsed())
        })
    };

    // One render alone, for the record (and to know the overlaps below are real).
    let alone = request("solo", 0).join().unwrap();
    assert_eq!(alone.0, 200);
    wait_for("the solo render to end", &|| rendering() == 0);

    let a1 = request("a", 10);
    wait_for("a's render", &|| rendering() == 1);
    let b = request("b", 20);
    wait_for("a's and b's renders together", &|| rendering() == 2);
    // A third client beyond the cap of two: 503, with the reason.
    let (status, head, body) = get_with(
        addr,
        "/api/drr?lao_deg=30&size=1024&client=c",
        "Host: localhost\r\n",
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("max_drr_renders"), "{body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    // a's second request: its own first stops, b's does not.
    let a2 = request("a", 40);
    let (a1, b, a2) = (a1.join().unwrap(), b.join().unwrap(), a2.join().unwrap());
    assert_eq!(
        a1.0,
        409,
        "a's first request: {}",
        String::from_utf8_lossy(&a1.1)
    );
    assert!(String::from_utf8_lossy(&a1.1).contains("same client"));
    assert_eq!(b.0, 200, "b's request: {}", String::from_utf8_lossy(&b.1));
    assert_eq!(decode_png(&b.1).0, 1024);
    assert_eq!(
        a2.0,
        200,
        "a's second request: {}",
        String::from_utf8_lossy(&a2.1)
    );
    assert_eq!(decode_png(&a2.1).0, 1024);
    let stats = server.running().shared.stats();
    assert_eq!(stats.drr_refused, 1);
    wait_for("every render to end", &|| rendering() == 0);
    eprintln!(
        "one render {:?}; a1 (cancelled) {:?}, b {:?}, a2 {:?}",
        alone.2, a1.2, b.2, a2.2
    );

    // Without `client`, the peer address stands for it: requests from one address
    // supersede each other.
    let anonymous = |lao: i32| {
        let path = format!("/api/drr?lao_deg={lao}&size=1024&quality=full");
        std::thread::spawn(move || get_bytes(addr, &path).0)
    };
    let first = anonymous(10);
    wait_for("the anonymous render", &|| rendering() == 1);
    let second = anonymous(20);
    assert_eq!((first.join().unwrap(), second.join().unwrap()), (409, 200));
    // A malformed id is refused.
    assert_eq!(get(addr, "/api/drr?size=64&client=no%20spaces").0, 400);
    let long = "x".repeat(65);
    assert_eq!(get(addr, &format!("/api/drr?size=64&client={long}")).0, 400);
}
