//! The command line: `wasmbatch serve`, `run`, `compile`, `operator`, `worker`,
//! `submit`, `get` and `stop`.
//!
//! Each command turns its arguments ([`args`]) into the library's configurations and
//! calls it: [`serve`](self::serve) and `compile`, [`run`](self::run) (one job on its
//! own journal), [`service`](self::service) (the operator, workers, and the job API's
//! client commands). `main.rs` only calls [`main`].

mod args;
mod run;
mod serve;
mod service;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};

use std::path::PathBuf;

pub(crate) use self::args::*;
use self::run::run_job;
use self::serve::{run_build, run_compile, run_serve};
use self::service::{run_get, run_operator, run_reload, run_stop, run_submit, run_worker};
use crate::logging::{self, LogFormat};
use crate::metrics::Metrics;
use crate::plugin::{JobContext, JobPlugin, JobResults, Plugin, Submitter};
use crate::spec::JobSpec;

/// Runs WebAssembly batch handlers: batch jobs in-process, or behind (and against) the
/// Cortex batch container contract.
#[derive(Debug, Parser)]
#[command(name = "wasmbatch", version, about, max_term_width = 100)]
pub(crate) struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The lowest level logged, the guests' lines included [default: `RUST_LOG` when
    /// set (a full filter such as `info,guest=debug`), else info].
    #[arg(long, global = true, value_enum)]
    pub log_level: Option<logging::LogLevel>,
    /// PEM certificates to trust beside the system's roots (`SSL_CERT_FILE`,
    /// `SSL_CERT_DIR`), for every TLS connection: an operator over https://, object
    /// storage, guests' outbound HTTP, amqps:// brokers.
    #[arg(long, global = true, value_name = "FILE", env = "WASMBATCH_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve a plugin as the pod's web server: POST / with a batch, POST
    /// /on-job-complete, GET /healthz.
    Serve(Box<ServeArgs>),
    /// Run a batch job (a Cortex job file): in-process with --plugin, or against servers
    /// of the contract with --endpoint.
    Run(Box<RunArgs>),
    /// Validate a plugin and write its precompiled artifact, which `serve --plugin`
    /// loads without compiling.
    Compile(CompileArgs),
    /// Make a component of a Python handler (Cortex's `class Handler`) with
    /// componentize-py; `--plugin handler.py` does the same through the cache.
    Build(BuildArgs),
    /// Run the job service: Cortex's job API (`/batch/<api>`) for the APIs of a config
    /// file, with durable state in a data directory.
    Operator(OperatorArgs),
    /// Submit a job to the job service (and with --watch, follow it to its end).
    Submit(SubmitArgs),
    /// Show a job of the job service, or an API's jobs, as `cortex get` does.
    Get(GetArgs),
    /// Stop a job of the job service.
    Stop(StopArgs),
    /// Make the job service re-read its configuration file (as SIGHUP does): new APIs
    /// appear, removed ones take no new jobs, changed ones apply to jobs submitted
    /// from now; a file with errors is refused whole.
    Reload(ReloadArgs),
    /// Take an API's batches from the broker (RabbitMQ) and handle them: with a plugin
    /// in this process, or by a server of the contract beside it.
    Worker(Box<WorkerArgs>),
}

/// Parses the command line, runs the command, and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    logging::init(log_format, cli.log_level);
    if let Err(e) = crate::tls::init(cli.ca_file.as_deref()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Serve(args) => run_serve(*args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run_job(*args),
        Command::Compile(args) => run_compile(args).map(|()| ExitCode::SUCCESS),
        Command::Build(args) => run_build(args).map(|()| ExitCode::SUCCESS),
        Command::Operator(args) => run_operator(args).map(|()| ExitCode::SUCCESS),
        Command::Submit(args) => run_submit(args),
        Command::Get(args) => run_get(args),
        Command::Stop(args) => run_stop(args),
        Command::Reload(args) => run_reload(args),
        Command::Worker(args) => run_worker(*args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // Said once: as a log line where logs are JSON for machines, and always as
            // the `error:` line for people (text logs would say it a second time).
            if matches!(log_format, LogFormat::Json) {
                tracing::error!("{e:#}");
            }
            eprintln!("error: {e:#}");
            // Bad input (a job file, a plugin, an option) is exit 2, as documented.
            let invalid = e.downcast_ref::<InvalidInput>().is_some();
            ExitCode::from(if invalid { 2 } else { 1 })
        }
    }
}

