//! Worker threads, each with its own warm guest instance, behind a bounded queue.
//!
//! Guest code never runs on an async runtime thread (wasmtime-wasi's synchronous
//! functions panic there, and a long batch would stall I/O). The pool is a rayon
//! thread pool of `concurrency` threads; each thread owns one slot holding its warm
//! [`Instance`], created lazily on the thread's first task and replaced after a fatal
//! failure or after `recycle_after` batches. Admission is bounded: at most
//! `concurrency + queue_depth` tasks are accepted at once, and [`WorkerPool::try_run`]
//! answers [`Busy`] beyond that instead of letting the queue grow.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

/// The thread pool and its instances.
pub struct WorkerPool {
    plugin: Arc<Plugin>,
    threads: rayon::ThreadPool,
    slots: Arc<Vec<Mutex<Option<Instance>>>>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
    recycle_after: Option<u64>,
    cancel: Arc<AtomicBool>,
}

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

impl WorkerPool {
    /// Starts the worker threads. `first`, an instance already created and `init`ed
    /// (the proof that the plugin starts), becomes the first worker's.
    pub fn new(plugin: Arc<Plugin>, config: &PoolConfig, first: Option<Instance>) -> std::io::Result<WorkerPool> {
        let concurrency = config.concurrency.max(1);
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(concurrency)
            .thread_name(|i| format!("wasmbatch-worker-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        let slots: Vec<Mutex<Option<Instance>>> = (0..concurrency).map(|_| Mutex::new(None)).collect();
        *slots[0].lock().unwrap_or_else(|e| e.into_inner()) = first;
        Ok(WorkerPool {
            plugin,
            threads,
            slots: Arc::new(slots),
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity: concurrency + config.queue_depth,
            recycle_after: config.recycle_after,
            cancel: Arc::new(AtomicBool::new(false)),
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
        let plugin = self.plugin.clone();
        let slots = self.slots.clone();
        let cancel = self.cancel.clone();
        let recycle_after = self.recycle_after;
        self.threads.spawn(move || {
            metrics.queue_depth.dec();
            metrics.instances_busy.inc();
            let index = rayon::current_thread_index().expect("runs on a pool thread");
            // One thread per slot: the lock is never contended, it only proves it.
            let mut slot = slots[index].lock().unwrap_or_else(|e| e.into_inner());
            let mut worker = Worker { plugin: &plugin, slot: &mut slot, cancel: &cancel };
            let result = task(&mut worker);
            let retire =
                slot.as_ref().is_some_and(|i| i.is_poisoned() || recycle_after.is_some_and(|n| i.batches() >= n));
            if retire {
                *slot = None;
            }
            drop(slot);
            metrics.instances_busy.dec();
            // Release the place before answering: a client that sends its next batch as
            // soon as it has this answer must find the place free.
            drop(admission);
            // The receiver is gone when the client disconnected; the work is done anyway.
            let _ = tx.send(result);
        });
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
