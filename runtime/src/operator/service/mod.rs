//! The job service: accepts jobs, runs them under the worker budget, records
//! everything in the journal, and resumes what a crash or a shutdown interrupted.
//!
//! Each job has a thread that waits for one of `max_running_jobs` places (in
//! submission order), then drives the job runner: batches from the submission (those
//! with an outcome in the journal skipped), outcomes into the journal, every attempt
//! under a place of the shared worker budget. On a shutdown, batches in flight are
//! left pending and the job stays `running` in the journal; the next start resumes it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::config::{ApiConfig, Handler, OperatorConfig};
use super::error::ErrorKind;
mod submit;

pub(crate) use super::error::ServiceError;
use super::intake::{cortex_error, idempotency_key, with_default_workers};
use crate::broker::BrokerUrl;
use crate::broker::dispatch::{ApiInfo, Dispatch};
use crate::confine::Prefixes;
use crate::driver::{Job, JobFacts, Local, remaining};
use crate::http::client::{Endpoint, wait_all_ready};
use crate::job::budget::Budget;
use crate::job::executor::{EndpointExecutor, InProcess};
use crate::job::inputs;
use crate::job::source::{self, PathRewrite};
use crate::job::status::{JobState, ProgressMode, ProgressView, new_job_id, rfc3339};
use crate::job::stop::{StopFlag, StopReason};
use crate::job::submission::{SourceSpec, Submission, SubmissionError};
use crate::journal::{Hook, JobRow, Journal};
use crate::metrics::Metrics;
use crate::plugin::{JobContext, Plugin, ResultsFileAt};

/// The largest item Cortex accepts in an `item_list`, in bytes of raw JSON.
pub(crate) const MAX_ITEM_SIZE: usize = 256_000;

/// What a submission gives: the job spec, or for a dry run the text to answer.
pub(crate) enum Submitted {
    /// The job was accepted.
    Job(Value),
    /// The job an idempotency key was first sent with: accepted before.
    Replayed(Value),
    /// A dry run: Cortex's text answer.
    DryRun(String),
}

/// Whether `from` may submit a job to `to`, by its `allowed` list (`*`: any).
pub(crate) fn check_chain(from: &str, allowed: &[String], to: &str) -> Result<(), String> {
    if allowed.iter().any(|a| a == to || a == "*") {
        return Ok(());
    }
    let declared = if allowed.is_empty() {
        "none is declared".to_string()
    } else {
        format!("it may submit to {}", allowed.join(", "))
    };
    Err(format!("api {from:?} may not submit jobs to {to:?} ({declared}; see may_submit_to)"))
}

/// Chaining inside the operator: a guest's job goes straight to the service.
struct ServiceSubmitter {
    service: std::sync::Weak<Service>,
    from: String,
    allowed: Vec<String>,
}

impl crate::plugin::Submitter for ServiceSubmitter {
    fn submit(&self, api: &str, job: &[u8]) -> Result<String, String> {
        check_chain(&self.from, &self.allowed, api)?;
        let service = self.service.upgrade().ok_or("the operator is shutting down")?;
        match service.submit(api, job, false, None) {
            Ok(Submitted::Job(spec) | Submitted::Replayed(spec)) => {
                Ok(spec["job_id"].as_str().unwrap_or_default().to_string())
            }
            Ok(Submitted::DryRun(_)) => Err("unexpected dry run".into()),
            Err(e) => Err(e.to_string().split("\n\n").next().unwrap_or_default().to_string()),
        }
    }
}

/// One hosted API: its settings and, for a plugin, its compiled module.
struct Api {
    config: ApiConfig,
    plugin: Option<Arc<Plugin>>,
    endpoints: Vec<Endpoint>,
    metrics: Arc<Metrics>,
}

/// A job that has a thread.
struct Live {
    stop: StopFlag,
    thread: JoinHandle<()>,
}

