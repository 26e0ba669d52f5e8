//! The job file: a Cortex job submission, parsed and validated as Cortex does.
//!
//! `workers`, `config`, `timeout`, and exactly one of `item_list {items, batch_size}`,
//! `delimited_files {s3_paths, includes, excludes, batch_size}` or `file_path_lister
//! {same}`. Unknown keys are ignored, as Cortex's `json.Unmarshal` ignores them, and
//! named in [`Submission::warnings`] with the nearest known key. Our
//! one addition is `max_attempts` (retries of a failed batch). In `s3_paths`, object
//! URLs (`s3://`, `gs://`, `az://`; read through `crate::objects`), local paths and
//! `file://` URLs are accepted.

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
    /// Without `max_attempts`, Cortex's `sqs_dead_letter_queue.max_receive_count`.
    pub max_attempts: Option<u32>,
    /// Cortex's `sqs_dead_letter_queue`, validated as Cortex does; kept in the spec.
    /// Its `max_receive_count` is the job's attempts per batch, and its dead letters
    /// are kept by wasmbatch whatever the ARN names.
    pub dead_letter_queue: Option<Value>,
    /// Where the items come from.
    pub source: SourceSpec,
    /// Keys nobody reads, each with the nearest known one: accepted (Cortex ignores
    /// unknown keys) and said once, so that a misspelt `confg` does not pass unseen.
    pub warnings: Vec<String>,
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
    #[error("{origin}: {field}: {problem}")]
    Field {
        /// Where the job came from.
        origin: String,
        /// The field, dotted (`item_list.batch_size`).
        field: String,
        /// What is wrong.
        problem: Problem,
    },
    /// The job file is not a JSON object.
    #[error("{origin}: the job {message}")]
    NotObject {
        /// Where the job came from.
        origin: String,
        /// What it is instead.
        message: String,
    },
    /// Not exactly one input source.
    #[error(
        "{origin}: specify exactly one of item_list, file_path_lister or delimited_files ({})",
        if present.is_empty() { "none given".to_string() } else { format!("got {}", present.join(" and ")) }
    )]
    Sources {
        /// Where the job came from.
        origin: String,
        /// The sources it gives (none, or more than one).
        present: Vec<&'static str>,
    },
}

/// The most workers a job may ask for (threads, or connections to the servers).
pub const MAX_WORKERS: i64 = 1024;
/// The largest `batch_size`.
pub const MAX_BATCH_SIZE: i64 = 1_000_000;
/// The longest `timeout`, in seconds (a year).
pub const MAX_TIMEOUT: i64 = 365 * 24 * 3600;

#[derive(Deserialize)]
struct Raw {
    workers: Option<Value>,
    config: Option<Value>,
    timeout: Option<Value>,
    max_attempts: Option<Value>,
    sqs_dead_letter_queue: Option<Value>,
    item_list: Option<Box<RawValue>>,
    file_path_lister: Option<Box<RawValue>>,
    delimited_files: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct RawItemList {
    items: Option<Vec<Box<RawValue>>>,
    batch_size: Option<Value>,
}

#[derive(Deserialize)]
struct RawFileSource {
    s3_paths: Option<Vec<String>>,
    #[serde(default)]
    includes: Vec<String>,
    #[serde(default)]
    excludes: Vec<String>,
    batch_size: Option<Value>,
}

/// What is wrong with a field: the kinds Cortex tells apart, and the rest in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A required integer is missing.
    #[error("is required (an integer from 1 to {max})")]
    Required {
        /// Its largest value.
        max: i64,
    },
    /// A number below its minimum; `unit` follows the number (` (seconds)`).
    #[error("must be at least {min}, got {got}{unit}")]
    BelowMinimum {
        /// The minimum.
        min: i64,
        /// The value given, as written.
        got: String,
        /// What the number counts, in parentheses, or nothing.
        unit: &'static str,
    },
    /// A required string is empty.
    #[error("cannot be empty")]
    Empty,
    /// A list with no element.
    #[error("must contain at least one item")]
    NoItems,
    /// Anything else.
    #[error("{0}")]
    Invalid(String),
}

