//! The server of the container contract (and of `/metrics`).
//!
//! [`serve`] takes an already-bound listener and a shutdown future (so tests bind
//! `127.0.0.1:0` and drive the real server). Each connection is served by hyper on the
//! tokio runtime; each batch is admitted by the [`InstancePool`] (a place and its bytes)
//! *before* its body is read, then handed to a warm instance on a task of this same
//! runtime, while the connection awaits the answer.
//!
//! Draining is bounded. On shutdown the listener is dropped at once (new connections
//! are refused) and `/healthz` turns 503. A connection with no request in progress —
//! idle, or half-way through its headers — is closed within [`IDLE_GRACE`]; a request
//! still sending its body or waiting for admission is answered 503 `draining` at once;
//! batches already admitted run to their end. Whatever is left after the drain timeout
//! is abandoned (its client sees a closed connection, which the contract counts as a
//! failed attempt, to be retried).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use super::batch::{check_batch, normalize_completion};
use super::error::ApiError;
use crate::metrics::Metrics;
use crate::plugin::{BatchCall, BatchId};
use crate::pool::{Busy, InstancePool};

/// The header carrying the job ID.
pub const JOB_ID_HEADER: &str = "x-cortex-job-id";
/// Our header carrying the batch identifier (unique in the job, stable across retries).
pub const BATCH_ID_HEADER: &str = "x-wasmbatch-batch-id";
/// Our header carrying the attempt number (1 for the first).
pub const ATTEMPT_HEADER: &str = "x-wasmbatch-attempt";

/// How long a connection with no request in progress may live once draining began.
pub const IDLE_GRACE: Duration = Duration::from_millis(500);

/// Settings of the HTTP side.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// The job ID used when a request has no `X-Cortex-Job-ID` (the spec's `job_id`).
    pub default_job_id: Option<String>,
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
    /// How long a client may take to send a request body.
    pub body_timeout: Duration,
    /// How long draining may take in all, after which what is left is abandoned.
    pub drain_timeout: Duration,
}

struct App {
    pool: Arc<InstancePool>,
    config: ServerConfig,
    draining: AtomicBool,
    drain: watch::Receiver<bool>,
    /// Numbers the batches this server received, to tag their log lines.
    next_batch: AtomicU64,
}

impl App {
    /// Resolves once draining began.
    async fn drained(&self) {
        let mut drain = self.drain.clone();
        let _ = drain.wait_for(|d| *d).await;
    }
}

type HttpResponse = Response<Full<Bytes>>;

/// Counts what is open: connections for the server, requests for a connection.
#[derive(Default)]
struct Gauge {
    count: AtomicUsize,
    changed: Notify,
}

impl Gauge {
    fn enter(self: &Arc<Self>) -> GaugeGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        GaugeGuard(self.clone())
    }

    fn get(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until the count is zero.
    async fn zero(&self) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if self.get() == 0 {
                return;
            }
            changed.await;
        }
    }
}

struct GaugeGuard(Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        // Only a waiter for zero listens; waking nobody costs a lock per request.
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

/// Accepts the next connection; on errors (out of file descriptors and the like) it
/// waits a moment and tries again instead of spinning.
pub(crate) async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves the contract on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    pool: Arc<InstancePool>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (drain_tx, drain) = watch::channel(false);
    let app = Arc::new(App { pool, config, draining: AtomicBool::new(false), drain, next_batch: AtomicU64::new(0) });
    let connections = Arc::new(Gauge::default());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let guard = connections.enter();
        tokio::spawn(serve_connection(app.clone(), stream, peer, guard));
    }
    drop(listener);
    app.draining.store(true, Ordering::SeqCst);
    let _ = drain_tx.send(true);
    let deadline = app.config.drain_timeout;
    tracing::info!(
        in_flight = app.pool.in_flight(),
        connections = connections.get(),
        drain_timeout_ms = deadline.as_millis() as u64,
        "shutting down: no new connections, finishing batches in flight"
    );
    if tokio::time::timeout(deadline, connections.zero()).await.is_err() {
        tracing::error!(
            in_flight = app.pool.in_flight(),
            connections = connections.get(),
            "the drain timeout passed; abandoning what is left (its clients see a closed connection)"
        );
    } else {
        tracing::info!("all requests answered; stopped");
    }
    Ok(())
}

