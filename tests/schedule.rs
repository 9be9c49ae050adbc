//! The scheduler on several independent CPU devices (and OpenCL/CUDA devices
//! where present): correctness for every policy, bad input, the persisted
//! performance model, shares that follow device speed, and profiling records.

mod common;

use common::{Rng, assert_close};
use offload::schedule::{FaultPlan, HostArg, PerfModel, Policy, Scheduler, inject_faults};
use offload::{Access, BackendKind, CpuCtx, Device, Error, Kernel, Param, Runtime, Split, kernels};

/// `n` single-thread CPU runtimes (independent devices).
/// Tests here time devices against each other (shares follow measured speed), so
/// they run one at a time: a neighbour test's threads would skew the timings.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn cpu_runtimes(n: usize) -> Vec<Runtime> {
    (0..n)
        .map(|_| {
            Runtime::builder()
                .cpu_threads(1)
                .backends(&[BackendKind::Cpu])
                .build()
                .expect("CPU runtime")
        })
        .collect()
}

fn devices(rts: &[Runtime]) -> Vec<Device> {
    rts.iter().map(|r| r.device("cpu").expect("cpu device")).collect()
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "offload-sched-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

const POLICIES: [Policy; 5] = [
    Policy::Static,
    Policy::Dynamic { chunk: 0 },
    Policy::Dynamic { chunk: 1000 },
    Policy::HGuided { k: 2.0, min_chunk: 0 },
    Policy::HGuided { k: 3.0, min_chunk: 64 },
];

fn vector_add_case(sched: &mut Scheduler, rng: &mut Rng, n: usize, what: &str) -> offload::schedule::SplitReport {
    let k = kernels::vector_add().expect("vector_add");
    let a = rng.vec_f32(n, -100.0, 100.0);
    let b = rng.vec_f32(n, -100.0, 100.0);
    let mut c = vec![f32::NAN; n];
    let report = sched
        .run(
            &k,
            n,
            &mut [HostArg::input(&a), HostArg::input(&b), HostArg::output(&mut c)],
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let reference: Vec<f64> = a.iter().zip(&b).map(|(x, y)| *x as f64 + *y as f64).collect();
    assert_close(what, &c, &reference, 1e-6);
    assert_eq!(report.total_items(), n, "{what}: items delivered\n{report}");
    assert_eq!(report.items, n);
    report
}

#[test]
fn vector_add_split_matches_reference_for_every_policy() {
    let _serial = serial();
    let rts = cpu_runtimes(3);
    let devs = devices(&rts);
    let mut rng = Rng::fresh("vector_add_split");
    for ndev in [2, 3] {
        for policy in POLICIES {
            for n in [1, 17, 4096, 100_003, 1 << 20] {
                let mut s = Scheduler::new(&devs[..ndev])
                    .expect("scheduler")
                    .allow_shared_cores(true)
                    .with_policy(policy)
                    .in_memory_model();
                let what = format!("{ndev} devices, {policy}, {n} items");
                let r = vector_add_case(&mut s, &mut rng, n, &what);
                assert_eq!(r.devices.len(), ndev, "{what}");
                assert!(r.failures.is_empty(), "{what}: {r}");
                if n == 1 << 20 {
                    println!("{r}");
                }
            }
        }
    }
}

#[test]
fn every_available_device_together() {
    let _serial = serial();
    // OpenCL and CUDA devices join when present; the CPU is always there.
    let rt = common::runtime();
    let mut devs = common::devices(&rt);
    let extra = Runtime::builder()
        .cpu_threads(1)
        .backends(&[BackendKind::Cpu])
        .build()
        .unwrap();
    devs.push(extra.device("cpu").unwrap());
    let mut rng = Rng::fresh("every_available_device");
    for policy in POLICIES {
        let mut s = Scheduler::new(&devs)
            .unwrap()
            .allow_shared_cores(true)
            .with_policy(policy)
            .in_memory_model();
        let r = vector_add_case(&mut s, &mut rng, 300_001, &format!("all devices, {policy}"));
        assert!(r.failures.is_empty(), "{r}");
    }
}

/// `y[i] = x[i] * scale + table[(offset + i) % table_len]`: Elementwise in/out,
/// a Broadcast table, a scalar, and Offset/Count used for indexing.
fn table_kernel() -> Kernel {
    let each = Split::Elementwise { per_item: 1 };
    Kernel::builder("sched_table")
        .param(Param::buffer::<f32>("x", Access::Read, each))
        .param(Param::buffer::<f32>("table", Access::Read, Split::Broadcast))
        .param(Param::scalar::<f32>("scale"))
        .param(Param::buffer::<f32>("y", Access::Write, each))
        .param(Param::Offset)
        .param(Param::Count)
        .cpu(|ctx: &CpuCtx<'_>| {
            let items = ctx.items_below(ctx.count());
            let x = ctx.input::<f32>(0);
            let table = ctx.input::<f32>(1);
            let scale: f32 = ctx.scalar(2);
            let y = ctx.output::<f32>(3);
            let off = ctx.offset();
            for (j, i) in items.clone().enumerate() {
                y[j] = x[i] * scale + table[(off + i) % table.len()];
            }
        })
        .build()
        .unwrap()
}

/// `v[2i], v[2i+1] = 2 v[2i] + 1, v[2i+1] - 3` in place: a ReadWrite buffer with two elements per item.
fn in_place_kernel() -> Kernel {
    Kernel::builder("sched_in_place")
        .param(Param::buffer::<f32>(
            "v",
            Access::ReadWrite,
            Split::Elementwise { per_item: 2 },
        ))
        .param(Param::Offset)
        .param(Param::Count)
        .cpu(|ctx: &CpuCtx<'_>| {
            let n = ctx.items_below(ctx.count()).len();
            let v = ctx.output::<f32>(0);
            for p in v[..2 * n].chunks_exact_mut(2) {
                p[0] = 2.0 * p[0] + 1.0;
                p[1] -= 3.0;
            }
        })
        .build()
        .unwrap()
}

