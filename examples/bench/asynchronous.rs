//! Suite `async`: what queues and events cost and save.
//!
//! * CPU device: enqueue-to-completion of an empty kernel on a `Queue` (launch,
//!   then `Event::wait`), median of many; the blocking `Device::launch` beside it.
//!   Targets: ≤ 1 µs and ≤ 0.5 µs.
//! * Split vector add over CPU + the first OpenCL device (when present): the CPU
//!   device's share moves no bytes (it computes on the host slices in place);
//!   the report's h2d/d2h bytes for `cpu:0` must be 0.
//!
//! The OpenCL batched-launch measurement (1000 dependent kernels, one wait,
//! against raw opencl3 and against blocking launches) is in the `opencl` suite.

use std::time::Instant;

use offload::schedule::{HostArg, Scheduler};
use offload::{LaunchConfig, Runtime, kernels};

use crate::Args;
use crate::common::{bench_line, median, verdict};

pub fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::new()?;
    let cpu = rt.device("cpu")?;
    rt.profiler().set_enabled(false);

    let noop = kernels::noop()?;
    let one = LaunchConfig::new(1, 1);
    let q = cpu.queue()?;
    let iters = if args.quick { 2_000 } else { 20_000 };
    for _ in 0..100 {
        q.launch(&noop, &one, &[0u32.into(), 1u32.into()])?.wait()?;
    }
    let (mut queued, mut blocking) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for _ in 0..iters {
        let s = Instant::now();
        q.launch(&noop, &one, &[0u32.into(), 1u32.into()])?.wait()?;
        queued.push(s.elapsed().as_secs_f64() * 1e6);
        let s = Instant::now();
        cpu.launch(&noop, &one, &[0u32.into(), 1u32.into()])?;
        blocking.push(s.elapsed().as_secs_f64() * 1e6);
    }
    let (mq, mb) = (median(queued), median(blocking));
    println!(
        "CPU empty kernel: queue launch + event wait median {mq:.3} us (target <= 1 us: {}); \
         blocking launch {mb:.3} us (target <= 0.5 us: {}), medians of {iters}",
        verdict(mq <= 1.0),
        verdict(mb <= 0.5)
    );
    bench_line("async_cpu_enqueue_to_completion_us", mq, "us", None);
    bench_line("async_cpu_blocking_launch_us", mb, "us", None);
    rt.profiler().set_enabled(true);

    // A split vector add: the CPU share is computed on the host slices in place.
    let devices = match rt.select("opencl") {
        Ok(ocl) => vec![cpu.clone(), ocl[0].clone()],
        Err(_) => {
            println!("no OpenCL device: the split runs on the CPU device alone");
            vec![cpu.clone()]
        }
    };
    let n = if args.quick { 1 << 20 } else { 1 << 24 };
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| (2 * i) as f32).collect();
    let mut c = vec![0.0f32; n];
    let mut s = Scheduler::new(&devices)?.allow_shared_cores(true).in_memory_model();
    let k = kernels::vector_add()?;
    rt.profiler().take();
    let report = s.run(
        &k,
        n,
        &mut [HostArg::input(&a), HostArg::input(&b), HostArg::output(&mut c)],
    )?;
    if c.iter().enumerate().any(|(i, v)| *v != (3 * i) as f32) {
        return Err("split vector add gave a wrong result".into());
    }
    println!("{report}");
    let cpu_share = report
        .devices
        .iter()
        .find(|d| d.device == cpu.label())
        .ok_or("no CPU row in the split report")?;
    let moved = cpu_share.h2d_bytes + cpu_share.d2h_bytes;
    println!(
        "split vector add of {n} f32: the CPU device computed {} items and moved {moved} bytes (target 0: {})",
        cpu_share.items,
        verdict(moved == 0)
    );
    bench_line("async_split_cpu_bytes_moved", moved as f64, "bytes", None);
    Ok(())
}
