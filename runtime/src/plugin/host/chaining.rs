//! Chaining (`submit_job`): a guest submits a job to another API through its job's
//! [`Submitter`](crate::plugin::Submitter), which decides which APIs it may reach.
//! The submission (an HTTP call or a journal write) waits on a blocking thread.

use wasmtime::{Caller, Linker};

use super::blocking;
use crate::abi;
use crate::plugin::memory;
use crate::plugin::state::HostState;

/// The largest job submission a guest may send.
pub(super) const MAX_JOB: usize = 10 << 20;
const MAX_API_NAME: usize = 256;

pub(super) fn add(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        abi::HOST_MODULE,
        "submit_job",
        |mut caller: Caller<'_, HostState>,
         (api_ptr, api_len, job_ptr, job_len, out_ptr, out_cap): (i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let api = memory::copy(&mut caller, api_ptr, api_len, MAX_API_NAME)?.unwrap_or_default();
                let api = String::from_utf8_lossy(&api).into_owned();
                let outcome = match memory::copy(&mut caller, job_ptr, job_len, MAX_JOB)? {
                    None => Err(format!("the job is over {MAX_JOB} bytes")),
                    Some(job) => submit(caller.data(), api, job).await,
                };
                let (text, sign) = match &outcome {
                    Ok(job_id) => (job_id.as_str(), 1),
                    Err(e) => (e.as_str(), -1),
                };
                memory::write_into(&mut caller, out_ptr, out_cap, text.as_bytes())?;
                Ok(sign * text.len() as i32)
            })
        },
    )?;
    Ok(())
}

/// Submits `job` to the API `api` through the job's submitter: the new job's ID.
pub(super) fn submit(
    state: &HostState,
    api: String,
    job: Vec<u8>,
) -> impl Future<Output = Result<String, String>> + use<> {
    let (submitter, api_name, job_id) = (state.submitter.clone(), state.api_name.clone(), state.job_id.clone());
    async move {
        if job.len() > MAX_JOB {
            return Err(format!("the job is over {MAX_JOB} bytes"));
        }
        if api.len() > MAX_API_NAME {
            return Err(format!("the API name is over {MAX_API_NAME} bytes"));
        }
        let Some(submitter) = submitter else {
            return Err("submitting jobs is not available here (no operator configured)".to_string());
        };
        let to = api.clone();
        let outcome = blocking(move || submitter.submit(&to, &job)).await.flatten();
        if let Ok(new_job) = &outcome {
            tracing::info!(api_name = &*api_name, job_id = &*job_id, to = api, new_job, "job submitted by a guest");
        }
        outcome
    }
}
