//! Who handles a batch: a Wasm instance in this process, or a server of the contract.
//!
//! Both executors give each worker thread its own state — a warm instance, or a
//! kept-alive connection — so one worker handles one batch at a time, as a Cortex pod
//! does. The runner does not know which one it drives.
//!
//! Every wait of the endpoint executor has a deadline and ends on a stop: a request
//! (connection included) gets `batch_timeout`; a server that answers 503 with
//! `Retry-After` is asked again after that pause within the same attempt (it is busy,
//! not failing) until the attempt's deadline; on-job-complete gets `batch_timeout` too.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use tokio::sync::watch;

use super::stop::StopReason;
use crate::failure::{Failure, FailureKind};
use crate::http::client::{Answer, Connection, Endpoint};

/// How much of a server's JSON answer to a batch is read: its results and failed
/// items (a wasmbatch server's results of one batch are at most 16 MiB). A longer JSON
/// answer fails the attempt, for good (`answer_too_large`): its results cannot be
/// kept. Other answers are not results: their bodies are ignored, as the contract has it.
const ANSWER_KEPT: usize = 64 << 20;
use crate::http::server::{ATTEMPT_HEADER, BATCH_ID_HEADER, JOB_ID_HEADER};
use crate::lifecycle::WarmInstance;
use crate::plugin::{BatchCall, BatchId, BatchOutput, ItemError, ItemSpans, JobPlugin};

/// Why one attempt at a batch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptKind {
    /// The guest failed (in-process).
    Guest(FailureKind),
    /// The server answered with a status other than 200; `kind` is the `error.kind` of
    /// its JSON body, when it has one (wasmbatch servers give one).
    Answer {
        /// The HTTP status.
        status: u16,
        /// The server's own name for the failure.
        kind: Option<String>,
    },
    /// No answer: the connection could not be made or broke.
    Connection,
    /// No answer within the batch timeout.
    RequestTimeout,
    /// The server was busy (503 with `Retry-After`) until the attempt's deadline.
    Busy,
    /// The batch was not (completely) attempted because the job ended early.
    Interrupted(StopReason),
    /// The host itself failed while handling the batch (a bug; the job fails with
    /// `worker_error`).
    WorkerPanic,
    /// A failure a worker reported over the broker, by its kind's name (it decided
    /// there whether to try again).
    Remote(String),
    /// The handler failed single items (its message lists them); those items are
    /// tried again as a smaller batch.
    ItemErrors,
    /// The handler rejected every item left (they can never succeed): dead-lettered
    /// without another attempt.
    ItemsRejected,
}

impl AttemptKind {
    /// Whether another attempt could succeed: not for input the handler rejected,
    /// nor for a client error other than 408 and 429.
    pub fn retryable(&self) -> bool {
        match self {
            AttemptKind::Guest(kind) => !matches!(kind, FailureKind::InvalidInput | FailureKind::Cancelled),
            AttemptKind::Answer { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            AttemptKind::Connection | AttemptKind::RequestTimeout | AttemptKind::Busy => true,
            AttemptKind::ItemErrors => true,
            AttemptKind::ItemsRejected => false,
            AttemptKind::Interrupted(_) | AttemptKind::WorkerPanic | AttemptKind::Remote(_) => false,
        }
    }
}

impl fmt::Display for AttemptKind {
    /// The kind's name in dead-letter records and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptKind::Guest(kind) => f.write_str(kind.as_str()),
            AttemptKind::Answer { kind: Some(kind), .. } => f.write_str(kind),
            AttemptKind::Answer { status, kind: None } => write!(f, "http_{status}"),
            AttemptKind::Connection => f.write_str("connection"),
            AttemptKind::RequestTimeout => f.write_str("request_timeout"),
            AttemptKind::Busy => f.write_str("busy"),
            AttemptKind::Interrupted(reason) => f.write_str(reason.as_str()),
            AttemptKind::WorkerPanic => f.write_str("worker_panic"),
            AttemptKind::Remote(kind) => f.write_str(kind),
            AttemptKind::ItemErrors => f.write_str("item_errors"),
            AttemptKind::ItemsRejected => f.write_str("items_rejected"),
        }
    }
}

