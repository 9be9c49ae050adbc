//! DESIGN.md's bad-input table, rows that apply to the backend-neutral layer, on
//! the CPU device: each gives its typed error, names the thing and the limit,
//! leaves host data untouched and leaves the runtime usable.

mod common;

use offload::{Access, Arg, Device, Error, Kernel, LaunchConfig, Param, Runtime, Split, kernels};

fn cpu() -> (Runtime, Device) {
    let rt = Runtime::builder()
        .backends(&[offload::BackendKind::Cpu])
        .build()
        .unwrap();
    let d = rt.device("cpu").unwrap();
    (rt, d)
}

/// After an error, the device still computes correctly.
fn still_usable(dev: &Device) {
    let k = kernels::vector_add().unwrap();
    let a = dev.upload(&[1.0f32, 2.0, 3.0]).unwrap();
    let b = dev.upload(&[10.0f32, 20.0, 30.0]).unwrap();
    let mut c = dev.alloc::<f32>(3).unwrap();
    let cfg = LaunchConfig::for_items(3, dev.info());
    dev.launch(
        &k,
        &cfg,
        &[
            Arg::input(&a),
            Arg::input(&b),
            Arg::output(&mut c),
            0u32.into(),
            3u32.into(),
        ],
    )
    .unwrap();
    assert_eq!(c.to_vec().unwrap(), vec![11.0, 22.0, 33.0]);
}

#[test]
fn selector_matches_no_device() {
    let (rt, _d) = cpu();
    let e = rt.device("cuda:3").unwrap_err();
    assert!(matches!(e, Error::NoSuchDevice { .. }), "{e}");
    assert!(
        e.to_string().contains("cuda:3") && e.to_string().contains("cpu:0"),
        "{e}"
    );
    let e = rt.device("cpu:1").unwrap_err();
    assert!(matches!(e, Error::NoSuchDevice { .. }), "{e}");
}

#[test]
fn invalid_selector_lists_valid_values() {
    let (rt, _d) = cpu();
    let e = rt.device("tpu:0").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::InvalidSelector { .. }), "{msg}");
    assert!(
        msg.contains("tpu") && msg.contains("valid selectors are all, cpu, cpu:0"),
        "{msg}"
    );
}

#[test]
fn backend_missing_is_reported_with_reason() {
    // Probing only the CPU leaves the others out; a full runtime lists each missing backend with a reason.
    let rt = Runtime::new().unwrap();
    for b in offload::BackendKind::ALL {
        assert!(
            rt.has(b) || rt.unavailable().iter().any(|u| u.backend == b && !u.reason.is_empty()),
            "{b} neither available nor reported unavailable"
        );
    }
    if let Some(u) = rt.unavailable().first() {
        let e = rt.device(u.backend.name()).unwrap_err();
        assert!(e.to_string().contains(&u.reason), "{e}");
    }
}

#[test]
fn kernel_without_implementation_for_backend() {
    let (_rt, dev) = cpu();
    // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
    let k = unsafe {
        Kernel::builder("only_cl")
            .param(Param::Offset)
            .param(Param::Count)
            .opencl("__kernel void only_cl(uint o, uint c) {}", "only_cl")
    }
    .build()
    .unwrap();
    let e = dev
        .launch(&k, &LaunchConfig::new(1, 1), &[0u32.into(), 0u32.into()])
        .unwrap_err();
    assert!(matches!(e, Error::NoImplementation { .. }), "{e}");
    assert!(
        e.to_string().contains("only_cl") && e.to_string().contains("cpu"),
        "{e}"
    );
    assert!(matches!(dev.build(&k), Err(Error::NoImplementation { .. })));
    still_usable(&dev);
}

#[test]
fn wrong_argument_count_and_types() {
    let (_rt, dev) = cpu();
    let k = kernels::vector_add().unwrap();
    let a = dev.upload(&[1.0f32; 4]).unwrap();
    let a64 = dev.upload(&[1.0f64; 4]).unwrap();
    let mut c = dev.upload(&[7.0f32; 4]).unwrap();
    let cfg = LaunchConfig::new(1, 4);
    let e = dev.launch(&k, &cfg, &[Arg::input(&a)]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::ArgCount {
                expected: 5,
                got: 1,
                ..
            }
        ),
        "{e}"
    );
    // f64 buffer where f32 is declared.
    let e = dev
        .launch(
            &k,
            &cfg,
            &[
                Arg::input(&a64),
                Arg::input(&a),
                Arg::output(&mut c),
                0u32.into(),
                4u32.into(),
            ],
        )
        .unwrap_err();
    assert!(matches!(e, Error::ArgType { index: 0, .. }), "{e}");
    assert!(e.to_string().contains("f64") && e.to_string().contains("f32"), "{e}");
    // A read-only handle where the kernel writes.
    let c2 = dev.upload(&[7.0f32; 4]).unwrap();
    let e = dev
        .launch(
            &k,
            &cfg,
            &[
                Arg::input(&a),
                Arg::input(&a),
                Arg::input(&c2),
                0u32.into(),
                4u32.into(),
            ],
        )
        .unwrap_err();
    assert!(matches!(e, Error::ArgType { index: 2, .. }), "{e}");
    // Scalar of the wrong type for Count.
    let e = dev
        .launch(
            &k,
            &cfg,
            &[
                Arg::input(&a),
                Arg::input(&a),
                Arg::output(&mut c),
                0u32.into(),
                4.0f32.into(),
            ],
        )
        .unwrap_err();
    assert!(matches!(e, Error::ArgType { index: 4, .. }), "{e}");
    // Nothing ran: the output is untouched.
    assert_eq!(c.to_vec().unwrap(), vec![7.0; 4]);
    still_usable(&dev);
}

