//! The commands' arguments (clap), and what the guest options mean as the library's
//! configurations.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::capability::Grants;
use crate::compile;
use crate::job::status::ProgressMode;
use crate::plugin::{CallLimits, LoadOptions};
use crate::units::{parse_duration, parse_size};

use super::invalid;

/// Where the job service is.
#[derive(Debug, Args)]
pub(crate) struct OperatorUrl {
    /// The operator's URL.
    #[arg(long = "operator", env = "WASMBATCH_OPERATOR", default_value = "http://localhost:8888")]
    pub url: String,
    /// The token the operator wants (its --token-file), sent as `Authorization: Bearer`.
    #[command(flatten)]
    pub token: TokenArg,
}

/// The job service's token, for the commands that call it.
#[derive(Debug, Args)]
pub(crate) struct TokenArg {
    /// A token of the operator's --token-file, sent as `Authorization: Bearer …`.
    #[arg(long = "token", value_name = "TOKEN", env = "WASMBATCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Options of `submit`.
#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
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
pub(crate) struct GetArgs {
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
pub(crate) struct StopArgs {
    /// The API.
    pub api: String,
    /// The job.
    pub job_id: String,
    /// The operator.
    #[command(flatten)]
    pub operator: OperatorUrl,
}

/// Options of `reload`.
#[derive(Debug, Args)]
pub(crate) struct ReloadArgs {
    /// The operator.
    #[command(flatten)]
    pub operator: OperatorUrl,
}

/// Options of `operator`.
#[derive(Debug, Args)]
pub(crate) struct OperatorArgs {
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
pub(crate) struct WorkerArgs {
    /// The broker (amqp://user:password@host:5672/vhost).
    #[arg(long, value_name = "URL", env = "WASMBATCH_BROKER")]
    pub broker: String,
    /// The API whose batches this worker takes (its queue: `wasmbatch.batches.<api>`).
    #[arg(long, value_name = "NAME")]
    pub api: String,
    /// Handle batches with this plugin, in this process (.wasm, .wat, .cwasm or .py).
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
    /// How long to wait for --endpoint to be ready [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ready_timeout: Option<Duration>,
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
pub(crate) struct RunArgs {
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
    /// Run in-process with this plugin (.wasm module or component, .wat, .cwasm, or a
    /// Python handler .py).
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
    /// How long to wait for each endpoint to be ready [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ready_timeout: Option<Duration>,
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
pub(crate) enum OutputFormat {
    /// A human summary.
    Text,
    /// The job status as JSON.
    Json,
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The plugin: a .wasm module or component, a .wat text module, an artifact written
    /// by `wasmbatch compile`, or a Python handler (.py, built with componentize-py).
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
    /// Reload the plugin when its file changes (a Python handler: any .py file of its
    /// directory), as SIGHUP does: batches in flight finish on the old plugin, new ones
    /// start on the new one; a plugin that does not start is refused and the old stays.
    #[arg(long)]
    pub watch: bool,
    /// Guest sandbox and limits.
    #[command(flatten)]
    pub guest: GuestArgs,
}

/// Options shared by every command that runs guests.
#[derive(Debug, Args)]
pub(crate) struct GuestArgs {
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
    /// --endpoint, the limit of one request, waiting for a busy server included
    /// [default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub batch_timeout: Option<Duration>,
    /// Wall-clock limit of starting an instance (_initialize and init) [default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub init_timeout: Option<Duration>,
    /// Replace each instance after this many batches (1: a fresh instance per batch).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub recycle_after: Option<u64>,
    /// Bytes of guest stdout and of stderr logged per call; the rest is counted
    /// [default: 16KiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub output_limit: Option<u64>,
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
    /// Limit of one outbound HTTP call (the batch's deadline may cut it shorter)
    /// [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub http_timeout: Option<Duration>,
    /// Largest HTTP answer body, and largest object read whole, a guest gets
    /// [default: 16MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_response: Option<u64>,
}

/// Options of `compile`.
#[derive(Debug, Args)]
pub(crate) struct CompileArgs {
    /// The module to compile (.wasm or .wat).
    pub input: PathBuf,
    /// Where to write the artifact [default: the input with the extension .cwasm].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Options of `build`.
#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// The handler: a Python file defining `class Handler`, or a core module built
    /// against the world `wasmbatch:handler` (by C's or another language's toolchain
    /// with wit-bindgen's bindings), which is made a component.
    pub input: PathBuf,
    /// Where to write the component [default: the input with the extension .wasm].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

impl GuestArgs {
    pub(super) fn mount(&self) -> Option<PathBuf> {
        if self.no_mount {
            return None;
        }
        self.mount.clone().or_else(|| Path::new("/mnt").is_dir().then(|| PathBuf::from("/mnt")))
    }

    /// What guests see at `/mnt`, and why, in words.
    pub(super) fn mount_description(&self) -> String {
        match (self.mount(), self.mount.is_some()) {
            (Some(dir), true) => format!("{} (--mount)", dir.display()),
            (Some(dir), false) => {
                format!("{} (this machine's /mnt, taken by default; --no-mount to refuse it)", dir.display())
            }
            (None, _) => "nothing mounted".to_string(),
        }
    }

    pub(super) fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache { None } else { self.cache_dir.clone().or_else(compile::default_cache_dir) }
    }

    pub(super) fn limits(&self) -> anyhow::Result<CallLimits> {
        let grants = Grants::parse(
            &self.allow_http,
            &self.allow_read,
            &self.allow_write,
            self.http_timeout.unwrap_or(Grants::DEFAULT_HTTP_TIMEOUT),
            self.max_response.map_or(Grants::DEFAULT_MAX_RESPONSE, |n| usize::try_from(n).unwrap_or(usize::MAX)),
        )
        .map_err(|problems| invalid(problems.join("; ")))?;
        Ok(CallLimits {
            batch_timeout: self.batch_timeout(),
            init_timeout: self.init_timeout.unwrap_or(CallLimits::DEFAULT_TIMEOUT),
            output_limit: self
                .output_limit
                .map_or(CallLimits::DEFAULT_OUTPUT_LIMIT, |n| usize::try_from(n).unwrap_or(usize::MAX)),
            grants: Arc::new(grants),
            ..CallLimits::default()
        })
    }

    /// The limit of one batch (of one request, for an endpoint).
    pub(super) fn batch_timeout(&self) -> Duration {
        self.batch_timeout.unwrap_or(CallLimits::DEFAULT_TIMEOUT)
    }

    /// How to load the plugin for `instances` live instances.
    pub(super) fn load_options(&self, instances: usize) -> anyhow::Result<LoadOptions> {
        Ok(LoadOptions { instances, max_memory: self.max_memory, cache_dir: self.cache_dir(), limits: self.limits()? })
    }
}
