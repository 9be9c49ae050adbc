//! Jacobi-2D heat diffusion on managed data: the grid stays on the devices and
//! only halo rows move between them.
//!
//! ```text
//! cargo run --release --example jacobi                          # 4096², 100 sweeps, every device
//! cargo run --release --example jacobi -- --n 1024 --iters 50   # checked against the host
//! cargo run --release --example jacobi -- --device cpu --parts 4 --dot jacobi.dot --timeline jacobi.svg
//! cargo build --release --features mpi --example jacobi
//! mpirun -np 2 target/release/examples/jacobi --distributed --n 512 --iters 50
//! ```
//!
//! With `--distributed` (cargo feature `mpi`, started by `mpirun`) each rank owns
//! a run of row bands; a sweep's band runs on its owner, and only the boundary
//! rows between ranks are sent (one row each way per rank boundary per sweep,
//! counted and compared with that). The result is checked bitwise against the
//! host sweep, as on one process.
//!
//! An `n × n` grid (top edge held at 1, the other edges at 0) is registered
//! twice with a task graph, `u` and `v`, each cut into row bands with one halo
//! row (`Partition::Rows`). Every sweep submits one task per band, reading a
//! band of one grid (with its halo rows) and writing the same band of the other;
//! then the grids swap roles. The graph orders the tasks by their data and
//! places each on a device (`--placement`): a band's data stays where it was
//! computed, and a device fetches only the halo rows its neighbours changed.
//!
//! Prints the graph report (tasks, busy time, bytes fetched and found resident
//! per device, critical path), the bytes fetched per sweep beside the halo bytes
//! per sweep, and — with `--check`, on by default for `n ≤ 1024` — the largest
//! difference from a plain single-threaded sweep on the host (every backend
//! computes the same bits, so it must be exactly 0; the example fails
//! otherwise).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use offload::task::{Partition, Placement, TaskGraph};
use offload::{Runtime, kernels};

/// Placement policy of the task graph.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum PlacementArg {
    /// Earliest predicted completion (queued work + fetches + model time).
    Dmda,
    /// The first idle device.
    Eager,
}

/// Jacobi-2D sweeps over row bands on a task graph, verified against the host.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Grid side: an n × n grid of f32.
    #[arg(long, default_value_t = 4096)]
    n: usize,
    /// Sweeps.
    #[arg(long, default_value_t = 100)]
    iters: usize,
    /// Devices: cpu, opencl, cuda, a label such as opencl:1, or all.
    #[arg(long, default_value = "all")]
    device: String,
    /// Row bands per grid (default: 2 per device).
    #[arg(long)]
    parts: Option<usize>,
    /// How the graph places ready tasks.
    #[arg(long, value_enum, default_value_t = PlacementArg::Dmda)]
    placement: PlacementArg,
    /// Let host-CPU devices (the CPU backend, PoCL) share the host's cores (by
    /// default those beyond the first are left out, and the report says why).
    #[arg(long)]
    shared_cores: bool,
    /// Write an SVG timeline of the sweeps.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Write the executed task graph as Graphviz DOT (`dot -Tsvg`).
    #[arg(long)]
    dot: Option<PathBuf>,
    /// Compare with a single-threaded host sweep (default: on for n ≤ 1024;
    /// `--check=false` turns it off).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    check: Option<bool>,
    /// Run on the ranks of an MPI job (`mpirun -np N`; needs the `mpi` feature),
    /// on each rank's CPU device; `--parts` bands in all (default 2 per rank).
    #[arg(long)]
    distributed: bool,
}

/// The initial grid: the top edge at 1, everything else at 0.
fn initial(n: usize) -> Vec<f32> {
    initial_rect(n, n)
}

/// Build the kernel on `dev` and run it once on a small grid with the block
/// size the tasks will use: OpenCL implementations may compile per work-group
/// size at the first launch, which would otherwise count as the first task's
/// time (and teach the placement's performance model a wrong speed).
fn warm_up(dev: &offload::Device, k: &offload::Kernel) -> offload::Result<()> {
    dev.build(k)?;
    let (w, h) = (64usize, 64usize);
    let x = dev.upload(&initial_rect(w, h))?;
    let mut y = dev.alloc::<f32>(w * h)?;
    dev.launch(
        k,
        &offload::LaunchConfig::for_items(w * h, dev.info()),
        &[
            offload::Arg::input(&x),
            offload::Arg::output(&mut y),
            (w as u32).into(),
            0u32.into(),
            ((w * h) as u32).into(),
            0u32.into(),
            (h as u32).into(),
            0u32.into(),
            ((w * h) as u32).into(),
        ],
    )
}