#[test]
fn buffer_from_another_device() {
    let (_rt1, dev1) = cpu();
    let (_rt2, dev2) = cpu();
    let k = kernels::vector_add().unwrap();
    let a = dev1.upload(&[1.0f32; 4]).unwrap();
    let b = dev2.upload(&[1.0f32; 4]).unwrap();
    let mut c = dev2.alloc::<f32>(4).unwrap();
    let e = dev2
        .launch(
            &k,
            &LaunchConfig::new(1, 4),
            &[
                Arg::input(&a),
                Arg::input(&b),
                Arg::output(&mut c),
                0u32.into(),
                4u32.into(),
            ],
        )
        .unwrap_err();
    assert!(matches!(e, Error::ForeignBuffer { .. }), "{e}");
    still_usable(&dev2);
}

#[test]
fn host_slice_length_mismatch() {
    let (_rt, dev) = cpu();
    let host = [1.0f32, 2.0, 3.0];
    let mut b = dev.upload(&host).unwrap();
    let e = b.write(&[1.0f32; 5]).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { host: 5, buffer: 3, .. }), "{e}");
    let mut out = [9.0f32; 2];
    let e = b.read(&mut out).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { host: 2, buffer: 3, .. }), "{e}");
    assert_eq!(out, [9.0; 2], "host slice untouched");
    assert_eq!(b.to_vec().unwrap(), host.to_vec(), "buffer untouched");
    still_usable(&dev);
}

fn launch_err(dev: &Device, cfg: LaunchConfig) -> Error {
    let k = kernels::noop().unwrap();
    dev.launch(&k, &cfg, &[0u32.into(), 0u32.into()]).unwrap_err()
}

#[test]
fn launch_config_limits() {
    let (_rt, dev) = cpu();
    let info = dev.info().clone();
    let e = launch_err(&dev, LaunchConfig::new(1, 0));
    assert!(
        matches!(e, Error::LaunchConfig { .. }) && e.to_string().contains("0 threads"),
        "{e}"
    );
    let e = launch_err(&dev, LaunchConfig::new(1, (info.max_threads_per_block / 2, 4)));
    assert!(
        e.to_string()
            .contains(&format!("maximum of {}", info.max_threads_per_block)),
        "{e}"
    );
    let e = launch_err(&dev, LaunchConfig::new(1, 1).shared(u32::MAX));
    assert!(
        e.to_string().contains("shared/local memory") && e.to_string().contains(&info.local_mem_bytes.to_string()),
        "{e}"
    );
    let e = launch_err(&dev, LaunchConfig::new(u32::MAX, 1 << 16));
    assert!(e.to_string().contains("exceeds the device limit"), "{e}");
    let e = launch_err(&dev, LaunchConfig::new(0, 1));
    assert!(e.to_string().contains("0 blocks"), "{e}");
    still_usable(&dev);
}

#[test]
fn grid_and_block_limits_of_a_gpu_shaped_device() {
    // The validation is backend-neutral: check it against GPU-like limits too.
    let (_rt, dev) = cpu();
    let mut info = dev.info().clone();
    info.max_threads_per_block = 1024;
    info.max_block_dims = [1024, 1024, 64];
    info.max_grid_dims = [i32::MAX as u32, 65535, 65535];
    info.local_mem_bytes = 48 * 1024;
    let check = |c: LaunchConfig| c.validate(&info, "k", 0).unwrap_err().to_string();
    assert!(check(LaunchConfig::new(1, 1025)).contains("1024 threads per block"));
    assert!(check(LaunchConfig::new(1, (1, 1, 65))).contains("block dimension z = 65 exceeds the device limit 64"));
    assert!(
        check(LaunchConfig::new((1, 65536), 1)).contains("grid dimension y = 65536 exceeds the device limit 65535")
    );
    assert!(check(LaunchConfig::new(1, 32).shared(49 * 1024)).contains("49152"));
    assert!(LaunchConfig::new(1, 32).validate(&info, "k", 4096).is_ok());
    assert!(LaunchConfig::new(1, 32).validate(&info, "k", 48 * 1024 + 1).is_err());
}

#[test]
fn allocation_above_max() {
    let (_rt, dev) = cpu();
    let max = dev.info().max_alloc_bytes;
    let e = dev.alloc::<f32>((max / 4 + 1) as usize).unwrap_err();
    assert!(
        matches!(e, Error::OutOfMemory { .. }) && e.to_string().contains(&max.to_string()),
        "{e}"
    );
    let e = dev.alloc::<f64>(usize::MAX).unwrap_err();
    assert!(matches!(e, Error::OutOfMemory { .. }), "{e}");
    still_usable(&dev);
}

