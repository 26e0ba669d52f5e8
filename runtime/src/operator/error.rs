//! Why a request to the job service failed: one enum, with Cortex's error kinds; the
//! routes turn it into a status and an answer in one place (`routes::service_error`).

/// Why a request to the service failed, with Cortex's error kinds.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No such API.
    #[error("{0} is not deployed")]
    ApiNotDeployed(String),
    /// No such job.
    #[error("failed to get job state: unable to find BatchAPI job {job_id} ({api} api)")]
    JobNotFound {
        /// The API asked about.
        api: String,
        /// The job ID asked about.
        job_id: String,
    },
    /// The submission is not acceptable; `kind` is Cortex's.
    #[error("{message}")]
    Invalid {
        /// Cortex's error kind.
        kind: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Too many jobs not ended yet.
    #[error("{0} jobs are queued or running, the most this operator accepts; retry later")]
    Busy(u64),
    /// An idempotency key used before with another API or body.
    #[error(
        "the idempotency key {0:?} was used with another submission: a key names one submission; send a new key \
         for a new job"
    )]
    KeyReused(String),
    /// The data directory has no room (or less than `min_free_space`): nothing was
    /// recorded.
    #[error("{0}")]
    StorageFull(String),
    /// The journal failed.
    #[error("{0}")]
    Journal(#[from] std::io::Error),
}
