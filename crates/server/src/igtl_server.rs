//! The OpenIGTLink side: one task per client.
//!
//! - Reading: the 58-byte header, BODY_SIZE checked against the limit before anything
//!   is allocated, then the body as it arrives (a lying BODY_SIZE costs only what the
//!   peer really sends). CRC and layout errors skip that message (the stream stays
//!   aligned) and answer a STATUS; after `max_consecutive_errors` of them, or on an
//!   oversized / truncated message, the client is closed with a log line naming it.
//!   Unknown types are logged once per client and ignored.
//! - Limits: at most `max_igtl_clients` at once (the next one gets STATUS 6 and is
//!   closed); a message must keep arriving (`igtl_partial_timeout` without progress
//!   closes the client); a body's buffer grows with the bytes that arrive, paid for from
//!   a budget shared by all clients (`max_buffered_body_bytes`).
//! - Steering (needle poses, the registration, images) only from allowed peers
//!   (`igtl_allowed_peers`, default loopback); others get STATUS 5. Registration
//!   changes and changes of the tracking source are logged and recorded
//!   ([`crate::Shared::source_events`]).
//! - Writing: guidance updates and relayed images are newest-wins (`watch`), so a slow
//!   client skips stale updates instead of queueing them; direct replies go through a
//!   bounded queue (dropped when full). Staleness bound: each client's socket send
//!   buffer is small ([`SEND_BUFFER_BYTES`], instead of the megabytes the kernel grows
//!   it to), and a client whose socket has not taken a whole message at once for
//!   `igtl_max_lag` (default 250 ms: what is queued towards it holds more than the
//!   newest update) is dropped with a reset, logged and counted (`igtl_dropped_slow`);
//!   it reconnects and resyncs. A client whose socket accepts nothing for
//!   `write_timeout` is disconnected too. A client that is sent images (relayed, or the
//!   fused `CTReslice` / `LabelReslice`) gets a send buffer of twice its largest image
//!   message, at most [`IMAGE_SEND_BUFFER_MAX_BYTES`] (the kernel may cap it lower):
//!   through an 8 KiB buffer a message of hundreds of KiB goes a few segments per
//!   delayed acknowledgement (a 512 KiB fused pair took ~190 ms on loopback, so a 30 fps
//!   Slicer client was dropped as behind). Such a client reads at video rate; one that
//!   does not is still dropped by `igtl_max_lag` once the larger buffer is full. What already sits in a client's own receive
//!   buffer is beyond the server's reach: metrics carry `published_unix_s` (and the
//!   messages' header timestamp is the publication time) so that a client can tell
//!   their age. Replies use the highest header version the client has sent (1 until it
//!   sends a version 2 message), as PLUS does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pinhole_igtl::{
    crc64, encode, Body, Header, IgtlError, Message, MetaEntry, Query, QueryKind, Status,
    StringBody, Timestamp, Transform, HEADER_SIZE,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::{log, Relay, ServerConfig, Shared, Update};
use pinhole_guidance::pose::{plan_to_ras, Mat4};
use pinhole_guidance::GuidanceMetrics;

/// Device names of what the server sends.
pub const METRICS_DEVICE: &str = "GuidanceMetrics";
pub const STATUS_DEVICE: &str = "GuidanceStatus";
pub const PLAN_DEVICE: &str = "PlanToRAS";

/// OpenIGTLink STATUS codes used in refusals.
const STATUS_ACCESS_DENIED: u16 = 5;
const STATUS_BUSY: u16 = 6;
/// STATUS codes of the `ControlCT` answer: accepted, refused.
const STATUS_OK: u16 = 1;
const STATUS_CONFIG_ERROR: u16 = 10;

/// Socket send buffer asked for each OpenIGTLink client (Linux doubles it for its own
/// bookkeeping): a few guidance updates. Left to itself the kernel grows it to
/// megabytes, seconds of stale guidance queued towards a slow reader.
pub const SEND_BUFFER_BYTES: usize = 8 * 1024;

