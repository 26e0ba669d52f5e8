//! The job spec: the JSON document Cortex mounts at `/cortex/spec/job.json`.
//!
//! `serve` reads it from `--job-spec` (by default that same path), hands it to every
//! instance's `init`, shows it to guests read-only, and takes the default job ID from
//! it. Its fields are Cortex's: `job_id`, `api_name`, `kind`, `workers`, `config`,
//! `timeout`, `total_batch_count`, `start_time`, ….

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

/// A job spec, parsed and as the bytes guests get.
#[derive(Debug, Clone)]
pub(crate) struct JobSpec {
    value: Value,
    bytes: Arc<[u8]>,
}

/// The spec file is unusable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpecError {
    /// It exists but cannot be read.
    #[error("cannot read job spec {path}: {error}")]
    Read {
        /// The spec file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// It is not JSON.
    #[error("job spec {path} is not valid JSON: {message} at line {line}, column {column}")]
    Parse {
        /// The spec file.
        path: PathBuf,
        /// serde_json's description.
        message: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// It is JSON but not an object.
    #[error("job spec {path} must be a JSON object")]
    NotObject {
        /// The spec file.
        path: PathBuf,
    },
}

impl JobSpec {
    /// The empty spec `{}`: used when no spec file exists.
    pub(crate) fn empty() -> JobSpec {
        JobSpec::from_value(Value::Object(Default::default()))
    }

    /// A spec from a JSON value (an object).
    pub(crate) fn from_value(value: Value) -> JobSpec {
        let bytes = serde_json::to_vec_pretty(&value).expect("a Value always serializes");
        JobSpec { value, bytes: bytes.into() }
    }

    /// Reads the spec at `path`; `Ok(None)` when there is no file there.
    pub(crate) fn load(path: &Path) -> Result<Option<JobSpec>, SpecError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(SpecError::Read { path: path.into(), error }),
        };
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| SpecError::Parse {
            path: path.into(),
            message: e.to_string().split(" at line").next().unwrap_or_default().to_string(),
            line: e.line(),
            column: e.column(),
        })?;
        if !value.is_object() {
            return Err(SpecError::NotObject { path: path.into() });
        }
        Ok(Some(JobSpec { value, bytes: bytes.into() }))
    }

    /// The spec's `job_id`, if it has one.
    pub(crate) fn job_id(&self) -> Option<&str> {
        self.value.get("job_id").and_then(Value::as_str).filter(|id| !id.is_empty())
    }

    /// The spec's `api_name`, if it has one.
    pub(crate) fn api_name(&self) -> Option<&str> {
        self.value.get("api_name").and_then(Value::as_str)
    }

    /// The spec as guests see it.
    pub(crate) fn bytes(&self) -> Arc<[u8]> {
        self.bytes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_none_and_bad_files_are_errors_with_position() {
        let dir = tempfile::tempdir().unwrap();
        assert!(JobSpec::load(&dir.path().join("none.json")).unwrap().is_none());

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{\n  \"job_id\": \"x\",\n  oops\n}").unwrap();
        match JobSpec::load(&bad).unwrap_err() {
            SpecError::Parse { line, column, .. } => assert_eq!((line, column), (3, 3)),
            other => panic!("{other}"),
        }

        let array = dir.path().join("array.json");
        std::fs::write(&array, "[]").unwrap();
        assert!(matches!(JobSpec::load(&array).unwrap_err(), SpecError::NotObject { .. }));

        let good = dir.path().join("job.json");
        std::fs::write(&good, r#"{"job_id":"69b1","api_name":"sum","config":{"a":1}}"#).unwrap();
        let spec = JobSpec::load(&good).unwrap().unwrap();
        assert_eq!((spec.job_id(), spec.api_name()), (Some("69b1"), Some("sum")));
        assert_eq!(&*spec.bytes(), std::fs::read(&good).unwrap().as_slice());
    }
}
