//! HTTP API for the web viewer (axum):
//! - `GET /api/health`: status, version, counters;
//! - `GET /api/session`: CT and label geometry, target, plan line, risk groups, inputs;
//! - `GET /api/guidance`: the latest metrics (204 before the first pose);
//! - `GET /ws/guidance`: WebSocket, one text message of metrics JSON per update
//!   (newest wins, and the next update only after the previous one's ping was answered:
//!   a slow viewer skips stale updates instead of reading them from socket buffers);
//! - `GET /api/drr`: simulated fluoroscopy; at most one render per client in flight (the
//!   `client` parameter, else the peer address: a newer request cancels the older one),
//!   at most `max_drr_renders` at once server-wide (503 beyond);
//! - `GET /api/us/latest`: the newest fused ultrasound frame's description (seq, size,
//!   pixel spacing, orientation letters, age; 204 before any frame, as `/api/guidance`,
//!   so that a polling viewer logs no errors);
//! - `GET /api/us/frame.png?view=blend|reslice`: its picture, PNG encoded on request
//!   (off the async threads) with orientation letters and a scale bar;
//! - `POST /api/control-ct`: a control CT (the body: one NIfTI, `.nii` or `.nii.gz`, or
//!   NRRD file with attached data) for the needle check ([`crate::control_ct`]): 202
//!   with `{seq}` once decoded and accepted (checked on a worker thread, newest wins);
//!   413 when `Content-Length` (or the bytes read) exceed `control_ct_max_bytes`, 400
//!   `{error}` when unreadable or not a CT, 409 `{error}` when the session cannot check
//!   it (no planning CT, or a target without a planned line), 503 while
//!   [`crate::CONTROL_CT_UPLOADS`] uploads are being received, 403 from a page of another
//!   origin (`Origin` checked like WebSockets);
//! - `GET /api/control-ct/latest`: the latest check ([`crate::control_ct::ControlCheck`]:
//!   `processing`, `done` with the needle and metrics, or `failed` with the reason); 204
//!   before any control scan;
//! - anything else: a file of the static folder, if one was configured. Paths are
//!   percent-decoded once and rejected if any segment is `..` or `.`, or holds a
//!   backslash or NUL; the result is canonicalised and must stay inside the canonical
//!   folder (so symlinks out of it are refused too).
//!
//! Every request passes [`host_allowed`] (DNS rebinding) and, when a token is
//! configured, must present it; WebSocket upgrades also pass [`origin_allowed`]. The
//! connection loop is hyper's HTTP/1 with a request-head timeout, a connection cap (503
//! beyond it) and a shutdown that gives requests in progress `shutdown_grace` and drops
//! idle connections at once. See `docs/security.md`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{canonical_ip, log, ServerConfig, Shared};
use pinhole_guidance::engine::NOTE;
use pinhole_guidance::scene::{DrrError, DrrPose, DrrQuality, DRR_SIZE_RANGE};
use pinhole_guidance::session::SessionResponse;

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.subscribe();
    let app = router(shared.clone());
    let cfg = &shared.config;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.http_header_timeout);
    let mut connections = tokio::task::JoinSet::new();
    let mut refusals_unlogged = 0u64;
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = crate::stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    log(format_args!("HTTP accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Ok(slot) = shared.http_slots.clone().try_acquire_owned() else {
            shared.stats.http_refused.fetch_add(1, Ordering::Relaxed);
            crate::refuse_connection(&shared, stream, refusal(cfg.max_http_connections));
            refusals_unlogged += 1;
            if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                log(format_args!(
                    "refused {refusals_unlogged} HTTP connection(s) (latest from {peer}): {} open, \
                     the limit (max_http_connections)",
                    cfg.max_http_connections
                ));
                refusals_unlogged = 0;
                last_refusal_log = Some(Instant::now());
            }
            continue;
        };
        // The peer address, for `/api/drr` requests that do not name their client.
        let app = app.clone().layer(axum::Extension(Peer(peer)));
        let conn = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
            .with_upgrades();
        let mut stop = shared.shutdown.subscribe();
        let grace = cfg.shutdown_grace;
        connections.spawn(async move {
            let _slot = slot;
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = crate::stopped(&mut stop) => {}
            }
            // Idle connections close now; a request in progress gets `grace` to finish.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(grace, conn).await;
        });
    }
    while connections.join_next().await.is_some() {}
}

