//! The command line: `wasmbatch serve`, `wasmbatch run` and `wasmbatch compile`.
//!
//! Argument structs (clap) and the code that wires the library together for each
//! command. `main.rs` only calls [`main`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::capability::Grants;
use crate::compile;
use crate::engine::{Engine, EngineConfig};
use crate::http::client::{Endpoint, wait_ready};
use crate::http::{ServerConfig, serve, serve_metrics};
use crate::job::{
    self,
    dead_letter::DeadLetters,
    executor::{EndpointExecutor, InProcess},
    runner::{JobPlan, StopFlag},
    source::{self, PathRewrite},
    status::{ProgressMode, ProgressView, new_job_id},
    submission::Submission,
};
use crate::logging::{self, LogFormat};
use crate::metrics::Metrics;
use crate::plugin::{CallLimits, Plugin};
use crate::pool::{PoolConfig, WorkerPool};
use crate::sandbox::Sandbox;
use crate::spec::JobSpec;

/// Runs WebAssembly batch handlers: batch jobs in-process, or behind (and against) the
/// Cortex batch container contract.
#[derive(Debug, Parser)]
#[command(name = "wasmbatch", version, about, max_term_width = 100)]
pub struct Cli {
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
pub enum Command {
    /// Serve a plugin as the pod's web server: POST / with a batch, POST
    /// /on-job-complete, GET /healthz.
    Serve(Box<ServeArgs>),
    /// Run a batch job (a Cortex job file): in-process with --plugin, or against servers
    /// of the contract with --endpoint.
    Run(Box<RunArgs>),
    /// Validate a plugin and write its precompiled artifact, which `serve --plugin`
    /// loads without compiling.
    Compile(CompileArgs),
    /// Run the job service: Cortex's job API (`/batch/<api>`) for the APIs of a config
    /// file, with durable state in a data directory.
    Operator(OperatorArgs),
    /// Submit a job to the job service (and with --watch, follow it to its end).
    Submit(SubmitArgs),
    /// Show a job of the job service, or an API's jobs, as `cortex get` does.
    Get(GetArgs),
    /// Stop a job of the job service.
    Stop(StopArgs),
    /// Take an API's batches from the broker (RabbitMQ) and handle them: with a plugin
    /// in this process, or by a server of the contract beside it.
    Worker(Box<WorkerArgs>),
}

/// Where the job service is.
#[derive(Debug, Args)]
pub struct OperatorUrl {
    /// The operator's URL.
    #[arg(long = "operator", env = "WASMBATCH_OPERATOR", default_value = "http://localhost:8888")]
    pub url: String,
    /// The token the operator wants (its --token-file), sent as `Authorization: Bearer`.
    #[command(flatten)]
    pub token: TokenArg,
}

/// The job service's token, for the commands that call it.
#[derive(Debug, Args)]
pub struct TokenArg {
    /// A token of the operator's --token-file, sent as `Authorization: Bearer …`.
    #[arg(long = "token", value_name = "TOKEN", env = "WASMBATCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Options of `submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The API.
    pub api: String,
    /// The job file (a Cortex job submission), or - for standard input.
    pub job: PathBuf,
    /// Follow the job until it ends (a progress line with counts and rate), and exit
    /// as `run` does: 0 succeeded, 1 otherwise.
    #[arg(long)]
    pub watch: bool,
    /// The operator.
    #[command(flatten)]
    pub operator: OperatorUrl,
}

/// Options of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The API.
    pub api: String,
    /// A job; without it, the API's jobs.
    pub job_id: Option<String>,
    /// `text` (the layout of `cortex get`) or `json` (the raw answer).
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// The operator.
    #[command(flatten)]
    pub operator: OperatorUrl,
}

/// Options of `stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// The API.
    pub api: String,
    /// The job.
    pub job_id: String,
    /// The operator.
    #[command(flatten)]
    pub operator: OperatorUrl,
}

