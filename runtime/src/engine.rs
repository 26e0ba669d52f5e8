//! The wasmtime engine, narrowed to what wasmbatch uses.
//!
//! One [`Engine`] per process: Cranelift, the pooling instance allocator sized for the
//! number of instances we keep, epoch interruption driven by one ticker thread. Guests
//! are always called asynchronously (`call_async`, on a fiber): on the async task that
//! holds the request in `serve`, or through [`drive`] on a plain thread. Every
//! knob a user can turn is in [`EngineConfig`]; nothing else of wasmtime's `Config`
//! leaks out of this module.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the ticker thread advances the epoch: the resolution of timeouts.
pub(crate) const TICK: Duration = Duration::from_millis(5);

/// What the engine is built for.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Linear memory one instance may grow to, in bytes.
    pub max_memory: u64,
    /// Instances alive at the same time (the pool's slots).
    pub max_instances: u32,
    /// Whether the instances are components' (each of several core instances,
    /// memories and tables) rather than core modules'.
    pub components: bool,
}

/// Linear memory per instance unless a limit says otherwise.
pub(crate) const DEFAULT_MAX_MEMORY: u64 = 512 << 20;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { max_memory: DEFAULT_MAX_MEMORY, max_instances: 16, components: false }
    }
}

/// A configured wasmtime engine and its epoch ticker.
pub struct Engine {
    inner: wasmtime::Engine,
    config: EngineConfig,
    stop: Arc<AtomicBool>,
}

/// The engine could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the WebAssembly engine: {0}")]
pub struct EngineError(String);

