//! Batches from a job's input, streamed: a source holds one batch in memory at a
//! time (plus the job file's `item_list`, which Cortex also holds whole).
//!
//! - `item_list`: ⌈n / batch_size⌉ contiguous batches of the listed items.
//! - `delimited_files`: each file is a stream of whitespace-separated JSON values
//!   (JSON Lines included); batches span file boundaries; a bad value is reported with
//!   its file, line and column.
//! - `file_path_lister`: the matching file paths are the items, the final partial
//!   batch included.
//! - a dead-letter file: each line's `items` become one batch again.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;

pub use super::inputs::SourceError;
use super::inputs::{Input, Opener, list_files, open_input};
use super::submission::SourceSpec;
use crate::confine::{Prefixes, Target};
use crate::plugin::ItemSpans;

/// One batch: its position in the job, its item count, and its JSON array.
#[derive(Debug, Clone)]
pub struct Batch {
    /// 0-based position in the job.
    pub index: u64,
    /// Items in the batch.
    pub items: usize,
    /// The batch, a JSON array.
    pub body: Vec<u8>,
    /// Where its items lie in `body`, when the source knows (it built the array, or
    /// scanned it): handed to the guest, which then does not scan the batch itself.
    pub spans: Option<ItemSpans>,
}

/// A stream of batches.
pub trait BatchSource: Send {
    /// The next batch, `None` at the end.
    fn next_batch(&mut self) -> Result<Option<Batch>, SourceError>;
    /// The number of batches, when it is known before reading them all.
    fn total_batches(&self) -> Option<u64>;
}

/// Rewrites host paths under the mounted directory to the guest's `/mnt/…`, so that a
/// `file_path_lister` item names a file the guest can open.
#[derive(Debug, Clone)]
pub struct PathRewrite {
    /// The host directory mounted at `/mnt`.
    pub host: PathBuf,
}

impl PathRewrite {
    fn apply(&self, path: &Path) -> String {
        let absolute = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        match absolute.strip_prefix(&self.host) {
            Ok(rest) => Path::new(crate::sandbox::GUEST_MOUNT).join(rest).display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }
}

/// Opens the source a job file describes. With `confine` (a job submitted to the
/// operator), every file or object must lie under one of its prefixes, and is opened
/// beneath it.
pub fn open(
    spec: SourceSpec,
    rewrite: Option<PathRewrite>,
    confine: Option<&Prefixes>,
) -> Result<Box<dyn BatchSource>, SourceError> {
    Ok(match spec {
        SourceSpec::ItemList { items, batch_size } => Box::new(ItemList { items, batch_size, next: 0 }),
        SourceSpec::FilePathLister(files) => {
            let items = list_files(&files, confine)?
                .iter()
                .map(|input| {
                    let path = match (&rewrite, &input.open) {
                        (Some(r), Opener::Path(_) | Opener::Object(Target::Local { .. }, _)) => {
                            r.apply(Path::new(&input.name))
                        }
                        _ => input.name.clone(),
                    };
                    serde_json::value::to_raw_value(&path).expect("a string serializes")
                })
                .collect();
            Box::new(ItemList { items, batch_size: files.batch_size, next: 0 })
        }
        SourceSpec::DelimitedFiles(files) => {
            let paths = list_files(&files, confine)?;
            Box::new(Delimited {
                files: paths.into_iter(),
                current: None,
                batch_size: files.batch_size,
                index: 0,
                chunk: CHUNK,
                pending: None,
            })
        }
    })
}

/// Opens a dead-letter file as a source: one batch per line.
pub fn open_dead_letter(path: &Path) -> Result<Box<dyn BatchSource>, SourceError> {
    let file = File::open(path).map_err(|error| SourceError::Io { path: path.into(), error })?;
    Ok(Box::new(DeadLetter { path: path.into(), lines: BufReader::new(file), line: 0, index: 0 }))
}

/// A batch of `values`, each already one JSON value, noting where each one lies.
fn array_of<'a>(index: u64, values: impl ExactSizeIterator<Item = &'a str>) -> Batch {
    let items = values.len();
    let mut body = Vec::with_capacity(256);
    let mut spans = Some(ItemSpans::with_capacity(items));
    body.push(b'[');
    for (i, v) in values.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let start = body.len();
        body.extend_from_slice(v.as_bytes());
        if spans.as_mut().is_some_and(|spans| !spans.push(start, body.len())) {
            spans = None;
        }
    }
    body.push(b']');
    Batch { index, items, body, spans }
}

