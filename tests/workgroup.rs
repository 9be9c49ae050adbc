//! The CPU work-group model's bad input: a barrier skipped by some items, an atomic
//! write outside the declared extent and too little local memory are typed errors
//! (`Error::KernelPanic` naming the kernel and the limit), never undefined
//! behaviour; groups on several workers each get their own local memory.

mod common;

use common::{devices_of, runtime};
use offload::{Arg, BackendKind, Error, GroupCtx, Kernel, LaunchConfig, Param, Runtime, kernels};

fn cpu_rt(threads: usize) -> Runtime {
    Runtime::builder()
        .cpu_threads(threads)
        .backends(&[BackendKind::Cpu])
        .build()
        .unwrap()
}

fn expect_panic(r: offload::Result<()>, kernel: &str, words: &[&str]) {
    match r {
        Err(Error::KernelPanic { kernel: k, message }) => {
            assert_eq!(k, kernel);
            for w in words {
                assert!(message.contains(w), "{w:?} missing from {message:?}");
            }
        }
        other => panic!("expected KernelPanic from {kernel}, got {other:?}"),
    }
}

/// Items 0..half retire (a device `return`), then the group hits a barrier.
#[test]
fn a_barrier_skipped_by_some_items_is_an_error() {
    let k = Kernel::builder("skips_barrier")
        .param(Param::output::<f32>("out"))
        .cpu_groups(|g: &mut GroupCtx<'_>| {
            let out = g.atomic::<f32>(0);
            let half = g.threads() / 2;
            g.phase(|items| {
                for t in items {
                    out.store(t, 1.0);
                }
            });
            g.retire(half);
            g.barrier();
        })
        .build()
        .unwrap();
    let rt = cpu_rt(2);
    let dev = rt.device("cpu").unwrap();
    let mut out = dev.alloc::<f32>(64).unwrap();
    let r = dev.launch(&k, &LaunchConfig::new(1u32, 64u32), &[Arg::output(&mut out)]);
    expect_panic(r, "skips_barrier", &["barrier 1", "items 32..64"]);
    // Retiring after the last barrier is fine (the device code returns early).
    let ok = Kernel::builder("retires_late")
        .param(Param::output::<f32>("out"))
        .cpu_groups(|g: &mut GroupCtx<'_>| {
            let out = g.atomic::<f32>(0);
            g.barrier();
            g.retire(1);
            g.phase(|items| {
                for t in items {
                    out.store(t, 2.0);
                }
            });
        })
        .build()
        .unwrap();
    dev.launch(&ok, &LaunchConfig::new(1u32, 64u32), &[Arg::output(&mut out)])
        .unwrap();
    assert_eq!(out.to_vec().unwrap()[..2], [2.0, 1.0]);
}

/// An atomic add one past the declared extent (one element per group) fails and
/// names the parameter and the extent, even though the buffer is longer.
#[test]
fn a_write_outside_the_declared_extent_is_an_error() {
    let k = Kernel::builder("overshoots")
        .param(Param::output::<u32>("per_group"))
        .extent("per_group", offload::Extent::Groups { per: 1 })
        .cpu_groups(|g: &mut GroupCtx<'_>| {
            let out = g.atomic::<u32>(0);
            out.add(g.group_linear() as usize + 1, 1);
        })
        .build()
        .unwrap();
    let rt = cpu_rt(2);
    let dev = rt.device("cpu").unwrap();
    let mut out = dev.alloc::<u32>(100).unwrap();
    let r = dev.launch(&k, &LaunchConfig::new(4u32, 8u32), &[Arg::output(&mut out)]);
    expect_panic(r, "overshoots", &["element 4", "\"per_group\"", "extent of 4"]);
    // The groups below the limit ran their adds before the failing one stopped the launch,
    // or not at all; nothing past the extent was touched.
    assert!(out.to_vec().unwrap()[4..].iter().all(|v| *v == 0));
}

/// `reduce_tree` given less local memory than its block: an error on the CPU.
#[test]
fn too_little_local_memory_is_an_error() {
    let rt = cpu_rt(1);
    let dev = rt.device("cpu").unwrap();
    let k = kernels::reduce_tree().unwrap();
    let x = dev.upload(&vec![1.0f32; 1000]).unwrap();
    let mut partial = dev.alloc::<f32>(4).unwrap();
    let r = dev.launch(
        &k,
        &LaunchConfig::new(4u32, 64u32),
        &[
            Arg::input(&x),
            Arg::output(&mut partial),
            Arg::local(32),
            1000u32.into(),
        ],
    );
    expect_panic(r, "reduce_tree", &["scratch holds 32", "64 items"]);
}

/// Local memory is private to a group: every group fills its scratch with its own
/// id, passes a barrier, and checks nobody else wrote it, on 4 workers.
#[test]
fn local_memory_is_private_to_each_group() {
    let k = Kernel::builder("private_locals")
        .param(Param::output::<u32>("bad"))
        .param(Param::local::<u32>("scratch"))
        .extent("bad", offload::Extent::Groups { per: 1 })
        .cpu_groups(|g: &mut GroupCtx<'_>| {
            let bad = g.atomic::<u32>(0);
            let scratch = g.local::<u32>(1);
            let id = g.group_linear() as u32;
            let [x, y, z] = g.group_id();
            let [gx, gy, _] = g.grid();
            assert_eq!(id, x + gx * (y + gy * z));
            g.phase(|items| scratch[items].fill(id));
            g.barrier();
            for _ in 0..50 {
                std::hint::black_box(&mut *scratch);
            }
            let wrong = g.phase(|items| scratch[items].iter().filter(|v| **v != id).count());
            bad.store(id as usize, wrong as u32);
        })
        .build()
        .unwrap();
    let rt = cpu_rt(4);
    let dev = rt.device("cpu").unwrap();
    let cfg = LaunchConfig::new((8u32, 4u32, 2u32), (4u32, 4u32, 2u32));
    let mut bad = dev.upload(&vec![u32::MAX; 64]).unwrap();
    dev.launch(&k, &cfg, &[Arg::output(&mut bad), Arg::local(32)]).unwrap();
    assert_eq!(bad.to_vec().unwrap(), vec![0u32; 64]);
}

/// The work-group kernels report a CPU implementation, and the same kernel
/// object launches on every device present.
#[test]
fn work_group_kernels_support_the_cpu() {
    let rt = runtime();
    for k in [kernels::reduce_tree().unwrap(), kernels::reduce_atomic().unwrap()] {
        assert!(k.supports(BackendKind::Cpu), "{}", k.name());
        assert!(k.cpu_group_fn().is_some() && k.cpu_fn().is_none());
    }
    assert!(!devices_of(&rt, BackendKind::Cpu).is_empty());
}
