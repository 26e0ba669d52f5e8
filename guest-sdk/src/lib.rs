//! Write wasmbatch batch handlers in Rust.
//!
//! A plugin is a `cdylib` crate that depends on this one and marks one function as its
//! batch handler; it takes a context and a batch of typed items:
//!
//! ```no_run
//! use serde::Deserialize;
//! use wasmbatch_guest::{Context, ErrorContext, Result, bail, info};
//!
//! #[derive(Deserialize)]
//! struct Order {
//!     id: String,
//!     amount: f64,
//! }
//!
//! #[wasmbatch_guest::handler]
//! fn handle(ctx: &Context, orders: Vec<Order>) -> Result<()> {
//!     let limit = ctx.config()["limit"].as_f64().unwrap_or(1000.0);
//!     for order in &orders {
//!         if order.amount > limit {
//!             bail!("order {} is over the limit {limit}", order.id);
//!         }
//!     }
//!     // One output per batch, named by the batch: a retried batch overwrites its own.
//!     let path = format!("/mnt/orders-{}.json", ctx.batch_id());
//!     std::fs::write(&path, orders.len().to_string()).with_context(|| format!("writing {path}"))?;
//!     info!("{} orders fine", orders.len()); // a host log line, tagged with the job ID
//!     Ok(())
//! }
//! ```
//!
//! ```toml
//! # Cargo.toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]   # rlib: so that `cargo test` can call your functions
//!
//! [dependencies]
//! wasmbatch-guest = "0.1"            # or { path = "…/wasmbatch/guest-sdk" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! Build with `cargo build --target wasm32-wasip1 --release` and run the `.wasm` with
//! `wasmbatch serve --plugin target/wasm32-wasip1/release/<name>.wasm`.
//!
//! For `wasm32-wasip2` the same source builds as a component of the world
//! `wasmbatch:handler` (`wit/handler.wit`): `#[init]` and `#[on_job_complete]` then
//! sit in the module of `#[handler]` (or the plugin uses [`plugin!`]), and a panic
//! fails its batch as a trap (its message logged).
//!
//! # What the SDK does for you
//!
//! - **Typed items.** The batch (a JSON array) is deserialized into `Vec<T>` for the `T`
//!   your handler takes. A batch that does not fit is reported to the host as
//!   `invalid_input` with serde's message; your function is not called. `T` may borrow
//!   from the batch: `struct Doc<'a> { #[serde(borrow)] text: Cow<'a, str> }` with a
//!   handler taking `Vec<Doc<'_>>` copies a string only when it holds escapes (a
//!   `&'a str` field cannot hold those: such an item is `invalid_input`).
//! - **Items unparsed.** A handler taking [`Items`] instead of `Vec<T>` gets each item's
//!   JSON text and parses only what it asks for (`items.get(3)?.parse::<T>()`,
//!   `items.parse::<T>()`): nothing is read for items it skips. Under `serve` the host
//!   hands over where each item lies, found by the scan it makes anyway, so the batch is
//!   parsed once in all, whichever kind of handler takes it.
//! - **Errors.** [`Error`] takes any error with `?` — `std::io::Error`, `serde_json`'s,
//!   `anyhow::Error`, your own — and keeps its chain of causes. [`ErrorContext`] adds
//!   context (`.context("reading the model")?`) to a `Result` or an `Option`, or marks an
//!   error as the input's fault (`.invalid_input()?`). [`bail!`] fails the batch
//!   (`guest_error`), [`invalid!`] rejects it (`invalid_input`), [`ensure!`] checks. A
//!   panic fails the batch as `panic` with its message; the host then replaces the
//!   instance.
//! - **The batch.** [`Context::batch_id`] is unique within the job and the same on
//!   every attempt at a batch: name per-batch outputs by it and a retried batch
//!   overwrites its own output instead of adding a second. [`Context::attempt`] counts
//!   attempts from 1.
//! - **State.** `#[init]` runs once per instance, before its first batch, and may
//!   return a value; a handler that takes `&mut S` gets it on every batch. State
//!   belongs to **one instance**: a job runs on several at once (`workers`), an
//!   instance is replaced after a failure or `--recycle-after` batches, and `serve` may
//!   answer on-job-complete on an instance that saw no batch. Keep a model or a lookup
//!   table there, never a job-wide total. A hook whose `&mut S` is not the type
//!   `#[init]` returns does not compile:
//!
//! ```no_run
//! use wasmbatch_guest::{Context, JobComplete, Result};
//!
//! struct Model { weights: Vec<f64> }
//!
//! #[wasmbatch_guest::init]
//! fn load(ctx: &Context) -> Result<Model> {
//!     Ok(Model { weights: ctx.config_as::<Vec<f64>>()? })
//! }
//!
//! #[wasmbatch_guest::handler]
//! fn score(_ctx: &Context, model: &mut Model, rows: Vec<Vec<f64>>) -> Result<()> {
//!     let _scores: Vec<f64> =
//!         rows.iter().map(|r| r.iter().zip(&model.weights).map(|(x, w)| x * w).sum()).collect();
//!     Ok(())
//! }
//!
//! #[wasmbatch_guest::on_job_complete]
//! fn finish(_ctx: &Context, done: &JobComplete) -> Result<()> {
//!     wasmbatch_guest::info!("{:?} of {:?} batches succeeded", done.succeeded, done.total);
//!     Ok(())
//! }
//! ```
//!
//!   The three attributes may come in any order; a hook with state goes in the module
//!   of `#[init]` (its state check finds the type there). (The older
//!   `plugin!(handle: …, init: …, on_job_complete: …)` macro does the same, also in any
//!   order.)
//! - **Job-wide totals.** What handlers return (or [`Context::emit`]) are the job's
//!   results, kept by the host once per batch however often a batch runs. In
//!   on-job-complete, [`Context::results`] reads them all, typed — whichever instance,
//!   worker or server produced them — so a total added up there is exact with any
//!   number of workers (`docs/plugin-guide.md` builds one).
//! - **Chaining.** [`Context::submit_job`] submits a job to another API of the job
//!   service and returns its ID.
//! - **Output.** [`info!`], [`warn!`], [`error!`], [`debug!`], [`trace!`] (and [`log`])
//!   emit host log lines at a level, tagged with the job, the API and the batch; a
//!   message with newlines is one entry. `println!` lines are logged at INFO and
//!   `eprintln!` lines at WARN; output without a final newline is still flushed at the
//!   end of each call, and everything keeps the order it was written in. The host logs
//!   INFO and above by default; `wasmbatch --log-level debug` shows `debug!` lines too.
//!
//! The files a guest can reach: the job spec, read-only, at `/cortex/spec/job.json`, and
//! `/mnt` read-write when the host mounts a directory there. Nothing else.
//!
//! # Testing a plugin natively
//!
//! The attributes leave your functions as they are, and the SDK builds for the host
//! too, so `cargo test` (no Wasm target needed) calls them directly with a context you
//! make: `Context::for_batch("job-1", &spec, "0", 1)`. Give the crate type `rlib` next
//! to `cdylib` for that.
//!
//! # The ABI underneath
//!
//! The attributes export the functions of wasmbatch guest ABI v1 (`docs/abi.md` in the
//! wasmbatch repository): `_initialize`, `wasmbatch_abi_version`, `wasmbatch_alloc`,
//! `wasmbatch_handle`, `wasmbatch_handle_items` and, with their hooks, `wasmbatch_init` and
//! `wasmbatch_on_job_complete`. They import `set_error`, `log`, `panic`, `batch_id`,
//! `attempt`, `submit_job`, `emit`, `item_error`, `item_reject`, `results_open`,
//! `results_next` and the capability calls from the `wasmbatch` module (a module
//! imports only what it uses). Inputs are copied once into guest memory by
//! the host; the guest owns and frees them. Without an init hook the SDK reads the job
//! spec from `/cortex/spec/job.json` when it is first needed.

