//! The dashboard: a page at `/ui/` (HTML, a script and a style sheet written for it,
//! embedded in the binary: nothing is fetched from elsewhere), and the reads it needs
//! beside Cortex's job API.
//!
//! | route | answers |
//! |---|---|
//! | `GET /`, `GET /ui` | a redirect to `/ui/` |
//! | `GET /ui/`, `/ui/app.js`, `/ui/app.css` | the page (open to all: it holds no data) |
//! | `POST /ui/login` | `{"token"}` → the session cookie ([`auth::session_cookie`]) |
//! | `POST /ui/logout` | the cookie, expired |
//! | `GET /apis` | the APIs (handler, version, limits, grants), the worker budget, jobs by status |
//! | `GET /jobs?api=&status=&offset=&limit=` | a page of jobs, newest first, with counts, and the total |
//! | `GET /batch/<api>/jobs/<id>/timeline` | batches a second and batch-time percentiles over the job's life |
//! | `GET /batch/<api>/jobs/<id>/dead-letters/summary?offset=&limit=` | a page of dead letters with their first bytes |
//! | `POST /admin/reload` | re-reads the configuration file (see `service::apis`) |
//!
//! Everything but the page itself is behind the job API's tokens when it has them: a
//! request carries `Authorization: Bearer`, or the cookie the login sets (`HttpOnly`,
//! `SameSite=Strict`); a change made with the cookie must also carry
//! [`UI_HEADER`], which a page of another site cannot send without the operator's
//! consent (it answers no CORS preflight).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use super::answer::{
    HttpResponse, blocking, error_response, job_status, json_response, metrics_of, query_param, respond, service_error,
};
use super::auth::{self, Denied, Tokens};
use super::error::ErrorKind;
use super::service::{Service, ServiceError};
use crate::job::status::JobState;
use crate::journal::JobFilter;

/// The header the dashboard's changes carry.
pub(crate) const UI_HEADER: &str = "x-wasmbatch-ui";

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// Jobs on a page at most.
const MAX_PAGE: u64 = 500;
/// Bytes of a dead letter's batch shown.
const HEAD: usize = 200;

/// Whether a request needs no token: the page, its assets, logging in and out.
pub(crate) fn is_public(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD => matches!(path, "/" | "/ui" | "/ui/" | "/ui/app.js" | "/ui/app.css"),
        Method::POST => matches!(path, "/ui/login" | "/ui/logout"),
        _ => false,
    }
}

/// Whether the dashboard answers `method` on `parts` (the path's segments).
pub(crate) fn handles(method: &Method, parts: &[&str]) -> bool {
    matches!(
        (method, parts),
        (&Method::GET | &Method::HEAD, [""] | ["ui"] | ["ui", ""] | ["ui", "app.js"] | ["ui", "app.css"])
            | (&Method::POST, ["ui", "login"] | ["ui", "logout"] | ["admin", "reload"])
            | (&Method::GET, ["apis"] | ["jobs"] | ["batch", _, "jobs", _, "timeline"])
            | (&Method::GET, ["batch", _, "jobs", _, "dead-letters", "summary"])
    )
}

fn redirect(to: &'static str) -> HttpResponse {
    let mut response = respond(StatusCode::SEE_OTHER, "text/plain", format!("see {to}\n"));
    response.headers_mut().insert(header::LOCATION, header::HeaderValue::from_static(to));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    let mut response = respond(StatusCode::OK, content_type, Bytes::from_static(body.as_bytes()));
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    response
}

fn bad_query(message: String) -> ServiceError {
    ServiceError::Invalid { kind: ErrorKind::Error, message }
}

/// A number in the query, or its default; anything else is a precise error.
fn number(request: &Request<Incoming>, name: &str, default: u64, max: u64) -> Result<u64, ServiceError> {
    match query_param(request, name) {
        None | Some("") => Ok(default),
        Some(text) => match text.parse::<u64>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(bad_query(format!("query param {name}: a whole number from 0 to {max}, got {text:?}"))),
        },
    }
}

/// What a login is checked against.
pub(crate) struct Login<'a> {
    /// The operator's tokens; `None`: open to all.
    pub tokens: Option<&'a Tokens>,
    /// Whether it serves TLS (the cookie is then `Secure`).
    pub secure: bool,
}

