//! Object storage, one implementation for every store: the `object_store` crate
//! (S3 and S3-compatible servers, Google Cloud Storage, Azure Blob Storage, local
//! files), for job inputs on `s3://…` and for guests' `object_get`/`object_put`.
//!
//! A store is made once per bucket (container, or `file://`) from the URL and the
//! standard environment of its provider — `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ENDPOINT` (an S3-compatible server), `AWS_ALLOW_HTTP`, …;
//! `GOOGLE_SERVICE_ACCOUNT`, …; `AZURE_STORAGE_ACCOUNT_NAME`, … — which guests never
//! see. Calls run on a small runtime of their own, so that the worker threads that
//! call them (guests' host functions, the input reader) may block on them.

use std::collections::HashMap;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cap_std::fs::Dir;
use futures_lite::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::confine::{CallError, ObjectUrl, SCHEMES, Target};

/// Checks a grant's URL prefix (`s3://bucket/prefix/`, `file:///dir/`).
pub(crate) fn check_prefix(prefix: &str) -> Result<String, String> {
    ObjectUrl::parse(prefix).map(|_| prefix.to_string()).map_err(|e| format!("object prefix {e}"))
}

/// Whether `text` is an object URL (as opposed to a local path).
pub(crate) fn is_object_url(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| SCHEMES.contains(&scheme) && scheme != "file")
}

/// `file://` URL of an absolute local path, each segment percent-encoded where a URL
/// needs it. Segments are kept as written (`.`, `..`, empty ones), so that a check of
/// the URL refuses them rather than a normalization hiding them.
pub(crate) fn file_url(path: &Path) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::CONTROLS.add(b' ').add(b'%').add(b'?').add(b'#').add(b'\\');
    let text = path.to_string_lossy();
    let mut url = String::from("file://");
    let segments: Vec<&str> = text.strip_prefix('/').unwrap_or(&text).split('/').collect();
    for segment in &segments {
        url.push('/');
        url.extend(percent_encoding::utf8_percent_encode(segment, SET));
    }
    url
}

/// An object found by a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// Its URL (`s3://bucket/key`).
    pub url: String,
    /// Its key within the bucket.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The stores, by bucket, and the runtime their calls run on.
pub(crate) struct Objects {
    runtime: tokio::runtime::Runtime,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

/// The process's stores.
pub(crate) fn objects() -> &'static Objects {
    static OBJECTS: OnceLock<Objects> = OnceLock::new();
    OBJECTS.get_or_init(|| Objects {
        runtime: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wasmbatch-objects")
            .enable_all()
            .build()
            .expect("start the object storage runtime"),
        stores: Mutex::new(HashMap::new()),
    })
}

impl Objects {
    /// The store of an object URL's bucket, and the object's path in it.
    fn locate(&self, url: &ObjectUrl) -> Result<(Arc<dyn ObjectStore>, ObjectPath), CallError> {
        let refused = |why: String| CallError::Refused(format!("{}: {why}", url.as_str()));
        let key = format!("{}://{}", url.scheme, url.bucket);
        let store = {
            let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
            match stores.get(&key) {
                Some(store) => store.clone(),
                None => {
                    let options = crate::tls::object_store_options(&url.scheme);
                    let store: Arc<dyn ObjectStore> = match url.scheme.as_str() {
                        "s3" => Arc::new(
                            object_store::aws::AmazonS3Builder::from_env()
                                .with_url(&key)
                                .with_client_options(options)
                                .build()
                                .map_err(|e| refused(e.to_string()))?,
                        ),
                        "gs" => Arc::new(
                            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                                .with_url(&key)
                                .with_client_options(options)
                                .build()
                                .map_err(|e| refused(e.to_string()))?,
                        ),
                        "az" => Arc::new(
                            object_store::azure::MicrosoftAzureBuilder::from_env()
                                .with_url(&key)
                                .with_client_options(options)
                                .build()
                                .map_err(|e| refused(e.to_string()))?,
                        ),
                        other => {
                            return Err(refused(format!(
                                "the scheme {other} is not one of object storage ({})",
                                SCHEMES.join(", ")
                            )));
                        }
                    };
                    stores.insert(key, store.clone());
                    store
                }
            }
        };
        let path = ObjectPath::from_iter(url.segments.iter().map(String::as_str));
        Ok((store, path))
    }

