//! The operator's side of the broker: publishes jobs' batches, records the outcomes
//! the workers send back, decides when a job is complete and has on-job-complete run
//! once.
//!
//! The journal stays the one owner of job state. What each part does:
//!
//! - A job's thread reads its input (skipping batches that have an outcome, and those
//!   below the job's *published* mark, which are in the queue already) and publishes the
//!   batches in groups of [`GROUP`]; once the broker has confirmed a group, the mark
//!   moves past it in the journal. At most [`WINDOW`] batches of a job are in the queue
//!   or in flight at once. A crash between a confirm and the mark's write publishes
//!   those batches again: the duplicates are dropped when their outcomes arrive.
//! - One task (per connection) consumes the results and the dead-letter queue. It
//!   writes each group of outcomes to the journal, dropping those of batches that
//!   already have one (a batch run twice, at-least-once), and acknowledges the group
//!   only once the write is durable: an operator killed at any point loses nothing.
//! - When every batch of a job has an outcome, the job's thread publishes its
//!   on-job-complete message; a worker runs it and sends the outcome back; the journal
//!   records it before it is acknowledged.
//!
//! A lost connection is noticed by the consumers (the stream ends or fails); the
//! publishing channel is withdrawn, groups not confirmed are published again on the
//! next connection, and the consumers start again. Nothing waits without a deadline
//! or a stop: every wait below checks the stop flag at least every 50 ms.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{BrokerUrl, DEAD, Headers, RESULTS, header};
use crate::driver::{Dispatcher, Ended, JobFacts, Reopen};
use crate::job::dead_letter::Record;
use crate::job::executor::{AttemptError, AttemptKind, Completion};
use crate::job::ledger::Ledger;
use crate::job::source::{Batch, BatchSource};
use crate::job::status::{HookOutcome, JobState};
use crate::job::stop::{StopFlag, StopReason};
use crate::journal::{Hook, Journal};
use crate::metrics::Metrics;

mod record;

/// Batches published and confirmed together.
pub(crate) const GROUP: usize = 256;
/// Batches of one job in the queue or in flight at most.
pub(crate) const WINDOW: u64 = 4096;
/// Outcomes the operator takes from the broker before acknowledging any.
const PREFETCH: u16 = 2048;

/// What the dispatcher knows of an API.
#[derive(Clone)]
pub(crate) struct ApiInfo {
    /// The delivery limit of its queue: the API's `max_attempts`.
    pub max_attempts: u32,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
}

/// The operator's connection to the broker and the jobs it dispatches.
pub(crate) struct Dispatch {
    url: BrokerUrl,
    name: String,
    journal: Journal,
    /// The APIs, as the last reload left them.
    apis: std::sync::RwLock<HashMap<String, ApiInfo>>,
    tracks: Mutex<HashMap<String, Arc<Track>>>,
    channel: watch::Sender<Option<Channel>>,
    open: watch::Sender<bool>,
    stop: StopFlag,
    runtime: tokio::runtime::Handle,
}

/// A job being dispatched: which of its batches have an outcome.
struct Track {
    api_name: String,
    state: Mutex<TrackState>,
    changed: Condvar,
}

#[derive(Default)]
struct TrackState {
    ended: Vec<u64>,
    ended_count: u64,
    hook: Option<Completion>,
    /// Stopped or timed out: outcomes arriving now are dropped.
    closed: bool,
}

impl TrackState {
    fn has_ended(&self, index: u64) -> bool {
        let i = index as usize;
        self.ended.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn set_ended(&mut self, index: u64) {
        let i = index as usize;
        if self.ended.len() <= i / 64 {
            self.ended.resize(i / 64 + 1, 0);
        }
        if self.ended[i / 64] & (1 << (i % 64)) == 0 {
            self.ended[i / 64] |= 1 << (i % 64);
            self.ended_count += 1;
        }
    }
}

impl Track {
    fn lock(&self) -> MutexGuard<'_, TrackState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to 50 ms for a change.
    fn wait<'a>(&self, guard: MutexGuard<'a, TrackState>) -> MutexGuard<'a, TrackState> {
        self.changed.wait_timeout(guard, Duration::from_millis(50)).unwrap_or_else(|e| e.into_inner()).0
    }
}

