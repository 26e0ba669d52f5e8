//! The operator's configuration file (TOML): the service's limits and the APIs it
//! hosts. Every problem is reported, one line each, naming the API and the field.
//!
//! ```toml
//! max_workers = 8          # batches handled at once over all jobs [default: CPUs]
//! max_running_jobs = 8     # jobs running at once; the others wait, pending
//! max_queued_jobs = 1000   # jobs accepted and not ended; beyond, 503 + Retry-After
//! idempotency_retention = "24h"  # how long an Idempotency-Key names its job [24h]
//! min_free_space = "256MiB" # below this free in the data directory, new jobs are
//!                          # refused (507), so that running jobs keep room [0: off]
//!
//! [[api]]
//! name = "sum"
//! plugin = "plugins/sum.wasm"   # relative to this file; or endpoints = ["http://…"];
//!                               # or neither, with --broker: `wasmbatch worker`s handle it
//! max_workers = 4               # a job's `workers` is capped at this
//! default_workers = 1           # when a submission has no `workers` (Cortex requires it)
//! mount = "out"                 # the guests' /mnt
//! max_memory = "512MiB"         # [default: 512MiB, or fitted to a container's limit,
//!                               # as every command does it]
//! batch_timeout = "5m"
//! init_timeout = "5m"
//! recycle_after = 1000
//! output_limit = "16KiB"
//! max_attempts = 3
//! ready_timeout = "60s"         # how long a job waits for each endpoint to be ready
//! may_submit_to = ["other"]     # APIs its handlers may submit jobs to (chaining)
//! allow_http = ["api.example.com"]   # hosts guests may call (see `capability`)
//! allow_read = ["s3://bucket/in/"]   # object prefixes guests may read
//! allow_write = ["s3://bucket/out/"] # … and write
//! allow_inputs = ["file:///data/in/", "s3://bucket/jobs/"]  # where submitted jobs'
//!                               # inputs may be; without it, only item_list jobs
//! http_timeout = "30s"
//! max_response = "16MiB"
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::units::{parse_duration, parse_size};

/// The whole file.
#[derive(Debug, Clone)]
pub(crate) struct OperatorConfig {
    /// Batches handled at once over all jobs (the worker budget).
    pub max_workers: usize,
    /// Jobs running at once.
    pub max_running_jobs: usize,
    /// Jobs accepted and not ended.
    pub max_queued_jobs: u64,
    /// Below this many free bytes in the data directory, new jobs are refused.
    pub min_free_space: u64,
    /// How long an `Idempotency-Key` names its job.
    pub idempotency_retention: Duration,
    /// The APIs, by name.
    pub apis: Vec<ApiConfig>,
}

/// Who handles an API's batches.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Handler {
    /// A plugin run in the operator's process.
    Plugin(PathBuf),
    /// Servers of the container contract.
    Endpoints(Vec<String>),
    /// Neither: `wasmbatch worker`s take the batches, through the broker.
    Workers,
}

/// One API.
#[derive(Debug, Clone)]
pub(crate) struct ApiConfig {
    /// Its name, the `<api>` of `/batch/<api>`.
    pub name: String,
    /// Its handler.
    pub handler: Handler,
    /// A job's workers are capped at this.
    pub max_workers: usize,
    /// Workers when a submission gives none (`None`: required, as in Cortex).
    pub default_workers: Option<usize>,
    /// The guests' `/mnt`.
    pub mount: Option<PathBuf>,
    /// Linear memory per instance (`None`: fitted, as every command does it:
    /// [`crate::engine::fitted_memory`]).
    pub max_memory: Option<u64>,
    /// Limit of one batch (and of on-job-complete); for endpoints, of one request.
    pub batch_timeout: Duration,
    /// Limit of starting an instance.
    pub init_timeout: Duration,
    /// Replace an instance after this many batches.
    pub recycle_after: Option<u64>,
    /// Guest output kept per call.
    pub output_limit: usize,
    /// Attempts per batch unless the submission says otherwise.
    pub max_attempts: u32,
    /// How long a job waits for each of `endpoints` to be ready.
    pub ready_timeout: Duration,
    /// The APIs this API's handlers may submit jobs to (chaining).
    pub may_submit_to: Vec<String>,
    /// What its guests may reach: outbound HTTP, objects.
    pub grants: std::sync::Arc<crate::capability::Grants>,
    /// Where a submitted job's inputs may be (`file:///data/in/`, `s3://bucket/in/`):
    /// nothing else is listed or read.
    pub allow_inputs: crate::confine::Prefixes,
}

