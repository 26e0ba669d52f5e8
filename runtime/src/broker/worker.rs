//! `wasmbatch worker`: takes an API's batches from the broker and handles them, with
//! a plugin in this process or by a server of the container contract beside it (as
//! Cortex's dequeuer does).
//!
//! The prefetch (by default four times the concurrency) keeps the next batches at
//! hand, so that a worker thread does not wait for the broker's round trip between two
//! batches; what a killed worker held is delivered to another (those it had run, with
//! outcomes not yet confirmed, run twice: at most the prefetch). A batch is acknowledged only after its outcome is in the results queue (publisher
//! confirm): a worker killed at any point leaves its batches to the broker, which
//! delivers them to another worker. A failure that another attempt may cure is
//! rejected back to the queue (the broker counts the delivery, and past the limit
//! dead-letters it); a failure on the last attempt, or one no attempt can cure, is
//! reported with its error and acknowledged.
//!
//! On SIGTERM the worker stops consuming, lets the batches it holds finish (up to the
//! drain timeout; then interrupts them and hands them back) and exits 0. A lost
//! connection is made again, with backoff; batches that were running then have
//! already been handed to another worker by the broker, so their outcomes are dropped.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::oneshot;

use super::{BrokerUrl, CONTROL, Headers, RESULTS, get_int, get_str, header};
use crate::http::client::Endpoint;
use crate::job::executor::{
    Attempt, AttemptError, AttemptKind, Completion, EndpointExecutor, EndpointWorker, Executor, InProcess, failed_items,
};
use crate::job::stop::{StopFlag, StopReason};
use crate::lifecycle::WarmInstance;
use crate::metrics::Metrics;
use crate::plugin::{JobContext, JobResults, Plugin, Submitter};

/// What handles the batches.
pub(crate) enum Handler {
    /// A plugin, bound to each job's spec.
    Plugin {
        /// The plugin, loaded for the concurrency.
        plugin: Arc<Plugin>,
        /// The guests' `/mnt`.
        mount: Option<PathBuf>,
        /// Replace an instance after this many batches.
        recycle_after: Option<u64>,
        /// Chaining: where the guests' jobs go.
        submitter: Option<Arc<dyn Submitter>>,
        /// Where on-job-complete reads the job's results (the job service).
        results: Arc<dyn JobResults>,
    },
    /// Servers of the container contract.
    Endpoints {
        /// The servers.
        endpoints: Vec<Endpoint>,
        /// Limit of one request.
        batch_timeout: Duration,
    },
}

