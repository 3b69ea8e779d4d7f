//! Newest-wins evaluation of the needle poses that arrive over OpenIGTLink.
//!
//! Reader tasks hand each pose to [`PoseQueue::submit`] and go back to reading; one
//! evaluator thread computes the metrics of the newest pose waiting, publishes them and
//! takes the next. A pose that a newer one replaces before its evaluation starts is never
//! evaluated (counted in `poses_superseded`): evaluating it would only delay the newer
//! one. So a pose waits at most for the evaluation in progress, however many trackers
//! send: with 100 trackers at 100 Hz on 2 cores, evaluating every pose inline in the
//! reader tasks queued them for 12 ms at p99 (issue #25's soak; BENCHMARKS.md).
//!
//! Each pose takes its sequence number when it is queued, under the queue's lock, so
//! numbers follow arrival order and the update published carries its pose's number:
//! superseded poses leave gaps, which clients already see as updates they skipped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use pinhole_guidance::pose::Mat4;

use crate::newest::NewestSlot;
use crate::Shared;

/// A pose waiting for evaluation.
#[derive(Debug, Clone)]
pub(crate) struct PendingPose {
    pub(crate) seq: u64,
    pub(crate) tip_to_reference: Mat4,
    pub(crate) timestamp_s: f64,
    pub(crate) device: String,
}

/// At most one pose waiting, the newest; see the module documentation.
#[derive(Default)]
pub(crate) struct PoseQueue(NewestSlot<PendingPose>);

impl PoseQueue {
    /// Queues a pose, numbered from `seq`, replacing any pose still waiting.
    pub(crate) fn submit(
        &self,
        seq: &AtomicU64,
        tip_to_reference: Mat4,
        timestamp_s: f64,
        device: &str,
    ) {
        self.0.put_with(|| PendingPose {
            seq: seq.fetch_add(1, Ordering::Relaxed) + 1,
            tip_to_reference,
            timestamp_s,
            device: device.to_string(),
        });
    }

    /// Poses replaced by a newer one before they were evaluated.
    pub(crate) fn superseded(&self) -> u64 {
        self.0.superseded()
    }

    /// Wakes the evaluator to stop (poses still waiting are dropped).
    pub(crate) fn close(&self) {
        self.0.close();
    }

    /// The newest pose, waiting for one; `None` once closed.
    fn next(&self) -> Option<PendingPose> {
        self.0.next()
    }
}

/// Starts the evaluator thread. It holds the server state weakly: it ends when the queue
/// is closed (shutdown, or the state dropped).
pub(crate) fn spawn_evaluator(
    queue: Arc<PoseQueue>,
    shared: Weak<Shared>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("pinhole-guidance".into())
        .spawn(move || {
            while let Some(pose) = queue.next() {
                let Some(shared) = shared.upgrade() else {
                    break;
                };
                shared.evaluate_and_publish(&pose);
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: Mat4 = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];

    #[test]
    fn the_newest_pose_replaces_a_waiting_one_and_keeps_its_number() {
        let queue = PoseQueue::default();
        let seq = AtomicU64::new(0);
        queue.submit(&seq, IDENTITY, 1.0, "A");
        queue.submit(&seq, IDENTITY, 2.0, "B");
        queue.submit(&seq, IDENTITY, 3.0, "C");
        let next = queue.next().unwrap();
        assert_eq!(
            (next.seq, next.timestamp_s, next.device.as_str()),
            (3, 3.0, "C")
        );
        assert_eq!(queue.superseded(), 2);
        queue.submit(&seq, IDENTITY, 4.0, "D");
        assert_eq!(queue.next().unwrap().seq, 4);
        assert_eq!(queue.superseded(), 2);
    }

    #[test]
    fn concurrent_submitters_never_lose_the_highest_number() {
        let queue = Arc::new(PoseQueue::default());
        let seq = Arc::new(AtomicU64::new(0));
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let (queue, seq) = (queue.clone(), seq.clone());
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        queue.submit(&seq, IDENTITY, f64::from(i), "N");
                    }
                })
            })
            .collect();
        let mut evaluated = 0u64;
        let mut last = 0;
        while senders.iter().any(|s| !s.is_finished()) || evaluated + queue.superseded() < 4000 {
            if let Some(p) = queue.0.try_take() {
                assert!(p.seq > last, "numbers went back: {} after {last}", p.seq);
                last = p.seq;
                evaluated += 1;
            }
        }
        assert_eq!(last, 4000, "the last pose queued was not the last taken");
        assert_eq!(evaluated + queue.superseded(), 4000);
    }
}
