//! Plugins: loaded once, bound to a job, instantiated warm.
//!
//! - [`Plugin`]: a module compiled (or taken from the cache), validated against ABI v1,
//!   checked against its grants, linked once (`InstancePre`) and probed for its ABI
//!   version; or a component of the world `wasmbatch:handler` (`world`), linked once
//!   and probed by one instantiation. It knows nothing of any job; [`Plugin::load`] is the one way from a file
//!   to a plugin, with the engine sized and memory fitted the same way for every
//!   command.
//! - [`JobPlugin`]: a plugin bound to one job's context (spec, `/mnt`, submitter), from
//!   which [`Instance`]s are made: instantiated, `_initialize`d and `init`ed with the
//!   spec, then called batch after batch until a fatal failure
//!   ([`FailureKind::is_fatal`](crate::failure::FailureKind::is_fatal)) poisons one.
//!   Every call into a guest is async (`call_async`, on a fiber, yielding at each epoch
//!   tick); a plain thread runs one with [`crate::engine::drive`].
//!
//! Inside: `items` finds where a batch's items lie, `memory` is the guest-memory
//! convention, `host` the host functions by capability (for modules and components),
//! `world` the component world's bindings, `state` what a store holds, `instance` the
//! calls and their failures.

mod host;
mod instance;
mod items;
mod limits;
mod memory;
mod state;
mod world;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use wasmtime::{InstancePre, Module};

pub use self::instance::{BatchOutput, Instance, ItemError};
pub use self::items::ItemSpans;
pub use self::limits::{CallLimits, LoadOptions};
use self::state::{AttemptLog, HostState};
pub use self::state::{BatchCall, BatchId, content_id};
use crate::abi::{self, AbiError, Capabilities};
pub use crate::compile::Kind;
use crate::compile::{Code, CompileError, Origin};
pub use crate::engine::drive;
use crate::engine::{Engine, EngineConfig, EngineError};
use crate::failure::Failure;
use crate::metrics::Metrics;
use crate::sandbox::{Sandbox, SandboxError};

/// A module could not be made a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The module breaks the ABI.
    #[error(transparent)]
    Abi(#[from] AbiError),
    /// The module imports something the host does not define.
    #[error("cannot link the module: {0}")]
    Link(String),
    /// The version probe failed to run.
    #[error("cannot start the module to check its ABI version: {0}")]
    Probe(Failure),
    /// The module imports a capability its API was not granted.
    #[error("{0}")]
    NotGranted(String),
    /// The component does not target the world `wasmbatch:handler@1.0.0`.
    #[error("the component does not fit the world wasmbatch:handler@1.0.0 (guest-sdk/wit/handler.wit): {0}")]
    World(String),
}

impl LoadError {
    /// The error as the command line says it for `plugin`.
    pub fn about(&self, plugin: &Path) -> String {
        match self {
            LoadError::NotGranted(why) => format!("plugin {} needs a grant it was not given: {why}", plugin.display()),
            other => format!("plugin {} is not a wasmbatch guest: {other}", plugin.display()),
        }
    }
}

/// A plugin file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The engine could not be built.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The file could not be read or compiled.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// A Python handler could not be made a component.
    #[error(transparent)]
    Python(#[from] crate::python::PythonError),
    /// The module is not a plugin, or not one these grants allow.
    #[error("{}", .error.about(.path))]
    Load {
        /// The plugin file.
        path: PathBuf,
        /// What is wrong with it.
        error: LoadError,
    },
}

/// Submits jobs for a guest (chaining): to the job service in this process, or to an
/// operator over HTTP. Decides which APIs the guest may submit to.
pub trait Submitter: Send + Sync {
    /// Submits `job` (a job submission's JSON) to `api`; the new job's ID, or why not.
    fn submit(&self, api: &str, job: &[u8]) -> Result<String, String>;
}

/// Where on-job-complete reads its job's results: what the job's handlers emitted, each
/// batch's once, as JSON Lines of `{"batch": <index>, "result": <value>}` (the format
/// of a job's results file and of the job API's `…/results`).
pub trait JobResults: Send + Sync {
    /// The results of job `job_id`, from the first line; or why they cannot be read.
    fn open(&self, job_id: &str) -> Result<Box<dyn std::io::BufRead + Send>, String>;
}

/// A job's results in a file of this machine (`wasmbatch run`, the operator): the file
/// the job's batches were recorded with. No file: the job emitted nothing.
pub struct ResultsFileAt(pub PathBuf);

impl JobResults for ResultsFileAt {
    fn open(&self, _job_id: &str) -> Result<Box<dyn std::io::BufRead + Send>, String> {
        match std::fs::File::open(&self.0) {
            Ok(file) => Ok(Box::new(std::io::BufReader::new(file))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Box::new(std::io::empty())),
            Err(e) => Err(format!("reading the job's results at {}: {e}", self.0.display())),
        }
    }
}

