//! `authoring`: CPU work-group kernels ([`offload::cpu_group`]) against the same
//! kernels' portable sources on PoCL, both on one thread, same launch.
//!
//! Kernels: the tiled SGEMM (`gemm_tiled`, 16 × 16 local-memory tiles), the
//! local-memory tree reduction (`reduce_tree`) and the one-pass atomic reduction
//! (`reduce_atomic`). The CPU device has one worker; PoCL is limited to one thread
//! (`POCL_MAX_PTHREAD_COUNT=1`: the suite re-runs itself with it set). Every pair
//! uses one `LaunchConfig`. Reference: the PoCL run in the same process; target
//! ratio (CPU / PoCL speed) ≥ 0.8.

use offload::{Arg, Device, Kernel, LaunchConfig, kernels};

use crate::common::{bench_line, cpu1, median_time, pocl_or_cpu1, rerun_with_one_pocl_thread, verdict};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Target: CPU work-group kernel speed / the same kernel on PoCL, 1 thread each.
const TARGET: f64 = 0.8;

pub fn run(args: &crate::Args) -> Res<()> {
    if rerun_with_one_pocl_thread("authoring", args)? {
        return Ok(());
    }
    let (_rt_cpu, cpu) = cpu1()?;
    let (_rt_ocl, ocl, pair) = pocl_or_cpu1(args)?;
    println!("authoring: {pair}");
    println!(
        "{:<28} {:>14} {:>14} {:>8}  target ≥ {TARGET}",
        "kernel", "CPU groups", "PoCL", "ratio"
    );
    gemm(args, &cpu, &ocl)?;
    reduce(args, &cpu, &ocl, false)?;
    reduce(args, &cpu, &ocl, true)?;
    Ok(())
}

fn row(name: &str, unit: &str, cpu: f64, ocl: f64) {
    let ratio = cpu / ocl;
    println!(
        "{name:<28} {cpu:>10.2} {unit:<3} {ocl:>10.2} {unit:<3} {ratio:>8.3}  {}",
        verdict(ratio >= TARGET)
    );
    bench_line(&format!("authoring_{name}"), cpu, unit, Some(ocl));
}

/// Tiled SGEMM n³ (512; 256 with `--quick`), grid of tiles, 16 × 16 blocks.
fn gemm(args: &crate::Args, cpu: &Device, ocl: &Device) -> Res<()> {
    let n = if args.quick { 256usize } else { 512 };
    let a: Vec<f32> = (0..n * n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0).collect();
    let kernel = kernels::gemm_tiled(n, n)?;
    let tiles = n.div_ceil(16) as u32;
    let cfg = LaunchConfig::new((tiles, tiles), (16u32, 16u32));
    let flops = 2.0 * (n as f64).powi(3);
    let mut outs = Vec::new();
    let mut rate = |dev: &Device| -> Res<f64> {
        let da = dev.upload(&a)?;
        let db = dev.upload(&b)?;
        let mut dc = dev.alloc::<f32>(n * n)?;
        let t = median_time(args.reps, || {
            dev.launch(
                &kernel,
                &cfg,
                &[
                    Arg::input(&da),
                    Arg::input(&db),
                    Arg::output(&mut dc),
                    (n as u32).into(),
                    (n as u32).into(),
                    0u32.into(),
                    (n as u32).into(),
                ],
            )
        })?;
        outs.push(dc.to_vec()?);
        Ok(flops / t.as_secs_f64() / 1e9)
    };
    let c = rate(cpu)?;
    let o = rate(ocl)?;
    check_same("gemm_tiled", &outs[0], &outs[1], 1e-4)?;
    row(&format!("gemm_tiled_{n}"), "GF/s", c, o);
    Ok(())
}

/// A reduction of 16M f32 (1M with `--quick`), 256 groups of 256 items.
fn reduce(args: &crate::Args, cpu: &Device, ocl: &Device, atomic: bool) -> Res<()> {
    let n = if args.quick { 1usize << 20 } else { 1 << 24 };
    let x: Vec<f32> = (0..n).map(|i| (i % 17) as f32 / 16.0).collect();
    let (groups, block) = (256u32, 256u32);
    let cfg = LaunchConfig::new(groups, block);
    let kernel: Kernel = if atomic {
        kernels::reduce_atomic()?
    } else {
        kernels::reduce_tree()?
    };
    let mut sums = Vec::new();
    let mut rate = |dev: &Device| -> Res<f64> {
        let dx = dev.upload(&x)?;
        let outs = if atomic { 1 } else { groups as usize };
        let mut out = dev.alloc::<f32>(outs)?;
        let t = median_time(args.reps, || {
            let extra: [Arg<'_>; 2] = if atomic {
                [(n as u32).into(), 1u32.into()]
            } else {
                [Arg::local(block as usize), (n as u32).into()]
            };
            let mut all = vec![Arg::input(&dx), Arg::output(&mut out)];
            all.extend(extra);
            dev.launch(&kernel, &cfg, &all)
        })?;
        let v = out.to_vec()?;
        sums.push(v.iter().map(|s| *s as f64).sum::<f64>());
        Ok((n * 4) as f64 / t.as_secs_f64() / 1e9)
    };
    let c = rate(cpu)?;
    let o = rate(ocl)?;
    let name = if atomic { "reduce_atomic" } else { "reduce_tree" };
    if !atomic {
        // Both devices add in the same order per work-item: the partial sums agree.
        let rel = ((sums[0] - sums[1]) / sums[1]).abs();
        if rel > 1e-6 {
            return Err(format!("{name}: CPU sum {} vs PoCL {}", sums[0], sums[1]).into());
        }
    }
    row(&format!("{name}_{}M", n >> 20), "GB/s", c, o);
    Ok(())
}

/// The CPU and PoCL results agree within `tol` (relative, in the 2-norm).
fn check_same(what: &str, a: &[f32], b: &[f32], tol: f64) -> Res<()> {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    let e = (num / den.max(f64::MIN_POSITIVE)).sqrt();
    if a.len() != b.len() || e.is_nan() || e > tol {
        return Err(format!("{what}: CPU and PoCL results differ (relative error {e:e})").into());
    }
    Ok(())
}
