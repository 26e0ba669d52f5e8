//! Benchmark tools for wasmbatch (`scripts/bench.sh` drives them).
//!
//! - [`load`]: a closed-loop HTTP/1.1 load generator for the contract's `POST /`.
//! - the `wasmbatch-bench` binary: `load`, `native-server` (the ceiling: a hyper server
//!   that only parses the JSON array), `textstats-native` (the plugin's work compiled
//!   natively, in the same worker-pool shape), `startup` (process start to `/healthz` 200).

pub mod load;
