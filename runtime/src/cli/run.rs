//! `wasmbatch run`: one job, on a journal of its own, in-process or against servers of
//! the contract.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use serde_json::json;

use super::*;
use crate::driver::Local;
use crate::http::client::{Endpoint, READY_TIMEOUT, wait_all_ready};
use crate::job::{
    self,
    dead_letter::DeadLetters,
    executor::{EndpointExecutor, InProcess},
    source::{self, PathRewrite},
    status::{ProgressView, new_job_id},
    stop::StopFlag,
    submission::Submission,
};
use crate::metrics::Metrics;
use crate::spec::JobSpec;

/// Whether two paths name the same file (the second may not exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// What `run` keeps beside the job in its journal, to resume it.
#[derive(serde::Serialize, serde::Deserialize)]
struct RunMeta {
    dead_letter: PathBuf,
    retry_from: Option<PathBuf>,
    /// Where the handlers' results go (absent in journals of older versions).
    #[serde(default)]
    results: Option<PathBuf>,
}

impl RunMeta {
    /// The file beside the journal that keeps them.
    const FILE: &'static str = "run.json";

    fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::storage::write_atomic(&state_dir.join(Self::FILE), &text)
    }

    /// The settings of the job kept in `state_dir` (older journals kept them in the
    /// spec, as `_run`).
    fn load(state_dir: &Path, spec: &serde_json::Value) -> anyhow::Result<RunMeta> {
        let path = state_dir.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).with_context(|| format!("the run settings in {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && spec.get("_run").is_some() => {
                serde_json::from_value(spec["_run"].clone()).context("the journal's run settings")
            }
            Err(e) => Err(anyhow::anyhow!("the run settings in {}: {e}", path.display())),
        }
    }
}

