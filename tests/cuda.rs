//! The CUDA backend: availability reporting on any machine, and on a GPU
//! (`OFFLOAD_REQUIRE=cuda` makes a missing GPU a failure) correctness against a
//! float64 reference, the bad-input errors, and device-clock profiling.
//!
//! Without a CUDA device every GPU test prints a SKIP line (see `tests/common`).
#![cfg(feature = "cuda")]

mod common;

use std::sync::Arc;

use common::Rng;
use offload::profile::{Clock, Stage};
use offload::{Access, Arg, BackendKind, Device, Dim3, Error, Kernel, LaunchConfig, Param, Runtime, Split, kernels};

fn runtime() -> Runtime {
    Runtime::builder()
        .backends(&[BackendKind::Cpu, BackendKind::Cuda])
        .build()
        .expect("runtime")
}

/// CUDA devices, or a printed skip (a failure when `OFFLOAD_REQUIRE` names cuda).
fn gpus(rt: &Runtime) -> Vec<Device> {
    common::devices_of(rt, BackendKind::Cuda)
}

#[test]
fn unavailable_cuda_is_reported_with_a_reason_not_a_panic() {
    let rt = runtime();
    if rt.has(BackendKind::Cuda) {
        for d in rt.select("cuda").expect("cuda devices") {
            let i = d.info();
            println!(
                "{}: {} cc {:?}, {} SMs, {} MiB",
                d.label(),
                i.name,
                i.compute_capability,
                i.compute_units,
                i.global_mem_bytes >> 20
            );
        }
        return;
    }
    let reason = rt
        .unavailable()
        .iter()
        .find(|u| u.backend == BackendKind::Cuda)
        .map(|u| u.reason.clone())
        .expect("an unavailable CUDA backend must say why");
    println!("CUDA unavailable: {reason}");
    assert!(
        ["libcuda", "cuInit", "libnvrtc", "CUDA driver"]
            .iter()
            .any(|w| reason.contains(w)),
        "the reason should name the missing driver library or the failing driver call: {reason}"
    );
    let err = rt.device("cuda").expect_err("no CUDA device here");
    match &err {
        Error::NoSuchDevice {
            selector, unavailable, ..
        } => {
            assert_eq!(selector, "cuda");
            assert!(unavailable.contains(&reason), "{unavailable}");
        }
        other => panic!("expected NoSuchDevice, got {other:?}"),
    }
    assert!(err.to_string().contains(&reason), "{err}");
    // The CPU is still there, and the requirement check applies.
    assert!(rt.device("cpu").is_ok());
    common::missing("cuda", &reason);
}

#[test]
fn device_info_is_read_from_the_driver() {
    let rt = runtime();
    for d in gpus(&rt) {
        let i = d.info();
        assert_eq!(i.backend, BackendKind::Cuda);
        assert_eq!(i.vendor, "NVIDIA");
        assert!(!i.name.is_empty());
        let (major, _) = i.compute_capability.expect("compute capability");
        assert!(major >= 3, "{i:?}");
        assert_eq!(i.warp_size, 32);
        assert!(i.compute_units > 0 && i.max_threads_per_block >= 256, "{i:?}");
        assert!(i.max_block_dims[0] >= i.max_threads_per_block.min(1024), "{i:?}");
        assert!(i.max_grid_dims[0] >= 65535 && i.max_grid_dims[1] >= 65535, "{i:?}");
        assert!(i.local_mem_bytes >= 48 << 10, "{i:?}");
        assert!(
            i.global_mem_bytes > 0 && i.max_alloc_bytes == i.global_mem_bytes,
            "{i:?}"
        );
        assert_eq!(
            i.max_global_size,
            i.max_grid_dims[0] as u64 * i.max_block_dims[0] as u64
        );
        println!("{}: {i:?}", d.label());
    }
}

#[test]
fn vector_add_matches_the_f64_reference() {
    let rt = runtime();
    let mut rng = Rng::fresh("cuda vector_add");
    for dev in gpus(&rt) {
        // Sizes below, at and across staging chunks (8 MiB = 2M f32), plus a random one.
        let random = 1 + rng.below(3_000_000) as usize;
        for n in [1usize, 1000, 2 << 20, 5_000_001, random] {
            common::vector_add_on(&dev, n, LaunchConfig::for_items(n, dev.info()), &mut rng);
        }
        // A grid that overshoots the items.
        common::vector_add_on(
            &dev,
            1_000_003,
            LaunchConfig::new(1_000_003u32.div_ceil(512) + 3, 512),
            &mut rng,
        );
    }
}

