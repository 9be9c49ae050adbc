//! Suite `tasks`: managed data and the task graph.
//!
//! * **(a) Jacobi-2D with resident data**: an `n × n` grid (4096², 1024² with
//!   `--quick`), 100 sweeps (30 with `--quick`), over the CPU backend with one
//!   worker thread and PoCL limited to one thread (`POCL_MAX_PTHREAD_COUNT=1`;
//!   PoCL reads it when it initialises, so when OpenCL is present and the
//!   variable is unset the suite re-runs itself as a child process with it set,
//!   as `coexec` does; without OpenCL the pair is two single-thread CPU
//!   devices). Reference, in the same run: the sweeps through `Scheduler::run`
//!   on host slices. The built-in `jacobi` kernel is splittable as it is (the
//!   whole grid is its broadcast input, each chunk writes its slice of the
//!   output), so every sweep uploads the grid to each device that does not
//!   compute in host memory and downloads that device's share. Then the task
//!   graph: two grids cut into 2 row bands per device with one halo row, one
//!   task per band per sweep, twice: bands placed by dmda (its model warmed by
//!   a separate graph running three sweeps pinned to each device), and bands
//!   pinned half per device (`Task::on`, owner computes), which puts a band
//!   boundary between the devices whatever dmda would choose. Bytes per sweep:
//!   the task graph's `GraphReport::bytes_in()` (over all sweeps, and over the
//!   sweeps after the first, which places the grid on the devices), the
//!   scheduler's h2d + d2h bytes, and the halo bytes = 2 directions × (bands − 1)
//!   boundaries × one row of `n` f32: what moves per sweep if every band
//!   boundary separates two memory nodes. Targets: task bytes per sweep after
//!   the first ≤ halo bytes; ≥ 5× fewer bytes per sweep than the host-slice
//!   runs (all task bytes, the first sweep included); task graph time ≤ 0.5× the
//!   host-slice time (registration and the final acquire included). Every
//!   result is checked bit for bit against `kernels::jacobi_host`.
//! * **(b) task overhead** on the CPU device alone (a graph with only it):
//!   independent empty tasks (`kernels::noop`, 1 item, no data) and a chain of
//!   tasks each incrementing the same one-element data (read-write, 1 item),
//!   submitted and completed; tasks/s. Reference in the same run: the same
//!   empty kernel launched on a `Queue` of the device, one wait at the end.
//!   Target: ≥ 100,000 tasks/s (both).
//! * **(d) N-body resident**: leapfrog steps split over CPU (1 worker) + PoCL
//!   (1 thread) as split tasks on resident data; balance efficiency against
//!   each device alone. Target ≥ 0.9 (see `nbody_balance`).
//! * **(c) dmda vs eager** with one device 4× slower: two single-thread CPU
//!   devices, the second wrapped by the fault injector with `slow_down(4.0)`
//!   (it sleeps three times each launch's duration after it). A layered DAG of
//!   200 compute-bound tasks (a polynomial kernel, Rust CPU version below):
//!   layer widths cycle 1, 2, 4, 3; every task of a layer reads all of the
//!   previous layer's output (so depends on each of its tasks) and writes its
//!   own block. dmda runs with a model warmed by a separate graph first (four
//!   tasks pinned to each device); eager needs none. Times are medians of up to
//!   `--reps` (at most 3) fresh graphs. Target: dmda ≥ 1.2× faster.

use std::time::Instant;

use offload::schedule::{FaultPlan, HostArg, PerfModel, Scheduler, SplitReport, inject_faults};
use offload::task::{GraphReport, Partition, Placement, Task, TaskGraph};
use offload::{Access, Arg, BackendKind, CpuCtx, Device, Kernel, LaunchConfig, Param, Runtime, Split, kernels};

use crate::common::{bench_line, cpu1, median, pocl_or_cpu1, rerun_with_one_pocl_thread, verdict};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

pub fn run(args: &crate::Args) -> Res<()> {
    if rerun_with_one_pocl_thread("tasks", args)? {
        return Ok(());
    }
    jacobi(args)?;
    overhead(args)?;
    dmda_vs_eager(args)?;
    nbody_balance(args)?;
    Ok(())
}