#[test]
fn broadcast_scalar_offset_and_read_write_buffers() {
    let _serial = serial();
    let rts = cpu_runtimes(3);
    let devs = devices(&rts);
    let mut rng = Rng::fresh("broadcast_scalar_offset");
    let k = table_kernel();
    let kip = in_place_kernel();
    for policy in POLICIES {
        let n = 50_021;
        let x = rng.vec_f32(n, -1.0, 1.0);
        let table = rng.vec_f32(97, 1.0, 2.0);
        let scale = rng.f32_in(0.5, 2.0);
        let mut y = vec![f32::NAN; n];
        let mut s = Scheduler::new(&devs)
            .unwrap()
            .allow_shared_cores(true)
            .with_policy(policy)
            .in_memory_model();
        s.run(
            &k,
            n,
            &mut [
                HostArg::input(&x),
                HostArg::input(&table),
                HostArg::scalar(scale),
                HostArg::output(&mut y),
            ],
        )
        .unwrap();
        let reference: Vec<f64> = (0..n)
            .map(|i| x[i] as f64 * scale as f64 + table[i % table.len()] as f64)
            .collect();
        assert_close(&format!("table kernel, {policy}"), &y, &reference, 1e-6);

        let v0 = rng.vec_f32(2 * n, -10.0, 10.0);
        let mut v = v0.clone();
        let r = s.run(&kip, n, &mut [HostArg::output(&mut v)]).unwrap();
        let reference: Vec<f64> = v0
            .chunks_exact(2)
            .flat_map(|p| [2.0 * p[0] as f64 + 1.0, p[1] as f64 - 3.0])
            .collect();
        assert_close(&format!("in-place kernel, {policy}\n{r}"), &v, &reference, 1e-6);
    }
}

