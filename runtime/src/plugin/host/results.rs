//! What a batch produced besides its status: results (`emit`, one JSON value a line),
//! failed items (`item_error`) and rejected ones (`item_reject`).

use wasmtime::{Caller, Linker};

use crate::abi;
use crate::plugin::state::HostState;
use crate::plugin::{ItemError, memory};

/// Item failures kept per call; more are dropped.
const MAX_ITEM_ERRORS: usize = 1_000_000;

pub(super) fn add(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(abi::HOST_MODULE, "emit", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let limit = caller.data().results_limit;
        let used = caller.data().results.len();
        let Some(value) = memory::copy(&mut caller, ptr, len, limit.saturating_sub(used))? else { return Ok(-2) };
        if serde_json::from_slice::<serde::de::IgnoredAny>(&value).is_err() {
            return Ok(-1);
        }
        // One value a line: a value's own line breaks are whitespace in JSON.
        let results = &mut caller.data_mut().results;
        results.extend(value.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
        results.push(b'\n');
        Ok(0)
    })?;
    for (name, rejected) in [("item_error", false), ("item_reject", true)] {
        linker.func_wrap(
            abi::HOST_MODULE,
            name,
            move |mut caller: Caller<'_, HostState>, index: i32, ptr: i32, len: i32| {
                let message = String::from_utf8_lossy(memory::read_capped(&mut caller, ptr, len)?).into_owned();
                let errors = &mut caller.data_mut().item_errors;
                if errors.len() < MAX_ITEM_ERRORS {
                    errors.push(ItemError { index: index as u32, message, rejected });
                }
                Ok(())
            },
        )?;
    }
    Ok(())
}
