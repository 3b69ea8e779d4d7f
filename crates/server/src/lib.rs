//! Pinhole's live guidance server, transport only: an OpenIGTLink server (tokio, over
//! the synchronous `pinhole-igtl` codec) and an HTTP / WebSocket API (axum) for the web
//! viewer, around a [`pinhole_guidance::Session`] (the metrics, the RAS ↔ LPS edge and
//! the viewer's scene live in `pinhole-guidance`). Not for clinical use.
//!
//! - [`igtl_server`]: one task per OpenIGTLink client; newest-wins live streams, bounded
//!   reply queues, replies in each client's header version.
//! - [`http`]: `/api/health`, `/api/session`, `/api/guidance`, `/ws/guidance`,
//!   `/api/drr`, `/data/…` and a static folder served without path traversal.
//! - [`replay`]: sends recorded or synthesized poses to a server (std sockets).
//!
//! Coordinates are LPS mm inside; tracked poses arrive as RAS (3D Slicer) and are
//! converted at the edge.

pub mod http;
pub mod igtl_server;
pub mod replay;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use pinhole_guidance::pose::{self, Mat4};
use pinhole_guidance::{GuidanceMetrics, Session};
use pinhole_igtl::DecodeOptions;
use tokio::sync::watch;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("static folder {path}: {source}")]
    StaticDir {
        path: String,
        source: std::io::Error,
    },
}

/// Server settings.
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
    /// CRC check and body-size limit for incoming messages.
    pub decode: DecodeOptions,
    /// A client whose socket accepts nothing for this long is disconnected.
    pub write_timeout: Duration,
    /// Capacity of each client's queue of direct replies (older replies are dropped
    /// when it is full; live streams are newest-wins and never queue).
    pub reply_queue: usize,
    /// Consecutive undecodable messages after which a client is disconnected.
    pub max_consecutive_errors: u32,
    /// Log connections and per-message events (errors are always logged).
    pub verbose: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            igtl_addr: SocketAddr::from(([127, 0, 0, 1], 18944)),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            static_dir: None,
            needle_device: "NeedleTipToReference".into(),
            registration_device: "ReferenceToRAS".into(),
            decode: DecodeOptions::default(),
            write_timeout: Duration::from_secs(5),
            reply_queue: 32,
            max_consecutive_errors: 8,
            verbose: true,
        }
    }
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
    pub updates: u64,
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
    /// `/api/drr` requests received (the newest one renders; older ones stop).
    pub(crate) drr_requests: AtomicU64,
    pub metrics: watch::Sender<Option<Arc<Update>>>,
    pub relay: watch::Sender<Option<Arc<Relay>>>,
    pub shutdown: watch::Sender<bool>,
}

impl Shared {
    pub fn new(session: Session, config: ServerConfig) -> Arc<Self> {
        let registration = RwLock::new(session.registration);
        Arc::new(Self {
            session,
            config,
            registration,
            stats: Stats::default(),
            seq: AtomicU64::new(0),
            relay_seq: AtomicU64::new(0),
            drr_requests: AtomicU64::new(0),
            metrics: watch::channel(None).0,
            relay: watch::channel(None).0,
            shutdown: watch::channel(false).0,
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
            updates: self.seq.load(Ordering::Relaxed),
        }
    }

    /// The latest metrics, if a pose has arrived.
    pub fn latest(&self) -> Option<Arc<Update>> {
        self.metrics.borrow().clone()
    }

    /// Evaluates a needle pose given as `NeedleTipToReference` (tracker frame, RAS-like)
    /// and publishes the update to every client (newest wins).
    pub fn publish_pose(
        &self,
        tip_to_reference: &Mat4,
        timestamp_s: f64,
        device: &str,
    ) -> Option<Arc<Update>> {
        let registration = self.registration.read().ok().and_then(|r| *r);
        let pose = pose::needle_pose_lps(tip_to_reference, registration.as_ref())?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let metrics = self
            .session
            .guidance
            .evaluate(&pose, seq, timestamp_s, device);
        let update = Arc::new(igtl_server::encode_update(self, metrics)?);
        self.metrics.send_replace(Some(update.clone()));
        Some(update)
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
}

impl Running {
    /// Stops accepting, closes every client and waits for the tasks.
    pub async fn shutdown(self) {
        self.shared.shutdown.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds the listeners and starts serving (inside a tokio runtime).
pub async fn start(session: Session, config: ServerConfig) -> Result<Running, ServerError> {
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
    let shared = Shared::new(session, config);
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
    })
}

/// Logs a line to stderr (`pinhole serve` prints its log there).
pub(crate) fn log(line: std::fmt::Arguments<'_>) {
    eprintln!("[pinhole serve] {line}");
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
