//! How a guest call can fail, as data.
//!
//! A [`Failure`] is what the host reports for a batch (or an init, or an
//! on-job-complete) that did not succeed. Its [`FailureKind`] decides what happens next:
//! kinds that leave the guest in an unknown state ([`FailureKind::is_fatal`]) make the
//! host throw the instance away.

use std::fmt;

use serde::Serialize;

/// Why a guest call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The call ran past its deadline and was interrupted.
    Timeout,
    /// The guest tried to grow its memory past the limit.
    OutOfMemory,
    /// The guest panicked (the SDK reported the message, then trapped).
    Panic,
    /// The guest trapped: `unreachable`, stack overflow, out-of-bounds access, ….
    Trap,
    /// The guest called `proc_exit` with this code.
    Exit(i32),
    /// The guest returned a failure status, with its message.
    GuestError,
    /// The guest (or the host, before calling it) found the input unusable.
    InvalidInput,
    /// The call was cancelled by the host (its job was stopped).
    Cancelled,
}

impl FailureKind {
    /// The kind's name in logs, JSON bodies and metrics (`exit` for every exit code).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::Panic => "panic",
            FailureKind::Trap => "trap",
            FailureKind::Exit(_) => "exit",
            FailureKind::GuestError => "guest_error",
            FailureKind::InvalidInput => "invalid_input",
            FailureKind::Cancelled => "cancelled",
        }
    }

    /// Whether the instance must be discarded after this failure. A returned status
    /// leaves the guest intact; anything that unwound through a trap does not.
    pub fn is_fatal(self) -> bool {
        !matches!(self, FailureKind::GuestError | FailureKind::InvalidInput)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Exit(code) => write!(f, "exit({code})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// A failed guest call: what kind, the message, and the tail of the guest's stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Why it failed.
    pub kind: FailureKind,
    /// The guest's own message where it gave one, else the host's description.
    pub message: String,
    /// The last lines the guest wrote to stderr during the call, if any.
    pub stderr_tail: String,
}

impl Failure {
    /// A failure of `kind` with `message` and no stderr.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure { kind, message: message.into(), stderr_tail: String::new() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returned_statuses_keep_the_instance_and_traps_do_not() {
        assert!(!FailureKind::GuestError.is_fatal());
        assert!(!FailureKind::InvalidInput.is_fatal());
        for kind in [
            FailureKind::Timeout,
            FailureKind::OutOfMemory,
            FailureKind::Panic,
            FailureKind::Trap,
            FailureKind::Exit(3),
            FailureKind::Cancelled,
        ] {
            assert!(kind.is_fatal(), "{kind}");
        }
    }

    #[test]
    fn kinds_have_stable_names() {
        assert_eq!(FailureKind::Exit(7).as_str(), "exit");
        assert_eq!(FailureKind::Exit(7).to_string(), "exit(7)");
        assert_eq!(FailureKind::OutOfMemory.to_string(), "out_of_memory");
        assert_eq!(serde_json::to_value(FailureKind::GuestError).unwrap(), "guest_error");
    }
}
