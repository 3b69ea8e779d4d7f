//! Recording a live session at tracker rate: the caller queues samples (never waiting
//! on the disk), a writer thread with its own connection commits them in transactions
//! at least every [`RecorderOptions::commit_interval`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result, WithPath};
use crate::schema::{self, NOW_UTC};
use crate::{Mat4, SessionId};

/// The `kind` of the alert row the writer adds when samples were dropped.
pub const DROPPED_ALERT_KIND: &str = "record_dropped";

/// Queue size and commit interval of a [`SessionRecorder`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecorderOptions {
    /// Samples waiting for the writer, at most (poses, metrics and alerts together).
    pub queue_capacity: usize,
    /// The writer commits at least this often while samples arrive.
    pub commit_interval: Duration,
}

impl Default for RecorderOptions {
    /// 16,384 samples (8 s of 1 kHz poses with their metrics), 250 ms.
    fn default() -> Self {
        Self {
            queue_capacity: 16_384,
            commit_interval: Duration::from_millis(250),
        }
    }
}

/// What became of a sample handed to the recorder.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue was full: the sample is not recorded. `dropped_total` counts every
    /// sample this session dropped so far; the writer records a warning row.
    Dropped {
        dropped_total: u64,
    },
}

/// What the writer has committed so far (samples in the file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    pub poses: u64,
    pub metrics: u64,
    pub alerts: u64,
    /// The latest pose time committed (ms since the session started).
    pub last_pose_t_ms: Option<f64>,
    pub transactions: u64,
}

/// A finished session's counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub session_id: SessionId,
    pub committed: Committed,
    /// Samples dropped because the queue was full (also in the session row).
    pub dropped: u64,
}

enum Message {
    Pose {
        t_ms: f64,
        tool: String,
        matrix: [u8; 128],
    },
    Metrics {
        t_ms: f64,
        json: serde_json::Value,
    },
    Alert {
        t_ms: f64,
        kind: String,
        message: String,
    },
    Finish,
}

/// Dropped samples by kind: poses, metrics, alerts.
const KINDS: [&str; 3] = ["poses", "metrics", "alerts"];

#[derive(Default)]
struct Shared {
    dropped: [AtomicU64; 3],
    committed: Mutex<Committed>,
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|d| d.load(Ordering::Relaxed)).sum()
    }

    fn committed(&self) -> Committed {
        self.committed.lock().map(|c| *c).unwrap_or_default()
    }
}

/// Records one live session; see the module documentation. Dropping it without
/// [`finish`](Self::finish) commits what was queued but leaves the session without an
/// end time (as a crash would).
pub struct SessionRecorder {
    session_id: SessionId,
    path: PathBuf,
    sender: Option<SyncSender<Message>>,
    writer: Option<JoinHandle<Result<()>>>,
    shared: Arc<Shared>,
}

