//! The on-disk cache directory shared by program-binary caches and the performance model.
//!
//! Location: `$OFFLOAD_CACHE_DIR` if set, else `$XDG_CACHE_HOME/offload`, else
//! `$HOME/.cache/offload`. Entries are written atomically (a temporary file with a
//! name unique to the write, then a rename) so concurrent writers, in one process
//! or several, never see half a file or each other's temporary file; a failed
//! write only costs the cache, never the caller's operation, and is logged. Keys
//! are stable 128-bit FNV-1a hashes of everything that determines the cached
//! content.
//!
//! Program binaries are stored *sealed*: behind a header with a
//! format magic, the content length and a hash over the key material and the
//! content, so a reader only accepts an entry written for exactly its key.
//!
//! The directory is trusted the way a driver's own kernel cache (PoCL's, CUDA's
//! `ComputeCache`) is: whoever can write there can make the driver load any
//! program. The hashes are not cryptographic; what readers validate (see the
//! OpenCL and CUDA program caches) guards against accidents such as a truncated
//! file, an entry stored under the wrong key or one from an older format, not
//! against an attacker.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
    if let Err(e) = write_atomic(&path, bytes) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write cache entry");
    }
}

/// Entries bound to their key (used by the program-binary caches of the GPU backends).
#[cfg_attr(not(any(feature = "cuda", feature = "opencl")), allow(dead_code))]
mod sealed {
    use super::{key, read, write};

    /// Magic at the start of a sealed entry (format version included).
    pub(super) const MAGIC: &[u8; 14] = b"OFFLOADENTRY2\n";
    /// Header of a sealed entry: magic, u64 content length, 32 hex digits of the hash
    /// over key material and content.
    pub(super) const HEADER: usize = MAGIC.len() + 8 + 32;

    /// Hash binding `content` to the key material it is stored under.
    fn seal_hash(content: &[u8], material: &[&[u8]]) -> String {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(material.len() + 2);
        parts.extend_from_slice(material);
        parts.push(b"content");
        parts.push(content);
        key(&parts)
    }

    /// A sealed entry: magic, content length, hash over `material` (everything the
    /// entry's key is made of) and `content`, then the content. Only a reader that
    /// asks with the same key material accepts it (see [`unseal`]).
    pub(crate) fn seal(content: &[u8], material: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + content.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(content.len() as u64).to_le_bytes());
        out.extend_from_slice(seal_hash(content, material).as_bytes());
        out.extend_from_slice(content);
        out
    }

    /// The content of a sealed entry stored under `material`'s key, or why it is
    /// refused: another format version, truncated or extended, empty, damaged, or
    /// sealed for other key material (another program's entry under this key).
    pub(crate) fn unseal<'e>(entry: &'e [u8], material: &[&[u8]]) -> std::result::Result<&'e [u8], &'static str> {
        if entry.len() < HEADER {
            return Err("shorter than its header (truncated)");
        }
        if &entry[..MAGIC.len()] != MAGIC {
            return Err("not an entry of this format version");
        }
        let mut len_bytes = [0u8; 8];
        len_bytes.copy_from_slice(&entry[MAGIC.len()..MAGIC.len() + 8]);
        let content = &entry[HEADER..];
        if content.len() as u64 != u64::from_le_bytes(len_bytes) {
            return Err("its length differs from the header's (truncated or extended)");
        }
        if content.is_empty() {
            return Err("empty content");
        }
        if seal_hash(content, material).as_bytes() != &entry[MAGIC.len() + 8..HEADER] {
            return Err("its hash does not match this key and content (damaged, or another program's entry)");
        }
        Ok(content)
    }

    /// What [`read_sealed`] found.
    pub(crate) enum Sealed {
        /// No entry (or no cache directory).
        Missing,
        /// A valid entry's content.
        Valid(Vec<u8>),
        /// An entry that [`unseal`] refused, and why.
        Invalid(&'static str),
    }

    /// Read the sealed entry of kind `kind` keyed by `material`.
    pub(crate) fn read_sealed(kind: &str, material: &[&[u8]]) -> Sealed {
        match read(kind, &key(material)) {
            None => Sealed::Missing,
            Some(bytes) => match unseal(&bytes, material) {
                Ok(content) => Sealed::Valid(content.to_vec()),
                Err(why) => Sealed::Invalid(why),
            },
        }
    }

    /// Write `content` sealed under the key of `material` (see [`write`](fn@super::write)).
    pub(crate) fn write_sealed(kind: &str, material: &[&[u8]], content: &[u8]) {
        write(kind, &key(material), &seal(content, material));
    }
}
#[cfg_attr(not(any(feature = "cuda", feature = "opencl")), allow(unused_imports))]
pub(crate) use sealed::{Sealed, read_sealed, write_sealed};