/// A `rows × width` grid with the top edge at 1.
fn initial_rect(width: usize, rows: usize) -> Vec<f32> {
    let mut g = vec![0.0f32; width * rows];
    g[..width].fill(1.0);
    g
}

/// An error printed with its message (not its debug form) when `main` fails.
struct Failure(Box<dyn std::error::Error>);

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<E: Into<Box<dyn std::error::Error>>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.into())
    }
}

/// Submit `iters` sweeps over the bands `us` and `vs` of two n × n grids,
/// reading one and writing the other, alternately (sweep 0 reads `us`).
fn submit_sweeps(
    graph: &TaskGraph,
    k: &offload::Kernel,
    us: &[offload::task::Data<f32>],
    vs: &[offload::task::Data<f32>],
    n: usize,
    iters: usize,
) -> offload::Result<()> {
    // ANCHOR: sweeps
    for it in 0..iters {
        let (src, dst) = if it.is_multiple_of(2) { (us, vs) } else { (vs, us) };
        for (b, (s, d)) in src.iter().zip(dst).enumerate() {
            graph.submit(kernels::jacobi_task(k, s, d, n, n)?.name(&format!("sweep {it} band {b}")))?;
        }
    }
    // ANCHOR_END: sweeps
    Ok(())
}

/// The single-process task-graph run of `main` on `devices`: `iters` sweeps of
/// `u0` (n × n) cut into `parts` row bands; the final grid.
#[cfg_attr(not(feature = "mpi"), allow(dead_code))]
fn task_graph_run(
    devices: &[offload::Device],
    u0: &[f32],
    n: usize,
    parts: usize,
    iters: usize,
) -> offload::Result<Vec<f32>> {
    let graph = TaskGraph::new(devices)?;
    let k = kernels::jacobi()?;
    let u = graph.data("u", u0)?;
    let v = graph.data("v", u0)?;
    let how = Partition::Rows {
        row_len: n,
        parts,
        halo: 1,
    };
    let (us, vs) = (u.partition(how)?, v.partition(how)?);
    submit_sweeps(&graph, &k, &us, &vs, n, iters)?;
    if iters.is_multiple_of(2) {
        u.acquire()
    } else {
        v.acquire()
    }
}