/// Compiled code linked to the host, ready to instantiate.
enum Linked {
    Module(InstancePre<HostState>),
    Component(world::HandlerPre<HostState>),
}

/// A compiled, validated, linked plugin, independent of any job.
pub struct Plugin {
    engine: Arc<Engine>,
    linked: Linked,
    capabilities: Capabilities,
    limits: CallLimits,
    metrics: Arc<Metrics>,
    origin: Origin,
}

impl Plugin {
    /// Loads the plugin at `path` (a module or a component; a `.py` file is a Python
    /// handler, made a component first): an engine for `options.instances` live instances
    /// (plus the version probe and one being replaced) with memory fitted to the
    /// container (`crate::engine::fitted_memory`), the module compiled or taken from
    /// the cache, then [`Plugin::new`]'s checks.
    pub fn load(path: &Path, options: &LoadOptions, metrics: Arc<Metrics>) -> Result<Plugin, PluginError> {
        let instances = options.instances.max(1);
        // A Python handler: its component, built (or found in the cache) first.
        let built;
        let code_path = if path.extension().is_some_and(|e| e == "py") {
            built = crate::python::component(path, options.cache_dir.as_deref())?;
            built.as_path()
        } else {
            path
        };
        let kind = crate::compile::kind(code_path)?;
        let engine = Arc::new(Engine::new(EngineConfig {
            max_memory: crate::engine::fitted_memory(options.max_memory, instances),
            max_instances: u32::try_from(instances + 2).unwrap_or(u32::MAX),
            components: kind == Kind::Component,
        })?);
        let (code, origin) = crate::compile::load(&engine, code_path, options.cache_dir.as_deref())?;
        metrics.module_loaded(origin.as_str());
        let mut plugin = Plugin::from_code(engine, &code, options.limits.clone(), metrics)
            .map_err(|error| PluginError::Load { path: path.to_path_buf(), error })?;
        plugin.origin = origin;
        Ok(plugin)
    }

    /// Makes `module` a plugin: checks it against ABI v1 (exports, imports, and the
    /// version the guest reports) and against the grants of `limits`, and links it.
    pub fn new(
        engine: Arc<Engine>,
        module: &Module,
        limits: CallLimits,
        metrics: Arc<Metrics>,
    ) -> Result<Plugin, LoadError> {
        let capabilities = abi::validate(module)?;
        let imports = module.imports().filter(|i| i.module() == abi::HOST_MODULE).map(|i| i.name());
        limits.grants.check_imports(imports).map_err(LoadError::NotGranted)?;
        let linker = host::linker(&engine).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(module).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let plugin =
            Plugin { engine, linked: Linked::Module(pre), capabilities, limits, metrics, origin: Origin::Compiled };
        plugin.check_version()?;
        Ok(plugin)
    }

    /// Makes compiled code of either kind a plugin: a module as [`Plugin::new`] does; a
    /// component linked against the world `wasmbatch:handler` (its imports' grants are
    /// checked at each call) and instantiated once to see that it starts.
    pub fn from_code(
        engine: Arc<Engine>,
        code: &Code,
        limits: CallLimits,
        metrics: Arc<Metrics>,
    ) -> Result<Plugin, LoadError> {
        let component = match code {
            Code::Module(module) => return Plugin::new(engine, module, limits, metrics),
            Code::Component(component) => component,
        };
        if !engine.config().components {
            return Err(LoadError::Link("the engine was not sized for components".into()));
        }
        let linker = host::component_linker(&engine).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(component).map_err(|e| LoadError::World(format!("{e:#}")))?;
        let pre = world::HandlerPre::new(pre).map_err(|e| LoadError::World(format!("{e:#}")))?;
        // Everything a component may have is there: the world's exports are required.
        let capabilities = Capabilities { initialize: false, init: true, on_job_complete: true, handle_items: false };
        let plugin =
            Plugin { engine, linked: Linked::Component(pre), capabilities, limits, metrics, origin: Origin::Compiled };
        plugin.check_version()?;
        Ok(plugin)
    }

    fn check_version(&self) -> Result<(), LoadError> {
        let probe = Job::new(JobContext::default()).map_err(|e| {
            LoadError::Probe(Failure::new(
                crate::failure::FailureKind::Trap,
                format!("cannot prepare the sandbox: {e}"),
            ))
        })?;
        let version = crate::engine::drive(async {
            let mut raw = Instance::start(self, &probe, Arc::new(AtomicBool::new(false))).await?;
            raw.call_version().await
        })
        .map_err(LoadError::Probe)?;
        if version != abi::ABI_VERSION {
            return Err(AbiError::VersionMismatch { found: version }.into());
        }
        Ok(())
    }

    /// Binds the plugin to a job: its instances see `job`'s spec and mount, and submit
    /// through its submitter.
    pub fn bind(self: &Arc<Self>, job: JobContext) -> Result<JobPlugin, SandboxError> {
        Ok(JobPlugin { plugin: self.clone(), job: Job::new(job)? })
    }

