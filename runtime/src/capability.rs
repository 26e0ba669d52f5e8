//! What a guest may reach beyond its batch: nothing, unless granted.
//!
//! A grant is given per API (the operator's configuration) or per process (`run`,
//! `serve`, `worker` flags), and is checked twice: at load time, a module that imports
//! a capability's host function without its grant is refused with the grant's name;
//! at call time, every URL is checked against the grants before anything is sent.
//!
//! - **Outbound HTTP** (`http_request`): to the hosts listed by `allow_http`, each
//!   `[scheme://]host[:port][/path-prefix]` — no scheme means `https`, no port the
//!   scheme's default, `:*` any port, a host `*.example.com` any subdomain. Redirects
//!   are not followed (the guest gets the 3xx). Each call has a timeout (the smaller of
//!   `http_timeout` and what is left of the batch's deadline) and a response size limit.
//! - **Objects** (`object_get`, `object_read`, `object_put`): under the URL prefixes of
//!   `allow_read` and `allow_write` (`s3://bucket/prefix/`, `gs://…`, `az://…`,
//!   `file:///dir/`), through `crate::objects`.

use std::io::Read as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use url::Url;

/// Host functions that need a grant, and the grant's name.
pub const GRANTED_IMPORTS: &[(&str, &str)] = &[
    ("http_request", "allow_http"),
    ("object_get", "allow_read"),
    ("object_read", "allow_read"),
    ("object_put", "allow_write"),
];

/// One host a guest may send HTTP requests to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGrant {
    scheme: String,
    host: String,
    /// `None`: any port.
    port: Option<u16>,
    path: String,
    text: String,
}

impl HostGrant {
    /// The grant as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Parses `[scheme://]host[:port][/path-prefix]`.
    pub fn parse(text: &str) -> Result<HostGrant, String> {
        let bad = |why: &str| format!("allowed host {text:?}: {why}");
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("https".to_string(), text),
        };
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, "*")) => (host, None),
            Some((host, port)) => (host, Some(port.parse::<u16>().map_err(|_| bad("the port is not a number"))?)),
            None => (authority, Some(if scheme == "http" { 80 } else { 443 })),
        };
        let host = host.to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        if bare.is_empty() || bare.contains(['*', '@', ' ']) {
            return Err(bad("give a host name or address (a leading `*.` for its subdomains)"));
        }
        Ok(HostGrant { scheme, host, port, path: path.to_string(), text: text.to_string() })
    }

    fn allows(&self, url: &Url) -> bool {
        let Some(host) = url.host_str().map(|h| h.to_ascii_lowercase()) else { return false };
        let host_ok = match self.host.strip_prefix("*.") {
            Some(domain) => {
                host.len() > domain.len() && host.ends_with(domain) && host[..host.len() - domain.len()].ends_with('.')
            }
            None => host == self.host,
        };
        host_ok
            && url.scheme() == self.scheme
            && self.port.is_none_or(|p| url.port_or_known_default() == Some(p))
            && url.path().starts_with(&self.path)
    }
}

pub use crate::confine::CallError;
use crate::confine::{Prefixes, Target};

/// What the guests of one API may reach.
#[derive(Debug)]
pub struct Grants {
    /// Hosts of outbound HTTP.
    pub http: Vec<HostGrant>,
    /// URL prefixes objects may be read under.
    pub read: Prefixes,
    /// URL prefixes objects may be written under.
    pub write: Prefixes,
    /// Limit of one HTTP call (the batch's deadline may cut it shorter).
    pub http_timeout: Duration,
    /// Largest response body (and largest object read whole) kept, in bytes.
    pub max_response: usize,
    agent: OnceLock<ureq::Agent>,
}

impl Default for Grants {
    fn default() -> Self {
        Grants::none()
    }
}

impl Grants {
    /// Default of [`Grants::http_timeout`].
    pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default of [`Grants::max_response`].
    pub const DEFAULT_MAX_RESPONSE: usize = 16 << 20;
}

/// Grants are equal when they allow the same (the client they share is not compared).
impl PartialEq for Grants {
    fn eq(&self, other: &Grants) -> bool {
        self.http == other.http
            && self.read == other.read
            && self.write == other.write
            && self.http_timeout == other.http_timeout
            && self.max_response == other.max_response
    }
}