impl Problem {
    /// The problem of a number that counts `unit` (`seconds`).
    fn counting(self, unit: &'static str) -> Problem {
        match self {
            Problem::BelowMinimum { min, got, .. } => Problem::BelowMinimum { min, got, unit },
            Problem::Invalid(message) => Problem::Invalid(format!("{message}{unit}")),
            other => other,
        }
    }
}

/// An integer field in `min..=max`; `None` when absent (or `null`).
fn integer(value: Option<&Value>, min: i64, max: i64) -> Result<Option<i64>, Problem> {
    let n = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(other) => return Err(Problem::Invalid(format!("must be an integer, got {}", describe(other)))),
    };
    let below = |got: String| Problem::BelowMinimum { min, got, unit: "" };
    let above = |got: String| Problem::Invalid(format!("must be at most {max}, got {got}"));
    match (n.as_i64(), n.as_u64()) {
        (Some(i), _) if i < min => Err(below(i.to_string())),
        (Some(i), _) if i > max => Err(above(i.to_string())),
        (Some(i), _) => Ok(Some(i)),
        (None, Some(u)) => Err(above(u.to_string())),
        // A float: out of range, or not whole.
        _ => match n.as_f64().unwrap_or(f64::NAN) {
            f if f > max as f64 => Err(above(n.to_string())),
            f if f < min as f64 => Err(below(n.to_string())),
            _ => Err(Problem::Invalid(format!("must be an integer, got {n}"))),
        },
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What a JSON text starts with, for "must be an object" messages.
fn json_kind(text: &[u8]) -> &'static str {
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        None => "empty",
        _ => "a number",
    }
}

/// Parses `bytes` into `T`, which must be written as a JSON object (serde would also
/// take an array, matched to the fields by position).
fn object<T: serde::de::DeserializeOwned>(bytes: &[u8], origin: &str, field: &str) -> Result<T, SubmissionError> {
    let kind = json_kind(bytes);
    let parse_error = |e: serde_json::Error| SubmissionError::Parse {
        origin: origin.into(),
        line: e.line(),
        column: e.column(),
        message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
    };
    if kind != "an object" {
        // A syntax error is reported as such, with its position.
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(parse_error)?;
        let message = format!("must be a JSON object, but it is {kind}");
        return Err(match field {
            "" => SubmissionError::NotObject { origin: origin.into(), message },
            _ => SubmissionError::Field {
                origin: origin.into(),
                field: field.into(),
                problem: Problem::Invalid(message),
            },
        });
    }
    serde_json::from_slice(bytes).map_err(|e| match field {
        "" => parse_error(e),
        // Positions inside a nested value would be relative to it: name the field.
        _ => SubmissionError::Field {
            origin: origin.into(),
            field: field.into(),
            problem: Problem::Invalid(e.to_string().split(" at line ").next().unwrap_or_default().to_string()),
        },
    })
}

impl Submission {
    /// Parses and validates a job file's bytes; `origin` names it in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Submission, SubmissionError> {
        let raw: Raw = object(bytes, origin, "")?;
        let field = |field: &str, problem: Problem| SubmissionError::Field {
            origin: origin.into(),
            field: field.into(),
            problem,
        };
        let invalid = |name: &str, message: String| field(name, Problem::Invalid(message));
        let within = |name: &str, value: Option<Value>, max: i64| -> Result<usize, SubmissionError> {
            match integer(value.as_ref(), 1, max).map_err(|p| field(name, p))? {
                None => Err(field(name, Problem::Required { max })),
                Some(n) => Ok(n as usize),
            }
        };

