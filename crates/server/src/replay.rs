//! `pinhole replay`: needle poses (read with `pinhole_io::pose_csv` or synthesized with
//! `pinhole_guidance::synthesize`) sent as OpenIGTLink TRANSFORM messages (synchronous,
//! std sockets); rows are sent at their `t` unless a rate is given.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pinhole_igtl::{encode, read_message, Body, DecodeOptions, Message, Timestamp, Transform};

pub use pinhole_io::pose_csv::TimedPose;

/// Why replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("sending to {addr}: {what}")]
    Send { addr: String, what: String },
}

/// What a replay saw.
#[derive(Debug, Clone, Default)]
pub struct ReplaySummary {
    pub sent: usize,
    /// GuidanceMetrics strings received.
    pub metrics_received: usize,
    /// The last GuidanceMetrics JSON received.
    pub last_metrics: Option<String>,
}

/// What `pinhole replay` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayReport {
    pub note: &'static str,
    pub version: &'static str,
    pub sent: usize,
    pub metrics_received: usize,
    /// The last GuidanceMetrics received (null when none, or not readable).
    pub last_metrics: Option<pinhole_guidance::GuidanceMetrics>,
}

impl ReplaySummary {
    /// The summary as printed, the last metrics parsed.
    pub fn report(&self) -> ReplayReport {
        ReplayReport {
            note: "Not for clinical use.",
            version: env!("CARGO_PKG_VERSION"),
            sent: self.sent,
            metrics_received: self.metrics_received,
            last_metrics: self
                .last_metrics
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
        }
    }
}

/// Sends `poses` as TRANSFORM `device` to `host:port`, at `rate_hz` when given, else at
/// the poses' own times. Replies are read (and counted) on a second thread so that the
/// server never sees this client stall.
pub fn send(
    poses: &[TimedPose],
    host: &str,
    port: u16,
    device: &str,
    rate_hz: Option<f64>,
    header_version: u16,
) -> Result<ReplaySummary, ReplayError> {
    let addr = format!("{host}:{port}");
    let stream = TcpStream::connect(&addr).map_err(|source| ReplayError::Connect {
        addr: addr.clone(),
        source,
    })?;
    let _ = stream.set_nodelay(true);
    let reader = stream.try_clone().map_err(|source| ReplayError::Connect {
        addr: addr.clone(),
        source,
    })?;
    let receiver = std::thread::spawn(move || {
        let mut summary = ReplaySummary::default();
        let mut r = BufReader::new(reader);
        while let Ok(m) = read_message(&mut r, &DecodeOptions::default()) {
            if let (Body::String(s), "GuidanceMetrics") = (&m.body, m.device_name.as_str()) {
                summary.metrics_received += 1;
                summary.last_metrics = Some(s.to_string_lossy().into_owned());
            }
        }
        summary
    });
    let mut stream = stream;
    let start = Instant::now();
    let t0 = poses.first().map_or(0.0, |p| p.t_s);
    for (i, p) in poses.iter().enumerate() {
        let due = match rate_hz {
            Some(r) if r > 0.0 => i as f64 / r,
            _ => (p.t_s - t0).max(0.0),
        };
        let wait = due - start.elapsed().as_secs_f64();
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
        let mut m = Message::new(device, Body::Transform(Transform::from_matrix(&p.matrix)));
        m.timestamp = Timestamp::now();
        if header_version >= 2 {
            m = m.with_v2(i as u32, Vec::new());
        }
        let bytes = encode(&m).map_err(|e| ReplayError::Send {
            addr: addr.clone(),
            what: e.to_string(),
        })?;
        stream.write_all(&bytes).map_err(|e| ReplayError::Send {
            addr: addr.clone(),
            what: e.to_string(),
        })?;
    }
    // Let the last replies arrive, then close.
    std::thread::sleep(Duration::from_millis(300));
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let mut summary = receiver.join().unwrap_or_default();
    summary.sent = poses.len();
    Ok(summary)
}
