//! Objects (`object_get`, `object_read`, `object_put`) under `allow_read` and
//! `allow_write`, under the call's deadline. Local objects are files and S3's client
//! runs on the objects' own runtime: either way the call waits on a blocking thread.

use wasmtime::{Caller, Linker};

use super::{answer, blocking, url};
use crate::abi;
use crate::capability::CallError;
use crate::objects::objects;
use crate::plugin::memory;
use crate::plugin::state::HostState;

/// The largest object a guest may write in one call.
pub(super) const MAX_OBJECT: usize = 1 << 30;

pub(super) fn add(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        abi::HOST_MODULE,
        "object_get",
        |mut caller: Caller<'_, HostState>, (url_ptr, url_len, out): (i32, i32, i32)| {
            Box::new(async move {
                let url = url(&mut caller, url_ptr, url_len)?;
                let outcome = get(caller.data(), url).await.map(|bytes| (0, bytes));
                answer(&mut caller, out, outcome).await
            })
        },
    )?;
    linker.func_wrap_async(
        abi::HOST_MODULE,
        "object_read",
        |mut caller: Caller<'_, HostState>, (url_ptr, url_len, range_ptr, out): (i32, i32, i32, i32)| {
            Box::new(async move {
                let url = url(&mut caller, url_ptr, url_len)?;
                let range = memory::copy(&mut caller, range_ptr, 16, 16)?.unwrap_or_default();
                let offset = u64::from_le_bytes(range[..8].try_into().expect("8 bytes"));
                let len = u64::from_le_bytes(range[8..].try_into().expect("8 bytes"));
                let outcome = read(caller.data(), url, offset, len).await.map(|bytes| (0, bytes));
                answer(&mut caller, out, outcome).await
            })
        },
    )?;
    linker.func_wrap_async(
        abi::HOST_MODULE,
        "object_put",
        |mut caller: Caller<'_, HostState>, (url_ptr, url_len, data_ptr, data_len, out): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let url = url(&mut caller, url_ptr, url_len)?;
                let outcome = match memory::copy(&mut caller, data_ptr, data_len, MAX_OBJECT)? {
                    None => Err(CallError::Refused(format!("the object is over {MAX_OBJECT} bytes"))),
                    Some(data) => put(caller.data(), url, data).await.map(|()| (0, Vec::new())),
                };
                answer(&mut caller, out, outcome).await
            })
        },
    )?;
    Ok(())
}

/// Reads the whole object at `url`, if the grants allow.
pub(super) fn get(state: &HostState, url: String) -> impl Future<Output = Result<Vec<u8>, CallError>> + use<> {
    let (grants, deadline) = (state.grants.clone(), state.deadline);
    async move {
        blocking(move || grants.may_read(&url).and_then(|target| objects().get(&target, grants.max_response, deadline)))
            .await
            .map_err(CallError::Failed)
            .flatten()
    }
}

/// Reads `len` bytes (at most the grants' response limit) of the object at `url` from
/// `offset`, if the grants allow.
pub(super) fn read(
    state: &HostState,
    url: String,
    offset: u64,
    len: u64,
) -> impl Future<Output = Result<Vec<u8>, CallError>> + use<> {
    let (grants, deadline) = (state.grants.clone(), state.deadline);
    async move {
        blocking(move || {
            let len = len.min(grants.max_response as u64);
            grants.may_read(&url).and_then(|target| objects().read(&target, offset, len, deadline))
        })
        .await
        .map_err(CallError::Failed)
        .flatten()
    }
}

/// Writes `data` to the object at `url`, if the grants allow.
pub(super) fn put(
    state: &HostState,
    url: String,
    data: Vec<u8>,
) -> impl Future<Output = Result<(), CallError>> + use<> {
    let (grants, deadline) = (state.grants.clone(), state.deadline);
    async move {
        if data.len() > MAX_OBJECT {
            return Err(CallError::Refused(format!("the object is over {MAX_OBJECT} bytes")));
        }
        blocking(move || grants.may_write(&url).and_then(|target| objects().put(&target, data, deadline)))
            .await
            .map_err(CallError::Failed)
            .flatten()
    }
}