        let present: Vec<&'static str> = [
            ("item_list", raw.item_list.is_some()),
            ("file_path_lister", raw.file_path_lister.is_some()),
            ("delimited_files", raw.delimited_files.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, there)| there.then_some(name))
        .collect();
        if present.len() != 1 {
            return Err(SubmissionError::Sources { origin: origin.into(), present });
        }

        let file_source = |name: &str, raw: Box<RawValue>| -> Result<FileSource, SubmissionError> {
            let raw: RawFileSource = object(raw.get().as_bytes(), origin, name)?;
            let paths = raw.s3_paths.unwrap_or_default();
            if paths.is_empty() {
                return Err(invalid(&format!("{name}.s3_paths"), "must list at least one path".into()));
            }
            let paths = paths
                .iter()
                .map(|p| local_path(p).map_err(|m| invalid(&format!("{name}.s3_paths"), m)))
                .collect::<Result<Vec<_>, _>>()?;
            for (key, globs) in [("includes", &raw.includes), ("excludes", &raw.excludes)] {
                for g in globs {
                    super::glob::Glob::new(g).map_err(|m| invalid(&format!("{name}.{key}"), format!("{g:?}: {m}")))?;
                }
            }
            Ok(FileSource {
                paths,
                includes: raw.includes,
                excludes: raw.excludes,
                batch_size: within(&format!("{name}.batch_size"), raw.batch_size, MAX_BATCH_SIZE)?,
            })
        };

        let source = if let Some(list) = raw.item_list {
            let list: RawItemList = object(list.get().as_bytes(), origin, "item_list")?;
            let items = list.items.unwrap_or_default();
            if items.is_empty() {
                return Err(field("item_list.items", Problem::NoItems));
            }
            SourceSpec::ItemList { items, batch_size: within("item_list.batch_size", list.batch_size, MAX_BATCH_SIZE)? }
        } else if let Some(lister) = raw.file_path_lister {
            SourceSpec::FilePathLister(file_source("file_path_lister", lister)?)
        } else {
            SourceSpec::DelimitedFiles(file_source("delimited_files", raw.delimited_files.expect("one source"))?)
        };

        let timeout = integer(raw.timeout.as_ref(), 1, MAX_TIMEOUT)
            .map_err(|p| field("timeout", p.counting(" (seconds)")))?
            .map(|t| t as u64);
        let mut max_attempts =
            integer(raw.max_attempts.as_ref(), 1, 1000).map_err(|p| field("max_attempts", p))?.map(|n| n as u32);
        let dead_letter_queue = match raw.sqs_dead_letter_queue {
            None | Some(Value::Null) => None,
            Some(Value::Object(dlq)) => {
                const NAME: &str = "sqs_dead_letter_queue";
                match dlq.get("arn") {
                    Some(Value::String(arn)) if !arn.is_empty() => {}
                    None | Some(Value::Null) | Some(Value::String(_)) => {
                        return Err(field(&format!("{NAME}.arn"), Problem::Empty));
                    }
                    Some(other) => {
                        return Err(invalid(
                            &format!("{NAME}.arn"),
                            format!("must be a string, got {}", describe(other)),
                        ));
                    }
                }
                let count = integer(dlq.get("max_receive_count"), 1, 1000)
                    .map_err(|p| field(&format!("{NAME}.max_receive_count"), p))?
                    .ok_or_else(|| field(&format!("{NAME}.max_receive_count"), Problem::Required { max: 1000 }))?;
                max_attempts = max_attempts.or(Some(count as u32));
                Some(Value::Object(dlq))
            }
            Some(other) => {
                return Err(invalid(
                    "sqs_dead_letter_queue",
                    format!("must be a JSON object, but it is {}", describe(&other)),
                ));
            }
        };
        let config = raw.config.unwrap_or(Value::Null);
        if !(config.is_object() || config.is_null()) {
            return Err(invalid("config", "must be a JSON object".into()));
        }
        Ok(Submission {
            workers: within("workers", raw.workers, MAX_WORKERS)?,
            config,
            timeout,
            max_attempts,
            dead_letter_queue,
            source,
            warnings: unknown_keys(bytes),
        })
    }
}

