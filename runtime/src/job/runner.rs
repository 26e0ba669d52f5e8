//! The job runner: one producer reads batches from the source, `workers` threads hand
//! them to an [`Executor`] with retries, failures go to the dead-letter file, and
//! on-job-complete runs exactly once when every batch has been handled.
//!
//! Nothing is lost: every batch read ends up succeeded or in the dead-letter file
//! (failed after its attempts, or unhandled because the job timed out or was stopped —
//! after a stop the rest of the input is still read and dead-lettered, so the file
//! re-runs everything left). The counts are checked against each other at the end.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::{Value, json};

use super::executor::{AttemptError, Completion, Executor};
use super::source::{Batch, BatchSource};
use super::status::{JobStatus, Metrics as BatchCounts, Progress, ProgressView, rfc3339};
use crate::metrics::Metrics;

/// Everything about a job except its input and its executor.
#[derive(Debug, Clone)]
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
    /// Where failed and unhandled batches go.
    pub dead_letter: PathBuf,
    /// When the job started.
    pub start_time: SystemTime,
}

/// Why a job ends early; shared between the runner, its workers and signal handlers.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicU8>);

const RUNNING: u8 = 0;
const TIMED_OUT: u8 = 1;
const STOPPED: u8 = 2;
const INPUT_FAILED: u8 = 3;

impl StopFlag {
    /// Asks the job to stop (Ctrl-C): dispatching stops, batches in flight are
    /// interrupted. The first reason given wins.
    pub fn stop(&self) {
        let _ = self.0.compare_exchange(RUNNING, STOPPED, Ordering::SeqCst, Ordering::SeqCst);
    }

    fn set(&self, reason: u8) {
        let _ = self.0.compare_exchange(RUNNING, reason, Ordering::SeqCst, Ordering::SeqCst);
    }

    fn get(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }

    /// Whether a stop was requested.
    pub fn is_set(&self) -> bool {
        self.get() != RUNNING
    }
}

#[derive(Default)]
struct Tally {
    read: u64,
    items: u64,
    done: u64,
    done_items: u64,
    succeeded: u64,
    failed: u64,
    unhandled: u64,
    retries: u64,
    success_time: Duration,
    source_error: Option<String>,
    dead_letter_error: Option<String>,
}

struct Shared {
    tally: Mutex<Tally>,
    dead_letter: Mutex<Option<BufWriter<File>>>,
    dead_letter_path: PathBuf,
}

impl Shared {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one record to the dead-letter file, created on first use.
    fn dead_letter(&self, batch: &Batch, attempts: u32, error: &AttemptError) {
        let items: std::borrow::Cow<'_, [u8]> = if batch.body.contains(&b'\n') || batch.body.contains(&b'\r') {
            // One record per line: re-encode a batch whose raw items span lines.
            match serde_json::from_slice::<Value>(&batch.body) {
                Ok(v) => serde_json::to_vec(&v).expect("a value serializes").into(),
                Err(_) => batch.body.as_slice().into(),
            }
        } else {
            batch.body.as_slice().into()
        };
        let head = json!({
            "batch_index": batch.index,
            "attempts": attempts,
            "error": { "kind": error.kind, "message": error.message },
        })
        .to_string();
        let mut record = Vec::with_capacity(head.len() + items.len() + 12);
        record.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        record.extend_from_slice(b",\"items\":");
        record.extend_from_slice(&items);
        record.extend_from_slice(b"}\n");

        let mut file = self.dead_letter.lock().unwrap_or_else(|e| e.into_inner());
        let result = (|| -> std::io::Result<()> {
            if file.is_none() {
                *file = Some(BufWriter::new(File::create(&self.dead_letter_path)?));
            }
            file.as_mut().expect("just created").write_all(&record)
        })();
        if let Err(e) = result {
            let message = format!("cannot write the dead-letter file {}: {e}", self.dead_letter_path.display());
            tracing::error!("{message}");
            self.tally().dead_letter_error.get_or_insert(message);
        }
    }
}

