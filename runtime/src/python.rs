//! Python handlers: a Cortex-style handler file (`class Handler`) made a component of
//! the world `wasmbatch:handler` by componentize-py, with our adapter
//! (`runtime/python/wasmbatch_app.py`) and guest module (`runtime/python/wasmbatch`).
//!
//! [`build`] writes a component (`wasmbatch build`); [`component`] finds or builds one
//! in the cache by the content of the handler's directory (`--plugin handler.py`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The componentize-py release the adapter is written and tested against.
pub(crate) const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// How long one build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

const WORLD: &str = include_str!("../../guest-sdk/wit/handler.wit");
const APP: &str = include_str!("../python/wasmbatch_app.py");
const GUEST_MODULE: &str = include_str!("../python/wasmbatch/__init__.py");

/// Module names the build itself uses.
const RESERVED: &[&str] = &["wasmbatch", "wasmbatch_app", "wasmbatch_target", "wit_world", "componentize_py_types"];

/// A Python handler could not be made a component.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    /// componentize-py is not installed.
    #[error(
        "building a Python handler needs componentize-py {COMPONENTIZE_PY_VERSION}, which was not found ({0}): \
         install it with `pip install componentize-py=={COMPONENTIZE_PY_VERSION}`, or name it in \
         WASMBATCH_COMPONENTIZE_PY"
    )]
    Missing(String),
    /// The handler file cannot be used.
    #[error("{path}: {message}")]
    Handler {
        /// The handler file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// componentize-py failed.
    #[error("componentize-py could not build {path}:\n{output}")]
    Build {
        /// The handler file.
        path: PathBuf,
        /// What it printed.
        output: String,
    },
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
}

/// The componentize-py command: `WASMBATCH_COMPONENTIZE_PY`, else the one on `PATH`.
fn componentize_py() -> Command {
    Command::new(std::env::var_os("WASMBATCH_COMPONENTIZE_PY").unwrap_or_else(|| "componentize-py".into()))
}

/// The handler's module name, and the Python files of its directory and below (path,
/// text): what the build scans for imports and what the cache key covers.
fn sources(handler: &Path) -> Result<(String, Vec<(String, String)>), PythonError> {
    let bad = |message: String| PythonError::Handler { path: handler.to_path_buf(), message };
    let module = handler
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|_| handler.extension().is_some_and(|e| e == "py"))
        .ok_or_else(|| bad("a Python handler is a .py file".into()))?
        .to_string();
    if module.is_empty()
        || module.starts_with(|c: char| c.is_ascii_digit())
        || !module.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(bad(format!("{module:?} is not a Python module name: rename the file")));
    }
    if RESERVED.contains(&module.as_str()) {
        return Err(bad(format!("the module name {module:?} is the build's own: rename the file")));
    }
    std::fs::read_to_string(handler).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let dir = handler.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut files = Vec::new();
    collect(dir, dir, &mut files).map_err(bad)?;
    files.sort();
    Ok((module, files))
}

/// The Python files the build sees: every `.py` file under `dir` (packages placed beside
/// the handler included; hidden directories and `__pycache__` left out), as (path
/// relative to the handler's directory, text).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) -> Result<(), String> {
    const MAX_FILES: usize = 5000;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if path.is_dir() {
            if !name.starts_with('.') && name != "__pycache__" {
                collect(root, &path, files)?;
            }
        } else if name.ends_with(".py") && path.is_file() {
            if files.len() >= MAX_FILES {
                return Err(format!("more than {MAX_FILES} Python files beside the handler"));
            }
            let relative = path.strip_prefix(root).unwrap_or(&path).display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {relative}: {e}"))?;
            files.push((relative, text));
        }
    }
    Ok(())
}

