//! `wasmbatch serve` (a plugin behind the contract's `POST /`) and `compile`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::Context as _;

use super::*;
use crate::compile;
use crate::engine::{Engine, EngineConfig};
use crate::http::{ServerConfig, serve};
use crate::metrics::Metrics;
use crate::plugin::{CallLimits, Plugin};
use crate::pool::{InstancePool, PoolConfig};
use crate::spec::JobSpec;

pub(super) fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
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
    let started = Instant::now();
    let (plugin, first) = start_plugin(&args, &spec, concurrency, metrics)?;
    tracing::info!(init_ms = started.elapsed().as_secs_f64() * 1e3, "first instance ready");

    let pool_config = PoolConfig {
        concurrency,
        queue_depth: args.queue_depth as usize,
        queue_bytes: usize::try_from(args.queue_bytes).unwrap_or(usize::MAX),
        queue_timeout: args.queue_timeout,
        recycle_after: args.guest.recycle_after,
    };
    let pool = Arc::new(InstancePool::new(plugin, &pool_config, Some(first)));
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
        // SIGHUP is taken before the port is bound: from then on it reloads, never kills.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| tracing::warn!("cannot listen for SIGHUP, reloads by signal are off: {e}"))
            .ok();
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
        let reloads = tokio::spawn(reload_on_request(args, spec, concurrency, pool.clone(), hangup));
        serve(listener, pool, server_config, shutdown_signal()).await?;
        reloads.abort();
        Ok(())
    })
}

/// The plugin of `args` loaded, bound to the job of `spec`, and its first instance
/// started and `init`ed: what `serve` starts with, and what a reload must get to
/// before it replaces anything. Blocks; not on a runtime's thread.
fn start_plugin(
    args: &ServeArgs,
    spec: &JobSpec,
    concurrency: usize,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(Arc<crate::plugin::JobPlugin>, crate::plugin::Instance)> {
    let submitter = crate::operator::client::RemoteSubmitter::new(
        &args.operator_url,
        args.token.token.as_deref(),
        spec.api_name().unwrap_or("wasmbatch"),
        args.may_submit_to.clone(),
    )
    .map_err(|e| invalid(format!("--operator-url: {e}")))?;
    let plugin = load_plugin(&args.guest, &args.plugin, concurrency, metrics)?;
    let results = crate::operator::client::RemoteResults::new(
        &args.operator_url,
        args.token.token.as_deref(),
        spec.api_name().unwrap_or(""),
    );
    let plugin = bind(&plugin, &args.guest, spec, Some(Arc::new(submitter)), Arc::new(results))?;
    // Readiness: the port is bound only once an instance has started and its init
    // succeeded, so a TCP probe on the port tells the truth.
    let first = crate::engine::drive(plugin.instance(Arc::new(AtomicBool::new(false)))).map_err(|f| {
        let stderr =
            if f.stderr_tail.is_empty() { String::new() } else { format!("\nguest stderr:\n{}", f.stderr_tail) };
        anyhow::anyhow!("the plugin failed to start: {f}{stderr}")
    })?;
    Ok((plugin, first))
}

/// Reloads the plugin on SIGHUP, and with `--watch` when its file (a Python handler:
/// any `.py` file of its directory) changes: the new one is loaded and its first
/// instance started beside the running one, then [`InstancePool::replace`] swaps them.
/// A plugin that does not load or start is refused, logged with why, and the running
/// one stays.
async fn reload_on_request(
    args: ServeArgs,
    spec: JobSpec,
    concurrency: usize,
    pool: Arc<InstancePool>,
    hangup: Option<tokio::signal::unix::Signal>,
) {
    let args = Arc::new(args);
    let spec = Arc::new(spec);
    // A request while a reload runs is kept (one), and served after it.
    let (request, mut requests) = tokio::sync::mpsc::channel::<&'static str>(1);
    if let Some(mut hangup) = hangup {
        let request = request.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let _ = request.try_send("SIGHUP");
            }
        });
    }
    if args.watch {
        tokio::spawn(watch(args.plugin.clone(), request));
    }
    while let Some(reason) = requests.recv().await {
        tracing::info!(reason, plugin = %args.plugin.display(), "reloading the plugin");
        let started = Instant::now();
        let (done, outcome) = tokio::sync::oneshot::channel();
        let (args, spec, metrics) = (args.clone(), spec.clone(), pool.metrics().clone());
        // A plain thread: the load compiles, and starts a runtime of its own for the
        // first instance's init, as at start.
        std::thread::spawn(move || {
            let _ = done.send(start_plugin(&args, &spec, concurrency, metrics));
        });
        match outcome.await {
            Ok(Ok((plugin, first))) => {
                pool.replace(plugin, Some(first));
                tracing::info!(
                    reason,
                    reload_ms = started.elapsed().as_secs_f64() * 1e3,
                    "plugin reloaded: new batches run on it, batches in flight finish on the old one"
                );
            }
            Ok(Err(e)) => tracing::error!(reason, "reload refused, the running plugin stays: {e:#}"),
            Err(_) => tracing::error!(reason, "reload refused, the running plugin stays: the load panicked"),
        }
    }
}

