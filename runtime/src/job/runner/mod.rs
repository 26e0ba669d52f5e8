//! The job runner: one producer reads batches from the source, `workers` threads hand
//! them to an [`Executor`] with retries, failures go to the dead-letter file, and
//! on-job-complete runs exactly once when every batch has been handled.
//!
//! Nothing is lost: every batch read ends up succeeded or in the dead-letter file
//! (failed after its attempts, or unhandled because the job timed out or was stopped —
//! after a stop the rest of the input is still read and dead-lettered, so the file
//! re-runs everything left). A dead-letter record is on disk before its batch is
//! counted. An input that turns out malformed half-way stops the reading; the batches
//! read before it are still handled. A panic in a worker or in the reader fails the job
//! loudly (`worker_error`), and the counts are checked against each other at the end:
//! a mismatch is an error too. The queue between the reader and the workers is
//! `feed`'s.

mod feed;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::{Value, json};

use super::budget::Budget;
use super::dead_letter::Record;
use super::executor::{Attempt, AttemptError, AttemptKind, Completion, Executor, failed_items};
use super::ledger::Ledger;
use super::source::{Batch, BatchSource};
use super::status::{HookOutcome, JobState, JobStatus, Metrics as BatchCounts, Progress, ProgressView, rfc3339};
use super::stop::{StopFlag, StopReason};
use crate::metrics::Metrics;

/// Everything about a job except its input and its executor.
pub struct JobPlan {
    /// The job's ID.
    pub job_id: String,
    /// The API name.
    pub api_name: String,
    /// Worker threads.
    pub workers: usize,
    /// The job's config.
    pub config: Value,
    /// The job's time limit.
    pub timeout: Option<Duration>,
    /// Attempts per batch.
    pub max_attempts: u32,
    /// Where outcomes are recorded: the dead-letter file (`run`), or the journal.
    pub ledger: Box<dyn Ledger>,
    /// A worker budget shared with other jobs: a place is taken for each attempt.
    pub budget: Option<Arc<Budget>>,
    /// When the job started.
    pub start_time: SystemTime,
}

#[derive(Default)]
struct Tally {
    read: u64,
    items: u64,
    done: u64,
    done_items: u64,
    /// Items dead-lettered: whole batches', or the failed items alone.
    dead_items: u64,
    succeeded: u64,
    failed: u64,
    unhandled: u64,
    /// Left for a later run (a shutdown): neither succeeded nor dead-lettered.
    deferred: u64,
    retries: u64,
    success_time: Duration,
    input_error: Option<String>,
    /// Panics in workers or the reader, and dead-letter write failures.
    faults: Vec<String>,
}

struct Shared {
    tally: Mutex<Tally>,
    ledger: Box<dyn Ledger>,
    stop: StopFlag,
    /// Episodes of a full disk while recording.
    room: crate::storage::Room,
}

impl Shared {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `write` (a record of outcomes); while the disk is full, waits for room
    /// and tries again until it works or the job is stopped. So a full disk pauses the
    /// job's records — and with them its workers — instead of losing them; an outcome
    /// is counted once it is on disk.
    fn record(&self, write: impl FnMut() -> std::io::Result<()>) -> std::io::Result<()> {
        self.room.wait_for("outcomes", |pause| self.stop.sleep(pause), write)
    }