/// One connection: served until it ends, or until draining closes it.
async fn serve_connection(app: Arc<App>, stream: TcpStream, peer: SocketAddr, _open: GaugeGuard) {
    let requests = Arc::new(Gauge::default());
    let service = {
        let (app, requests) = (app.clone(), requests.clone());
        service_fn(move |request| {
            let (app, active) = (app.clone(), requests.enter());
            async move {
                let response = route(&app, request, peer).await;
                drop(active);
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(app.config.header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            return;
        }
        () = app.drained() => {}
    }
    // No keep-alive from here on: the answer in progress is the connection's last.
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        _ = connection.as_mut() => {}
        () = async {
            requests.zero().await;
            // Time to write out an answer just produced; an idle or half-read
            // connection is closed when it passes.
            tokio::time::sleep(IDLE_GRACE).await;
        } => {}
    }
}

async fn route(app: &App, request: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let result = match (path.as_str(), &method) {
        ("/", &Method::POST) => handle_batch(app, request).await,
        ("/on-job-complete", &Method::POST) => handle_completion(app, request).await,
        ("/healthz", &Method::GET | &Method::HEAD) => Ok(health(app)),
        ("/metrics", &Method::GET) => Ok(metrics_response(app.pool.metrics())),
        ("/", _) | ("/on-job-complete", _) => {
            Err(ApiError::MethodNotAllowed { method: method.to_string(), path, allow: "POST" })
        }
        ("/healthz", _) => Err(ApiError::MethodNotAllowed { method: method.to_string(), path, allow: "GET, HEAD" }),
        ("/metrics", _) => Err(ApiError::MethodNotAllowed { method: method.to_string(), path, allow: "GET" }),
        _ => Err(ApiError::NotFound(path)),
    };
    result.unwrap_or_else(|e| {
        tracing::debug!(%peer, "request failed: {e}");
        e.into_response()
    })
}

fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn metrics_response(metrics: &Metrics) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Serves only `GET /metrics` on `listener` until `shutdown` resolves (`run --metrics-addr`).
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => return,
        };
        let metrics = metrics.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let metrics = metrics.clone();
            async move {
                let response = match (request.uri().path(), request.method()) {
                    ("/metrics", &Method::GET) => metrics_response(&metrics),
                    (path, _) => ApiError::NotFound(path.to_string()).into_response(),
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(connection);
    }
}

fn health(app: &App) -> HttpResponse {
    if app.draining.load(Ordering::SeqCst) {
        return ApiError::Draining.into_response();
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok\n")));
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
    response
}

fn header_text<'a>(request: &'a Request<Incoming>, name: &str) -> Result<Option<&'a str>, ApiError> {
    match request.headers().get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|t| Some(t.trim()).filter(|t| !t.is_empty()))
            .map_err(|_| ApiError::InvalidHeader(format!("{name} is not valid text"))),
    }
}

fn job_id(app: &App, request: &Request<Incoming>) -> Result<String, ApiError> {
    match header_text(request, JOB_ID_HEADER)? {
        Some(id) => Ok(id.to_owned()),
        None => app.config.default_job_id.clone().ok_or(ApiError::MissingJobId),
    }
}

/// The batch identifier and attempt a sender gave, checked.
fn batch_headers(request: &Request<Incoming>) -> Result<(BatchId, u32), ApiError> {
    let id = match header_text(request, BATCH_ID_HEADER)? {
        None => BatchId::Content,
        Some(id)
            if id.len() <= 128
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && !id.starts_with('.') =>
        {
            BatchId::Named(Arc::from(id))
        }
        Some(id) => {
            return Err(ApiError::InvalidHeader(format!(
                "X-Wasmbatch-Batch-ID {id:?} must be 1 to 128 letters, digits, '-', '_' or '.', not starting with '.'"
            )));
        }
    };
    let attempt = match header_text(request, ATTEMPT_HEADER)? {
        None => 0,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(ApiError::InvalidHeader(format!("X-Wasmbatch-Attempt {text:?} must be an integer ≥ 1"))),
        },
    };
    Ok((id, attempt))
}

/// The bytes to reserve for a request's body: its declared length, or the limit.
fn body_reservation(app: &App, request: &Request<Incoming>) -> Result<usize, ApiError> {
    let limit = app.config.max_body;
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => Err(ApiError::BodyTooLarge { limit }),
        Some(n) => Ok(n as usize),
        None => Ok(limit),
    }
}

/// Waits for admission, ending early with `draining` when the server drains.
async fn admit(app: &App, bytes: usize) -> Result<crate::pool::Admission, ApiError> {
    // Biased: admission is polled first, so that a request admitted at once never
    // registers a drain waiter.
    tokio::select! {
        biased;
        admitted = app.pool.admit(bytes) => admitted.map_err(|Busy| ApiError::Busy),
        () = app.drained() => Err(ApiError::Draining),
    }
}

/// Reads the whole body within the body timeout; a drain abandons it.
async fn read_body(app: &App, request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = app.config.max_body;
    let read = Limited::new(request.into_body(), limit).collect();
    let timeout = app.config.body_timeout;
    // Biased: a body already received is taken before the timer is ever armed.
    tokio::select! {
        biased;
        collected = read => match collected {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge { limit }),
            Err(e) => Err(ApiError::BodyRead(e.to_string())),
        },
        () = tokio::time::sleep(timeout) => Err(ApiError::BodyTimeout { timeout }),
        () = app.drained() => Err(ApiError::Draining),
    }
}