/// The 503 a connection over the cap receives.
fn refusal(cap: usize) -> Vec<u8> {
    let body = format!("Pinhole: {cap} HTTP connections are open (the limit); try again later\n");
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The axum router (public for tests that drive it without a socket).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/session", get(session))
        .route("/api/guidance", get(guidance))
        .route("/ws/guidance", get(ws_guidance))
        .route("/api/drr", get(drr))
        .route("/api/us/latest", get(us_latest))
        .route("/api/us/frame.png", get(us_frame_png))
        .route("/api/control-ct", post(control_ct_upload))
        .route("/api/control-ct/latest", get(control_ct_latest))
        .route("/data/{name}", get(data_file))
        .fallback(static_file)
        .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// Name of the cookie that carries the access token.
pub const TOKEN_COOKIE: &str = "pinhole_token";

/// Every request: `Host` must name this server (DNS rebinding), and the access token
/// must be presented when one is configured.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(host) = request.headers().get(header::HOST) {
        let host = host.to_str().unwrap_or("(not text)");
        if !host_allowed(&shared.config, host) {
            return (
                StatusCode::FORBIDDEN,
                format!(
                    "refused: Host {host:?} does not name this server (allowed: localhost, \
                     loopback addresses, the bound address{}; add names with --allowed-host)\n",
                    if shared.config.allowed_hosts.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", shared.config.allowed_hosts.join(", "))
                    }
                ),
            )
                .into_response();
        }
    }
    let mut set_cookie = None;
    if let Some(token) = &shared.config.token {
        match presented_token(&request) {
            Some((value, from_query)) if same_secret(value, token) => {
                if from_query {
                    set_cookie = Some(format!(
                        "{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
                    ));
                }
            }
            _ => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer")],
                    "this server requires its access token: open the URL it printed \
                     (http://…/?token=…) or send \"Authorization: Bearer <token>\"\n",
                )
                    .into_response();
            }
        }
    }
    let mut response = next.run(request).await;
    if let Some(cookie) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The token a request presents: (value, came from `?token=`).
fn presented_token(request: &Request) -> Option<(&str, bool)> {
    let headers = request.headers();
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some((bearer.trim(), false));
    }
    if let Some(query) = request.uri().query() {
        if let Some(t) = query.split('&').find_map(|kv| kv.strip_prefix("token=")) {
            return Some((t, true));
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))
        .map(|t| (t, false))
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a `Host` header value (`name[:port]`, `[v6]:port`) names this server: the
/// names `localhost` and `config.allowed_hosts`, any loopback address, the bound
/// address, or any IP address when bound to all interfaces. Names other than these are
/// what DNS rebinding uses, so they are refused; the port is not checked.
pub fn host_allowed(config: &ServerConfig, host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) if tail.is_empty() || tail.starts_with(':') => v6,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return false;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        let ip = canonical_ip(ip);
        let bound = config.http_addr.map(|a| canonical_ip(a.ip()));
        return ip.is_loopback()
            || bound.is_some_and(|b| b == ip || b.is_unspecified())
            || config
                .allowed_hosts
                .iter()
                .any(|h| h.parse::<IpAddr>().is_ok_and(|a| canonical_ip(a) == ip));
    }
    name == "localhost"
        || config
            .allowed_hosts
            .iter()
            .any(|h| h.trim_end_matches('.').eq_ignore_ascii_case(&name))
}

/// Whether a WebSocket `Origin` (`scheme://host[:port]`) is a page of an allowed host.
pub fn origin_allowed(config: &ServerConfig, origin: &str) -> bool {
    let Some((scheme, authority)) = origin.trim().split_once("://") else {
        return false;
    };
    matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https")
        && !authority.contains(['/', '@'])
        && host_allowed(config, authority)
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
    let mut response = shared.session.response_with_registration(registration);
    response.source_events = shared.source_events();
    Json(response)
}

/// Response header of `/api/drr` when `size` was outside [`DRR_SIZE_RANGE`].
pub const SIZE_CLAMPED: header::HeaderName =
    header::HeaderName::from_static("x-pinhole-size-clamped");

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
    /// Who asks (the viewer sends a random id per page load): a client's newer request
    /// cancels its older one. Absent: the peer's IP address stands for it.
    client: Option<String>,
}

/// The TCP peer of an HTTP connection (a request extension).
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

/// Longest `client` id of `/api/drr`.
const MAX_CLIENT_ID_LEN: usize = 64;

/// `/api/drr` renders: at most one in flight per client (a newer request from the same
/// client cancels the older one at its next stage), at most `max_drr_renders` at once.
pub(crate) struct DrrRenders {
    cap: usize,
    slots: Arc<Semaphore>,
    tickets: AtomicU64,
    /// Clients with a request in progress, with how many they have (entries go with
    /// their last request: at most one per open HTTP connection).
    clients: Mutex<HashMap<String, (Arc<DrrClient>, usize)>>,
}

