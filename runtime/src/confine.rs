//! URL prefixes as confinements: which object a URL names, and whether it lies under a
//! granted prefix — decided on the URL's meaning, never on its spelling.
//!
//! A URL (a guest's object call, a job's input, a results prefix) is refused before
//! anything is read or written when it is ambiguous: a percent-encoded separator
//! (`%2f`, `%5c`), an encoded dot (`%2e`), a NUL or control character, a backslash, an
//! empty (`a//b`), `.` or `..` segment, a query or fragment, or a `file://` host other
//! than nothing or `localhost`. What is left is compared segment by segment with the
//! grant: a `file://` grant is a directory (`file:///data/in` grants `/data/in/x`, not
//! `/data/inside`); an object-store grant is a key prefix, as S3 means one
//! (`s3://b/in/` the folder, `s3://b/in` every key starting with `in`).
//!
//! For `file://`, a granted URL becomes a [`Target::Local`]: the granted directory and a
//! path relative to it, which [`crate::objects`] opens through a handle on that
//! directory (`cap-std`: no `..`, no absolute or escaping symbolic link is followed,
//! and a link swapped in between a check and a use cannot lead out of it either).

use std::path::PathBuf;

/// The URL schemes of object storage.
pub(crate) const SCHEMES: &[&str] = &["s3", "gs", "az", "file"];

/// A capability call that did not happen or did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Not granted, or not a valid request: nothing was sent.
    Refused(String),
    /// Sent, and failed: no connection, a timeout, an answer over the limit.
    Failed(String),
    /// Objects: there is no such object.
    NotFound(String),
}

impl CallError {
    /// The code the host function returns for it.
    pub fn code(&self) -> i32 {
        match self {
            CallError::Refused(_) => -1,
            CallError::Failed(_) => -2,
            CallError::NotFound(_) => -3,
        }
    }

    /// Its message.
    pub fn message(&self) -> &str {
        match self {
            CallError::Refused(m) | CallError::Failed(m) | CallError::NotFound(m) => m,
        }
    }
}

/// An object URL taken apart, every segment checked and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUrl {
    /// `s3`, `gs`, `az` or `file`.
    pub scheme: String,
    /// The bucket (container); empty for `file://`.
    pub bucket: String,
    /// The key's segments, percent-decoded.
    pub segments: Vec<String>,
    /// Whether the URL ends with `/` (a folder, for listings and grants).
    pub folder: bool,
    text: String,
}

