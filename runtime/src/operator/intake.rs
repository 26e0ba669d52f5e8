//! What a submission goes through before it is a job: Cortex's error kinds for what
//! the validation found, the API's default `workers`, and the idempotency key.

use std::collections::HashMap;

use serde_json::value::RawValue;

use super::error::ErrorKind;
use super::error::ServiceError;
use crate::job::submission::{Problem, SubmissionError};

/// What the Cortex-side validation says about a submission error.
pub(crate) fn cortex_error(e: SubmissionError) -> ServiceError {
    const DOCS: &str = "\n\njob submission schema can be found at https://docs.cortex.dev/v/0.42/";
    let (kind, message) = match &e {
        SubmissionError::Parse { .. } | SubmissionError::NotObject { .. } => (ErrorKind::Error, e.to_string()),
        SubmissionError::Sources { present, .. } if present.is_empty() => (
            ErrorKind::SpecifyExactlyOneKey,
            "specify exactly one of the following keys: item_list, file_path_lister, or delimited_files".into(),
        ),
        SubmissionError::Sources { .. } => (
            ErrorKind::ConflictingFields,
            "please specify either the item_list or file_path_lister field (but not more than one at the same time)"
                .into(),
        ),
        SubmissionError::Field { field, problem, .. } => match problem {
            Problem::Empty => (ErrorKind::CannotBeEmpty, format!("{}: cannot be empty", field.replace('.', ": "))),
            Problem::NoItems => {
                (ErrorKind::TooFewElements, format!("{}: must contain at least 1 elements", last(field)))
            }
            Problem::Required { .. } => (
                ErrorKind::MustBeGreaterThanOrEqualTo,
                format!("{}: must be greater than or equal to 1 (got 0)", field.replace('.', ": ")),
            ),
            Problem::BelowMinimum { got, .. } => (
                ErrorKind::MustBeGreaterThanOrEqualTo,
                format!("{}: must be greater than or equal to 1 (got {got})", field.replace('.', ": ")),
            ),
            Problem::Invalid(message) => (ErrorKind::Error, format!("{field}: {message}")),
        },
    };
    ServiceError::Invalid { kind, message: format!("{message}{DOCS}") }
}

fn last(field: &str) -> &str {
    field.rsplit('.').next().unwrap_or(field)
}

/// `bytes` with `"workers": n` added when the object has no `workers`.
pub(crate) fn with_default_workers(bytes: &[u8], workers: usize) -> Vec<u8> {
    let keys: Result<HashMap<String, &RawValue>, _> = serde_json::from_slice(bytes);
    match keys {
        Ok(keys) if !keys.contains_key("workers") => {
            let open = bytes.iter().position(|&b| b == b'{').expect("a JSON object");
            let empty = bytes[open + 1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
            let mut out = bytes[..=open].to_vec();
            out.extend_from_slice(format!("\"workers\":{workers}{}", if empty { "" } else { "," }).as_bytes());
            out.extend_from_slice(&bytes[open + 1..]);
            out
        }
        _ => bytes.to_vec(),
    }
}

/// The longest `Idempotency-Key` accepted.
pub(super) const MAX_IDEMPOTENCY_KEY: usize = 255;

/// A submission's key, checked, with the digest of the API's name and the body.
pub(crate) fn idempotency_key(
    key: &str,
    api_name: &str,
    body: &[u8],
) -> Result<crate::journal::IdempotencyKey, ServiceError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ServiceError::Invalid {
            kind: ErrorKind::IdempotencyKeyInvalid,
            message: format!(
                "Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters (a UUID, for example)"
            ),
        });
    }
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(api_name.as_bytes());
    hash.update([0]);
    hash.update(body);
    Ok(crate::journal::IdempotencyKey { key: key.to_string(), digest: hash.finalize().into() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::submission::Submission;

    #[test]
    fn default_workers_are_added_only_when_missing() {
        assert_eq!(with_default_workers(br#"{"item_list": 1}"#, 3), br#"{"workers":3,"item_list": 1}"#);
        assert_eq!(with_default_workers(b" { } ", 2), br#" {"workers":2 } "#);
        assert_eq!(with_default_workers(br#"{"workers": 5}"#, 2), br#"{"workers": 5}"#);
    }

    #[test]
    fn submission_errors_get_cortex_kinds_and_messages() {
        let error = |text: &str| match cortex_error(Submission::parse(text.as_bytes(), "s").unwrap_err()) {
            ServiceError::Invalid { kind, message } => {
                (kind.wire_name(), message.split("\n\n").next().unwrap().to_string())
            }
            other => panic!("{other}"),
        };
        assert_eq!(
            error(r#"{"workers": 1}"#),
            (
                "job.specify_exactly_one_key",
                "specify exactly one of the following keys: item_list, file_path_lister, or delimited_files".into()
            )
        );
        assert_eq!(
            error(r#"{"workers": 1, "item_list": {"items": [], "batch_size": 1}}"#).0,
            "configreader.too_few_elements"
        );
        assert_eq!(
            error(r#"{"workers": 1, "item_list": {"items": [1], "batch_size": 0}}"#),
            (
                "configreader.must_be_greater_than_or_equal_to",
                "item_list: batch_size: must be greater than or equal to 1 (got 0)".into()
            )
        );
        assert_eq!(
            error(r#"{"workers": 0, "item_list": {"items": [1], "batch_size": 1}}"#).1,
            "workers: must be greater than or equal to 1 (got 0)"
        );
        assert_eq!(error("{").0, "error");
        let dlq = |v: &str| {
            error(&format!(
                r#"{{"workers": 1, "sqs_dead_letter_queue": {v}, "item_list": {{"items": [1], "batch_size": 1}}}}"#
            ))
        };
        assert_eq!(
            dlq(r#"{"arn": "", "max_receive_count": 3}"#),
            ("configreader.cannot_be_empty", "sqs_dead_letter_queue: arn: cannot be empty".into())
        );
        assert_eq!(dlq(r#"{"max_receive_count": 3}"#).0, "configreader.cannot_be_empty");
        assert_eq!(
            dlq(r#"{"arn": "arn:aws:sqs:us-west-2:1:dlq", "max_receive_count": 0}"#).0,
            "configreader.must_be_greater_than_or_equal_to"
        );
        let ok = Submission::parse(
            br#"{"workers": 1, "sqs_dead_letter_queue": {"arn": "arn:aws:sqs:us-west-2:1:dlq", "max_receive_count": 5}, "item_list": {"items": [1], "batch_size": 1}}"#,
            "s",
        )
        .unwrap();
        assert_eq!(ok.max_attempts, Some(5), "max_receive_count is the attempts per batch");
    }
}
