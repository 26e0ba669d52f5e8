//! Turning a plugin file into compiled code, as fast as possible.
//!
//! A plugin file is a `.wasm` binary (a core module of ABI v1, or a component of the
//! world `wasmbatch:handler`, told apart by the header; a core module that carries the
//! world, as C's toolchain builds one, is made a component by [`crate::adapt`]), a
//! `.wat` text module, or a precompiled artifact written by `wasmbatch compile`. Compiling with Cranelift takes a while for a large
//! module, so compiled code is kept in an on-disk cache keyed by the SHA-256 of the
//! module and the engine's compatibility key: a second start of the same `.wasm` on
//! the same wasmbatch build skips compilation.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Module, Precompiled};

use crate::engine::Engine;

/// What a plugin file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A core module (ABI v1).
    Module,
    /// A component (the world `wasmbatch:handler`).
    Component,
}

impl Kind {
    /// The kind's name in logs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Module => "module",
            Kind::Component => "component",
        }
    }
}

/// Compiled code of either kind.
#[derive(Clone)]
pub enum Code {
    /// A core module.
    Module(Module),
    /// A component.
    Component(Component),
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Code::{}", self.kind().as_str())
    }
}

impl Code {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Code::Module(_) => Kind::Module,
            Code::Component(_) => Kind::Component,
        }
    }

    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        match self {
            Code::Module(m) => m.serialize(),
            Code::Component(c) => c.serialize(),
        }
    }
}

/// The binary header of a component (`\0asm`, version 13, layer 1); a core module's
/// is `\0asm` with version 1, layer 0.
const COMPONENT_HEADER: [u8; 8] = *b"\0asm\x0d\0\x01\0";

/// What the plugin file at `path` holds, from its first bytes: a component's header, a
/// text component or a precompiled component is a component, and so is a core module
/// that carries the world (it is adapted when compiled); anything else is taken for a
/// module (and compiling it says what is wrong).
pub(crate) fn kind(path: &Path) -> Result<Kind, CompileError> {
    use std::io::Read;
    if let Ok(Some(precompiled)) = wasmtime::Engine::detect_precompiled_file(path) {
        return Ok(match precompiled {
            Precompiled::Component => Kind::Component,
            Precompiled::Module => Kind::Module,
        });
    }
    let mut head = Vec::with_capacity(4096);
    std::fs::File::open(path)
        .and_then(|file| file.take(4096).read_to_end(&mut head))
        .map_err(|error| CompileError::Read { path: path.into(), error })?;
    if head.starts_with(&COMPONENT_HEADER) || text_component(&head) {
        return Ok(Kind::Component);
    }
    if head.starts_with(b"\0asm") {
        let bytes = std::fs::read(path).map_err(|error| CompileError::Read { path: path.into(), error })?;
        if crate::adapt::is_world_module(&bytes) {
            return Ok(Kind::Component);
        }
    }
    Ok(Kind::Module)
}

/// Whether `bytes` begin WebAssembly text of a component: `(component` after
/// whitespace and `;;` comments.
fn text_component(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    loop {
        rest = rest.trim_ascii_start();
        match rest.strip_prefix(b";;") {
            Some(comment) => rest = comment.split(|&b| b == b'\n').nth(1).unwrap_or_default(),
            None => return rest.starts_with(b"(component"),
        }
    }
}

/// How a module was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled now (and stored in the cache if there is one).
    Compiled,
    /// Loaded from the compile cache.
    CacheHit,
    /// Loaded from a precompiled artifact given as the plugin.
    Precompiled,
}

impl Origin {
    /// The origin's name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Compiled => "compiled",
            Origin::CacheHit => "cache_hit",
            Origin::Precompiled => "precompiled",
        }
    }
}

/// A plugin file could not be turned into a module.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {error}")]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not a valid WebAssembly module.
    #[error("plugin {path} is not a valid WebAssembly module: {message}")]
    Invalid {
        /// The plugin file.
        path: PathBuf,
        /// Wasmtime's explanation.
        message: String,
    },
    /// A core module built for a component world could not be made a component.
    #[error("plugin {path} is a core module built for a component world, and cannot be made a component: {message}")]
    Adapt {
        /// The plugin file.
        path: PathBuf,
        /// Why, in wit-component's words.
        message: String,
    },
    /// A precompiled artifact does not fit this engine.
    #[error(
        "precompiled plugin {path} cannot be loaded by this wasmbatch: {message} (recompile it with `wasmbatch compile`)"
    )]
    Incompatible {
        /// The artifact.
        path: PathBuf,
        /// Wasmtime's explanation.
        message: String,
    },
    /// The output of `wasmbatch compile` could not be written.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The output path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

/// The default cache directory: `$XDG_CACHE_HOME/wasmbatch`, else `~/.cache/wasmbatch`.
pub(crate) fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wasmbatch"))
}

