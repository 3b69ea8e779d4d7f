//! Pinhole's live guidance server, transport only: an OpenIGTLink server (tokio, over
//! the synchronous `pinhole-igtl` codec) and an HTTP / WebSocket API (axum) for the web
//! viewer, around a [`pinhole_guidance::Session`] (the metrics, the RAS ↔ LPS edge and
//! the viewer's scene live in `pinhole-guidance`). Not for clinical use.
//!
//! - [`igtl_server`]: one task per OpenIGTLink client; newest-wins live streams, a small
//!   socket send buffer and a staleness bound (a client behind for `igtl_max_lag` is
//!   dropped to resync), bounded reply queues, replies in each client's header version;
//!   steering only from allowed
//!   peers, changes recorded ([`Shared::source_events`]); a client cap, a
//!   partial-message timeout and a shared budget of bodies in flight.
//! - [`http`]: `/api/health`, `/api/session`, `/api/guidance`, `/ws/guidance`,
//!   `/api/drr` (one render per client, newest wins, a server-wide cap), `/api/us/latest`
//!   and `/api/us/frame.png` (the newest fused ultrasound frame's pictures),
//!   `POST /api/control-ct` and `/api/control-ct/latest` (a control scan's needle
//!   check), `/data/…` and a
//!   static folder served without path traversal; Host /
//!   Origin checks, an access token beyond loopback, a head timeout, a connection cap.
//!
//! Threat model and defaults: `docs/security.md`.
//! - [`fusion`]: tracked ultrasound IMAGE frames (`us_device`) resliced through the CT
//!   and labels on one worker thread, newest wins, sent back as IMAGE `CTReslice` /
//!   `LabelReslice`; the latest frame's plane joins the needle metrics (`us_plane`).
//! - [`control_ct`]: a control CT taken during the procedure (`POST /api/control-ct`, or
//!   an OpenIGTLink IMAGE `ControlCT`) registered onto the planning CT on one worker
//!   thread, newest wins; the needle found in it and measured against the plan is the
//!   latest check (`GET /api/control-ct/latest`).
//! - [`replay`]: sends recorded or synthesized poses to a server (std sockets).
//! - [`SessionSink`]: an optional observer of the live session (every needle pose as
//!   received, every evaluated update, changes of the alert), called from the server's
//!   own threads; `pinhole serve --record` implements it over `pinhole-record`.
//!
//! Coordinates are LPS mm inside; tracked poses arrive as RAS (3D Slicer) and are
//! converted at the edge.

pub mod control_ct;
pub mod fusion;
/// The OpenIGTLink frame reader driven over bytes in memory, for the fuzz target
/// `igtl_server_frames` and the tests; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod igtl_server;
mod newest;
mod poses;
pub mod replay;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pinhole_guidance::pose::{self, Mat4};
use pinhole_guidance::session::{SourceEvent, SourceEventKind};
use pinhole_guidance::{GuidanceMetrics, Session};
use pinhole_igtl::DecodeOptions;
use tokio::sync::{watch, Semaphore};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(
        "refusing to serve HTTP on {addr} without an access token: give one (--token or \
         PINHOLE_TOKEN) or bind to a loopback address"
    )]
    NoToken { addr: SocketAddr },
    #[error("cannot generate an access token: {0}")]
    Token(String),
    #[error("static folder {path}: {source}")]
    StaticDir {
        path: String,
        source: std::io::Error,
    },
}

/// Server settings. The defaults are the secure ones: loopback only, no steering from
/// other machines, every wait bounded (`docs/security.md`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// OpenIGTLink listen address (default 127.0.0.1:18944).
    pub igtl_addr: SocketAddr,
    /// HTTP listen address (default 127.0.0.1:8080); `None`: no HTTP server.
    pub http_addr: Option<SocketAddr>,
    /// Folder served under `/` (the web viewer), if any.
    pub static_dir: Option<PathBuf>,
    /// Device name of the tracked needle (TRANSFORM / POSITION / TDATA item).
    pub needle_device: String,
    /// Device name of a registration sent over OpenIGTLink.
    pub registration_device: String,
    /// Device name of tracked ultrasound frames (IMAGE, 8-bit, one slice, in the tracker
    /// Reference frame like needle poses); default `Image_Reference`, as PLUS names it.
    /// See [`fusion`].
    pub us_device: String,
    /// The needle metrics carry `us_plane` (the needle against the latest ultrasound
    /// frame) while that frame is at most this old (default 1 s).
    pub us_plane_max_age: Duration,
    /// The needle against the ultrasound plane: `in_plane` within
    /// `in_plane_tolerance_mm`, and beyond `alert_distance_mm` the out-of-plane alert,
    /// which raises the guidance `alert` to at least `caution` with a reason (defaults
    /// 2 mm / 2 mm, [`pinhole_ultrasound::InPlaneOptions`]).
    pub us_in_plane: pinhole_ultrasound::InPlaneOptions,
    /// The probe calibration `ImageToProbe` (pixels → probe mm, as PLUS computes it).
    /// When set, ultrasound frames are placed the tracked-probe way:
    /// `ImageToReference = ProbeToReference · ImageToProbe`, with the latest TRANSFORM
    /// `us_probe_device` at most `us_plane_max_age` old, and the IMAGE's own matrix is
    /// not used (see [`fusion`]). `None`: the IMAGE's matrix is `ImageToReference`.
    pub us_image_to_probe: Option<Mat4>,
    /// Device name of the tracked probe's TRANSFORM (default `ProbeToReference`); read
    /// only with `us_image_to_probe`.
    pub us_probe_device: String,
    /// The planning CT (HU, shared, never copied per request): resliced on ultrasound
    /// frames (`CTReslice`) and the scan control CTs are registered onto
    /// ([`control_ct`]). `None`: only `LabelReslice` is sent and control scans are
    /// refused.
    pub fusion_ct: Option<fusion::FusionCt>,
    /// Largest control scan accepted by `POST /api/control-ct` (bytes of the file as
    /// sent; default [`control_ct::DEFAULT_MAX_CONTROL_CT_BYTES`]); larger ones get a 413.
    pub control_ct_max_bytes: u64,
    /// CRC check and body-size limit for incoming messages (the server's default limit
    /// is [`DEFAULT_MAX_BODY_BYTES`]: what one client can make the server hold).
    pub decode: DecodeOptions,
    /// A client whose socket accepts nothing for this long is disconnected (OpenIGTLink
    /// and WebSocket).
    pub write_timeout: Duration,
    /// Staleness bound of the OpenIGTLink stream: a client that has been behind for this
    /// long (its socket has not taken a whole message at once since then, so what is
    /// queued towards it holds more than the newest update) is dropped with a log line
    /// and counted in `igtl_dropped_slow`; it reconnects and resyncs instead of reading
    /// old guidance. Each client's socket send buffer is also kept small
    /// ([`igtl_server::SEND_BUFFER_BYTES`]).
    pub igtl_max_lag: Duration,
    /// Capacity of each client's queue of direct replies (older replies are dropped
    /// when it is full; live streams are newest-wins and never queue).
    pub reply_queue: usize,
    /// Consecutive undecodable messages after which a client is disconnected.
    pub max_consecutive_errors: u32,
    /// Log connections and per-message events (errors are always logged).
    pub verbose: bool,
    /// Host names accepted in HTTP `Host` and WebSocket `Origin` besides `localhost`,
    /// loopback addresses and the bound address (DNS-rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// Access token required by every HTTP request and WebSocket (`Authorization:
    /// Bearer`, the `pinhole_token` cookie, or `?token=` which sets the cookie). `start`
    /// refuses to bind HTTP to a non-loopback address without one.
    pub token: Option<String>,
    /// Peers allowed to steer over OpenIGTLink (needle poses, registration, images);
    /// empty: loopback peers only. Others may still connect and read guidance.
    pub igtl_allowed_peers: Vec<IpAddr>,
    /// Most OpenIGTLink clients at once; more are answered STATUS and closed.
    pub max_igtl_clients: usize,
    /// A client that stops sending in the middle of a message (header or body) for this
    /// long is disconnected.
    pub igtl_partial_timeout: Duration,
    /// A client that sends nothing at all for this long is disconnected (`None`: idle
    /// clients are kept; they count towards `max_igtl_clients`).
    pub igtl_idle_timeout: Option<Duration>,
    /// Bytes of message bodies that all OpenIGTLink clients together may have in
    /// flight (being received); a message that would exceed it is refused.
    pub max_buffered_body_bytes: u64,
    /// Most HTTP connections (WebSockets included) at once; more get a 503.
    pub max_http_connections: usize,
    /// Most `/api/drr` renders at once, server-wide (each client has at most one; its
    /// newer request cancels its older one); beyond it a request gets a 503.
    pub max_drr_renders: usize,
    /// An HTTP connection that has not sent a complete request head for this long is
    /// closed (idle keep-alive connections included).
    pub http_header_timeout: Duration,
    /// On shutdown, how long open HTTP requests may take to finish before their
    /// connections are dropped.
    pub shutdown_grace: Duration,
    /// Most entries kept in `/api/session`'s `source_events` (oldest dropped first).
    pub max_source_events: usize,
    /// Observer of the live session (`pinhole serve --record`): every needle pose as it
    /// is received, every evaluated update and every change of the alert; `None`: none.
    /// Its methods run on the server's threads and must return at once ([`SessionSink`]).
    pub session_sink: Option<Arc<dyn SessionSink>>,
}