#[test]
fn copies_round_trip_at_offsets_and_across_chunks() {
    let rt = runtime();
    let mut rng = Rng::fresh("cuda copies");
    for dev in gpus(&rt) {
        let n = 9_437_185; // 36 MiB of f32: five staging chunks, the last one partial
        let data = rng.vec_f32(n, -1.0, 1.0);
        let mut buf = dev.upload(&data).expect("upload");
        assert_eq!(buf.to_vec().expect("read"), data);
        let patch = rng.vec_f32(3_000_001, 2.0, 3.0);
        let at = 1_234_567;
        buf.write_at(at, &patch, "patch").expect("write_at");
        let mut back = vec![f32::NAN; patch.len() + 2];
        buf.read_at(at - 1, &mut back, "read_at").expect("read_at");
        assert_eq!(back[0], data[at - 1]);
        assert_eq!(&back[1..=patch.len()], &patch[..]);
        assert_eq!(back[patch.len() + 1], data[at + patch.len()]);
        // A fresh allocation is zero-filled.
        let z = dev.alloc::<u32>(1000).expect("alloc").to_vec().expect("read");
        assert!(z.iter().all(|v| *v == 0));
        // Zero-length buffers work.
        let e = dev.upload::<f32>(&[]).expect("empty");
        assert!(e.to_vec().expect("empty read").is_empty());
    }
}

