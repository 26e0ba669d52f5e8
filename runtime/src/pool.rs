//! Warm guest instances behind a bounded admission, called on the request's own task.
//!
//! There are no guest threads: a batch takes an idle instance (or a fresh slot, whose
//! instance starts on first use) and calls the guest asynchronously on a task of the
//! runtime that serves the connection. The guest runs on a fiber; at every epoch tick
//! it yields, so a long batch shares its thread with the other connections' batches,
//! and the batch's deadline is enforced there. No hand-off to another thread and back
//! per batch (it took a third of `serve`'s CPU on 2 cores — see docs/benchmarks.md).
//! The call runs on a task of its own, so that a client that disconnects does not
//! abandon a guest half-way through: the batch ends and its instance goes back warm.
//!
//! Admission bounds both the number of batches and their bytes: a request first takes
//! one of `concurrency + queue_depth` places and as many bytes of the `queue_bytes`
//! budget as its body may have, *before* its body is read. So the memory that bodies
//! take is bounded by the budget, whatever the number of connections. A request that
//! finds no room waits, in arrival order, up to `queue_timeout`, and only then gets
//! [`Busy`]: a burst of clients is served, not refused, and nothing grows without
//! bound. At most `concurrency` guests run at once; the others wait, in order, for an
//! instance.
//!
//! The plugin can be replaced while the pool serves ([`InstancePool::replace`]): batches
//! that have their instance finish on the old plugin, and every batch that starts after
//! runs on the new one; nothing is refused or dropped across the swap. Admission is the
//! pool's, whatever the plugin; for as long as old batches run beside new ones, up to
//! `concurrency` guests of each plugin may run.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::lifecycle::WarmInstance;
use crate::metrics::Metrics;
use crate::plugin::{Instance, JobPlugin};

/// No room for the batch within the queue timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every instance is busy and the wait queue is full")]
pub struct Busy;

/// How many instances and how much waiting.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Warm instances, each running one batch at a time.
    pub concurrency: usize,
    /// Batches that may wait for a free instance.
    pub queue_depth: usize,
    /// Bytes of request bodies admitted at once (read, waiting or running).
    pub queue_bytes: usize,
    /// How long a request waits for admission before it is answered busy.
    pub queue_timeout: Duration,
    /// Replace an instance after this many batches (`None`: only after failures).
    pub recycle_after: Option<u64>,
}

/// The warm instances and their admission.
pub struct InstancePool {
    /// The plugin batches start on, with its instances.
    current: std::sync::RwLock<Arc<Shared>>,
    concurrency: usize,
    recycle_after: Option<u64>,
    /// The first plugin's metrics, which every replacement reports into too.
    metrics: Arc<Metrics>,
    places: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    capacity: usize,
    queue_timeout: Duration,
}

/// What the tasks running batches share with the pool.
struct Shared {
    plugin: Arc<JobPlugin>,
    /// Instances waiting for a batch.
    idle: Mutex<Vec<WarmInstance>>,
    /// One permit an instance that may run at once.
    running: Arc<Semaphore>,
    cancel: Arc<AtomicBool>,
    recycle_after: Option<u64>,
}

impl Shared {
    fn new(
        plugin: Arc<JobPlugin>,
        concurrency: usize,
        recycle_after: Option<u64>,
        first: Option<Instance>,
    ) -> Arc<Shared> {
        let cancel = Arc::new(AtomicBool::new(false));
        let mut idle = Vec::with_capacity(concurrency);
        if let Some(first) = first {
            idle.push(WarmInstance::new(plugin.clone(), cancel.clone(), recycle_after, Some(first)));
        }
        Arc::new(Shared {
            plugin,
            idle: Mutex::new(idle),
            running: Arc::new(Semaphore::new(concurrency)),
            cancel,
            recycle_after,
        })
    }