/// The worker's settings.
pub(crate) struct WorkerConfig {
    /// The broker.
    pub url: BrokerUrl,
    /// The API whose batches this worker takes.
    pub api: String,
    /// Batches handled at once.
    pub concurrency: usize,
    /// Batches held at once, running or ready (at least `concurrency`).
    pub prefetch: usize,
    /// How long a SIGTERM waits for the batches held.
    pub drain_timeout: Duration,
    /// The handler.
    pub handler: Handler,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// What a worker thread is asked to do.
struct Work {
    job_id: String,
    /// `None`: the job's on-job-complete.
    index: Option<u64>,
    attempt: u32,
    spec: Arc<[u8]>,
    body: Bytes,
    reply: oneshot::Sender<Outcome>,
}

/// How a piece of work went.
enum Outcome {
    /// Its time and its results (JSON Lines).
    Succeeded(Duration, Vec<u8>),
    Failed(AttemptError),
    /// Some items failed: them, as a batch, and their errors.
    ItemsFailed(Bytes, AttemptError, Vec<u8>),
    Hook(Completion),
}

/// Executors by job (a plugin is instantiated with its job's spec).
struct Executors {
    handler: Handler,
    endpoint: Option<Arc<EndpointExecutor>>,
    plugins: Mutex<VecDeque<(String, Arc<InProcess>)>>,
}

/// A worker thread's state for its current job.
enum State {
    None,
    Plugin(String, Arc<InProcess>, Box<WarmInstance>),
    Endpoint(EndpointWorker),
}

impl Executors {
    /// The plugin executor of `job_id` (the last few are kept).
    fn plugin(&self, job_id: &str, spec: &Arc<[u8]>) -> Result<Arc<InProcess>, String> {
        let Handler::Plugin { plugin, mount, recycle_after, submitter, results } = &self.handler else {
            unreachable!("only for plugins")
        };
        let mut plugins = self.plugins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, executor)) = plugins.iter().find(|(id, _)| id == job_id) {
            return Ok(executor.clone());
        }
        let context = JobContext {
            spec: spec.clone(),
            mount: mount.clone(),
            submitter: submitter.clone(),
            results: Some(results.clone()),
        };
        let bound = plugin.bind(context).map_err(|e| e.to_string())?;
        let executor = Arc::new(InProcess::new(Arc::new(bound), *recycle_after));
        plugins.push_back((job_id.to_string(), executor.clone()));
        while plugins.len() > 4 {
            plugins.pop_front();
        }
        Ok(executor)
    }

    /// Interrupts whatever runs (the drain timeout passed).
    fn cancel(&self) {
        if let Some(endpoint) = &self.endpoint {
            endpoint.cancel();
        }
        for (_, executor) in self.plugins.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            executor.cancel();
        }
    }

    fn run(&self, state: &mut State, index: usize, work: &Work) -> Outcome {
        let failed = |message: String| Outcome::Failed(AttemptError { kind: AttemptKind::WorkerPanic, message });
        if let Some(endpoint) = &self.endpoint {
            if !matches!(state, State::Endpoint(_)) {
                *state = State::Endpoint(endpoint.worker(index));
            }
            let State::Endpoint(worker) = state else { unreachable!() };
            return match work.index {
                Some(i) => attempt(&**endpoint, worker, i, work),
                None => {
                    let worker = endpoint.worker(index);
                    Outcome::Hook(endpoint.on_job_complete(vec![worker], &work.job_id, work.body.clone()))
                }
            };
        }
        let executor = match self.plugin(&work.job_id, &work.spec) {
            Ok(executor) => executor,
            Err(e) => return failed(format!("cannot load the plugin for job {}: {e}", work.job_id)),
        };
        let current = matches!(state, State::Plugin(job, _, _) if *job == work.job_id);
        if !current {
            // One warm instance per thread: the previous job's goes.
            *state = State::Plugin(work.job_id.clone(), executor.clone(), Box::new(executor.worker(index)));
        }
        let State::Plugin(_, executor, slot) = state else { unreachable!() };
        match work.index {
            Some(i) => attempt(&**executor, slot, i, work),
            None => {
                let State::Plugin(_, executor, slot) = std::mem::replace(state, State::None) else { unreachable!() };
                Outcome::Hook(executor.on_job_complete(vec![*slot], &work.job_id, work.body.clone()))
            }
        }
    }
}

/// One attempt at batch `index` of `work` on `executor`.
fn attempt<E: Executor>(executor: &E, worker: &mut E::Worker, index: u64, work: &Work) -> Outcome {
    let started = Instant::now();
    match executor.run(worker, &work.job_id, Attempt { index, number: work.attempt, body: &work.body, items: None }) {
        Ok(output) if output.item_errors.is_empty() => Outcome::Succeeded(started.elapsed(), output.results),
        Ok(output) => {
            let all: Vec<usize> =
                (0..serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&work.body).map_or(0, |v| v.len())).collect();
            match failed_items(&work.body, &output.item_errors, &all) {
                Some((items, original, error)) if !original.is_empty() => {
                    Outcome::ItemsFailed(items, error, output.results)
                }
                _ => Outcome::Succeeded(started.elapsed(), output.results),
            }
        }
        Err(e) => Outcome::Failed(e),
    }
}

