//! Shared helpers of the bench suites: timing, medians, the BENCH line format.

use std::time::{Duration, Instant};

/// Median of `reps` runs of `f` (after one warm-up run).
pub fn median_time<E>(reps: usize, mut f: impl FnMut() -> Result<(), E>) -> Result<Duration, E> {
    f()?;
    let mut t = Vec::with_capacity(reps.max(1));
    for _ in 0..reps.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed());
    }
    t.sort();
    Ok(t[t.len() / 2])
}

/// Median of a list of samples.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// Print one `BENCH` line. `reference` is measured in the same run.
pub fn bench_line(name: &str, value: f64, unit: &str, reference: Option<f64>) {
    match reference {
        Some(r) => println!(
            "BENCH {name} value={value:.4} unit={unit} ref={r:.4} ratio={:.4}",
            value / r
        ),
        None => println!("BENCH {name} value={value:.4} unit={unit}"),
    }
}

/// Whether `target` is met, as a word for the table.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// Set in the child process of a suite re-run with one PoCL thread.
pub const CHILD_ENV: &str = "OFFLOAD_BENCH_CHILD";
/// PoCL's thread limit, read when it initialises.
pub const POCL_THREADS: &str = "POCL_MAX_PTHREAD_COUNT";

/// PoCL must see `POCL_MAX_PTHREAD_COUNT=1` before it initialises: when OpenCL
/// is present and the variable is unset, re-run `suite` as a child process with
/// it set. `Ok(true)`: the child ran the suite (the caller is done).
pub fn rerun_with_one_pocl_thread(suite: &str, args: &crate::Args) -> Result<bool, Box<dyn std::error::Error>> {
    if std::env::var_os(CHILD_ENV).is_some() || std::env::var_os(POCL_THREADS).is_some() {
        return Ok(false);
    }
    let probe = offload::Runtime::builder()
        .backends(&[offload::BackendKind::OpenCl])
        .build()?;
    if !probe.has(offload::BackendKind::OpenCl) {
        return Ok(false);
    }
    drop(probe);
    println!("re-running suite {suite} with {POCL_THREADS}=1 so PoCL uses one thread");
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg(suite).arg("--reps").arg(args.reps.to_string());
    if args.quick {
        cmd.arg("--quick");
    }
    if args.strict {
        cmd.arg("--strict");
    }
    let status = cmd.env(POCL_THREADS, "1").env(CHILD_ENV, "1").status()?;
    if !status.success() {
        return Err(format!("{suite} child run failed: {status}").into());
    }
    Ok(true)
}

/// A CPU device with one worker thread, in a runtime of its own.
pub fn cpu1() -> offload::Result<(offload::Runtime, offload::Device)> {
    let rt = offload::Runtime::builder()
        .cpu_threads(1)
        .backends(&[offload::BackendKind::Cpu])
        .build()?;
    let d = rt.device("cpu")?;
    Ok((rt, d))
}

/// The second device of a "two equal devices" pair: the first OpenCL device
/// (PoCL, limited to one thread by [`rerun_with_one_pocl_thread`]), or, without
/// OpenCL (an error with `--strict`), another single-thread CPU device. Returns
/// its runtime (to keep alive), the device and a description of the pair.
pub fn pocl_or_cpu1(
    args: &crate::Args,
) -> Result<(offload::Runtime, offload::Device, String), Box<dyn std::error::Error>> {
    let ocl_rt = offload::Runtime::builder()
        .backends(&[offload::BackendKind::OpenCl])
        .build()?;
    match ocl_rt.select("opencl") {
        Ok(mut v) => {
            let d = v.remove(0);
            let msg = format!(
                "CPU (1 worker) + {} ({}={})",
                d.label(),
                POCL_THREADS,
                std::env::var(POCL_THREADS).unwrap_or_default()
            );
            Ok((ocl_rt, d, msg))
        }
        Err(e) => {
            if args.strict {
                return Err(format!("--strict: OpenCL unavailable: {e}").into());
            }
            let (rt, d) = cpu1()?;
            Ok((
                rt,
                d,
                "OpenCL unavailable, so two single-thread CPU devices".to_string(),
            ))
        }
    }
}
