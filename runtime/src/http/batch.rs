//! Request bodies: a batch must be a JSON array; on-job-complete takes Cortex's two
//! forms.

use serde_json::Value;

use super::error::ApiError;
use crate::plugin::ItemSpans;

/// Checks that `body` is one JSON array and returns where its items lie (the guest
/// gets them, and does not scan the batch again).
pub fn check_batch(body: &[u8]) -> Result<ItemSpans, ApiError> {
    // JSON text is UTF-8; serde skips the strings it ignores without checking them.
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::InvalidBatch(format!("the body is not valid JSON: invalid UTF-8 at byte {}", e.valid_up_to()))
    })?;
    match ItemSpans::scan(text) {
        Ok(items) => Ok(items),
        Err(e) if e.is_data() => {
            let found = match body.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'{') => "an object",
                Some(b'"') => "a string",
                Some(b't' | b'f') => "a boolean",
                Some(b'n') => "null",
                _ => "a number",
            };
            Err(ApiError::InvalidBatch(format!("the batch must be a JSON array of items, but the body is {found}")))
        }
        Err(e) if e.is_eof() && body.iter().all(u8::is_ascii_whitespace) => {
            Err(ApiError::InvalidBatch("the batch must be a JSON array of items, but the body is empty".into()))
        }
        Err(e) => Err(ApiError::InvalidBatch(format!("the body is not valid JSON: {e}"))),
    }
}

/// Turns an on-job-complete body into the JSON object the guest gets.
///
/// Cortex sends `{"message":"job_complete"}` from its enqueuer but the bare, unquoted
/// string `job_complete` when it re-queues the marker; both (and an empty body, and
/// the quoted string) become `{"message":"job_complete"}`. A JSON object without a
/// `message` gets one; its other fields (e.g. batch counts) are kept.
pub fn normalize_completion(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    const CANONICAL: &[u8] = br#"{"message":"job_complete"}"#;
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() || trimmed == b"job_complete" {
        return Ok(CANONICAL.to_vec());
    }
    let invalid = |what: &str| {
        ApiError::InvalidCompletion(format!(
            "the on-job-complete body must be {{\"message\":\"job_complete\"}} or job_complete, but it is {what}"
        ))
    };
    match serde_json::from_slice::<Value>(trimmed) {
        Ok(Value::String(s)) if s == "job_complete" => Ok(CANONICAL.to_vec()),
        Ok(Value::Object(mut object)) => {
            object.entry("message").or_insert_with(|| Value::String("job_complete".into()));
            Ok(serde_json::to_vec(&object).expect("a map always serializes"))
        }
        Ok(other) => Err(invalid(&format!("the JSON value {other}"))),
        Err(e) => Err(invalid(&format!("not JSON ({e})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_are_counted() {
        assert_eq!(check_batch(b"[]").unwrap().len(), 0);
        assert_eq!(check_batch(b" [1, {\"a\": [2]}, \"x\"]\n").unwrap().len(), 3);
    }

    #[test]
    fn non_arrays_are_named() {
        let msg = |b: &[u8]| check_batch(b).unwrap_err().to_string();
        assert!(msg(b"{\"a\":1}").ends_with("the body is an object"));
        assert!(msg(b"\"x\"").ends_with("the body is a string"));
        assert!(msg(b"42").ends_with("the body is a number"));
        assert!(msg(b"null").ends_with("the body is null"));
        assert!(msg(b"").ends_with("the body is empty"));
        assert!(msg(b"[1, 2").starts_with("the body is not valid JSON"), "{}", msg(b"[1, 2"));
        assert!(msg(b"[1] [2]").starts_with("the body is not valid JSON: trailing characters"));
        // Found by the batch_body fuzz target: invalid UTF-8 inside an ignored string.
        assert_eq!(msg(b"[1, {\"a\": \"\xfe\xff\"}]"), "the body is not valid JSON: invalid UTF-8 at byte 11");
    }

    #[test]
    fn completion_bodies_of_both_cortex_forms_are_accepted() {
        let canonical = br#"{"message":"job_complete"}"#.to_vec();
        assert_eq!(normalize_completion(b"job_complete").unwrap(), canonical);
        assert_eq!(normalize_completion(br#"{"message":"job_complete"}"#).unwrap(), canonical);
        assert_eq!(normalize_completion(br#""job_complete""#).unwrap(), canonical);
        assert_eq!(normalize_completion(b"").unwrap(), canonical);
        let counted: Value =
            serde_json::from_slice(&normalize_completion(br#"{"succeeded":2,"failed":1}"#).unwrap()).unwrap();
        assert_eq!(counted, serde_json::json!({"message": "job_complete", "succeeded": 2, "failed": 1}));
        assert!(normalize_completion(b"[1]").is_err());
        assert!(normalize_completion(b"done").is_err());
    }
}