pub(super) fn run_job(args: RunArgs) -> anyhow::Result<ExitCode> {
    let endpoints = args.endpoint.iter().map(|u| Endpoint::parse(u)).collect::<Result<Vec<_>, _>>().map_err(invalid)?;

    // The job: new (from the job file), or resumed (from its journal).
    let (journal, row, meta, state_dir, explicit_state, parsed) = match &args.resume {
        Some(dir) => {
            if !dir.join("journal.sqlite").is_file() {
                return Err(invalid(format!("--resume {}: no journal.sqlite there", dir.display())));
            }
            let journal = crate::journal::Journal::open(dir).map_err(invalid)?;
            let row = journal
                .only_job()?
                .ok_or_else(|| invalid(format!("--resume {}: the journal holds no job", dir.display())))?;
            if row.status.is_terminal() {
                return Err(invalid(format!(
                    "--resume {}: job {} already ended ({}); nothing to resume",
                    dir.display(),
                    row.job_id,
                    row.status.as_str()
                )));
            }
            let mut row = row;
            row.submission = journal
                .submission(&row.job_id)
                .map_err(|e| invalid(format!("--resume {}: the job file kept there: {e}", dir.display())))?;
            let mut meta = RunMeta::load(dir, &row.spec)?;
            if let Some(path) = &args.dead_letter {
                meta.dead_letter = path.clone();
            }
            if let Some(path) = &args.results {
                meta.results = Some(path.clone());
            }
            (journal, row, meta, dir.clone(), true, None)
        }
        None => {
            let job = args.job.as_ref().expect("clap requires JOB without --resume");
            let (bytes, origin) = if job.as_os_str() == "-" {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).context("reading the job from stdin")?;
                (bytes, "<stdin>".to_string())
            } else {
                let bytes =
                    std::fs::read(job).map_err(|e| invalid(format!("cannot read job file {}: {e}", job.display())))?;
                (bytes, job.display().to_string())
            };
            let submission = Submission::parse(&bytes, &origin).map_err(invalid)?;
            for warning in &submission.warnings {
                tracing::warn!("{origin}: {warning}");
            }
            let start_time = SystemTime::now();
            let job_id = new_job_id(start_time);
            let workers = args.workers.map(|w| w as usize).unwrap_or(submission.workers);
            let api_name = args.api_name.clone().unwrap_or_else(|| {
                job.file_stem().and_then(|s| s.to_str()).filter(|s| *s != "-").unwrap_or("wasmbatch").to_string()
            });
            let dead_letter = args
                .dead_letter
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("wasmbatch-{job_id}.dead-letter.jsonl")));
            if let Some(retry_from) = &args.retry_from
                && same_file(retry_from, &dead_letter)
            {
                return Err(invalid(format!(
                    "--retry-from and --dead-letter name the same file, {}: writing the new dead letters would \
                     destroy the ones being re-run; give --dead-letter another path",
                    dead_letter.display()
                )));
            }
            let results =
                args.results.clone().unwrap_or_else(|| PathBuf::from(format!("wasmbatch-{job_id}.results.jsonl")));
            // A results file holds one job's results, a batch's once: a new job appending
            // to an earlier one's would keep that job's results for its own batches.
            if std::fs::metadata(&results).is_ok_and(|m| m.len() > 0) {
                return Err(invalid(format!(
                    "--results {} already holds results (of an earlier job): a new job starts its own file; remove \
                     it or give another path (--resume continues the job that wrote it)",
                    results.display()
                )));
            }
            let meta = RunMeta { dead_letter, retry_from: args.retry_from.clone(), results: Some(results) };
            let spec =
                job::status::job_spec(&job_id, &api_name, workers, &submission.config, submission.timeout, start_time);
            let explicit = args.state_dir.is_some();
            let state_dir =
                args.state_dir.clone().unwrap_or_else(|| PathBuf::from(format!("wasmbatch-{job_id}.state")));
            let journal = crate::journal::Journal::open(&state_dir)
                .map_err(|e| invalid(format!("cannot keep the job's state: {e}")))?;
            // The settings first: a journal with a job always has them beside it.
            meta.save(&state_dir).map_err(|e| invalid(format!("cannot keep the job's state: {e}")))?;
            let row = crate::journal::JobRow {
                job_id,
                api_name,
                submission: bytes,
                spec,
                status: job::status::JobState::Running,
                submitted_at: start_time.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
                end_time: None,
                ended_at: None,
                total_batch_count: None,
                hook: crate::journal::Hook::Pending,
                error: None,
                plugin: None,
            };
            journal.insert_job(&row, None).map_err(|e| invalid(format!("cannot keep the job's state: {e}")))?;
            (journal, row, meta, state_dir, explicit, Some(submission))
        }
    };
    let submission = match parsed {
        Some(submission) => submission,
        None => Submission::parse(&row.submission, "the job").map_err(invalid)?,
    };
    let job_id = row.job_id.clone();
    let api_name = row.api_name.clone();
    let workers = args.workers.map(|w| w as usize).unwrap_or(row.workers());

    let mount = args.guest.mount().filter(|_| args.plugin.is_some());
    let rewrite = mount.as_ref().and_then(|m| m.canonicalize().ok()).map(|host| PathRewrite { host });
    let input = match &meta.retry_from {
        Some(path) => source::open_dead_letter(path).map_err(invalid)?,
        None => source::open(submission.source, rewrite, None).map_err(invalid)?,
    };
    let total = input.total_batches();
    // A resumed job adds to its dead-letter file; a new one starts it.
    let dead_letter = if args.resume.is_some() {
        DeadLetters::append_to(&meta.dead_letter)
    } else {
        DeadLetters::create(&meta.dead_letter)
    }
    .map_err(|e| invalid(format!("cannot write the dead-letter file {}: {e}", meta.dead_letter.display())))?;
    let results = meta.results.clone().unwrap_or_else(|| PathBuf::from(format!("wasmbatch-{job_id}.results.jsonl")));
    let ledger: Box<dyn crate::job::ledger::Ledger> = Box::new(crate::journal::Exported {
        journal: journal.ledger(&job_id),
        file: dead_letter,
        results: job::results::ResultsFile::new(&results),
    });
    let facts = crate::driver::JobFacts {
        row: &row,
        workers,
        max_attempts: args.max_attempts.or(submission.max_attempts).unwrap_or(3),
        timeout: crate::driver::remaining(submission.timeout, row.submitted_at),
    };
    let mut spec = row.spec.clone();
    if let Some(object) = spec.as_object_mut() {
        object.remove("_run");
    }
    spec["workers"] = json!(workers);
    if let Some(total) = total {
        spec["total_batch_count"] = json!(total);
    }
    let spec = JobSpec::from_value(spec);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("wasmbatch-io")
        .build()
        .context("cannot start the I/O runtime")?;
    let stop = StopFlag::default();
    let signal_stop = stop.clone();
    let resume_hint = state_dir.display().to_string();
    runtime.spawn(async move {
        shutdown_signal().await;
        eprintln!(
            "stopping: batches in flight are interrupted; the rest waits for `--resume {resume_hint}` (again to quit at once)"
        );
        signal_stop.set(job::stop::StopReason::Shutdown);
        shutdown_signal().await;
        std::process::exit(130);
    });

    let metrics = Metrics::new(&api_name);
    if let Some(addr) = &args.metrics_addr {
        super::serve_metrics_at(&runtime, addr, &metrics)?;
    }
    let progress = ProgressView::new(args.progress, args.progress_interval);
    tracing::info!(
        job_id,
        api_name,
        workers,
        resumed = args.resume.is_some(),
        state = %state_dir.display(),
        executor = if args.plugin.is_some() { "in_process" } else { "endpoint" },
        "job started"
    );
    let grants = args.guest.limits()?.grants;
    let room = crate::storage::Room::default();
    let results_at = Arc::new(crate::plugin::ResultsFileAt(results.clone()));
    let engine = crate::driver::Job { journal: &journal, row: &row, results, grants: &grants, room: &room };
    // The input is read once: a local dispatcher never reads it again.
    let reopen = || anyhow::bail!("the input of a local run is read once");
    let concluded = if let Some(plugin_path) = &args.plugin {
        let plugin = load_plugin(&args.guest, plugin_path, workers, metrics.clone()).map_err(invalid)?;
        let executor = InProcess::new(bind(&plugin, &args.guest, &spec, None, results_at)?, args.guest.recycle_after);
        engine.drive(&facts, input, &reopen, &Local::new(executor, ledger, None, progress, metrics), &stop)?
    } else {
        let timeout = args.ready_timeout.unwrap_or(READY_TIMEOUT);
        if !runtime.block_on(wait_all_ready(&endpoints, timeout, stop.stopped())).map_err(anyhow::Error::msg)? {
            anyhow::bail!("stopped while waiting for the endpoints to be ready");
        }
        let executor = EndpointExecutor::new(endpoints, runtime.handle().clone(), args.guest.batch_timeout());
        engine.drive(&facts, input, &reopen, &Local::new(executor, ledger, None, progress, metrics), &stop)?
    };
    let mut status = whole_job_status(&journal, concluded)?;
    if args.plugin.is_some() {
        status.mount = Some(args.guest.mount_description());
    }
    if status.status == job::status::JobState::Stopped {
        status.resume_with = Some(state_dir.display().to_string());
    } else if !explicit_state && status.status.is_terminal() {
        // Nothing left to resume: the state goes (an explicit --state-dir stays).
        let _ = std::fs::remove_dir_all(&state_dir);
    }

    let json_status = serde_json::to_string_pretty(&status).expect("the status serializes");
    if let Some(path) = &args.status_file {
        crate::storage::write_atomic(path, format!("{json_status}\n").as_bytes())
            .with_context(|| format!("cannot write the status file {}", path.display()))?;
    }
    match args.output {
        OutputFormat::Json => println!("{json_status}"),
        OutputFormat::Text => println!("{}", status.summary()),
    }
    runtime.shutdown_background();
    Ok(ExitCode::from(status.exit_code()))
}