impl Engine {
    /// Builds the engine and starts its ticker thread.
    pub fn new(config: EngineConfig) -> Result<Engine, EngineError> {
        let inner = wasmtime::Engine::new(&wasmtime_config(&config)).map_err(|e| EngineError(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = inner.clone();
        let ticker_stop = stop.clone();
        thread::Builder::new()
            .name("wasmbatch-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    thread::sleep(TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| EngineError(format!("epoch ticker thread: {e}")))?;
        Ok(Engine { inner, config, stop })
    }

    /// The wasmtime engine.
    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }

    /// What the engine was built with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// A string that changes whenever compiled code from this engine would not load in
    /// another: the key of the compile cache, next to the module's hash.
    pub fn compatibility_key(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.inner.precompile_compatibility_hash().hash(&mut hasher);
        format!("{}-{:016x}", env!("CARGO_PKG_VERSION"), hasher.finish())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What one component instance may hold, in core instances, memories and tables: room
/// to spare over a Python handler built by componentize-py 0.25 (14 core instances, 1
/// memory, 2 tables). Past them, loading says which limit the component exceeds.
const CORE_INSTANCES_PER_COMPONENT: u32 = 24;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 8;

fn wasmtime_config(config: &EngineConfig) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    let n = config.max_instances;
    // Guests are called asynchronously, each call on a fiber with a stack of its own:
    // one per live instance, and one more for a host function's call back into the
    // guest (`wasmbatch_alloc`, to hand it an answer) while the first is suspended.
    pool.total_stacks(n.saturating_mul(2)).max_memory_size(usize::try_from(config.max_memory).unwrap_or(usize::MAX));
    if config.components {
        pool.total_component_instances(n)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
            .total_tables(n.saturating_mul(TABLES_PER_COMPONENT));
    } else {
        // One instance, memory and table per slot; a module with more than one memory
        // or table is rejected at instantiation with wasmtime's own message.
        pool.total_core_instances(n).total_memories(n).total_tables(n).total_component_instances(0);
    }

    let mut c = Config::new();
    c.epoch_interruption(true)
        .parallel_compilation(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    c
}

/// Runs a future — a guest call — to its end from synchronous code. The futures of
/// guest calls yield at every epoch tick (so that, on an async runtime, other tasks run
/// between a long guest's slices); here a yield just polls again. Host functions that
/// block run on tokio's blocking threads, so a runtime is entered for them: on a plain
/// thread, the process's own small one; on a worker of a multi-threaded runtime, that
/// runtime (through `block_in_place`); inside a current-thread runtime, which cannot
/// block, the future runs on a scoped thread of its own.
pub fn drive<F>(future: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    use std::sync::OnceLock;
    use tokio::runtime::{Handle, RuntimeFlavor};
    // Every branch polls `future` on one thread that waits for nothing else meanwhile.
    let future = Dedicated(Box::pin(future));
    static AMBIENT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let ambient = || {
        AMBIENT.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("wasmbatch-ambient")
                .enable_all()
                .build()
                .expect("start the ambient runtime")
        })
    };
    match Handle::try_current() {
        Err(_) => ambient().block_on(future),
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(future))
        }
        Ok(_) => std::thread::scope(|scope| {
            let run = scope.spawn(|| ambient().block_on(future));
            run.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

thread_local! {
    static DEDICATED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the caller runs inside [`drive`]: on a thread given to one guest call, which
/// a host function may block with a plain wait (outbound HTTP) without holding up
/// anything else. Elsewhere (`serve`'s tasks) such a wait goes to tokio's blocking
/// pool. The thread is inside a runtime's context either way: a wait that enters a
/// runtime of its own must go to the blocking pool here too.
pub(crate) fn on_dedicated_thread() -> bool {
    DEDICATED.with(|d| d.get())
}

/// A future marked, for each poll, as running on a dedicated thread.
struct Dedicated<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for Dedicated<F> {
    type Output = F::Output;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let before = DEDICATED.with(|d| d.replace(true));
        let poll = self.0.as_mut().poll(cx);
        DEDICATED.with(|d| d.set(before));
        poll
    }
}

/// The memory limit of the container this process runs in (cgroup v2 `memory.max`, or
/// v1 `memory.limit_in_bytes`), when there is one.
pub(crate) fn container_memory_limit() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok().and_then(|t| t.trim().parse::<u64>().ok());
    read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        // v1 reports "no limit" as a huge number.
        .filter(|&limit| limit < 1 << 50)
}

/// Linear memory per instance: `explicit` when given, else [`DEFAULT_MAX_MEMORY`], or
/// what fits `instances` instances in the container's memory limit (cgroup v2 or v1)
/// with 64 MiB left for the host, so that a guest hits its own limit
/// (`out_of_memory`) before the container is killed. Every command and the operator
/// size their instances with this.
pub(crate) fn fitted_memory(explicit: Option<u64>, instances: usize) -> u64 {
    if let Some(explicit) = explicit {
        return explicit;
    }
    let Some(limit) = container_memory_limit() else { return DEFAULT_MAX_MEMORY };
    let chosen = fit(limit, instances);
    if chosen < DEFAULT_MAX_MEMORY {
        tracing::info!(
            container_limit_mib = limit >> 20,
            instances,
            max_memory_mib = chosen >> 20,
            "memory per instance fitted to the container's limit"
        );
    }
    chosen
}

/// Each of `instances`' share of `limit`, less 64 MiB for the host, between 16 MiB and
/// [`DEFAULT_MAX_MEMORY`].
fn fit(limit: u64, instances: usize) -> u64 {
    let share = limit.saturating_sub(64 << 20) / instances.max(1) as u64;
    share.clamp(16 << 20, DEFAULT_MAX_MEMORY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatibility_key_is_stable_for_one_engine_config() {
        let a = Engine::new(EngineConfig { max_instances: 2, ..Default::default() }).unwrap();
        let b = Engine::new(EngineConfig { max_instances: 2, ..Default::default() }).unwrap();
        assert_eq!(a.compatibility_key(), b.compatibility_key());
    }

    #[test]
    fn memory_is_fitted_to_a_container_and_bounded() {
        assert_eq!(fitted_memory(Some(7 << 20), 100), 7 << 20, "an explicit limit is kept as given");
        assert_eq!(fit(1 << 30, 4), ((1024 - 64) / 4) << 20);
        assert_eq!(fit(64 << 30, 4), DEFAULT_MAX_MEMORY, "never more than the default");
        assert_eq!(fit(128 << 20, 64), 16 << 20, "never less than 16 MiB");
        assert_eq!(fit(1 << 30, 0), DEFAULT_MAX_MEMORY, "no instances counts as one");
    }
}
