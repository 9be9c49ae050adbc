//! Suite `mpi` (cargo feature `mpi`): the distributed layer on MPI ranks.
//!
//! * N-body, N = 32768 (`--quick`: 4096), owner-computes over one block of
//!   bodies per rank, positions shared by one allgather per step: time per
//!   step on 1 rank and on 2 ranks (one core each), the parallel efficiency
//!   `t₁ / (2 t₂)` (target ≥ 0.8), and per step the time in the `net` stage
//!   (the allgather, waiting for the other rank included) and in kernels.
//! * Jacobi-2D, n = 1024 (`--quick`: 256), two row bands per rank: the bytes
//!   each rank sends per sweep must be exactly its halo rows (asserted), and the
//!   result must equal the host sweep bitwise.
//! * The `net` stage's cost model: allgathers of 1 KiB to 4 MiB per rank,
//!   fitted by least squares (relative errors) to `t = α + bytes / β` (latency α, bandwidth β).
//!
//! MPI initialises once per process, so the comparison needs two MPI jobs.
//! Started without `mpirun`, the suite relaunches this binary under
//! `mpirun -np 1` and `mpirun -np 2` and combines their results. Started under
//! `mpirun -np S` it measures S ranks only (no efficiency).

use std::collections::BTreeMap;
use std::error::Error;
use std::process::Command;
use std::time::Instant;

use offload::distributed::{Cluster, DistData, DistTask};
use offload::kernels::{self, nbody_kdk};
use offload::nbody::plummer;
use offload::profile::{Profile, Stage};
use offload::task::{Partition, Task, TaskGraph};
use offload::{BackendKind, Kernel, Runtime};

use crate::Args;
use crate::common::{bench_line, median, verdict};

/// Prefix of the per-rank result lines the launching process parses.
const RESULT: &str = "MPI_RESULT";
/// Variables set by the MPI launchers (Open MPI, PMI, PMIx) in each rank.
const RANK_ENVS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"];
/// Set by the launching process in the jobs it starts.
const LAUNCHED: &str = "OFFLOAD_BENCH_MPI_LAUNCHED";
/// The efficiency target of two ranks against one.
const TARGET: f64 = 0.8;

type Res<T> = Result<T, Box<dyn Error>>;

pub fn run(args: &Args) -> Res<()> {
    if RANK_ENVS.iter().any(|v| std::env::var_os(v).is_some()) {
        return ranks(args);
    }
    launch(args)
}

// ---------------------------------------------------------------- launcher

/// `key=value` fields of one result line.
type Fields = BTreeMap<String, String>;

