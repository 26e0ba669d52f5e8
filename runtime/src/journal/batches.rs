//! The journal's side of a running job: the batches it still has to run (its input
//! with the ended ones skipped, or another job's dead letters) and the ledger its
//! outcomes go to (the journal alone, or with `run`'s dead-letter and results files).

use crate::job::dead_letter::{DeadLetters, Record};
use crate::job::ledger::Ledger;
use crate::job::results::ResultsFile;
use crate::job::source::{Batch, BatchSource, SourceError};
use crate::plugin::ItemSpans;

use std::time::Duration;

use rusqlite::params;

use super::{DeadLetter, FAILED, Hook, Journal, UNHANDLED};

/// A job's dead letters as the input of another job: one batch each, byte for byte,
/// numbered from 0.
pub(super) struct Letters {
    pub(super) batches: std::vec::IntoIter<DeadLetter>,
    pub(super) next: u64,
    pub(super) total: u64,
}

impl BatchSource for Letters {
    fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        let Some(letter) = self.batches.next() else { return Ok(None) };
        let spans = std::str::from_utf8(&letter.body).ok().and_then(|text| ItemSpans::scan(text).ok());
        let items = spans.as_ref().map_or(0, ItemSpans::len);
        let batch = Batch { index: self.next, items, body: letter.body, spans };
        self.next += 1;
        Ok(Some(batch))
    }

    fn total_batches(&self) -> Option<u64> {
        Some(self.total)
    }
}

/// Batches from a job's input, skipping those that already have an outcome.
pub(super) struct Resumed {
    pub(super) inner: Box<dyn BatchSource>,
    pub(super) ended: Vec<u64>,
    pub(super) journal: Journal,
    pub(super) job_id: String,
    pub(super) seen: u64,
}

impl BatchSource for Resumed {
    fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        loop {
            match self.inner.next_batch()? {
                None => {
                    if let Err(e) = self.journal.set_total(&self.job_id, self.seen) {
                        tracing::error!(job_id = self.job_id, "{e}");
                    }
                    return Ok(None);
                }
                Some(batch) => {
                    self.seen += 1;
                    let i = batch.index as usize;
                    let done = self.ended.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0);
                    if !done {
                        return Ok(Some(batch));
                    }
                }
            }
        }
    }

    fn total_batches(&self) -> Option<u64> {
        self.inner.total_batches()
    }
}

/// The journal as the ledger, with the dead letters also written to a file (`run`'s
/// export; written first, so a record may appear twice there after a crash, never
/// be missing).
pub(crate) struct Exported {
    /// The journal's ledger.
    pub journal: JobLedger,
    /// The dead-letter file.
    pub file: DeadLetters,
    /// The results file.
    pub results: ResultsFile,
}

impl Ledger for Exported {
    fn results(&self, batches: &[(u64, &[u8])]) -> std::io::Result<()> {
        self.results.append(batches)
    }

    fn succeeded(&self, batches: &[(u64, Duration)], items: Option<u64>) -> std::io::Result<()> {
        self.journal.succeeded(batches, items)
    }

    fn dead_lettered(&self, records: &[Record<'_>]) -> std::io::Result<()> {
        self.file.append(records)?;
        self.journal.dead_lettered(records)
    }

    fn totals(&self) -> Option<(u64, u64, u64)> {
        self.journal.totals()
    }

    fn location(&self) -> Option<String> {
        (self.file.written() > 0).then(|| self.file.path().display().to_string())
    }

    fn hook_starting(&self) {
        self.journal.hook_starting()
    }

    fn finish(self: Box<Self>) -> std::io::Result<()> {
        self.file.finish()
    }
}

/// One job's outcomes, recorded in the journal as the runner reports them.
pub(crate) struct JobLedger {
    pub(super) journal: Journal,
    pub(super) job_id: String,
}

impl Ledger for JobLedger {
    fn results(&self, batches: &[(u64, &[u8])]) -> std::io::Result<()> {
        self.journal.results(&self.job_id).append(batches)
    }

    fn succeeded(&self, batches: &[(u64, Duration)], items: Option<u64>) -> std::io::Result<()> {
        let packed: Vec<u8> = batches.iter().flat_map(|(index, _)| index.to_le_bytes()).collect();
        let elapsed: f64 = batches.iter().map(|(_, e)| e.as_secs_f64()).sum();
        let items = items.map(|n| n as i64);
        let hist = super::views::Histogram::encode_times(batches.iter().map(|(_, e)| *e));
        self.journal.with(|c| {
            c.prepare_cached(
                "INSERT INTO succeeded (job_id, n, elapsed, indexes, items, at, hist)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![self.job_id, batches.len() as i64, elapsed, packed, items, super::now(), hist])
            .map(drop)
        })
    }

    fn dead_lettered(&self, records: &[Record<'_>]) -> std::io::Result<()> {
        self.journal.with(|c| {
            let tx = c.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR REPLACE INTO outcomes
                     (job_id, idx, state, attempts, kind, message, body, items, dead_items, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )?;
                let at = super::now();
                for r in records {
                    let state = if r.error.interrupted() { UNHANDLED } else { FAILED };
                    // The items dead-lettered: those of the body (the batch, or its
                    // items that failed alone).
                    let dead = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(r.body).map(|v| v.len() as i64);
                    let items = r.items.map(|n| n as i64);
                    insert.execute(params![
                        self.job_id,
                        r.index as i64,
                        state,
                        r.attempts,
                        r.error.kind.to_string(),
                        r.error.message,
                        r.body,
                        items,
                        items.and(dead.ok()),
                        at,
                    ])?;
                }
            }
            tx.commit()
        })
    }

    fn totals(&self) -> Option<(u64, u64, u64)> {
        let counts = self.journal.counts(&self.job_id).ok()?;
        let total = self.journal.job(&self.job_id).ok()??.total_batch_count?;
        Some((counts.succeeded, counts.failed + counts.unhandled, total))
    }

    fn location(&self) -> Option<String> {
        None
    }

    fn hook_starting(&self) {
        if let Err(e) = self.journal.set_hook(&self.job_id, Hook::Running) {
            tracing::error!(job_id = self.job_id, "{e}");
        }
    }

    fn finish(self: Box<Self>) -> std::io::Result<()> {
        Ok(())
    }
}
