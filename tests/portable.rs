//! Portable device sources: one C file, the prelude's macros, compiled by NVRTC
//! and run on every OpenCL device; a source that fails in one dialect says which.

mod common;

use common::{devices_of, runtime};
use offload::portable::{Dialect, cuda_source, dialect_of, opencl_source};
use offload::{Access, Arg, BackendKind, Device, Error, Kernel, LaunchConfig, Param, Split, kernels};

/// Every prelude feature in one file: 3-D ids and sizes, a `Local` parameter,
/// a static local array, barriers, integer and float atomics, math.
const PRELUDE_TOUR: &str = include_str!("common/prelude_tour.c");

fn group_sum() -> Kernel {
    let one = Split::Elementwise { per_item: 1 };
    let b = Kernel::builder("group_sum")
        .param(Param::buffer::<f32>("x", Access::Read, Split::Broadcast))
        .param(Param::buffer::<f32>("total", Access::ReadWrite, one))
        .param(Param::buffer::<u32>("groups", Access::ReadWrite, one))
        .param(Param::buffer::<i32>("last", Access::ReadWrite, one))
        .param(Param::local::<f32>("scratch"))
        .param(Param::scalar::<u32>("n"))
        .param(Param::scalar::<u32>("slots"))
        .extent_from("x", &["n"], 1)
        .extent_from("total", &["slots"], 1)
        .extent_from("groups", &["slots"], 1)
        .extent_from("last", &["slots"], 1);
    // SAFETY: the test source reads x[i] only for i < n, and touches only element 0
    // of total/groups/last (extent `slots`, launched as 1) and scratch[0..block).
    unsafe { b.portable(PRELUDE_TOUR, "group_sum") }.build().unwrap()
}

fn ids3() -> Kernel {
    let b = Kernel::builder("ids3")
        .param(Param::buffer::<f32>(
            "out",
            Access::Write,
            Split::Elementwise { per_item: 1 },
        ))
        .param(Param::scalar::<u32>("n"));
    // SAFETY: writes out[i] only for i < n ≤ grid × block (the checked extent).
    unsafe { b.portable(PRELUDE_TOUR, "ids3") }.build().unwrap()
}

fn run_group_sum(dev: &Device) {
    let k = group_sum();
    let n = 1000usize;
    let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let want: f32 = x.iter().sum();
    let block = 64u32;
    let grid = (n as u32).div_ceil(block);
    let dx = dev.upload(&x).unwrap();
    let mut total = dev.upload(&[0.0f32]).unwrap();
    let mut groups = dev.upload(&[0u32]).unwrap();
    let mut last = dev.upload(&[-1i32]).unwrap();
    dev.launch(
        &k,
        &LaunchConfig::new(grid, block),
        &[
            Arg::input(&dx),
            Arg::output(&mut total),
            Arg::output(&mut groups),
            Arg::output(&mut last),
            Arg::local(block as usize),
            (n as u32).into(),
            1u32.into(),
        ],
    )
    .unwrap();
    assert_eq!(total.to_vec().unwrap(), vec![want], "{}", dev.label());
    assert_eq!(groups.to_vec().unwrap(), vec![grid], "{}", dev.label());
    assert_eq!(last.to_vec().unwrap(), vec![grid as i32 - 1], "{}", dev.label());
}

fn run_ids3(dev: &Device) {
    let k = ids3();
    let (grid, block) = ((3u32, 2u32, 2u32), (4u32, 2u32, 2u32));
    let (w, h, d) = (12usize, 4usize, 4usize);
    let n = w * h * d;
    let mut out = dev.upload(&vec![f32::NAN; n]).unwrap();
    dev.launch(
        &k,
        &LaunchConfig::new(grid, block),
        &[Arg::output(&mut out), (n as u32).into()],
    )
    .unwrap();
    let got = out.to_vec().unwrap();
    for z in 0..d {
        for y in 0..h {
            for x in 0..w {
                let want = (x as f32).mul_add(2.0, y as f32) + (z as f32).max(0.5) * 100.0;
                assert_eq!(got[x + w * (y + h * z)], want, "({x},{y},{z}) on {}", dev.label());
            }
        }
    }
}

#[test]
fn prelude_tour_runs_on_every_opencl_device() {
    let rt = runtime();
    let devs = devices_of(&rt, BackendKind::OpenCl);
    for dev in &devs {
        run_group_sum(dev);
        run_ids3(dev);
    }
    println!("ran on {} OpenCL device(s)", devs.len());
}