fn parse(line: &str) -> Option<Fields> {
    let rest = line.strip_prefix(RESULT)?;
    Some(
        rest.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn num(f: &Fields, key: &str) -> Res<f64> {
    f.get(key)
        .ok_or_else(|| format!("result line {f:?} lacks {key}"))?
        .parse::<f64>()
        .map_err(|e| format!("result line {f:?}: {key}: {e}").into())
}

/// Run this binary's `mpi` suite on `np` ranks; its result lines.
fn job(args: &Args, np: usize) -> Res<Option<Vec<Fields>>> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if np > cores {
        cmd.arg("--oversubscribe");
    }
    cmd.env(LAUNCHED, "1")
        .args(["-np", &np.to_string()])
        .arg(exe)
        .args(["mpi", "--reps", &args.reps.to_string()]);
    if args.quick {
        cmd.arg("--quick");
    }
    println!(
        "running: mpirun -np {np} {} (one job per rank count)",
        std::env::args().next().unwrap_or_default()
    );
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("mpirun could not be started: {e}").into()),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines().filter(|l| !l.starts_with(RESULT)) {
        println!("  [np {np}] {line}");
    }
    if !out.status.success() {
        return Err(format!(
            "mpirun -np {np} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let results: Vec<Fields> = text.lines().filter_map(parse).collect();
    let sizes: Vec<f64> = results.iter().filter_map(|f| num(f, "np").ok()).collect();
    if results.is_empty() || sizes.iter().any(|&s| s != np as f64) {
        return Err(format!(
            "mpirun -np {np}: the ranks report sizes {sizes:?}; is this binary built against the MPI of this \
             mpirun?"
        )
        .into());
    }
    Ok(Some(results))
}

fn launch(args: &Args) -> Res<()> {
    let Some(one) = job(args, 1)? else {
        let msg = "the mpi suite runs under MPI, and mpirun was not found: install Open MPI (apt-get install \
                   libopenmpi-dev openmpi-bin libclang-dev), then `cargo run --release --features mpi --example \
                   bench -- mpi` (it starts mpirun itself), or run one rank count by hand: `mpirun -np 2 \
                   target/release/examples/bench mpi`";
        if args.strict {
            return Err(format!("--strict: {msg}").into());
        }
        println!("{msg}; skipped");
        return Ok(());
    };
    let Some(two) = job(args, 2)? else {
        return Err("mpirun disappeared between the two jobs".into());
    };
    let pick = |rs: &[Fields], what: &str, rank: usize| -> Option<Fields> {
        rs.iter()
            .find(|f| f.get("what").is_some_and(|w| w == what) && f.get("rank").is_some_and(|r| *r == rank.to_string()))
            .cloned()
    };
    let (Some(n1), Some(n2)) = (pick(&one, "nbody", 0), pick(&two, "nbody", 0)) else {
        return Err("a job printed no N-body result".into());
    };
    let n = num(&n2, "n")?;
    let (t1, t2) = (num(&n1, "step_ms")?, num(&n2, "step_ms")?);
    let eff = t1 / (2.0 * t2);
    println!(
        "N-body N = {n}: {t1:.2} ms per step on 1 rank, {t2:.2} ms on 2 ranks: parallel efficiency {eff:.3} \
         (target >= {TARGET}: {})",
        verdict(eff >= TARGET)
    );
    for r in 0..2 {
        if let Some(f) = pick(&two, "nbody", r) {
            println!(
                "  2 ranks, rank {r}: per step {:.2} ms = kernels {:.2} ms + net {:.3} ms (allgather {:.3} ms) + \
                 other {:.3} ms",
                num(&f, "step_ms")?,
                num(&f, "kernel_ms")?,
                num(&f, "net_ms")?,
                num(&f, "allgather_ms")?,
                num(&f, "step_ms")? - num(&f, "kernel_ms")? - num(&f, "net_ms")?
            );
        }
    }
    bench_line(&format!("mpi_nbody_{n}_np2_efficiency"), eff, "fraction", None);
    if let Some(f) = pick(&two, "ceiling", 0) {
        let a = num(&f, "step_ms")?;
        let machine = t1 / (2.0 * a);
        let layer = a / t2;
        println!(
            "  of which the machine: 2 ranks stepping their blocks with no communication take {a:.2} ms per step, \
             efficiency {machine:.3} with no communication at all; the distributed layer: {a:.2} / {t2:.2} = \
             {layer:.3} of that"
        );
        bench_line(
            &format!("mpi_nbody_{n}_np2_no_net_efficiency"),
            machine,
            "fraction",
            None,
        );
        bench_line(&format!("mpi_nbody_{n}_np2_layer_efficiency"), layer, "fraction", None);
    }
    let mut sent = 0.0;
    let mut halo = 0.0;
    for f in two.iter().filter(|f| f.get("what").is_some_and(|w| w == "jacobi")) {
        sent += num(f, "sent_per_sweep")?;
        halo += num(f, "halo_per_sweep")?;
    }
    if sent != halo {
        return Err(format!("Jacobi on 2 ranks: {sent} bytes sent per sweep, the halos are {halo}").into());
    }
    println!("Jacobi on 2 ranks: {sent} bytes sent per sweep in all, the halos exactly");
    bench_line("mpi_jacobi_np2_bytes_per_sweep", sent, "bytes", Some(halo));
    Ok(())
}

// ---------------------------------------------------------------- ranks

fn ranks(args: &Args) -> Res<()> {
    let rt = Runtime::builder()
        .backends(&[BackendKind::Cpu])
        .cpu_threads(1)
        .build()?;
    let c = Cluster::builder(&rt).build()?;
    match measure(&rt, &c, args) {
        Ok(()) => Ok(()),
        Err(e) => c.abort(1, &format!("mpi suite: {e}")),
    }
}

fn measure(rt: &Runtime, c: &Cluster, args: &Args) -> Res<()> {
    let (np, rank) = (c.size(), c.rank());
    let reps = if args.quick { 2 } else { args.reps.clamp(1, 5) };
    if rank == 0 {
        println!(
            "{np} rank(s) × 1 CPU thread, {} measured repetitions, {}",
            reps,
            if args.quick { "--quick sizes" } else { "full sizes" }
        );
    }
    nbody(
        rt,
        c,
        if args.quick { 4096 } else { 32768 },
        if args.quick { 2 } else { 4 },
        reps,
    )?;
    jacobi(
        rt,
        c,
        if args.quick { 256 } else { 1024 },
        if args.quick { 6 } else { 20 },
    )?;
    if np > 1 {
        net_fit(rt, c, if args.quick { 3 } else { 7 })?;
    }
    c.sync()?;
    if rank == 0 && std::env::var_os(LAUNCHED).is_none() {
        println!(
            "(started by hand under mpirun: {np} rank(s) only; for the efficiency against 1 rank, run `bench mpi` \
             without mpirun: it starts the 1- and 2-rank jobs itself)"
        );
    }
    Ok(())
}

/// Sum of the durations (ms) and bytes of `profile`'s records of `stage` whose
/// label passes `keep`.
fn stage_sum(profile: &Profile, stage: Stage, keep: impl Fn(&str) -> bool) -> (f64, u64) {
    profile
        .records
        .iter()
        .filter(|r| r.stage == stage && keep(&r.label))
        .fold((0.0, 0), |(t, b), r| (t + r.duration_ns() as f64 / 1e6, b + r.bytes))
}

struct Bodies<'a> {
    c: &'a Cluster,
    force: Kernel,
    kdk: Kernel,
    pos: DistData<f32>,
    vel: DistData<f32>,
    acc: DistData<f32>,
    n: usize,
}

impl Bodies<'_> {
    fn forces(&self, eps2: f32) -> offload::Result<()> {
        self.c.all_gather(&self.pos)?;
        for b in 0..self.acc.parts() {
            let r = self.acc.part_range(b).unwrap_or(0..0);
            self.c.submit(
                DistTask::new(&self.force)
                    .read(self.pos.whole())
                    .write(self.acc.part(b))
                    .scalar(self.n as u32)
                    .scalar(eps2)
                    .scalar((r.start / 4) as u32)
                    .items(r.len() / 4)
                    .name("accelerations"),
            )?;
        }
        Ok(())
    }

    fn kick_drift(&self, kick: f32, drift: f32) -> offload::Result<()> {
        for b in 0..self.pos.parts() {
            let n = self.pos.part_range(b).map_or(0, |r| r.len() / 4);
            self.c.submit(
                DistTask::new(&self.kdk)
                    .read_write(self.pos.part(b))
                    .read_write(self.vel.part(b))
                    .read(self.acc.part(b))
                    .scalar(kick)
                    .scalar(drift)
                    .items(n)
                    .name("kick+drift"),
            )?;
        }
        Ok(())
    }

    fn step(&self, dt: f32, eps2: f32) -> offload::Result<()> {
        self.kick_drift(0.5 * dt, dt)?;
        self.forces(eps2)?;
        self.kick_drift(0.5 * dt, 0.0)
    }
}

fn nbody(rt: &Runtime, c: &Cluster, n: usize, steps: usize, reps: usize) -> Res<()> {
    let (np, rank) = (c.size(), c.rank());
    let b = plummer(n, 1)?;
    let rows = |row_len| Partition::Rows {
        row_len,
        parts: np,
        halo: 0,
    };
    let sim = Bodies {
        c,
        force: offload::kernels::nbody_block()?,
        kdk: nbody_kdk()?,
        pos: c.data("pos", &b.pos, rows(4))?,
        vel: c.data("vel", &b.vel, rows(3))?,
        acc: c.data("acc", &vec![0.0f32; n * 4], rows(4))?,
        n,
    };
    let (dt, eps2) = (1e-3f32, 1e-4f32);
    // Warm-up: the first forces and one step (kernels built, pages touched).
    sim.forces(eps2)?;
    sim.step(dt, eps2)?;
    c.sync()?;
    let (mut walls, mut kernel, mut net, mut gather) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        c.sync()?;
        let since = rt.profiler().now_ns();
        let t0 = Instant::now();
        for _ in 0..steps {
            sim.step(dt, eps2)?;
        }
        c.sync()?;
        let wall = t0.elapsed().as_secs_f64() * 1e3 / steps as f64;
        let p = rt.profile().since(since);
        let per = |(t, _): (f64, u64)| t / steps as f64;
        walls.push(wall);
        kernel.push(per(stage_sum(&p, Stage::Kernel, |_| true)));
        net.push(per(stage_sum(&p, Stage::Net, |_| true)));
        gather.push(per(stage_sum(&p, Stage::Net, |l| l.starts_with("allgather"))));
    }
    let (step, kernel, net, gather) = (median(walls), median(kernel), median(net), median(gather));
    let bytes = 16 * n.div_ceil(np) * (np - 1);
    println!(
        "{RESULT} what=nbody np={np} rank={rank} n={n} steps={steps} step_ms={step:.4} kernel_ms={kernel:.4} \
         net_ms={net:.4} allgather_ms={gather:.4} allgather_bytes={bytes}"
    );
    let alone = if np > 1 {
        Some(no_net(c, &sim, steps, reps, dt, eps2)?)
    } else {
        None
    };
    if let Some(a) = alone {
        println!("{RESULT} what=ceiling np={np} rank={rank} n={n} step_ms={a:.4}");
    }
    if rank == 0 {
        if let Some(a) = alone {
            println!(
                "N-body N = {n}: every rank stepping its own block at the same time with no communication (the \
                 same kernels on a plain task graph): {a:.2} ms per step"
            );
        }
        println!(
            "N-body N = {n} on {np} rank(s): {step:.2} ms per step (median of {reps} runs of {steps} steps); \
             rank 0 per step: kernels {kernel:.2} ms, net stage {net:.3} ms (the allgather of {bytes} bytes \
             received per rank: {gather:.3} ms)"
        );
        bench_line(&format!("mpi_nbody_{n}_np{np}_step"), step, "ms", None);
        bench_line(&format!("mpi_nbody_{n}_np{np}_net_per_step"), net, "ms", None);
    }
    Ok(())
}

