//! Suite `cuda`: the CUDA backend against raw `cudarc` calls, in the same run.
//!
//! * **Kernel bandwidth**: vector add over device-resident data (12 bytes per
//!   item: two reads, one write), timed on the device clock (the profile's CUDA
//!   event record), against a device-to-device copy (`cuMemcpyDtoDAsync`, 2 bytes
//!   of traffic per byte copied) timed by CUDA events. Target ≥ 85 %.
//! * **Transfers**: the library's `Buffer::write`/`read` from/to ordinary host
//!   memory (it stages through pinned memory), wall clock, against raw `cudarc`
//!   copies from/to pinned host memory (the link), wall clock. Target ≥ 80 %.
//! * **Queues**: 1000 dependent small kernels (`x[i] += 1` on 4096 floats) enqueued
//!   on a `Queue` with one wait at the end, against the same PTX launched 1000
//!   times with raw `cudarc` on one stream and one synchronise (wall clock, ratio
//!   reported); and `Queue::write_from`/`Queue::read` from/to a pinned `HostBuffer`
//!   against raw `cudarc` copies from/to pinned memory (wall clock).
//! * **Launch overhead**: `Device::launch` of the empty kernel (launch + wait)
//!   against raw `cudarc` launch + stream synchronise of the same PTX; the
//!   difference of the medians is what the library adds. Target ≤ 1 µs. Raw
//!   launch + two timing events + synchronise is shown too: the library times
//!   every launch with two events.
//!
//! Without a CUDA device the suite prints why and returns (an error with `--strict`).

#[cfg(not(feature = "cuda"))]
pub fn run(args: &crate::Args) -> Result<(), Box<dyn std::error::Error>> {
    let why = "the `cuda` cargo feature is not enabled in this build";
    if args.strict {
        return Err(format!("suite cuda: {why}").into());
    }
    println!("suite cuda: skipped: {why}");
    Ok(())
}

#[cfg(feature = "cuda")]
pub use imp::run;

#[cfg(feature = "cuda")]
mod imp {
    use std::sync::Arc;
    use std::time::Instant;

    use cudarc::driver::sys::CUevent_flags;
    use cudarc::driver::{CudaContext, CudaStream, LaunchConfig as RawConfig, PushKernelArg};
    use cudarc::nvrtc::Ptx;
    use offload::profile::{Clock, Stage};
    use offload::{Access, Arg, BackendKind, Device, HostBuffer, Kernel, LaunchConfig, Param, Runtime, Split, kernels};

    use crate::common::{bench_line, median, verdict};

    type Res<T> = Result<T, Box<dyn std::error::Error>>;

    /// One row of the summary table.
    struct Row {
        what: String,
        lib: String,
        reference: String,
        ratio: String,
        target: String,
        met: &'static str,
    }

    pub fn run(args: &crate::Args) -> Res<()> {
        let rt = Runtime::builder().backends(&[BackendKind::Cuda]).build()?;
        let Some(dev) = rt.devices().first().cloned() else {
            let why = rt
                .unavailable()
                .iter()
                .find(|u| u.backend == BackendKind::Cuda)
                .map_or_else(|| "no CUDA device".to_string(), |u| u.reason.clone());
            if args.strict {
                return Err(format!("suite cuda: CUDA unavailable: {why}").into());
            }
            println!("suite cuda: skipped: CUDA unavailable: {why}");
            return Ok(());
        };
        let info = dev.info().clone();
        println!(
            "device {}: {} (cc {:?}, {} SMs, {} MiB), {}",
            dev.label(),
            info.name,
            info.compute_capability,
            info.compute_units,
            info.global_mem_bytes >> 20,
            info.driver_version
        );
        let ctx = CudaContext::new(info.index)?;
        let stream = ctx.new_stream()?;
        let mut rows = Vec::new();
        kernel_bandwidth(args, &rt, &dev, &ctx, &stream, &mut rows)?;
        transfers(args, &dev, &ctx, &stream, &mut rows)?;
        queue_chain(args, &dev, &ctx, &stream, &mut rows)?;
        queue_pinned(args, &dev, &ctx, &stream, &mut rows)?;
        launch_overhead(args, &rt, &dev, &ctx, &stream, &mut rows)?;

        println!();
        println!(
            "{:<34} {:>14} {:>14} {:>8} {:>10} {:>8}",
            "cuda measure", "offload", "reference", "ratio", "target", "result"
        );
        for r in rows {
            println!(
                "{:<34} {:>14} {:>14} {:>8} {:>10} {:>8}",
                r.what, r.lib, r.reference, r.ratio, r.target, r.met
            );
        }
        Ok(())
    }