    /// Runs `call` on the stores' runtime, up to `deadline`.
    fn run<T>(
        &self,
        url: &str,
        deadline: Instant,
        call: impl std::future::Future<Output = object_store::Result<T>> + Send,
    ) -> Result<T, CallError>
    where
        T: Send,
    {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CallError::Failed(format!("{url}: the deadline has passed")));
        }
        let outcome = self.runtime.block_on(async { tokio::time::timeout(left, call).await });
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(object_store::Error::NotFound { .. })) => Err(CallError::NotFound(format!("{url}: no such object"))),
            Ok(Err(e)) => {
                let hint = if url.starts_with("s3://") && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                    " (no AWS_ACCESS_KEY_ID in the environment: give AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and \
                     AWS_REGION, and AWS_ENDPOINT for an S3-compatible server, or run where an instance role is)"
                } else {
                    ""
                };
                // The causes too: "error sending request" alone does not say that a
                // certificate was refused.
                let mut message = format!("{url}: {e}");
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    let text = cause.to_string();
                    if !message.contains(&text) {
                        message.push_str(": ");
                        message.push_str(&text);
                    }
                    source = cause.source();
                }
                Err(CallError::Failed(format!("{message}{hint}")))
            }
            Err(_) => Err(CallError::Failed(format!("{url}: no answer within {left:?}"))),
        }
    }

    /// The whole object `target` names, if it is at most `max` bytes.
    pub(crate) fn get(&self, target: &Target, max: usize, deadline: Instant) -> Result<Vec<u8>, CallError> {
        let url = match target {
            Target::Local { root, path, url } => {
                let file = local::open(root, path, url)?;
                let size = file.metadata().map_err(|e| local::error(url, root, e))?.len();
                if size > max as u64 {
                    return Err(over_limit(url, size, max));
                }
                let mut bytes = Vec::with_capacity(size as usize);
                file.take(max as u64 + 1).read_to_end(&mut bytes).map_err(|e| local::error(url, root, e))?;
                if bytes.len() > max {
                    return Err(over_limit(url, bytes.len() as u64, max));
                }
                return Ok(bytes);
            }
            Target::Store(url) => url,
        };
        let (store, path) = self.locate(url)?;
        let meta = self.run(url.as_str(), deadline, store.head(&path))?;
        if meta.size > max as u64 {
            return Err(over_limit(url.as_str(), meta.size, max));
        }
        let bytes = self.run(url.as_str(), deadline, async { store.get(&path).await?.bytes().await })?;
        Ok(bytes.to_vec())
    }

    /// Bytes `offset..offset + len` of the object (fewer at its end; none past it).
    pub(crate) fn read(&self, target: &Target, offset: u64, len: u64, deadline: Instant) -> Result<Vec<u8>, CallError> {
        let url = match target {
            Target::Local { root, path, url } => {
                let mut file = local::open(root, path, url)?;
                let mut bytes = Vec::new();
                file.seek(std::io::SeekFrom::Start(offset)).map_err(|e| local::error(url, root, e))?;
                file.take(len).read_to_end(&mut bytes).map_err(|e| local::error(url, root, e))?;
                return Ok(bytes);
            }
            Target::Store(url) => url,
        };
        let (store, path) = self.locate(url)?;
        let meta = self.run(url.as_str(), deadline, store.head(&path))?;
        let end = offset.saturating_add(len).min(meta.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let bytes = self.run(url.as_str(), deadline, store.get_range(&path, offset..end))?;
        Ok(bytes.to_vec())
    }

    /// Writes `data` as the object (whole, atomically: a reader sees the old object or
    /// the new one, and a failed write leaves nothing behind).
    pub(crate) fn put(&self, target: &Target, data: Vec<u8>, deadline: Instant) -> Result<(), CallError> {
        match target {
            Target::Local { root, path, url } => local::put(root, path, url, &data),
            Target::Store(url) => {
                let (store, path) = self.locate(url)?;
                self.run(url.as_str(), deadline, store.put(&path, PutPayload::from(data))).map(drop)
            }
        }
    }

    /// Every object under `target` (a folder), or the one object it names, in key order.
    pub(crate) fn list(&self, target: &Target) -> Result<Vec<Listed>, String> {
        let url = match target {
            Target::Local { root, path, url } => {
                let mut listed = local::list(root, path, url).map_err(|e| e.message().to_string())?;
                listed.sort_by(|a, b| a.key.cmp(&b.key));
                return Ok(listed);
            }
            Target::Store(url) => url,
        };
        let (store, path) = self.locate(url).map_err(|e| e.message().to_string())?;
        let deadline = Instant::now() + Duration::from_secs(300);
        let path = (!path.as_ref().is_empty()).then_some(path);
        let base = format!("{}://{}", url.scheme, url.bucket);
        let mut listed: Vec<Listed> = self
            .run(url.as_str(), deadline, async {
                let mut stream = store.list(path.as_ref());
                let mut out = Vec::new();
                while let Some(meta) = stream.next().await {
                    let meta = meta?;
                    out.push(Listed {
                        url: format!("{base}/{}", meta.location),
                        key: meta.location.to_string(),
                        size: meta.size,
                    });
                }
                Ok(out)
            })
            .map_err(|e| e.message().to_string())?;
        if listed.is_empty()
            && let Some(path) = &path
            && let Ok(meta) = self.run(url.as_str(), deadline, store.head(path))
        {
            // The URL names one object.
            listed.push(Listed { url: url.as_str().to_string(), key: meta.location.to_string(), size: meta.size });
        }
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }
}

