//! Errors of the HTTP layer and the one function that maps them to responses.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};
use serde_json::json;

use crate::failure::{Failure, FailureKind};

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not a JSON array (or not JSON at all).
    #[error("{0}")]
    InvalidBatch(String),
    /// The on-job-complete body is neither `job_complete` nor a JSON object.
    #[error("{0}")]
    InvalidCompletion(String),
    /// No `X-Cortex-Job-ID` header and no `job_id` in the job spec.
    #[error("missing X-Cortex-Job-ID header, and the job spec has no job_id to fall back on")]
    MissingJobId,
    /// The body is longer than `--max-body`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body could not be read from the connection.
    #[error("cannot read the request body: {0}")]
    BodyRead(String),
    /// The client took longer than `--body-timeout` to send the body.
    #[error("the request body was not received within {timeout:?}")]
    BodyTimeout {
        /// The limit.
        timeout: std::time::Duration,
    },
    /// A header has a value we cannot use.
    #[error("{0}")]
    InvalidHeader(String),
    /// No room in the worker pool within the queue timeout.
    #[error("every instance is busy and the wait queue is full; retry later")]
    Busy,
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Draining,
    /// The guest failed.
    #[error("{0}")]
    Guest(Failure),
    /// The plugin has no on-job-complete hook.
    #[error("the plugin has no on_job_complete hook")]
    NoHook,
    /// Unknown path.
    #[error("no route for {0}")]
    NotFound(String),
    /// Known path, wrong method.
    #[error("method {method} is not allowed on {path}; use {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path.
        path: String,
        /// The method(s) the path takes.
        allow: &'static str,
    },
    /// The worker went away without answering (a bug, or a panic in the host).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        ApiError::Guest(failure)
    }
}

impl ApiError {
    /// The HTTP status and the `kind` string of the JSON body.
    pub fn status_and_kind(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidBatch(_)
            | ApiError::InvalidCompletion(_)
            | ApiError::BodyRead(_)
            | ApiError::InvalidHeader(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
            ApiError::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            ApiError::MissingJobId => (StatusCode::BAD_REQUEST, "missing_job_id"),
            ApiError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
            // The guest judged the batch unusable: a caller mistake, retrying won't help.
            ApiError::Guest(f) if f.kind == FailureKind::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input"),
            ApiError::Guest(f) => (StatusCode::INTERNAL_SERVER_ERROR, f.kind.as_str()),
            ApiError::NoHook | ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The response: the status, and `{"error":{"kind":…,"message":…}}` (plus the exit
    /// code and stderr tail of a guest failure, when there are any).
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let (status, kind) = self.status_and_kind();
        let mut error = json!({ "kind": kind, "message": self.to_string() });
        if let ApiError::Guest(failure) = &self {
            error["message"] = json!(failure.message);
            if let FailureKind::Exit(code) = failure.kind {
                error["exit_code"] = json!(code);
            }
            if !failure.stderr_tail.is_empty() {
                error["stderr"] = json!(failure.stderr_tail);
            }
        }
        if status.is_server_error() && !matches!(self, ApiError::Guest(_) | ApiError::Busy | ApiError::Draining) {
            tracing::error!("{self}");
        }
        let mut response = Response::new(Full::new(Bytes::from(json!({ "error": error }).to_string())));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
        }
        if matches!(status, StatusCode::SERVICE_UNAVAILABLE) {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: ApiError) -> u16 {
        e.into_response().status().as_u16()
    }

    #[test]
    fn each_error_has_its_status() {
        assert_eq!(status(ApiError::InvalidBatch("x".into())), 400);
        assert_eq!(status(ApiError::InvalidCompletion("x".into())), 400);
        assert_eq!(status(ApiError::BodyRead("x".into())), 400);
        assert_eq!(status(ApiError::MissingJobId), 400);
        assert_eq!(status(ApiError::InvalidHeader("x".into())), 400);
        assert_eq!(status(ApiError::BodyTimeout { timeout: std::time::Duration::from_secs(1) }), 408);
        assert_eq!(status(ApiError::BodyTooLarge { limit: 1 }), 413);
        assert_eq!(status(ApiError::Busy), 503);
        assert_eq!(status(ApiError::Draining), 503);
        assert_eq!(status(ApiError::NoHook), 404);
        assert_eq!(status(ApiError::NotFound("/x".into())), 404);
        assert_eq!(status(ApiError::MethodNotAllowed { method: "GET".into(), path: "/".into(), allow: "POST" }), 405);
        assert_eq!(status(ApiError::Internal("x".into())), 500);
        for kind in [
            FailureKind::Timeout,
            FailureKind::OutOfMemory,
            FailureKind::Panic,
            FailureKind::Trap,
            FailureKind::Exit(3),
            FailureKind::GuestError,
        ] {
            assert_eq!(status(ApiError::Guest(Failure::new(kind, "m"))), 500, "{kind}");
        }
        assert_eq!(status(ApiError::Guest(Failure::new(FailureKind::InvalidInput, "m"))), 400);
    }

    #[test]
    fn guest_failures_carry_kind_message_exit_code_and_stderr() {
        let mut failure = Failure::new(FailureKind::Exit(3), "the guest exited with code 3");
        failure.stderr_tail = "bye\n".into();
        let response = ApiError::Guest(failure).into_response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = futures_body(response);
        assert_eq!(
            body,
            json!({"error": {"kind": "exit", "message": "the guest exited with code 3", "exit_code": 3, "stderr": "bye\n"}})
        );
    }

    #[test]
    fn method_not_allowed_names_the_allowed_method() {
        let response =
            ApiError::MethodNotAllowed { method: "GET".into(), path: "/".into(), allow: "POST" }.into_response();
        assert_eq!(response.headers()[header::ALLOW], "POST");
    }

    fn futures_body(response: Response<Full<Bytes>>) -> serde_json::Value {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = rt.block_on(response.into_body().collect()).unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }
}
