//! The OpenIGTLink side: one task per client.
//!
//! - Reading: the 58-byte header, BODY_SIZE checked against the limit before anything
//!   is allocated, then the body as it arrives (a lying BODY_SIZE costs only what the
//!   peer really sends). CRC and layout errors skip that message (the stream stays
//!   aligned) and answer a STATUS; after `max_consecutive_errors` of them, or on an
//!   oversized / truncated message, the client is closed with a log line naming it.
//!   Unknown types are logged once per client and ignored.
//! - Writing: guidance updates and relayed images are newest-wins (`watch`), so a slow
//!   client skips stale updates instead of queueing them; direct replies go through a
//!   bounded queue (dropped when full). A client whose socket accepts nothing for
//!   `write_timeout` is disconnected. Replies use the highest header version the client
//!   has sent (1 until it sends a version 2 message), as PLUS does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use pinhole_igtl::{
    crc64, encode, Body, Header, IgtlError, Message, MetaEntry, Query, QueryKind, Status,
    StringBody, Timestamp, Transform, HEADER_SIZE,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::{log, Relay, Shared, Update};
use pinhole_guidance::pose::{affine_inverse, plan_to_ras, Mat4};
use pinhole_guidance::GuidanceMetrics;

/// Device names of what the server sends.
pub const METRICS_DEVICE: &str = "GuidanceMetrics";
pub const STATUS_DEVICE: &str = "GuidanceStatus";
pub const PLAN_DEVICE: &str = "PlanToRAS";

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut next_id: u64 = 1;
    let mut clients = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = crate::stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let id = next_id;
                    next_id += 1;
                    clients.spawn(client(shared.clone(), stream, peer, id));
                }
                Err(e) => {
                    log(format_args!("accept failed: {e}"));
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
        }
    }
    while clients.join_next().await.is_some() {}
}

async fn client(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, id: u64) {
    let stats = &shared.stats;
    stats.clients_connected.fetch_add(1, Ordering::Relaxed);
    stats.clients_total.fetch_add(1, Ordering::Relaxed);
    if shared.config.verbose {
        log(format_args!("client {id} ({peer}) connected"));
    }
    let (rd, wr) = stream.into_split();
    let version = AtomicU16::new(1);
    let (reply_tx, reply_rx) = mpsc::channel::<Message>(shared.config.reply_queue.max(1));
    let mut shutdown = shared.shutdown.subscribe();
    let reason = tokio::select! {
        r = read_loop(&shared, rd, peer, id, &version, &reply_tx) => r,
        r = write_loop(&shared, wr, id, &version, reply_rx) => r,
        _ = crate::stopped(&mut shutdown) => "server shutting down".to_owned(),
    };
    stats.clients_connected.fetch_sub(1, Ordering::Relaxed);
    let routine = reason.starts_with("closed by peer") || reason == "server shutting down";
    if shared.config.verbose || !routine {
        log(format_args!("client {id} ({peer}) disconnected: {reason}"));
    }
}

/// Reads one frame: `Ok(None)` on a clean end between messages.
async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    max_body: u64,
) -> Result<Option<(Header, Vec<u8>)>, IgtlError> {
    let mut head = [0u8; HEADER_SIZE];
    let mut got = 0;
    while got < HEADER_SIZE {
        let n = rd.read(&mut head[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(IgtlError::Truncated {
                    needed: HEADER_SIZE as u64,
                    available: got as u64,
                })
            };
        }
        got += n;
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&head[42..50]);
    let body_size = u64::from_be_bytes(size);
    if body_size > max_body {
        return Err(IgtlError::BodyTooLarge {
            claimed: body_size,
            limit: max_body,
        });
    }
    // Grows with the bytes that actually arrive (no allocation from the claim alone
    // beyond a small first chunk).
    let mut body = Vec::with_capacity(body_size.min(64 * 1024) as usize);
    rd.take(body_size).read_to_end(&mut body).await?;
    if (body.len() as u64) < body_size {
        return Err(IgtlError::Truncated {
            needed: HEADER_SIZE as u64 + body_size,
            available: (HEADER_SIZE + body.len()) as u64,
        });
    }
    let header = Header::parse(&head)?;
    Ok(Some((header, body)))
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
    loop {
        let (header, body) = match read_frame(&mut rd, cfg.decode.max_body_bytes).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return "closed by peer".to_owned(),
            Err(e) => {
                stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                stats
                    .clients_dropped_for_errors
                    .fetch_add(1, Ordering::Relaxed);
                return format!("closing client {id} ({peer}): {e}");
            }
        };
        stats.messages_in.fetch_add(1, Ordering::Relaxed);
        let decoded = if cfg.decode.verify_crc && crc64(&body) != header.crc {
            Err(IgtlError::CrcMismatch {
                expected: header.crc,
                computed: crc64(&body),
                type_name: header.type_name.clone(),
                device_name: header.device_name.clone(),
            })
        } else {
            Message::from_parts(&header, &body)
        };
        let message = match decoded {
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
        handle_message(shared, message, id, peer, replies, &mut unknown_seen);
    }
}

