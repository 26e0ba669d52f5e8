//! A job's results: what its handlers emitted, one JSON Lines file per job.
//!
//! Each line is `{"batch": <index>, "result": <value>}`, a batch's lines together, in
//! the order its handler emitted them. A batch's results are written once: the file
//! remembers which batches it holds (read back when it is opened again, after a
//! crash or for a resumed job), and a batch that ran twice — retried, redelivered, run
//! again after a crash between the write and its outcome's record — is not written a
//! second time. A line cut short by a crash is removed when the file is opened again.
//! Every write is flushed to disk (`fdatasync`) before the batch's outcome is recorded.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A job's results file, created on the first result.
pub struct ResultsFile {
    path: PathBuf,
    open: Mutex<Option<(File, HashSet<u64>)>>,
}

impl ResultsFile {
    /// The results file at `path` (nothing is created until a result comes).
    pub fn new(path: &Path) -> ResultsFile {
        ResultsFile { path: path.to_path_buf(), open: Mutex::new(None) }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file for appending: the batches it holds, and a last line cut short
    /// removed.
    fn open(&self) -> std::io::Result<(File, HashSet<u64>)> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::OpenOptions::new().read(true).create(true).append(true).open(&self.path)?;
        let mut batches = HashSet::new();
        let mut good = 0u64;
        let mut reader = BufReader::new(&file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            #[derive(serde::Deserialize)]
            struct Head {
                batch: u64,
            }
            match serde_json::from_slice::<Head>(&line) {
                Ok(head) => {
                    batches.insert(head.batch);
                    good += n as u64;
                }
                Err(_) => break,
            }
        }
        if good < file.metadata()?.len() {
            tracing::warn!(path = %self.path.display(), "a results line cut short (a crash) was removed");
            file.set_len(good)?;
            file.seek(SeekFrom::End(0))?;
        }
        Ok((file, batches))
    }

    /// Appends the results of `batches` (`(index, JSON Lines)`) not written yet, and
    /// flushes them to disk.
    pub fn append(&self, batches: &[(u64, &[u8])]) -> std::io::Result<()> {
        if batches.iter().all(|(_, r)| r.is_empty()) {
            return Ok(());
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.is_none() {
            *open = Some(self.open()?);
        }
        let (file, written) = open.as_mut().expect("just opened");
        let mut out = Vec::new();
        let mut added = Vec::new();
        for (index, results) in batches {
            if results.is_empty() || written.contains(index) || added.contains(index) {
                continue;
            }
            for value in results.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                out.extend_from_slice(format!("{{\"batch\":{index},\"result\":").as_bytes());
                out.extend_from_slice(value);
                out.extend_from_slice(b"}\n");
            }
            added.push(*index);
        }
        if out.is_empty() {
            return Ok(());
        }
        crate::storage::append_all(file, &out)?;
        written.extend(added);
        Ok(())
    }
}

/// Copies a finished job's results file to `<prefix><job_id>.jsonl` in object storage
/// (the job's config asked for it with `results_prefix`), if `grants` allow writing
/// there; returns the object's URL. No results file: nothing to copy, `Ok(None)`.
pub fn upload(
    file: &Path,
    prefix: &str,
    job_id: &str,
    grants: &crate::capability::Grants,
) -> Result<Option<String>, String> {
    let url = format!("{prefix}{job_id}.jsonl");
    let target = grants.may_write(&url).map_err(|e| format!("results_prefix: {}", e.message()))?;
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", file.display())),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    crate::objects::objects().put(&target, bytes, deadline).map_err(|e| e.message().to_string())?;
    Ok(Some(url))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_batch_is_written_once_and_a_cut_line_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let file = ResultsFile::new(&path);
        file.append(&[(0, b"1\n2\n"), (1, b"")]).unwrap();
        file.append(&[(0, b"9\n"), (2, b"{\"a\":3}\n")]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"batch\":0,\"result\":1}\n{\"batch\":0,\"result\":2}\n{\"batch\":2,\"result\":{\"a\":3}}\n"
        );
        // A crash in the middle of a line; the file opened again.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"batch\":3,\"res").unwrap();
        let again = ResultsFile::new(&path);
        again.append(&[(2, b"5\n"), (3, b"7\n")]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("{\"batch\":2,\"result\":{\"a\":3}}\n{\"batch\":3,\"result\":7}\n"), "{text}");
        assert_eq!(text.lines().count(), 4);
    }
}