fn over_limit(url: &str, size: u64, max: usize) -> CallError {
    CallError::Failed(format!("{url}: {size} bytes, over the limit of {max} bytes read at once (read it in ranges)"))
}

/// Local objects, always opened beneath the granted directory's handle.
mod local {
    use super::*;

    /// An I/O error as a call's error: a way out of the granted folder is refused.
    pub(super) fn error(url: &str, root: &Path, e: std::io::Error) -> CallError {
        match e.kind() {
            std::io::ErrorKind::NotFound => CallError::NotFound(format!("{url}: no such object")),
            std::io::ErrorKind::PermissionDenied if e.to_string().contains("outside") => CallError::Refused(format!(
                "{url}: leads outside the granted folder {} (a `..` or a symbolic link out of it is not followed)",
                root.display()
            )),
            _ => CallError::Failed(format!("{url}: {e}")),
        }
    }

    fn root_dir(root: &Path, url: &str) -> Result<Dir, CallError> {
        Dir::open_ambient_dir(root, cap_std::ambient_authority())
            .map_err(|e| CallError::Failed(format!("{url}: the granted folder {}: {e}", root.display())))
    }

    /// The regular file at `path` below `root`.
    pub(super) fn open(root: &Path, path: &Path, url: &str) -> Result<cap_std::fs::File, CallError> {
        if path.as_os_str().is_empty() {
            return Err(CallError::Refused(format!("{url}: names the granted folder, not an object")));
        }
        let file = root_dir(root, url)?.open(path).map_err(|e| error(url, root, e))?;
        let meta = file.metadata().map_err(|e| error(url, root, e))?;
        if !meta.is_file() {
            return Err(CallError::NotFound(format!("{url}: not a file")));
        }
        Ok(file)
    }

    /// Writes to a temporary name beside the object, then renames it into place; a
    /// link at the object's name is replaced, never written through.
    pub(super) fn put(root: &Path, path: &Path, url: &str, data: &[u8]) -> Result<(), CallError> {
        let name =
            path.file_name().ok_or_else(|| CallError::Refused(format!("{url}: names a folder, not an object")))?;
        let dir = root_dir(root, url)?;
        let parent = path.parent().unwrap_or(Path::new(""));
        let dir = if parent.as_os_str().is_empty() {
            dir
        } else {
            // Opened first: a link on the way that leads out is refused as such, not
            // reported as a folder that exists.
            match dir.open_dir(parent) {
                Ok(opened) => opened,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    dir.create_dir_all(parent).map_err(|e| error(url, root, e))?;
                    dir.open_dir(parent).map_err(|e| error(url, root, e))?
                }
                Err(e) => return Err(error(url, root, e)),
            }
        };
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = PathBuf::from(format!(".{}.{}-{n}.wasmbatch-tmp", name.to_string_lossy(), std::process::id()));
        let written = (|| {
            let mut options = cap_std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            let mut file = dir.open_with(&temp, &options)?;
            file.write_all(data)?;
            file.sync_all()?;
            dir.rename(&temp, &dir, name)
        })();
        written.map_err(|e| {
            let _ = dir.remove_file(&temp);
            error(url, root, e)
        })
    }

    /// The files under `path` (a folder: recursively; a file: itself). Symbolic links to
    /// files that stay inside the granted folder count; links to folders are not
    /// followed (no loops), links that lead out are left out.
    pub(super) fn list(root: &Path, path: &Path, url: &str) -> Result<Vec<Listed>, CallError> {
        let top = root_dir(root, url)?;
        let meta = if path.as_os_str().is_empty() {
            top.dir_metadata().map_err(|e| error(url, root, e))?
        } else {
            top.metadata(path).map_err(|e| error(url, root, e))?
        };
        let mut out = Vec::new();
        if meta.is_file() {
            out.push(listed(root, path, meta.len()));
            return Ok(out);
        }
        let dir =
            if path.as_os_str().is_empty() { top } else { top.open_dir(path).map_err(|e| error(url, root, e))? };
        let mut stack = vec![(dir, path.to_path_buf())];
        while let Some((dir, at)) = stack.pop() {
            for entry in dir.entries().map_err(|e| error(url, root, e))? {
                let entry = entry.map_err(|e| error(url, root, e))?;
                let name = entry.file_name();
                let kind = entry.file_type().map_err(|e| error(url, root, e))?;
                if kind.is_dir() {
                    stack.push((entry.open_dir().map_err(|e| error(url, root, e))?, at.join(&name)));
                } else if kind.is_file() {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    out.push(listed(root, &at.join(&name), size));
                } else if kind.is_symlink()
                    && let Ok(meta) = dir.metadata(&name)
                    && meta.is_file()
                {
                    out.push(listed(root, &at.join(&name), meta.len()));
                }
            }
        }
        Ok(out)
    }

    fn listed(root: &Path, path: &Path, size: u64) -> Listed {
        let full = root.join(path);
        Listed { url: file_url(&full), key: full.display().to_string(), size }
    }
}

