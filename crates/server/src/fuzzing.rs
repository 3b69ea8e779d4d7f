//! The server's own OpenIGTLink frame reader (`igtl_server::read_frame`, async, private)
//! driven synchronously over bytes in memory, for the `igtl_server_frames` fuzz target
//! and the tests. Not an API: hidden from the docs, may change at any time.
//!
//! [`read_frames`] builds a current-thread tokio runtime (timer only), hands the stream
//! to `read_frame` through a reader that gives out at most `chunk_bytes` per read (as a
//! socket with small segments does), and reads frame after frame until the stream ends
//! between two messages or a frame is refused, exactly as a client's read loop does: the
//! idle and partial-message timeouts are armed ([`TIMEOUT`]), the body's buffer is paid
//! for from a budget semaphore of `budget_bytes` as it grows, and each frame is decoded
//! (CRC with `verify_crc`, then `Message::from_parts`) and dropped before the next read.
//!
//! Guaranteed for every input, checked with `assert!` (in every build, so that a fuzzer
//! catches a broken one as a panic; nothing else panics):
//!
//! - never more bytes consumed than the stream holds, and a frame read whole consumes
//!   exactly its 58-byte header and BODY_SIZE bytes: nothing of the next message;
//! - every frame's body is as long as its header's BODY_SIZE, which is at most
//!   `max_body_bytes` (a larger claim is refused after the header, before any of the body
//!   is read or paid for);
//! - the budget held while a body arrives is at most its BODY_SIZE and at most twice
//!   the bytes already received (or the first 64 KiB): a claim alone costs nothing; none
//!   is held while a header is read;
//! - a frame read whole holds exactly BODY_SIZE bytes of the budget, and at least its
//!   buffer's capacity: the memory held is paid for;
//! - every permit is returned once its frame is dropped, and once a read fails: the
//!   budget's available permits are back to `budget_bytes` after every frame and at the
//!   end;
//! - no timeout fires: reads from memory are always ready, so a timeout would mean the
//!   reader waited where it had bytes to read.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pinhole_igtl::{IgtlError, HEADER_SIZE};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Semaphore;

use crate::igtl_server::{
    decode_frame, read_frame, Frame, FrameError, FrameLimits, BODY_FIRST_GROWTH_BYTES,
};

/// Idle and partial-message timeouts armed while reading (never reached: see the module
/// docs).
pub const TIMEOUT: Duration = Duration::from_millis(50);

/// Offset of BODY_SIZE (big-endian u64) in the header.
const BODY_SIZE_OFFSET: usize = 42;

/// How to read a stream.
#[derive(Debug, Clone, Copy)]
pub struct FramesOptions {
    /// Most bytes handed out per read (0 is read as 1).
    pub chunk_bytes: usize,
    /// Largest BODY_SIZE accepted (the server's `decode.max_body_bytes`).
    pub max_body_bytes: u64,
    /// Bytes of bodies that may be in flight (the server's `max_buffered_body_bytes`).
    pub budget_bytes: u32,
    /// Check each frame's CRC before decoding it (the server's `decode.verify_crc`).
    pub verify_crc: bool,
}

/// One frame read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSummary {
    pub type_name: String,
    pub device_name: String,
    pub body_bytes: usize,
    /// Why its message could not be decoded (CRC, layout); `None`: decoded.
    pub decode_error: Option<String>,
}

/// How reading stopped.
#[derive(Debug)]
pub enum FramesEnd {
    /// The stream ended between two messages.
    Clean,
    /// A frame was refused or cut short: BODY_SIZE over the limit, a stream that ends
    /// inside a message, a header that does not parse.
    Refused(IgtlError),
    /// The body would have taken the budget over `budget_bytes`.
    Budget(String),
}

/// What [`read_frames`] read.
#[derive(Debug)]
pub struct FramesSummary {
    /// The frames read whole, in order.
    pub frames: Vec<FrameSummary>,
    pub end: FramesEnd,
    /// Bytes taken from the stream.
    pub consumed_bytes: usize,
    /// Most budget bytes held at once, as seen at each read.
    pub peak_budget_bytes: usize,
}

/// Why [`read_frames`] could not run.
#[derive(Debug, thiserror::Error)]
pub enum FuzzingError {
    #[error("cannot build the tokio runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Reads `stream` frame after frame with the server's reader (see the module docs for
/// what is checked).
pub fn read_frames(stream: &[u8], options: &FramesOptions) -> Result<FramesSummary, FuzzingError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let budget_permits = usize::try_from(options.budget_bytes)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS);
    let budget = Arc::new(Semaphore::new(budget_permits));
    let limits = FrameLimits {
        max_body_bytes: options.max_body_bytes,
        idle_timeout: Some(TIMEOUT),
        partial_timeout: TIMEOUT,
        max_buffered_body_bytes: u64::from(options.budget_bytes),
    };
    let mut reader = Chunked {
        data: stream,
        consumed_bytes: 0,
        chunk_bytes: options.chunk_bytes.max(1),
        frame_start: 0,
        budget: budget.clone(),
        budget_permits,
        peak_held_bytes: 0,
    };
    let (frames, end) = runtime.block_on(read_all(&mut reader, &limits, &budget, options));
    assert_eq!(
        budget.available_permits(),
        budget_permits,
        "invariant: every budget permit is returned at the end"
    );
    assert!(
        reader.consumed_bytes <= stream.len(),
        "invariant: never more bytes consumed than given"
    );
    Ok(FramesSummary {
        frames,
        end,
        consumed_bytes: reader.consumed_bytes,
        peak_budget_bytes: reader.peak_held_bytes,
    })
}