/// A job as the broker's dispatcher drives it.
struct BrokerJob<'a> {
    /// The job's ID.
    pub job_id: &'a str,
    /// Its API.
    pub api_name: &'a str,
    /// Its spec, sent with every message (the guests' `/cortex/spec/job.json`).
    pub spec: &'a Value,
    /// Attempts per batch.
    pub max_attempts: u32,
    /// What remains of its time limit.
    pub timeout: Option<Duration>,
}

/// A message the operator publishes to an API's queue.
enum Outgoing<'a> {
    /// A batch: its index, items and bytes.
    Batch(u64, usize, &'a [u8]),
    /// A job's on-job-complete call: its body.
    Hook(&'a [u8]),
}

/// `group` as messages.
fn batches(group: &[Batch]) -> Vec<Outgoing<'_>> {
    group.iter().map(|b| Outgoing::Batch(b.index, b.items, &b.body)).collect()
}

/// One message taken from a queue, as the journal writer needs it.
struct Incoming {
    headers: Option<FieldTable>,
    data: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq)]
enum From {
    Results,
    Dead,
}

impl Dispatch {
    /// Connects once (a broker that refuses the credentials, or whose queues conflict
    /// with the configuration, is an error now; one that is unreachable is retried in
    /// the background) and starts the connection's keeper. Outcomes are consumed
    /// only after [`Dispatch::open`], once every unfinished job is tracked.
    pub(crate) fn start(
        url: BrokerUrl,
        journal: Journal,
        apis: HashMap<String, ApiInfo>,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Arc<Dispatch>> {
        let name = super::process_name("operator");
        let first = runtime.block_on(async {
            match tokio::time::timeout(Duration::from_secs(15), super::connect(&url, &name)).await {
                Ok(Ok(connection)) => {
                    let channel = connection.create_channel().await.map_err(|e| e.to_string())?;
                    super::declare_common(&channel).await.map_err(|e| e.to_string())?;
                    for (api, info) in &apis {
                        super::declare_batches(&channel, api, info.max_attempts).await?;
                    }
                    let _ = channel.close(200, "declared".into()).await;
                    Ok::<_, String>(Some(connection))
                }
                Ok(Err(super::ConnectError::Fatal(e))) => Err(e),
                Ok(Err(super::ConnectError::Transient(e))) => {
                    tracing::warn!(broker = %url, "{e}; retrying in the background (jobs are accepted meanwhile)");
                    Ok(None)
                }
                Err(_) => {
                    tracing::warn!(broker = %url, "no answer from the broker within 15 s; retrying in the background");
                    Ok(None)
                }
            }
        });
        let first = first.map_err(anyhow::Error::msg)?;
        let dispatch = Arc::new(Dispatch {
            url,
            name,
            journal,
            apis: std::sync::RwLock::new(apis),
            tracks: Mutex::new(HashMap::new()),
            channel: watch::channel(None).0,
            open: watch::channel(false).0,
            stop: StopFlag::default(),
            runtime: runtime.clone(),
        });
        runtime.spawn(dispatch.clone().keep(first));
        Ok(dispatch)
    }

    /// Replaces the APIs (a reload): the queues of new ones are declared first, on the
    /// connection when there is one (else at the next connection, before any
    /// publishing); an error leaves the APIs as they were.
    pub(crate) fn set_apis(&self, apis: HashMap<String, ApiInfo>) -> Result<(), String> {
        let known = self.apis.read().unwrap_or_else(|e| e.into_inner()).clone();
        let channel = self.channel.borrow().clone();
        if let Some(channel) = channel {
            for (api, info) in apis.iter().filter(|(name, _)| !known.contains_key(*name)) {
                let declared = self.runtime.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(15),
                        super::declare_batches(&channel, api, info.max_attempts),
                    )
                    .await
                    .unwrap_or_else(|_| Err("no answer from the broker within 15 s".into()))
                });
                declared.map_err(|e| format!("api {api}: cannot declare its queue: {e}"))?;
            }
        }
        *self.apis.write().unwrap_or_else(|e| e.into_inner()) = apis;
        Ok(())
    }

    /// Starts consuming outcomes.
    pub(crate) fn open(&self) {
        self.open.send_replace(true);
    }

    /// Stops the connection's keeper (the operator is shutting down).
    pub(crate) fn shutdown(&self) {
        self.stop.set(StopReason::Shutdown);
    }

    /// Starts tracking a job: the outcomes recorded so far are read from the journal.
    pub(crate) fn track(&self, job_id: &str, api_name: &str) -> std::io::Result<()> {
        let ended = self.journal.ended(job_id)?;
        let ended_count = ended.iter().map(|w| u64::from(w.count_ones())).sum();
        let hook = match self.journal.job(job_id)?.map(|r| r.hook) {
            Some(Hook::Done(outcome)) => Some(match outcome {
                HookOutcome::NotFound => Completion::NotFound,
                HookOutcome::Failed => Completion::Failed("on-job-complete failed".into()),
                _ => Completion::Succeeded,
            }),
            _ => None,
        };
        let track = Track {
            api_name: api_name.to_string(),
            state: Mutex::new(TrackState { ended, ended_count, hook, closed: false }),
            changed: Condvar::new(),
        };
        self.tracks.lock().unwrap_or_else(|e| e.into_inner()).insert(job_id.to_string(), Arc::new(track));
        Ok(())
    }

    fn get_track(&self, job_id: &str) -> Option<Arc<Track>> {
        self.tracks.lock().unwrap_or_else(|e| e.into_inner()).get(job_id).cloned()
    }

    /// Runs a job through the broker to its end (or to a shutdown). `source` gives its
    /// batches without those that have an outcome; `reopen` reads the input again
    /// (to dead-letter what is left after a stop).
    fn drive(
        &self,
        job: BrokerJob<'_>,
        mut source: Box<dyn BatchSource>,
        reopen: &Reopen<'_>,
        stop: &StopFlag,
    ) -> anyhow::Result<Ended> {
        let track = match self.get_track(job.job_id) {
            Some(track) => track,
            None => {
                self.track(job.job_id, job.api_name)?;
                self.get_track(job.job_id).expect("just tracked")
            }
        };
        let started = Instant::now();
        let check_timeout = || {
            if job.timeout.is_some_and(|t| started.elapsed() >= t) {
                stop.set(StopReason::TimedOut);
            }
        };
        let spec = job.spec.to_string();
        let queue = super::batches_queue(job.api_name);
        let mut mark = self.journal.published(job.job_id)?;
        let mut input_error = None;
        let mut group: Vec<Batch> = Vec::with_capacity(GROUP);

        // 1. Publish.
        loop {
            check_timeout();
            if stop.is_set() {
                break;
            }
            let batch = match source.next_batch() {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(
                        job_id = job.job_id,
                        "reading the job's input failed: {e}; the batches read so far are still handled"
                    );
                    input_error = Some(e.to_string());
                    break;
                }
            };
            if batch.index < mark {
                continue;
            }
            // The window: wait while too many of the job's batches are out.
            let mut state = track.lock();
            while batch.index.saturating_sub(state.ended_count) >= WINDOW && !stop.is_set() {
                state = track.wait(state);
                check_timeout();
            }
            drop(state);
            group.push(batch);
            if group.len() >= GROUP {
                if !self.publish(&queue, &job, &spec, &batches(&group), stop) {
                    break;
                }
                mark = group.last().expect("a group").index + 1;
                self.journal.set_published(job.job_id, mark)?;
                group.clear();
            }
        }
        if !group.is_empty() && !stop.is_set() && self.publish(&queue, &job, &spec, &batches(&group), stop) {
            mark = group.last().expect("a group").index + 1;
            self.journal.set_published(job.job_id, mark)?;
        }
        let read_all = !stop.is_set();
        if read_all && input_error.is_some() {
            // Only the batches read before the error exist.
            self.journal.set_total(job.job_id, mark)?;
        }

        // 2. Wait for every batch's outcome.
        let total = if read_all { self.journal.job(job.job_id)?.and_then(|r| r.total_batch_count) } else { None };
        if let Some(total) = total {
            let mut state = track.lock();
            while state.ended_count < total && !stop.is_set() {
                state = track.wait(state);
                drop(state);
                check_timeout();
                state = track.lock();
            }
        }

        // 3. A stop: what has no outcome yet is dead-lettered, unhandled.
        if let Some(reason) = stop.reason() {
            if reason == StopReason::Shutdown {
                return Ok(Ended::Interrupted { status: None });
            }
            let unhandled = self.close(&track, job.job_id, reason, reopen)?;
            self.notify_workers(job.job_id, reason);
            let state = if reason == StopReason::TimedOut { JobState::TimedOut } else { JobState::Stopped };
            tracing::info!(job_id = job.job_id, unhandled, reason = reason.as_str(), "job ended early");
            return Ok(Ended::Done { state, hook: HookOutcome::Skipped, error: None, status: None });
        }
        if let Some(error) = input_error {
            return Ok(Ended::Done {
                state: JobState::EnqueueFailed,
                hook: HookOutcome::Skipped,
                error: Some(error),
                status: None,
            });
        }

        // 4. on-job-complete, through a worker.
        let row = self.journal.job(job.job_id)?.ok_or_else(|| anyhow::anyhow!("job {} is gone", job.job_id))?;
        if row.hook == Hook::Pending {
            let counts = self.journal.counts(job.job_id)?;
            let body = json!({
                "message": "job_complete",
                "job_id": job.job_id,
                "succeeded": counts.succeeded,
                "failed": counts.failed + counts.unhandled,
                "total": counts.succeeded + counts.failed + counts.unhandled,
            });
            let hook = body.to_string();
            if !self.publish(&queue, &job, &spec, &[Outgoing::Hook(hook.as_bytes())], stop) {
                return Ok(match stop.reason() {
                    Some(StopReason::Shutdown) | None => Ended::Interrupted { status: None },
                    Some(reason) => self.ended_in_hook(reason),
                });
            }
            self.journal.set_hook(job.job_id, Hook::Running)?;
        }
        let mut state = track.lock();
        while state.hook.is_none() && !stop.is_set() {
            state = track.wait(state);
            drop(state);
            check_timeout();
            state = track.lock();
        }
        let completion = state.hook.clone();
        drop(state);
        let Some(completion) = completion else {
            return Ok(match stop.reason() {
                Some(StopReason::Shutdown) | None => Ended::Interrupted { status: None },
                Some(reason) => self.ended_in_hook(reason),
            });
        };
        let (hook, error) = match completion {
            Completion::Succeeded => (HookOutcome::Succeeded, None),
            Completion::NotFound => (HookOutcome::NotFound, None),
            Completion::Failed(e) => (HookOutcome::Failed, Some(format!("on-job-complete failed: {e}"))),
        };
        let error = error.or(row.error);
        self.tracks.lock().unwrap_or_else(|e| e.into_inner()).remove(job.job_id);
        Ok(Ended::Done { state: JobState::Succeeded, hook, error, status: None })
    }

    fn ended_in_hook(&self, reason: StopReason) -> Ended {
        let state = if reason == StopReason::TimedOut { JobState::TimedOut } else { JobState::Stopped };
        Ended::Done { state, hook: HookOutcome::Skipped, error: None, status: None }
    }

    /// Closes a stopped job's track and dead-letters its batches without an outcome;
    /// returns how many.
    fn close(&self, track: &Track, job_id: &str, reason: StopReason, reopen: &Reopen<'_>) -> anyhow::Result<u64> {
        // Closed first: outcomes arriving from now on are dropped, so nothing is
        // recorded twice.
        let mut state = track.lock();
        state.closed = true;
        let mut source = reopen()?;
        let error = AttemptError {
            kind: AttemptKind::Interrupted(reason),
            message: match reason {
                StopReason::TimedOut => "the job's timeout passed before this batch was handled".into(),
                _ => "the job was stopped before this batch was handled".into(),
            },
        };
        let ledger = self.journal.ledger(job_id);
        let mut count = 0;
        let mut group: Vec<Batch> = Vec::new();
        loop {
            let next = match source.next_batch() {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(job_id, "reading the job's input again failed: {e}");
                    None
                }
            };
            let end = next.is_none();
            if let Some(batch) = next
                && !state.has_ended(batch.index)
            {
                group.push(batch);
            }
            if group.len() >= GROUP || (end && !group.is_empty()) {
                let records: Vec<Record<'_>> = group
                    .iter()
                    .map(|b| Record {
                        index: b.index,
                        attempts: 0,
                        error: &error,
                        body: &b.body,
                        items: Some(b.items as u64),
                    })
                    .collect();
                ledger.dead_lettered(&records)?;
                for b in &group {
                    state.set_ended(b.index);
                }
                count += group.len() as u64;
                group.clear();
            }
            if end {
                break;
            }
        }
        drop(state);
        self.tracks.lock().unwrap_or_else(|e| e.into_inner()).remove(job_id);
        Ok(count)
    }

    /// Tells the workers that a job ended early (best effort: its batches still queued
    /// are then skipped rather than run for nothing).
    fn notify_workers(&self, job_id: &str, reason: StopReason) {
        let Some(channel) = self.channel.borrow().clone() else { return };
        let body = json!({"job_id": job_id, "reason": reason.as_str()}).to_string();
        let publish = async move {
            let confirm = channel
                .basic_publish(
                    super::CONTROL.into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default(),
                )
                .await?;
            confirm.await.map(drop)
        };
        let sent = self.runtime.block_on(async { tokio::time::timeout(Duration::from_secs(5), publish).await });
        if !matches!(sent, Ok(Ok(()))) {
            tracing::warn!(job_id, "could not tell the workers that the job ended; they run what is queued");
        }
    }

    /// Publishes `group` until the broker confirms all of it: on a lost connection,
    /// again on the next. `false` when stopped first.
    fn publish(&self, queue: &str, job: &BrokerJob<'_>, spec: &str, group: &[Outgoing<'_>], stop: &StopFlag) -> bool {
        let mut channels = self.channel.subscribe();
        self.runtime.block_on(async {
            loop {
                if stop.is_set() {
                    return false;
                }
                let channel = channels.borrow_and_update().clone();
                let Some(channel) = channel else {
                    tokio::select! {
                        _ = channels.changed() => {}
                        () = stop.stopped() => return false,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    continue;
                };
                let attempt = async {
                    let mut confirms = Vec::with_capacity(group.len());
                    for message in group {
                        let headers = Headers::default()
                            .str(header::JOB, job.job_id)
                            .int(header::MAX_ATTEMPTS, i64::from(job.max_attempts))
                            .str(header::SPEC, spec);
                        let (headers, body) = match message {
                            Outgoing::Batch(index, items, body) => {
                                let headers =
                                    headers.str(header::KIND, header::BATCH).int(header::INDEX, *index as i64);
                                (headers.int(header::ITEMS, *items as i64), *body)
                            }
                            Outgoing::Hook(body) => (headers.str(header::KIND, header::HOOK), *body),
                        };
                        let properties = BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_content_type("application/json".into())
                            .with_headers(headers.table());
                        let confirm = channel
                            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, properties)
                            .await?;
                        confirms.push(confirm);
                    }
                    let mut nacked = 0;
                    for confirm in confirms {
                        if !confirm.await?.is_ack() {
                            nacked += 1;
                        }
                    }
                    Ok::<_, lapin::Error>(nacked)
                };
                let outcome = tokio::select! {
                    outcome = tokio::time::timeout(Duration::from_secs(30), attempt) => outcome,
                    () = stop.stopped() => return false,
                };
                match outcome {
                    Ok(Ok(0)) => return true,
                    Ok(Ok(nacked)) => {
                        tracing::warn!(job_id = job.job_id, nacked, "the broker refused batches; publishing them again")
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(job_id = job.job_id, "publishing failed: {e}; again on the next connection")
                    }
                    Err(_) => {
                        tracing::warn!(job_id = job.job_id, "no confirm from the broker within 30 s; publishing again")
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = stop.stopped() => return false,
                }
            }
        })
    }

    /// Keeps a connection: connects (retrying, with backoff), declares, publishes
    /// through it and consumes outcomes until it fails; then again.
    async fn keep(self: Arc<Self>, mut first: Option<Connection>) {
        let mut open = self.open.subscribe();
        tokio::select! {
            _ = open.wait_for(|o| *o) => {}
            () = self.stop.stopped() => return,
        }
        loop {
            let connection = match first.take() {
                Some(c) if c.status().connected() => c,
                _ => match super::connect_retrying(&self.url, &self.name, &self.stop, true).await {
                    Ok(Some(c)) => c,
                    _ => return,
                },
            };
            let lost = self.session(&connection).await;
            self.channel.send_replace(None);
            let _ = tokio::time::timeout(Duration::from_secs(2), connection.close(200, "reconnecting".into())).await;
            match lost {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(broker = %self.url, "lost the broker connection: {e}; reconnecting");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        () = self.stop.stopped() => return,
                    }
                }
            }
        }
    }

    /// One connection's life: `Ok` when stopped, the reason when it failed.
    async fn session(&self, connection: &Connection) -> Result<(), String> {
        let text = |e: lapin::Error| e.to_string();
        let publishing = connection.create_channel().await.map_err(text)?;
        super::declare_common(&publishing).await.map_err(text)?;
        let apis = self.apis.read().unwrap_or_else(|e| e.into_inner()).clone();
        for (api, info) in &apis {
            super::declare_batches(&publishing, api, info.max_attempts).await?;
        }
        publishing.confirm_select(ConfirmSelectOptions::default()).await.map_err(text)?;
        let consume = |queue: &'static str| async move {
            let channel = connection.create_channel().await?;
            channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
            let consumer = channel
                .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
                .await?;
            Ok::<_, lapin::Error>(consumer)
        };
        let mut results = consume(RESULTS).await.map_err(text)?;
        let mut dead = consume(DEAD).await.map_err(text)?;
        self.channel.send_replace(Some(publishing));
        tracing::info!(broker = %self.url, "connected to the broker; consuming outcomes");
        loop {
            let (from, consumer, first) = tokio::select! {
                d = results.next() => (From::Results, &mut results, d),
                d = dead.next() => (From::Dead, &mut dead, d),
                () = self.stop.stopped() => return Ok(()),
            };
            let first = match first {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the broker ended the consumer".into()),
            };
            // Take what else is there already, up to a group, for one write.
            let mut deliveries = vec![first];
            while deliveries.len() < usize::from(PREFETCH) {
                match tokio::time::timeout(Duration::ZERO, consumer.next()).await {
                    Ok(Some(Ok(delivery))) => deliveries.push(delivery),
                    _ => break,
                }
            }
            let last = deliveries.pop().expect("one at least");
            let mut incoming: Vec<Incoming> = deliveries
                .into_iter()
                .map(|d| Incoming { headers: d.properties.headers().clone(), data: d.data })
                .collect();
            incoming.push(Incoming { headers: last.properties.headers().clone(), data: last.data.clone() });
            // The write is blocking (SQLite): this I/O thread steps aside meanwhile.
            let recorded = tokio::task::block_in_place(|| self.record(from, incoming));
            match recorded {
                Ok(()) => {
                    last.acker.ack(BasicAckOptions { multiple: true }).await.map_err(text)?;
                }
                Err(e) => {
                    tracing::error!("cannot record outcomes: {e}; they are delivered again");
                    last.acker.nack(BasicNackOptions { multiple: true, requeue: true }).await.map_err(text)?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

impl Dispatcher for Dispatch {
    fn dispatch(
        &self,
        job: &JobFacts<'_>,
        source: Box<dyn BatchSource>,
        reopen: &Reopen<'_>,
        stop: &StopFlag,
    ) -> anyhow::Result<Ended> {
        let row = job.row;
        let job = BrokerJob {
            job_id: &row.job_id,
            api_name: &row.api_name,
            spec: &row.spec,
            max_attempts: job.max_attempts,
            timeout: job.timeout,
        };
        self.drive(job, source, reopen, stop)
    }
}
