//! Suite `coexec`: one launch split across devices by the scheduler.
//!
//! * **(a) two equally fast devices** on a compute-bound kernel (`coexec_poly`:
//!   every item runs `iters` steps of `y = y·a + b`; Rust CPU version and OpenCL C
//!   version below): the CPU backend with 1 worker thread and PoCL limited to one
//!   thread (`POCL_MAX_PTHREAD_COUNT=1`). PoCL reads that variable when it
//!   initialises, so when OpenCL is present and the variable is unset this suite
//!   re-runs itself as a child process with it set. Without OpenCL the pair is two
//!   independent single-thread CPU devices (said in the output).
//!   Balance efficiency = (1 / Σ rate_d) ÷ split time, with `rate_d` the items/s
//!   of device `d` alone through the same scheduler. Target ≥ 0.93.
//! * **(b) one device 4× slower**: a single-thread CPU device and a second one
//!   wrapped by the scheduler's fault injector with `slow_down(4.0)` (it sleeps
//!   three times each launch's duration after it: same kernel, same results, a
//!   quarter of the throughput, and the sleeping core stays free). Target: split
//!   time never worse than the best device alone, within 3% (ratio ≥ 0.97).
//! * **(c) split vector add**, where transfers dominate: every device present,
//!   and what the performance model decided (shares, exclusions).
//!
//! Each split is timed after one calibration run (the model then lives in a
//! temporary file), as the median of `--reps` runs.

use std::time::Duration;

use offload::schedule::{FaultPlan, HostArg, Policy, Scheduler, SplitReport, inject_faults};
use offload::{Access, BackendKind, CpuCtx, Device, Kernel, Param, Runtime, Split, kernels};

use crate::common::{bench_line, cpu1, median, pocl_or_cpu1, rerun_with_one_pocl_thread, verdict};

const A: f32 = 0.999;
const B: f32 = 0.001;

/// OpenCL C version. Like the CPU version, each work-item runs 64 independent
/// chains (four `float16`), items `64·gid .. 64·gid + 64`: one dependent chain per
/// work-item would leave a CPU OpenCL device latency-bound. The scheduler
/// launches `count` work-items; those past `count / 64` return at once.
const POLY_CL: &str = r#"
__kernel void coexec_poly(__global const float* x, __global float* y, uint iters, uint offset, uint count) {
    uint base = get_global_id(0) * 64u;
    if (base >= count) return;
    if (base + 64u <= count) {
        __global const float* p = x + base;
        float16 a0 = vload16(0, p), a1 = vload16(1, p), a2 = vload16(2, p), a3 = vload16(3, p);
        for (uint k = 0; k < iters; ++k) {
            a0 = a0 * 0.999f + 0.001f;
            a1 = a1 * 0.999f + 0.001f;
            a2 = a2 * 0.999f + 0.001f;
            a3 = a3 * 0.999f + 0.001f;
        }
        __global float* q = y + base;
        vstore16(a0, 0, q); vstore16(a1, 1, q); vstore16(a2, 2, q); vstore16(a3, 3, q);
    } else {
        for (uint i = base; i < count; ++i) {
            float acc = x[i];
            for (uint k = 0; k < iters; ++k) {
                acc = acc * 0.999f + 0.001f;
            }
            y[i] = acc;
        }
    }
}
"#;

/// The compute-bound kernel: `iters` steps of `y = y·a + b` per item.
fn poly_kernel() -> offload::Result<Kernel> {
    let each = Split::Elementwise { per_item: 1 };
    let builder = Kernel::builder("coexec_poly")
        .param(Param::buffer::<f32>("x", Access::Read, each))
        .param(Param::buffer::<f32>("y", Access::Write, each))
        .param(Param::scalar::<u32>("iters"))
        .param(Param::Offset)
        .param(Param::Count);
    // SAFETY: POLY_CL declares this signature and touches `x[i]`, `y[i]` only for
    // `i < count`, the checked extent of both.
    unsafe { builder.opencl(POLY_CL, "coexec_poly") }.cpu(poly_cpu).build()
}

fn poly_cpu(ctx: &CpuCtx<'_>) {
    const LANES: usize = 64;
    let items = ctx.items_below(ctx.count());
    let x = &ctx.input::<f32>(0)[items.clone()];
    let y = ctx.output::<f32>(1);
    let iters: u32 = ctx.scalar(2);
    // 64 independent chains per step: the inner loop vectorizes and hides FMA latency.
    for (yc, xc) in y.chunks_mut(LANES).zip(x.chunks(LANES)) {
        let mut acc = [0f32; LANES];
        acc[..xc.len()].copy_from_slice(xc);
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = *v * A + B;
            }
        }
        yc.copy_from_slice(&acc[..yc.len()]);
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Median wall time of `reps` split runs after one calibration run; the last report.
fn time_split(
    devices: &[Device],
    policy: Policy,
    model: &std::path::Path,
    reps: usize,
    mut run: impl FnMut(&mut Scheduler) -> offload::Result<SplitReport>,
) -> Res<(Duration, SplitReport)> {
    let mut s = Scheduler::new(devices)?.with_policy(policy).model_file(model);
    let mut last = run(&mut s)?;
    let mut t = Vec::new();
    for _ in 0..reps.max(1) {
        let r = run(&mut s)?;
        t.push(r.wall.as_secs_f64());
        last = r;
    }
    Ok((Duration::from_secs_f64(median(t)), last))
}

