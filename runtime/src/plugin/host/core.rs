//! What every guest has: its failure message, its panic message, log lines, and the
//! identity of the batch in progress.

use wasmtime::{Caller, Linker};

use crate::abi;
use crate::plugin::memory;
use crate::plugin::state::HostState;

pub(super) fn add(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(abi::HOST_MODULE, "set_error", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let message = String::from_utf8_lossy(memory::read_capped(&mut caller, ptr, len)?).into_owned();
        caller.data_mut().error = Some(message);
        Ok(())
    })?;
    linker.func_wrap(abi::HOST_MODULE, "panic", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let message = String::from_utf8_lossy(memory::read_capped(&mut caller, ptr, len)?).into_owned();
        caller.data_mut().panic = Some(message);
        Ok(())
    })?;
    linker.func_wrap(
        abi::HOST_MODULE,
        "log",
        |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| {
            let line = String::from_utf8_lossy(memory::read_capped(&mut caller, ptr, len)?).into_owned();
            log(caller.data_mut(), level, &line);
            Ok(())
        },
    )?;
    linker.func_wrap(abi::HOST_MODULE, "batch_id", |mut caller: Caller<'_, HostState>, ptr: i32, cap: i32| {
        let Some((id, _)) = caller.data_mut().batch_identity() else { return Ok(0) };
        memory::write_into(&mut caller, ptr, cap, id.as_bytes())?;
        Ok(id.len() as i32)
    })?;
    linker
        .func_wrap(abi::HOST_MODULE, "attempt", |mut caller: Caller<'_, HostState>| Ok(attempt(caller.data_mut())))?;
    Ok(())
}

/// Logs one guest line at `level` (0 error … 4 trace), after what the guest printed
/// before it; over the call's line limit, counts it as dropped.
pub(super) fn log(state: &mut HostState, level: i32, line: &str) {
    if state.log_lines >= state.log_line_limit {
        state.logs_dropped += 1;
        return;
    }
    state.log_lines += 1;
    state.drain_output();
    crate::logging::guest_log(&state.tag(), level, line);
}

/// The attempt at the batch in progress; 0 outside a batch.
pub(super) fn attempt(state: &mut HostState) -> i32 {
    state.batch_identity().map(|(_, attempt)| attempt as i32).unwrap_or(0)
}
