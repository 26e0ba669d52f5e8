//! The operator's HTTP API: Cortex's job routes, exactly, and a few of ours.
//!
//! | route | answers |
//! |---|---|
//! | `POST /batch/<api>[?dryRun=true]` | the job spec (Cortex's `BatchJob`); a dry run, `text/plain` |
//! | `GET /batch/<api>?jobID=<id>` | `{job_status, api_spec, metrics, endpoint}` |
//! | `DELETE /batch/<api>?jobID=<id>` | `{"message":"stopped job <id>"}` |
//! | `GET /batch/<api>/jobs` | ours: `{"jobs": [job_status…]}`, newest first |
//! | `GET /batch/<api>/jobs/<id>/dead-letters` | ours: the job's dead letters, JSON Lines |
//! | `GET /batch/<api>/jobs/<id>/results` | ours: what the job's handlers emitted, JSON Lines |
//! | `POST /batch/<api>/jobs/<id>/dead-letters/retry` | ours: a new job of those batches; its spec |
//! | `GET /healthz`, `GET /metrics` | readiness; Prometheus metrics |
//! | `/ui/`, `/apis`, `/jobs`, `…/timeline`, `POST /admin/reload` | the dashboard's ([`super::dashboard`]) |
//!
//! Errors are Cortex's: status 400 and `{"kind": …, "message": …}` with its kinds; ours
//! are 503 `busy` (with `Retry-After`), 404 for unknown routes, and 401 `unauthorized`
//! (with `WWW-Authenticate: Bearer`) when the operator has tokens ([`super::auth`]) and
//! a request has none that is valid: every route but `/healthz` (and `/metrics`, unless
//! `--metrics-auth`) is checked before anything else is read. An API that is not
//! configured is `resources.api_not_deployed` on every `/batch/<api>…` route.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::answer::{
    HttpResponse, blocking, error_response, job_status, json_response, metrics_of, query_param, respond, service_error,
};
use super::auth::{self, Denied, Tokens};
use super::error::ErrorKind;
use super::service::{Service, ServiceError, Submitted};

/// Cortex's limit on a submission's body.
pub(crate) const MAX_SUBMISSION: usize = 10 << 20;

/// 401 for a request without a valid token; the token itself is never echoed or logged.
fn unauthorized(denied: &Denied) -> HttpResponse {
    let challenge = match denied {
        Denied::Missing => r#"Bearer realm="wasmbatch""#,
        Denied::Malformed => r#"Bearer realm="wasmbatch", error="invalid_request""#,
        Denied::Invalid | Denied::NotFromDashboard => r#"Bearer realm="wasmbatch", error="invalid_token""#,
    };
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({ "kind": ErrorKind::Unauthorized.wire_name(), "message": denied.to_string() }),
    );
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static(challenge));
    response
}

/// What stands in front of the routes: who may call them, and TLS.
pub(crate) struct Front {
    /// The tokens that open the API; `None`: open to all.
    pub tokens: Option<Tokens>,
    /// Whether `/metrics` needs a token too.
    pub metrics_auth: bool,
    /// Serve TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Front {
    /// Whether `request` may go on to its route.
    fn admit(&self, request: &Request<Incoming>) -> Result<(), Denied> {
        let Some(tokens) = &self.tokens else { return Ok(()) };
        match request.uri().path() {
            "/healthz" => return Ok(()),
            "/metrics" if !self.metrics_auth => return Ok(()),
            path if super::dashboard::is_public(request.method(), path) => return Ok(()),
            _ => {}
        }
        let mut values = request.headers().get_all(header::AUTHORIZATION).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(Denied::Malformed);
        }
        if first.is_none() {
            // The dashboard's cookie, when there is no header.
            let cookie =
                request.headers().get_all(header::COOKIE).iter().find_map(|c| auth::cookie_token(c.as_bytes()));
            if let Some(token) = cookie {
                tokens.check_token(&token)?;
                let reads = matches!(*request.method(), Method::GET | Method::HEAD);
                if !reads && !request.headers().contains_key(super::dashboard::UI_HEADER) {
                    return Err(Denied::NotFromDashboard);
                }
                return Ok(());
            }
        }
        tokens.check(first.map(|v| v.as_bytes()))
    }
}