/// Why one attempt at a batch failed, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    /// The kind.
    pub kind: AttemptKind,
    /// What happened.
    pub message: String,
}

impl AttemptError {
    fn guest(failure: Failure) -> AttemptError {
        AttemptError { kind: AttemptKind::Guest(failure.kind), message: failure.message }
    }

    /// Whether the job ending early cut this attempt short.
    pub fn interrupted(&self) -> bool {
        matches!(self.kind, AttemptKind::Interrupted(_) | AttemptKind::Guest(FailureKind::Cancelled))
    }
}

/// The items of `body` (a JSON array) that `errors` names, as a smaller batch, and
/// the error that describes them (by their index in `body`, mapped through `indexes`
/// to their index in the original batch): `items_rejected` when every one of them was
/// rejected, else `item_errors`. `None` when `body` is not an array.
pub fn failed_items(body: &[u8], errors: &[ItemError], indexes: &[usize]) -> Option<(Bytes, Vec<usize>, AttemptError)> {
    let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body).ok()?;
    let mut failed: Vec<(usize, &str)> = errors
        .iter()
        .filter(|e| (e.index as usize) < items.len())
        .map(|e| (e.index as usize, e.message.as_str()))
        .collect();
    failed.sort_by_key(|(i, _)| *i);
    failed.dedup_by_key(|(i, _)| *i);
    let all_rejected = failed.iter().all(|(i, _)| errors.iter().any(|e| e.index as usize == *i && e.rejected));
    let kind = if all_rejected { AttemptKind::ItemsRejected } else { AttemptKind::ItemErrors };
    let mut sub = Vec::with_capacity(body.len());
    sub.push(b'[');
    let mut original = Vec::with_capacity(failed.len());
    let mut message = String::new();
    for (n, (i, text)) in failed.iter().enumerate() {
        if n > 0 {
            sub.push(b',');
            message.push_str("; ");
        }
        sub.extend_from_slice(items[*i].get().as_bytes());
        let at = indexes.get(*i).copied().unwrap_or(*i);
        original.push(at);
        message.push_str(&format!("item {at}: {text}"));
    }
    sub.push(b']');
    Some((Bytes::from(sub), original, AttemptError { kind, message }))
}

/// The results and failed items a wasmbatch server lists in its 200 answer
/// (`{"results": [...], "item_errors": [{"index", "message"}]}`); nothing for an empty
/// or other body (any server of the contract may answer anything).
fn answered_output(body: &[u8]) -> BatchOutput {
    #[derive(serde::Deserialize)]
    struct Listed {
        index: u32,
        message: String,
        #[serde(default)]
        rejected: bool,
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        results: Vec<Box<serde_json::value::RawValue>>,
        #[serde(default)]
        item_errors: Vec<Listed>,
    }
    if body.is_empty() {
        return BatchOutput::default();
    }
    let Ok(answer) = serde_json::from_slice::<Answer>(body) else { return BatchOutput::default() };
    let mut results = Vec::new();
    for value in &answer.results {
        results.extend_from_slice(value.get().as_bytes());
        results.push(b'\n');
    }
    let item_errors = answer
        .item_errors
        .into_iter()
        .map(|e| ItemError { index: e.index, message: e.message, rejected: e.rejected })
        .collect();
    BatchOutput { results, item_errors }
}

/// How the on-job-complete call went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// It ran and succeeded.
    Succeeded,
    /// The handler has none (404), which Cortex treats as fine.
    NotFound,
    /// It failed.
    Failed(String),
}

/// One attempt at one batch, as an executor gets it.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    /// The batch's position in the job; also its identifier.
    pub index: u64,
    /// 1 for the first attempt.
    pub number: u32,
    /// The batch.
    pub body: &'a Bytes,
    /// Where its items lie, when known (see [`crate::job::source::Batch::spans`]).
    pub items: Option<&'a ItemSpans>,
}