/// Observes a live session as it happens, for a durable record (`pinhole serve
/// --record` implements it over `pinhole_record::SessionRecorder`): the server calls it
/// from its own threads — [`pose`](Self::pose) from the OpenIGTLink reader tasks,
/// [`metrics`](Self::metrics) and [`alert`](Self::alert) from the pose evaluator thread —
/// so every method must return at once (hand the sample to a bounded queue; never wait
/// on a disk, the network or a lock held for long). Calls for one kind come in the order
/// the server handles them; with several tracking clients, poses from different reader
/// tasks may interleave.
pub trait SessionSink: Send + Sync {
    /// A needle pose accepted from a client (or given to [`Shared::publish_pose`]), when
    /// it is received: every pose, also those that a newer one supersedes before their
    /// evaluation (newest wins). Degenerate poses, which are not evaluated, are not given.
    fn pose(&self, pose: &ReceivedPose<'_>);
    /// An evaluated update, after it was published to the clients.
    fn metrics(&self, metrics: &GuidanceMetrics);
    /// The alert changed (see [`AlertChange`]); called after [`metrics`](Self::metrics)
    /// of the update that changed it.
    fn alert(&self, change: &AlertChange<'_>);
}

impl std::fmt::Debug for dyn SessionSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionSink")
    }
}

/// A needle pose as the server received it.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedPose<'a> {
    /// Device name (the needle device; a TDATA item's name).
    pub device: &'a str,
    /// As received: `NeedleTipToReference`, tracker frame (RAS-like), row-major.
    pub tip_to_reference: &'a Mat4,
    /// What the guidance engine evaluates: the pose through the registration in force,
    /// in LPS mm (`F · ReferenceToRAS · NeedleTipToReference · F`, F = diag(−1, −1, 1, 1);
    /// without a registration just `F · NeedleTipToReference · F`).
    pub pose_lps: &'a Mat4,
    /// The message's timestamp (seconds since 1970; 0 when unknown).
    pub timestamp_s: f64,
}

/// A change of the guidance alert: the first update's alert, then every update whose
/// level differs from the previous update's, or whose reasons differ in more than their
/// numbers (a new structure or reason; "3.2 mm from vessels" becoming "2.9 mm from
/// vessels" is no change). This is the state the STATUS `GuidanceStatus` carries.
#[derive(Debug, Clone, Copy)]
pub struct AlertChange<'a> {
    /// The level before (`None`: the session's first update).
    pub previous: Option<pinhole_guidance::Alert>,
    /// The update that changed it (its `alert` and `alert_reasons`).
    pub metrics: &'a GuidanceMetrics,
}

impl AlertChange<'_> {
    /// The new level (`ok`, `caution`, `danger`).
    pub fn level(&self) -> pinhole_guidance::Alert {
        self.metrics.alert
    }

    /// The STATUS `GuidanceStatus` text: `caution: 3.2 mm from vessels; …`, `ok: on plan`.
    pub fn text(&self) -> String {
        igtl_server::status_text(self.metrics)
    }
}

/// The alert state compared between updates: the level and the reasons with every
/// number masked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AlertState {
    level: pinhole_guidance::Alert,
    reasons: Vec<String>,
}

impl AlertState {
    fn of(metrics: &GuidanceMetrics) -> Self {
        Self {
            level: metrics.alert,
            reasons: metrics
                .alert_reasons
                .iter()
                .map(|r| mask_numbers(r))
                .collect(),
        }
    }
}

/// `text` with every number (digits, a decimal point between them) replaced by `#`.
fn mask_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            while chars
                .peek()
                .is_some_and(|n| n.is_ascii_digit() || *n == '.')
            {
                chars.next();
            }
            out.push('#');
        } else {
            out.push(c);
        }
    }
    out
}

/// The server's default body-size limit per OpenIGTLink message (64 MiB: a 4k × 4k
/// RGBA image); the codec's own default is larger.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 << 20;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            igtl_addr: SocketAddr::from(([127, 0, 0, 1], 18944)),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            static_dir: None,
            needle_device: "NeedleTipToReference".into(),
            registration_device: "ReferenceToRAS".into(),
            us_device: "Image_Reference".into(),
            us_plane_max_age: Duration::from_secs(1),
            us_in_plane: pinhole_ultrasound::InPlaneOptions::default(),
            us_image_to_probe: None,
            us_probe_device: "ProbeToReference".into(),
            fusion_ct: None,
            control_ct_max_bytes: control_ct::DEFAULT_MAX_CONTROL_CT_BYTES,
            decode: DecodeOptions {
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                ..DecodeOptions::default()
            },
            write_timeout: Duration::from_secs(5),
            igtl_max_lag: Duration::from_millis(250),
            reply_queue: 32,
            max_consecutive_errors: 8,
            verbose: true,
            allowed_hosts: Vec::new(),
            token: None,
            igtl_allowed_peers: Vec::new(),
            max_igtl_clients: 128,
            igtl_partial_timeout: Duration::from_secs(10),
            igtl_idle_timeout: None,
            max_buffered_body_bytes: 256 << 20,
            max_http_connections: 128,
            max_drr_renders: std::thread::available_parallelism().map_or(2, |n| n.get()),
            http_header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(1),
            max_source_events: 64,
            session_sink: None,
        }
    }
}

