//! The on-disk cache directory shared by program-binary caches and the performance model.
//!
//! Location: `$OFFLOAD_CACHE_DIR` if set, else `$XDG_CACHE_HOME/offload`, else
//! `$HOME/.cache/offload`. Entries are written atomically (temp file + rename) so
//! concurrent processes never see half a file; a failed write only costs the
//! cache, never the caller's operation, and is logged. Keys are stable 128-bit
//! FNV-1a hashes of everything that determines the cached content.

use std::path::PathBuf;

/// Environment variable overriding the cache directory.
pub const CACHE_DIR_ENV: &str = "OFFLOAD_CACHE_DIR";

/// The cache directory (not created until something is written).
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("offload"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|h| PathBuf::from(h).join(".cache").join("offload"))
}

/// Stable hex key of the given parts (length-prefixed so parts cannot run together).
pub fn key(parts: &[&[u8]]) -> String {
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    let mut feed = |bytes: &[u8]| {
        for &x in bytes {
            a = (a ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
            b = (b ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(5);
        }
    };
    for p in parts {
        feed(&(p.len() as u64).to_le_bytes());
        feed(p);
    }
    format!("{a:016x}{b:016x}")
}

/// Path of an entry: `<cache>/<kind>/<key>`.
pub fn entry_path(kind: &str, key: &str) -> Option<PathBuf> {
    cache_dir().map(|d| d.join(kind).join(key))
}

/// Read an entry, if present.
pub fn read(kind: &str, key: &str) -> Option<Vec<u8>> {
    std::fs::read(entry_path(kind, key)?).ok()
}

/// Write an entry atomically; failures are logged and otherwise ignored.
pub fn write(kind: &str, key: &str, bytes: &[u8]) {
    let Some(path) = entry_path(kind, key) else { return };
    let res = (|| -> std::io::Result<()> {
        let dir = path
            .parent()
            .ok_or_else(|| std::io::Error::other("cache path has no parent"))?;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = res {
        tracing::warn!(path = %path.display(), error = %e, "cannot write cache entry");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_is_stable_and_separates_parts() {
        assert_eq!(super::key(&[b"ab", b"c"]), super::key(&[b"ab", b"c"]));
        assert_ne!(super::key(&[b"ab", b"c"]), super::key(&[b"a", b"bc"]));
        assert_eq!(super::key(&[]).len(), 32);
    }
}
