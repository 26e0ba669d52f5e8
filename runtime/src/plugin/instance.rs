//! One live guest: its store, its exports, and every call into it under a deadline,
//! with the outcome classified into a typed [`Failure`]. A core module's exports take
//! pointers into its memory (ABI v1); a component's are typed (the world
//! `wasmbatch:handler`), and their outcomes are turned into ABI v1 statuses so that one
//! path classifies both.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{Memory, Store, Trap, TypedFunc, UpdateDeadline};
use wasmtime_wasi::I32Exit;

use super::memory::{self, PutError};
use super::state::{BatchCall, HostState, Interrupt, MemoryLimiter};
use super::world::{self, Failure as WorldFailure};
use super::{Job, Linked, Plugin};
use crate::abi;
use crate::capture::Capture;
use crate::failure::{Failure, FailureKind};
use crate::metrics::Metrics;

/// `wasmbatch_handle_items(job_ptr, job_len, batch_ptr, batch_len, count) -> status`.
type HandleItems = TypedFunc<(i32, i32, i32, i32, i32), i32>;

/// The exports of one instance: a module's or a component's. One per instance, and
/// the module's handles are taken by value on every batch: not boxed.
#[allow(clippy::large_enum_variant)]
enum Exports {
    Module(ModuleExports),
    Component(Arc<world::Handler>),
}

/// The ABI's exports of one module instance (cheap handles into its store).
#[derive(Clone)]
struct ModuleExports {
    memory: Memory,
    version: TypedFunc<(), i32>,
    alloc: TypedFunc<i32, i32>,
    handle: TypedFunc<(i32, i32, i32, i32), i32>,
    handle_items: Option<HandleItems>,
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

/// What a successful `handle` produced besides its status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutput {
    /// The results the guest emitted, one JSON value a line.
    pub results: Vec<u8>,
    /// The items the guest failed or rejected.
    pub item_errors: Vec<ItemError>,
}

/// One item a handler failed (`item_error`) or rejected (`item_reject`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// Its index in the batch, from 0.
    pub index: u32,
    /// The handler's message.
    pub message: String,
    /// Whether it can never succeed: not tried again alone.
    pub rejected: bool,
}