    /// An idle instance, or a new slot (its instance starts on first use) when a
    /// task that held one panicked and lost it.
    fn take(&self) -> WarmInstance {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        idle.unwrap_or_else(|| WarmInstance::new(self.plugin.clone(), self.cancel.clone(), self.recycle_after, None))
    }

    fn give_back(&self, slot: WarmInstance) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(slot);
    }
}

/// Counts an instance busy while it lives, whatever way its task ends.
struct Running(Arc<Metrics>);

impl Running {
    fn new(metrics: &Arc<Metrics>) -> Running {
        metrics.instances_busy.inc();
        Running(metrics.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.instances_busy.dec();
    }
}

/// A batch's place in the pool and its share of the byte budget; released on drop.
pub struct Admission {
    _place: OwnedSemaphorePermit,
    bytes: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Admission {
    fn new(place: OwnedSemaphorePermit, bytes: OwnedSemaphorePermit, metrics: &Arc<Metrics>) -> Admission {
        metrics.admitted_bytes.add(bytes.num_permits() as i64);
        Admission { _place: place, bytes, metrics: metrics.clone() }
    }

    /// Gives back the bytes beyond `len` (a body turned out smaller than reserved).
    pub fn shrink_to(&mut self, len: usize) {
        let excess = self.bytes.num_permits() - len.min(self.bytes.num_permits());
        if let Some(excess) = self.bytes.split(excess) {
            self.metrics.admitted_bytes.sub(excess.num_permits() as i64);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.metrics.admitted_bytes.sub(self.bytes.num_permits() as i64);
    }
}

/// The task running a batch ended without an answer (it panicked: a bug; its
/// instance, in an unknown state, was dropped).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the task running the batch stopped without answering")]
pub struct Lost;

impl InstancePool {
    /// The pool. `first`, an instance already created and `init`ed (the proof that the
    /// plugin starts), is its first idle instance; the others start on first use.
    pub fn new(plugin: Arc<JobPlugin>, config: &PoolConfig, first: Option<Instance>) -> InstancePool {
        let concurrency = config.concurrency.max(1);
        let capacity = concurrency + config.queue_depth;
        InstancePool {
            metrics: plugin.metrics().clone(),
            current: std::sync::RwLock::new(Shared::new(plugin, concurrency, config.recycle_after, first)),
            concurrency,
            recycle_after: config.recycle_after,
            places: Arc::new(Semaphore::new(capacity)),
            bytes: Arc::new(Semaphore::new(config.queue_bytes.min(Semaphore::MAX_PERMITS))),
            capacity,
            queue_timeout: config.queue_timeout,
        }
    }

    /// Makes `plugin` the one every batch from now on starts on, `first` (an instance
    /// of it, started and `init`ed) its first idle instance. Batches already running
    /// finish on the plugin they started on; its instances end with the last of them.
    /// `plugin` reports into the pool's metrics ([`InstancePool::metrics`]).
    pub fn replace(&self, plugin: Arc<JobPlugin>, first: Option<Instance>) {
        debug_assert!(Arc::ptr_eq(plugin.metrics(), &self.metrics), "a replacement reports into the same metrics");
        let next = Shared::new(plugin, self.concurrency, self.recycle_after, first);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
    }

    fn shared(&self) -> Arc<Shared> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits (up to the queue timeout) for a place and `bytes` of the byte budget.
    /// `bytes` must not exceed the budget (the server's body limit guarantees it).
    pub async fn admit(&self, bytes: usize) -> Result<Admission, Busy> {
        let bytes = u32::try_from(bytes).map_err(|_| Busy)?;
        let metrics = &self.metrics;
        let acquire = async {
            let place = self.places.clone().acquire_owned().await.map_err(|_| Busy)?;
            let bytes = self.bytes.clone().acquire_many_owned(bytes).await.map_err(|_| Busy)?;
            Ok(Admission::new(place, bytes, metrics))
        };
        if self.queue_timeout.is_zero() {
            let place = self.places.clone().try_acquire_owned().map_err(|_| Busy)?;
            let bytes = self.bytes.clone().try_acquire_many_owned(bytes).map_err(|_| Busy)?;
            return Ok(Admission::new(place, bytes, metrics));
        }
        tokio::time::timeout(self.queue_timeout, acquire).await.map_err(|_| Busy)?
    }

    /// Runs `task` with an instance, on a task of the current runtime: it waits (in
    /// order) for one of the `concurrency` instances, and gives it back when done.
    /// `admission` is released when the task ends, before its result is returned.
    pub async fn run<R, F, Fut>(&self, admission: Admission, task: F) -> Result<R, Lost>
    where
        R: Send + 'static,
        F: FnOnce(WarmInstance) -> Fut + Send + 'static,
        Fut: Future<Output = (WarmInstance, R)> + Send + 'static,
    {
        let shared = self.shared();
        let metrics = self.metrics.clone();
        metrics.queue_depth.inc();
        let running = tokio::spawn(async move {
            let permit = shared.running.clone().acquire_owned().await;
            metrics.queue_depth.dec();
            let busy = Running::new(&metrics);
            let (slot, result) = task(shared.take()).await;
            shared.give_back(slot);
            drop((busy, permit));
            // Release the place before answering: a client that sends its next batch
            // as soon as it has this answer must find the place free.
            drop(admission);
            result
        });
        running.await.map_err(|e| {
            tracing::error!("a task running a batch stopped: {e}; its instance is discarded");
            Lost
        })
    }

    /// Batches admitted and not yet finished (reading, waiting or running).
    pub fn in_flight(&self) -> usize {
        self.capacity - self.places.available_permits()
    }

    /// The metrics of every plugin the pool has run.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The plugin batches start on now.
    pub fn plugin(&self) -> Arc<JobPlugin> {
        self.shared().plugin.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(queue_depth: usize, queue_bytes: usize, queue_timeout: Duration) -> InstancePool {
        let engine = Arc::new(crate::engine::Engine::new(crate::engine::EngineConfig::default()).unwrap());
        let module = wasmtime::Module::new(engine.wasmtime(), crate::plugin::smallest_guest(1)).unwrap();
        let metrics = crate::metrics::Metrics::new("t");
        let plugin = Arc::new(crate::plugin::Plugin::new(engine, &module, Default::default(), metrics).unwrap());
        let plugin = plugin.bind(Default::default()).unwrap();
        let config = PoolConfig { concurrency: 1, queue_depth, queue_bytes, queue_timeout, recycle_after: None };
        InstancePool::new(Arc::new(plugin), &config, None)
    }

    #[test]
    fn admission_is_bounded_by_places_and_by_bytes() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let pool = pool(1, 100, Duration::ZERO);
            let a = pool.admit(60).await.unwrap();
            // Bytes: 60 + 60 > 100.
            assert_eq!(pool.admit(60).await.err(), Some(Busy));
            let b = pool.admit(40).await.unwrap();
            // Places: 1 worker + 1 waiting.
            assert_eq!(pool.admit(0).await.err(), Some(Busy));
            assert_eq!(pool.in_flight(), 2);
            drop(a);
            let mut c = pool.admit(60).await.unwrap();
            drop(b);
            // A reservation can give back what the body did not need.
            c.shrink_to(10);
            let _d = pool.admit(90).await.unwrap();
        });
    }

    #[test]
    fn a_request_waits_for_room_until_the_queue_timeout() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let pool = Arc::new(pool(0, 100, Duration::from_secs(30)));
            let held = pool.admit(100).await.unwrap();
            let waiter = {
                let pool = pool.clone();
                tokio::spawn(async move { pool.admit(50).await.is_ok() })
            };
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished());
            drop(held);
            assert!(waiter.await.unwrap(), "admitted once the room was freed");

            let pool = self::pool(0, 100, Duration::from_millis(50));
            let _held = pool.admit(1).await.unwrap();
            assert_eq!(pool.admit(1).await.err(), Some(Busy), "busy after the timeout");
        });
    }
}
