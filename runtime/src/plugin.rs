//! A loaded plugin and its warm instances.
//!
//! [`Plugin`] holds the compiled module, pre-linked against WASI and the host module
//! (`InstancePre`), plus the sandbox and limits every instance gets. [`Instance`] is
//! one live guest: created, `_initialize`d and `init`ed once, then called batch after
//! batch until a fatal failure ([`FailureKind::is_fatal`]) poisons it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::{Caller, InstancePre, Linker, Memory, Module, ResourceLimiter, Store, Trap, TypedFunc, UpdateDeadline};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::abi::{self, AbiError, Capabilities};
use crate::capability::{CallError as CapabilityError, Grants, HttpRequest};
use crate::capture::Capture;
use crate::engine::Engine;
use crate::failure::{Failure, FailureKind};
use crate::logging::GuestTag;
use crate::metrics::Metrics;
use crate::recent::Recent;
use crate::sandbox::Sandbox;

/// Limits applied to every call into a guest.
#[derive(Debug, Clone)]
pub struct CallLimits {
    /// Wall-clock limit of one `handle` or `on_job_complete` call.
    pub batch_timeout: Duration,
    /// Wall-clock limit of creating an instance: `_initialize` plus `init`.
    pub init_timeout: Duration,
    /// Bytes of stdout and of stderr kept per call; the rest is counted and dropped.
    pub output_limit: usize,
    /// Host log lines (the `log` import) accepted per call.
    pub log_line_limit: u32,
    /// What the guests may reach beyond their batch (outbound HTTP, objects).
    pub grants: Arc<Grants>,
    /// Bytes of results (the `emit` import) kept per batch.
    pub results_limit: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            batch_timeout: Duration::from_secs(300),
            init_timeout: Duration::from_secs(300),
            output_limit: 16 << 10,
            log_line_limit: 1000,
            grants: Arc::new(Grants::none()),
            results_limit: 16 << 20,
        }
    }
}

/// A plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The module breaks the ABI.
    #[error(transparent)]
    Abi(#[from] AbiError),
    /// The module imports something the host does not define.
    #[error("cannot link the module: {0}")]
    Link(String),
    /// The version probe failed to run.
    #[error("cannot start the module to check its ABI version: {0}")]
    Probe(Failure),
    /// The module imports a capability its API was not granted.
    #[error("{0}")]
    NotGranted(String),
}

impl LoadError {
    /// The error as the command line says it for `plugin`.
    pub fn about(&self, plugin: &std::path::Path) -> String {
        match self {
            LoadError::NotGranted(why) => format!("plugin {} needs a grant it was not given: {why}", plugin.display()),
            other => format!("plugin {} is not a wasmbatch guest: {other}", plugin.display()),
        }
    }
}

/// Submits jobs for a guest (chaining): to the job service in this process, or to an
/// operator over HTTP. Decides which APIs the guest may submit to.
pub trait Submitter: Send + Sync {
    /// Submits `job` (a job submission's JSON) to `api`; the new job's ID, or why not.
    fn submit(&self, api: &str, job: &[u8]) -> Result<String, String>;
}

/// A compiled plugin ready to be instantiated.
pub struct Plugin {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    api_name: Arc<str>,
    pre: InstancePre<HostState>,
    capabilities: Capabilities,
    sandbox: Arc<Sandbox>,
    spec: Arc<[u8]>,
    limits: CallLimits,
    attempts: Arc<AttemptLog>,
    submitter: Option<Arc<dyn Submitter>>,
}

/// The source of a batch's identifier.
#[derive(Debug, Clone)]
pub enum BatchId {
    /// Given by the sender (`X-Wasmbatch-Batch-ID`).
    Named(Arc<str>),
    /// The batch's position in its job (`wasmbatch run`, the operator).
    Index(u64),
    /// None given: derived from the job ID and the batch's bytes ([`content_id`]).
    Content,
}

/// One batch as the host hands it to a guest: the bytes, and what the guest may ask
/// about them through the `batch_id` and `attempt` imports.
#[derive(Debug, Clone)]
pub struct BatchCall {
    /// Tags the guest's log lines (`batch` field): the batch's position or the
    /// server's request counter.
    pub tag: u64,
    /// Where the batch identifier (unique within the job, stable across retries) comes
    /// from; it is made only when the guest asks for it.
    pub id: BatchId,
    /// The attempt (1 for the first). `0`: unknown; counted per batch identifier by
    /// this process when the guest asks.
    pub attempt: u32,
    /// The batch, a JSON array.
    pub body: Bytes,
}