/// Options of `operator`.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// The configuration file (TOML): limits and the APIs hosted (docs/operator.md).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Where the journal (SQLite) is kept; created when missing.
    #[arg(long, value_name = "DIR", default_value = "wasmbatch-data")]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8888)]
    pub port: u16,
    /// How long a SIGTERM may wait for batches in flight; those not done by then run
    /// again on the next start.
    #[arg(long, value_name = "DURATION", default_value = "25s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Where compiled modules are cached [default: ~/.cache/wasmbatch].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every time; read and write no cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    /// Dispatch batches through this RabbitMQ broker to `wasmbatch worker`s
    /// (amqp://user:password@host:5672/vhost); without it, the operator runs them.
    #[arg(long, value_name = "URL", env = "WASMBATCH_BROKER")]
    pub broker: Option<String>,
    /// Tokens that open the job API, one a line (`#` comments): every route but
    /// /healthz then needs `Authorization: Bearer <token>`. Without it the API is open
    /// to whoever reaches the port (a warning says so at start).
    #[arg(long, value_name = "FILE", env = "WASMBATCH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// /metrics needs a token too (by default it is open, for Prometheus).
    #[arg(long, requires = "token_file")]
    pub metrics_auth: bool,
    /// Serve https:// with this certificate chain (PEM); with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Options of `worker`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("handler").required(true).args(["plugin", "endpoint"])))]
