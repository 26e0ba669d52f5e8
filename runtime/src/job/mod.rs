//! Batch jobs: `wasmbatch run`.
//!
//! - `submission`: the job file (a Cortex job submission) and its validation.
//! - `glob`: includes/excludes with Cortex's (gobwas) semantics.
//! - `source`: streamed batches from `item_list`, `delimited_files`,
//!   `file_path_lister`, or a dead-letter file.
//! - `executor`: in-process (a plugin's instances) or endpoint (servers of the contract).
//! - `budget`: a worker budget several jobs share, handed out in arrival order.
//! - `dead_letter`: the dead-letter file, durable record by record.
//! - `runner`: workers, retries, dead letters, timeout and stop, on-job-complete.
//! - `status`: job ID, progress, the final status with Cortex's names.

pub mod budget;
pub mod dead_letter;
pub mod executor;
pub mod glob;
pub mod results;
pub mod runner;
pub mod source;
pub mod status;
pub mod submission;
