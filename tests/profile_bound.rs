//! The profiler is on by default, so its memory must stay bounded however long
//! a program runs: past the record cap records are aggregated (and counted as
//! dropped), the report's totals stay exact, labels stay few, and the process's
//! resident memory stays flat over a long loop of fresh kernels and split runs.

use std::time::{Duration, Instant};

use offload::profile::{DEFAULT_RECORD_CAP, Profiler, Stage};
use offload::schedule::{HostArg, Policy, Scheduler};
use offload::{BackendKind, Runtime, kernels};

/// Resident set size of this process, bytes (from `/proc/self/statm`, in pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages in statm");
    pages * 4096
}

/// 300,000 records into a profiler capped at 10,000: at most the cap is kept, the
/// rest is counted as dropped, and every total of the report equals the true sum.
#[test]
fn records_past_the_cap_are_dropped_and_totals_stay_exact() {
    let p = Profiler::new();
    assert_eq!(p.record_cap(), DEFAULT_RECORD_CAP);
    let cap = 10_000;
    p.set_record_cap(cap);
    let base = Instant::now();
    let n: u64 = 300_000;
    let (mut kernel_ns, mut h2d_ns, mut items, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut last_end = 0u64;
    for i in 0..n {
        let start = Duration::from_nanos(1_000 * i);
        let len = 100 + i % 700;
        let t0 = base + start;
        let t1 = t0 + Duration::from_nanos(len);
        last_end = 1_000 * i + len;
        if i % 3 == 0 {
            p.record("cpu:0", Stage::HostToDevice, "chunk 1", 64 + i % 5, 0, t0, t1, None);
            h2d_ns += len;
            bytes += 64 + i % 5;
        } else {
            p.record("cpu:0", Stage::Kernel, "k", 0, i % 11, t0, t1, None);
            kernel_ns += len;
            items += i % 11;
        }
    }
    assert_eq!(p.kept_records(), cap);
    assert_eq!(p.dropped_records(), n - cap as u64);
    let profile = p.snapshot();
    assert_eq!(profile.records.len(), cap);
    assert_eq!(profile.dropped_records(), n - cap as u64);
    let r = profile.report();
    let d = &r.devices[0];
    // The span is first start to last end, whatever the epoch.
    assert_eq!(d.ns(Stage::Kernel), kernel_ns);
    assert_eq!(d.ns(Stage::HostToDevice), h2d_ns);
    assert_eq!(d.h2d_bytes, bytes);
    assert_eq!(d.items, items);
    assert_eq!(d.launches, n - n.div_ceil(3));
    assert_eq!(d.span_ns, last_end);
    assert_eq!(r.dropped_records, n - cap as u64);
    let dropped = format!("{} records dropped", n - cap as u64);
    let text = r.to_string();
    assert!(text.contains(&dropped), "{text}");
    assert!(profile.to_chrome_trace().contains(&dropped));
    assert!(profile.to_svg_timeline().contains(&dropped));
    // `take` empties kept records and aggregates alike.
    let taken = p.take();
    assert_eq!(taken.dropped_records(), n - cap as u64);
    assert_eq!((p.kept_records(), p.dropped_records()), (0, 0));
}

/// A long loop of fresh kernels and split runs: the profiler keeps at most its
/// cap, its counts add up, and resident memory stays flat after warm-up.
#[test]
fn long_loop_of_runs_keeps_memory_flat() {
    let rt = Runtime::builder()
        .cpu_threads(1)
        .backends(&[BackendKind::Cpu])
        .build()
        .unwrap();
    let dev = rt.device("cpu").unwrap();
    let cap = 5_000;
    rt.profiler().set_record_cap(cap);
    let n = 20_000;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut c = vec![0.0f32; n];
    let mut s = Scheduler::new(std::slice::from_ref(&dev))
        .unwrap()
        .with_policy(Policy::Dynamic { chunk: 1024 })
        .in_memory_model();
    let mut one_run = || {
        let k = kernels::vector_add().unwrap();
        s.run(
            &k,
            n,
            &mut [HostArg::input(&a), HostArg::input(&a), HostArg::output(&mut c)],
        )
        .unwrap();
    };
    let warm = 600;
    for _ in 0..warm {
        one_run();
    }
    let per_run = (rt.profiler().kept_records() as u64 + rt.profiler().dropped_records()) / warm;
    // About 20 chunk launches per run (the CPU device uses the host data in place: no copies).
    assert!(per_run >= 15, "{per_run} records per run");
    assert!(rt.profiler().dropped_records() > 0, "warm-up reaches the cap");
    let before = rss_bytes();
    let runs = 1400;
    for _ in 0..runs {
        one_run();
    }
    let after = rss_bytes();
    let total = rt.profiler().kept_records() as u64 + rt.profiler().dropped_records();
    println!(
        "{} runs, {per_run} records per run: {} kept, {} dropped; RSS {:.1} MiB -> {:.1} MiB",
        warm + runs,
        rt.profiler().kept_records(),
        rt.profiler().dropped_records(),
        before as f64 / (1 << 20) as f64,
        after as f64 / (1 << 20) as f64
    );
    assert_eq!(rt.profiler().kept_records(), cap);
    assert!(total >= per_run * (warm + runs));
    // Every launch is in the report's launch count, kept or dropped.
    let report = rt.profile().report();
    let chunks = n.div_ceil(1024) as u64;
    // Each run: its chunks plus one warm-up launch.
    assert_eq!(report.total.launches, (warm + runs) * (chunks + 1));
    assert_eq!(report.total.items, (warm + runs) * n as u64);
    assert!(c.iter().enumerate().all(|(i, x)| *x == 2.0 * i as f32));
    let grown = after.saturating_sub(before);
    assert!(grown < 2 << 20, "RSS grew by {grown} bytes over {runs} runs");
}
