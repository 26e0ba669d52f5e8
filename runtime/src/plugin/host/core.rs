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
        memory::write_into(&mut caller, ptr, cap, id.as_bytes())?;
        Ok(id.len() as i32)
    })?;
    linker.func_wrap(abi::HOST_MODULE, "attempt", |mut caller: Caller<'_, HostState>| {
        Ok(caller.data_mut().batch_identity().map(|(_, attempt)| attempt as i32).unwrap_or(0))
    })?;
    Ok(())
}