/// Runs batches for the job runner.
pub trait Executor: Send + Sync + 'static {
    /// A worker's own state.
    type Worker: Send + 'static;
    /// The executor's name in the job status (`in_process`, `endpoint`).
    fn name(&self) -> &'static str;
    /// State for worker `index`.
    fn worker(&self, index: usize) -> Self::Worker;
    /// One attempt at a batch.
    fn run(&self, worker: &mut Self::Worker, job_id: &str, attempt: Attempt<'_>) -> Result<BatchOutput, AttemptError>;
    /// The job's on-job-complete call, with the workers' leftover state.
    fn on_job_complete(&self, workers: Vec<Self::Worker>, job_id: &str, body: Bytes) -> Completion;
    /// Interrupts every attempt in progress, and every one to come (the job timed out
    /// or was stopped).
    fn cancel(&self);
}

/// Batches handed to a plugin's instances in this process.
pub struct InProcess {
    plugin: Arc<JobPlugin>,
    cancel: Arc<AtomicBool>,
    recycle_after: Option<u64>,
}

impl InProcess {
    /// An executor over `plugin` whose instances are replaced after `recycle_after`
    /// batches.
    pub fn new(plugin: Arc<JobPlugin>, recycle_after: Option<u64>) -> InProcess {
        InProcess { plugin, cancel: Arc::new(AtomicBool::new(false)), recycle_after }
    }

    fn slot(&self) -> WarmInstance {
        WarmInstance::new(self.plugin.clone(), self.cancel.clone(), self.recycle_after, None)
    }
}

impl Executor for InProcess {
    type Worker = WarmInstance;

    fn name(&self) -> &'static str {
        "in_process"
    }

    fn worker(&self, _index: usize) -> WarmInstance {
        self.slot()
    }

    fn run(&self, slot: &mut WarmInstance, job_id: &str, attempt: Attempt<'_>) -> Result<BatchOutput, AttemptError> {
        let call = BatchCall {
            tag: attempt.index,
            id: BatchId::Index(attempt.index),
            attempt: attempt.number,
            body: attempt.body.clone(),
            items: attempt.items.cloned(),
        };
        crate::engine::drive(slot.handle(job_id, call)).map_err(AttemptError::guest)
    }

    fn on_job_complete(&self, workers: Vec<WarmInstance>, job_id: &str, body: Bytes) -> Completion {
        let mut slot = workers.into_iter().next().unwrap_or_else(|| self.slot());
        match crate::engine::drive(slot.on_job_complete(job_id, &body)) {
            None => Completion::NotFound,
            Some(Ok(())) => Completion::Succeeded,
            Some(Err(f)) => Completion::Failed(f.to_string()),
        }
    }

    fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// Batches sent to servers of the contract, workers spread over the endpoints.
pub struct EndpointExecutor {
    endpoints: Vec<Endpoint>,
    runtime: tokio::runtime::Handle,
    cancel: watch::Sender<bool>,
    batch_timeout: Duration,
}

/// One worker's connection and its view of the cancel signal.
pub struct EndpointWorker {
    connection: Connection,
    cancel: watch::Receiver<bool>,
}

impl EndpointExecutor {
    /// An executor over `endpoints` (at least one), doing its I/O on `runtime`; each
    /// attempt (and on-job-complete) may take up to `batch_timeout`.
    pub fn new(endpoints: Vec<Endpoint>, runtime: tokio::runtime::Handle, batch_timeout: Duration) -> Self {
        assert!(!endpoints.is_empty(), "at least one endpoint");
        EndpointExecutor { endpoints, runtime, cancel: watch::channel(false).0, batch_timeout }
    }

