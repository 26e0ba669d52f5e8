//! End-to-end tests: the real `wasmbatch` binary on an ephemeral port, real plugins
//! compiled for wasm32-wasip1, real HTTP. One test binary, shared helpers in `harness`.

mod harness;

mod authors;
mod broker;
mod capabilities;
mod compile;
mod components;
mod container;
mod faults;
mod foundation;
mod guide;
mod in_process;
mod live;
mod metrics;
mod objects;
mod operator;
mod python;
mod reload;
mod resilience;
mod run;
mod sandbox;
mod security;
mod serve;
mod storage;
mod tls;