pub fn run(args: &crate::Args) -> Res<()> {
    if rerun_with_one_pocl_thread("coexec", args)? {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("offload-coexec-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = suites(args, &dir);
    std::fs::remove_dir_all(&dir).ok();
    result
}

/// A closure running the poly kernel over `x` (its own output buffer).
fn poly_run(k: &Kernel, x: &[f32], iters: u32) -> impl FnMut(&mut Scheduler) -> offload::Result<SplitReport> {
    let (k, x) = (k.clone(), x.to_vec());
    let mut out = vec![0f32; x.len()];
    move |s: &mut Scheduler| {
        s.run(
            &k,
            x.len(),
            &mut [HostArg::input(&x), HostArg::output(&mut out), HostArg::scalar(iters)],
        )
    }
}

fn check_poly(k: &Kernel, devices: &[Device], x: &[f32], iters: u32) -> Res<()> {
    let n = x.len();
    let mut y = vec![f32::NAN; n];
    let mut s = Scheduler::new(devices)?.in_memory_model();
    s.run(
        k,
        n,
        &mut [HostArg::input(x), HostArg::output(&mut y), HostArg::scalar(iters)],
    )?;
    let (mut num, mut den) = (0f64, 0f64);
    for (v, &x0) in y.iter().zip(x).step_by(97) {
        let mut r = x0 as f64;
        for _ in 0..iters {
            r = r * A as f64 + B as f64;
        }
        if !v.is_finite() {
            return Err("split result has a non-finite value".into());
        }
        num += (*v as f64 - r).powi(2);
        den += r * r;
    }
    let rel = (num / den).sqrt();
    if rel > 1e-4 {
        return Err(format!("split result differs from the f64 reference: relative error {rel:e}").into());
    }
    Ok(())
}

fn suites(args: &crate::Args, dir: &std::path::Path) -> Res<()> {
    let (n, iters): (usize, u32) = if args.quick { (1 << 20, 200) } else { (1 << 23, 400) };
    let reps = if args.quick { args.reps.min(3) } else { args.reps };
    let k = poly_kernel()?;
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 + 0.5).collect();

    // (a) two equally fast devices.
    let (_rt_a, cpu_a) = cpu1()?;
    let (rt_b, second, pair) = pocl_or_cpu1(args)?;
    println!("(a) equal pair: {pair}; coexec_poly {n} items x {iters} steps");
    let pair_devs = [cpu_a.clone(), second.clone()];
    check_poly(&k, &pair_devs, &x[..n / 8], iters)?;
    let policy = Policy::default();
    let model = dir.join("a.json");
    let (t_a, _) = time_split(&pair_devs[..1], policy, &model, reps, poly_run(&k, &x, iters))?;
    let (t_b, _) = time_split(&pair_devs[1..], policy, &model, reps, poly_run(&k, &x, iters))?;
    let ideal = 1.0 / (1.0 / t_a.as_secs_f64() + 1.0 / t_b.as_secs_f64());
    for policy in [Policy::default(), Policy::Static, Policy::Dynamic { chunk: 0 }] {
        let (t, r) = time_split(&pair_devs, policy, &model, reps, poly_run(&k, &x, iters))?;
        let eff = ideal / t.as_secs_f64();
        println!("{r}");
        println!(
            "  {policy}: alone {:.1} ms / {:.1} ms, split {:.1} ms, ideal {:.1} ms, balance efficiency {eff:.3}; target >= 0.93: {}",
            t_a.as_secs_f64() * 1e3,
            t_b.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e3,
            ideal * 1e3,
            verdict(eff >= 0.93)
        );
        bench_line(
            &format!("coexec_equal_{}_efficiency", policy.name()),
            eff,
            "ratio",
            None,
        );
    }

    // (b) one device 4x slower.
    let (_rt_c, cpu_c) = cpu1()?;
    let slow = inject_faults(&cpu_c, FaultPlan::none().slow_down(4.0));
    let devs_b = [cpu_a.clone(), slow.clone()];
    println!("(b) CPU (1 worker) + CPU (1 worker) slowed 4x by the fault injector");
    check_poly(&k, &devs_b, &x[..n / 8], iters)?;
    let model = dir.join("b.json");
    let (t_fast, _) = time_split(&devs_b[..1], policy, &model, reps, poly_run(&k, &x, iters))?;
    let (t_slow, _) = time_split(&devs_b[1..], policy, &model, reps, poly_run(&k, &x, iters))?;
    let best = t_fast.min(t_slow).as_secs_f64();
    let ideal = 1.0 / (1.0 / t_fast.as_secs_f64() + 1.0 / t_slow.as_secs_f64());
    for policy in [Policy::default(), Policy::Static, Policy::Dynamic { chunk: 0 }] {
        let (t, r) = time_split(&devs_b, policy, &model, reps, poly_run(&k, &x, iters))?;
        let ratio = best / t.as_secs_f64();
        println!("{r}");
        println!(
            "  {policy}: fast alone {:.1} ms, slow alone {:.1} ms, split {:.1} ms (ideal {:.1} ms); speed vs best alone {ratio:.3}; target >= 0.97: {}",
            t_fast.as_secs_f64() * 1e3,
            t_slow.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e3,
            ideal * 1e3,
            verdict(ratio >= 0.97)
        );
        bench_line(
            &format!("coexec_4x_slower_{}_vs_best", policy.name()),
            1.0 / t.as_secs_f64(),
            "1/s",
            Some(1.0 / best),
        );
    }

    // (c) split vector add: transfers dominate.
    let nv = if args.quick { 1 << 21 } else { 1 << 24 };
    let full = Runtime::builder().backends(&[BackendKind::Cpu]).build()?;
    let mut devs_c = vec![full.device("cpu")?];
    devs_c.extend(
        rt_b.devices()
            .iter()
            .filter(|d| d.backend() == BackendKind::OpenCl)
            .cloned(),
    );
    if devs_c.len() == 1 {
        devs_c.push(cpu_c.clone());
        println!("(c) vector add {nv} f32: CPU (all threads) + CPU (1 worker) (no OpenCL device)");
    } else {
        println!("(c) vector add {nv} f32: CPU (all threads) + every OpenCL device");
    }
    let va = kernels::vector_add()?;
    let a: Vec<f32> = (0..nv).map(|i| (i % 1000) as f32 * 0.5).collect();
    let b: Vec<f32> = (0..nv).map(|i| (i % 777) as f32 * 0.25).collect();
    let mut c = vec![f32::NAN; nv];
    let model = dir.join("c.json");
    let mut va_run = |s: &mut Scheduler| {
        s.run(
            &va,
            nv,
            &mut [HostArg::input(&a), HostArg::input(&b), HostArg::output(&mut c)],
        )
    };
    let mut alone = Vec::new();
    for d in &devs_c {
        let (t, _) = time_split(std::slice::from_ref(d), policy, &model, reps, &mut va_run)?;
        alone.push((d.label().to_string(), t));
    }
    let (t, r) = time_split(&devs_c, policy, &model, reps, &mut va_run)?;
    println!("{r}");
    let best = alone.iter().map(|x| x.1).min().unwrap_or(t);
    for (l, ta) in &alone {
        println!("  {l} alone: {:.2} ms", ta.as_secs_f64() * 1e3);
    }
    let decided = if r.excluded.is_empty() {
        r.devices
            .iter()
            .map(|d| format!("{} {:.1}%", d.device, 100.0 * d.items as f64 / nv as f64))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        r.excluded
            .iter()
            .map(|e| format!("{} excluded: {}", e.device, e.reason))
            .collect::<Vec<_>>()
            .join("; ")
    };
    println!(
        "  the model decided: {decided}; split {:.2} ms vs best alone {:.2} ms",
        t.as_secs_f64() * 1e3,
        best.as_secs_f64() * 1e3
    );
    bench_line(
        "coexec_vector_add_vs_best",
        1.0 / t.as_secs_f64(),
        "1/s",
        Some(1.0 / best.as_secs_f64()),
    );
    // The same split with host-CPU devices allowed to share cores (the default
    // leaves the second one out when their threads exceed the cores).
    let mut s = Scheduler::new(&devs_c)?
        .with_policy(policy)
        .model_file(&model)
        .allow_shared_cores(true);
    va_run(&mut s)?;
    let mut ts = Vec::new();
    let mut last = None;
    for _ in 0..reps.max(1) {
        let r = va_run(&mut s)?;
        ts.push(r.wall.as_secs_f64());
        last = Some(r);
    }
    let t_shared = median(ts);
    if let Some(r) = last {
        println!("{r}");
    }
    println!(
        "  with shared cores allowed: split {:.2} ms vs best alone {:.2} ms",
        t_shared * 1e3,
        best.as_secs_f64() * 1e3
    );
    bench_line(
        "coexec_vector_add_shared_cores_vs_best",
        1.0 / t_shared,
        "1/s",
        Some(1.0 / best.as_secs_f64()),
    );
    let ok = c.iter().enumerate().step_by(1013).all(|(i, v)| *v == a[i] + b[i]);
    if !ok {
        return Err("split vector add result is wrong".into());
    }
    Ok(())
}