/// The ranks' steps without the distributed layer: each rank steps its own
/// block on a plain task graph (positions of the other blocks left as they
/// are), all ranks at the same time. What the machine gives `np` concurrent
/// ranks when nothing is communicated; median ms per step.
fn no_net(c: &Cluster, sim: &Bodies<'_>, steps: usize, reps: usize, dt: f32, eps2: f32) -> Res<f64> {
    let (np, rank) = (c.size(), c.rank());
    let g = TaskGraph::new(c.devices())?;
    let pos = g.data("pos", &sim.pos.local().acquire()?)?;
    let vel = g.data("vel", &sim.vel.local().acquire()?)?;
    let acc = g.data("acc", &sim.acc.local().acquire()?)?;
    let rows = |row_len| Partition::Rows {
        row_len,
        parts: np,
        halo: 0,
    };
    let (p, v, a) = (
        pos.partition(rows(4))?.swap_remove(rank),
        vel.partition(rows(3))?.swap_remove(rank),
        acc.partition(rows(4))?.swap_remove(rank),
    );
    let bodies = a.len() / 4;
    let first = (a.range().start / 4) as u32;
    let kd = |kick: f32, drift: f32| {
        g.submit(
            Task::new(&sim.kdk)
                .read_write(&p)
                .read_write(&v)
                .read(&a)
                .scalar(kick)
                .scalar(drift)
                .items(bodies)
                .name("kick+drift"),
        )
    };
    let step = || -> offload::Result<()> {
        kd(0.5 * dt, dt)?;
        g.submit(
            Task::new(&sim.force)
                .read(&pos)
                .write(&a)
                .scalar(sim.n as u32)
                .scalar(eps2)
                .scalar(first)
                .items(bodies)
                .name("accelerations"),
        )?;
        kd(0.5 * dt, 0.0).map(|_| ())
    };
    step()?;
    g.wait_all()?;
    let mut walls = Vec::new();
    for _ in 0..reps {
        c.sync()?;
        let t0 = Instant::now();
        for _ in 0..steps {
            step()?;
        }
        g.wait_all()?;
        walls.push(t0.elapsed().as_secs_f64() * 1e3 / steps as f64);
    }
    Ok(median(walls))
}

