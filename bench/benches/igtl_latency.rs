//! OpenIGTLink loopback benchmark (plain `main`, run by bench/igtl.sh):
//! 1. TRANSFORM in → GuidanceMetrics STRING out at 1 kHz for 10 s: latency p50/p99/max and
//!    the CPU time of the server's runtime threads (from /proc/self/task/*/stat);
//! 2. 512×512 uint8 IMAGE relayed from one source to 10 clients at 60 fps: frames
//!    received per client, latency (IMAGE timestamp → arrival).
//!
//! Session: the abdomen CT's TotalSegmentator labels (../shared/data/abdomen-ct), target
//! liver (deepest point), default risk groups. Prints one JSON object.

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pinhole_guidance::{PlanSource, Session, SessionInputs, TargetZone};
use pinhole_igtl::{
    encode, read_message, Body, Coordinate, DecodeOptions, Endian, ImageBody, Message, ScalarType,
    Timestamp, Transform,
};
use pinhole_io::labels::LabelTable;
use pinhole_io::open::{read_volume, ReadOptions};
use pinhole_server::ServerConfig;
use pinhole_volume::target::TargetSpec;

const THREAD_NAME: &str = "igtl-bench-srv";

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Prefixes an error with what was being done (the file or the peer).
fn ctx<E: std::fmt::Display>(
    what: impl std::fmt::Display,
) -> impl FnOnce(E) -> Box<dyn std::error::Error> {
    move |e| format!("{what}: {e}").into()
}

fn data(rel: &str) -> PathBuf {
    std::env::var_os("PINHOLE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
        .join(rel)
}

/// utime + stime (s) of this process's threads named `THREAD_NAME`.
fn server_cpu_s() -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    for e in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.contains(THREAD_NAME) {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields after ')': state(0) ... utime is field 14 of the full line → index 11.
        let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
        let st: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        total += ut + st;
    }
    total as f64 / ticks
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn session() -> BenchResult<Session> {
    let path = data("abdomen-ct/example_seg.nii.gz");
    // pinhole-io's errors already name the file.
    let labels = read_volume(&path, &ReadOptions::default(), &mut |_, _| {})?
        .volume
        .to_labels()
        .ok_or_else(|| format!("{}: not a label map", path.display()))?;
    let table = LabelTable::totalsegmentator_v2();
    let target = "liver:deepest"
        .parse::<TargetSpec>()
        .map_err(ctx("target liver:deepest"))?
        .resolve(&labels, |n| table.id_of(n))
        .map_err(ctx(format!("target liver:deepest in {}", path.display())))?;
    let names: BTreeMap<u32, String> = table.iter().map(|(i, e)| (i, e.name.clone())).collect();
    let grid = labels.grid().clone();
    Ok(Session::new(
        &grid,
        labels,
        names,
        PlanSource::Target {
            target_lps: target.point_lps,
            zone: TargetZone::Mask(Box::new(target.region)),
            label_id: target.label_id,
            description: target.description,
            risk_groups: None,
        },
        None,
        SessionInputs::default(),
    ))
}

fn connect(port: u16) -> BenchResult<TcpStream> {
    let peer = format!("server 127.0.0.1:{port}");
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(ctx(&peer))?;
    s.set_nodelay(true).map_err(ctx(&peer))?;
    Ok(s)
}

fn latency(
    port: u16,
    target: [f64; 3],
    rate_hz: f64,
    seconds: f64,
) -> BenchResult<serde_json::Value> {
    let n = (rate_hz * seconds) as usize;
    let mut stream = connect(port)?;
    let reader = stream
        .try_clone()
        .map_err(ctx("cloning the server socket"))?;
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; n + 1]));
    let sent_r = sent.clone();
    let rx = std::thread::spawn(move || {
        let mut r = BufReader::new(reader);
        let mut lat = Vec::new();
        let opts = DecodeOptions::default();
        while let Ok(m) = read_message(&mut r, &opts) {
            let now = Instant::now();
            if let (Body::String(s), "GuidanceMetrics") = (&m.body, m.device_name.as_str()) {
                let text = s.to_string_lossy();
                let seq = text
                    .split("\"seq\":")
                    .nth(1)
                    .and_then(|t| t.split(',').next())
                    .and_then(|t| t.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let sent_at = sent_r
                    .lock()
                    .ok()
                    .and_then(|s| s.get(seq).copied().flatten());
                if let Some(t0) = sent_at {
                    lat.push(now.duration_since(t0).as_secs_f64() * 1e3);
                }
                if seq >= n {
                    break;
                }
            }
        }
        lat
    });
    let period = Duration::from_secs_f64(1.0 / rate_hz);
    let start = Instant::now();
    let cpu0 = server_cpu_s();
    for i in 1..=n {
        let due = start + period * (i as u32 - 1);
        // Sleep, never spin: on 2 cores a spinning sender takes CPU from the server it
        // measures. Latency counts from the actual send instant, so jitter here is harmless.
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        // A tip wandering around the target, needle along −y RAS.
        let a = i as f64 * 0.01;
        let m = [
            [1.0, 0.0, 0.0, -target[0] + 5.0 * a.sin()],
            [0.0, 0.0, -1.0, -target[1] + 20.0 + 5.0 * a.cos()],
            [0.0, 1.0, 0.0, target[2]],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let bytes = encode(&Message::new(
            "NeedleTipToReference",
            Body::Transform(Transform::from_matrix(&m)),
        ))
        .map_err(ctx("encoding a TRANSFORM"))?;
        if let Ok(mut s) = sent.lock() {
            s[i] = Some(Instant::now());
        }
        stream
            .write_all(&bytes)
            .map_err(ctx(format!("sending to server 127.0.0.1:{port}")))?;
    }
    let wall = start.elapsed().as_secs_f64();
    let mut lat = rx
        .join()
        .map_err(|_| "the metrics receiver thread panicked")?;
    let cpu = server_cpu_s() - cpu0;
    lat.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "poses_sent": n,
        "metrics_received": lat.len(),
        "rate_hz": rate_hz,
        "wall_s": wall,
        "latency_ms": {"p50": percentile(&lat, 0.5), "p99": percentile(&lat, 0.99),
                        "max": lat.last().copied().unwrap_or(f64::NAN)},
        "server_cpu_s": cpu,
        "server_cpu_percent_of_one_core": 100.0 * cpu / wall,
    }))
}