#[test]
fn bad_input_gives_typed_errors_and_leaves_outputs_alone() {
    let _serial = serial();
    let rts = cpu_runtimes(2);
    let devs = devices(&rts);
    let k = kernels::vector_add().unwrap();
    let mut rng = Rng::fresh("bad_input");
    let a = rng.vec_f32(100, 1.0, 2.0);
    let b = rng.vec_f32(100, 1.0, 2.0);
    let short = rng.vec_f32(99, 1.0, 2.0);

    // Empty device set.
    assert!(matches!(Scheduler::new(&[]), Err(Error::InvalidInput(m)) if m.contains("empty")));

    let mut s = Scheduler::new(&devs)
        .unwrap()
        .allow_shared_cores(true)
        .in_memory_model();

    // Elementwise length ≠ items × per_item (input and output).
    let mut c = vec![f32::NAN; 100];
    let e = s
        .run(
            &k,
            100,
            &mut [HostArg::input(&short), HostArg::input(&b), HostArg::output(&mut c)],
        )
        .unwrap_err();
    assert!(
        matches!(&e, Error::LengthMismatch { host: 99, buffer: 100, what } if what.contains("\"a\"")),
        "{e}"
    );
    assert!(c.iter().all(|v| v.is_nan()), "output touched after an error");
    let mut c101 = vec![f32::NAN; 101];
    let e = s
        .run(
            &k,
            100,
            &mut [HostArg::input(&a), HostArg::input(&b), HostArg::output(&mut c101)],
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::LengthMismatch {
                host: 101,
                buffer: 100,
                ..
            }
        ),
        "{e}"
    );

    // Wrong argument count and type.
    let e = s
        .run(&k, 100, &mut [HostArg::input(&a), HostArg::input(&b)])
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::ArgCount {
                expected: 3,
                got: 2,
                ..
            }
        ),
        "{e}"
    );
    let ints = vec![1u32; 100];
    let e = s
        .run(
            &k,
            100,
            &mut [HostArg::input(&ints), HostArg::input(&b), HostArg::output(&mut c)],
        )
        .unwrap_err();
    assert!(matches!(e, Error::ArgType { index: 0, .. }), "{e}");
    let e = s
        .run(
            &k,
            100,
            &mut [HostArg::input(&a), HostArg::input(&b), HostArg::input(&b)],
        )
        .unwrap_err();
    assert!(matches!(e, Error::ArgType { index: 2, .. }), "{e}");

    // Zero items: defined, Ok with an empty report, outputs untouched.
    let (e0, f0) = (Vec::<f32>::new(), Vec::<f32>::new());
    let mut g0: Vec<f32> = Vec::new();
    let r = s
        .run(
            &k,
            0,
            &mut [HostArg::input(&e0), HostArg::input(&f0), HostArg::output(&mut g0)],
        )
        .unwrap();
    assert_eq!(r.items, 0);
    assert!(r.devices.is_empty() && r.failures.is_empty());

    // A kernel no device here can run.
    // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
    let gpu_only = unsafe {
        Kernel::builder("gpu_only")
            .param(Param::Offset)
            .param(Param::Count)
            .cuda(
                "extern \"C\" __global__ void gpu_only(unsigned o, unsigned c) {}",
                "gpu_only",
            )
    }
    .build()
    .unwrap();
    let e = s.run(&gpu_only, 10, &mut []).unwrap_err();
    assert!(
        matches!(&e, Error::NoCapableDevice { why, .. } if why.contains("no implementation for backend cpu")),
        "{e}"
    );

    // A kernel without Offset/Count cannot be split.
    let whole = Kernel::builder("whole").cpu(|_: &CpuCtx<'_>| {}).build().unwrap();
    assert!(matches!(s.run(&whole, 10, &mut []), Err(Error::InvalidInput(m)) if m.contains("Offset")));

    // Invalid policy parameters.
    let mut bad = Scheduler::new(&devs)
        .unwrap()
        .allow_shared_cores(true)
        .with_policy(Policy::HGuided { k: 0.5, min_chunk: 0 })
        .in_memory_model();
    let e = bad
        .run(
            &k,
            100,
            &mut [HostArg::input(&a), HostArg::input(&b), HostArg::output(&mut c)],
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(m) if m.contains("k = 0.5")));
    assert!(c.iter().all(|v| v.is_nan()));

    // The runtime stays usable after all of this.
    vector_add_case(&mut s, &mut rng, 1000, "after errors");
}

