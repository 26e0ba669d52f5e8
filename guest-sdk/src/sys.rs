//! The raw host interface: the `wasmbatch` import module of ABI v1, and nothing else.
//!
//! On `wasm32` these are imports the host provides. On other targets (a plugin's own
//! unit tests, or a native build of the same code for comparison) they fall back to
//! plain process behaviour so that the same source compiles and runs everywhere
//! (natively there is no batch identifier: tests give one with `Context::for_batch`).

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
mod imports {
    #[link(wasm_import_module = "wasmbatch")]
    unsafe extern "C" {
        /// Sets the failure message of the call in progress.
        pub fn set_error(ptr: *const u8, len: usize);
        /// Emits one log line at `level` (0 error … 4 trace).
        pub fn log(level: u32, ptr: *const u8, len: usize);
        /// Records the message of a panic; the guest traps right after.
        pub fn panic(ptr: *const u8, len: usize);
        /// Copies the batch identifier into `ptr` (at most `cap` bytes); returns its length.
        pub fn batch_id(ptr: *mut u8, cap: usize) -> usize;
        /// The attempt number of the batch in progress (1 for the first).
        pub fn attempt() -> u32;
        /// Submits a job; writes its ID (or the error) to `out`, returns its length
        /// (negative for an error).
        pub fn submit_job(
            api_ptr: *const u8,
            api_len: usize,
            job_ptr: *const u8,
            job_len: usize,
            out_ptr: *mut u8,
            out_cap: usize,
        ) -> i32;
        /// Sends an HTTP request; the answer (or the error) in a buffer written at `out`.
        pub fn http_request(
            req_ptr: *const u8,
            req_len: usize,
            body_ptr: *const u8,
            body_len: usize,
            out: *mut [u32; 2],
        ) -> i32;
        /// Reads a whole object; the bytes (or the error) in a buffer written at `out`.
        pub fn object_get(url_ptr: *const u8, url_len: usize, out: *mut [u32; 2]) -> i32;
        /// Reads a range (`[offset, len]`) of an object.
        pub fn object_read(url_ptr: *const u8, url_len: usize, range: *const [u64; 2], out: *mut [u32; 2]) -> i32;
        /// Writes an object.
        pub fn object_put(
            url_ptr: *const u8,
            url_len: usize,
            data_ptr: *const u8,
            data_len: usize,
            out: *mut [u32; 2],
        ) -> i32;
        /// Adds one result (a JSON value) to the batch's results.
        pub fn emit(ptr: *const u8, len: usize) -> i32;
        /// Fails one item of the batch.
        pub fn item_error(index: u32, ptr: *const u8, len: usize);
        /// Rejects one item of the batch: it will not succeed on another attempt.
        pub fn item_reject(index: u32, ptr: *const u8, len: usize);
        /// Starts reading the job's results (on-job-complete); `0`, or `-1` with the
        /// reason in a buffer written at `out`.
        pub fn results_open(out: *mut [u32; 2]) -> i32;
        /// The next result line in a buffer written at `out`: `1`, `0` at the end, `-1`
        /// with the error there.
        pub fn results_next(out: *mut [u32; 2]) -> i32;
    }