    /// Sends until an answer that is not "busy, come back later", the deadline, or a
    /// cancel. `None`: cancelled.
    async fn send(
        &self,
        connection: &mut Connection,
        mut cancel: watch::Receiver<bool>,
        path: &str,
        headers: &[(&str, &str)],
        body: &Bytes,
    ) -> Option<Result<Bytes, AttemptError>> {
        let deadline = tokio::time::Instant::now() + self.batch_timeout;
        let work = async {
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let answer = match connection.send(Method::POST, path, headers, body.clone(), left).await {
                    Ok(answer) => answer,
                    Err(_) if left.is_zero() || tokio::time::Instant::now() >= deadline => {
                        return Err(AttemptError {
                            kind: AttemptKind::RequestTimeout,
                            message: format!(
                                "{} did not answer within {:?} (the batch timeout)",
                                connection.endpoint(),
                                self.batch_timeout
                            ),
                        });
                    }
                    Err(e) => return Err(AttemptError { kind: AttemptKind::Connection, message: e.to_string() }),
                };
                match answer.status.as_u16() {
                    200 if !answer.complete && answer.json => {
                        return Err(AttemptError {
                            kind: AttemptKind::Answer { status: 200, kind: Some("answer_too_large".into()) },
                            message: format!(
                                "the answer of {} is over {} bytes: its results cannot be kept",
                                connection.endpoint(),
                                ANSWER_KEPT
                            ),
                        });
                    }
                    200 => return Ok(answer.body),
                    503 if answer.retry_after.is_some() => {
                        let pause = answer
                            .retry_after
                            .unwrap_or_default()
                            .clamp(Duration::from_millis(50), Duration::from_secs(60));
                        if tokio::time::Instant::now() + pause >= deadline {
                            let (_, message) = describe_answer(&answer);
                            return Err(AttemptError {
                                kind: AttemptKind::Busy,
                                message: format!(
                                    "busy for the whole batch timeout ({:?}); last answer {message}",
                                    self.batch_timeout
                                ),
                            });
                        }
                        tokio::time::sleep(pause).await;
                    }
                    _ => {
                        let (kind, message) = describe_answer(&answer);
                        return Err(AttemptError { kind, message });
                    }
                }
            }
        };
        tokio::select! {
            result = work => Some(result),
            _ = cancel.wait_for(|c| *c) => None,
        }
    }
}

/// The kind and message of a non-200 answer, from its JSON error body when it has one.
fn describe_answer(answer: &Answer) -> (AttemptKind, String) {
    let status = answer.status.as_u16();
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&answer.body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    let kind = error.and_then(|e| e["kind"].as_str()).map(str::to_owned);
    let message = match error.and_then(|e| e["message"].as_str()) {
        Some(m) => format!("HTTP {status}: {m}"),
        None => {
            let text = String::from_utf8_lossy(&answer.body);
            let text: String = text.chars().take(300).collect();
            if text.trim().is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {}", text.trim()) }
        }
    };
    (AttemptKind::Answer { status, kind }, message)
}

impl Executor for EndpointExecutor {
    type Worker = EndpointWorker;