/// (d) N-body with resident state: `steps` leapfrog steps (20; 5 with
/// `--quick`) of a Plummer sphere over the CPU device (1 worker) + PoCL (1
/// thread), each step's accelerations and kick–drift split over both as task
/// graph split tasks (HGuided). Reference in the same run: the same simulation
/// on each device alone (a graph of one device). Balance efficiency = the ideal
/// time of the pair (1 / (1/t_cpu + 1/t_pocl)) / the pair's time. Target ≥ 0.9.
fn nbody_balance(args: &crate::Args) -> Res<()> {
    use offload::nbody::{ResidentSimulation, SimConfig, plummer};
    let (bodies, steps) = if args.quick { (4096, 5) } else { (16384, 20) };
    let config = SimConfig {
        bodies,
        steps,
        dt: 0.005,
        eps: 0.02,
        seed: 1,
    };
    let (_rt_a, cpu) = cpu1()?;
    let (_rt_b, ocl, pair) = pocl_or_cpu1(args)?;
    let run = |devs: &[Device], model: PerfModel| -> Res<(f64, GraphReport)> {
        let g = TaskGraph::builder(devs).allow_shared_cores(true).model(model).build()?;
        let mut sim = ResidentSimulation::from_bodies(g, plummer(bodies, 1)?, config)?;
        let r = sim.run(|_| {})?;
        Ok((r.wall.as_secs_f64(), sim.report()))
    };
    // Each device alone first (this also builds the kernels and warms the model).
    let mut model = PerfModel::in_memory();
    let mut alone = Vec::new();
    for d in [&cpu, &ocl] {
        let g = TaskGraph::builder(std::slice::from_ref(d))
            .model(model.clone())
            .build()?;
        let mut sim = ResidentSimulation::from_bodies(g, plummer(bodies, 1)?, SimConfig { steps: 1, ..config })?;
        sim.run(|_| {})?;
        model = sim.graph().model();
        let mut best = f64::INFINITY;
        for _ in 0..args.reps.clamp(1, 3) {
            best = best.min(run(std::slice::from_ref(d), model.clone())?.0);
        }
        alone.push(best);
    }
    let ideal = 1.0 / (1.0 / alone[0] + 1.0 / alone[1]);
    let mut best = (f64::INFINITY, None);
    for _ in 0..args.reps.clamp(1, 3) {
        let (t, r) = run(&[cpu.clone(), ocl.clone()], model.clone())?;
        if t < best.0 {
            best = (t, Some(r));
        }
    }
    let eff = ideal / best.0;
    if let Some(r) = &best.1 {
        println!("{r}");
    }
    println!(
        "(d) N-body {bodies} bodies x {steps} steps, resident on {pair}: alone {:.1} ms / {:.1} ms, \
         together {:.1} ms, ideal {:.1} ms, balance efficiency {eff:.3}; target >= 0.9: {}",
        alone[0] * 1e3,
        alone[1] * 1e3,
        best.0 * 1e3,
        ideal * 1e3,
        verdict(eff >= 0.9)
    );
    bench_line("tasks_nbody_balance_efficiency", eff, "ratio", None);
    Ok(())
}

/// Build `jacobi` on `dev` and launch it once with the block size tasks use
/// (OpenCL implementations may compile per work-group size at a first launch).
fn warm_up(dev: &Device, k: &Kernel) -> offload::Result<()> {
    dev.build(k)?;
    let w = 64usize;
    let x = dev.upload(&vec![1.0f32; w * w])?;
    let mut y = dev.alloc::<f32>(w * w)?;
    let wu = w as u32;
    dev.launch(
        k,
        &LaunchConfig::for_items(w * w, dev.info()),
        &[
            Arg::input(&x),
            Arg::output(&mut y),
            wu.into(),
            0u32.into(),
            (wu * wu).into(),
            0u32.into(),
            wu.into(),
            0u32.into(),
            (wu * wu).into(),
        ],
    )
}

