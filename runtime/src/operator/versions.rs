//! Plugins kept by their content: each plugin an API is loaded with is copied to
//! `<data-dir>/plugins/<sha256>.wasm` (the bytes that are then loaded, so the hash names
//! exactly what runs), and each job records the hash of its API's plugin when it is
//! submitted. A job keeps that version while the configuration changes under it, and
//! a resume after a crash or a restart loads it again from here, or says why it cannot.
//!
//! What this directory may hold: files this module wrote, named by the SHA-256 of their
//! content. A name from the journal is used only when it is 64 lowercase hex digits (it
//! cannot name a path elsewhere), and a file is used only when its bytes still hash to
//! its name. Nothing here is removed by wasmbatch: a kept plugin is a few megabytes, and
//! an old one may be needed by any job not ended.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The directory of kept plugins in `data_dir`.
pub(crate) fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("plugins")
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `hash` can be a kept plugin's name: 64 lowercase hex digits.
pub(crate) fn is_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Keeps the plugin file at `code`: its hash, and the path of the kept copy (written
/// now unless a copy with the same content is there).
pub(crate) fn keep(data_dir: &Path, code: &Path) -> Result<(String, PathBuf), String> {
    let bytes = std::fs::read(code).map_err(|e| format!("cannot read {}: {e}", code.display()))?;
    let hash = hex(&bytes);
    let kept = dir(data_dir).join(format!("{hash}.wasm"));
    let intact = std::fs::read(&kept).is_ok_and(|old| hex(&old) == hash);
    if !intact {
        std::fs::create_dir_all(dir(data_dir))
            .and_then(|()| crate::storage::write_atomic(&kept, &bytes))
            .map_err(|e| format!("cannot keep a copy of the plugin in {}: {e}", dir(data_dir).display()))?;
    }
    Ok((hash, kept))
}

/// The kept plugin of content `hash`, or why it cannot be used.
pub(crate) fn kept(data_dir: &Path, hash: &str) -> Result<PathBuf, String> {
    if !is_hash(hash) {
        return Err(format!("{hash:?} is not a plugin's content hash"));
    }
    let path = dir(data_dir).join(format!("{hash}.wasm"));
    let bytes = std::fs::read(&path).map_err(|e| format!("its copy {} cannot be read: {e}", path.display()))?;
    if hex(&bytes) != hash {
        return Err(format!(
            "its copy {} was changed since it was kept (its content no longer has that hash)",
            path.display()
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_is_kept_under_its_hash_and_found_again_only_intact() {
        let data = tempfile::tempdir().unwrap();
        let source = data.path().join("p.wasm");
        std::fs::write(&source, b"\0asm version one").unwrap();
        let (hash, path) = keep(data.path(), &source).unwrap();
        assert!(is_hash(&hash), "{hash}");
        assert_eq!(std::fs::read(&path).unwrap(), b"\0asm version one");
        std::fs::write(&source, b"\0asm version two").unwrap();
        let (second, _) = keep(data.path(), &source).unwrap();
        assert_ne!(hash, second, "another content, another name");
        assert_eq!(kept(data.path(), &hash).unwrap(), path, "the first stays");
        std::fs::write(&path, b"tampered").unwrap();
        assert!(kept(data.path(), &hash).unwrap_err().contains("was changed"));
        keep(data.path(), &data.path().join("p.wasm")).unwrap();
        std::fs::write(&source, b"\0asm version one").unwrap();
        assert_eq!(keep(data.path(), &source).unwrap().0, hash, "a damaged copy is written again");
        assert_eq!(std::fs::read(&path).unwrap(), b"\0asm version one");
    }

    #[test]
    fn a_name_from_the_journal_cannot_leave_the_directory() {
        let data = tempfile::tempdir().unwrap();
        for name in
            ["../../etc/passwd", "", "ABCDEF", &"a".repeat(63), &format!("{}/", "a".repeat(63)), &"g".repeat(64)]
        {
            assert!(kept(data.path(), name).unwrap_err().contains("not a plugin's content hash"), "{name}");
        }
        assert!(kept(data.path(), &"a".repeat(64)).unwrap_err().contains("cannot be read"));
    }
}