async fn handle_batch(app: &App, request: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    if app.draining.load(Ordering::SeqCst) {
        return Err(ApiError::Draining);
    }
    let job_id = job_id(app, &request)?;
    let (id, attempt) = batch_headers(&request)?;
    let mut admission = admit(app, body_reservation(app, &request)?).await?;
    let body = read_body(app, request).await?;
    admission.shrink_to(body.len());
    let received = Instant::now();
    let tag = app.next_batch.fetch_add(1, Ordering::Relaxed);
    let metrics = app.pool.metrics().clone();
    let spans = check_batch(&body).inspect_err(|_| {
        metrics.attempt_failed("invalid_input");
        metrics.batch_failed(&job_id);
    })?;
    let items = spans.len();
    let ran = app.pool.run(admission, move |mut slot| async move {
        let started = Instant::now();
        let result = slot.handle(&job_id, BatchCall { tag, id, attempt, body, items: Some(spans) }).await;
        let api_name = slot.plugin().api_name();
        let elapsed = started.elapsed();
        let queued_ms = started.duration_since(received).as_secs_f64() * 1e3;
        let duration_ms = elapsed.as_secs_f64() * 1e3;
        let batch = tag;
        match &result {
            Ok(output) if !output.item_errors.is_empty() => {
                metrics.batch_succeeded(&job_id, elapsed);
                tracing::warn!(
                    api_name,
                    job_id,
                    batch,
                    items,
                    duration_ms,
                    queued_ms,
                    outcome = "item_errors",
                    failed_items = output.item_errors.len(),
                    "batch handled; some items failed (listed in the answer)"
                )
            }
            Ok(_) => {
                metrics.batch_succeeded(&job_id, elapsed);
                tracing::debug!(api_name, job_id, batch, items, duration_ms, queued_ms, outcome = "succeeded", "batch")
            }
            Err(f) => {
                metrics.attempt_failed(f.kind.as_str());
                metrics.batch_failed(&job_id);
                tracing::warn!(
                    api_name, job_id, batch, items, duration_ms, queued_ms,
                    outcome = f.kind.as_str(), error = %f.message, "batch failed"
                )
            }
        }
        (slot, result.map_err(ApiError::from))
    });
    let output = ran.await.map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(batch_answer(output))
}

/// 200: empty, or — when the guest emitted results or failed single items — a JSON
/// object `{"results": [...], "item_errors": [{"index", "message"}]}`. Cortex ignores
/// the body; `wasmbatch` senders read it.
fn batch_answer(output: crate::plugin::BatchOutput) -> HttpResponse {
    if output.results.is_empty() && output.item_errors.is_empty() {
        return empty(StatusCode::OK);
    }
    let mut body = Vec::with_capacity(output.results.len() + 64);
    body.extend_from_slice(b"{\"results\":[");
    for (n, line) in output.results.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(line);
    }
    body.extend_from_slice(b"],\"item_errors\":");
    let errors: Vec<serde_json::Value> = output
        .item_errors
        .iter()
        .map(|e| match e.rejected {
            false => serde_json::json!({"index": e.index, "message": e.message}),
            true => serde_json::json!({"index": e.index, "message": e.message, "rejected": true}),
        })
        .collect();
    body.extend_from_slice(serde_json::to_string(&errors).unwrap_or_else(|_| "[]".into()).as_bytes());
    body.push(b'}');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    response
}

async fn handle_completion(app: &App, request: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    if !app.pool.plugin().capabilities().on_job_complete {
        return Err(ApiError::NoHook);
    }
    if app.draining.load(Ordering::SeqCst) {
        return Err(ApiError::Draining);
    }
    let job_id = job_id(app, &request)?;
    let mut admission = admit(app, body_reservation(app, &request)?).await?;
    let body = read_body(app, request).await?;
    admission.shrink_to(body.len());
    let body = Bytes::from(normalize_completion(&body)?);
    let ran = app.pool.run(admission, move |mut slot| async move {
        let started = Instant::now();
        let result = slot.on_job_complete(&job_id, &body).await.unwrap_or(Ok(()));
        let duration_ms = started.elapsed().as_secs_f64() * 1e3;
        match &result {
            Ok(()) => tracing::info!(job_id, duration_ms, outcome = "succeeded", "on-job-complete"),
            Err(f) => tracing::warn!(job_id, duration_ms, outcome = f.kind.as_str(), error = %f.message, "on-job-complete failed"),
        }
        (slot, result.map_err(ApiError::from))
    });
    ran.await.map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(empty(StatusCode::OK))
}