    /// Writes `records` to the dead-letter file, then counts them (failed or
    /// unhandled): their batches' `items` as done, `dead_items` of them as
    /// dead-lettered. A batch whose record cannot be written is not counted, which the
    /// final check reports as lost; `false` then.
    fn dead_letter(&self, records: &[Record<'_>], items: u64, dead_items: u64, unhandled: bool) -> bool {
        if let Err(e) = self.record(|| self.ledger.dead_lettered(records)) {
            let message = format!("cannot record dead letters: {e}");
            tracing::error!("{message}");
            self.tally().faults.push(message);
            return false;
        }
        let mut t = self.tally();
        let n = records.len() as u64;
        if unhandled {
            t.unhandled += n;
        } else {
            t.failed += n;
        }
        t.done += n;
        t.done_items += items;
        t.dead_items += dead_items;
        true
    }
}

/// What a panic carried, as text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs a whole job and returns its status.
pub fn run<E: Executor>(
    plan: JobPlan,
    mut source: Box<dyn BatchSource>,
    executor: Arc<E>,
    stop: StopFlag,
    progress: &mut ProgressView,
    metrics: Arc<Metrics>,
) -> JobStatus {
    let started = Instant::now();
    let total = source.total_batches();
    let JobPlan { job_id, api_name, workers, config, timeout, max_attempts, ledger, budget, start_time } = plan;
    let shared =
        Arc::new(Shared { tally: Mutex::new(Tally::default()), ledger, stop: stop.clone(), room: Default::default() });
    // 32 batches a worker (and at most `feed::MAX_BYTES`): refilled when half is taken.
    let (feeder, rx) = feed::queue(workers * 32);

    let producer = {
        let (shared, stop) = (shared.clone(), stop.clone());
        thread::Builder::new()
            .name("wasmbatch-source".into())
            .spawn(move || {
                loop {
                    // After a shutdown the rest stays where it is, for the next start.
                    if stop.reason() == Some(StopReason::Shutdown) {
                        break;
                    }
                    match source.next_batch() {
                        Ok(Some(batch)) => {
                            {
                                let mut t = shared.tally();
                                t.read += 1;
                                t.items += batch.items as u64;
                            }
                            if feeder.send(batch).is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!(
                                "reading the job's input failed: {e}; the batches read so far are still handled"
                            );
                            shared.tally().input_error = Some(e.to_string());
                            break;
                        }
                    }
                }
            })
            .expect("spawn the source thread")
    };
    let rx = rx.woken(producer.thread().clone());

    let job = Arc::new(JobRef { job_id: job_id.clone(), api_name: api_name.clone(), max_attempts, budget });
    let ended = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..workers)
        .map(|index| {
            let (rx, shared, stop, executor) = (rx.clone(), shared.clone(), stop.clone(), executor.clone());
            let (metrics, job) = (metrics.clone(), job.clone());
            let ended = Ended::new(&ended, &stop);
            thread::Builder::new()
                .name(format!("wasmbatch-job-{index}"))
                .spawn(move || {
                    let _ended = ended;
                    let mut state = executor.worker(index);
                    let mut done = Succeeded::default();
                    loop {
                        // Successes waiting to be recorded wait at most their age for
                        // the next batch; then they are recorded before waiting longer.
                        let next = match done.deadline() {
                            None => rx.recv().map_err(|_| ()),
                            Some(deadline) => match rx.recv_deadline(deadline) {
                                Ok(batch) => Ok(batch),
                                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                                    done.flush(&shared, &job);
                                    continue;
                                }
                                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(()),
                            },
                        };
                        let Ok(batch) = next else { break };
                        // A group that has waited its time is recorded before the next
                        // batch starts: only batches in flight can run twice after a crash.
                        if done.deadline().is_some_and(|deadline| Instant::now() >= deadline) {
                            done.flush(&shared, &job);
                        }
                        if let Some(reason) = stop.reason() {
                            done.flush(&shared, &job);
                            unhandled(batch, &rx, reason, &shared);
                            continue;
                        }
                        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            work(&*executor, &mut state, &job, &batch, &shared, &stop, &metrics)
                        }));
                        match outcome {
                            Ok(Some(ended)) => done.push(&batch, ended, &shared, &job),
                            Ok(None) => {}
                            Err(payload) => {
                                let message = format!(
                                    "a job worker panicked on batch {}: {}",
                                    batch.index,
                                    panic_message(&*payload)
                                );
                                tracing::error!(job_id = job.job_id, "{message}");
                                shared.tally().faults.push(message.clone());
                                let error = AttemptError { kind: AttemptKind::WorkerPanic, message };
                                let record = Record {
                                    index: batch.index,
                                    attempts: 1,
                                    error: &error,
                                    body: &batch.body,
                                    items: Some(batch.items as u64),
                                };
                                shared.dead_letter(&[record], batch.items as u64, batch.items as u64, false);
                                // The worker's state is in an unknown condition.
                                state = executor.worker(index);
                            }
                        }
                    }
                    done.flush(&shared, &job);
                    state
                })
                .expect("spawn a job worker")
        })
        .collect();
    drop(rx);

    let snapshot = |shared: &Shared| {
        let t = shared.tally();
        Progress { done: t.done, items: Some(t.done_items), failed: t.failed, total }
    };
    let watch = Watch { started, timeout, stop: &stop, executor: &*executor };
    watch.until(|| ended.load(Ordering::Acquire) == threads.len(), || progress.update(snapshot(&shared)));
    let mut states = Vec::new();
    for thread in threads {
        match thread.join() {
            Ok(state) => states.push(state),
            Err(payload) => shared.tally().faults.push(format!("a job worker died: {}", panic_message(&*payload))),
        }
    }
    if let Err(payload) = producer.join() {
        let message = format!("the input reader panicked: {}", panic_message(&*payload));
        tracing::error!(job_id, "{message}");
        shared.tally().faults.push(message);
    }
    progress.finish(snapshot(&shared));

    let (read, succeeded, failed) = {
        let t = shared.tally();
        (t.read, t.succeeded, t.failed)
    };
    let mut state = {
        let mut t = shared.tally();
        let accounted = t.succeeded + t.failed + t.unhandled + t.deferred;
        if accounted != t.read {
            let message = format!(
                "count mismatch: {} batches read, but {} succeeded + {} failed + {} unhandled + {} deferred = {accounted}",
                t.read, t.succeeded, t.failed, t.unhandled, t.deferred
            );
            tracing::error!(job_id, "{message}");
            t.faults.push(message);
        }
        match stop.reason() {
            _ if !t.faults.is_empty() => JobState::WorkerError,
            Some(StopReason::TimedOut) => JobState::TimedOut,
            Some(StopReason::Stopped) => JobState::Stopped,
            Some(StopReason::Shutdown) => JobState::Running,
            None if t.input_error.is_some() => JobState::EnqueueFailed,
            None if t.failed > 0 => JobState::CompletedWithFailures,
            None => JobState::Succeeded,
        }
    };

    let mut on_job_complete = HookOutcome::Skipped;
    let mut hook_error = None;
    if matches!(state, JobState::Succeeded | JobState::CompletedWithFailures) {
        let (succeeded, failed, read) = shared.ledger.totals().unwrap_or((succeeded, failed, read));
        let body = json!({
            "message": "job_complete",
            "job_id": job_id,
            "succeeded": succeeded,
            "failed": failed,
            "total": read,
        });
        shared.ledger.hook_starting();
        // In a thread of its own so that the job's timeout and a stop still apply.
        let hook_ended = Arc::new(AtomicUsize::new(0));
        let hook = {
            let (executor, job_id) = (executor.clone(), job_id.clone());
            let ended = Ended::new(&hook_ended, &stop);
            thread::Builder::new()
                .name("wasmbatch-on-job-complete".into())
                .spawn(move || {
                    let _ended = ended;
                    executor.on_job_complete(states, &job_id, Bytes::from(body.to_string()))
                })
                .expect("spawn the on-job-complete thread")
        };
        watch.until(|| hook_ended.load(Ordering::Acquire) == 1, || {});
        let completion =
            hook.join().unwrap_or_else(|p| Completion::Failed(format!("panicked: {}", panic_message(&*p))));
        (on_job_complete, hook_error) = match completion {
            Completion::Succeeded => (HookOutcome::Succeeded, None),
            Completion::NotFound => (HookOutcome::NotFound, None),
            Completion::Failed(e) => (HookOutcome::Failed, Some(format!("on-job-complete failed: {e}"))),
        };
        state = match stop.reason() {
            None => state,
            Some(StopReason::TimedOut) => JobState::TimedOut,
            Some(StopReason::Stopped) => JobState::Stopped,
            // Interrupted by a shutdown: the hook runs again on the next start.
            Some(StopReason::Shutdown) => {
                on_job_complete = HookOutcome::Skipped;
                hook_error = None;
                JobState::Running
            }
        };
    }

    // Every thread that held `shared` has been joined: close the dead-letter file,
    // removing it when nothing was written.
    let shared = Arc::into_inner(shared).expect("every job thread has ended");
    let t = shared.tally.into_inner().unwrap_or_else(|e| e.into_inner());
    let dead_letter_file = shared.ledger.location();
    let mut faults = t.faults;
    if let Err(e) = shared.ledger.finish() {
        faults.push(format!("cannot close the job's ledger: {e}"));
        state = JobState::WorkerError;
    }
    let error = (!faults.is_empty()).then(|| faults.join("; ")).or_else(|| t.input_error.clone()).or(hook_error);
    let dead_lettered = t.failed + t.unhandled;
    JobStatus {
        job_id,
        api_name,
        kind: "BatchAPI",
        status: state,
        workers,
        config,
        timeout: timeout.map(|d| d.as_secs()),
        start_time: rfc3339(start_time),
        end_time: rfc3339(SystemTime::now()),
        total_batch_count: t.read,
        total_item_count: t.items,
        items: Some(super::status::ItemCounts {
            succeeded: t.done_items.saturating_sub(t.dead_items),
            dead_lettered: t.dead_items,
        }),
        metrics: BatchCounts {
            succeeded: t.succeeded,
            failed: t.failed,
            average_time_per_batch: (t.succeeded > 0).then(|| t.success_time.as_secs_f64() / t.succeeded as f64),
        },
        unhandled_batch_count: t.unhandled,
        dead_lettered_batch_count: dead_lettered,
        pending_batch_count: t.deferred,
        resume_with: None,
        mount: None,
        dead_letter_file,
        retries: t.retries,
        executor: executor.name(),
        on_job_complete,
        error,
    }
}

