//! Batch jobs: `wasmbatch run`.
//!
//! - `submission`: the job file (a Cortex job submission) and its validation.
//! - `glob`: includes/excludes with Cortex's (gobwas) semantics.
//! - `inputs`: a job's input files, listed (and confined) and opened.
//! - `source`: streamed batches from `item_list`, `delimited_files`,
//!   `file_path_lister`, or a dead-letter file.
//! - `executor`: in-process (a plugin's instances) or endpoint (servers of the contract).
//! - `budget`: a worker budget several jobs share, handed out in arrival order.
//! - `dead_letter`: the dead-letter file, durable record by record.
//! - `stop`: whether and why a job ends early, shared by everything that serves it.
//! - `ledger`: where a job's outcomes go, durable before they are counted.
//! - `runner`: workers, retries, dead letters, timeout and stop, on-job-complete.
//! - `status`: job ID, progress, the final status with Cortex's names.

pub mod budget;
pub mod dead_letter;
pub mod executor;
pub mod glob;
pub mod inputs;
pub mod ledger;
pub mod results;
pub mod runner;
pub mod source;
pub mod status;
pub mod stop;
pub mod submission;