/// The store data of one instance.
pub(crate) struct HostState {
    wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
    deadline: Instant,
    cancel: Arc<AtomicBool>,
    error: Option<String>,
    panic: Option<String>,
    job_id: Arc<str>,
    api_name: Arc<str>,
    /// The batch of the `handle` call in progress.
    call: Option<BatchCall>,
    /// Its identifier and attempt, resolved on the guest's first question.
    resolved: Option<(Arc<str>, u32)>,
    attempts: Arc<AttemptLog>,
    submitter: Option<Arc<dyn Submitter>>,
    /// The instance's stdout and stderr, drained before each `log` line so that the
    /// guest's output keeps its order.
    stdout: Capture,
    stderr: Capture,
    metrics: Arc<Metrics>,
    log_lines: u32,
    log_line_limit: u32,
    logs_dropped: u64,
    grants: Arc<Grants>,
    /// Results the guest emitted during the call in progress, one JSON value a line.
    results: Vec<u8>,
    results_limit: usize,
    /// Items the guest failed during the call in progress: (index, message).
    item_errors: Vec<(u32, String)>,
}

impl HostState {
    fn tag(&self) -> GuestTag<'_> {
        GuestTag { api_name: &self.api_name, job_id: &self.job_id, batch: self.call.as_ref().map(|c| c.tag) }
    }

    /// Logs what the guest wrote to stdout and stderr since the last drain.
    fn drain_output(&self) {
        let tag = self.tag();
        for (stream, capture) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let drained = capture.drain();
            crate::logging::guest_output(&tag, stream, &drained.head, drained.dropped);
            self.metrics.guest_output_dropped_bytes.inc_by(drained.dropped);
        }
    }

    /// The batch identifier and attempt of the call in progress (`None` outside `handle`).
    fn batch_identity(&mut self) -> Option<(Arc<str>, u32)> {
        if self.resolved.is_none() {
            let call = self.call.as_ref()?;
            let id = match &call.id {
                BatchId::Named(id) => id.clone(),
                BatchId::Index(index) => Arc::from(index.to_string()),
                BatchId::Content => content_id(&self.job_id, &call.body),
            };
            let attempt = if call.attempt > 0 { call.attempt } else { self.attempts.record(&id) };
            self.resolved = Some((id, attempt));
        }
        self.resolved.clone()
    }
}

/// A batch identifier derived from the job ID and the batch's bytes: what a server of
/// the contract can know when the sender gives none. Stable across retries (the same
/// bytes are sent again); two batches of one job with identical bytes share it.
pub fn content_id(job_id: &str, body: &[u8]) -> Arc<str> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update((job_id.len() as u64).to_le_bytes());
    hasher.update(job_id.as_bytes());
    hasher.update(body);
    let digest = hasher.finalize();
    let mut id = String::with_capacity(32);
    for byte in &digest[..16] {
        id.push_str(&format!("{byte:02x}"));
    }
    Arc::from(id)
}

/// Counts the attempts at batches whose sender gave no attempt number, by batch
/// identifier, over the most recent [`AttemptLog::CAPACITY`] identifiers.
pub struct AttemptLog {
    seen: std::sync::Mutex<Recent<Arc<str>, u32>>,
}

impl Default for AttemptLog {
    fn default() -> Self {
        AttemptLog { seen: std::sync::Mutex::new(Recent::new(Self::CAPACITY)) }
    }
}

impl AttemptLog {
    /// Identifiers remembered.
    pub const CAPACITY: usize = 4096;

    /// Records one more attempt at `id` and returns its number (1 for the first).
    pub fn record(&self, id: &Arc<str>) -> u32 {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = seen.get_mut(&**id) {
            *n += 1;
            return *n;
        }
        seen.insert(id.clone(), 1);
        1
    }
}

/// The error our epoch callback raises to stop a guest.
#[derive(Debug)]
enum Interrupt {
    Deadline,
    Cancelled,
}

impl std::fmt::Display for Interrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interrupt::Deadline => "deadline exceeded",
            Interrupt::Cancelled => "cancelled",
        })
    }
}

impl std::error::Error for Interrupt {}

/// Caps linear memory and remembers that the cap was hit, so that the trap that
/// follows a failed allocation is reported as out-of-memory.
struct MemoryLimiter {
    max: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

fn guest_bytes<'a>(caller: &'a mut Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<&'a [u8]> {
    const MAX: usize = 64 << 10;
    let memory = caller
        .get_export(abi::MEMORY)
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("the guest exports no memory"))?;
    let (ptr, len) = (ptr as u32 as usize, (len as u32 as usize).min(MAX));
    memory
        .data(caller)
        .get(ptr..ptr.saturating_add(len))
        .ok_or_else(|| wasmtime::Error::msg(format!("host call with out-of-bounds pointer {ptr}+{len}")))
}