pub struct WorkerArgs {
    /// The broker (amqp://user:password@host:5672/vhost).
    #[arg(long, value_name = "URL", env = "WASMBATCH_BROKER")]
    pub broker: String,
    /// The API whose batches this worker takes (its queue: `wasmbatch.batches.<api>`).
    #[arg(long, value_name = "NAME")]
    pub api: String,
    /// Handle batches with this plugin, in this process.
    #[arg(long, value_name = "FILE")]
    pub plugin: Option<PathBuf>,
    /// Send batches to this server of the container contract (repeatable); the worker
    /// waits for it to be ready before taking batches.
    #[arg(long, value_name = "URL")]
    pub endpoint: Vec<String>,
    /// Batches handled at once [default: number of CPUs].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: Option<u32>,
    /// Batches held at once, running or ready to run (at least --concurrency): those
    /// beyond the running ones spare each batch a round trip to the broker. Equal to
    /// --concurrency, the last batches of a job spread best over many workers
    /// [default: 4 × --concurrency].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub prefetch: Option<u32>,
    /// How long to wait for --endpoint to be ready.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// How long a SIGTERM waits for the batches held; then they are interrupted and
    /// handed back to the broker.
    #[arg(long, value_name = "DURATION", default_value = "25s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// The job service that guests submit jobs to (chaining).
    #[arg(long, value_name = "URL", env = "WASMBATCH_OPERATOR_URL", default_value = "http://localhost:8888")]
    pub operator_url: String,
    /// The token of the job service guests submit to.
    #[command(flatten)]
    pub token: TokenArg,
    /// An API guests may submit jobs to (repeatable; `*` for any).
    #[arg(long, value_name = "API")]
    pub may_submit_to: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (batches, failures, time per
    /// batch, as `serve` has them).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Guest sandbox and limits (--batch-timeout is also the endpoint's request limit).
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// Options of `run`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("executor").required(true).args(["plugin", "endpoint"])))]
pub struct RunArgs {
    /// The job file (a Cortex job submission), or - for standard input.
    #[arg(value_name = "JOB", required_unless_present = "resume", conflicts_with = "resume")]
    pub job: Option<PathBuf>,
    /// Continue the job whose state is in this directory (after a Ctrl-C, a SIGKILL or
    /// a power cut): same job ID, no batch redone that had succeeded. Give the same
    /// --plugin or --endpoint again.
    #[arg(long, value_name = "DIR", conflicts_with = "retry_from")]
    pub resume: Option<PathBuf>,
    /// Where the job's state (its journal) is kept [default: wasmbatch-<job_id>.state,
    /// removed when the job ends; an explicit one is kept].
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub state_dir: Option<PathBuf>,
    /// Run in-process with this plugin (.wasm, .wat or .cwasm).
    #[arg(long, value_name = "FILE")]
    pub plugin: Option<PathBuf>,
    /// Send batches to a server of the contract (repeatable: workers are spread over them).
    #[arg(long, value_name = "URL")]
    pub endpoint: Vec<String>,
    /// Workers, overriding the job file's `workers` (at most 1024).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: Option<u32>,
    /// Attempts per batch before it is dead-lettered [default: the job file's
    /// `max_attempts`, else 3].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_attempts: Option<u32>,
    /// Where failed and unhandled batches go [default: wasmbatch-<job_id>.dead-letter.jsonl].
    #[arg(long, value_name = "FILE")]
    pub dead_letter: Option<PathBuf>,
    /// Where the handlers' results go, JSON Lines, once per batch [default:
    /// wasmbatch-<job_id>.results.jsonl, created on the first result].
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
    /// Re-run the batches of a dead-letter file instead of the job file's input (the
    /// job file still gives workers, config and timeout).
    #[arg(long, value_name = "FILE")]
    pub retry_from: Option<PathBuf>,
    /// Write the final job status (JSON) here.
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// What to print on stdout at the end: a summary, or the status as JSON.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// How to show progress on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// How often a progress line is printed when not drawing a bar.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub progress_interval: Duration,
    /// How long to wait for each endpoint to be ready.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// The API name in the job spec and status [default: the job file's name].
    #[arg(long)]
    pub api_name: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics while the job runs.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// Guest sandbox and limits (with --plugin).
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// What `run` prints on stdout at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A human summary.
    Text,
    /// The job status as JSON.
    Json,
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The plugin: a .wasm module, a .wat text module, or an artifact written by
    /// `wasmbatch compile`.
    #[arg(long, value_name = "FILE")]
    pub plugin: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "CORTEX_PORT", default_value_t = 8080)]
    pub port: u16,
    /// The job spec, passed to init and shown to guests at /cortex/spec/job.json.
    #[arg(long, value_name = "FILE", default_value = "/cortex/spec/job.json")]
    pub job_spec: PathBuf,
    /// Batches handled at once, one warm instance each [default: number of CPUs].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: Option<u32>,
    /// Batches that may wait for a free instance, beyond those running.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub queue_depth: u32,
    /// Bytes of request bodies admitted at once (read, waiting or running); bounds the
    /// memory bodies take, whatever the number of connections. At least --max-body.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub queue_bytes: u64,
    /// How long a request waits for room in the queue before it gets 503 busy (0:
    /// answer busy at once).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub queue_timeout: Duration,
    /// Largest request body accepted (e.g. 16MiB, at most 1GiB); larger ones get 413.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub max_body: u64,
    /// How long a client may take to send its request headers.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// How long a client may take to send a request body; past it, 408.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// How long draining may take after SIGTERM/SIGINT: batches still running then are
    /// abandoned (their clients see a closed connection).
    #[arg(long, value_name = "DURATION", default_value = "25s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// The job service that guests submit jobs to (chaining).
    #[arg(
        long,
        value_name = "URL",
        env = "WASMBATCH_OPERATOR_URL",
        default_value = "http://ingressgateway-operator.istio-system.svc.cluster.local"
    )]
    pub operator_url: String,
    /// The token of the job service guests submit to.
    #[command(flatten)]
    pub token: TokenArg,
    /// An API guests may submit jobs to (repeatable; `*` for any). Without it, the
    /// guests' submissions are refused.
    #[arg(long, value_name = "API")]
    pub may_submit_to: Vec<String>,
    /// Guest sandbox and limits.
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// Options shared by every command that runs guests.
#[derive(Debug, Args)]
pub struct GuestArgs {
    /// Host directory guests see read-write at /mnt [default: /mnt, when it exists].
    #[arg(long, value_name = "DIR", conflicts_with = "no_mount")]
    pub mount: Option<PathBuf>,
    /// Mount nothing at /mnt, even when /mnt exists.
    #[arg(long)]
    pub no_mount: bool,
    /// Linear memory one instance may use (e.g. 512MiB); past it, out_of_memory
    /// [default: 512MiB, or less in a memory-limited container: its limit, less 64 MiB
    /// for the host, shared by the instances].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Wall-clock limit of one batch (and of on-job-complete); past it, timeout. With
    /// --endpoint, the limit of one request, waiting for a busy server included.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub batch_timeout: Duration,
    /// Wall-clock limit of starting an instance (_initialize and init).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub init_timeout: Duration,
    /// Replace each instance after this many batches (1: a fresh instance per batch).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub recycle_after: Option<u64>,
    /// Bytes of guest stdout and of stderr logged per call; the rest is counted.
    #[arg(long, value_name = "SIZE", default_value = "16KiB", value_parser = parse_size)]
    pub output_limit: u64,
    /// Where compiled modules are cached [default: ~/.cache/wasmbatch].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every time; read and write no cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
    /// Let guests send HTTP requests to this host: `[scheme://]host[:port][/path]`
    /// (no scheme: https; `:*` any port; `*.example.com` its subdomains). Repeatable.
    #[arg(long, value_name = "HOST")]
    pub allow_http: Vec<String>,
    /// Let guests read objects under this URL prefix (`s3://bucket/in/`, `gs://…`,
    /// `az://…`, `file:///dir/`). Repeatable.
    #[arg(long, value_name = "URL")]
    pub allow_read: Vec<String>,
    /// Let guests write objects under this URL prefix. Repeatable.
    #[arg(long, value_name = "URL")]
    pub allow_write: Vec<String>,
    /// Limit of one outbound HTTP call (the batch's deadline may cut it shorter).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub http_timeout: Duration,
    /// Largest HTTP answer body, and largest object read whole, a guest gets.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub max_response: u64,
}