/// Which export a call runs.
enum What {
    /// `_initialize`, `init`, the version probe.
    Other,
    /// `handle`, with its batch.
    Batch(BatchCall),
    /// `on_job_complete`.
    Completion,
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
    /// Instantiates `plugin` for `job` (its sandbox, spec, submitter; none: the load
    /// probe) and runs `_initialize` — not `init`.
    pub(super) async fn start(plugin: &Plugin, job: &Job, cancel: Arc<AtomicBool>) -> Result<Instance, Failure> {
        let limits = &plugin.limits;
        let stdout = Capture::new(limits.output_limit);
        let stderr = Capture::new(limits.output_limit);
        let wasi = job
            .sandbox
            .wasi(stdout.clone(), stderr.clone())
            .map_err(|e| Failure::new(FailureKind::Trap, format!("cannot prepare the sandbox: {e}")))?;
        let max_memory = plugin.engine.config().max_memory;
        let state = HostState {
            wasi,
            limiter: MemoryLimiter::new(usize::try_from(max_memory).unwrap_or(usize::MAX)),
            deadline: Instant::now() + limits.init_timeout,
            cancel,
            error: None,
            panic: None,
            job_id: Arc::from(""),
            api_name: job.api_name.clone(),
            call: None,
            resolved: None,
            attempts: job.attempts.clone(),
            submitter: job.submitter.clone(),
            stdout: stdout.clone(),
            stderr: stderr.clone(),
            metrics: plugin.metrics.clone(),
            log_lines: 0,
            log_line_limit: limits.log_line_limit,
            logs_dropped: 0,
            grants: limits.grants.clone(),
            results: Vec::new(),
            results_limit: limits.results_limit,
            item_errors: Vec::new(),
            job_results: job.results.clone(),
            completing: false,
            reading: None,
        };
        let mut store = Store::new(plugin.engine.wasmtime(), state);
        store.limiter(|s| &mut s.limiter);
        // Every tick: interrupted when cancelled or past the deadline, else a yield to
        // the caller's executor, so that a guest computing for long shares its thread
        // with the other tasks there (other connections' batches in `serve`).
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if state.cancel.load(Ordering::Relaxed) {
                return Err(wasmtime::Error::new(Interrupt::Cancelled));
            }
            if Instant::now() >= state.deadline {
                return Err(wasmtime::Error::new(Interrupt::Deadline));
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);

        let fail = |e: wasmtime::Error, store: &mut Store<HostState>| {
            let mut failure = classify(e, store.data_mut(), limits.init_timeout, max_memory);
            failure.stderr_tail = stderr.take_tail();
            failure
        };
        let (exports, initialize) = match &plugin.linked {
            Linked::Module(pre) => {
                let instance = match pre.instantiate_async(&mut store).await {
                    Ok(instance) => instance,
                    Err(e) => return Err(fail(e, &mut store)),
                };
                // `abi::validate` checked every export's presence and type, so a missing
                // one here is a bug in the validation, reported rather than unwrapped.
                let missing =
                    |name: &str| Failure::new(FailureKind::Trap, format!("export `{name}` vanished after validation"));
                let exports = ModuleExports {
                    memory: instance.get_memory(&mut store, abi::MEMORY).ok_or_else(|| missing(abi::MEMORY))?,
                    version: instance
                        .get_typed_func(&mut store, abi::ABI_VERSION_FN)
                        .map_err(|_| missing(abi::ABI_VERSION_FN))?,
                    alloc: instance.get_typed_func(&mut store, abi::ALLOC).map_err(|_| missing(abi::ALLOC))?,
                    handle: instance.get_typed_func(&mut store, abi::HANDLE).map_err(|_| missing(abi::HANDLE))?,
                    handle_items: instance.get_typed_func(&mut store, abi::HANDLE_ITEMS).ok(),
                    init: instance.get_typed_func(&mut store, abi::INIT).ok(),
                    on_job_complete: instance.get_typed_func(&mut store, abi::ON_JOB_COMPLETE).ok(),
                };
                let initialize: Option<TypedFunc<(), ()>> = instance.get_typed_func(&mut store, abi::INITIALIZE).ok();
                (Exports::Module(exports), initialize)
            }
            // A component's start functions (its runtime's constructors) run as it is
            // instantiated, under the init deadline set above.
            Linked::Component(pre) => match pre.instantiate_async(&mut store).await {
                Ok(handler) => (Exports::Component(Arc::new(handler)), None),
                Err(e) => return Err(fail(e, &mut store)),
            },
        };
        plugin.metrics.instances_alive.inc();
        let mut raw = Instance {
            store,
            exports,
            stderr,
            metrics: plugin.metrics.clone(),
            reported_memory: 0,
            max_memory,
            poisoned: false,
            batches: 0,
            batch_timeout: limits.batch_timeout,
        };
        if let Some(initialize) = initialize {
            raw.prepare(limits.init_timeout, "", What::Other);
            let outcome = initialize.call_async(&mut raw.store, ()).await.map(|()| abi::status::OK);
            raw.finish(limits.init_timeout, outcome.map_err(Into::into))?;
        } else {
            raw.flush_output();
        }
        Ok(raw)
    }

    /// Runs the guest's `init` (when it has one) with the job spec.
    pub(super) async fn init(&mut self, timeout: Duration, job_id: &str, spec: &[u8]) -> Result<(), Failure> {
        let outcome = match &self.exports {
            Exports::Module(exports) => {
                let Some(init) = exports.init.clone() else { return Ok(()) };
                let exports = exports.clone();
                self.prepare(timeout, job_id, What::Other);
                async {
                    let (ptr, len) = put(&mut self.store, &exports, &[spec]).await?;
                    Ok(init.call_async(&mut self.store, (ptr, len)).await?)
                }
                .await
            }
            Exports::Component(handler) => {
                let handler = handler.clone();
                self.prepare(timeout, job_id, What::Other);
                let outcome = handler.call_init(&mut self.store, &String::from_utf8_lossy(spec)).await;
                status(&mut self.store, outcome)
            }
        };
        self.finish(timeout, outcome)
    }

