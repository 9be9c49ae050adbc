//! Soundness: what the library checks so that no safe program can reach memory it
//! does not own, on every available device (DESIGN.md, "Soundness"). Each test
//! here is a launch that, unchecked, reads or writes outside a buffer, aliases an
//! output, or hands a kernel a misaligned slice.

mod common;

use common::Rng;
use offload::{
    Access, Arg, BackendKind, Device, Dim3, Error, Extent, Kernel, LaunchConfig, Param, Runtime, Split, kernels,
};

fn all() -> (Runtime, Vec<Device>) {
    let rt = common::runtime();
    let devs = common::devices(&rt);
    (rt, devs)
}

/// vector_add with the given buffers and count.
fn vadd(
    dev: &Device,
    a: &offload::Buffer<f32>,
    b: &offload::Buffer<f32>,
    c: &mut offload::Buffer<f32>,
    count: u32,
) -> offload::Result<()> {
    let k = kernels::vector_add()?;
    let cfg = LaunchConfig::for_items(count as usize, dev.info());
    dev.launch(
        &k,
        &cfg,
        &[Arg::input(a), Arg::input(b), Arg::output(c), 0u32.into(), count.into()],
    )
}

#[test]
fn a_count_beyond_the_buffers_is_refused_before_anything_runs() {
    let (_rt, devs) = all();
    let mut rng = Rng::fresh("oob");
    for d in &devs {
        let a = d.upload(&rng.vec_f32(16, 1.0, 2.0)).unwrap();
        let b = d.upload(&rng.vec_f32(16, 1.0, 2.0)).unwrap();
        let poison = vec![-7.0f32; 16];
        let mut c = d.upload(&poison).unwrap();
        for count in [17u32, 64, 1 << 20] {
            let e = vadd(d, &a, &b, &mut c, count).unwrap_err();
            match &e {
                Error::BufferTooShort { param, len, needed, .. } => {
                    assert_eq!((param.as_str(), *len, *needed), ("a", 16, count as u64), "{e}");
                    let msg = e.to_string();
                    assert!(
                        msg.contains("vector_add") && msg.contains("16") && msg.contains(&count.to_string()),
                        "{msg}"
                    );
                }
                other => panic!(
                    "{}: count {count} on 16-element buffers: expected BufferTooShort, got {other:?}",
                    d.label()
                ),
            }
            // Nothing ran: the output is untouched.
            assert_eq!(c.to_vec().unwrap(), poison, "{}", d.label());
        }
        // A short output alone is caught too.
        let a2 = d.upload(&rng.vec_f32(32, 1.0, 2.0)).unwrap();
        let b2 = d.upload(&rng.vec_f32(32, 1.0, 2.0)).unwrap();
        let e = vadd(d, &a2, &b2, &mut c, 32).unwrap_err();
        assert!(matches!(&e, Error::BufferTooShort { param, .. } if param == "c"), "{e}");
        // The exact fit runs.
        vadd(d, &a, &b, &mut c, 16).unwrap();
        common::vector_add_ok(d, 1000, &mut rng);
    }
}

/// A CPU kernel without `Count`: its buffers' extent is the whole grid.
fn fill_kernel(per_item: usize) -> Kernel {
    Kernel::builder("fill_items")
        .param(Param::buffer::<f32>(
            "out",
            Access::Write,
            Split::Elementwise { per_item },
        ))
        .cpu(move |ctx| {
            let items = ctx.items();
            let out = ctx.output::<f32>(0);
            assert_eq!(out.len(), items.len() * per_item, "one call's share of the output");
            for (k, v) in out.iter_mut().enumerate() {
                // Each element is written once, with the item that owns it.
                *v += (items.start + k / per_item) as f32 + 1.0;
            }
        })
        .build()
        .unwrap()
}

