//! wasmbatch runs WebAssembly batch handlers ("plugins", built for `wasm32-wasip1`)
//! for the Cortex Batch API model of work, behind the standard container contract.
//!
//! # Layout
//!
//! - [`engine`]: the wasmtime engine — pooling allocator, epoch ticker, our config type.
//! - [`compile`]: plugin files to modules; precompiled artifacts; the compile cache.
//! - [`abi`]: guest ABI v1 — export and import names and types; module validation.
//! - [`sandbox`]: what a guest sees — the job spec, `/mnt`, nothing else.
//! - [`plugin`]: a linked plugin and its warm [`plugin::Instance`]s; typed failures.
//! - [`failure`]: [`failure::Failure`] and its kinds (timeout, out_of_memory, …).
//! - [`lifecycle`]: a worker's warm instance — started, recycled, retired in one place.
//! - [`pool`]: worker threads, one instance each, behind admission by count and bytes.
//! - [`spec`]: the job spec file (`/cortex/spec/job.json`).
//! - [`http`]: the contract's server — routes, error-to-status mapping, shutdown —
//!   and its client, the dispatcher's side.
//! - [`job`]: batch jobs (`wasmbatch run`) — job files, sources, executors, the runner.
//! - [`journal`]: the job service's durable state (SQLite): jobs and batch outcomes.
//! - [`logging`]: text or JSON logs; guest output tagged with the job ID.
//! - [`metrics`]: Prometheus metrics, Cortex's batch series under Cortex's names.
//! - [`operator`]: the job service — Cortex's job API (tokens, TLS), scheduling, resume
//!   after a crash.
//! - [`capability`]: what a guest may reach when granted — outbound HTTP, objects.
//! - [`confine`]: URL prefixes as confinements — which object a URL names, and whether
//!   a grant covers it, whatever its spelling.
//! - [`objects`]: object storage (S3, GCS, Azure, local files beneath their grant).
//! - [`broker`]: the operator and its workers through RabbitMQ.
//! - [`storage`]: files written whole or not at all; a full disk told apart.
//! - [`tls`]: one TLS stack (rustls with ring) and one set of trusted roots.
//! - [`units`]: sizes and durations as users write them.
//! - [`cli`]: the `wasmbatch` command line.
//!
//! The guest side (the SDK plugin authors use) is the `wasmbatch-guest` crate; the ABI
//! between the two is specified in `docs/abi.md`.

#![deny(missing_docs)]

pub mod abi;
pub mod broker;
pub mod capability;
mod capture;
pub mod cli;
pub mod compile;
pub mod confine;
pub mod engine;
pub mod failure;
pub mod http;
pub mod job;
pub mod journal;
#[cfg(test)]
mod layers;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod objects;
pub mod operator;
pub mod plugin;
pub mod pool;
mod recent;
pub mod sandbox;
pub mod spec;
pub mod storage;
pub mod tls;
pub mod units;