impl ObjectUrl {
    /// Parses and checks `text`; every ambiguous spelling is refused with its reason.
    pub fn parse(text: &str) -> Result<ObjectUrl, String> {
        let bad = |why: &str| format!("{text}: {why}");
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            return Err(bad(&format!("the control character {c:?} is not allowed")));
        }
        if text.contains('\\') {
            return Err(bad("a backslash is not allowed"));
        }
        if text.contains(['?', '#']) {
            return Err(bad("a query or fragment is not allowed in an object URL"));
        }
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("not a URL (scheme://bucket/key)"))?;
        let scheme = scheme.to_ascii_lowercase();
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(bad(&format!("the scheme must be one of {}", SCHEMES.join(", "))));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let bucket = decode(authority).map_err(|e| bad(&e))?;
        if scheme == "file" {
            if !(bucket.is_empty() || bucket.eq_ignore_ascii_case("localhost")) {
                return Err(bad("a file:// URL names no host (file:///path, or file://localhost/path)"));
            }
        } else if bucket.is_empty() {
            return Err(bad(&format!("name the bucket ({scheme}://bucket/…)")));
        } else if bucket.contains(['/', '@', ':']) {
            return Err(bad("the bucket name has a character a bucket cannot have"));
        }
        let folder = path.is_empty() || path.ends_with('/');
        let body = path.strip_suffix('/').unwrap_or(path);
        let mut segments = Vec::new();
        if !body.is_empty() {
            for raw in body.split('/') {
                let segment = decode(raw).map_err(|e| bad(&e))?;
                match segment.as_str() {
                    "" => return Err(bad("an empty path segment (`//`) is not allowed")),
                    "." | ".." => return Err(bad("`.` and `..` are not allowed (as path segments)")),
                    _ => {}
                }
                segments.push(segment);
            }
        }
        let bucket = if scheme == "file" { String::new() } else { bucket };
        Ok(ObjectUrl { scheme, bucket, segments, folder, text: text.to_string() })
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key: the segments joined by `/`.
    pub fn key(&self) -> String {
        self.segments.join("/")
    }

    /// For `file://`: the absolute local path.
    fn local_path(&self) -> PathBuf {
        let mut path = PathBuf::from("/");
        path.extend(&self.segments);
        path
    }

    /// Whether `self` (a grant) covers `url`; for `file://`, the path of `url` below it.
    fn covers(&self, url: &ObjectUrl) -> Option<Vec<String>> {
        if self.scheme != url.scheme || self.bucket != url.bucket {
            return None;
        }
        let n = self.segments.len();
        if self.scheme == "file" || self.folder {
            // Whole segments: a directory, or an object-store folder.
            (url.segments.len() >= n && url.segments[..n] == self.segments[..]).then(|| url.segments[n..].to_vec())
        } else {
            // An object-store key prefix, as S3 means one.
            let (head, last) = self.segments.split_at(n.saturating_sub(1));
            let ok = url.segments.len() >= n
                && url.segments[..head.len()] == *head
                && last.first().is_none_or(|l| url.segments[head.len()].starts_with(l.as_str()));
            ok.then(Vec::new)
        }
    }
}

/// Percent-decodes one segment; an encoded separator, dot or NUL is refused.
fn decode(raw: &str) -> Result<String, String> {
    let lower = raw.to_ascii_lowercase();
    for (code, what) in
        [("%2f", "an encoded `/`"), ("%5c", "an encoded `\\`"), ("%2e", "an encoded `.`"), ("%00", "an encoded NUL")]
    {
        if lower.contains(code) {
            return Err(format!("{what} ({code}) is not allowed"));
        }
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "a percent-encoded sequence is not UTF-8".to_string())?;
    if decoded.chars().any(char::is_control) {
        return Err("an encoded control character is not allowed".into());
    }
    Ok(decoded.into_owned())
}

/// What a checked URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An object in a store (`s3://`, `gs://`, `az://`).
    Store(ObjectUrl),
    /// A local file: `path` (relative, no `.`/`..`) under the granted directory `root`.
    Local {
        /// The granted directory.
        root: PathBuf,
        /// The path below it.
        path: PathBuf,
        /// The URL as given, for messages.
        url: String,
    },
}

impl Target {
    /// The URL as given.
    pub fn url(&self) -> &str {
        match self {
            Target::Store(url) => url.as_str(),
            Target::Local { url, .. } => url,
        }
    }

    /// A URL of the process's own choosing (`run`'s inputs): checked for spelling, not
    /// confined. A `file://` URL's root is `/`.
    pub fn unconfined(text: &str) -> Result<Target, CallError> {
        let url = ObjectUrl::parse(text).map_err(CallError::Refused)?;
        Ok(match url.scheme.as_str() {
            "file" => Target::Local { root: PathBuf::from("/"), path: url.segments.iter().collect(), url: text.into() },
            _ => Target::Store(url),
        })
    }
}

/// A list of granted prefixes (`allow_read`, `allow_write`, `allow_inputs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefixes {
    prefixes: Vec<ObjectUrl>,
}

