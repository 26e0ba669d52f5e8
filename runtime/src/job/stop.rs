//! Whether and why a job ends early: one flag shared by a job's runner, its workers,
//! its executors, the budget they wait on, and signal handlers.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Why a job ends early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The job's `timeout` passed.
    TimedOut,
    /// The user stopped it (Ctrl-C, SIGTERM).
    Stopped,
    /// The process is shutting down and the job will resume on the next start:
    /// batches not finished are left as they are, neither counted nor dead-lettered.
    Shutdown,
}

impl StopReason {
    /// The name in dead-letter records (`timed_out`, `stopped`).
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::TimedOut => "timed_out",
            StopReason::Stopped => "stopped",
            StopReason::Shutdown => "shutdown",
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            StopReason::TimedOut => "the job's timeout passed before this batch was handled",
            StopReason::Stopped => "the job was stopped before this batch was handled",
            StopReason::Shutdown => "the process shut down before this batch was handled",
        }
    }
}

/// Whether and why a job ends early; shared between the runner, its workers and
/// signal handlers. Threads can sleep on it and async code can await it: both wake
/// when a stop is requested.
#[derive(Debug, Clone)]
pub struct StopFlag(Arc<StopState>);

#[derive(Debug)]
struct StopState {
    reason: Mutex<Option<StopReason>>,
    wake: Condvar,
    notify: tokio::sync::watch::Sender<bool>,
}

impl Default for StopFlag {
    fn default() -> Self {
        StopFlag(Arc::new(StopState {
            reason: Mutex::new(None),
            wake: Condvar::new(),
            notify: tokio::sync::watch::channel(false).0,
        }))
    }
}

impl StopFlag {
    /// Asks the job to stop (Ctrl-C): dispatching stops, batches in flight are
    /// interrupted. The first reason given wins.
    pub fn stop(&self) {
        self.set(StopReason::Stopped);
    }

    /// Stops with `reason`, unless a stop was asked for already.
    pub fn set(&self, reason: StopReason) {
        let mut current = self.0.reason.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_none() {
            *current = Some(reason);
            self.0.wake.notify_all();
            self.0.notify.send_replace(true);
        }
    }

    /// Why the job is stopping, if it is.
    pub fn reason(&self) -> Option<StopReason> {
        *self.0.reason.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a stop was requested.
    pub fn is_set(&self) -> bool {
        self.reason().is_some()
    }

    /// Sleeps for `duration` or until a stop, whichever comes first; `true` if stopped.
    pub fn sleep(&self, duration: Duration) -> bool {
        self.sleep_unless(duration, || false)
    }

    /// Sleeps for `duration`, until a stop, or until `ended()` holds when looked at
    /// again after a [`StopFlag::wake`]; `true` if stopped.
    pub fn sleep_unless(&self, duration: Duration, ended: impl Fn() -> bool) -> bool {
        let guard = self.0.reason.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .0
            .wake
            .wait_timeout_while(guard, duration, |r| r.is_none() && !ended())
            .unwrap_or_else(|e| e.into_inner());
        guard.is_some()
    }

    /// Wakes every sleeper of [`StopFlag::sleep_unless`] to look at its condition again
    /// (no stop): call it after making that condition true.
    pub fn wake(&self) {
        let _guard = self.0.reason.lock().unwrap_or_else(|e| e.into_inner());
        self.0.wake.notify_all();
    }

    /// Resolves when a stop is requested.
    pub async fn stopped(&self) {
        let mut rx = self.0.notify.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}
