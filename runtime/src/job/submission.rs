//! The job file: a Cortex job submission, parsed and validated as Cortex does.
//!
//! `workers`, `config`, `timeout`, and exactly one of `item_list {items, batch_size}`,
//! `delimited_files {s3_paths, includes, excludes, batch_size}` or `file_path_lister
//! {same}`. Unknown keys are ignored, as Cortex's `json.Unmarshal` ignores them. Our
//! one addition is `max_attempts` (retries of a failed batch). In `s3_paths`, local
//! paths and `file://` URLs are accepted; `s3://` is refused with a clear message.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// A validated job submission.
#[derive(Debug)]
pub struct Submission {
    /// Workers (threads or connections) handling batches at once.
    pub workers: usize,
    /// The user's `config` object (`Null` when absent).
    pub config: Value,
    /// Seconds the job may run (`None`: no limit).
    pub timeout: Option<u64>,
    /// Attempts per batch before it is dead-lettered (`None`: the command line's).
    pub max_attempts: Option<u32>,
    /// Where the items come from.
    pub source: SourceSpec,
}

/// The input source of a job.
#[derive(Debug)]
pub enum SourceSpec {
    /// Items listed in the job file.
    ItemList {
        /// The items, as raw JSON.
        items: Vec<Box<RawValue>>,
        /// Items per batch.
        batch_size: usize,
    },
    /// Files of whitespace-separated JSON values (JSON Lines included).
    DelimitedFiles(FileSource),
    /// File paths as items.
    FilePathLister(FileSource),
}

/// The fields `delimited_files` and `file_path_lister` share.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// Files or directories (local paths, `file://` URLs).
    pub paths: Vec<PathBuf>,
    /// Globs a path must match (any of them); empty means all.
    pub includes: Vec<String>,
    /// Globs that drop a matching path.
    pub excludes: Vec<String>,
    /// Items per batch.
    pub batch_size: usize,
}

/// A job file Cortex (or we) would refuse.
#[derive(Debug, thiserror::Error)]
pub enum SubmissionError {
    /// Not JSON, or a field of the wrong type.
    #[error("{origin}: line {line}, column {column}: {message}")]
    Parse {
        /// Where the job came from.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A field has an invalid value.
    #[error("{origin}: {field}: {message}")]
    Field {
        /// Where the job came from.
        origin: String,
        /// The field, dotted (`item_list.batch_size`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Not exactly one input source.
    #[error("{origin}: specify exactly one of item_list, file_path_lister or delimited_files ({found})")]
    Sources {
        /// Where the job came from.
        origin: String,
        /// What was found.
        found: String,
    },
}

#[derive(Deserialize)]
struct Raw {
    workers: Option<i64>,
    config: Option<Value>,
    timeout: Option<i64>,
    max_attempts: Option<i64>,
    item_list: Option<RawItemList>,
    file_path_lister: Option<RawFileSource>,
    delimited_files: Option<RawFileSource>,
}

#[derive(Deserialize)]
struct RawItemList {
    items: Option<Vec<Box<RawValue>>>,
    batch_size: Option<i64>,
}

#[derive(Deserialize)]
struct RawFileSource {
    s3_paths: Option<Vec<String>>,
    #[serde(default)]
    includes: Vec<String>,
    #[serde(default)]
    excludes: Vec<String>,
    batch_size: Option<i64>,
}

impl Submission {
    /// Parses and validates a job file's bytes; `origin` names it in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Submission, SubmissionError> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| SubmissionError::Parse {
            origin: origin.into(),
            line: e.line(),
            column: e.column(),
            message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
        })?;
        let field = |field: &str, message: String| SubmissionError::Field {
            origin: origin.into(),
            field: field.into(),
            message,
        };
        let at_least_one = |name: &str, value: Option<i64>| -> Result<usize, SubmissionError> {
            match value {
                None => Err(field(name, "is required (an integer ≥ 1)".into())),
                Some(n) if n < 1 => Err(field(name, format!("must be at least 1, got {n}"))),
                Some(n) => Ok(n as usize),
            }
        };

