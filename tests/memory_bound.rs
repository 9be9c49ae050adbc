//! Memory stays bounded when a program builds and launches kernels afresh: the
//! per-device caches of built programs drop a kernel's entry once the kernel is
//! gone. Alone in its binary so no other test's allocations move the numbers.

mod common;

use offload::{Arg, BackendKind, LaunchConfig, kernels};

/// Resident set size of this process in bytes (`VmRSS` of /proc/self/status).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

#[test]
fn fresh_kernels_on_opencl_keep_rss_flat() {
    let rt = common::runtime();
    let Some(dev) = common::devices_of(&rt, BackendKind::OpenCl).into_iter().next() else {
        return; // skipped (printed)
    };
    let n = 256;
    let a = dev.upload(&vec![1.0f32; n]).unwrap();
    let b = dev.upload(&vec![2.0f32; n]).unwrap();
    let mut c = dev.upload(&vec![0.0f32; n]).unwrap();
    let cfg = LaunchConfig::for_items(n, dev.info());
    let mut round = |count: usize| {
        for _ in 0..count {
            let k = kernels::vector_add().unwrap();
            dev.launch(
                &k,
                &cfg,
                &[
                    Arg::input(&a),
                    Arg::input(&b),
                    Arg::output(&mut c),
                    0u32.into(),
                    (n as u32).into(),
                ],
            )
            .unwrap();
        }
    };
    // Warm-up: the disk cache entry, driver state and allocator pools settle.
    round(200);
    let before = rss_bytes();
    let t = std::time::Instant::now();
    let fresh = 2000;
    round(fresh);
    let after = rss_bytes();
    let grown = after.saturating_sub(before);
    println!(
        "{fresh} fresh kernels in {:.1} s: RSS {:.1} MB -> {:.1} MB (+{:.1} MB, {:.1} KB per kernel)",
        t.elapsed().as_secs_f64(),
        before as f64 / 1e6,
        after as f64 / 1e6,
        grown as f64 / 1e6,
        grown as f64 / 1e3 / fresh as f64
    );
    assert_eq!(c.to_vec().unwrap(), vec![3.0f32; n]);
    // Kept programs cost ~250 KB each on PoCL, so 2000 would be ~500 MB.
    assert!(
        grown < 40_000_000,
        "RSS grew by {grown} bytes over {fresh} fresh kernels: built programs are kept"
    );
}