async fn route(service: Arc<Service>, front: Arc<Front>, request: Request<Incoming>) -> HttpResponse {
    if let Err(denied) = front.admit(&request) {
        return unauthorized(&denied);
    }
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let ["batch", api, ..] = parts.as_slice()
        && !service.knows_api(api)
    {
        return service_error(&ServiceError::ApiNotDeployed(api.to_string()));
    }
    if super::dashboard::handles(&method, &parts) {
        let login = super::dashboard::Login { tokens: front.tokens.as_ref(), secure: front.tls.is_some() };
        return super::dashboard::route(service, login, request).await;
    }
    match (method.clone(), parts.as_slice()) {
        (Method::GET | Method::HEAD, ["healthz"]) => respond(StatusCode::OK, "text/plain", "ok\n"),
        (Method::GET, ["metrics"]) => {
            let body = blocking(move || super::render_metrics(&service)).await;
            respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body)
        }
        (Method::POST, ["batch", api]) => submit(service, api.to_string(), request).await,
        (Method::GET, ["batch", api]) => {
            let Some(job_id) = query_param(&request, "jobID").map(str::to_owned) else {
                return error_response(ErrorKind::QueryParamRequired, "query param required: jobID");
            };
            let host =
                request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_string();
            let api = api.to_string();
            blocking(move || match service.job(&api, &job_id) {
                Ok((row, counts)) => json_response(
                    StatusCode::OK,
                    &json!({
                        "job_status": job_status(&row, &counts),
                        "api_spec": service.api_spec(&row.api_name).unwrap_or(json!({"name": row.api_name})),
                        "metrics": metrics_of(&counts),
                        "endpoint": format!("http://{host}/batch/{api}?jobID={job_id}"),
                    }),
                ),
                Err(e) => service_error(&e),
            })
            .await
        }
        (Method::DELETE, ["batch", api]) => {
            let Some(job_id) = query_param(&request, "jobID").map(str::to_owned) else {
                return error_response(ErrorKind::QueryParamRequired, "query param required: jobID");
            };
            let api = api.to_string();
            blocking(move || match service.stop(&api, &job_id) {
                Ok(()) => json_response(StatusCode::OK, &json!({ "message": format!("stopped job {job_id}") })),
                Err(e) => service_error(&e),
            })
            .await
        }
        (Method::GET, ["batch", api, "jobs"]) => {
            let api = api.to_string();
            let limit = query_param(&request, "limit").and_then(|l| l.parse().ok()).unwrap_or(100usize).min(10_000);
            blocking(move || {
                let listed = service.journal().jobs(&api, limit).and_then(|rows| {
                    rows.iter()
                        .map(|row| service.journal().read_counts(&row.job_id).map(|c| job_status(row, &c)))
                        .collect::<std::io::Result<Vec<Value>>>()
                });
                match listed {
                    Ok(jobs) => json_response(StatusCode::OK, &json!({ "jobs": jobs })),
                    Err(e) => service_error(&ServiceError::Journal(e)),
                }
            })
            .await
        }
        (Method::GET, ["batch", api, "jobs", job_id, "dead-letters"]) => {
            let (api, job_id) = (api.to_string(), job_id.to_string());
            blocking(move || {
                let letters =
                    service.job_row(&api, &job_id).and_then(|_| Ok(service.journal().dead_letters(&job_id)?));
                match letters {
                    Ok(letters) => {
                        let mut out = Vec::new();
                        for l in &letters {
                            crate::job::dead_letter::encode_parts(
                                l.index, l.attempts, &l.kind, &l.message, &l.body, &mut out,
                            );
                        }
                        respond(StatusCode::OK, "application/x-ndjson", out)
                    }
                    Err(e) => service_error(&e),
                }
            })
            .await
        }
        (Method::GET, ["batch", api, "jobs", job_id, "results"]) => {
            let (api, job_id) = (api.to_string(), job_id.to_string());
            blocking(move || match service.job_row(&api, &job_id) {
                Ok(_) => match std::fs::read(service.journal().results_path(&job_id)) {
                    Ok(bytes) => respond(StatusCode::OK, "application/x-ndjson", bytes),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        respond(StatusCode::OK, "application/x-ndjson", Vec::new())
                    }
                    Err(e) => service_error(&ServiceError::Journal(e)),
                },
                Err(e) => service_error(&e),
            })
            .await
        }
        (Method::POST, ["batch", api, "jobs", job_id, "dead-letters", "retry"]) => {
            let (api, job_id) = (api.to_string(), job_id.to_string());
            blocking(move || match service.retry_dead_letters(&api, &job_id) {
                Ok(spec) => json_response(StatusCode::OK, &spec),
                Err(e) => service_error(&e),
            })
            .await
        }
        (_, ["batch", ..]) | (_, ["healthz"]) | (_, ["metrics"]) => {
            error_response(ErrorKind::MethodNotAllowed, &format!("method {method} is not allowed on {path}"))
        }
        _ => error_response(ErrorKind::NotFound, &format!("no route for {path}")),
    }
}