/// Reads an object in ranges of `chunk` bytes: an input of any size in bounded memory.
pub(crate) struct ObjectReader {
    target: Target,
    size: u64,
    offset: u64,
    chunk: u64,
    buffer: Vec<u8>,
    at: usize,
}

impl ObjectReader {
    /// A reader of the object `target` names, of `size` bytes.
    pub(crate) fn new(target: Target, size: u64) -> ObjectReader {
        ObjectReader { target, size, offset: 0, chunk: 4 << 20, buffer: Vec::new(), at: 0 }
    }
}

impl std::io::Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buffer.len() {
            if self.offset >= self.size {
                return Ok(0);
            }
            let deadline = Instant::now() + Duration::from_secs(300);
            self.buffer = objects()
                .read(&self.target, self.offset, self.chunk, deadline)
                .map_err(|e| std::io::Error::other(e.message().to_string()))?;
            self.at = 0;
            self.offset += self.buffer.len() as u64;
            if self.buffer.is_empty() {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buffer.len() - self.at);
        out[..n].copy_from_slice(&self.buffer[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_urls_are_recognized() {
        assert!(check_prefix("s3://bucket/in/").is_ok());
        assert!(check_prefix("file:///tmp/x/").is_ok());
        assert!(check_prefix("http://x/").unwrap_err().contains("the scheme must be one of"));
        assert!(check_prefix("s3:///nobucket").unwrap_err().contains("name the bucket"));
        assert!(check_prefix("s3://b/../x").is_err());
        assert!(is_object_url("s3://b/k") && is_object_url("gs://b/k") && !is_object_url("/tmp/x"));
        assert!(!is_object_url("file:///tmp/x"), "file:// inputs are local paths");
    }

    fn granted(prefix: &Path) -> crate::confine::Prefixes {
        crate::confine::Prefixes::parse(&[file_url(prefix)]).unwrap()
    }

    #[test]
    fn local_objects_are_written_listed_read_whole_and_in_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let grants = granted(dir.path());
        let base = file_url(dir.path());
        let at = |key: &str| grants.check(&format!("{base}/{key}"), "read").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let objects = objects();
        objects.put(&at("a/one.txt"), b"hello world".to_vec(), deadline).unwrap();
        objects.put(&at("a/two.txt"), b"2".to_vec(), deadline).unwrap();
        assert_eq!(objects.get(&at("a/one.txt"), 100, deadline).unwrap(), b"hello world");
        assert_eq!(objects.read(&at("a/one.txt"), 6, 100, deadline).unwrap(), b"world");
        assert!(objects.read(&at("a/one.txt"), 99, 1, deadline).unwrap().is_empty());
        let e = objects.get(&at("a/one.txt"), 5, deadline).unwrap_err();
        assert!(e.message().contains("over the limit"), "{e:?}");
        assert_eq!(objects.get(&at("a/none"), 5, deadline).unwrap_err().code(), -3);
        let keys: Vec<String> = objects.list(&at("a/")).unwrap().into_iter().map(|l| l.url).collect();
        assert_eq!(keys, [format!("{base}/a/one.txt"), format!("{base}/a/two.txt")]);
        assert_eq!(std::fs::read_dir(dir.path().join("a")).unwrap().count(), 2, "no temporary file is left");
        let mut reader = ObjectReader::new(at("a/one.txt"), 11);
        reader.chunk = 4;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut reader, &mut text).unwrap();
        assert_eq!(text, "hello world");
    }

