//! What the SDK's macros expand to: the ABI exports' bodies, the panic hook, the
//! state check. Not for plugins to call.

use super::*;
use std::alloc::{Layout, alloc as raw_alloc};

/// The state an init hook's return type carries (`Result<S>` → `S`).
pub trait InitOutput {
    /// The state.
    type State;
}

impl<S, E> InitOutput for std::result::Result<S, E> {
    type State = S;
}

/// Holds when a hook's `&mut` state is the type `#[init]` returns.
#[diagnostic::on_unimplemented(
    message = "this hook takes `&mut {Self}`, but `#[init]` returns `Result<{S}>`",
    label = "not the state `#[init]` returns",
    note = "a handler or on-job-complete hook with state takes `&mut S`, where `S` is what the `#[init]` \
            function returns inside its `Result`: make the two the same type"
)]
pub trait SameState<S> {}

impl<S> SameState<S> for S {}

/// Compiles only when `A` is `B`: the macros' check of a hook's state.
pub const fn same_state<A: SameState<B>, B>() {}

/// `_initialize`: static constructors, then the panic hook.
pub fn initialize() {
    sys::call_ctors();
    install_panic_hook();
}

fn install_panic_hook() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        std::panic::set_hook(Box::new(|info| {
            flush_output();
            sys::panic(&info.to_string())
        }));
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

/// Ends a call: flushes buffered output, reports the error, returns the status.
fn report(result: Result<()>) -> i32 {
    flush_output();
    match result {
        Ok(()) => status::OK,
        Err(e) => {
            sys::set_error(&e.message());
            if e.invalid_input { status::INVALID_INPUT } else { status::FAILED }
        }
    }
}

/// `wasmbatch_init`: keeps the spec, runs the hook, keeps what it returns.
///
/// # Safety
/// `ptr`/`len` must come from `alloc` with the same length (or be empty).
pub unsafe fn init<S: 'static>(ptr: *mut u8, len: usize, hook: impl FnOnce(&Context<'_>) -> Result<S>) -> i32 {
    // SAFETY: forwarded.
    init_bytes(unsafe { take(ptr, len) }, hook)
}

/// `init` with the spec's bytes.
pub fn init_bytes<S: 'static>(bytes: Vec<u8>, hook: impl FnOnce(&Context<'_>) -> Result<S>) -> i32 {
    install_panic_hook();
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
    report(hook(&Context::new(job_id, spec)).map(|state| {
        let state: Box<dyn Any> = Box::new(state);
        STATE.with(|cell| *cell.borrow_mut() = Some((state, std::any::type_name::<S>())));
    }))
}

/// `wasmbatch_handle`.
///
/// # Safety
/// Both pointer pairs must come from `alloc` with the same lengths (or be empty).
///
/// `call` is `|ctx, batch| Handler::call(function, ctx, batch)`: a closure for
/// any lifetime of the batch, so that items may borrow from it.
pub unsafe fn handle(
    job_ptr: *mut u8,
    job_len: usize,
    batch_ptr: *mut u8,
    batch_len: usize,
    call: impl for<'b> FnOnce(&Context<'_>, RawBatch<'b>) -> Result<()>,
) -> i32 {
    // SAFETY: forwarded.
    let (job_id, batch) = unsafe { (take(job_ptr, job_len), take(batch_ptr, batch_len)) };
    handle_bytes(&String::from_utf8_lossy(&job_id), &batch, call)
}

/// `handle` with the job ID and the batch's bytes.
pub fn handle_bytes(
    job_id: &str,
    batch: &[u8],
    call: impl for<'b> FnOnce(&Context<'_>, RawBatch<'b>) -> Result<()>,
) -> i32 {
    report(call(&Context::from_host(job_id, true), RawBatch::whole(batch)))
}

