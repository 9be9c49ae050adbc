//! Suite `vector_add`: the CPU backend against plain Rust, in the same run.
//!
//! * CPU vector add of 64M f32 (kernel only, data resident) against a plain
//!   2-thread Rust loop over the same slices: GB/s counted as 12 bytes per item
//!   (two reads, one write). Target ratio ≥ 0.95.
//! * Empty-kernel launch round trip on the CPU backend (launch + completion).
//!   Target ≤ 5 µs median.

use std::time::Instant;

use offload::{Arg, LaunchConfig, Runtime, kernels};

use crate::common::{bench_line, median, median_time, verdict};

pub fn run(args: &crate::Args) -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = if args.quick { 1 << 22 } else { 64 << 20 };
    let rt = Runtime::builder().backends(&[offload::BackendKind::Cpu]).build()?;
    let dev = rt.device("cpu")?;
    let threads = dev.info().compute_units as usize;
    let k = kernels::vector_add()?;
    let a: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5).collect();
    let b: Vec<f32> = (0..n).map(|i| (i % 777) as f32 * 0.25).collect();
    let da = dev.upload(&a)?;
    let db = dev.upload(&b)?;
    let mut dc = dev.alloc::<f32>(n)?;
    let cfg = LaunchConfig::for_items(n, dev.info());
    let bytes = 12.0 * n as f64;

    let t_lib = median_time(args.reps, || {
        dev.launch(
            &k,
            &cfg,
            &[
                Arg::input(&da),
                Arg::input(&db),
                Arg::output(&mut dc),
                0u32.into(),
                (n as u32).into(),
            ],
        )
    })?;
    // Reference: plain Rust, the same number of threads, the same memory (host vectors).
    let mut c = vec![0f32; n];
    let t_ref = median_time(args.reps, || -> Result<(), ()> {
        let per = n.div_ceil(threads);
        std::thread::scope(|s| {
            for ((c, a), b) in c.chunks_mut(per).zip(a.chunks(per)).zip(b.chunks(per)) {
                s.spawn(move || {
                    for ((c, a), b) in c.iter_mut().zip(a).zip(b) {
                        *c = a + b;
                    }
                });
            }
        });
        Ok(())
    })
    .map_err(|_| "reference failed")?;
    let check = dc.to_vec()?;
    if check != c {
        return Err("CPU backend vector add differs from the reference loop".into());
    }
    let gbs_lib = bytes / t_lib.as_secs_f64() / 1e9;
    let gbs_ref = bytes / t_ref.as_secs_f64() / 1e9;
    println!(
        "vector add {n} f32, {threads} threads: offload {:.2} ms ({gbs_lib:.2} GB/s), plain Rust {:.2} ms ({gbs_ref:.2} GB/s); target ratio >= 0.95: {}",
        t_lib.as_secs_f64() * 1e3,
        t_ref.as_secs_f64() * 1e3,
        verdict(gbs_lib / gbs_ref >= 0.95)
    );
    bench_line("cpu_vector_add_64m_gbps", gbs_lib, "GB/s", Some(gbs_ref));

    // Empty-kernel launch round trip.
    let noop = kernels::noop()?;
    let one = LaunchConfig::new(1, 1);
    let iters = if args.quick { 2_000 } else { 20_000 };
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let s = Instant::now();
        dev.launch(&noop, &one, &[0u32.into(), 1u32.into()])?;
        samples.push(s.elapsed().as_secs_f64() * 1e6);
    }
    let med = median(samples);
    println!(
        "empty-kernel launch round trip on the CPU backend: median {med:.3} us over {iters}; target <= 5 us: {}",
        verdict(med <= 5.0)
    );
    bench_line("cpu_empty_launch_us", med, "us", None);
    Ok(())
}