#[test]
fn dialects_are_named_and_distinct() {
    let k = ids3();
    let cuda = k.cuda_source().unwrap();
    let ocl = k.opencl_source().unwrap();
    assert_eq!(dialect_of(&cuda.code), Some(Dialect::Cuda));
    assert_eq!(dialect_of(&ocl.code), Some(Dialect::OpenCl));
    assert_eq!(cuda.code, cuda_source(PRELUDE_TOUR, "ids3.c"));
    assert_eq!(ocl.code, opencl_source(PRELUDE_TOUR, "ids3.c"));
}

/// A source that uses an OpenCL-only name builds on OpenCL; a CUDA-only name
/// fails there, and the error says the OpenCL dialect failed, with the log.
#[test]
fn a_source_failing_in_the_opencl_dialect_says_so() {
    let rt = runtime();
    let b = Kernel::builder("cuda_only").param(Param::buffer::<f32>(
        "x",
        Access::Write,
        Split::Elementwise { per_item: 1 },
    ));
    let src = "KERNEL void cuda_only(GLOBAL float* x) { x[threadIdx.x] = 1.0f; }\n";
    // SAFETY: never launched; it only has to fail to build.
    let k = unsafe { b.portable(src, "cuda_only") }.build().unwrap();
    for dev in devices_of(&rt, BackendKind::OpenCl) {
        match dev.build(&k) {
            Err(Error::Build { kernel, log, .. }) => {
                assert_eq!(kernel, "cuda_only");
                assert!(log.starts_with("portable source compiled as OpenCL C"), "{log}");
                assert!(log.contains("threadIdx"), "the log does not show the error: {log}");
                assert!(
                    log.contains("cuda_only.c:1"),
                    "the log does not point at the kernel's line: {log}"
                );
            }
            other => panic!("expected a build error on {}, got {other:?}", dev.label()),
        }
    }
}

/// An atomic the OpenCL dialect lacks is a build error naming the dialect.
#[test]
fn an_atomic_the_dialect_lacks_is_a_build_error_naming_it() {
    let rt = runtime();
    let b = Kernel::builder("f64_atomic").param(Param::buffer::<f64>(
        "x",
        Access::ReadWrite,
        Split::Elementwise { per_item: 1 },
    ));
    let src = "KERNEL void f64_atomic(GLOBAL double* x) { ATOMIC_ADD_F64(x, 1.0); }\n";
    // SAFETY: never launched.
    let k = unsafe { b.portable(src, "f64_atomic") }.build().unwrap();
    for dev in devices_of(&rt, BackendKind::OpenCl) {
        let err = dev.build(&k).expect_err("ATOMIC_ADD_F64 must not build on OpenCL");
        let text = err.to_string();
        assert!(text.contains("not_available_in_the_OpenCL_dialect"), "{text}");
    }
}

#[test]
fn extent_of_a_fixed_slot_is_checked() {
    // `slots` = 1 declares the single accumulator; a launch saying 2 is refused.
    let rt = runtime();
    for dev in devices_of(&rt, BackendKind::OpenCl) {
        let k = group_sum();
        let dx = dev.upload(&[1.0f32; 64]).unwrap();
        let mut t = dev.upload(&[0.0f32]).unwrap();
        let mut g = dev.upload(&[0u32]).unwrap();
        let mut l = dev.upload(&[0i32]).unwrap();
        let r = dev.launch(
            &k,
            &LaunchConfig::new(1u32, 64u32),
            &[
                Arg::input(&dx),
                Arg::output(&mut t),
                Arg::output(&mut g),
                Arg::output(&mut l),
                Arg::local(64),
                64u32.into(),
                2u32.into(),
            ],
        );
        assert!(r.is_err(), "an accumulator shorter than its extent was accepted");
    }
}

/// One built-in kernel's small launch: its buffers (in parameter order), scalars
/// (in parameter order), the `Local` length if it has one, the item count, an
/// optional launch shape, and the tolerance against the CPU device.
struct Case {
    bufs: Vec<Vec<f32>>,
    scalars: Vec<offload::Scalar>,
    local: usize,
    items: usize,
    cfg: Option<LaunchConfig>,
    tol: f64,
}