/// `len` bytes of guest memory at `ptr`, copied; at most `max` (past it, `None`).
fn guest_copy(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32, max: usize) -> wasmtime::Result<Option<Vec<u8>>> {
    let (start, n) = (ptr as u32 as usize, len as u32 as usize);
    if n > max {
        return Ok(None);
    }
    if n == 0 {
        return Ok(Some(Vec::new()));
    }
    let memory = caller
        .get_export(abi::MEMORY)
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("the guest exports no memory"))?;
    let bytes = memory
        .data(&*caller)
        .get(start..start.saturating_add(n))
        .ok_or_else(|| wasmtime::Error::msg(format!("host call with out-of-bounds pointer {start}+{n}")))?;
    Ok(Some(bytes.to_vec()))
}

/// Hands `bytes` to the guest: a buffer from its `wasmbatch_alloc` (which it then
/// owns), whose pointer and length are written at `out` as two little-endian `u32`.
/// Empty: `(0, 0)`, nothing allocated. `false` when the guest could not allocate.
fn give(caller: &mut Caller<'_, HostState>, out: i32, bytes: &[u8]) -> wasmtime::Result<bool> {
    let memory = caller
        .get_export(abi::MEMORY)
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg("the guest exports no memory"))?;
    let mut ptr = 0u32;
    if !bytes.is_empty() {
        let alloc = caller
            .get_export(abi::ALLOC)
            .and_then(|e| e.into_func())
            .ok_or_else(|| wasmtime::Error::msg("the guest exports no wasmbatch_alloc"))?
            .typed::<i32, i32>(&*caller)?;
        let len = i32::try_from(bytes.len()).map_err(|_| wasmtime::Error::msg("an answer over 2 GiB"))?;
        ptr = alloc.call(&mut *caller, len)? as u32;
        if ptr == 0 {
            memory
                .write(&mut *caller, out as u32 as usize, &[0; 8])
                .map_err(|_| wasmtime::Error::msg(format!("host call with out-of-bounds output {}", out as u32)))?;
            return Ok(false);
        }
        memory
            .write(&mut *caller, ptr as usize, bytes)
            .map_err(|_| wasmtime::Error::msg(format!("wasmbatch_alloc returned {ptr}, out of bounds")))?;
    }
    let mut pair = [0u8; 8];
    pair[..4].copy_from_slice(&ptr.to_le_bytes());
    pair[4..].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    memory
        .write(&mut *caller, out as u32 as usize, &pair)
        .map_err(|_| wasmtime::Error::msg(format!("host call with out-of-bounds output {}", out as u32)))?;
    Ok(true)
}

/// Gives the outcome of a capability call to the guest: `Ok((code, bytes))` or an error
/// (its code, its message as the bytes). The code `-4`: the guest could not allocate.
fn answer(
    caller: &mut Caller<'_, HostState>,
    out: i32,
    outcome: Result<(i32, Vec<u8>), CapabilityError>,
) -> wasmtime::Result<i32> {
    let (code, bytes) = match outcome {
        Ok(ok) => ok,
        Err(e) => {
            tracing::debug!(
                job_id = &*caller.data().job_id,
                code = e.code(),
                "capability call refused or failed: {}",
                e.message()
            );
            (e.code(), e.message().as_bytes().to_vec())
        }
    };
    Ok(if give(caller, out, &bytes)? { code } else { -4 })
}

