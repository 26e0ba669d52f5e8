//! The raw host interface: the `wasmbatch` import module of ABI v1, and nothing else.
//!
//! On `wasm32` these are imports the host provides. On other targets (a plugin's own
//! unit tests, or a native build of the same code for comparison) they fall back to
//! plain process behaviour so that the same source compiles and runs everywhere
//! (natively there is no batch identifier: tests give one with `Context::for_batch`).

#[cfg(target_arch = "wasm32")]
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
    }

    unsafe extern "C" {
        /// Synthesized by wasm-ld: runs the static constructors (WASI preopens, …).
        pub fn __wasm_call_ctors();
    }
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn set_error(message: &str) {
    // SAFETY: the pointer and length describe a live, initialized byte slice.
    unsafe { imports::set_error(message.as_ptr(), message.len()) }
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn log(level: u32, line: &str) {
    // SAFETY: as above.
    unsafe { imports::log(level, line.as_ptr(), line.len()) }
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn panic(message: &str) {
    // SAFETY: as above.
    unsafe { imports::panic(message.as_ptr(), message.len()) }
}

#[cfg(target_arch = "wasm32")]
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

#[cfg(target_arch = "wasm32")]
pub(crate) fn attempt() -> u32 {
    // SAFETY: no arguments, no memory.
    unsafe { imports::attempt() }
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn submit_job(api: &str, job: &[u8]) -> Result<String, String> {
    let mut out = vec![0u8; 4096];
    // SAFETY: every pointer and length describes a live buffer.
    let n =
        unsafe { imports::submit_job(api.as_ptr(), api.len(), job.as_ptr(), job.len(), out.as_mut_ptr(), out.len()) };
    let len = (n.unsigned_abs() as usize).min(out.len());
    let text = String::from_utf8_lossy(&out[..len]).into_owned();
    if n >= 0 { Ok(text) } else { Err(text) }
}

#[cfg(target_arch = "wasm32")]
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
