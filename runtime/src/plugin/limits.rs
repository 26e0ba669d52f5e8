//! What every call into a plugin is limited by, and what loading one needs: with their
//! defaults, in one place for `run`, `serve`, `worker` and the operator.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::capability::Grants;

/// Limits applied to every call into a guest.
#[derive(Debug, Clone, PartialEq)]
pub struct CallLimits {
    /// Wall-clock limit of one `handle` or `on_job_complete` call.
    pub batch_timeout: Duration,
    /// Wall-clock limit of creating an instance: `_initialize` plus `init`.
    pub init_timeout: Duration,
    /// Bytes of stdout and of stderr kept per call; the rest is counted and dropped.
    pub output_limit: usize,
    /// Host log lines (the `log` import) accepted per call.
    pub log_line_limit: u32,
    /// What the guests may reach beyond their batch (outbound HTTP, objects).
    pub grants: Arc<Grants>,
    /// Bytes of results (the `emit` import) kept per batch.
    pub results_limit: usize,
}

impl CallLimits {
    /// Default of [`CallLimits::batch_timeout`] and [`CallLimits::init_timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
    /// Default of [`CallLimits::output_limit`].
    pub const DEFAULT_OUTPUT_LIMIT: usize = 16 << 10;
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            batch_timeout: Self::DEFAULT_TIMEOUT,
            init_timeout: Self::DEFAULT_TIMEOUT,
            output_limit: Self::DEFAULT_OUTPUT_LIMIT,
            log_line_limit: 1000,
            grants: Arc::new(Grants::none()),
            results_limit: 16 << 20,
        }
    }
}

/// How to load a plugin: what is the same for all its jobs. The default: one
/// instance, memory fitted, no compile cache, default limits and no grants.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Instances alive at once (the workers' warm ones, on-job-complete's).
    pub instances: usize,
    /// Linear memory per instance; `None`: fitted to the container
    /// (`crate::engine::fitted_memory`).
    pub max_memory: Option<u64>,
    /// The compile cache; `None`: compile every time.
    pub cache_dir: Option<PathBuf>,
    /// The limits of every call, grants included.
    pub limits: CallLimits,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { instances: 1, max_memory: None, cache_dir: None, limits: CallLimits::default() }
    }
}
