//! The client side of the contract: what Cortex's dequeuer does to a pod's server.
//!
//! One [`Connection`] per worker, kept alive between batches and re-opened after an
//! error, sends one request at a time. [`wait_ready`] waits for a server's readiness
//! the way the dequeuer does: `GET /healthz` answering 200–399, or, for a server
//! without that route (404), an open TCP port.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Where requests go: `http://host:port[/prefix]`, or `https://…` (TLS, trusting the
/// roots of [`crate::tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    authority: String,
    host: String,
    prefix: String,
    tls: bool,
}

impl Endpoint {
    /// Parses an `http://` or `https://` URL.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(format!("{url:?}: only http:// and https:// are supported, not {other}://")),
            None => return Err(format!("{url:?}: give a full URL such as http://127.0.0.1:8080")),
        };
        let authority = uri.authority().ok_or_else(|| format!("{url:?} has no host"))?;
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let prefix = uri.path().trim_end_matches('/').to_string();
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        Ok(Endpoint { authority: format!("{}:{port}", authority.host()), host, prefix, tls })
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    fn uri(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", if self.tls { "https" } else { "http" }, self.authority, self.prefix)
    }
}

/// A request that got no HTTP answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConnectionError(String);

/// What a server answered. Only the start of the body is kept (the contract ignores
/// answer bodies, and an error message fits in [`Answer::BODY_KEPT`] bytes), unless the
/// connection keeps more of JSON answers ([`Connection::keeping`]).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The status.
    pub status: StatusCode,
    /// `Retry-After` in seconds, when the server sent one.
    pub retry_after: Option<Duration>,
    /// The first bytes of the body.
    pub body: Bytes,
    /// Whether `body` is the whole body.
    pub complete: bool,
    /// Whether the answer says it is JSON (`Content-Type: application/json`).
    pub json: bool,
}

impl Answer {
    /// How much of an answer body is kept.
    pub(crate) const BODY_KEPT: usize = 64 << 10;
}

/// A kept-alive HTTP/1.1 connection to one endpoint.
pub(crate) struct Connection {
    endpoint: Endpoint,
    sender: Option<SendRequest<Full<Bytes>>>,
    body_kept: usize,
}

impl Connection {
    /// A connection, opened on first use, keeping [`Answer::BODY_KEPT`] bytes of each
    /// answer's body.
    pub(crate) fn new(endpoint: Endpoint) -> Connection {
        Connection { endpoint, sender: None, body_kept: Answer::BODY_KEPT }
    }

    /// The same, keeping up to `bytes` of each JSON answer's body (for answers whose
    /// body is the point: a server's results, a job's results); of other answers,
    /// [`Answer::BODY_KEPT`] as ever.
    pub(crate) fn keeping(mut self, bytes: usize) -> Connection {
        self.body_kept = bytes;
        self
    }

    /// Where it goes.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, ConnectionError> {
        if let Some(sender) = &mut self.sender
            && sender.ready().await.is_ok()
        {
            return Ok(self.sender.as_mut().expect("present"));
        }
        self.sender = None;
        let stream = TcpStream::connect(&self.endpoint.authority)
            .await
            .map_err(|e| ConnectionError(format!("cannot connect to {}: {e}", self.endpoint)))?;
        let _ = stream.set_nodelay(true);
        let handshake_failed =
            |e: hyper::Error| ConnectionError(format!("HTTP handshake with {} failed: {e}", self.endpoint));
        let sender = if self.endpoint.tls {
            let name = rustls::pki_types::ServerName::try_from(self.endpoint.host.clone())
                .map_err(|e| ConnectionError(format!("{}: {e}", self.endpoint)))?;
            let stream = tokio_rustls::TlsConnector::from(crate::tls::client_config())
                .connect(name, stream)
                .await
                .map_err(|e| ConnectionError(format!("TLS with {} failed: {e}", self.endpoint)))?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(handshake_failed)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            sender
        } else {
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(handshake_failed)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            sender
        };
        Ok(self.sender.insert(sender))
    }

    /// Sends one request and reads the answer, giving up after `timeout`. Headers
    /// are `(name, value)` pairs added to the request.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, ConnectionError> {
        let mut request = Request::builder()
            .method(method)
            .uri(self.endpoint.uri(path))
            .header(header::HOST, &self.endpoint.authority)
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body)).map_err(|e| ConnectionError(format!("bad request: {e}")))?;
        let endpoint = self.endpoint.to_string();
        let body_kept = self.body_kept;
        let exchange = async {
            let response = self
                .sender()
                .await?
                .send_request(request)
                .await
                .map_err(|e| ConnectionError(format!("request to {endpoint} failed: {e}")))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let json = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
            let body_kept = if json { body_kept } else { body_kept.min(Answer::BODY_KEPT) };
            let mut body = response.into_body();
            let mut kept = Vec::new();
            let complete = loop {
                let Some(frame) = body.frame().await else { break true };
                let frame =
                    frame.map_err(|e| ConnectionError(format!("reading the answer of {endpoint} failed: {e}")))?;
                if let Some(data) = frame.data_ref() {
                    let room = body_kept - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                    if data.len() > room {
                        break false;
                    }
                }
            };
            Ok((Answer { status, retry_after, body: Bytes::from(kept), complete, json }, complete))
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ConnectionError(format!("{endpoint} did not answer within {timeout:?}"))),
        };
        match result {
            Ok((answer, complete)) => {
                if !complete {
                    // The rest of a long body is not read: this connection cannot carry
                    // another request, so the next one opens a new connection.
                    self.sender = None;
                }
                Ok(answer)
            }
            Err(e) => {
                // Whatever state the connection is in, the next request starts afresh.
                self.sender = None;
                Err(e)
            }
        }
    }
}