fn jacobi(rt: &Runtime, c: &Cluster, n: usize, iters: usize) -> Res<()> {
    let (np, rank) = (c.size(), c.rank());
    let parts = 2 * np;
    let u0: Vec<f32> = (0..n * n)
        .map(|i| if i < n { 1.0 } else { ((i * 7919) % 1000) as f32 * 1e-3 })
        .collect();
    let how = Partition::Rows {
        row_len: n,
        parts,
        halo: 1,
    };
    let u = c.data("u", &u0, how)?;
    let v = c.data("v", &u0, how)?;
    let k = kernels::jacobi()?;
    c.sync()?;
    let before = c.net_stats();
    let since = rt.profiler().now_ns();
    let t0 = Instant::now();
    for it in 0..iters {
        let (s, d) = if it.is_multiple_of(2) { (&u, &v) } else { (&v, &u) };
        for b in 0..parts {
            let (Some(sl), Some(dl)) = (s.local_part(b), d.local_part(b)) else {
                return Err(format!("no band {b}").into());
            };
            c.submit(
                DistTask::new(&k)
                    .read(s.part(b))
                    .write(d.part(b))
                    .scalar(n as u32)
                    .scalar((dl.range().start - sl.read_range().start) as u32)
                    .scalar(sl.read_range().len() as u32)
                    .scalar((dl.range().start / n) as u32)
                    .scalar(n as u32)
                    .items(dl.len())
                    .name("jacobi sweep"),
            )?;
        }
    }
    c.sync()?;
    let wall = t0.elapsed().as_secs_f64() * 1e3 / iters as f64;
    let after = c.net_stats();
    let (p2p_ms, _) = stage_sum(&rt.profile().since(since), Stage::Net, |l| l.starts_with("recv"));
    let sent = after.bytes_sent - before.bytes_sent;
    // The first sweep reads the registered grid, valid on every rank; each later
    // sweep sends one row of n f32 to each neighbouring rank.
    let neighbours = (rank > 0) as u64 + (rank + 1 < np) as u64;
    let halo = neighbours * (n * 4) as u64;
    let sweeps = iters as u64 - 1;
    let per_sweep = sent / sweeps.max(1);
    println!(
        "{RESULT} what=jacobi np={np} rank={rank} n={n} sweep_ms={wall:.4} recv_ms_per_sweep={:.4} \
         sent_per_sweep={per_sweep} halo_per_sweep={halo}",
        p2p_ms / sweeps.max(1) as f64
    );
    if sent != sweeps * halo {
        return Err(format!(
            "Jacobi: rank {rank} sent {sent} bytes over {sweeps} exchanging sweeps, not the halos' {}",
            sweeps * halo
        )
        .into());
    }
    let got = c.gather(if iters.is_multiple_of(2) { &u } else { &v })?;
    let mut want = u0;
    let mut next = vec![0.0f32; n * n];
    for _ in 0..iters {
        kernels::jacobi_host(&want, &mut next, n)?;
        std::mem::swap(&mut want, &mut next);
    }
    let differ = got
        .iter()
        .zip(&want)
        .filter(|(g, w)| g.to_bits() != w.to_bits())
        .count();
    if differ > 0 {
        return Err(format!("Jacobi: {differ} elements differ from the host sweep").into());
    }
    if rank == 0 {
        println!(
            "Jacobi n = {n}, {parts} bands on {np} rank(s): {wall:.3} ms per sweep; rank 0 sent {per_sweep} bytes \
             per sweep = its halo rows ({halo}); bitwise equal to the host sweep"
        );
        bench_line(
            &format!("mpi_jacobi_{n}_np{np}_rank0_bytes_per_sweep"),
            per_sweep as f64,
            "bytes",
            (halo > 0).then_some(halo as f64),
        );
    }
    Ok(())
}