/// The host functions of capabilities: outbound HTTP, objects, results, item failures.
fn link_capabilities(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const MAX_REQUEST: usize = 1 << 20;
    const MAX_URL: usize = 8 << 10;
    const MAX_BODY: usize = 1 << 30;
    linker.func_wrap(
        abi::HOST_MODULE,
        "http_request",
        |mut caller: Caller<'_, HostState>, req_ptr: i32, req_len: i32, body_ptr: i32, body_len: i32, out: i32| {
            let request = guest_copy(&mut caller, req_ptr, req_len, MAX_REQUEST)?;
            let body = guest_copy(&mut caller, body_ptr, body_len, MAX_BODY)?;
            let (grants, deadline) = (caller.data().grants.clone(), caller.data().deadline);
            let outcome = match (request, body) {
                (None, _) => Err(CapabilityError::Refused(format!("the request is over {MAX_REQUEST} bytes"))),
                (_, None) => Err(CapabilityError::Refused(format!("the body is over {MAX_BODY} bytes"))),
                (Some(request), Some(body)) => match serde_json::from_slice::<HttpRequest>(&request) {
                    Err(e) => Err(CapabilityError::Refused(format!(
                        "the request is not a JSON object {{\"method\", \"url\", \"headers\": [[name, value], …]}}: {e}"
                    ))),
                    Ok(request) => {
                        let started = Instant::now();
                        let answer = grants.http(&request, &body, deadline);
                        tracing::debug!(
                            job_id = &*caller.data().job_id,
                            url = request.url,
                            status = answer.as_ref().map(|a| a.status).unwrap_or(0),
                            ms = started.elapsed().as_secs_f64() * 1e3,
                            "outbound HTTP"
                        );
                        answer.map(|a| {
                            let head = serde_json::json!({"status": a.status, "headers": a.headers});
                            let mut bytes = head.to_string().into_bytes();
                            bytes.push(b'\n');
                            bytes.extend_from_slice(&a.body);
                            (i32::from(a.status), bytes)
                        })
                    }
                },
            };
            answer(&mut caller, out, outcome)
        },
    )?;
    linker.func_wrap(
        abi::HOST_MODULE,
        "object_get",
        |mut caller: Caller<'_, HostState>, url_ptr: i32, url_len: i32, out: i32| {
            let url = guest_copy(&mut caller, url_ptr, url_len, MAX_URL)?.unwrap_or_default();
            let url = String::from_utf8_lossy(&url).into_owned();
            let (grants, deadline) = (caller.data().grants.clone(), caller.data().deadline);
            let outcome = grants
                .may_read(&url)
                .and_then(|target| crate::objects::objects().get(&target, grants.max_response, deadline))
                .map(|bytes| (0, bytes));
            answer(&mut caller, out, outcome)
        },
    )?;
    linker.func_wrap(
        abi::HOST_MODULE,
        "object_read",
        |mut caller: Caller<'_, HostState>, url_ptr: i32, url_len: i32, range_ptr: i32, out: i32| {
            let url = guest_copy(&mut caller, url_ptr, url_len, MAX_URL)?.unwrap_or_default();
            let url = String::from_utf8_lossy(&url).into_owned();
            let range = guest_copy(&mut caller, range_ptr, 16, 16)?.unwrap_or_default();
            let offset = u64::from_le_bytes(range[..8].try_into().expect("8 bytes"));
            let len = u64::from_le_bytes(range[8..].try_into().expect("8 bytes"));
            let (grants, deadline) = (caller.data().grants.clone(), caller.data().deadline);
            let outcome = grants
                .may_read(&url)
                .and_then(|target| {
                    let len = len.min(grants.max_response as u64);
                    crate::objects::objects().read(&target, offset, len, deadline)
                })
                .map(|bytes| (0, bytes));
            answer(&mut caller, out, outcome)
        },
    )?;
    linker.func_wrap(
        abi::HOST_MODULE,
        "object_put",
        |mut caller: Caller<'_, HostState>, url_ptr: i32, url_len: i32, data_ptr: i32, data_len: i32, out: i32| {
            let url = guest_copy(&mut caller, url_ptr, url_len, MAX_URL)?.unwrap_or_default();
            let url = String::from_utf8_lossy(&url).into_owned();
            let data = guest_copy(&mut caller, data_ptr, data_len, MAX_BODY)?;
            let (grants, deadline) = (caller.data().grants.clone(), caller.data().deadline);
            let outcome = match data {
                None => Err(CapabilityError::Refused(format!("the object is over {MAX_BODY} bytes"))),
                Some(data) => grants
                    .may_write(&url)
                    .and_then(|target| crate::objects::objects().put(&target, data, deadline))
                    .map(|()| (0, Vec::new())),
            };
            answer(&mut caller, out, outcome)
        },
    )?;
    linker.func_wrap(abi::HOST_MODULE, "emit", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let limit = caller.data().results_limit;
        let used = caller.data().results.len();
        let Some(value) = guest_copy(&mut caller, ptr, len, limit.saturating_sub(used))? else { return Ok(-2) };
        if serde_json::from_slice::<serde::de::IgnoredAny>(&value).is_err() {
            return Ok(-1);
        }
        // One value a line: a value's own line breaks are whitespace in JSON.
        let results = &mut caller.data_mut().results;
        results.extend(value.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
        results.push(b'\n');
        Ok(0)
    })?;
    linker.func_wrap(
        abi::HOST_MODULE,
        "item_error",
        |mut caller: Caller<'_, HostState>, index: i32, ptr: i32, len: i32| {
            let message = String::from_utf8_lossy(guest_bytes(&mut caller, ptr, len)?).into_owned();
            let errors = &mut caller.data_mut().item_errors;
            if errors.len() < 1_000_000 {
                errors.push((index as u32, message));
            }
            Ok(())
        },
    )?;
    Ok(())
}