/// `wasmbatch_handle_items`: the batch, then (from the next multiple of 4) `count`
/// pairs of little-endian `u32` offsets, one buffer.
///
/// # Safety
/// `job_ptr`/`job_len` must come from `alloc` with that length (or be empty), and
/// `batch_ptr` from `alloc` with the length [`items_buffer_len`] gives.
pub unsafe fn handle_items(
    job_ptr: *mut u8,
    job_len: usize,
    batch_ptr: *mut u8,
    batch_len: usize,
    count: usize,
    call: impl for<'b> FnOnce(&Context<'_>, RawBatch<'b>) -> Result<()>,
) -> i32 {
    let Some(len) = items_buffer_len(batch_len, count) else {
        return report(Err(Error::msg(format!("a batch of {batch_len} bytes and {count} items cannot be addressed"))));
    };
    // SAFETY: forwarded.
    let (job_id, buffer) = unsafe { (take(job_ptr, job_len), take(batch_ptr, len)) };
    let job_id = String::from_utf8_lossy(&job_id);
    let batch = RawBatch::with_spans(&buffer[..batch_len], &buffer[batch_len.next_multiple_of(4)..]);
    report(call(&Context::from_host(&job_id, true), batch))
}

/// The size of `wasmbatch_handle_items`' buffer: the batch padded to a multiple of 4,
/// then 8 bytes an item.
pub fn items_buffer_len(batch_len: usize, count: usize) -> Option<usize> {
    batch_len.checked_next_multiple_of(4)?.checked_add(count.checked_mul(8)?)
}

/// `wasmbatch_on_job_complete`.
///
/// # Safety
/// Both pointer pairs must come from `alloc` with the same lengths (or be empty).
pub unsafe fn on_job_complete<M>(
    job_ptr: *mut u8,
    job_len: usize,
    body_ptr: *mut u8,
    body_len: usize,
    hook: impl CompletionHook<M>,
) -> i32 {
    // SAFETY: forwarded.
    let (job_id, body) = unsafe { (take(job_ptr, job_len), take(body_ptr, body_len)) };
    on_job_complete_bytes(&String::from_utf8_lossy(&job_id), &body, hook)
}

/// `on_job_complete` with the job ID and the body's bytes.
pub fn on_job_complete_bytes<M>(job_id: &str, body: &[u8], hook: impl CompletionHook<M>) -> i32 {
    let done: JobComplete = match serde_json::from_slice(body) {
        Ok(done) => done,
        Err(e) => return report(Err(Error::invalid_input(format!("on-job-complete body: {e}")))),
    };
    report(hook.call(&Context::from_host(job_id, false), &done))
}

/// The component world's bindings and exports (`wasm32-wasip2`).
#[cfg(all(target_arch = "wasm32", target_env = "p2"))]
pub mod component {
    wit_bindgen::generate!({
        path: "wit",
        world: "handler",
        pub_export_macro: true,
        export_macro_name: "__export_handler",
        default_bindings_module: "::wasmbatch_guest::__private::component",
    });

    /// A call's status as the world's result: the message the call set with it.
    pub fn result(status: i32) -> Result<(), Failure> {
        let message = || crate::sys::take_error().unwrap_or_default();
        match status {
            crate::status::OK => Ok(()),
            crate::status::INVALID_INPUT => Err(Failure::InvalidInput(message())),
            _ => Err(Failure::Failed(message())),
        }
    }

    /// The exports of a plugin with no `#[init]` or `#[on_job_complete]` in the module
    /// of its `#[handler]`: glob-imported there, shadowed by the hooks' own.
    pub mod absent_hooks {
        use super::Failure;

        #[doc(hidden)]
        pub fn __wasmbatch_init(spec: String) -> Result<(), Failure> {
            super::result(crate::__private::init_bytes(spec.into_bytes(), |_: &crate::Context<'_>| Ok(())))
        }

        #[doc(hidden)]
        pub fn __wasmbatch_on_job_complete(_job_id: String, _summary: String) -> Result<(), Failure> {
            Ok(())
        }
    }
}
