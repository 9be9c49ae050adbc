//! Suite `nbody`: the all-pairs N-body kernel, GFLOP/s at the 20-flop convention.
//!
//! * CPU backend at N = 16384 on 1 and 2 worker threads (target ≥ 90 GFLOP/s per
//!   core), with the portable (non-AVX-512) path for comparison;
//! * on the first OpenCL device (PoCL on this machine), in the same run, the best
//!   hand-written PoCL kernel (structure of arrays, no local memory,
//!   `native_rsqrt`, `-cl-fast-relaxed-math`) as the reference, against which are
//!   set the built-in kernel (its host-CPU source on a host-CPU device: target
//!   ≥ 0.9×), the GPU-shaped tiled source for comparison, and the CPU backend with
//!   as many threads as PoCL has compute units (target ≥ 1.3×).
//!
//! Every measured result is checked against a float64 reference on a sample of
//! bodies before its number is printed. `--quick` uses N = 4096.

use offload::kernels::{self, FLOPS_PER_INTERACTION, NbodyCpuPath};
use offload::{Access, Arg, BackendKind, Device, Kernel, Param, Runtime, Split};

use crate::common::{bench_line, median, median_time, verdict};

/// Alternating rounds of the PoCL reference and the built-in kernel.
const ROUNDS: usize = 3;

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

/// The built-in N-body signature with another OpenCL source (to measure the
/// GPU-shaped source on a host-CPU device).
fn nbody_with_opencl(src: &str, opts: &[&str]) -> offload::Result<Kernel> {
    let b = Kernel::builder("nbody")
        .param(Param::buffer::<f32>("pos", Access::Read, Split::Broadcast))
        .param(Param::buffer::<f32>(
            "acc",
            Access::Write,
            Split::Elementwise { per_item: 4 },
        ))
        .param(Param::scalar::<u32>("n"))
        .param(Param::scalar::<f32>("eps2"))
        .param(Param::Offset)
        .param(Param::Count)
        .extent_from("pos", &["n"], 4);
    // SAFETY: the built-in sources, audited in offload::kernels::nbody, with its
    // signature and extents; every launch here passes eps2 > 0 and the whole range.
    unsafe { b.opencl(src, "nbody") }.opencl_options(opts).build()
}

/// The reference for OpenCL on host cores: the best N-body kernel written by hand
/// for PoCL. Structure of arrays, one body per work-item, no local memory,
/// `native_rsqrt`, built with `-cl-fast-relaxed-math`; launched over exactly the
/// `n` bodies in blocks that divide `n`, so it needs no bounds checks.
const SOA_REFERENCE: &str = r#"
__kernel void nbody_soa(__global const float* restrict x, __global const float* restrict y,
                        __global const float* restrict z, __global const float* restrict m,
                        __global float* restrict ax, __global float* restrict ay,
                        __global float* restrict az, const uint n, const float eps2) {
    const uint i = get_global_id(0);
    const float xi = x[i], yi = y[i], zi = z[i];
    float sx = 0.0f, sy = 0.0f, sz = 0.0f;
    for (uint j = 0; j < n; ++j) {
        const float dx = x[j] - xi, dy = y[j] - yi, dz = z[j] - zi;
        const float r2 = dx * dx + dy * dy + dz * dz + eps2;
        const float inv = native_rsqrt(r2);
        const float s = m[j] * inv * inv * inv;
        sx += dx * s;
        sy += dy * s;
        sz += dz * s;
    }
    ax[i] = sx;
    ay[i] = sy;
    az[i] = sz;
}
"#;

/// [`SOA_REFERENCE`] as a kernel (OpenCL only).
fn soa_reference() -> offload::Result<Kernel> {
    let mut b = Kernel::builder("nbody_soa");
    for name in ["x", "y", "z", "m"] {
        b = b.param(Param::buffer::<f32>(
            name,
            Access::Read,
            Split::Elementwise { per_item: 1 },
        ));
    }
    for name in ["ax", "ay", "az"] {
        b = b.param(Param::buffer::<f32>(
            name,
            Access::Write,
            Split::Elementwise { per_item: 1 },
        ));
    }
    let b = b.param(Param::scalar::<u32>("n")).param(Param::scalar::<f32>("eps2"));
    // SAFETY: the kernel reads x, y, z, m at indices below n and writes ax, ay, az
    // at its global id; every launch below has exactly n work-items and buffers
    // of n elements (checked as the Items extent).
    unsafe { b.opencl(SOA_REFERENCE, "nbody_soa") }
        .opencl_options(&["-cl-fast-relaxed-math"])
        .build()
}

