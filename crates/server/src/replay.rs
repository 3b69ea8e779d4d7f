//! `pinhole replay`: recorded or synthesized needle poses sent as OpenIGTLink TRANSFORM
//! messages (synchronous, std sockets).
//!
//! CSV (RAS mm, one pose per row, `#` comments and a non-numeric header line skipped):
//! - 17 columns: `t, m00, m01, … m33` (4×4 row-major `NeedleTipToReference`);
//! - 8 columns: `t, x, y, z, qx, qy, qz, qw` (tip position and unit quaternion).
//!
//! `t` is in seconds; rows are sent at their `t` unless a rate is given.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use pinhole_igtl::{encode, read_message, Body, DecodeOptions, Message, Timestamp, Transform};

use crate::guidance::{scale, sub, unit};
use crate::pose::{flip_xy, Mat4, IDENTITY4};
use crate::session::PlanFile;

/// One recorded pose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedPose {
    pub t_s: f64,
    /// `NeedleTipToReference`, RAS, row-major.
    pub matrix: Mat4,
}

/// Why replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {what}")]
    Csv {
        path: String,
        line: usize,
        what: String,
    },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("sending to {addr}: {what}")]
    Send { addr: String, what: String },
}

/// Reads a pose CSV (see the module documentation).
pub fn read_csv(path: &Path) -> Result<Vec<TimedPose>, ReplayError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReplayError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_csv(&text).map_err(|(line, what)| ReplayError::Csv {
        path: path.display().to_string(),
        line,
        what,
    })
}

/// Parses pose CSV text; errors carry the 1-based line number.
pub fn parse_csv(text: &str) -> Result<Vec<TimedPose>, (usize, String)> {
    let mut poses = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let numbers: Option<Vec<f64>> = fields.iter().map(|f| f.parse().ok()).collect();
        let Some(v) = numbers else {
            if poses.is_empty() && n == first_content_line(text) {
                continue; // header
            }
            return Err((n + 1, format!("not numeric: {line:?}")));
        };
        if v.iter().any(|x| !x.is_finite()) {
            return Err((n + 1, "non-finite value".into()));
        }
        let matrix = match v.len() {
            17 => {
                let mut m = IDENTITY4;
                for (i, x) in v[1..].iter().enumerate() {
                    m[i / 4][i % 4] = *x;
                }
                m
            }
            8 => quaternion_matrix([v[1], v[2], v[3]], [v[4], v[5], v[6], v[7]])
                .ok_or((n + 1, "zero quaternion".to_owned()))?,
            k => {
                return Err((
                    n + 1,
                    format!("{k} columns: expected 17 (t + 4x4) or 8 (t, x, y, z, qx, qy, qz, qw)"),
                ))
            }
        };
        poses.push(TimedPose { t_s: v[0], matrix });
    }
    Ok(poses)
}

fn first_content_line(text: &str) -> usize {
    text.lines()
        .position(|l| !l.split('#').next().unwrap_or("").trim().is_empty())
        .unwrap_or(0)
}

/// Row-major 4×4 from a position and a quaternion (x, y, z, w), normalised.
pub fn quaternion_matrix(p: [f64; 3], q: [f64; 4]) -> Option<Mat4> {
    let n = q.iter().map(|v| v * v).sum::<f64>().sqrt();
    if n <= 0.0 || !n.is_finite() {
        return None;
    }
    let [x, y, z, w] = q.map(|v| v / n);
    Some([
        [
            1.0 - 2.0 * (y * y + z * z),
            2.0 * (x * y - z * w),
            2.0 * (x * z + y * w),
            p[0],
        ],
        [
            2.0 * (x * y + z * w),
            1.0 - 2.0 * (x * x + z * z),
            2.0 * (y * z - x * w),
            p[1],
        ],
        [
            2.0 * (x * z - y * w),
            2.0 * (y * z + x * w),
            1.0 - 2.0 * (x * x + y * y),
            p[2],
        ],
        [0.0, 0.0, 0.0, 1.0],
    ])
}

/// A needle pose (RAS) with its tip at `tip_lps` and axis `axis_lps`.
pub fn pose_ras(tip_lps: [f64; 3], axis_lps: [f64; 3]) -> Mat4 {
    crate::pose::plan_to_ras(tip_lps, Some(axis_lps))
}

/// An insertion along the plan's first path (entry → target), `duration_s` long at
/// `rate_hz`, in RAS: the tip advances uniformly from 10 mm outside the entry to the
/// target with a small drift — a lateral wander of up to 1.5 mm (two slow sinusoids,
/// vanishing at the start) and an axis wobble of up to about 1.5°. Deterministic.
pub fn synthesize(plan: &PlanFile, rate_hz: f64, duration_s: f64) -> Vec<TimedPose> {
    let target = plan.path_target_lps;
    let entry = plan
        .entry_lps
        .unwrap_or([target[0], target[1] + 80.0, target[2]]);
    let d = unit(sub(target, entry)).unwrap_or([0.0, -1.0, 0.0]);
    // Two unit vectors perpendicular to the path.
    let helper = if d[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let u = unit(pinhole_volume::math::cross(helper, d)).unwrap_or([1.0, 0.0, 0.0]);
    let w = pinhole_volume::math::cross(d, u);
    let start = sub(entry, scale(d, 10.0));
    let length = pinhole_volume::math::norm(sub(target, start));
    let n = ((duration_s * rate_hz).round() as usize).max(2);
    (0..n)
        .map(|i| {
            let s = i as f64 / (n - 1) as f64;
            let t_s = i as f64 / rate_hz;
            let ramp = (s * std::f64::consts::PI).sin();
            let a = 1.5 * ramp * (2.0 * std::f64::consts::PI * 0.7 * t_s).sin() * 0.7;
            let b = 1.5 * ramp * (2.0 * std::f64::consts::PI * 0.3 * t_s).cos() * 0.7;
            let mut tip = [0.0; 3];
            for k in 0..3 {
                tip[k] = start[k] + d[k] * length * s + u[k] * a + w[k] * b;
            }
            let wobble = 0.025 * ramp * (2.0 * std::f64::consts::PI * 0.5 * t_s).sin();
            let axis = unit([
                d[0] + u[0] * wobble,
                d[1] + u[1] * wobble,
                d[2] + u[2] * wobble,
            ])
            .unwrap_or(d);
            TimedPose {
                t_s,
                matrix: pose_ras(tip, axis),
            }
        })
        .collect()
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

/// The LPS tip of a RAS pose (for printing).
pub fn tip_lps(m: &Mat4) -> [f64; 3] {
    let l = flip_xy(m);
    [l[0][3], l[1][3], l[2][3]]
}
