//! The server of the container contract (and of `/metrics`).
//!
//! [`serve`] takes an already-bound listener and a shutdown future (so tests bind
//! `127.0.0.1:0` and drive the real server). Each connection is served by hyper on the
//! tokio runtime; each batch goes to the [`WorkerPool`] and the connection awaits the
//! answer. On shutdown the listener is dropped at once (new connections are refused),
//! `/healthz` turns 503 for connections still open, and the server returns when every
//! request in flight has been answered.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use super::batch::{check_batch, normalize_completion};
use super::error::ApiError;
use crate::metrics::Metrics;
use crate::pool::{Busy, WorkerPool};

/// The header carrying the job ID.
pub const JOB_ID_HEADER: &str = "x-cortex-job-id";

/// Settings of the HTTP side.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// The job ID used when a request has no `X-Cortex-Job-ID` (the spec's `job_id`).
    pub default_job_id: Option<String>,
    /// How long a client may take to send its request headers.
    pub header_timeout: Duration,
}

struct App {
    pool: WorkerPool,
    config: ServerConfig,
    draining: AtomicBool,
    /// Numbers the batches this server received, to tag their log lines.
    next_batch: AtomicU64,
}

type HttpResponse = Response<Full<Bytes>>;

/// Serves the contract on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    pool: WorkerPool,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = Arc::new(App { pool, config, draining: AtomicBool::new(false), next_batch: AtomicU64::new(0) });
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let header_timeout = app.config.header_timeout;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |request| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(route(&app, request, peer).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    app.draining.store(true, Ordering::SeqCst);
    tracing::info!(in_flight = app.pool.in_flight(), "shutting down: no new connections, finishing requests in flight");
    graceful.shutdown().await;
    tracing::info!("all requests answered; stopped");
    Ok(())
}

async fn route(app: &App, request: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let result = match (path.as_str(), &method) {
        ("/", &Method::POST) => handle_batch(app, request).await,
        ("/on-job-complete", &Method::POST) => handle_completion(app, request).await,
        ("/healthz", &Method::GET | &Method::HEAD) => Ok(health(app)),
        ("/metrics", &Method::GET) => Ok(metrics_response(app.pool.plugin().metrics())),
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
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
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
        tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
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

fn job_id(app: &App, request: &Request<Incoming>) -> Result<String, ApiError> {
    let header = request.headers().get(JOB_ID_HEADER).map(|v| {
        v.to_str().map(str::trim).map_err(|_| ApiError::InvalidBatch("X-Cortex-Job-ID is not valid text".into()))
    });
    match header {
        Some(Ok(id)) if !id.is_empty() => Ok(id.to_owned()),
        Some(Err(e)) => Err(e),
        _ => app.config.default_job_id.clone().ok_or(ApiError::MissingJobId),
    }
}

async fn read_body(app: &App, request: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = app.config.max_body;
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge { limit }),
        Err(e) => Err(ApiError::BodyRead(e.to_string())),
    }
}

async fn handle_batch(app: &App, request: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    if app.draining.load(Ordering::SeqCst) {
        return Err(ApiError::Draining);
    }
    let job_id = job_id(app, &request)?;
    let body = read_body(app, request).await?;
    let received = Instant::now();
    let batch = app.next_batch.fetch_add(1, Ordering::Relaxed);
    let receiver = app
        .pool
        .try_run(move |worker| {
            let metrics = worker.plugin().metrics().clone();
            let items = check_batch(&body).inspect_err(|_| {
                metrics.attempt_failed("invalid_input");
                metrics.batch_failed(&job_id);
            })?;
            let started = Instant::now();
            let result = worker.instance().and_then(|instance| instance.handle(&job_id, batch, &body));
            let api_name = worker.plugin().api_name();
            let elapsed = started.elapsed();
            let queued_ms = started.duration_since(received).as_secs_f64() * 1e3;
            let duration_ms = elapsed.as_secs_f64() * 1e3;
            match &result {
                Ok(()) => {
                    metrics.batch_succeeded(&job_id, elapsed);
                    tracing::info!(
                        api_name,
                        job_id,
                        batch,
                        items,
                        duration_ms,
                        queued_ms,
                        outcome = "succeeded",
                        "batch"
                    )
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
            result.map_err(ApiError::from)
        })
        .map_err(|Busy| ApiError::Busy)?;
    receiver.await.map_err(|_| ApiError::Internal("the worker stopped without answering".into()))??;
    Ok(empty(StatusCode::OK))
}

async fn handle_completion(app: &App, request: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    if !app.pool.plugin().capabilities().on_job_complete {
        return Err(ApiError::NoHook);
    }
    let job_id = job_id(app, &request)?;
    let body = normalize_completion(&read_body(app, request).await?)?;
    let receiver = app
        .pool
        .try_run(move |worker| {
            let started = Instant::now();
            let result = worker
                .instance()
                .and_then(|instance| instance.on_job_complete(&job_id, &body).unwrap_or(Ok(())));
            let duration_ms = started.elapsed().as_secs_f64() * 1e3;
            match &result {
                Ok(()) => tracing::info!(job_id, duration_ms, outcome = "succeeded", "on-job-complete"),
                Err(f) => tracing::warn!(job_id, duration_ms, outcome = f.kind.as_str(), error = %f.message, "on-job-complete failed"),
            }
            result.map_err(ApiError::from)
        })
        .map_err(|Busy| ApiError::Busy)?;
    receiver.await.map_err(|_| ApiError::Internal("the worker stopped without answering".into()))??;
    Ok(empty(StatusCode::OK))
}
