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