/// Watches a running job: the timeout, a stop, the progress display.
struct Watch<'a, E: Executor> {
    started: Instant,
    timeout: Option<Duration>,
    stop: &'a StopFlag,
    executor: &'a E,
}

impl<E: Executor> Watch<'_, E> {
    /// Until `done()`: turns the passing of the timeout into a stop, cancels the
    /// executor once on a stop, and calls `tick` every 20 ms.
    fn until(&self, done: impl Fn() -> bool, mut tick: impl FnMut()) {
        let mut cancelled = false;
        while !done() {
            if let Some(limit) = self.timeout
                && self.started.elapsed() >= limit
            {
                self.stop.set(StopReason::TimedOut);
            }
            if self.stop.is_set() && !cancelled {
                self.executor.cancel();
                cancelled = true;
            }
            tick();
            // Woken early by a stop or by the end of what is watched ([`Ended`]);
            // otherwise the next look at the clock.
            self.stop.sleep_unless(Duration::from_millis(20), &done);
        }
    }
}

/// Held by a watched thread: when it ends (returns or panics) the thread is counted
/// and the watch woken, so that a job ends as soon as its last thread does.
struct Ended {
    count: Arc<AtomicUsize>,
    stop: StopFlag,
}

impl Ended {
    fn new(count: &Arc<AtomicUsize>, stop: &StopFlag) -> Ended {
        Ended { count: count.clone(), stop: stop.clone() }
    }
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.count.fetch_add(1, Ordering::Release);
        self.stop.wake();
    }
}