fn link(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine.wasmtime());
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut HostState| &mut s.wasi)?;
    linker.func_wrap(abi::HOST_MODULE, "set_error", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let message = String::from_utf8_lossy(guest_bytes(&mut caller, ptr, len)?).into_owned();
        caller.data_mut().error = Some(message);
        Ok(())
    })?;
    linker.func_wrap(abi::HOST_MODULE, "panic", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let message = String::from_utf8_lossy(guest_bytes(&mut caller, ptr, len)?).into_owned();
        caller.data_mut().panic = Some(message);
        Ok(())
    })?;
    linker.func_wrap(
        abi::HOST_MODULE,
        "log",
        |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
            let line = String::from_utf8_lossy(guest_bytes(&mut caller, ptr, len)?).into_owned();
            let state = caller.data_mut();
            if state.log_lines >= state.log_line_limit {
                state.logs_dropped += 1;
                return Ok(());
            }
            state.log_lines += 1;
            // What the guest printed before this line is logged before it.
            state.drain_output();
            crate::logging::guest_log(&state.tag(), level, &line);
            Ok(())
        },
    )?;
    linker.func_wrap(abi::HOST_MODULE, "batch_id", |mut caller: Caller<'_, HostState>, ptr: i32, cap: i32| {
        let Some((id, _)) = caller.data_mut().batch_identity() else { return Ok(0) };
        let memory = caller
            .get_export(abi::MEMORY)
            .and_then(|e| e.into_memory())
            .ok_or_else(|| wasmtime::Error::msg("the guest exports no memory"))?;
        let n = id.len().min(cap.max(0) as usize);
        memory
            .write(&mut caller, ptr as u32 as usize, &id.as_bytes()[..n])
            .map_err(|_| wasmtime::Error::msg(format!("batch_id with out-of-bounds pointer {}+{n}", ptr as u32)))?;
        Ok(id.len() as i32)
    })?;
    linker.func_wrap(
        abi::HOST_MODULE,
        "submit_job",
        |mut caller: Caller<'_, HostState>,
         api_ptr: i32,
         api_len: i32,
         job_ptr: i32,
         job_len: i32,
         out_ptr: i32,
         out_cap: i32| {
            const MAX_JOB: usize = 10 << 20;
            let memory = caller
                .get_export(abi::MEMORY)
                .and_then(|e| e.into_memory())
                .ok_or_else(|| wasmtime::Error::msg("the guest exports no memory"))?;
            let read =
                |caller: &Caller<'_, HostState>, ptr: i32, len: i32, max: usize| -> wasmtime::Result<Vec<u8>> {
                    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
                    if len > max {
                        return Ok(Vec::new());
                    }
                    memory.data(caller).get(ptr..ptr.saturating_add(len)).map(<[u8]>::to_vec).ok_or_else(|| {
                        wasmtime::Error::msg(format!("submit_job with out-of-bounds pointer {ptr}+{len}"))
                    })
                };
            let api = String::from_utf8_lossy(&read(&caller, api_ptr, api_len, 256)?).into_owned();
            let job = read(&caller, job_ptr, job_len, MAX_JOB)?;
            let outcome = match &caller.data().submitter {
                _ if job_len as u32 as usize > MAX_JOB => Err(format!("the job is over {MAX_JOB} bytes")),
                Some(submitter) => submitter.submit(&api, &job),
                None => Err("submitting jobs is not available here (no operator configured)".to_string()),
            };
            let (text, sign) = match &outcome {
                Ok(job_id) => {
                    tracing::info!(
                        api_name = &*caller.data().api_name,
                        job_id = &*caller.data().job_id,
                        to = api,
                        new_job = job_id,
                        "job submitted by a guest"
                    );
                    (job_id.clone(), 1)
                }
                Err(e) => (e.clone(), -1),
            };
            let n = text.len().min(out_cap.max(0) as usize);
            memory.write(&mut caller, out_ptr as u32 as usize, &text.as_bytes()[..n]).map_err(|_| {
                wasmtime::Error::msg(format!("submit_job with out-of-bounds output {}+{n}", out_ptr as u32))
            })?;
            Ok(sign * text.len() as i32)
        },
    )?;
    link_capabilities(&mut linker)?;
    linker.func_wrap(abi::HOST_MODULE, "attempt", |mut caller: Caller<'_, HostState>| {
        Ok(caller.data_mut().batch_identity().map(|(_, attempt)| attempt as i32).unwrap_or(0))
    })?;
    Ok(linker)
}

impl Plugin {
    /// Links `module`, checks it against ABI v1 (exports, imports, and the version the
    /// guest reports), and prepares instances that see `sandbox` and get `spec` in init.
    pub fn new(
        engine: Arc<Engine>,
        module: &Module,
        sandbox: Arc<Sandbox>,
        spec: Arc<[u8]>,
        limits: CallLimits,
        metrics: Arc<Metrics>,
    ) -> Result<Plugin, LoadError> {
        let capabilities = abi::validate(module)?;
        let imports = module.imports().filter(|i| i.module() == abi::HOST_MODULE).map(|i| i.name());
        limits.grants.check_imports(imports).map_err(LoadError::NotGranted)?;
        let linker = link(&engine).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(module).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let api_name = serde_json::from_slice::<serde_json::Value>(&spec)
            .ok()
            .and_then(|v| v.get("api_name").and_then(|a| a.as_str()).map(Arc::from))
            .unwrap_or_else(|| Arc::from(""));
        let attempts = Arc::new(AttemptLog::default());
        let plugin =
            Plugin { engine, metrics, api_name, pre, capabilities, sandbox, spec, limits, attempts, submitter: None };
        plugin.check_version()?;
        Ok(plugin)
    }