    /// Device time of the newest device-clock kernel record of `dev`.
    fn last_kernel_ns(rt: &Runtime, dev: &Device) -> Option<u64> {
        rt.profiler()
            .take()
            .records
            .iter()
            .rev()
            .find(|r| r.device == dev.label() && r.stage == Stage::Kernel && r.clock == Clock::Device)
            .map(|r| r.duration_ns())
    }

    fn kernel_bandwidth(
        args: &crate::Args,
        rt: &Runtime,
        dev: &Device,
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        rows: &mut Vec<Row>,
    ) -> Res<()> {
        // 3 × 1 GiB for the library, 2 × 2 GiB for the copy (quick: 3 × 64 MiB, 2 × 128 MiB).
        let n: usize = if args.quick { 16 << 20 } else { 256 << 20 };
        let k = kernels::vector_add()?;
        let a: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5).collect();
        let b: Vec<f32> = (0..n).map(|i| (i % 777) as f32 * 0.25).collect();
        let da = dev.upload(&a)?;
        let db = dev.upload(&b)?;
        let mut dc = dev.alloc::<f32>(n)?;
        let cfg = LaunchConfig::for_items(n, dev.info());
        let reps = args.reps.max(3);
        let mut lib_ns = Vec::new();
        let mut wall_ns = Vec::new();
        for i in 0..=reps {
            rt.profiler().take();
            let t = Instant::now();
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
            let w = t.elapsed();
            let d = last_kernel_ns(rt, dev).ok_or("no device-clock kernel record in the profile")?;
            if i > 0 {
                // Rep 0 includes the build (NVRTC + JIT): warm-up.
                lib_ns.push(d as f64);
                wall_ns.push(w.as_nanos() as f64);
            }
        }
        // Check the result once (a wrong kernel would make the number meaningless).
        let c = dc.to_vec()?;
        if let Some(i) = (0..n).step_by(4099).find(|&i| c[i] != a[i] + b[i]) {
            return Err(format!("vector add wrong at {i}: {} != {} + {}", c[i], a[i], b[i]).into());
        }
        drop((da, db, dc));

