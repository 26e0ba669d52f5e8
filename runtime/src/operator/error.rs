//! Why a request to the job service failed: [`ErrorKind`], each kind with its wire
//! name (Cortex's where Cortex has one) and its HTTP status, and [`ServiceError`], what
//! the service answers; the routes turn either into an answer in one place.

use hyper::StatusCode;

/// The `kind` of an error answer `{"kind", "message"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Cortex's catch-all `error`: a body that is not JSON, a bad field with no kind of
    /// its own, an input that cannot be listed.
    Error,
    /// None of `item_list`, `file_path_lister`, `delimited_files`.
    SpecifyExactlyOneKey,
    /// More than one of them.
    ConflictingFields,
    /// A required string is empty.
    CannotBeEmpty,
    /// A list has no elements.
    TooFewElements,
    /// A number is below its minimum (or missing).
    MustBeGreaterThanOrEqualTo,
    /// An `item_list` item over Cortex's size limit.
    ItemSizeExceedsLimit,
    /// A job input outside the API's `allow_inputs`.
    InputNotAllowed,
    /// No such API.
    ApiNotDeployed,
    /// No such job.
    JobNotFound,
    /// `jobID` is missing from the query.
    QueryParamRequired,
    /// Too many jobs queued or running.
    Busy,
    /// The data directory has no room.
    StorageFull,
    /// An `Idempotency-Key` that is not 1 to 255 visible ASCII characters.
    IdempotencyKeyInvalid,
    /// An `Idempotency-Key` sent before with another submission.
    IdempotencyKeyReused,
    /// No valid bearer token.
    Unauthorized,
    /// No such route.
    NotFound,
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// A configuration reload refused: the file has errors (the running one stays).
    ConfigInvalid,
    /// The service failed (its journal).
    Internal,
}

impl ErrorKind {
    /// Every kind.
    #[cfg(test)]
    pub(crate) const ALL: [ErrorKind; 20] = [
        ErrorKind::Error,
        ErrorKind::SpecifyExactlyOneKey,
        ErrorKind::ConflictingFields,
        ErrorKind::CannotBeEmpty,
        ErrorKind::TooFewElements,
        ErrorKind::MustBeGreaterThanOrEqualTo,
        ErrorKind::ItemSizeExceedsLimit,
        ErrorKind::InputNotAllowed,
        ErrorKind::ApiNotDeployed,
        ErrorKind::JobNotFound,
        ErrorKind::QueryParamRequired,
        ErrorKind::Busy,
        ErrorKind::StorageFull,
        ErrorKind::IdempotencyKeyInvalid,
        ErrorKind::IdempotencyKeyReused,
        ErrorKind::Unauthorized,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::ConfigInvalid,
        ErrorKind::Internal,
    ];

    /// The name in answers: Cortex's for the kinds Cortex has.
    pub(crate) fn wire_name(self) -> &'static str {
        match self {
            ErrorKind::Error => "error",
            ErrorKind::SpecifyExactlyOneKey => "job.specify_exactly_one_key",
            ErrorKind::ConflictingFields => "job.conflicting_fields",
            ErrorKind::CannotBeEmpty => "configreader.cannot_be_empty",
            ErrorKind::TooFewElements => "configreader.too_few_elements",
            ErrorKind::MustBeGreaterThanOrEqualTo => "configreader.must_be_greater_than_or_equal_to",
            ErrorKind::ItemSizeExceedsLimit => "batchapi.item_size_exceeds_limit",
            ErrorKind::InputNotAllowed => "job.input_not_allowed",
            ErrorKind::ApiNotDeployed => "resources.api_not_deployed",
            ErrorKind::JobNotFound => "job.not_found",
            ErrorKind::QueryParamRequired => "endpoints.query_param_required",
            ErrorKind::Busy => "busy",
            ErrorKind::StorageFull => "storage_full",
            ErrorKind::IdempotencyKeyInvalid => "idempotency_key_invalid",
            ErrorKind::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::ConfigInvalid => "config_invalid",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status of an answer of this kind. Cortex answers every error of its
    /// own 400; ours say what happened.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ErrorKind::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            ErrorKind::IdempotencyKeyReused => StatusCode::CONFLICT,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Error
            | ErrorKind::ConfigInvalid
            | ErrorKind::SpecifyExactlyOneKey
            | ErrorKind::ConflictingFields
            | ErrorKind::CannotBeEmpty
            | ErrorKind::TooFewElements
            | ErrorKind::MustBeGreaterThanOrEqualTo
            | ErrorKind::ItemSizeExceedsLimit
            | ErrorKind::InputNotAllowed
            | ErrorKind::ApiNotDeployed
            | ErrorKind::JobNotFound
            | ErrorKind::QueryParamRequired
            | ErrorKind::IdempotencyKeyInvalid => StatusCode::BAD_REQUEST,
        }
    }

    /// Seconds a client should wait before it tries again, for the kinds that pass.
    pub(crate) fn retry_after(self) -> Option<u32> {
        match self {
            ErrorKind::Busy => Some(5),
            ErrorKind::StorageFull => Some(30),
            _ => None,
        }
    }
}