#[test]
fn devices_without_an_implementation_are_excluded_with_a_reason() {
    let _serial = serial();
    let rt = common::runtime();
    let other: Vec<Device> = rt
        .devices()
        .iter()
        .filter(|d| d.backend() != BackendKind::Cpu)
        .cloned()
        .collect();
    if other.is_empty() {
        println!("SKIP exclusion by backend: no OpenCL or CUDA device on this machine");
        return;
    }
    let cpu_only = table_kernel();
    let mut devs = vec![rt.device("cpu").unwrap()];
    devs.extend(other);
    let mut s = Scheduler::new(&devs)
        .unwrap()
        .allow_shared_cores(true)
        .in_memory_model();
    let mut rng = Rng::fresh("exclusion_by_backend");
    let n = 1000;
    let x = rng.vec_f32(n, 1.0, 2.0);
    let t = rng.vec_f32(7, 1.0, 2.0);
    let mut y = vec![f32::NAN; n];
    let r = s
        .run(
            &cpu_only,
            n,
            &mut [
                HostArg::input(&x),
                HostArg::input(&t),
                HostArg::scalar(1.5f32),
                HostArg::output(&mut y),
            ],
        )
        .unwrap();
    assert_eq!(r.excluded.len(), devs.len() - 1, "{r}");
    assert!(
        r.excluded
            .iter()
            .all(|e| e.reason.contains("no implementation for backend"))
    );
    assert!(y.iter().all(|v| v.is_finite()));
}