/// Serves the dashboard's route for `request` (one [`handles`] said yes to).
pub(crate) async fn route(service: Arc<Service>, front: Login<'_>, request: Request<Incoming>) -> HttpResponse {
    let path = request.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (request.method().clone(), parts.as_slice()) {
        (_, [""]) | (_, ["ui"]) => redirect("/ui/"),
        (_, ["ui", ""]) => asset("text/html; charset=utf-8", INDEX),
        (_, ["ui", "app.js"]) => asset("text/javascript; charset=utf-8", SCRIPT),
        (_, ["ui", "app.css"]) => asset("text/css; charset=utf-8", STYLE),
        (_, ["ui", "login"]) => login(&front, request).await,
        (_, ["ui", "logout"]) => {
            let mut response = json_response(StatusCode::OK, &json!({"message": "logged out"}));
            let expired = format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0", auth::COOKIE);
            response.headers_mut().insert(header::SET_COOKIE, header::HeaderValue::from_str(&expired).expect("ASCII"));
            response
        }
        (_, ["admin", "reload"]) => {
            blocking(move || match service.reload_file() {
                Ok(reloaded) => json_response(StatusCode::OK, &json!(reloaded)),
                Err(e) => service_error(&e),
            })
            .await
        }
        (_, ["apis"]) => blocking(move || apis(&service)).await,
        (_, ["jobs"]) => {
            let filter = match job_filter(&service, &request) {
                Ok(filter) => filter,
                Err(e) => return service_error(&e),
            };
            blocking(move || match service.journal().jobs_page(&filter) {
                Ok(page) => {
                    let jobs: Vec<Value> = page
                        .jobs
                        .iter()
                        .map(|(row, counts)| json!({"job_status": job_status(row, counts), "metrics": metrics_of(counts)}))
                        .collect();
                    json_response(
                        StatusCode::OK,
                        &json!({"jobs": jobs, "total": page.total, "offset": filter.offset, "limit": filter.limit}),
                    )
                }
                Err(e) => service_error(&ServiceError::Journal(e)),
            })
            .await
        }
        (_, ["batch", api, "jobs", job_id, "timeline"]) => {
            let (api, job_id) = (api.to_string(), job_id.to_string());
            blocking(move || {
                match service.job_row(&api, &job_id).and_then(|_| Ok(service.journal().timeline(&job_id)?)) {
                    Ok(timeline) => json_response(StatusCode::OK, &json!(timeline)),
                    Err(e) => service_error(&e),
                }
            })
            .await
        }
        (_, ["batch", api, "jobs", job_id, "dead-letters", "summary"]) => {
            let page = number(&request, "offset", 0, u64::MAX >> 1)
                .and_then(|offset| Ok((offset, number(&request, "limit", 50, MAX_PAGE)?)));
            let (offset, limit) = match page {
                Ok(page) => page,
                Err(e) => return service_error(&e),
            };
            let (api, job_id) = (api.to_string(), job_id.to_string());
            blocking(move || {
                let heads = service
                    .job_row(&api, &job_id)
                    .and_then(|_| Ok(service.journal().dead_letter_heads(&job_id, offset, limit, HEAD)?));
                match heads {
                    Ok((letters, total)) => {
                        let letters: Vec<Value> = letters
                            .iter()
                            .map(|(l, size)| {
                                json!({
                                    "index": l.index,
                                    "attempts": l.attempts,
                                    "kind": l.kind,
                                    "message": l.message,
                                    "head": String::from_utf8_lossy(&l.body),
                                    "size": size,
                                })
                            })
                            .collect();
                        json_response(StatusCode::OK, &json!({"dead_letters": letters, "total": total}))
                    }
                    Err(e) => service_error(&e),
                }
            })
            .await
        }
        _ => error_response(ErrorKind::NotFound, &format!("no route for {path}")),
    }
}

/// The filter of `GET /jobs`: `api` (a hosted API or one with jobs), `status` (state
/// names, comma-separated), `offset` and `limit`.
fn job_filter(service: &Service, request: &Request<Incoming>) -> Result<JobFilter, ServiceError> {
    let api = query_param(request, "api").filter(|a| !a.is_empty()).map(str::to_owned);
    if let Some(api) = &api
        && !service.knows_api(api)
    {
        return Err(ServiceError::ApiNotDeployed(api.clone()));
    }
    let mut states = Vec::new();
    for name in query_param(request, "status").unwrap_or("").split(',').filter(|s| !s.is_empty()) {
        match JobState::parse(name) {
            Some(state) => states.push(state),
            None => {
                let known: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
                return Err(bad_query(format!("query param status: {name:?} is not one of {}", known.join(", "))));
            }
        }
    }
    let offset = number(request, "offset", 0, u64::MAX >> 1)?;
    let limit = number(request, "limit", 50, MAX_PAGE)?;
    Ok(JobFilter { api, states, offset, limit })
}

/// `GET /apis`: what the service hosts and how busy it is.
fn apis(service: &Service) -> HttpResponse {
    let apis: Vec<Value> = service.api_names().iter().filter_map(|name| service.api_spec(name)).collect();
    let (in_use, total) = service.workers();
    let counts = match service.journal().status_counts() {
        Ok(counts) => counts,
        Err(e) => return service_error(&ServiceError::Journal(e)),
    };
    let jobs: serde_json::Map<String, Value> = JobState::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), json!(counts.iter().find(|(c, _)| c == s).map_or(0, |(_, n)| *n))))
        .collect();
    let config = service.config();
    json_response(
        StatusCode::OK,
        &json!({
            "apis": apis,
            "workers": {"in_use": in_use, "total": total},
            "max_running_jobs": config.max_running_jobs,
            "jobs": jobs,
            "version": env!("CARGO_PKG_VERSION"),
        }),
    )
}

/// `POST /ui/login` with `{"token": …}`: the session cookie for a valid token.
async fn login(front: &Login<'_>, request: Request<Incoming>) -> HttpResponse {
    let body = match Limited::new(request.into_body(), 8 << 10).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return error_response(ErrorKind::Error, "the login body is at most 8 KiB of JSON: {\"token\": \"…\"}");
        }
    };
    let Some(tokens) = front.tokens else {
        return json_response(StatusCode::OK, &json!({"message": "this operator needs no token"}));
    };
    let token = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => match map.get("token") {
            Some(Value::String(token)) => token.clone(),
            _ => return error_response(ErrorKind::Error, "the login body is {\"token\": \"…\"}: no string \"token\""),
        },
        _ => return error_response(ErrorKind::Error, "the login body is {\"token\": \"…\"}: not a JSON object"),
    };
    if let Err(denied) = tokens.check_token(token.trim().as_bytes()) {
        let denied = if denied == Denied::Malformed { Denied::Invalid } else { denied };
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"kind": ErrorKind::Unauthorized.wire_name(), "message": denied.to_string()}),
        );
    }
    let mut response = json_response(StatusCode::OK, &json!({"message": "logged in"}));
    let cookie = auth::session_cookie(token.trim(), front.secure);
    response.headers_mut().insert(header::SET_COOKIE, header::HeaderValue::from_str(&cookie).expect("hex and ASCII"));
    response
}