/// Options of `compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The module to compile (.wasm or .wat).
    pub input: PathBuf,
    /// Where to write the artifact [default: the input with the extension .cwasm].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Parses a byte size: `1048576`, `512KiB`, `16MiB`, `1GiB` (also `K`, `M`, `G`, `KB`, …
/// as powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size such as 16MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?} (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("{text} is too large"))
}

/// Parses a duration: `250ms`, `30s`, `5m`, `1h`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as 30s"))?;
    let seconds = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} (use ms, s, m or h)")),
    };
    if seconds > MAX_DURATION_SECS {
        return Err(format!("{text} is too long (at most a year)"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text}: {e}"))
}

/// The longest duration any option takes: a year.
const MAX_DURATION_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Parses the command line, runs the command, and turns its outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, cli.log_level);
    if let Err(e) = crate::tls::init(cli.ca_file.as_deref()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Serve(args) => run_serve(*args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => run_job(*args),
        Command::Compile(args) => run_compile(args).map(|()| ExitCode::SUCCESS),
        Command::Operator(args) => run_operator(args).map(|()| ExitCode::SUCCESS),
        Command::Submit(args) => run_submit(args),
        Command::Get(args) => run_get(args),
        Command::Stop(args) => run_stop(args),
        Command::Worker(args) => run_worker(*args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            // Bad input (a job file, a plugin, an option) is exit 2, as documented.
            let invalid = e.downcast_ref::<InvalidInput>().is_some();
            ExitCode::from(if invalid { 2 } else { 1 })
        }
    }
}

impl GuestArgs {
    fn mount(&self) -> Option<PathBuf> {
        if self.no_mount {
            return None;
        }
        self.mount.clone().or_else(|| Path::new("/mnt").is_dir().then(|| PathBuf::from("/mnt")))
    }