#![deny(missing_docs)]

use std::any::Any;
use std::cell::{OnceCell, RefCell};
use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

mod batch;
mod exports;
mod io;
mod results;
mod sys;

pub use anyhow;
#[doc(hidden)]
pub use batch::RawBatch;
pub use batch::{Handler, Item, Items, Stateful, Stateless, Unparsed, UnparsedStateful};
pub use io::{Output, Request, Response};
pub use results::Results;
/// `serde_json`, as the SDK uses it: `wasmbatch_guest::serde_json::json!` and `Value`
/// without a dependency of the plugin's own.
pub use serde_json;
#[cfg(not(target_arch = "wasm32"))]
pub use sys::{give_job_results, take_emitted, take_error, take_item_errors, take_rejected_items};
pub use wasmbatch_guest_macros::{handler, init, on_job_complete};

/// The guest ABI version this SDK implements.
pub const ABI_VERSION: i32 = 1;

/// What a handler returns.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// Why a call failed: an error with its chain of causes, and whether the input itself
/// was at fault.
pub struct Error {
    inner: anyhow::Error,
    invalid_input: bool,
}

impl Error {
    /// A failure with this message (reported as `guest_error`).
    pub fn msg(message: impl fmt::Display) -> Self {
        Error { inner: anyhow::Error::msg(message.to_string()), invalid_input: false }
    }

