//! Prometheus metrics: Cortex's batch metrics under Cortex's names, and our own.
//!
//! Cortex's dequeuer reports `cortex_batch_succeeded` and `cortex_batch_failed`
//! (counters) and `cortex_time_per_batch` (histogram, seconds), labelled `api_name` and
//! `job_id`; dashboards and the operator query exactly those, so they keep their names
//! (no `_total` suffix). The `wasmbatch_*` series are ours. Exposed in the Prometheus
//! text format by `serve` at `/metrics` and by `run --metrics-addr`.
//!
//! The per-job series are kept for the [`Metrics::JOBS_KEPT`] most recently active
//! job IDs; older ones are removed, so a server that sees many jobs (or a client
//! inventing job IDs) cannot grow the registry without bound.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::recent::Recent;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// One job's batch series, looked up once per job rather than once per batch.
struct JobSeries {
    succeeded: IntCounter,
    failed: IntCounter,
    time: Histogram,
}

/// Every metric of one process, as seen by one API: the batch series are labelled
/// with its name. [`Metrics::for_api`] gives another API's view of the same registry.
pub struct Metrics {
    api_name: String,
    families: Arc<Families>,
}

impl std::ops::Deref for Metrics {
    type Target = Families;

    fn deref(&self) -> &Families {
        &self.families
    }
}

/// The metric families of the process, shared by every API's [`Metrics`].
pub struct Families {
    registry: Registry,
    succeeded: IntCounterVec,
    failed: IntCounterVec,
    time_per_batch: HistogramVec,
    /// Per job ID: its API and its series.
    jobs: RwLock<Recent<String, (String, Arc<JobSeries>)>>,
    failures: IntCounterVec,
    /// Guest instances alive.
    pub instances_alive: IntGauge,
    /// Guest instances running a call now.
    pub instances_busy: IntGauge,
    /// Batches admitted and waiting for a worker.
    pub queue_depth: IntGauge,
    /// Bytes of request bodies admitted (being read, waiting or running).
    pub admitted_bytes: IntGauge,
    /// Linear memory of all live instances, in bytes.
    pub guest_memory_bytes: IntGauge,
    module_loads: IntCounterVec,
    /// Guest stdout/stderr bytes over the per-call limit, dropped.
    pub guest_output_dropped_bytes: IntCounter,
    /// Guest log lines over the per-call limit, dropped.
    pub guest_log_lines_dropped: IntCounter,
}