    /// Linear memory per instance: as given, else 512 MiB, or what fits `instances`
    /// instances in the container's memory limit (cgroup v2 or v1) with 64 MiB left for
    /// the host, so that a guest hits its own limit (`out_of_memory`) before the
    /// container is killed.
    fn max_memory(&self, instances: usize) -> u64 {
        const DEFAULT: u64 = 512 << 20;
        if let Some(explicit) = self.max_memory {
            return explicit;
        }
        let Some(limit) = crate::engine::container_memory_limit() else { return DEFAULT };
        let share = limit.saturating_sub(64 << 20) / instances.max(1) as u64;
        let chosen = share.clamp(16 << 20, DEFAULT);
        if chosen < DEFAULT {
            tracing::info!(
                container_limit_mib = limit >> 20,
                instances,
                max_memory_mib = chosen >> 20,
                "memory per instance fitted to the container's limit"
            );
        }
        chosen
    }

    fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache { None } else { self.cache_dir.clone().or_else(compile::default_cache_dir) }
    }

    fn limits(&self) -> anyhow::Result<CallLimits> {
        let grants = Grants::parse(
            &self.allow_http,
            &self.allow_read,
            &self.allow_write,
            self.http_timeout,
            usize::try_from(self.max_response).unwrap_or(usize::MAX),
        )
        .map_err(|problems| invalid(problems.join("; ")))?;
        Ok(CallLimits {
            batch_timeout: self.batch_timeout,
            init_timeout: self.init_timeout,
            output_limit: usize::try_from(self.output_limit).unwrap_or(usize::MAX),
            grants: Arc::new(grants),
            ..CallLimits::default()
        })
    }
}

