//! A one-slot, newest-wins hand-over from the server's tasks to a worker thread: what
//! the needle-pose evaluator (`poses`) and the ultrasound fusion worker (`fusion`) take
//! their work from. A value put while an older one still waits replaces it (counted as
//! superseded): the worker only ever starts on the newest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

struct Slot<T> {
    pending: Option<T>,
    closed: bool,
}

/// At most one value waiting, the newest.
pub(crate) struct NewestSlot<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
    superseded: AtomicU64,
}

impl<T> Default for NewestSlot<T> {
    fn default() -> Self {
        Self {
            slot: Mutex::new(Slot {
                pending: None,
                closed: false,
            }),
            ready: Condvar::new(),
            superseded: AtomicU64::new(0),
        }
    }
}

impl<T> NewestSlot<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts the value `make` builds, under the slot's lock (so that values numbered in
    /// `make` are put in the order of their numbers), replacing any value still waiting.
    pub(crate) fn put_with(&self, make: impl FnOnce() -> T) {
        let mut slot = self.lock();
        if slot.pending.replace(make()).is_some() {
            self.superseded.fetch_add(1, Ordering::Relaxed);
        }
        drop(slot);
        self.ready.notify_one();
    }

    /// Puts `value`, replacing any value still waiting.
    pub(crate) fn put(&self, value: T) {
        self.put_with(|| value);
    }

    /// Values replaced by a newer one before the worker took them.
    pub(crate) fn superseded(&self) -> u64 {
        self.superseded.load(Ordering::Relaxed)
    }

    /// Wakes the worker to stop (a value still waiting is dropped).
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// The newest value, waiting for one; `None` once closed.
    pub(crate) fn next(&self) -> Option<T> {
        let mut slot = self.lock();
        loop {
            if slot.closed {
                return None;
            }
            if let Some(value) = slot.pending.take() {
                return Some(value);
            }
            slot = self.ready.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The waiting value, if any, without waiting.
    #[cfg(test)]
    pub(crate) fn try_take(&self) -> Option<T> {
        self.lock().pending.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_newer_value_replaces_a_waiting_one() {
        let slot = NewestSlot::default();
        slot.put_with(|| 1);
        slot.put_with(|| 2);
        assert_eq!(slot.next(), Some(2));
        assert_eq!(slot.superseded(), 1);
        slot.put_with(|| 3);
        assert_eq!(slot.next(), Some(3));
        assert_eq!(slot.superseded(), 1);
    }

    #[test]
    fn close_wakes_a_waiting_worker() {
        let slot = Arc::new(NewestSlot::<u32>::default());
        let waiter = {
            let slot = slot.clone();
            std::thread::spawn(move || slot.next().is_none())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        slot.close();
        assert!(waiter.join().unwrap(), "the worker did not stop");
    }
}