#[test]
fn model_persists_and_a_corrupt_file_is_recalibrated() {
    let _serial = serial();
    let rts = cpu_runtimes(2);
    let devs = devices(&rts);
    let dir = temp_dir("model");
    let path = dir.join("perf-model.json");
    let mut rng = Rng::fresh("model_persistence");

    // First use: every device is probed, the file appears with one entry per device.
    let mut s = Scheduler::new(&devs)
        .unwrap()
        .allow_shared_cores(true)
        .model_file(&path)
        .with_policy(Policy::default());
    assert!(s.model().is_empty());
    let r = vector_add_case(&mut s, &mut rng, 200_000, "first use");
    // Both devices share one key, so a device may find it calibrated by the other.
    assert!(r.devices.iter().map(|d| d.probes).sum::<usize>() >= 2, "{r}");
    let saved = PerfModel::load(&path);
    assert_eq!(saved.len(), 1, "both single-thread CPU devices share one key");
    let (key, est) = saved.entries().next().unwrap();
    assert!(key.starts_with("vector_add @ cpu:0"), "{key}");
    // The CPU device uses the host data in place: nothing is transferred, so the
    // model learns no bandwidth (0 means "no transfer cost").
    assert!(est.calibrated() && est.rate > 0.0 && est.bandwidth == 0.0, "{est:?}");

    // Round trip: a new scheduler reads it and skips the probes.
    let mut s2 = Scheduler::new(&devs)
        .unwrap()
        .allow_shared_cores(true)
        .model_file(&path);
    assert_eq!(s2.model().get(key).map(|e| e.calibrated()), Some(true));
    let r = vector_add_case(&mut s2, &mut rng, 200_000, "second use");
    assert!(r.devices.iter().all(|d| d.probes == 0), "{r}");

    // Corrupt and stale files are ignored (warning) and recalibrated, then rewritten.
    for junk in ["{ this is not json", r#"{"version": 999, "entries": {}}"#] {
        std::fs::write(&path, junk).unwrap();
        let mut s3 = Scheduler::new(&devs)
            .unwrap()
            .allow_shared_cores(true)
            .model_file(&path)
            .with_policy(Policy::Static);
        assert!(s3.model().is_empty(), "{junk}");
        let r = vector_add_case(&mut s3, &mut rng, 100_000, "after a corrupt model file");
        assert!(r.devices.iter().map(|d| d.probes).sum::<usize>() >= 2, "{r}");
        let fixed = PerfModel::load(&path);
        assert_eq!(fixed.len(), 1, "the file was rewritten with a valid model");
    }
    // An entry with impossible values is dropped on load.
    std::fs::write(
        &path,
        r#"{"version":1,"entries":{"x":{"rate":-1.0,"latency_s":0.0,"bandwidth":0.0,"samples":3}}}"#,
    )
    .unwrap();
    assert!(PerfModel::load(&path).is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

/// Compute-bound test kernel: each item runs `iters` steps of `y = y * a + b`.
fn poly_kernel() -> Kernel {
    let each = Split::Elementwise { per_item: 1 };
    Kernel::builder("sched_poly")
        .param(Param::buffer::<f32>("x", Access::Read, each))
        .param(Param::buffer::<f32>("y", Access::Write, each))
        .param(Param::scalar::<u32>("iters"))
        .param(Param::Offset)
        .param(Param::Count)
        .cpu(|ctx: &CpuCtx<'_>| {
            let items = ctx.items_below(ctx.count());
            let x = &ctx.input::<f32>(0)[items.clone()];
            let y = ctx.output::<f32>(1);
            let iters: u32 = ctx.scalar(2);
            for (o, &v) in y.iter_mut().zip(x) {
                let mut acc = v;
                for _ in 0..iters {
                    acc = acc * 0.999 + 0.001;
                }
                *o = acc;
            }
        })
        .build()
        .unwrap()
}

fn poly_reference(x: &[f32], iters: u32) -> Vec<f64> {
    x.iter()
        .map(|&v| {
            let mut acc = v as f64;
            for _ in 0..iters {
                acc = acc * 0.999 + 0.001;
            }
            acc
        })
        .collect()
}

#[test]
fn a_slow_device_gets_a_smaller_share() {
    let _serial = serial();
    let rts = cpu_runtimes(2);
    let fast = rts[0].device("cpu").unwrap();
    let slow = inject_faults(&rts[1].device("cpu").unwrap(), FaultPlan::none().slow_down(4.0));
    let k = poly_kernel();
    let mut rng = Rng::fresh("slow_device");
    let n = 200_000;
    let iters = 200u32;
    let x = rng.vec_f32(n, 0.0, 1.0);
    let reference = poly_reference(&x, iters);
    for policy in [
        Policy::Static,
        Policy::HGuided { k: 2.0, min_chunk: 0 },
        Policy::Dynamic { chunk: 4096 },
    ] {
        let mut s = Scheduler::new(&[fast.clone(), slow.clone()])
            .unwrap()
            .allow_shared_cores(true)
            .with_policy(policy)
            .in_memory_model();
        let mut y = vec![f32::NAN; n];
        let r = s
            .run(
                &k,
                n,
                &mut [HostArg::input(&x), HostArg::output(&mut y), HostArg::scalar(iters)],
            )
            .unwrap();
        println!("{r}");
        assert_close(&format!("poly, {policy}"), &y, &reference, 1e-5);
        let (f, sl) = (r.devices[0].items, r.devices[1].items);
        assert!(
            sl < f,
            "{policy}: the 4x slower device did {sl} items, the fast one {f}\n{r}"
        );
        if policy != (Policy::Dynamic { chunk: 4096 }) {
            // Model-driven policies give the slow device about a fifth (allow noise).
            assert!((sl as f64) < 0.45 * n as f64, "{policy}: slow share {sl}\n{r}");
        }
    }
}

#[test]
fn chunks_show_in_the_profile() {
    let _serial = serial();
    let rt = Runtime::builder()
        .cpu_threads(1)
        .backends(&[BackendKind::Cpu])
        .build()
        .unwrap();
    let rt2 = Runtime::builder()
        .cpu_threads(1)
        .backends(&[BackendKind::Cpu])
        .build()
        .unwrap();
    let devs = vec![rt.device("cpu").unwrap(), rt2.device("cpu").unwrap()];
    rt.profiler().take();
    rt2.profiler().take();
    let mut s = Scheduler::new(&devs)
        .unwrap()
        .allow_shared_cores(true)
        .with_policy(Policy::Dynamic { chunk: 100_000 })
        .in_memory_model();
    let mut rng = Rng::fresh("profile");
    let r = vector_add_case(&mut s, &mut rng, 4_000_000, "profiled");
    assert_eq!(r.devices.iter().map(|d| d.items).sum::<usize>(), 4_000_000, "{r}");
    // Each device's records are in its own runtime's profile. A device whose
    // worker did not get a core before the other took every chunk (a loaded
    // machine) computed nothing; every device that took part shows one empty
    // warm-up launch first, then one kernel record per chunk.
    for (i, rt) in [&rt, &rt2].into_iter().enumerate() {
        let p = rt.profile();
        let kernel = offload::profile::Stage::Kernel;
        let kernels: Vec<_> = p
            .records
            .iter()
            .filter(|x| x.stage == kernel && x.label.starts_with("chunk "))
            .collect();
        let warm: Vec<_> = p
            .records
            .iter()
            .filter(|x| x.stage == kernel && x.label.starts_with("warm-up"))
            .collect();
        let d = &r.devices[i];
        if d.chunks > 0 {
            assert!(
                warm.len() == 1 && warm[0].items == 0,
                "{}: one warm-up launch of 0 items: {warm:?}\n{r}",
                d.device
            );
        }
        assert!(warm.len() <= 1 && warm.iter().all(|w| w.items == 0), "{warm:?}");
        assert_eq!(
            kernels.len(),
            d.chunks,
            "one kernel record per chunk of {}\n{r}",
            d.device
        );
        assert!(kernels.iter().all(|x| x.items > 0));
        assert_eq!(kernels.iter().map(|x| x.items).sum::<u64>(), d.items as u64);
        let h2d = p
            .records
            .iter()
            .filter(|x| x.stage == offload::profile::Stage::HostToDevice && x.label.starts_with("chunk "))
            .count();
        // The CPU device computes on the host slices in place: no uploads at all.
        assert_eq!(h2d, 0, "no uploads on the CPU device");
    }
    assert!(r.devices.iter().all(|d| d.h2d_bytes == 0 && d.d2h_bytes == 0), "{r}");
    assert!(r.devices.iter().all(|d| d.idle <= r.wall));
    let text = r.to_string();
    assert!(text.contains("cpu:0#2") && text.contains("busy ms"), "{text}");
}

#[test]
fn host_cpu_devices_beyond_the_cores_are_left_out_by_default() {
    let _serial = serial();
    // Three single-thread CPU devices on fewer than three cores would only contend:
    // by default the first is kept and the others are excluded with the reason.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rts = cpu_runtimes(cores + 1);
    let devs = devices(&rts);
    let mut rng = Rng::fresh("shared_cores");
    let mut s = Scheduler::new(&devs).unwrap().in_memory_model();
    let r = vector_add_case(&mut s, &mut rng, 50_000, "shared cores");
    assert_eq!(r.devices.iter().filter(|d| d.items > 0).count(), 1, "{r}");
    assert_eq!(r.excluded.len(), cores, "{r}");
    assert!(r.excluded.iter().all(|e| e.reason.contains("same host cores")), "{r}");
    // Allowed explicitly, every device takes part again.
    let mut s = Scheduler::new(&devs)
        .unwrap()
        .in_memory_model()
        .allow_shared_cores(true);
    let r = vector_add_case(&mut s, &mut rng, 50_000, "shared cores allowed");
    // (A device may still be left out by the model when the others finish this
    // small job first; never for sharing cores.)
    assert!(r.excluded.iter().all(|e| !e.reason.contains("same host cores")), "{r}");
}

/// Best-of-`reps` wall time of vector add over `n` items on `dev` alone with `policy`
/// (the model calibrated by a first, untimed run).
fn best_wall(dev: &Device, policy: Policy, n: usize, reps: usize) -> std::time::Duration {
    let k = kernels::vector_add().expect("vector_add");
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 2.0 * i as f32).collect();
    let mut c = vec![0.0f32; n];
    let mut s = Scheduler::new(std::slice::from_ref(dev))
        .expect("scheduler")
        .with_policy(policy)
        .in_memory_model();
    let mut best = std::time::Duration::MAX;
    for _ in 0..=reps {
        let t0 = std::time::Instant::now();
        s.run(
            &k,
            n,
            &mut [HostArg::input(&a), HostArg::input(&b), HostArg::output(&mut c)],
        )
        .expect("run");
        best = best.min(t0.elapsed());
    }
    assert_eq!(c[n - 1], 3.0 * (n - 1) as f32);
    best
}