/// An HTTP request as a guest describes it (the JSON of `http_request`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    /// `GET`, `POST`, …; `GET` when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// An absolute `http` or `https` URL.
    pub url: String,
    /// Header names and values, in order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    /// Its status.
    pub status: u16,
    /// Its headers, in order.
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Vec<u8>,
}

impl Grants {
    /// Nothing granted.
    pub fn none() -> Grants {
        Grants {
            http: Vec::new(),
            read: Prefixes::default(),
            write: Prefixes::default(),
            http_timeout: Grants::DEFAULT_HTTP_TIMEOUT,
            max_response: Grants::DEFAULT_MAX_RESPONSE,
            agent: OnceLock::new(),
        }
    }

    /// Grants from their texts; every bad one is named.
    pub fn parse(
        http: &[String],
        read: &[String],
        write: &[String],
        http_timeout: Duration,
        max_response: usize,
    ) -> Result<Grants, Vec<String>> {
        let mut problems = Vec::new();
        let http = http.iter().filter_map(|h| HostGrant::parse(h).map_err(|e| problems.push(e)).ok()).collect();
        let read = Prefixes::parse(read).unwrap_or_else(|e| {
            problems.extend(e);
            Prefixes::default()
        });
        let write = Prefixes::parse(write).unwrap_or_else(|e| {
            problems.extend(e);
            Prefixes::default()
        });
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Grants { http, read, write, http_timeout, max_response, agent: OnceLock::new() })
    }

    /// Whether a module importing `imports` (of the `wasmbatch` module) may load: the
    /// first capability it imports without the grant is named.
    pub fn check_imports<'a>(&self, imports: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
        let mut missing: Vec<String> = Vec::new();
        for name in imports {
            let Some((_, grant)) = GRANTED_IMPORTS.iter().find(|(n, _)| *n == name) else { continue };
            let granted = match *grant {
                "allow_http" => !self.http.is_empty(),
                "allow_read" => !self.read.is_empty(),
                _ => !self.write.is_empty(),
            };
            if !granted {
                missing.push(format!(
                    "the module imports `wasmbatch::{name}`, which needs the grant `{grant}` (`{grant}` in the API's \
                     configuration, or --{} for run, serve and worker)",
                    grant.replace('_', "-")
                ));
            }
        }
        if missing.is_empty() { Ok(()) } else { Err(missing.join("; ")) }
    }

    /// The grants as a human reads them (for logs).
    pub fn describe(&self) -> String {
        let hosts: Vec<&str> = self.http.iter().map(|h| h.text.as_str()).collect();
        format!(
            "http: [{}], read: [{}], write: [{}]",
            hosts.join(", "),
            self.read.texts().join(", "),
            self.write.texts().join(", ")
        )
    }

    /// Sends a guest's HTTP request, if granted, before `deadline`.
    pub fn http(&self, request: &HttpRequest, body: &[u8], deadline: Instant) -> Result<HttpResponse, CallError> {
        let url = Url::parse(&request.url).map_err(|e| CallError::Refused(format!("url {:?}: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CallError::Refused(format!("url {:?}: only http and https", request.url)));
        }
        if !self.http.iter().any(|g| g.allows(&url)) {
            let hosts: Vec<&str> = self.http.iter().map(|h| h.text.as_str()).collect();
            return Err(CallError::Refused(format!(
                "{} is not an allowed host (allowed by `allow_http`: {})",
                url_without_query(&url),
                if hosts.is_empty() { "none".to_string() } else { hosts.join(", ") }
            )));
        }
        let method = request.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(CallError::Refused(format!("method {method:?} is not an HTTP method")));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CallError::Failed("the batch's deadline has passed".into()));
        }
        let timeout = left.min(self.http_timeout);
        let agent = self
            .agent
            .get_or_init(|| ureq::AgentBuilder::new().redirects(0).tls_config(crate::tls::client_config()).build());
        let mut call = agent.request_url(&method, &url).timeout(timeout);
        for (name, value) in &request.headers {
            call = call.set(name, value);
        }
        let shown = url_without_query(&url);
        let answer = match call.send_bytes(body) {
            Ok(answer) | Err(ureq::Error::Status(_, answer)) => answer,
            Err(ureq::Error::Transport(e)) => {
                let timed_out = Instant::now() >= deadline || e.to_string().contains("timed out");
                return Err(CallError::Failed(if timed_out {
                    format!("{method} {shown}: no answer within {timeout:?}")
                } else {
                    format!("{method} {shown}: {e}")
                }));
            }
        };
        let status = answer.status();
        let headers = answer
            .headers_names()
            .into_iter()
            .flat_map(|name| answer.all(&name).into_iter().map(|v| (name.clone(), v.to_string())).collect::<Vec<_>>())
            .collect();
        let mut body = Vec::new();
        let limit = self.max_response;
        answer
            .into_reader()
            .take(limit as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| CallError::Failed(format!("{method} {shown}: reading the answer: {e}")))?;
        if body.len() > limit {
            return Err(CallError::Failed(format!("{method} {shown}: the answer is over the limit of {limit} bytes")));
        }
        Ok(HttpResponse { status, headers, body })
    }

    /// What `url` names, if objects may be read there.
    pub fn may_read(&self, url: &str) -> Result<Target, CallError> {
        self.read.check(url, "read").map_err(|e| name_grant(e, "allow_read"))
    }

    /// What `url` names, if objects may be written there.
    pub fn may_write(&self, url: &str) -> Result<Target, CallError> {
        self.write.check(url, "write").map_err(|e| name_grant(e, "allow_write"))
    }
}