#[test]
fn a_grid_beyond_the_buffer_is_refused_and_outputs_never_overlap() {
    let rt = Runtime::builder()
        .backends(&[BackendKind::Cpu])
        .cpu_threads(2)
        .build()
        .unwrap();
    let d = rt.device("cpu").unwrap();
    for per_item in [1usize, 2, 3] {
        let k = fill_kernel(per_item);
        let blocks = 512u32;
        let block = 64u32;
        let items = (blocks * block) as usize;
        // One element short of grid × block × per_item.
        let mut short = d.alloc::<f32>(items * per_item - 1).unwrap();
        let e = d
            .launch(&k, &LaunchConfig::new(blocks, block), &[Arg::output(&mut short)])
            .unwrap_err();
        assert!(matches!(e, Error::BufferTooShort { .. }), "{e}");
        // Spread over the pool, every element is written exactly once (concurrent
        // calls were handed disjoint ranges whose layout came from the signature).
        let mut out = d.alloc::<f32>(items * per_item).unwrap();
        for _ in 0..20 {
            d.launch(&k, &LaunchConfig::new(blocks, block), &[Arg::output(&mut out)])
                .unwrap();
        }
        let v = out.to_vec().unwrap();
        for (e, x) in v.iter().enumerate() {
            assert_eq!(
                *x,
                20.0 * ((e / per_item) as f32 + 1.0),
                "element {e}, per_item {per_item}"
            );
        }
    }
}

#[test]
fn declared_extents_from_scalars_and_groups_are_checked() {
    let k = Kernel::builder("scaled")
        .param(Param::buffer::<f32>("x", Access::Read, Split::Broadcast))
        .param(Param::buffer::<f32>(
            "partial",
            Access::Write,
            Split::Elementwise { per_item: 1 },
        ))
        .param(Param::scalar::<u32>("w"))
        .param(Param::scalar::<i32>("h"))
        .extent_from("x", &["w", "h"], 2)
        .extent("partial", Extent::Groups { per: 1 })
        .cpu(|ctx| {
            let _ = ctx.input::<f32>(0);
        })
        .build()
        .unwrap();
    let rt = Runtime::builder().backends(&[BackendKind::Cpu]).build().unwrap();
    let d = rt.device("cpu").unwrap();
    let x = d.upload(&vec![1.0f32; 2 * 6 * 5]).unwrap();
    let mut p = d.alloc::<f32>(4).unwrap();
    let cfg = LaunchConfig::new(4, 32);
    let run = |p: &mut offload::Buffer<f32>, w: u32, h: i32, cfg: &LaunchConfig| {
        d.launch(&k, cfg, &[Arg::input(&x), Arg::output(p), w.into(), h.into()])
    };
    run(&mut p, 6, 5, &cfg).unwrap();
    // A negative scalar counts as zero.
    run(&mut p, 6, -5, &cfg).unwrap();
    let e = run(&mut p, 6, 6, &cfg).unwrap_err();
    assert!(
        matches!(&e, Error::BufferTooShort { param, needed: 72, len: 60, .. } if param == "x"),
        "{e}"
    );
    assert!(e.to_string().contains("w = 6 × h = 6 × 2"), "{e}");
    let e = run(&mut p, 6, 5, &LaunchConfig::new(5, 32)).unwrap_err();
    assert!(
        matches!(&e, Error::BufferTooShort { param, .. } if param == "partial"),
        "{e}"
    );
    // Extents naming something that is not an integer scalar are refused at build.
    let bad = Kernel::builder("bad")
        .param(Param::buffer::<f32>("x", Access::Read, Split::Broadcast))
        .param(Param::scalar::<f32>("s"))
        .extent_from("x", &["s"], 1)
        .cpu(|_| {})
        .build()
        .unwrap_err();
    assert!(matches!(bad, Error::InvalidInput(_)), "{bad}");
}

#[test]
fn an_output_given_for_a_read_parameter_is_read_only() {
    // The kernel asks for a written view of its read-only parameter 0.
    let k = Kernel::builder("sneaky")
        .param(Param::buffer::<f32>(
            "x",
            Access::Read,
            Split::Elementwise { per_item: 1 },
        ))
        .cpu(|ctx| {
            let w = ctx.output::<f32>(0);
            let r = ctx.input::<f32>(0);
            w[0] = r[0] + 1.0;
        })
        .build()
        .unwrap();
    let rt = Runtime::builder().backends(&[BackendKind::Cpu]).build().unwrap();
    let d = rt.device("cpu").unwrap();
    let mut x = d.upload(&[5.0f32; 8]).unwrap();
    let e = d
        .launch(&k, &LaunchConfig::new(1, 8), &[Arg::output(&mut x)])
        .unwrap_err();
    assert!(
        matches!(&e, Error::KernelPanic { message, .. } if message.contains("not a written buffer")),
        "{e}"
    );
    assert_eq!(x.to_vec().unwrap(), vec![5.0f32; 8]);
}