/// Largest send buffer asked for a client that is sent images (see the module docs).
pub const IMAGE_SEND_BUFFER_MAX_BYTES: usize = 4 << 20;

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut next_id: u64 = 1;
    let mut clients = tokio::task::JoinSet::new();
    let cap = shared.config.max_igtl_clients.max(1);
    // Refusals are logged at most once a second (with the count since the last line).
    let mut refusals_unlogged = 0u64;
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = crate::stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    while clients.try_join_next().is_some() {}
                    if clients.len() >= cap {
                        shared.stats.clients_refused.fetch_add(1, Ordering::Relaxed);
                        if let Some(reply) = refusal(cap) {
                            crate::refuse_connection(&shared, stream, reply);
                        }
                        refusals_unlogged += 1;
                        if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            log(format_args!(
                                "refused {refusals_unlogged} OpenIGTLink connection(s) (latest from {peer}): \
                                 {cap} clients connected, the limit (max_igtl_clients)"
                            ));
                            refusals_unlogged = 0;
                            last_refusal_log = Some(Instant::now());
                        }
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let id = next_id;
                    next_id += 1;
                    let small_buffer = socket2::SockRef::from(&stream)
                        .set_send_buffer_size(SEND_BUFFER_BYTES);
                    if let Err(e) = small_buffer {
                        log(format_args!(
                            "client {id} ({peer}): cannot set its socket send buffer ({e}); \
                             the kernel's may queue older guidance (igtl_max_lag still applies)"
                        ));
                    }
                    clients.spawn(client(shared.clone(), stream, peer, id));
                }
                Err(e) => {
                    log(format_args!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
        }
    }
    while clients.join_next().await.is_some() {}
}

/// The STATUS "busy" a connection over the cap receives.
fn refusal(cap: usize) -> Option<Vec<u8>> {
    let m = status_message(
        STATUS_BUSY,
        "TooManyClients",
        &format!("Pinhole: {cap} OpenIGTLink clients are connected (the limit); try again later"),
    );
    encode(&m).ok()
}

async fn client(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, id: u64) {
    let stats = &shared.stats;
    stats.clients_connected.fetch_add(1, Ordering::Relaxed);
    stats.clients_total.fetch_add(1, Ordering::Relaxed);
    if shared.config.verbose {
        log(format_args!("client {id} ({peer}) connected"));
    }
    // A second handle on the same socket, to grow its send buffer once images flow.
    let sizer = socket2::SockRef::from(&stream).try_clone().ok();
    let (rd, mut wr) = stream.into_split();
    let version = AtomicU16::new(1);
    let (reply_tx, reply_rx) = mpsc::channel::<Message>(shared.config.reply_queue.max(1));
    let mut shutdown = shared.shutdown.subscribe();
    let (reason, reset) = tokio::select! {
        r = read_loop(&shared, rd, peer, id, &version, &reply_tx) => (r, false),
        r = write_loop(&shared, &mut wr, id, &version, reply_rx, sizer.as_ref()) => r,
        _ = crate::stopped(&mut shutdown) => ("server shutting down".to_owned(), false),
    };
    if reset {
        // Close with a reset: what our send buffer still holds (older updates) is
        // discarded instead of being delivered after the drop.
        let _ = socket2::SockRef::from(wr.as_ref()).set_linger(Some(Duration::ZERO));
        wr.forget();
    }
    stats.clients_connected.fetch_sub(1, Ordering::Relaxed);
    let routine = reason.starts_with("closed by peer") || reason == "server shutting down";
    if shared.config.verbose || !routine {
        log(format_args!("client {id} ({peer}) disconnected: {reason}"));
    }
}

/// Why a frame could not be read.
pub(crate) enum FrameError {
    Igtl(IgtlError),
    /// The peer stopped in the middle of a message, or stayed silent too long.
    TimedOut(String),
    /// All clients together would hold more than `max_buffered_body_bytes`.
    Budget(String),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Igtl(IgtlError::from(e))
    }
}

/// One read, waiting at most `limit` (`None`: forever).
async fn read_some<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut [u8],
    limit: Option<Duration>,
    what: &str,
) -> Result<usize, FrameError> {
    match limit {
        None => Ok(rd.read(buf).await?),
        Some(t) => match tokio::time::timeout(t, rd.read(buf)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(FrameError::TimedOut(format!("{what} for {t:?}"))),
        },
    }
}

/// A body's buffer starts at this size (or BODY_SIZE, if smaller), then doubles.
pub(crate) const BODY_FIRST_GROWTH_BYTES: usize = 64 * 1024;

