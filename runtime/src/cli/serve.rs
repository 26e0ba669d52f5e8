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
    let plugin = bind(&plugin, &args.guest, &spec, Some(Arc::new(submitter)), Arc::new(results))?;

    // Readiness: the port is bound only once an instance has started and its init
    // succeeded, so a TCP probe on the port tells the truth.
    let started = Instant::now();
    let first = crate::engine::drive(plugin.instance(Arc::new(AtomicBool::new(false)))).map_err(|f| {
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
    let pool = InstancePool::new(plugin, &pool_config, Some(first));
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
