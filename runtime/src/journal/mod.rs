//! The journal: the job service's durable state, in one SQLite file.
//!
//! What it keeps, and why that is enough to lose nothing:
//!
//! - `jobs`: one row per job — its API, its spec, status, times, the
//!   number of batches once the input has been read to its end, and how far its
//!   on-job-complete got.
//! - `succeeded`: one row per group of batches a worker recorded at once — their
//!   indexes, packed, and their time — so that a fast job writes a row per few dozen
//!   batches, not one per batch.
//! - `outcomes`: one row per dead-lettered batch (attempts, error, and the batch's
//!   bytes, for download and re-run). A batch in neither is pending or was in flight.
//!
//! - `submissions/<job_id>.json`, beside the database: each job's submission as
//!   received (so that its batches can be produced again after a restart), written
//!   and flushed before the job's row.
//!
//! Batch bodies of pending batches are not stored: on a restart the input is read
//! again from the submission (deterministically split into the same batches) and the
//! batches that have an outcome are skipped. So the journal's size grows with the
//! number of batches (a few dozen bytes each) and with the dead letters, not with the
//! input; memory holds one bit per batch of a resumed job.
//!
//! Every write is a committed transaction in WAL mode before the runner counts the
//! batch: a SIGKILL loses nothing that was counted. (`synchronous=NORMAL`: a power cut
//! may lose the last commits, which puts those batches back to pending — they run
//! again, nothing is lost.)

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

mod batches;
mod schema;
mod views;

pub(crate) use self::batches::{Exported, JobLedger};
use self::batches::{Letters, Resumed};
#[cfg(test)]
use self::schema::{SCHEMA, SCHEMA_VERSION};
pub(crate) use self::views::JobFilter;

use crate::job::results::ResultsFile;
use crate::job::source::BatchSource;
use crate::job::status::{ItemCounts, JobState};

/// The journal could not be used.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {error}")]
pub(crate) struct JournalError {
    path: PathBuf,
    error: String,
}

/// How on-job-complete stands for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    /// Not called yet.
    Pending,
    /// Called and not known to have ended (a crash then: it is called again).
    Running,
    /// Ended with this outcome.
    Done(crate::job::status::HookOutcome),
}

/// A job as the journal keeps it.
#[derive(Debug, Clone)]
pub(crate) struct JobRow {
    /// The job's ID.
    pub job_id: String,
    /// The API it was submitted to.
    pub api_name: String,
    /// The submission's bytes, as received (empty when read from the journal: see
    /// [`Journal::submission`]).
    pub submission: Vec<u8>,
    /// The job spec (Cortex's `BatchJob`), JSON.
    pub spec: serde_json::Value,
    /// Its status.
    pub status: JobState,
    /// Seconds since the epoch when it was submitted.
    pub submitted_at: f64,
    /// RFC 3339, when it ended.
    pub end_time: Option<String>,
    /// Seconds since the epoch when it ended (recorded since schema 4).
    pub ended_at: Option<f64>,
    /// The number of batches, once the input was read to its end.
    pub total_batch_count: Option<u64>,
    /// on-job-complete.
    pub hook: Hook,
    /// What went wrong with the job as a whole.
    pub error: Option<String>,
    /// The content hash (SHA-256, hex) of the plugin the job runs, for an API with a
    /// plugin: a resume runs the same one (see `operator::versions`).
    pub plugin: Option<String>,
}

impl JobRow {
    /// The job's workers (its spec's `workers`, at least 1).
    pub(crate) fn workers(&self) -> usize {
        self.spec["workers"].as_u64().map_or(1, |n| n.max(1) as usize)
    }

    /// The job's time limit in seconds, when it has one.
    pub(crate) fn timeout(&self) -> Option<u64> {
        self.spec["timeout"].as_u64()
    }

    /// The job's `config` (`null` when it has none).
    pub(crate) fn config(&self) -> &serde_json::Value {
        &self.spec["config"]
    }

    /// Where the job asks its results to be copied (`config.results_prefix`).
    pub(crate) fn results_prefix(&self) -> Option<&str> {
        self.config().get("results_prefix").and_then(|p| p.as_str())
    }
}

/// A submission's `Idempotency-Key`, and the digest of what it was sent with.
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyKey {
    /// The key as the client sent it.
    pub key: String,
    /// SHA-256 of the API's name and the submission's bytes.
    pub digest: [u8; 32],
}

