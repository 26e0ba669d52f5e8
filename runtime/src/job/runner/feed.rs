//! The queue from a job's source thread to its workers: bounded in batches and in
//! bytes, and refilled in bursts.
//!
//! A source is usually faster than the workers, so it finds the queue full at nearly
//! every batch. A plain blocking `send` on a short queue then spins or sleeps once per
//! batch, and on a machine with as many cores as workers that takes the time of a
//! worker. Here the queue is long (batches are small, usually) and the source sleeps
//! until it is half empty, then fills it: one wake-up per half a queue. Large batches
//! are bounded by their bytes instead: the source waits while [`MAX_BYTES`] are queued.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::Thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::job::source::Batch;

/// How long the source sleeps at most before it looks at a full queue again: a missed
/// wake-up costs at most this, never a hang.
const RECHECK: Duration = Duration::from_millis(50);

/// Bytes of batches queued at most (one batch larger than this is queued alone).
pub(super) const MAX_BYTES: usize = 32 << 20;

/// The source's end.
pub(super) struct Feeder {
    tx: Sender<Batch>,
    bytes: Arc<AtomicUsize>,
    /// Gone once every [`Taker`] is: the source must not wait for room then.
    takers: Weak<()>,
}

/// A worker's end: takes batches and wakes the source when the queue runs low.
#[derive(Clone)]
pub(super) struct Taker {
    rx: Receiver<Batch>,
    bytes: Arc<AtomicUsize>,
    refill_at: usize,
    source: Option<Thread>,
    _alive: Arc<()>,
}

/// A queue of `capacity` batches (at least 2).
pub(super) fn queue(capacity: usize) -> (Feeder, Taker) {
    let capacity = capacity.max(2);
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let bytes = Arc::new(AtomicUsize::new(0));
    let alive = Arc::new(());
    let feeder = Feeder { tx, bytes: bytes.clone(), takers: Arc::downgrade(&alive) };
    (feeder, Taker { rx, bytes, refill_at: capacity / 2, source: None, _alive: alive })
}

impl Feeder {
    /// Queues `batch`, sleeping while the queue is full; `Err` when every worker has
    /// gone. Must be called on the thread given to [`Taker::woken`].
    pub(super) fn send(&self, mut batch: Batch) -> Result<(), Batch> {
        let size = batch.body.len();
        loop {
            if self.bytes.load(Ordering::Acquire) >= MAX_BYTES && !self.tx.is_empty() {
                if self.takers.strong_count() == 0 {
                    return Err(batch);
                }
                std::thread::park_timeout(RECHECK);
                continue;
            }
            // Counted before it is queued, so that a worker never takes it first.
            self.bytes.fetch_add(size, Ordering::AcqRel);
            match self.tx.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.bytes.fetch_sub(size, Ordering::AcqRel);
                    match e {
                        TrySendError::Disconnected(back) => return Err(back),
                        TrySendError::Full(back) => {
                            batch = back;
                            std::thread::park_timeout(RECHECK);
                        }
                    }
                }
            }
        }
    }
}

impl Taker {
    /// This end, waking `source` (the thread that sends) when the queue is half empty.
    pub(super) fn woken(mut self, source: Thread) -> Taker {
        self.source = Some(source);
        self
    }

    fn took(&self, batch: Batch) -> Batch {
        let queued = self.bytes.fetch_sub(batch.body.len(), Ordering::AcqRel) - batch.body.len();
        if self.rx.len() <= self.refill_at
            && queued <= MAX_BYTES / 2
            && let Some(source) = &self.source
        {
            source.unpark();
        }
        batch
    }

    /// The next batch, waiting for it; `Err` once the source is done and the queue empty.
    pub(super) fn recv(&self) -> Result<Batch, crossbeam_channel::RecvError> {
        self.rx.recv().map(|b| self.took(b))
    }

    /// The next batch, waiting until `deadline` at most.
    pub(super) fn recv_deadline(
        &self,
        deadline: std::time::Instant,
    ) -> Result<Batch, crossbeam_channel::RecvTimeoutError> {
        self.rx.recv_deadline(deadline).map(|b| self.took(b))
    }

    /// A batch if one is queued now.
    pub(super) fn try_recv(&self) -> Option<Batch> {
        self.rx.try_recv().ok().map(|b| self.took(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(index: u64) -> Batch {
        Batch { index, items: 1, body: b"[1]".to_vec(), spans: None }
    }

    #[test]
    fn a_source_sleeping_on_a_full_queue_is_woken_and_every_batch_arrives_once() {
        let (feeder, taker) = queue(4);
        let source = std::thread::spawn(move || {
            for i in 0..1_000 {
                feeder.send(batch(i)).map_err(|_| "no workers").unwrap();
            }
        });
        let taker = taker.woken(source.thread().clone());
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let taker = taker.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    while let Ok(b) = taker.recv() {
                        seen.push(b.index);
                    }
                    seen
                })
            })
            .collect();
        drop(taker);
        source.join().unwrap();
        let mut all: Vec<u64> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..1_000).collect::<Vec<_>>());
    }

    #[test]
    fn large_batches_are_bounded_by_their_bytes() {
        let (feeder, taker) = queue(64);
        let big = |index| Batch { index, items: 1, body: vec![b' '; MAX_BYTES / 4], spans: None };
        let source = std::thread::spawn(move || {
            for i in 0..12 {
                feeder.send(big(i)).map_err(|_| "no workers").unwrap();
            }
        });
        let taker = taker.woken(source.thread().clone());
        // The source stops at MAX_BYTES: four batches queued, the fifth waits.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while taker.rx.len() < 4 {
            assert!(std::time::Instant::now() < deadline, "the source never queued four batches");
            std::thread::yield_now();
        }
        // Four make MAX_BYTES: the fifth waits for room (whatever the timing).
        assert_eq!(taker.rx.len(), 4, "more than {MAX_BYTES} bytes queued");
        assert_eq!(taker.bytes.load(Ordering::Acquire), MAX_BYTES);
        let mut taken = Vec::new();
        while let Ok(b) = taker.recv() {
            assert!(taker.bytes.load(Ordering::Acquire) <= MAX_BYTES);
            taken.push(b.index);
        }
        source.join().unwrap();
        assert_eq!(taken, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn a_source_waiting_for_room_hands_its_batch_back_when_every_worker_has_gone() {
        let (feeder, taker) = queue(64);
        let big = |index| Batch { index, items: 1, body: vec![b' '; MAX_BYTES / 2], spans: None };
        feeder.send(big(0)).map_err(|_| "no workers").unwrap();
        feeder.send(big(1)).map_err(|_| "no workers").unwrap();
        // MAX_BYTES are queued: the next send waits for room, and none will come.
        drop(taker);
        let (done, sent) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || done.send(feeder.send(big(2)).map_err(|b| b.index)));
        let outcome = sent.recv_timeout(Duration::from_secs(10)).expect("the source kept waiting for room");
        assert_eq!(outcome, Err(2));
    }

    #[test]
    fn sending_with_no_worker_left_hands_the_batch_back() {
        let (feeder, taker) = queue(2);
        drop(taker);
        assert_eq!(feeder.send(batch(7)).unwrap_err().index, 7);
    }
}