/// Asks for a reload when what `plugin` is made of changes: its size, time or inode
/// (a Python handler: the content of its directory's `.py` files), looked at twice a
/// second and unchanged for one look, so that a file half-way through being written
/// is not taken.
async fn watch(plugin: std::path::PathBuf, request: tokio::sync::mpsc::Sender<&'static str>) {
    let look = |plugin: &std::path::Path| -> Option<String> {
        if plugin.extension().is_some_and(|e| e == "py") {
            return crate::python::source_key(plugin).ok();
        }
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(plugin).ok()?;
        Some(format!("{}:{}:{}:{}", m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
    };
    let mut loaded = look(&plugin);
    let mut seen = loaded.clone();
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        ticks.tick().await;
        let now = look(&plugin);
        if now.is_some() && now == seen && now != loaded {
            loaded = now.clone();
            let _ = request.send("--watch: the plugin changed").await;
        }
        seen = now;
    }
}

pub(super) fn run_build(args: BuildArgs) -> anyhow::Result<()> {
    let output = args.output.clone().unwrap_or_else(|| args.input.with_extension("wasm"));
    anyhow::ensure!(output != args.input, "the output would overwrite the handler: give -o");
    let started = Instant::now();
    if args.input.extension().is_some_and(|e| e == "py") {
        crate::python::build(&args.input, &output)?;
    } else {
        let bytes = std::fs::read(&args.input).with_context(|| format!("cannot read {}", args.input.display()))?;
        anyhow::ensure!(
            crate::adapt::is_world_module(&bytes),
            "{} is neither a Python handler (.py) nor a core module built for the world `wasmbatch:handler` (it \
             carries no component type); an ABI v1 module or a component runs as it is",
            args.input.display()
        );
        let component = crate::adapt::component(&bytes)
            .map_err(|e| anyhow::anyhow!("{} cannot be made a component: {e}", args.input.display()))?;
        crate::storage::write_atomic(&output, &component)
            .with_context(|| format!("cannot write {}", output.display()))?;
    }
    let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "built {} into {} ({:.1} MB) in {:.1} s",
        args.input.display(),
        output.display(),
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(super) fn run_compile(args: CompileArgs) -> anyhow::Result<()> {
    let output = args.output.clone().unwrap_or_else(|| args.input.with_extension("cwasm"));
    let components = compile::kind(&args.input)? == compile::Kind::Component;
    let engine = Arc::new(Engine::new(EngineConfig { max_instances: 2, components, ..EngineConfig::default() })?);
    let started = Instant::now();
    let module = compile::compile_file(&engine, &args.input)?;
    let compiled_ms = started.elapsed().as_secs_f64() * 1e3;
    // The whole load-time check, version probe included, before anything is written.
    let plugin = Plugin::from_code(engine, &module, CallLimits::default(), Metrics::new("wasmbatch"))
        .with_context(|| format!("plugin {} is not a wasmbatch guest", args.input.display()))?;
    compile::write_artifact(&module, &output)?;
    let caps = plugin.capabilities();
    eprintln!(
        "compiled {} ({}) to {} in {compiled_ms:.0} ms (init: {}, on_job_complete: {})",
        args.input.display(),
        plugin.kind().as_str(),
        output.display(),
        if caps.init { "yes" } else { "no" },
        if caps.on_job_complete { "yes" } else { "no" },
    );
    Ok(())
}
