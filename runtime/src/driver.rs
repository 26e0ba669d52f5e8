//! One job engine: a job driven from its journal row to its conclusion, in one place
//! for `wasmbatch run` (one job on a journal of its own) and the operator (many).
//!
//! [`Job::drive`] opens nothing and decides nothing about admission; given the job's
//! input, it records the number of batches once known, skips the batches that already
//! have an outcome (a resume), hands the rest to a [`Dispatcher`], and when the
//! dispatcher says the job ended: copies the results to object storage when the job
//! asks for it, and records the conclusion ([`Journal::conclude`]: on-job-complete's
//! outcome, the final state decided from the whole job's counts, end time, error) —
//! waiting out a full disk rather than failing a job whose batches are all recorded.
//!
//! The dispatchers: [`Local`] (this process's runner over an executor: warm instances
//! of a plugin, or servers of the contract) and the broker's
//! (`crate::broker::dispatch::Dispatch`, workers on other machines).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::capability::Grants;
use crate::job::budget::Budget;
use crate::job::executor::Executor;
use crate::job::ledger::Ledger;
use crate::job::runner::{self, JobPlan};
use crate::job::source::BatchSource;
use crate::job::status::{HookOutcome, JobState, JobStatus, ProgressView, rfc3339};
use crate::job::stop::StopFlag;
use crate::journal::{Counts, JobRow, Journal};
use crate::metrics::Metrics;
use crate::storage::Room;

/// What a dispatcher needs to know of a job, besides its batches.
pub(crate) struct JobFacts<'a> {
    /// The job's row.
    pub(crate) row: &'a JobRow,
    /// Worker threads (a local dispatcher's; the broker's workers are their own).
    pub(crate) workers: usize,
    /// Attempts per batch.
    pub(crate) max_attempts: u32,
    /// What remains of its time limit.
    pub(crate) timeout: Option<Duration>,
}

impl JobFacts<'_> {
    /// The job's `config`.
    pub(crate) fn config(&self) -> &Value {
        self.row.config()
    }
}

/// What remains of a time limit of `seconds` for a job submitted at `submitted_at`
/// (seconds since the epoch): at least a millisecond, so that it still ends by it.
pub(crate) fn remaining(seconds: Option<u64>, submitted_at: f64) -> Option<Duration> {
    seconds.map(|t| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        let spent = (now - submitted_at).max(0.0);
        Duration::from_secs_f64((t as f64 - spent).max(0.001))
    })
}

/// How a dispatched job ended.
pub(crate) enum Ended {
    /// The process is shutting down; the job resumes on the next start.
    Interrupted {
        /// The local runner's status of the run, when the dispatcher has one.
        status: Option<Box<JobStatus>>,
    },
    /// The job ended.
    Done {
        /// The state its run reached (the two completed states are decided from the
        /// whole job's counts when it is recorded).
        state: JobState,
        /// How on-job-complete went.
        hook: HookOutcome,
        /// What went wrong, if anything.
        error: Option<String>,
        /// The local runner's status of the run, when the dispatcher has one.
        status: Option<Box<JobStatus>>,
    },
}

/// Reads a job's input again from its start, without the batches that ended.
pub(crate) type Reopen<'a> = dyn Fn() -> anyhow::Result<Box<dyn BatchSource>> + 'a;

/// Hands a job's batches out until each has an outcome in the journal, runs
/// on-job-complete once, and says how the job ended.
pub(crate) trait Dispatcher {
    /// Dispatches the batches of `source` (those without an outcome). `reopen` reads
    /// the job's input again from its start, also without the ended batches.
    fn dispatch(
        &self,
        job: &JobFacts<'_>,
        source: Box<dyn BatchSource>,
        reopen: &Reopen<'_>,
        stop: &StopFlag,
    ) -> anyhow::Result<Ended>;
}

/// How a drive ended.
pub(crate) struct Concluded {
    /// Whether the job ended (and its end is recorded); `false`: interrupted, or
    /// batches are left without an outcome — it stays running, to resume.
    pub(crate) ended: bool,
    /// The state recorded (the run's state when it did not end).
    pub(crate) state: JobState,
    /// The whole job's counts.
    pub(crate) counts: Counts,
    /// What went wrong, the results' upload included.
    pub(crate) error: Option<String>,
    /// The local runner's status of the run, when there is one.
    pub(crate) status: Option<Box<JobStatus>>,
}

/// One job, from its journal row to its conclusion.
pub(crate) struct Job<'a> {
    /// Its journal.
    pub(crate) journal: &'a Journal,
    /// Its row.
    pub(crate) row: &'a JobRow,
    /// Where its results are kept (JSON Lines).
    pub(crate) results: PathBuf,
    /// The grants its results are copied to object storage with (`results_prefix`).
    pub(crate) grants: &'a Grants,
    /// Episodes of a full disk, shared with the rest of the process.
    pub(crate) room: &'a Room,
}