    /// Lets guests submit jobs through `submitter` (the `submit_job` import); without
    /// one, the import answers that chaining is not available.
    pub fn with_submitter(mut self, submitter: Arc<dyn Submitter>) -> Plugin {
        self.submitter = Some(submitter);
        self
    }

    /// The optional parts of the ABI this plugin has.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// The job spec's `api_name` (empty when it has none).
    pub fn api_name(&self) -> &str {
        &self.api_name
    }

    /// Where its instances report.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn check_version(&self) -> Result<(), LoadError> {
        let mut raw = self.instantiate(Arc::new(AtomicBool::new(false))).map_err(LoadError::Probe)?;
        let version = raw.call_version().map_err(LoadError::Probe)?;
        if version != abi::ABI_VERSION {
            return Err(AbiError::VersionMismatch { found: version }.into());
        }
        Ok(())
    }

    fn instantiate(&self, cancel: Arc<AtomicBool>) -> Result<Instance, Failure> {
        let stdout = Capture::new(self.limits.output_limit);
        let stderr = Capture::new(self.limits.output_limit);
        let wasi = self
            .sandbox
            .wasi(stdout.clone(), stderr.clone())
            .map_err(|e| Failure::new(FailureKind::Trap, format!("cannot prepare the sandbox: {e}")))?;
        let max_memory = self.engine.config().max_memory;
        let state = HostState {
            wasi,
            limiter: MemoryLimiter { max: usize::try_from(max_memory).unwrap_or(usize::MAX), hit: false },
            deadline: Instant::now() + self.limits.init_timeout,
            cancel,
            error: None,
            panic: None,
            job_id: Arc::from(""),
            api_name: self.api_name.clone(),
            call: None,
            resolved: None,
            attempts: self.attempts.clone(),
            submitter: self.submitter.clone(),
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            metrics: self.metrics.clone(),
            log_lines: 0,
            log_line_limit: self.limits.log_line_limit,
            logs_dropped: 0,
            grants: self.limits.grants.clone(),
            results: Vec::new(),
            results_limit: self.limits.results_limit,
            item_errors: Vec::new(),
        };
        let mut store = Store::new(self.engine.wasmtime(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if state.cancel.load(Ordering::Relaxed) {
                return Err(wasmtime::Error::new(Interrupt::Cancelled));
            }
            if Instant::now() >= state.deadline {
                return Err(wasmtime::Error::new(Interrupt::Deadline));
            }
            Ok(UpdateDeadline::Continue(1))
        });
        store.set_epoch_deadline(1);

        let instance = match self.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(e) => {
                let mut failure = classify(e, store.data_mut(), self.limits.init_timeout, max_memory);
                failure.stderr_tail = stderr.take_tail();
                return Err(failure);
            }
        };
        // `abi::validate` checked every export's presence and type, so a missing one
        // here is a bug in the validation, reported rather than unwrapped.
        let missing =
            |name: &str| Failure::new(FailureKind::Trap, format!("export `{name}` vanished after validation"));
        let exports = Exports {
            memory: instance.get_memory(&mut store, abi::MEMORY).ok_or_else(|| missing(abi::MEMORY))?,
            version: instance
                .get_typed_func(&mut store, abi::ABI_VERSION_FN)
                .map_err(|_| missing(abi::ABI_VERSION_FN))?,
            alloc: instance.get_typed_func(&mut store, abi::ALLOC).map_err(|_| missing(abi::ALLOC))?,
            handle: instance.get_typed_func(&mut store, abi::HANDLE).map_err(|_| missing(abi::HANDLE))?,
            init: instance.get_typed_func(&mut store, abi::INIT).ok(),
            on_job_complete: instance.get_typed_func(&mut store, abi::ON_JOB_COMPLETE).ok(),
        };
        let initialize: Option<TypedFunc<(), ()>> = instance.get_typed_func(&mut store, abi::INITIALIZE).ok();
        self.metrics.instances_alive.inc();
        let mut raw = Instance {
            store,
            exports,
            stderr,
            metrics: self.metrics.clone(),
            reported_memory: 0,
            max_memory,
            poisoned: false,
            batches: 0,
            batch_timeout: self.limits.batch_timeout,
        };
        if let Some(initialize) = initialize {
            let timeout = self.limits.init_timeout;
            raw.call(timeout, "", None, |store, _| {
                initialize.call(store, ()).map(|()| abi::status::OK).map_err(Into::into)
            })?;
        }
        Ok(raw)
    }

    /// A new instance: instantiated, `_initialize`d, and `init`ed with the job spec.
    /// `cancel` interrupts every call of the instance once it is set.
    pub fn instance(&self, cancel: Arc<AtomicBool>) -> Result<Instance, Failure> {
        let mut instance = self.instantiate(cancel)?;
        if let Some(init) = instance.exports.init.clone() {
            let spec = self.spec.clone();
            let job_id = serde_json::from_slice::<serde_json::Value>(&spec)
                .ok()
                .and_then(|v| v.get("job_id").and_then(|j| j.as_str()).map(str::to_owned))
                .unwrap_or_default();
            instance.call(self.limits.init_timeout, &job_id, None, |store, ex| {
                let (ptr, len) = put(store, ex, &spec)?;
                Ok(init.call(store, (ptr, len))?)
            })?;
        }
        Ok(instance)
    }
}

