//! Where a job's outcomes go: the [`Ledger`] the runner records into before it counts
//! a batch — the journal (`crate::journal`), or a dead-letter file alone.

use std::time::Duration;

use super::dead_letter::{DeadLetters, Record};

/// Where a job's outcomes are kept. Each call returns once what it records is
/// durable; the runner counts a batch only after that.
pub trait Ledger: Send + Sync + 'static {
    /// Batches that succeeded, `(index, time)` (a worker's group: one write), and
    /// their items (`None`: not known, as from an older worker).
    fn succeeded(&self, batches: &[(u64, Duration)], items: Option<u64>) -> std::io::Result<()>;
    /// Batches that will not succeed (failed for good, or unhandled after a stop).
    fn dead_lettered(&self, records: &[Record<'_>]) -> std::io::Result<()>;
    /// The results of batches that ended, `(index, results as JSON Lines)`; called
    /// before the batches are recorded as ended, and kept once per batch.
    fn results(&self, _batches: &[(u64, &[u8])]) -> std::io::Result<()> {
        Ok(())
    }
    /// The whole job's `(succeeded, failed, total)` when the ledger knows more than this
    /// run saw (a resumed job); the body of on-job-complete carries them.
    fn totals(&self) -> Option<(u64, u64, u64)> {
        None
    }
    /// Where the dead letters can be found, once there are any.
    fn location(&self) -> Option<String>;
    /// on-job-complete is about to be called.
    fn hook_starting(&self) {}
    /// Closes the ledger at the end of the job.
    fn finish(self: Box<Self>) -> std::io::Result<()>;
}

impl Ledger for DeadLetters {
    fn succeeded(&self, _batches: &[(u64, Duration)], _items: Option<u64>) -> std::io::Result<()> {
        Ok(())
    }

    fn dead_lettered(&self, records: &[Record<'_>]) -> std::io::Result<()> {
        self.append(records)
    }

    fn location(&self) -> Option<String> {
        (self.written() > 0).then(|| self.path().display().to_string())
    }

    fn finish(self: Box<Self>) -> std::io::Result<()> {
        DeadLetters::finish(*self)
    }
}
