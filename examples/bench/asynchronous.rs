//! Suite `async`: what queues and events cost and save.
//!
//! * CPU device: enqueue-to-completion of an empty kernel on a `Queue` (launch,
//!   then `Event::wait`), median of many; the blocking `Device::launch` beside it.
//!   Targets: ≤ 1 µs and ≤ 0.5 µs.
//! * Split vector add over CPU + the first OpenCL device (when present): the CPU
//!   device's share moves no bytes (it computes on the host slices in place);
//!   the report's h2d/d2h bytes for `cpu:0` must be 0.
//!
//! * FDTD-2D on the first OpenCL device: three kernels per time step, 300 steps,
//!   one wait per step, through a `Queue` and through raw opencl3 with the same
//!   source and waits. Target: ≤ 1.05× raw.
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

    #[cfg(feature = "opencl")]
    match rt.device("opencl") {
        Ok(ocl) => stencil::run(&ocl, args.quick)?,
        Err(e) => println!("FDTD-2D stencil: skipped: {e}"),
    }
    Ok(())
}

/// FDTD-2D (three kernels per time step), the same source run through a `Queue`
/// and through raw opencl3, each waiting once per step.
#[cfg(feature = "opencl")]
pub mod stencil {
    use std::time::Instant;

    use offload::{Access, Arg, Device, Kernel, LaunchConfig, Param, Split};
    use opencl3::command_queue::{CL_QUEUE_PROFILING_ENABLE, CommandQueue};
    use opencl3::context::Context;
    use opencl3::device::{CL_DEVICE_TYPE_ALL, Device as ClDevice};
    use opencl3::kernel::Kernel as ClKernel;
    use opencl3::memory::{Buffer as ClBuffer, CL_MEM_READ_WRITE};
    use opencl3::platform::get_platforms;
    use opencl3::program::Program;
    use opencl3::types::{CL_BLOCKING, cl_float, cl_uint};

    use crate::common::{bench_line, verdict};

    type BoxErr = Box<dyn std::error::Error>;

    /// The three kernels (as in PolyBench's fdtd-2d): `ey`, `ex` from `hz`, then `hz`.
    pub const SRC: &str = r#"
__kernel void fdtd_ey(__global float* ey, __global const float* hz, const uint nx, const uint ny, const float t) {
    uint j = get_global_id(0), i = get_global_id(1);
    if (i < nx && j < ny) {
        if (i == 0) ey[j] = t;
        else ey[i * ny + j] -= 0.5f * (hz[i * ny + j] - hz[(i - 1) * ny + j]);
    }
}
__kernel void fdtd_ex(__global float* ex, __global const float* hz, const uint nx, const uint ny) {
    uint j = get_global_id(0), i = get_global_id(1);
    if (i < nx && j < ny && j > 0) ex[i * ny + j] -= 0.5f * (hz[i * ny + j] - hz[i * ny + j - 1]);
}
__kernel void fdtd_hz(__global float* hz, __global const float* ex, __global const float* ey, const uint nx, const uint ny) {
    uint j = get_global_id(0), i = get_global_id(1);
    if (i + 1 < nx && j + 1 < ny)
        hz[i * ny + j] -= 0.7f * (ex[i * ny + j + 1] - ex[i * ny + j] + ey[(i + 1) * ny + j] - ey[i * ny + j]);
}
"#;

    fn kernel(entry: &str, bufs: &[(&str, Access)], scalars: &[&str], float_t: bool) -> offload::Result<Kernel> {
        let each = Split::Elementwise { per_item: 1 };
        let mut b = Kernel::builder(entry);
        for (name, access) in bufs {
            b = b.param(Param::buffer::<f32>(name, *access, each));
        }
        for s in scalars {
            b = b.param(Param::scalar::<u32>(s));
        }
        if float_t {
            b = b.param(Param::scalar::<f32>("t"));
        }
        for (name, _) in bufs {
            b = b.extent_from(name, &["nx", "ny"], 1);
        }
        // SAFETY: SRC declares these signatures and touches element i·ny + j of
        // each buffer only for i < nx, j < ny: inside the declared nx × ny extents.
        unsafe { b.opencl(SRC, entry) }.build()
    }

    /// Initial fields.
    fn init(nx: usize, ny: usize) -> [Vec<f32>; 3] {
        let f = |a: usize, b: usize| -> Vec<f32> {
            (0..nx * ny)
                .map(|k| ((k / ny) * (k % ny + a)) as f32 / (b * nx) as f32)
                .collect()
        };
        [f(1, 1), f(2, 2), f(3, 3)]
    }