fn fanout(port: u16, clients: usize, fps: f64, seconds: f64) -> BenchResult<serde_json::Value> {
    let n = (fps * seconds) as usize;
    let mut receivers = Vec::with_capacity(clients);
    for _ in 0..clients {
        let s = connect(port)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(ctx("setting a receiver's read timeout"))?;
        receivers.push(std::thread::spawn(move || {
            let mut r = BufReader::new(s);
            let mut lat = Vec::new();
            // Viewers (Slicer, PLUS) do not check the CRC; the server's side is measured.
            let opts = DecodeOptions {
                verify_crc: false,
                ..Default::default()
            };
            while let Ok(m) = read_message(&mut r, &opts) {
                if let Body::Image(_) = m.body {
                    let now = Timestamp::now().as_secs_f64();
                    lat.push((now - m.timestamp.as_secs_f64()) * 1e3);
                }
            }
            lat
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut src = connect(port)?;
    let drain = src.try_clone().map_err(ctx("cloning the source socket"))?;
    std::thread::spawn(move || {
        let mut r = BufReader::new(drain);
        while read_message(&mut r, &DecodeOptions::default()).is_ok() {}
    });
    let mut ijk = [[0.0; 4]; 4];
    ijk[0][0] = 0.3;
    ijk[1][1] = 0.3;
    ijk[2][2] = 1.0;
    ijk[3][3] = 1.0;
    let period = Duration::from_secs_f64(1.0 / fps);
    let start = Instant::now();
    let cpu0 = server_cpu_s();
    for i in 0..n {
        let due = start + period * i as u32;
        if let Some(left) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
        let pixels: Vec<u8> = (0..512 * 512).map(|p| ((p + i) % 251) as u8).collect();
        let img = ImageBody::new(
            [512, 512, 1],
            ScalarType::U8,
            1,
            Endian::Little,
            Coordinate::Ras,
            &ijk,
            pixels,
        );
        let mut m = Message::new("Image_Reference", Body::Image(img));
        m.timestamp = Timestamp::now();
        let bytes = encode(&m).map_err(ctx("encoding an IMAGE"))?;
        src.write_all(&bytes)
            .map_err(ctx(format!("sending to server 127.0.0.1:{port}")))?;
    }
    let wall = start.elapsed().as_secs_f64();
    let results = receivers
        .into_iter()
        .map(|h| h.join())
        .collect::<Result<Vec<Vec<f64>>, _>>()
        .map_err(|_| "an IMAGE receiver thread panicked")?;
    let cpu = server_cpu_s() - cpu0;
    let counts: Vec<usize> = results.iter().map(Vec::len).collect();
    let mut all: Vec<f64> = results.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "clients": clients,
        "frames_sent": n,
        "target_fps": fps,
        "frames_received_per_client": counts,
        "min_fps_received": counts.iter().min().copied().unwrap_or(0) as f64 / wall,
        "latency_ms": {"p50": percentile(&all, 0.5), "p99": percentile(&all, 0.99)},
        "server_cpu_percent_of_one_core": 100.0 * cpu / wall,
    }))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("igtl_latency: {e}");
        std::process::exit(1);
    }
}

fn run() -> BenchResult<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 2.0 } else { 10.0 };
    let session = session()?;
    let target = session.guidance.plan().target_lps;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(THREAD_NAME)
        .enable_all()
        .build()
        .map_err(ctx("starting the tokio runtime"))?;
    let config = ServerConfig {
        igtl_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        http_addr: None,
        verbose: false,
        ..Default::default()
    };
    let running = rt
        .block_on(pinhole_server::start(session, config))
        .map_err(ctx("starting the server"))?;
    let port = running.igtl_addr.port();
    let lat = latency(port, target, 1000.0, secs)?;
    let fan = fanout(port, 10, 60.0, if quick { 2.0 } else { 5.0 })?;
    rt.block_on(running.shutdown());
    let report = serde_json::json!({
        "transform_to_metrics": lat,
        "image_fanout_512x512_u8": fan,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