        // Reference: a device-to-device copy of 2n f32 (the same 8n-byte read footprint), CUDA events.
        let src = stream.alloc_zeros::<u8>(8 * n)?;
        let mut dst = stream.alloc_zeros::<u8>(8 * n)?;
        let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let mut copy_ns = Vec::new();
        for i in 0..=reps {
            start.record(stream)?;
            stream.memcpy_dtod(&src, &mut dst)?;
            end.record(stream)?;
            let ms = start.elapsed_ms(&end)?;
            if i > 0 {
                copy_ns.push(ms as f64 * 1e6);
            }
        }
        let kernel_gbs = 12.0 * n as f64 / median(lib_ns);
        let wall_gbs = 12.0 * n as f64 / median(wall_ns);
        let copy_gbs = 2.0 * 8.0 * n as f64 / median(copy_ns);
        let ratio = kernel_gbs / copy_gbs;
        println!(
            "vector add {n} f32 (device-resident): kernel {kernel_gbs:.1} GB/s on the device clock \
             ({wall_gbs:.1} GB/s wall, launch + wait); device-to-device copy {copy_gbs:.1} GB/s; \
             ratio {ratio:.3}, target >= 0.85: {}",
            verdict(ratio >= 0.85)
        );
        bench_line("cuda_vector_add_kernel_gbps", kernel_gbs, "GB/s", Some(copy_gbs));
        bench_line("cuda_vector_add_wall_gbps", wall_gbs, "GB/s", Some(copy_gbs));
        rows.push(Row {
            what: "vector add kernel vs D2D copy".into(),
            lib: format!("{kernel_gbs:.1} GB/s"),
            reference: format!("{copy_gbs:.1} GB/s"),
            ratio: format!("{ratio:.3}"),
            target: ">= 0.85".into(),
            met: verdict(ratio >= 0.85),
        });
        Ok(())
    }

    fn transfers(
        args: &crate::Args,
        dev: &Device,
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        rows: &mut Vec<Row>,
    ) -> Res<()> {
        let bytes: usize = if args.quick { 32 << 20 } else { 256 << 20 };
        let n = bytes / 4;
        let reps = args.reps.max(3);
        let host: Vec<f32> = (0..n).map(|i| (i % 4096) as f32).collect();
        let mut back = vec![0f32; n];
        let mut buf = dev.alloc::<f32>(n)?;
        buf.write(&host)?; // warm-up: allocates the pinned staging slots and copy threads
        buf.read(&mut back)?;
        if back != host {
            return Err("library round trip corrupted the data".into());
        }

        // Raw cudarc: pinned host memory, one async copy, synchronise.
        // SAFETY: the pinned buffer is written below before it is read.
        let mut pinned = unsafe { ctx.alloc_pinned_with_flags::<u8>(bytes, 0) }?;
        pinned.as_mut_slice()?.copy_from_slice(bytemuck::cast_slice(&host));
        let mut raw_dev = stream.alloc_zeros::<u8>(bytes)?;
        stream.memcpy_htod(&pinned, &mut raw_dev)?;
        stream.synchronize()?;

        let time = |f: &mut dyn FnMut() -> Res<()>| -> Res<f64> {
            let mut v = Vec::new();
            for _ in 0..reps {
                let t = Instant::now();
                f()?;
                v.push(t.elapsed().as_secs_f64());
            }
            Ok(median(v))
        };
        // Interleave library and raw measurements so drift affects both alike.
        let (mut lib_h2d, mut raw_h2d, mut lib_d2h, mut raw_d2h) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            lib_h2d.push(time(&mut || Ok(buf.write(&host)?))?);
            raw_h2d.push(time(&mut || {
                stream.memcpy_htod(&pinned, &mut raw_dev)?;
                Ok(stream.synchronize()?)
            })?);
            lib_d2h.push(time(&mut || Ok(buf.read(&mut back)?))?);
            raw_d2h.push(time(&mut || {
                stream.memcpy_dtoh(&raw_dev, &mut pinned)?;
                Ok(stream.synchronize()?)
            })?);
        }
        if back != host {
            return Err("library download returned wrong data".into());
        }
        let gbs = |t: f64| bytes as f64 / t / 1e9;
        for (name, lib, raw) in [
            ("h2d", gbs(median(lib_h2d)), gbs(median(raw_h2d))),
            ("d2h", gbs(median(lib_d2h)), gbs(median(raw_d2h))),
        ] {
            let ratio = lib / raw;
            println!(
                "{name} {} MiB: offload (pageable, staged through pinned) {lib:.2} GB/s; raw cudarc pinned {raw:.2} GB/s \
                 (the link); ratio {ratio:.3}, target >= 0.80: {}",
                bytes >> 20,
                verdict(ratio >= 0.80)
            );
            bench_line(&format!("cuda_{name}_gbps"), lib, "GB/s", Some(raw));
            rows.push(Row {
                what: format!("{name} {} MiB vs raw pinned", bytes >> 20),
                lib: format!("{lib:.2} GB/s"),
                reference: format!("{raw:.2} GB/s"),
                ratio: format!("{ratio:.3}"),
                target: ">= 0.80".into(),
                met: verdict(ratio >= 0.80),
            });
        }
        Ok(())
    }

    /// Load `src` (CUDA source of `k`) through raw cudarc, with the library's CUBIN fallback.
    fn raw_function(
        dev: &Device,
        ctx: &Arc<CudaContext>,
        k: &Kernel,
    ) -> Res<(Arc<cudarc::driver::CudaModule>, cudarc::driver::CudaFunction)> {
        let (major, minor) = dev.info().compute_capability.ok_or("no compute capability")?;
        let src = k.cuda_source().ok_or("kernel has no CUDA source")?;
        let ptx = offload::nvrtc::compile(src, &format!("compute_{major}{minor}"))?;
        let module = match ctx.load_module(Ptx::from_src(ptx)) {
            Ok(m) => m,
            Err(_) => ctx.load_module(Ptx::from_binary(offload::nvrtc::compile_cubin(
                src,
                &format!("sm_{major}{minor}"),
            )?))?,
        };
        let f = module.load_function(&src.entry)?;
        Ok((module, f))
    }

    /// 1000 dependent small kernels: a queue with one wait against raw launches
    /// on one stream with one synchronise.
    fn queue_chain(
        args: &crate::Args,
        dev: &Device,
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        rows: &mut Vec<Row>,
    ) -> Res<()> {
        let code = "extern \"C\" __global__ void add_one(float* x, unsigned int n) {\n  \
                    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;\n  if (i < n) x[i] += 1.0f;\n}\n";
        // SAFETY: the kernel writes only x[0..n), the extent declared from `n`.
        let k = unsafe {
            Kernel::builder("add_one")
                .param(Param::buffer::<f32>(
                    "x",
                    Access::ReadWrite,
                    Split::Elementwise { per_item: 1 },
                ))
                .param(Param::scalar::<u32>("n"))
                .extent_from("x", &["n"], 1)
                .cuda(code, "add_one")
        }
        .build()?;
        let n: usize = 4096;
        let chain = 1000;
        let cfg = LaunchConfig::for_items(n, dev.info());
        dev.build(&k)?;
        let q = dev.queue()?;
        let mut x = dev.alloc::<f32>(n)?;

        let (_module, f) = raw_function(dev, ctx, &k)?;
        let raw_x = stream.alloc_zeros::<f32>(n)?;
        let ptr: u64 = {
            use cudarc::driver::DevicePtr;
            let (p, _record) = raw_x.device_ptr(stream);
            p
        };
        stream.synchronize()?;
        let (g, b) = (cfg.grid.to_array(), cfg.block.to_array());
        let raw_cfg = RawConfig {
            grid_dim: (g[0], g[1], g[2]),
            block_dim: (b[0], b[1], b[2]),
            shared_mem_bytes: 0,
        };
        let count = n as u32;
        let mut lib_chain = || -> Res<()> {
            let mut last = None;
            for _ in 0..chain {
                last = Some(q.launch(&k, &cfg, &[Arg::output(&mut x), count.into()])?);
            }
            if let Some(e) = last {
                e.wait()?;
            }
            Ok(())
        };
        let raw_chain = || -> Res<()> {
            for _ in 0..chain {
                let mut lb = stream.launch_builder(&f);
                lb.arg(&ptr).arg(&count);
                // SAFETY: `add_one(float*, unsigned int)` gets a live allocation of `n`
                // floats and `n`.
                unsafe { lb.launch(raw_cfg) }?;
            }
            stream.synchronize()?;
            Ok(())
        };
        // Warm-up, then interleaved repetitions.
        lib_chain()?;
        raw_chain()?;
        let reps = args.reps.max(5);
        let (mut lib, mut raw) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let t = Instant::now();
            lib_chain()?;
            lib.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            raw_chain()?;
            raw.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let want = ((reps + 1) * chain) as f32;
        let got = x.to_vec()?;
        if let Some(i) = (0..n).find(|&i| got[i] != want) {
            return Err(format!("queue chain wrong at {i}: {} != {want}", got[i]).into());
        }
        let (lib, raw) = (median(lib), median(raw));
        let ratio = lib / raw;
        println!(
            "{chain} dependent add_one kernels ({n} floats), one wait: queue {lib:.1} us ({:.2} us per kernel); \
             raw cudarc launches on one stream + one sync {raw:.1} us; ratio {ratio:.3}",
            lib / chain as f64
        );
        bench_line("cuda_queue_1000_kernels_us", lib, "us", Some(raw));
        rows.push(Row {
            what: format!("{chain} kernels, queue vs raw stream"),
            lib: format!("{lib:.0} us"),
            reference: format!("{raw:.0} us"),
            ratio: format!("{ratio:.3}"),
            target: "report".into(),
            met: "-",
        });
        Ok(())
    }

    /// Pinned `HostBuffer` transfers through a queue against raw pinned copies.
    fn queue_pinned(
        args: &crate::Args,
        dev: &Device,
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        rows: &mut Vec<Row>,
    ) -> Res<()> {
        let bytes: usize = if args.quick { 32 << 20 } else { 256 << 20 };
        let n = bytes / 4;
        let reps = args.reps.max(3);
        let host: Vec<f32> = (0..n).map(|i| (i % 4099) as f32).collect();
        let q = dev.queue()?;
        let buf = dev.alloc::<f32>(n)?;
        let mut hb = HostBuffer::from_slice(dev, &host)?;
        if !hb.is_pinned() {
            return Err("a CUDA HostBuffer should be page-locked".into());
        }
        // Warm-up round trip, checked.
        hb = q.write_from(&buf, hb)?.wait().map_err(|f| f.error)?;
        hb.fill(0.0);
        hb = q.read(&buf, hb)?.wait().map_err(|f| f.error)?;
        if *hb != *host {
            return Err("queue round trip through a pinned HostBuffer corrupted the data".into());
        }

        // SAFETY: the pinned buffer is written below before it is read.
        let mut pinned = unsafe { ctx.alloc_pinned_with_flags::<u8>(bytes, 0) }?;
        pinned.as_mut_slice()?.copy_from_slice(bytemuck::cast_slice(&host));
        let mut raw_dev = stream.alloc_zeros::<u8>(bytes)?;
        stream.memcpy_htod(&pinned, &mut raw_dev)?;
        stream.synchronize()?;

        let (mut lib_h2d, mut raw_h2d, mut lib_d2h, mut raw_d2h) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let t = Instant::now();
            hb = q.write_from(&buf, hb)?.wait().map_err(|f| f.error)?;
            lib_h2d.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            stream.memcpy_htod(&pinned, &mut raw_dev)?;
            stream.synchronize()?;
            raw_h2d.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            hb = q.read(&buf, hb)?.wait().map_err(|f| f.error)?;
            lib_d2h.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            stream.memcpy_dtoh(&raw_dev, &mut pinned)?;
            stream.synchronize()?;
            raw_d2h.push(t.elapsed().as_secs_f64());
        }
        if *hb != *host {
            return Err("queue read into a pinned HostBuffer returned wrong data".into());
        }
        let gbs = |t: f64| bytes as f64 / t / 1e9;
        for (name, lib, raw) in [
            ("h2d", gbs(median(lib_h2d)), gbs(median(raw_h2d))),
            ("d2h", gbs(median(lib_d2h)), gbs(median(raw_d2h))),
        ] {
            let ratio = lib / raw;
            println!(
                "{name} {} MiB pinned HostBuffer through a queue (write_from / read + wait) {lib:.2} GB/s; \
                 raw cudarc pinned {raw:.2} GB/s; ratio {ratio:.3}",
                bytes >> 20
            );
            bench_line(&format!("cuda_{name}_pinned_queue_gbps"), lib, "GB/s", Some(raw));
            rows.push(Row {
                what: format!("{name} pinned queue {} MiB", bytes >> 20),
                lib: format!("{lib:.2} GB/s"),
                reference: format!("{raw:.2} GB/s"),
                ratio: format!("{ratio:.3}"),
                target: "report".into(),
                met: "-",
            });
        }
        Ok(())
    }

    fn launch_overhead(
        args: &crate::Args,
        rt: &Runtime,
        dev: &Device,
        ctx: &Arc<CudaContext>,
        stream: &Arc<CudaStream>,
        rows: &mut Vec<Row>,
    ) -> Res<()> {
        let noop = kernels::noop()?;
        let cfg = LaunchConfig::new(1, 32);
        let lib_args = [0u32.into(), 1u32.into()];
        dev.build(&noop)?;

        // The same PTX through raw cudarc.
        let (major, minor) = dev.info().compute_capability.ok_or("no compute capability")?;
        let src = noop.cuda_source().ok_or("noop has no CUDA source")?;
        let ptx = offload::nvrtc::compile(src, &format!("compute_{major}{minor}"))?;
        let module = match ctx.load_module(Ptx::from_src(ptx)) {
            Ok(m) => m,
            // A driver older than NVRTC rejects the PTX version: load a CUBIN, as the library does.
            Err(_) => ctx.load_module(Ptx::from_binary(offload::nvrtc::compile_cubin(
                src,
                &format!("sm_{major}{minor}"),
            )?))?,
        };
        let f = module.load_function(&src.entry)?;
        let raw_cfg = RawConfig {
            grid_dim: (1, 1, 1),
            block_dim: (32, 1, 1),
            shared_mem_bytes: 0,
        };
        let (offset, count) = (0u32, 1u32);
        let raw_launch = || -> Res<()> {
            let mut b = stream.launch_builder(&f);
            b.arg(&offset).arg(&count);
            // SAFETY: `noop(unsigned int, unsigned int)` takes exactly these two u32 values.
            unsafe { b.launch(raw_cfg) }?;
            Ok(())
        };
        let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;

        let iters = if args.quick { 2_000 } else { 20_000 };
        let block = 500;
        let (mut lib, mut lib_quiet, mut raw, mut raw_ev) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let sample = |v: &mut Vec<f64>, f: &mut dyn FnMut() -> Res<()>| -> Res<()> {
            for _ in 0..block {
                let t = Instant::now();
                f()?;
                v.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok(())
        };
        // Warm-up, then interleaved blocks.
        for _ in 0..200 {
            dev.launch(&noop, &cfg, &lib_args)?;
            raw_launch()?;
            stream.synchronize()?;
        }
        let mut done = 0;
        while done < iters {
            rt.profiler().set_enabled(true);
            sample(&mut lib, &mut || Ok(dev.launch(&noop, &cfg, &lib_args)?))?;
            rt.profiler().take();
            rt.profiler().set_enabled(false);
            sample(&mut lib_quiet, &mut || Ok(dev.launch(&noop, &cfg, &lib_args)?))?;
            rt.profiler().set_enabled(true);
            sample(&mut raw, &mut || {
                raw_launch()?;
                Ok(stream.synchronize()?)
            })?;
            sample(&mut raw_ev, &mut || {
                start.record(stream)?;
                raw_launch()?;
                end.record(stream)?;
                end.synchronize()?;
                let _ = start.elapsed_ms(&end)?;
                Ok(())
            })?;
            done += block;
        }
        let (lib, lib_quiet, raw, raw_ev) = (median(lib), median(lib_quiet), median(raw), median(raw_ev));
        let added = lib - raw;
        println!(
            "empty-kernel launch + wait, median of {done}: offload {lib:.2} us (profiler off {lib_quiet:.2} us); \
             raw cudarc launch + sync {raw:.2} us; raw with two timing events {raw_ev:.2} us; \
             added by offload {added:.2} us, target <= 1 us: {}",
            verdict(added <= 1.0)
        );
        bench_line("cuda_launch_roundtrip_us", lib, "us", Some(raw));
        bench_line("cuda_launch_added_us", added, "us", None);
        bench_line("cuda_launch_raw_events_us", raw_ev, "us", Some(raw));
        rows.push(Row {
            what: "noop launch+wait, added".into(),
            lib: format!("{lib:.2} us"),
            reference: format!("{raw:.2} us"),
            ratio: format!("+{added:.2}us"),
            target: "<= 1 us".into(),
            met: verdict(added <= 1.0),
        });
        Ok(())
    }
}