impl Metrics {
    /// A registry with every metric, batch series labelled with `api_name`.
    pub fn new(api_name: &str) -> Arc<Metrics> {
        let registry = Registry::new();
        let labels = &["api_name", "job_id"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let single = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let time_per_batch = HistogramVec::new(
            HistogramOpts::new("cortex_time_per_batch", "Seconds to handle a succeeded batch.").buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                30.0, 60.0, 300.0,
            ]),
            labels,
        )
        .expect("valid metric");
        registry.register(Box::new(time_per_batch.clone())).expect("unique metric");
        let _ = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        let families = Families {
            succeeded: counter("cortex_batch_succeeded", "Batches that succeeded.", labels),
            failed: counter("cortex_batch_failed", "Batches that failed.", labels),
            time_per_batch,
            jobs: RwLock::new(Recent::new(Self::JOBS_KEPT)),
            failures: counter(
                "wasmbatch_batch_failures_total",
                "Failed attempts at batches, by failure kind.",
                &["kind"],
            ),
            instances_alive: gauge("wasmbatch_instances_alive", "Guest instances alive."),
            instances_busy: gauge("wasmbatch_instances_busy", "Guest instances running a call."),
            queue_depth: gauge("wasmbatch_queue_depth", "Batches admitted and waiting for a worker."),
            admitted_bytes: gauge(
                "wasmbatch_admitted_bytes",
                "Bytes of request bodies admitted: being read, waiting or running.",
            ),
            guest_memory_bytes: gauge("wasmbatch_guest_memory_bytes", "Linear memory of all live guest instances."),
            module_loads: counter(
                "wasmbatch_module_loads_total",
                "Plugin modules loaded, by origin (compiled, cache_hit, precompiled).",
                &["origin"],
            ),
            guest_output_dropped_bytes: single(
                "wasmbatch_guest_output_dropped_bytes_total",
                "Guest stdout/stderr bytes over the per-call limit, dropped.",
            ),
            guest_log_lines_dropped: single(
                "wasmbatch_guest_log_lines_dropped_total",
                "Guest log lines over the per-call limit, dropped.",
            ),
            registry,
        };
        Arc::new(Metrics { api_name: api_name.to_string(), families: Arc::new(families) })
    }

    /// The view of the same registry for another API.
    pub fn for_api(&self, api_name: &str) -> Arc<Metrics> {
        Arc::new(Metrics { api_name: api_name.to_string(), families: self.families.clone() })
    }

    /// Adds a collector (a service's own gauges) to the registry.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.families.registry.register(collector) {
            tracing::warn!("cannot register a metric: {e}");
        }
    }

    /// Job IDs whose series are kept.
    pub const JOBS_KEPT: usize = 64;

    /// The series of `job_id`, created (and the oldest job's removed) on first use.
    fn job(&self, job_id: &str) -> Arc<JobSeries> {
        // The common case, a job already known, takes only a read lock.
        if let Some((_, series)) = self.jobs.read().unwrap_or_else(|e| e.into_inner()).get(job_id) {
            return series.clone();
        }
        let mut jobs = self.jobs.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, series)) = jobs.get_mut(job_id) {
            return series.clone();
        }
        let labels = [self.api_name.as_str(), job_id];
        let series = Arc::new(JobSeries {
            succeeded: self.succeeded.with_label_values(&labels),
            failed: self.failed.with_label_values(&labels),
            time: self.time_per_batch.with_label_values(&labels),
        });
        if let Some((old, (old_api, _))) = jobs.insert(job_id.to_string(), (self.api_name.clone(), series.clone())) {
            let labels = [old_api.as_str(), old.as_str()];
            let _ = self.succeeded.remove_label_values(&labels);
            let _ = self.failed.remove_label_values(&labels);
            let _ = self.time_per_batch.remove_label_values(&labels);
        }
        series
    }

    /// Records a succeeded batch of job `job_id` that took `elapsed`.
    pub fn batch_succeeded(&self, job_id: &str, elapsed: Duration) {
        let series = self.job(job_id);
        series.succeeded.inc();
        series.time.observe(elapsed.as_secs_f64());
    }

    /// Records a failed attempt at a batch, by failure kind.
    pub fn attempt_failed(&self, kind: &str) {
        self.failures.with_label_values(&[kind]).inc();
    }

    /// Records a batch of job `job_id` that failed for good.
    pub fn batch_failed(&self, job_id: &str) {
        self.job(job_id).failed.inc();
    }

    /// Records how a plugin module was obtained.
    pub fn module_loaded(&self, origin: &str) {
        self.module_loads.with_label_values(&[origin]).inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::warn!("cannot encode metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cortex_series_keep_their_names_and_labels() {
        let m = Metrics::new("sum");
        m.batch_succeeded("j1", Duration::from_millis(3));
        m.batch_succeeded("j1", Duration::from_millis(5));
        m.attempt_failed("trap");
        m.batch_failed("j1");
        m.module_loaded("cache_hit");
        let text = m.render();
        assert!(text.contains("cortex_batch_succeeded{api_name=\"sum\",job_id=\"j1\"} 2"), "{text}");
        assert!(text.contains("cortex_batch_failed{api_name=\"sum\",job_id=\"j1\"} 1"), "{text}");
        assert!(text.contains("cortex_time_per_batch_count{api_name=\"sum\",job_id=\"j1\"} 2"), "{text}");
        assert!(text.contains("# TYPE cortex_time_per_batch histogram"), "{text}");
        assert!(text.contains("wasmbatch_batch_failures_total{kind=\"trap\"} 1"), "{text}");
        assert!(text.contains("wasmbatch_module_loads_total{origin=\"cache_hit\"} 1"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    #[test]
    fn series_of_old_jobs_are_dropped_so_the_registry_stays_bounded() {
        let m = Metrics::new("a");
        for i in 0..1000 {
            m.batch_succeeded(&format!("job-{i}"), Duration::from_millis(1));
        }
        let text = m.render();
        let jobs = text.lines().filter(|l| l.starts_with("cortex_batch_succeeded{")).count();
        assert_eq!(jobs, Metrics::JOBS_KEPT);
        assert!(text.contains("job_id=\"job-999\""), "the newest job is kept");
        assert!(!text.contains("job_id=\"job-0\""), "the oldest job is dropped");
        // A job still in use keeps counting.
        m.batch_succeeded("job-999", Duration::from_millis(1));
        assert!(m.render().contains("cortex_batch_succeeded{api_name=\"a\",job_id=\"job-999\"} 2"));
    }
}