struct ItemList {
    items: Vec<Box<RawValue>>,
    batch_size: usize,
    next: usize,
}

impl BatchSource for ItemList {
    fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        if self.next >= self.items.len() {
            return Ok(None);
        }
        let end = (self.next + self.batch_size).min(self.items.len());
        let chunk = &self.items[self.next..end];
        let batch = array_of((self.next / self.batch_size) as u64, chunk.iter().map(|v| v.get()));
        self.next = end;
        Ok(Some(batch))
    }

    fn total_batches(&self) -> Option<u64> {
        Some(self.items.len().div_ceil(self.batch_size) as u64)
    }
}

/// How much of a delimited file is read at a time.
const CHUNK: usize = 1 << 20;

/// One delimited file being read: a window of its bytes, parsed in place.
struct OpenFile {
    path: PathBuf,
    file: Box<dyn std::io::Read + Send>,
    buf: Vec<u8>,
    /// Where the unparsed bytes start in `buf`.
    start: usize,
    eof: bool,
    /// Line and column (1-based) of `buf[start]` in the file, for error positions.
    line: usize,
    column: usize,
    /// Reads made so far (each parse of the window follows one).
    reads: usize,
}

impl OpenFile {
    /// Reads more after what is still unparsed; `false` at the end of the file. It reads
    /// at least as much as is already buffered, so that a value larger than a chunk is
    /// parsed over a doubling window: linear in its size, not quadratic.
    fn fill(&mut self, chunk: usize) -> Result<bool, SourceError> {
        self.buf.drain(..self.start);
        self.start = 0;
        let len = self.buf.len();
        self.buf.resize(len + chunk.max(len), 0);
        self.reads += 1;
        let n = loop {
            match self.file.read(&mut self.buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(SourceError::Io { path: self.path.clone(), error }),
            }
        };
        self.buf.truncate(len + n);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// Moves past `n` parsed bytes, keeping the line and column up to date.
    fn consume(&mut self, n: usize) {
        let consumed = &self.buf[self.start..self.start + n];
        match consumed.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                self.line += consumed.iter().filter(|&&b| b == b'\n').count();
                self.column = n - last;
            }
            None => self.column += n,
        }
        self.start += n;
    }

    /// The next JSON value of the file, `None` at its end.
    fn next_value(&mut self, chunk: usize) -> Result<Option<Box<RawValue>>, SourceError> {
        loop {
            let window = &self.buf[self.start..];
            let mut stream = serde_json::Deserializer::from_slice(window).into_iter::<&RawValue>();
            match stream.next() {
                // A value that ends where the window ends may go on in the next chunk
                // (a number split in two): read more first, unless the file is over.
                Some(Ok(_)) if stream.byte_offset() == window.len() && !self.eof => {
                    self.fill(chunk)?;
                }
                Some(Ok(value)) => {
                    let value = value.to_owned();
                    let end = stream.byte_offset();
                    self.consume(end);
                    return Ok(Some(value));
                }
                Some(Err(e)) if e.is_eof() && !self.eof => {
                    self.fill(chunk)?;
                }
                // A value cut short by the window's end is not always an EOF error:
                // `341.` or `1e` are "invalid number" until their digits arrive. An
                // error on the window's last line (still being read) is judged again
                // with more bytes; one on an earlier line has its whole line at hand.
                Some(Err(e)) if !self.eof && e.line() > window.iter().filter(|&&b| b == b'\n').count() => {
                    self.fill(chunk)?;
                }
                Some(Err(e)) => {
                    let column = if e.line() == 1 { self.column - 1 + e.column() } else { e.column() };
                    return Err(SourceError::BadValue {
                        path: self.path.clone(),
                        line: self.line + e.line() - 1,
                        column,
                        message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
                    });
                }
                None if self.eof => return Ok(None),
                None => {
                    self.fill(chunk)?;
                }
            }
        }
    }
}

struct Delimited {
    files: std::vec::IntoIter<Input>,
    current: Option<OpenFile>,
    batch_size: usize,
    index: u64,
    chunk: usize,
    /// An error met after some values of a batch were read: those are returned as a
    /// batch first, the error on the next call.
    pending: Option<SourceError>,
}

impl Delimited {
    fn next_value(&mut self) -> Result<Option<Box<RawValue>>, SourceError> {
        loop {
            if self.current.is_none() {
                let Some(input) = self.files.next() else { return Ok(None) };
                let file = open_input(&input)?;
                let path = PathBuf::from(input.name);
                let buf = Vec::with_capacity(self.chunk);
                self.current = Some(OpenFile { path, file, buf, start: 0, eof: false, line: 1, column: 1, reads: 0 });
            }
            match self.current.as_mut().expect("just opened").next_value(self.chunk)? {
                Some(value) => return Ok(Some(value)),
                None => self.current = None,
            }
        }
    }
}

