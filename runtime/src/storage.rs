//! Writing files so that a failure leaves nothing half-done, and knowing when the
//! disk is the problem.
//!
//! - [`write_atomic`]: a whole file — a temporary name in the same directory, written,
//!   flushed, renamed into place; a failure removes the temporary file. A reader sees
//!   the old file or the new one, never a part.
//! - [`append_all`]: an append to a file kept open — on a failure the file is cut back
//!   to where it was, so that a full disk leaves no half record behind.
//! - [`is_full`]: whether an error means "no space" (`ENOSPC`, `EDQUOT`, SQLite's
//!   `SQLITE_FULL`); [`free_bytes`]: the space left for this user; [`Room`]: waiting
//!   for room, and saying so once per episode.
//!
//! A leaf module: it imports nothing of ours.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Writes `bytes` as the file at `path`, whole or not at all.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Removed on drop unless persisted: an error at any step leaves nothing.
    let mut temp = tempfile::Builder::new().prefix(".wasmbatch-").suffix(".tmp").tempfile_in(dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_data()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Appends `bytes` to `file` (opened for appending) and flushes them to disk; on a
/// failure the file is cut back to its length before the call.
pub(crate) fn append_all(mut file: &File, bytes: &[u8]) -> io::Result<()> {
    let before = file.metadata()?.len();
    let written = file.write_all(bytes).and_then(|()| file.sync_data());
    if let Err(e) = written {
        // Best effort: if even the cut fails, the reader's own check of the last
        // line (results, dead letters) still drops the part.
        let _ = file.set_len(before);
        return Err(e);
    }
    Ok(())
}

/// Whether `error` means that the file system has no room (or the user no quota).
pub(crate) fn is_full(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::StorageFull
        || error.kind() == io::ErrorKind::QuotaExceeded
        || matches!(error.raw_os_error(), Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error()
            || code == rustix::io::Errno::DQUOT.raw_os_error())
}

/// Episodes of a full disk, for one writer (a job's records, the service's
/// submissions): logged at ERROR once when the disk is found full, at INFO once when
/// a write works again — not once per failed write.
#[derive(Debug, Default)]
pub(crate) struct Room {
    full: AtomicBool,
}

impl Room {
    /// Notes how a write went; a full disk starts an episode, a success ends it.
    pub(crate) fn note<T>(&self, what: &str, outcome: &io::Result<T>) {
        match outcome {
            Ok(_) => {
                if self.full.swap(false, Ordering::SeqCst) {
                    tracing::info!("there is room on the disk again: {what} are recorded");
                }
            }
            Err(e) if is_full(e) => {
                if !self.full.swap(true, Ordering::SeqCst) {
                    tracing::error!("the disk is full: {what} cannot be recorded ({e})");
                }
            }
            Err(_) => {}
        }
    }

    /// Runs `write`; while it fails because the disk is full, waits for room and tries
    /// again (from 50 ms, doubling to 2 s) until it works or `sleep` (which sleeps the
    /// time given) says to give up by returning `true`.
    pub(crate) fn wait_for<T>(
        &self,
        what: &str,
        mut sleep: impl FnMut(Duration) -> bool,
        mut write: impl FnMut() -> io::Result<T>,
    ) -> io::Result<T> {
        let mut pause = Duration::from_millis(50);
        loop {
            let outcome = write();
            self.note(what, &outcome);
            match outcome {
                Err(e) if is_full(&e) => {
                    if sleep(pause) {
                        return Err(e);
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }
}

/// Bytes free for an unprivileged user on the file system of `dir`.
pub(crate) fn free_bytes(dir: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomic(&dir.path().join("missing/a.json"), b"x").is_err());
        assert!(free_bytes(dir.path()).unwrap() > 0);
    }

    #[test]
    fn full_means_no_space_or_no_quota() {
        assert!(is_full(&io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error())));
        assert!(is_full(&io::Error::from(io::ErrorKind::StorageFull)));
        assert!(!is_full(&io::Error::from(io::ErrorKind::PermissionDenied)));
    }
}