fn stop_error(reason: u8) -> AttemptError {
    let (kind, message) = match reason {
        TIMED_OUT => ("timed_out", "the job's timeout passed before this batch was handled"),
        INPUT_FAILED => ("enqueue_failed", "the job's input failed before this batch was handled"),
        _ => ("stopped", "the job was stopped before this batch was handled"),
    };
    AttemptError { kind: kind.into(), message: message.into(), retryable: false, interrupted: true }
}

/// Runs a whole job and returns its status.
pub fn run<E: Executor>(
    plan: &JobPlan,
    mut source: Box<dyn BatchSource>,
    executor: Arc<E>,
    stop: StopFlag,
    progress: &mut ProgressView,
    metrics: Arc<Metrics>,
) -> JobStatus {
    let started = Instant::now();
    let total = source.total_batches();
    let shared = Arc::new(Shared {
        tally: Mutex::new(Tally::default()),
        dead_letter: Mutex::new(None),
        dead_letter_path: plan.dead_letter.clone(),
    });
    let (tx, rx) = crossbeam_channel::bounded::<Batch>(plan.workers * 2);

    let producer = {
        let (shared, stop) = (shared.clone(), stop.clone());
        thread::Builder::new()
            .name("wasmbatch-source".into())
            .spawn(move || {
                loop {
                    match source.next_batch() {
                        Ok(Some(batch)) => {
                            {
                                let mut t = shared.tally();
                                t.read += 1;
                                t.items += batch.items as u64;
                            }
                            if tx.send(batch).is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::error!("reading the job's input failed: {e}");
                            shared.tally().source_error = Some(e.to_string());
                            stop.set(INPUT_FAILED);
                            break;
                        }
                    }
                }
            })
            .expect("spawn the source thread")
    };

    let workers: Vec<_> = (0..plan.workers)
        .map(|index| {
            let (rx, shared, stop, executor) = (rx.clone(), shared.clone(), stop.clone(), executor.clone());
            let metrics = metrics.clone();
            let job = JobRef {
                job_id: plan.job_id.clone(),
                api_name: plan.api_name.clone(),
                max_attempts: plan.max_attempts,
            };
            thread::Builder::new()
                .name(format!("wasmbatch-job-{index}"))
                .spawn(move || {
                    let mut state = executor.worker(index);
                    for batch in rx.iter() {
                        work(&*executor, &mut state, &job, &batch, &shared, &stop, &metrics);
                    }
                    state
                })
                .expect("spawn a job worker")
        })
        .collect();
    drop(rx);

    let snapshot = |shared: &Shared| {
        let t = shared.tally();
        Progress { done: t.done, items: t.done_items, failed: t.failed, total }
    };
    let mut cancelled = false;
    while !workers.iter().all(|w| w.is_finished()) {
        if let Some(limit) = plan.timeout
            && started.elapsed() >= limit
        {
            stop.set(TIMED_OUT);
        }
        if stop.is_set() && !cancelled {
            executor.cancel();
            cancelled = true;
        }
        progress.update(snapshot(&shared));
        thread::sleep(Duration::from_millis(20));
    }
    let states: Vec<E::Worker> = workers.into_iter().filter_map(|w| w.join().ok()).collect();
    let _ = producer.join();
    progress.finish(snapshot(&shared));
    if let Some(mut file) = shared.dead_letter.lock().unwrap_or_else(|e| e.into_inner()).take()
        && let Err(e) = file.flush()
    {
        shared.tally().dead_letter_error.get_or_insert(format!("cannot write the dead-letter file: {e}"));
    }

    let t = shared.tally();
    let status = match stop.get() {
        TIMED_OUT => "timed_out",
        STOPPED => "stopped",
        INPUT_FAILED => "enqueue_failed",
        _ if t.failed > 0 => "completed_with_failures",
        _ => "succeeded",
    };
    let (on_job_complete, mut error) = if matches!(status, "succeeded" | "completed_with_failures") {
        let body = json!({
            "message": "job_complete",
            "job_id": plan.job_id,
            "succeeded": t.succeeded,
            "failed": t.failed,
            "total": t.read,
        });
        match executor.on_job_complete(states, &plan.job_id, Bytes::from(body.to_string())) {
            Completion::Succeeded => ("succeeded", None),
            Completion::NotFound => ("not_found", None),
            Completion::Failed(e) => ("failed", Some(format!("on-job-complete failed: {e}"))),
        }
    } else {
        ("skipped", None)
    };
    if let Some(e) = t.source_error.clone().or(t.dead_letter_error.clone()) {
        error = Some(e);
    }
    let dead_lettered = t.failed + t.unhandled;
    JobStatus {
        job_id: plan.job_id.clone(),
        api_name: plan.api_name.clone(),
        kind: "BatchAPI",
        status,
        workers: plan.workers,
        config: plan.config.clone(),
        timeout: plan.timeout.map(|d| d.as_secs()),
        start_time: rfc3339(plan.start_time),
        end_time: rfc3339(SystemTime::now()),
        total_batch_count: t.read,
        total_item_count: t.items,
        metrics: BatchCounts {
            succeeded: t.succeeded,
            failed: t.failed,
            average_time_per_batch: (t.succeeded > 0).then(|| t.success_time.as_secs_f64() / t.succeeded as f64),
        },
        unhandled_batch_count: t.unhandled,
        dead_lettered_batch_count: dead_lettered,
        dead_letter_file: (dead_lettered > 0).then(|| plan.dead_letter.display().to_string()),
        retries: t.retries,
        executor: executor.name(),
        on_job_complete,
        error,
    }
}