impl SessionRecorder {
    pub(crate) fn start(
        path: &Path,
        session_id: SessionId,
        options: RecorderOptions,
    ) -> Result<Self> {
        if options.queue_capacity == 0 || options.commit_interval.is_zero() {
            return Err(Error::new(
                path,
                ErrorKind::InvalidInput("queue capacity and commit interval must be > 0".into()),
            ));
        }
        let conn = schema::connect(path, false)?;
        let (sender, receiver) = mpsc::sync_channel(options.queue_capacity);
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            conn,
            path: path.to_path_buf(),
            session_id,
            receiver,
            shared: Arc::clone(&shared),
            interval: options.commit_interval,
            dropped_recorded: 0,
            last_t_ms: 0.0,
        };
        let thread = std::thread::Builder::new()
            .name(format!("pinhole-record-{session_id}"))
            .spawn(move || writer.run())
            .with_path(path)?;
        Ok(Self {
            session_id,
            path: path.to_path_buf(),
            sender: Some(sender),
            writer: Some(thread),
            shared,
        })
    }

    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// Queues a pose: `matrix` is the tool's pose in LPS mm (row-major), `t_ms` the time
    /// since the session started. Non-finite values are refused.
    pub fn pose(&self, t_ms: f64, tool: &str, matrix: &Mat4) -> Result<Push> {
        self.check_time(t_ms)?;
        let mut bytes = [0u8; 128];
        for (i, v) in matrix.iter().flatten().enumerate() {
            if !v.is_finite() {
                return Err(self.error(ErrorKind::InvalidInput(format!(
                    "pose at {t_ms} ms: non-finite matrix element"
                ))));
            }
            bytes[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        self.push(
            0,
            Message::Pose {
                t_ms,
                tool: tool.to_owned(),
                matrix: bytes,
            },
        )
    }

    /// Queues guidance metrics (`GuidanceMetrics` or any JSON object; its key columns are
    /// read from the fields of the same names).
    pub fn metrics(&self, t_ms: f64, metrics: &impl Serialize) -> Result<Push> {
        self.check_time(t_ms)?;
        let json = serde_json::to_value(metrics).with_path(&self.path)?;
        self.push(1, Message::Metrics { t_ms, json })
    }

    /// Queues an alert (`kind`: e.g. `danger`, `caution`, `tracking_lost`).
    pub fn alert(&self, t_ms: f64, kind: &str, message: &str) -> Result<Push> {
        self.check_time(t_ms)?;
        self.push(
            2,
            Message::Alert {
                t_ms,
                kind: kind.to_owned(),
                message: message.to_owned(),
            },
        )
    }

    /// Samples dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped_total()
    }

    /// What the writer has committed so far.
    pub fn committed(&self) -> Committed {
        self.shared.committed()
    }

    /// Commits what is queued, marks the session ended and stops the writer.
    pub fn finish(mut self) -> Result<SessionSummary> {
        if let Some(sender) = self.sender.take() {
            // Blocks while the queue is full: the writer is draining it. An error means
            // the writer has stopped; its result below says why.
            let _ = sender.send(Message::Finish);
        }
        self.join()?;
        Ok(SessionSummary {
            session_id: self.session_id,
            committed: self.shared.committed(),
            dropped: self.shared.dropped_total(),
        })
    }

    fn join(&mut self) -> Result<()> {
        self.sender = None;
        match self.writer.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(self.error(ErrorKind::WriterStopped("writer panicked".into()))),
        }
    }

    fn push(&self, kind: usize, message: Message) -> Result<Push> {
        let Some(sender) = self.sender.as_ref() else {
            return Err(self.error(ErrorKind::WriterStopped("session finished".into())));
        };
        match sender.try_send(message) {
            Ok(()) => Ok(Push::Queued),
            Err(TrySendError::Full(_)) => {
                self.shared.dropped[kind].fetch_add(1, Ordering::Relaxed);
                Ok(Push::Dropped {
                    dropped_total: self.shared.dropped_total(),
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                let why = self
                    .shared
                    .failure
                    .lock()
                    .ok()
                    .and_then(|f| f.clone())
                    .unwrap_or_else(|| "writer thread ended".into());
                Err(self.error(ErrorKind::WriterStopped(why)))
            }
        }
    }

    fn check_time(&self, t_ms: f64) -> Result<()> {
        if t_ms.is_finite() {
            Ok(())
        } else {
            Err(self.error(ErrorKind::InvalidInput(format!("time {t_ms} ms"))))
        }
    }

    fn error(&self, kind: ErrorKind) -> Error {
        Error::new(&self.path, kind)
    }
}

impl Drop for SessionRecorder {
    fn drop(&mut self) {
        // The writer sees the queue closed, commits what it holds and stops.
        let _ = self.join();
    }
}

/// How a batch ended.
#[derive(PartialEq)]
enum State {
    Open,
    Finish,
    Closed,
}

/// The writer thread's side.
struct Writer {
    conn: Connection,
    path: PathBuf,
    session_id: SessionId,
    receiver: Receiver<Message>,
    shared: Arc<Shared>,
    interval: Duration,
    /// Dropped samples already reported in an alert row.
    dropped_recorded: u64,
    /// The latest sample time seen (for the drop warning row).
    last_t_ms: f64,
}

/// Samples inserted in the current transaction.
#[derive(Default)]
struct Batch {
    poses: u64,
    metrics: u64,
    alerts: u64,
    last_pose_t_ms: Option<f64>,
}

impl Writer {
    fn run(mut self) -> Result<()> {
        let result = self.run_batches();
        if let Err(e) = &result {
            if let Ok(mut failure) = self.shared.failure.lock() {
                *failure = Some(e.to_string());
            }
        }
        result
    }

    fn run_batches(&mut self) -> Result<()> {
        let mut state = State::Open;
        while state == State::Open {
            let first = match self.receiver.recv_timeout(self.interval) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    state = State::Closed;
                    None
                }
            };
            if first.is_none() && state == State::Open && !self.new_drops() {
                continue;
            }
            state = self.batch(first, state)?;
        }
        Ok(())
    }

    fn new_drops(&self) -> bool {
        self.shared.dropped_total() > self.dropped_recorded
    }

    /// One transaction: `first` and what arrives within the commit interval.
    fn batch(&mut self, first: Option<Message>, mut state: State) -> Result<State> {
        let path = self.path.clone();
        let deadline = Instant::now() + self.interval;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .with_path(&path)?;
        let mut batch = Batch::default();
        let mut last_t_ms = self.last_t_ms;
        let mut next = first;
        loop {
            if let Some(message) = next.take() {
                if insert(&tx, self.session_id, message, &mut batch, &mut last_t_ms)
                    .with_path(&path)?
                {
                    state = State::Finish;
                }
            }
            if state != State::Open {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self.receiver.recv_timeout(deadline - now) {
                Ok(m) => next = Some(m),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => state = State::Closed,
            }
        }
        // Drops counted so far (also those of this batch's time) get their warning row.
        let dropped: Vec<u64> = self
            .shared
            .dropped
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .collect();
        let total: u64 = dropped.iter().sum();
        if total > self.dropped_recorded {
            let by_kind: Vec<String> = KINDS
                .iter()
                .zip(&dropped)
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            let message = format!(
                "recorder queue full: {} more samples not recorded ({} in all this session: {})",
                total - self.dropped_recorded,
                total,
                by_kind.join(", ")
            );
            tx.execute(
                "INSERT INTO alerts (session_id, t_ms, kind, message) VALUES (?1, ?2, ?3, ?4)",
                params![self.session_id, last_t_ms, DROPPED_ALERT_KIND, message],
            )
            .with_path(&path)?;
            batch.alerts += 1;
            let total_i64 = i64::try_from(total).unwrap_or(i64::MAX);
            tx.execute(
                "UPDATE sessions SET dropped = ?2 WHERE id = ?1",
                params![self.session_id, total_i64],
            )
            .with_path(&path)?;
        }
        if state == State::Finish {
            tx.execute(
                &format!("UPDATE sessions SET ended_utc = {NOW_UTC} WHERE id = ?1"),
                [self.session_id],
            )
            .with_path(&path)?;
        }
        tx.commit().with_path(&path)?;
        self.dropped_recorded = total.max(self.dropped_recorded);
        self.last_t_ms = last_t_ms;
        if let Ok(mut c) = self.shared.committed.lock() {
            c.poses += batch.poses;
            c.metrics += batch.metrics;
            c.alerts += batch.alerts;
            if let Some(t) = batch.last_pose_t_ms {
                c.last_pose_t_ms = Some(c.last_pose_t_ms.map_or(t, |old| old.max(t)));
            }
            c.transactions += 1;
        }
        Ok(state)
    }
}