/// What [`read_frame`] needs of the server's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameLimits {
    /// Largest BODY_SIZE accepted (`decode.max_body_bytes`).
    pub(crate) max_body_bytes: u64,
    /// Silence allowed between messages (`igtl_idle_timeout`; `None`: forever).
    pub(crate) idle_timeout: Option<Duration>,
    /// Silence allowed in the middle of a message (`igtl_partial_timeout`).
    pub(crate) partial_timeout: Duration,
    /// Size of the shared body budget, for the refusal's message
    /// (`max_buffered_body_bytes`).
    pub(crate) max_buffered_body_bytes: u64,
}

impl FrameLimits {
    pub(crate) fn from_config(cfg: &ServerConfig) -> Self {
        Self {
            max_body_bytes: cfg.decode.max_body_bytes,
            idle_timeout: cfg.igtl_idle_timeout,
            partial_timeout: cfg.igtl_partial_timeout,
            max_buffered_body_bytes: cfg.max_buffered_body_bytes,
        }
    }
}

/// A frame as read: its header, its body (BODY_SIZE bytes) and the budget its buffer
/// holds (`None` for an empty body), released when the frame is dropped.
pub(crate) type Frame = (Header, Vec<u8>, Option<OwnedSemaphorePermit>);

/// Reads one frame: `Ok(None)` on a clean end between messages. The body's bytes are
/// paid for from the shared `budget` as its buffer grows (never beyond BODY_SIZE, never
/// from the claim alone); the permit is returned with the frame and released with it.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    limits: &FrameLimits,
    budget: &Arc<Semaphore>,
) -> Result<Option<Frame>, FrameError> {
    let max_body = limits.max_body_bytes;
    let partial = Some(limits.partial_timeout);
    let mut head = [0u8; HEADER_SIZE];
    let mut got = 0;
    while got < HEADER_SIZE {
        let (limit, what) = if got == 0 {
            (limits.idle_timeout, "silent")
        } else {
            (partial, "stopped in the middle of a message header")
        };
        let n = read_some(rd, &mut head[got..], limit, what).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Igtl(IgtlError::Truncated {
                    needed: HEADER_SIZE as u64,
                    available: got as u64,
                }))
            };
        }
        got += n;
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&head[42..50]);
    let body_size = u64::from_be_bytes(size);
    if body_size > max_body {
        return Err(FrameError::Igtl(IgtlError::BodyTooLarge {
            claimed: body_size,
            limit: max_body,
        }));
    }
    let Ok(total) = usize::try_from(body_size) else {
        return Err(FrameError::Igtl(IgtlError::BodyTooLarge {
            claimed: body_size,
            limit: max_body,
        }));
    };
    let mut body: Vec<u8> = Vec::new();
    let mut permit: Option<OwnedSemaphorePermit> = None;
    while body.len() < total {
        if body.len() == body.capacity() {
            // Grow by doubling, capped at BODY_SIZE, paying for the growth first.
            let new_cap = (body.capacity() * 2)
                .max(BODY_FIRST_GROWTH_BYTES)
                .min(total);
            let extra = new_cap - body.capacity();
            let granted = u32::try_from(extra)
                .ok()
                .and_then(|n| budget.clone().try_acquire_many_owned(n).ok());
            let Some(granted) = granted else {
                return Err(FrameError::Budget(format!(
                    "a {body_size}-byte message would take the bytes that all clients may have \
                     in flight over {} (max_buffered_body_bytes)",
                    limits.max_buffered_body_bytes
                )));
            };
            match &mut permit {
                Some(p) => p.merge(granted),
                None => permit = Some(granted),
            }
            body.reserve_exact(new_cap - body.len());
        }
        // Reads at most the spare capacity, which never exceeds what BODY_SIZE is left.
        let n = match tokio::time::timeout(limits.partial_timeout, rd.read_buf(&mut body)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(FrameError::TimedOut(format!(
                    "stopped in the middle of a message body ({} of {body_size} bytes) for {:?}",
                    body.len(),
                    limits.partial_timeout
                )))
            }
        };
        if n == 0 {
            return Err(FrameError::Igtl(IgtlError::Truncated {
                needed: HEADER_SIZE as u64 + body_size,
                available: (HEADER_SIZE + body.len()) as u64,
            }));
        }
    }
    let header = Header::parse(&head).map_err(FrameError::Igtl)?;
    Ok(Some((header, body, permit)))
}

