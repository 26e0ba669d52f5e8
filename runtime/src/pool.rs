//! Worker threads, each with its own warm guest instance, behind a bounded admission.
//!
//! Guest code never runs on an async runtime thread (wasmtime-wasi's synchronous
//! functions panic there, and a long batch would stall I/O). The pool is
//! `concurrency` plain threads fed by one channel; each thread owns a
//! `WarmInstance`. (A rayon pool did the same job first; its idle workers spin in
//! `sched_yield` before sleeping, which on 2 cores took ~13 % of the CPU from the I/O
//! threads under load — see docs/benchmarks.md.)
//!
//! Admission bounds both the number of batches and their bytes: a request first takes
//! one of `concurrency + queue_depth` places and as many bytes of the `queue_bytes`
//! budget as its body may have, *before* its body is read. So the memory that bodies
//! take is bounded by the budget, whatever the number of connections. A request that
//! finds no room waits, in arrival order, up to `queue_timeout`, and only then gets
//! [`Busy`]: a burst of clients is served, not refused, and nothing grows without
//! bound.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::lifecycle::WarmInstance;
use crate::metrics::Metrics;
use crate::plugin::{Instance, JobPlugin};

/// No room for the batch within the queue timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every instance is busy and the wait queue is full")]
pub struct Busy;

/// How many workers and how much waiting.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Worker threads, each with one instance.
    pub concurrency: usize,
    /// Batches that may wait for a free worker.
    pub queue_depth: usize,
    /// Bytes of request bodies admitted at once (read, waiting or running).
    pub queue_bytes: usize,
    /// How long a request waits for admission before it is answered busy.
    pub queue_timeout: Duration,
    /// Replace an instance after this many batches (`None`: only after failures).
    pub recycle_after: Option<u64>,
}

/// The worker threads and their admission.
pub struct WorkerPool {
    plugin: Arc<JobPlugin>,
    tasks: crossbeam_channel::Sender<Task>,
    places: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    capacity: usize,
    queue_timeout: Duration,
}

/// A unit of work for a worker thread.
type Task = Box<dyn FnOnce(&mut WarmInstance) + Send>;

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

/// One worker thread: takes tasks until the pool is dropped, keeping its instance warm
/// between them.
fn work_loop(tasks: crossbeam_channel::Receiver<Task>, mut slot: WarmInstance) {
    // Blocks in the channel while idle: no spinning that would take the CPU from the
    // I/O threads on a small machine.
    for task in tasks.iter() {
        // A bug in a task must not cost the pool a thread: the task's answer channel is
        // dropped (its request gets a 500) and the instance, in an unknown state, goes.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(&mut slot))).is_err() {
            tracing::error!("a worker task panicked; its instance is discarded");
            slot.discard();
        }
    }
}

impl WorkerPool {
    /// Starts the worker threads. `first`, an instance already created and `init`ed
    /// (the proof that the plugin starts), becomes the first worker's.
    pub fn new(plugin: Arc<JobPlugin>, config: &PoolConfig, first: Option<Instance>) -> std::io::Result<WorkerPool> {
        let concurrency = config.concurrency.max(1);
        // Unbounded here because admission bounds it.
        let (tx, rx) = crossbeam_channel::unbounded::<Task>();
        let mut first = first;
        let cancel = Arc::new(AtomicBool::new(false));
        for index in 0..concurrency {
            let slot = WarmInstance::new(plugin.clone(), cancel.clone(), config.recycle_after, first.take());
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("wasmbatch-worker-{index}")).spawn(move || work_loop(rx, slot))?;
        }
        let capacity = concurrency + config.queue_depth;
        Ok(WorkerPool {
            plugin,
            tasks: tx,
            places: Arc::new(Semaphore::new(capacity)),
            bytes: Arc::new(Semaphore::new(config.queue_bytes.min(Semaphore::MAX_PERMITS))),
            capacity,
            queue_timeout: config.queue_timeout,
        })
    }

    /// Waits (up to the queue timeout) for a place and `bytes` of the byte budget.
    /// `bytes` must not exceed the budget (the server's body limit guarantees it).
    pub async fn admit(&self, bytes: usize) -> Result<Admission, Busy> {
        let bytes = u32::try_from(bytes).map_err(|_| Busy)?;
        let metrics = self.plugin.metrics();
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

    /// Runs `task` on a worker with that worker's instance; `admission` is released
    /// when the task ends, before its result is sent. The result arrives through the
    /// returned receiver (closed without a value if every worker thread has died).
    pub fn run<R, F>(&self, admission: Admission, task: F) -> oneshot::Receiver<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut WarmInstance) -> R + Send + 'static,
    {
        let metrics = self.plugin.metrics().clone();
        metrics.queue_depth.inc();
        let (tx, rx) = oneshot::channel();
        let wrapped: Task = Box::new(move |slot: &mut WarmInstance| {
            metrics.queue_depth.dec();
            metrics.instances_busy.inc();
            let result = task(slot);
            metrics.instances_busy.dec();
            // Release the place before answering: a client that sends its next batch as
            // soon as it has this answer must find the place free.
            drop(admission);
            // The receiver is gone when the client disconnected; the work is done anyway.
            let _ = tx.send(result);
        });
        // Fails only when every worker thread has died; the receiver then reports it.
        let _ = self.tasks.send(wrapped);
        rx
    }

    /// Batches admitted and not yet finished (reading, waiting or running).
    pub fn in_flight(&self) -> usize {
        self.capacity - self.places.available_permits()
    }

    /// The plugin.
    pub fn plugin(&self) -> &JobPlugin {
        &self.plugin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(queue_depth: usize, queue_bytes: usize, queue_timeout: Duration) -> WorkerPool {
        let engine = Arc::new(crate::engine::Engine::new(crate::engine::EngineConfig::default()).unwrap());
        let module = wasmtime::Module::new(
            engine.wasmtime(),
            r#"(module (memory (export "memory") 1)
                (func (export "wasmbatch_abi_version") (result i32) i32.const 1)
                (func (export "wasmbatch_alloc") (param i32) (result i32) i32.const 8)
                (func (export "wasmbatch_handle") (param i32 i32 i32 i32) (result i32) i32.const 0))"#,
        )
        .unwrap();
        let metrics = crate::metrics::Metrics::new("t");
        let plugin = Arc::new(crate::plugin::Plugin::new(engine, &module, Default::default(), metrics).unwrap());
        let plugin = plugin.bind(Default::default()).unwrap();
        let config = PoolConfig { concurrency: 1, queue_depth, queue_bytes, queue_timeout, recycle_after: None };
        WorkerPool::new(Arc::new(plugin), &config, None).unwrap()
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
