//! The operator's answers, one way each: a body with its type, JSON, an error of a
//! kind (with its status and `Retry-After`), a job's `job_status` and `metrics` as
//! Cortex shows them; and the small helpers every route uses (a query parameter,
//! blocking work off the I/O threads). Shared by the job API's routes and the
//! dashboard's.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, header};
use serde_json::{Value, json};

use super::error::ErrorKind;
use super::service::ServiceError;
use crate::journal::{Counts, JobRow};

pub(crate) type HttpResponse = Response<Full<Bytes>>;

pub(crate) fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> HttpResponse {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> HttpResponse {
    respond(status, "application/json", value.to_string())
}

/// An error answer `{"kind","message"}`, with the kind's status (Cortex's 400 for its
/// own kinds) and, for the kinds that pass, `Retry-After`.
pub(crate) fn error_response(kind: ErrorKind, message: &str) -> HttpResponse {
    let mut response = json_response(kind.status(), &json!({ "kind": kind.wire_name(), "message": message }));
    if let Some(seconds) = kind.retry_after() {
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    }
    response
}

pub(crate) fn service_error(e: &ServiceError) -> HttpResponse {
    let kind = e.kind();
    if kind == ErrorKind::Internal {
        tracing::error!("{e}");
    }
    error_response(kind, &e.to_string())
}

fn round_ms(seconds: f64) -> f64 {
    (seconds.max(0.0) * 1000.0).round() / 1000.0
}

/// A job's `job_status`: the spec, its status and counts.
pub(crate) fn job_status(row: &JobRow, counts: &Counts) -> Value {
    let mut status = row.spec.clone();
    status["status"] = json!(row.status.as_str());
    if let Some(end) = &row.end_time {
        status["end_time"] = json!(end);
    }
    // Ours: its time so far, or in all, to the millisecond (unknown for a job that
    // ended before the journal recorded it so).
    match (row.status.is_terminal(), row.ended_at) {
        (false, _) => status["elapsed_secs"] = json!(round_ms(crate::journal::now() - row.submitted_at)),
        (true, Some(end)) => status["elapsed_secs"] = json!(round_ms(end - row.submitted_at)),
        (true, None) => {}
    }
    if let Some(total) = row.total_batch_count.filter(|&t| t > 0) {
        status["total_batch_count"] = json!(total);
    }
    let ended = counts.succeeded + counts.failed + counts.unhandled;
    let in_queue = if row.status.is_terminal() { 0 } else { row.total_batch_count.unwrap_or(0).saturating_sub(ended) };
    status["batches_in_queue"] = json!(in_queue);
    status["dead_lettered_batch_count"] = json!(counts.failed + counts.unhandled);
    status["on_job_complete"] = json!(match row.hook {
        crate::journal::Hook::Pending => "pending",
        crate::journal::Hook::Running => "running",
        crate::journal::Hook::Done(outcome) => outcome.as_str(),
    });
    if let Some(error) = &row.error {
        status["error"] = json!(error);
    }
    status
}

pub(crate) fn metrics_of(counts: &Counts) -> Value {
    let mut metrics = json!({
        "succeeded": counts.succeeded,
        "failed": counts.failed,
        "average_time_per_batch": counts.average_time_per_batch,
    });
    // Ours: items, when every outcome recorded its items.
    if let Some(items) = &counts.items {
        metrics["items"] = json!(items);
    }
    metrics
}

pub(crate) fn query_param<'a>(request: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    request.uri().query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Runs blocking work (the journal, parsing a submission) off the I/O threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("a blocking task does not panic")
}