/// Inserts one message; `true` for [`Message::Finish`].
fn insert(
    conn: &Connection,
    session: SessionId,
    message: Message,
    batch: &mut Batch,
    last_t_ms: &mut f64,
) -> rusqlite::Result<bool> {
    match message {
        Message::Pose { t_ms, tool, matrix } => {
            conn.prepare_cached(
                "INSERT INTO poses (session_id, t_ms, tool, matrix) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![session, t_ms, tool, &matrix[..]])?;
            batch.poses += 1;
            batch.last_pose_t_ms = Some(batch.last_pose_t_ms.map_or(t_ms, |t| t.max(t_ms)));
            *last_t_ms = t_ms;
        }
        Message::Metrics { t_ms, json } => {
            let number = |key: &str| json.get(key).and_then(serde_json::Value::as_f64);
            let seq = json
                .get("seq")
                .and_then(serde_json::Value::as_u64)
                .and_then(|s| i64::try_from(s).ok());
            let alert = json.get("alert").and_then(serde_json::Value::as_str);
            let inside = json
                .get("inside_target")
                .and_then(serde_json::Value::as_bool);
            conn.prepare_cached(
                "INSERT INTO metrics (session_id, t_ms, seq, alert, tip_to_target_mm, \
                 lateral_deviation_mm, depth_remaining_mm, inside_target, json) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                session,
                t_ms,
                seq,
                alert,
                number("tip_to_target_mm"),
                number("lateral_deviation_mm"),
                number("depth_remaining_mm"),
                inside,
                json.to_string()
            ])?;
            batch.metrics += 1;
            *last_t_ms = t_ms;
        }
        Message::Alert {
            t_ms,
            kind,
            message,
        } => {
            conn.prepare_cached(
                "INSERT INTO alerts (session_id, t_ms, kind, message) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![session, t_ms, kind, message])?;
            batch.alerts += 1;
            *last_t_ms = t_ms;
        }
        Message::Finish => return Ok(true),
    }
    Ok(false)
}

/// The matrix of a `poses.matrix` blob (16 little-endian f64, row-major).
pub(crate) fn matrix_from_blob(blob: &[u8]) -> Option<Mat4> {
    if blob.len() != 128 {
        return None;
    }
    let mut m = [[0.0; 4]; 4];
    for (i, chunk) in blob.chunks_exact(8).enumerate() {
        let bytes: [u8; 8] = chunk.try_into().ok()?;
        m[i / 4][i % 4] = f64::from_le_bytes(bytes);
    }
    Some(m)
}