    /// The batch itself is unusable (reported as `invalid_input`: not retried, and
    /// answered 400 under `serve`).
    pub fn invalid_input(message: impl fmt::Display) -> Self {
        Error { inner: anyhow::Error::msg(message.to_string()), invalid_input: true }
    }

    /// The message the host reports: this error and its causes, `outer: inner: …`.
    pub fn message(&self) -> String {
        format!("{:#}", self.inner)
    }

    /// Whether this is an invalid-input failure.
    pub fn is_invalid_input(&self) -> bool {
        self.invalid_input
    }

    /// The same error, marked as the input's fault.
    pub fn into_invalid_input(self) -> Self {
        Error { invalid_input: true, ..self }
    }

    /// The same error with `context` in front of it.
    pub fn context(self, context: impl fmt::Display + Send + Sync + 'static) -> Self {
        Error { inner: self.inner.context(context), invalid_input: self.invalid_input }
    }

    /// The underlying error, for downcasting to its original type.
    pub fn as_anyhow(&self) -> &anyhow::Error {
        &self.inner
    }
}

impl<E: Into<anyhow::Error>> From<E> for Error {
    fn from(error: E) -> Self {
        Error { inner: error.into(), invalid_input: false }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.inner)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.invalid_input { "invalid input" } else { "error" };
        write!(f, "{kind}: {:#}", self.inner)
    }
}

/// Context and invalid-input marks for `Result`s and `Option`s, whatever their error.
pub trait ErrorContext<T> {
    /// Puts `context` in front of the error (or makes one of a `None`).
    fn context(self, context: impl fmt::Display + Send + Sync + 'static) -> Result<T>;
    /// Like [`ErrorContext::context`], the context built only on failure.
    fn with_context<C: fmt::Display + Send + Sync + 'static>(self, context: impl FnOnce() -> C) -> Result<T>;
    /// Marks the error as the input's fault (`invalid_input`).
    fn invalid_input(self) -> Result<T>;
}

impl<T, E: Into<Error>> ErrorContext<T> for std::result::Result<T, E> {
    fn context(self, context: impl fmt::Display + Send + Sync + 'static) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display + Send + Sync + 'static>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.into().context(context()))
    }

    fn invalid_input(self) -> Result<T> {
        self.map_err(|e| e.into().into_invalid_input())
    }
}

impl<T> ErrorContext<T> for Option<T> {
    fn context(self, context: impl fmt::Display + Send + Sync + 'static) -> Result<T> {
        self.ok_or_else(|| Error::msg(context))
    }

    fn with_context<C: fmt::Display + Send + Sync + 'static>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| Error::msg(context()))
    }

    fn invalid_input(self) -> Result<T> {
        self.ok_or_else(|| Error::invalid_input("a required value is missing"))
    }
}

/// Returns early with an [`Error`] built from a format string (`guest_error`).
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)*)))
    };
}

/// Returns early with an invalid-input [`Error`] built from a format string: the batch
/// is unusable, and retrying it will not help.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::invalid_input(::std::format!($($arg)*)))
    };
}

/// Returns early with an [`Error`] unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::bail!($($arg)+);
        }
    };
}

/// A host log line at ERROR, from a format string.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log($crate::Level::Error, ::std::format!($($arg)+)) };
}

/// A host log line at WARN, from a format string.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log($crate::Level::Warn, ::std::format!($($arg)+)) };
}

/// A host log line at INFO, from a format string.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log($crate::Level::Info, ::std::format!($($arg)+)) };
}

/// A host log line at DEBUG, from a format string (shown with `--log-level debug`).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log($crate::Level::Debug, ::std::format!($($arg)+)) };
}

/// A host log line at TRACE, from a format string (shown with `--log-level trace`).
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log($crate::Level::Trace, ::std::format!($($arg)+)) };
}