async fn submit(service: Arc<Service>, api: String, request: Request<Incoming>) -> HttpResponse {
    let dry_run = query_param(&request, "dryRun").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut keys = request.headers().get_all("idempotency-key").iter();
    let key = match (keys.next(), keys.next()) {
        (None, _) => None,
        (Some(value), None) => match value.to_str() {
            Ok(text) => Some(text.trim().to_string()),
            Err(_) => return error_response(ErrorKind::IdempotencyKeyInvalid, "Idempotency-Key: not visible ASCII"),
        },
        (Some(_), Some(_)) => {
            return error_response(ErrorKind::IdempotencyKeyInvalid, "Idempotency-Key: sent more than once");
        }
    };
    let body = match Limited::new(request.into_body(), MAX_SUBMISSION).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return error_response(ErrorKind::Error, "http: request body too large");
        }
        Err(e) => return error_response(ErrorKind::Error, &format!("cannot read the request body: {e}")),
    };
    match blocking(move || service.submit(&api, &body, dry_run, key.as_deref())).await {
        Ok(Submitted::Job(spec)) => json_response(StatusCode::OK, &spec),
        Ok(Submitted::Replayed(spec)) => {
            let mut response = json_response(StatusCode::OK, &spec);
            response.headers_mut().insert("idempotent-replayed", header::HeaderValue::from_static("true"));
            response
        }
        Ok(Submitted::DryRun(text)) => respond(StatusCode::OK, "text/plain; charset=utf-8", text),
        // A dry run's validation errors are text, as Cortex answers them (JSON parse
        // errors come before its dry-run branch, so they stay JSON).
        Err(ServiceError::Invalid { kind, message }) if dry_run && kind != ErrorKind::Error => {
            respond(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", format!("\n{message}\n"))
        }
        Err(e) => service_error(&e),
    }
}

/// Serves the operator's API on `listener` until `shutdown` resolves, behind `front`
/// (tokens, TLS).
pub(crate) async fn serve(
    listener: TcpListener,
    service: Arc<Service>,
    front: Arc<Front>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let acceptor = front.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, _) = tokio::select! {
            accepted = crate::http::server::accept(&listener) => accepted,
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let (service, front, acceptor) = (service.clone(), front.clone(), acceptor.clone());
        tokio::spawn(async move {
            let handler = service_fn(move |request| {
                let (service, front) = (service.clone(), front.clone());
                async move { Ok::<_, Infallible>(route(service, front, request).await) }
            });
            let builder = {
                let mut builder = http1::Builder::new();
                builder.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
                builder
            };
            match acceptor {
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), handler).await;
                }
                Some(acceptor) => {
                    // The handshake has the header timeout's deadline too.
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = builder.serve_connection(TokioIo::new(tls), handler).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
    }
}
