//! `pinhole replay`: needle poses (read with `pinhole_io::pose_csv` or synthesized with
//! `pinhole_guidance::synthesize`) sent as OpenIGTLink TRANSFORM messages (synchronous,
//! std sockets); rows are sent at their `t` unless a rate is given.
//!
//! Tracked ultrasound sequences (`pinhole_io::sequence`) are sent as IMAGE messages
//! ([`send_images`]): 8-bit, one component, one slice, COORDINATE RAS, the matrix the
//! frame's `ImageToReference` (pixel scaling included, as the IMAGE header's T S N carry
//! direction × spacing), which the server's fusion places through its registration.
//! A frame is placed by its `ImageToReferenceTransform` when present, `OK` and a valid
//! image plane, else by `ProbeToReference · ImageToProbe` (both `OK`, the probe's pose
//! rigid: [`pinhole_ultrasound::tracking::image_to_reference`]), else skipped with a
//! warning naming it. 16-bit sequences are refused before connecting.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pinhole_igtl::{
    encode, read_message, Body, Coordinate, DecodeOptions, Endian, ImageBody, Message, ScalarType,
    Timestamp, Transform,
};
use pinhole_io::sequence::{FramePixels, PixelType, TrackedFrame, TrackedSequence};
use pinhole_ultrasound::plane::MIN_PIXEL_SPACING_MM;
use pinhole_ultrasound::tracking;
pub use pinhole_ultrasound::tracking::Placement;
use pinhole_volume::math::{cross, norm, Mat4};

pub use pinhole_io::pose_csv::TimedPose;

/// Frames per second of a sequence replayed without a rate whose frames do not all carry
/// a timestamp.
pub const DEFAULT_IMAGE_RATE_HZ: f64 = 30.0;

/// Skipped frames named one by one in a summary's warnings; the rest are counted.
const MAX_SKIP_WARNINGS: usize = 20;

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
    #[error(
        "the sequence has 16-bit pixels: ultrasound frames are sent as 8-bit IMAGEs (U8), \
         as the server fuses them; convert the sequence to 8 bits first"
    )]
    SixteenBit,
    #[error("frames of {width} × {height} pixels do not fit an IMAGE (at most 65535 a side)")]
    FrameSize { width: usize, height: usize },
    #[error("the replay rate must be a positive number of frames per second, got {0}")]
    Rate(f64),
    #[error("none of the sequence's {frames} frame(s) can be placed: {first}")]
    NothingToSend { frames: usize, first: String },
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
    let mut connection = Connection::open(host, port)?;
    let t0 = poses.first().map_or(0.0, |p| p.t_s);
    for (i, p) in poses.iter().enumerate() {
        let due = match rate_hz {
            Some(r) if r > 0.0 => i as f64 / r,
            _ => (p.t_s - t0).max(0.0),
        };
        let m = Message::new(device, Body::Transform(Transform::from_matrix(&p.matrix)));
        connection.send_at(due, m, i, header_version)?;
    }
    let mut summary = connection.close();
    summary.sent = poses.len();
    Ok(summary)
}

/// A replay's socket and the thread that reads (and counts) the server's replies, so
/// that the server never sees this client stall.
struct Connection {
    addr: String,
    stream: TcpStream,
    receiver: std::thread::JoinHandle<ReplaySummary>,
    start: Instant,
}

impl Connection {
    fn open(host: &str, port: u16) -> Result<Self, ReplayError> {
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
        Ok(Self {
            addr,
            stream,
            receiver,
            start: Instant::now(),
        })
    }

    /// Waits until `due_s` after the start, then sends `m` (message `index`) stamped now.
    fn send_at(
        &mut self,
        due_s: f64,
        mut m: Message,
        index: usize,
        header_version: u16,
    ) -> Result<(), ReplayError> {
        let wait = due_s - self.start.elapsed().as_secs_f64();
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
        m.timestamp = Timestamp::now();
        if header_version >= 2 {
            m = m.with_v2(index as u32, Vec::new());
        }
        let bytes = encode(&m).map_err(|e| ReplayError::Send {
            addr: self.addr.clone(),
            what: e.to_string(),
        })?;
        self.stream
            .write_all(&bytes)
            .map_err(|e| ReplayError::Send {
                addr: self.addr.clone(),
                what: e.to_string(),
            })
    }

