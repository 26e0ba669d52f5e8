//! The imports of the component world (`wasmbatch:handler/host`): each one the same
//! function as its ABI v1 twin, with typed arguments instead of guest memory.
//!
//! A component imports the interface whole, so grants are not checked at load as
//! for a module's imports: every capability call is checked when made (and refused,
//! `call-error::refused`, without its grant), which is what a module's calls get too.

use super::{chaining, core, http, objects, results};
use crate::capability::{CallError, HttpRequest};
use crate::plugin::state::HostState;
use crate::plugin::world::host::{self, Host, Level};

impl From<CallError> for host::CallError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Refused(m) => host::CallError::Refused(m),
            CallError::Failed(m) => host::CallError::Failed(m),
            CallError::NotFound(m) => host::CallError::NotFound(m),
        }
    }
}

impl Host for HostState {
    async fn log(&mut self, level: Level, message: String) {
        let level = match level {
            Level::Error => 0,
            Level::Warn => 1,
            Level::Info => 2,
            Level::Debug => 3,
            Level::Trace => 4,
        };
        core::log(self, level, &message);
    }

    async fn batch_id(&mut self) -> Option<String> {
        self.batch_identity().map(|(id, _)| id.to_string())
    }

    async fn attempt(&mut self) -> u32 {
        core::attempt(self) as u32
    }

    async fn emit(&mut self, value: String) -> Result<(), String> {
        results::emit(self, value.as_bytes()).map_err(|e| e.to_string())
    }

    async fn item_error(&mut self, index: u32, message: String) {
        results::item_error(self, index, message, false);
    }

    async fn item_reject(&mut self, index: u32, message: String) {
        results::item_error(self, index, message, true);
    }

    async fn http_request(&mut self, request: host::Request) -> Result<host::Response, host::CallError> {
        let host::Request { method, url, headers, body } = request;
        let method = if method.is_empty() { None } else { Some(method) };
        let answer = http::send(self, HttpRequest { method, url, headers }, body).await?;
        Ok(host::Response { status: answer.status, headers: answer.headers, body: answer.body })
    }

    async fn object_get(&mut self, url: String) -> Result<Vec<u8>, host::CallError> {
        Ok(objects::get(self, url).await?)
    }

    async fn object_read(&mut self, url: String, offset: u64, length: u64) -> Result<Vec<u8>, host::CallError> {
        Ok(objects::read(self, url, offset, length).await?)
    }

    async fn object_put(&mut self, url: String, data: Vec<u8>) -> Result<(), host::CallError> {
        Ok(objects::put(self, url, data).await?)
    }

    async fn submit_job(&mut self, api: String, job: String) -> Result<String, String> {
        chaining::submit(self, api, job.into_bytes()).await
    }

    async fn results_open(&mut self) -> Result<(), String> {
        results::open(self).await
    }

    async fn results_next(&mut self) -> Result<Option<String>, String> {
        Ok(results::next(self)?.map(|line| String::from_utf8_lossy(&line).into_owned()))
    }
}

impl crate::plugin::world::wasmbatch::handler::types::Host for HostState {}

impl wasmtime_wasi::WasiView for HostState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        self.wasi.ctx()
    }
}