#[test]
fn asking_for_the_wrong_element_type_is_a_caught_panic() {
    let k = Kernel::builder("wrong_type")
        .param(Param::buffer::<f32>(
            "x",
            Access::Write,
            Split::Elementwise { per_item: 1 },
        ))
        .cpu(|ctx| {
            let _ = ctx.output::<u8>(0);
        })
        .build()
        .unwrap();
    let rt = Runtime::builder().backends(&[BackendKind::Cpu]).build().unwrap();
    let d = rt.device("cpu").unwrap();
    let mut x = d.alloc::<f32>(8).unwrap();
    let e = d
        .launch(&k, &LaunchConfig::new(1, 8), &[Arg::output(&mut x)])
        .unwrap_err();
    assert!(
        matches!(&e, Error::KernelPanic { message, .. } if message.contains("asked as u8")),
        "{e}"
    );
}

#[test]
fn empty_buffers_work_on_every_device() {
    let (_rt, devs) = all();
    for d in &devs {
        let a = d.alloc::<f32>(0).unwrap();
        let b = d.upload::<f32>(&[]).unwrap();
        let mut c = d.alloc::<f32>(0).unwrap();
        vadd(d, &a, &b, &mut c, 0).unwrap_or_else(|e| panic!("{}: {e}", d.label()));
        assert!(c.to_vec().unwrap().is_empty());
    }
}

/// A Pod type with an alignment above the 64 bytes of every CPU allocation.
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(128))]
struct Wide([f32; 32]);

#[test]
fn slices_are_aligned_for_their_type_including_empty_ones() {
    let k = Kernel::builder("aligned")
        .param(Param::buffer::<Wide>("x", Access::Read, Split::Broadcast))
        .param(Param::buffer::<Wide>(
            "y",
            Access::Write,
            Split::Elementwise { per_item: 1 },
        ))
        .param(Param::buffer::<u64>("z", Access::Read, Split::Broadcast))
        .cpu(|ctx| {
            let x = ctx.input::<Wide>(0);
            let y = ctx.output::<Wide>(1);
            let z = ctx.input::<u64>(2);
            assert_eq!(x.as_ptr() as usize % 128, 0, "input misaligned");
            assert_eq!(y.as_ptr() as usize % 128, 0, "output misaligned");
            assert_eq!(z.as_ptr() as usize % 8, 0, "u64 input misaligned");
            for (o, i) in y.iter_mut().zip(x) {
                *o = *i;
            }
        })
        .build()
        .unwrap();
    let rt = Runtime::builder().backends(&[BackendKind::Cpu]).build().unwrap();
    let d = rt.device("cpu").unwrap();
    for n in 0..17usize {
        let host: Vec<Wide> = (0..n).map(|i| Wide([i as f32; 32])).collect();
        let x = d.upload(&host).unwrap();
        let z = d.alloc::<u64>(n).unwrap();
        let mut y = d.alloc::<Wide>(n).unwrap();
        // A block of 1 item per launch, and at least one block.
        let cfg = LaunchConfig::new(n.max(1) as u32, 1);
        if n == 0 {
            let e = d
                .launch(&k, &cfg, &[Arg::input(&x), Arg::output(&mut y), Arg::input(&z)])
                .unwrap_err();
            assert!(matches!(e, Error::BufferTooShort { .. }), "{e}");
            continue;
        }
        d.launch(&k, &cfg, &[Arg::input(&x), Arg::output(&mut y), Arg::input(&z)])
            .unwrap_or_else(|e| panic!("n = {n}: {e}"));
        assert_eq!(y.to_vec().unwrap(), host, "n = {n}");
    }
    // Zero-length buffers of an over-aligned type still give aligned (empty) slices.
    let k0 = Kernel::builder("aligned0")
        .param(Param::buffer::<Wide>("x", Access::Read, Split::Broadcast))
        .cpu(|ctx| {
            let x = ctx.input::<Wide>(0);
            assert!(x.is_empty());
            assert_eq!(x.as_ptr() as usize % 128, 0, "empty input misaligned");
        })
        .build()
        .unwrap();
    let x = d.alloc::<Wide>(0).unwrap();
    d.launch(&k0, &LaunchConfig::new(1, 1), &[Arg::input(&x)]).unwrap();
}

