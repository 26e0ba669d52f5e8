//! The dead-letter file: one JSON record per line for each batch that did not succeed.
//!
//! ```json
//! {"batch_index":2,"attempts":3,"error":{"kind":"guest_error","message":"…"},"items":[…]}
//! ```
//!
//! Records are appended and flushed to disk (`fdatasync`) before the batch is counted
//! as dead-lettered, so a crash, a SIGKILL or a second Ctrl-C never loses one that was
//! counted. `items` is the batch as it was handed to the handler, byte for byte — key
//! order, long numbers and all — except that line breaks between JSON tokens (JSON
//! strings cannot hold raw ones) become spaces, so that a record stays on one line;
//! when that changed anything, `body` also holds the exact bytes as a JSON string, and
//! `--retry-from` uses it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::json;

use super::executor::AttemptError;

/// An open dead-letter file.
#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    file: Mutex<File>,
    written: Mutex<u64>,
}

/// A batch that did not succeed, ready to be written.
pub struct Record<'a> {
    /// Its position in the job.
    pub index: u64,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's error.
    pub error: &'a AttemptError,
    /// What is dead-lettered (a JSON array): the batch, or the items of it that failed
    /// alone.
    pub body: &'a [u8],
    /// The items of the whole batch (`None`: not known, as from an older worker).
    pub items: Option<u64>,
}

impl DeadLetters {
    /// Creates (or truncates) the file at `path`: a path that cannot be written is
    /// found before the job runs, not after.
    pub fn create(path: &Path) -> std::io::Result<DeadLetters> {
        let file = File::create(path)?;
        Ok(DeadLetters { path: path.to_path_buf(), file: Mutex::new(file), written: Mutex::new(0) })
    }

    /// Opens the file at `path` to add to it (creating it when missing): the records
    /// already there count as written.
    pub fn append_to(path: &Path) -> std::io::Result<DeadLetters> {
        let existing = match std::fs::read(path) {
            Ok(bytes) => bytes.iter().filter(|&&b| b == b'\n').count() as u64,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(DeadLetters { path: path.to_path_buf(), file: Mutex::new(file), written: Mutex::new(existing) })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `records` and flushes them to disk; when this returns `Ok` they are
    /// durable.
    pub fn append(&self, records: &[Record<'_>]) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for record in records {
            encode(record, &mut bytes);
        }
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        crate::storage::append_all(&file, &bytes)?;
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) += records.len() as u64;
        Ok(())
    }

    /// Records written so far.
    pub fn written(&self) -> u64 {
        *self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the file, removing it when nothing was written.
    pub fn finish(self) -> std::io::Result<()> {
        let empty = self.written() == 0;
        drop(self.file);
        if empty { std::fs::remove_file(&self.path) } else { Ok(()) }
    }
}

/// One record, with its newline.
fn encode(record: &Record<'_>, out: &mut Vec<u8>) {
    let kind = record.error.kind.to_string();
    encode_parts(record.index, record.attempts, &kind, &record.error.message, record.body, out);
}

/// One record from its parts, with its newline (also the job service's download).
pub fn encode_parts(index: u64, attempts: u32, kind: &str, message: &str, body: &[u8], out: &mut Vec<u8>) {
    let head = json!({
        "batch_index": index,
        "attempts": attempts,
        "error": { "kind": kind, "message": message },
    })
    .to_string();
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    out.extend_from_slice(b",\"items\":");
    let multi_line = body.iter().any(|&b| b == b'\n' || b == b'\r');
    if multi_line {
        out.extend(body.iter().map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
        out.extend_from_slice(b",\"body\":");
        let text = String::from_utf8_lossy(body);
        out.extend_from_slice(serde_json::to_string(&text).expect("a string serializes").as_bytes());
    } else {
        out.extend_from_slice(body);
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::executor::AttemptKind;
    use crate::job::source::open_dead_letter;

    #[test]
    fn records_keep_the_batch_byte_for_byte_and_one_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        let error = AttemptError { kind: AttemptKind::Answer { status: 502, kind: None }, message: "bad".into() };
        let one_line = br#"[{"z":1,"a":2},123456789012345678901234567890]"#;
        let multi_line = b"[{\"z\": 1,\n  \"a\": 1e999999},\r\n 2]";
        let dead = DeadLetters::create(&path).unwrap();
        dead.append(&[
            Record { index: 0, attempts: 3, error: &error, body: one_line, items: Some(1) },
            Record { index: 4, attempts: 1, error: &error, body: multi_line, items: Some(2) },
        ])
        .unwrap();
        assert_eq!(dead.written(), 2);
        dead.finish().unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["error"]["kind"], "http_502");
        assert!(text.lines().next().unwrap().ends_with(r#""items":[{"z":1,"a":2},123456789012345678901234567890]}"#));

        let mut source = open_dead_letter(&path).unwrap();
        let a = source.next_batch().unwrap().unwrap();
        let b = source.next_batch().unwrap().unwrap();
        assert_eq!((a.body.as_slice(), a.items), (&one_line[..], 2));
        assert_eq!((b.body.as_slice(), b.items), (&multi_line[..], 2));
        assert!(source.next_batch().unwrap().is_none());
    }

    #[test]
    fn an_unused_file_is_removed_and_an_unwritable_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        DeadLetters::create(&path).unwrap().finish().unwrap();
        assert!(!path.exists());
        assert!(DeadLetters::create(&dir.path().join("no/such/dir/dl.jsonl")).is_err());
    }
}
