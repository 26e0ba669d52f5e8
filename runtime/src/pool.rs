//! Worker threads, each with its own warm guest instance, behind a bounded queue.
//!
//! Guest code never runs on an async runtime thread (wasmtime-wasi's synchronous
//! functions panic there, and a long batch would stall I/O). The pool is
//! `concurrency` plain threads fed by one channel; each thread owns its warm
//! [`Instance`], created lazily on the thread's first task and replaced after a fatal
//! failure or after `recycle_after` batches. (A rayon pool did the same job first; its
//! idle workers spin in `sched_yield` before sleeping, which on 2 cores took ~13 % of
//! the CPU from the I/O threads under load — see docs/benchmarks.md.) Admission is bounded: at most
//! `concurrency + queue_depth` tasks are accepted at once, and [`WorkerPool::try_run`]
//! answers [`Busy`] beyond that instead of letting the queue grow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::oneshot;

use crate::failure::Failure;
use crate::plugin::{Instance, Plugin};

/// Every worker is busy and the wait queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("every instance is busy and the wait queue is full")]
pub struct Busy;

/// How many workers and how much waiting.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Worker threads, each with one instance.
    pub concurrency: usize,
    /// Tasks that may wait for a free worker.
    pub queue_depth: usize,
    /// Replace an instance after this many batches (`None`: only after failures).
    pub recycle_after: Option<u64>,
}

/// The worker threads and their admission count.
pub struct WorkerPool {
    plugin: Arc<Plugin>,
    tasks: crossbeam_channel::Sender<Task>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
}

/// A unit of work for a worker thread.
type Task = Box<dyn FnOnce(&mut Worker<'_>) + Send>;

/// A worker's view of its slot, handed to each task.
pub struct Worker<'a> {
    plugin: &'a Plugin,
    slot: &'a mut Option<Instance>,
    cancel: &'a Arc<AtomicBool>,
}

impl Worker<'_> {
    /// This worker's warm instance, created (and `init`ed) now if there is none.
    pub fn instance(&mut self) -> Result<&mut Instance, Failure> {
        if self.slot.is_none() {
            *self.slot = Some(self.plugin.instance(self.cancel.clone())?);
            tracing::debug!("started a guest instance");
        }
        Ok(self.slot.as_mut().expect("just filled"))
    }

    /// The plugin the instances come from.
    pub fn plugin(&self) -> &Plugin {
        self.plugin
    }
}

/// Releases an admission when the task ends, however it ends.
struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One worker thread: takes tasks until the pool is dropped, keeping its instance warm
/// between them.
fn work_loop(
    plugin: Arc<Plugin>,
    tasks: crossbeam_channel::Receiver<Task>,
    mut slot: Option<Instance>,
    recycle_after: Option<u64>,
) {
    let cancel = Arc::new(AtomicBool::new(false));
    // Blocks in the channel while idle: no spinning that would take the CPU from the
    // I/O threads on a small machine.
    for task in tasks.iter() {
        let mut worker = Worker { plugin: &plugin, slot: &mut slot, cancel: &cancel };
        // A bug in a task must not cost the pool a thread: the task's answer channel is
        // dropped (its request gets a 500) and the instance, in an unknown state, goes.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(&mut worker))).is_err() {
            tracing::error!("a worker task panicked; its instance is discarded");
            slot = None;
            continue;
        }
        let retire = slot.as_ref().is_some_and(|i| i.is_poisoned() || recycle_after.is_some_and(|n| i.batches() >= n));
        if retire {
            slot = None;
        }
    }
}

impl WorkerPool {
    /// Starts the worker threads. `first`, an instance already created and `init`ed
    /// (the proof that the plugin starts), becomes the first worker's.
    pub fn new(plugin: Arc<Plugin>, config: &PoolConfig, first: Option<Instance>) -> std::io::Result<WorkerPool> {
        let concurrency = config.concurrency.max(1);
        // Unbounded here because admission bounds it: at most `capacity` tasks exist.
        let (tx, rx) = crossbeam_channel::unbounded::<Task>();
        let mut first = first;
        for index in 0..concurrency {
            let (plugin, rx, slot) = (plugin.clone(), rx.clone(), first.take());
            let recycle_after = config.recycle_after;
            std::thread::Builder::new()
                .name(format!("wasmbatch-worker-{index}"))
                .spawn(move || work_loop(plugin, rx, slot, recycle_after))?;
        }
        Ok(WorkerPool {
            plugin,
            tasks: tx,
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity: concurrency + config.queue_depth,
        })
    }

    /// Runs `task` on a worker with that worker's instance, or answers [`Busy`] at once
    /// when the pool is full. The result arrives through the returned receiver.
    pub fn try_run<R, F>(&self, task: F) -> Result<oneshot::Receiver<R>, Busy>
    where
        R: Send + 'static,
        F: FnOnce(&mut Worker<'_>) -> R + Send + 'static,
    {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        let admission = Admission(self.admitted.clone());
        let metrics = self.plugin.metrics().clone();
        metrics.queue_depth.inc();
        let (tx, rx) = oneshot::channel();
        let wrapped: Task = Box::new(move |worker: &mut Worker<'_>| {
            metrics.queue_depth.dec();
            metrics.instances_busy.inc();
            let result = task(worker);
            metrics.instances_busy.dec();
            // Release the place before answering: a client that sends its next batch as
            // soon as it has this answer must find the place free.
            drop(admission);
            // The receiver is gone when the client disconnected; the work is done anyway.
            let _ = tx.send(result);
        });
        if self.tasks.send(wrapped).is_err() {
            // Only when every worker thread has died; the admission was dropped with the task.
            return Err(Busy);
        }
        Ok(rx)
    }

    /// Tasks admitted and not yet finished (running or waiting).
    pub fn in_flight(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// The plugin.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}
