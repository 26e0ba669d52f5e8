//! Write wasmbatch batch handlers in Rust.
//!
//! A plugin is a `cdylib` crate that depends on this one, writes one function that takes
//! a context and a batch of typed items, and registers it with [`plugin!`]:
//!
//! ```no_run
//! use serde::Deserialize;
//! use wasmbatch_guest::{Context, Result};
//!
//! #[derive(Deserialize)]
//! struct Order {
//!     id: String,
//!     amount: f64,
//! }
//!
//! fn handle(ctx: &Context, orders: Vec<Order>) -> Result<()> {
//!     let limit = ctx.config()["limit"].as_f64().unwrap_or(1000.0);
//!     for order in &orders {
//!         if order.amount > limit {
//!             wasmbatch_guest::bail!("order {} is over the limit {limit}", order.id);
//!         }
//!     }
//!     println!("{} orders fine", orders.len()); // a host log line, tagged with the job ID
//!     Ok(())
//! }
//!
//! wasmbatch_guest::plugin!(handle: handle);
//! ```
//!
//! ```toml
//! # Cargo.toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! wasmbatch-guest = "0.1"
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! Build with `cargo build --target wasm32-wasip1 --release` and run the `.wasm` with
//! `wasmbatch serve --plugin target/wasm32-wasip1/release/<name>.wasm`.
//!
//! # What the SDK does for you
//!
//! - **Typed items.** The batch (a JSON array) is deserialized into `Vec<T>` for the `T`
//!   your handler takes. A batch that does not fit is reported to the host as
//!   `invalid_input` with serde's message; your function is not called.
//! - **Errors and panics.** An `Err` fails the batch with its message (`guest_error`);
//!   [`Error::invalid_input`] marks a bad batch instead. A panic fails the batch as
//!   `panic` with the panic message; the host then replaces the instance.
//! - **Output.** `println!` / `eprintln!` become host log lines tagged with the job ID;
//!   [`log`] emits a line at a chosen level.
//! - **Hooks.** `init` runs once per instance, before the first batch, with the job spec;
//!   `on_job_complete` runs once per job, after the last batch:
//!
//! ```ignore
//! wasmbatch_guest::plugin!(handle: handle, init: setup, on_job_complete: finish);
//! fn setup(ctx: &Context) -> Result<()> { Ok(()) }
//! fn finish(ctx: &Context, done: &JobComplete) -> Result<()> { Ok(()) }
//! ```
//!
//! The files a guest can reach: the job spec, read-only, at `/cortex/spec/job.json`, and
//! `/mnt` read-write when the host mounts a directory there. Nothing else.
//!
//! # The ABI underneath
//!
//! [`plugin!`] exports the functions of wasmbatch guest ABI v1 (`docs/abi.md` in the
//! wasmbatch repository): `_initialize`, `wasmbatch_abi_version`, `wasmbatch_alloc`,
//! `wasmbatch_init`, `wasmbatch_handle` and, when you give the hook,
//! `wasmbatch_on_job_complete`. It imports `set_error`, `log` and `panic` from the
//! `wasmbatch` module. Inputs are copied once into guest memory by the host; the guest
//! owns and frees them.

#![deny(missing_docs)]

use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

mod sys;

#[cfg(not(target_arch = "wasm32"))]
pub use sys::take_error;

/// The guest ABI version this SDK implements.
pub const ABI_VERSION: i32 = 1;

/// What a handler returns.
pub type Result<T = (), E = Error> = std::result::Result<T, E>;

/// Why a call failed: a message, and whether the input itself was at fault.
pub struct Error {
    message: String,
    invalid_input: bool,
}

impl Error {
    /// A failure with this message (reported as `guest_error`).
    pub fn msg(message: impl fmt::Display) -> Self {
        Error { message: message.to_string(), invalid_input: false }
    }