/// How long a server of the contract is waited for unless said otherwise: by `run`,
/// by `worker`, and by the operator for an API's endpoints.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until `endpoint` is ready, or `timeout` passes: every probe, connection
/// included, ends by that deadline.
async fn wait_ready(endpoint: &Endpoint, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut connection = Connection::new(endpoint.clone());
    let mut last = String::from("no answer yet");
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(format!("{endpoint} was not ready within {timeout:?}: {last}"));
        }
        match connection.send(Method::GET, "/healthz", &[], Bytes::new(), left.min(Duration::from_secs(5))).await {
            Ok(answer) if (200..400).contains(&answer.status.as_u16()) => return Ok(()),
            // No health route: the open port is the readiness signal (Cortex's TCP probe).
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => return Ok(()),
            Ok(answer) => last = format!("GET /healthz answered {}", answer.status),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep_until((tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline)).await;
    }
}

/// Waits until each of `endpoints` is ready (each within `timeout`, in turn), unless
/// `cancel` resolves first: `Ok(false)`. The one readiness wait of `run`, `worker`
/// and the operator.
pub(crate) async fn wait_all_ready(
    endpoints: &[Endpoint],
    timeout: Duration,
    cancel: impl std::future::Future<Output = ()>,
) -> Result<bool, String> {
    tokio::pin!(cancel);
    for endpoint in endpoints {
        tracing::info!(endpoint = %endpoint, timeout_s = timeout.as_secs_f64(), "waiting for the endpoint to be ready");
        tokio::select! {
            ready = wait_ready(endpoint, timeout) => ready?,
            () = &mut cancel => return Ok(false),
        }
        tracing::info!(endpoint = %endpoint, "endpoint ready");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_from_http_urls() {
        let e = Endpoint::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!((e.authority(), e.uri("/")), ("127.0.0.1:9000", "/".to_string()));
        let e = Endpoint::parse("http://localhost/api/").unwrap();
        assert_eq!((e.authority(), e.uri("/on-job-complete")), ("localhost:80", "/api/on-job-complete".to_string()));
        let e = Endpoint::parse("https://operator.example:8443/").unwrap();
        assert_eq!(
            (e.authority(), e.to_string()),
            ("operator.example:8443", "https://operator.example:8443".to_string())
        );
        assert_eq!(Endpoint::parse("https://x").unwrap().authority(), "x:443");
        assert!(Endpoint::parse("ftp://x").unwrap_err().contains("only http:// and https://"));
        assert!(Endpoint::parse("127.0.0.1:80").is_err());
    }

    #[test]
    fn readiness_times_out_with_the_last_reason() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = rt.block_on(wait_ready(&endpoint, Duration::from_millis(300))).unwrap_err();
        assert!(err.contains("was not ready within 300ms: cannot connect"), "{err}");
    }

    #[test]
    fn readiness_ends_at_its_deadline_when_the_server_never_answers() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // Accepts (the kernel's backlog) and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = Endpoint::parse(&format!("http://{}", silent.local_addr().unwrap())).unwrap();
        let err = rt.block_on(wait_ready(&endpoint, Duration::from_millis(300))).unwrap_err();
        assert!(err.contains("was not ready within 300ms") && err.contains("did not answer"), "{err}");
    }
}