/// The service.
pub(crate) struct Service {
    config: OperatorConfig,
    journal: Journal,
    apis: HashMap<String, Api>,
    budget: Arc<Budget>,
    running: Arc<Budget>,
    live: Mutex<HashMap<String, Live>>,
    metrics: Arc<Metrics>,
    gauges: super::Gauges,
    runtime: tokio::runtime::Handle,
    /// With a broker: batches go to workers through it.
    dispatch: Option<Arc<Dispatch>>,
    /// Episodes of a full data directory, for submissions and job states.
    room: crate::storage::Room,
    /// Held while a submission with an idempotency key is looked up and recorded.
    keyed: Mutex<()>,
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Service {
    /// Opens the journal in `data_dir`, loads every API (compiling plugins), and
    /// resumes the jobs a previous run left unfinished.
    pub(crate) fn start(
        config: OperatorConfig,
        data_dir: &std::path::Path,
        cache_dir: Option<PathBuf>,
        broker: Option<BrokerUrl>,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Arc<Service>> {
        let journal = Journal::open(data_dir)?;
        let metrics = Metrics::new("operator");
        let mut apis = HashMap::new();
        for api in &config.apis {
            let api_metrics = metrics.for_api(&api.name);
            let (plugin, endpoints) = match &api.handler {
                // With a broker, the workers have the handlers.
                _ if broker.is_some() => (None, Vec::new()),
                Handler::Workers => anyhow::bail!(
                    "api {}: no `plugin` and no `endpoints`: without a broker the operator needs one of them",
                    api.name
                ),
                Handler::Plugin(path) => {
                    let options = api.load_options(config.max_running_jobs, cache_dir.clone());
                    let plugin = Plugin::load(path, &options, api_metrics.clone())
                        .map_err(|e| anyhow::anyhow!("api {}: {e}", api.name))?;
                    tracing::info!(
                        api_name = api.name,
                        plugin = %path.display(),
                        module = plugin.origin().as_str(),
                        max_memory_mib = plugin.max_memory() >> 20,
                        "plugin loaded"
                    );
                    (Some(Arc::new(plugin)), Vec::new())
                }
                Handler::Endpoints(urls) => {
                    let endpoints = urls
                        .iter()
                        .map(|u| Endpoint::parse(u))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(anyhow::Error::msg)?;
                    (None, endpoints)
                }
            };
            let handler = match (&broker, plugin.is_some()) {
                (Some(_), _) => "broker",
                (None, true) => "plugin",
                (None, false) => "endpoints",
            };
            tracing::info!(api_name = api.name, handler, "api loaded");
            apis.insert(api.name.clone(), Api { config: api.clone(), plugin, endpoints, metrics: api_metrics });
        }
        let dispatch = match broker {
            None => None,
            Some(url) => {
                let infos = apis
                    .iter()
                    .map(|(name, api): (&String, &Api)| {
                        (name.clone(), ApiInfo { max_attempts: api.config.max_attempts, metrics: api.metrics.clone() })
                    })
                    .collect();
                Some(Dispatch::start(url, journal.clone(), infos, runtime.clone())?)
            }
        };
        let service = Arc::new(Service {
            dispatch,
            budget: Budget::new(config.max_workers),
            running: Budget::new(config.max_running_jobs),
            config,
            journal,
            apis,
            live: Mutex::new(HashMap::new()),
            gauges: super::Gauges::new(&metrics),
            metrics,
            runtime,
            room: crate::storage::Room::default(),
            keyed: Mutex::new(()),
        });
        for row in service.journal.unfinished()? {
            if !service.apis.contains_key(&row.api_name) {
                tracing::error!(
                    job_id = row.job_id,
                    api_name = row.api_name,
                    "the job's API is no longer configured; it stays as it is"
                );
                continue;
            }
            tracing::info!(job_id = row.job_id, api_name = row.api_name, status = row.status.as_str(), "resuming");
            service.spawn(row, None);
        }
        // Every unfinished job is tracked: the outcomes waiting in the broker can be
        // taken.
        if let Some(dispatch) = &service.dispatch {
            dispatch.open();
        }
        Ok(service)
    }

    /// The journal.
    pub(crate) fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The metrics of every API.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The service's own gauges.
    pub(crate) fn gauges(&self) -> &super::Gauges {
        &self.gauges
    }

    /// The directory of the journal, submissions and results.
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        self.journal.path().parent().unwrap_or(std::path::Path::new("."))
    }

    /// Worker places in use and in all.
    pub(crate) fn workers(&self) -> (usize, usize) {
        (self.budget.in_use(), self.budget.total())
    }

    /// Whether `name` is a hosted API.
    pub(crate) fn has_api(&self, name: &str) -> bool {
        self.apis.contains_key(name)
    }

    /// The API's settings, as `api_spec` shows them.
    pub(crate) fn api_spec(&self, name: &str) -> Option<Value> {
        let api = &self.apis.get(name)?.config;
        let handler = match &api.handler {
            Handler::Plugin(path) => json!({"plugin": path.display().to_string()}),
            Handler::Endpoints(urls) => json!({"endpoints": urls}),
            Handler::Workers => json!({"workers": "broker"}),
        };
        let handler = if self.dispatch.is_some() { json!({"workers": "broker"}) } else { handler };
        Some(json!({
            "name": api.name,
            "kind": "BatchAPI",
            "handler": handler,
            "max_workers": api.max_workers,
            "max_attempts": api.max_attempts,
        }))
    }

    /// The job `job_id` of `api_name` (Cortex does not check the API; neither do we
    /// for reading).
    pub(crate) fn job(&self, api_name: &str, job_id: &str) -> Result<(JobRow, crate::journal::Counts), ServiceError> {
        if !self.has_api(api_name) {
            return Err(ServiceError::ApiNotDeployed(api_name.into()));
        }
        // A job is found only under its own API.
        let row = self
            .journal
            .job(job_id)?
            .filter(|row| row.api_name == api_name)
            .ok_or_else(|| ServiceError::JobNotFound { api: api_name.into(), job_id: job_id.into() })?;
        let counts = self.journal.counts(job_id)?;
        Ok((row, counts))
    }

    /// Stops a job; waits (up to 10 s) until its final status is recorded.
    pub(crate) fn stop(&self, api_name: &str, job_id: &str) -> Result<(), ServiceError> {
        let (row, _) = self.job(api_name, job_id)?;
        if row.status.is_terminal() {
            return Ok(());
        }
        let stop = self.live.lock().unwrap_or_else(|e| e.into_inner()).get(job_id).map(|l| l.stop.clone());
        match stop {
            Some(stop) => stop.stop(),
            None => self.journal.set_status(job_id, JobState::Stopped, Some(&rfc3339(SystemTime::now())), None)?,
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.journal.job(job_id)?.is_some_and(|r| r.status.is_terminal()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Starts the thread of a job; `parsed` is its submission when the caller has just
    /// parsed it (else it is read from the journal).
    fn spawn(self: &Arc<Self>, row: JobRow, parsed: Option<Submission>) {
        if let Some(dispatch) = &self.dispatch
            && let Err(e) = dispatch.track(&row.job_id, &row.api_name)
        {
            tracing::error!(job_id = row.job_id, "cannot read the job's outcomes: {e}");
        }
        let stop = StopFlag::default();
        let service = self.clone();
        let job_id = row.job_id.clone();
        let flag = stop.clone();
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let thread = std::thread::Builder::new()
            .name("wasmbatch-job".into())
            .spawn(move || {
                let job_id = row.job_id.clone();
                if let Err(e) = Service::drive(&service, row, parsed, &flag) {
                    tracing::error!(job_id, "the job failed: {e:#}");
                    let end = rfc3339(SystemTime::now());
                    let _ =
                        service.journal.set_status(&job_id, JobState::WorkerError, Some(&end), Some(&format!("{e:#}")));
                }
                service.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&job_id);
            })
            .expect("spawn a job thread");
        live.insert(job_id, Live { stop, thread });
    }

    /// A job's input from its beginning, its time limit and its attempts per batch.
    fn input(&self, row: &JobRow, parsed: Option<Submission>, api: &Api) -> anyhow::Result<Input> {
        let raw = if parsed.is_some() { Vec::new() } else { self.journal.submission(&row.job_id)? };
        // A re-run of another job's dead letters, or a submission.
        let retry_of = serde_json::from_slice::<HashMap<String, &RawValue>>(&raw)
            .ok()
            .and_then(|v| v.get("retry_of").and_then(|r| serde_json::from_str::<String>(r.get()).ok()));
        Ok(match retry_of {
            Some(old) => (self.journal.dead_letter_source(&old)?, row.timeout(), None),
            None => {
                let submission = match parsed {
                    Some(submission) => submission,
                    None => Submission::parse(&raw, "submission")?,
                };
                let rewrite =
                    api.config.mount.as_ref().and_then(|m| m.canonicalize().ok()).map(|host| PathRewrite { host });
                let inner = source::open(
                    submission.source,
                    rewrite.filter(|_| api.plugin.is_some()),
                    Some(&api.config.allow_inputs),
                )?;
                (inner, submission.timeout, submission.max_attempts)
            }
        })
    }

    /// Runs one job to its end (or to a shutdown), through the one job engine.
    fn drive(self: &Arc<Self>, row: JobRow, parsed: Option<Submission>, stop: &StopFlag) -> anyhow::Result<()> {
        let api = self.apis.get(&row.api_name).expect("checked when spawned");
        let Some(_running) = self.running.acquire(stop) else {
            if stop.reason() == Some(StopReason::Stopped) {
                self.journal.set_status(&row.job_id, JobState::Stopped, Some(&rfc3339(SystemTime::now())), None)?;
            }
            return Ok(());
        };
        self.journal.set_status(&row.job_id, JobState::Running, None, None)?;
        let (input, timeout, max_attempts) = self.input(&row, parsed, api)?;
        let facts = JobFacts {
            row: &row,
            workers: row.workers(),
            max_attempts: max_attempts.unwrap_or(api.config.max_attempts),
            timeout: remaining(timeout, row.submitted_at),
        };
        let reopen = || Ok(self.input(&row, None, api)?.0);
        let job = Job {
            journal: &self.journal,
            row: &row,
            results: self.journal.results_path(&row.job_id),
            grants: &api.config.grants,
            room: &self.room,
        };
        if let Some(dispatch) = &self.dispatch {
            job.drive(&facts, input, &reopen, dispatch.as_ref(), stop)?;
            return Ok(());
        }
        match &api.plugin {
            Some(plugin) => {
                let spec = serde_json::to_vec_pretty(&row.spec)?;
                let submitter = ServiceSubmitter {
                    service: Arc::downgrade(self),
                    from: api.config.name.clone(),
                    allowed: api.config.may_submit_to.clone(),
                };
                let context = JobContext {
                    spec: Arc::from(spec),
                    mount: api.config.mount.clone(),
                    submitter: Some(Arc::new(submitter)),
                    results: Some(Arc::new(ResultsFileAt(job.results.clone()))),
                };
                let executor = InProcess::new(Arc::new(plugin.bind(context)?), api.config.recycle_after);
                job.drive(&facts, input, &reopen, &self.local(executor, &row, api), stop)?;
            }
            None => {
                let ready = wait_all_ready(&api.endpoints, api.config.ready_timeout, stop.stopped());
                let ready = self.runtime.block_on(ready).map_err(anyhow::Error::msg)?;
                if !ready && stop.reason() == Some(StopReason::Shutdown) {
                    return Ok(());
                }
                let executor =
                    EndpointExecutor::new(api.endpoints.clone(), self.runtime.clone(), api.config.batch_timeout);
                job.drive(&facts, input, &reopen, &self.local(executor, &row, api), stop)?;
            }
        }
        Ok(())
    }

    /// This process's dispatcher for a job of `api`: `executor` under the shared worker
    /// budget, outcomes into the journal.
    fn local<E: crate::job::executor::Executor>(&self, executor: E, row: &JobRow, api: &Api) -> Local<E> {
        Local::new(
            executor,
            Box::new(self.journal.ledger(&row.job_id)),
            Some(self.budget.clone()),
            ProgressView::new(ProgressMode::Off, Duration::from_secs(3600)),
            api.metrics.clone(),
        )
    }

    /// Stops taking jobs' batches: every job thread leaves what it has not finished
    /// pending; waits up to `timeout` for them.
    pub(crate) fn shutdown(&self, timeout: Duration) {
        let live: Vec<(String, Live)> = self.live.lock().unwrap_or_else(|e| e.into_inner()).drain().collect();
        for (_, job) in &live {
            job.stop.set(StopReason::Shutdown);
        }
        let deadline = std::time::Instant::now() + timeout;
        for (job_id, job) in live {
            while !job.thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if job.thread.is_finished() {
                let _ = job.thread.join();
            } else {
                tracing::error!(
                    job_id,
                    "the job did not stop within the drain timeout; its batches in flight run again on the next start"
                );
            }
        }
        if let Some(dispatch) = &self.dispatch {
            dispatch.shutdown();
        }
    }
}

/// A job's input from its beginning, its time limit (seconds) and its attempts per
/// batch, when the submission sets them.
type Input = (Box<dyn crate::job::source::BatchSource>, Option<u64>, Option<u32>);