/// The status of the run, with the whole job's counts (a resumed job's earlier runs
/// included) and how it was concluded; a job that did not end is stopped, resumable.
fn whole_job_status(
    journal: &crate::journal::Journal,
    concluded: crate::driver::Concluded,
) -> anyhow::Result<job::status::JobStatus> {
    use job::status::JobState;
    let mut status = *concluded.status.expect("a local run has its runner's status");
    let counts = concluded.counts;
    let row = journal.job(&status.job_id)?.expect("the job is in its journal");
    let deferred = status.pending_batch_count;
    status.metrics.succeeded = counts.succeeded;
    status.metrics.failed = counts.failed;
    status.metrics.average_time_per_batch = counts.average_time_per_batch;
    status.unhandled_batch_count = counts.unhandled;
    status.dead_lettered_batch_count = counts.failed + counts.unhandled;
    // The whole job's items, from its journal (a state directory of an older version
    // has none).
    status.items = counts.items;
    let ended = counts.succeeded + counts.failed + counts.unhandled;
    status.total_batch_count = row.total_batch_count.unwrap_or(ended + deferred);
    // Every batch without an outcome waits for a resume, read or not.
    status.pending_batch_count = status.total_batch_count.saturating_sub(ended);
    status.status = if concluded.ended { concluded.state } else { JobState::Stopped };
    status.error = concluded.error;
    Ok(status)
}