    /// Readies the store for a call under a fresh deadline, its output to be tagged
    /// with `job_id`. The call follows, then [`Instance::finish`].
    fn prepare(&mut self, timeout: Duration, job_id: &str, what: What) {
        let state = self.store.data_mut();
        state.error = None;
        state.panic = None;
        state.limiter.hit = false;
        state.log_lines = 0;
        state.deadline = Instant::now() + timeout;
        if *state.job_id != *job_id {
            state.job_id = Arc::from(job_id);
        }
        state.completing = matches!(what, What::Completion);
        state.call = match what {
            What::Batch(batch) => Some(batch),
            _ => None,
        };
        state.resolved = None;
        state.results.clear();
        state.item_errors.clear();
        state.reading = None;
        self.store.set_epoch_deadline(1);
    }

    /// Turns a call's outcome (a status, or an error) into `Ok` or a typed
    /// [`Failure`], and logs the guest's output.
    fn finish(&mut self, timeout: Duration, outcome: Result<i32, CallError>) -> Result<(), Failure> {
        let result = match outcome {
            Ok(abi::status::OK) => Ok(()),
            Ok(status) => Err(status_failure(status, self.store.data_mut().error.take())),
            Err(CallError::Host(failure)) => Err(failure),
            Err(CallError::Wasm(e)) => Err(classify(e, self.store.data_mut(), timeout, self.max_memory)),
        };
        self.flush_output();
        let state = self.store.data_mut();
        // A guest that failed after the memory limit refused it more (a Python
        // `MemoryError` caught and reported) ran out of memory, whatever it says.
        let result = match result {
            Err(failure) if state.limiter.hit && failure.kind == FailureKind::GuestError => Err(Failure::new(
                FailureKind::OutOfMemory,
                format!(
                    "the guest tried to grow its memory past the limit of {} MiB: {}",
                    self.max_memory >> 20,
                    failure.message
                ),
            )),
            other => other,
        };
        state.call = None;
        state.completing = false;
        state.reading = None;
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
        let memory = self.store.data().limiter.used as i64;
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

    /// The ABI version a module reports; a component's world carries its own version
    /// in its names (checked when it is linked).
    pub(super) async fn call_version(&mut self) -> Result<i32, Failure> {
        let Exports::Module(exports) = &self.exports else { return Ok(abi::ABI_VERSION) };
        let version_fn = exports.version.clone();
        let timeout = Duration::from_secs(5);
        self.prepare(timeout, "", What::Other);
        let mut version = 0;
        let outcome = async {
            version = version_fn.call_async(&mut self.store, ()).await?;
            Ok(abi::status::OK)
        }
        .await;
        self.finish(timeout, outcome)?;
        Ok(version)
    }

    /// Hands one batch (a JSON array) to the guest: with where its items lie when the
    /// caller knows and the guest takes them (`wasmbatch_handle_items`), else alone
    /// (`wasmbatch_handle`).
    pub async fn handle(&mut self, job_id: &str, mut batch: BatchCall) -> Result<(), Failure> {
        self.batches += 1;
        let timeout = self.batch_timeout;
        let body = batch.body.clone();
        let items = batch.items.take();
        self.prepare(timeout, job_id, What::Batch(batch));
        let exports = match &self.exports {
            Exports::Module(exports) => exports.clone(),
            Exports::Component(handler) => {
                let outcome = handler.call_handle_batch(&mut self.store, job_id, &body).await;
                let outcome = status(&mut self.store, outcome);
                return self.finish(timeout, outcome);
            }
        };
        let outcome = async {
            let (job_ptr, job_len) = put(&mut self.store, &exports, &[job_id.as_bytes()]).await?;
            match (items, &exports.handle_items) {
                (Some(items), Some(handle_items)) => {
                    // One buffer: the batch, zeros to a multiple of 4, the offsets.
                    let padding = [0u8; 3];
                    let padding = &padding[..body.len().next_multiple_of(4) - body.len()];
                    let parts = [&body[..], padding, items.encoded()];
                    let (batch_ptr, _) = put(&mut self.store, &exports, &parts).await?;
                    let batch_len = i32::try_from(body.len()).expect("put checked the length");
                    let count = i32::try_from(items.len()).expect("fewer items than bytes");
                    Ok(handle_items
                        .call_async(&mut self.store, (job_ptr, job_len, batch_ptr, batch_len, count))
                        .await?)
                }
                _ => {
                    let (batch_ptr, batch_len) = put(&mut self.store, &exports, &[&body]).await?;
                    Ok(exports.handle.call_async(&mut self.store, (job_ptr, job_len, batch_ptr, batch_len)).await?)
                }
            }
        }
        .await;
        self.finish(timeout, outcome)
    }

    /// Runs the guest's on-job-complete hook with `body` (a JSON object). `None` when
    /// the plugin has no such hook.
    pub async fn on_job_complete(&mut self, job_id: &str, body: &[u8]) -> Option<Result<(), Failure>> {
        let timeout = self.batch_timeout;
        let outcome = match &self.exports {
            Exports::Module(exports) => {
                let hook = exports.on_job_complete.clone()?;
                let exports = exports.clone();
                self.prepare(timeout, job_id, What::Completion);
                async {
                    let (job_ptr, job_len) = put(&mut self.store, &exports, &[job_id.as_bytes()]).await?;
                    let (body_ptr, body_len) = put(&mut self.store, &exports, &[body]).await?;
                    Ok(hook.call_async(&mut self.store, (job_ptr, job_len, body_ptr, body_len)).await?)
                }
                .await
            }
            Exports::Component(handler) => {
                let handler = handler.clone();
                self.prepare(timeout, job_id, What::Completion);
                let outcome =
                    handler.call_on_job_complete(&mut self.store, job_id, &String::from_utf8_lossy(body)).await;
                status(&mut self.store, outcome)
            }
        };
        Some(self.finish(timeout, outcome))
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

/// Copies `parts`, one after the other, into a buffer the guest allocates; a failure
/// names what went wrong.
async fn put(store: &mut Store<HostState>, ex: &ModuleExports, parts: &[&[u8]]) -> Result<(i32, i32), CallError> {
    memory::put(&mut *store, ex.memory, &ex.alloc, parts).await.map_err(|e| match e {
        PutError::Wasm(e) => CallError::Wasm(e),
        PutError::NoRoom(n) => {
            let limit = store.data().limiter.max >> 20;
            CallError::Host(Failure::new(
                FailureKind::OutOfMemory,
                format!("the guest could not allocate {n} bytes for its input (memory limit {limit} MiB)"),
            ))
        }
        PutError::Memory(e @ memory::MemoryError::TooLarge(_)) => {
            CallError::Host(Failure::new(FailureKind::InvalidInput, e.to_string()))
        }
        PutError::Memory(e) => CallError::Host(Failure::new(FailureKind::Trap, e.to_string())),
    })
}

/// A component call's outcome as an ABI v1 status, its failure's message where a
/// module's `set_error` puts it.
fn status(store: &mut Store<HostState>, outcome: wasmtime::Result<Result<(), WorldFailure>>) -> Result<i32, CallError> {
    match outcome? {
        Ok(()) => Ok(abi::status::OK),
        Err(WorldFailure::Failed(message)) => {
            store.data_mut().error = Some(message);
            Ok(abi::status::FAILED)
        }
        Err(WorldFailure::InvalidInput(message)) => {
            store.data_mut().error = Some(message);
            Ok(abi::status::INVALID_INPUT)
        }
    }
}

/// The failure a non-zero status stands for, with the guest's message when it set one.
fn status_failure(status: i32, message: Option<String>) -> Failure {
    match status {
        abi::status::FAILED => Failure::new(
            FailureKind::GuestError,
            message.unwrap_or_else(|| "the guest returned status 1 (failed) without a message".into()),
        ),
        abi::status::INVALID_INPUT => Failure::new(
            FailureKind::InvalidInput,
            message.unwrap_or_else(|| "the guest returned status 2 (invalid input) without a message".into()),
        ),
        other => Failure::new(
            FailureKind::GuestError,
            format!(
                "the guest returned unknown status {other}{}",
                message.map(|m| format!(": {m}")).unwrap_or_default()
            ),
        ),
    }
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