struct DrrClient {
    /// Ticket of the client's newest request.
    newest: AtomicU64,
    /// The client's one render slot.
    turn: Arc<Semaphore>,
}

impl DrrRenders {
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            cap,
            slots: Arc::new(Semaphore::new(cap)),
            tickets: AtomicU64::new(0),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Renders in progress.
    pub(crate) fn rendering(&self) -> usize {
        self.cap.saturating_sub(self.slots.available_permits())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<DrrClient>, usize)>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One `/api/drr` request, from arrival to the end of its render: the newest of its
/// client's until a newer one arrives.
struct DrrTicket {
    shared: Arc<Shared>,
    key: String,
    client: Arc<DrrClient>,
    ticket: u64,
}

impl DrrTicket {
    fn arrive(shared: &Arc<Shared>, key: String) -> Self {
        let renders = &shared.drr;
        let ticket = renders.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let client = {
            let mut clients = renders.lock();
            let entry = clients.entry(key.clone()).or_insert_with(|| {
                (
                    Arc::new(DrrClient {
                        newest: AtomicU64::new(0),
                        turn: Arc::new(Semaphore::new(1)),
                    }),
                    0,
                )
            });
            entry.1 += 1;
            entry.0.newest.store(ticket, Ordering::SeqCst);
            entry.0.clone()
        };
        Self {
            shared: shared.clone(),
            key,
            client,
            ticket,
        }
    }

    fn superseded(&self) -> bool {
        self.client.newest.load(Ordering::SeqCst) != self.ticket
    }
}

impl Drop for DrrTicket {
    fn drop(&mut self) {
        let mut clients = self.shared.drr.lock();
        if let Some(entry) = clients.get_mut(&self.key) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                clients.remove(&self.key);
            }
        }
    }
}

/// Set when the request's future is dropped (the client closed the connection): its
/// render stops at the next stage.
struct Abandoned(Arc<AtomicBool>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

const SUPERSEDED: &str = "superseded by a newer /api/drr request from the same client";

async fn drr(
    State(shared): State<Arc<Shared>>,
    peer: Option<axum::Extension<Peer>>,
    query: Query<DrrQuery>,
) -> Response {
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
    let key = match &query.client {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_CLIENT_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            format!("client:{id}")
        }
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("client must be 1 to {MAX_CLIENT_ID_LEN} characters of [A-Za-z0-9_-]"),
            )
                .into_response()
        }
        None => match peer {
            Some(axum::Extension(Peer(addr))) => format!("peer:{}", canonical_ip(addr.ip())),
            None => "peer:unknown".to_owned(),
        },
    };
    let requested = query.size.unwrap_or(384);
    let served = requested.clamp(DRR_SIZE_RANGE.0, DRR_SIZE_RANGE.1);
    let pose = DrrPose {
        lao_deg: query.lao_deg,
        cran_deg: query.cran_deg,
        size: served,
    };
    // This client's newest request wins: its older one, still waiting or rendering,
    // stops at its next stage; then this one waits for that render's turn to end.
    let ticket = DrrTicket::arrive(&shared, key);
    let Ok(turn) = ticket.client.turn.clone().acquire_owned().await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if ticket.superseded() {
        return (StatusCode::CONFLICT, SUPERSEDED).into_response();
    }
    let Ok(slot) = shared.drr.slots.clone().try_acquire_owned() else {
        shared.stats.drr_refused.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!(
                "Pinhole: {} DRR renders are in progress (the limit, max_drr_renders); try \
                 again shortly\n",
                shared.drr.cap
            ),
        )
            .into_response();
    };
    let abandoned = Abandoned(Arc::new(AtomicBool::new(false)));
    let gone = abandoned.0.clone();
    let quality = query.quality;
    let rendered = tokio::task::spawn_blocking(move || {
        let scene = ticket
            .shared
            .session
            .viewer
            .as_ref()
            .and_then(|v| v.drr.as_ref())?;
        let stop = || ticket.superseded() || gone.load(Ordering::SeqCst);
        let out = (
            scene.render_png(pose, quality, &stop),
            scene.renderer().to_string(),
        );
        // The server-wide slot first, so that this client's next request finds it.
        drop(slot);
        drop(turn);
        Some(out)
    })
    .await;
    drop(abandoned);
    match rendered {
        Ok(Some((Ok(png), renderer))) => {
            let mut response = (
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
                .into_response();
            if served != requested {
                if let Ok(v) =
                    HeaderValue::from_str(&format!("requested={requested} served={served}"))
                {
                    response.headers_mut().insert(SIZE_CLAMPED, v);
                }
            }
            response
        }
        Ok(Some((Err(DrrError::Superseded), _))) => {
            (StatusCode::CONFLICT, SUPERSEDED).into_response()
        }
        Ok(Some((Err(e), _))) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// `/api/us/latest`.
#[derive(Debug, serde::Serialize)]
struct UsLatest {
    seq: u64,
    width_px: usize,
    height_px: usize,
    /// `[x, y]`, mm.
    pixel_spacing_mm: [f64; 2],
    /// The patient direction each edge of the pictures faces.
    letters: crate::fusion::EdgeLetters,
    /// The frame's OpenIGTLink timestamp, seconds since 1970.
    timestamp_s: f64,
    /// Time since the server accepted the frame (ms).
    age_ms: f64,
    /// Time the fusion worker spent building both pictures (ms).
    build_ms: f64,
    views: [crate::fusion::UsViewKind; 2],
    ct_weight: f32,
}

/// The 404 before any ultrasound frame was fused.
fn no_us_frame() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "error": "no ultrasound frame fused yet: send an IMAGE of the ultrasound device \
                      over OpenIGTLink"
        })),
    )
        .into_response()
}