        let present: Vec<&str> = [
            ("item_list", raw.item_list.is_some()),
            ("file_path_lister", raw.file_path_lister.is_some()),
            ("delimited_files", raw.delimited_files.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, there)| there.then_some(name))
        .collect();
        if present.len() != 1 {
            let found = if present.is_empty() { "none given".into() } else { format!("got {}", present.join(" and ")) };
            return Err(SubmissionError::Sources { origin: origin.into(), found });
        }

        let file_source = |name: &str, raw: RawFileSource| -> Result<FileSource, SubmissionError> {
            let paths = raw.s3_paths.unwrap_or_default();
            if paths.is_empty() {
                return Err(field(&format!("{name}.s3_paths"), "must list at least one path".into()));
            }
            let paths = paths
                .iter()
                .map(|p| local_path(p).map_err(|m| field(&format!("{name}.s3_paths"), m)))
                .collect::<Result<Vec<_>, _>>()?;
            for (key, globs) in [("includes", &raw.includes), ("excludes", &raw.excludes)] {
                for g in globs {
                    super::glob::Glob::new(g).map_err(|m| field(&format!("{name}.{key}"), format!("{g:?}: {m}")))?;
                }
            }
            Ok(FileSource {
                paths,
                includes: raw.includes,
                excludes: raw.excludes,
                batch_size: at_least_one(&format!("{name}.batch_size"), raw.batch_size)?,
            })
        };

        let source = if let Some(list) = raw.item_list {
            let items = list.items.unwrap_or_default();
            if items.is_empty() {
                return Err(field("item_list.items", "must contain at least one item".into()));
            }
            SourceSpec::ItemList { items, batch_size: at_least_one("item_list.batch_size", list.batch_size)? }
        } else if let Some(lister) = raw.file_path_lister {
            SourceSpec::FilePathLister(file_source("file_path_lister", lister)?)
        } else {
            SourceSpec::DelimitedFiles(file_source("delimited_files", raw.delimited_files.expect("one source"))?)
        };

        let timeout = match raw.timeout {
            None => None,
            Some(t) if t < 1 => return Err(field("timeout", format!("must be at least 1 (seconds), got {t}"))),
            Some(t) => Some(t as u64),
        };
        let max_attempts = match raw.max_attempts {
            None => None,
            Some(n) if !(1..=1000).contains(&n) => {
                return Err(field("max_attempts", format!("must be between 1 and 1000, got {n}")));
            }
            Some(n) => Some(n as u32),
        };
        let config = raw.config.unwrap_or(Value::Null);
        if !(config.is_object() || config.is_null()) {
            return Err(field("config", "must be a JSON object".into()));
        }
        Ok(Submission { workers: at_least_one("workers", raw.workers)?, config, timeout, max_attempts, source })
    }
}