/// Median GFLOP/s of [`soa_reference`] on `dev` over all `n` bodies (checked like
/// [`measure`]).
fn measure_soa(dev: &Device, pos: &[f32], eps2: f32, reps: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let n = pos.len() / 4;
    let k = soa_reference()?;
    let col = |c: usize| -> Vec<f32> { pos.chunks_exact(4).map(|b| b[c]).collect() };
    let (x, y, z, m) = (
        dev.upload(&col(0))?,
        dev.upload(&col(1))?,
        dev.upload(&col(2))?,
        dev.upload(&col(3))?,
    );
    let mut out = [
        dev.upload(&vec![f32::NAN; n])?,
        dev.upload(&vec![f32::NAN; n])?,
        dev.upload(&vec![f32::NAN; n])?,
    ];
    let block = [256u32, 128, 64, 32, 16, 8, 4, 2, 1]
        .into_iter()
        .find(|b| n.is_multiple_of(*b as usize) && *b <= dev.info().max_threads_per_block)
        .unwrap_or(1);
    let cfg = offload::LaunchConfig::new((n as u32) / block, block);
    dev.build(&k)?;
    let t = median_time(reps, || {
        let [ax, ay, az] = &mut out;
        dev.launch(
            &k,
            &cfg,
            &[
                Arg::input(&x),
                Arg::input(&y),
                Arg::input(&z),
                Arg::input(&m),
                Arg::output(ax),
                Arg::output(ay),
                Arg::output(az),
                (n as u32).into(),
                eps2.into(),
            ],
        )
    })?;
    let [ax, ay, az] = out.map(|b| b.to_vec());
    let (ax, ay, az) = (ax?, ay?, az?);
    let acc: Vec<f32> = (0..n).flat_map(|i| [ax[i], ay[i], az[i], 0.0]).collect();
    let err = check(pos, &acc, eps2);
    if err > 1e-4 {
        return Err(format!(
            "SoA reference on {} is wrong: relative error {err:e} > 1e-4",
            dev.label()
        )
        .into());
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
            let units = dev.info().compute_units.max(1) as usize;
            println!(
                "{} ({}), {units} compute units, host CPU: {}",
                dev.label(),
                dev.info().name,
                dev.info().host_cpu
            );
            // The reference and the built-in kernel alternate, and each gives the
            // median of its rounds: load from other work on shared cores then
            // weighs on both alike.
            let (mut soas, mut builtins) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                soas.push(measure_soa(dev, &pos, eps2, reps)?);
                builtins.push(measure(dev, &k, &pos, eps2, reps)?);
            }
            let soa = median(soas);
            let g = median(builtins);
            println!("hand-written SoA reference (native_rsqrt, fast-math): {soa:.1} GFLOP/s");
            bench_line(
                &format!("opencl_nbody_{}k_soa_ref_gflops", n / 1024),
                soa,
                "GFLOP/s",
                None,
            );
            let tiled = nbody_with_opencl(kernels::sources("nbody")?.opencl, &[])?;
            let gt = measure(dev, &tiled, &pos, eps2, reps.min(3))?;
            println!(
                "GPU-shaped tiled kernel (kernels/nbody.c): {gt:.1} GFLOP/s, {:.2}x the reference",
                gt / soa
            );
            bench_line(
                &format!("opencl_nbody_{}k_tiled_gflops", n / 1024),
                gt,
                "GFLOP/s",
                Some(soa),
            );
            println!(
                "built-in kernel ({} source): {g:.1} GFLOP/s, {:.2}x the reference; target >= 0.9x: {}",
                if dev.info().host_cpu && k.opencl_host_cpu_source().is_some() {
                    "host-CPU"
                } else {
                    "GPU-shaped"
                },
                g / soa,
                verdict(g / soa >= 0.9)
            );
            bench_line(&format!("opencl_nbody_{}k_gflops", n / 1024), g, "GFLOP/s", Some(soa));
            // Same cores on both sides: the CPU run with as many threads as PoCL has units.
            if let Some((t, cpu)) = per_thread.iter().rev().find(|(t, _)| *t <= units) {
                println!(
                    "cpu backend ({t} threads) vs the reference on {}: {:.2}x; target >= 1.3x: {}",
                    dev.label(),
                    cpu / soa,
                    verdict(cpu / soa >= 1.3)
                );
                bench_line(
                    &format!("cpu_vs_opencl_nbody_{}k_gflops", n / 1024),
                    *cpu,
                    "GFLOP/s",
                    Some(soa),
                );
            }
        }
    }
    Ok(())
}