/// Compiles (or loads) a plugin and checks it against the ABI, for `instances` live
/// instances at once.
fn load_plugin(guest: &GuestArgs, path: &Path, instances: usize, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Plugin>> {
    let started = Instant::now();
    let plugin = Plugin::load(path, &guest.load_options(instances)?, metrics)?;
    tracing::info!(
        plugin = %path.display(),
        module = plugin.origin().as_str(),
        load_ms = started.elapsed().as_secs_f64() * 1e3,
        max_memory_mib = plugin.max_memory() >> 20,
        on_job_complete = plugin.capabilities().on_job_complete,
        "plugin loaded"
    );
    Ok(Arc::new(plugin))
}

/// Serves `metrics` at `http://addr/metrics` on `runtime` for as long as it runs.
fn serve_metrics_at(runtime: &tokio::runtime::Runtime, addr: &str, metrics: &Arc<Metrics>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving metrics");
    runtime.spawn(crate::http::serve_metrics(listener, metrics.clone(), std::future::pending()));
    Ok(())
}

/// `plugin` bound to the job of `spec`, with the guests' mount, `submitter`, and where
/// on-job-complete reads the job's results.
fn bind(
    plugin: &Arc<Plugin>,
    guest: &GuestArgs,
    spec: &JobSpec,
    submitter: Option<Arc<dyn Submitter>>,
    results: Arc<dyn JobResults>,
) -> anyhow::Result<Arc<JobPlugin>> {
    let mount = guest.mount();
    match (&mount, guest.mount.is_some()) {
        (Some(dir), true) => tracing::info!(mount = %dir.display(), "guests' /mnt is --mount"),
        // Said out loud: guests write into this machine's own /mnt.
        (Some(dir), false) => tracing::warn!(
            mount = %dir.display(),
            "guests' /mnt is this machine's /mnt (it exists and neither --mount nor --no-mount was given)"
        ),
        (None, _) => tracing::info!(mount = "none", "nothing is mounted at the guests' /mnt"),
    }
    Ok(Arc::new(plugin.bind(JobContext { spec: spec.bytes(), mount, submitter, results: Some(results) })?))
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// An error caused by the user's input, reported with exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InvalidInput(String);

/// Marks `e` as the user's mistake, keeping its whole chain of causes in the message
/// (`{:#}` is how an `anyhow::Error` shows them).
fn invalid(e: impl std::fmt::Display) -> anyhow::Error {
    InvalidInput(format!("{e:#}")).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::client::READY_TIMEOUT;
    use crate::plugin::CallLimits;

    /// `run`, `worker` and the operator load a plugin with the same defaults: memory
    /// (fitted the same way), limits, grants' limits, and the readiness wait.
    #[test]
    fn the_commands_and_the_operator_agree_on_every_default() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
        let config = crate::operator::config::OperatorConfig::parse(
            "max_running_jobs = 1\n[[api]]\nname = \"a\"\nplugin = \"p.wasm\"\nmax_workers = 3\n",
            dir.path(),
            false,
        )
        .unwrap();
        let api = &config.apis[0];
        let operator = api.load_options(config.max_running_jobs, None);

        let Command::Run(run) =
            Cli::parse_from(["wasmbatch", "run", "job.json", "--plugin", "p.wasm", "--no-cache"]).command
        else {
            unreachable!()
        };
        let worker = Cli::parse_from([
            "wasmbatch",
            "worker",
            "--broker",
            "amqp://b",
            "--api",
            "a",
            "--plugin",
            "p.wasm",
            "--no-cache",
        ]);
        let Command::Worker(worker) = worker.command else { unreachable!() };
        for (name, guest, ready) in
            [("run", &run.guest, run.ready_timeout), ("worker", &worker.guest, worker.ready_timeout)]
        {
            let options = guest.load_options(operator.instances).unwrap();
            assert_eq!(options, operator, "{name} and the operator load plugins alike");
            assert_eq!(ready.unwrap_or(READY_TIMEOUT), api.ready_timeout, "{name} waits for endpoints as long");
            assert_eq!(guest.recycle_after, api.recycle_after);
        }
        assert_eq!(operator.max_memory, None, "memory is fitted to the container unless given");
        assert_eq!(operator.limits, CallLimits::default());
        assert_eq!(api.batch_timeout, CallLimits::default().batch_timeout);
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