/// Batch counts of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Counts {
    /// Batches that succeeded.
    pub succeeded: u64,
    /// Batches that failed on every attempt.
    pub failed: u64,
    /// Batches dead-lettered unhandled (timeout, stop).
    pub unhandled: u64,
    /// Mean seconds per succeeded batch.
    pub average_time_per_batch: Option<f64>,
    /// Items succeeded and dead-lettered, when every outcome recorded its items.
    pub items: Option<ItemCounts>,
}

/// A dead-lettered batch, as downloaded.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    /// Its position in the job.
    pub index: u64,
    /// Attempts made.
    pub attempts: u32,
    /// The error kind.
    pub kind: String,
    /// The error message.
    pub message: String,
    /// The batch's bytes.
    pub body: Vec<u8>,
}

/// The journal, shared by the service's threads.
#[derive(Clone)]
pub(crate) struct Journal {
    conn: Arc<Mutex<Connection>>,
    /// A second, read-only connection for the dashboard's reads (opened on first
    /// use): in WAL mode they do not wait for the writers, nor make them wait.
    reader: Arc<Mutex<Option<Connection>>>,
    path: PathBuf,
    /// The jobs' results files, open ones kept.
    results: Arc<Mutex<std::collections::HashMap<String, Arc<ResultsFile>>>>,
}

/// Seconds since the epoch, as the journal records times.
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `outcomes.state`.
pub(crate) const FAILED: i64 = 2;
pub(crate) const UNHANDLED: i64 = 3;

/// The state a job ends in, given the state its run reached and its outcomes: one
/// that completed with a dead letter completed with failures.
pub(crate) fn final_state(state: JobState, counts: &Counts) -> JobState {
    match state {
        JobState::Succeeded | JobState::CompletedWithFailures if counts.failed + counts.unhandled > 0 => {
            JobState::CompletedWithFailures
        }
        other => other,
    }
}

fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Pending => "pending",
        Hook::Running => "running",
        Hook::Done(outcome) => outcome.as_str(),
    }
}

fn parse_hook(name: &str) -> Hook {
    use crate::job::status::HookOutcome::*;
    match name {
        "running" => Hook::Running,
        "succeeded" => Hook::Done(Succeeded),
        "not_found" => Hook::Done(NotFound),
        "failed" => Hook::Done(Failed),
        "skipped" => Hook::Done(Skipped),
        _ => Hook::Pending,
    }
}

