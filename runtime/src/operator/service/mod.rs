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
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::config::{ApiConfig, Handler, OperatorConfig};
use super::error::ErrorKind;
mod apis;
mod submit;

use self::apis::{Api, Apis, Loader};

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

/// How the error of a job that could not be resumed starts (cleared once it resumes).
const CANNOT_RESUME: &str = "cannot resume:";

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

/// A job that has a thread.
struct Live {
    stop: StopFlag,
    thread: JoinHandle<()>,
}

/// The service.
pub(crate) struct Service {
    config: RwLock<Arc<OperatorConfig>>,
    /// The file the configuration was read from (a reload reads it again).
    config_path: Option<PathBuf>,
    journal: Journal,
    apis: RwLock<Arc<Apis>>,
    /// Held while a reload loads and swaps the APIs.
    reloading: Mutex<()>,
    cache_dir: Option<PathBuf>,
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
        config_path: Option<PathBuf>,
        data_dir: &std::path::Path,
        cache_dir: Option<PathBuf>,
        broker: Option<BrokerUrl>,
        runtime: tokio::runtime::Handle,
    ) -> anyhow::Result<Arc<Service>> {
        let journal = Journal::open(data_dir)?;
        let metrics = Metrics::new("operator");
        let loader = Loader {
            data_dir,
            cache_dir: cache_dir.clone(),
            broker: broker.is_some(),
            max_running_jobs: config.max_running_jobs,
            metrics: &metrics,
        };
        let mut apis = Apis::new();
        for api in &config.apis {
            let loaded = loader.load(api, None).map_err(|e| anyhow::anyhow!("api {}: {e}", api.name))?;
            let handler = match (&broker, loaded.plugin.is_some()) {
                (Some(_), _) => "broker",
                (None, true) => "plugin",
                (None, false) => "endpoints",
            };
            tracing::info!(api_name = api.name, handler, "api loaded");
            apis.insert(api.name.clone(), loaded);
        }
        let dispatch = match broker {
            None => None,
            Some(url) => {
                let infos = apis
                    .iter()
                    .map(|(name, api): (&String, &Arc<Api>)| {
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
            config: RwLock::new(Arc::new(config)),
            config_path,
            journal,
            apis: RwLock::new(Arc::new(apis)),
            reloading: Mutex::new(()),
            cache_dir,
            live: Mutex::new(HashMap::new()),
            gauges: super::Gauges::new(&metrics),
            metrics,
            runtime,
            room: crate::storage::Room::default(),
            keyed: Mutex::new(()),
        });
        for row in service.journal.unfinished()? {
            match service.api_of(&row) {
                Ok(api) => {
                    tracing::info!(
                        job_id = row.job_id,
                        api_name = row.api_name,
                        status = row.status.as_str(),
                        version = row.plugin.as_deref().map(|h| &h[..h.len().min(12)]),
                        "resuming"
                    );
                    if row.error.as_deref().is_some_and(|e| e.starts_with(CANNOT_RESUME)) {
                        service.journal.set_error(&row.job_id, None)?;
                    }
                    service.spawn(row, None, api);
                }
                Err(why) => {
                    let why = format!("{CANNOT_RESUME} {why}; the job stays as it is");
                    tracing::error!(job_id = row.job_id, api_name = row.api_name, "{why}");
                    service.journal.set_error(&row.job_id, Some(&why))?;
                }
            }
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

    /// The configuration now.
    pub(crate) fn config(&self) -> Arc<OperatorConfig> {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `name` is a hosted API, or was one and has jobs in the journal (an API
    /// removed by a reload keeps its jobs readable and stoppable).
    pub(crate) fn knows_api(&self, name: &str) -> bool {
        self.api(name).is_some() || self.journal.has_jobs(name).unwrap_or(false)
    }

    /// The names of the APIs hosted now, sorted.
    pub(crate) fn api_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.apis().keys().cloned().collect();
        names.sort();
        names
    }

    /// The API's settings, as `api_spec` shows them.
    pub(crate) fn api_spec(&self, name: &str) -> Option<Value> {
        let api = self.api(name)?;
        let version = api.version.clone();
        let api = &api.config;
        let handler = match &api.handler {
            Handler::Plugin(path) => json!({"plugin": path.display().to_string()}),
            Handler::Endpoints(urls) => json!({"endpoints": urls}),
            Handler::Workers => json!({"workers": "broker"}),
        };
        let handler = if self.dispatch.is_some() { json!({"workers": "broker"}) } else { handler };
        let grants = &api.grants;
        let mut spec = json!({
            "name": api.name,
            "kind": "BatchAPI",
            "handler": handler,
            "max_workers": api.max_workers,
            "max_attempts": api.max_attempts,
            // Ours: the limits and grants its jobs run under.
            "limits": {
                "batch_timeout_secs": api.batch_timeout.as_secs_f64(),
                "max_memory": api.max_memory,
                "output_limit": api.output_limit,
                "recycle_after": api.recycle_after,
                "default_workers": api.default_workers,
            },
            "grants": {
                "http": grants.http.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
                "read": grants.read.texts(),
                "write": grants.write.texts(),
                "inputs": api.allow_inputs.texts(),
                "may_submit_to": api.may_submit_to,
            },
        });
        if let Some(version) = version {
            spec["version"] = json!(version);
        }
        Some(spec)
    }

    /// The job `job_id` of `api_name` (Cortex does not check the API; neither do we
    /// for reading).
    pub(crate) fn job(&self, api_name: &str, job_id: &str) -> Result<(JobRow, crate::journal::Counts), ServiceError> {
        let row = self.job_row(api_name, job_id)?;
        let counts = self.journal.read_counts(job_id)?;
        Ok((row, counts))
    }

    /// The row of job `job_id` of `api_name`, without its counts.
    pub(crate) fn job_row(&self, api_name: &str, job_id: &str) -> Result<JobRow, ServiceError> {
        if !self.knows_api(api_name) {
            return Err(ServiceError::ApiNotDeployed(api_name.into()));
        }
        // A job is found only under its own API.
        self.journal
            .job(job_id)?
            .filter(|row| row.api_name == api_name)
            .ok_or_else(|| ServiceError::JobNotFound { api: api_name.into(), job_id: job_id.into() })
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
    fn spawn(self: &Arc<Self>, row: JobRow, parsed: Option<Submission>, api: Arc<Api>) {
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
                if let Err(e) = Service::drive(&service, row, parsed, &api, &flag) {
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
    fn drive(
        self: &Arc<Self>,
        row: JobRow,
        parsed: Option<Submission>,
        api: &Api,
        stop: &StopFlag,
    ) -> anyhow::Result<()> {
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
