//! Suite `gemm`: SGEMM GFLOP/s (2·M·N·K flops per multiply).
//!
//! * The best CPU rung (the packed microkernel, [`offload::kernels::sgemm_host`])
//!   against the `gemm` crate (the reference, same run, same machine) at 1024³
//!   and 2048³ on 1 and 2 threads: target ≥ 0.9×. The same rung through the CPU
//!   backend (`gemm_packed`, parallel over the device's pool) is reported too.
//! * Every rung on the first OpenCL device (PoCL here) at 512³ (256³ with `--quick`).
//!
//! The CPU pairs run interleaved (reference and ours alternately, each going first
//! every other time) and report
//! medians, so load from other processes hits both alike. Every measured result is checked against a float64 reference on sampled
//! elements before its number is printed. `--quick` uses 256³ and 384³ for the CPU.

use offload::kernels::{GemmRung, sgemm_host};
use offload::{Arg, BackendKind, Device, Runtime};

use std::time::Instant;

use crate::common::{bench_line, median, median_time, verdict};

type BoxError = Box<dyn std::error::Error>;

/// Seeded values in [-1, 1), never zero (xorshift).
fn matrix(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if v == 0.0 { 0.5 } else { v }
        })
        .collect()
}

/// Largest relative error over ~400 sampled elements of C against a float64 dot
/// product, relative to the norm of the reference terms.
fn check(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &[f32]) -> f64 {
    let mut worst = 0f64;
    let step = (m * n / 397).max(1);
    for e in (0..m * n).step_by(step) {
        let (i, j) = (e / n, e % n);
        let (mut s, mut mag) = (0f64, 0f64);
        for p in 0..k {
            let t = a[i * k + p] as f64 * b[p * n + j] as f64;
            s += t;
            mag += t.abs();
        }
        let err = (c[e] as f64 - s).abs() / mag.max(f64::MIN_POSITIVE);
        worst = if err.is_finite() { worst.max(err) } else { f64::INFINITY };
    }
    worst
}

fn gflops(m: usize, n: usize, k: usize, secs: f64) -> f64 {
    2.0 * m as f64 * n as f64 * k as f64 / secs / 1e9
}

/// The `gemm` crate's row-major `C = A·B` on `threads` threads.
fn reference_gemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) {
    let par = if threads <= 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    // SAFETY: the pointers and strides describe the row-major m × k, k × n and
    // m × n matrices held by `a`, `b` and `c` (the caller made them that long);
    // `c` is a unique borrow; read_dst = false, so C's old values are ignored.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
}

