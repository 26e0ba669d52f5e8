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
    linker.func_wrap_async(abi::HOST_MODULE, "results_open", |mut caller: Caller<'_, HostState>, (out,): (i32,)| {
        Box::new(async move {
            let state = caller.data_mut();
            state.reading = None;
            let opened = if !state.completing {
                Err("the job's results can be read in on-job-complete only".to_string())
            } else {
                match state.job_results.clone() {
                    Some(source) => {
                        let job_id = state.job_id.clone();
                        blocking(move || source.open(&job_id)).await.flatten()
                    }
                    None => Err("the job's results are not available here (this host was given no place to read \
                                 them from)"
                        .to_string()),
                }
            };
            match opened {
                Ok(lines) => {
                    caller.data_mut().reading = Some(ResultsReading { lines });
                    memory::give(&mut caller, out, b"").await?;
                    Ok(0)
                }
                Err(why) => {
                    tracing::warn!(job_id = &*caller.data().job_id, "on-job-complete cannot read the results: {why}");
                    Ok(if memory::give(&mut caller, out, why.as_bytes()).await? { -1 } else { -4 })
                }
            }
        })
    })?;
    // Reads the next line inline: on-job-complete runs once a job, and the lines come
    // from a file or from an answer already streaming in.
    linker.func_wrap_async(abi::HOST_MODULE, "results_next", |mut caller: Caller<'_, HostState>, (out,): (i32,)| {
        Box::new(async move {
            let Some(reading) = caller.data_mut().reading.as_mut() else {
                let why = b"results_next before results_open";
                return Ok(if memory::give(&mut caller, out, why).await? { -1 } else { -4 });
            };
            let mut line = Vec::new();
            let (code, bytes) = loop {
                line.clear();
                match reading.lines.read_until(b'\n', &mut line) {
                    Ok(0) => break (0, Vec::new()),
                    // A line not ended by a newline is one cut short while being written.
                    Ok(_) if line.last() != Some(&b'\n') => break (0, Vec::new()),
                    Ok(_) if line.len() == 1 => continue,
                    Ok(_) => {
                        line.pop();
                        break (1, std::mem::take(&mut line));
                    }
                    Err(e) => break (-1, format!("reading the job's results: {e}").into_bytes()),
                }
            };
            Ok(if memory::give(&mut caller, out, &bytes).await? { code } else { -4 })
        })
    })?;
    Ok(())
}
