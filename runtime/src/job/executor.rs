//! Who handles a batch: a Wasm instance in this process, or a server of the contract.
//!
//! Both executors give each worker thread its own state — a warm instance, or a
//! kept-alive connection — so one worker handles one batch at a time, as a Cortex pod
//! does. The runner does not know which one it drives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use hyper::Method;
use tokio::sync::watch;

use crate::failure::FailureKind;
use crate::http::client::{Connection, Endpoint};
use crate::plugin::{Instance, Plugin};

/// Why one attempt at a batch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    /// A failure kind (`trap`, `timeout`, …), `http_<status>`, or `connection`.
    pub kind: String,
    /// What happened.
    pub message: String,
    /// Whether another attempt could succeed (not for invalid input).
    pub retryable: bool,
    /// The attempt was interrupted because the job is stopping.
    pub interrupted: bool,
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

/// Runs batches for the job runner.
pub trait Executor: Send + Sync + 'static {
    /// A worker's own state.
    type Worker: Send + 'static;
    /// The executor's name in the job status (`in_process`, `endpoint`).
    fn name(&self) -> &'static str;
    /// State for worker `index`.
    fn worker(&self, index: usize) -> Self::Worker;
    /// One attempt at batch number `index`.
    fn run(&self, worker: &mut Self::Worker, job_id: &str, index: u64, batch: &Bytes) -> Result<(), AttemptError>;
    /// The job's on-job-complete call, with the workers' leftover state.
    fn on_job_complete(&self, workers: Vec<Self::Worker>, job_id: &str, body: Bytes) -> Completion;
    /// Interrupts every attempt in progress (the job timed out or was stopped).
    fn cancel(&self);
}

/// Batches handed to a plugin's instances in this process.
pub struct InProcess {
    plugin: Arc<Plugin>,
    cancel: Arc<AtomicBool>,
}

impl InProcess {
    /// An executor over `plugin`.
    pub fn new(plugin: Arc<Plugin>) -> InProcess {
        InProcess { plugin, cancel: Arc::new(AtomicBool::new(false)) }
    }

    fn instance<'a>(&self, slot: &'a mut Option<Instance>) -> Result<&'a mut Instance, AttemptError> {
        if slot.is_none() {
            let instance = self.plugin.instance(self.cancel.clone()).map_err(|f| attempt_error(f.kind, f.message))?;
            *slot = Some(instance);
        }
        Ok(slot.as_mut().expect("just filled"))
    }
}

fn attempt_error(kind: FailureKind, message: String) -> AttemptError {
    AttemptError {
        kind: kind.as_str().to_string(),
        message,
        retryable: kind != FailureKind::InvalidInput,
        interrupted: kind == FailureKind::Cancelled,
    }
}

impl Executor for InProcess {
    type Worker = Option<Instance>;

    fn name(&self) -> &'static str {
        "in_process"
    }

    fn worker(&self, _index: usize) -> Option<Instance> {
        None
    }

    fn run(&self, worker: &mut Option<Instance>, job_id: &str, index: u64, batch: &Bytes) -> Result<(), AttemptError> {
        let instance = self.instance(worker)?;
        let result = instance.handle(job_id, index, batch);
        if instance.is_poisoned() {
            *worker = None;
        }
        result.map_err(|f| attempt_error(f.kind, f.message))
    }

    fn on_job_complete(&self, workers: Vec<Option<Instance>>, job_id: &str, body: Bytes) -> Completion {
        if !self.plugin.capabilities().on_job_complete {
            return Completion::NotFound;
        }
        let mut slot = workers.into_iter().flatten().next();
        let result = self.instance(&mut slot).and_then(|instance| match instance.on_job_complete(job_id, &body) {
            Some(result) => result.map_err(|f| attempt_error(f.kind, f.message)),
            None => Ok(()),
        });
        match result {
            Ok(()) => Completion::Succeeded,
            Err(e) => Completion::Failed(format!("{}: {}", e.kind, e.message)),
        }
    }

    fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// Batches POSTed to servers of the contract, round-robin over workers.