/// Allgathers of 1 KiB to 4 MiB per rank; least-squares fit of the `net`
/// records to `t = α + bytes / β` (bytes received per rank), each point
/// weighted by its relative error.
fn net_fit(rt: &Runtime, c: &Cluster, reps: usize) -> Res<()> {
    let np = c.size();
    let mut points = Vec::new();
    for kib in [1usize, 8, 64, 256, 1024, 4096] {
        let len = kib * 1024 * np;
        let d = c.data(
            &format!("fit{kib}"),
            &vec![0u8; len],
            Partition::Blocks { parts: np, halo: 0 },
        )?;
        let mut t = Vec::new();
        let mut bytes = 0;
        for _ in 0..reps + 1 {
            c.sync()?;
            let since = rt.profiler().now_ns();
            c.all_gather(&d)?;
            let (ms, b) = stage_sum(&rt.profile().since(since), Stage::Net, |l| {
                l.starts_with("allgather fit")
            });
            t.push(ms * 1e3);
            bytes = b;
        }
        t.remove(0);
        points.push((bytes as f64, median(t)));
    }
    // Weighted by 1/t², so that each point counts by its relative error (an
    // unweighted fit is decided by the largest messages alone).
    let (mut sw, mut swx, mut swy, mut swxx, mut swxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(x, y) in &points {
        let w = 1.0 / (y * y);
        sw += w;
        swx += w * x;
        swy += w * y;
        swxx += w * x * x;
        swxy += w * x * y;
    }
    let slope = (sw * swxy - swx * swy) / (sw * swxx - swx * swx); // µs per byte
    let alpha = (swy - slope * swx) / sw;
    let beta = 1.0 / slope / 1e3; // GB/s
    if c.rank() == 0 {
        let list: Vec<String> = points.iter().map(|(x, y)| format!("{x:.0} B: {y:.1} µs")).collect();
        println!(
            "net stage, allgather on {np} ranks (median of {reps}; bytes received per rank): {}",
            list.join(", ")
        );
        println!("fit t = α + bytes/β: α = {alpha:.2} µs, β = {beta:.2} GB/s");
        bench_line(&format!("mpi_net_np{np}_latency"), alpha, "us", None);
        bench_line(&format!("mpi_net_np{np}_bandwidth"), beta, "GB/s", None);
    }
    Ok(())
}