async fn read_loop<R: AsyncRead + Unpin>(
    shared: &Shared,
    mut rd: R,
    peer: SocketAddr,
    id: u64,
    version: &AtomicU16,
    replies: &mpsc::Sender<Message>,
) -> String {
    let cfg = &shared.config;
    let stats = &shared.stats;
    let mut consecutive_errors = 0u32;
    let mut unknown_seen: Vec<String> = Vec::new();
    let mut us_refusal_logged = false;
    let limits = FrameLimits::from_config(cfg);
    loop {
        let frame = read_frame(&mut rd, &limits, &shared.body_budget).await;
        let (header, body, _budget) = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return "closed by peer".to_owned(),
            Err(FrameError::Igtl(e)) => {
                stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                stats
                    .clients_dropped_for_errors
                    .fetch_add(1, Ordering::Relaxed);
                return format!("closing client {id} ({peer}): {e}");
            }
            Err(FrameError::TimedOut(why)) => {
                stats.clients_timed_out.fetch_add(1, Ordering::Relaxed);
                return format!("closing client {id} ({peer}): {why}");
            }
            Err(FrameError::Budget(why)) => {
                stats
                    .clients_dropped_for_errors
                    .fetch_add(1, Ordering::Relaxed);
                return format!("closing client {id} ({peer}): {why}");
            }
        };
        stats.messages_in.fetch_add(1, Ordering::Relaxed);
        let message = match decode_frame(&header, &body, cfg.decode.verify_crc) {
            Ok(m) => {
                consecutive_errors = 0;
                m
            }
            Err(e) => {
                stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                consecutive_errors += 1;
                log(format_args!("client {id} ({peer}): skipped a message: {e}"));
                let code = if matches!(e, IgtlError::CrcMismatch { .. }) {
                    9
                } else {
                    2
                };
                reply(
                    shared,
                    replies,
                    status_message(code, "DecodeError", &e.to_string()),
                );
                if consecutive_errors >= cfg.max_consecutive_errors {
                    stats
                        .clients_dropped_for_errors
                        .fetch_add(1, Ordering::Relaxed);
                    return format!(
                        "closing client {id} ({peer}): {consecutive_errors} undecodable messages in a row"
                    );
                }
                continue;
            }
        };
        // Answer in the highest header version the client has used.
        version.fetch_max(message.version.min(2), Ordering::Relaxed);
        handle_message(
            shared,
            message,
            id,
            peer,
            replies,
            &mut unknown_seen,
            &mut us_refusal_logged,
        );
    }
}

/// A frame's message: its CRC checked (with `verify_crc`), then its body decoded.
pub(crate) fn decode_frame(
    header: &Header,
    body: &[u8],
    verify_crc: bool,
) -> Result<Message, IgtlError> {
    if verify_crc && crc64(body) != header.crc {
        Err(IgtlError::CrcMismatch {
            expected: header.crc,
            computed: crc64(body),
            type_name: header.type_name.clone(),
            device_name: header.device_name.clone(),
        })
    } else {
        Message::from_parts(header, body)
    }
}