#[test]
fn grid_volumes_that_overflow_are_launch_config_errors() {
    let (_rt, devs) = all();
    let k = kernels::noop().unwrap();
    let huge = LaunchConfig::new(Dim3::new(u32::MAX, u32::MAX, u32::MAX), 1);
    assert_eq!(huge.total_threads(), None);
    assert_eq!(huge.blocks(), None);
    let wide = LaunchConfig::new(Dim3::new(u32::MAX, u32::MAX, u32::MAX), Dim3::new(2, 2, 2));
    assert_eq!(wide.total_threads(), None);
    for d in &devs {
        for cfg in [huge, wide] {
            let e = d.launch(&k, &cfg, &[0u32.into(), 0u32.into()]).unwrap_err();
            assert!(matches!(e, Error::LaunchConfig { .. }), "{}: {e}", d.label());
        }
    }
}

#[test]
fn nbody_refuses_a_softening_that_is_not_finite_and_positive() {
    let (_rt, devs) = all();
    let k = kernels::nbody().unwrap();
    for d in &devs {
        let pos = d.upload(&[0.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]).unwrap();
        let mut acc = d.alloc::<f32>(8).unwrap();
        let cfg = kernels::nbody_launch_config(2, d.info());
        for eps2 in [f32::INFINITY, f32::NAN, 0.0, -1.0, f32::NEG_INFINITY] {
            let e = d
                .launch(
                    &k,
                    &cfg,
                    &[
                        Arg::input(&pos),
                        Arg::output(&mut acc),
                        2u32.into(),
                        eps2.into(),
                        0u32.into(),
                        2u32.into(),
                    ],
                )
                .unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument { why, .. } if why.contains("eps2")),
                "{}: eps2 = {eps2}: {e}",
                d.label()
            );
        }
        // `n` larger than `pos` holds is an out-of-bounds read: refused.
        let e = d
            .launch(
                &k,
                &cfg,
                &[
                    Arg::input(&pos),
                    Arg::output(&mut acc),
                    3u32.into(),
                    0.01f32.into(),
                    0u32.into(),
                    2u32.into(),
                ],
            )
            .unwrap_err();
        assert!(
            matches!(&e, Error::BufferTooShort { param, .. } if param == "pos"),
            "{e}"
        );
    }
}

const DIM_SRC: &str = r#"
__kernel void dims(__global uint* out) {
    if (get_global_id(0) == 0 && get_global_id(1) == 0 && get_global_id(2) == 0) {
        out[0] = get_work_dim();
        out[1] = VALUE;
    }
}
"#;

#[test]
fn a_launch_keeps_its_dimension_count_and_options_apply_in_any_order() {
    let rt = common::runtime();
    let devs = common::devices_of(&rt, BackendKind::OpenCl);
    // Options given before the source are kept.
    // SAFETY: writes out[0], out[1] only; the launches below give 2 elements per thread.
    let k = unsafe {
        Kernel::builder("dims")
            .param(Param::buffer::<u32>(
                "out",
                Access::Write,
                Split::Elementwise { per_item: 2 },
            ))
            .opencl_options(&["-DVALUE=41"])
            .opencl(DIM_SRC, "dims")
    }
    .build()
    .unwrap();
    assert_eq!(k.opencl_source().unwrap().options, vec!["-DVALUE=41".to_string()]);
    for d in &devs {
        for (cfg, want) in [
            (LaunchConfig::new(4, 1), 1u32),
            (LaunchConfig::new((4, 1), (1, 1)), 2),
            (LaunchConfig::new(Dim3::d2(4, 1), 1), 2),
            (LaunchConfig::new(Dim3::new(4, 1, 1), 1), 3),
            (LaunchConfig::new(1, Dim3::new(1, 1, 1)), 3),
        ] {
            assert_eq!(cfg.work_dim(), want);
            let mut out = d.alloc::<u32>(2 * cfg.total_threads().unwrap() as usize).unwrap();
            d.launch(&k, &cfg, &[Arg::output(&mut out)]).unwrap();
            let v = out.to_vec().unwrap();
            assert_eq!((v[0], v[1]), (want, 41), "{}: {cfg:?}", d.label());
        }
    }
}
