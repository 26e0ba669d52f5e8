//! What one instance's store holds: the guest's WASI context, the call in progress
//! (its batch, deadline, messages, results), and what the host functions reach
//! through it (grants, the submitter, metrics, output capture).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use bytes::Bytes;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p1::WasiP1Ctx;

use super::{ItemSpans, JobResults, Submitter};
use crate::capability::Grants;
use crate::capture::Capture;
use crate::logging::GuestTag;
use crate::metrics::Metrics;
use crate::recent::Recent;

/// The source of a batch's identifier.
#[derive(Debug, Clone)]
pub enum BatchId {
    /// Given by the sender (`X-Wasmbatch-Batch-ID`).
    Named(Arc<str>),
    /// The batch's position in its job (`wasmbatch run`, the operator).
    Index(u64),
    /// None given: derived from the job ID and the batch's bytes ([`content_id`]).
    Content,
}

/// One batch as the host hands it to a guest: the bytes, and what the guest may ask
/// about them through the `batch_id` and `attempt` imports.
#[derive(Debug, Clone)]
pub struct BatchCall {
    /// Tags the guest's log lines (`batch` field): the batch's position or the
    /// server's request counter.
    pub tag: u64,
    /// Where the batch identifier (unique within the job, stable across retries) comes
    /// from; it is made only when the guest asks for it.
    pub id: BatchId,
    /// The attempt (1 for the first). `0`: unknown; counted per batch identifier by
    /// this process when the guest asks.
    pub attempt: u32,
    /// The batch, a JSON array.
    pub body: Bytes,
    /// Where its items lie, when the caller has scanned it already (`serve` does, to
    /// check it): handed to a guest that takes them (`wasmbatch_handle_items`), so that
    /// the batch is parsed once. `None`: the guest scans the batch itself.
    pub items: Option<ItemSpans>,
}

/// The store data of one instance.
pub(crate) struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) deadline: Instant,
    pub(crate) cancel: Arc<AtomicBool>,
    /// The message of the guest's `set_error`, for a failed status.
    pub(crate) error: Option<String>,
    /// The message of the guest's `panic`, for the trap that follows.
    pub(crate) panic: Option<String>,
    pub(crate) job_id: Arc<str>,
    pub(crate) api_name: Arc<str>,
    /// The batch of the `handle` call in progress.
    pub(crate) call: Option<BatchCall>,
    /// Its identifier and attempt, resolved on the guest's first question.
    pub(crate) resolved: Option<(Arc<str>, u32)>,
    pub(crate) attempts: Arc<AttemptLog>,
    pub(crate) submitter: Option<Arc<dyn Submitter>>,
    /// The instance's stdout and stderr, drained before each `log` line so that the
    /// guest's output keeps its order.
    pub(crate) stdout: Capture,
    pub(crate) stderr: Capture,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) log_lines: u32,
    pub(crate) log_line_limit: u32,
    pub(crate) logs_dropped: u64,
    pub(crate) grants: Arc<Grants>,
    /// Results the guest emitted during the call in progress, one JSON value a line.
    pub(crate) results: Vec<u8>,
    pub(crate) results_limit: usize,
    /// Items the guest failed or rejected during the call in progress.
    pub(crate) item_errors: Vec<super::ItemError>,
    /// Where the job's results are read from, in on-job-complete.
    pub(crate) job_results: Option<Arc<dyn JobResults>>,
    /// Whether the call in progress is on-job-complete (the only one that may read
    /// the job's results).
    pub(crate) completing: bool,
    /// The job's results being read by the call in progress.
    pub(crate) reading: Option<ResultsReading>,
}

/// A call's reading of its job's results.
pub(crate) struct ResultsReading {
    pub(crate) lines: Box<dyn std::io::BufRead + Send>,
}

impl HostState {
    pub(crate) fn tag(&self) -> GuestTag<'_> {
        GuestTag { api_name: &self.api_name, job_id: &self.job_id, batch: self.call.as_ref().map(|c| c.tag) }
    }

    /// Logs what the guest wrote to stdout and stderr since the last drain.
    pub(crate) fn drain_output(&self) {
        let tag = self.tag();
        for (stream, capture) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let drained = capture.drain();
            crate::logging::guest_output(&tag, stream, &drained.head, drained.dropped);
            self.metrics.guest_output_dropped_bytes.inc_by(drained.dropped);
        }
    }

    /// The batch identifier and attempt of the call in progress (`None` outside `handle`).
    pub(crate) fn batch_identity(&mut self) -> Option<(Arc<str>, u32)> {
        if self.resolved.is_none() {
            let call = self.call.as_ref()?;
            let id = match &call.id {
                BatchId::Named(id) => id.clone(),
                BatchId::Index(index) => Arc::from(index.to_string()),
                BatchId::Content => content_id(&self.job_id, &call.body),
            };
            let attempt = if call.attempt > 0 { call.attempt } else { self.attempts.record(&id) };
            self.resolved = Some((id, attempt));
        }
        self.resolved.clone()
    }
}