    pub fn run(dev: &Device, quick: bool) -> Result<(), BoxErr> {
        let (nx, ny, steps) = if quick {
            (256usize, 256usize, 50usize)
        } else {
            (512, 512, 300)
        };
        let ey_k = kernel(
            "fdtd_ey",
            &[("ey", Access::ReadWrite), ("hz", Access::Read)],
            &["nx", "ny"],
            true,
        )?;
        let ex_k = kernel(
            "fdtd_ex",
            &[("ex", Access::ReadWrite), ("hz", Access::Read)],
            &["nx", "ny"],
            false,
        )?;
        let hz_k = kernel(
            "fdtd_hz",
            &[("hz", Access::ReadWrite), ("ex", Access::Read), ("ey", Access::Read)],
            &["nx", "ny"],
            false,
        )?;
        for k in [&ey_k, &ex_k, &hz_k] {
            dev.build(k)?;
        }
        let [ex0, ey0, hz0] = init(nx, ny);
        let cfg = LaunchConfig::new((ny.div_ceil(16) as u32, nx.div_ceil(16) as u32), (16, 16));
        let (gx, gy) = (cfg.grid.x as usize * 16, cfg.grid.y as usize * 16);
        let (nxu, nyu) = (nx as u32, ny as u32);

        // Through the library: three launches per step on one queue, one finish per step.
        let q = dev.queue()?;
        let mut ex = dev.upload(&ex0)?;
        let mut ey = dev.upload(&ey0)?;
        let mut hz = dev.upload(&hz0)?;
        let mut lib_run = || -> Result<f64, BoxErr> {
            ex.write(&ex0)?;
            ey.write(&ey0)?;
            hz.write(&hz0)?;
            let t0 = Instant::now();
            for t in 0..steps {
                q.launch(
                    &ey_k,
                    &cfg,
                    &[
                        Arg::output(&mut ey),
                        Arg::input(&hz),
                        nxu.into(),
                        nyu.into(),
                        (t as f32).into(),
                    ],
                )?;
                q.launch(
                    &ex_k,
                    &cfg,
                    &[Arg::output(&mut ex), Arg::input(&hz), nxu.into(), nyu.into()],
                )?;
                q.launch(
                    &hz_k,
                    &cfg,
                    &[
                        Arg::output(&mut hz),
                        Arg::input(&ex),
                        Arg::input(&ey),
                        nxu.into(),
                        nyu.into(),
                    ],
                )?;
                q.finish()?;
            }
            Ok(t0.elapsed().as_secs_f64())
        };

        // Raw opencl3: the same source, one in-order queue, clFinish per step.
        let mut ids = Vec::new();
        for p in get_platforms()? {
            ids.extend(p.get_devices(CL_DEVICE_TYPE_ALL).unwrap_or_default());
        }
        let id = *ids.get(dev.info().index).ok_or("raw opencl3: device index not found")?;
        let context = Context::from_device(&ClDevice::new(id))?;
        // SAFETY: the device belongs to the context just created from it.
        #[allow(deprecated)]
        let rq = unsafe { CommandQueue::create(&context, id, CL_QUEUE_PROFILING_ENABLE)? };
        let program = Program::create_and_build_from_source(&context, SRC, "")?;
        let (rey_k, rex_k, rhz_k) = (
            ClKernel::create(&program, "fdtd_ey")?,
            ClKernel::create(&program, "fdtd_ex")?,
            ClKernel::create(&program, "fdtd_hz")?,
        );
        // SAFETY (raw calls below): buffers of nx·ny floats in the raw context; host
        // slices of that length outlive the blocking writes and reads; arguments
        // match the kernels' parameters.
        let mk = || unsafe { ClBuffer::<cl_float>::create(&context, CL_MEM_READ_WRITE, nx * ny, std::ptr::null_mut()) };
        let (mut rex, mut rey, mut rhz) = (mk()?, mk()?, mk()?);
        let global = [gx, gy];
        let local = [16usize, 16];
        let mut raw_run = || -> Result<f64, BoxErr> {
            // SAFETY: see above.
            unsafe {
                rq.enqueue_write_buffer(&mut rex, CL_BLOCKING, 0, &ex0, &[])?;
                rq.enqueue_write_buffer(&mut rey, CL_BLOCKING, 0, &ey0, &[])?;
                rq.enqueue_write_buffer(&mut rhz, CL_BLOCKING, 0, &hz0, &[])?;
                rey_k.set_arg(0, &rey)?;
                rey_k.set_arg(1, &rhz)?;
                rey_k.set_arg(2, &(nx as cl_uint))?;
                rey_k.set_arg(3, &(ny as cl_uint))?;
                rex_k.set_arg(0, &rex)?;
                rex_k.set_arg(1, &rhz)?;
                rex_k.set_arg(2, &(nx as cl_uint))?;
                rex_k.set_arg(3, &(ny as cl_uint))?;
                rhz_k.set_arg(0, &rhz)?;
                rhz_k.set_arg(1, &rex)?;
                rhz_k.set_arg(2, &rey)?;
                rhz_k.set_arg(3, &(nx as cl_uint))?;
                rhz_k.set_arg(4, &(ny as cl_uint))?;
            }
            let t0 = Instant::now();
            for t in 0..steps {
                // SAFETY: see above; the global size covers nx × ny, local 16 × 16.
                unsafe {
                    rey_k.set_arg(4, &(t as cl_float))?;
                    for k in [&rey_k, &rex_k, &rhz_k] {
                        rq.enqueue_nd_range_kernel(k.get(), 2, std::ptr::null(), global.as_ptr(), local.as_ptr(), &[])?;
                    }
                }
                rq.finish()?;
            }
            Ok(t0.elapsed().as_secs_f64())
        };

        let reps = if quick { 2 } else { 5 };
        let (mut lib, mut raw) = (f64::MAX, f64::MAX);
        for _ in 0..reps {
            lib = lib.min(lib_run()?);
            raw = raw.min(raw_run()?);
        }
        let lib_hz = hz.to_vec()?;
        let mut raw_hz = vec![0.0f32; nx * ny];
        // SAFETY: a blocking read of nx·ny floats into a slice of that length.
        unsafe { rq.enqueue_read_buffer(&rhz, CL_BLOCKING, 0, &mut raw_hz, &[])? };
        if lib_hz != raw_hz {
            return Err("FDTD-2D: the library's fields differ from raw opencl3's".into());
        }
        println!(
            "FDTD-2D {nx}x{ny}, {steps} steps of 3 kernels, one wait per step on {}: offload {:.2} ms, raw opencl3 {:.2} ms \
             (best of {reps}; identical fields): ratio {:.3}; target <= 1.05: {}",
            dev.label(),
            lib * 1e3,
            raw * 1e3,
            lib / raw,
            verdict(lib / raw <= 1.05)
        );
        bench_line("async_opencl_fdtd2d_ms", lib * 1e3, "ms", Some(raw * 1e3));
        Ok(())
    }
}