impl Prefixes {
    /// Parses grants; every bad one is named.
    pub fn parse(texts: &[String]) -> Result<Prefixes, Vec<String>> {
        let mut problems = Vec::new();
        let mut prefixes = Vec::new();
        for text in texts {
            match ObjectUrl::parse(text) {
                Ok(url) => prefixes.push(url),
                Err(e) => problems.push(format!("object prefix {e}")),
            }
        }
        if problems.is_empty() { Ok(Prefixes { prefixes }) } else { Err(problems) }
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The grants as given.
    pub fn texts(&self) -> Vec<&str> {
        self.prefixes.iter().map(ObjectUrl::as_str).collect()
    }

    /// What `text` names, if it lies under a prefix; `what` (read, write, …) is for the
    /// message.
    pub fn check(&self, text: &str, what: &str) -> Result<Target, CallError> {
        let url = ObjectUrl::parse(text).map_err(CallError::Refused)?;
        for prefix in &self.prefixes {
            if let Some(below) = prefix.covers(&url) {
                return Ok(match url.scheme.as_str() {
                    "file" => {
                        Target::Local { root: prefix.local_path(), path: below.iter().collect(), url: text.into() }
                    }
                    _ => Target::Store(url),
                });
            }
        }
        let allowed = self.texts();
        Err(CallError::Refused(format!(
            "{text} is not under a prefix the API may {what} (allowed: {})",
            if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(list: &[&str]) -> Prefixes {
        Prefixes::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn every_spelling_of_an_escape_is_refused() {
        let grants = prefixes(&["file:///data/in/", "s3://bucket/in/"]);
        for url in [
            "file:///data/in/../secret",
            "file:///data/in/./x",
            "file:///data/in/%2e%2e/secret",
            "file:///data/in/%2E%2E/secret",
            "file:///data/in/.%2e/secret",
            "file:///data/in/..%2fsecret",
            "file:///data/in/a%2F..%2F..%2Fsecret",
            "file:///data/in/%5c..%5csecret",
            "file:///data/in/..\\secret",
            "file:///data/in//etc/passwd",
            "file:///data/in/x%00.txt",
            "file:///data/in/x\n",
            "file://evil.example/data/in/x",
            "file:///data/in/x?y=1",
            "file:///data/in/x#frag",
            "file:///data/inside/x",
            "file:///data/IN/x",
            "s3://bucket/in/../out/x",
            "s3://bucket/in/%2e%2e/out/x",
            "s3://other/in/x",
            "s3://bucket/out/x",
            "S3://bucket/in/..",
            "gs://bucket/in/x",
        ] {
            let e = grants.check(url, "read").expect_err(url);
            assert_eq!(e.code(), -1, "{url}: {e:?}");
        }
    }

    #[test]
    fn granted_urls_name_their_object() {
        let grants = prefixes(&["file:///data/in", "s3://bucket/in/", "gs://b/logs-"]);
        assert_eq!(
            grants.check("file:///data/in/a/b.txt", "read").unwrap(),
            Target::Local { root: "/data/in".into(), path: "a/b.txt".into(), url: "file:///data/in/a/b.txt".into() }
        );
        assert!(matches!(grants.check("file://localhost/data/in/x", "read"), Ok(Target::Local { .. })));
        assert!(matches!(grants.check("file:///data/in/with%20space", "read"),
            Ok(Target::Local { path, .. }) if path == std::path::Path::new("with space")));
        assert!(matches!(grants.check("s3://bucket/in/a.jpg", "read"), Ok(Target::Store(_))));
        assert!(grants.check("s3://bucket/inside", "read").is_err(), "a folder grant is whole segments");
        assert!(grants.check("gs://b/logs-2026/x", "read").is_ok(), "a key prefix grant is a string prefix");
        assert!(grants.check("gs://b/log/x", "read").is_err());
        let e = prefixes(&[]).check("s3://b/x", "write").unwrap_err();
        assert!(e.message().contains("allowed: none"), "{e:?}");
    }

    #[test]
    fn bad_grants_are_named() {
        let e = Prefixes::parse(&["http://x/".into(), "s3:///nobucket".into(), "file:///a/../b".into()]).unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].contains("the scheme must be one of"), "{e:?}");
        assert!(e[1].contains("name the bucket"), "{e:?}");
    }
}
