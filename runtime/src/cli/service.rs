//! `wasmbatch operator`, `worker`, and the job API's client commands `submit`, `get`
//! and `stop`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;

use super::*;
use crate::compile;
use crate::http::client::{Endpoint, READY_TIMEOUT, wait_all_ready};
use crate::job::{
    self,
    status::{ProgressMode, ProgressView},
};
use crate::metrics::Metrics;

pub(super) fn run_operator(args: OperatorArgs) -> anyhow::Result<()> {
    let config = crate::operator::config::OperatorConfig::load(&args.config, args.broker.is_some()).map_err(invalid)?;
    let cache_dir = if args.no_cache { None } else { args.cache_dir.clone().or_else(compile::default_cache_dir) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wasmbatch-io")
        .build()
        .context("cannot start the I/O runtime")?;
    let broker = args.broker.as_deref().map(crate::broker::BrokerUrl::parse).transpose().map_err(invalid)?;
    let tokens = args.token_file.as_deref().map(crate::operator::auth::Tokens::load).transpose().map_err(invalid)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key).map_err(invalid)?),
        _ => None,
    };
    if tokens.is_none() {
        tracing::warn!(
            host = args.host,
            "the job API is open: no --token-file, so whoever reaches this port may submit, stop and read jobs"
        );
    }
    let front = crate::operator::routes::Front { tokens, metrics_auth: args.metrics_auth, tls };
    let service = crate::operator::Service::start(
        config,
        Some(args.config.clone()),
        &args.data_dir,
        cache_dir,
        broker,
        runtime.handle().clone(),
    )
    .map_err(|e| {
        if e.downcast_ref::<crate::journal::JournalError>().is_some() { invalid(format!("{e:#}")) } else { e }
    })?;
    runtime.block_on(async {
        // SIGHUP re-reads the configuration (registered before the port opens: a
        // signal once the port is open is never the default's end of the process).
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot register for SIGHUP")?;
        let reloader = service.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let service = reloader.clone();
                // Loading plugins compiles: off the I/O threads. The outcome is logged.
                let _ = tokio::task::spawn_blocking(move || service.reload_file()).await;
            }
        });
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        let scheme = if front.tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, journal = %service.journal().path().display(), "listening");
        crate::operator::routes::serve(listener, service.clone(), Arc::new(front), shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    tracing::info!("shutting down: batches in flight finish or are left for the next start");
    let drain = args.drain_timeout;
    std::thread::spawn(move || service.shutdown(drain)).join().ok();
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(())
}

pub(super) fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    use crate::broker::worker::{self, Handler, WorkerConfig};
    let url = crate::broker::BrokerUrl::parse(&args.broker).map_err(invalid)?;
    if !crate::operator::config::valid_name(&args.api) {
        return Err(invalid(format!("--api {:?} is not a valid API name", args.api)));
    }
    let concurrency = args.concurrency.map(|c| c as usize).unwrap_or_else(worker::default_concurrency).max(1);
    let metrics = Metrics::new(&args.api);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wasmbatch-io")
        .build()
        .context("cannot start the I/O runtime")?;
    let handler = match &args.plugin {
        Some(path) => {
            // Each thread's warm instance and one of a job before (jobs overlap at
            // their ends), and on-job-complete's.
            let plugin = load_plugin(&args.guest, path, concurrency * 2 + 2, metrics.clone())?;
            let submitter = crate::operator::client::RemoteSubmitter::new(
                &args.operator_url,
                args.token.token.as_deref(),
                &args.api,
                args.may_submit_to.clone(),
            )
            .map_err(|e| invalid(format!("--operator-url: {e}")))?;
            Handler::Plugin {
                plugin,
                mount: args.guest.mount(),
                recycle_after: args.guest.recycle_after,
                submitter: Some(Arc::new(submitter)),
                results: Arc::new(crate::operator::client::RemoteResults::new(
                    &args.operator_url,
                    args.token.token.as_deref(),
                    &args.api,
                )),
            }
        }
        None => {
            let endpoints = args
                .endpoint
                .iter()
                .map(|u| Endpoint::parse(u))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("--endpoint: {e}")))?;
            // Cortex's dequeuer waits for the user's container before taking batches.
            let timeout = args.ready_timeout.unwrap_or(READY_TIMEOUT);
            if !runtime.block_on(wait_all_ready(&endpoints, timeout, shutdown_signal())).map_err(anyhow::Error::msg)? {
                return Ok(());
            }
            Handler::Endpoints { endpoints, batch_timeout: args.guest.batch_timeout() }
        }
    };
    if let Some(addr) = &args.metrics_addr {
        super::serve_metrics_at(&runtime, addr, &metrics)?;
    }
    // The worker raises a prefetch below the concurrency to it.
    let prefetch = args.prefetch.map_or(concurrency * 4, |p| p as usize);
    let config =
        WorkerConfig { url, api: args.api, concurrency, prefetch, drain_timeout: args.drain_timeout, handler, metrics };
    let result = worker::run(config, &runtime, shutdown_signal());
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// A client error as `main` reports it: exit 2 for what the operator refused.
fn client_error(e: crate::operator::client::ClientError) -> anyhow::Error {
    if e.exit_code == 2 { invalid(e) } else { anyhow::Error::new(e) }
}

