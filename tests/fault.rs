//! Fault tolerance of split launches: randomized trials with devices that fail
//! on their k-th call of some kind always yield complete, correct outputs while
//! one device survives; when every device fails, every error is returned.

mod common;

use common::{Rng, assert_close};
use offload::schedule::{FaultOp, FaultPlan, HostArg, Policy, Scheduler, inject_faults};
use offload::{Access, BackendKind, CpuCtx, Device, Error, Kernel, Param, Runtime, Split, kernels};

fn cpu_devices(n: usize) -> (Vec<Runtime>, Vec<Device>) {
    let rts: Vec<Runtime> = (0..n)
        .map(|_| {
            Runtime::builder()
                .cpu_threads(1)
                .backends(&[BackendKind::Cpu])
                .build()
                .expect("CPU runtime")
        })
        .collect();
    let devs = rts.iter().map(|r| r.device("cpu").expect("cpu")).collect();
    (rts, devs)
}

/// In place, two elements per item: `v = (3 v0 - 1, v1 + 0.5)`.
fn in_place_kernel() -> Kernel {
    Kernel::builder("fault_in_place")
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
                p[0] = 3.0 * p[0] - 1.0;
                p[1] += 0.5;
            }
        })
        .build()
        .unwrap()
}

const OPS: [FaultOp; 5] = [
    FaultOp::Alloc,
    FaultOp::Write,
    FaultOp::Read,
    FaultOp::Build,
    FaultOp::Launch,
];

fn random_policy(rng: &mut Rng) -> Policy {
    match rng.below(4) {
        0 => Policy::Static,
        1 => Policy::Dynamic {
            chunk: 1 + rng.below(5000) as usize,
        },
        2 => Policy::Dynamic { chunk: 0 },
        _ => Policy::HGuided {
            k: 1.0 + rng.below(4) as f64,
            min_chunk: rng.below(2000) as usize,
        },
    }
}

#[test]
fn randomized_faults_never_lose_or_corrupt_items() {
    let (_rts, base) = cpu_devices(3);
    let vadd = kernels::vector_add().unwrap();
    let inplace = in_place_kernel();
    let mut rng = Rng::fresh("fault_trials");
    // At least 200 trials, and more (up to 1000) until 50 of them recovered from a
    // failure: how many do depends on the seed and on timing (a fault planned for a
    // device's k-th chunk only fires if the device gets k chunks).
    let (min_trials, max_trials, want_recoveries) = (200, 1000, 50);
    let (mut with_failures, mut all_failed) = (0, 0);
    let mut trials = 0;
    while trials < min_trials || (with_failures < want_recoveries && trials < max_trials) {
        let t = trials;
        trials += 1;
        let ndev = 2 + rng.below(2) as usize;
        let n = 1 + rng.below(60_000) as usize;
        let policy = random_policy(&mut rng);
        // Each device gets a fault with probability 2/3; at least one may stay healthy or not.
        let mut plans = Vec::new();
        let devs: Vec<Device> = base[..ndev]
            .iter()
            .map(|d| {
                if rng.below(3) == 0 {
                    plans.push("healthy".to_string());
                    return d.clone();
                }
                let op = OPS[rng.below(OPS.len() as u64) as usize];
                let k = 1 + rng.below(6);
                let plan = if rng.below(2) == 0 {
                    FaultPlan::none().fail_on(op, k)
                } else {
                    FaultPlan::none().fail_from(op, k)
                };
                plans.push(format!("{op:?} #{k}"));
                inject_faults(d, plan)
            })
            .collect();
        let healthy = plans.iter().any(|p| p == "healthy");
        let what = format!("trial {t}: {n} items, {policy}, devices {plans:?}");
        let mut s = Scheduler::new(&devs)
            .unwrap()
            .allow_shared_cores(true)
            .with_policy(policy)
            .in_memory_model();
        let result = if rng.below(2) == 0 {
            let a = rng.vec_f32(n, -50.0, 50.0);
            let b = rng.vec_f32(n, -50.0, 50.0);
            let mut c = vec![f32::NAN; n];
            let r = s.run(
                &vadd,
                n,
                &mut [HostArg::input(&a), HostArg::input(&b), HostArg::output(&mut c)],
            );
            if r.is_ok() {
                let reference: Vec<f64> = a.iter().zip(&b).map(|(x, y)| *x as f64 + *y as f64).collect();
                assert_close(&what, &c, &reference, 1e-6);
            }
            r
        } else {
            let v0 = rng.vec_f32(2 * n, -5.0, 5.0);
            let mut v = v0.clone();
            let r = s.run(&inplace, n, &mut [HostArg::output(&mut v)]);
            if r.is_ok() {
                // A failed chunk re-run elsewhere must start from the original data.
                let reference: Vec<f64> = v0
                    .chunks_exact(2)
                    .flat_map(|p| [3.0 * p[0] as f64 - 1.0, p[1] as f64 + 0.5])
                    .collect();
                assert_close(&what, &v, &reference, 1e-6);
            }
            r
        };
        match result {
            Ok(r) => {
                assert_eq!(r.total_items(), n, "{what}\n{r}");
                if !r.failures.is_empty() {
                    with_failures += 1;
                }
                for f in &r.failures {
                    assert!(f.error.contains("injected fault"), "{what}: {}", f.error);
                }
            }
            Err(Error::AllDevicesFailed { errors, .. }) => {
                assert!(
                    !healthy,
                    "{what}: a healthy device was present, yet every device failed"
                );
                assert_eq!(errors.len(), ndev, "{what}: one error per device");
                all_failed += 1;
            }
            Err(e) => panic!("{what}: unexpected error {e}"),
        }
    }
    println!("{trials} trials: {with_failures} recovered from failures, {all_failed} lost every device");
    assert!(
        with_failures >= want_recoveries,
        "the trials exercised recovery too rarely: {with_failures} in {trials}"
    );
}

