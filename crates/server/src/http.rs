//! HTTP API for the web viewer (axum):
//! - `GET /api/health`: status, version, counters;
//! - `GET /api/session`: CT and label geometry, target, plan line, risk groups, inputs;
//! - `GET /api/guidance`: the latest metrics (204 before the first pose);
//! - `GET /ws/guidance`: WebSocket, one text message of metrics JSON per update
//!   (newest wins: a slow viewer skips stale updates);
//! - anything else: a file of the static folder, if one was configured. Paths are
//!   percent-decoded once and rejected if any segment is `..` or `.`, or holds a
//!   backslash or NUL; the result is canonicalised and must stay inside the canonical
//!   folder (so symlinks out of it are refused too).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::{log, Shared};
use pinhole_guidance::engine::NOTE;
use pinhole_guidance::scene::{DrrError, DrrPose, DrrQuality};
use pinhole_guidance::session::SessionResponse;

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.subscribe();
    let app = router(shared);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { crate::stopped(&mut shutdown).await })
        .await;
    if let Err(e) = result {
        log(format_args!("HTTP server stopped: {e}"));
    }
}

/// The axum router (public for tests that drive it without a socket).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/session", get(session))
        .route("/api/guidance", get(guidance))
        .route("/ws/guidance", get(ws_guidance))
        .route("/api/drr", get(drr))
        .route("/data/{name}", get(data_file))
        .fallback(static_file)
        .with_state(shared)
}

/// `/api/health`.
#[derive(Debug, serde::Serialize)]
struct Health {
    status: &'static str,
    note: &'static str,
    version: &'static str,
    igtl_port: u16,
    stats: crate::StatsSnapshot,
}

async fn health(State(shared): State<Arc<Shared>>) -> Json<Health> {
    Json(Health {
        status: "ok",
        note: NOTE,
        version: env!("CARGO_PKG_VERSION"),
        igtl_port: shared.config.igtl_addr.port(),
        stats: shared.stats(),
    })
}

async fn session(State(shared): State<Arc<Shared>>) -> Json<SessionResponse> {
    let registration = match shared.registration.read() {
        Ok(r) => *r,
        Err(_) => shared.session.registration,
    };
    Json(shared.session.response_with_registration(registration))
}

/// Query of `/api/drr`.
#[derive(Debug, serde::Deserialize)]
struct DrrQuery {
    #[serde(default)]
    lao_deg: f64,
    #[serde(default)]
    cran_deg: f64,
    size: Option<usize>,
    #[serde(default)]
    quality: DrrQuality,
}

async fn drr(State(shared): State<Arc<Shared>>, query: Query<DrrQuery>) -> Response {
    if shared
        .session
        .viewer
        .as_ref()
        .and_then(|v| v.drr.as_ref())
        .is_none()
    {
        return (StatusCode::NOT_FOUND, "no CT loaded for DRRs").into_response();
    }
    let angles_ok = query.lao_deg.abs() <= 180.0 && query.cran_deg.abs() <= 90.0;
    if !angles_ok {
        return (
            StatusCode::BAD_REQUEST,
            "lao_deg must be within ±180, cran_deg within ±90",
        )
            .into_response();
    }
    let pose = DrrPose {
        lao_deg: query.lao_deg,
        cran_deg: query.cran_deg,
        size: query.size.unwrap_or(384),
    };
    // Newest request wins: an older one still queued or rendering stops at its next stage.
    let ticket = shared.drr_requests.fetch_add(1, Ordering::SeqCst) + 1;
    let rendered = tokio::task::spawn_blocking(move || {
        let scene = shared
            .session
            .viewer
            .as_ref()
            .and_then(|v| v.drr.as_ref())?;
        let superseded = || shared.drr_requests.load(Ordering::SeqCst) != ticket;
        Some((
            scene.render_png(pose, query.quality, &superseded),
            scene.renderer().to_string(),
        ))
    })
    .await;
    match rendered {
        Ok(Some((Ok(png), renderer))) => (
            [
                (header::CONTENT_TYPE, "image/png".to_string()),
                (
                    header::HeaderName::from_static("x-pinhole-renderer"),
                    renderer,
                ),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            png,
        )
            .into_response(),
        Ok(Some((Err(DrrError::Superseded), _))) => (
            StatusCode::CONFLICT,
            "superseded by a newer /api/drr request",
        )
            .into_response(),
        Ok(Some((Err(e), _))) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `/data/<name>`: only the exact names the session registered, served from memory.
async fn data_file(State(shared): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> Response {
    let file = shared
        .session
        .viewer
        .as_ref()
        .and_then(|v| v.files.get(&name));
    match file {
        Some((content_type, bytes)) => (
            [(header::CONTENT_TYPE, *content_type)],
            axum::body::Bytes::copy_from_slice(bytes),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn guidance(State(shared): State<Arc<Shared>>) -> Response {
    match shared.latest() {
        Some(u) => (
            [(header::CONTENT_TYPE, "application/json")],
            u.json.to_string(),
        )
            .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn ws_guidance(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| ws_stream(shared, socket))
}

async fn ws_stream(shared: Arc<Shared>, mut socket: WebSocket) {
    let mut updates = shared.metrics.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    updates.mark_changed();
    loop {
        tokio::select! {
            _ = crate::stopped(&mut shutdown) => break,
            changed = updates.changed() => {
                if changed.is_err() { break; }
                let u = updates.borrow_and_update().clone();
                let Some(u) = u else { continue };
                let sent = tokio::time::timeout(
                    shared.config.write_timeout,
                    socket.send(WsMessage::Text(u.json.to_string().into())),
                ).await;
                if !matches!(sent, Ok(Ok(()))) { break; }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = socket.send(WsMessage::Close(None)).await;
}

async fn static_file(State(shared): State<Arc<Shared>>, method: Method, uri: Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Some(root) = &shared.config.static_dir else {
        return (StatusCode::NOT_FOUND, "no such endpoint").into_response();
    };
    let Some(path) = resolve_static(root, uri.path()) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    match std::fs::read(&path) {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&path))], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// The file under `root` that a request path names, or `None` when the path is unsafe
/// (traversal, absolute after decoding, backslashes, NUL, bad escapes), missing, or
/// resolves (through symlinks) outside `root`. `/` and folders give their `index.html`.
pub fn resolve_static(root: &Path, request_path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(request_path)?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut relative = PathBuf::new();
    for segment in decoded.split('/') {
        match segment {
            "" => continue,
            "." | ".." => return None,
            s if s.contains(':') => return None,
            s => relative.push(s),
        }
    }
    let root = std::fs::canonicalize(root).ok()?;
    let mut candidate = root.join(&relative);
    if candidate.is_dir() {
        candidate.push("index.html");
    }
    let resolved = std::fs::canonicalize(&candidate).ok()?;
    (resolved.starts_with(&root) && resolved.is_file()).then_some(resolved)
}

/// `%XX` decoding (once); `None` on a malformed escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("html") | Some("htm") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("wasm") => "application/wasm",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