pub fn run(args: &crate::Args) -> Result<(), BoxError> {
    let sizes: &[usize] = if args.quick { &[256, 384] } else { &[1024, 2048] };
    let reps = args.reps;
    println!(
        "{:<34} {:>10} {:>10} {:>8}  target ≥ 0.9×",
        "CPU SGEMM (packed vs gemm crate)", "GFLOP/s", "gemm", "ratio"
    );
    for &s in sizes {
        let (m, n, k) = (s, s, s);
        let a = matrix(m * k, 1);
        let b = matrix(k * n, 2);
        for threads in [1usize, 2] {
            // Interleaved pairs after one warm-up each: load from
            // other processes on this shared machine hits both sides alike.
            let mut c_ref = vec![f32::NAN; m * n];
            let mut c = vec![f32::NAN; m * n];
            reference_gemm(m, n, k, &a, &b, &mut c_ref, threads);
            sgemm_host(m, n, k, &a, &b, &mut c, threads)?;
            let (mut ts_ref, mut ts) = (Vec::new(), Vec::new());
            for rep in 0..reps.max(1) {
                // Alternate which side goes first, so neither always runs on the
                // caches and clocks the other left behind.
                for side in [rep % 2, 1 - rep % 2] {
                    let s0 = Instant::now();
                    if side == 0 {
                        reference_gemm(m, n, k, &a, &b, &mut c_ref, threads);
                        ts_ref.push(s0.elapsed().as_secs_f64());
                    } else {
                        sgemm_host(m, n, k, &a, &b, &mut c, threads)?;
                        ts.push(s0.elapsed().as_secs_f64());
                    }
                }
            }
            let (t, t_ref) = (median(ts), median(ts_ref));
            let err_ref = check(m, n, k, &a, &b, &c_ref);
            let err = check(m, n, k, &a, &b, &c);
            if err > 1e-4 || err_ref > 1e-4 {
                return Err(format!("SGEMM {s}³: relative error {err:.2e} (gemm crate {err_ref:.2e})").into());
            }
            let (g, r) = (gflops(m, n, k, t), gflops(m, n, k, t_ref));
            println!(
                "{:<34} {g:>10.1} {r:>10.1} {:>8.3}  {}",
                format!("{s}³, {threads} thread(s)"),
                g / r,
                verdict(g / r >= 0.9)
            );
            bench_line(&format!("gemm_cpu_packed_{s}_t{threads}"), g, "GFLOP/s", Some(r));
        }
    }
    // The same rung through the CPU backend (pool over all cores).
    let rt = Runtime::builder().backends(&[BackendKind::Cpu]).build()?;
    let cpu = rt.device("cpu")?;
    let s = *sizes.last().unwrap_or(&256);
    let g = measure_rung(&cpu, GemmRung::Packed, s, reps)?;
    println!(
        "{:<34} {g:>10.1}  (CPU backend, {} threads)",
        format!("gemm_packed kernel {s}³"),
        cpu.info().compute_units
    );
    bench_line(&format!("gemm_cpu_backend_packed_{s}"), g, "GFLOP/s", None);

    // Every rung on the first OpenCL device.
    let ocl = Runtime::builder().backends(&[BackendKind::OpenCl]).build()?;
    match ocl.select("opencl") {
        Ok(devs) => {
            let d = &devs[0];
            let s = if args.quick { 256 } else { 512 };
            println!("{} ({}), {s}³:", d.label(), d.info().name);
            for rung in [GemmRung::Naive, GemmRung::Tiled, GemmRung::RegBlock] {
                let g = measure_rung(d, rung, s, reps.min(3))?;
                println!("  {:<32} {g:>10.1} GFLOP/s", rung.name());
                bench_line(&format!("gemm_opencl_{}_{s}", rung.name()), g, "GFLOP/s", None);
            }
        }
        Err(e) => {
            if args.strict {
                return Err(format!("--strict: OpenCL unavailable: {e}").into());
            }
            println!("SKIP OpenCL GEMM rungs: {e}");
        }
    }
    Ok(())
}

/// Median GFLOP/s of one rung on a device for `s × s × s` (kernel time, data resident).
fn measure_rung(d: &Device, rung: GemmRung, s: usize, reps: usize) -> Result<f64, BoxError> {
    let (m, n, k) = (s, s, s);
    let a = matrix(m * k, 3);
    let b = matrix(k * n, 4);
    let kern = rung.kernel(n, k)?;
    d.build(&kern)?;
    let da = d.upload(&a)?;
    let db = d.upload(&b)?;
    let mut dc = d.upload(&vec![f32::NAN; m * n])?;
    let cfg = rung.launch_config(m, n, d.info());
    let t = median_time(reps, || {
        d.launch(
            &kern,
            &cfg,
            &[
                Arg::input(&da),
                Arg::input(&db),
                Arg::output(&mut dc),
                (n as u32).into(),
                (k as u32).into(),
                0u32.into(),
                (m as u32).into(),
            ],
        )
    })?;
    let c = dc.to_vec()?;
    let err = check(m, n, k, &a, &b, &c);
    if err > 1e-4 {
        return Err(format!("{} on {}: relative error {err:.2e}", rung.name(), d.label()).into());
    }
    Ok(gflops(m, n, k, t.as_secs_f64()))
}