#[test]
fn a_failing_last_chunk_is_rerun() {
    // Two devices; one fails on its second launch (for Dynamic with large chunks,
    // this is often the final chunk). Outputs are complete and the report says so.
    let (_rts, base) = cpu_devices(2);
    let k = kernels::vector_add().unwrap();
    let mut rng = Rng::fresh("last_chunk");
    let n = 10_000;
    let a = rng.vec_f32(n, 1.0, 2.0);
    let b = rng.vec_f32(n, 1.0, 2.0);
    let flaky = inject_faults(&base[1], FaultPlan::none().fail_on(FaultOp::Launch, 2));
    let mut s = Scheduler::new(&[base[0].clone(), flaky])
        .unwrap()
        .allow_shared_cores(true)
        .with_policy(Policy::Dynamic { chunk: 2500 })
        .in_memory_model();
    let mut c = vec![f32::NAN; n];
    let r = s
        .run(
            &k,
            n,
            &mut [HostArg::input(&a), HostArg::input(&b), HostArg::output(&mut c)],
        )
        .unwrap();
    let reference: Vec<f64> = a.iter().zip(&b).map(|(x, y)| *x as f64 + *y as f64).collect();
    assert_close("last chunk", &c, &reference, 1e-6);
    if r.failures.is_empty() {
        // The healthy device took every chunk before the flaky one launched twice.
        assert!(r.devices[1].chunks <= 1, "{r}");
    } else {
        assert_eq!(r.failures.len(), 1, "{r}");
        assert_eq!(r.failures[0].device, "cpu:0#2");
        assert!(r.failures[0].chunk.is_some());
        assert!(r.to_string().contains("re-run elsewhere"));
    }
}

#[test]
fn every_device_failing_returns_every_error() {
    let (_rts, base) = cpu_devices(3);
    let k = kernels::vector_add().unwrap();
    let mut rng = Rng::fresh("all_fail");
    let n = 5000;
    let a = rng.vec_f32(n, 1.0, 2.0);
    let b = rng.vec_f32(n, 1.0, 2.0);
    for policy in [Policy::Static, Policy::Dynamic { chunk: 100 }, Policy::default()] {
        // Fresh wrappers: call counts start at 1 for each run.
        let devs: Vec<Device> = vec![
            inject_faults(&base[0], FaultPlan::none().fail_from(FaultOp::Launch, 1)),
            // The CPU device uses host slices in place (no reads): fail its allocations.
            inject_faults(&base[1], FaultPlan::none().fail_from(FaultOp::Alloc, 1)),
            inject_faults(&base[2], FaultPlan::none().fail_on(FaultOp::Build, 1)),
        ];
        let mut s = Scheduler::new(&devs)
            .unwrap()
            .allow_shared_cores(true)
            .with_policy(policy)
            .in_memory_model();
        let mut c = vec![f32::NAN; n];
        let e = s
            .run(
                &k,
                n,
                &mut [HostArg::input(&a), HostArg::input(&b), HostArg::output(&mut c)],
            )
            .unwrap_err();
        let Error::AllDevicesFailed { kernel, errors } = &e else {
            panic!("{policy}: expected AllDevicesFailed, got {e}");
        };
        assert_eq!(kernel, "vector_add");
        assert_eq!(errors.len(), 3, "{policy}: {e}");
        let text = e.to_string();
        for op in ["launch", "alloc", "build"] {
            assert!(
                text.contains(&format!("injected fault on {op} call")),
                "{policy}: {text}"
            );
        }
        // Nothing was committed: every chunk failed before its outputs were assembled.
        assert!(c.iter().all(|v| v.is_nan()), "{policy}");
    }
}
