//! Soak benchmark of a running `pinhole serve` (issue 25): many OpenIGTLink trackers,
//! WebSocket viewers and slow or half-open clients at once, for minutes. Run by
//! `bench/igtl_soak.sh`, which starts the server; this binary is only a client (loopback).
//!
//! `igtl-soak --server-pid PID [--seconds 600] [--igtl-port 18944] [--http-port 8080]
//!  [--clients 100] [--rate-hz 100] [--viewers 20] [--slow-viewers 1]
//!  [--slow-viewer-bytes-per-s 2048] [--half-header-igtl 1] [--half-open-http 4]
//!  [--server-log FILE]`
//!
//! Load:
//! - `--clients` OpenIGTLink clients, each sending TRANSFORM `NeedleTipToReference` at
//!   `--rate-hz` (a tip wandering around the session's target, phases spread over the
//!   period) and reading everything the server sends;
//! - `--viewers` WebSocket viewers on `/ws/guidance`, reading as fast as they can;
//! - slow clients: `--slow-viewers` WebSocket viewers reading at
//!   `--slow-viewer-bytes-per-s`; `--half-header-igtl` OpenIGTLink clients that send 29
//!   of a header's 58 bytes and then nothing (they keep reading, so only the server's
//!   partial-message timeout can close them); `--half-open-http` HTTP connections that
//!   send part of a request head and stop. Each reconnects when the server closes it,
//!   and how long the server held it is recorded.
//! - `/api/health` polled once a second on a fresh connection (2 s timeout); the
//!   server's RSS (`/proc/PID/status` VmRSS) and CPU time sampled once a second.
//!
//! Ages (all on the machine's wall clock, which server and clients share):
//! - **served age** = a client's clock when it has read a GuidanceMetrics update −
//!   the update's `timestamp_s`, which is the OpenIGTLink timestamp of the pose it was
//!   computed from, stamped by that pose's sender just before sending. It is the age of
//!   the needle position the client is shown (pose → metrics age), whoever sent it.
//! - **own-pose latency**: the same, restricted to updates computed from the client's
//!   own poses (matched by their exact timestamp). Newest-wins means most of a client's
//!   poses are superseded by other clients' before they are sent out.
//! - **delivery age** = receive clock − `published_unix_s` (the server's clock when it
//!   computed the update): time spent queued towards the client.
//!
//! Before the load starts, one client sends poses until the update no longer lists
//! `risk_groups_pending` (the server computes the risk fields in the background).
//! Prints one JSON object on stdout and the goal lines on stderr.

use std::collections::{HashSet, VecDeque};
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use pinhole_igtl::{encode, Body, Header, Message, Timestamp, Transform, HEADER_SIZE};
use serde_json::{json, Value};

#[path = "../support/http_client.rs"]
mod http_client;
use http_client::http_get;

/// Goal of issue 25: p99 pose → metrics age across the tracking clients.
const GOAL_P99_MS: f64 = 5.0;
/// Goal of issue 25: no client is ever served guidance older than this.
const GOAL_MAX_MS: f64 = 100.0;
/// Largest OpenIGTLink body this client accepts from the server.
const MAX_BODY_BYTES: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------
// Arguments

struct Config {
    seconds: f64,
    igtl: SocketAddr,
    http: SocketAddr,
    server_pid: Option<u32>,
    server_log: Option<PathBuf>,
    clients: usize,
    rate_hz: f64,
    viewers: usize,
    slow_viewers: usize,
    slow_viewer_bytes_per_s: f64,
    half_header_igtl: usize,
    half_open_http: usize,
    warmup_timeout_s: f64,
}