fn handle_message(
    shared: &Shared,
    message: Message,
    id: u64,
    peer: SocketAddr,
    replies: &mpsc::Sender<Message>,
    unknown_seen: &mut Vec<String>,
    us_refusal_logged: &mut bool,
) {
    let cfg = &shared.config;
    let ts = message.timestamp.as_secs_f64();
    let steers = match &message.body {
        Body::Transform(_) | Body::Position(_) => {
            message.device_name == cfg.needle_device
                || message.device_name == cfg.registration_device
                || (cfg.us_image_to_probe.is_some() && message.device_name == cfg.us_probe_device)
        }
        Body::TData(items) => items.iter().any(|i| i.name == cfg.needle_device),
        Body::Image(_) => true,
        _ => false,
    };
    if steers && !cfg.igtl_peer_allowed(peer.ip()) {
        shared.note_refused_peer(id, peer, &message.device_name);
        reply(
            shared,
            replies,
            status_message(
                STATUS_ACCESS_DENIED,
                "NotAllowed",
                &format!(
                    "refused {} {}: peer {} may not steer this session ({})",
                    message.type_name(),
                    message.device_name,
                    peer.ip(),
                    shared.allowed_peers_text()
                ),
            ),
        );
        return;
    }
    match &message.body {
        Body::Transform(t) if message.device_name == cfg.needle_device => {
            pose_in(shared, &t.to_matrix(), ts, &message.device_name, id, peer);
        }
        Body::Transform(t) if message.device_name == cfg.registration_device => {
            let accepted = shared.set_registration(t.to_matrix(), id, peer, &message.device_name);
            if !accepted {
                log(format_args!(
                    "client {id} ({peer}): ignored a singular {} transform",
                    cfg.registration_device
                ));
            }
        }
        Body::Transform(t)
            if cfg.us_image_to_probe.is_some() && message.device_name == cfg.us_probe_device =>
        {
            if let Err(why) = shared.submit_probe_pose(&t.to_matrix()) {
                if !*us_refusal_logged {
                    *us_refusal_logged = true;
                    log(format_args!(
                        "client {id} ({peer}): TRANSFORM {} refused as the probe's pose: {why} \
                         (logged once per client, counted in us_probe_refused)",
                        message.device_name
                    ));
                }
            }
        }
        Body::Position(p) if message.device_name == cfg.needle_device => {
            let q = p.quaternion.map(f64::from);
            if let Some(m) =
                pinhole_volume::math::rigid_from_quaternion(p.position.map(f64::from), q)
            {
                pose_in(shared, &m, ts, &message.device_name, id, peer);
            }
        }
        Body::TData(items) => {
            if let Some(item) = items.iter().find(|i| i.name == cfg.needle_device) {
                pose_in(
                    shared,
                    &item.transform.to_matrix(),
                    ts,
                    &item.name,
                    id,
                    peer,
                );
            }
        }
        Body::Image(image) if message.device_name == crate::control_ct::CONTROL_CT_DEVICE => {
            control_ct_in(shared, image, id, peer, replies);
        }
        Body::Image(image) => {
            if message.device_name == cfg.us_device {
                if let Err(why) =
                    shared.submit_us_frame(image, &message.device_name, message.timestamp, id)
                {
                    if !*us_refusal_logged {
                        *us_refusal_logged = true;
                        log(format_args!(
                            "client {id} ({peer}): IMAGE {} is not used as an ultrasound \
                             frame: {why} (relayed only; logged once per client, counted in \
                             us_frames_refused)",
                            message.device_name
                        ));
                    }
                }
            }
            shared.publish_relay(&message, id);
        }
        Body::Query(q) => answer_query(shared, q, replies),
        Body::Raw { type_name, .. } => {
            shared
                .stats
                .unknown_messages
                .fetch_add(1, Ordering::Relaxed);
            if !unknown_seen.contains(type_name) && unknown_seen.len() < 64 {
                unknown_seen.push(type_name.clone());
                log(format_args!(
                    "client {id} ({peer}): ignoring message type {type_name:?} (not interpreted; logged once)"
                ));
            }
        }
        _ => {}
    }
}

/// A control CT IMAGE: decoded, checked and queued for the needle check
/// ([`crate::control_ct`]); not relayed. The sender gets a STATUS `ControlCT` either way.
fn control_ct_in(
    shared: &Shared,
    image: &pinhole_igtl::ImageBody,
    id: u64,
    peer: SocketAddr,
    replies: &mpsc::Sender<Message>,
) {
    let accepted = crate::control_ct::plan_line(shared)
        .and_then(|_| crate::control_ct::volume_from_image(image))
        .and_then(|scan| shared.submit_control_ct(scan, format!("igtl client {id} {peer}")));
    let status = match accepted {
        Ok(seq) => {
            log(format_args!(
                "client {id} ({peer}): control CT #{seq} accepted for the needle check"
            ));
            control_ct_status(
                STATUS_OK,
                "",
                &format!("control CT #{seq} accepted: see /api/control-ct/latest"),
            )
        }
        Err(why) => {
            log(format_args!(
                "client {id} ({peer}): control CT refused: {why}"
            ));
            control_ct_status(
                STATUS_CONFIG_ERROR,
                "Refused",
                &format!("control CT refused: {why}"),
            )
        }
    };
    reply(shared, replies, status);
}

