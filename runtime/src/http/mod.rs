//! HTTP: the server side of the Cortex batch container contract.
//!
//! - `server`: `POST /`, `POST /on-job-complete`, `GET /healthz`, `GET /metrics` on a
//!   bound listener,
//!   with graceful shutdown.
//! - `error`: every failure a request can meet, mapped to a status in one place.
//! - `batch`: checks that a request body is a JSON array, off the I/O threads.
//! - `client`: the dispatcher's side — kept-alive connections, readiness waiting.

pub mod batch;
pub(crate) mod client;
pub(crate) mod error;
pub mod server;

pub use server::{ServerConfig, serve, serve_metrics};