/// Static on one CPU device moves its share in bounded pieces through reused
/// buffers: it costs about what Dynamic costs, not one huge allocation per run.
#[test]
fn static_is_as_fast_as_dynamic_on_the_cpu_device() {
    let _g = serial();
    let rt = Runtime::builder()
        .backends(&[BackendKind::Cpu])
        .build()
        .expect("runtime");
    let dev = rt.device("cpu").expect("cpu");
    let n = 10_000_000;
    let dynamic = best_wall(&dev, Policy::Dynamic { chunk: 0 }, n, 3);
    let stat = best_wall(&dev, Policy::Static, n, 3);
    println!(
        "vector add {n} items on {}: static {stat:?}, dynamic {dynamic:?}",
        dev.label()
    );
    assert!(
        stat.as_secs_f64() <= 1.5 * dynamic.as_secs_f64() + 0.005,
        "static {stat:?} vs dynamic {dynamic:?}"
    );
}

/// A device whose kernel build is slow and which the model leaves out does not
/// delay the run: builds start on every device at once, and the run finishes
/// without waiting for a build on a device that gets no work.
#[test]
fn a_slow_build_on_a_left_out_device_does_not_delay_the_run() {
    let _g = serial();
    let rts = cpu_runtimes(2);
    let devs = devices(&rts);
    let build = std::time::Duration::from_millis(1500);
    // Every build call on `slow` sleeps (an uncached JIT), and every launch costs 100 ms,
    // so once calibrated the model gives it nothing of a 1 ms job.
    let slow = inject_faults(
        &devs[1],
        FaultPlan::none()
            .build_delay(build)
            .launch_delay(std::time::Duration::from_millis(100)),
    );
    let k = kernels::vector_add().expect("vector_add");
    let n = 200_000;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut c = vec![0.0f32; n];
    let mut s = Scheduler::new(&[devs[0].clone(), slow.clone()])
        .expect("scheduler")
        .with_policy(Policy::Static)
        .allow_shared_cores(true)
        .in_memory_model();
    // First run: Static probes the uncalibrated slow device, so it waits for its build.
    let first = s
        .run(
            &k,
            n,
            &mut [HostArg::input(&a), HostArg::input(&a), HostArg::output(&mut c)],
        )
        .expect("first run");
    assert!(first.wall >= build, "first run {:?}", first.wall);
    for policy in [Policy::HGuided { k: 2.0, min_chunk: 0 }, Policy::Static] {
        s = s.with_policy(policy);
        c.iter_mut().for_each(|x| *x = 0.0);
        // The model now leaves the slow device out; its build (slow again) must
        // not hold the result back.
        let t0 = std::time::Instant::now();
        let second = s
            .run(
                &k,
                n,
                &mut [HostArg::input(&a), HostArg::input(&a), HostArg::output(&mut c)],
            )
            .expect("second run");
        let took = t0.elapsed();
        println!("{policy}: {took:?}\n{second}");
        assert!(
            took < build / 3,
            "{policy}: run took {took:?}, the build takes {build:?}"
        );
        assert_eq!(second.device(devs[0].label()).map(|d| d.items), Some(n), "{second}");
        assert!(c.iter().enumerate().all(|(i, x)| *x == 2.0 * i as f32));
    }
}