/// What a call knows about the job it works for, and about the batch it handles.
pub struct Context<'a> {
    job_id: &'a str,
    /// `None`: the process's job spec ([`job_spec`]), read only if asked for.
    spec: Option<&'a Value>,
    batch: Batch,
}

/// Where a context's batch identity comes from.
enum Batch {
    /// Not a batch call (init, on-job-complete).
    None,
    /// Asked of the host on first use.
    Host(OnceCell<(String, u32)>),
    /// Given (tests).
    Given(String, u32),
}

impl<'a> Context<'a> {
    /// A context for `job_id` under `spec`, outside any batch.
    pub fn new(job_id: &'a str, spec: &'a Value) -> Self {
        Context { job_id, spec: Some(spec), batch: Batch::None }
    }

    /// A context for one batch, as a plugin's native tests make it.
    pub fn for_batch(job_id: &'a str, spec: &'a Value, batch_id: impl Into<String>, attempt: u32) -> Self {
        Context { job_id, spec: Some(spec), batch: Batch::Given(batch_id.into(), attempt) }
    }

    /// A context for a call from the host: the spec and the batch are looked up only
    /// when the function asks for them.
    fn from_host(job_id: &'a str, batch: bool) -> Self {
        let batch = if batch { Batch::Host(OnceCell::new()) } else { Batch::None };
        Context { job_id, spec: None, batch }
    }

    fn batch(&self) -> (&str, u32) {
        match &self.batch {
            Batch::None => ("", 0),
            Batch::Host(cell) => {
                let (id, attempt) = cell.get_or_init(|| (sys::batch_id(), sys::attempt()));
                (id, *attempt)
            }
            Batch::Given(id, attempt) => (id, *attempt),
        }
    }

    /// The job's ID (`X-Cortex-Job-ID`).
    pub fn job_id(&self) -> &str {
        self.job_id
    }

    /// The batch's identifier: unique within the job, the same on every attempt at the
    /// batch, and safe in a file name (letters, digits, `-`, `_`, `.`). Name per-batch
    /// outputs by it so that a retried batch replaces its own. Empty outside a batch.
    ///
    /// `wasmbatch run` numbers batches from `0`; under `serve` it is the sender's
    /// `X-Wasmbatch-Batch-ID`, or, when a sender (like Cortex) gives none, a hash of the
    /// job ID and the batch's bytes — two batches with identical bytes then share it.
    pub fn batch_id(&self) -> &str {
        self.batch().0
    }

    /// Which attempt at this batch this is, from 1 (0 outside a batch). Under `serve`
    /// without an `X-Wasmbatch-Attempt` header, counted by the server process.
    pub fn attempt(&self) -> u32 {
        self.batch().1
    }

    /// The job's `config` object (`Value::Null` when the job has none).
    pub fn config(&self) -> &Value {
        self.spec().get("config").unwrap_or(&Value::Null)
    }

    /// The job's `config`, deserialized into `T`; a job without a `config` (or with
    /// `null`) reads as `{}`, so that a `T` whose fields all have defaults needs none.
    /// A config that does not fit is invalid input.
    pub fn config_as<T: DeserializeOwned>(&self) -> Result<T> {
        let empty = Value::Object(serde_json::Map::new());
        let config = match self.config() {
            Value::Null => &empty,
            config => config,
        };
        T::deserialize(config).map_err(|e| Error::invalid_input(format!("job config: {e}")))
    }

    /// Submits a job to another API of the job service (chaining) and returns the new
    /// job's ID. `job` is a Cortex job submission (`workers`, `item_list`, …). Only the
    /// APIs the host allows (`may_submit_to` in the operator's configuration, `serve
    /// --may-submit-to`) are reachable; a refusal is an error with the host's reason.
    pub fn submit_job(&self, api: &str, job: &impl serde::Serialize) -> Result<String> {
        let job = serde_json::to_vec(job).map_err(|e| Error::msg(format!("the job to submit: {e}")))?;
        sys::submit_job(api, &job).map_err(|e| Error::msg(format!("submitting a job to {api}: {e}")))
    }

    /// The whole job spec, as found at `/cortex/spec/job.json`.
    pub fn spec(&self) -> &Value {
        self.spec.unwrap_or_else(|| job_spec())
    }
}

