//! Helpers: a synthetic session with hand-computable geometry, a server on free ports,
//! and a blocking OpenIGTLink client built on the codec.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pinhole_guidance::{PlanSource, PlannedNeedle, RiskGroup, Session, SessionInputs, TargetZone};
use pinhole_igtl::{encode, read_message, Body, DecodeOptions, Message, Transform};
use pinhole_server::{Running, ServerConfig};
use pinhole_volume::math::Mat4;
use pinhole_volume::{Grid, Volume};
use serde_json::Value;

#[path = "../../../tests/support/shared.rs"]
mod shared;
pub use shared::*;

pub const AORTA: u16 = 52;
pub const IVC: u16 = 63;

/// 60³ grid of 1 mm voxels, origin (−30, −30, −30) LPS, so voxel i sits at x = i − 30.
/// "aorta" fills x ∈ [10, 12] (patient LEFT), "inferior_vena_cava" x ∈ [−20, −18]
/// (patient RIGHT); everything else is background.
pub fn phantom_labels() -> Volume<u16> {
    let grid = Grid::axis_aligned([60, 60, 60], [1.0; 3], [-30.0; 3]).unwrap();
    let mut data = vec![0u16; grid.voxel_count()];
    for k in 0..60 {
        for j in 0..60 {
            for i in 40..=42 {
                data[grid.offset([i, j, k])] = AORTA;
            }
            for i in 10..=12 {
                data[grid.offset([i, j, k])] = IVC;
            }
        }
    }
    Volume::new(grid, data).unwrap()
}

pub fn phantom_names() -> BTreeMap<u32, String> {
    BTreeMap::from([
        (u32::from(AORTA), "aorta".to_owned()),
        (u32::from(IVC), "inferior_vena_cava".to_owned()),
    ])
}

/// Plan: entry (0, −25, 0) → target (0, 0, 0) LPS, i.e. the needle travels towards +y
/// (posterior). Risk groups from the plan: one group per vessel, clearance 5 mm.
pub fn phantom_plan() -> PlannedNeedle {
    let group = |name: &str, label: &str| RiskGroup {
        name: name.to_owned(),
        labels: vec![label.to_owned()],
        clearance_mm: 5.0,
        optional: false,
        weight: 1.0,
        source: "test phantom".to_owned(),
    };
    PlannedNeedle {
        target_lps: [0.0; 3],
        entry_lps: Some([0.0, -25.0, 0.0]),
        path_target_lps: [0.0; 3],
        risk_groups: Some(vec![
            group("aorta_group", "aorta"),
            group("ivc_group", "inferior_vena_cava"),
        ]),
    }
}

pub fn phantom_session(registration: Option<Mat4>) -> Session {
    let labels = phantom_labels();
    let grid = labels.grid().clone();
    Session::new(
        &grid,
        labels,
        phantom_names(),
        PlanSource::Plan(phantom_plan()),
        registration,
        SessionInputs {
            plan: Some("phantom".to_owned()),
            ..SessionInputs::default()
        },
    )
}

/// Target only (no line): a 3 mm sphere at the origin.
pub fn phantom_target_session() -> Session {
    let labels = phantom_labels();
    let grid = labels.grid().clone();
    Session::new(
        &grid,
        labels,
        phantom_names(),
        PlanSource::Target {
            target_lps: [0.0; 3],
            zone: TargetZone::Sphere {
                center_lps: [0.0; 3],
                radius_mm: 3.0,
            },
            label_id: None,
            description: "origin".into(),
            risk_groups: None,
        },
        None,
        SessionInputs::default(),
    )
}

/// A server on free loopback ports with its own runtime.
pub struct TestServer {
    pub rt: tokio::runtime::Runtime,
    pub running: Option<Running>,
}

impl TestServer {
    pub fn start(session: Session, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut config = ServerConfig {
            igtl_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: Some("127.0.0.1:0".parse().unwrap()),
            verbose: false,
            ..Default::default()
        };
        tweak(&mut config);
        let running = rt.block_on(pinhole_server::start(session, config)).unwrap();
        Self {
            rt,
            running: Some(running),
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub fn igtl_port(&self) -> u16 {
        self.running().igtl_addr.port()
    }

    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.running().http_addr.unwrap()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.igtl_port())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown());
        }
    }
}

/// A blocking OpenIGTLink client (our codec over a std socket).
pub struct Client {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Self { stream, reader }
    }

    pub fn from_parts(stream: TcpStream, reader: BufReader<TcpStream>) -> Self {
        Self { stream, reader }
    }

    pub fn send(&mut self, m: &Message) {
        self.stream.write_all(&encode(m).unwrap()).unwrap();
    }

    pub fn send_pose(&mut self, m: &Mat4) {
        self.send(&Message::new(
            "NeedleTipToReference",
            Body::Transform(Transform::from_matrix(m)),
        ));
    }

    pub fn try_recv(&mut self) -> Option<Message> {
        read_message(&mut self.reader, &DecodeOptions::default()).ok()
    }

    pub fn recv(&mut self) -> Message {
        read_message(&mut self.reader, &DecodeOptions::default()).unwrap()
    }

    /// Reads until a GuidanceMetrics STRING with `seq >= min_seq`; returns it (JSON) and
    /// the message.
    pub fn metrics(&mut self, min_seq: u64) -> (Value, Message) {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let m = self.recv();
            if let (Body::String(s), "GuidanceMetrics") = (&m.body, m.device_name.as_str()) {
                let v: Value = serde_json::from_str(s.as_str().unwrap()).unwrap();
                if v["seq"].as_u64().unwrap() >= min_seq {
                    return (v, m);
                }
            }
        }
        panic!("no metrics with seq >= {min_seq}");
    }
}

/// A RAS needle pose: tip `tip_ras`, axis (+z column) `axis_ras`, built independently of
/// the server's helpers (Gram–Schmidt by hand).
pub fn pose_ras(tip_ras: [f64; 3], axis_ras: [f64; 3]) -> Mat4 {
    let n = (axis_ras.iter().map(|v| v * v).sum::<f64>()).sqrt();
    let z = axis_ras.map(|v| v / n);
    let helper = if z[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let cross = |a: [f64; 3], b: [f64; 3]| {
        [
            a[1] * b[2] - a[2] * b[1],
            a[2] * b[0] - a[0] * b[2],
            a[0] * b[1] - a[1] * b[0],
        ]
    };
    let x = cross(helper, z);
    let xn = (x.iter().map(|v| v * v).sum::<f64>()).sqrt();
    let x = x.map(|v| v / xn);
    let y = cross(z, x);
    let mut m = [[0.0; 4]; 4];
    for r in 0..3 {
        m[r][0] = x[r];
        m[r][1] = y[r];
        m[r][2] = z[r];
        m[r][3] = tip_ras[r];
    }
    m[3][3] = 1.0;
    m
}

pub fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

pub fn assert_close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b} (tol {tol})");
}

/// Resident memory of this process (kB), from /proc.
pub fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Serialises the tests that allocate a lot (chest CT) with the one that measures the
/// process's memory, so that the measurement sees only its own server.
pub fn heavy_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A GET on a fresh connection: (status, response head in lower case, body with a chunked
/// transfer encoding undone).
pub fn http_get_full(addr: std::net::SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = out[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

/// A chunked HTTP body, joined.
pub fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
}

/// An 8-bit RGB PNG: (width, height, pixels).
pub fn decode_rgb_png(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}