impl ApiConfig {
    /// How to load this API's plugin, for `max_running_jobs` jobs at once: each job's
    /// workers and its on-job-complete.
    pub(crate) fn load_options(
        &self,
        max_running_jobs: usize,
        cache_dir: Option<std::path::PathBuf>,
    ) -> crate::plugin::LoadOptions {
        crate::plugin::LoadOptions {
            instances: (self.max_workers + 1) * max_running_jobs,
            max_memory: self.max_memory,
            cache_dir,
            limits: self.limits(),
        }
    }

    /// The limits of every call into this API's guests.
    pub(crate) fn limits(&self) -> crate::plugin::CallLimits {
        crate::plugin::CallLimits {
            batch_timeout: self.batch_timeout,
            init_timeout: self.init_timeout,
            output_limit: self.output_limit,
            grants: self.grants.clone(),
            ..crate::plugin::CallLimits::default()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    max_workers: Option<i64>,
    max_running_jobs: Option<i64>,
    max_queued_jobs: Option<i64>,
    min_free_space: Option<String>,
    idempotency_retention: Option<String>,
    #[serde(default)]
    api: Vec<RawApi>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    name: Option<String>,
    plugin: Option<PathBuf>,
    endpoints: Option<Vec<String>>,
    max_workers: Option<i64>,
    default_workers: Option<i64>,
    mount: Option<PathBuf>,
    max_memory: Option<String>,
    batch_timeout: Option<String>,
    init_timeout: Option<String>,
    recycle_after: Option<i64>,
    output_limit: Option<String>,
    max_attempts: Option<i64>,
    #[serde(default)]
    may_submit_to: Vec<String>,
    #[serde(default)]
    allow_http: Vec<String>,
    #[serde(default)]
    allow_read: Vec<String>,
    #[serde(default)]
    allow_write: Vec<String>,
    #[serde(default)]
    allow_inputs: Vec<String>,
    http_timeout: Option<String>,
    max_response: Option<String>,
    ready_timeout: Option<String>,
}

/// The problems of a configuration file, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {}", problems.join(&format!("\n{}: ", path.display())))]
pub(crate) struct ConfigError {
    path: PathBuf,
    problems: Vec<String>,
}

/// Whether `name` is a valid API name (Cortex's rule: lowercase letters, digits and
/// dashes, starting with a letter, at most 63 characters).
pub(crate) fn valid_name(name: &str) -> bool {
    name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

impl ConfigError {
    /// Each problem, one a line, naming the file.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.problems.iter().map(|p| format!("{}: {p}", self.path.display())).collect()
    }
}

impl OperatorConfig {
    /// Reads and checks the file at `path`.
    pub(crate) fn load(path: &Path, broker: bool) -> Result<OperatorConfig, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError { path: path.to_path_buf(), problems };
        let text = std::fs::read_to_string(path).map_err(|e| fail(vec![format!("cannot read it: {e}")]))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, broker).map_err(fail)
    }