    /// The optional parts of the ABI this plugin has.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// Where its instances report.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The limits of every call.
    pub fn limits(&self) -> &CallLimits {
        &self.limits
    }

    /// Linear memory one instance may use, in bytes.
    pub fn max_memory(&self) -> u64 {
        self.engine.config().max_memory
    }

    /// How the module was obtained.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Whether it is a core module or a component.
    pub fn kind(&self) -> Kind {
        match self.linked {
            Linked::Module(_) => Kind::Module,
            Linked::Component(_) => Kind::Component,
        }
    }
}

/// What a plugin is bound to for one job.
#[derive(Default, Clone)]
pub struct JobContext {
    /// The job spec (JSON): at `/cortex/spec/job.json`, and `init`'s argument.
    pub spec: Arc<[u8]>,
    /// The host directory guests see at `/mnt`.
    pub mount: Option<PathBuf>,
    /// Where guests submit jobs (chaining); none: `submit_job` answers that it is not
    /// available.
    pub submitter: Option<Arc<dyn Submitter>>,
    /// Where on-job-complete reads the job's results; none: reading them answers that
    /// they are not available here.
    pub results: Option<Arc<dyn JobResults>>,
}

/// A job's side of its instances.
struct Job {
    sandbox: Sandbox,
    spec: Arc<[u8]>,
    api_name: Arc<str>,
    job_id: String,
    attempts: Arc<AttemptLog>,
    submitter: Option<Arc<dyn Submitter>>,
    results: Option<Arc<dyn JobResults>>,
}

impl Job {
    fn new(context: JobContext) -> Result<Job, SandboxError> {
        let spec: Arc<[u8]> = if context.spec.is_empty() { Arc::from(&b"{}"[..]) } else { context.spec };
        let sandbox = Sandbox::new(&spec, context.mount.as_deref())?;
        let parsed = serde_json::from_slice::<serde_json::Value>(&spec).ok();
        let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name)).and_then(|v| v.as_str()).unwrap_or("");
        Ok(Job {
            sandbox,
            api_name: Arc::from(field("api_name")),
            job_id: field("job_id").to_string(),
            spec,
            attempts: Arc::new(AttemptLog::default()),
            submitter: context.submitter,
            results: context.results,
        })
    }
}

/// A plugin bound to one job: where its instances come from.
pub struct JobPlugin {
    plugin: Arc<Plugin>,
    job: Job,
}

impl JobPlugin {
    /// A new instance: instantiated, `_initialize`d, and `init`ed with the job spec.
    /// `cancel` interrupts every call of the instance once it is set.
    pub async fn instance(&self, cancel: Arc<AtomicBool>) -> Result<Instance, Failure> {
        let mut instance = Instance::start(&self.plugin, &self.job, cancel).await?;
        instance.init(self.plugin.limits.init_timeout, &self.job.job_id, &self.job.spec).await?;
        Ok(instance)
    }

    /// The plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The optional parts of the ABI the plugin has.
    pub fn capabilities(&self) -> Capabilities {
        self.plugin.capabilities
    }

    /// Where its instances report.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.plugin.metrics
    }

    /// The job spec's `api_name` (empty when it has none).
    pub fn api_name(&self) -> &str {
        &self.job.api_name
    }

    /// The host directory guests see at `/mnt`.
    pub fn mount(&self) -> Option<&Path> {
        self.job.sandbox.mount()
    }
}

/// The smallest guest of ABI v1, with `pages` pages of memory: every batch succeeds.
#[cfg(test)]
pub(crate) fn smallest_guest(pages: u32) -> String {
    format!(
        r#"(module (memory (export "memory") {pages})
            (func (export "wasmbatch_abi_version") (result i32) i32.const 1)
            (func (export "wasmbatch_alloc") (param i32) (result i32) i32.const 8)
            (func (export "wasmbatch_handle") (param i32 i32 i32 i32) (result i32) i32.const 0))"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest's memory is counted from its creation, not from its first growth: the
    /// limit and the metric see what the instance holds.
    #[test]
    fn an_instances_memory_counts_from_its_first_page() {
        let engine = Arc::new(Engine::new(EngineConfig::default()).unwrap());
        let module = Module::new(engine.wasmtime(), smallest_guest(3)).unwrap();
        let metrics = Metrics::new("t");
        let plugin = Arc::new(Plugin::new(engine, &module, CallLimits::default(), metrics.clone()).unwrap());
        let bound = plugin.bind(JobContext::default()).unwrap();
        let instance = drive(bound.instance(Arc::new(AtomicBool::new(false)))).unwrap();
        assert_eq!(metrics.guest_memory_bytes.get(), 3 << 16);
        drop(instance);
        assert_eq!(metrics.guest_memory_bytes.get(), 0);
    }
}