/// The read loop: frame after frame, each checked, decoded and dropped before the next.
async fn read_all(
    reader: &mut Chunked<'_>,
    limits: &FrameLimits,
    budget: &Arc<Semaphore>,
    options: &FramesOptions,
) -> (Vec<FrameSummary>, FramesEnd) {
    let mut frames = Vec::new();
    let end = loop {
        reader.frame_start = reader.consumed_bytes;
        let frame = match read_frame(reader, limits, budget).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break FramesEnd::Clean,
            Err(FrameError::Igtl(e)) => break FramesEnd::Refused(e),
            Err(FrameError::Budget(why)) => break FramesEnd::Budget(why),
            Err(FrameError::TimedOut(why)) => {
                panic!("invariant: no timeout on an always-ready reader, got: {why}")
            }
        };
        frames.push(check_and_decode(frame, reader, limits, options.verify_crc));
        assert_eq!(
            budget.available_permits(),
            reader.budget_permits,
            "invariant: a dropped frame returns its budget"
        );
    };
    (frames, end)
}

/// Checks a frame read whole against the stream and the limits, then decodes it.
fn check_and_decode(
    frame: Frame,
    reader: &Chunked<'_>,
    limits: &FrameLimits,
    verify_crc: bool,
) -> FrameSummary {
    let (header, body, permit) = frame;
    let claimed = body_size_at(reader.data, reader.frame_start);
    assert_eq!(
        Some(header.body_size),
        claimed,
        "invariant: the header's BODY_SIZE is the stream's"
    );
    assert_eq!(
        u64::try_from(body.len()).ok(),
        Some(header.body_size),
        "invariant: the body is BODY_SIZE bytes"
    );
    assert!(
        header.body_size <= limits.max_body_bytes,
        "invariant: BODY_SIZE within max_body_bytes"
    );
    assert_eq!(
        reader.consumed_bytes,
        reader.frame_start + HEADER_SIZE + body.len(),
        "invariant: a frame consumes its header and body, nothing beyond"
    );
    let held = permit.as_ref().map_or(0, |p| p.num_permits());
    assert_eq!(
        held,
        body.len(),
        "invariant: a frame holds BODY_SIZE of budget"
    );
    assert!(
        body.capacity() <= held || body.capacity() == 0,
        "invariant: the body's buffer ({} bytes) is paid for ({held} bytes)",
        body.capacity()
    );
    FrameSummary {
        decode_error: decode_frame(&header, &body, verify_crc)
            .err()
            .map(|e| e.to_string()),
        type_name: header.type_name,
        device_name: header.device_name,
        body_bytes: body.len(),
    }
}

/// BODY_SIZE of the header starting at `start`, if the stream holds it.
fn body_size_at(data: &[u8], start: usize) -> Option<u64> {
    let at = start.checked_add(BODY_SIZE_OFFSET)?;
    let bytes: [u8; 8] = data.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Hands out at most `chunk_bytes` per read and watches the budget at every read.
struct Chunked<'a> {
    data: &'a [u8],
    consumed_bytes: usize,
    chunk_bytes: usize,
    /// Where the frame being read starts.
    frame_start: usize,
    budget: Arc<Semaphore>,
    budget_permits: usize,
    peak_held_bytes: usize,
}

impl Chunked<'_> {
    /// The budget held now must be what the bytes received so far allow.
    fn check_budget(&mut self) {
        let held = self
            .budget_permits
            .saturating_sub(self.budget.available_permits());
        self.peak_held_bytes = self.peak_held_bytes.max(held);
        let body_start = self.frame_start + HEADER_SIZE;
        if self.consumed_bytes < body_start {
            assert_eq!(held, 0, "invariant: no budget held while a header is read");
            return;
        }
        let received = self.consumed_bytes - body_start;
        let claimed = body_size_at(self.data, self.frame_start)
            .and_then(|b| usize::try_from(b).ok())
            .unwrap_or(usize::MAX);
        assert!(
            held <= claimed,
            "invariant: budget held ({held}) within BODY_SIZE ({claimed})"
        );
        assert!(
            held <= BODY_FIRST_GROWTH_BYTES.max(received.saturating_mul(2)),
            "invariant: budget held ({held}) follows the bytes received ({received}), \
             not the claim"
        );
    }
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.check_budget();
        let rest = self.data.get(self.consumed_bytes..).unwrap_or_default();
        let n = buf.remaining().min(self.chunk_bytes).min(rest.len());
        buf.put_slice(&rest[..n]);
        self.consumed_bytes += n;
        Poll::Ready(Ok(()))
    }
}
