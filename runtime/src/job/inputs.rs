//! A job's input files: listed (local folders walked, object stores listed, each
//! input checked against the API's `allow_inputs` first) and opened for reading.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::glob::Glob;
use super::submission::FileSource;
use crate::confine::{Prefixes, Target};

/// The input cannot be read or is malformed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A path could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// No file matched.
    #[error("no files found in {paths} (after includes {includes:?} and excludes {excludes:?})")]
    NoFiles {
        /// The paths listed.
        paths: String,
        /// The include globs.
        includes: Vec<String>,
        /// The exclude globs.
        excludes: Vec<String>,
    },
    /// A value in a delimited file is not JSON.
    #[error("{path}: line {line}, column {column}: {message}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's description.
        message: String,
    },
}

/// One input file or object found by a listing.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    /// Its path or URL: what globs match, items show and errors name.
    pub name: String,
    pub(crate) open: Opener,
}

/// How an input is read.
#[derive(Debug, Clone)]
pub(crate) enum Opener {
    /// A local path of the user's own process (`run`): opened as it is.
    Path(PathBuf),
    /// An object, or a confined local file, of the size listed.
    Object(Target, u64),
}

/// A delimited file to read: a local file, or an object read in ranges (bounded memory).
pub(crate) fn open_input(input: &Input) -> Result<Box<dyn std::io::Read + Send>, SourceError> {
    match &input.open {
        Opener::Path(path) => {
            let file = File::open(path).map_err(|error| SourceError::Io { path: path.into(), error })?;
            Ok(Box::new(file))
        }
        Opener::Object(target, size) => Ok(Box::new(crate::objects::ObjectReader::new(target.clone(), *size))),
    }
}

/// The objects under `target` (a folder, or the one object it names); with `confine`,
/// each is checked again, and a local one is read beneath its granted folder.
fn list_objects(
    root: &str,
    target: &Target,
    confine: Option<&Prefixes>,
    out: &mut Vec<Input>,
) -> Result<(), SourceError> {
    let io = |e: String| {
        let e = e.strip_prefix(&format!("{root}: ")).map(str::to_string).unwrap_or(e);
        SourceError::Io { path: root.into(), error: std::io::Error::other(e) }
    };
    for listed in crate::objects::objects().list(target).map_err(io)? {
        let target = match confine {
            Some(prefixes) => prefixes.check(&listed.url, "read").map_err(|e| io(e.message().to_string()))?,
            None => Target::unconfined(&listed.url).map_err(|e| io(e.message().to_string()))?,
        };
        let name = match &target {
            Target::Local { .. } => listed.key,
            Target::Store(_) => listed.url,
        };
        out.push(Input { name, open: Opener::Object(target, listed.size) });
    }
    Ok(())
}

/// Checks a job's input paths against `confine` before anything is listed or read:
/// each must be an object URL or an absolute local path under one of its prefixes.
pub(crate) fn check_inputs(source: &FileSource, confine: &Prefixes) -> Result<(), String> {
    for path in &source.paths {
        input_target(path, confine)?;
    }
    Ok(())
}

fn input_target(path: &Path, confine: &Prefixes) -> Result<Target, String> {
    let text = path.display().to_string();
    let url = if crate::objects::is_object_url(&text) {
        text.clone()
    } else if path.is_absolute() {
        crate::objects::file_url(path)
    } else {
        return Err(format!("{text}: a job's local input is an absolute path (or a file:// URL)"));
    };
    confine.check(&url, "take job inputs from").map_err(|e| {
        let message = e.message().replacen(&url, &text, 1);
        if message.contains("not under a prefix") { message + "; see its allow_inputs" } else { message }
    })
}

/// The files under `source.paths` that pass the globs, each path's files sorted.
/// Object URLs are listed in their store; the globs apply to the whole URL
/// (`s3://bucket/images/a.jpg`), as they apply to a local file's whole path. With
/// `confine`, every path must lie under one of its prefixes ([`check_inputs`]).
pub(crate) fn list_files(source: &FileSource, confine: Option<&Prefixes>) -> Result<Vec<Input>, SourceError> {
    let compile =
        |globs: &[String]| globs.iter().map(|g| Glob::new(g).expect("validated with the job")).collect::<Vec<_>>();
    let (includes, excludes) = (compile(&source.includes), compile(&source.excludes));
    let mut out = Vec::new();
    for root in &source.paths {
        let text = root.display().to_string();
        let mut found = Vec::new();
        match confine {
            Some(prefixes) => {
                let target = input_target(root, prefixes)
                    .map_err(|e| SourceError::Io { path: root.clone(), error: std::io::Error::other(e) })?;
                list_objects(&text, &target, confine, &mut found)?;
            }
            None if crate::objects::is_object_url(&text) => {
                let target = Target::unconfined(&text).map_err(|e| SourceError::Io {
                    path: root.clone(),
                    error: std::io::Error::other(e.message().to_string()),
                })?;
                list_objects(&text, &target, None, &mut found)?;
            }
            None => {
                let mut paths = Vec::new();
                walk(root, &mut paths)?;
                found.extend(paths.into_iter().map(|p| Input { name: p.display().to_string(), open: Opener::Path(p) }));
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(found.into_iter().filter(|input| {
            (includes.is_empty() || includes.iter().any(|g| g.matches(&input.name)))
                && !excludes.iter().any(|g| g.matches(&input.name))
        }));
    }
    if out.is_empty() {
        return Err(SourceError::NoFiles {
            paths: source.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            includes: source.includes.clone(),
            excludes: source.excludes.clone(),
        });
    }
    Ok(out)
}

fn walk(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let io = |error| SourceError::Io { path: path.into(), error };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    if !meta.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?;
        let kind = entry.file_type().map_err(io)?;
        // Symlinked files count; symlinked directories are not followed (no loops).
        if kind.is_dir() || (kind.is_file() || kind.is_symlink() && entry.path().is_file()) {
            walk(&entry.path(), out)?;
        }
    }
    Ok(())
}