impl BatchSource for Delimited {
    fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        if let Some(error) = self.pending.take() {
            return Err(error);
        }
        // Grows with what is read: a huge batch_size reserves nothing up front.
        let mut values = Vec::with_capacity(self.batch_size.min(1024));
        while values.len() < self.batch_size {
            match self.next_value() {
                Ok(Some(value)) => values.push(value),
                Ok(None) => break,
                Err(e) if values.is_empty() => return Err(e),
                Err(e) => {
                    self.pending = Some(e);
                    break;
                }
            }
        }
        if values.is_empty() {
            return Ok(None);
        }
        let batch = array_of(self.index, values.iter().map(|v| v.get()));
        self.index += 1;
        Ok(Some(batch))
    }

    fn total_batches(&self) -> Option<u64> {
        None
    }
}

struct DeadLetter {
    path: PathBuf,
    lines: BufReader<File>,
    line: usize,
    index: u64,
}

#[derive(Deserialize)]
struct DeadLetterLine {
    items: Box<RawValue>,
    /// The exact batch, when `items` had its line breaks turned into spaces.
    body: Option<String>,
}

impl BatchSource for DeadLetter {
    fn next_batch(&mut self) -> Result<Option<Batch>, SourceError> {
        let mut text = String::new();
        loop {
            text.clear();
            let read =
                self.lines.read_line(&mut text).map_err(|error| SourceError::Io { path: self.path.clone(), error })?;
            if read == 0 {
                return Ok(None);
            }
            self.line += 1;
            if !text.trim().is_empty() {
                break;
            }
        }
        let bad = |column: usize, message: String| SourceError::BadValue {
            path: self.path.clone(),
            line: self.line,
            column,
            message,
        };
        let record: DeadLetterLine =
            serde_json::from_str(&text).map_err(|e| bad(e.column(), format!("not a dead-letter record: {e}")))?;
        let (field, body) = match record.body {
            Some(body) => ("body", body.into_bytes()),
            None => ("items", record.items.get().as_bytes().to_vec()),
        };
        let spans = std::str::from_utf8(&body)
            .map_err(|e| e.to_string())
            .and_then(|text| ItemSpans::scan(text).map_err(|e| e.to_string()))
            .map_err(|e| bad(0, format!("`{field}` is not a JSON array: {e}")))?;
        let batch = Batch { index: self.index, items: spans.len(), body, spans: Some(spans) };
        self.index += 1;
        Ok(Some(batch))
    }

