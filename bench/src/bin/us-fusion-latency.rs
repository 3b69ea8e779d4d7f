//! End-to-end latency of live ultrasound fusion in a running `pinhole serve` (issue #20):
//! a tracked ultrasound source sends 8-bit IMAGE frames (`Image_Reference`, default
//! 512 × 512) at a fixed rate through the session's target, a Slicer-like client reads
//! the fused `CTReslice` / `LabelReslice` images the server answers with, and a tracked
//! needle sends poses at 60 Hz meanwhile (guidance runs too), and a web viewer polls
//! `/api/us/latest` (10 Hz) and fetches `/api/us/frame.png` whenever a newer frame is
//! pictured, as the viewer's ultrasound panel does. Run by
//! `bench/us_fusion.sh`, which starts the server; this binary is only the clients.
//!
//! `us-fusion-latency [--seconds 60] [--fps 30] [--size 512] [--pixel-mm 0.12]
//!  [--igtl-port 18944] [--http-port 8080] [--burn-threads 0] [--needle-hz 60]
//!  [--viewer-hz 10]`
//!
//! **Latency** of a frame = the reader's clock when the last of its two fused images
//! has been read − the frame's OpenIGTLink timestamp, stamped by the sender just before
//! encoding and writing it (the fused images carry the frame's timestamp). Same machine,
//! same clock. It includes encoding and sending the 256 KiB frame, the server's decoding,
//! validation, reslicing, windowing, encoding and sending of both images, and the
//! reader's decoding. Frames the server skipped (newest wins) have no latency; they are
//! counted. `--burn-threads N` keeps N threads spinning on arithmetic for the "loaded"
//! figure. Prints one JSON object on stdout, the goal line on stderr.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use pinhole_igtl::{
    encode, read_message, Body, Coordinate, DecodeOptions, Endian, ImageBody, Message, ScalarType,
    Timestamp, Transform,
};
use serde_json::{json, Value};

#[path = "../support/http_client.rs"]
mod http_client;
use http_client::http_get;

/// Goal of issue #20: frame in → fused frame out, p99.
const GOAL_P99_MS: f64 = 20.0;

struct Config {
    seconds: f64,
    fps: f64,
    size: u16,
    pixel_mm: f64,
    igtl: SocketAddr,
    http: SocketAddr,
    burn_threads: usize,
    needle_hz: f64,
    viewer_hz: f64,
}

impl Config {
    fn from_args() -> anyhow::Result<Self> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let known = [
            "--seconds",
            "--fps",
            "--size",
            "--pixel-mm",
            "--igtl-port",
            "--http-port",
            "--burn-threads",
            "--needle-hz",
            "--viewer-hz",
        ];
        let mut values: HashMap<&str, String> = HashMap::new();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let Some(&name) = known.iter().find(|k| **k == flag.as_str()) else {
                bail!("unknown argument {flag:?} (known: {})", known.join(" "));
            };
            let v = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
            values.insert(name, v.clone());
        }
        let num = |name: &str, default: f64| -> anyhow::Result<f64> {
            match values.get(name) {
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| anyhow!("{name} {v:?}: expected a number ≥ 0")),
                None => Ok(default),
            }
        };
        let port = |name: &str, default: f64| -> anyhow::Result<u16> {
            let p = num(name, default)?;
            u16::try_from(p as u64).map_err(|_| anyhow!("{name}: not a port"))
        };
        let size = num("--size", 512.0)?;
        if !(16.0..=2048.0).contains(&size) {
            bail!("--size {size}: expected 16–2048 pixels");
        }
        let fps = num("--fps", 30.0)?;
        if !(1.0..=240.0).contains(&fps) {
            bail!("--fps {fps}: expected 1–240");
        }
        Ok(Self {
            seconds: num("--seconds", 60.0)?,
            fps,
            size: size as u16,
            pixel_mm: num("--pixel-mm", 0.12)?,
            igtl: SocketAddr::from(([127, 0, 0, 1], port("--igtl-port", 18944.0)?)),
            http: SocketAddr::from(([127, 0, 0, 1], port("--http-port", 8080.0)?)),
            burn_threads: num("--burn-threads", 0.0)? as usize,
            needle_hz: num("--needle-hz", 60.0)?,
            viewer_hz: num("--viewer-hz", 10.0)?,
        })
    }
}

