//! Suite `opencl`: the OpenCL backend against the same work written with raw
//! opencl3 calls, in the same run, on the same device (`opencl:0`).
//!
//! 1. Vector add of 16M f32 including transfers (write a, write b, launch, read c)
//!    through the library versus raw opencl3 calls (blocking writes and reads, one
//!    enqueue + wait). Target: library time ≤ 1.02× raw.
//! 2. Added time per launch of the empty kernel: the library's launch round trip
//!    minus raw `clEnqueueNDRangeKernel` + wait on a profiling queue (arguments set
//!    once), samples interleaved, median of the paired differences. Target ≤ 2 µs.
//! 3. Asynchronous chains: 1000 dependent small kernels (`x[i] += 1` on 1024
//!    floats) enqueued on a `Queue` with one wait at the end, versus raw opencl3
//!    doing the same (one in-order queue, 1000 `clEnqueueNDRangeKernel`, one
//!    `clFinish`) and versus 1000 blocking `Device::launch` calls. Targets: ≤ 1.05×
//!    raw, ≥ 10× faster than blocking.
//! 4. Program init: building a kernel in a fresh runtime with an empty binary
//!    cache (cold: a source comment with a fresh nonce makes the source new to the
//!    driver too) versus a warm cache entry. Entries written here are removed.

#[cfg(not(feature = "opencl"))]
pub fn run(args: &crate::Args) -> Result<(), Box<dyn std::error::Error>> {
    println!("suite opencl: skipped: built without the `opencl` feature");
    if args.strict {
        return Err("suite opencl needs the `opencl` feature".into());
    }
    Ok(())
}

#[cfg(feature = "opencl")]
pub use imp::run;

#[cfg(feature = "opencl")]
mod imp {
    use std::time::{Duration, Instant};

    use offload::{Arg, BackendKind, Device, Kernel, LaunchConfig, Runtime, kernels};
    use opencl3::command_queue::{CL_QUEUE_PROFILING_ENABLE, CommandQueue};
    use opencl3::context::Context;
    use opencl3::device::{CL_DEVICE_TYPE_ALL, Device as ClDevice};
    use opencl3::kernel::Kernel as ClKernel;
    use opencl3::memory::{Buffer as ClBuffer, CL_MEM_READ_WRITE};
    use opencl3::platform::get_platforms;
    use opencl3::program::Program;
    use opencl3::types::{CL_BLOCKING, cl_float, cl_uint};

    use crate::common::{bench_line, median, verdict};

    type BoxErr = Box<dyn std::error::Error>;

    pub fn run(args: &crate::Args) -> Result<(), BoxErr> {
        let rt = Runtime::builder().backends(&[BackendKind::OpenCl]).build()?;
        let dev = match rt.device("opencl:0") {
            Ok(d) => d,
            Err(e) => {
                println!("suite opencl: skipped: {e}");
                if args.strict {
                    return Err(e.into());
                }
                return Ok(());
            }
        };
        println!(
            "device {}: {} ({}), {} compute units",
            dev.label(),
            dev.info().name,
            dev.info().driver_version,
            dev.info().compute_units
        );
        let raw = Raw::new(&dev)?;
        vector_add(args, &dev, &raw)?;
        launch_overhead(args, &dev, &raw)?;
        async_chain(args, &dev, &raw)?;
        drop(raw);
        drop(dev);
        drop(rt);
        init_cold_warm(args)?;
        Ok(())
    }

    /// The same device opened directly through opencl3 (the reference).
    struct Raw {
        context: Context,
        queue: CommandQueue,
        vector_add: ClKernel,
        noop: ClKernel,
        _programs: Vec<Program>,
    }

    impl Raw {
        fn new(dev: &Device) -> Result<Raw, BoxErr> {
            let mut ids = Vec::new();
            for p in get_platforms()? {
                ids.extend(p.get_devices(CL_DEVICE_TYPE_ALL).unwrap_or_default());
            }
            let id = *ids.get(dev.info().index).ok_or("raw opencl3: device index not found")?;
            let device = ClDevice::new(id);
            if device.name()?.trim() != dev.info().name {
                return Err("raw opencl3 enumeration found a different device at this index".into());
            }
            let context = Context::from_device(&device)?;
            // SAFETY: the device belongs to the context just created from it.
            #[allow(deprecated)]
            let queue = unsafe { CommandQueue::create(&context, id, CL_QUEUE_PROFILING_ENABLE)? };
            let va_src = kernels::sources("vector_add")?.opencl;
            let noop_src = kernels::sources("noop")?.opencl;
            let pva = Program::create_and_build_from_source(&context, va_src, "")?;
            let pnoop = Program::create_and_build_from_source(&context, noop_src, "")?;
            let vector_add = ClKernel::create(&pva, "vector_add")?;
            let noop = ClKernel::create(&pnoop, "noop")?;
            Ok(Raw {
                context,
                queue,
                vector_add,
                noop,
                _programs: vec![pva, pnoop],
            })
        }
    }