    fn total_batches(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::submission::FileSource;

    fn drain(mut source: Box<dyn BatchSource>) -> Vec<(u64, usize, String)> {
        let mut out = Vec::new();
        while let Some(b) = source.next_batch().unwrap() {
            out.push((b.index, b.items, String::from_utf8(b.body).unwrap()));
        }
        out
    }

    fn items(json: &str, batch_size: usize) -> Box<dyn BatchSource> {
        let items: Vec<Box<RawValue>> = serde_json::from_str(json).unwrap();
        open(SourceSpec::ItemList { items, batch_size }, None, None).unwrap()
    }

    fn files(paths: Vec<PathBuf>, includes: &[&str], excludes: &[&str], batch_size: usize) -> FileSource {
        let own = |g: &[&str]| g.iter().map(|s| s.to_string()).collect();
        FileSource { paths, includes: own(includes), excludes: own(excludes), batch_size }
    }

    #[test]
    fn item_list_batching_at_the_edges() {
        // n < batch_size: one partial batch.
        assert_eq!(drain(items("[1,2]", 5)), vec![(0, 2, "[1,2]".into())]);
        // n = k·batch_size: no empty trailing batch.
        let b = drain(items("[1,2,3,4]", 2));
        assert_eq!(b, vec![(0, 2, "[1,2]".into()), (1, 2, "[3,4]".into())]);
        // Remainder, and items kept as written.
        let source = items(r#"[{"a": 1},2,"x"]"#, 2);
        assert_eq!(source.total_batches(), Some(2));
        assert_eq!(drain(source), vec![(0, 2, r#"[{"a": 1},2]"#.into()), (1, 1, r#"["x"]"#.into())]);
    }

    #[test]
    fn delimited_files_span_files_and_skip_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jsonl"), "{\"n\":1}\n\n{\"n\":2}\n{\"n\":3}\n").unwrap();
        std::fs::write(dir.path().join("b.jsonl"), "  4 [5,6]\n\"seven\"\n{\"pretty\":\n  true}\n").unwrap();
        std::fs::write(dir.path().join("skip.txt"), "not json").unwrap();
        let source =
            open(SourceSpec::DelimitedFiles(files(vec![dir.path().into()], &["**.jsonl"], &[], 4)), None, None)
                .unwrap();
        assert_eq!(source.total_batches(), None);
        assert_eq!(
            drain(source),
            vec![
                (0, 4, r#"[{"n":1},{"n":2},{"n":3},4]"#.into()),
                (1, 3, "[[5,6],\"seven\",{\"pretty\":\n  true}]".into()),
            ]
        );
    }

    fn delimited(paths: Vec<PathBuf>, batch_size: usize, chunk: usize) -> Box<dyn BatchSource> {
        let files: Vec<Input> = paths.into_iter().map(local).collect();
        Box::new(Delimited { files: files.into_iter(), current: None, batch_size, index: 0, chunk, pending: None })
    }

    fn local(path: PathBuf) -> Input {
        Input { name: path.display().to_string(), open: Opener::Path(path) }
    }

    #[test]
    fn a_value_larger_than_a_chunk_is_read_in_a_doubling_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.jsonl");
        let big = format!("[\"{}\"]", "x".repeat(1 << 20));
        std::fs::write(&path, format!("1\n{big}\n2\n")).unwrap();
        let mut source = Delimited {
            files: vec![local(path)].into_iter(),
            current: None,
            batch_size: 10,
            index: 0,
            chunk: 16,
            pending: None,
        };
        let batch = source.next_batch().unwrap().unwrap();
        assert_eq!(batch.items, 3);
        // A fixed 16-byte window would parse the value again after each of ~65,000
        // reads (quadratic); a doubling one needs about log2(1 MiB / 16) of them.
        let reads = source.current.as_ref().map(|f| f.reads).unwrap_or(0);
        assert!(reads < 40, "{reads} reads for a 1 MiB value");
    }

    #[test]
    fn a_huge_batch_size_reserves_nothing_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "1\n2\n3\n").unwrap();
        let source = delimited(vec![path], 4_611_686_018_427_387_904, CHUNK);
        assert_eq!(drain(source), vec![(0, 3, "[1,2,3]".into())]);
    }

    #[test]
    fn values_split_across_read_chunks_come_out_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let mut text = String::new();
        for i in 0..200 {
            text.push_str(&format!("{{\"n\": {i}, \"s\": \"{}\"}}\n{}\n", "x".repeat(i % 13), 1000 + i));
            // Numbers, literals and escapes that a chunk's end can cut anywhere.
            text.push_str(&format!(
                "{{\"p\": 341.0{i}, \"e\": -1.5e-{i}, \"E\": 2E+7, \"t\": true, \"f\": false, \"z\": null, \"u\": \"\\u00e9\\n\"}}\n"
            ));
        }
        text.push_str("[1,\n 2]\n12345");
        std::fs::write(&path, &text).unwrap();
        let whole = drain(delimited(vec![path.clone()], 7, CHUNK));
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(drain(delimited(vec![path.clone()], 7, chunk)), whole, "chunk {chunk}");
        }
        let last = whole.last().unwrap();
        assert!(last.2.ends_with(",[1,\n 2],12345]"), "{}", last.2);
        assert_eq!(whole.iter().map(|b| b.1).sum::<usize>(), 602);
    }