/// A STATUS of device `ControlCT` (not `GuidanceStatus`: it says nothing of the needle's
/// alert).
fn control_ct_status(code: u16, name: &str, text: &str) -> Message {
    let mut m = status_message(code, name, text);
    m.device_name = crate::control_ct::CONTROL_CT_DEVICE.to_owned();
    m
}

fn pose_in(shared: &Shared, m: &Mat4, ts: f64, device: &str, id: u64, peer: SocketAddr) {
    shared.note_tracking_source(id, peer, device);
    if !shared.submit_pose(m, ts, device) {
        log(format_args!(
            "client {id} ({peer}): ignored a degenerate {device} pose"
        ));
    }
}

fn answer_query(shared: &Shared, q: &Query, replies: &mpsc::Sender<Message>) {
    if q.kind != QueryKind::Get {
        return;
    }
    let latest = shared.latest();
    let answer = if q.is_for("STATUS") {
        Some(match &latest {
            Some(u) => status_for(&u.metrics),
            None => status_message(1, "", "no needle pose yet"),
        })
    } else if q.is_for("STRING") {
        latest.map(|u| Message::new(METRICS_DEVICE, Body::String(StringBody::new(&u.json))))
    } else if q.is_for("TRANSFORM") {
        Some(plan_message(shared))
    } else if q.is_for("CAPABILITY") {
        Some(Message::new(
            "Pinhole",
            Body::Capability(
                [
                    "TRANSFORM",
                    "POSITION",
                    "TDATA",
                    "IMAGE",
                    "STRING",
                    "STATUS",
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
        ))
    } else {
        None
    };
    if let Some(a) = answer {
        reply(shared, replies, a);
    }
}

fn reply(shared: &Shared, replies: &mpsc::Sender<Message>, m: Message) {
    if replies.try_send(m).is_err() {
        shared.stats.replies_dropped.fetch_add(1, Ordering::Relaxed);
    }
}

fn status_message(code: u16, name: &str, text: &str) -> Message {
    let mut name = name.to_owned();
    name.truncate(20);
    Message::new(
        STATUS_DEVICE,
        Body::Status(Status {
            code,
            sub_code: 0,
            error_name: name,
            message: text.replace('\0', " "),
        }),
    )
}

fn status_for(m: &GuidanceMetrics) -> Message {
    status_message(Status::OK, m.alert.as_str(), &status_text(m))
}

/// The text of STATUS `GuidanceStatus`: the alert and its reasons.
pub(crate) fn status_text(m: &GuidanceMetrics) -> String {
    if m.alert_reasons.is_empty() {
        format!("{}: on plan", m.alert.as_str())
    } else {
        format!("{}: {}", m.alert.as_str(), m.alert_reasons.join("; "))
    }
}

fn plan_message(shared: &Shared) -> Message {
    let plan = shared.session.guidance.plan();
    let m = plan_to_ras(plan.target_lps, plan.direction());
    Message::new(PLAN_DEVICE, Body::Transform(Transform::from_matrix(&m)))
}

/// A message in header version `v` (v2: message id and metadata).
pub(crate) fn versioned(mut m: Message, v: u16, msg_id: u32, meta: Vec<MetaEntry>) -> Message {
    if v >= 2 {
        m = m.with_v2(msg_id, meta);
    }
    m
}

pub(crate) fn encode_all(messages: &[Message]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for m in messages {
        match encode(m) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(e) => {
                log(format_args!("cannot encode {}: {e}", m.device_name));
                return None;
            }
        }
    }
    Some(out)
}

/// STRING GuidanceMetrics + STATUS GuidanceStatus + TRANSFORM PlanToRAS, both versions.
pub(crate) fn encode_update(shared: &Shared, metrics: GuidanceMetrics) -> Option<Update> {
    let json: Arc<str> = serde_json::to_string(&metrics).ok()?.into();
    let ts = Timestamp::now();
    let msg_id = (metrics.seq & 0xFFFF_FFFF) as u32;
    let build = |v: u16| {
        let alert = MetaEntry::text("Alert", metrics.alert.as_str());
        let mut string = Message::new(METRICS_DEVICE, Body::String(StringBody::new(&json)));
        string.timestamp = ts;
        let mut status = status_for(&metrics);
        status.timestamp = ts;
        let mut plan = plan_message(shared);
        plan.timestamp = ts;
        encode_all(&[
            versioned(string, v, msg_id, vec![alert.clone()]),
            versioned(status, v, msg_id, vec![alert]),
            versioned(
                plan,
                v,
                msg_id,
                vec![MetaEntry::text("TransformStatus", "OK")],
            ),
        ])
    };
    Some(Update {
        seq: metrics.seq,
        frames_v1: build(1)?,
        frames_v2: build(2)?,
        json,
        metrics,
    })
}

pub(crate) fn encode_relay(message: &Message, seq: u64, from_client: u64) -> Option<Relay> {
    let mut v1 = message.clone();
    v1.version = 1;
    v1.extended = None;
    let mut v2 = message.clone();
    if v2.version < 2 {
        v2 = v2.with_v2(0, Vec::new());
    }
    Some(Relay {
        seq,
        from_client,
        frames_v1: encode_all(&[v1])?,
        frames_v2: encode_all(&[v2])?,
    })
}

/// Writes the client's stream until it ends: (why, whether to close with a reset).
async fn write_loop<W: AsyncWrite + Unpin>(
    shared: &Shared,
    mut wr: W,
    id: u64,
    version: &AtomicU16,
    mut replies: mpsc::Receiver<Message>,
    sizer: Option<&socket2::Socket>,
) -> (String, bool) {
    let mut send_buffer_bytes = SEND_BUFFER_BYTES;
    let mut pace = Pace {
        write_timeout: shared.config.write_timeout,
        max_lag: shared.config.igtl_max_lag,
        behind_since: None,
    };
    let mut metrics: watch::Receiver<Option<Arc<Update>>> = shared.metrics.subscribe();
    let mut relay: watch::Receiver<Option<Arc<Relay>>> = shared.relay.subscribe();
    let mut fused: watch::Receiver<Option<Arc<Relay>>> = shared.fused.subscribe();
    // Greeting: STATUS OK and the plan, in header version 1 (readable by every peer).
    let hello = encode_all(&[
        status_message(
            Status::OK,
            "",
            "Pinhole guidance server (not for clinical use)",
        ),
        plan_message(shared),
    ]);
    // The latest update counts as news for a new client.
    metrics.mark_changed();
    if let Some(bytes) = hello {
        if let Err(e) = write(&mut wr, &bytes, &mut pace).await {
            return stalled(shared, e);
        }
    }
    loop {
        let out: Out = tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() { return ("server closed".into(), false); }
                let u = metrics.borrow_and_update().clone();
                let Some(u) = u else { continue };
                Out::Update(u)
            }
            changed = relay.changed() => {
                if changed.is_err() { return ("server closed".into(), false); }
                let r = relay.borrow_and_update().clone();
                let Some(r) = r else { continue };
                if r.from_client == id { continue; }
                Out::Relay(r)
            }
            changed = fused.changed() => {
                if changed.is_err() { return ("server closed".into(), false); }
                let r = fused.borrow_and_update().clone();
                let Some(r) = r else { continue };
                if r.from_client == id { continue; }
                Out::Relay(r)
            }
            m = replies.recv() => {
                let Some(m) = m else { return ("reader ended".into(), false) };
                let v = version.load(Ordering::Relaxed);
                match encode(&versioned(m, v, 0, Vec::new())) {
                    Ok(b) => Out::Bytes(b),
                    Err(e) => { log(format_args!("cannot encode a reply: {e}")); continue; }
                }
            }
        };
        let data = match &out {
            Out::Update(u) => pick(version, &u.frames_v1, &u.frames_v2),
            Out::Relay(r) => pick(version, &r.frames_v1, &r.frames_v2),
            Out::Bytes(b) => b.as_slice(),
        };
        if matches!(out, Out::Relay(_)) && data.len() * 2 > send_buffer_bytes {
            if let Some(socket) = sizer {
                send_buffer_bytes = (data.len() * 2).min(IMAGE_SEND_BUFFER_MAX_BYTES);
                let grown = socket.set_send_buffer_size(send_buffer_bytes);
                if grown.is_ok() {
                    shared
                        .stats
                        .igtl_send_buffers_grown
                        .fetch_add(1, Ordering::Relaxed);
                }
                if let Err(e) = grown {
                    log(format_args!(
                        "client {id}: cannot grow its send buffer for images ({e}); large \
                         images may go slowly"
                    ));
                }
            }
        }
        if let Err(e) = write(&mut wr, data, &mut pace).await {
            return stalled(shared, e);
        }
    }
}