fn case_for(name: &str, rng: &mut common::Rng) -> (Kernel, Case) {
    let k = |r: offload::Result<Kernel>| r.unwrap();
    let case = |bufs, scalars, items| Case {
        bufs,
        scalars,
        local: 0,
        items,
        cfg: None,
        tol: 1e-6,
    };
    match name {
        "noop" => (k(kernels::noop()), case(vec![], vec![], 1000)),
        "vector_add" => {
            let n = 1003;
            let bufs = vec![rng.vec_f32(n, -1.0, 1.0), rng.vec_f32(n, -1.0, 1.0), vec![f32::NAN; n]];
            (k(kernels::vector_add()), case(bufs, vec![], n))
        }
        "stream_triad" => {
            let n = 1003;
            let bufs = vec![vec![f32::NAN; n], rng.vec_f32(n, -1.0, 1.0), rng.vec_f32(n, -1.0, 1.0)];
            (k(kernels::stream_triad()), case(bufs, vec![3.0f32.into()], n))
        }
        "fma_peak" => {
            let n = 300;
            let scalars = vec![0.999f32.into(), 0.001f32.into(), 64u32.into()];
            (k(kernels::fma_peak()), case(vec![vec![f32::NAN; n]], scalars, n))
        }
        "gemm_naive" | "gemm_tiled" | "gemm_regblock" => {
            let (m, n, kk) = (45usize, 37usize, 29usize);
            let kernel = match name {
                "gemm_naive" => kernels::gemm_naive(n, kk),
                "gemm_tiled" => kernels::gemm_tiled(n, kk),
                _ => kernels::gemm_regblock(n, kk),
            };
            let bufs = vec![
                rng.vec_f32(m * kk, -1.0, 1.0),
                rng.vec_f32(kk * n, -1.0, 1.0),
                vec![f32::NAN; m * n],
            ];
            let scalars = vec![(n as u32).into(), (kk as u32).into()];
            (
                k(kernel),
                Case {
                    tol: 1e-5,
                    ..case(bufs, scalars, m)
                },
            )
        }
        "gemm_tile" => {
            let t = 24usize;
            let bufs = vec![
                rng.vec_f32(t * t, -1.0, 1.0),
                rng.vec_f32(t * t, -1.0, 1.0),
                rng.vec_f32(t * t, -1.0, 1.0),
            ];
            (
                k(kernels::gemm_tile()),
                Case {
                    tol: 1e-5,
                    ..case(bufs, vec![(t as u32).into()], t * t)
                },
            )
        }
        "jacobi" => {
            let (w, h) = (23usize, 17usize);
            let bufs = vec![rng.vec_f32(w * h, -1.0, 1.0), vec![f32::NAN; w * h]];
            let s = |v: usize| offload::Scalar::from(v as u32);
            let scalars = vec![s(w), s(0), s(w * h), s(0), s(h)];
            // Bitwise equal on every backend.
            (
                k(kernels::jacobi()),
                Case {
                    tol: 0.0,
                    ..case(bufs, scalars, w * h)
                },
            )
        }
        "nbody" => {
            let n = 300usize;
            let mut pos = rng.vec_f32(4 * n, -1.0, 1.0);
            pos.iter_mut().skip(3).step_by(4).for_each(|m| *m = m.abs() + 0.1);
            let bufs = vec![pos, vec![f32::NAN; 4 * n]];
            (
                k(kernels::nbody()),
                Case {
                    tol: 1e-5,
                    ..case(bufs, vec![(n as u32).into(), 0.01f32.into()], n)
                },
            )
        }
        "nbody_kdk" => {
            let n = 301usize;
            let bufs = vec![
                rng.vec_f32(4 * n, -1.0, 1.0),
                rng.vec_f32(3 * n, -1.0, 1.0),
                rng.vec_f32(4 * n, -1.0, 1.0),
            ];
            (
                k(kernels::nbody_kdk()),
                Case {
                    tol: 1e-6,
                    ..case(bufs, vec![0.01f32.into(), 0.02f32.into()], n)
                },
            )
        }
        "reduce_tree" => {
            let (n, groups, block) = (1000usize, 6u32, 64u32);
            let bufs = vec![rng.vec_f32(n, -1.0, 1.0), vec![f32::NAN; groups as usize]];
            let c = Case {
                local: block as usize,
                cfg: Some(LaunchConfig::new(groups, block)),
                tol: 1e-5,
                ..case(bufs, vec![(n as u32).into()], n)
            };
            (k(kernels::reduce_tree()), c)
        }
        "reduce_atomic" => {
            let n = 1000usize;
            let bufs = vec![rng.vec_f32(n, -1.0, 1.0), vec![0.0f32]];
            let c = Case {
                cfg: Some(LaunchConfig::new(6, 64)),
                tol: 1e-5,
                ..case(bufs, vec![(n as u32).into(), 1u32.into()], n)
            };
            (k(kernels::reduce_atomic()), c)
        }
        other => panic!("no case for the built-in kernel {other:?}: add one to this test"),
    }
}