/// What a handler's component is made of, as a SHA-256 in hex: its Python files, the
/// adapter, the world and the componentize-py release (the cache's key; `serve
/// --watch` reloads when it changes).
pub(crate) fn source_key(handler: &Path) -> Result<String, PythonError> {
    let (module, files) = sources(handler)?;
    let mut hasher = Sha256::new();
    for part in [COMPONENTIZE_PY_VERSION, WORLD, APP, GUEST_MODULE, &module] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    for (name, text) in &files {
        for part in [name, text] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Builds the component of the handler at `handler` into `output`.
pub(crate) fn build(handler: &Path, output: &Path) -> Result<(), PythonError> {
    let (module, files) = sources(handler)?;
    let version = componentize_py()
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .map_err(|e| PythonError::Missing(e.to_string()))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    if !version.ends_with(COMPONENTIZE_PY_VERSION) {
        tracing::warn!(
            found = version,
            expected = COMPONENTIZE_PY_VERSION,
            "another componentize-py than the one tested"
        );
    }
    let io = |what: &str, e: std::io::Error| PythonError::Io(format!("{what}: {e}"));
    let work =
        tempfile::Builder::new().prefix("wasmbatch-python-").tempdir().map_err(|e| io("a build directory", e))?;
    let wit = work.path().join("wit");
    let app = work.path().join("app");
    std::fs::create_dir_all(app.join("wasmbatch")).map_err(|e| io("a build directory", e))?;
    std::fs::create_dir_all(&wit).map_err(|e| io("a build directory", e))?;
    let target = format!(
        "# Written by `wasmbatch build`.\nMODULE = {}\nSOURCES = {}\n",
        serde_json::to_string(&module).expect("a string"),
        serde_json::to_string(&files.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()).expect("strings"),
    );
    for (path, text) in [
        (wit.join("handler.wit"), WORLD),
        (app.join("wasmbatch_app.py"), APP),
        (app.join("wasmbatch").join("__init__.py"), GUEST_MODULE),
        (app.join("wasmbatch_target.py"), target.as_str()),
    ] {
        std::fs::write(&path, text).map_err(|e| io(&path.display().to_string(), e))?;
    }
    // The handler's Python files, copied: what the build sees is what the cache key
    // covers, and nothing (no `__pycache__`) is written beside the handler.
    let sources = work.path().join("src");
    for (relative, text) in &files {
        let path = sources.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(&parent.display().to_string(), e))?;
        }
        std::fs::write(&path, text).map_err(|e| io(&path.display().to_string(), e))?;
    }
    let built = work.path().join("handler.wasm");
    let started = Instant::now();
    let mut child = componentize_py()
        .arg("-d")
        .arg(&wit)
        .args(["-w", "handler", "componentize", "wasmbatch_app", "-p"])
        .arg(&app)
        .arg("-p")
        .arg(&sources)
        .arg("-o")
        .arg(&built)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PythonError::Missing(e.to_string()))?;
    // Its output is read on threads of their own, so that a full pipe never stalls it.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
    let status = loop {
        match child.try_wait().map_err(|e| io("waiting for componentize-py", e))? {
            Some(status) => break status,
            None if started.elapsed() > BUILD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PythonError::Build {
                    path: handler.to_path_buf(),
                    output: format!("it did not finish within {BUILD_TIMEOUT:?}"),
                });
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let printed = format!("{}{}", stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    for line in printed.lines().filter(|l| l.starts_with("wasmbatch build:")) {
        tracing::warn!(handler = %handler.display(), "{}", line.trim_start_matches("wasmbatch build:").trim());
    }
    if !status.success() || !built.is_file() {
        return Err(PythonError::Build { path: handler.to_path_buf(), output: printed.trim().to_string() });
    }
    tracing::info!(
        handler = %handler.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "built the Python handler's component"
    );
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io(&parent.display().to_string(), e))?;
    }
    let bytes = std::fs::read(&built).map_err(|e| io("the built component", e))?;
    crate::storage::write_atomic(output, &bytes).map_err(|e| io(&output.display().to_string(), e))?;
    // Readable as any build output is (the temporary file it was written as is not).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(output, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| io(&output.display().to_string(), e))
}

/// The component of the handler at `handler`: from `cache_dir` when one was built there
/// from the same sources (the `.py` files of the handler's directory and below), with the same adapter
/// and world; else built now (and kept there). Without a cache, built into a
/// temporary file that lives as long as the process.
pub(crate) fn component(handler: &Path, cache_dir: Option<&Path>) -> Result<PathBuf, PythonError> {
    let hex = source_key(handler)?;
    let dir = match cache_dir {
        Some(dir) => dir.join("python"),
        None => {
            static SCRATCH: std::sync::OnceLock<Option<tempfile::TempDir>> = std::sync::OnceLock::new();
            SCRATCH
                .get_or_init(|| tempfile::Builder::new().prefix("wasmbatch-python-").tempdir().ok())
                .as_ref()
                .map(|d| d.path().to_path_buf())
                .ok_or_else(|| PythonError::Io("cannot make a temporary directory".into()))?
        }
    };
    let entry = dir.join(format!("{hex}.wasm"));
    if entry.is_file() {
        tracing::debug!(handler = %handler.display(), entry = %entry.display(), "Python component from the cache");
        return Ok(entry);
    }
    build(handler, &entry)?;
    Ok(entry)
}