pub struct EndpointExecutor {
    endpoints: Vec<Endpoint>,
    runtime: tokio::runtime::Handle,
    cancel: watch::Sender<bool>,
}

/// An endpoint worker: its connection and the job's cancel signal.
pub struct EndpointWorker {
    connection: Connection,
    cancel: watch::Receiver<bool>,
}

impl EndpointExecutor {
    /// An executor over `endpoints`, doing its I/O on `runtime`.
    pub fn new(endpoints: Vec<Endpoint>, runtime: tokio::runtime::Handle) -> EndpointExecutor {
        EndpointExecutor { endpoints, runtime, cancel: watch::channel(false).0 }
    }
}

async fn cancelled(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The kind and message of a non-200 answer: ours carry `{"error":{"kind","message"}}`.
fn describe_answer(status: u16, body: &[u8]) -> (String, String) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    let kind = error.and_then(|e| e["kind"].as_str()).map(str::to_owned).unwrap_or_else(|| format!("http_{status}"));
    let message = match error.and_then(|e| e["message"].as_str()) {
        Some(m) => format!("HTTP {status}: {m}"),
        None => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(300).collect();
            if text.trim().is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {}", text.trim()) }
        }
    };
    (kind, message)
}

impl Executor for EndpointExecutor {
    type Worker = EndpointWorker;

    fn name(&self) -> &'static str {
        "endpoint"
    }

    fn worker(&self, index: usize) -> EndpointWorker {
        let endpoint = self.endpoints[index % self.endpoints.len()].clone();
        EndpointWorker { connection: Connection::new(endpoint), cancel: self.cancel.subscribe() }
    }

    fn run(&self, worker: &mut EndpointWorker, job_id: &str, _index: u64, batch: &Bytes) -> Result<(), AttemptError> {
        let cancel = worker.cancel.clone();
        let connection = &mut worker.connection;
        let result = self.runtime.block_on(async {
            tokio::select! {
                answer = connection.send(Method::POST, "/", Some(job_id), batch.clone()) => Some(answer),
                () = cancelled(cancel) => None,
            }
        });
        match result {
            None => Err(AttemptError {
                kind: "cancelled".into(),
                message: "the request was abandoned because the job is stopping".into(),
                retryable: false,
                interrupted: true,
            }),
            Some(Ok((status, _))) if status.as_u16() == 200 => Ok(()),
            Some(Ok((status, body))) => {
                let code = status.as_u16();
                let (kind, message) = describe_answer(code, &body);
                Err(AttemptError {
                    kind,
                    message,
                    retryable: code >= 500 || code == 408 || code == 429,
                    interrupted: false,
                })
            }
            Some(Err(e)) => Err(AttemptError {
                kind: "connection".into(),
                message: e.to_string(),
                retryable: true,
                interrupted: false,
            }),
        }
    }

    fn on_job_complete(&self, _workers: Vec<EndpointWorker>, job_id: &str, body: Bytes) -> Completion {
        let mut connection = Connection::new(self.endpoints[0].clone());
        let answer = self.runtime.block_on(connection.send(Method::POST, "/on-job-complete", Some(job_id), body));
        match answer {
            Ok((status, _)) if status.as_u16() == 200 => Completion::Succeeded,
            Ok((status, _)) if status.as_u16() == 404 => Completion::NotFound,
            Ok((status, body)) => Completion::Failed(describe_answer(status.as_u16(), &body).1),
            Err(e) => Completion::Failed(e.to_string()),
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
    fn answers_are_described_by_their_error_body_or_status() {
        let ours = br#"{"error":{"kind":"panic","message":"boom"}}"#;
        assert_eq!(describe_answer(500, ours), ("panic".into(), "HTTP 500: boom".into()));
        assert_eq!(describe_answer(502, b"Bad Gateway"), ("http_502".into(), "HTTP 502: Bad Gateway".into()));
        assert_eq!(describe_answer(503, b""), ("http_503".into(), "HTTP 503".into()));
    }
}
