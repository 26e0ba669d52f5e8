//! Outbound HTTP (`http_request`), to the hosts of `allow_http` only, under the
//! call's deadline.

use std::time::Instant;

use wasmtime::{Caller, Linker};

use super::{answer, blocking_plain};
use crate::abi;
use crate::capability::{CallError, HttpRequest, HttpResponse};
use crate::plugin::memory;
use crate::plugin::state::HostState;

const MAX_REQUEST: usize = 1 << 20;
const MAX_BODY: usize = 1 << 30;

pub(super) fn add(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap_async(
        abi::HOST_MODULE,
        "http_request",
        |mut caller: Caller<'_, HostState>,
         (req_ptr, req_len, body_ptr, body_len, out): (i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let request = memory::copy(&mut caller, req_ptr, req_len, MAX_REQUEST)?;
                let body = memory::copy(&mut caller, body_ptr, body_len, MAX_BODY)?;
                let outcome = match (request, body) {
                    (None, _) => Err(CallError::Refused(format!("the request is over {MAX_REQUEST} bytes"))),
                    (_, None) => Err(CallError::Refused(format!("the body is over {MAX_BODY} bytes"))),
                    (Some(request), Some(body)) => match serde_json::from_slice::<HttpRequest>(&request) {
                        Err(e) => Err(CallError::Refused(format!(
                            "the request is not a JSON object {{\"method\", \"url\", \"headers\": [[name, value], …]}}: {e}"
                        ))),
                        Ok(request) => send(caller.data(), request, body).await.map(|a| {
                            let head = serde_json::json!({"status": a.status, "headers": a.headers});
                            let mut bytes = head.to_string().into_bytes();
                            bytes.push(b'\n');
                            bytes.extend_from_slice(&a.body);
                            (i32::from(a.status), bytes)
                        }),
                    },
                };
                answer(&mut caller, out, outcome).await
            })
        },
    )?;
    Ok(())
}

/// Sends a request the guest's grants allow, before the call's deadline.
pub(super) fn send(
    state: &HostState,
    request: HttpRequest,
    body: Vec<u8>,
) -> impl Future<Output = Result<HttpResponse, CallError>> + use<> {
    let (grants, deadline, job_id) = (state.grants.clone(), state.deadline, state.job_id.clone());
    let sent = blocking_plain(move || {
        let started = Instant::now();
        let answer = grants.http(&request, &body, deadline);
        tracing::debug!(
            job_id = &*job_id,
            url = request.url,
            status = answer.as_ref().map(|a| a.status).unwrap_or(0),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "outbound HTTP"
        );
        answer
    });
    async move { sent.await.map_err(CallError::Failed).flatten() }
}