/// What a worker needs to know of its job.
struct JobRef {
    job_id: String,
    api_name: String,
    max_attempts: u32,
    budget: Option<Arc<Budget>>,
}

/// Dead-letters `first` and whatever else is queued (up to a group), unhandled
/// because the job is stopping: one write and one flush for the group.
fn unhandled(first: Batch, rx: &feed::Taker, reason: StopReason, shared: &Shared) {
    let mut group = vec![first];
    while group.len() < 256 {
        match rx.try_recv() {
            Some(batch) => group.push(batch),
            None => break,
        }
    }
    if reason == StopReason::Shutdown {
        shared.tally().deferred += group.len() as u64;
        return;
    }
    let error = AttemptError { kind: AttemptKind::Interrupted(reason), message: reason.message().into() };
    let records: Vec<Record<'_>> = group
        .iter()
        .map(|b| Record { index: b.index, attempts: 0, error: &error, body: &b.body, items: Some(b.items as u64) })
        .collect();
    let items = group.iter().map(|b| b.items as u64).sum();
    shared.dead_letter(&records, items, items, true);
}

/// A worker's batches that succeeded and are not recorded yet. Fast batches are
/// written to the ledger in groups — one write for up to [`Succeeded::GROUP`] batches,
/// at the latest [`Succeeded::AGE`] after the first of them — so that a journal write
/// does not dominate a batch of a few microseconds; a batch that took
/// [`Succeeded::SLOW`] or more is written at once (the write is then a few percent of
/// its time). They are counted only once written: a crash before that runs them again,
/// never loses them.
#[derive(Default)]
struct Succeeded {
    batches: Vec<(u64, Duration)>,
    /// The results of those that emitted some.
    results: Vec<(u64, Vec<u8>)>,
    items: u64,
    time: Duration,
    oldest: Option<Instant>,
}