    /// A guest that controls what lies under its granted folder (it may write there)
    /// plants links and swaps folders; none of it reaches a file outside.
    #[test]
    fn links_never_lead_out_of_a_granted_folder() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let (granted_dir, outside) = (dir.path().join("in"), dir.path().join("outside"));
        std::fs::create_dir_all(&granted_dir).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        std::fs::write(outside.join("victim"), b"untouched").unwrap();
        symlink(outside.join("secret"), granted_dir.join("abs-link")).unwrap();
        symlink("../outside/secret", granted_dir.join("rel-link")).unwrap();
        symlink(&outside, granted_dir.join("dir-link")).unwrap();
        symlink(outside.join("victim"), granted_dir.join("victim-link")).unwrap();
        std::fs::write(granted_dir.join("inside.txt"), b"ok").unwrap();
        symlink("inside.txt", granted_dir.join("inner-link")).unwrap();
        let grants = granted(&granted_dir);
        let base = file_url(&granted_dir);
        let at = |key: &str| grants.check(&format!("{base}/{key}"), "read").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let objects = objects();
        for key in ["abs-link", "rel-link", "dir-link/secret"] {
            let e = objects.get(&at(key), 100, deadline).unwrap_err();
            assert_eq!(e.code(), -1, "{key}: {e:?}");
            assert!(e.message().contains("outside the granted folder"), "{e:?}");
            assert_eq!(objects.read(&at(key), 0, 100, deadline).unwrap_err().code(), -1, "{key}");
        }
        assert_eq!(objects.get(&at("inner-link"), 100, deadline).unwrap(), b"ok", "a link inside is followed");
        // Writes: through a linked folder, refused; onto a link, the link is replaced.
        let e = objects.put(&at("dir-link/new"), b"x".to_vec(), deadline).unwrap_err();
        assert_eq!(e.code(), -1, "{e:?}");
        assert!(!outside.join("new").exists());
        objects.put(&at("victim-link"), b"replaced".to_vec(), deadline).unwrap();
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"untouched");
        assert_eq!(std::fs::read(granted_dir.join("victim-link")).unwrap(), b"replaced");
        let listed: Vec<String> = objects.list(&at("")).unwrap().into_iter().map(|l| l.key).collect();
        let names: Vec<&str> = listed.iter().map(|k| k.rsplit('/').next().unwrap()).collect();
        assert_eq!(names, ["inner-link", "inside.txt", "victim-link"], "links out are not listed");
    }

    /// The race between a check and a use: a folder swapped for a link out of the
    /// grant while reads go on. Not one read sees the outside file.
    #[test]
    fn a_folder_swapped_for_a_link_mid_read_never_leaks() {
        let dir = tempfile::tempdir().unwrap();
        let (granted_dir, outside) = (dir.path().join("in"), dir.path().join("outside"));
        std::fs::create_dir_all(granted_dir.join("flip")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(granted_dir.join("flip/file"), b"inside").unwrap();
        std::fs::write(outside.join("file"), b"SECRET").unwrap();
        let grants = granted(&granted_dir);
        let target = grants.check(&format!("{}/flip/file", file_url(&granted_dir)), "read").unwrap();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flipper = {
            let (granted_dir, outside, done) = (granted_dir.clone(), outside.clone(), done.clone());
            std::thread::spawn(move || {
                let (real, parked) = (granted_dir.join("flip"), granted_dir.join("parked"));
                for _ in 0..20_000 {
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    std::fs::rename(&real, &parked).unwrap();
                    std::os::unix::fs::symlink(&outside, &real).unwrap();
                    std::fs::remove_file(&real).unwrap();
                    std::fs::rename(&parked, &real).unwrap();
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen_inside = 0;
        for _ in 0..5_000 {
            match objects().get(&target, 100, deadline) {
                Ok(bytes) => {
                    assert_eq!(bytes, b"inside", "a read escaped the grant");
                    seen_inside += 1;
                }
                Err(e) => assert!(matches!(e.code(), -1 | -3), "{e:?}"),
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        flipper.join().unwrap();
        assert!(seen_inside > 0, "the folder was in place for some reads");
    }
}