/// The ABI's exports of one instance (cheap handles into its store).
#[derive(Clone)]
struct Exports {
    memory: Memory,
    version: TypedFunc<(), i32>,
    alloc: TypedFunc<i32, i32>,
    handle: TypedFunc<(i32, i32, i32, i32), i32>,
    init: Option<TypedFunc<(i32, i32), i32>>,
    on_job_complete: Option<TypedFunc<(i32, i32, i32, i32), i32>>,
}

/// How a call went wrong before its status was known.
enum CallError {
    /// Wasmtime raised an error: a trap, an interrupt, an exit, a host-call error.
    Wasm(wasmtime::Error),
    /// The host gave up on the call itself (e.g. the guest could not allocate).
    Host(Failure),
}

impl From<wasmtime::Error> for CallError {
    fn from(e: wasmtime::Error) -> Self {
        CallError::Wasm(e)
    }
}

/// Copies `bytes` into a buffer the guest allocates; ownership passes to the guest.
fn put(store: &mut Store<HostState>, ex: &Exports, bytes: &[u8]) -> Result<(i32, i32), CallError> {
    if bytes.is_empty() {
        return Ok((0, 0));
    }
    let len = i32::try_from(bytes.len()).map_err(|_| {
        CallError::Host(Failure::new(
            FailureKind::InvalidInput,
            format!("{} bytes do not fit a 32-bit guest", bytes.len()),
        ))
    })?;
    let ptr = ex.alloc.call(&mut *store, len)?;
    if ptr == 0 {
        let limit = store.data().limiter.max >> 20;
        return Err(CallError::Host(Failure::new(
            FailureKind::OutOfMemory,
            format!("the guest could not allocate {} bytes for its input (memory limit {limit} MiB)", bytes.len()),
        )));
    }
    ex.memory.write(&mut *store, ptr as u32 as usize, bytes).map_err(|_| {
        CallError::Host(Failure::new(
            FailureKind::Trap,
            format!("wasmbatch_alloc returned {ptr}, outside the guest's memory"),
        ))
    })?;
    Ok((ptr, len))
}

/// Turns a wasmtime error into a typed failure, using what the store recorded.
fn classify(e: wasmtime::Error, state: &mut HostState, timeout: Duration, max_memory: u64) -> Failure {
    let (kind, message) = if let Some(interrupt) = e.downcast_ref::<Interrupt>() {
        match interrupt {
            Interrupt::Deadline => (FailureKind::Timeout, format!("the call did not finish within {timeout:?}")),
            Interrupt::Cancelled => (FailureKind::Cancelled, "the call was cancelled".to_string()),
        }
    } else if let Some(exit) = e.downcast_ref::<I32Exit>() {
        (FailureKind::Exit(exit.0), format!("the guest exited with code {}", exit.0))
    } else if state.limiter.hit {
        (
            FailureKind::OutOfMemory,
            format!("the guest tried to grow its memory past the limit of {} MiB", max_memory >> 20),
        )
    } else if let Some(message) = state.panic.take() {
        (FailureKind::Panic, message)
    } else if let Some(trap) = e.downcast_ref::<Trap>() {
        (FailureKind::Trap, format!("wasm trap: {trap}"))
    } else {
        (FailureKind::Trap, format!("{e:#}"))
    };
    Failure::new(kind, message)
}

/// What a successful `handle` produced besides its status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutput {
    /// The results the guest emitted, one JSON value a line.
    pub results: Vec<u8>,
    /// The items the guest failed: (index in the batch, message).
    pub item_errors: Vec<(u32, String)>,
}

/// One live guest instance.
pub struct Instance {
    store: Store<HostState>,
    exports: Exports,
    stderr: Capture,
    metrics: Arc<Metrics>,
    reported_memory: i64,
    max_memory: u64,
    poisoned: bool,
    batches: u64,
    batch_timeout: Duration,
}