/// What a worker needs to know of its job.
struct JobRef {
    job_id: String,
    api_name: String,
    max_attempts: u32,
}

/// One batch through its attempts, recorded in the tally (and the dead-letter file).
fn work<E: Executor>(
    executor: &E,
    state: &mut E::Worker,
    job: &JobRef,
    batch: &Batch,
    shared: &Shared,
    stop: &StopFlag,
    metrics: &Metrics,
) {
    let (job_id, api_name, max_attempts) = (job.job_id.as_str(), job.api_name.as_str(), job.max_attempts);
    let body = Bytes::copy_from_slice(&batch.body);
    let mut attempts = 0;
    let outcome = loop {
        if stop.is_set() {
            break Err(stop_error(stop.get()));
        }
        attempts += 1;
        let started = Instant::now();
        match executor.run(state, job_id, batch.index, &body) {
            Ok(()) => break Ok(started.elapsed()),
            Err(e) if e.interrupted || stop.is_set() => break Err(stop_error(stop.get())),
            Err(e) if e.retryable && attempts < max_attempts => {
                metrics.attempt_failed(&e.kind);
                tracing::warn!(api_name, job_id, batch = batch.index, attempt = attempts, kind = %e.kind, error = %e.message, "batch failed; retrying");
                shared.tally().retries += 1;
                // A short, growing pause: a restarting server gets a moment.
                thread::sleep(Duration::from_millis(20u64 << attempts.min(5)));
            }
            Err(e) => {
                metrics.attempt_failed(&e.kind);
                break Err(e);
            }
        }
    };
    match outcome {
        Ok(elapsed) => {
            metrics.batch_succeeded(job_id, elapsed);
            let mut t = shared.tally();
            t.succeeded += 1;
            t.success_time += elapsed;
            t.done += 1;
            t.done_items += batch.items as u64;
        }
        Err(error) => {
            let unhandled = error.interrupted;
            if !unhandled {
                metrics.batch_failed(job_id);
                tracing::error!(api_name, job_id, batch = batch.index, attempts, kind = %error.kind, error = %error.message, "batch failed for good; dead-lettered");
            }
            shared.dead_letter(batch, attempts, &error);
            let mut t = shared.tally();
            if unhandled {
                t.unhandled += 1
            } else {
                t.failed += 1
            }
            t.done += 1;
            t.done_items += batch.items as u64;
        }
    }
}