    /// Lets the last replies arrive, closes, and returns what the reader counted.
    fn close(self) -> ReplaySummary {
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.receiver.join().unwrap_or_default()
    }
}

/// The `ImageToReference` of a sequence frame of `width × height` pixels and how it was
/// found ([`tracking::place_frame`] over the frame's valid transforms); `Err` says why the
/// frame cannot be placed.
pub fn place_frame(
    frame: &TrackedFrame,
    width: usize,
    height: usize,
) -> Result<(Mat4, Placement), String> {
    tracking::place_frame(|name| frame.valid_transform(name).copied(), width, height)
}

/// The IMAGE matrix of an `ImageToReference`: the same, except that a degenerate third
/// column (shorter than [`MIN_PIXEL_SPACING_MM`], as a 2-D calibration may have) becomes
/// the unit normal `x × y`, so that receivers can invert IJK → RAS.
pub fn image_matrix(image_to_reference: &Mat4) -> Mat4 {
    let mut m = *image_to_reference;
    let column = |c: usize| [m[0][c], m[1][c], m[2][c]];
    if norm(column(2)) < MIN_PIXEL_SPACING_MM {
        let n = cross(column(0), column(1));
        let length = norm(n);
        if length > 0.0 {
            for (r, row) in m.iter_mut().take(3).enumerate() {
                row[2] = n[r] / length;
            }
        }
    }
    m
}

/// What an image replay did.
#[derive(Debug, Clone, Default)]
pub struct ImageReplaySummary {
    /// IMAGE messages sent.
    pub sent: usize,
    /// Frames not sent (no usable placement).
    pub skipped: usize,
    /// Frames placed by their own `ImageToReference`.
    pub placed_by_image_to_reference: usize,
    /// Frames placed by `ProbeToReference · ImageToProbe`.
    pub placed_by_probe_and_calibration: usize,
    /// Frames per second used, `None` when the frames' timestamps were followed.
    pub rate_hz: Option<f64>,
    /// Skipped frames (named, the first [`MAX_SKIP_WARNINGS`]) and timing notes.
    pub warnings: Vec<String>,
    /// GuidanceMetrics strings received while sending.
    pub metrics_received: usize,
}

/// What `pinhole replay --sequence` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageReplayReport {
    pub note: &'static str,
    pub version: &'static str,
    pub sent: usize,
    pub skipped: usize,
    pub placed_by_image_to_reference: usize,
    pub placed_by_probe_and_calibration: usize,
    /// Frames per second used; null when the sequence's timestamps were followed.
    pub rate_hz: Option<f64>,
    pub metrics_received: usize,
    pub warnings: Vec<String>,
}

impl ImageReplaySummary {
    /// The summary as printed.
    pub fn report(&self) -> ImageReplayReport {
        ImageReplayReport {
            note: "Not for clinical use.",
            version: env!("CARGO_PKG_VERSION"),
            sent: self.sent,
            skipped: self.skipped,
            placed_by_image_to_reference: self.placed_by_image_to_reference,
            placed_by_probe_and_calibration: self.placed_by_probe_and_calibration,
            rate_hz: self.rate_hz,
            metrics_received: self.metrics_received,
            warnings: self.warnings.clone(),
        }
    }
}

/// A frame ready to send: its index in the file, when, and the IMAGE matrix.
struct PlannedImage {
    index: usize,
    due_s: f64,
    ijk_to_ras: Mat4,
}

/// Sends the frames of `sequence` as IMAGE `device` (RAS, the frame's `ImageToReference`)
/// to `host:port`: at `rate_hz` when given (frame `k` at `k / rate_hz`), else at the
/// frames' own timestamps when every frame has one, else at
/// [`DEFAULT_IMAGE_RATE_HZ`]. Frames that cannot be placed are skipped and named in the
/// summary's warnings. A 16-bit sequence, frames too large for an IMAGE, a bad rate or a
/// sequence with no placeable frame are refused before connecting.
pub fn send_images(
    sequence: &TrackedSequence,
    host: &str,
    port: u16,
    device: &str,
    rate_hz: Option<f64>,
    header_version: u16,
) -> Result<ImageReplaySummary, ReplayError> {
    let (planned, mut summary) = plan_images(sequence, rate_hz)?;
    // Checked by `plan_images`.
    let size = [sequence.width, sequence.height].map(|n| u16::try_from(n).unwrap_or(0));
    let mut connection = Connection::open(host, port)?;
    for p in planned {
        let pixels = match &sequence.frames[p.index].pixels {
            FramePixels::U8(v) => v.clone(),
            FramePixels::U16(_) => return Err(ReplayError::SixteenBit),
        };
        let body = ImageBody::new(
            [size[0], size[1], 1],
            ScalarType::U8,
            1,
            Endian::Big,
            Coordinate::Ras,
            &p.ijk_to_ras,
            pixels,
        );
        let m = Message::new(device, Body::Image(body));
        connection.send_at(p.due_s, m, p.index, header_version)?;
        summary.sent += 1;
    }
    summary.metrics_received = connection.close().metrics_received;
    Ok(summary)
}