/// The keys of a submission and of its nested objects that are read.
const TOP_KEYS: &[&str] = &[
    "workers",
    "config",
    "timeout",
    "max_attempts",
    "sqs_dead_letter_queue",
    "item_list",
    "file_path_lister",
    "delimited_files",
];
const ITEM_LIST_KEYS: &[&str] = &["items", "batch_size"];
const FILE_SOURCE_KEYS: &[&str] = &["s3_paths", "includes", "excludes", "batch_size"];
const DEAD_LETTER_KEYS: &[&str] = &["arn", "max_receive_count"];

/// A warning for every key of the submission (and of its source and dead-letter
/// queue objects) that is not read, naming the nearest known key when one is close.
fn unknown_keys(bytes: &[u8]) -> Vec<String> {
    type Keys = std::collections::BTreeMap<String, Value>;
    let mut warnings = Vec::new();
    let Ok(top) = serde_json::from_slice::<Keys>(bytes) else { return warnings };
    let mut check = |object: &Keys, known: &[&str], prefix: &str| {
        for key in object.keys().filter(|k| !known.contains(&k.as_str())) {
            let nearest = known
                .iter()
                .map(|k| (strsim::damerau_levenshtein(key, k), *k))
                .filter(|(distance, k)| *distance <= 2.max(k.len() / 4))
                .min();
            let hint = nearest.map(|(_, k)| format!(" — did you mean {prefix}{k:?}?")).unwrap_or_default();
            warnings.push(format!("{prefix}{key:?}: unknown key, ignored{hint}"));
        }
    };
    check(&top, TOP_KEYS, "");
    for (name, known) in [
        ("item_list", ITEM_LIST_KEYS),
        ("file_path_lister", FILE_SOURCE_KEYS),
        ("delimited_files", FILE_SOURCE_KEYS),
        ("sqs_dead_letter_queue", DEAD_LETTER_KEYS),
    ] {
        if let Some(Value::Object(inner)) = top.get(name) {
            let inner: Keys = inner.clone().into_iter().collect();
            check(&inner, known, &format!("{name}."));
        }
    }
    warnings
}