/// `iters` sweeps of `u0` on a task graph over `devs`, bands placed by dmda
/// or, with `owners`, band `b` pinned to device `owners[b]`; the result, the
/// report and the seconds from registration to the acquired result.
#[allow(clippy::too_many_arguments)]
fn jacobi_graph(
    devs: &[Device],
    k: &Kernel,
    u0: &[f32],
    n: usize,
    parts: usize,
    iters: usize,
    model: PerfModel,
    owners: Option<&[usize]>,
) -> Res<(Vec<f32>, GraphReport, f64)> {
    let g = TaskGraph::builder(devs)
        .allow_shared_cores(true)
        .placement(Placement::Dmda)
        .model(model)
        .build()?;
    let t0 = Instant::now();
    let u = g.data("u", u0)?;
    let v = g.data("v", u0)?;
    let how = Partition::Rows {
        row_len: n,
        parts,
        halo: 1,
    };
    let (us, vs) = (u.partition(how)?, v.partition(how)?);
    for it in 0..iters {
        let (src, dst) = if it.is_multiple_of(2) { (&us, &vs) } else { (&vs, &us) };
        for (b, (s, d)) in src.iter().zip(dst).enumerate() {
            let t = kernels::jacobi_task(k, s, d, n, n)?;
            g.submit(match owners {
                Some(o) => t.on(&devs[o[b]]),
                None => t,
            })?;
        }
    }
    let out = if iters.is_multiple_of(2) {
        u.acquire()?
    } else {
        v.acquire()?
    };
    let t = t0.elapsed().as_secs_f64();
    Ok((out, g.report(), t))
}

/// Elements whose bits differ.
fn differing(a: &[f32], b: &[f32]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count()
}

/// A performance model that has seen `jacobi` on every band of every device
/// several times (the first runs on a device write fresh memory and run slow;
/// later ones show its speed).
fn warm_model(devs: &[Device], k: &Kernel, u0: &[f32], n: usize, parts: usize) -> Res<PerfModel> {
    let g = TaskGraph::builder(devs)
        .allow_shared_cores(true)
        .model(PerfModel::in_memory())
        .build()?;
    let u = g.data("u", u0)?;
    let v = g.data("v", u0)?;
    let how = Partition::Rows {
        row_len: n,
        parts,
        halo: 1,
    };
    let (us, vs) = (u.partition(how)?, v.partition(how)?);
    let mut it = 0usize;
    for _ in 0..3 {
        for dev in devs {
            let (src, dst) = if it.is_multiple_of(2) { (&us, &vs) } else { (&vs, &us) };
            for (s, d) in src.iter().zip(dst) {
                g.submit(kernels::jacobi_task(k, s, d, n, n)?.on(dev))?;
            }
            it += 1;
        }
    }
    g.wait_all()?;
    Ok(g.model())
}

/// Bytes a task graph run fetched: in all, in the first sweep (tasks
/// `0..parts`, which place the grid), and in the later sweeps.
fn fetched(r: &GraphReport, parts: usize) -> (u64, u64, u64) {
    let total = r.bytes_in();
    let first: u64 = r.tasks.iter().filter(|t| t.id < parts).map(|t| t.bytes_in).sum();
    (total, first, total - first)
}