impl Config {
    fn from_args() -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let known = [
            "--seconds",
            "--igtl-port",
            "--http-port",
            "--server-pid",
            "--server-log",
            "--clients",
            "--rate-hz",
            "--viewers",
            "--slow-viewers",
            "--slow-viewer-bytes-per-s",
            "--half-header-igtl",
            "--half-open-http",
            "--warmup-timeout-s",
        ];
        for a in args.iter().step_by(2) {
            if !known.contains(&a.as_str()) {
                bail!("unknown argument {a:?} (flags: {})", known.join(" "));
            }
        }
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        fn parse<T: std::str::FromStr>(
            v: Option<String>,
            flag: &str,
            default: T,
        ) -> anyhow::Result<T>
        where
            T::Err: std::fmt::Display,
        {
            match v {
                None => Ok(default),
                Some(s) => s.parse().map_err(|e| anyhow!("{flag} {s:?}: {e}")),
            }
        }
        let seconds: f64 = parse(value("--seconds"), "--seconds", 600.0)?;
        if !(seconds.is_finite() && (1.0..=86_400.0).contains(&seconds)) {
            bail!("--seconds {seconds}: must be 1–86400");
        }
        let rate_hz: f64 = parse(value("--rate-hz"), "--rate-hz", 100.0)?;
        if !(rate_hz.is_finite() && (0.1..=1000.0).contains(&rate_hz)) {
            bail!("--rate-hz {rate_hz}: must be 0.1–1000");
        }
        let slow: f64 = parse(
            value("--slow-viewer-bytes-per-s"),
            "--slow-viewer-bytes-per-s",
            2048.0,
        )?;
        if !(slow.is_finite() && (16.0..=1e9).contains(&slow)) {
            bail!("--slow-viewer-bytes-per-s {slow}: must be 16–1e9");
        }
        let count = |flag: &str, default: usize| -> anyhow::Result<usize> {
            let n: usize = parse(value(flag), flag, default)?;
            if n > 1000 {
                bail!("{flag} {n}: at most 1000");
            }
            Ok(n)
        };
        let port = |flag: &str, default: u16| -> anyhow::Result<SocketAddr> {
            Ok(SocketAddr::from((
                [127, 0, 0, 1],
                parse(value(flag), flag, default)?,
            )))
        };
        Ok(Self {
            seconds,
            igtl: port("--igtl-port", 18944)?,
            http: port("--http-port", 8080)?,
            server_pid: value("--server-pid")
                .map(|v| v.parse().map_err(|e| anyhow!("--server-pid {v:?}: {e}")))
                .transpose()?,
            server_log: value("--server-log").map(PathBuf::from),
            clients: count("--clients", 100)?,
            rate_hz,
            viewers: count("--viewers", 20)?,
            slow_viewers: count("--slow-viewers", 1)?,
            slow_viewer_bytes_per_s: slow,
            half_header_igtl: count("--half-header-igtl", 1)?,
            half_open_http: count("--half-open-http", 4)?,
            warmup_timeout_s: parse(value("--warmup-timeout-s"), "--warmup-timeout-s", 180.0)?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers

fn unix_now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The number after `"key":` in a flat JSON text (None: absent, `null` or not a number).
/// Cheap on purpose: the clients read thousands of updates a second on the same 2 cores
/// as the server they measure.
fn json_number(text: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let at = text.find(&pat)? + pat.len();
    let rest = text.get(at..)?.trim_start();
    let end = rest
        .find(|c: char| c == ',' || c == '}' || c.is_whitespace())
        .unwrap_or(rest.len());
    rest.get(..end)?.parse().ok()
}

/// Latency histogram: 10 µs buckets below 100 ms, 10 ms buckets up to 100 s, the exact
/// maximum. Quantiles are a bucket's upper edge (never optimistic by more than 0).
#[derive(Clone)]
struct Hist {
    counts: Vec<u32>,
    n: u64,
    sum_ms: f64,
    max_ms: f64,
    /// Samples below zero (clock steps), counted as 0.
    negative: u64,
}

const FINE_N: usize = 10_000; // 10 µs × 10,000 = 100 ms
const COARSE_N: usize = 9_990; // 10 ms × 9,990 = 99.9 s more

impl Hist {
    fn new() -> Self {
        Self {
            counts: vec![0; FINE_N + COARSE_N + 1],
            n: 0,
            sum_ms: 0.0,
            max_ms: 0.0,
            negative: 0,
        }
    }

    fn add(&mut self, ms: f64) {
        if !ms.is_finite() {
            return;
        }
        let ms = if ms < 0.0 {
            self.negative += 1;
            0.0
        } else {
            ms
        };
        let us = (ms * 1000.0) as u64;
        let i = if us < 100_000 {
            (us / 10) as usize
        } else {
            FINE_N + (((us - 100_000) / 10_000) as usize).min(COARSE_N)
        };
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(1);
        }
        self.n += 1;
        self.sum_ms += ms;
        self.max_ms = self.max_ms.max(ms);
    }

    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a = a.saturating_add(*b);
        }
        self.n += o.n;
        self.sum_ms += o.sum_ms;
        self.max_ms = self.max_ms.max(o.max_ms);
        self.negative += o.negative;
    }

    fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                let upper_ms = if i < FINE_N {
                    (i + 1) as f64 * 0.01
                } else if i < FINE_N + COARSE_N {
                    100.0 + (i - FINE_N + 1) as f64 * 10.0
                } else {
                    self.max_ms
                };
                return Some(upper_ms.min(self.max_ms));
            }
        }
        Some(self.max_ms)
    }

    fn count_over(&self, ms: f64) -> u64 {
        // Exact only at bucket edges; used with 100 ms, which is one.
        let us = (ms * 1000.0) as u64;
        let from = if us < 100_000 {
            (us / 10) as usize
        } else {
            FINE_N + ((us - 100_000) / 10_000) as usize
        };
        self.counts.iter().skip(from).map(|&c| u64::from(c)).sum()
    }

    fn summary(&self) -> Value {
        let r = |v: Option<f64>| v.map(|x| (x * 1000.0).round() / 1000.0);
        json!({
            "n": self.n,
            "p50": r(self.quantile_ms(0.5)),
            "p99": r(self.quantile_ms(0.99)),
            "p999": r(self.quantile_ms(0.999)),
            "max": if self.n == 0 { None } else { r(Some(self.max_ms)) },
            "mean": if self.n == 0 { None } else { r(Some(self.sum_ms / self.n as f64)) },
            "negative_clamped": self.negative,
        })
    }
}

/// VmRSS of `pid` in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// utime + stime of a process in seconds (`self` or a pid).
fn cpu_s(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / 100.0) // USER_HZ
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Sleeps until `deadline` or until `stop` is set (checked every 100 ms).
fn sleep_until(deadline: Instant, stop: &AtomicBool) {
    loop {
        let now = Instant::now();
        if now >= deadline || stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
    }
}

// ---------------------------------------------------------------------------------------
// OpenIGTLink

/// Reads one frame (header + body) without checking the CRC (as Slicer and PLUS do).
fn read_frame<R: Read>(r: &mut R, body: &mut Vec<u8>) -> std::io::Result<Header> {
    let mut head = [0u8; HEADER_SIZE];
    r.read_exact(&mut head)?;
    let h = Header::parse(&head)
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e.to_string()))?;
    if h.body_size > MAX_BODY_BYTES {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("body of {} bytes (> {MAX_BODY_BYTES})", h.body_size),
        ));
    }
    body.resize(h.body_size as usize, 0);
    r.read_exact(body)?;
    Ok(h)
}