    /// Parses `text`; relative paths are taken from `base`.
    pub(crate) fn parse(text: &str, base: &Path, broker: bool) -> Result<OperatorConfig, Vec<String>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| vec![e.to_string().trim().replace('\n', " ")])?;
        let mut problems = Vec::new();
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let mut int = |field: &str, value: Option<i64>, min: i64, max: i64, default: i64| match value {
            None => default,
            Some(n) if (min..=max).contains(&n) => n,
            Some(n) => {
                problems.push(format!("{field}: must be between {min} and {max}, got {n}"));
                default
            }
        };
        let max_workers = int("max_workers", raw.max_workers, 1, 4096, cpus as i64) as usize;
        let max_running_jobs = int("max_running_jobs", raw.max_running_jobs, 1, 1024, 8) as usize;
        let max_queued_jobs = int("max_queued_jobs", raw.max_queued_jobs, 1, 1_000_000, 1000) as u64;
        let idempotency_retention = match raw.idempotency_retention.as_deref().map(parse_duration) {
            None => Duration::from_secs(24 * 3600),
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                problems.push(format!("idempotency_retention: {e}"));
                Duration::ZERO
            }
        };
        let min_free_space = match raw.min_free_space.as_deref().map(parse_size) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(e)) => {
                problems.push(format!("min_free_space: {e}"));
                0
            }
        };
        if raw.api.is_empty() {
            problems.push("no [[api]] is declared".into());
        }
        let mut apis = Vec::new();
        let mut names = HashSet::new();
        for (i, api) in raw.api.into_iter().enumerate() {
            let label = match &api.name {
                Some(name) => format!("api {name:?}"),
                None => format!("api #{}", i + 1),
            };
            let mut problem = |field: &str, message: String| problems.push(format!("{label}: {field}: {message}"));
            let name = match api.name {
                None => {
                    problem("name", "is required".into());
                    continue;
                }
                Some(name) if !valid_name(&name) => {
                    problem("name", "must be lowercase letters, digits and dashes, starting with a letter".into());
                    name
                }
                Some(name) => name,
            };
            if !names.insert(name.clone()) {
                problem("name", "is declared twice".into());
            }
            let handler = match (api.plugin, api.endpoints) {
                (Some(plugin), None) => {
                    let plugin = base.join(plugin);
                    if !plugin.is_file() {
                        problem("plugin", format!("{} is not a file", plugin.display()));
                    }
                    Handler::Plugin(plugin)
                }
                (None, Some(endpoints)) => {
                    if endpoints.is_empty() {
                        problem("endpoints", "must list at least one URL".into());
                    }
                    for url in &endpoints {
                        if let Err(e) = crate::http::client::Endpoint::parse(url) {
                            problem("endpoints", e);
                        }
                    }
                    Handler::Endpoints(endpoints)
                }
                (None, None) if broker => Handler::Workers,
                (None, None) => {
                    problem(
                        "plugin",
                        "give `plugin` or `endpoints` (without either, `wasmbatch worker`s handle the API: run the \
                         operator with --broker)"
                            .into(),
                    );
                    continue;
                }
                (Some(_), Some(_)) => {
                    problem("plugin", "give at most one of `plugin` and `endpoints`".into());
                    continue;
                }
            };
            let mut bounded = |field: &str, value: Option<i64>, min: i64, max: i64| match value {
                Some(n) if !(min..=max).contains(&n) => {
                    problem(field, format!("must be between {min} and {max}, got {n}"));
                    None
                }
                other => other,
            };
            let api_max_workers = bounded("max_workers", api.max_workers, 1, 1024).unwrap_or(4) as usize;
            let default_workers = bounded("default_workers", api.default_workers, 1, 1024).map(|n| n as usize);
            let recycle_after = bounded("recycle_after", api.recycle_after, 1, i64::MAX).map(|n| n as u64);
            let max_attempts = bounded("max_attempts", api.max_attempts, 1, 1000).unwrap_or(3) as u32;
            let mut size = |field: &str, value: Option<String>, default: u64| match value {
                None => default,
                Some(text) => parse_size(&text).unwrap_or_else(|e| {
                    problem(field, e);
                    default
                }),
            };
            let max_memory = api.max_memory.map(|text| size("max_memory", Some(text), 0));
            let output_limit =
                size("output_limit", api.output_limit, crate::plugin::CallLimits::DEFAULT_OUTPUT_LIMIT as u64) as usize;
            let max_response =
                size("max_response", api.max_response, crate::capability::Grants::DEFAULT_MAX_RESPONSE as u64) as usize;
            let mut duration = |field: &str, value: Option<String>| match value {
                None => crate::plugin::CallLimits::DEFAULT_TIMEOUT,
                Some(text) => parse_duration(&text).unwrap_or_else(|e| {
                    problem(field, e);
                    crate::plugin::CallLimits::DEFAULT_TIMEOUT
                }),
            };
            let batch_timeout = duration("batch_timeout", api.batch_timeout);
            let init_timeout = duration("init_timeout", api.init_timeout);
            let ready_timeout = match api.ready_timeout {
                None => crate::http::client::READY_TIMEOUT,
                Some(_) => duration("ready_timeout", api.ready_timeout),
            };
            let http_timeout = match api.http_timeout {
                None => crate::capability::Grants::DEFAULT_HTTP_TIMEOUT,
                Some(_) => duration("http_timeout", api.http_timeout),
            };
            let grants = crate::capability::Grants::parse(
                &api.allow_http,
                &api.allow_read,
                &api.allow_write,
                http_timeout,
                max_response,
            )
            .unwrap_or_else(|errors| {
                for e in errors {
                    problem("allow", e);
                }
                crate::capability::Grants::none()
            });
            let allow_inputs = crate::confine::Prefixes::parse(&api.allow_inputs).unwrap_or_else(|errors| {
                for e in errors {
                    problem("allow_inputs", e);
                }
                crate::confine::Prefixes::default()
            });
            let mount = api.mount.map(|m| base.join(m));
            if let Some(mount) = &mount
                && !mount.is_dir()
            {
                problems.push(format!("{label}: mount: {} is not a directory", mount.display()));
            }
            apis.push(ApiConfig {
                name,
                handler,
                max_workers: api_max_workers,
                default_workers,
                mount,
                max_memory,
                batch_timeout,
                init_timeout,
                recycle_after,
                output_limit,
                max_attempts,
                ready_timeout,
                may_submit_to: api.may_submit_to,
                grants: std::sync::Arc::new(grants),
                allow_inputs,
            });
        }
        for api in &apis {
            for target in &api.may_submit_to {
                if !names.contains(target) {
                    problems.push(format!("api {:?}: may_submit_to: {target:?} is not an API of this file", api.name));
                }
            }
        }
        if problems.is_empty() {
            Ok(OperatorConfig {
                max_workers,
                max_running_jobs,
                max_queued_jobs,
                min_free_space,
                idempotency_retention,
                apis,
            })
        } else {
            Err(problems)
        }
    }

    /// The API named `name`.
    #[cfg(test)]
    pub(crate) fn api(&self, name: &str) -> Option<&ApiConfig> {
        self.apis.iter().find(|a| a.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_file_parses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sum.wasm"), b"").unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        let config = OperatorConfig::parse(
            r#"
            max_workers = 6
            [[api]]
            name = "sum"
            plugin = "sum.wasm"
            max_workers = 2
            mount = "out"
            batch_timeout = "30s"
            may_submit_to = ["remote"]
            [[api]]
            name = "remote"
            endpoints = ["http://127.0.0.1:8080"]
            "#,
            dir.path(),
            false,
        )
        .unwrap();
        assert_eq!((config.max_workers, config.max_running_jobs, config.apis.len()), (6, 8, 2));
        let sum = config.api("sum").unwrap();
        assert_eq!(sum.handler, Handler::Plugin(dir.path().join("sum.wasm")));
        assert_eq!((sum.max_workers, sum.batch_timeout, sum.max_attempts), (2, Duration::from_secs(30), 3));
        assert_eq!(config.api("remote").unwrap().handler, Handler::Endpoints(vec!["http://127.0.0.1:8080".into()]));
    }

    #[test]
    fn an_api_without_a_handler_needs_a_broker() {
        let text = "[[api]]\nname = \"far\"\n";
        let config = OperatorConfig::parse(text, Path::new("."), true).unwrap();
        assert_eq!(config.api("far").unwrap().handler, Handler::Workers);
        let problems = OperatorConfig::parse(text, Path::new("."), false).unwrap_err();
        assert!(problems[0].contains("api \"far\": plugin: give `plugin` or `endpoints`"), "{problems:?}");
        assert!(problems[0].contains("--broker"), "{problems:?}");
    }

    #[test]
    fn every_problem_is_reported_with_its_api_and_field() {
        let problems = OperatorConfig::parse(
            r#"
            [[api]]
            name = "Bad_Name"
            plugin = "missing.wasm"
            max_workers = 0
            batch_timeout = "5 fortnights"
            [[api]]
            name = "both"
            plugin = "x.wasm"
            endpoints = ["http://x"]
            [[api]]
            plugin = "y.wasm"
            [[api]]
            name = "chain"
            endpoints = ["http://x"]
            may_submit_to = ["elsewhere"]
            "#,
            Path::new("/nonexistent"),
            false,
        )
        .unwrap_err();
        let text = problems.join("\n");
        assert!(text.contains("api \"Bad_Name\": name: must be lowercase"), "{text}");
        assert!(text.contains("api \"Bad_Name\": plugin: /nonexistent/missing.wasm is not a file"), "{text}");
        assert!(text.contains("api \"Bad_Name\": max_workers: must be between 1 and 1024, got 0"), "{text}");
        assert!(text.contains("api \"Bad_Name\": batch_timeout: \"5 fortnights\" is not a duration"), "{text}");
        assert!(text.contains("api \"both\": plugin: give at most one of `plugin` and `endpoints`"), "{text}");
        assert!(text.contains("api #3: name: is required"), "{text}");
        assert!(text.contains("api \"chain\": may_submit_to: \"elsewhere\" is not an API of this file"), "{text}");
        let unknown = OperatorConfig::parse("[[api]]\nname = \"a\"\nplugins = \"x\"\n", Path::new("."), false);
        let unknown = unknown.unwrap_err();
        assert!(unknown[0].contains("unknown field `plugins`"), "{unknown:?}");
    }
}