/// Compiles (or loads) a plugin and checks it against the ABI, for `instances` live
/// instances at once.
fn load_plugin(
    guest: &GuestArgs,
    path: &Path,
    spec: &JobSpec,
    instances: usize,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Arc<Plugin>> {
    let engine = Arc::new(Engine::new(EngineConfig {
        max_memory: guest.max_memory(instances),
        // The workers' instances, plus the version probe and one being replaced.
        max_instances: u32::try_from(instances + 2).context("too many instances")?,
    })?);
    let started = Instant::now();
    let (module, origin) = compile::load(&engine, path, guest.cache_dir().as_deref())?;
    metrics.module_loaded(origin.as_str());
    let mount = guest.mount();
    let sandbox = Arc::new(Sandbox::new(&spec.bytes(), mount.as_deref())?);
    let plugin = Plugin::new(engine, &module, sandbox, spec.bytes(), guest.limits()?, metrics)
        .map_err(|e| anyhow::anyhow!(e.about(path)))?;
    tracing::info!(
        plugin = %path.display(),
        module = origin.as_str(),
        load_ms = started.elapsed().as_secs_f64() * 1e3,
        mount = mount.as_ref().map(|m| m.display().to_string()).unwrap_or_else(|| "none".into()),
        on_job_complete = plugin.capabilities().on_job_complete,
        "plugin loaded"
    );
    Ok(Arc::new(plugin))
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let spec = match JobSpec::load(&args.job_spec)? {
        Some(spec) => spec,
        None => {
            tracing::warn!(path = %args.job_spec.display(), "no job spec found; starting with an empty spec");
            JobSpec::empty()
        }
    };
    let concurrency = args
        .concurrency
        .map(|c| c as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
        .max(1);
    if args.max_body > 1 << 30 {
        return Err(invalid(format!("--max-body {} is over the largest accepted, 1GiB", args.max_body)));
    }
    if args.queue_bytes < args.max_body {
        return Err(invalid(format!(
            "--queue-bytes ({}) must be at least --max-body ({}): a body of the largest size must fit",
            args.queue_bytes, args.max_body
        )));
    }
    let metrics = Metrics::new(spec.api_name().unwrap_or("wasmbatch"));
    let submitter = crate::operator::client::RemoteSubmitter::new(
        &args.operator_url,
        args.token.token.as_deref(),
        spec.api_name().unwrap_or("wasmbatch"),
        args.may_submit_to.clone(),
    )
    .map_err(|e| invalid(format!("--operator-url: {e}")))?;
    let plugin = load_plugin(&args.guest, &args.plugin, &spec, concurrency, metrics)?;
    let plugin = Arc::new(Arc::into_inner(plugin).expect("not shared yet").with_submitter(Arc::new(submitter)));

    // Readiness: the port is bound only once an instance has started and its init
    // succeeded, so a TCP probe on the port tells the truth.
    let started = Instant::now();
    let first = plugin.instance(Arc::new(AtomicBool::new(false))).map_err(|f| {
        let stderr =
            if f.stderr_tail.is_empty() { String::new() } else { format!("\nguest stderr:\n{}", f.stderr_tail) };
        anyhow::anyhow!("the plugin failed to start: {f}{stderr}")
    })?;
    tracing::info!(init_ms = started.elapsed().as_secs_f64() * 1e3, "first instance ready");

    let pool_config = PoolConfig {
        concurrency,
        queue_depth: args.queue_depth as usize,
        queue_bytes: usize::try_from(args.queue_bytes).unwrap_or(usize::MAX),
        queue_timeout: args.queue_timeout,
        recycle_after: args.guest.recycle_after,
    };
    let pool = WorkerPool::new(plugin, &pool_config, Some(first))?;
    let server_config = ServerConfig {
        max_body: args.max_body as usize,
        default_job_id: spec.job_id().map(str::to_owned),
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        drain_timeout: args.drain_timeout,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wasmbatch-io")
        .build()
        .context("cannot start the I/O runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let addr: SocketAddr = listener.local_addr()?;
        tracing::info!(
            %addr,
            concurrency,
            queue_depth = pool_config.queue_depth,
            queue_bytes = pool_config.queue_bytes,
            "listening"
        );
        serve(listener, pool, server_config, shutdown_signal()).await?;
        Ok(())
    })
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

fn run_job(args: RunArgs) -> anyhow::Result<ExitCode> {
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
        signal_stop.set(job::runner::StopReason::Shutdown);
        shutdown_signal().await;
        std::process::exit(130);
    });

    let metrics = Metrics::new(&api_name);
    if let Some(addr) = &args.metrics_addr {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr.as_str()))
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving metrics");
        runtime.spawn(serve_metrics(listener, metrics.clone(), std::future::pending()));
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
        let plugin = load_plugin(&args.guest, plugin_path, &spec, workers, metrics.clone()).map_err(invalid)?;
        let executor = InProcess::new(plugin, args.guest.recycle_after);
        job::runner::run(plan, source, Arc::new(executor), stop, &mut progress, metrics)
    } else {
        for endpoint in &endpoints {
            let ready = runtime.block_on(async {
                tokio::select! {
                    ready = wait_ready(endpoint, args.ready_timeout) => Some(ready),
                    () = stop.stopped() => None,
                }
            });
            match ready {
                Some(Ok(())) => {}
                Some(Err(e)) => anyhow::bail!(e),
                None => anyhow::bail!("stopped while waiting for {endpoint} to be ready"),
            }
        }
        let executor = EndpointExecutor::new(endpoints, runtime.handle().clone(), args.guest.batch_timeout);
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
        JobState::Succeeded | JobState::CompletedWithFailures if counts.failed + counts.unhandled > 0 => {
            JobState::CompletedWithFailures
        }
        other => other,
    };
    let recorded = if status.pending_batch_count > 0 || status.status == JobState::Stopped {
        JobState::Running
    } else {
        status.status
    };
    if recorded.is_terminal() {
        journal.set_hook(&status.job_id, crate::journal::Hook::Done(status.on_job_complete))?;
        journal.set_status(&status.job_id, recorded, Some(&status.end_time), status.error.as_deref())?;
    }
    Ok(())
}