/// Jobs the operator said ended early (the last 1024).
#[derive(Default)]
struct Stopped {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl Stopped {
    fn insert(&mut self, job_id: String) {
        if self.set.insert(job_id.clone()) {
            self.order.push_back(job_id);
            if self.order.len() > 1024
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }
}

/// Runs the worker until `shutdown` resolves (then drains) or a fatal error.
pub(crate) fn run(
    config: WorkerConfig,
    runtime: &tokio::runtime::Runtime,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let endpoint = match &config.handler {
        Handler::Endpoints { endpoints, batch_timeout } => {
            Some(Arc::new(EndpointExecutor::new(endpoints.clone(), runtime.handle().clone(), *batch_timeout)))
        }
        Handler::Plugin { .. } => None,
    };
    let executors = Arc::new(Executors { handler: config.handler, endpoint, plugins: Mutex::new(VecDeque::new()) });
    let (tx, rx) = crossbeam_channel::unbounded::<Work>();
    let threads: Vec<_> = (0..config.concurrency)
        .map(|index| {
            let (rx, executors) = (rx.clone(), executors.clone());
            std::thread::Builder::new()
                .name(format!("wasmbatch-worker-{index}"))
                .spawn(move || {
                    let mut state = State::None;
                    for work in rx {
                        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            executors.run(&mut state, index, &work)
                        }))
                        .unwrap_or_else(|_| {
                            state = State::None;
                            Outcome::Failed(AttemptError {
                                kind: AttemptKind::WorkerPanic,
                                message: "the worker panicked on this batch".into(),
                            })
                        });
                        let _ = work.reply.send(outcome);
                    }
                })
                .expect("spawn a worker thread")
        })
        .collect();
    drop(rx);

    let stop = StopFlag::default();
    {
        let stop = stop.clone();
        runtime.spawn(async move {
            shutdown.await;
            stop.set(StopReason::Shutdown);
        });
    }
    let worker = Arc::new(Worker {
        name: super::process_name("worker"),
        url: config.url,
        api: config.api,
        concurrency: config.concurrency,
        prefetch: config.prefetch,
        tx,
        executors: executors.clone(),
        stopped: Mutex::new(Stopped::default()),
        in_flight: AtomicUsize::new(0),
        metrics: config.metrics,
    });
    let result = runtime.block_on(worker.clone().keep(&stop, config.drain_timeout));
    // The threads end with the process: one may still be finishing a batch that was
    // interrupted at the drain timeout (its outcome is not reported; the broker
    // delivers the batch again).
    drop(threads);
    result
}