    /// The batch itself is unusable (reported as `invalid_input`).
    pub fn invalid_input(message: impl fmt::Display) -> Self {
        Error { message: message.to_string(), invalid_input: true }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this is an invalid-input failure.
    pub fn is_invalid_input(&self) -> bool {
        self.invalid_input
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        Error::msg(error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?})", self.message)
    }
}

/// Returns early with an [`Error`] built from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)*)))
    };
}

/// What a call knows about the job it works for.
pub struct Context<'a> {
    job_id: &'a str,
    spec: &'a Value,
}

impl<'a> Context<'a> {
    /// A context for `job_id` under `spec`; the SDK builds these, tests may too.
    pub fn new(job_id: &'a str, spec: &'a Value) -> Self {
        Context { job_id, spec }
    }

    /// The job's ID (`X-Cortex-Job-ID`).
    pub fn job_id(&self) -> &str {
        self.job_id
    }

    /// The job's `config` object (`Value::Null` when the job has none).
    pub fn config(&self) -> &Value {
        self.spec.get("config").unwrap_or(&Value::Null)
    }

    /// The job's `config`, deserialized into `T`.
    pub fn config_as<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(self.config()).map_err(|e| Error::invalid_input(format!("job config: {e}")))
    }

    /// The whole job spec, as found at `/cortex/spec/job.json`.
    pub fn spec(&self) -> &Value {
        self.spec
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

/// Emits one host log line at `level`, tagged by the host with the job ID.
pub fn log(level: Level, line: impl AsRef<str>) {
    sys::log(level as u32, line.as_ref());
}

/// The job spec this instance was initialized with (`Null` before `init`).
pub fn job_spec() -> &'static Value {
    static NULL: Value = Value::Null;
    SPEC.get().unwrap_or(&NULL)
}

static SPEC: OnceLock<Value> = OnceLock::new();

/// Status codes of ABI v1 calls.
mod status {
    pub const OK: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const INVALID_INPUT: i32 = 2;
}

/// Registers a plugin's functions as the exports of ABI v1.
///
/// `handle` is required; `init` and `on_job_complete` are optional, in this order:
///
/// ```ignore
/// wasmbatch_guest::plugin!(handle: handle);
/// wasmbatch_guest::plugin!(handle: handle, init: setup);
/// wasmbatch_guest::plugin!(handle: handle, on_job_complete: finish);
/// wasmbatch_guest::plugin!(handle: handle, init: setup, on_job_complete: finish);
/// ```
///
/// - `fn handle(ctx: &Context, items: Vec<T>) -> Result<()>` for any `T: DeserializeOwned`;
/// - `fn setup(ctx: &Context) -> Result<()>`;
/// - `fn finish(ctx: &Context, done: &JobComplete) -> Result<()>`.
#[macro_export]
macro_rules! plugin {
    (handle: $handle:path $(, init: $init:path)? $(, on_job_complete: $complete:path)? $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn _initialize() {
            $crate::__private::initialize();
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn wasmbatch_abi_version() -> i32 {
            $crate::ABI_VERSION
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn wasmbatch_alloc(len: usize) -> *mut u8 {
            $crate::__private::alloc(len)
        }

        /// # Safety
        /// `ptr`/`len` come from `wasmbatch_alloc` (ABI v1).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn wasmbatch_init(ptr: *mut u8, len: usize) -> i32 {
            #[allow(unused_variables)]
            let hook = |ctx: &$crate::Context| -> $crate::Result<()> {
                $( return $init(ctx); )?
                #[allow(unreachable_code)]
                Ok(())
            };
            // SAFETY: forwarded from the caller.
            unsafe { $crate::__private::init(ptr, len, hook) }
        }

        /// # Safety
        /// Both pointer pairs come from `wasmbatch_alloc` (ABI v1).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn wasmbatch_handle(
            job_ptr: *mut u8,
            job_len: usize,
            batch_ptr: *mut u8,
            batch_len: usize,
        ) -> i32 {
            // SAFETY: forwarded from the caller.
            unsafe { $crate::__private::handle(job_ptr, job_len, batch_ptr, batch_len, $handle) }
        }

        $(
            /// # Safety
            /// Both pointer pairs come from `wasmbatch_alloc` (ABI v1).
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn wasmbatch_on_job_complete(
                job_ptr: *mut u8,
                job_len: usize,
                body_ptr: *mut u8,
                body_len: usize,
            ) -> i32 {
                // SAFETY: forwarded from the caller.
                unsafe {
                    $crate::__private::on_job_complete(job_ptr, job_len, body_ptr, body_len, $complete)
                }
            }
        )?
    };
}

