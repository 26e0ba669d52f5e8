//! What a guest can see: the job spec, `/mnt`, and nothing else of the host.
//!
//! The spec is copied into a private temporary directory that is preopened read-only
//! as `/cortex/spec`, so pointing `--job-spec` at a file never exposes the folder the
//! file sits in. `/mnt` is the one host directory a guest may write, and only when the
//! operator mounts one. No environment variables, no arguments, no sockets.

use std::io;
use std::path::{Path, PathBuf};

use tempfile::TempDir;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::capture::Capture;

/// Where the job spec appears inside the guest.
pub(crate) const GUEST_SPEC_DIR: &str = "/cortex/spec";
/// Where the mounted directory appears inside the guest.
pub(crate) const GUEST_MOUNT: &str = "/mnt";

/// The host side of a guest's file system view.
#[derive(Debug)]
pub(crate) struct Sandbox {
    spec_dir: TempDir,
    mount: Option<PathBuf>,
}

/// The sandbox could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The mount directory is missing or not a directory.
    #[error("mount directory {path}: {reason}")]
    Mount {
        /// The directory given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private spec directory could not be written.
    #[error(
        "cannot prepare the guest's job spec directory: {0} (it is made under $TMPDIR, else /tmp, which this \
         user must be able to write: on a read-only root file system mount a tmpfs or an emptyDir there)"
    )]
    SpecDir(io::Error),
}

impl From<io::Error> for SandboxError {
    fn from(error: io::Error) -> Self {
        SandboxError::SpecDir(error)
    }
}

impl Sandbox {
    /// A sandbox showing `spec` (JSON bytes) at `/cortex/spec/job.json` and `mount`, if
    /// any, read-write at `/mnt`.
    pub(crate) fn new(spec: &[u8], mount: Option<&Path>) -> Result<Sandbox, SandboxError> {
        let mount = match mount {
            None => None,
            Some(path) => {
                let fail = |reason: String| SandboxError::Mount { path: path.to_path_buf(), reason };
                let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
                if !meta.is_dir() {
                    return Err(fail("not a directory".into()));
                }
                Some(path.canonicalize().map_err(|e| fail(e.to_string()))?)
            }
        };
        let spec_dir = tempfile::Builder::new().prefix("wasmbatch-spec-").tempdir()?;
        std::fs::write(spec_dir.path().join("job.json"), spec)?;
        Ok(Sandbox { spec_dir, mount })
    }

    /// The host directory mounted at `/mnt`, if any.
    pub(crate) fn mount(&self) -> Option<&Path> {
        self.mount.as_deref()
    }

    /// A fresh WASI context for one instance.
    pub(crate) fn wasi(&self, stdout: Capture, stderr: Capture) -> io::Result<WasiP1Ctx> {
        let mut b = WasiCtxBuilder::new();
        // Guests run on the threads that serve every connection: a guest's sleep
        // (`poll_oneoff`) must wait asynchronously and its file I/O on `/mnt` (which may
        // be a slow network disk) on the blocking pool, never holding up the thread.
        b.allow_blocking_current_thread(false)
            .stdout(stdout)
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let io = |e: wasmtime::Error| io::Error::other(format!("{e:#}"));
        b.preopened_dir(self.spec_dir.path(), GUEST_SPEC_DIR, FsPerms::ReadOnly).map_err(io)?;
        if let Some(mount) = &self.mount {
            b.preopened_dir(mount, GUEST_MOUNT, FsPerms::ReadWrite).map_err(io)?;
        }
        Ok(b.build_p1())
    }
}