    #[test]
    fn error_positions_survive_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, "1 2\n[3,\n 4] {\"a\":\n  tru}\n").unwrap();
        for chunk in [1, 3, 5, CHUNK] {
            let mut source = delimited(vec![path.clone()], 100, chunk);
            // The values before the bad one come out as a batch first.
            assert_eq!(source.next_batch().unwrap().unwrap().body, b"[1,2,[3,\n 4]]");
            match source.next_batch().unwrap_err() {
                SourceError::BadValue { line, column, .. } => assert_eq!((line, column), (4, 6), "chunk {chunk}"),
                other => panic!("{other}"),
            }
        }
    }

    #[test]
    fn bad_value_names_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, "{\"ok\":1}\n{\"ok\":2}\n{\"broken\": }\n").unwrap();
        let mut source = open(SourceSpec::DelimitedFiles(files(vec![path.clone()], &[], &[], 10)), None, None).unwrap();
        let first = source.next_batch().unwrap().unwrap();
        assert_eq!((first.items, first.body.as_slice()), (2, &br#"[{"ok":1},{"ok":2}]"#[..]));
        match source.next_batch().unwrap_err() {
            SourceError::BadValue { path: p, line, column, .. } => {
                assert_eq!((p, line, column), (path, 3, 12));
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn path_lister_applies_includes_then_excludes_to_full_paths() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["a.jpg", "b.png", "sub/c.jpg", "sub/skip-d.jpg", "e.txt"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        let root = dir.path().to_path_buf();
        let source = open(
            SourceSpec::FilePathLister(files(vec![root.clone()], &["**.jpg", "**.png"], &["**/skip-*"], 2)),
            None,
            None,
        )
        .unwrap();
        assert_eq!(source.total_batches(), Some(2));
        let p = |f: &str| serde_json::to_string(&root.join(f).display().to_string()).unwrap();
        assert_eq!(
            drain(source),
            vec![(0, 2, format!("[{},{}]", p("a.jpg"), p("b.png"))), (1, 1, format!("[{}]", p("sub/c.jpg")))]
        );
        // `*.jpg` never matches a full path, as in Cortex.
        let err =
            open(SourceSpec::FilePathLister(files(vec![root.clone()], &["*.jpg"], &[], 2)), None, None).err().unwrap();
        assert!(matches!(err, SourceError::NoFiles { .. }), "{err}");
        // Paths under the mount become /mnt paths.
        let rewrite = PathRewrite { host: root.canonicalize().unwrap() };
        let source =
            open(SourceSpec::FilePathLister(files(vec![root.clone()], &["**.txt"], &[], 5)), Some(rewrite), None)
                .unwrap();
        assert_eq!(drain(source), vec![(0, 1, r#"["/mnt/e.txt"]"#.into())]);
    }

    #[test]
    fn missing_paths_are_named() {
        let err = open(SourceSpec::DelimitedFiles(files(vec!["/no/such/dir".into()], &[], &[], 1)), None, None)
            .err()
            .unwrap();
        assert!(err.to_string().starts_with("/no/such/dir: "), "{err}");
    }

    #[test]
    fn dead_letter_lines_become_batches_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        std::fs::write(
            &path,
            "{\"batch_index\":3,\"attempts\":3,\"error\":{\"kind\":\"trap\",\"message\":\"x\"},\"items\":[1,2]}\n\n{\"items\":[\"a\"]}\n",
        )
        .unwrap();
        assert_eq!(drain(open_dead_letter(&path).unwrap()), vec![(0, 2, "[1,2]".into()), (1, 1, "[\"a\"]".into())]);
        std::fs::write(&path, "{\"items\":[1]}\nnope\n").unwrap();
        let mut source = open_dead_letter(&path).unwrap();
        source.next_batch().unwrap();
        assert!(source.next_batch().unwrap_err().to_string().contains("line 2"));
    }

    #[test]
    fn confined_inputs_stay_under_their_grant() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let granted = dir.path().join("in");
        std::fs::create_dir_all(granted.join("sub")).unwrap();
        std::fs::write(granted.join("a.jsonl"), "1 2\n").unwrap();
        std::fs::write(granted.join("sub/b.jsonl"), "3\n").unwrap();
        std::fs::write(dir.path().join("secret.jsonl"), "666\n").unwrap();
        symlink(dir.path().join("secret.jsonl"), granted.join("leak.jsonl")).unwrap();
        symlink(dir.path(), granted.join("up")).unwrap();
        let confine = Prefixes::parse(&[crate::objects::file_url(&granted)]).unwrap();
        let job = |paths: Vec<PathBuf>| SourceSpec::DelimitedFiles(files(paths, &["**.jsonl"], &[], 10));
        let source = open(job(vec![granted.clone()]), None, Some(&confine)).unwrap();
        assert_eq!(drain(source), vec![(0, 3, "[1,2,3]".into())], "the link out is not read");
        for outside in [
            dir.path().to_path_buf(),
            granted.join(".."),
            granted.join("up/secret.jsonl"),
            PathBuf::from("relative/in"),
            PathBuf::from("/etc/"),
        ] {
            let e = open(job(vec![outside.clone()]), None, Some(&confine)).err().unwrap().to_string();
            assert!(
                e.contains("not under a prefix")
                    || e.contains("not allowed")
                    || e.contains("absolute")
                    || e.contains("outside"),
                "{outside:?}: {e}"
            );
            assert!(!e.contains("666"), "{e}");
        }
    }
}