impl Instance {
    /// Runs `f` against the guest under a fresh deadline, then turns its result (a
    /// status, or an error) into `Ok` or a typed [`Failure`], and logs the guest's
    /// output tagged with `job_id`.
    fn call<F>(&mut self, timeout: Duration, job_id: &str, batch: Option<BatchCall>, f: F) -> Result<(), Failure>
    where
        F: FnOnce(&mut Store<HostState>, &Exports) -> Result<i32, CallError>,
    {
        let state = self.store.data_mut();
        state.error = None;
        state.panic = None;
        state.limiter.hit = false;
        state.log_lines = 0;
        state.deadline = Instant::now() + timeout;
        if *state.job_id != *job_id {
            state.job_id = Arc::from(job_id);
        }
        state.call = batch;
        state.resolved = None;
        state.results.clear();
        state.item_errors.clear();
        self.store.set_epoch_deadline(1);

        let exports = self.exports.clone();
        let result = match f(&mut self.store, &exports) {
            Ok(abi::status::OK) => Ok(()),
            Ok(status) => {
                let message = self.store.data_mut().error.take();
                Err(match status {
                    abi::status::FAILED => Failure::new(
                        FailureKind::GuestError,
                        message.unwrap_or_else(|| "the guest returned status 1 (failed) without a message".into()),
                    ),
                    abi::status::INVALID_INPUT => Failure::new(
                        FailureKind::InvalidInput,
                        message
                            .unwrap_or_else(|| "the guest returned status 2 (invalid input) without a message".into()),
                    ),
                    other => Failure::new(
                        FailureKind::GuestError,
                        format!(
                            "the guest returned unknown status {other}{}",
                            message.map(|m| format!(": {m}")).unwrap_or_default()
                        ),
                    ),
                })
            }
            Err(CallError::Host(failure)) => Err(failure),
            Err(CallError::Wasm(e)) => Err(classify(e, self.store.data_mut(), timeout, self.max_memory)),
        };
        self.flush_output();
        self.store.data_mut().call = None;
        let tail = self.stderr.take_tail();
        result.map_err(|mut failure| {
            failure.stderr_tail = tail;
            if failure.kind.is_fatal() {
                self.poisoned = true;
            }
            failure
        })
    }

    fn flush_output(&mut self) {
        self.store.data().drain_output();
        let memory = self.exports.memory.data_size(&self.store) as i64;
        self.metrics.guest_memory_bytes.add(memory - self.reported_memory);
        self.reported_memory = memory;
        let state = self.store.data_mut();
        if state.logs_dropped > 0 {
            self.metrics.guest_log_lines_dropped.inc_by(state.logs_dropped);
            tracing::warn!(
                job_id = &*state.job_id,
                dropped = state.logs_dropped,
                "guest log lines over the limit of {} per call were dropped",
                state.log_line_limit
            );
            state.logs_dropped = 0;
        }
    }

    fn call_version(&mut self) -> Result<i32, Failure> {
        let mut version = 0;
        self.call(Duration::from_secs(5), "", None, |store, ex| {
            version = ex.version.call(store, ())?;
            Ok(abi::status::OK)
        })?;
        Ok(version)
    }

    /// Hands one batch (a JSON array) to the guest's `handle`.
    pub fn handle(&mut self, job_id: &str, batch: BatchCall) -> Result<(), Failure> {
        self.batches += 1;
        let timeout = self.batch_timeout;
        let body = batch.body.clone();
        self.call(timeout, job_id, Some(batch), |store, ex| {
            let (job_ptr, job_len) = put(store, ex, job_id.as_bytes())?;
            let (batch_ptr, batch_len) = put(store, ex, &body)?;
            Ok(ex.handle.call(store, (job_ptr, job_len, batch_ptr, batch_len))?)
        })
    }

    /// Runs the guest's on-job-complete hook with `body` (a JSON object). `None` when
    /// the plugin has no such hook.
    pub fn on_job_complete(&mut self, job_id: &str, body: &[u8]) -> Option<Result<(), Failure>> {
        let hook = self.exports.on_job_complete.clone()?;
        let timeout = self.batch_timeout;
        Some(self.call(timeout, job_id, None, |store, ex| {
            let (job_ptr, job_len) = put(store, ex, job_id.as_bytes())?;
            let (body_ptr, body_len) = put(store, ex, body)?;
            Ok(hook.call(store, (job_ptr, job_len, body_ptr, body_len))?)
        }))
    }

    /// What the last `handle` produced besides its status: the results it emitted (JSON
    /// Lines) and the items it failed. Taken: a second call gets nothing.
    pub fn take_output(&mut self) -> BatchOutput {
        let state = self.store.data_mut();
        BatchOutput { results: std::mem::take(&mut state.results), item_errors: std::mem::take(&mut state.item_errors) }
    }

    /// Whether a fatal failure has left this instance unusable.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Batches handed to this instance so far.
    pub fn batches(&self) -> u64 {
        self.batches
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.metrics.instances_alive.dec();
        self.metrics.guest_memory_bytes.sub(self.reported_memory);
    }
}
