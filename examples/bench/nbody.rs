//! Suite `nbody`: the all-pairs N-body kernel, GFLOP/s at the 20-flop convention.
//!
//! * CPU backend at N = 16384 on 1 and 2 worker threads (target ≥ 90 GFLOP/s per
//!   core), with the portable (non-AVX-512) path for comparison;
//! * the same kernel on the first OpenCL device (PoCL on this machine), in the same
//!   run, as the reference: target CPU backend ≥ 1.8× PoCL with the same cores.
//!
//! Every measured result is checked against a float64 reference on a sample of
//! bodies before its number is printed. `--quick` uses N = 4096.

use offload::kernels::{self, FLOPS_PER_INTERACTION, NbodyCpuPath};
use offload::{Arg, BackendKind, Device, Kernel, Runtime};

use crate::common::{bench_line, median_time, verdict};

/// Seeded positions in the unit ball, masses 1/n (xorshift; no external crates).
fn bodies(n: usize) -> Vec<f32> {
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    let mut u = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let mut pos = Vec::with_capacity(4 * n);
    while pos.len() < 4 * n {
        let (x, y, z) = (u(), u(), u());
        if x * x + y * y + z * z <= 1.0 {
            pos.extend_from_slice(&[x, y, z, 1.0 / n as f32]);
        }
    }
    pos
}

/// Largest relative error (per body, vector norm) of `acc` against float64 on a sample.
fn check(pos: &[f32], acc: &[f32], eps2: f32) -> f64 {
    let n = pos.len() / 4;
    let mut worst = 0f64;
    for i in (0..n).step_by((n / 61).max(1)) {
        let (xi, yi, zi) = (pos[4 * i] as f64, pos[4 * i + 1] as f64, pos[4 * i + 2] as f64);
        let mut a = [0f64; 3];
        for b in pos.chunks_exact(4) {
            let d = [b[0] as f64 - xi, b[1] as f64 - yi, b[2] as f64 - zi];
            let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2] + eps2 as f64;
            let s = b[3] as f64 / (r2 * r2.sqrt());
            for k in 0..3 {
                a[k] += d[k] * s;
            }
        }
        let num: f64 = (0..3).map(|k| (acc[4 * i + k] as f64 - a[k]).powi(2)).sum::<f64>();
        let den: f64 = a.iter().map(|v| v * v).sum::<f64>();
        let e = (num / den).sqrt();
        worst = if e.is_finite() { worst.max(e) } else { f64::INFINITY };
    }
    worst
}

/// Median GFLOP/s of the kernel on `dev` over all `n` bodies.
fn measure(dev: &Device, k: &Kernel, pos: &[f32], eps2: f32, reps: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let n = pos.len() / 4;
    let dpos = dev.upload(pos)?;
    let mut dacc = dev.upload(&vec![f32::NAN; 4 * n])?;
    let cfg = kernels::nbody_launch_config(n, dev.info());
    dev.build(k)?;
    let t = median_time(reps, || {
        dev.launch(
            k,
            &cfg,
            &[
                Arg::input(&dpos),
                Arg::output(&mut dacc),
                (n as u32).into(),
                eps2.into(),
                0u32.into(),
                (n as u32).into(),
            ],
        )
    })?;
    let acc = dacc.to_vec()?;
    let err = check(pos, &acc, eps2);
    if err > 1e-4 {
        return Err(format!("nbody on {} is wrong: relative error {err:e} > 1e-4", dev.label()).into());
    }
    Ok((n * n) as f64 * FLOPS_PER_INTERACTION / t.as_secs_f64() / 1e9)
}

pub fn run(args: &crate::Args) -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = if args.quick { 4096 } else { 16384 };
    let eps2 = 0.01f32 * 0.01;
    let pos = bodies(n);
    let reps = args.reps.clamp(1, 7);
    let best = NbodyCpuPath::Auto.resolve();
    let k = kernels::nbody_with_cpu_path(best)?;
    println!("N-body, N = {n}, 20 flops per interaction, CPU path {}", best.name());

    let mut per_thread = Vec::new();
    for threads in [1usize, 2] {
        let rt = Runtime::builder()
            .backends(&[BackendKind::Cpu])
            .cpu_threads(threads)
            .build()?;
        let dev = rt.device("cpu")?;
        let g = measure(&dev, &k, &pos, eps2, reps)?;
        println!(
            "cpu backend, {threads} thread(s): {g:.1} GFLOP/s ({:.1} per thread); target >= 90 per core: {}",
            g / threads as f64,
            verdict(g / threads as f64 >= 90.0)
        );
        bench_line(
            &format!("cpu_nbody_{}k_{threads}t_gflops", n / 1024),
            g,
            "GFLOP/s",
            None,
        );
        per_thread.push((threads, g));
    }
    if best != NbodyCpuPath::Portable {
        let rt = Runtime::builder()
            .backends(&[BackendKind::Cpu])
            .cpu_threads(1)
            .build()?;
        let dev = rt.device("cpu")?;
        let kp = kernels::nbody_with_cpu_path(NbodyCpuPath::Portable)?;
        let g = measure(&dev, &kp, &pos, eps2, reps.min(3))?;
        println!("cpu backend, portable path, 1 thread: {g:.1} GFLOP/s");
        bench_line(
            &format!("cpu_nbody_{}k_1t_portable_gflops", n / 1024),
            g,
            "GFLOP/s",
            None,
        );
    }

    let rt = Runtime::builder().backends(&[BackendKind::OpenCl]).build()?;
    match rt.devices().first() {
        None => {
            let why = rt
                .unavailable()
                .first()
                .map_or("no device".to_string(), |u| u.reason.clone());
            println!("OpenCL unavailable: {why}");
            if args.strict {
                return Err(format!("--strict: OpenCL unavailable: {why}").into());
            }
        }
        Some(dev) => {
            let g = measure(dev, &k, &pos, eps2, reps)?;
            let units = dev.info().compute_units.max(1) as usize;
            println!(
                "{} ({}), {units} compute units: {g:.1} GFLOP/s",
                dev.label(),
                dev.info().name
            );
            bench_line(&format!("opencl_nbody_{}k_gflops", n / 1024), g, "GFLOP/s", None);
            // Same cores on both sides: the CPU run with as many threads as PoCL has units.
            if let Some((t, cpu)) = per_thread.iter().rev().find(|(t, _)| *t <= units) {
                println!(
                    "cpu backend ({t} threads) vs {}: {:.2}x; target >= 1.8x: {}",
                    dev.label(),
                    cpu / g,
                    verdict(cpu / g >= 1.8)
                );
                bench_line(
                    &format!("cpu_vs_opencl_nbody_{}k_gflops", n / 1024),
                    *cpu,
                    "GFLOP/s",
                    Some(g),
                );
            }
        }
    }
    Ok(())
}
