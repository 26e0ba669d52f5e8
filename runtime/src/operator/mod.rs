//! The job service: `wasmbatch operator`.
//!
//! - `config`: the TOML file declaring the service's limits and its APIs.
//! - `service`: jobs — submission (Cortex's validation), scheduling under a worker
//!   budget, the runner on the journal, stop, resume after a crash or a shutdown.
//! - `error`: `ServiceError`, with Cortex's kinds.
//! - `intake`: a submission's Cortex error kinds, default workers, idempotency key.
//! - `routes`: Cortex's job API over HTTP, and ours (job lists, dead letters).
//! - `answer`: how every route answers (JSON, errors of a kind, a job's status).
//! - `auth`: bearer tokens of the job API (`--token-file`), checked in constant time.
//! - `dashboard`: the page at `/ui/` and the reads it makes; `POST /admin/reload`.
//! - `versions`: plugins kept by content hash, so a job runs the version it started with.
//! - `client`: `wasmbatch submit`, `get`, `stop` — the command-line side.

mod answer;
pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod dashboard;
pub(crate) mod error;
mod intake;
pub(crate) mod routes;
pub(crate) mod service;
pub(crate) mod versions;

use prometheus::{IntGauge, IntGaugeVec, Opts};

use crate::job::status::JobState;
pub(crate) use service::Service;

/// The service's own gauges: jobs by status, the worker budget, the batches in queue,
/// the data directory's free bytes. Each service registers its own in its registry.
pub(crate) struct Gauges {
    jobs: IntGaugeVec,
    busy: IntGauge,
    budget: IntGauge,
    queued: IntGauge,
    free: IntGauge,
}

impl Gauges {
    /// The gauges, registered in `metrics`.
    pub(crate) fn new(metrics: &crate::metrics::Metrics) -> Gauges {
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("a valid metric");
            metrics.register(Box::new(gauge.clone()));
            gauge
        };
        let jobs = IntGaugeVec::new(Opts::new("wasmbatch_jobs", "Jobs in the journal, by status."), &["status"])
            .expect("a valid metric");
        metrics.register(Box::new(jobs.clone()));
        Gauges {
            jobs,
            busy: gauge("wasmbatch_workers_busy", "Worker places in use (batches in flight)."),
            budget: gauge("wasmbatch_workers_budget", "Worker places in all."),
            queued: gauge(
                "wasmbatch_batches_in_queue",
                "Batches not handled yet, over the jobs that have not ended (once their input was read).",
            ),
            free: gauge(
                "wasmbatch_data_dir_free_bytes",
                "Bytes free in the data directory's file system (for this user).",
            ),
        }
    }
}

/// The operator's metrics: every API's batch series, plus the service's gauges, read
/// when scraped.
pub(crate) fn render_metrics(service: &Service) -> String {
    let Gauges { jobs, busy, budget, queued, free } = service.gauges();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_has_gauges_of_its_own() {
        let (a, b) = (crate::metrics::Metrics::new("a"), crate::metrics::Metrics::new("b"));
        let (ga, gb) = (Gauges::new(&a), Gauges::new(&b));
        ga.budget.set(3);
        gb.budget.set(5);
        assert!(a.render().contains("wasmbatch_workers_budget 3"), "{}", a.render());
        assert!(b.render().contains("wasmbatch_workers_budget 5"), "{}", b.render());
    }
}
