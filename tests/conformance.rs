//! The conformance suite: the same cases on every device of every backend
//! (the queue and event cases are in `tests/queue.rs`, also run on every device).
//!
//! `conformance!` instantiates every case once per backend (CubeCL's `testgen_all!`
//! pattern). A backend with no device is skipped with a printed line, unless
//! `OFFLOAD_REQUIRE` names it: then the test fails.

mod common;

use common::{Rng, assert_close, devices_of, runtime};
use offload::{Arg, BackendKind, Device, Error, LaunchConfig, kernels};

fn vector_add_sizes(dev: &Device) {
    let mut rng = Rng::fresh("vector_add_sizes");
    for n in [1usize, 7, 1000, 4099, 65_537, 1 << 20] {
        common::vector_add_ok(dev, n, &mut rng);
    }
}

/// Grids that overshoot the item count, and blocks that are not warp multiples.
fn vector_add_odd_configs(dev: &Device) {
    let mut rng = Rng::fresh("vector_add_odd_configs");
    let k = kernels::vector_add().unwrap();
    let n = 3001;
    let a = rng.vec_f32(n, -1.0, 1.0);
    let b = rng.vec_f32(n, -1.0, 1.0);
    let reference: Vec<f64> = a.iter().zip(&b).map(|(x, y)| *x as f64 + *y as f64).collect();
    let da = dev.upload(&a).unwrap();
    let db = dev.upload(&b).unwrap();
    let max = dev.info().max_threads_per_block.min(dev.info().max_block_dims[0]);
    for block in [1u32, 3, 32, 33, 64, 100, 128, 256] {
        if block > max {
            continue;
        }
        let mut dc = dev.upload(&vec![f32::NAN; n]).unwrap();
        let grid = (n as u32).div_ceil(block) + 2;
        let cfg = LaunchConfig::new(grid, block);
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
        )
        .unwrap();
        assert_close(
            &format!("block {block} on {}", dev.label()),
            &dc.to_vec().unwrap(),
            &reference,
            1e-6,
        );
    }
}

/// Partial copies in and out land where they should; the rest stays intact.
fn partial_copies(dev: &Device) {
    let mut rng = Rng::fresh("partial_copies");
    let full = rng.vec_f32(1000, 1.0, 2.0);
    let mut buf = dev.upload(&full).unwrap();
    let patch = rng.vec_f32(100, 5.0, 6.0);
    buf.write_at(450, &patch, "patch").unwrap();
    let mut expect = full.clone();
    expect[450..550].copy_from_slice(&patch);
    assert_eq!(buf.to_vec().unwrap(), expect);
    let mut part = vec![f32::NAN; 10];
    buf.read_at(545, &mut part, "part").unwrap();
    assert_eq!(&part[..], &expect[545..555]);
    // Out-of-range partial copies are typed errors and leave the buffer as it was.
    assert!(matches!(
        buf.write_at(995, &patch, "x"),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        buf.read_at(usize::MAX, &mut part, "x"),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!(buf.to_vec().unwrap(), expect);
}

/// Launches that carry no data still complete; the empty kernel runs in any shape.
fn noop_shapes(dev: &Device) {
    let k = kernels::noop().unwrap();
    for (g, b) in [((1, 1, 1), (1, 1, 1)), ((4, 2, 1), (8, 2, 1)), ((2, 2, 2), (4, 2, 2))] {
        dev.launch(&k, &LaunchConfig::new(g, b), &[0u32.into(), 0u32.into()])
            .unwrap();
    }
}

/// The profile records every stage of a launch on this device.
fn profile_records_stages(dev: &Device) {
    let before = dev.profiler().snapshot().records.len();
    let mut rng = Rng::fresh("profile_records_stages");
    common::vector_add_ok(dev, 5000, &mut rng);
    let p = dev.profiler().snapshot();
    let mine: Vec<_> = p.records[before..].iter().filter(|r| r.device == dev.label()).collect();
    use offload::profile::Stage;
    for s in [Stage::HostToDevice, Stage::Kernel, Stage::DeviceToHost] {
        assert!(mine.iter().any(|r| r.stage == s), "no {s:?} record on {}", dev.label());
    }
    let h2d: u64 = mine
        .iter()
        .filter(|r| r.stage == Stage::HostToDevice)
        .map(|r| r.bytes)
        .sum();
    assert_eq!(h2d, 3 * 5000 * 4, "h2d bytes on {}", dev.label());
}

/// Eight threads launching on one device at once all get correct results.
fn concurrent_launches(dev: &Device) {
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let dev = dev.clone();
            s.spawn(move || {
                let mut rng = Rng(t * 7919 + 17);
                for _ in 0..5 {
                    let n = 1000 + rng.below(50_000) as usize;
                    common::vector_add_ok(&dev, n, &mut rng);
                }
            });
        }
    });
}