/// A tracked tip wandering around the target (LPS → the tracker's RAS), needle along −y
/// RAS, as in benches/igtl_latency.rs; `phase` differs per client.
fn pose_message(target_lps: [f64; 3], phase: f64, stamp: Timestamp) -> anyhow::Result<Vec<u8>> {
    let m = [
        [1.0, 0.0, 0.0, -target_lps[0] + 5.0 * phase.sin()],
        [0.0, 0.0, -1.0, -target_lps[1] + 20.0 + 5.0 * phase.cos()],
        [0.0, 1.0, 0.0, target_lps[2]],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let mut msg = Message::new(
        "NeedleTipToReference",
        Body::Transform(Transform::from_matrix(&m)),
    );
    msg.timestamp = stamp;
    encode(&msg).map_err(|e| anyhow!("encoding a TRANSFORM: {e}"))
}

/// What one tracking client saw.
struct IgtlStats {
    poses_sent: u64,
    send_errors: u64,
    /// Ticks skipped because the sender woke more than one period late.
    ticks_skipped: u64,
    connections: u64,
    connect_failures: u64,
    /// STATUS TooManyClients (6) / NotAllowed (5) received.
    refused_busy: u64,
    refused_not_allowed: u64,
    metrics_received: u64,
    frames_received: u64,
    bytes_received: u64,
    /// Updates published by the server between two this client read (newest-wins).
    updates_skipped: u64,
    seq_out_of_order: u64,
    own_answered: u64,
    served: Hist,
    own: Hist,
    delivery: Hist,
    /// `published_unix_s − timestamp_s`: from the pose's send to the update's publication
    /// (the server's input queueing and evaluation).
    to_publish: Hist,
    /// Age of the first update after each connect: the server's latest update, which is
    /// as old as the last pose before the connect (kept out of `served`).
    on_connect: Hist,
}

impl IgtlStats {
    fn new() -> Self {
        Self {
            poses_sent: 0,
            send_errors: 0,
            ticks_skipped: 0,
            connections: 0,
            connect_failures: 0,
            refused_busy: 0,
            refused_not_allowed: 0,
            metrics_received: 0,
            frames_received: 0,
            bytes_received: 0,
            updates_skipped: 0,
            seq_out_of_order: 0,
            own_answered: 0,
            served: Hist::new(),
            own: Hist::new(),
            delivery: Hist::new(),
            to_publish: Hist::new(),
            on_connect: Hist::new(),
        }
    }

    /// Adds `other`'s counts and histograms to these (the totals over all clients).
    fn merge(&mut self, other: &Self) {
        self.poses_sent += other.poses_sent;
        self.send_errors += other.send_errors;
        self.ticks_skipped += other.ticks_skipped;
        self.connections += other.connections;
        self.connect_failures += other.connect_failures;
        self.refused_busy += other.refused_busy;
        self.refused_not_allowed += other.refused_not_allowed;
        self.metrics_received += other.metrics_received;
        self.frames_received += other.frames_received;
        self.bytes_received += other.bytes_received;
        self.updates_skipped += other.updates_skipped;
        self.seq_out_of_order += other.seq_out_of_order;
        self.own_answered += other.own_answered;
        self.served.merge(&other.served);
        self.own.merge(&other.own);
        self.delivery.merge(&other.delivery);
        self.to_publish.merge(&other.to_publish);
        self.on_connect.merge(&other.on_connect);
    }
}

/// Timestamps (f64 bits) of a client's recent poses, to recognise its own updates.
struct OwnPoses {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl OwnPoses {
    const KEEP: usize = 4096;
    fn insert(&mut self, ts: f64) {
        let bits = ts.to_bits();
        if self.set.insert(bits) {
            self.order.push_back(bits);
        }
        while self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

fn igtl_receiver(
    stream: TcpStream,
    stats: Arc<Mutex<IgtlStats>>,
    own: Arc<Mutex<OwnPoses>>,
    alive: Arc<AtomicBool>,
) {
    let mut r = BufReader::with_capacity(64 << 10, stream);
    let mut body = Vec::with_capacity(4096);
    let mut last_seq: Option<u64> = None;
    while let Ok(h) = read_frame(&mut r, &mut body) {
        let now = unix_now_s();
        let mut s = lock(&stats);
        s.frames_received += 1;
        s.bytes_received += HEADER_SIZE as u64 + h.body_size;
        match (h.type_name.as_str(), h.device_name.as_str()) {
            ("STRING", "GuidanceMetrics") => {
                // STRING body: encoding (u16), length (u16), text.
                let text = std::str::from_utf8(body.get(4..).unwrap_or_default()).unwrap_or("");
                s.metrics_received += 1;
                let first = last_seq.is_none();
                if let Some(ts) = json_number(text, "timestamp_s").filter(|t| *t > 0.0) {
                    let age_ms = (now - ts) * 1e3;
                    if first {
                        s.on_connect.add(age_ms);
                        last_seq = json_number(text, "seq").map(|v| v as u64);
                        continue;
                    }
                    s.served.add(age_ms);
                    if lock(&own).set.contains(&ts.to_bits()) {
                        s.own.add(age_ms);
                        s.own_answered += 1;
                    }
                }
                if let Some(p) = json_number(text, "published_unix_s") {
                    s.delivery.add((now - p) * 1e3);
                    if let Some(ts) = json_number(text, "timestamp_s").filter(|t| *t > 0.0) {
                        s.to_publish.add((p - ts) * 1e3);
                    }
                }
                if let Some(seq) = json_number(text, "seq").map(|v| v as u64) {
                    match last_seq {
                        Some(l) if seq > l => s.updates_skipped += seq - l - 1,
                        Some(_) => s.seq_out_of_order += 1,
                        None => {}
                    }
                    last_seq = Some(seq);
                }
            }
            ("STATUS", _) => {
                let code = body
                    .get(..2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .unwrap_or(0);
                match code {
                    6 => s.refused_busy += 1,
                    5 => s.refused_not_allowed += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    alive.store(false, Ordering::Relaxed);
}

#[allow(clippy::too_many_arguments)]
fn igtl_client(
    index: usize,
    cfg: &Config,
    target_lps: [f64; 3],
    start: Instant,
    end: Instant,
    stop: &AtomicBool,
    stats: Arc<Mutex<IgtlStats>>,
) {
    let own = Arc::new(Mutex::new(OwnPoses {
        set: HashSet::new(),
        order: VecDeque::new(),
    }));
    let period = Duration::from_secs_f64(1.0 / cfg.rate_hz);
    // Phases spread over one period so that the clients do not send in lock-step.
    let mut due = start + period.mul_f64(index as f64 / cfg.clients.max(1) as f64);
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let stream = match TcpStream::connect_timeout(&cfg.igtl, Duration::from_secs(2)) {
            Ok(s) => s,
            Err(_) => {
                lock(&stats).connect_failures += 1;
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        lock(&stats).connections += 1;
        let alive = Arc::new(AtomicBool::new(true));
        let reader = match stream.try_clone() {
            Ok(r) => r,
            Err(_) => {
                lock(&stats).connect_failures += 1;
                continue;
            }
        };
        let rx = {
            let (stats, own, alive) = (stats.clone(), own.clone(), alive.clone());
            std::thread::Builder::new()
                .name(format!("igtl-{index}-rx"))
                .stack_size(256 << 10)
                .spawn(move || igtl_receiver(reader, stats, own, alive))
        };
        let Ok(rx) = rx else {
            lock(&stats).connect_failures += 1;
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let mut w = &stream;
        loop {
            sleep_until(due, stop);
            if stop.load(Ordering::Relaxed) || !alive.load(Ordering::Relaxed) {
                break;
            }
            let now = Instant::now();
            if now >= end {
                break;
            }
            i += 1;
            let phase = i as f64 * 0.01 + index as f64;
            let stamp = Timestamp::now();
            let bytes = match pose_message(target_lps, phase, stamp) {
                Ok(b) => b,
                Err(_) => break,
            };
            lock(&own).insert(stamp.as_secs_f64());
            if w.write_all(&bytes).is_err() {
                lock(&stats).send_errors += 1;
                break;
            }
            lock(&stats).poses_sent += 1;
            due += period;
            // More than one period late: skip the missed ticks instead of bursting.
            if now > due + period {
                let behind = now.duration_since(due).as_secs_f64() / period.as_secs_f64();
                lock(&stats).ticks_skipped += behind as u64;
                due += period.mul_f64(behind.floor());
            }
        }
        let _ = stream.shutdown(Shutdown::Both);
        let _ = rx.join();
        if !stop.load(Ordering::Relaxed) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
            due = Instant::now();
        }
    }
}

/// A client that sends half an OpenIGTLink header and then nothing, reading what the
/// server sends, until the server closes it; reconnects. Returns how long each
/// connection was held (s).
fn half_header_igtl(cfg: &Config, target: [f64; 3], end: Instant, stop: &AtomicBool) -> Value {
    let mut held = Vec::new();
    let mut still_open_at_end = 0;
    let mut failures = 0;
    let half = pose_message(target, 0.0, Timestamp::now())
        .ok()
        .and_then(|b| b.get(..HEADER_SIZE / 2).map(<[u8]>::to_vec))
        .unwrap_or_default();
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let Ok(mut s) = TcpStream::connect_timeout(&cfg.igtl, Duration::from_secs(2)) else {
            failures += 1;
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let t0 = Instant::now();
        if s.write_all(&half).is_err() {
            failures += 1;
            continue;
        }
        let mut buf = [0u8; 16 << 10];
        let closed = loop {
            if stop.load(Ordering::Relaxed) || Instant::now() >= end {
                break false;
            }
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break true,
            }
        };
        if closed {
            held.push(t0.elapsed().as_secs_f64());
        } else {
            still_open_at_end += 1;
        }
    }
    hold_summary(&held, still_open_at_end, failures)
}

fn hold_summary(held: &[f64], still_open_at_end: u64, failures: u64) -> Value {
    let r = |x: f64| (x * 100.0).round() / 100.0;
    json!({
        "connections_closed_by_server": held.len(),
        "held_s_min": held.iter().copied().reduce(f64::min).map(r),
        "held_s_max": held.iter().copied().reduce(f64::max).map(r),
        "still_open_at_end": still_open_at_end,
        "connect_or_send_failures": failures,
    })
}

// ---------------------------------------------------------------------------------------
// HTTP: half-open connections, health

/// An HTTP connection that sends part of a request head and stops; reconnects when the
/// server closes it.
fn half_open_http(cfg: &Config, end: Instant, stop: &AtomicBool) -> (Vec<f64>, u64, u64, u64) {
    let mut held = Vec::new();
    let (mut still_open, mut failures, mut answered_503) = (0u64, 0u64, 0u64);
    let partial = format!("GET /api/health HTTP/1.1\r\nHost: {}\r\nUser-Ag", cfg.http);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let Ok(mut s) = TcpStream::connect_timeout(&cfg.http, Duration::from_secs(2)) else {
            failures += 1;
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let t0 = Instant::now();
        if s.write_all(partial.as_bytes()).is_err() {
            failures += 1;
            continue;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = loop {
            if stop.load(Ordering::Relaxed) || Instant::now() >= end {
                break false;
            }
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => got.extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break true,
            }
        };
        if got.starts_with(b"HTTP/1.1 503") {
            answered_503 += 1;
        }
        if closed {
            held.push(t0.elapsed().as_secs_f64());
        } else {
            still_open += 1;
        }
    }
    (held, still_open, failures, answered_503)
}

struct HealthLog {
    polls: u64,
    ok: u64,
    failures: Vec<String>,
    failures_total: u64,
    latency: Hist,
    longest_gap_s: f64,
    last_ok: Option<Instant>,
    last_body: Option<Value>,
}

fn poll_health(cfg: &Config, end: Instant, stop: &AtomicBool, log: &Mutex<HealthLog>) {
    let mut next = Instant::now();
    {
        lock(log).last_ok = Some(Instant::now());
    }
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        sleep_until(next, stop);
        next += Duration::from_secs(1);
        let t0 = Instant::now();
        let r = http_get(cfg.http, "/api/health", Duration::from_secs(2));
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut l = lock(log);
        l.polls += 1;
        match r {
            Ok((200, body)) if body.windows(13).any(|w| w == b"\"status\":\"ok\"") => {
                l.ok += 1;
                l.latency.add(ms);
                if let Some(prev) = l.last_ok {
                    l.longest_gap_s = l.longest_gap_s.max(prev.elapsed().as_secs_f64());
                }
                l.last_ok = Some(Instant::now());
                l.last_body = serde_json::from_slice(&body).ok();
            }
            other => {
                l.failures_total += 1;
                if l.failures.len() < 20 {
                    let what = match other {
                        Ok((code, _)) => format!("status {code}"),
                        Err(e) => format!("{e:#}"),
                    };
                    l.failures.push(format!("{ms:.0} ms: {what}"));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// WebSocket viewers

/// A stream whose reads are paced at `bytes_per_s` (small reads, sleeping between them).
struct Throttled {
    inner: TcpStream,
    bytes_per_s: f64,
    next: Instant,
}

impl Read for Throttled {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        }
        let chunk = ((self.bytes_per_s / 8.0) as usize).max(1);
        let limit = buf.len().min(chunk);
        let n = self.inner.read(buf.get_mut(..limit).unwrap_or_default())?;
        self.next =
            Instant::now().max(self.next) + Duration::from_secs_f64(n as f64 / self.bytes_per_s);
        Ok(n)
    }
}

impl Write for Throttled {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct WsStats {
    connections: u64,
    connect_failures: u64,
    /// Closed by the server or failed while connected (then reconnected).
    disconnects: u64,
    handshake_refusals: Vec<String>,
    metrics_received: u64,
    bytes_received: u64,
    updates_skipped: u64,
    seq_out_of_order: u64,
    served: Hist,
    delivery: Hist,
    on_connect: Hist,
}

impl WsStats {
    fn new() -> Self {
        Self {
            connections: 0,
            connect_failures: 0,
            disconnects: 0,
            handshake_refusals: Vec::new(),
            metrics_received: 0,
            bytes_received: 0,
            updates_skipped: 0,
            seq_out_of_order: 0,
            served: Hist::new(),
            delivery: Hist::new(),
            on_connect: Hist::new(),
        }
    }

    /// Adds `other`'s counts, histograms and refusals to these.
    fn merge(&mut self, other: &Self) {
        self.connections += other.connections;
        self.connect_failures += other.connect_failures;
        self.disconnects += other.disconnects;
        self.handshake_refusals
            .extend(other.handshake_refusals.iter().cloned());
        self.metrics_received += other.metrics_received;
        self.bytes_received += other.bytes_received;
        self.updates_skipped += other.updates_skipped;
        self.seq_out_of_order += other.seq_out_of_order;
        self.served.merge(&other.served);
        self.delivery.merge(&other.delivery);
        self.on_connect.merge(&other.on_connect);
    }
}

fn ws_read_loop<S: Read + Write>(
    mut ws: tungstenite::WebSocket<S>,
    stats: &Mutex<WsStats>,
    end: Instant,
    stop: &AtomicBool,
) -> bool {
    let mut last_seq: Option<u64> = None;
    loop {
        if stop.load(Ordering::Relaxed) || Instant::now() >= end {
            let _ = ws.close(None);
            let _ = ws.flush();
            return false;
        }
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let now = unix_now_s();
                let mut s = lock(stats);
                s.metrics_received += 1;
                s.bytes_received += t.len() as u64;
                if let Some(ts) = json_number(&t, "timestamp_s").filter(|t| *t > 0.0) {
                    if last_seq.is_none() {
                        s.on_connect.add((now - ts) * 1e3);
                        last_seq = json_number(&t, "seq").map(|v| v as u64);
                        continue;
                    }
                    s.served.add((now - ts) * 1e3);
                }
                if let Some(p) = json_number(&t, "published_unix_s") {
                    s.delivery.add((now - p) * 1e3);
                }
                if let Some(seq) = json_number(&t, "seq").map(|v| v as u64) {
                    match last_seq {
                        Some(l) if seq > l => s.updates_skipped += seq - l - 1,
                        Some(_) => s.seq_out_of_order += 1,
                        None => {}
                    }
                    last_seq = Some(seq);
                }
            }
            Ok(tungstenite::Message::Close(_)) => return true,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
}

fn ws_viewer(
    cfg: &Config,
    throttle: Option<f64>,
    end: Instant,
    stop: &AtomicBool,
    stats: &Mutex<WsStats>,
) {
    let url = format!("ws://{}/ws/guidance", cfg.http);
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let Ok(tcp) = TcpStream::connect_timeout(&cfg.http, Duration::from_secs(2)) else {
            lock(stats).connect_failures += 1;
            std::thread::sleep(Duration::from_millis(500));
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = tcp.set_write_timeout(Some(Duration::from_secs(2)));
        let dropped = match throttle {
            Some(rate) => {
                let slow = Throttled {
                    inner: tcp,
                    bytes_per_s: rate,
                    next: Instant::now(),
                };
                match tungstenite::client::client(url.as_str(), slow) {
                    Ok((ws, _)) => {
                        lock(stats).connections += 1;
                        ws_read_loop(ws, stats, end, stop)
                    }
                    Err(e) => handshake_failed(stats, e),
                }
            }
            None => match tungstenite::client::client(url.as_str(), tcp) {
                Ok((ws, _)) => {
                    lock(stats).connections += 1;
                    ws_read_loop(ws, stats, end, stop)
                }
                Err(e) => handshake_failed(stats, e),
            },
        };
        if dropped && !stop.load(Ordering::Relaxed) && Instant::now() < end {
            lock(stats).disconnects += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn handshake_failed<S: Read + Write>(
    stats: &Mutex<WsStats>,
    e: tungstenite::HandshakeError<tungstenite::ClientHandshake<S>>,
) -> bool {
    let mut s = lock(stats);
    s.connect_failures += 1;
    if s.handshake_refusals.len() < 10 {
        let text = match e {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => {
                format!("HTTP {}", r.status())
            }
            tungstenite::HandshakeError::Failure(e) => e.to_string(),
            tungstenite::HandshakeError::Interrupted(_) => "handshake interrupted".into(),
        };
        s.handshake_refusals.push(text);
    }
    std::thread::sleep(Duration::from_millis(300));
    true
}

// ---------------------------------------------------------------------------------------
// Run

/// Sends poses on one connection until an update no longer lists pending risk groups.
fn warm_up(cfg: &Config, target: [f64; 3]) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect_timeout(&cfg.igtl, Duration::from_secs(5))
        .with_context(|| format!("connecting to OpenIGTLink {}", cfg.igtl))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut body = Vec::new();
    let mut i = 0.0;
    while t0.elapsed().as_secs_f64() < cfg.warmup_timeout_s {
        i += 1.0;
        s.write_all(&pose_message(target, i, Timestamp::now())?)
            .context("warm-up: sending a pose")?;
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            match read_frame(&mut r, &mut body) {
                Ok(h) if h.type_name == "STRING" && h.device_name == "GuidanceMetrics" => {
                    let text = String::from_utf8_lossy(body.get(4..).unwrap_or_default());
                    if !text.contains("risk_groups_pending") {
                        return Ok(t0.elapsed().as_secs_f64());
                    }
                }
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => bail!("warm-up: reading from {}: {e}", cfg.igtl),
            }
        }
    }
    bail!(
        "warm-up: the risk fields were still pending after {} s",
        cfg.warmup_timeout_s
    )
}

fn log_counts(path: &PathBuf) -> Value {
    let Ok(meta) = std::fs::metadata(path) else {
        return json!({"file": path.display().to_string(), "error": "not readable"});
    };
    let Ok(f) = std::fs::File::open(path) else {
        return json!({"file": path.display().to_string(), "error": "not readable"});
    };
    let patterns = [
        "TRACKING SOURCE",
        "REGISTRATION",
        "disconnected",
        "refused",
        "timed out",
        "stalled",
        "WebSocket viewer dropped",
    ];
    let mut counts = vec![0u64; patterns.len()];
    let mut lines = 0u64;
    let mut first = Vec::new();
    let mut reader = BufReader::new(f);
    let mut line = String::new();
    while let Ok(n) = std::io::BufRead::read_line(&mut reader, &mut line) {
        if n == 0 {
            break;
        }
        lines += 1;
        for (c, p) in counts.iter_mut().zip(patterns) {
            if line.contains(p) {
                *c += 1;
            }
        }
        if first.len() < 12 && !line.contains("risk distance fields") {
            first.push(line.trim_end().to_owned());
        }
        line.clear();
    }
    let by_pattern: serde_json::Map<String, Value> = patterns
        .iter()
        .zip(&counts)
        .map(|(p, c)| ((*p).to_owned(), json!(c)))
        .collect();
    json!({
        "bytes": meta.len(),
        "lines": lines,
        "lines_containing": by_pattern,
        "first_lines": first,
    })
}

fn main() {
    if let Err(e) = run() {
        eprintln!("igtl-soak: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cfg = Config::from_args()?;
    let (code, body) = http_get(cfg.http, "/api/session", Duration::from_secs(10))?;
    if code != 200 {
        bail!("http://{}/api/session answered {code}", cfg.http);
    }
    let session: Value = serde_json::from_slice(&body).context("/api/session: not JSON")?;
    let target = session
        .get("target_lps")
        .and_then(Value::as_array)
        .and_then(|a| {
            let v: Vec<f64> = a.iter().filter_map(Value::as_f64).collect();
            <[f64; 3]>::try_from(v).ok()
        })
        .ok_or_else(|| anyhow!("/api/session: no target_lps"))?;
    let warmup_s = warm_up(&cfg, target)?;
    std::thread::sleep(Duration::from_secs(2));

    let pid = cfg.server_pid;
    let rss_before = pid.and_then(rss_mib);
    let server_cpu0 = pid.and_then(|p| cpu_s(&p.to_string()));
    let client_cpu0 = cpu_s("self");
    let health_before = http_get(cfg.http, "/api/health", Duration::from_secs(2))
        .ok()
        .and_then(|(_, b)| serde_json::from_slice::<Value>(&b).ok());
    let load_before = loadavg();
    let started_utc = unix_now_s();

    let stop = AtomicBool::new(false);
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs_f64(cfg.seconds);
    let igtl_stats: Vec<Arc<Mutex<IgtlStats>>> = (0..cfg.clients)
        .map(|_| Arc::new(Mutex::new(IgtlStats::new())))
        .collect();
    let viewer_stats: Vec<Mutex<WsStats>> = (0..cfg.viewers)
        .map(|_| Mutex::new(WsStats::new()))
        .collect();
    let slow_stats: Vec<Mutex<WsStats>> = (0..cfg.slow_viewers)
        .map(|_| Mutex::new(WsStats::new()))
        .collect();
    let health = Mutex::new(HealthLog {
        polls: 0,
        ok: 0,
        failures: Vec::new(),
        failures_total: 0,
        latency: Hist::new(),
        longest_gap_s: 0.0,
        last_ok: None,
        last_body: None,
    });
    let rss_samples = Mutex::new(Vec::<(f64, f64)>::new());
    let load_samples = Mutex::new(Vec::<(f64, String)>::new());

    let (half_header, half_open) = std::thread::scope(|sc| {
        let cfg = &cfg;
        let stop = &stop;
        let mut handles: Vec<std::thread::ScopedJoinHandle<'_, ()>> = Vec::new();
        handles.push(sc.spawn(|| poll_health(cfg, end, stop, &health)));
        handles.push(sc.spawn(|| {
            let mut next = start;
            let mut n = 0u64;
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                sleep_until(next, stop);
                next += Duration::from_secs(1);
                let t = start.elapsed().as_secs_f64();
                if let Some(r) = pid.and_then(rss_mib) {
                    lock(&rss_samples).push((t, r));
                }
                if n.is_multiple_of(60) {
                    lock(&load_samples).push((t, loadavg()));
                }
                n += 1;
            }
        }));
        for s in &slow_stats {
            handles.push(
                sc.spawn(move || ws_viewer(cfg, Some(cfg.slow_viewer_bytes_per_s), end, stop, s)),
            );
        }
        let hh: Vec<std::thread::ScopedJoinHandle<'_, Value>> = (0..cfg.half_header_igtl)
            .map(|_| sc.spawn(move || half_header_igtl(cfg, target, end, stop)))
            .collect();
        let ho: Vec<_> = (0..cfg.half_open_http)
            .map(|_| sc.spawn(move || half_open_http(cfg, end, stop)))
            .collect();
        for s in &viewer_stats {
            handles.push(sc.spawn(move || ws_viewer(cfg, None, end, stop, s)));
        }
        let mut igtl = Vec::new();
        for (i, s) in igtl_stats.iter().enumerate() {
            let s = s.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("igtl-{i}"))
                .stack_size(256 << 10)
                .spawn_scoped(sc, move || igtl_client(i, cfg, target, start, end, stop, s));
            match spawned {
                Ok(h) => igtl.push(h),
                Err(e) => eprintln!("igtl-soak: cannot start client thread {i}: {e}"),
            }
        }
        for h in igtl {
            let _ = h.join();
        }
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
        let half_header: Vec<Value> = hh.into_iter().filter_map(|h| h.join().ok()).collect();
        let mut held = Vec::new();
        let (mut open, mut fail, mut r503) = (0, 0, 0);
        for h in ho {
            if let Ok((h, o, f, r)) = h.join() {
                held.extend(h);
                open += o;
                fail += f;
                r503 += r;
            }
        }
        let mut half_open = hold_summary(&held, open, fail);
        if let Some(o) = half_open.as_object_mut() {
            o.insert("refused_with_503".into(), json!(r503));
            o.insert("connections".into(), json!(cfg.half_open_http));
        }
        (half_header, half_open)
    });
    let wall_s = start.elapsed().as_secs_f64();
    let server_cpu = pid
        .and_then(|p| cpu_s(&p.to_string()))
        .zip(server_cpu0)
        .map(|(a, b)| a - b);
    let client_cpu = cpu_s("self").zip(client_cpu0).map(|(a, b)| a - b);
    let load_end = loadavg();

    // After: the clients are gone; give the server a few seconds to settle.
    std::thread::sleep(Duration::from_secs(5));
    let rss_after = pid.and_then(rss_mib);
    let health_after = http_get(cfg.http, "/api/health", Duration::from_secs(5))
        .ok()
        .and_then(|(_, b)| serde_json::from_slice::<Value>(&b).ok());
    let session_after = http_get(cfg.http, "/api/session", Duration::from_secs(10)).ok();
    let (session_bytes, source_events) = match &session_after {
        Some((_, b)) => (
            b.len(),
            serde_json::from_slice::<Value>(b)
                .ok()
                .and_then(|v| {
                    v.get("source_events")
                        .and_then(Value::as_array)
                        .map(Vec::len)
                })
                .unwrap_or(0),
        ),
        None => (0, 0),
    };

    // Aggregate.
    let messages_in = |v: &Option<Value>| {
        v.as_ref()
            .and_then(|v| v.pointer("/stats/messages_in"))
            .and_then(Value::as_u64)
    };
    let server_in = messages_in(&health_after)
        .zip(messages_in(&health_before))
        .map(|(a, b)| a.saturating_sub(b));
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let mut igtl = IgtlStats::new();
    let mut per_client = Vec::new();
    let mut p99s = Vec::new();
    let mut worst_client: (f64, usize) = (0.0, 0);
    for (i, s) in igtl_stats.iter().enumerate() {
        let s = lock(s);
        igtl.merge(&s);
        if let Some(p) = s.served.quantile_ms(0.99) {
            p99s.push(p);
        }
        if s.served.max_ms > worst_client.0 {
            worst_client = (s.served.max_ms, i);
        }
        per_client.push(json!({
            "client": i,
            "poses_sent": s.poses_sent,
            "metrics_received": s.metrics_received,
            "updates_skipped": s.updates_skipped,
            "own_poses_answered": s.own_answered,
            "connections": s.connections,
            "refused_busy": s.refused_busy,
            "served_age_ms": s.served.summary(),
            "own_pose_latency_ms": s.own.summary(),
            "delivery_age_ms": s.delivery.summary(),
        }));
    }
    p99s.sort_by(f64::total_cmp);
    let IgtlStats {
        served,
        delivery,
        on_connect,
        ..
    } = &igtl;
    let ws_summary = |v: &[Mutex<WsStats>]| {
        let mut total = WsStats::new();
        let mut per = Vec::new();
        for (i, s) in v.iter().enumerate() {
            let s = lock(s);
            total.merge(&s);
            per.push(json!({
                "viewer": i,
                "metrics_received": s.metrics_received,
                "bytes_received": s.bytes_received,
                "updates_skipped": s.updates_skipped,
                "connections": s.connections,
                "disconnects": s.disconnects,
                "served_age_ms": s.served.summary(),
                "delivery_age_ms": s.delivery.summary(),
            }));
        }
        total.handshake_refusals.truncate(10);
        let json = json!({
            "count": v.len(),
            "metrics_received": total.metrics_received,
            "updates_skipped": total.updates_skipped,
            "seq_out_of_order": total.seq_out_of_order,
            "connections": total.connections,
            "connect_failures": total.connect_failures,
            "disconnects_then_reconnected": total.disconnects,
            "handshake_refusals": total.handshake_refusals,
            "served_age_ms": total.served.summary(),
            "delivery_age_ms": total.delivery.summary(),
            "first_update_after_connect_age_ms": total.on_connect.summary(),
            "per_viewer": per,
        });
        (total.served, json)
    };
    let (viewers_served, viewers_json) = ws_summary(&viewer_stats);
    let (slow_served, slow_json) = ws_summary(&slow_stats);
    let rss = lock(&rss_samples).clone();
    let rss_max = rss.iter().map(|s| s.1).reduce(f64::max);
    let rss_at_end = rss.last().map(|s| s.1);
    let h = lock(&health);
    let overall_p99 = served.quantile_ms(0.99);
    let mut igtl_and_viewers = served.clone();
    igtl_and_viewers.merge(&viewers_served);
    let oldest_any = served
        .max_ms
        .max(viewers_served.max_ms)
        .max(slow_served.max_ms);
    let goal_p99_met = overall_p99.is_some_and(|p| p <= GOAL_P99_MS);
    let goal_max_met = igtl_and_viewers.n > 0 && igtl_and_viewers.max_ms <= GOAL_MAX_MS;
    let health_throughout = h.polls > 0 && h.failures_total == 0 && h.longest_gap_s < 2.5;

    let report = json!({
        "benchmark": "igtl-soak",
        "started_unix_s": started_utc,
        "config": {
            "seconds": cfg.seconds, "igtl": cfg.igtl.to_string(), "http": cfg.http.to_string(),
            "clients": cfg.clients, "rate_hz": cfg.rate_hz, "viewers": cfg.viewers,
            "slow_viewers": cfg.slow_viewers, "slow_viewer_bytes_per_s": cfg.slow_viewer_bytes_per_s,
            "half_header_igtl": cfg.half_header_igtl, "half_open_http": cfg.half_open_http,
        },
        "measures": {
            "first_update_after_connect": "a new connection is first sent the server's latest update, as old as the last pose before it connected; its age is reported apart and kept out of served_age",
            "served_age": "client clock at reading a GuidanceMetrics update minus its timestamp_s (the OpenIGTLink timestamp of the pose it was computed from, stamped by that pose's sender just before sending); same machine, same clock",
            "own_pose_latency": "served age of updates computed from the client's own poses (matched by exact timestamp)",
            "delivery_age": "client clock at reading minus the update's published_unix_s (server clock when computed)",
            "pose_to_publish": "published_unix_s minus timestamp_s of the updates the OpenIGTLink clients read: the server's input queueing and evaluation (served age = pose_to_publish + delivery age)",
            "quantiles": "histogram bucket upper edges (10 µs below 100 ms, 10 ms above)",
        },
        "warmup_s": r3(warmup_s),
        "wall_s": r3(wall_s),
        "igtl_clients": {
            "poses_sent": igtl.poses_sent,
            "send_errors": igtl.send_errors,
            "sender_ticks_skipped_late": igtl.ticks_skipped,
            "metrics_received": igtl.metrics_received,
            "bytes_received": igtl.bytes_received,
            "updates_skipped_newest_wins": igtl.updates_skipped,
            "seq_out_of_order": igtl.seq_out_of_order,
            "own_poses_answered": igtl.own_answered,
            "own_poses_superseded": igtl.poses_sent.saturating_sub(igtl.own_answered),
            "connections": igtl.connections,
            "reconnects": igtl.connections.saturating_sub(cfg.clients as u64),
            "connect_failures": igtl.connect_failures,
            "refused_too_many_clients": igtl.refused_busy,
            "refused_not_allowed": igtl.refused_not_allowed,
            "served_age_ms": served.summary(),
            "served_over_100ms": served.count_over(GOAL_MAX_MS),
            "own_pose_latency_ms": igtl.own.summary(),
            "delivery_age_ms": delivery.summary(),
            "first_update_after_connect_age_ms": on_connect.summary(),
            "pose_to_publish_ms": igtl.to_publish.summary(),
            "server_poses_received": server_in,
            "poses_lost": server_in.map(|n| igtl.poses_sent.saturating_sub(n)),
            "per_client_p99_ms": {
                "min": p99s.first().copied(), "median": p99s.get(p99s.len() / 2).copied(),
                "max": p99s.last().copied(),
            },
            "worst_client": {"client": worst_client.1, "max_served_age_ms": r3(worst_client.0)},
            "per_client": per_client,
        },
        "ws_viewers": viewers_json,
        "slow_ws_viewers": slow_json,
        "half_header_igtl": half_header,
        "half_open_http": half_open,
        "oldest_guidance_served_ms": {
            "igtl_clients": r3(served.max_ms),
            "ws_viewers": r3(viewers_served.max_ms),
            "slow_ws_viewers": r3(slow_served.max_ms),
            "any": r3(oldest_any),
        },
        "health": {
            "polls": h.polls, "answered_ok": h.ok, "failures": h.failures_total,
            "first_failures": h.failures, "latency_ms": h.latency.summary(),
            "longest_gap_between_answers_s": r3(h.longest_gap_s),
            "answered_throughout": health_throughout,
            "stats_before": health_before.as_ref().and_then(|v| v.get("stats").cloned()),
            "stats_during_last": h.last_body.as_ref().and_then(|v| v.get("stats").cloned()),
            "stats_after": health_after.as_ref().and_then(|v| v.get("stats").cloned()),
        },
        "server": {
            "pid": pid,
            "rss_mib": {
                "before": rss_before.map(r3), "max_during": rss_max.map(r3),
                "at_end_of_load": rss_at_end.map(r3), "after_5s_idle": rss_after.map(r3),
            },
            "cpu_s": server_cpu.map(r3),
            "cpu_percent_of_one_core": server_cpu.map(|c| r3(100.0 * c / wall_s)),
            "session_json_bytes_after": session_bytes,
            "source_events_after": source_events,
            "log": cfg.server_log.as_ref().map(log_counts),
        },
        "client_process": {
            "cpu_s": client_cpu.map(r3),
            "cpu_percent_of_one_core": client_cpu.map(|c| r3(100.0 * c / wall_s)),
        },
        "loadavg": {
            "before": load_before,
            "during": lock(&load_samples).iter().map(|(t, l)| json!({"t_s": r3(*t), "loadavg": l})).collect::<Vec<_>>(),
            "end": load_end,
        },
        "goals": {
            "p99_pose_to_metrics_age_le_5ms": {"met": goal_p99_met, "p99_ms": overall_p99},
            "never_older_than_100ms_igtl_and_viewers": {
                "met": goal_max_met, "max_ms": r3(igtl_and_viewers.max_ms),
                "over_100ms": igtl_and_viewers.count_over(GOAL_MAX_MS),
            },
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let yes = |b: bool| if b { "MET" } else { "NOT MET" };
    eprintln!(
        "goal: p99 pose -> metrics age <= {GOAL_P99_MS} ms across the {} OpenIGTLink clients: {} (p99 {} ms, p50 {} ms, {} updates read)",
        cfg.clients,
        yes(goal_p99_met),
        overall_p99.map_or("-".into(), |p| format!("{p:.2}")),
        served
            .quantile_ms(0.5)
            .map_or("-".into(), |p| format!("{p:.2}")),
        served.n
    );
    eprintln!(
        "goal: no client served guidance older than {GOAL_MAX_MS} ms (OpenIGTLink clients and {} viewers): {} (oldest {:.1} ms, {} updates over); slow viewers' oldest {:.1} ms",
        cfg.viewers,
        yes(goal_max_met),
        igtl_and_viewers.max_ms,
        igtl_and_viewers.count_over(GOAL_MAX_MS),
        slow_served.max_ms
    );
    eprintln!(
        "/api/health answered throughout: {} ({} of {} polls, longest gap {:.1} s); server RSS before {} / max {} / after {} MiB",
        health_throughout,
        h.ok,
        h.polls,
        h.longest_gap_s,
        rss_before.map_or("-".into(), |v| format!("{v:.1}")),
        rss_max.map_or("-".into(), |v| format!("{v:.1}")),
        rss_after.map_or("-".into(), |v| format!("{v:.1}")),
    );
    Ok(())
}