async fn us_latest(State(shared): State<Arc<Shared>>) -> Response {
    shared.want_us_view();
    let Some(view) = shared.us_view() else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let latest = UsLatest {
        seq: view.seq,
        width_px: view.width_px,
        height_px: view.height_px,
        pixel_spacing_mm: view.spacing_mm,
        letters: view.letters.clone(),
        timestamp_s: view.timestamp_s,
        age_ms: view.received.elapsed().as_secs_f64() * 1e3,
        build_ms: view.build_us as f64 / 1e3,
        views: [
            crate::fusion::UsViewKind::Blend,
            crate::fusion::UsViewKind::Reslice,
        ],
        ct_weight: crate::fusion::US_BLEND_CT_WEIGHT,
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(latest)).into_response()
}

/// Query of `/api/us/frame.png` (other parameters, such as a cache-busting `seq`, are
/// ignored).
#[derive(Debug, serde::Deserialize)]
struct UsFrameQuery {
    view: Option<String>,
}

/// Response header of `/api/us/frame.png`: the seq of the frame shown.
pub const US_SEQ: header::HeaderName = header::HeaderName::from_static("x-pinhole-us-seq");

async fn us_frame_png(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<UsFrameQuery>,
) -> Response {
    shared.want_us_view();
    let kind = match query.view.as_deref() {
        None | Some("blend") => crate::fusion::UsViewKind::Blend,
        Some("reslice") => crate::fusion::UsViewKind::Reslice,
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({
                    "error": format!("view must be blend or reslice, got {other:?}")
                })),
            )
                .into_response()
        }
    };
    let Some(view) = shared.us_view() else {
        return no_us_frame();
    };
    let seq = view.seq;
    match tokio::task::spawn_blocking(move || crate::fusion::us_view_png(&view, kind)).await {
        Ok(Ok(png)) => (
            [
                (header::CONTENT_TYPE, "image/png".to_string()),
                (header::CACHE_CONTROL, "no-store".to_string()),
                (US_SEQ, seq.to_string()),
            ],
            png,
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": e })),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A JSON `{error}` answer.
fn json_error(status: StatusCode, error: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": error.to_string() })),
    )
        .into_response()
}

/// `POST /api/control-ct` (see the module doc).
async fn control_ct_upload(
    State(shared): State<Arc<Shared>>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    // A page of another site may POST here without the token (loopback needs none):
    // only pages of this server's allowed hosts may.
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)");
        if !origin_allowed(&shared.config, origin) {
            return json_error(
                StatusCode::FORBIDDEN,
                format!("refused: an upload from a page of {origin:?} (see --allowed-host)"),
            );
        }
    }
    if let Err(why) = crate::control_ct::plan_line(&shared) {
        return json_error(StatusCode::CONFLICT, why);
    }
    let cap = shared.config.control_ct_max_bytes;
    let too_large = |what: String| {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the control scan is {what}; the limit is {cap} bytes ({} MiB,                  control_ct_max_bytes): send a shorter z-range or a compressed .nii.gz",
                cap >> 20
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > cap) {
        return too_large(format!("{n} bytes"));
    }
    let Ok(permit) = shared.control_uploads.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Json(serde_json::json!({
                "error": format!(
                    "{} control scans are being received (the limit); try again shortly",
                    crate::CONTROL_CT_UPLOADS
                )
            })),
        )
            .into_response();
    };
    let limit = usize::try_from(cap).unwrap_or(usize::MAX);
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let over = e
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if over {
                too_large("larger".to_owned())
            } else {
                json_error(StatusCode::BAD_REQUEST, "the upload was interrupted")
            };
        }
    };
    if bytes.is_empty() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "empty body: send the control scan's file (NIfTI or NRRD) as the request body",
        );
    }
    let decoded = tokio::task::spawn_blocking(move || {
        let scan = crate::control_ct::read_upload(&bytes);
        drop(bytes);
        drop(permit);
        scan
    })
    .await;
    let scan = match decoded {
        Ok(Ok(scan)) => scan,
        Ok(Err(why)) => return json_error(StatusCode::BAD_REQUEST, why),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let source = match peer {
        Some(axum::Extension(Peer(addr))) => format!("http {addr}"),
        None => "http".to_owned(),
    };
    match shared.submit_control_ct(scan, source) {
        Ok(seq) => (
            StatusCode::ACCEPTED,
            [(header::CACHE_CONTROL, "no-store")],
            Json(serde_json::json!({ "seq": seq })),
        )
            .into_response(),
        Err(why) => json_error(StatusCode::CONFLICT, why),
    }
}