/// Work-group launch shapes shared by every device: 2-D and 3-D blocks, a block
/// that is not a power of two, a grid smaller than the work (grid-stride loops).
fn group_configs() -> Vec<LaunchConfig> {
    vec![
        LaunchConfig::new((4u32, 3u32), (16u32, 16u32)),
        LaunchConfig::new(5u32, 64u32),
        LaunchConfig::new((3u32, 2u32, 1u32), (8u32, 4u32, 2u32)),
        LaunchConfig::new(7u32, 48u32),
    ]
}

/// The tiled SGEMM (16 × 16 local-memory tiles): a work-group kernel on the CPU,
/// the same portable source on OpenCL and CUDA, the same launches everywhere.
fn gemm_tiled_work_groups(dev: &Device) {
    let mut rng = Rng::fresh("gemm_tiled_work_groups");
    let (m, n, k) = (70usize, 45usize, 37usize);
    let a = rng.vec_f32(m * k, -1.0, 1.0);
    let b = rng.vec_f32(k * n, -1.0, 1.0);
    let mut want = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
        }
    }
    let kernel = kernels::gemm_tiled(n, k).unwrap();
    let da = dev.upload(&a).unwrap();
    let db = dev.upload(&b).unwrap();
    for cfg in group_configs() {
        let mut dc = dev.upload(&vec![f32::NAN; m * n]).unwrap();
        dev.launch(
            &kernel,
            &cfg,
            &[
                Arg::input(&da),
                Arg::input(&db),
                Arg::output(&mut dc),
                (n as u32).into(),
                (k as u32).into(),
                0u32.into(),
                (m as u32).into(),
            ],
        )
        .unwrap();
        assert_close(
            &format!("gemm_tiled {cfg:?} on {}", dev.label()),
            &dc.to_vec().unwrap(),
            &want,
            1e-5,
        );
    }
}

/// The local-memory tree reduction: one partial sum per work-group.
fn reduce_tree_work_groups(dev: &Device) {
    let mut rng = Rng::fresh("reduce_tree_work_groups");
    let n = 10_007usize;
    let x = rng.vec_f32(n, 0.0, 1.0);
    let kernel = kernels::reduce_tree().unwrap();
    let dx = dev.upload(&x).unwrap();
    for cfg in group_configs() {
        let groups = cfg.blocks().unwrap() as usize;
        let threads = cfg.threads_per_block() as usize;
        let all = groups * threads;
        let mut want = vec![0.0f64; groups];
        for (i, v) in x.iter().enumerate() {
            want[(i % all) / threads] += *v as f64;
        }
        let mut partial = dev.upload(&vec![f32::NAN; groups]).unwrap();
        dev.launch(
            &kernel,
            &cfg,
            &[
                Arg::input(&dx),
                Arg::output(&mut partial),
                Arg::local(threads),
                (n as u32).into(),
            ],
        )
        .unwrap();
        assert_close(
            &format!("reduce_tree {cfg:?} on {}", dev.label()),
            &partial.to_vec().unwrap(),
            &want,
            1e-5,
        );
    }
}

/// The one-pass atomic reduction (float atomic add), into 1 and 7 lanes.
fn reduce_atomic_work_groups(dev: &Device) {
    let mut rng = Rng::fresh("reduce_atomic_work_groups");
    let n = 10_007usize;
    let x = rng.vec_f32(n, 0.0, 1.0);
    let kernel = kernels::reduce_atomic().unwrap();
    let dx = dev.upload(&x).unwrap();
    for cfg in group_configs() {
        for lanes in [1usize, 7] {
            let all = cfg.total_threads().unwrap() as usize;
            let mut want = vec![0.0f64; lanes];
            for (i, v) in x.iter().enumerate() {
                want[(i % all) % lanes] += *v as f64;
            }
            let mut total = dev.upload(&vec![0.0f32; lanes]).unwrap();
            dev.launch(
                &kernel,
                &cfg,
                &[
                    Arg::input(&dx),
                    Arg::output(&mut total),
                    (n as u32).into(),
                    (lanes as u32).into(),
                ],
            )
            .unwrap();
            let what = format!("reduce_atomic {cfg:?} lanes {lanes} on {}", dev.label());
            assert_close(&what, &total.to_vec().unwrap(), &want, 1e-5);
        }
    }
}

macro_rules! conformance {
    ($backend:ident, $kind:expr, [$($case:ident),* $(,)?]) => {
        mod $backend {
            use super::*;
            $(
                #[test]
                fn $case() {
                    let rt = runtime();
                    let devs = devices_of(&rt, $kind);
                    for d in &devs {
                        println!("{} on {} ({})", stringify!($case), d.label(), d.info().name);
                        super::$case(d);
                    }
                }
            )*
        }
    };
}

macro_rules! conformance_all {
    ($($backend:ident => $kind:expr),* $(,)?) => {$(
        conformance!($backend, $kind, [
            vector_add_sizes,
            vector_add_odd_configs,
            partial_copies,
            noop_shapes,
            profile_records_stages,
            concurrent_launches,
            gemm_tiled_work_groups,
            reduce_tree_work_groups,
            reduce_atomic_work_groups,
        ]);
    )*};
}

conformance_all!(cpu => BackendKind::Cpu, opencl => BackendKind::OpenCl, cuda => BackendKind::Cuda);