impl Succeeded {
    const GROUP: usize = 64;
    const AGE: Duration = Duration::from_millis(10);
    const SLOW: Duration = Duration::from_millis(1);

    /// When the oldest waiting success must be recorded, if any waits.
    fn deadline(&self) -> Option<Instant> {
        self.oldest.map(|oldest| oldest + Self::AGE)
    }

    fn push(&mut self, batch: &Batch, done: Done, shared: &Shared, job: &JobRef) {
        let elapsed = done.elapsed;
        self.batches.push((batch.index, elapsed));
        if !done.results.is_empty() {
            self.results.push((batch.index, done.results));
        }
        self.items += batch.items as u64;
        self.time += elapsed;
        let oldest = *self.oldest.get_or_insert_with(Instant::now);
        if elapsed >= Self::SLOW || self.batches.len() >= Self::GROUP || oldest.elapsed() >= Self::AGE {
            self.flush(shared, job);
        }
    }

    fn flush(&mut self, shared: &Shared, job: &JobRef) {
        if self.batches.is_empty() {
            return;
        }
        let results: Vec<(u64, &[u8])> = self.results.iter().map(|(i, r)| (*i, r.as_slice())).collect();
        let recorded = shared
            .record(|| shared.ledger.results(&results))
            .and_then(|()| shared.record(|| shared.ledger.succeeded(&self.batches, Some(self.items))));
        if let Err(e) = recorded {
            let message = format!("cannot record {} succeeded batches: {e}", self.batches.len());
            tracing::error!(api_name = job.api_name, job_id = job.job_id, "{message}");
            shared.tally().faults.push(message);
        } else {
            let mut t = shared.tally();
            let n = self.batches.len() as u64;
            t.succeeded += n;
            t.success_time += self.time;
            t.done += n;
            t.done_items += self.items;
        }
        *self = Succeeded::default();
    }
}

/// A batch that succeeded: its time and its results (JSON Lines).
struct Done {
    elapsed: Duration,
    results: Vec<u8>,
}