fn handle_message(
    shared: &Shared,
    message: Message,
    id: u64,
    peer: SocketAddr,
    replies: &mpsc::Sender<Message>,
    unknown_seen: &mut Vec<String>,
) {
    let cfg = &shared.config;
    let ts = message.timestamp.as_secs_f64();
    match &message.body {
        Body::Transform(t) if message.device_name == cfg.needle_device => {
            pose_in(shared, &t.to_matrix(), ts, &message.device_name, id, peer);
        }
        Body::Transform(t) if message.device_name == cfg.registration_device => {
            let m = t.to_matrix();
            match affine_inverse(&m) {
                Some(_) => {
                    if let Ok(mut r) = shared.registration.write() {
                        *r = Some(m);
                    }
                    if cfg.verbose {
                        log(format_args!("client {id} ({peer}): registration updated"));
                    }
                }
                None => log(format_args!(
                    "client {id} ({peer}): ignored a singular {} transform",
                    cfg.registration_device
                )),
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
        Body::Image(_) => shared.publish_relay(&message, id),
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

fn pose_in(shared: &Shared, m: &Mat4, ts: f64, device: &str, id: u64, peer: SocketAddr) {
    if shared.publish_pose(m, ts, device).is_none() {
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
    let text = if m.alert_reasons.is_empty() {
        format!("{}: on plan", m.alert.as_str())
    } else {
        format!("{}: {}", m.alert.as_str(), m.alert_reasons.join("; "))
    };
    status_message(Status::OK, m.alert.as_str(), &text)
}

fn plan_message(shared: &Shared) -> Message {
    let plan = shared.session.guidance.plan();
    let m = plan_to_ras(plan.target_lps, plan.direction());
    Message::new(PLAN_DEVICE, Body::Transform(Transform::from_matrix(&m)))
}

/// A message in header version `v` (v2: message id and metadata).
fn versioned(mut m: Message, v: u16, msg_id: u32, meta: Vec<MetaEntry>) -> Message {
    if v >= 2 {
        m = m.with_v2(msg_id, meta);
    }
    m
}

fn encode_all(messages: &[Message]) -> Option<Vec<u8>> {
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

async fn write_loop<W: AsyncWrite + Unpin>(
    shared: &Shared,
    mut wr: W,
    id: u64,
    version: &AtomicU16,
    mut replies: mpsc::Receiver<Message>,
) -> String {
    let timeout = shared.config.write_timeout;
    let mut metrics: watch::Receiver<Option<Arc<Update>>> = shared.metrics.subscribe();
    let mut relay: watch::Receiver<Option<Arc<Relay>>> = shared.relay.subscribe();
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
        if let Err(e) = write(&mut wr, &bytes, timeout).await {
            return stalled(shared, e);
        }
    }
    loop {
        let out: Out = tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() { return "server closed".into(); }
                let u = metrics.borrow_and_update().clone();
                let Some(u) = u else { continue };
                Out::Update(u)
            }
            changed = relay.changed() => {
                if changed.is_err() { return "server closed".into(); }
                let r = relay.borrow_and_update().clone();
                let Some(r) = r else { continue };
                if r.from_client == id { continue; }
                Out::Relay(r)
            }
            m = replies.recv() => {
                let Some(m) = m else { return "reader ended".into() };
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
        if let Err(e) = write(&mut wr, data, timeout).await {
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
    Io(std::io::Error),
}

async fn write<W: AsyncWrite + Unpin>(
    wr: &mut W,
    bytes: &[u8],
    timeout: std::time::Duration,
) -> Result<(), WriteError> {
    match tokio::time::timeout(timeout, wr.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(WriteError::Io(e)),
        Err(_) => Err(WriteError::TimedOut),
    }
}

fn stalled(shared: &Shared, e: WriteError) -> String {
    match e {
        WriteError::TimedOut => {
            shared
                .stats
                .clients_dropped_stalled
                .fetch_add(1, Ordering::Relaxed);
            format!(
                "stalled: nothing could be written for {:?}",
                shared.config.write_timeout
            )
        }
        WriteError::Io(e) => format!("closed by peer ({e})"),
    }
}
