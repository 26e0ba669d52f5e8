//! The life of a warm guest instance, in one place for every driver.
//!
//! A [`WarmInstance`] is a worker's slot: it creates its instance on first use (with
//! `_initialize` and `init`), hands it batch after batch, and retires it after a fatal
//! failure or after `recycle_after` batches, so that the next call starts a fresh one.
//! The instance pool of `serve` and the in-process executor of `run`, the operator and
//! workers all drive their guests through this type, so they cannot disagree about
//! when an instance lives. Its calls are async; [`crate::engine::drive`] runs them on a
//! plain thread.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::Bytes;

use crate::failure::Failure;
use crate::plugin::{BatchCall, BatchOutput, Instance, JobPlugin};

/// One worker's instance slot.
pub struct WarmInstance {
    plugin: Arc<JobPlugin>,
    instance: Option<Instance>,
    cancel: Arc<AtomicBool>,
    recycle_after: Option<u64>,
}

impl WarmInstance {
    /// A slot whose instances see `cancel` (set: every call is interrupted) and are
    /// replaced after `recycle_after` batches. `first`, an instance already started,
    /// fills it at once.
    pub fn new(
        plugin: Arc<JobPlugin>,
        cancel: Arc<AtomicBool>,
        recycle_after: Option<u64>,
        first: Option<Instance>,
    ) -> WarmInstance {
        WarmInstance { plugin, instance: first, cancel, recycle_after }
    }

    /// The plugin the instances come from.
    pub fn plugin(&self) -> &Arc<JobPlugin> {
        &self.plugin
    }

    async fn instance(&mut self) -> Result<&mut Instance, Failure> {
        if self.instance.is_none() {
            self.instance = Some(self.plugin.instance(self.cancel.clone()).await?);
            tracing::debug!("started a guest instance");
        }
        Ok(self.instance.as_mut().expect("just filled"))
    }

    /// Retires the instance when a failure poisoned it or it has done its batches.
    fn settle(&mut self) {
        let retire = self
            .instance
            .as_ref()
            .is_some_and(|i| i.is_poisoned() || self.recycle_after.is_some_and(|n| i.batches() >= n));
        if retire {
            self.instance = None;
        }
    }

    /// Hands one batch to the instance (started first if there is none).
    pub async fn handle(&mut self, job_id: &str, batch: BatchCall) -> Result<BatchOutput, Failure> {
        let result = match self.instance().await {
            Ok(instance) => instance.handle(job_id, batch).await.map(|()| instance.take_output()),
            Err(failure) => Err(failure),
        };
        self.settle();
        result.map_err(|failure| self.hint(failure))
    }

    /// A failure that names `/mnt` when nothing is mounted there says so.
    fn hint(&self, mut failure: Failure) -> Failure {
        if self.plugin.mount().is_none() && failure.message.contains(crate::sandbox::GUEST_MOUNT) {
            failure
                .message
                .push_str(" (nothing is mounted at /mnt: give --mount DIR, or `mount` in the API's settings)");
        }
        failure
    }

    /// Runs the on-job-complete hook; `None` when the plugin has none.
    pub async fn on_job_complete(&mut self, job_id: &str, body: &Bytes) -> Option<Result<(), Failure>> {
        if !self.plugin.capabilities().on_job_complete {
            return None;
        }
        let result = match self.instance().await {
            Ok(instance) => instance.on_job_complete(job_id, body).await.unwrap_or(Ok(())),
            Err(failure) => Err(failure),
        };
        self.settle();
        Some(result)
    }

    /// Throws the instance away (its state is unknown, e.g. after a host panic).
    pub fn discard(&mut self) {
        self.instance = None;
    }
}