/// A refusal for want of a grant, with the grant's name.
fn name_grant(e: CallError, grant: &str) -> CallError {
    match e {
        CallError::Refused(m) if m.contains("not under a prefix") => {
            CallError::Refused(format!("{m}; the grant is `{grant}`"))
        }
        other => other,
    }
}

fn url_without_query(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_password(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(grant: &str, url: &str) -> bool {
        HostGrant::parse(grant).unwrap().allows(&Url::parse(url).unwrap())
    }

    #[test]
    fn host_grants_match_scheme_host_port_and_path() {
        assert!(allows("api.example.com", "https://api.example.com/v1"));
        assert!(!allows("api.example.com", "http://api.example.com/v1"), "no scheme means https");
        assert!(!allows("api.example.com", "https://api.example.com:8443/"), "the default port only");
        assert!(allows("api.example.com:*", "https://api.example.com:8443/"));
        assert!(allows("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1/x"));
        assert!(!allows("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v2"));
        assert!(allows("*.example.com", "https://a.b.example.com/"));
        assert!(!allows("*.example.com", "https://example.com/"));
        assert!(!allows("*.example.com", "https://badexample.com/"));
        assert!(!allows("example.com", "https://example.com.evil.net/"));
        assert!(HostGrant::parse("ftp://x").is_err());
        assert!(HostGrant::parse("x:notaport").is_err());
        assert!(HostGrant::parse("*").is_err());
    }

    #[test]
    fn imports_need_their_grants() {
        let none = Grants::none();
        assert!(none.check_imports(["log", "batch_id"]).is_ok());
        let e = none.check_imports(["log", "http_request"]).unwrap_err();
        assert!(e.contains("`wasmbatch::http_request`, which needs the grant `allow_http`"), "{e}");
        let both = none.check_imports(["http_request", "object_get"]).unwrap_err();
        assert!(both.contains("allow_http") && both.contains("allow_read"), "{both}");
        assert!(e.contains("--allow-http"), "{e}");
        let e = none.check_imports(["object_put"]).unwrap_err();
        assert!(e.contains("allow_write"), "{e}");
    }

    #[test]
    fn object_urls_must_be_under_a_prefix_without_dot_segments() {
        let grants = Grants::parse(&[], &["s3://bucket/in/".into()], &[], Duration::from_secs(1), 1 << 20).unwrap();
        assert!(grants.may_read("s3://bucket/in/a.jpg").is_ok());
        assert!(grants.may_read("s3://bucket/in/%2e%2e/secret").is_err());
        assert_eq!(grants.may_read("s3://bucket/other").unwrap_err().code(), -1);
        assert!(grants.may_read("s3://bucket/in/../secret").is_err());
        assert!(grants.may_write("s3://bucket/in/a").unwrap_err().message().contains("allowed: none"));
    }
}