impl ServerConfig {
    /// Whether `peer` may steer the session over OpenIGTLink.
    pub fn igtl_peer_allowed(&self, peer: IpAddr) -> bool {
        let peer = canonical_ip(peer);
        if self.igtl_allowed_peers.is_empty() {
            peer.is_loopback()
        } else {
            self.igtl_allowed_peers
                .iter()
                .any(|a| canonical_ip(*a) == peer)
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (a dual-stack listener reports them).
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// A random access token (128 bits from the OS, hex).
pub fn generate_token() -> Result<String, ServerError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ServerError::Token(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Counters, for health checks and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub clients_connected: AtomicUsize,
    pub clients_total: AtomicU64,
    pub clients_dropped_for_errors: AtomicU64,
    pub clients_dropped_stalled: AtomicU64,
    pub messages_in: AtomicU64,
    pub decode_errors: AtomicU64,
    pub unknown_messages: AtomicU64,
    pub replies_dropped: AtomicU64,
    /// OpenIGTLink connections refused because `max_igtl_clients` were connected.
    pub clients_refused: AtomicU64,
    /// OpenIGTLink clients closed for stopping mid-message or staying silent.
    pub clients_timed_out: AtomicU64,
    /// Steering messages refused from peers that are not allowed.
    pub messages_refused: AtomicU64,
    /// HTTP connections refused because `max_http_connections` were open.
    pub http_refused: AtomicU64,
    /// WebSocket viewers closed for not reading (no pong within the write timeout).
    pub ws_dropped_slow: AtomicU64,
    /// OpenIGTLink clients dropped for staying behind the stream longer than
    /// `igtl_max_lag` (they reconnect and resync).
    pub igtl_dropped_slow: AtomicU64,
    /// Times an OpenIGTLink client's send buffer was grown for the images it is sent.
    pub igtl_send_buffers_grown: AtomicU64,
    /// `/api/drr` requests answered 503 because `max_drr_renders` were rendering.
    pub drr_refused: AtomicU64,
    /// Ultrasound frames accepted (IMAGE of `us_device`, usable plane).
    pub us_frames_in: AtomicU64,
    /// IMAGE messages of `us_device` refused as frames (wrong type, several slices, bad
    /// plane); still relayed.
    pub us_frames_refused: AtomicU64,
    /// `us_probe_device` TRANSFORMs refused (not rigid).
    pub us_probe_refused: AtomicU64,
    /// Frames resliced and sent (`CTReslice`, `LabelReslice`).
    pub us_frames_fused: AtomicU64,
    /// Time of the last fusion and the longest one (µs).
    pub us_fusion_last_us: AtomicU64,
    pub us_fusion_max_us: AtomicU64,
}

/// Snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    pub clients_connected: usize,
    pub clients_total: u64,
    pub clients_dropped_for_errors: u64,
    pub clients_dropped_stalled: u64,
    pub messages_in: u64,
    pub decode_errors: u64,
    pub unknown_messages: u64,
    pub replies_dropped: u64,
    pub clients_refused: u64,
    pub clients_timed_out: u64,
    pub messages_refused: u64,
    pub http_refused: u64,
    pub ws_dropped_slow: u64,
    pub igtl_dropped_slow: u64,
    pub igtl_send_buffers_grown: u64,
    pub drr_refused: u64,
    /// `/api/drr` renders in progress.
    pub drr_rendering: usize,
    /// Needle poses received (each numbered: an update's `seq` is its pose's number).
    pub updates: u64,
    /// Needle poses replaced by a newer one before they were evaluated (newest wins).
    pub poses_superseded: u64,
    pub us_frames_in: u64,
    pub us_frames_refused: u64,
    pub us_probe_refused: u64,
    pub us_frames_fused: u64,
    /// Frames replaced by a newer one before they were fused (newest wins).
    pub us_frames_superseded: u64,
    pub us_fusion_last_us: u64,
    pub us_fusion_max_us: u64,
}

/// One guidance update, pre-encoded for both header versions.
#[derive(Debug)]
pub struct Update {
    pub seq: u64,
    pub metrics: GuidanceMetrics,
    pub json: Arc<str>,
    /// STRING GuidanceMetrics + STATUS GuidanceStatus + TRANSFORM PlanToRAS.
    pub frames_v1: Vec<u8>,
    pub frames_v2: Vec<u8>,
}

/// A relayed live message (the latest IMAGE received), pre-encoded for both versions.
#[derive(Debug)]
pub struct Relay {
    pub seq: u64,
    /// Client it came from (not sent back to it); 0 for the server itself.
    pub from_client: u64,
    pub frames_v1: Vec<u8>,
    pub frames_v2: Vec<u8>,
}

/// State shared by every task.
pub struct Shared {
    pub session: Session,
    pub config: ServerConfig,
    pub registration: RwLock<Option<Mat4>>,
    pub stats: Stats,
    seq: AtomicU64,
    relay_seq: AtomicU64,
    /// `/api/drr` renders: one per client, newest wins, a server-wide cap.
    pub(crate) drr: http::DrrRenders,
    pub metrics: watch::Sender<Option<Arc<Update>>>,
    pub relay: watch::Sender<Option<Arc<Relay>>>,
    /// The latest `CTReslice` + `LabelReslice` (newest wins, to every client but the
    /// frame's sender).
    pub fused: watch::Sender<Option<Arc<Relay>>>,
    pub shutdown: watch::Sender<bool>,
    /// Who steers: the tracking source and the bounded event log.
    source: Mutex<SourceState>,
    /// Budget of in-flight OpenIGTLink body bytes (`max_buffered_body_bytes`).
    pub(crate) body_budget: Arc<Semaphore>,
    /// HTTP connection slots (`max_http_connections`).
    pub(crate) http_slots: Arc<Semaphore>,
    /// Refused connections being closed politely (bounded; beyond it they are dropped).
    pub(crate) refusals: Arc<Semaphore>,
    /// Needle poses from OpenIGTLink waiting for the evaluator thread (newest wins).
    poses: Arc<poses::PoseQueue>,
    /// Whether the evaluator thread runs; if it could not start, poses are evaluated
    /// in the reader tasks.
    evaluator_running: AtomicBool,
    /// Ultrasound frames waiting for the fusion worker (newest wins).
    frames: Arc<fusion::FrameQueue>,
    us_seq: AtomicU64,
    /// The latest ultrasound frame's plane, for the needle metrics.
    us_plane: RwLock<Option<fusion::LatestPlane>>,
    /// The latest rigid `us_probe_device` pose (`ProbeToReference`) and when it came.
    us_probe: RwLock<Option<(Mat4, std::time::Instant)>>,
    /// The newest fused frame's pictures for the web viewer (newest wins).
    us_view: RwLock<Option<Arc<fusion::UsView>>>,
    /// When a web viewer last asked for the ultrasound pictures: they are built only
    /// while one does ([`US_VIEW_INTEREST`]).
    us_view_wanted: Mutex<Option<std::time::Instant>>,
    /// Control scans waiting for their check (newest wins), their numbering, the latest
    /// check, and the uploads being received (at most [`CONTROL_CT_UPLOADS`]).
    control_scans: Arc<control_ct::ScanQueue>,
    control_seq: AtomicU64,
    control_check: RwLock<Option<Arc<control_ct::ControlCheck>>>,
    pub(crate) control_uploads: Arc<Semaphore>,
    /// The alert state of the last update given to the session sink (only with one).
    sink_alert: Mutex<Option<AlertState>>,
}

/// Control scans received over HTTP at once (each may hold `control_ct_max_bytes` plus
/// its decoded volume); more get a 503.
pub const CONTROL_CT_UPLOADS: usize = 2;

impl Drop for Shared {
    fn drop(&mut self) {
        self.poses.close();
        self.frames.close();
        self.control_scans.close();
    }
}

/// How long after a web viewer's last `/api/us/…` request the fusion worker keeps
/// building the viewer's ultrasound pictures.
pub const US_VIEW_INTEREST: Duration = Duration::from_secs(5);

/// At most [`TRACKING_EVENTS_PER_WINDOW`] tracking-source records per window; further
/// changes are counted and reported with the next record.
const TRACKING_EVENT_WINDOW: Duration = Duration::from_secs(1);
const TRACKING_EVENTS_PER_WINDOW: u32 = 4;

#[derive(Default)]
struct SourceState {
    /// Client currently sending needle poses.
    tracking_client: Option<u64>,
    /// The current one-second window of tracking-source records: its start, the records
    /// in it, and the changes not recorded since the last record (several clients
    /// sending the needle device switch the source at every pose: a few lines a second,
    /// with the count, instead of thousands).
    tracking_window: Option<(std::time::Instant, u32)>,
    tracking_switches_unrecorded: u64,
    events: VecDeque<SourceEvent>,
    /// Peers already logged as refused (bounded).
    refused: Vec<IpAddr>,
}

/// Seconds since 1970 on the server's clock.
pub(crate) fn unix_now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Translation (mm) and rotation (degrees) between two registrations.
fn registration_change(old: &Mat4, new: &Mat4) -> (f64, f64) {
    let t = (0..3)
        .map(|r| (new[r][3] - old[r][3]).powi(2))
        .sum::<f64>()
        .sqrt();
    // trace(R_oldᵀ R_new) = Σ old[r][c]·new[r][c] over the 3×3 block.
    let mut trace = 0.0;
    for r in 0..3 {
        for c in 0..3 {
            trace += old[r][c] * new[r][c];
        }
    }
    let angle = ((trace - 1.0) / 2.0).clamp(-1.0, 1.0).acos().to_degrees();
    (t, angle)
}

impl Shared {
    pub fn new(session: Session, config: ServerConfig) -> Arc<Self> {
        let registration = RwLock::new(session.registration);
        Arc::new(Self {
            session,
            registration,
            stats: Stats::default(),
            seq: AtomicU64::new(0),
            relay_seq: AtomicU64::new(0),
            drr: http::DrrRenders::new(config.max_drr_renders),
            metrics: watch::channel(None).0,
            relay: watch::channel(None).0,
            fused: watch::channel(None).0,
            shutdown: watch::channel(false).0,
            source: Mutex::new(SourceState::default()),
            body_budget: Arc::new(Semaphore::new(
                usize::try_from(config.max_buffered_body_bytes)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            )),
            http_slots: Arc::new(Semaphore::new(
                config.max_http_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
            refusals: Arc::new(Semaphore::new(64)),
            poses: Arc::default(),
            evaluator_running: AtomicBool::new(false),
            frames: Arc::default(),
            us_seq: AtomicU64::new(0),
            us_plane: RwLock::new(None),
            us_probe: RwLock::new(None),
            us_view: RwLock::new(None),
            us_view_wanted: Mutex::new(None),
            control_scans: Arc::default(),
            control_seq: AtomicU64::new(0),
            control_check: RwLock::new(None),
            control_uploads: Arc::new(Semaphore::new(CONTROL_CT_UPLOADS)),
            sink_alert: Mutex::new(None),
            config,
        })
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            clients_connected: s.clients_connected.load(Ordering::Relaxed),
            clients_total: s.clients_total.load(Ordering::Relaxed),
            clients_dropped_for_errors: s.clients_dropped_for_errors.load(Ordering::Relaxed),
            clients_dropped_stalled: s.clients_dropped_stalled.load(Ordering::Relaxed),
            messages_in: s.messages_in.load(Ordering::Relaxed),
            decode_errors: s.decode_errors.load(Ordering::Relaxed),
            unknown_messages: s.unknown_messages.load(Ordering::Relaxed),
            replies_dropped: s.replies_dropped.load(Ordering::Relaxed),
            clients_refused: s.clients_refused.load(Ordering::Relaxed),
            clients_timed_out: s.clients_timed_out.load(Ordering::Relaxed),
            messages_refused: s.messages_refused.load(Ordering::Relaxed),
            http_refused: s.http_refused.load(Ordering::Relaxed),
            ws_dropped_slow: s.ws_dropped_slow.load(Ordering::Relaxed),
            igtl_dropped_slow: s.igtl_dropped_slow.load(Ordering::Relaxed),
            igtl_send_buffers_grown: s.igtl_send_buffers_grown.load(Ordering::Relaxed),
            drr_refused: s.drr_refused.load(Ordering::Relaxed),
            drr_rendering: self.drr.rendering(),
            updates: self.seq.load(Ordering::Relaxed),
            poses_superseded: self.poses.superseded(),
            us_frames_in: s.us_frames_in.load(Ordering::Relaxed),
            us_frames_refused: s.us_frames_refused.load(Ordering::Relaxed),
            us_probe_refused: s.us_probe_refused.load(Ordering::Relaxed),
            us_frames_fused: s.us_frames_fused.load(Ordering::Relaxed),
            us_frames_superseded: self.frames.superseded(),
            us_fusion_last_us: s.us_fusion_last_us.load(Ordering::Relaxed),
            us_fusion_max_us: s.us_fusion_max_us.load(Ordering::Relaxed),
        }
    }

    /// The latest metrics, if a pose has arrived.
    pub fn latest(&self) -> Option<Arc<Update>> {
        self.metrics.borrow().clone()
    }

    /// Evaluates a needle pose given as `NeedleTipToReference` (tracker frame, RAS-like)
    /// now, in the caller's thread, and publishes the update to every client (newest
    /// wins). `None` for a degenerate pose. OpenIGTLink poses go through
    /// [`Shared::submit_pose`] instead.
    pub fn publish_pose(
        &self,
        tip_to_reference: &Mat4,
        timestamp_s: f64,
        device: &str,
    ) -> Option<Arc<Update>> {
        if !self.receive_pose(tip_to_reference, timestamp_s, device) {
            return None;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.evaluate_numbered(seq, tip_to_reference, timestamp_s, device)
    }

    /// Queues a needle pose for the evaluator thread, replacing one still waiting
    /// (`poses` module), and returns at once; `false` for a degenerate pose, which is
    /// not queued. Evaluates it inline when the evaluator thread is not running.
    pub fn submit_pose(&self, tip_to_reference: &Mat4, timestamp_s: f64, device: &str) -> bool {
        if !self.receive_pose(tip_to_reference, timestamp_s, device) {
            return false;
        }
        if !self.evaluator_running.load(Ordering::Acquire) {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            return self
                .evaluate_numbered(seq, tip_to_reference, timestamp_s, device)
                .is_some();
        }
        self.poses
            .submit(&self.seq, *tip_to_reference, timestamp_s, device);
        true
    }

    /// A pose received: `false` when it is degenerate under the registration in force
    /// (not evaluated); otherwise it is given to the session sink, if any.
    fn receive_pose(&self, tip_to_reference: &Mat4, timestamp_s: f64, device: &str) -> bool {
        let registration = self.registration.read().ok().and_then(|r| *r);
        if pose::needle_pose_lps(tip_to_reference, registration.as_ref()).is_none() {
            return false;
        }
        if let Some(sink) = &self.config.session_sink {
            let ras = match &registration {
                Some(r) => pinhole_volume::math::mat4_mul(r, tip_to_reference),
                None => *tip_to_reference,
            };
            let pose_lps = pinhole_volume::math::swap_lps_ras(&ras);
            sink.pose(&ReceivedPose {
                device,
                tip_to_reference,
                pose_lps: &pose_lps,
                timestamp_s,
            });
        }
        true
    }

    /// Gives an evaluated update to the session sink, and the alert when it changed.
    fn sink_update(&self, sink: &dyn SessionSink, metrics: &GuidanceMetrics) {
        sink.metrics(metrics);
        let state = AlertState::of(metrics);
        let previous = {
            let mut last = self.sink_alert.lock().unwrap_or_else(|e| e.into_inner());
            if last.as_ref() == Some(&state) {
                return;
            }
            last.replace(state)
        };
        sink.alert(&AlertChange {
            previous: previous.map(|p| p.level),
            metrics,
        });
    }

    /// What the evaluator thread does with a queued pose.
    pub(crate) fn evaluate_and_publish(&self, pose: &poses::PendingPose) {
        let evaluated = self.evaluate_numbered(
            pose.seq,
            &pose.tip_to_reference,
            pose.timestamp_s,
            &pose.device,
        );
        if evaluated.is_none() {
            log(format_args!(
                "ignored a degenerate {} pose (the registration changed while it waited)",
                pose.device
            ));
        }
    }

    fn evaluate_numbered(
        &self,
        seq: u64,
        tip_to_reference: &Mat4,
        timestamp_s: f64,
        device: &str,
    ) -> Option<Arc<Update>> {
        let registration = self.registration.read().ok().and_then(|r| *r);
        let pose = pose::needle_pose_lps(tip_to_reference, registration.as_ref())?;
        let mut metrics = self
            .session
            .guidance
            .evaluate(&pose, seq, timestamp_s, device);
        metrics.us_plane = self.us_plane_metrics(&pose);
        if let Some(us) = metrics.us_plane.as_ref().filter(|us| us.out_of_plane_alert) {
            metrics.alert = metrics.alert.max(pinhole_guidance::Alert::Caution);
            metrics.alert_reasons.push(format!(
                "needle tip {:.1} mm out of the ultrasound image plane (alert beyond {} mm): \
                 the tip is not in the image",
                us.tip_distance_mm.abs(),
                self.config.us_in_plane.alert_distance_mm
            ));
        }
        metrics.published_unix_s = Some(unix_now_s());
        let update = Arc::new(igtl_server::encode_update(self, metrics)?);
        // Poses from several clients are evaluated concurrently: an update computed from
        // an older pose (lower seq) must not replace a newer one that was published first.
        self.metrics.send_if_modified(|current| {
            let newer = current.as_ref().is_none_or(|c| c.seq < update.seq);
            if newer {
                *current = Some(update.clone());
            }
            newer
        });
        if let Some(sink) = &self.config.session_sink {
            self.sink_update(sink.as_ref(), &update.metrics);
        }
        Some(update)
    }

    /// The needle against the latest ultrasound frame, when one is at most
    /// `us_plane_max_age` old.
    fn us_plane_metrics(
        &self,
        pose: &pinhole_guidance::NeedlePose,
    ) -> Option<pinhole_guidance::UsPlaneMetrics> {
        let latest = self.us_plane.read().ok()?.clone()?;
        let age = latest.received.elapsed();
        if age > self.config.us_plane_max_age {
            return None;
        }
        let n = pinhole_ultrasound::needle_in_plane(
            pose.tip_lps,
            pose.axis_lps,
            &latest.plane,
            &self.config.us_in_plane,
        )
        .ok()?;
        Some(pinhole_guidance::UsPlaneMetrics {
            frame_seq: latest.seq,
            frame_device: latest.device,
            frame_age_ms: age.as_secs_f64() * 1e3,
            tip_distance_mm: n.tip_distance_mm,
            angle_to_plane_deg: n.angle_to_plane_deg,
            crossing: n.crossing.map(|c| pinhole_guidance::UsPlaneCrossing {
                point_lps: c.point_lps,
                pixel: c.pixel,
                along_needle_from_tip_mm: c.along_needle_from_tip_mm,
            }),
            tip_pixel: n.tip_pixel,
            needle_segment_px: n.needle_segment_px,
            predicted_path_px: n.predicted_path_px,
            in_plane: n.in_plane,
            out_of_plane_alert: n.out_of_plane_alert,
            in_plane_tolerance_mm: n.in_plane_tolerance_mm,
            alert_distance_mm: n.alert_distance_mm,
        })
    }

    /// Takes an IMAGE of the ultrasound device from `client`: records its plane and
    /// queues it for fusion (newest wins). `Err`: not usable as a frame (counted).
    pub(crate) fn submit_us_frame(
        &self,
        image: &pinhole_igtl::ImageBody,
        device: &str,
        timestamp: pinhole_igtl::Timestamp,
        client: u64,
    ) -> Result<u64, fusion::FrameRefusal> {
        let registration = self.registration.read().ok().and_then(|r| *r);
        let placement = match self.frame_placement() {
            Ok(p) => p,
            Err(e) => {
                self.stats.us_frames_refused.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let plane = match fusion::frame_plane(image, placement.as_ref(), registration.as_ref()) {
            Ok(plane) => plane,
            Err(e) => {
                self.stats.us_frames_refused.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        let seq = self.us_seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.us_frames_in.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut latest) = self.us_plane.write() {
            let newer = latest.as_ref().is_none_or(|l| l.seq < seq);
            if newer {
                *latest = Some(fusion::LatestPlane {
                    seq,
                    device: device.to_owned(),
                    plane: plane.clone(),
                    received: std::time::Instant::now(),
                });
            }
        }
        self.frames.put(fusion::PendingFrame::new(
            seq,
            client,
            plane,
            image,
            timestamp,
            placement.as_ref(),
        ));
        Ok(seq)
    }

    /// `ImageToReference` from the tracked probe and the calibration, when the server has
    /// a calibration; `Ok(None)` without one (the IMAGE's matrix places the frame).
    fn frame_placement(&self) -> Result<Option<Mat4>, fusion::FrameRefusal> {
        let Some(image_to_probe) = &self.config.us_image_to_probe else {
            return Ok(None);
        };
        let probe = self.us_probe.read().ok().and_then(|p| *p);
        let max_age = self.config.us_plane_max_age;
        match probe {
            Some((probe_to_reference, received)) if received.elapsed() <= max_age => {
                pinhole_ultrasound::tracking::image_to_reference(
                    &probe_to_reference,
                    image_to_probe,
                )
                .map(Some)
                .map_err(fusion::FrameRefusal::Tracking)
            }
            Some((_, received)) => Err(fusion::FrameRefusal::ProbePoseTooOld {
                device: self.config.us_probe_device.clone(),
                age_ms: received.elapsed().as_millis(),
                max_age_ms: max_age.as_millis(),
            }),
            None => Err(fusion::FrameRefusal::NoProbePose {
                device: self.config.us_probe_device.clone(),
            }),
        }
    }

    /// Records the tracked probe's pose (`us_probe_device`); a pose that is not rigid is
    /// refused (counted in `us_probe_refused`) and the previous one is kept.
    pub(crate) fn submit_probe_pose(
        &self,
        probe_to_reference: &Mat4,
    ) -> Result<(), pinhole_ultrasound::tracking::TrackingError> {
        if let Err(e) =
            pinhole_ultrasound::tracking::check_rigid("ProbeToReference", probe_to_reference)
        {
            self.stats.us_probe_refused.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        if let Ok(mut probe) = self.us_probe.write() {
            *probe = Some((*probe_to_reference, std::time::Instant::now()));
        }
        Ok(())
    }

    /// The newest fused ultrasound frame's pictures (`/api/us/…`), if any.
    pub fn us_view(&self) -> Option<Arc<fusion::UsView>> {
        match self.us_view.read() {
            Ok(v) => v.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    /// A web viewer asked for the ultrasound pictures (`/api/us/…`).
    pub(crate) fn want_us_view(&self) {
        let mut wanted = match self.us_view_wanted.lock() {
            Ok(w) => w,
            Err(e) => e.into_inner(),
        };
        *wanted = Some(std::time::Instant::now());
    }

    /// Whether a web viewer asked for the pictures within [`US_VIEW_INTEREST`]: the
    /// fusion worker builds them only then (OpenIGTLink clients get their images always).
    pub(crate) fn us_view_wanted(&self) -> bool {
        let wanted = match self.us_view_wanted.lock() {
            Ok(w) => *w,
            Err(e) => *e.into_inner(),
        };
        wanted.is_some_and(|t| t.elapsed() <= US_VIEW_INTEREST)
    }

    /// Keeps `view` unless a newer frame's is already kept.
    pub(crate) fn set_us_view(&self, view: Arc<fusion::UsView>) {
        let mut slot = match self.us_view.write() {
            Ok(v) => v,
            Err(e) => e.into_inner(),
        };
        if slot.as_ref().is_none_or(|v| v.seq < view.seq) {
            *slot = Some(view);
        }
    }

    /// The steering log (`/api/session`'s `source_events`), oldest first.
    pub fn source_events(&self) -> Vec<SourceEvent> {
        match self.source.lock() {
            Ok(s) => s.events.iter().cloned().collect(),
            Err(e) => e.into_inner().events.iter().cloned().collect(),
        }
    }

    fn record(&self, state: &mut SourceState, event: SourceEvent) {
        log(format_args!(
            "{} from client {} ({}), device {:?}: {} [t={:.3}]",
            match event.kind {
                SourceEventKind::Registration => "REGISTRATION",
                SourceEventKind::TrackingSource => "TRACKING SOURCE",
                SourceEventKind::RefusedPeer => "REFUSED PEER",
            },
            event.client,
            event.peer,
            event.device,
            event.detail,
            event.time_unix_s
        ));
        while state.events.len() >= self.config.max_source_events.max(1) {
            state.events.pop_front();
        }
        state.events.push_back(event);
    }

    fn lock_source(&self) -> std::sync::MutexGuard<'_, SourceState> {
        self.source.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the registration received from `client`; logs and records it when it
    /// differs from the one in force. `false`: singular, ignored.
    pub fn set_registration(&self, m: Mat4, client: u64, peer: SocketAddr, device: &str) -> bool {
        if pose::affine_inverse(&m).is_none() {
            return false;
        }
        let old = {
            let Ok(mut r) = self.registration.write() else {
                return false;
            };
            r.replace(m)
        };
        let detail = match &old {
            Some(o) if o == &m => return true,
            Some(o) => {
                let (t_mm, r_deg) = registration_change(o, &m);
                format!("registration changed: moved {t_mm:.2} mm, rotated {r_deg:.2} deg")
            }
            None => "registration set (none before)".to_owned(),
        };
        let mut state = self.lock_source();
        self.record(
            &mut state,
            SourceEvent {
                time_unix_s: unix_now_s(),
                kind: SourceEventKind::Registration,
                peer: peer.to_string(),
                client,
                device: device.to_owned(),
                detail,
            },
        );
        true
    }

    /// Notes that needle poses come from `client`; logs and records a change of source.
    pub(crate) fn note_tracking_source(&self, client: u64, peer: SocketAddr, device: &str) {
        let mut state = self.lock_source();
        if state.tracking_client == Some(client) {
            return;
        }
        let previous = state.tracking_client.replace(client);
        let now = std::time::Instant::now();
        let (start, records) = match state.tracking_window {
            Some((start, records)) if now.duration_since(start) < TRACKING_EVENT_WINDOW => {
                (start, records)
            }
            _ => (now, 0),
        };
        if records >= TRACKING_EVENTS_PER_WINDOW {
            state.tracking_switches_unrecorded += 1;
            return;
        }
        state.tracking_window = Some((start, records + 1));
        let unrecorded = std::mem::take(&mut state.tracking_switches_unrecorded);
        let mut detail = match previous {
            Some(previous) => format!("tracking source changed from client {previous}"),
            None => "first tracking source".to_owned(),
        };
        if unrecorded > 0 {
            detail.push_str(&format!(
                " ({unrecorded} more changes since the last record: several clients are \
                 sending this device)"
            ));
        }
        self.record(
            &mut state,
            SourceEvent {
                time_unix_s: unix_now_s(),
                kind: SourceEventKind::TrackingSource,
                peer: peer.to_string(),
                client,
                device: device.to_owned(),
                detail,
            },
        );
    }

    /// Notes a steering message refused from a peer that is not allowed: logged and
    /// recorded once per peer address.
    pub(crate) fn note_refused_peer(&self, client: u64, peer: SocketAddr, device: &str) {
        self.stats.messages_refused.fetch_add(1, Ordering::Relaxed);
        let ip = canonical_ip(peer.ip());
        let mut state = self.lock_source();
        if state.refused.contains(&ip) || state.refused.len() >= 256 {
            return;
        }
        state.refused.push(ip);
        self.record(
            &mut state,
            SourceEvent {
                time_unix_s: unix_now_s(),
                kind: SourceEventKind::RefusedPeer,
                peer: peer.to_string(),
                client,
                device: device.to_owned(),
                detail: format!(
                    "refused: {ip} is not allowed to steer (allowed: {}); logged once per peer",
                    self.allowed_peers_text()
                ),
            },
        );
    }

    pub(crate) fn allowed_peers_text(&self) -> String {
        if self.config.igtl_allowed_peers.is_empty() {
            "loopback peers only; add --igtl-allow-peer".to_owned()
        } else {
            self.config
                .igtl_allowed_peers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// Relays a live message to every client but `from_client` (newest wins).
    pub fn publish_relay(&self, message: &pinhole_igtl::Message, from_client: u64) {
        let seq = self.relay_seq.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(relay) = igtl_server::encode_relay(message, seq, from_client) {
            self.relay.send_replace(Some(Arc::new(relay)));
        }
    }
}

/// A running server.
pub struct Running {
    pub shared: Arc<Shared>,
    pub igtl_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    evaluator: Option<std::thread::JoinHandle<()>>,
    fusion: Option<std::thread::JoinHandle<()>>,
    control: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, closes every client and waits for the tasks.
    pub async fn shutdown(self) {
        self.shared.shutdown.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.shared.poses.close();
        if let Some(evaluator) = self.evaluator {
            let _ = tokio::task::spawn_blocking(move || evaluator.join()).await;
        }
        self.shared.frames.close();
        if let Some(fusion) = self.fusion {
            let _ = tokio::task::spawn_blocking(move || fusion.join()).await;
        }
        // A check in progress finishes first (registration takes seconds).
        self.shared.control_scans.close();
        if let Some(control) = self.control {
            let _ = tokio::task::spawn_blocking(move || control.join()).await;
        }
    }
}

/// Binds the listeners and starts serving (inside a tokio runtime).
pub async fn start(session: Session, config: ServerConfig) -> Result<Running, ServerError> {
    if let Some(addr) = config.http_addr {
        if !canonical_ip(addr.ip()).is_loopback() && config.token.is_none() {
            return Err(ServerError::NoToken { addr });
        }
    }
    if let Some(dir) = &config.static_dir {
        std::fs::canonicalize(dir).map_err(|source| ServerError::StaticDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let igtl = tokio::net::TcpListener::bind(config.igtl_addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.igtl_addr,
            what: "OpenIGTLink",
            source,
        })?;
    let igtl_addr = igtl.local_addr().map_err(|source| ServerError::Bind {
        addr: config.igtl_addr,
        what: "OpenIGTLink",
        source,
    })?;
    let http = match config.http_addr {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr,
                    what: "HTTP",
                    source,
                })?;
            let a = l.local_addr().map_err(|source| ServerError::Bind {
                addr,
                what: "HTTP",
                source,
            })?;
            Some((l, a))
        }
        None => None,
    };
    let mut config = config;
    config.igtl_addr = igtl_addr;
    config.http_addr = http.as_ref().map(|(_, a)| *a);
    let shared = Shared::new(session, config);
    let evaluator = match poses::spawn_evaluator(shared.poses.clone(), Arc::downgrade(&shared)) {
        Ok(handle) => {
            shared.evaluator_running.store(true, Ordering::Release);
            Some(handle)
        }
        Err(e) => {
            log(format_args!(
                "cannot start the pose evaluator thread ({e}): poses are evaluated as they \
                 arrive, without newest-wins"
            ));
            None
        }
    };
    let fusion = match fusion::spawn_worker(shared.frames.clone(), Arc::downgrade(&shared)) {
        Ok(handle) => Some(handle),
        Err(e) => {
            log(format_args!(
                "cannot start the ultrasound fusion thread ({e}): frames give the needle \
                 metrics their plane but are not resliced"
            ));
            None
        }
    };
    let control =
        match control_ct::spawn_worker(shared.control_scans.clone(), Arc::downgrade(&shared)) {
            Ok(handle) => Some(handle),
            Err(e) => {
                log(format_args!(
                    "cannot start the control CT thread ({e}): control scans are not checked"
                ));
                None
            }
        };
    let mut tasks = vec![tokio::spawn(igtl_server::accept_loop(shared.clone(), igtl))];
    let http_addr = match http {
        Some((listener, addr)) => {
            tasks.push(tokio::spawn(http::serve(shared.clone(), listener)));
            Some(addr)
        }
        None => None,
    };
    Ok(Running {
        shared,
        igtl_addr,
        http_addr,
        tasks,
        evaluator,
        fusion,
        control,
    })
}

/// Answers a connection refused over a cap with `reply` and closes it. Up to 64 at a time
/// are closed politely (write, end of stream, then up to 1 s draining what the peer
/// sent, so that the reply is not lost to a reset); beyond that, dropped at once.
pub(crate) fn refuse_connection(shared: &Shared, stream: tokio::net::TcpStream, reply: Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(permit) = shared.refusals.clone().try_acquire_owned() else {
        let _ = stream.try_write(&reply);
        return;
    };
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(&reply).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            let mut drained = 0usize;
            while drained < 64 * 1024 {
                let n = stream.read(&mut sink).await?;
                if n == 0 {
                    break;
                }
                drained += n;
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
    });
}

/// Logs a line to stderr (`pinhole serve` prints its log there). When stderr is a pipe
/// nobody reads any more the line is lost and the server goes on: `eprintln!` would panic
/// the task or thread that logged (an OpenIGTLink client's, the evaluator).
pub(crate) fn log(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "[pinhole serve] {line}");
}

/// Resolves once the shutdown flag is set (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|&s| s).await;
}

/// Runs the server until Ctrl-C (builds its own tokio runtime): what `pinhole serve`
/// calls. `on_ready` receives the bound addresses.
pub fn serve_until_ctrl_c(
    session: Session,
    config: ServerConfig,
    on_ready: impl FnOnce(SocketAddr, Option<SocketAddr>),
) -> Result<StatsSnapshot, ServerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| ServerError::Bind {
            addr: config.igtl_addr,
            what: "tokio runtime",
            source,
        })?;
    runtime.block_on(async move {
        let running = start(session, config).await?;
        on_ready(running.igtl_addr, running.http_addr);
        if let Err(e) = tokio::signal::ctrl_c().await {
            log(format_args!("cannot wait for Ctrl-C ({e}); stopping"));
        }
        log(format_args!("Ctrl-C: stopping"));
        let stats = running.shared.stats();
        running.shutdown().await;
        Ok(stats)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod sink_tests {
    use std::collections::BTreeMap;
    use std::io::{Read, Write};

    use pinhole_guidance::{PlanSource, PlannedNeedle, RiskGroup, SessionInputs};
    use pinhole_igtl::{encode, Body, Message, Transform};
    use pinhole_volume::math::{mat4_mul, swap_lps_ras};
    use pinhole_volume::{Grid, Volume};

    use super::*;

    #[derive(Default)]
    struct Collect {
        poses: Mutex<Vec<(String, Mat4, Mat4)>>,
        metrics: Mutex<Vec<u64>>,
        alerts: Mutex<Vec<(Option<pinhole_guidance::Alert>, String)>>,
    }

    impl SessionSink for Collect {
        fn pose(&self, pose: &ReceivedPose<'_>) {
            self.poses.lock().unwrap().push((
                pose.device.to_owned(),
                *pose.tip_to_reference,
                *pose.pose_lps,
            ));
        }
        fn metrics(&self, metrics: &GuidanceMetrics) {
            self.metrics.lock().unwrap().push(metrics.seq);
        }
        fn alert(&self, change: &AlertChange<'_>) {
            self.alerts
                .lock()
                .unwrap()
                .push((change.previous, change.text()));
        }
    }

    /// 40³ grid of 1 mm voxels around the origin; "aorta" at x ∈ [10, 12] (LPS).
    fn session(registration: Mat4) -> Session {
        let grid = Grid::axis_aligned([40, 40, 40], [1.0; 3], [-20.0; 3]).unwrap();
        let mut data = vec![0u16; grid.voxel_count()];
        for k in 0..40 {
            for j in 0..40 {
                for i in 30..=32 {
                    data[grid.offset([i, j, k])] = 1;
                }
            }
        }
        let labels = Volume::new(grid.clone(), data).unwrap();
        let plan = PlannedNeedle {
            target_lps: [0.0; 3],
            entry_lps: Some([0.0, -15.0, 0.0]),
            path_target_lps: [0.0; 3],
            risk_groups: Some(vec![RiskGroup {
                name: "aorta_group".into(),
                labels: vec!["aorta".into()],
                clearance_mm: 5.0,
                optional: false,
                weight: 1.0,
                source: "test".into(),
            }]),
        };
        Session::new(
            &grid,
            labels,
            BTreeMap::from([(1, "aorta".to_owned())]),
            PlanSource::Plan(plan),
            Some(registration),
            SessionInputs::default(),
        )
    }

    /// Every pose reaches the sink when it is received (superseded ones too), in LPS
    /// through the registration; every evaluated update and each change of the alert
    /// follow from the evaluator thread.
    #[test]
    fn the_sink_sees_every_pose_every_update_and_alert_changes() {
        // Registration: a translation of (5, 0, 0) RAS, i.e. −5 mm in LPS x.
        let registration = [
            [1.0, 0.0, 0.0, 5.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let sink = Arc::new(Collect::default());
        let config = ServerConfig {
            igtl_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: None,
            verbose: false,
            session_sink: Some(sink.clone()),
            ..ServerConfig::default()
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let running = rt.block_on(start(session(registration), config)).unwrap();
        // 300 poses in one burst (many superseded before evaluation) along the plan line
        // (needle axis −y RAS = +y LPS), sent in the tracker frame (x − 5 mm); the last
        // ten 6 to 7 mm to the patient's left, within the aorta's clearance (danger).
        let sent: Vec<Mat4> = (0..300)
            .map(|i| {
                let x_ras = if i >= 290 {
                    -(6.0 + f64::from(i - 290) * 0.1)
                } else {
                    0.0
                };
                [
                    [1.0, 0.0, 0.0, x_ras - 5.0],
                    [0.0, 0.0, -1.0, 15.0 - f64::from(i) * 0.05],
                    [0.0, 1.0, 0.0, 0.5],
                    [0.0, 0.0, 0.0, 1.0],
                ]
            })
            .collect();
        let mut stream = std::net::TcpStream::connect(running.igtl_addr).unwrap();
        let mut bytes = Vec::new();
        for m in &sent {
            let msg = Message::new(
                "NeedleTipToReference",
                Body::Transform(Transform::from_matrix(m)),
            );
            bytes.extend(encode(&msg).unwrap());
        }
        stream.write_all(&bytes).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while sink.poses.lock().unwrap().len() < sent.len()
            || running.shared.latest().is_none_or(|u| u.seq < 300)
        {
            assert!(
                std::time::Instant::now() < end,
                "the poses did not all arrive"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = stream.read_to_end(&mut Vec::new());
        let stats = running.shared.stats();
        rt.block_on(running.shutdown());

        let poses = sink.poses.lock().unwrap();
        assert_eq!(poses.len(), sent.len());
        for ((device, received, lps), m) in poses.iter().zip(&sent) {
            assert_eq!(device, "NeedleTipToReference");
            // As sent over the wire (f32), then through the registration and RAS → LPS.
            let wire = Transform::from_matrix(m).to_matrix();
            assert_eq!(received, &wire);
            assert_eq!(lps, &swap_lps_ras(&mat4_mul(&registration, &wire)));
        }
        // The first tip: tracker (−5, 15, 0.5), RAS (0, 15, 0.5), LPS (0, −15, 0.5).
        let tip = [poses[0].2[0][3], poses[0].2[1][3], poses[0].2[2][3]];
        assert!(
            (tip[0].abs() + (tip[1] + 15.0).abs() + (tip[2] - 0.5).abs()) < 1e-5,
            "{tip:?}"
        );
        let metrics = sink.metrics.lock().unwrap();
        assert_eq!(
            metrics.len() as u64,
            stats.updates - stats.poses_superseded,
            "{stats:?}"
        );
        assert!(metrics.windows(2).all(|w| w[0] < w[1]), "{metrics:?}");
        assert_eq!(metrics.last(), Some(&300));
        let alerts = sink.alerts.lock().unwrap();
        assert_eq!(alerts[0].0, None, "{alerts:?}");
        assert!(alerts.len() < metrics.len().max(2), "{alerts:?}");
        let last = &alerts.last().unwrap().1;
        assert!(
            last.starts_with("danger: ") && last.contains("aorta"),
            "{alerts:?}"
        );
    }

    #[test]
    fn numbers_are_masked_in_alert_reasons() {
        assert_eq!(
            mask_numbers("3.2 mm from vessels (clearance 5.0 mm)"),
            "# mm from vessels (clearance # mm)"
        );
        assert_eq!(mask_numbers("tip inside bone"), "tip inside bone");
    }
}