/// A batch identifier derived from the job ID and the batch's bytes: what a server of
/// the contract can know when the sender gives none. Stable across retries (the same
/// bytes are sent again); two batches of one job with identical bytes share it.
pub fn content_id(job_id: &str, body: &[u8]) -> Arc<str> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update((job_id.len() as u64).to_le_bytes());
    hasher.update(job_id.as_bytes());
    hasher.update(body);
    let digest = hasher.finalize();
    let mut id = String::with_capacity(32);
    for byte in &digest[..16] {
        id.push_str(&format!("{byte:02x}"));
    }
    Arc::from(id)
}

/// Counts the attempts at batches whose sender gave no attempt number, by batch
/// identifier, over the most recent [`AttemptLog::CAPACITY`] identifiers.
pub(crate) struct AttemptLog {
    seen: std::sync::Mutex<Recent<Arc<str>, u32>>,
}

impl Default for AttemptLog {
    fn default() -> Self {
        AttemptLog { seen: std::sync::Mutex::new(Recent::new(Self::CAPACITY)) }
    }
}

impl AttemptLog {
    /// Identifiers remembered.
    pub(crate) const CAPACITY: usize = 4096;

    /// Records one more attempt at `id` and returns its number (1 for the first).
    pub(crate) fn record(&self, id: &Arc<str>) -> u32 {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = seen.get_mut(&**id) {
            *n += 1;
            return *n;
        }
        seen.insert(id.clone(), 1);
        1
    }
}

/// The error our epoch callback raises to stop a guest.
#[derive(Debug)]
pub(crate) enum Interrupt {
    Deadline,
    Cancelled,
}

impl std::fmt::Display for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interrupt::Deadline => "deadline exceeded",
            Interrupt::Cancelled => "cancelled",
        })
    }
}

impl std::error::Error for Interrupt {}

/// Caps the linear memory of one instance (all its memories together: a component
/// has several) and remembers that the cap was hit, so that the trap that follows a
/// failed allocation is reported as out-of-memory.
pub(crate) struct MemoryLimiter {
    pub(crate) max: usize,
    pub(crate) hit: bool,
    /// Bytes of linear memory the instance holds.
    pub(crate) used: usize,
}

impl MemoryLimiter {
    pub(crate) fn new(max: usize) -> MemoryLimiter {
        MemoryLimiter { max, hit: false, used: 0 }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let after = (self.used - current.min(self.used)).saturating_add(desired);
        if after > self.max {
            self.hit = true;
            return Ok(false);
        }
        self.used = after;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_counted_per_identifier() {
        let log = AttemptLog::default();
        let (a, b) = (Arc::<str>::from("a"), Arc::<str>::from("b"));
        assert_eq!(log.record(&a), 1);
        assert_eq!(log.record(&a), 2);
        assert_eq!(log.record(&b), 1);
    }

    #[test]
    fn the_memory_limit_caps_an_instances_memories_together() {
        let mut limiter = MemoryLimiter::new(100);
        // Two memories created (a component may have several), then grown.
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        assert_eq!(limiter.used, 80);
        assert!(limiter.memory_growing(40, 60, None).unwrap());
        assert_eq!(limiter.used, 100);
        assert!(!limiter.hit);
        // One byte more in either is refused, and remembered.
        assert!(!limiter.memory_growing(40, 41, None).unwrap());
        assert!(limiter.hit);
        assert_eq!(limiter.used, 100, "a refused growth takes nothing");
    }

    #[test]
    fn content_ids_depend_on_the_job_and_the_bytes() {
        assert_eq!(content_id("j", b"[1]"), content_id("j", b"[1]"));
        assert_ne!(content_id("j", b"[1]"), content_id("k", b"[1]"));
        assert_ne!(content_id("j1", b"[1]"), content_id("j", b"1[1]"), "the job ID's length is hashed too");
        assert_eq!(content_id("j", b"[]").len(), 32);
    }
}