fn compile(engine: &Engine, path: &Path, bytes: &[u8]) -> Result<Code, CompileError> {
    if let Some(what) = native_binary(bytes) {
        return Err(CompileError::Invalid {
            path: path.into(),
            message: format!(
                "this is not a WebAssembly module but {what} (built without --target wasm32-wasip1? the \
                 plugin is target/wasm32-wasip1/release/<name>.wasm)"
            ),
        });
    }
    if !bytes.starts_with(b"\0asm") && std::str::from_utf8(bytes).is_err() {
        return Err(CompileError::Invalid {
            path: path.into(),
            message: "this is neither a WebAssembly module (no \\0asm header) nor WebAssembly text".into(),
        });
    }
    let invalid = |e: wasmtime::Error| CompileError::Invalid { path: path.into(), message: format!("{e:#}") };
    if bytes.starts_with(&COMPONENT_HEADER) || text_component(bytes) {
        return Component::new(engine.wasmtime(), bytes).map(Code::Component).map_err(invalid);
    }
    if crate::adapt::is_world_module(bytes) {
        let component =
            crate::adapt::component(bytes).map_err(|message| CompileError::Adapt { path: path.into(), message })?;
        return Component::new(engine.wasmtime(), &component).map(Code::Component).map_err(invalid);
    }
    Module::new(engine.wasmtime(), bytes).map(Code::Module).map_err(invalid)
}

/// Loads a precompiled artifact of either kind.
///
/// # Safety
/// As [`Module::deserialize_file`]: `path` must be an artifact wasmtime wrote.
unsafe fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Code> {
    // SAFETY: forwarded from the caller.
    unsafe {
        match wasmtime::Engine::detect_precompiled_file(path)? {
            Some(Precompiled::Component) => Component::deserialize_file(engine.wasmtime(), path).map(Code::Component),
            _ => Module::deserialize_file(engine.wasmtime(), path).map(Code::Module),
        }
    }
}

/// Names the native executable format `bytes` are in, if any.
fn native_binary(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0x7f, b'E', b'L', b'F', ..] => Some("a native ELF binary (a Linux .so or executable)"),
        [0xcf | 0xce, 0xfa, 0xed, 0xfe, ..] | [0xca, 0xfe, 0xba, 0xbe, ..] => {
            Some("a native Mach-O binary (a macOS .dylib)")
        }
        [b'M', b'Z', ..] => Some("a native PE binary (a Windows .dll)"),
        _ => None,
    }
}

/// Loads the plugin at `path`, through the cache in `cache_dir` when given.
pub(crate) fn load(engine: &Engine, path: &Path, cache_dir: Option<&Path>) -> Result<(Code, Origin), CompileError> {
    let started = Instant::now();
    if let Ok(Some(_)) = wasmtime::Engine::detect_precompiled_file(path) {
        // SAFETY: a precompiled artifact is native code; wasmbatch only loads what its
        // own `compile` command wrote (documented for `--plugin`). Wasmtime still checks
        // that the artifact matches this engine's version and settings. The file is
        // mapped, not read.
        let code = unsafe { deserialize(engine, path) }
            .map_err(|e| CompileError::Incompatible { path: path.into(), message: format!("{e:#}") })?;
        return Ok((code, Origin::Precompiled));
    }
    let bytes = std::fs::read(path).map_err(|error| CompileError::Read { path: path.into(), error })?;
    let Some(dir) = cache_dir else {
        return Ok((compile(engine, path, &bytes)?, Origin::Compiled));
    };
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let entry = dir.join(format!("{hex}-{}.cwasm", engine.compatibility_key()));
    if entry.is_file() {
        // SAFETY: cache entries are written only by `store` below, under a name that
        // binds them to this module's hash and this engine's compatibility key.
        match unsafe { deserialize(engine, &entry) } {
            Ok(module) => {
                tracing::debug!(entry = %entry.display(), elapsed_ms = started.elapsed().as_millis() as u64, "compile cache hit");
                return Ok((module, Origin::CacheHit));
            }
            Err(e) => tracing::warn!(entry = %entry.display(), "ignoring unreadable compile cache entry: {e:#}"),
        }
    }
    let module = compile(engine, path, &bytes)?;
    tracing::info!(plugin = %path.display(), elapsed_ms = started.elapsed().as_millis() as u64, "compiled plugin");
    if let Err(e) = store(&module, dir, &entry) {
        tracing::warn!(dir = %dir.display(), "cannot write the compile cache: {e}");
    }
    Ok((module, Origin::Compiled))
}

/// Writes `module` to `entry` atomically (a temporary file renamed into place), so a
/// concurrent reader never sees half an artifact.
fn store(module: &Code, dir: &Path, entry: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = module.serialize().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    crate::storage::write_atomic(entry, &bytes)
}

/// Compiles the module at `path` (no cache).
pub(crate) fn compile_file(engine: &Engine, path: &Path) -> Result<Code, CompileError> {
    let bytes = std::fs::read(path).map_err(|error| CompileError::Read { path: path.into(), error })?;
    compile(engine, path, &bytes)
}

