//! What a handler can reach beyond its batch, through the host: outbound HTTP,
//! objects (S3, GCS, Azure, files), results, and single failed items. Each is granted
//! per API by whoever runs the plugin (`allow_http`, `allow_read`, `allow_write`); a
//! plugin that uses one it was not granted is refused at load time, and a call outside
//! its grant is an [`Error`] with the host's reason.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Context, Error, Result, sys};

/// An outbound HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// An absolute `http` or `https` URL, under a host the API may call.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
}

impl Request {
    /// A request with `method` to `url`, no headers, no body.
    pub fn new(method: &str, url: impl Into<String>) -> Request {
        Request { method: method.to_string(), url: url.into(), headers: Vec::new(), body: Vec::new() }
    }

    /// `GET url`.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new("GET", url)
    }

    /// `POST url` with `body`.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Request {
        Request { body: body.into(), ..Request::new("POST", url) }
    }

    /// `POST url` with `value` as JSON (and its content type).
    pub fn post_json(url: impl Into<String>, value: &impl Serialize) -> Result<Request> {
        let body = serde_json::to_vec(value).map_err(|e| Error::msg(format!("the request body: {e}")))?;
        Ok(Request::post(url, body).header("content-type", "application/json"))
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// An HTTP answer (any status: a 404 or a 500 is an answer, not an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::msg(format!("the answer's body is not the JSON expected: {e}")))
    }
}

#[derive(serde::Deserialize)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

/// The host's error for a capability call, as an [`Error`].
fn failed(what: &str, code: i32, message: Vec<u8>) -> Error {
    let message = String::from_utf8_lossy(&message);
    match code {
        -4 => Error::msg(format!("{what}: the plugin could not allocate the answer")),
        _ => Error::msg(format!("{what}: {message}")),
    }
}

impl Context<'_> {
    /// Sends an HTTP request to a host the API may call, within the host's time limit
    /// (which the batch's deadline may shorten) and answer size limit.
    pub fn http(&self, request: &Request) -> Result<Response> {
        let head = serde_json::json!({
            "method": request.method,
            "url": request.url,
            "headers": request.headers,
        });
        let what = format!("{} {}", request.method, request.url);
        let (code, bytes) = sys::http_request(head.to_string().as_bytes(), &request.body);
        if code == -4 {
            return Err(failed(&what, code, bytes));
        }
        if code < 0 {
            // The host's message names the request already.
            return Err(Error::msg(String::from_utf8_lossy(&bytes)));
        }
        let split = bytes.iter().position(|&b| b == b'\n').unwrap_or(bytes.len());
        let head: Head = serde_json::from_slice(&bytes[..split])
            .map_err(|e| Error::msg(format!("{what}: the host's answer is malformed: {e}")))?;
        let body = bytes.get(split + 1..).map(<[u8]>::to_vec).unwrap_or_default();
        Ok(Response { status: head.status, headers: head.headers, body })
    }

    /// The whole object at `url` (`s3://bucket/key`, …), under a prefix the API may read.
    /// Larger objects than the host's answer limit: read them with [`Context::read`].
    pub fn get(&self, url: &str) -> Result<Vec<u8>> {
        match sys::object_get(url) {
            (0, bytes) => Ok(bytes),
            (code, message) => Err(failed("reading an object", code, message)),
        }
    }

    /// `len` bytes of the object at `url` from `offset` (fewer at its end, none past it):
    /// read a large object piece by piece.
    pub fn read(&self, url: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        match sys::object_read(url, offset, len) {
            (0, bytes) => Ok(bytes),
            (code, message) => Err(failed("reading an object", code, message)),
        }
    }

    /// Writes `data` as the object at `url`, under a prefix the API may write; whole or
    /// not at all.
    pub fn put(&self, url: &str, data: impl AsRef<[u8]>) -> Result<()> {
        match sys::object_put(url, data.as_ref()) {
            (0, _) => Ok(()),
            (code, message) => Err(failed("writing an object", code, message)),
        }
    }

    /// Adds `value` to the batch's results. The host keeps a batch's results once, even
    /// when the batch runs again (`wasmbatch run` and the operator write them to the
    /// job's `results.jsonl`). A handler may also return them: `Result<Vec<R>>`.
    pub fn emit(&self, value: &impl Serialize) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::msg(format!("a result: {e}")))?;
        match sys::emit(&bytes) {
            0 => Ok(()),
            -2 => Err(Error::msg("the batch's results are over the host's limit")),
            _ => Err(Error::msg("a result is not JSON")),
        }
    }

    /// Fails item `index` of the batch (from 0) with `message`, and only it: when the
    /// handler returns `Ok`, the other items count as done and the failed ones are tried
    /// again as a smaller batch, then dead-lettered with their own messages.
    pub fn fail_item(&self, index: usize, message: impl std::fmt::Display) {
        sys::item_error(u32::try_from(index).unwrap_or(u32::MAX), &message.to_string());
    }

    /// Rejects item `index` of the batch (from 0) with `message`: the item can never
    /// succeed (empty, malformed), so it is not tried again. When every item left to
    /// retry is rejected, they are dead-lettered at once, kind `items_rejected`; items
    /// rejected beside items that failed are tried again with them.
    pub fn reject_item(&self, index: usize, message: impl std::fmt::Display) {
        sys::item_reject(u32::try_from(index).unwrap_or(u32::MAX), &message.to_string());
    }
}

/// What a handler returns besides success: nothing, or results.
pub trait Output {
    /// Hands the results to the host.
    fn emit(self, ctx: &Context<'_>) -> Result<()>;
}

impl Output for () {
    fn emit(self, _ctx: &Context<'_>) -> Result<()> {
        Ok(())
    }
}

impl<R: Serialize> Output for Vec<R> {
    fn emit(self, ctx: &Context<'_>) -> Result<()> {
        self.iter().try_for_each(|r| ctx.emit(r))
    }
}
