//! wasmbatch runs WebAssembly batch handlers ("plugins", built for `wasm32-wasip1`)
//! for the Cortex Batch API model of work, behind the standard container contract.
//!
//! The `wasmbatch` binary is the usual way in (`run`, `serve`, `operator`, `worker`;
//! see the README). This library is what it is built on, and what a Rust program
//! embeds to do the same in its own process.
//!
//! # Embedding
//!
//! Load a plugin once ([`plugin::Plugin::load`]: compiled or taken from the cache,
//! validated, linked, probed), bind it to a job ([`plugin::Plugin::bind`]: the spec,
//! `/mnt`, where chained jobs go), then either call instances yourself, run a whole
//! job ([`job::runner::run`]: workers, retries, dead letters, on-job-complete), or
//! serve the contract's `POST /` on a listener until a shutdown future resolves
//! ([`http::serve`]).
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::AtomicBool;
//! use std::time::Duration;
//!
//! use wasmbatch::job::{dead_letter::DeadLetters, executor::InProcess, runner, source};
//! use wasmbatch::job::status::{JobState, ProgressMode, ProgressView};
//! use wasmbatch::job::{stop::StopFlag, submission::Submission};
//! use wasmbatch::metrics::Metrics;
//! use wasmbatch::plugin::{BatchCall, BatchId, JobContext, LoadOptions, Plugin, drive};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A plugin: any `.wasm` built with the guest SDK; here, a text module that accepts
//! // every batch.
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("accept.wat");
//! std::fs::write(&path, r#"(module
//!   (memory (export "memory") 1)
//!   (func (export "wasmbatch_abi_version") (result i32) (i32.const 1))
//!   (func (export "wasmbatch_alloc") (param i32) (result i32) (i32.const 1024))
//!   (func (export "wasmbatch_handle") (param i32 i32 i32 i32) (result i32) (i32.const 0)))"#)?;
//! let metrics = Metrics::new("example");
//! let plugin = Arc::new(Plugin::load(&path, &LoadOptions { instances: 2, ..LoadOptions::default() }, metrics.clone())?);
//! let spec = br#"{"job_id": "j1", "api_name": "example"}"#;
//! let bound = Arc::new(plugin.bind(JobContext { spec: Arc::from(&spec[..]), ..JobContext::default() })?);
//!
//! // One batch, on an instance of your own. Guest calls are async; `drive` runs one on
//! // this thread (in async code, `.await` them).
//! let mut instance = drive(bound.instance(Arc::new(AtomicBool::new(false))))?;
//! let batch = BatchCall { tag: 0, id: BatchId::Index(0), attempt: 1, body: "[1, 2, 3]".into(), items: None };
//! drive(instance.handle("j1", batch))?;
//!
//! // A whole job: a Cortex job submission, its batches on two workers.
//! let job = Submission::parse(br#"{"workers": 2, "item_list": {"items": [1, 2, 3, 4, 5], "batch_size": 2}}"#, "job")?;
//! let plan = runner::JobPlan {
//!     job_id: "j1".into(),
//!     api_name: "example".into(),
//!     workers: job.workers,
//!     config: job.config,
//!     timeout: None,
//!     max_attempts: 3,
//!     ledger: Box::new(DeadLetters::create(&dir.path().join("dead-letters.jsonl"))?),
//!     budget: None,
//!     start_time: std::time::SystemTime::now(),
//! };
//! let input = source::open(job.source, None, None)?;
//! let mut progress = ProgressView::new(ProgressMode::Off, Duration::from_secs(60));
//! let executor = Arc::new(InProcess::new(bound.clone(), None));
//! let status = runner::run(plan, input, executor, StopFlag::default(), &mut progress, metrics);
//! assert_eq!((status.status, status.metrics.succeeded), (JobState::Succeeded, 3));
//! # Ok(())
//! # }
//! ```
//!
//! Serving is [`pool::InstancePool::new`] over the bound plugin, then [`http::serve`]
//! with a `tokio::net::TcpListener` and any future as the shutdown signal; the
//! in-process tests in `http::server` do exactly that.
//!
//! # Layout
//!
//! Public: [`plugin`] (loaded once, bound to a job, warm [`plugin::Instance`]s),
//! [`failure`] (typed failures), [`capability`] (grants), [`pool`] (warm instances
//! behind admission, called on the request's task), [`http`] (the contract's server), [`job`] (job files, sources,
//! executors, the runner), [`metrics`], [`tls`] (one TLS stack), [`abi`] (guest ABI v1).
//! Inside, lowest layer first (the `layers` test keeps imports pointing down):
//!
//! - `units`, `confine`, `storage`, `recent`, `capture`, `spec`, `logging`: leaves —
//!   sizes and durations, URL confinement, whole-or-nothing files, the spec file, logs.
//! - `engine` (pooling allocator, epoch ticker, memory fitted to a container),
//!   `compile` (files to modules or components, the compile cache), `python` (Python
//!   handlers made components by componentize-py), `sandbox` (what a guest sees),
//!   `objects` (S3, GCS, Azure, local files beneath their grant).
//! - `lifecycle`: a worker's warm instance — started, recycled, retired in one place.
//! - `journal`: the job service's durable state (SQLite), and the one way a job ends.
//! - `driver`: the one job engine — a job from its journal row to its conclusion, over
//!   a dispatcher (this process's runner, or the broker).
//! - `broker`: the operator and its workers through RabbitMQ.
//! - `operator`: the job service — Cortex's job API (tokens, TLS), scheduling, resume.
//! - `cli`: the `wasmbatch` command line ([`main`]).
//!
//! The guest side (the SDK plugin authors use) is the `wasmbatch-guest` crate; the ABI
//! between the two is specified in `docs/abi.md`.

#![deny(missing_docs)]
#![warn(unreachable_pub)]

pub mod abi;
mod adapt;
mod broker;
pub mod capability;
mod capture;
mod cli;
mod compile;
mod confine;
mod driver;
mod engine;
pub mod failure;
pub mod http;
pub mod job;
mod journal;
#[cfg(test)]
mod layers;
mod lifecycle;
mod logging;
pub mod metrics;
mod objects;
mod operator;
pub mod plugin;
pub mod pool;
mod python;
mod recent;
mod sandbox;
mod spec;
mod storage;
pub mod tls;
mod units;

pub use cli::main;