/// What [`plugin!`] expands to calls; not part of the public API.
#[doc(hidden)]
pub mod __private {
    use super::*;
    use std::alloc::{Layout, alloc as raw_alloc};

    /// `_initialize`: static constructors, then the panic hook.
    pub fn initialize() {
        sys::call_ctors();
        install_panic_hook();
    }

    fn install_panic_hook() {
        static HOOK: OnceLock<()> = OnceLock::new();
        HOOK.get_or_init(|| {
            std::panic::set_hook(Box::new(|info| sys::panic(&info.to_string())));
        });
    }

    /// `wasmbatch_alloc`: `len` bytes the host fills and hands back with a call.
    pub fn alloc(len: usize) -> *mut u8 {
        match Layout::array::<u8>(len) {
            // A zero-sized allocation is never handed out; any non-null pointer will do.
            Ok(_) if len == 0 => std::ptr::NonNull::<u8>::dangling().as_ptr(),
            // SAFETY: the layout has a non-zero size.
            Ok(layout) => unsafe { raw_alloc(layout) },
            Err(_) => std::ptr::null_mut(),
        }
    }

    /// Takes ownership of a buffer the host filled (freed when the `Vec` drops).
    ///
    /// # Safety
    /// `ptr`/`len` must come from [`alloc`] with the same `len`, or be `len == 0`.
    unsafe fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
        if len == 0 || ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: `alloc` allocated exactly `len` bytes with `u8`'s alignment, the
        // layout `Vec<u8>` uses for capacity `len`; the host filled all of them.
        unsafe { Vec::from_raw_parts(ptr, len, len) }
    }

    fn report(result: Result<()>) -> i32 {
        match result {
            Ok(()) => status::OK,
            Err(e) => {
                sys::set_error(&e.message);
                if e.invalid_input { status::INVALID_INPUT } else { status::FAILED }
            }
        }
    }

    /// `wasmbatch_init`.
    ///
    /// # Safety
    /// `ptr`/`len` must come from `alloc` with the same length (or be empty).
    pub unsafe fn init(ptr: *mut u8, len: usize, hook: impl FnOnce(&Context) -> Result<()>) -> i32 {
        install_panic_hook();
        // SAFETY: forwarded.
        let bytes = unsafe { take(ptr, len) };
        let spec: Value = if bytes.is_empty() {
            Value::Object(Default::default())
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(spec) => spec,
                Err(e) => return report(Err(Error::invalid_input(format!("job spec: {e}")))),
            }
        };
        let spec = SPEC.get_or_init(|| spec);
        let job_id = spec.get("job_id").and_then(Value::as_str).unwrap_or("");
        report(hook(&Context::new(job_id, spec)))
    }

    /// `wasmbatch_handle`.
    ///
    /// # Safety
    /// Both pointer pairs must come from `alloc` with the same lengths (or be empty).
    pub unsafe fn handle<T: DeserializeOwned>(
        job_ptr: *mut u8,
        job_len: usize,
        batch_ptr: *mut u8,
        batch_len: usize,
        handler: impl FnOnce(&Context, Vec<T>) -> Result<()>,
    ) -> i32 {
        // SAFETY: forwarded.
        let (job_id, batch) = unsafe { (take(job_ptr, job_len), take(batch_ptr, batch_len)) };
        let job_id = String::from_utf8_lossy(&job_id);
        let items: Vec<T> = match serde_json::from_slice(&batch) {
            Ok(items) => items,
            Err(e) => {
                return report(Err(Error::invalid_input(format!("batch does not match the handler's item type: {e}"))));
            }
        };
        drop(batch);
        report(handler(&Context::new(&job_id, job_spec()), items))
    }

    /// `wasmbatch_on_job_complete`.
    ///
    /// # Safety
    /// Both pointer pairs must come from `alloc` with the same lengths (or be empty).
    pub unsafe fn on_job_complete(
        job_ptr: *mut u8,
        job_len: usize,
        body_ptr: *mut u8,
        body_len: usize,
        hook: impl FnOnce(&Context, &JobComplete) -> Result<()>,
    ) -> i32 {
        // SAFETY: forwarded.
        let (job_id, body) = unsafe { (take(job_ptr, job_len), take(body_ptr, body_len)) };
        let job_id = String::from_utf8_lossy(&job_id);
        let done: JobComplete = match serde_json::from_slice(&body) {
            Ok(done) => done,
            Err(e) => return report(Err(Error::invalid_input(format!("on-job-complete body: {e}")))),
        };
        report(hook(&Context::new(&job_id, job_spec()), &done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Pair(u32, u32);

    fn add(ctx: &Context, items: Vec<Pair>) -> Result<()> {
        if ctx.job_id() != "job-1" {
            bail!("wrong job id {}", ctx.job_id());
        }
        if items.iter().any(|p| p.0 + p.1 > 10) {
            return Err(Error::invalid_input("sum over 10"));
        }
        Ok(())
    }

    fn call(job: &str, batch: &str) -> i32 {
        let job_ptr = __private::alloc(job.len());
        let batch_ptr = __private::alloc(batch.len());
        // SAFETY: both buffers were just allocated with these lengths.
        unsafe {
            std::ptr::copy_nonoverlapping(job.as_ptr(), job_ptr, job.len());
            std::ptr::copy_nonoverlapping(batch.as_ptr(), batch_ptr, batch.len());
            __private::handle(job_ptr, job.len(), batch_ptr, batch.len(), add)
        }
    }

    #[test]
    fn handle_maps_results_to_status_codes() {
        assert_eq!(call("job-1", "[[1,2],[3,4]]"), status::OK);
        assert_eq!(call("job-1", "[[9,9]]"), status::INVALID_INPUT);
        assert_eq!(take_error().as_deref(), Some("sum over 10"));
        assert_eq!(call("job-2", "[]"), status::FAILED);
        assert_eq!(take_error().as_deref(), Some("wrong job id job-2"));
        assert_eq!(call("job-1", r#"["not a pair"]"#), status::INVALID_INPUT);
        assert!(take_error().unwrap().starts_with("batch does not match the handler's item type"));
    }

    #[test]
    fn job_complete_accepts_cortex_and_extended_bodies() {
        let plain: JobComplete = serde_json::from_str(r#"{"message":"job_complete"}"#).unwrap();
        assert_eq!(plain.total, None);
        let counted: JobComplete =
            serde_json::from_str(r#"{"message":"job_complete","job_id":"x","succeeded":3,"failed":1,"total":4}"#)
                .unwrap();
        assert_eq!((counted.succeeded, counted.failed, counted.total), (Some(3), Some(1), Some(4)));
    }

    #[test]
    fn config_comes_from_the_spec() {
        let spec = serde_json::json!({"job_id": "j", "config": {"limit": 5}});
        let ctx = Context::new("j", &spec);
        assert_eq!(ctx.config()["limit"], 5);
        #[derive(Deserialize)]
        struct Config {
            limit: u32,
        }
        assert_eq!(ctx.config_as::<Config>().unwrap().limit, 5);
        let empty = serde_json::json!({});
        assert!(Context::new("j", &empty).config().is_null());
    }
}