    fn vector_add(args: &crate::Args, dev: &Device, raw: &Raw) -> Result<(), BoxErr> {
        let n: usize = if args.quick { 1 << 20 } else { 16 << 20 };
        let a: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5 + 1.0).collect();
        let b: Vec<f32> = (0..n).map(|i| (i % 777) as f32 * 0.25 + 2.0).collect();
        let expect: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let k = kernels::vector_add()?;
        dev.build(&k)?;
        let cfg = LaunchConfig::for_items(n, dev.info());
        let mut da = dev.alloc::<f32>(n)?;
        let mut db = dev.alloc::<f32>(n)?;
        let mut dc = dev.alloc::<f32>(n)?;
        let mut c_lib = vec![f32::NAN; n];
        let mut lib = || -> Result<(), BoxErr> {
            da.write(&a)?;
            db.write(&b)?;
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
            )?;
            dc.read(&mut c_lib)?;
            Ok(())
        };

        // SAFETY (all raw calls below): buffers of n floats in the raw context; host
        // slices of n floats that outlive the blocking calls; arguments match the
        // kernel's parameters (three buffers, two uints).
        let mut ra = unsafe { ClBuffer::<cl_float>::create(&raw.context, CL_MEM_READ_WRITE, n, std::ptr::null_mut())? };
        let mut rb = unsafe { ClBuffer::<cl_float>::create(&raw.context, CL_MEM_READ_WRITE, n, std::ptr::null_mut())? };
        let rc = unsafe { ClBuffer::<cl_float>::create(&raw.context, CL_MEM_READ_WRITE, n, std::ptr::null_mut())? };
        let mut c_raw = vec![f32::NAN; n];
        let global = [cfg.grid.x as usize * cfg.block.x as usize];
        let local = [cfg.block.x as usize];
        let mut raw_run = || -> Result<(), BoxErr> {
            // SAFETY: see above (buffers, host slices and arguments as the kernel expects).
            unsafe {
                raw.queue.enqueue_write_buffer(&mut ra, CL_BLOCKING, 0, &a, &[])?;
                raw.queue.enqueue_write_buffer(&mut rb, CL_BLOCKING, 0, &b, &[])?;
                raw.vector_add.set_arg(0, &ra)?;
                raw.vector_add.set_arg(1, &rb)?;
                raw.vector_add.set_arg(2, &rc)?;
                raw.vector_add.set_arg(3, &(0 as cl_uint))?;
                raw.vector_add.set_arg(4, &(n as cl_uint))?;
                let ev = raw.queue.enqueue_nd_range_kernel(
                    raw.vector_add.get(),
                    1,
                    std::ptr::null(),
                    global.as_ptr(),
                    local.as_ptr(),
                    &[],
                )?;
                ev.wait()?;
                raw.queue.enqueue_read_buffer(&rc, CL_BLOCKING, 0, &mut c_raw, &[])?;
            }
            Ok(())
        };

        // Warm up both, then interleave repetitions so drift hits both alike.
        lib()?;
        raw_run()?;
        let (mut t_lib, mut t_raw) = (Vec::new(), Vec::new());
        for _ in 0..args.reps.max(1) {
            let s = Instant::now();
            lib()?;
            t_lib.push(s.elapsed().as_secs_f64());
            let s = Instant::now();
            raw_run()?;
            t_raw.push(s.elapsed().as_secs_f64());
        }
        if c_lib != expect || c_raw != expect {
            return Err("vector add result differs from the host reference".into());
        }
        let (ml, mr) = (median(t_lib), median(t_raw));
        let ratio = ml / mr;
        println!(
            "vector add {n} f32 with transfers: offload {:.2} ms, raw opencl3 {:.2} ms, ratio {ratio:.3}; \
             target <= 1.02: {}",
            ml * 1e3,
            mr * 1e3,
            verdict(ratio <= 1.02)
        );
        bench_line(
            "opencl_vector_add_16m_with_transfers_ms",
            ml * 1e3,
            "ms",
            Some(mr * 1e3),
        );
        Ok(())
    }

    fn launch_overhead(args: &crate::Args, dev: &Device, raw: &Raw) -> Result<(), BoxErr> {
        let k = kernels::noop()?;
        dev.build(&k)?;
        let one = LaunchConfig::new(1, 1);
        // SAFETY: noop takes two uints.
        unsafe {
            raw.noop.set_arg(0, &(0 as cl_uint))?;
            raw.noop.set_arg(1, &(1 as cl_uint))?;
        }
        let g = [1usize];
        let raw_once = || -> Result<(), BoxErr> {
            // SAFETY: arguments were set above; one work-item in one group.
            let ev = unsafe {
                raw.queue
                    .enqueue_nd_range_kernel(raw.noop.get(), 1, std::ptr::null(), g.as_ptr(), g.as_ptr(), &[])?
            };
            ev.wait()?;
            Ok(())
        };
        let iters = if args.quick { 500 } else { 5_000 };
        for _ in 0..50 {
            dev.launch(&k, &one, &[0u32.into(), 1u32.into()])?;
            raw_once()?;
        }
        let (mut lib, mut rawv) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
        for _ in 0..iters {
            let s = Instant::now();
            dev.launch(&k, &one, &[0u32.into(), 1u32.into()])?;
            lib.push(s.elapsed().as_secs_f64() * 1e6);
            let s = Instant::now();
            raw_once()?;
            rawv.push(s.elapsed().as_secs_f64() * 1e6);
        }
        // The same with the runtime's profiler off (no stage record per launch).
        dev.profiler().set_enabled(false);
        let (mut lib_off, mut raw_off) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
        for _ in 0..iters {
            let s = Instant::now();
            dev.launch(&k, &one, &[0u32.into(), 1u32.into()])?;
            lib_off.push(s.elapsed().as_secs_f64() * 1e6);
            let s = Instant::now();
            raw_once()?;
            raw_off.push(s.elapsed().as_secs_f64() * 1e6);
        }
        dev.profiler().set_enabled(true);
        let added_off = paired(&lib_off, &raw_off);
        println!("  with the profiler off: added {added_off:.2} us per launch");
        bench_line("opencl_launch_added_profiler_off_us", added_off, "us", None);
        let added = paired(&lib, &rawv);
        let (ml, mr) = (median(lib), median(rawv));
        println!(
            "empty-kernel launch round trip: offload {ml:.2} us, raw opencl3 {mr:.2} us (medians of {iters}); \
             added {added:.2} us per launch (median of paired differences); target <= 2 us: {}",
            verdict(added <= 2.0)
        );
        bench_line("opencl_launch_added_us", added, "us", None);
        bench_line("opencl_launch_round_trip_us", ml, "us", Some(mr));
        Ok(())
    }

    const INC_SRC: &str = "__kernel void inc(__global float* x, const uint n) {\n  \
                           uint i = get_global_id(0); if (i < n) x[i] += 1.0f;\n}\n";

    fn inc_kernel() -> Result<Kernel, BoxErr> {
        // SAFETY: the source declares this signature and stays inside the checked extent.
        let k = unsafe {
            Kernel::builder("inc")
                .param(offload::Param::buffer::<f32>(
                    "x",
                    offload::Access::ReadWrite,
                    offload::Split::Elementwise { per_item: 1 },
                ))
                .param(offload::Param::scalar::<u32>("n"))
                .extent_from("x", &["n"], 1)
                .opencl(INC_SRC, "inc")
        }
        .build()?;
        Ok(k)
    }

    fn async_chain(args: &crate::Args, dev: &Device, raw: &Raw) -> Result<(), BoxErr> {
        const N: usize = 1024;
        const KERNELS: usize = 1000;
        let k = inc_kernel()?;
        dev.build(&k)?;
        let cfg = LaunchConfig::for_items(N, dev.info());
        let q = dev.queue()?;
        let mut x = dev.upload(&vec![0.0f32; N])?;
        let mut lib = || -> Result<(), BoxErr> {
            let mut last = None;
            for _ in 0..KERNELS {
                last = Some(q.launch(&k, &cfg, &[Arg::output(&mut x), (N as u32).into()])?);
            }
            if let Some(e) = last {
                e.wait()?;
            }
            Ok(())
        };
        let pinc = Program::create_and_build_from_source(&raw.context, INC_SRC, "")?;
        let rinc = ClKernel::create(&pinc, "inc")?;
        // SAFETY: a buffer of N floats in the raw context.
        let mut rx = unsafe { ClBuffer::<cl_float>::create(&raw.context, CL_MEM_READ_WRITE, N, std::ptr::null_mut())? };
        let zeros = vec![0.0f32; N];
        // SAFETY: N floats from a live slice, blocking.
        unsafe { raw.queue.enqueue_write_buffer(&mut rx, CL_BLOCKING, 0, &zeros, &[])? };
        let global = [cfg.grid.x as usize * cfg.block.x as usize];
        let local = [cfg.block.x as usize];
        let raw_run = || -> Result<(), BoxErr> {
            for _ in 0..KERNELS {
                // SAFETY: the kernel takes a buffer and a uint, set on every launch as the
                // library does; the buffer outlives the queue's work (finished below).
                unsafe {
                    rinc.set_arg(0, &rx)?;
                    rinc.set_arg(1, &(N as cl_uint))?;
                    raw.queue.enqueue_nd_range_kernel(
                        rinc.get(),
                        1,
                        std::ptr::null(),
                        global.as_ptr(),
                        local.as_ptr(),
                        &[],
                    )?;
                }
            }
            raw.queue.finish()?;
            Ok(())
        };
        let mut xb = dev.upload(&vec![0.0f32; N])?;
        let mut blocking = || -> Result<(), BoxErr> {
            for _ in 0..KERNELS {
                dev.launch(&k, &cfg, &[Arg::output(&mut xb), (N as u32).into()])?;
            }
            Ok(())
        };
        lib()?;
        raw_run()?;
        blocking()?;
        // Short runs: three times the usual repetitions, interleaved, for a steadier median.
        let reps = args.reps.max(1) * 3;
        let (mut t_lib, mut t_raw, mut t_blk, mut t_quiet) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let profiler = dev.profiler().clone();
        for _ in 0..reps {
            let s = Instant::now();
            lib()?;
            t_lib.push(s.elapsed().as_secs_f64());
            // The same with the profiler off: no device-time queries per command.
            profiler.set_enabled(false);
            let s = Instant::now();
            let quiet = lib();
            t_quiet.push(s.elapsed().as_secs_f64());
            profiler.set_enabled(true);
            quiet?;
            let s = Instant::now();
            raw_run()?;
            t_raw.push(s.elapsed().as_secs_f64());
            let s = Instant::now();
            blocking()?;
            t_blk.push(s.elapsed().as_secs_f64());
        }
        let rounds = (reps + 1) as f32 * KERNELS as f32;
        if x.to_vec()?.iter().any(|v| *v != rounds + reps as f32 * KERNELS as f32)
            || xb.to_vec()?.iter().any(|v| *v != rounds)
        {
            return Err("the kernel chain computed a wrong result".into());
        }
        let mut check = vec![0.0f32; N];
        // SAFETY: N floats into a live slice, blocking.
        unsafe { raw.queue.enqueue_read_buffer(&rx, CL_BLOCKING, 0, &mut check, &[])? };
        if check.iter().any(|v| *v != rounds) {
            return Err("the raw kernel chain computed a wrong result".into());
        }
        let fastest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
        let best_ratio = fastest(&t_lib) / fastest(&t_raw);
        let (ml, mr, mb, mq) = (median(t_lib), median(t_raw), median(t_blk), median(t_quiet));
        let ratio = ml / mr;
        println!(
            "  with the profiler off: offload queue {:.2} ms, ratio {:.3} to raw opencl3",
            mq * 1e3,
            mq / mr
        );
        let speedup = mb / ml;
        println!(
            "{KERNELS} dependent kernels on {N} floats, one wait: offload queue {:.2} ms, raw opencl3 {:.2} ms \
             (ratio {ratio:.3}; target <= 1.05: {}); {KERNELS} blocking launches {:.2} ms (the queue is \
             {speedup:.1}x faster; target >= 10: {}); fastest runs: ratio {best_ratio:.3}",
            ml * 1e3,
            mr * 1e3,
            verdict(ratio <= 1.05),
            mb * 1e3,
            verdict(speedup >= 10.0)
        );
        bench_line("opencl_async_1000_kernels_ms", ml * 1e3, "ms", Some(mr * 1e3));
        bench_line("opencl_async_vs_blocking", speedup, "x", None);
        bench_line(
            "opencl_async_1000_kernels_profiler_off_ms",
            mq * 1e3,
            "ms",
            Some(mr * 1e3),
        );
        Ok(())
    }

    /// Median of the paired differences `a[i] - b[i]` (robust to drift on a shared machine).
    fn paired(a: &[f64], b: &[f64]) -> f64 {
        median(a.iter().zip(b).map(|(x, y)| x - y).collect())
    }

    /// vector_add with a nonce comment: a source neither cache has seen.
    fn fresh_vector_add(nonce: u128) -> Result<Kernel, BoxErr> {
        let base = kernels::vector_add()?;
        let src = format!(
            "// offload bench nonce {nonce}\n{}",
            kernels::sources("vector_add")?.opencl
        );
        let mut b = Kernel::builder("vector_add");
        for p in base.params() {
            b = b.param(p.clone());
        }
        // SAFETY: the built-in vector_add source with a comment prepended: it keeps
        // the audited kernel's signature and guards.
        Ok(unsafe { b.opencl(src, "vector_add") }.build()?)
    }

    fn cache_entries() -> Vec<std::path::PathBuf> {
        let Some(dir) = offload::cache::cache_dir() else {
            return Vec::new();
        };
        std::fs::read_dir(dir.join("opencl"))
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }

    /// Seconds to discover, to build `k`, and for its first launch (a driver may
    /// finish compiling there) in a fresh OpenCL-only runtime.
    fn fresh_build(k: &Kernel) -> Result<(f64, f64, f64), BoxErr> {
        let t = Instant::now();
        let rt = Runtime::builder().backends(&[BackendKind::OpenCl]).build()?;
        let dev = rt.device("opencl:0")?;
        let discover = t.elapsed().as_secs_f64();
        let t = Instant::now();
        dev.build(k)?;
        let build = t.elapsed().as_secs_f64();
        let n = 1000;
        let a = dev.upload(&vec![1.0f32; n])?;
        let b = dev.upload(&vec![2.0f32; n])?;
        let mut c = dev.alloc::<f32>(n)?;
        let t = Instant::now();
        dev.launch(
            k,
            &LaunchConfig::for_items(n, dev.info()),
            &[
                Arg::input(&a),
                Arg::input(&b),
                Arg::output(&mut c),
                0u32.into(),
                (n as u32).into(),
            ],
        )?;
        let first = t.elapsed().as_secs_f64();
        if c.to_vec()?.iter().any(|v| *v != 3.0) {
            return Err("init benchmark kernel computed a wrong result".into());
        }
        Ok((discover, build, first))
    }

    fn init_cold_warm(args: &crate::Args) -> Result<(), BoxErr> {
        if offload::cache::cache_dir().is_none() {
            println!("program init cold vs warm: skipped: no cache directory (set OFFLOAD_CACHE_DIR)");
            return Ok(());
        }
        let reps = if args.quick { 1 } else { 3 };
        let (mut cold, mut warm, mut driver_only, mut disc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut cold_first, mut warm_first) = (Vec::new(), Vec::new());
        for r in 0..reps {
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
                + r as u128;
            let k = fresh_vector_add(nonce)?;
            let before = cache_entries();
            let (d, c, cf) = fresh_build(&k)?;
            disc.push(d);
            cold.push(c);
            cold_first.push(cf);
            let new: Vec<_> = cache_entries().into_iter().filter(|p| !before.contains(p)).collect();
            let (_, w, wf) = fresh_build(&k)?;
            warm.push(w);
            warm_first.push(wf);
            // Without our entry but with whatever the driver cached itself.
            for p in &new {
                std::fs::remove_file(p).ok();
            }
            let (_, o, _) = fresh_build(&k)?;
            driver_only.push(o);
            for p in cache_entries().into_iter().filter(|p| !before.contains(p)) {
                std::fs::remove_file(p).ok();
            }
            if new.is_empty() {
                println!("note: no binary cache entry was written (the driver returned no binary?)");
            }
        }
        let (c, w, o, d) = (median(cold), median(warm), median(driver_only), median(disc));
        let ms = |s: f64| Duration::from_secs_f64(s).as_secs_f64() * 1e3;
        println!(
            "program init (vector_add build in a fresh runtime, median of {reps}): cold {:.1} ms, warm binary \
             cache {:.1} ms ({:.1}x faster); driver cache only {:.1} ms; discovery {:.1} ms",
            ms(c),
            ms(w),
            c / w,
            ms(o),
            ms(d)
        );
        let (cf, wf) = (median(cold_first), median(warm_first));
        println!(
            "first launch after the build: cold {:.1} ms, warm {:.1} ms (drivers such as PoCL finish compiling \
             per work-group size here, cached by the driver itself)",
            ms(cf),
            ms(wf)
        );
        bench_line("opencl_program_init_warm_ms", ms(w), "ms", Some(ms(c)));
        bench_line("opencl_first_launch_warm_ms", ms(wf), "ms", Some(ms(cf)));
        bench_line("opencl_program_init_driver_cache_only_ms", ms(o), "ms", Some(ms(c)));
        bench_line("opencl_discovery_ms", ms(d), "ms", None);
        Ok(())
    }
}