/// Process-wide counter making temporary names unique among this process's writers.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` to `path` atomically: into a temporary file of the same
/// directory, then renamed over `path`. Readers see the old file or the new one,
/// never a partial one. The temporary name is unique per write (process id, a
/// process-wide counter and the thread id), so concurrent writers in one process
/// or several never write into each other's temporary file; the last rename wins.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("cache path {} has no file name", path.display())))?;
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    let tmp = dir.join(format!(
        ".{}.{}-{}-{thread}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        NEXT_TMP.fetch_add(1, Ordering::Relaxed)
    ));
    let res = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::sealed::{HEADER, MAGIC, seal, unseal};

    #[test]
    fn sealed_entries_round_trip_and_reject_damage() {
        let material: [&[u8]; 3] = [b"device", b"source a", b"-O2"];
        let bin = b"some program binary".to_vec();
        let e = seal(&bin, &material);
        assert_eq!(unseal(&e, &material), Ok(&bin[..]));
        let mut flipped = e.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(unseal(&flipped, &material).is_err());
        assert!(unseal(&e[..e.len() - 1], &material).is_err());
        assert!(unseal(&e[..HEADER - 3], &material).is_err());
        assert!(unseal(b"garbage", &material).is_err());
        // The same content under another key is refused.
        let other: [&[u8]; 3] = [b"device", b"source b", b"-O2"];
        assert!(unseal(&e, &other).is_err());
        // A header hashed over the content alone is refused.
        let mut alone = MAGIC.to_vec();
        alone.extend_from_slice(&(bin.len() as u64).to_le_bytes());
        alone.extend_from_slice(super::key(&[&bin]).as_bytes());
        alone.extend_from_slice(&bin);
        assert!(unseal(&alone, &material).is_err());
    }

    #[test]
    fn key_is_stable_and_separates_parts() {
        assert_eq!(super::key(&[b"ab", b"c"]), super::key(&[b"ab", b"c"]));
        assert_ne!(super::key(&[b"ab", b"c"]), super::key(&[b"a", b"bc"]));
        assert_eq!(super::key(&[]).len(), 32);
    }

    /// Many threads replacing one file while others read it: every write
    /// succeeds and every read sees one whole version.
    #[test]
    fn concurrent_atomic_writes_never_fail_or_tear() {
        let dir = std::env::temp_dir().join(format!("offload-cache-unit-{}", std::process::id()));
        let path = dir.join("entry");
        let payload = |t: usize, i: usize| format!("{t}:{i}:{}", "x".repeat(4096 + t * 100 + i % 7)).into_bytes();
        super::write_atomic(&path, &payload(0, 0)).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (errors, torn) = std::thread::scope(|s| {
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut torn = 0;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            let b = std::fs::read(&path).unwrap();
                            let text = String::from_utf8(b).unwrap();
                            let mut parts = text.splitn(3, ':');
                            let t: usize = parts.next().unwrap().parse().unwrap();
                            let i: usize = parts.next().unwrap().parse().unwrap();
                            if text.as_bytes() != payload(t, i) {
                                torn += 1;
                            }
                        }
                        torn
                    })
                })
                .collect();
            let writers: Vec<_> = (0..8)
                .map(|t| {
                    let path = &path;
                    s.spawn(move || {
                        (0..200)
                            .filter(|i| super::write_atomic(path, &payload(t, *i)).is_err())
                            .count()
                    })
                })
                .collect();
            let errors: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let torn: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
            (errors, torn)
        });
        let leftovers = std::fs::read_dir(&dir).unwrap().count();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!((errors, torn), (0, 0), "failed writes, torn reads");
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}