/// The body of the on-job-complete call.
///
/// Cortex sends `{"message":"job_complete"}`; wasmbatch adds the job's batch counts.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct JobComplete {
    /// Always `"job_complete"`.
    pub message: String,
    /// Batches that succeeded, when the sender counted them.
    #[serde(default)]
    pub succeeded: Option<u64>,
    /// Batches that failed for good, when the sender counted them.
    #[serde(default)]
    pub failed: Option<u64>,
    /// All batches of the job, when the sender counted them.
    #[serde(default)]
    pub total: Option<u64>,
}

/// Log levels of [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something failed.
    Error = 0,
    /// Something looks wrong.
    Warn = 1,
    /// Normal progress.
    Info = 2,
    /// Detail for debugging.
    Debug = 3,
    /// Even more detail.
    Trace = 4,
}

impl Level {
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    fn from_u32(level: u32) -> Level {
        match level {
            0 => Level::Error,
            1 => Level::Warn,
            2 => Level::Info,
            3 => Level::Debug,
            _ => Level::Trace,
        }
    }

    /// The level's lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

/// Emits one host log line at `level`, tagged by the host with the job ID. What was
/// printed before it is logged before it.
pub fn log(level: Level, line: impl AsRef<str>) {
    flush_output();
    sys::log(level as u32, line.as_ref());
}

/// Hands what `print!`/`eprint!` buffered to the host, partial lines included.
fn flush_output() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// The job spec: the one `init` was given, else `/cortex/spec/job.json` (natively,
/// `{}`), read once.
pub fn job_spec() -> &'static Value {
    SPEC.get_or_init(read_spec_file)
}

fn read_spec_file() -> Value {
    let empty = || Value::Object(Default::default());
    if !cfg!(target_arch = "wasm32") {
        return empty();
    }
    std::fs::read("/cortex/spec/job.json").ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_else(empty)
}

static SPEC: OnceLock<Value> = OnceLock::new();

thread_local! {
    /// What `init` returned, with its type's name for error messages.
    static STATE: RefCell<Option<(Box<dyn Any>, &'static str)>> = const { RefCell::new(None) };
}

/// Runs `f` with the state `init` returned, if it is an `S`.
fn with_state<S: 'static, R>(f: impl FnOnce(&mut S) -> Result<R>) -> Result<R> {
    STATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let wanted = std::any::type_name::<S>();
        match slot.as_mut() {
            Some((state, _)) if state.is::<S>() => f(state.downcast_mut::<S>().expect("checked")),
            Some((_, found)) => {
                Err(Error::msg(format!("the init hook returned a `{found}`, but this hook takes `&mut {wanted}`")))
            }
            None => Err(Error::msg(format!(
                "this hook takes `&mut {wanted}`, but no init hook returned one (add a \
                 #[wasmbatch_guest::init] function returning Result<{wanted}>)"
            ))),
        }
    })
}

/// An on-job-complete hook: `fn(&Context, &JobComplete) -> Result<()>` or
/// `fn(&Context, &mut S, &JobComplete) -> Result<()>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an on-job-complete hook",
    label = "this function's signature is not one an on-job-complete hook may have",
    note = "an on-job-complete hook is `fn(ctx: &Context, done: &JobComplete) -> Result<()>` or `fn(ctx: \
            &Context, state: &mut S, done: &JobComplete) -> Result<()>`, where S is the type #[init] returns"
)]
pub trait CompletionHook<Marker> {
    /// Calls the function.
    fn call(self, ctx: &Context<'_>, done: &JobComplete) -> Result<()>;
}

impl<F> CompletionHook<Stateless<()>> for F
where
    F: FnOnce(&Context<'_>, &JobComplete) -> Result<()>,
{
    fn call(self, ctx: &Context<'_>, done: &JobComplete) -> Result<()> {
        self(ctx, done)
    }
}

impl<F, S> CompletionHook<Stateful<S, ()>> for F
where
    F: FnOnce(&Context<'_>, &mut S, &JobComplete) -> Result<()>,
    S: 'static,
{
    fn call(self, ctx: &Context<'_>, done: &JobComplete) -> Result<()> {
        with_state(|state: &mut S| self(ctx, state, done))
    }
}

/// Status codes of ABI v1 calls.
mod status {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const INVALID_INPUT: i32 = 2;
}

/// What the macros expand to calls; not part of the public API.
#[doc(hidden)]
pub mod __private;

#[cfg(test)]
mod tests;