/// Why a request to the service failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
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
    /// The submission is not acceptable.
    #[error("{message}")]
    Invalid {
        /// Its kind.
        kind: ErrorKind,
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
    /// A configuration reload was refused: every problem, one a line.
    #[error("the configuration was not reloaded (the running one stays):\n{}", .0.join("\n"))]
    Config(Vec<String>),
    /// The journal failed.
    #[error("{0}")]
    Journal(#[from] std::io::Error),
}

impl ServiceError {
    /// Its kind.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::ApiNotDeployed(_) => ErrorKind::ApiNotDeployed,
            ServiceError::JobNotFound { .. } => ErrorKind::JobNotFound,
            ServiceError::Invalid { kind, .. } => *kind,
            ServiceError::Busy(_) => ErrorKind::Busy,
            ServiceError::KeyReused(_) => ErrorKind::IdempotencyKeyReused,
            ServiceError::StorageFull(_) => ErrorKind::StorageFull,
            ServiceError::Config(_) => ErrorKind::ConfigInvalid,
            ServiceError::Journal(_) => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One expectation per kind: its wire name and its status. A kind added without a
    /// line here fails the length check.
    #[test]
    fn every_kind_has_its_wire_name_and_status() {
        let expected: [(ErrorKind, &str, u16); 20] = [
            (ErrorKind::Error, "error", 400),
            (ErrorKind::SpecifyExactlyOneKey, "job.specify_exactly_one_key", 400),
            (ErrorKind::ConflictingFields, "job.conflicting_fields", 400),
            (ErrorKind::CannotBeEmpty, "configreader.cannot_be_empty", 400),
            (ErrorKind::TooFewElements, "configreader.too_few_elements", 400),
            (ErrorKind::MustBeGreaterThanOrEqualTo, "configreader.must_be_greater_than_or_equal_to", 400),
            (ErrorKind::ItemSizeExceedsLimit, "batchapi.item_size_exceeds_limit", 400),
            (ErrorKind::InputNotAllowed, "job.input_not_allowed", 400),
            (ErrorKind::ApiNotDeployed, "resources.api_not_deployed", 400),
            (ErrorKind::JobNotFound, "job.not_found", 400),
            (ErrorKind::QueryParamRequired, "endpoints.query_param_required", 400),
            (ErrorKind::Busy, "busy", 503),
            (ErrorKind::StorageFull, "storage_full", 507),
            (ErrorKind::IdempotencyKeyInvalid, "idempotency_key_invalid", 400),
            (ErrorKind::IdempotencyKeyReused, "idempotency_key_reused", 409),
            (ErrorKind::Unauthorized, "unauthorized", 401),
            (ErrorKind::NotFound, "not_found", 404),
            (ErrorKind::MethodNotAllowed, "method_not_allowed", 405),
            (ErrorKind::ConfigInvalid, "config_invalid", 400),
            (ErrorKind::Internal, "internal", 500),
        ];
        assert_eq!(expected.len(), ErrorKind::ALL.len());
        for (kind, name, status) in expected {
            assert!(ErrorKind::ALL.contains(&kind));
            assert_eq!((kind.wire_name(), kind.status().as_u16()), (name, status), "{kind:?}");
        }
        let names: std::collections::HashSet<_> = ErrorKind::ALL.iter().map(|k| k.wire_name()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len(), "wire names are distinct");
        assert_eq!(ErrorKind::Busy.retry_after(), Some(5));
        assert_eq!(ErrorKind::StorageFull.retry_after(), Some(30));
        assert_eq!(ErrorKind::Error.retry_after(), None);
    }

    #[test]
    fn service_errors_know_their_kind() {
        assert_eq!(ServiceError::Busy(3).kind(), ErrorKind::Busy);
        assert_eq!(ServiceError::KeyReused("k".into()).kind(), ErrorKind::IdempotencyKeyReused);
        assert_eq!(ServiceError::StorageFull("full".into()).kind(), ErrorKind::StorageFull);
        assert_eq!(ServiceError::Journal(std::io::Error::other("x")).kind(), ErrorKind::Internal);
        assert_eq!(ServiceError::ApiNotDeployed("a".into()).kind(), ErrorKind::ApiNotDeployed);
        let invalid = ServiceError::Invalid { kind: ErrorKind::TooFewElements, message: "m".into() };
        assert_eq!(invalid.kind(), ErrorKind::TooFewElements);
    }
}