enum Out {
    Update(Arc<Update>),
    Relay(Arc<Relay>),
    Bytes(Vec<u8>),
}

fn pick<'a>(version: &AtomicU16, v1: &'a [u8], v2: &'a [u8]) -> &'a [u8] {
    if version.load(Ordering::Relaxed) >= 2 {
        v2
    } else {
        v1
    }
}

enum WriteError {
    TimedOut,
    /// Behind the stream for longer than `igtl_max_lag` (how long).
    Behind(Duration),
    Io(std::io::Error),
}

/// A client's standing against the write bounds.
struct Pace {
    write_timeout: Duration,
    max_lag: Duration,
    /// Since when the socket has not taken a whole message at once (`None`: it took the
    /// last one whole, so nothing older than it was queued).
    behind_since: Option<Instant>,
}

/// Writes `bytes`: first what the socket takes at once; if that is all of it, the
/// client is keeping up. Otherwise the client is behind (older bytes still fill its
/// queue) and the rest must go before it has been behind for `max_lag` (and within
/// `write_timeout` of now).
async fn write<W: AsyncWrite + Unpin>(
    wr: &mut W,
    bytes: &[u8],
    pace: &mut Pace,
) -> Result<(), WriteError> {
    let mut written = 0;
    std::future::poll_fn(|cx| {
        while written < bytes.len() {
            match std::pin::Pin::new(&mut *wr).poll_write(cx, &bytes[written..]) {
                std::task::Poll::Ready(Ok(0)) => {
                    return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
                }
                std::task::Poll::Ready(Ok(n)) => written += n,
                std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                // The socket is full: stop here instead of waiting.
                std::task::Poll::Pending => break,
            }
        }
        std::task::Poll::Ready(Ok(()))
    })
    .await
    .map_err(WriteError::Io)?;
    if written == bytes.len() {
        pace.behind_since = None;
        return Ok(());
    }
    let now = Instant::now();
    let since = *pace.behind_since.get_or_insert(now);
    let lag_deadline = since + pace.max_lag;
    let stall_deadline = now + pace.write_timeout;
    let deadline = lag_deadline.min(stall_deadline);
    match tokio::time::timeout_at(deadline.into(), wr.write_all(&bytes[written..])).await {
        Ok(Ok(())) => {
            // A message at least as large as the send buffer never goes at once; once it
            // is all taken, nothing older than it is queued: not behind. (Otherwise a
            // fast client of a stream of large IMAGE frames counted as behind from the
            // first frame on and was dropped after `max_lag`.)
            if bytes.len() >= SEND_BUFFER_BYTES {
                pace.behind_since = None;
            }
            Ok(())
        }
        Ok(Err(e)) => Err(WriteError::Io(e)),
        Err(_) if lag_deadline <= stall_deadline => Err(WriteError::Behind(since.elapsed())),
        Err(_) => Err(WriteError::TimedOut),
    }
}

/// Why writing ended: (reason, close with a reset).
fn stalled(shared: &Shared, e: WriteError) -> (String, bool) {
    match e {
        WriteError::TimedOut => {
            shared
                .stats
                .clients_dropped_stalled
                .fetch_add(1, Ordering::Relaxed);
            (
                format!(
                    "stalled: nothing could be written for {:?}",
                    shared.config.write_timeout
                ),
                true,
            )
        }
        WriteError::Behind(for_how_long) => {
            shared
                .stats
                .igtl_dropped_slow
                .fetch_add(1, Ordering::Relaxed);
            (
                format!(
                    "dropped as too slow: behind the guidance stream for {for_how_long:.0?} \
                     (the bound is {:?}, igtl_max_lag); it reconnects and resyncs",
                    shared.config.igtl_max_lag
                ),
                true,
            )
        }
        WriteError::Io(e) => (format!("closed by peer ({e})"), false),
    }
}