fn now_epoch() -> i64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub(super) fn run_submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    use crate::operator::client::{Client, exit_code, status_message};
    let job = if args.job.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).context("reading the job from stdin")?;
        bytes
    } else {
        std::fs::read(&args.job).map_err(|e| invalid(format!("cannot read job file {}: {e}", args.job.display())))?
    };
    let mut client = Client::new(&args.operator.url, args.operator.token.token.as_deref()).map_err(client_error)?;
    let spec = client.submit(&args.api, job).map_err(client_error)?;
    let job_id = spec["job_id"].as_str().unwrap_or_default().to_string();
    for warning in spec["warnings"].as_array().into_iter().flatten().filter_map(|w| w.as_str()) {
        eprintln!("warning: {}: {warning}", args.job.display());
    }
    if !args.watch {
        println!("{}", serde_json::to_string_pretty(&spec)?);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("submitted job {job_id} to {}", args.api);
    let started = Instant::now();
    let mut view = ProgressView::new(ProgressMode::Auto, Duration::from_secs(5));
    loop {
        let answer = client.job(&args.api, &job_id).map_err(client_error)?;
        let s = &answer["job_status"];
        let m = &answer["metrics"];
        let (succeeded, failed) = (m["succeeded"].as_u64().unwrap_or(0), m["failed"].as_u64().unwrap_or(0));
        let progress = job::status::Progress {
            done: succeeded + s["dead_lettered_batch_count"].as_u64().unwrap_or(failed),
            items: m["items"]["succeeded"].as_u64().zip(m["items"]["dead_lettered"].as_u64()).map(|(a, b)| a + b),
            failed,
            total: s["total_batch_count"].as_u64(),
        };
        let status = s["status"].as_str().unwrap_or("unknown").to_string();
        if job::status::JobState::parse(&status).is_some_and(|state| state.is_terminal()) {
            view.finish(progress);
            let average =
                m["average_time_per_batch"].as_f64().map(|a| format!("{:.1} ms", a * 1e3)).unwrap_or("-".into());
            println!(
                "job {job_id} {}: {succeeded} succeeded, {failed} failed; average time per batch {average}; {:.1}s",
                status_message(&status),
                started.elapsed().as_secs_f64()
            );
            if let (Some(ok), Some(dead)) = (m["items"]["succeeded"].as_u64(), m["items"]["dead_lettered"].as_u64()) {
                println!("  items: {ok} succeeded, {dead} dead-lettered, of {}", ok + dead);
            }
            return Ok(ExitCode::from(exit_code(&status)));
        }
        view.update(progress);
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub(super) fn run_get(args: GetArgs) -> anyhow::Result<ExitCode> {
    use crate::operator::client::{Client, describe_job, describe_jobs};
    let mut client = Client::new(&args.operator.url, args.operator.token.token.as_deref()).map_err(client_error)?;
    let answer = match &args.job_id {
        Some(job_id) => client.job(&args.api, job_id),
        None => client.jobs(&args.api),
    }
    .map_err(client_error)?;
    match (args.output, &args.job_id) {
        (OutputFormat::Json, _) => println!("{}", serde_json::to_string_pretty(&answer)?),
        (OutputFormat::Text, Some(_)) => print!("{}", describe_job(&answer, now_epoch())),
        (OutputFormat::Text, None) => print!("{}", describe_jobs(&answer, now_epoch())),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_reload(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let mut client = crate::operator::client::Client::new(&args.operator.url, args.operator.token.token.as_deref())
        .map_err(client_error)?;
    println!("{}", client.reload().map_err(client_error)?);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    let mut client = crate::operator::client::Client::new(&args.operator.url, args.operator.token.token.as_deref())
        .map_err(client_error)?;
    println!("{}", client.stop(&args.api, &args.job_id).map_err(client_error)?);
    Ok(ExitCode::SUCCESS)
}