#[test]
fn copy_length_mismatch_is_a_typed_error() {
    let rt = runtime();
    for dev in gpus(&rt) {
        let mut buf = dev.alloc::<f32>(100).expect("alloc");
        let err = buf.write(&[1.0; 99]).expect_err("short write");
        assert!(
            matches!(
                err,
                Error::LengthMismatch {
                    host: 99,
                    buffer: 100,
                    ..
                }
            ),
            "{err:?}"
        );
        let mut out = vec![0f32; 101];
        let err = buf.read(&mut out).expect_err("long read");
        assert!(
            matches!(
                err,
                Error::LengthMismatch {
                    host: 101,
                    buffer: 100,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = buf.write_at(90, &[1.0; 11], "x").expect_err("past the end");
        assert!(matches!(err, Error::LengthMismatch { .. }), "{err:?}");
        buf.write(&[7.0; 100]).expect("still usable");
        assert_eq!(buf.to_vec().expect("read"), vec![7.0; 100]);
    }
}

#[test]
fn launch_limits_are_launch_config_errors() {
    let rt = runtime();
    let mut rng = Rng::fresh("cuda limits");
    for dev in gpus(&rt) {
        let info = dev.info().clone();
        let noop = kernels::noop().expect("noop");
        let args = [0u32.into(), 1u32.into()];
        let expect_cfg_err = |cfg: LaunchConfig, what: &str| {
            let err = dev.launch(&noop, &cfg, &args).expect_err(what);
            assert!(matches!(err, Error::LaunchConfig { .. }), "{what}: {err:?}");
            println!("{what}: {err}");
        };
        expect_cfg_err(
            LaunchConfig::new(1, info.max_threads_per_block + 32),
            "block above max threads per block",
        );
        expect_cfg_err(
            LaunchConfig::new(1, 32).shared(info.local_mem_bytes as u32 + 1),
            "shared memory above the limit",
        );
        expect_cfg_err(
            LaunchConfig::new(Dim3::new(1, info.max_grid_dims[1] + 1, 1), 32),
            "grid dim above the limit",
        );
        expect_cfg_err(
            LaunchConfig::new(Dim3::new(1, 1, info.max_grid_dims[2] + 1), 32),
            "grid z above the limit",
        );
        expect_cfg_err(
            LaunchConfig::new(1, Dim3::new(1, 1, info.max_block_dims[2] + 1)),
            "block z above the limit",
        );
        // Still usable afterwards.
        dev.launch(&noop, &LaunchConfig::new(1, 32), &args)
            .expect("noop after errors");
        common::vector_add_on(&dev, 4097, LaunchConfig::for_items(4097, &info), &mut rng);
    }
}

#[test]
fn allocation_above_free_memory_is_out_of_memory_and_the_runtime_survives() {
    let rt = runtime();
    let mut rng = Rng::fresh("cuda oom");
    for dev in gpus(&rt) {
        let total = dev.info().global_mem_bytes;
        // Within the max allocation (the total), above free memory (some is always in use).
        let err = dev
            .alloc::<u8>(total as usize)
            .expect_err("the whole memory cannot be free");
        match &err {
            Error::OutOfMemory {
                limit_name,
                requested,
                limit,
                ..
            } => {
                assert_eq!(*limit_name, "free device memory");
                assert_eq!(*requested, total);
                assert!(*limit < total);
            }
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
        println!("{err}");
        let err = dev.alloc::<u8>(total as usize + 1).expect_err("above max allocation");
        assert!(matches!(err, Error::OutOfMemory { .. }), "{err:?}");
        common::vector_add_on(&dev, 100_000, LaunchConfig::for_items(100_000, dev.info()), &mut rng);
    }
}

#[test]
fn profile_has_device_clock_records_for_copies_and_kernels() {
    let rt = runtime();
    let mut rng = Rng::fresh("cuda profile");
    for dev in gpus(&rt) {
        rt.profiler().take();
        let n = 1 << 20;
        common::vector_add_on(&dev, n, LaunchConfig::for_items(n, dev.info()), &mut rng);
        let p = rt.profile();
        for stage in [Stage::HostToDevice, Stage::Kernel, Stage::DeviceToHost] {
            let recs: Vec<_> = p.device_records(dev.label()).filter(|r| r.stage == stage).collect();
            assert!(!recs.is_empty(), "no {stage:?} record");
            for r in recs {
                assert_eq!(r.clock, Clock::Device, "{r:?}");
                assert!(r.duration_ns() > 0, "{r:?}");
            }
        }
        let h2d: u64 = p
            .device_records(dev.label())
            .filter(|r| r.stage == Stage::HostToDevice)
            .map(|r| r.bytes)
            .sum();
        assert_eq!(h2d, 3 * 4 * n as u64, "a, b and the poisoned c were uploaded");
        println!("{}", p.report());
    }
}

/// A kernel using scalars of every width, a 2-D grid, and dynamic shared memory
/// from a `Local` parameter (not a CUDA parameter: `extern __shared__`).
fn probe_kernel() -> Kernel {
    let code = r#"
extern "C" __global__ void probe(double* out, unsigned int* blocks, double a, int b, unsigned long long c,
                                 float d, long long e, unsigned int f) {
    extern __shared__ float scratch[];
    unsigned int t = threadIdx.x;
    scratch[t] = (float)t;
    __syncthreads();
    if (t == 0 && blockIdx.x == 0 && blockIdx.y == 0) {
        out[0] = a; out[1] = (double)b; out[2] = (double)c; out[3] = (double)d;
        out[4] = (double)e; out[5] = (double)f;
        out[6] = (double)scratch[blockDim.x - 1];
    }
    if (t == 0) {
        atomicAdd(blocks, 1u);
    }
}
"#;
    let each = Split::Elementwise { per_item: 1 };
    // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
    unsafe {
        Kernel::builder("probe")
            .param(Param::buffer::<f64>("out", Access::Write, each))
            .param(Param::buffer::<u32>("blocks", Access::ReadWrite, each))
            .param(Param::scalar::<f64>("a"))
            .param(Param::scalar::<i32>("b"))
            .param(Param::scalar::<u64>("c"))
            .param(Param::scalar::<f32>("d"))
            .param(Param::local::<f32>("scratch"))
            .param(Param::scalar::<i64>("e"))
            .param(Param::scalar::<u32>("f"))
            .cuda(code, "probe")
    }
    .build()
    .expect("probe kernel")
}

#[test]
fn scalars_of_every_width_and_local_memory_reach_the_kernel() {
    let rt = runtime();
    for dev in gpus(&rt) {
        let k = probe_kernel();
        let block = 256u32;
        // Small dynamic shared memory, then all the device allows (the opt-in path above 48 KiB).
        for local_floats in [block as usize, (dev.info().local_mem_bytes / 4) as usize] {
            let mut out = dev.upload(&[f64::NAN; 7]).expect("out");
            let mut blocks = dev.upload(&[0u32]).expect("blocks");
            let cfg = LaunchConfig::new(Dim3::new(3, 2, 1), block);
            dev.launch(
                &k,
                &cfg,
                &[
                    Arg::output(&mut out),
                    Arg::output(&mut blocks),
                    1.25e300f64.into(),
                    (-7i32).into(),
                    (u64::MAX - 4095).into(),
                    3.5f32.into(),
                    Arg::local(local_floats),
                    (i64::MIN + 4096).into(),
                    4_000_000_000u32.into(),
                ],
            )
            .unwrap_or_else(|e| panic!("probe with {local_floats} local floats: {e}"));
            let o = out.to_vec().expect("out");
            let expect = [
                1.25e300,
                -7.0,
                (u64::MAX - 4095) as f64,
                3.5,
                (i64::MIN + 4096) as f64,
                4e9,
                (block - 1) as f64,
            ];
            assert_eq!(o, expect, "local floats {local_floats}");
            assert_eq!(blocks.to_vec().expect("blocks"), vec![6], "3 x 2 blocks ran");
        }
        // One float more than the device allows is refused before launch.
        let mut out = dev.alloc::<f64>(7).expect("out");
        let mut blocks = dev.alloc::<u32>(1).expect("blocks");
        let too_many = (dev.info().local_mem_bytes / 4) as usize + 1;
        let err = dev
            .launch(
                &k,
                &LaunchConfig::new(1, 32),
                &[
                    Arg::output(&mut out),
                    Arg::output(&mut blocks),
                    0f64.into(),
                    0i32.into(),
                    0u64.into(),
                    0f32.into(),
                    Arg::local(too_many),
                    0i64.into(),
                    0u32.into(),
                ],
            )
            .expect_err("local memory above the limit");
        assert!(matches!(err, Error::LaunchConfig { .. }), "{err:?}");
    }
}

#[test]
fn build_errors_and_missing_entries_are_typed() {
    let rt = runtime();
    for dev in gpus(&rt) {
        // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
        let bad = unsafe {
            Kernel::builder("bad").param(Param::Offset).param(Param::Count).cuda(
                "extern \"C\" __global__ void bad(unsigned int o, unsigned int c) { o = ; }",
                "bad",
            )
        }
        .build()
        .expect("kernel");
        let err = dev.build(&bad).expect_err("syntax error");
        match &err {
            Error::Build { kernel, log, .. } => {
                assert_eq!(kernel, "bad");
                assert!(log.contains("error"), "{log}");
            }
            other => panic!("expected Build, got {other:?}"),
        }
        // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
        let wrong = unsafe {
            Kernel::builder("wrong_entry")
                .param(Param::Offset)
                .param(Param::Count)
                .cuda(
                    "extern \"C\" __global__ void actual(unsigned int o, unsigned int c) {}",
                    "expected",
                )
        }
        .build()
        .expect("kernel");
        let err = dev.build(&wrong).expect_err("entry not in program");
        assert!(matches!(err, Error::EntryNotFound { .. }), "{err:?}");
        // The device still builds and runs good kernels.
        dev.launch(
            &kernels::noop().expect("noop"),
            &LaunchConfig::new(1, 32),
            &[0u32.into(), 1u32.into()],
        )
        .expect("noop");
    }
}

#[test]
fn two_host_threads_share_a_device() {
    let rt = runtime();
    for dev in gpus(&rt) {
        let dev = Arc::new(dev);
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let dev = dev.clone();
                std::thread::spawn(move || {
                    let mut rng = Rng::fresh(&format!("cuda thread {t}"));
                    for _ in 0..5 {
                        let n = 3_000_000 + rng.below(1000) as usize;
                        common::vector_add_on(&dev, n, LaunchConfig::for_items(n, dev.info()), &mut rng);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
    }
}

#[test]
fn close_then_use_is_closed_and_drop_is_quiet() {
    let rt = runtime();
    for dev in gpus(&rt) {
        let buf = dev.upload(&[1.0f32; 1000]).expect("upload");
        dev.build(&kernels::vector_add().expect("k")).expect("build");
        dev.close().expect("close");
        let err = buf.to_vec().expect_err("read after close");
        assert!(matches!(err, Error::Closed { .. }), "{err:?}");
        drop(buf); // frees device memory after teardown without panicking
    }
}