/// The same kernel from its portable source alone: the built-in's parameters and
/// extents, without the host-CPU OpenCL variant (so host-CPU devices build the
/// portable source too).
fn portable_only(builtin: &Kernel) -> Kernel {
    let src = kernels::sources(builtin.name()).unwrap();
    let body = src
        .portable
        .unwrap_or_else(|| panic!("{} has no portable source", builtin.name()));
    let mut b = Kernel::builder(builtin.name());
    for p in builtin.params() {
        b = b.param(p.clone());
    }
    for (i, p) in builtin.params().iter().enumerate() {
        if matches!(p, Param::Buffer { .. }) {
            b = b.extent(p.name(), builtin.extent(i).clone());
        }
    }
    // SAFETY: the built-in's own audited source, with the built-in's declared
    // parameters and extents.
    unsafe { b.portable(body, builtin.name()) }.build().unwrap()
}

/// Run `case` on `dev`; the written buffers come back.
fn run_case(dev: &Device, kernel: &Kernel, case: &Case) -> Vec<Vec<f32>> {
    let mut bufs: Vec<_> = case.bufs.iter().map(|b| dev.upload(b).unwrap()).collect();
    let mut held = bufs.iter_mut();
    let mut scalars = case.scalars.iter();
    let mut args = Vec::new();
    for p in kernel.params() {
        match p {
            Param::Buffer { access, .. } => {
                let b = held.next().expect("a buffer per buffer parameter");
                if access.writes() {
                    args.push(Arg::output(b));
                } else {
                    args.push(Arg::input(&*b));
                }
            }
            Param::Local { .. } => args.push(Arg::local(case.local)),
            Param::Scalar { .. } => args.push(Arg::Scalar(*scalars.next().expect("a scalar per scalar parameter"))),
            Param::Offset | Param::Count => {}
        }
    }
    let what = format!("{} on {}", kernel.name(), dev.label());
    match &case.cfg {
        Some(cfg) => dev.launch_items_with(kernel, cfg, case.items, args),
        None => dev.launch_items(kernel, case.items, args),
    }
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    bufs.iter()
        .zip(kernel.params().iter().filter(|p| matches!(p, Param::Buffer { .. })))
        .filter(|(_, p)| matches!(p, Param::Buffer { access, .. } if access.writes()))
        .map(|(b, _)| b.to_vec().unwrap())
        .collect()
}

/// Every built-in kernel is one portable source, and that source runs on every
/// OpenCL and CUDA device (host-CPU variants set aside) with the result of the CPU
/// device.
#[test]
fn every_builtin_portable_source_runs_on_every_device() {
    let rt = runtime();
    let cpu = devices_of(&rt, BackendKind::Cpu);
    let mut ocl = devices_of(&rt, BackendKind::OpenCl);
    ocl.extend(devices_of(&rt, BackendKind::Cuda));
    let mut rng = common::Rng::fresh("every_builtin_portable_source_runs_on_every_device");
    let mut ran = 0;
    for src in kernels::CATALOGUE {
        assert!(
            src.portable.is_some(),
            "{} has no portable source in kernels/",
            src.name
        );
        let (builtin, case) = case_for(src.name, &mut rng);
        let portable = portable_only(&builtin);
        for c in &cpu {
            let want = run_case(c, &builtin, &case);
            for dev in &ocl {
                let got = run_case(dev, &portable, &case);
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(&want) {
                    let reference: Vec<f64> = w.iter().map(|v| *v as f64).collect();
                    let what = format!("{} (portable source) on {} vs {}", src.name, dev.label(), c.label());
                    if case.tol == 0.0 {
                        assert!(
                            g.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{what}: not bitwise equal"
                        );
                    } else {
                        common::assert_close(&what, g, &reference, case.tol);
                    }
                }
                ran += 1;
            }
        }
    }
    println!("{ran} portable built-in runs on OpenCL and CUDA devices");
}