fn unix_now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The session's target (LPS mm) from `/api/session`.
fn target_lps(http: SocketAddr) -> anyhow::Result<[f64; 3]> {
    let (status, body) = http_get(http, "/api/session", Duration::from_secs(10))?;
    if status != 200 {
        bail!("/api/session answered {status}");
    }
    let v: Value = serde_json::from_slice(&body).context("/api/session is not JSON")?;
    let t = v["target_lps"]
        .as_array()
        .filter(|a| a.len() == 3)
        .ok_or_else(|| anyhow!("/api/session has no target_lps"))?;
    let mut out = [0.0; 3];
    for (o, x) in out.iter_mut().zip(t) {
        *o = x
            .as_f64()
            .ok_or_else(|| anyhow!("target_lps is not numeric"))?;
    }
    Ok(out)
}

/// Frame `k`'s IJK→RAS: a plane through the target whose in-plane axes turn slowly
/// about the vertical (2° per frame), so every reslice differs; pixel x lateral, y down
/// the beam (LPS +S → −S), centred on the target.
fn frame_ijk_to_ras(cfg: &Config, target: [f64; 3], k: u64) -> [[f64; 4]; 4] {
    let a = (k as f64 * 2.0).to_radians();
    let x_lps = [a.cos(), a.sin(), 0.0].map(|v| v * cfg.pixel_mm);
    let y_lps = [0.0, 0.0, -cfg.pixel_mm];
    let z_lps = [a.sin(), -a.cos(), 0.0];
    let half = (f64::from(cfg.size) - 1.0) / 2.0;
    let origin_lps: [f64; 3] = std::array::from_fn(|r| target[r] - half * (x_lps[r] + y_lps[r]));
    let mut m = [[0.0; 4]; 4];
    for r in 0..3 {
        m[r] = [x_lps[r], y_lps[r], z_lps[r], origin_lps[r]];
    }
    m[3][3] = 1.0;
    // LPS → RAS on the world side (rows).
    for row in m.iter_mut().take(2) {
        for v in row.iter_mut() {
            *v = -*v;
        }
    }
    m
}

/// What the reader saw: per frame timestamp, which fused images arrived and when.
#[derive(Default)]
struct Received {
    /// Frame timestamp (bits of the f64) → (CTReslice read, LabelReslice read, latest
    /// read time in unix s).
    frames: HashMap<u64, (bool, bool, f64)>,
    bytes: u64,
    errors: Vec<String>,
}

fn reader(stream: TcpStream, stop: Arc<AtomicBool>, received: Arc<Mutex<Received>>) {
    let mut r = BufReader::with_capacity(1 << 20, stream);
    let opts = DecodeOptions {
        max_body_bytes: 64 << 20,
        ..DecodeOptions::default()
    };
    while !stop.load(Ordering::Relaxed) {
        match read_message(&mut r, &opts) {
            Ok(m) => {
                let now = unix_now_s();
                let Body::Image(image) = &m.body else {
                    continue;
                };
                let mut got = lock(&received);
                got.bytes += image.pixels.len() as u64;
                let key = m.timestamp.as_secs_f64().to_bits();
                let entry = got.frames.entry(key).or_insert((false, false, 0.0));
                match m.device_name.as_str() {
                    "CTReslice" => entry.0 = true,
                    "LabelReslice" => entry.1 = true,
                    _ => continue,
                }
                entry.2 = now;
            }
            Err(e) => {
                if !stop.load(Ordering::Relaxed) {
                    lock(&received).errors.push(e.to_string());
                }
                return;
            }
        }
    }
}

