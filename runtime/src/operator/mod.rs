//! The job service: `wasmbatch operator`.
//!
//! - `config`: the TOML file declaring the service's limits and its APIs.
//! - `service`: jobs — submission (Cortex's validation), scheduling under a worker
//!   budget, the runner on the journal, stop, resume after a crash or a shutdown.
//! - `error`: `ServiceError`, with Cortex's kinds.
//! - `intake`: a submission's Cortex error kinds, default workers, idempotency key.
//! - `routes`: Cortex's job API over HTTP, and ours (job lists, dead letters).
//! - `auth`: bearer tokens of the job API (`--token-file`), checked in constant time.
//! - `client`: `wasmbatch submit`, `get`, `stop` — the command-line side.

pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod error;
mod intake;
pub(crate) mod routes;
pub(crate) mod service;

use prometheus::{IntGauge, IntGaugeVec, Opts};

use crate::job::status::JobState;
pub(crate) use service::Service;

/// The operator's metrics: every API's batch series, plus jobs by status and the
/// worker budget, read when scraped.
pub(crate) fn render_metrics(service: &Service) -> String {
    use std::sync::OnceLock;
    static GAUGES: OnceLock<(IntGaugeVec, IntGauge, IntGauge, IntGauge, IntGauge)> = OnceLock::new();
    let (jobs, busy, budget, queued, free) = GAUGES.get_or_init(|| {
        let jobs = IntGaugeVec::new(Opts::new("wasmbatch_jobs", "Jobs in the journal, by status."), &["status"])
            .expect("valid metric");
        let busy = IntGauge::new("wasmbatch_workers_busy", "Worker places in use (batches in flight).").expect("valid");
        let budget = IntGauge::new("wasmbatch_workers_budget", "Worker places in all.").expect("valid");
        service.metrics().register(Box::new(jobs.clone()));
        service.metrics().register(Box::new(busy.clone()));
        let queued = IntGauge::new(
            "wasmbatch_batches_in_queue",
            "Batches not handled yet, over the jobs that have not ended (once their input was read).",
        )
        .expect("valid");
        service.metrics().register(Box::new(budget.clone()));
        service.metrics().register(Box::new(queued.clone()));
        let free = IntGauge::new(
            "wasmbatch_data_dir_free_bytes",
            "Bytes free in the data directory's file system (for this user).",
        )
        .expect("valid");
        service.metrics().register(Box::new(free.clone()));
        (jobs, busy, budget, queued, free)
    });
    if let Ok(n) = crate::storage::free_bytes(service.data_dir()) {
        free.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    if let Ok(n) = service.journal().batches_in_queue() {
        queued.set(n as i64);
    }
    if let Ok(counts) = service.journal().status_counts() {
        for state in JobState::ALL {
            let n = counts.iter().find(|(s, _)| *s == state).map(|(_, n)| *n).unwrap_or(0);
            jobs.with_label_values(&[state.as_str()]).set(n as i64);
        }
    }
    let (in_use, total) = service.workers();
    busy.set(in_use as i64);
    budget.set(total as i64);
    service.metrics().render()
}