struct Worker {
    name: String,
    url: BrokerUrl,
    api: String,
    concurrency: usize,
    prefetch: usize,
    tx: crossbeam_channel::Sender<Work>,
    executors: Arc<Executors>,
    stopped: Mutex<Stopped>,
    in_flight: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Worker {
    /// Connects and consumes, again after each lost connection, until a shutdown.
    async fn keep(self: Arc<Self>, stop: &StopFlag, drain_timeout: Duration) -> anyhow::Result<()> {
        let mut first = true;
        loop {
            let connection = match super::connect_retrying(&self.url, &self.name, stop, !first).await {
                Ok(Some(connection)) => connection,
                Ok(None) => return Ok(()),
                Err(e) => anyhow::bail!(e),
            };
            first = false;
            let outcome = self.clone().session(&connection, stop, drain_timeout).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), connection.close(200, "bye".into())).await;
            match outcome {
                Ok(()) => {
                    tracing::info!("stopped");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(broker = %self.url, "lost the broker connection: {e}; reconnecting");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        () = stop.stopped() => return Ok(()),
                    }
                }
            }
        }
    }

    /// One connection: `Ok` after a drain, the reason when the connection failed.
    async fn session(self: Arc<Self>, connection: &Connection, stop: &StopFlag, drain: Duration) -> Result<(), String> {
        let text = |e: lapin::Error| e.to_string();
        let queue = super::batches_queue(&self.api);
        // The operator declares the queue (it knows the delivery limit); wait for it.
        let mut waited = false;
        loop {
            let channel = connection.create_channel().await.map_err(text)?;
            let passive = QueueDeclareOptions { passive: true, durable: true, ..QueueDeclareOptions::default() };
            match channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await {
                Ok(_) => {
                    let _ = channel.close(200, "checked".into()).await;
                    break;
                }
                Err(e) if e.to_string().contains("NOT_FOUND") => {
                    if !waited {
                        tracing::warn!(
                            queue,
                            "the queue does not exist yet: waiting for an operator with api {} to declare it",
                            self.api
                        );
                        waited = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = stop.stopped() => return Ok(()),
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let results = connection.create_channel().await.map_err(text)?;
        results.confirm_select(ConfirmSelectOptions::default()).await.map_err(text)?;
        // Notices: an exclusive queue of this connection, bound to the fanout.
        let control = connection.create_channel().await.map_err(text)?;
        let own = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        let notices = control.queue_declare("".into(), own, FieldTable::default()).await.map_err(text)?;
        control
            .queue_bind(
                notices.name().clone(),
                CONTROL.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(text)?;
        let no_ack = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let mut notices = control
            .basic_consume(notices.name().clone(), "".into(), no_ack, FieldTable::default())
            .await
            .map_err(text)?;

        let batches = connection.create_channel().await.map_err(text)?;
        let prefetch = u16::try_from(self.prefetch.max(self.concurrency)).unwrap_or(u16::MAX);
        batches.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(text)?;
        let mut consumer = batches
            .basic_consume(queue.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(text)?;
        let tag = consumer.tag();
        tracing::info!(broker = %self.url, queue, prefetch, "consuming");
        loop {
            tokio::select! {
                delivery = consumer.next() => match delivery {
                    Some(Ok(delivery)) => self.clone().take(delivery, &results),
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the broker cancelled the consumer (was the queue deleted?)".into()),
                },
                notice = notices.next() => match notice {
                    Some(Ok(notice)) => self.notice(&notice.data),
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the broker cancelled the notices consumer".into()),
                },
                () = stop.stopped() => break,
            }
        }
        // Drain: no new batches; those held finish (or are interrupted and handed back).
        let _ = batches.basic_cancel(tag, BasicCancelOptions::default()).await;
        let held = self.in_flight.load(Ordering::SeqCst);
        tracing::info!(held, drain_timeout_s = drain.as_secs_f64(), "draining");
        let deadline = tokio::time::Instant::now() + drain;
        let mut cancelled = false;
        while self.in_flight.load(Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline && !cancelled {
                tracing::warn!(
                    held = self.in_flight.load(Ordering::SeqCst),
                    "the drain timeout passed: interrupting the batches held; the broker gives them to another worker"
                );
                self.executors.cancel();
                cancelled = true;
            }
            if tokio::time::Instant::now() >= deadline + Duration::from_secs(5) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// A notice from the operator.
    fn notice(&self, data: &[u8]) {
        if let Ok(notice) = serde_json::from_slice::<serde_json::Value>(data)
            && let Some(job_id) = notice["job_id"].as_str()
        {
            tracing::info!(
                job_id,
                reason = notice["reason"].as_str().unwrap_or(""),
                "job ended early; its queued batches are skipped"
            );
            self.stopped.lock().unwrap_or_else(|e| e.into_inner()).insert(job_id.to_string());
        }
    }

    /// Hands a delivery to a worker thread; a task reports its outcome and acknowledges.
    fn take(self: Arc<Self>, delivery: Delivery, results: &Channel) {
        let headers = delivery.properties.headers().clone();
        let headers = headers.as_ref();
        let kind = get_str(headers, header::KIND).unwrap_or_default();
        let job_id = get_str(headers, header::JOB);
        let index = get_int(headers, header::INDEX).map(|i| i as u64);
        let items = get_int(headers, header::ITEMS);
        let max_attempts = get_int(headers, header::MAX_ATTEMPTS).unwrap_or(1).clamp(1, i64::from(u32::MAX)) as u32;
        let attempt =
            get_int(headers, header::DELIVERY_COUNT).unwrap_or(0).clamp(0, i64::from(u32::MAX - 1)) as u32 + 1;
        let spec: Arc<[u8]> = Arc::from(get_str(headers, header::SPEC).unwrap_or_else(|| "{}".into()).into_bytes());
        let results = results.clone();
        let Some(job_id) = job_id.filter(|_| kind == header::HOOK || (kind == header::BATCH && index.is_some())) else {
            tracing::error!(kind, "a message that is not a wasmbatch batch; rejected (dead-lettered)");
            tokio::spawn(async move {
                let _ = delivery.acker.nack(BasicNackOptions { requeue: false, multiple: false }).await;
            });
            return;
        };
        if self.stopped.lock().unwrap_or_else(|e| e.into_inner()).set.contains(&job_id) {
            tokio::spawn(async move {
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            });
            return;
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let base = Headers::default().str(header::JOB, &job_id).str(header::WORKER, &self.name);
            let base = match index {
                Some(i) => base.int(header::INDEX, i as i64),
                None => base,
            };
            let base = match items {
                Some(n) => base.int(header::ITEMS, n),
                None => base,
            };
            let (reply, outcome) = oneshot::channel();
            let outcome = if index.is_some() && attempt > max_attempts {
                // Earlier deliveries were lost with their workers, and the job allows
                // no more attempts than that.
                Some(Outcome::Failed(AttemptError {
                    kind: AttemptKind::Remote("delivery_limit".into()),
                    message: format!(
                        "delivered {} times and no worker reported an outcome (each worker holding it was lost)",
                        attempt - 1
                    ),
                }))
            } else {
                let work = Work {
                    job_id: job_id.clone(),
                    index,
                    attempt,
                    spec,
                    body: Bytes::from(delivery.data.clone()),
                    reply,
                };
                if self.tx.send(work).is_ok() { outcome.await.ok() } else { None }
            };
            let report = match outcome {
                None => None,
                Some(Outcome::Succeeded(elapsed, results)) => {
                    self.metrics.batch_succeeded(&job_id, elapsed);
                    Some((
                        base.str(header::KIND, header::SUCCEEDED)
                            .int(header::ATTEMPTS, attempt.into())
                            .float(header::ELAPSED, elapsed.as_secs_f64()),
                        results,
                    ))
                }
                // Failed items: the whole batch again while attempts are left (its
                // other items' results are not kept), else only they are dead-lettered;
                // at once when every one of them was rejected.
                Some(Outcome::ItemsFailed(_, e, _)) if attempt < max_attempts && e.kind.retryable() => {
                    self.metrics.attempt_failed(&e.kind.to_string());
                    tracing::warn!(job_id, batch = index, attempt, error = %e.message, "items failed; the batch is handed back for another attempt");
                    None
                }
                Some(Outcome::ItemsFailed(items, e, results)) => {
                    self.metrics.batch_failed(&job_id);
                    tracing::error!(job_id, batch = index, attempt, error = %e.message, "items failed for good");
                    let mut headers = base
                        .str(header::KIND, header::FAILED)
                        .int(header::ATTEMPTS, attempt.into())
                        .str(header::ERROR_KIND, &e.kind.to_string())
                        .str(header::ERROR, &e.message);
                    // The other items' results ride in a header (a message's headers
                    // must fit one frame: up to 64 KiB of them).
                    if !results.is_empty() && results.len() <= 64 << 10 {
                        headers = headers.str(header::RESULTS, &String::from_utf8_lossy(&results));
                    } else if !results.is_empty() {
                        tracing::warn!(
                            job_id,
                            batch = index,
                            bytes = results.len(),
                            "the results of a batch with failed items are over 64 KiB and are not kept"
                        );
                    }
                    Some((headers, items.to_vec()))
                }
                Some(Outcome::Failed(e)) if e.interrupted() => {
                    tracing::info!(job_id, batch = index, "interrupted; handed back to the broker");
                    None
                }
                Some(Outcome::Failed(e)) if e.kind.retryable() && attempt < max_attempts => {
                    self.metrics.attempt_failed(&e.kind.to_string());
                    tracing::warn!(job_id, batch = index, attempt, kind = %e.kind, error = %e.message, "batch failed; handed back for another attempt");
                    None
                }
                Some(Outcome::Failed(e)) => {
                    self.metrics.batch_failed(&job_id);
                    tracing::error!(job_id, batch = index, attempt, kind = %e.kind, error = %e.message, "batch failed for good");
                    Some((
                        base.str(header::KIND, header::FAILED)
                            .int(header::ATTEMPTS, attempt.into())
                            .str(header::ERROR_KIND, &e.kind.to_string())
                            .str(header::ERROR, &e.message),
                        delivery.data.clone(),
                    ))
                }
                Some(Outcome::Hook(completion)) => {
                    let (outcome, message) = match &completion {
                        Completion::Succeeded => ("succeeded", String::new()),
                        Completion::NotFound => ("not_found", String::new()),
                        Completion::Failed(e) => ("failed", e.clone()),
                    };
                    tracing::info!(job_id, outcome, "on-job-complete ran");
                    Some((
                        base.str(header::KIND, header::HOOK)
                            .str(header::ERROR_KIND, outcome)
                            .str(header::ERROR, &message),
                        Vec::new(),
                    ))
                }
            };
            let acked = match report {
                // Handed back: the broker delivers it again (or dead-letters it).
                None => delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await.map(drop),
                Some((headers, body)) => {
                    let properties = BasicProperties::default().with_delivery_mode(2).with_headers(headers.table());
                    let published = async {
                        let confirm = results
                            .basic_publish("".into(), RESULTS.into(), BasicPublishOptions::default(), &body, properties)
                            .await?;
                        confirm.await
                    };
                    match tokio::time::timeout(Duration::from_secs(30), published).await {
                        Ok(Ok(confirmation)) if confirmation.is_ack() => {
                            delivery.acker.ack(BasicAckOptions::default()).await.map(drop)
                        }
                        other => {
                            tracing::warn!(
                                job_id,
                                batch = index,
                                "could not report the outcome ({other:?}); the batch is handed back"
                            );
                            delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await.map(drop)
                        }
                    }
                }
            };
            if let Err(e) = acked {
                tracing::warn!(
                    job_id,
                    batch = index,
                    "the acknowledgement did not reach the broker ({e}); the batch is delivered again"
                );
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Used by the CLI: the thread count a worker gets by default.
pub(crate) fn default_concurrency() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
