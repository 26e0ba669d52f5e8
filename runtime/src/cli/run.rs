//! `wasmbatch run`: one job, on a journal of its own, in-process or against servers of
//! the contract.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde_json::json;

use super::*;
use crate::http::client::{Endpoint, READY_TIMEOUT, wait_ready};
use crate::job::{
    self,
    dead_letter::DeadLetters,
    executor::{EndpointExecutor, InProcess},
    runner::JobPlan,
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
            let mut meta: RunMeta =
                serde_json::from_value(row.spec["_run"].clone()).context("the journal's run settings")?;
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
            let meta = RunMeta { dead_letter, retry_from: args.retry_from.clone(), results: Some(results) };
            let mut spec =
                job::status::job_spec(&job_id, &api_name, workers, &submission.config, submission.timeout, start_time);
            spec["_run"] = json!(meta);
            let explicit = args.state_dir.is_some();
            let state_dir =
                args.state_dir.clone().unwrap_or_else(|| PathBuf::from(format!("wasmbatch-{job_id}.state")));
            let journal = crate::journal::Journal::open(&state_dir)
                .map_err(|e| invalid(format!("cannot keep the job's state: {e}")))?;
            let row = crate::journal::JobRow {
                job_id,
                api_name,
                submission: bytes,
                spec,
                status: job::status::JobState::Running,
                submitted_at: start_time.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
                end_time: None,
                total_batch_count: None,
                hook: crate::journal::Hook::Pending,
                error: None,
            };
            journal.insert_job(&row, None).map_err(|e| invalid(format!("cannot keep the job's state: {e}")))?;
            let meta: RunMeta = serde_json::from_value(row.spec["_run"].clone()).expect("just written");
            (journal, row, meta, state_dir, explicit, Some(submission))
        }
    };
    let submission = match parsed {
        Some(submission) => submission,
        None => Submission::parse(&row.submission, "the job").map_err(invalid)?,
    };
    let job_id = row.job_id.clone();
    let api_name = row.api_name.clone();
    let workers = args.workers.map(|w| w as usize).unwrap_or(row.spec["workers"].as_u64().unwrap_or(1) as usize);
    let start_time = std::time::UNIX_EPOCH + Duration::from_secs_f64(row.submitted_at);

    let mount = args.guest.mount().filter(|_| args.plugin.is_some());
    let rewrite = mount.as_ref().and_then(|m| m.canonicalize().ok()).map(|host| PathRewrite { host });
    let input = match &meta.retry_from {
        Some(path) => source::open_dead_letter(path).map_err(invalid)?,
        None => source::open(submission.source, rewrite, None).map_err(invalid)?,
    };
    let total = input.total_batches();
    if let Some(total) = total {
        journal.set_total(&job_id, total)?;
    }
    let source = journal.resumed(&job_id, input)?;
    // A resumed job adds to its dead-letter file; a new one starts it.
    let dead_letter = if args.resume.is_some() {
        DeadLetters::append_to(&meta.dead_letter)
    } else {
        DeadLetters::create(&meta.dead_letter)
    }
    .map_err(|e| invalid(format!("cannot write the dead-letter file {}: {e}", meta.dead_letter.display())))?;
    let timeout = submission.timeout.map(|t| {
        let spent = SystemTime::now().duration_since(start_time).unwrap_or_default();
        Duration::from_secs(t).saturating_sub(spent).max(Duration::from_millis(1))
    });
    let plan = JobPlan {
        job_id: job_id.clone(),
        api_name: api_name.clone(),
        workers,
        config: submission.config.clone(),
        timeout,
        max_attempts: args.max_attempts.or(submission.max_attempts).unwrap_or(3),
        ledger: Box::new(crate::journal::Exported {
            journal: journal.ledger(&job_id),
            file: dead_letter,
            results: job::results::ResultsFile::new(
                &meta.results.clone().unwrap_or_else(|| PathBuf::from(format!("wasmbatch-{job_id}.results.jsonl"))),
            ),
        }),
        budget: None,
        start_time,
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
    let mut progress = ProgressView::new(args.progress, args.progress_interval);
    tracing::info!(
        job_id,
        api_name,
        workers,
        resumed = args.resume.is_some(),
        state = %state_dir.display(),
        executor = if args.plugin.is_some() { "in_process" } else { "endpoint" },
        "job started"
    );
    let mut status = if let Some(plugin_path) = &args.plugin {
        let plugin = load_plugin(&args.guest, plugin_path, workers, metrics.clone()).map_err(invalid)?;
        let executor = InProcess::new(bind(&plugin, &args.guest, &spec, None)?, args.guest.recycle_after);
        job::runner::run(plan, source, Arc::new(executor), stop, &mut progress, metrics)
    } else {
        for endpoint in &endpoints {
            let ready = runtime.block_on(async {
                tokio::select! {
                    ready = wait_ready(endpoint, args.ready_timeout.unwrap_or(READY_TIMEOUT)) => Some(ready),
                    () = stop.stopped() => None,
                }
            });
            match ready {
                Some(Ok(())) => {}
                Some(Err(e)) => anyhow::bail!(e),
                None => anyhow::bail!("stopped while waiting for {endpoint} to be ready"),
            }
        }
        let executor = EndpointExecutor::new(endpoints, runtime.handle().clone(), args.guest.batch_timeout());
        job::runner::run(plan, source, Arc::new(executor), stop, &mut progress, metrics)
    };
    conclude(&journal, &mut status)?;
    if let Some(prefix) = status.config.get("results_prefix").and_then(|p| p.as_str()).map(str::to_string)
        && status.status.is_terminal()
    {
        let file =
            meta.results.clone().unwrap_or_else(|| PathBuf::from(format!("wasmbatch-{}.results.jsonl", status.job_id)));
        let grants = args.guest.limits()?.grants;
        match job::results::upload(&file, &prefix, &status.job_id, &grants) {
            Ok(Some(url)) => tracing::info!(url, "results copied to object storage"),
            Ok(None) => {}
            Err(e) => {
                tracing::error!("cannot copy the results: {e}");
                status.error =
                    Some(status.error.take().map(|x| format!("{x}; ")).unwrap_or_default() + &format!("results: {e}"));
            }
        }
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

/// Records how the run ended in its journal, and gives the status the whole job's
/// counts (a resumed job's earlier runs included).
fn conclude(journal: &crate::journal::Journal, status: &mut job::status::JobStatus) -> anyhow::Result<()> {
    use job::status::JobState;
    let counts = journal.counts(&status.job_id)?;
    let row = journal.job(&status.job_id)?.expect("the job is in its journal");
    let deferred = status.pending_batch_count;
    status.metrics.succeeded = counts.succeeded;
    status.metrics.failed = counts.failed;
    status.metrics.average_time_per_batch = counts.average_time_per_batch;
    status.unhandled_batch_count = counts.unhandled;
    status.dead_lettered_batch_count = counts.failed + counts.unhandled;
    let ended = counts.succeeded + counts.failed + counts.unhandled;
    status.total_batch_count = row.total_batch_count.unwrap_or(ended + deferred);
    // Every batch without an outcome waits for a resume, read or not.
    status.pending_batch_count = status.total_batch_count.saturating_sub(ended);
    status.status = match status.status {
        // Interrupted by a signal: resumable.
        JobState::Running => JobState::Stopped,
        other => crate::journal::final_state(other, &counts),
    };
    let recorded = if status.pending_batch_count > 0 || status.status == JobState::Stopped {
        JobState::Running
    } else {
        status.status
    };
    if recorded.is_terminal() {
        journal.conclude(
            &status.job_id,
            recorded,
            status.on_job_complete,
            &status.end_time,
            status.error.as_deref(),
        )?;
    }
    Ok(())
}
