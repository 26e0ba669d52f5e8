//! What a batch produced besides its status: results (`emit`, one JSON value a line),
//! failed items (`item_error`) and rejected ones (`item_reject`); and, in
//! on-job-complete, the whole job's results (`results_open`, `results_next`).

use std::io::BufRead;

use wasmtime::{Caller, Linker};

use super::blocking;
use crate::abi;
use crate::plugin::state::{HostState, ResultsReading};
use crate::plugin::{ItemError, memory};

/// Item failures kept per call; more are dropped.
const MAX_ITEM_ERRORS: usize = 1_000_000;

/// Why a result was not taken.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum EmitError {
    /// Not a JSON value.
    NotJson,
    /// Over what one call may emit.
    OverLimit(usize),
}

impl EmitError {
    /// The code the ABI v1 import returns.
    fn code(&self) -> i32 {
        match self {
            EmitError::NotJson => -1,
            EmitError::OverLimit(_) => -2,
        }
    }
}

impl std::fmt::Display for EmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmitError::NotJson => f.write_str("the result is not a JSON value"),
            EmitError::OverLimit(limit) => write!(f, "the batch's results are over the limit of {limit} bytes"),
        }
    }
}

pub(super) fn add(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(abi::HOST_MODULE, "emit", |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| {
        let limit = caller.data().results_limit;
        let used = caller.data().results.len();
        let Some(value) = memory::copy(&mut caller, ptr, len, limit.saturating_sub(used))? else {
            return Ok(EmitError::OverLimit(limit).code());
        };
        Ok(emit(caller.data_mut(), &value).map_or_else(|e| e.code(), |()| 0))
    })?;
    for (name, rejected) in [("item_error", false), ("item_reject", true)] {
        linker.func_wrap(
            abi::HOST_MODULE,
            name,
            move |mut caller: Caller<'_, HostState>, index: i32, ptr: i32, len: i32| {
                let message = String::from_utf8_lossy(memory::read_capped(&mut caller, ptr, len)?).into_owned();
                item_error(caller.data_mut(), index as u32, message, rejected);
                Ok(())
            },
        )?;
    }
    linker.func_wrap_async(abi::HOST_MODULE, "results_open", |mut caller: Caller<'_, HostState>, (out,): (i32,)| {
        Box::new(async move {
            let (code, bytes) = match open(caller.data_mut()).await {
                Ok(()) => (0, Vec::new()),
                Err(why) => (-1, why.into_bytes()),
            };
            Ok(if memory::give(&mut caller, out, &bytes).await? { code } else { -4 })
        })
    })?;
    linker.func_wrap_async(abi::HOST_MODULE, "results_next", |mut caller: Caller<'_, HostState>, (out,): (i32,)| {
        Box::new(async move {
            let (code, bytes) = match next(caller.data_mut()) {
                Ok(Some(line)) => (1, line),
                Ok(None) => (0, Vec::new()),
                Err(why) => (-1, why.into_bytes()),
            };
            Ok(if memory::give(&mut caller, out, &bytes).await? { code } else { -4 })
        })
    })?;
    Ok(())
}

/// Adds `value` (JSON) to the call's results, one value a line.
pub(super) fn emit(state: &mut HostState, value: &[u8]) -> Result<(), EmitError> {
    if state.results.len() + value.len() > state.results_limit {
        return Err(EmitError::OverLimit(state.results_limit));
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(value).is_err() {
        return Err(EmitError::NotJson);
    }
    // One value a line: a value's own line breaks are whitespace in JSON.
    state.results.extend(value.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
    state.results.push(b'\n');
    Ok(())
}

/// Records a failed (or, `rejected`, a hopeless) item of the call's batch.
pub(super) fn item_error(state: &mut HostState, index: u32, message: String, rejected: bool) {
    if state.item_errors.len() < MAX_ITEM_ERRORS {
        state.item_errors.push(ItemError { index, message, rejected });
    }
}

/// Starts reading the job's results from the first line: on-job-complete only.
pub(super) async fn open(state: &mut HostState) -> Result<(), String> {
    state.reading = None;
    let opened = if !state.completing {
        Err("the job's results can be read in on-job-complete only".to_string())
    } else {
        match state.job_results.clone() {
            Some(source) => {
                let job_id = state.job_id.clone();
                blocking(move || source.open(&job_id)).await.flatten()
            }
            None => {
                Err("the job's results are not available here (this host was given no place to read them from)"
                    .to_string())
            }
        }
    };
    match opened {
        Ok(lines) => {
            state.reading = Some(ResultsReading { lines });
            Ok(())
        }
        Err(why) => {
            tracing::warn!(job_id = &*state.job_id, "on-job-complete cannot read the results: {why}");
            Err(why)
        }
    }
}

/// The next line of the job's results; `None` at their end. Read inline:
/// on-job-complete runs once a job, and the lines come from a file or from an answer
/// already streaming in.
pub(super) fn next(state: &mut HostState) -> Result<Option<Vec<u8>>, String> {
    let Some(reading) = state.reading.as_mut() else { return Err("results_next before results_open".into()) };
    let mut line = Vec::new();
    loop {
        line.clear();
        match reading.lines.read_until(b'\n', &mut line) {
            Ok(0) => return Ok(None),
            // A line not ended by a newline is one cut short while being written.
            Ok(_) if line.last() != Some(&b'\n') => return Ok(None),
            Ok(_) if line.len() == 1 => continue,
            Ok(_) => {
                line.pop();
                return Ok(Some(line));
            }
            Err(e) => return Err(format!("reading the job's results: {e}")),
        }
    }
}