#[test]
fn use_after_teardown() {
    let (rt, dev) = cpu();
    let mut b = dev.upload(&[1.0f32; 8]).unwrap();
    dev.close().unwrap();
    assert!(matches!(dev.alloc::<f32>(4), Err(Error::Closed { .. })));
    assert!(matches!(b.write(&[2.0; 8]), Err(Error::Closed { .. })));
    assert!(matches!(b.to_vec(), Err(Error::Closed { .. })));
    let e = launch_err(&dev, LaunchConfig::new(1, 1));
    assert!(
        matches!(e, Error::Closed { .. }) && e.to_string().contains("cpu:0"),
        "{e}"
    );
    // Closing twice is fine, and so is closing the runtime afterwards.
    dev.close().unwrap();
    rt.close().unwrap();
}

#[test]
fn cpu_kernel_panic_is_caught_and_pool_stays_healthy() {
    let (_rt, dev) = cpu();
    let k = Kernel::builder("boom")
        .param(Param::buffer::<f32>(
            "x",
            Access::Write,
            Split::Elementwise { per_item: 1 },
        ))
        .param(Param::Offset)
        .param(Param::Count)
        .cpu(|ctx| {
            if ctx.items().contains(&5000) {
                panic!("item 5000 is cursed");
            }
            for v in ctx.output::<f32>(0) {
                *v = 1.0;
            }
        })
        .build()
        .unwrap();
    let mut x = dev.alloc::<f32>(100_000).unwrap();
    for _ in 0..3 {
        let cfg = LaunchConfig::for_items(100_000, dev.info());
        let e = dev
            .launch(&k, &cfg, &[Arg::output(&mut x), 0u32.into(), 100_000u32.into()])
            .unwrap_err();
        assert!(
            matches!(e, Error::KernelPanic { .. }) && e.to_string().contains("cursed"),
            "{e}"
        );
    }
    still_usable(&dev);
    // A large launch still spreads over the pool and completes.
    let mut rng = common::Rng::fresh("after_panic");
    let n = 1 << 20;
    let a = rng.vec_f32(n, -1.0, 1.0);
    let da = dev.upload(&a).unwrap();
    let mut dc = dev.alloc::<f32>(n).unwrap();
    let k = kernels::vector_add().unwrap();
    dev.launch(
        &k,
        &LaunchConfig::for_items(n, dev.info()),
        &[
            Arg::input(&da),
            Arg::input(&da),
            Arg::output(&mut dc),
            0u32.into(),
            (n as u32).into(),
        ],
    )
    .unwrap();
    let reference: Vec<f64> = a.iter().map(|x| 2.0 * *x as f64).collect();
    common::assert_close("after panic", &dc.to_vec().unwrap(), &reference, 0.0);
}

#[test]
fn invalid_kernel_definitions() {
    let e = Kernel::builder("none").build().unwrap_err();
    assert!(e.to_string().contains("no implementation"), "{e}");
    let e = Kernel::builder("bad")
        .param(Param::buffer::<f32>("x", Access::Write, Split::Broadcast))
        .cpu(|_| {})
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("Broadcast buffer must be read-only"), "{e}");
}

/// Two runtimes each have a `cpu:0`: an error about a buffer of one used on the
/// other names the runtimes, so the two labels in the message differ.
#[test]
fn foreign_buffer_between_runtimes_names_both_runtimes() {
    let rt1 = Runtime::builder()
        .backends(&[offload::BackendKind::Cpu])
        .build()
        .unwrap();
    let rt2 = Runtime::builder()
        .backends(&[offload::BackendKind::Cpu])
        .build()
        .unwrap();
    assert_ne!(rt1.number(), rt2.number());
    let (dev1, dev2) = (rt1.device("cpu:0").unwrap(), rt2.device("cpu:0").unwrap());
    assert_eq!(dev1.label(), dev2.label());
    let k = kernels::vector_add().unwrap();
    let a = dev1.upload(&[1.0f32; 4]).unwrap();
    let b = dev2.upload(&[1.0f32; 4]).unwrap();
    let mut c = dev2.alloc::<f32>(4).unwrap();
    let e = dev2
        .launch(
            &k,
            &LaunchConfig::new(1, 4),
            &[
                Arg::input(&a),
                Arg::input(&b),
                Arg::output(&mut c),
                0u32.into(),
                4u32.into(),
            ],
        )
        .unwrap_err();
    let msg = e.to_string();
    let Error::ForeignBuffer { owner, device, .. } = e else {
        panic!("expected Error::ForeignBuffer, got {msg}");
    };
    assert_ne!(owner, device, "{msg}");
    assert_eq!(owner, format!("cpu:0 of runtime #{}", rt1.number()), "{msg}");
    assert_eq!(device, format!("cpu:0 of runtime #{}", rt2.number()), "{msg}");
}