/// A local path from an `s3_paths` entry: a plain path or a `file://` URL.
fn local_path(entry: &str) -> Result<PathBuf, String> {
    if let Some(rest) = entry.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(format!("{entry:?}: a file:// URL needs an absolute path (file:///data/…)"));
        }
        return Ok(PathBuf::from(rest));
    }
    if entry.starts_with("s3://") {
        return Err(format!("{entry:?}: s3:// paths are not supported yet; use a local path or a file:// URL"));
    }
    if let Some((scheme, _)) = entry.split_once("://") {
        return Err(format!("{entry:?}: unsupported scheme {scheme}://; use a local path or a file:// URL"));
    }
    if entry.is_empty() {
        return Err("an empty path".into());
    }
    Ok(PathBuf::from(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Submission, SubmissionError> {
        Submission::parse(text.as_bytes(), "job.json")
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn item_list_job_parses() {
        let job = parse(r#"{"workers": 2, "timeout": 60, "config": {"k": 1}, "item_list": {"items": [1, {"a": 2}], "batch_size": 1}}"#).unwrap();
        assert_eq!((job.workers, job.timeout, job.max_attempts), (2, Some(60), None));
        match job.source {
            SourceSpec::ItemList { items, batch_size } => {
                assert_eq!((items.len(), batch_size), (2, 1));
                assert_eq!(items[1].get(), r#"{"a": 2}"#);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_sources_take_paths_and_file_urls() {
        let job = parse(r#"{"workers": 1, "max_attempts": 5, "delimited_files": {"s3_paths": ["data", "file:///srv/in"], "includes": ["**.jsonl"], "batch_size": 10}}"#).unwrap();
        assert_eq!(job.max_attempts, Some(5));
        match job.source {
            SourceSpec::DelimitedFiles(f) => {
                assert_eq!(f.paths, vec![PathBuf::from("data"), PathBuf::from("/srv/in")]);
                assert_eq!(f.includes, vec!["**.jsonl"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_validation_error_names_its_field() {
        let list = r#""item_list": {"items": [1], "batch_size": 1}"#;
        assert_eq!(error(&format!("{{{list}}}")), "job.json: workers: is required (an integer ≥ 1)");
        assert_eq!(error(&format!(r#"{{"workers": 0, {list}}}"#)), "job.json: workers: must be at least 1, got 0");
        assert_eq!(
            error(&format!(r#"{{"workers": 1, "timeout": 0, {list}}}"#)),
            "job.json: timeout: must be at least 1 (seconds), got 0"
        );
        assert_eq!(
            error(r#"{"workers": 1, "item_list": {"items": [], "batch_size": 1}}"#),
            "job.json: item_list.items: must contain at least one item"
        );
        assert_eq!(
            error(r#"{"workers": 1, "item_list": {"items": [1], "batch_size": 0}}"#),
            "job.json: item_list.batch_size: must be at least 1, got 0"
        );
        assert_eq!(
            error(r#"{"workers": 1, "item_list": {"items": [1]}}"#),
            "job.json: item_list.batch_size: is required (an integer ≥ 1)"
        );
        assert_eq!(
            error(r#"{"workers": 1}"#),
            "job.json: specify exactly one of item_list, file_path_lister or delimited_files (none given)"
        );
        assert_eq!(
            error(&format!(r#"{{"workers": 1, {list}, "delimited_files": {{"s3_paths": ["x"], "batch_size": 1}}}}"#)),
            "job.json: specify exactly one of item_list, file_path_lister or delimited_files (got item_list and delimited_files)"
        );
        assert_eq!(
            error(r#"{"workers": 1, "file_path_lister": {"s3_paths": [], "batch_size": 1}}"#),
            "job.json: file_path_lister.s3_paths: must list at least one path"
        );
        assert!(
            error(r#"{"workers": 1, "file_path_lister": {"s3_paths": ["s3://bucket/images"], "batch_size": 1}}"#)
                .contains("s3:// paths are not supported yet")
        );
        assert!(
            error(r#"{"workers": 1, "file_path_lister": {"s3_paths": ["gs://b"], "batch_size": 1}}"#)
                .contains("unsupported scheme gs://")
        );
        assert!(
            error(r#"{"workers": 1, "file_path_lister": {"s3_paths": ["d"], "includes": ["[a"], "batch_size": 1}}"#)
                .starts_with("job.json: file_path_lister.includes: \"[a\"")
        );
        assert_eq!(
            error(&format!(r#"{{"workers": 1, "config": [1], {list}}}"#)),
            "job.json: config: must be a JSON object"
        );
        assert_eq!(
            error(&format!(r#"{{"workers": 1, "max_attempts": 0, {list}}}"#)),
            "job.json: max_attempts: must be between 1 and 1000, got 0"
        );
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err =
            parse("{\n  \"workers\": 1,\n  \"item_list\": {\"items\": [1,, 2], \"batch_size\": 1}\n}").unwrap_err();
        match err {
            SubmissionError::Parse { line, column, .. } => assert_eq!((line, column), (3, 29)),
            other => panic!("{other}"),
        }
        let err = parse(r#"{"workers": "two", "item_list": {"items": [1], "batch_size": 1}}"#).unwrap_err();
        assert!(err.to_string().starts_with("job.json: line 1, column 17: invalid type: string \"two\""), "{err}");
    }
}