/// Places and times every frame (no I/O).
fn plan_images(
    sequence: &TrackedSequence,
    rate_hz: Option<f64>,
) -> Result<(Vec<PlannedImage>, ImageReplaySummary), ReplayError> {
    if sequence.pixel_type == PixelType::U16 {
        return Err(ReplayError::SixteenBit);
    }
    let (width, height) = (sequence.width, sequence.height);
    if !(1..=usize::from(u16::MAX)).contains(&width)
        || !(1..=usize::from(u16::MAX)).contains(&height)
    {
        return Err(ReplayError::FrameSize { width, height });
    }
    if let Some(r) = rate_hz {
        if !(r.is_finite() && r > 0.0) {
            return Err(ReplayError::Rate(r));
        }
    }
    let mut summary = ImageReplaySummary::default();
    let timestamps: Option<Vec<f64>> = sequence
        .frames
        .iter()
        .map(|f| f.timestamp_s.filter(|t| t.is_finite()))
        .collect();
    let due = |k: usize, r: f64| k as f64 / r;
    let timing: Box<dyn Fn(usize) -> f64> = match (rate_hz, timestamps) {
        (Some(r), _) => {
            summary.rate_hz = Some(r);
            Box::new(move |k| due(k, r))
        }
        (None, Some(t)) if !t.is_empty() => {
            let t0 = t[0];
            Box::new(move |k| (t[k] - t0).max(0.0))
        }
        (None, _) => {
            summary.rate_hz = Some(DEFAULT_IMAGE_RATE_HZ);
            if !sequence.frames.is_empty() {
                summary.warnings.push(format!(
                    "not every frame has a timestamp: frames sent at {DEFAULT_IMAGE_RATE_HZ} \
                     per second"
                ));
            }
            Box::new(move |k| due(k, DEFAULT_IMAGE_RATE_HZ))
        }
    };
    let mut planned = Vec::new();
    let mut first_refusal = None;
    for (k, frame) in sequence.frames.iter().enumerate() {
        let placed = match &frame.pixels {
            FramePixels::U8(pixels) if pixels.len() == width * height => {
                place_frame(frame, width, height)
            }
            _ => Err(format!(
                "{} pixels, expected {width} × {height} U8",
                frame.pixels.len()
            )),
        };
        let (m, placement) = match placed {
            Ok(p) => p,
            Err(why) => {
                summary.skipped += 1;
                if summary.skipped <= MAX_SKIP_WARNINGS {
                    let at = frame
                        .timestamp_s
                        .map(|t| format!(" (t = {t} s)"))
                        .unwrap_or_default();
                    summary
                        .warnings
                        .push(format!("frame {k}{at} skipped: {why}"));
                }
                first_refusal.get_or_insert(why);
                continue;
            }
        };
        match placement {
            Placement::ImageToReference => summary.placed_by_image_to_reference += 1,
            Placement::ProbeToReferenceTimesImageToProbe => {
                summary.placed_by_probe_and_calibration += 1
            }
        }
        planned.push(PlannedImage {
            index: k,
            due_s: timing(k),
            ijk_to_ras: image_matrix(&m),
        });
    }
    if summary.skipped > MAX_SKIP_WARNINGS {
        summary.warnings.push(format!(
            "… {} more frame(s) skipped",
            summary.skipped - MAX_SKIP_WARNINGS
        ));
    }
    if planned.is_empty() {
        return Err(ReplayError::NothingToSend {
            frames: sequence.frames.len(),
            first: first_refusal.unwrap_or_else(|| "the sequence has no frames".to_owned()),
        });
    }
    Ok((planned, summary))
}
