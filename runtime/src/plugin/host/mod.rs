//! The host functions guests import (module `wasmbatch`), one module per capability,
//! each adding its functions to the linker:
//!
//! - [`core`]: what every guest has — `set_error`, `panic`, `log`, `batch_id`, `attempt`;
//! - [`results`]: `emit` and `item_error`, what a batch produced besides its status;
//! - [`http`]: outbound HTTP (`http_request`), under `allow_http`;
//! - [`objects`]: `object_get`, `object_read`, `object_put`, under `allow_read`/`allow_write`;
//! - [`chaining`]: `submit_job`, through the job's [`Submitter`](super::Submitter).
//!
//! Bytes cross the boundary by the convention of [`super::memory`]. Each module keeps
//! its functions' logic apart from guest memory, so that [`component`] gives a
//! component the same functions through the world `wasmbatch:handler`'s typed imports.
//!
//! Guests run on fibers, called asynchronously. A function that hands the guest an
//! answer calls back into it (`wasmbatch_alloc`), so it is linked async; one that
//! waits on the network or the disk (outbound HTTP, objects, a submission, opening
//! the job's results) does that wait on tokio's blocking threads ([`blocking`]), so
//! that the thread running the guest keeps serving its other tasks meanwhile; outbound
//! HTTP (a plain blocking client) waits in place when the thread is the guest's own
//! ([`blocking_plain`]).

mod chaining;
mod component;
mod core;
mod http;
mod objects;
mod results;

use wasmtime::{Caller, Linker};

use super::memory;
use super::state::HostState;
use crate::capability::CallError;
use crate::engine::Engine;

/// A linker with WASI preview 1 and every host function.
pub(crate) fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine.wasmtime());
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s: &mut HostState| &mut s.wasi)?;
    core::add(&mut linker)?;
    results::add(&mut linker)?;
    http::add(&mut linker)?;
    objects::add(&mut linker)?;
    chaining::add(&mut linker)?;
    Ok(linker)
}

/// A component linker with WASI preview 2 and the world's imports.
pub(crate) fn component_linker(engine: &Engine) -> wasmtime::Result<wasmtime::component::Linker<HostState>> {
    let mut linker = wasmtime::component::Linker::new(engine.wasmtime());
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    super::world::Handler::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// Gives the outcome of a capability call to the guest: `Ok((code, bytes))` or an error
/// (its code, its message as the bytes). The code `-4`: the guest could not allocate.
async fn answer(
    caller: &mut Caller<'_, HostState>,
    out: i32,
    outcome: Result<(i32, Vec<u8>), CallError>,
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
    Ok(if memory::give(caller, out, &bytes).await? { code } else { -4 })
}

/// Runs `work` (which blocks on the network or the disk) on tokio's blocking threads
/// and waits for it without holding the guest's thread; `Err` when it panicked.
async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Result<R, String> {
    tokio::task::spawn_blocking(work).await.map_err(|e| format!("the host's call failed: {e}"))
}

/// As [`blocking`], but right here when the guest's thread is its own
/// ([`crate::engine::drive`]: `run`, the operator, workers), which saves two thread
/// hand-offs per call. Only for `work` that blocks plainly: it runs inside the
/// driving runtime's context, where a client that enters a runtime of its own (the
/// objects' S3 client, the operator client) would panic.
async fn blocking_plain<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> Result<R, String> {
    if crate::engine::on_dedicated_thread() {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
            .map_err(|_| "the host's call failed: it panicked".to_string());
    }
    blocking(work).await
}

/// A URL the guest passed: at most 8 KiB, read leniently as UTF-8 (a bad byte makes
/// a URL no grant covers).
fn url(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    const MAX_URL: usize = 8 << 10;
    let url = memory::copy(caller, ptr, len, MAX_URL)?.unwrap_or_default();
    Ok(String::from_utf8_lossy(&url).into_owned())
}