fn needle(cfg_hz: f64, target: [f64; 3], addr: SocketAddr, stop: Arc<AtomicBool>) -> u64 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    let _ = s.set_nodelay(true);
    // Read and drop what the server sends, so this client never falls behind.
    drain(&s, &stop);
    let period = Duration::from_secs_f64(1.0 / cfg_hz.max(1.0));
    let mut sent = 0u64;
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let phase = sent as f64 * 0.05;
        let m = [
            [1.0, 0.0, 0.0, -target[0] + 3.0 * phase.sin()],
            [0.0, 0.0, -1.0, -target[1] + 20.0],
            [0.0, 1.0, 0.0, target[2] + 3.0 * phase.cos()],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let mut msg = Message::new(
            "NeedleTipToReference",
            Body::Transform(Transform::from_matrix(&m)),
        );
        msg.timestamp = Timestamp::now();
        match encode(&msg) {
            Ok(bytes) if s.write_all(&bytes).is_ok() => sent += 1,
            _ => return sent,
        }
        let next = start + period * u32::try_from(sent).unwrap_or(u32::MAX);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    sent
}

/// Reads and drops what the server sends on `stream` (a thread) until `stop` or the end.
fn drain(stream: &TcpStream, stop: &Arc<AtomicBool>) {
    let Ok(read_side) = stream.try_clone() else {
        return;
    };
    let stop = stop.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(read_side);
        while !stop.load(Ordering::Relaxed) {
            if read_message(&mut r, &DecodeOptions::default()).is_err() {
                return;
            }
        }
    });
}

/// The web viewer's ultrasound panel: `/api/us/latest` at `hz`, the picture fetched when
/// its `seq` changes. Returns (polls, pictures fetched).
fn viewer(http: SocketAddr, hz: f64, stop: Arc<AtomicBool>) -> (u64, u64) {
    let period = Duration::from_secs_f64(1.0 / hz.max(0.1));
    let (mut polls, mut pictures, mut shown) = (0u64, 0u64, None);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if let Ok((200, body)) = http_get(http, "/api/us/latest", Duration::from_secs(5)) {
            polls += 1;
            let seq = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["seq"].as_u64());
            if seq.is_some() && seq != shown {
                let path = format!("/api/us/frame.png?view=blend&seq={}", seq.unwrap_or(0));
                if let Ok((200, _)) = http_get(http, &path, Duration::from_secs(5)) {
                    pictures += 1;
                    shown = seq;
                }
            }
        }
        std::thread::sleep(period.saturating_sub(started.elapsed()));
    }
    (polls, pictures)
}

fn burn(stop: Arc<AtomicBool>) -> u64 {
    let mut x = 1.0001_f64;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..100_000 {
            x = (x * 1.000_000_1).sqrt() + 1e-9;
        }
        n += 1;
    }
    n + (x as u64 & 1)
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

