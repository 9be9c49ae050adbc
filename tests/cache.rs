//! The on-disk cache: concurrent writers (performance model, cache entries) never
//! fail or tear, and OpenCL program-binary entries are only used under the key
//! they were written for.
//!
//! Tests that depend on `OFFLOAD_CACHE_DIR` run in child processes of this test
//! binary (each with its own fresh directory), since the environment is
//! process-wide and the tests of one binary run in parallel threads.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{Rng, rel_err};
use offload::schedule::{Estimate, PerfModel};
use offload::{Arg, BackendKind, Kernel, LaunchConfig, Runtime};

/// Writer threads and saves per thread of the concurrency tests.
const WRITERS: usize = 8;
const SAVES: usize = 300;

/// Run the ignored test `name` of this binary in a child process with a fresh
/// `OFFLOAD_CACHE_DIR`; returns the child's output.
fn run_child(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("offload-cache-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("OFFLOAD_CACHE_DIR", &dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("--- child {name} ---\n{text}--- end child ---");
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "child test {name} failed: {:?}", out.status);
    assert!(text.contains("1 passed"), "child test {name} ran");
    text
}

fn cache_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("OFFLOAD_CACHE_DIR").expect("OFFLOAD_CACHE_DIR set by the parent"))
}

/// A log sink counting `tracing` output, to see warnings of calls that return nothing.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn install() -> Captured {
        let c = Captured::default();
        let sink = c.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .init();
        c
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// `WRITERS` threads each `SAVES` times call `write(thread, i)` while two readers
/// call `read()` (which must return whole content) until the writers are done.
/// Returns (failed writes, unparsable reads, reads).
fn hammer(write: impl Fn(usize, usize) -> bool + Sync, read: impl Fn() -> bool + Sync) -> (usize, usize, usize) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let (mut bad, mut reads) = (0, 0);
                    while !stop.load(Ordering::Relaxed) {
                        reads += 1;
                        if !read() {
                            bad += 1;
                        }
                    }
                    (bad, reads)
                })
            })
            .collect();
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let write = &write;
                s.spawn(move || (0..SAVES).filter(|i| !write(t, *i)).count())
            })
            .collect();
        let failed: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
        stop.store(true, Ordering::Relaxed);
        let (bad, reads) = readers
            .into_iter()
            .map(|r| r.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        (failed, bad, reads)
    })
}

/// Temporary files left next to `path`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn concurrent_perf_model_saves_never_fail_or_tear() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("offload-model-{}-{nanos}", std::process::id()));
    let path = dir.join("perf-model.json");
    let model = |t: usize, i: usize| {
        let mut m = PerfModel::in_memory();
        m.set_path(Some(path.clone()));
        for k in 0..20 + t {
            let e = Estimate {
                rate: 1e6 + (t * 1000 + i) as f64,
                latency_s: 1e-5,
                bandwidth: 1e9,
                samples: k as u64 + 2,
            };
            m.insert(format!("kernel {k} @ thread {t}"), e).unwrap();
        }
        m
    };
    model(0, 0).save().unwrap();
    let errors = Mutex::new(Vec::new());
    let (failed, unparsable, reads) = hammer(
        |t, i| match model(t, i).save() {
            Ok(()) => true,
            Err(e) => {
                errors.lock().unwrap().push(e.to_string());
                false
            }
        },
        || {
            let bytes = std::fs::read(&path).unwrap();
            serde_json::from_slice::<serde_json::Value>(&bytes).is_ok()
        },
    );
    let left = leftovers(&dir);
    std::fs::remove_dir_all(&dir).ok();
    println!(
        "{} saves: {failed} failed, {reads} reads: {unparsable} unparsable",
        WRITERS * SAVES
    );
    let errors = errors.into_inner().unwrap();
    assert_eq!(failed, 0, "failed saves, e.g. {:?}", errors.first());
    assert_eq!(unparsable, 0, "reads of a partly written model file");
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

#[test]
fn concurrent_cache_writes_never_fail_or_tear() {
    run_child("child_concurrent_cache_writes");
}