/// Writes `module`'s precompiled artifact to `output` (`wasmbatch compile`).
pub(crate) fn write_artifact(module: &Code, output: &Path) -> Result<(), CompileError> {
    let write = |error| CompileError::Write { path: output.into(), error };
    let artifact = module.serialize().map_err(|e| write(std::io::Error::other(format!("{e:#}"))))?;
    crate::storage::write_atomic(output, &artifact).map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;

    const WAT: &str = r#"(module (func (export "f") (result i32) i32.const 7))"#;

    #[test]
    fn second_load_hits_the_cache_and_precompiled_files_load_directly() {
        let engine = Engine::new(EngineConfig { max_instances: 2, ..Default::default() }).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("p.wat");
        std::fs::write(&plugin, WAT).unwrap();
        let cache = dir.path().join("cache");

        assert_eq!(load(&engine, &plugin, Some(&cache)).unwrap().1, Origin::Compiled);
        assert_eq!(load(&engine, &plugin, Some(&cache)).unwrap().1, Origin::CacheHit);
        assert_eq!(load(&engine, &plugin, None).unwrap().1, Origin::Compiled);

        // A corrupt cache entry is replaced, not fatal.
        let entry = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap().path();
        std::fs::write(&entry, b"garbage").unwrap();
        assert_eq!(load(&engine, &plugin, Some(&cache)).unwrap().1, Origin::Compiled);
        assert_eq!(load(&engine, &plugin, Some(&cache)).unwrap().1, Origin::CacheHit);

        let artifact = dir.path().join("p.cwasm");
        write_artifact(&compile_file(&engine, &plugin).unwrap(), &artifact).unwrap();
        assert_eq!(load(&engine, &artifact, None).unwrap().1, Origin::Precompiled);
    }

    #[test]
    fn components_are_told_from_modules_by_their_header_and_cached_as_components() {
        let engine = Engine::new(EngineConfig { max_instances: 2, components: true, ..Default::default() }).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let component = dir.path().join("c.wasm");
        // The header alone is an empty component.
        std::fs::write(&component, COMPONENT_HEADER).unwrap();
        let text = dir.path().join("c.wat");
        std::fs::write(&text, "  ;; a component in text\n(component)").unwrap();
        assert_eq!(kind(&text).unwrap(), Kind::Component);
        assert_eq!(load(&engine, &text, None).unwrap().0.kind(), Kind::Component);
        let module = dir.path().join("m.wat");
        std::fs::write(&module, WAT).unwrap();
        assert_eq!(kind(&component).unwrap(), Kind::Component);
        assert_eq!(kind(&module).unwrap(), Kind::Module);
        let cache = dir.path().join("cache");
        let (code, origin) = load(&engine, &component, Some(&cache)).unwrap();
        assert_eq!((code.kind(), origin), (Kind::Component, Origin::Compiled));
        let (code, origin) = load(&engine, &component, Some(&cache)).unwrap();
        assert_eq!((code.kind(), origin), (Kind::Component, Origin::CacheHit));
        // A precompiled component is one too, by its artifact's header.
        let artifact = dir.path().join("c.cwasm");
        write_artifact(&code, &artifact).unwrap();
        assert_eq!(kind(&artifact).unwrap(), Kind::Component);
        let (code, origin) = load(&engine, &artifact, None).unwrap();
        assert_eq!((code.kind(), origin), (Kind::Component, Origin::Precompiled));
        // A broken component is named as such.
        std::fs::write(&component, b"\0asm\x0d\0\x01\0\xff").unwrap();
        let err = load(&engine, &component, None).unwrap_err();
        assert!(matches!(err, CompileError::Invalid { .. }), "{err}");
    }

    #[test]
    fn invalid_and_missing_files_are_reported_with_their_path() {
        let engine = Engine::new(EngineConfig { max_instances: 2, ..Default::default() }).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.wasm");
        std::fs::write(&bad, b"\0asm\x01\0\0\0\x99").unwrap();
        let err = load(&engine, &bad, None).unwrap_err();
        assert!(matches!(err, CompileError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("bad.wasm"), "{err}");
        let err = load(&engine, &dir.path().join("none.wasm"), None).unwrap_err();
        assert!(matches!(err, CompileError::Read { .. }), "{err}");

        // A native library served by mistake, and binary garbage.
        let native = dir.path().join("libplugin.so");
        std::fs::write(&native, b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0\x3e\0\xff\xfe").unwrap();
        let err = load(&engine, &native, None).unwrap_err().to_string();
        assert!(err.contains("this is not a WebAssembly module but a native ELF binary"), "{err}");
        assert!(err.contains("built without --target wasm32-wasip1?"), "{err}");
        std::fs::write(&native, b"\x01\x02\xff\xfe").unwrap();
        let err = load(&engine, &native, None).unwrap_err().to_string();
        assert!(err.contains("neither a WebAssembly module"), "{err}");
    }
}