/// A local path from an `s3_paths` entry: a plain path or a `file://` URL.
fn local_path(entry: &str) -> Result<PathBuf, String> {
    if let Some(rest) = entry.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(format!("{entry:?}: a file:// URL needs an absolute path (file:///data/…)"));
        }
        return Ok(PathBuf::from(rest));
    }
    if crate::objects::is_object_url(entry) {
        crate::objects::check_prefix(entry)?;
        return Ok(PathBuf::from(entry));
    }
    if let Some((scheme, _)) = entry.split_once("://") {
        return Err(format!(
            "{entry:?}: unsupported scheme {scheme}://; use s3://, gs://, az://, a local path or a file:// URL"
        ));
    }
    if entry.is_empty() {
        return Err("an empty path".into());
    }
    Ok(PathBuf::from(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_accepted_and_named_with_the_nearest_known_one() {
        let job = br#"{"workers": 1, "confg": {"a": 1}, "item_list": {"items": [1], "batch_size": 1, "batchsize": 2},
                       "priority": 3}"#;
        let submission = Submission::parse(job, "job.json").unwrap();
        assert_eq!(submission.config, Value::Null, "the misspelt key is not read");
        assert_eq!(
            submission.warnings,
            vec![
                r#""confg": unknown key, ignored — did you mean "config"?"#.to_string(),
                r#""priority": unknown key, ignored"#.to_string(),
                r#"item_list."batchsize": unknown key, ignored — did you mean item_list."batch_size"?"#.to_string(),
            ]
        );
        let clean = br#"{"workers": 1, "config": {}, "item_list": {"items": [1], "batch_size": 1}}"#;
        assert!(Submission::parse(clean, "job.json").unwrap().warnings.is_empty());
    }

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
        assert_eq!(error(&format!("{{{list}}}")), "job.json: workers: is required (an integer from 1 to 1024)");
        assert_eq!(
            error(&format!(r#"{{"workers": 1000000000000, {list}}}"#)),
            "job.json: workers: must be at most 1024, got 1000000000000"
        );
        assert_eq!(
            error(r#"{"workers": 1, "item_list": {"items": [1], "batch_size": 4611686018427387904}}"#),
            "job.json: item_list.batch_size: must be at most 1000000, got 4611686018427387904"
        );
        assert_eq!(
            error(r#"{"workers": 1, "delimited_files": {"s3_paths": ["d"], "batch_size": 1e12}}"#),
            "job.json: delimited_files.batch_size: must be at most 1000000, got 1000000000000.0"
        );
        assert_eq!(
            error(&format!(r#"{{"workers": 99999999999999999999, {list}}}"#)),
            "job.json: workers: must be at most 1024, got 1e+20"
        );
        assert_eq!(error(&format!(r#"{{"workers": 1.5, {list}}}"#)), "job.json: workers: must be an integer, got 1.5");
        assert_eq!(
            error(&format!(r#"{{"workers": "two", {list}}}"#)),
            "job.json: workers: must be an integer, got a string"
        );
        assert!(
            error(&format!(r#"{{"workers": 1, "timeout": 99999999999, {list}}}"#)).contains("timeout: must be at most")
        );
        assert_eq!(error(&format!(r#"{{"workers": 0, {list}}}"#)), "job.json: workers: must be at least 1, got 0");
        assert_eq!(
            error(&format!(r#"{{"workers": 1, "timeout": 0, {list}}}"#)),
            "job.json: timeout: must be at least 1, got 0 (seconds)"
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
            "job.json: item_list.batch_size: is required (an integer from 1 to 1000000)"
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
            error(r#"{"workers": 1, "file_path_lister": {"s3_paths": ["s3:///nobucket"], "batch_size": 1}}"#)
                .contains("name the bucket")
        );
        assert!(
            parse(r#"{"workers": 1, "file_path_lister": {"s3_paths": ["s3://bucket/images"], "batch_size": 1}}"#)
                .is_ok()
        );
        assert!(
            error(r#"{"workers": 1, "file_path_lister": {"s3_paths": ["ftp://b"], "batch_size": 1}}"#)
                .contains("unsupported scheme ftp://")
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
            "job.json: max_attempts: must be at least 1, got 0"
        );
    }

    #[test]
    fn a_job_written_as_an_array_is_refused() {
        assert_eq!(error("[1, null, null]"), "job.json: the job must be a JSON object, but it is an array");
        assert_eq!(
            error(r#"{"workers": 1, "item_list": [[1, 2], 1]}"#),
            "job.json: item_list: must be a JSON object, but it is an array"
        );
        assert_eq!(
            error(r#"{"workers": 1, "delimited_files": [["d"], [], [], 1]}"#),
            "job.json: delimited_files: must be a JSON object, but it is an array"
        );
        assert!(error("[1,").starts_with("job.json: line 1, column 3"), "{}", error("[1,"));
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let err =
            parse("{\n  \"workers\": 1,\n  \"item_list\": {\"items\": [1,, 2], \"batch_size\": 1}\n}").unwrap_err();
        match err {
            SubmissionError::Parse { line, column, .. } => assert_eq!((line, column), (3, 29)),
            other => panic!("{other}"),
        }
        let err =
            parse(r#"{"workers": 1, "config": "two", "item_list": {"items": [1], "batch_size": 1}}"#).unwrap_err();
        assert_eq!(err.to_string(), "job.json: config: must be a JSON object");
    }
}
