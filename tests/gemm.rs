//! The GEMM ladder: every rung on every device (CPU, OpenCL/PoCL, CUDA where
//! present) against a float64 reference for odd sizes, odd launch shapes, a split
//! over devices through the scheduler, the host SGEMM, and refused launches.

mod common;

use common::{Rng, assert_close};
use offload::kernels::{self, GemmRung, SgemmIsa};
use offload::schedule::{HostArg, Policy, Scheduler};
use offload::{Arg, BackendKind, Device, Error, Kernel, LaunchConfig, Runtime};

/// Odd sizes `(m, n, k)`: none a multiple of any tile.
const SIZES: [(usize, usize, usize); 4] = [(1, 1, 1), (17, 33, 65), (100, 70, 130), (3, 129, 17)];
const TOL: f64 = 1e-5;

fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let av = a[i * k + p] as f64;
            for j in 0..n {
                c[i * n + j] += av * b[p * n + j] as f64;
            }
        }
    }
    c
}

/// Launch `kernel` for rows `0..m` with `cfg`, the output poisoned with NaN first.
#[allow(clippy::too_many_arguments)]
fn launch(
    dev: &Device,
    kernel: &Kernel,
    cfg: &LaunchConfig,
    (m, _n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    c_len: usize,
    n_arg: usize,
) -> offload::Result<Vec<f32>> {
    let da = dev.upload(a)?;
    let db = dev.upload(b)?;
    let mut dc = dev.upload(&vec![f32::NAN; c_len])?;
    dev.launch(
        kernel,
        cfg,
        &[
            Arg::input(&da),
            Arg::input(&db),
            Arg::output(&mut dc),
            (n_arg as u32).into(),
            (k as u32).into(),
            0u32.into(),
            (m as u32).into(),
        ],
    )?;
    dc.to_vec()
}

#[test]
fn every_rung_on_every_device_matches_float64() {
    let rt = common::runtime();
    let mut rng = Rng::fresh("every_rung_on_every_device");
    let mut ran = 0;
    for dev in common::devices(&rt) {
        for rung in GemmRung::ALL {
            for &(m, n, k) in &SIZES {
                let kern = rung.kernel(n, k).unwrap();
                if !kern.supports(dev.backend()) {
                    continue;
                }
                let a = rng.vec_f32(m * k, -1.0, 1.0);
                let b = rng.vec_f32(k * n, -1.0, 1.0);
                let cfg = rung.launch_config(m, n, dev.info());
                let c = launch(&dev, &kern, &cfg, (m, n, k), &a, &b, m * n, n)
                    .unwrap_or_else(|e| panic!("{} {m}×{n}×{k} on {}: {e}", rung.name(), dev.label()));
                let what = format!("{} {m}×{n}×{k} on {}", rung.name(), dev.label());
                assert_close(&what, &c, &reference(m, n, k, &a, &b), TOL);
                ran += 1;
            }
        }
    }
    assert!(ran >= 16, "only {ran} cases ran");
}

#[test]
fn the_opencl_rungs_run_on_an_opencl_device() {
    let rt = common::runtime();
    let devs = common::devices_of(&rt, BackendKind::OpenCl);
    let Some(dev) = devs.first() else { return };
    let mut rng = Rng::fresh("opencl_rungs");
    let (m, n, k) = (100, 70, 130);
    for rung in [GemmRung::Naive, GemmRung::Tiled, GemmRung::RegBlock] {
        let kern = rung.kernel(n, k).unwrap();
        let a = rng.vec_f32(m * k, -1.0, 1.0);
        let b = rng.vec_f32(k * n, -1.0, 1.0);
        let cfg = rung.launch_config(m, n, dev.info());
        let c = launch(dev, &kern, &cfg, (m, n, k), &a, &b, m * n, n).unwrap();
        assert_close(rung.name(), &c, &reference(m, n, k, &a, &b), TOL);
    }
}

#[test]
fn odd_launch_shapes_are_correct() {
    // Blocks smaller than a tile (several passes per tile), not dividing it, and
    // larger than it; a grid of fewer blocks than tiles (grid-stride loops).
    let rt = common::runtime();
    let mut rng = Rng::fresh("odd_launch_shapes");
    let (m, n, k) = (67, 45, 33);
    let a = rng.vec_f32(m * k, -1.0, 1.0);
    let b = rng.vec_f32(k * n, -1.0, 1.0);
    let want = reference(m, n, k, &a, &b);
    for dev in common::devices(&rt) {
        let max = dev.info().max_threads_per_block;
        for rung in [GemmRung::Naive, GemmRung::Tiled, GemmRung::RegBlock] {
            let kern = rung.kernel(n, k).unwrap();
            for block in [16u32, 96, 512] {
                if block > max {
                    continue;
                }
                let cfg = LaunchConfig::new((m as u32).div_ceil(block), block);
                let c = launch(&dev, &kern, &cfg, (m, n, k), &a, &b, m * n, n).unwrap();
                let what = format!("{} blocks of {block} on {}", rung.name(), dev.label());
                assert_close(&what, &c, &want, TOL);
            }
        }
    }
}

#[test]
fn rows_split_over_devices_match_float64() {
    let rt = common::runtime();
    let devs = common::devices(&rt);
    let mut rng = Rng::fresh("rows_split_over_devices");
    let (m, n, k) = (301, 77, 95);
    for kern in [kernels::gemm(n, k).unwrap(), kernels::gemm_regblock(n, k).unwrap()] {
        for policy in [Policy::Dynamic { chunk: 40 }, Policy::HGuided { k: 2.0, min_chunk: 8 }] {
            let a = rng.vec_f32(m * k, -1.0, 1.0);
            let b = rng.vec_f32(k * n, -1.0, 1.0);
            let mut c = vec![f32::NAN; m * n];
            let mut s = Scheduler::new(&devs)
                .unwrap()
                .allow_shared_cores(true)
                .with_policy(policy)
                .in_memory_model();
            let report = s
                .run(
                    &kern,
                    m,
                    &mut [
                        HostArg::input(&a),
                        HostArg::input(&b),
                        HostArg::output(&mut c),
                        HostArg::scalar(n as u32),
                        HostArg::scalar(k as u32),
                    ],
                )
                .unwrap_or_else(|e| panic!("{} split: {e}", kern.name()));
            let what = format!("{} split over {} devices ({policy:?})", kern.name(), devs.len());
            assert_close(&what, &c, &reference(m, n, k, &a, &b), TOL);
            assert_eq!(report.total_items(), m, "{what}\n{report}");
            println!("{what}\n{report}");
        }
    }
}

#[test]
fn rows_split_over_two_cpu_devices() {
    // Two CPU devices always exist: the split path runs even without OpenCL.
    let rts: Vec<Runtime> = (0..2)
        .map(|_| {
            Runtime::builder()
                .cpu_threads(1)
                .backends(&[BackendKind::Cpu])
                .build()
                .unwrap()
        })
        .collect();
    let devs: Vec<Device> = rts.iter().map(|r| r.device("cpu").unwrap()).collect();
    let mut rng = Rng::fresh("rows_split_over_two_cpu_devices");
    let (m, n, k) = (257, 49, 300);
    let a = rng.vec_f32(m * k, -1.0, 1.0);
    let b = rng.vec_f32(k * n, -1.0, 1.0);
    let mut c = vec![f32::NAN; m * n];
    let kern = kernels::gemm_packed(n, k).unwrap();
    let mut s = Scheduler::new(&devs)
        .unwrap()
        .allow_shared_cores(true)
        .with_policy(Policy::Dynamic { chunk: 50 })
        .in_memory_model();
    let report = s
        .run(
            &kern,
            m,
            &mut [
                HostArg::input(&a),
                HostArg::input(&b),
                HostArg::output(&mut c),
                HostArg::scalar(n as u32),
                HostArg::scalar(k as u32),
            ],
        )
        .unwrap();
    assert_close(
        "packed split over two CPU devices",
        &c,
        &reference(m, n, k, &a, &b),
        TOL,
    );
    assert_eq!(report.total_items(), m);
    assert_eq!(report.devices.len(), 2, "{report}");
}

#[test]
fn host_sgemm_matches_float64_on_every_isa_and_thread_count() {
    let mut rng = Rng::fresh("host_sgemm");
    for isa in [SgemmIsa::Avx512, SgemmIsa::Avx2, SgemmIsa::Portable] {
        if !isa.available() {
            println!("SKIP {}: this CPU lacks it", isa.name());
            assert!(kernels::sgemm_host_isa(isa, 1, 1, 1, &[1.0], &[1.0], &mut [0.0], 1).is_err());
            continue;
        }
        for &(m, n, k) in SIZES.iter().chain(&[(130, 97, 1100), (64, 96, 256)]) {
            for threads in [1, 2, 3] {
                let a = rng.vec_f32(m * k, -1.0, 1.0);
                let b = rng.vec_f32(k * n, -1.0, 1.0);
                let mut c = vec![f32::NAN; m * n];
                kernels::sgemm_host_isa(isa, m, n, k, &a, &b, &mut c, threads).unwrap();
                let what = format!("sgemm {} {m}×{n}×{k} on {threads} threads", isa.name());
                assert_close(&what, &c, &reference(m, n, k, &a, &b), TOL);
            }
        }
    }
    assert_eq!(
        SgemmIsa::detect() == SgemmIsa::Portable,
        !SgemmIsa::Avx2.available() && !SgemmIsa::Avx512.available()
    );
}

#[test]
fn out_of_bounds_launches_are_refused_and_the_device_stays_usable() {
    let rt = common::runtime();
    let mut rng = Rng::fresh("out_of_bounds");
    let (m, n, k) = (20, 24, 16);
    let a = rng.vec_f32(m * k, -1.0, 1.0);
    let b = rng.vec_f32(k * n, -1.0, 1.0);
    let wide_b = rng.vec_f32(k * (n + 8), -1.0, 1.0);
    let want = reference(m, n, k, &a, &b);
    for dev in common::devices(&rt) {
        for rung in GemmRung::ALL {
            let kern = rung.kernel(n, k).unwrap();
            if !kern.supports(dev.backend()) {
                continue;
            }
            let cfg = rung.launch_config(m, n, dev.info());
            let what = format!("{} on {}", rung.name(), dev.label());
            // C one row short of count × n.
            let e = launch(&dev, &kern, &cfg, (m, n, k), &a, &b, (m - 1) * n, n).unwrap_err();
            assert!(
                matches!(&e, Error::BufferTooShort { param, .. } if param == "c"),
                "{what}: {e}"
            );
            // A one element short of count × k.
            let e = launch(&dev, &kern, &cfg, (m, n, k), &a[1..], &b, m * n, n).unwrap_err();
            assert!(
                matches!(&e, Error::BufferTooShort { param, .. } if param == "a"),
                "{what}: {e}"
            );
            // B one element short of k × n.
            let e = launch(&dev, &kern, &cfg, (m, n, k), &a, &b[1..], m * n, n).unwrap_err();
            assert!(
                matches!(&e, Error::BufferTooShort { param, .. } if param == "b"),
                "{what}: {e}"
            );
            // An n other than the built one (the split layout depends on it).
            let e = launch(&dev, &kern, &cfg, (m, n, k), &a, &wide_b, m * (n + 8), n + 8).unwrap_err();
            assert!(matches!(&e, Error::InvalidArgument { .. }), "{what}: {e}");
            // And the device still computes correctly.
            let c = launch(&dev, &kern, &cfg, (m, n, k), &a, &b, m * n, n).unwrap();
            assert_close(&format!("{what} after refusals"), &c, &want, TOL);
        }
    }
    // Sizes a kernel cannot be built for, and host slices of the wrong length.
    assert!(kernels::gemm_naive(0, 4).is_err());
    assert!(kernels::gemm_tiled(4, 0).is_err());
    assert!(GemmRung::parse("fastest").is_err());
    assert_eq!(GemmRung::parse("cpu-packed").unwrap(), GemmRung::Packed);
    let mut c = vec![0.0; 4];
    assert!(kernels::sgemm_host(2, 2, 2, &[0.0; 3], &[0.0; 4], &mut c, 1).is_err());
    assert!(kernels::sgemm_host(2, 2, 2, &[0.0; 4], &[0.0; 5], &mut c, 1).is_err());
}