/// One batch through its attempts. A success is returned (with its time and results)
/// for the worker to record; a failure is dead-lettered here.
///
/// A handler may fail single items: the others count as done (their results kept),
/// and the failed ones are tried again as a smaller batch, under the same identifier,
/// until they succeed or the attempts run out; then only they are dead-lettered, with
/// their own messages.
fn work<E: Executor>(
    executor: &E,
    state: &mut E::Worker,
    job: &JobRef,
    batch: &Batch,
    shared: &Shared,
    stop: &StopFlag,
    metrics: &Metrics,
) -> Option<Done> {
    let (job_id, api_name, max_attempts) = (job.job_id.as_str(), job.api_name.as_str(), job.max_attempts);
    let mut body = Bytes::copy_from_slice(&batch.body);
    // The original index of each item of `body` (it shrinks when items fail).
    let mut indexes: Vec<usize> = Vec::new();
    let mut results = Vec::new();
    let mut attempts = 0;
    let mut time = Duration::ZERO;
    let interrupted = |reason: Option<StopReason>| {
        let reason = reason.unwrap_or(StopReason::Stopped);
        AttemptError { kind: AttemptKind::Interrupted(reason), message: reason.message().into() }
    };
    let outcome = loop {
        if stop.is_set() {
            break Err(interrupted(stop.reason()));
        }
        // A place in the shared budget for the attempt (not for the pause after it).
        let place = match &job.budget {
            None => None,
            Some(budget) => match budget.acquire(stop) {
                Some(place) => Some(place),
                None => break Err(interrupted(stop.reason())),
            },
        };
        attempts += 1;
        let started = Instant::now();
        // The source's item offsets fit the whole batch only, not a retry of its failed items.
        let items = if indexes.is_empty() { batch.spans.as_ref() } else { None };
        let result = executor.run(state, job_id, Attempt { index: batch.index, number: attempts, body: &body, items });
        time += started.elapsed();
        drop(place);
        let error = match result {
            Ok(output) => {
                results.extend_from_slice(&output.results);
                if output.item_errors.is_empty() {
                    break Ok(time);
                }
                if indexes.is_empty() {
                    indexes = (0..batch.items).collect();
                }
                match failed_items(&body, &output.item_errors, &indexes) {
                    Some((sub, original, error)) if !original.is_empty() => {
                        body = sub;
                        indexes = original;
                        error
                    }
                    // Items named that the batch does not have: nothing to retry.
                    _ => break Ok(time),
                }
            }
            Err(e) => e,
        };
        match error {
            e if e.interrupted() || stop.is_set() => break Err(interrupted(stop.reason())),
            e if e.kind.retryable() && attempts < max_attempts => {
                metrics.attempt_failed(&e.kind.to_string());
                tracing::warn!(api_name, job_id, batch = batch.index, attempt = attempts, kind = %e.kind, error = %e.message, "batch failed; retrying");
                shared.tally().retries += 1;
                // A short, growing pause (a restarting server gets a moment); a stop
                // ends it.
                stop.sleep(Duration::from_millis(20u64 << attempts.min(5)));
            }
            e => {
                metrics.attempt_failed(&e.kind.to_string());
                break Err(e);
            }
        }
    };
    match outcome {
        Ok(elapsed) => {
            metrics.batch_succeeded(job_id, elapsed);
            return Some(Done { elapsed, results });
        }
        Err(error) if error.kind == AttemptKind::Interrupted(StopReason::Shutdown) => {
            shared.tally().deferred += 1;
        }
        Err(error) => {
            let unhandled = error.interrupted();
            let attempts = if unhandled { attempts.saturating_sub(1) } else { attempts };
            // Items that failed alone are dead-lettered alone; an interrupted batch
            // whole, as read.
            let dead = if unhandled { &batch.body[..] } else { &body[..] };
            if !results.is_empty()
                && let Err(e) = shared.record(|| shared.ledger.results(&[(batch.index, &results)]))
            {
                shared.tally().faults.push(format!("cannot record the results of batch {}: {e}", batch.index));
            }
            let record =
                Record { index: batch.index, attempts, error: &error, body: dead, items: Some(batch.items as u64) };
            // Logged once the record is on disk.
            // Only the failed items are dead-lettered when items failed alone.
            let dead_items = if unhandled || indexes.is_empty() { batch.items } else { indexes.len() };
            if shared.dead_letter(&[record], batch.items as u64, dead_items as u64, unhandled) && !unhandled {
                metrics.batch_failed(job_id);
                tracing::error!(api_name, job_id, batch = batch.index, attempts, kind = %error.kind, error = %error.message, "batch failed for good; dead-lettered");
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
