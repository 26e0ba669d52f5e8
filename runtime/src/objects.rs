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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

use crate::capability::CallError;

/// The URL schemes of object storage.
pub const SCHEMES: &[&str] = &["s3", "gs", "az", "file"];

/// Checks a grant's URL prefix (`s3://bucket/prefix/`, `file:///dir/`).
pub fn check_prefix(prefix: &str) -> Result<String, String> {
    let url = Url::parse(prefix).map_err(|e| format!("object prefix {prefix:?}: {e}"))?;
    if !SCHEMES.contains(&url.scheme()) {
        return Err(format!("object prefix {prefix:?}: the scheme must be one of {}", SCHEMES.join(", ")));
    }
    if url.scheme() != "file" && url.host_str().is_none_or(str::is_empty) {
        return Err(format!("object prefix {prefix:?}: name the bucket (s3://bucket/…)"));
    }
    if prefix.split('/').any(|s| s == ".." || s == ".") {
        return Err(format!("object prefix {prefix:?}: `.` and `..` are not allowed"));
    }
    Ok(prefix.to_string())
}

/// Whether `text` is an object URL (as opposed to a local path).
pub fn is_object_url(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| SCHEMES.contains(&scheme) && scheme != "file")
}

/// An object found by a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its URL (`s3://bucket/key`).
    pub url: String,
    /// Its key within the bucket.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The stores, by bucket, and the runtime their calls run on.
pub struct Objects {
    runtime: tokio::runtime::Runtime,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

/// The process's stores.
pub fn objects() -> &'static Objects {
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
    /// The store of `url`'s bucket, and the object's path in it.
    fn locate(&self, url: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath), CallError> {
        let refused = |why: String| CallError::Refused(format!("{url}: {why}"));
        let parsed = Url::parse(url).map_err(|e| refused(e.to_string()))?;
        let scheme = parsed.scheme();
        let bucket = parsed.host_str().unwrap_or("").to_string();
        let key = format!("{scheme}://{bucket}");
        let store = {
            let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
            match stores.get(&key) {
                Some(store) => store.clone(),
                None => {
                    let store: Arc<dyn ObjectStore> = match scheme {
                        "s3" => Arc::new(
                            object_store::aws::AmazonS3Builder::from_env()
                                .with_url(&key)
                                .build()
                                .map_err(|e| refused(e.to_string()))?,
                        ),
                        "gs" => Arc::new(
                            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                                .with_url(&key)
                                .build()
                                .map_err(|e| refused(e.to_string()))?,
                        ),
                        "az" => Arc::new(
                            object_store::azure::MicrosoftAzureBuilder::from_env()
                                .with_url(&key)
                                .build()
                                .map_err(|e| refused(e.to_string()))?,
                        ),
                        "file" => Arc::new(object_store::local::LocalFileSystem::new()),
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
        let path = ObjectPath::from_url_path(parsed.path()).map_err(|e| refused(e.to_string()))?;
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
                Err(CallError::Failed(format!("{url}: {e}{hint}")))
            }
            Err(_) => Err(CallError::Failed(format!("{url}: no answer within {left:?}"))),
        }
    }

    /// The whole object at `url`, if it is at most `max` bytes.
    pub fn get(&self, url: &str, max: usize, deadline: Instant) -> Result<Vec<u8>, CallError> {
        let (store, path) = self.locate(url)?;
        let meta = self.run(url, deadline, store.head(&path))?;
        if meta.size > max as u64 {
            return Err(CallError::Failed(format!(
                "{url}: {} bytes, over the limit of {max} bytes read at once (read it in ranges)",
                meta.size
            )));
        }
        let bytes = self.run(url, deadline, async { store.get(&path).await?.bytes().await })?;
        Ok(bytes.to_vec())
    }

    /// Bytes `offset..offset + len` of the object at `url` (fewer at its end; none past it).
    pub fn read(&self, url: &str, offset: u64, len: u64, deadline: Instant) -> Result<Vec<u8>, CallError> {
        let (store, path) = self.locate(url)?;
        let meta = self.run(url, deadline, store.head(&path))?;
        let end = offset.saturating_add(len).min(meta.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let bytes = self.run(url, deadline, store.get_range(&path, offset..end))?;
        Ok(bytes.to_vec())
    }

    /// Writes `data` as the object at `url` (whole, atomically).
    pub fn put(&self, url: &str, data: Vec<u8>, deadline: Instant) -> Result<(), CallError> {
        let (store, path) = self.locate(url)?;
        self.run(url, deadline, store.put(&path, PutPayload::from(data))).map(drop)
    }

    /// Every object under `prefix` (`s3://bucket/dir/`), in key order.
    pub fn list(&self, prefix: &str) -> Result<Vec<Listed>, String> {
        let (store, path) = self.locate(prefix).map_err(|e| e.message().to_string())?;
        let base =
            prefix.split_once("://").map(|(s, rest)| (s, rest.split('/').next().unwrap_or(""))).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(300);
        let path = (!path.as_ref().is_empty()).then_some(path);
        let mut listed: Vec<Listed> = self
            .run(prefix, deadline, async {
                let mut stream = store.list(path.as_ref());
                let mut out = Vec::new();
                while let Some(meta) = stream.next().await {
                    let meta = meta?;
                    out.push(Listed {
                        url: format!("{}://{}/{}", base.0, base.1, meta.location),
                        key: meta.location.to_string(),
                        size: meta.size,
                    });
                }
                Ok(out)
            })
            .map_err(|e| e.message().to_string())?;
        if listed.is_empty()
            && let Some(path) = &path
            && let Ok(meta) = self.run(prefix, deadline, store.head(path))
        {
            // The URL names one object.
            listed.push(Listed { url: prefix.to_string(), key: meta.location.to_string(), size: meta.size });
        }
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }
}

/// Reads an object in ranges of `chunk` bytes: an input of any size in bounded memory.
pub struct ObjectReader {
    url: String,
    size: u64,
    offset: u64,
    chunk: u64,
    buffer: Vec<u8>,
    at: usize,
}

impl ObjectReader {
    /// A reader of the object at `url`, of `size` bytes.
    pub fn new(url: &str, size: u64) -> ObjectReader {
        ObjectReader { url: url.to_string(), size, offset: 0, chunk: 4 << 20, buffer: Vec::new(), at: 0 }
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
                .read(&self.url, self.offset, self.chunk, deadline)
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

    #[test]
    fn local_objects_are_written_listed_read_whole_and_in_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let base = format!("file://{}", dir.path().display());
        let deadline = Instant::now() + Duration::from_secs(10);
        let objects = objects();
        objects.put(&format!("{base}/a/one.txt"), b"hello world".to_vec(), deadline).unwrap();
        objects.put(&format!("{base}/a/two.txt"), b"2".to_vec(), deadline).unwrap();
        assert_eq!(objects.get(&format!("{base}/a/one.txt"), 100, deadline).unwrap(), b"hello world");
        assert_eq!(objects.read(&format!("{base}/a/one.txt"), 6, 100, deadline).unwrap(), b"world");
        assert!(objects.read(&format!("{base}/a/one.txt"), 99, 1, deadline).unwrap().is_empty());
        let e = objects.get(&format!("{base}/a/one.txt"), 5, deadline).unwrap_err();
        assert!(e.message().contains("over the limit"), "{e:?}");
        assert_eq!(objects.get(&format!("{base}/a/none"), 5, deadline).unwrap_err().code(), -3);
        let mut reader = ObjectReader::new(&format!("{base}/a/one.txt"), 11);
        reader.chunk = 4;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut reader, &mut text).unwrap();
        assert_eq!(text, "hello world");
    }
}