/// `GET /api/control-ct/latest`.
async fn control_ct_latest(State(shared): State<Arc<Shared>>) -> Response {
    match shared.control_check() {
        Some(check) => (
            [(header::CACHE_CONTROL, "no-store")],
            Json(check.as_ref().clone()),
        )
            .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
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
        // Shares the session's bytes (no copy of the volume per request).
        Some((content_type, bytes)) => (
            [(header::CONTENT_TYPE, *content_type)],
            axum::body::Bytes::from_owner(bytes.clone()),
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

async fn ws_guidance(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)");
        if !origin_allowed(&shared.config, origin) {
            return (
                StatusCode::FORBIDDEN,
                format!(
                    "refused: a WebSocket from a page of {origin:?} (only pages of this \
                     server's allowed hosts may connect; see --allowed-host)\n"
                ),
            )
                .into_response();
        }
    }
    // The upgraded connection leaves hyper's slot; it takes one of its own.
    let Ok(slot) = shared.http_slots.clone().try_acquire_owned() else {
        shared.stats.http_refused.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Pinhole: {} HTTP connections are open (the limit); try again later\n",
                shared.config.max_http_connections
            ),
        )
            .into_response();
    };
    ws.on_upgrade(move |socket| ws_stream(shared, socket, slot))
}

/// One viewer: the newest update, then a ping; the next update only once the pong is
/// back. So at most one update is ever queued towards a viewer (what it reads is never
/// older than the newest update plus its own reading delay), and a viewer that answers
/// no ping within the write timeout is dropped (it reconnects and resyncs).
async fn ws_stream(shared: Arc<Shared>, mut socket: WebSocket, _slot: OwnedSemaphorePermit) {
    let mut updates = shared.metrics.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let timeout = shared.config.write_timeout;
    updates.mark_changed();
    let mut ping: u64 = 0;
    let mut awaiting: Option<tokio::time::Instant> = None;
    loop {
        let pong_deadline = awaiting.map(|sent| sent + timeout);
        tokio::select! {
            _ = crate::stopped(&mut shutdown) => break,
            _ = tokio::time::sleep_until(pong_deadline.unwrap_or_else(tokio::time::Instant::now)),
                if pong_deadline.is_some() => {
                shared.stats.ws_dropped_slow.fetch_add(1, Ordering::Relaxed);
                log(format_args!(
                    "WebSocket viewer dropped: no answer to a ping for {timeout:?} (it reconnects to resync)"
                ));
                break;
            }
            changed = updates.changed(), if awaiting.is_none() => {
                if changed.is_err() { break; }
                let u = updates.borrow_and_update().clone();
                let Some(u) = u else { continue };
                ping += 1;
                let sent = tokio::time::timeout(timeout, async {
                    socket.send(WsMessage::Text(u.json.to_string().into())).await?;
                    socket.send(WsMessage::Ping(ping.to_be_bytes().to_vec().into())).await
                }).await;
                if !matches!(sent, Ok(Ok(()))) { break; }
                awaiting = Some(tokio::time::Instant::now());
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Pong(p))) => {
                    if p.as_ref() == ping.to_be_bytes() {
                        awaiting = None;
                    }
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = tokio::time::timeout(
        Duration::from_millis(200),
        socket.send(WsMessage::Close(None)),
    )
    .await;
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