    unsafe extern "C" {
        /// Synthesized by wasm-ld: runs the static constructors (WASI preopens, …).
        pub fn __wasm_call_ctors();
    }
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn set_error(message: &str) {
    // SAFETY: the pointer and length describe a live, initialized byte slice.
    unsafe { imports::set_error(message.as_ptr(), message.len()) }
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn log(level: u32, line: &str) {
    // SAFETY: as above.
    unsafe { imports::log(level, line.as_ptr(), line.len()) }
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn panic(message: &str) {
    // SAFETY: as above.
    unsafe { imports::panic(message.as_ptr(), message.len()) }
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn batch_id() -> String {
    let mut buf = vec![0u8; 64];
    loop {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
        let len = unsafe { imports::batch_id(buf.as_mut_ptr(), buf.len()) };
        if len <= buf.len() {
            buf.truncate(len);
            return String::from_utf8_lossy(&buf).into_owned();
        }
        buf.resize(len, 0);
    }
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn attempt() -> u32 {
    // SAFETY: no arguments, no memory.
    unsafe { imports::attempt() }
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn submit_job(api: &str, job: &[u8]) -> Result<String, String> {
    let mut out = vec![0u8; 4096];
    // SAFETY: every pointer and length describes a live buffer.
    let n =
        unsafe { imports::submit_job(api.as_ptr(), api.len(), job.as_ptr(), job.len(), out.as_mut_ptr(), out.len()) };
    let len = (n.unsigned_abs() as usize).min(out.len());
    let text = String::from_utf8_lossy(&out[..len]).into_owned();
    if n >= 0 { Ok(text) } else { Err(text) }
}

/// Takes a buffer the host allocated with `wasmbatch_alloc` and described at `out`.
#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
fn answer(code: i32, out: [u32; 2]) -> (i32, Vec<u8>) {
    let (ptr, len) = (out[0] as usize as *mut u8, out[1] as usize);
    let bytes = if len == 0 || ptr.is_null() {
        Vec::new()
    } else {
        // SAFETY: the host filled `len` bytes it got from `wasmbatch_alloc(len)`, which
        // allocates them as a `Vec<u8>` of capacity `len` does; they are ours now.
        unsafe { Vec::from_raw_parts(ptr, len, len) }
    };
    (code, bytes)
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn http_request(request: &[u8], body: &[u8]) -> (i32, Vec<u8>) {
    let mut out = [0u32; 2];
    // SAFETY: every pointer and length describes a live buffer; `out` is writable.
    let code = unsafe { imports::http_request(request.as_ptr(), request.len(), body.as_ptr(), body.len(), &mut out) };
    answer(code, out)
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn object_get(url: &str) -> (i32, Vec<u8>) {
    let mut out = [0u32; 2];
    // SAFETY: as above.
    let code = unsafe { imports::object_get(url.as_ptr(), url.len(), &mut out) };
    answer(code, out)
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn object_read(url: &str, offset: u64, len: u64) -> (i32, Vec<u8>) {
    let mut out = [0u32; 2];
    let range = [offset, len];
    // SAFETY: as above.
    let code = unsafe { imports::object_read(url.as_ptr(), url.len(), &range, &mut out) };
    answer(code, out)
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn object_put(url: &str, data: &[u8]) -> (i32, Vec<u8>) {
    let mut out = [0u32; 2];
    // SAFETY: as above.
    let code = unsafe { imports::object_put(url.as_ptr(), url.len(), data.as_ptr(), data.len(), &mut out) };
    answer(code, out)
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn emit(value: &[u8]) -> i32 {
    // SAFETY: as above.
    unsafe { imports::emit(value.as_ptr(), value.len()) }
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn item_error(index: u32, message: &str) {
    // SAFETY: as above.
    unsafe { imports::item_error(index, message.as_ptr(), message.len()) }
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn item_reject(index: u32, message: &str) {
    // SAFETY: as above.
    unsafe { imports::item_reject(index, message.as_ptr(), message.len()) }
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn results_open() -> Result<(), String> {
    let mut out = [0u32; 2];
    // SAFETY: `out` is writable.
    let (code, bytes) = answer(unsafe { imports::results_open(&mut out) }, out);
    if code == 0 { Ok(()) } else { Err(reason(code, &bytes)) }
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn results_next() -> Result<Option<Vec<u8>>, String> {
    let mut out = [0u32; 2];
    // SAFETY: `out` is writable.
    let (code, bytes) = answer(unsafe { imports::results_next(&mut out) }, out);
    match code {
        1 => Ok(Some(bytes)),
        0 => Ok(None),
        _ => Err(reason(code, &bytes)),
    }
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
fn reason(code: i32, bytes: &[u8]) -> String {
    if code == -4 { "out of memory for the host's answer".into() } else { String::from_utf8_lossy(bytes).into_owned() }
}

#[cfg(all(target_arch = "wasm32", not(target_env = "p2")))]
pub(crate) fn call_ctors() {
    // SAFETY: called once, from `_initialize`, before any other export runs.
    unsafe { imports::__wasm_call_ctors() }
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static LAST_ERROR: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn set_error(message: &str) {
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(message.to_owned()));
}

/// Native builds only: takes the message the last failed call set.
#[cfg(not(target_arch = "wasm32"))]
pub fn take_error() -> Option<String> {
    LAST_ERROR.with(|e| e.borrow_mut().take())
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn log(level: u32, line: &str) {
    eprintln!("[{}] {line}", crate::Level::from_u32(level).as_str());
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn panic(_message: &str) {}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn call_ctors() {}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn batch_id() -> String {
    String::new()
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn attempt() -> u32 {
    0
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn submit_job(_api: &str, _job: &[u8]) -> Result<String, String> {
    Err("submitting jobs needs the wasmbatch host".into())
}

/// What a capability answers natively: there is no host to ask.
#[cfg(not(target_arch = "wasm32"))]
fn no_host() -> (i32, Vec<u8>) {
    (-1, b"this needs the wasmbatch host (it is not available in a native build)".to_vec())
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn http_request(_request: &[u8], _body: &[u8]) -> (i32, Vec<u8>) {
    no_host()
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn object_get(_url: &str) -> (i32, Vec<u8>) {
    no_host()
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn object_read(_url: &str, _offset: u64, _len: u64) -> (i32, Vec<u8>) {
    no_host()
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn object_put(_url: &str, _data: &[u8]) -> (i32, Vec<u8>) {
    no_host()
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static EMITTED: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
    static ITEM_ERRORS: std::cell::RefCell<Vec<(u32, String)>> = const { std::cell::RefCell::new(Vec::new()) };
    static REJECTED_ITEMS: std::cell::RefCell<Vec<(u32, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn emit(value: &[u8]) -> i32 {
    EMITTED.with(|e| e.borrow_mut().push(value.to_vec()));
    0
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn item_error(index: u32, message: &str) {
    ITEM_ERRORS.with(|e| e.borrow_mut().push((index, message.to_string())));
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn item_reject(index: u32, message: &str) {
    REJECTED_ITEMS.with(|e| e.borrow_mut().push((index, message.to_string())));
}

/// Native builds only: takes the results emitted so far (one JSON value each).
#[cfg(not(target_arch = "wasm32"))]
pub fn take_emitted() -> Vec<Vec<u8>> {
    EMITTED.with(|e| std::mem::take(&mut *e.borrow_mut()))
}

/// Native builds only: takes the item failures recorded so far.
#[cfg(not(target_arch = "wasm32"))]
pub fn take_item_errors() -> Vec<(u32, String)> {
    ITEM_ERRORS.with(|e| std::mem::take(&mut *e.borrow_mut()))
}

/// Native builds only: takes the item rejections recorded so far.
#[cfg(not(target_arch = "wasm32"))]
pub fn take_rejected_items() -> Vec<(u32, String)> {
    REJECTED_ITEMS.with(|e| std::mem::take(&mut *e.borrow_mut()))
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static JOB_RESULTS: std::cell::RefCell<(Option<Vec<Vec<u8>>>, usize)> = const { std::cell::RefCell::new((None, 0)) };
}

/// Native builds only: the job's results that [`Context::results`](crate::Context::results)
/// reads on this thread, as `(batch, result)` pairs (a plugin's tests of its
/// on-job-complete give them).
#[cfg(not(target_arch = "wasm32"))]
pub fn give_job_results<T: serde::Serialize>(results: impl IntoIterator<Item = (u64, T)>) {
    let lines = results
        .into_iter()
        .map(|(batch, result)| {
            serde_json::to_vec(&serde_json::json!({"batch": batch, "result": result})).expect("a result as JSON")
        })
        .collect();
    JOB_RESULTS.with(|r| *r.borrow_mut() = (Some(lines), 0));
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn results_open() -> Result<(), String> {
    JOB_RESULTS.with(|r| {
        let mut r = r.borrow_mut();
        match r.0 {
            Some(_) => {
                r.1 = 0;
                Ok(())
            }
            None => Err("no results were given: call give_job_results first in a native build".into()),
        }
    })
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn results_next() -> Result<Option<Vec<u8>>, String> {
    JOB_RESULTS.with(|r| {
        let mut r = r.borrow_mut();
        let (lines, at) = &mut *r;
        let line = lines.as_ref().and_then(|l| l.get(*at)).cloned();
        *at += 1;
        Ok(line)
    })
}

/// On `wasm32-wasip2` (a component of the world `wasmbatch:handler`): the same calls
/// through the world's typed imports, their answers in ABI v1's shape for the layers
/// above.
#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
mod component_calls {
    use crate::__private::component::wasmbatch::handler::host::{self, CallError, Level};

    thread_local! {
        static LAST_ERROR: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    }

    pub(crate) fn set_error(message: &str) {
        LAST_ERROR.with(|e| *e.borrow_mut() = Some(message.to_owned()));
    }

    /// Takes the message the last failed call set: the world's failure carries it.
    pub(crate) fn take_error() -> Option<String> {
        LAST_ERROR.with(|e| e.borrow_mut().take())
    }

    pub(crate) fn log(level: u32, line: &str) {
        let level = match level {
            0 => Level::Error,
            1 => Level::Warn,
            2 => Level::Info,
            3 => Level::Debug,
            _ => Level::Trace,
        };
        host::log(level, line);
    }

    /// A component has no panic import: the message goes to the log, and the trap that
    /// follows fails the call.
    pub(crate) fn panic(message: &str) {
        host::log(Level::Error, &format!("panicked: {message}"));
    }

    /// The bindings run the constructors before the first export.
    pub(crate) fn call_ctors() {}

    pub(crate) fn batch_id() -> String {
        host::batch_id().unwrap_or_default()
    }

    pub(crate) fn attempt() -> u32 {
        host::attempt()
    }

    pub(crate) fn submit_job(api: &str, job: &[u8]) -> Result<String, String> {
        host::submit_job(api, &String::from_utf8_lossy(job))
    }

    fn answer<T>(outcome: Result<T, CallError>, ok: impl FnOnce(T) -> (i32, Vec<u8>)) -> (i32, Vec<u8>) {
        match outcome {
            Ok(value) => ok(value),
            Err(CallError::Refused(m)) => (-1, m.into_bytes()),
            Err(CallError::Failed(m)) => (-2, m.into_bytes()),
            Err(CallError::NotFound(m)) => (-3, m.into_bytes()),
        }
    }

    /// The request is ABI v1's JSON head; the answer its head line, then the body.
    pub(crate) fn http_request(request: &[u8], body: &[u8]) -> (i32, Vec<u8>) {
        #[derive(serde::Deserialize)]
        struct Head {
            #[serde(default)]
            method: Option<String>,
            url: String,
            #[serde(default)]
            headers: Vec<(String, String)>,
        }
        let head: Head = match serde_json::from_slice(request) {
            Ok(head) => head,
            Err(e) => return (-1, format!("the request is not valid: {e}").into_bytes()),
        };
        let request = host::Request {
            method: head.method.unwrap_or_else(|| "GET".into()),
            url: head.url,
            headers: head.headers,
            body: body.to_vec(),
        };
        answer(host::http_request(&request), |response| {
            let head = serde_json::json!({"status": response.status, "headers": response.headers});
            let mut bytes = head.to_string().into_bytes();
            bytes.push(b'\n');
            bytes.extend_from_slice(&response.body);
            (i32::from(response.status), bytes)
        })
    }

    pub(crate) fn object_get(url: &str) -> (i32, Vec<u8>) {
        answer(host::object_get(url), |bytes| (0, bytes))
    }

    pub(crate) fn object_read(url: &str, offset: u64, len: u64) -> (i32, Vec<u8>) {
        answer(host::object_read(url, offset, len), |bytes| (0, bytes))
    }

    pub(crate) fn object_put(url: &str, data: &[u8]) -> (i32, Vec<u8>) {
        answer(host::object_put(url, data), |()| (0, Vec::new()))
    }

    /// `0`; `-1` not JSON; `-2` over the limit (as ABI v1's `emit`).
    pub(crate) fn emit(value: &[u8]) -> i32 {
        match host::emit(&String::from_utf8_lossy(value)) {
            Ok(()) => 0,
            Err(e) if e.contains("limit") => -2,
            Err(_) => -1,
        }
    }

    pub(crate) fn item_error(index: u32, message: &str) {
        host::item_error(index, message);
    }

    pub(crate) fn item_reject(index: u32, message: &str) {
        host::item_reject(index, message);
    }

    pub(crate) fn results_open() -> Result<(), String> {
        host::results_open()
    }

    pub(crate) fn results_next() -> Result<Option<Vec<u8>>, String> {
        host::results_next().map(|line| line.map(String::into_bytes))
    }
}

#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
pub(crate) use component_calls::*;