fn health(http: SocketAddr) -> Value {
    match http_get(http, "/api/health", Duration::from_secs(5)) {
        Ok((200, body)) => serde_json::from_slice(&body).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("us-fusion-latency: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cfg = Config::from_args()?;
    let target = target_lps(cfg.http)?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(Mutex::new(Received::default()));

    let reader_stream = TcpStream::connect(cfg.igtl).context("connecting the reader")?;
    reader_stream.set_nodelay(true)?;
    let reader_thread = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || reader(reader_stream, stop, received))
    };
    let needle_thread = {
        let (stop, hz, addr) = (stop.clone(), cfg.needle_hz, cfg.igtl);
        std::thread::spawn(move || {
            if hz > 0.0 {
                needle(hz, target, addr, stop)
            } else {
                0
            }
        })
    };
    let viewer_thread = {
        let (stop, hz, http) = (stop.clone(), cfg.viewer_hz, cfg.http);
        std::thread::spawn(move || {
            if hz > 0.0 {
                viewer(http, hz, stop)
            } else {
                (0, 0)
            }
        })
    };
    let burners: Vec<_> = (0..cfg.burn_threads)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || burn(stop))
        })
        .collect();

    let mut sender = TcpStream::connect(cfg.igtl).context("connecting the sender")?;
    sender.set_nodelay(true)?;
    // The server does not send fused images back to a frame's sender; what it does send
    // (the guidance stream) is drained.
    drain(&sender, &stop);
    let health_before = health(cfg.http);
    let n = usize::from(cfg.size) * usize::from(cfg.size);
    let pixels: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
    let period = Duration::from_secs_f64(1.0 / cfg.fps);
    let start = Instant::now();
    let mut sent_stamps = Vec::new();
    let mut late_sends = 0u64;
    let mut k = 0u64;
    while start.elapsed().as_secs_f64() < cfg.seconds {
        let body = ImageBody::new(
            [cfg.size, cfg.size, 1],
            ScalarType::U8,
            1,
            Endian::Little,
            Coordinate::Ras,
            &frame_ijk_to_ras(&cfg, target, k),
            pixels.clone(),
        );
        let mut msg = Message::new("Image_Reference", Body::Image(body));
        msg.timestamp = Timestamp::now();
        let bytes = encode(&msg).map_err(|e| anyhow!("encoding a frame: {e}"))?;
        sender.write_all(&bytes).context("sending a frame")?;
        sent_stamps.push(msg.timestamp.as_secs_f64().to_bits());
        k += 1;
        let next = start + period * u32::try_from(k).unwrap_or(u32::MAX);
        let now = Instant::now();
        if now > next {
            late_sends += 1;
        }
        std::thread::sleep(next.saturating_duration_since(now));
    }
    // Let the last fusions arrive.
    std::thread::sleep(Duration::from_millis(500));
    let health_after = health(cfg.http);
    stop.store(true, Ordering::Relaxed);
    let _ = sender.shutdown(std::net::Shutdown::Both);
    let burned: u64 = burners.into_iter().map(|b| b.join().unwrap_or(0)).sum();
    let needle_sent = needle_thread.join().unwrap_or(0);
    let (viewer_polls, viewer_pictures) = viewer_thread.join().unwrap_or((0, 0));
    drop(reader_thread); // blocked in a read until the server closes; not joined

    let got = lock(&received);
    let mut latencies_ms: Vec<f64> = sent_stamps
        .iter()
        .filter_map(|key| {
            let &(ct, labels, at) = got.frames.get(key)?;
            (ct && labels).then(|| (at - f64::from_bits(*key)) * 1e3)
        })
        .collect();
    latencies_ms.sort_by(f64::total_cmp);
    let fused = latencies_ms.len();
    let r = |v: Option<f64>| v.map(|x| (x * 1000.0).round() / 1000.0);
    let p99 = quantile(&latencies_ms, 0.99);
    let report = json!({
        "note": "Not for clinical use. Loopback, same clock; see bench/src/bin/us-fusion-latency.rs",
        "seconds": cfg.seconds,
        "fps": cfg.fps,
        "frame_px": [cfg.size, cfg.size],
        "pixel_mm": cfg.pixel_mm,
        "burn_threads": cfg.burn_threads,
        "burn_iterations": burned,
        "needle_poses_sent": needle_sent,
        "viewer_polls": viewer_polls,
        "viewer_pictures": viewer_pictures,
        "frames_sent": sent_stamps.len(),
        "sender_late": late_sends,
        "frames_fused_received": fused,
        "frames_skipped": sent_stamps.len() - fused,
        "latency_ms": {
            "p50": r(quantile(&latencies_ms, 0.5)),
            "p90": r(quantile(&latencies_ms, 0.9)),
            "p99": r(p99),
            "max": r(latencies_ms.last().copied()),
        },
        "reader_bytes": got.bytes,
        "reader_errors": got.errors,
        "server_health_before": health_before,
        "server_health_after": health_after,
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    match p99 {
        Some(p) => eprintln!(
            "frame in → fused out p99 {p:.2} ms (goal ≤ {GOAL_P99_MS} ms): {}; {fused} of {} frames fused, {} burn threads",
            if p <= GOAL_P99_MS { "met" } else { "NOT met" },
            sent_stamps.len(),
            cfg.burn_threads
        ),
        None => eprintln!("no fused frame received"),
    }
    Ok(())
}