impl Job<'_> {
    /// Drives the job: `input` (its batches from the start) through `dispatcher` to
    /// its end, then its conclusion.
    pub(crate) fn drive(
        &self,
        facts: &JobFacts<'_>,
        input: Box<dyn BatchSource>,
        reopen: &Reopen<'_>,
        dispatcher: &dyn Dispatcher,
        stop: &StopFlag,
    ) -> anyhow::Result<Concluded> {
        let job_id = &self.row.job_id;
        if let Some(total) = input.total_batches() {
            self.journal.set_total(job_id, total)?;
        }
        let source = self.journal.resumed(job_id, input)?;
        let reopen = || -> anyhow::Result<Box<dyn BatchSource>> { Ok(self.journal.resumed(job_id, reopen()?)?) };
        let (state, hook, error, status) = match dispatcher.dispatch(facts, source, &reopen, stop)? {
            Ended::Interrupted { status } => {
                tracing::info!(job_id, "interrupted by the shutdown; resumes on the next start");
                let counts = self.journal.counts(job_id)?;
                return Ok(Concluded { ended: false, state: JobState::Running, counts, error: None, status });
            }
            Ended::Done { state, hook, error, status } => (state, hook, error, status),
        };
        let counts = self.journal.counts(job_id)?;
        let total = self.journal.job(job_id)?.and_then(|row| row.total_batch_count);
        let left = total.is_some_and(|t| counts.succeeded + counts.failed + counts.unhandled < t);
        if !state.is_terminal() || left {
            // Batches without an outcome: the job stays running, to resume.
            return Ok(Concluded { ended: false, state, counts, error, status });
        }
        let error = self.upload_results(error);
        let end_time = status.as_ref().map(|s| s.end_time.clone()).unwrap_or_else(|| rfc3339(SystemTime::now()));
        // A full disk delays the record of the end (the job shows as running) instead of
        // failing the job: its batches are all recorded already.
        let (state, counts) = self.room.wait_for(
            "job states",
            |pause| {
                std::thread::sleep(pause);
                false
            },
            || self.journal.conclude(job_id, state, hook, &end_time, error.as_deref()),
        )?;
        tracing::info!(
            job_id,
            api_name = self.row.api_name,
            status = state.as_str(),
            succeeded = counts.succeeded,
            failed = counts.failed,
            "job ended"
        );
        Ok(Concluded { ended: true, state, counts, error, status })
    }

    /// Copies the results to object storage when the job's `config.results_prefix`
    /// asks for it, before the job shows as ended; a failure joins `error`.
    fn upload_results(&self, mut error: Option<String>) -> Option<String> {
        let Some(prefix) = self.row.results_prefix() else {
            return error;
        };
        match crate::job::results::upload(&self.results, prefix, &self.row.job_id, self.grants) {
            Ok(Some(url)) => tracing::info!(job_id = self.row.job_id, url, "results copied to object storage"),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(job_id = self.row.job_id, "cannot copy the results: {e}");
                error = Some(error.map(|x| format!("{x}; ")).unwrap_or_default() + &format!("results: {e}"));
            }
        }
        error
    }
}

/// The dispatcher of this process: the runner's workers over `executor` (a plugin's
/// warm instances, or servers of the contract), recording into `ledger`.
pub(crate) struct Local<E: Executor> {
    /// Where attempts go.
    executor: Arc<E>,
    /// Where outcomes are recorded: the journal, with `run`'s files or alone. Taken by
    /// the one run this dispatcher makes.
    ledger: Mutex<Option<Box<dyn Ledger>>>,
    /// A worker budget shared with other jobs.
    budget: Option<Arc<Budget>>,
    /// Progress on the terminal (`run`) or none.
    progress: Mutex<ProgressView>,
    /// Batch metrics.
    metrics: Arc<Metrics>,
}

impl<E: Executor> Local<E> {
    /// `executor`'s dispatcher, recording into `ledger`, with a place of `budget` per
    /// attempt when there is one.
    pub(crate) fn new(
        executor: E,
        ledger: Box<dyn Ledger>,
        budget: Option<Arc<Budget>>,
        progress: ProgressView,
        metrics: Arc<Metrics>,
    ) -> Local<E> {
        Local {
            executor: Arc::new(executor),
            ledger: Mutex::new(Some(ledger)),
            budget,
            progress: Mutex::new(progress),
            metrics,
        }
    }
}

impl<E: Executor> Dispatcher for Local<E> {
    fn dispatch(
        &self,
        job: &JobFacts<'_>,
        source: Box<dyn BatchSource>,
        _reopen: &Reopen<'_>,
        stop: &StopFlag,
    ) -> anyhow::Result<Ended> {
        let ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner()).take();
        let ledger = ledger.ok_or_else(|| anyhow::anyhow!("a local dispatcher runs one job once"))?;
        let plan = JobPlan {
            job_id: job.row.job_id.clone(),
            api_name: job.row.api_name.clone(),
            workers: job.workers,
            config: job.config().clone(),
            timeout: job.timeout,
            max_attempts: job.max_attempts,
            ledger,
            budget: self.budget.clone(),
            start_time: UNIX_EPOCH + Duration::from_secs_f64(job.row.submitted_at),
        };
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let status =
            runner::run(plan, source, self.executor.clone(), stop.clone(), &mut progress, self.metrics.clone());
        if status.status == JobState::Running {
            return Ok(Ended::Interrupted { status: Some(Box::new(status)) });
        }
        Ok(Ended::Done {
            state: status.status,
            hook: status.on_job_complete,
            error: status.error.clone(),
            status: Some(Box::new(status)),
        })
    }
}