fn run_operator(args: OperatorArgs) -> anyhow::Result<()> {
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
    let service = crate::operator::Service::start(config, &args.data_dir, cache_dir, broker, runtime.handle().clone())
        .map_err(|e| {
            if e.downcast_ref::<crate::journal::JournalError>().is_some() { invalid(format!("{e:#}")) } else { e }
        })?;
    runtime.block_on(async {
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

fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
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
            // Each thread's warm instance, one being replaced, the probe, on-job-complete.
            let engine = Arc::new(Engine::new(EngineConfig {
                max_memory: args.guest.max_memory(concurrency),
                max_instances: u32::try_from(concurrency * 2 + 4).context("too many instances")?,
            })?);
            let (module, origin) = compile::load(&engine, path, args.guest.cache_dir().as_deref())?;
            metrics.module_loaded(origin.as_str());
            // The whole load-time check now, with an empty spec.
            let sandbox = Arc::new(Sandbox::new(b"{}", None)?);
            Plugin::new(engine.clone(), &module, sandbox, Arc::from(&b"{}"[..]), args.guest.limits()?, metrics.clone())
                .map_err(|e| anyhow::anyhow!(e.about(path)))?;
            let submitter = crate::operator::client::RemoteSubmitter::new(
                &args.operator_url,
                args.token.token.as_deref(),
                &args.api,
                args.may_submit_to.clone(),
            )
            .map_err(|e| invalid(format!("--operator-url: {e}")))?;
            tracing::info!(plugin = %path.display(), module = origin.as_str(), "plugin loaded");
            Handler::Plugin {
                engine,
                module,
                mount: args.guest.mount(),
                limits: args.guest.limits()?,
                recycle_after: args.guest.recycle_after,
                submitter: Some(Arc::new(submitter)),
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
            for endpoint in &endpoints {
                tracing::info!(endpoint = %endpoint, timeout_s = args.ready_timeout.as_secs(), "waiting for the endpoint to be ready");
                let ready = runtime.block_on(async {
                    tokio::select! {
                        ready = wait_ready(endpoint, args.ready_timeout) => Some(ready),
                        () = shutdown_signal() => None,
                    }
                });
                match ready {
                    Some(Ok(())) => tracing::info!(endpoint = %endpoint, "endpoint ready"),
                    Some(Err(e)) => anyhow::bail!(e),
                    None => return Ok(()),
                }
            }
            Handler::Endpoints { endpoints, batch_timeout: args.guest.batch_timeout }
        }
    };
    if let Some(addr) = &args.metrics_addr {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr.as_str()))
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving metrics");
        runtime.spawn(serve_metrics(listener, metrics.clone(), std::future::pending()));
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

fn run_submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
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
            items: None,
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
            return Ok(ExitCode::from(exit_code(&status)));
        }
        view.update(progress);
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn run_get(args: GetArgs) -> anyhow::Result<ExitCode> {
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

fn run_stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    let mut client = crate::operator::client::Client::new(&args.operator.url, args.operator.token.token.as_deref())
        .map_err(client_error)?;
    println!("{}", client.stop(&args.api, &args.job_id).map_err(client_error)?);
    Ok(ExitCode::SUCCESS)
}

fn run_compile(args: CompileArgs) -> anyhow::Result<()> {
    let output = args.output.clone().unwrap_or_else(|| args.input.with_extension("cwasm"));
    let engine = Arc::new(Engine::new(EngineConfig { max_instances: 2, ..EngineConfig::default() })?);
    let started = Instant::now();
    let module = compile::compile_file(&engine, &args.input)?;
    let compiled_ms = started.elapsed().as_secs_f64() * 1e3;
    // The whole load-time check, version probe included, before anything is written.
    let spec = JobSpec::empty();
    let sandbox = Arc::new(Sandbox::new(&spec.bytes(), None)?);
    let plugin = Plugin::new(engine, &module, sandbox, spec.bytes(), CallLimits::default(), Metrics::new("wasmbatch"))
        .with_context(|| format!("plugin {} is not a wasmbatch guest", args.input.display()))?;
    compile::write_artifact(&module, &output)?;
    let caps = plugin.capabilities();
    eprintln!(
        "compiled {} to {} in {compiled_ms:.0} ms (init: {}, on_job_complete: {})",
        args.input.display(),
        output.display(),
        if caps.init { "yes" } else { "no" },
        if caps.on_job_complete { "yes" } else { "no" },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert!(parse_size("12 parsecs").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("999999999999s").unwrap_err().contains("too long"));
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