/// Where each band ran in the last sweep.
fn placement_line(r: &GraphReport, parts: usize, iters: usize) -> String {
    (0..parts)
        .map(|b| {
            let id = (iters - 1) * parts + b;
            let dev = r.tasks.iter().find(|t| t.id == id).map_or("?", |t| t.device.as_str());
            format!("band {b} on {dev}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn jacobi(args: &crate::Args) -> Res<()> {
    let (n, iters) = if args.quick { (1024usize, 30usize) } else { (4096, 100) };
    let k = kernels::jacobi()?;
    let (_rt_a, cpu) = cpu1()?;
    let (_rt_b, second, pair) = pocl_or_cpu1(args)?;
    let devs = [cpu.clone(), second.clone()];
    for d in &devs {
        warm_up(d, &k)?;
    }
    let parts = 2 * devs.len();
    println!("(a) Jacobi-2D {n} x {n} f32, {iters} sweeps over {pair}; {parts} row bands with 1 halo row");
    let mut u0 = vec![0.0f32; n * n];
    u0[..n].fill(1.0);
    let mut want = u0.clone();
    let mut next = vec![0.0f32; n * n];
    for _ in 0..iters {
        kernels::jacobi_host(&want, &mut next, n)?;
        std::mem::swap(&mut want, &mut next);
    }

    // The reference: the same sweeps through the scheduler on host slices.
    let mut s = Scheduler::new(&devs)?.allow_shared_cores(true).in_memory_model();
    let nn = (n * n) as u32;
    let bcast = (n * n * 4) as u64;
    let sched_sweeps = |s: &mut Scheduler, count: usize| -> Res<(Vec<f32>, u64, Option<SplitReport>)> {
        let mut x = u0.clone();
        let mut y = vec![0.0f32; n * n];
        let (mut bytes, mut last) = (0u64, None);
        for _ in 0..count {
            let r = s.run(
                &k,
                n * n,
                &mut [
                    HostArg::input(&x),
                    HostArg::output(&mut y),
                    HostArg::scalar(n as u32),
                    HostArg::scalar(0u32),
                    HostArg::scalar(nn),
                    HostArg::scalar(0u32),
                    HostArg::scalar(n as u32),
                ],
            )?;
            // The split report counts the broadcast grid as uploaded to the CPU
            // device too, which reads it in place: only what moved is counted here.
            bytes += r
                .devices
                .iter()
                .map(|d| {
                    let in_place = if d.device.starts_with("cpu") {
                        bcast.min(d.h2d_bytes)
                    } else {
                        0
                    };
                    d.h2d_bytes + d.d2h_bytes - in_place
                })
                .sum::<u64>();
            last = Some(r);
            std::mem::swap(&mut x, &mut y);
        }
        Ok((x, bytes, last))
    };
    sched_sweeps(&mut s, 2)?;
    let t0 = Instant::now();
    let (sched_out, sched_bytes, last) = sched_sweeps(&mut s, iters)?;
    let t_sched = t0.elapsed().as_secs_f64();
    if differing(&sched_out, &want) > 0 {
        return Err("the scheduler's Jacobi result differs from the host reference".into());
    }
    if let Some(r) = last {
        print!("{r}");
        println!(
            "  (the last split; its h2d column counts the broadcast grid for the CPU device too, which reads it \
             in place: not counted below)"
        );
    }
    let it = iters as f64;
    let sched_per = sched_bytes as f64 / it;
    // The same split as the task graph's pinned bands (half the rows per device)
    // through host-slice runs: each sweep, each device computes its half with a
    // `Scheduler::run` of its own (the two run at once), the grid broadcast.
    let t0 = Instant::now();
    let (same_out, same_bytes) = same_split_sweeps(&devs, &k, &u0, n, iters)?;
    let t_same = t0.elapsed().as_secs_f64();
    if differing(&same_out, &want) > 0 {
        return Err("the same-split host-slice Jacobi result differs from the host reference".into());
    }
    let same_per = same_bytes as f64 / it;
    println!(
        "  host slices, the same split (half the rows per device, one Scheduler::run per device and sweep): \
         {:.1} ms ({:.3} ms/sweep); h2d + d2h {:.1} KB/sweep",
        t_same * 1e3,
        t_same * 1e3 / it,
        same_per / 1e3
    );
    let halo = (2 * (parts - 1) * n * 4) as f64;
    println!(
        "  host slices (Scheduler::run each sweep, reference): {:.1} ms ({:.3} ms/sweep); h2d + d2h {:.1} KB/sweep",
        t_sched * 1e3,
        t_sched * 1e3 / it,
        sched_per / 1e3
    );
    println!(
        "  halo bytes per sweep: {:.1} KB = 2 directions x {} band boundaries x {n} f32",
        halo / 1e3,
        parts - 1
    );

    // The task graph: dmda with a warmed model, then the bands pinned half per device.
    let model = warm_model(&devs, &k, &u0, n, parts)?;
    let owners: Vec<usize> = (0..parts).map(|b| b * devs.len() / parts).collect();
    for (tag, pinned) in [("dmda", None), ("owners", Some(&owners[..]))] {
        let (out, report, t) = jacobi_graph(&devs, &k, &u0, n, parts, iters, model.clone(), pinned)?;
        if differing(&out, &want) > 0 {
            return Err(format!("the task graph's Jacobi result ({tag}) differs from the host reference").into());
        }
        match pinned {
            None => println!("  task graph, bands placed by dmda (model warmed by 3 pinned sweeps per device):"),
            Some(_) => println!(
                "  task graph, bands pinned half per device (Task::on: owner computes, a band boundary between the devices):"
            ),
        }
        print!("{report}");
        println!("    last sweep: {}", placement_line(&report, parts, iters));
        let (total, first, later) = fetched(&report, parts);
        let (task_per, later_per) = (total as f64 / it, later as f64 / (it - 1.0));
        println!(
            "    {:.1} ms ({:.3} ms/sweep, registration and acquire included); fetched {:.1} KB/sweep over all \
             sweeps: {:.1} KB in the first (placing the grid), {:.1} KB/sweep after it",
            t * 1e3,
            t * 1e3 / it,
            task_per / 1e3,
            first as f64 / 1e3,
            later_per / 1e3
        );
        println!(
            "    bytes/sweep after the first {:.1} KB <= halo bytes {:.1} KB: {}",
            later_per / 1e3,
            halo / 1e3,
            verdict(later_per <= halo)
        );
        let fewer = if task_per > 0.0 {
            same_per / task_per
        } else {
            f64::INFINITY
        };
        let shown = if fewer.is_finite() {
            format!("{fewer:.1}x")
        } else {
            "unbounded (the task graph moved no bytes)".to_string()
        };
        println!(
            "    bytes/sweep: the same split on host slices / task graph (first sweep included) = {shown}; \
             target >= 5x: {} (the scheduler's own split moved {:.1} KB/sweep: it gives the second device \
             little of a transfer-bound kernel)",
            verdict(fewer >= 5.0),
            sched_per / 1e3
        );
        let ratio = t / t_sched;
        println!(
            "    time: task graph / host slices = {ratio:.3}; target <= 0.5: {}",
            verdict(ratio <= 0.5)
        );
        bench_line(
            &format!("tasks_jacobi_{tag}_bytes_per_sweep_after_first"),
            later_per,
            "bytes",
            Some(halo),
        );
        bench_line(
            &format!("tasks_jacobi_{tag}_bytes_per_sweep"),
            task_per,
            "bytes",
            Some(same_per),
        );
        bench_line(&format!("tasks_jacobi_{tag}_time"), t, "s", Some(t_sched));
    }
    println!("  every result is bitwise equal to the single-threaded host reference");
    Ok(())
}

/// `iters` Jacobi sweeps of `u0` (`n × n`), rows split in halves over the two
/// devices, each half a `Scheduler::run` on its device alone per sweep (both at
/// once): the result and the bytes moved (what the CPU device reads in place
/// is not counted).
fn same_split_sweeps(devs: &[Device; 2], k: &Kernel, u0: &[f32], n: usize, iters: usize) -> Res<(Vec<f32>, u64)> {
    let mut scheds = Vec::new();
    for d in devs {
        scheds.push(
            Scheduler::new(std::slice::from_ref(d))?
                .allow_shared_cores(true)
                .in_memory_model(),
        );
    }
    let nn = (n * n) as u32;
    let half = n / 2;
    let (mut x, mut y) = (u0.to_vec(), vec![0.0f32; n * n]);
    let mut bytes = 0u64;
    for _ in 0..iters {
        let (top, bottom) = y.split_at_mut(half * n);
        let xs = &x;
        let moved = std::thread::scope(|sc| -> Res<u64> {
            let mut handles = Vec::new();
            for ((s, out), r0) in scheds.iter_mut().zip([top, bottom]).zip([0, half]) {
                handles.push(sc.spawn(move || -> offload::Result<u64> {
                    let items = out.len();
                    let r = s.run(
                        k,
                        items,
                        &mut [
                            HostArg::input(xs),
                            HostArg::output(out),
                            HostArg::scalar(n as u32),
                            HostArg::scalar((r0 * n) as u32),
                            HostArg::scalar(nn),
                            HostArg::scalar(r0 as u32),
                            HostArg::scalar(n as u32),
                        ],
                    )?;
                    Ok(r.devices
                        .iter()
                        .filter(|d| !d.device.starts_with("cpu"))
                        .map(|d| d.h2d_bytes + d.d2h_bytes)
                        .sum())
                }));
            }
            let mut sum = 0;
            for h in handles {
                sum += h.join().map_err(|_| "a same-split sweep panicked")??;
            }
            Ok(sum)
        })?;
        bytes += moved;
        std::mem::swap(&mut x, &mut y);
    }
    Ok((x, bytes))
}

/// `x[i] += 1` for `i < count` (u32): a task that reads and writes its data.
fn bump_kernel() -> offload::Result<Kernel> {
    Kernel::builder("bump")
        .param(Param::buffer::<u32>(
            "x",
            Access::ReadWrite,
            Split::Elementwise { per_item: 1 },
        ))
        .param(Param::Offset)
        .param(Param::Count)
        .cpu(|ctx: &CpuCtx<'_>| {
            for v in ctx.output::<u32>(0).iter_mut() {
                *v = v.wrapping_add(1);
            }
        })
        .build()
}

fn overhead(args: &crate::Args) -> Res<()> {
    let count = if args.quick { 20_000 } else { 100_000 };
    let rt = Runtime::builder().backends(&[BackendKind::Cpu]).build()?;
    let cpu = rt.device("cpu")?;
    rt.profiler().set_enabled(false);
    let noop = kernels::noop()?;
    let bump = bump_kernel()?;
    println!("(b) task overhead on {} alone: {count} tasks of 1 item", cpu.label());

    // Reference: the same empty kernel on a queue, one wait at the end.
    let q = cpu.queue()?;
    let one = LaunchConfig::new(1, 1);
    for _ in 0..1000 {
        q.launch(&noop, &one, &[0u32.into(), 1u32.into()])?;
    }
    q.finish()?;
    let t0 = Instant::now();
    for _ in 0..count {
        q.launch(&noop, &one, &[0u32.into(), 1u32.into()])?;
    }
    q.finish()?;
    let queue_rate = count as f64 / t0.elapsed().as_secs_f64();

    let graph = || {
        TaskGraph::builder(std::slice::from_ref(&cpu))
            .model(PerfModel::in_memory())
            .build()
    };
    // Independent empty tasks.
    let g = graph()?;
    for _ in 0..1000 {
        g.submit(Task::new(&noop).items(1))?;
    }
    g.wait_all()?;
    let t0 = Instant::now();
    for _ in 0..count {
        g.submit(Task::new(&noop).items(1))?;
    }
    g.wait_all()?;
    let free_rate = count as f64 / t0.elapsed().as_secs_f64();
    drop(g);

    // A chain: every task reads and writes the same element.
    let g = graph()?;
    let x = g.data("x", &[0u32])?;
    for _ in 0..1000 {
        g.submit(Task::new(&bump).read_write(&x).items(1))?;
    }
    g.wait_all()?;
    let t0 = Instant::now();
    for _ in 0..count {
        g.submit(Task::new(&bump).read_write(&x).items(1))?;
    }
    let got = x.acquire()?;
    let chain_rate = count as f64 / t0.elapsed().as_secs_f64();
    if got != [1000 + count as u32] {
        return Err(format!("the chain counted {got:?}, not {}", 1000 + count).into());
    }
    rt.profiler().set_enabled(true);
    println!(
        "  independent empty tasks: {free_rate:.0} tasks/s (target >= 100000: {}); queue launches of the same \
         kernel: {queue_rate:.0}/s",
        verdict(free_rate >= 1e5)
    );
    println!(
        "  chain of read-write tasks on one element: {chain_rate:.0} tasks/s (target >= 100000: {})",
        verdict(chain_rate >= 1e5)
    );
    bench_line("tasks_independent_per_s", free_rate, "1/s", Some(queue_rate));
    bench_line("tasks_chain_per_s", chain_rate, "1/s", Some(queue_rate));
    Ok(())
}

const A: f32 = 0.999;
const B: f32 = 0.001;

/// `y[i] = x[i]` after `iters` steps of `v = v·a + b`, 64 independent chains at
/// a time (the loop vectorizes). CPU only.
fn poly_kernel() -> offload::Result<Kernel> {
    let each = Split::Elementwise { per_item: 1 };
    Kernel::builder("tasks_poly")
        .param(Param::buffer::<f32>("x", Access::Read, each))
        .param(Param::buffer::<f32>("y", Access::Write, each))
        .param(Param::scalar::<u32>("iters"))
        .param(Param::Offset)
        .param(Param::Count)
        .cpu(|ctx: &CpuCtx<'_>| {
            const LANES: usize = 64;
            let items = ctx.items_below(ctx.count());
            let x = &ctx.input::<f32>(0)[items.clone()];
            let y = ctx.output::<f32>(1);
            let iters: u32 = ctx.scalar(2);
            for (yc, xc) in y.chunks_mut(LANES).zip(x.chunks(LANES)) {
                let mut acc = [0f32; LANES];
                acc[..xc.len()].copy_from_slice(xc);
                for _ in 0..iters {
                    for v in acc.iter_mut() {
                        *v = *v * A + B;
                    }
                }
                yc.copy_from_slice(&acc[..yc.len()]);
            }
        })
        .build()
}

/// Layer widths of the DAG, cycled.
const WIDTHS: [usize; 4] = [1, 2, 4, 3];

/// The layered DAG on a fresh graph; seconds from the first submission to the
/// end, the first block of the last layer, and the report.
fn layered(
    devs: &[Device],
    p: Placement,
    model: PerfModel,
    k: &Kernel,
    m: usize,
    iters: u32,
    tasks: usize,
) -> Res<(f64, Vec<f32>, GraphReport)> {
    let g = TaskGraph::builder(devs)
        .allow_shared_cores(true)
        .placement(p)
        .model(model)
        .build()?;
    let x0: Vec<f32> = (0..m).map(|i| (i % 100) as f32 / 100.0).collect();
    let mut prev = g.data("x", &x0)?;
    let mut layers = Vec::new();
    let (mut made, mut l) = (0, 0);
    while made < tasks {
        let w = WIDTHS[l % WIDTHS.len()].min(tasks - made);
        let layer = g.data(&format!("layer {l}"), &vec![0.0f32; w * m])?;
        let blocks = layer.partition(Partition::Blocks { parts: w, halo: 0 })?;
        layers.push((prev, blocks));
        prev = layer;
        made += w;
        l += 1;
    }
    let t0 = Instant::now();
    for (input, blocks) in &layers {
        for b in blocks {
            g.submit(Task::new(k).read(input).write(b).scalar(iters).items(b.len()))?;
        }
    }
    g.wait_all()?;
    let t = t0.elapsed().as_secs_f64();
    let last = layers
        .last()
        .map(|(_, b)| b[0].acquire())
        .transpose()?
        .unwrap_or_default();
    Ok((t, last, g.report()))
}

fn dmda_vs_eager(args: &crate::Args) -> Res<()> {
    let (_rt_f, fast) = cpu1()?;
    let (_rt_s, base) = cpu1()?;
    let slow = inject_faults(&base, FaultPlan::none().slow_down(4.0));
    let devs = [fast.clone(), slow.clone()];
    let k = poly_kernel()?;
    let tasks = 200;
    let m = 16384usize;
    // Steps per item so that a task takes about 2 ms (1 ms with --quick) on the fast device.
    let want_s = if args.quick { 1e-3 } else { 2e-3 };
    let x = fast.upload(&vec![0.5f32; m])?;
    let mut y = fast.alloc::<f32>(m)?;
    let probe = 2000u32;
    let cfg = LaunchConfig::for_items(m, fast.info());
    let mut time_probe = || -> offload::Result<f64> {
        let t0 = Instant::now();
        fast.launch(
            &k,
            &cfg,
            &[
                Arg::input(&x),
                Arg::output(&mut y),
                probe.into(),
                0u32.into(),
                (m as u32).into(),
            ],
        )?;
        Ok(t0.elapsed().as_secs_f64())
    };
    time_probe()?;
    let per = median((0..5).map(|_| time_probe()).collect::<offload::Result<Vec<f64>>>()?);
    let iters = ((probe as f64 * want_s / per).round() as u32).max(1);
    println!(
        "(c) dmda vs eager: {} + {} slowed 4x by the fault injector (both 1 worker); {tasks} tasks of {m} items x \
         {iters} steps (about {:.1} ms each on the fast device) in layers of width {WIDTHS:?} cycled, each task \
         reading all of the previous layer",
        fast.label(),
        slow.label(),
        want_s * 1e3
    );

    // Warm the model: four tasks pinned to each device.
    let warm = {
        let g = TaskGraph::builder(&devs)
            .allow_shared_cores(true)
            .model(PerfModel::in_memory())
            .build()?;
        let a = g.data("a", &vec![0.5f32; m])?;
        for d in &devs {
            for _ in 0..4 {
                let b = g.data("b", &vec![0.0f32; m])?;
                g.submit(Task::new(&k).read(&a).write(&b).scalar(iters).items(m).on(d))?;
            }
        }
        g.wait_all()?;
        g.model()
    };

    // The expected first block of the last layer: every layer applies the
    // polynomial to the first block of the one before.
    let layers = {
        let (mut made, mut l) = (0, 0);
        while made < tasks {
            made += WIDTHS[l % WIDTHS.len()].min(tasks - made);
            l += 1;
        }
        l
    };
    let expect: Vec<f32> = (0..64)
        .map(|i| {
            let mut v = (i % 100) as f32 / 100.0;
            for _ in 0..layers * iters as usize {
                v = v * A + B;
            }
            v
        })
        .collect();

    let reps = args.reps.clamp(1, 3);
    let mut times = [Vec::new(), Vec::new()];
    let mut reports = [None, None];
    for _ in 0..reps {
        for (i, p) in [Placement::Dmda, Placement::Eager].into_iter().enumerate() {
            let model = if p == Placement::Dmda {
                warm.clone()
            } else {
                PerfModel::in_memory()
            };
            let (t, last, r) = layered(&devs, p, model, &k, m, iters, tasks)?;
            if last.get(..64) != Some(&expect[..]) {
                return Err(format!("{p:?}: the last layer differs from the host computation").into());
            }
            if r.tasks.len() != tasks {
                return Err(format!("{p:?}: {} task runs, expected {tasks}\n{r}", r.tasks.len()).into());
            }
            times[i].push(t);
            reports[i] = Some(r);
        }
    }
    let (t_dmda, t_eager) = (median(times[0].clone()), median(times[1].clone()));
    for (name, r) in ["dmda", "eager"].iter().zip(&reports) {
        if let Some(r) = r {
            println!(
                "  {name}: last run wall {:.1} ms, work {:.1} ms, critical path {:.1} ms",
                r.wall_s * 1e3,
                r.work_s * 1e3,
                r.critical_path_s * 1e3
            );
        }
    }
    let speedup = t_eager / t_dmda;
    println!(
        "  dmda {:.1} ms vs eager {:.1} ms (medians of {reps}): dmda {speedup:.2}x faster; target >= 1.2x: {}",
        t_dmda * 1e3,
        t_eager * 1e3,
        verdict(speedup >= 1.2)
    );
    bench_line(
        "tasks_dmda_vs_eager_4x_slower",
        1.0 / t_dmda,
        "1/s",
        Some(1.0 / t_eager),
    );
    Ok(())
}