    fn name(&self) -> &'static str {
        "endpoint"
    }

    fn worker(&self, index: usize) -> EndpointWorker {
        let endpoint = self.endpoints[index % self.endpoints.len()].clone();
        EndpointWorker { connection: Connection::new(endpoint).keeping(ANSWER_KEPT), cancel: self.cancel.subscribe() }
    }

    fn run(
        &self,
        worker: &mut EndpointWorker,
        job_id: &str,
        attempt: Attempt<'_>,
    ) -> Result<BatchOutput, AttemptError> {
        let (id, number) = (attempt.index.to_string(), attempt.number.to_string());
        let headers = [(JOB_ID_HEADER, job_id), (BATCH_ID_HEADER, id.as_str()), (ATTEMPT_HEADER, number.as_str())];
        let cancel = worker.cancel.clone();
        let result = self.runtime.block_on(self.send(&mut worker.connection, cancel, "/", &headers, attempt.body));
        let result = result.map(|r| r.map(|body| answered_output(&body)));
        result.unwrap_or_else(|| {
            Err(AttemptError {
                kind: AttemptKind::Guest(FailureKind::Cancelled),
                message: "the request was abandoned because the job is stopping".into(),
            })
        })
    }

    fn on_job_complete(&self, _workers: Vec<EndpointWorker>, job_id: &str, body: Bytes) -> Completion {
        let mut connection = Connection::new(self.endpoints[0].clone());
        let headers = [(JOB_ID_HEADER, job_id)];
        let cancel = self.cancel.subscribe();
        match self.runtime.block_on(self.send(&mut connection, cancel, "/on-job-complete", &headers, &body)) {
            None => Completion::Failed("abandoned because the job is stopping".into()),
            Some(Ok(_)) => Completion::Succeeded,
            Some(Err(AttemptError { kind: AttemptKind::Answer { status: 404, .. }, .. })) => Completion::NotFound,
            Some(Err(e)) => Completion::Failed(e.message),
        }
    }

    fn cancel(&self) {
        self.cancel.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_items_make_a_smaller_batch_and_rejected_ones_are_not_retried() {
        let error = |index, rejected| ItemError { index, message: format!("bad {index}"), rejected };
        let body = br#"[10, 11, 12, 13]"#;
        let (sub, original, e) = failed_items(body, &[error(3, false), error(1, true)], &[5, 6, 7, 8]).unwrap();
        assert_eq!((&sub[..], original), (&b"[11,13]"[..], vec![6, 8]));
        assert_eq!(e.kind, AttemptKind::ItemErrors, "a failed item beside a rejected one: tried again");
        assert_eq!(e.message, "item 6: bad 1; item 8: bad 3");
        assert!(e.kind.retryable());
        let (_, _, e) = failed_items(body, &[error(2, true), error(0, true)], &[]).unwrap();
        assert_eq!((e.kind.clone(), e.kind.to_string()), (AttemptKind::ItemsRejected, "items_rejected".to_string()));
        assert!(!e.kind.retryable());
        let (sub, original, _) = failed_items(body, &[error(9, false)], &[]).unwrap();
        assert!(original.is_empty() && &sub[..] == b"[]", "an index the batch does not have is ignored");
        assert!(failed_items(b"{}", &[error(0, false)], &[]).is_none());
    }

    fn answer(status: u16, body: &'static [u8]) -> Answer {
        Answer {
            status: hyper::StatusCode::from_u16(status).unwrap(),
            retry_after: None,
            body: Bytes::from_static(body),
            complete: true,
            json: true,
        }
    }

    #[test]
    fn answers_are_described_by_their_error_body_or_status() {
        let (kind, message) = describe_answer(&answer(500, br#"{"error":{"kind":"panic","message":"boom"}}"#));
        assert_eq!((kind.to_string(), message.as_str()), ("panic".into(), "HTTP 500: boom"));
        let (kind, message) = describe_answer(&answer(502, b"Bad Gateway"));
        assert_eq!((kind.to_string(), message.as_str()), ("http_502".into(), "HTTP 502: Bad Gateway"));
        assert_eq!(describe_answer(&answer(503, b"")).1, "HTTP 503");
    }

    #[test]
    fn kinds_know_whether_another_attempt_could_help() {
        assert!(AttemptKind::Guest(FailureKind::Trap).retryable());
        assert!(!AttemptKind::Guest(FailureKind::InvalidInput).retryable());
        assert!(AttemptKind::Answer { status: 500, kind: None }.retryable());
        assert!(AttemptKind::Answer { status: 429, kind: None }.retryable());
        assert!(!AttemptKind::Answer { status: 400, kind: Some("invalid_input".into()) }.retryable());
        assert!(AttemptKind::RequestTimeout.retryable() && AttemptKind::Connection.retryable());
        assert!(!AttemptKind::Interrupted(StopReason::Stopped).retryable());
        assert_eq!(AttemptKind::Interrupted(StopReason::TimedOut).to_string(), "timed_out");
    }
}