fn main() -> Result<ExitCode, Failure> {
    let args = Args::parse();
    let n = args.n;
    if n < 3 || n.checked_mul(n).is_none_or(|c| c > u32::MAX as usize) {
        return Err(format!("--n must be at least 3 and n² at most {}", u32::MAX).into());
    }
    if args.iters == 0 {
        return Err("--iters must be at least 1".into());
    }
    if args.distributed {
        #[cfg(feature = "mpi")]
        return distributed::run(&args);
        #[cfg(not(feature = "mpi"))]
        return Err(
            "--distributed needs the mpi feature: cargo build --release --features mpi --example jacobi".into(),
        );
    }
    let rt = Runtime::new()?;
    let devices = rt.select(&args.device)?;
    let parts = args.parts.unwrap_or(2 * devices.len());
    if parts == 0 || parts > n {
        return Err(format!("--parts must be between 1 and n = {n}").into());
    }
    let check = args.check.unwrap_or(n <= 1024);
    let placement = match args.placement {
        PlacementArg::Dmda => Placement::Dmda,
        PlacementArg::Eager => Placement::Eager,
    };
    for d in &devices {
        let i = d.info();
        println!(
            "device {}: {} ({}, {} compute units)",
            d.label(),
            i.name,
            i.vendor,
            i.compute_units
        );
    }
    println!(
        "Jacobi-2D on a {n} x {n} f32 grid, {} sweeps, {parts} row bands per grid, placement {placement:?}; \
         host check {}",
        args.iters,
        match (check, args.check) {
            (true, Some(_)) => "on (--check)",
            (true, None) => "on (default for n <= 1024)",
            (false, Some(_)) => "off (--check=false)",
            (false, None) => "off (default for n > 1024; --check turns it on)",
        }
    );

    let k = kernels::jacobi()?;
    for d in &devices {
        warm_up(d, &k)?;
    }
    let u0 = initial(n);
    let window = rt.profiler().now_ns();
    let t0 = Instant::now();
    // ANCHOR: graph
    let graph = TaskGraph::builder(&devices)
        .placement(placement)
        .allow_shared_cores(args.shared_cores)
        .build()?;
    let u = graph.data("u", &u0)?;
    let v = graph.data("v", &u0)?;
    let how = Partition::Rows {
        row_len: n,
        parts,
        halo: 1,
    };
    let (us, vs) = (u.partition(how)?, v.partition(how)?);
    submit_sweeps(&graph, &k, &us, &vs, n, args.iters)?;
    // ANCHOR_END: graph
    let result = if args.iters.is_multiple_of(2) { &u } else { &v };
    let got = result.acquire()?;
    let wall = t0.elapsed().as_secs_f64();
    let report = graph.report();

    println!("{report}");
    let rows: Vec<String> = us
        .iter()
        .map(|b| format!("rows {}..{}", b.range().start / n, b.range().end / n))
        .collect();
    println!("bands: {}", rows.join(", "));
    // Where each band ran in the last sweep (task ids follow submission order).
    let last: Vec<String> = (0..parts)
        .map(|b| {
            let id = (args.iters - 1) * parts + b;
            let dev = report
                .tasks
                .iter()
                .find(|t| t.id == id)
                .map_or("?", |t| t.device.as_str());
            format!("band {b} on {dev}")
        })
        .collect();
    println!("last sweep: {}", last.join(", "));
    let iters = args.iters as f64;
    let first: u64 = report.tasks.iter().filter(|t| t.id < parts).map(|t| t.bytes_in).sum();
    let total = report.bytes_in();
    let halo = 2 * (parts as u64 - 1) * n as u64 * 4;
    println!(
        "bytes fetched: {:.3} MB per sweep on average ({:.3} MB in all; the first sweep, which places the \
         grid, {:.3} MB; the other sweeps {:.3} MB per sweep)",
        total as f64 / iters / 1e6,
        total as f64 / 1e6,
        first as f64 / 1e6,
        if args.iters > 1 {
            (total - first) as f64 / (iters - 1.0) / 1e6
        } else {
            0.0
        }
    );
    println!(
        "halo bytes per sweep: {:.3} MB (one row of {n} f32 each way across each of the {} band boundaries); \
         the whole grid is {:.3} MB",
        halo as f64 / 1e6,
        parts - 1,
        (n * n * 4) as f64 / 1e6
    );
    println!(
        "{:.1} ms in all ({:.3} ms per sweep, {:.2} G cell updates/s), registration and the final acquire included",
        wall * 1e3,
        wall * 1e3 / iters,
        (n * n) as f64 * iters / wall / 1e9
    );

    if let Some(p) = &args.dot {
        report.write_dot(p)?;
        println!("task graph written to {}", p.display());
    }
    if let Some(p) = &args.timeline {
        rt.profile().since(window).write_svg_timeline(p)?;
        println!("timeline written to {}", p.display());
    }
    drop(graph);

    if !check {
        return Ok(ExitCode::SUCCESS);
    }
    let t = Instant::now();
    let mut want = u0;
    let mut next = vec![0.0f32; n * n];
    for _ in 0..args.iters {
        kernels::jacobi_host(&want, &mut next, n)?;
        std::mem::swap(&mut want, &mut next);
    }
    let (mut max_err, mut differ) = (0.0f32, 0usize);
    for (g, w) in got.iter().zip(&want) {
        if g.to_bits() != w.to_bits() {
            differ += 1;
            max_err = max_err.max((g - w).abs());
        }
    }
    println!(
        "host check ({:.1} ms, single-threaded): max abs error {max_err:e}, {differ} of {} elements differ",
        t.elapsed().as_secs_f64() * 1e3,
        n * n
    );
    if differ > 0 || max_err.is_nan() {
        eprintln!("MISMATCH: the devices' grid differs from the host sweep");
        return Ok(ExitCode::FAILURE);
    }
    println!("verified: bitwise equal to the host reference");
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "mpi")]
mod distributed {
    //! Jacobi sweeps over row bands owned by MPI ranks.
    use std::process::ExitCode;
    use std::time::Instant;

    use offload::distributed::{Cluster, DistTask};
    use offload::task::Partition;
    use offload::{BackendKind, Runtime, kernels};