/// On a device with asynchronous queues a split run keeps two chunks in flight
/// from one host thread: uploads, kernels and downloads each go to one queue of
/// their own, the device's kernels never overlap one another (each chunk's kernel
/// time is the device's), and each chunk's download starts after its kernel ends.
#[test]
fn async_devices_pipeline_chunks_on_three_queues() {
    let _serial = serial();
    let rt = common::runtime();
    let mut devs = common::devices_of(&rt, BackendKind::OpenCl);
    devs.extend(common::devices_of(&rt, BackendKind::Cuda));
    for dev in devs {
        rt.profiler().take();
        let mut s = Scheduler::new(std::slice::from_ref(&dev))
            .unwrap()
            .allow_shared_cores(true)
            .with_policy(Policy::Dynamic { chunk: 1 << 16 })
            .in_memory_model();
        let mut rng = Rng::fresh("pipeline");
        let n = 1 << 20;
        let r = vector_add_case(&mut s, &mut rng, n, dev.label());
        println!("{r}");
        assert_eq!(r.devices[0].chunks, 16, "{r}");
        assert_eq!(r.devices[0].h2d_bytes, 2 * 4 * n as u64, "{r}");
        assert_eq!(r.devices[0].d2h_bytes, 4 * n as u64, "{r}");
        let p = rt.profile();
        let chunk = |stage: offload::profile::Stage| -> Vec<offload::profile::StageRecord> {
            let mut v: Vec<_> = p
                .records
                .iter()
                .filter(|x| x.device == dev.label() && x.stage == stage && x.label.starts_with("chunk "))
                .cloned()
                .collect();
            v.sort_by_key(|x| x.start_ns);
            v
        };
        use offload::profile::Stage;
        let (up, run, down) = (
            chunk(Stage::HostToDevice),
            chunk(Stage::Kernel),
            chunk(Stage::DeviceToHost),
        );
        assert_eq!(
            (up.len(), run.len(), down.len()),
            (32, 16, 16),
            "two uploads, a kernel, a download per chunk"
        );
        let queue_of = |v: &[offload::profile::StageRecord]| {
            let q = v[0].queue;
            assert!(
                q != 0 && v.iter().all(|x| x.queue == q),
                "one queue per kind of command"
            );
            q
        };
        let (qu, qr, qd) = (queue_of(&up), queue_of(&run), queue_of(&down));
        assert!(qu != qr && qr != qd && qu != qd, "three queues: {qu} {qr} {qd}");
        for w in run.windows(2) {
            assert!(w[0].end_ns <= w[1].start_ns, "kernels of one device overlap: {w:?}");
        }
        for x in &down {
            let k = run.iter().find(|k| k.label == x.label).expect("kernel of the chunk");
            assert!(k.end_ns <= x.start_ns, "download before its kernel ended: {k:?} {x:?}");
        }
    }
}

/// A chunk launch never has a block larger than the chunk (rounded up to the
/// device's work-group multiple), and always covers the chunk's items within
/// the scheduler's block cap.
#[test]
fn chunk_blocks_fit_the_chunk() {
    let rt = common::runtime();
    for dev in rt.devices() {
        let warp = dev.info().warp_size.max(1) as u64;
        for n in [1usize, 7, 64, 100, 255, 256, 257, 10_000] {
            for cap in [32u32, 256, 1024] {
                let cfg = offload::schedule::chunk_config(n, dev, cap);
                let block = cfg.threads_per_block();
                let total = cfg.total_threads().unwrap_or(0);
                assert!(total >= n as u64, "{}: {n} items, {cfg:?}", dev.label());
                assert!(block <= cap as u64, "{}: block {block} over the cap {cap}", dev.label());
                assert!(
                    block <= (n as u64).div_ceil(warp) * warp,
                    "{}: block {block} for a chunk of {n} items",
                    dev.label()
                );
            }
        }
    }
}