#[test]
#[ignore = "run by concurrent_cache_writes_never_fail_or_tear in a child process"]
fn child_concurrent_cache_writes() {
    let log = Captured::install();
    let payload = |t: usize, i: usize| format!("{t} {i} {}", "#".repeat(8192 + 97 * t + i % 13));
    let whole = |text: &str| {
        let mut parts = text.splitn(3, ' ');
        let (Some(t), Some(i)) = (parts.next(), parts.next()) else {
            return false;
        };
        match (t.parse(), i.parse()) {
            (Ok(t), Ok(i)) => text == payload(t, i),
            _ => false,
        }
    };
    offload::cache::write("stress", "entry", payload(0, 0).as_bytes());
    let (_, torn, reads) = hammer(
        |t, i| {
            offload::cache::write("stress", "entry", payload(t, i).as_bytes());
            true
        },
        || offload::cache::read("stress", "entry").is_some_and(|b| whole(&String::from_utf8_lossy(&b))),
    );
    let failed = log.text().matches("cannot write cache entry").count();
    let left = leftovers(&cache_dir().join("stress"));
    println!(
        "{} writes: {failed} failed, {reads} reads: {torn} missing or torn",
        WRITERS * SAVES
    );
    assert_eq!(failed, 0, "failed cache writes:\n{}", log.text());
    assert_eq!(torn, 0, "reads of a missing or partly written entry");
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

// ---------------------------------------------------------------------------
// OpenCL program binaries.

/// Header of a cache entry: 14 bytes of magic, the u64 binary length, 32 hex
/// digits of hash.
const HEADER: usize = 14 + 8 + 32;

/// Run `k` in a fresh runtime (so the program comes from disk or source, not
/// from memory); returns the relative error against `x + expect_add`.
fn run_adder(k: &Kernel, x: &[f32], expect_add: f32) -> f64 {
    let rt = Runtime::new().unwrap();
    let d = rt.device("opencl").unwrap();
    let dx = d.upload(x).unwrap();
    let mut dout = d.upload(&vec![f32::NAN; x.len()]).unwrap();
    d.launch(
        k,
        &LaunchConfig::for_items(x.len(), d.info()),
        &[Arg::input(&dx), Arg::output(&mut dout), (x.len() as u32).into()],
    )
    .unwrap();
    let out = dout.to_vec().unwrap();
    let reference: Vec<f64> = x.iter().map(|v| *v as f64 + expect_add as f64).collect();
    rel_err(&out, &reference)
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("opencl"))
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
    v.sort();
    v
}

/// The entry written by building `k` (the one file that appears).
fn entry_of(k: &Kernel, x: &[f32], add: f32, dir: &Path) -> PathBuf {
    let before = entries(dir);
    assert!(run_adder(k, x, add) < 1e-6, "cold build of +{add}");
    let new: Vec<PathBuf> = entries(dir).into_iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(new.len(), 1, "one entry written for +{add}: {new:?}");
    new[0].clone()
}

/// `binary` behind a header made consistent the way a plain content hash would:
/// magic of `like`, the binary's length and the hash of the binary alone.
fn rehashed(like: &[u8], binary: &[u8]) -> Vec<u8> {
    let mut e = like[..14].to_vec();
    e.extend_from_slice(&(binary.len() as u64).to_le_bytes());
    e.extend_from_slice(offload::cache::key(&[binary]).as_bytes());
    e.extend_from_slice(binary);
    e
}

#[test]
fn opencl_entries_are_bound_to_their_key() {
    let rt = common::runtime();
    if common::devices_of(&rt, BackendKind::OpenCl).is_empty() {
        return; // skipped (printed)
    }
    drop(rt);
    run_child("child_opencl_entries");
}

#[test]
#[ignore = "run by opencl_entries_are_bound_to_their_key in a child process"]
fn child_opencl_entries() {
    let dir = cache_dir();
    let mut rng = Rng::fresh("opencl entries");
    let nonce = rng.next_u64();
    let x = rng.vec_f32(4096, -3.0, 3.0);
    drop(Runtime::new().unwrap()); // discovery may cache its probe program
    let (a, b) = (common::adder(1.0, nonce), common::adder(2.0, nonce));
    let file_a = entry_of(&a, &x, 1.0, &dir);
    let file_b = entry_of(&b, &x, 2.0, &dir);
    let bytes_a = std::fs::read(&file_a).unwrap();
    let bytes_b = std::fs::read(&file_b).unwrap();
    assert!(run_adder(&b, &x, 2.0) < 1e-6, "warm build of +2");

    // A's binary under B's key, its header made consistent for that binary: B
    // must still add 2 (the entry is refused and B rebuilt from source).
    std::fs::write(&file_b, rehashed(&bytes_b, &bytes_a[HEADER..])).unwrap();
    let err = run_adder(&b, &x, 2.0);
    assert!(err < 1e-6, "program A's binary ran under B's key: rel err {err}");
    // A's whole entry copied under B's key: refused as well.
    std::fs::write(&file_b, &bytes_a).unwrap();
    let err = run_adder(&b, &x, 2.0);
    assert!(err < 1e-6, "program A's entry ran under B's key: rel err {err}");

    // A truncated entry, and a truncated binary behind a header made consistent
    // for it: refused, rebuilt from source, and the entry rewritten.
    let truncated = bytes_b[..bytes_b.len() / 2].to_vec();
    let cut_binary = rehashed(&bytes_b, &bytes_b[HEADER..HEADER + (bytes_b.len() - HEADER) / 2]);
    for bad in [truncated, cut_binary] {
        std::fs::write(&file_b, &bad).unwrap();
        let err = run_adder(&b, &x, 2.0);
        assert!(err < 1e-6, "after a truncated entry: rel err {err}");
        let now = std::fs::read(&file_b).unwrap();
        assert_ne!(now, bad, "the truncated entry is rewritten");
        assert!(now.len() > bad.len(), "the rewritten entry holds the whole binary");
    }
    // The rewritten entry is used again (and A's entry was never touched).
    assert!(run_adder(&b, &x, 2.0) < 1e-6);
    assert!(run_adder(&a, &x, 1.0) < 1e-6);
    assert_eq!(std::fs::read(&file_a).unwrap(), bytes_a);
}