impl Journal {
    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection; a full disk (`SQLITE_FULL`) is an error of kind
    /// `StorageFull`, so that callers can tell it apart.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> std::io::Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut conn).map_err(|e| {
            let kind = match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::DiskFull) => std::io::ErrorKind::StorageFull,
                _ => std::io::ErrorKind::Other,
            };
            std::io::Error::new(kind, format!("journal {}: {e}", self.path.display()))
        })
    }

    /// Where a job's results are kept: `results/<job_id>.jsonl` beside the database.
    pub(crate) fn results_path(&self, job_id: &str) -> PathBuf {
        self.path.with_file_name("results").join(format!("{job_id}.jsonl"))
    }

    /// A job's results file (kept open while the process runs).
    pub(crate) fn results(&self, job_id: &str) -> Arc<ResultsFile> {
        let mut files = self.results.lock().unwrap_or_else(|e| e.into_inner());
        files
            .entry(job_id.to_string())
            .or_insert_with(|| Arc::new(ResultsFile::new(&self.results_path(job_id))))
            .clone()
    }

    /// Where a job's submission is kept: a file beside the database (a submission can
    /// be megabytes; as a file it costs one write, not a WAL write and a checkpoint).
    fn submission_path(&self, job_id: &str) -> PathBuf {
        self.path.with_file_name("submissions").join(format!("{job_id}.json"))
    }

    /// Records a new job: its submission on disk first (whole or not at all), then
    /// its row — and its idempotency key, in the same transaction; if the row cannot
    /// be written, the submission is removed again.
    pub(crate) fn insert_job(&self, job: &JobRow, key: Option<&IdempotencyKey>) -> std::io::Result<()> {
        let path = self.submission_path(&job.job_id);
        std::fs::create_dir_all(path.parent().expect("a directory"))?;
        crate::storage::write_atomic(&path, &job.submission)?;
        let inserted = self.with(|c| {
            let t = c.transaction()?;
            if let Some(key) = key {
                t.execute(
                    "INSERT INTO idempotency (key, api_name, digest, job_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![key.key, job.api_name, key.digest.to_vec(), job.job_id, job.submitted_at],
                )?;
            }
            t.execute(
                "INSERT INTO jobs (job_id, api_name, submission, spec, status, submitted_at, hook, plugin)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7)",
                params![
                    job.job_id,
                    job.api_name,
                    Vec::<u8>::new(),
                    job.spec.to_string(),
                    job.status.as_str(),
                    job.submitted_at,
                    job.plugin
                ],
            )?;
            t.commit()
        });
        if inserted.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        inserted
    }

    /// The job an idempotency key named, `(api, digest of the submission, job ID)`, if
    /// it was used since `since` (seconds since the epoch); older keys are forgotten.
    pub(crate) fn idempotent(&self, key: &str, since: f64) -> std::io::Result<Option<(String, Vec<u8>, String)>> {
        self.with(|c| {
            c.execute("DELETE FROM idempotency WHERE created_at < ?1", [since])?;
            c.query_row("SELECT api_name, digest, job_id FROM idempotency WHERE key = ?1", [key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
        let spec: String = r.get(3)?;
        let status: String = r.get(4)?;
        let hook: String = r.get(8)?;
        Ok(JobRow {
            job_id: r.get(0)?,
            api_name: r.get(1)?,
            // Read on its own (`Journal::submission`): it can be megabytes.
            submission: Vec::new(),
            spec: serde_json::from_str(&spec).unwrap_or_default(),
            status: JobState::parse(&status).unwrap_or(JobState::WorkerError),
            submitted_at: r.get(5)?,
            end_time: r.get(6)?,
            ended_at: r.get(11)?,
            total_batch_count: r.get::<_, Option<i64>>(7)?.map(|n| n as u64),
            hook: parse_hook(&hook),
            error: r.get(9)?,
            plugin: r.get(10)?,
        })
    }

    const COLUMNS: &str = "job_id, api_name, NULL, spec, status, submitted_at, end_time, total_batch_count, hook, error, plugin, \
         ended_at";

    /// A job's submission, as received.
    pub(crate) fn submission(&self, job_id: &str) -> std::io::Result<Vec<u8>> {
        std::fs::read(self.submission_path(job_id))
    }

    /// The job with this ID.
    pub(crate) fn job(&self, job_id: &str) -> std::io::Result<Option<JobRow>> {
        self.with(|c| {
            c.query_row(&format!("SELECT {} FROM jobs WHERE job_id = ?1", Self::COLUMNS), [job_id], Self::row)
                .optional()
        })
    }

    /// The API's jobs, newest first, at most `limit`.
    pub(crate) fn jobs(&self, api_name: &str, limit: usize) -> std::io::Result<Vec<JobRow>> {
        self.with(|c| {
            let mut q = c.prepare(&format!(
                "SELECT {} FROM jobs WHERE api_name = ?1 ORDER BY submitted_at DESC LIMIT ?2",
                Self::COLUMNS
            ))?;
            q.query_map(params![api_name, limit as i64], Self::row)?.collect()
        })
    }

    /// Jobs that have not ended (to resume at start), oldest first.
    pub(crate) fn unfinished(&self) -> std::io::Result<Vec<JobRow>> {
        self.with(|c| {
            let mut q = c.prepare(&format!(
                "SELECT {} FROM jobs WHERE status IN ('pending', 'running') ORDER BY submitted_at",
                Self::COLUMNS
            ))?;
            q.query_map([], Self::row)?.collect()
        })
    }

    /// Jobs that have not ended.
    pub(crate) fn unfinished_count(&self) -> std::io::Result<u64> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'running')", [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
        })
    }

    /// Batches not handled yet over the jobs that have not ended: those whose number
    /// of batches is known, less their outcomes.
    pub(crate) fn batches_in_queue(&self) -> std::io::Result<u64> {
        self.with(|c| {
            let mut q = c.prepare(
                "SELECT job_id, total_batch_count FROM jobs
                 WHERE status IN ('pending', 'running') AND total_batch_count IS NOT NULL",
            )?;
            let jobs: Vec<(String, i64)> =
                q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            let mut queued = 0u64;
            for (job_id, total) in jobs {
                let ended: i64 = c.query_row(
                    "SELECT (SELECT COALESCE(SUM(n), 0) FROM succeeded WHERE job_id = ?1)
                          + (SELECT COUNT(*) FROM outcomes WHERE job_id = ?1)",
                    [&job_id],
                    |r| r.get(0),
                )?;
                queued += (total - ended).max(0) as u64;
            }
            Ok(queued)
        })
    }

    /// How many jobs have each status.
    pub(crate) fn status_counts(&self) -> std::io::Result<Vec<(JobState, u64)>> {
        self.with(|c| {
            let mut q = c.prepare("SELECT status, COUNT(*) FROM jobs GROUP BY status")?;
            let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            let mut out = Vec::new();
            for row in rows {
                let (status, n) = row?;
                if let Some(state) = JobState::parse(&status) {
                    out.push((state, n));
                }
            }
            Ok(out)
        })
    }

    /// Sets a job's status (and its end and error, for a final one).
    pub(crate) fn set_status(
        &self,
        job_id: &str,
        status: JobState,
        end_time: Option<&str>,
        error: Option<&str>,
    ) -> std::io::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET status = ?2, end_time = ?3, error = ?4, ended_at = ?5 WHERE job_id = ?1",
                params![job_id, status.as_str(), end_time, error, end_time.map(|_| now())],
            )
            .map(drop)
        })
    }

    /// Records a job's end, in one transaction: on-job-complete's outcome, the job's
    /// final state, its end time and error. The whole job's counts decide between the
    /// two completed states (batches may have failed before a restart): a job with a
    /// dead letter did not succeed. Returns the state recorded. The one way a job ends,
    /// for `run` and the operator alike.
    pub(crate) fn conclude(
        &self,
        job_id: &str,
        state: JobState,
        hook: crate::job::status::HookOutcome,
        end_time: &str,
        error: Option<&str>,
    ) -> std::io::Result<(JobState, Counts)> {
        let counts = self.counts(job_id)?;
        let state = final_state(state, &counts);
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE jobs SET hook = ?2, status = ?3, end_time = ?4, error = ?5, ended_at = ?6 WHERE job_id = ?1",
                params![job_id, hook_name(Hook::Done(hook)), state.as_str(), end_time, error, now()],
            )?;
            tx.commit()
        })?;
        Ok((state, counts))
    }

    /// Sets how far on-job-complete got.
    pub(crate) fn set_hook(&self, job_id: &str, hook: Hook) -> std::io::Result<()> {
        self.with(|c| {
            c.execute("UPDATE jobs SET hook = ?2 WHERE job_id = ?1", params![job_id, hook_name(hook)]).map(drop)
        })
    }

    /// With a broker: every batch below this index was published and confirmed.
    pub(crate) fn published(&self, job_id: &str) -> std::io::Result<u64> {
        self.with(|c| {
            c.query_row("SELECT upto FROM published WHERE job_id = ?1", [job_id], |r| r.get::<_, i64>(0))
                .optional()
                .map(|n| n.unwrap_or(0) as u64)
        })
    }

    /// With a broker: records that every batch below `upto` was published.
    pub(crate) fn set_published(&self, job_id: &str, upto: u64) -> std::io::Result<()> {
        self.with(|c| {
            c.prepare_cached("INSERT OR REPLACE INTO published (job_id, upto) VALUES (?1, ?2)")?
                .execute(params![job_id, upto as i64])
                .map(drop)
        })
    }

    /// Sets what went wrong with a job that has not ended yet (its on-job-complete).
    pub(crate) fn set_error(&self, job_id: &str, error: Option<&str>) -> std::io::Result<()> {
        self.with(|c| c.execute("UPDATE jobs SET error = ?2 WHERE job_id = ?1", params![job_id, error]).map(drop))
    }

    /// Records the number of batches, once the input has been read to its end.
    pub(crate) fn set_total(&self, job_id: &str, total: u64) -> std::io::Result<()> {
        self.with(|c| {
            c.execute("UPDATE jobs SET total_batch_count = ?2 WHERE job_id = ?1", params![job_id, total as i64])
                .map(drop)
        })
    }

    /// The batch counts of a job.
    pub(crate) fn counts(&self, job_id: &str) -> std::io::Result<Counts> {
        self.with(|c| Self::counts_in(c, job_id))
    }

    /// The batch counts of a job, read on `c`.
    fn counts_in(c: &Connection, job_id: &str) -> rusqlite::Result<Counts> {
        let mut counts = Counts::default();
        // One pass over the job's groups of successes: batches, time, items.
        let (n, elapsed, done, unknown): (i64, f64, i64, i64) = c
            .prepare_cached(
                "SELECT COALESCE(SUM(n), 0), COALESCE(SUM(elapsed), 0), COALESCE(SUM(items), 0), COUNT(*) - COUNT(items)
                 FROM succeeded WHERE job_id = ?1",
            )?
            .query_row([job_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        counts.succeeded = n as u64;
        counts.average_time_per_batch = (n > 0).then(|| elapsed / n as f64);
        let mut q = c.prepare_cached("SELECT state, COUNT(*) FROM outcomes WHERE job_id = ?1 GROUP BY state")?;
        for row in q.query_map([job_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64)))? {
            let (state, n) = row?;
            match state {
                FAILED => counts.failed = n,
                _ => counts.unhandled = n,
            }
        }
        // Items: those of succeeded batches, and those of dead-lettered ones not
        // dead-lettered themselves; unknown when any row lacks them.
        let (items, dead, unknown_dead): (i64, i64, i64) = c
            .prepare_cached(
                "SELECT COALESCE(SUM(items), 0), COALESCE(SUM(dead_items), 0), COUNT(*) - COUNT(dead_items)
                 FROM outcomes WHERE job_id = ?1",
            )?
            .query_row([job_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        if unknown == 0 && unknown_dead == 0 {
            counts.items =
                Some(ItemCounts { succeeded: (done + items - dead).max(0) as u64, dead_lettered: dead.max(0) as u64 });
        }
        Ok(counts)
    }

    /// The indexes of a job's batches that have ended, as a bit set.
    pub(crate) fn ended(&self, job_id: &str) -> std::io::Result<Vec<u64>> {
        self.with(|c| {
            let mut bits: Vec<u64> = Vec::new();
            let mut set = |idx: usize| {
                if bits.len() <= idx / 64 {
                    bits.resize(idx / 64 + 1, 0);
                }
                bits[idx / 64] |= 1 << (idx % 64);
            };
            let mut q = c.prepare("SELECT indexes FROM succeeded WHERE job_id = ?1")?;
            for packed in q.query_map([job_id], |r| r.get::<_, Vec<u8>>(0))? {
                for chunk in packed?.chunks_exact(8) {
                    set(u64::from_le_bytes(chunk.try_into().expect("8 bytes")) as usize);
                }
            }
            let mut q = c.prepare("SELECT idx FROM outcomes WHERE job_id = ?1")?;
            for idx in q.query_map([job_id], |r| r.get::<_, i64>(0))? {
                set(idx? as usize);
            }
            Ok(bits)
        })
    }

    /// A job's dead letters, in batch order.
    pub(crate) fn dead_letters(&self, job_id: &str) -> std::io::Result<Vec<DeadLetter>> {
        self.with(|c| {
            let mut q = c.prepare(
                "SELECT idx, attempts, kind, message, body FROM outcomes
                 WHERE job_id = ?1 ORDER BY idx",
            )?;
            q.query_map(params![job_id], |r| {
                Ok(DeadLetter {
                    index: r.get::<_, i64>(0)? as u64,
                    attempts: r.get::<_, Option<i64>>(1)?.unwrap_or(0) as u32,
                    kind: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    message: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    body: r.get::<_, Option<Vec<u8>>>(4)?.unwrap_or_default(),
                })
            })?
            .collect()
        })
    }

    /// The ledger of one job, for the runner.
    pub(crate) fn ledger(&self, job_id: &str) -> JobLedger {
        JobLedger { journal: self.clone(), job_id: job_id.to_string() }
    }

    /// The dead letters of `job_id` as a source of batches (for a job re-running them).
    pub(crate) fn dead_letter_source(&self, job_id: &str) -> std::io::Result<Box<dyn BatchSource>> {
        let letters = self.dead_letters(job_id)?;
        let total = letters.len() as u64;
        Ok(Box::new(Letters { batches: letters.into_iter(), next: 0, total }))
    }

    /// The only job of a journal that `wasmbatch run` keeps.
    pub(crate) fn only_job(&self) -> std::io::Result<Option<JobRow>> {
        self.with(|c| {
            c.query_row(&format!("SELECT {} FROM jobs ORDER BY submitted_at LIMIT 1", Self::COLUMNS), [], Self::row)
                .optional()
        })
    }

    /// The batches of `inner` (a job's input, read again from the start) that have no
    /// outcome yet; records the number of batches when the input ends.
    pub(crate) fn resumed(&self, job_id: &str, inner: Box<dyn BatchSource>) -> std::io::Result<Box<dyn BatchSource>> {
        let ended = self.ended(job_id)?;
        Ok(Box::new(Resumed { inner, ended, journal: self.clone(), job_id: job_id.to_string(), seen: 0 }))
    }
}

#[cfg(test)]
mod tests;