    use super::{Args, Failure, initial, task_graph_run};

    pub fn run(args: &Args) -> Result<ExitCode, Failure> {
        let rt = Runtime::builder()
            .backends(&[BackendKind::Cpu])
            .cpu_threads(1)
            .build()?;
        let c = Cluster::builder(&rt).build()?;
        match sweep(&c, args) {
            Ok(code) => Ok(code),
            Err(e) => c.abort(1, &format!("{e:?}")),
        }
    }

    fn sweep(c: &Cluster, args: &Args) -> Result<ExitCode, Failure> {
        let n = args.n;
        let parts = args.parts.unwrap_or(2 * c.size());
        if parts < c.size() || parts > n {
            return Err(format!("--parts must be between the rank count {} and n = {n}", c.size()).into());
        }
        let u0 = initial(n);
        let how = Partition::Rows {
            row_len: n,
            parts,
            halo: 1,
        };
        // ANCHOR: distributed
        let u = c.data("u", &u0, how)?;
        let v = c.data("v", &u0, how)?;
        let k = kernels::jacobi()?;
        let t0 = Instant::now();
        for it in 0..args.iters {
            let (s, d) = if it.is_multiple_of(2) { (&u, &v) } else { (&v, &u) };
            for b in 0..parts {
                let (Some(sl), Some(dl)) = (s.local_part(b), d.local_part(b)) else {
                    continue;
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
                        .name(&format!("sweep {it} band {b}")),
                )?;
            }
        }
        // ANCHOR_END: distributed
        c.sync()?;
        let wall = t0.elapsed().as_secs_f64();
        // ANCHOR: netstats
        let stats = c.net_stats();
        let rank = c.rank();
        let neighbours = (rank > 0) as u64 + (rank + 1 < c.size()) as u64;
        let halo = neighbours * (n * 4) as u64;
        // ANCHOR_END: netstats
        let sweeps = args.iters as u64 - 1;
        println!(
            "rank {rank}: {} sweeps in {:.3} s; sent {} bytes = {:.1} per exchanging sweep (halo rows to {neighbours} \
             neighbouring ranks: {halo} bytes per sweep; sweep 0 reads the registered grid, valid everywhere)",
            args.iters,
            wall,
            stats.bytes_sent,
            if sweeps > 0 {
                stats.bytes_sent as f64 / sweeps as f64
            } else {
                0.0
            }
        );
        if stats.bytes_sent != sweeps * halo {
            return Err(format!(
                "rank {rank} sent {} bytes, not the halos' {}",
                stats.bytes_sent,
                sweeps * halo
            )
            .into());
        }
        // ANCHOR: gather
        let got = c.gather(if args.iters.is_multiple_of(2) { &u } else { &v })?;
        let profile = c.gather_profile()?;
        // ANCHOR_END: gather
        if rank != 0 {
            return Ok(ExitCode::SUCCESS);
        }
        if let (Some(p), Some(path)) = (profile, &args.timeline) {
            p.write_svg_timeline(path)?;
            println!("merged timeline written to {}", path.display());
        }
        let mut want = u0;
        let mut next = vec![0.0f32; n * n];
        for _ in 0..args.iters {
            kernels::jacobi_host(&want, &mut next, n)?;
            std::mem::swap(&mut want, &mut next);
        }
        let differ = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g.to_bits() != w.to_bits())
            .count();
        if differ > 0 {
            eprintln!("MISMATCH: {differ} elements differ from the host sweep");
            return Ok(ExitCode::FAILURE);
        }
        // The single-process task-graph run (the example without --distributed),
        // same bands, on this process's CPU device.
        let rt1 = Runtime::builder().backends(&[BackendKind::Cpu]).build()?;
        let single = task_graph_run(rt1.devices(), &initial(n), n, parts, args.iters)?;
        let differ = got
            .iter()
            .zip(&single)
            .filter(|(g, w)| g.to_bits() != w.to_bits())
            .count();
        if differ > 0 || single.len() != got.len() {
            eprintln!("MISMATCH: {differ} elements differ from the single-process task-graph run");
            return Ok(ExitCode::FAILURE);
        }
        println!(
            "verified: bitwise equal to the host sweep and to the single-process task-graph run ({parts} bands) on \
             {} ranks",
            c.size()
        );
        Ok(ExitCode::SUCCESS)
    }
}
