//! Gravitational N-body simulation: a Plummer sphere integrated with leapfrog.
//!
//! ```text
//! cargo run --release --example nbody                      # 16384 bodies, 100 steps, CPU
//! cargo run --release --example nbody -- --bodies 16384 --steps 100 --device opencl --profile
//! cargo run --release --example nbody -- --snapshot final.png
//! cargo build --release --features mpi --example nbody
//! mpirun -np 2 target/release/examples/nbody --distributed --bodies 4096 --steps 10 --check
//! ```
//!
//! With `--distributed` (cargo feature `mpi`, started by `mpirun`) each rank
//! owns a contiguous block of bodies: it computes their accelerations from all
//! positions and integrates them, and after each drift one allgather gives
//! every rank every position. Each body's acceleration is the same sum in the
//! same order as on one process, so the final state is bitwise equal to the
//! single-process CPU run (`--check` runs that on rank 0 and compares).
//!
//! The default (16384 bodies × 100 steps on the CPU backend) takes a few seconds
//! on two AVX-512 cores, most of it the float64 energy check. Prints the device,
//! interactions per second, GFLOP/s (20 flops per interaction), the relative
//! energy drift, and where the time went (the profile table with `--profile`).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use offload::Runtime;
use offload::nbody::{Accelerations, DeviceAccelerations, ResidentSimulation, SimConfig, Simulation, write_png};

/// All-pairs N-body simulation on the CPU, an OpenCL or a CUDA device.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Number of bodies.
    #[arg(long, default_value_t = 16384)]
    bodies: usize,
    /// Leapfrog steps.
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Device: cpu, opencl, cuda, a label such as opencl:1, or all.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Timestep (N-body units; the Plummer sphere's crossing time is about 2.8).
    #[arg(long, default_value_t = 0.005)]
    dt: f32,
    /// Softening length.
    #[arg(long, default_value_t = 0.02)]
    eps: f32,
    /// Seed of the initial conditions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Write a PNG of the final positions (x–y projection, density-shaded).
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Write a Chrome trace-event JSON of the run (Perfetto, chrome://tracing).
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Write an SVG timeline of the run.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Write the SVG roofline of the run (each kernel a point on its device's
    /// roofline; peaks measured on first use, then cached) and print its table.
    #[arg(long)]
    roofline: Option<std::path::PathBuf>,
    /// With several devices: let host-CPU devices (the CPU backend, PoCL) share
    /// the host's cores (by default those beyond the first are left out).
    #[arg(long)]
    shared_cores: bool,
    /// Run on the ranks of an MPI job (`mpirun -np N`; needs the `mpi` feature),
    /// one block of bodies per rank, on each rank's CPU device.
    #[arg(long)]
    distributed: bool,
    /// With --distributed: rank 0 also runs the single-process simulation and
    /// fails unless the final state is bitwise equal.
    #[arg(long)]
    check: bool,
    /// With --distributed: CPU threads per rank.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// With several devices: write the executed task graph (Graphviz DOT).
    #[arg(long)]
    dot: Option<PathBuf>,
    /// Print the full profile table (transfer vs compute per device).
    #[arg(long)]
    profile: bool,
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

fn main() -> Result<(), Failure> {
    let args = Args::parse();
    let config = SimConfig {
        bodies: args.bodies,
        steps: args.steps,
        dt: args.dt,
        eps: args.eps,
        seed: args.seed,
    };
    config.validate()?;
    if args.distributed {
        #[cfg(feature = "mpi")]
        return distributed::run(&args, config);
        #[cfg(not(feature = "mpi"))]
        return Err("--distributed needs the mpi feature: cargo build --release --features mpi --example nbody".into());
    }
    let rt = Runtime::new()?;
    let devices = rt.select(&args.device)?;
    let mut sim = Simulation::new(config)?;
    let n = sim.bodies().len();
    // `all` (or any selector naming several devices) keeps the bodies on the
    // devices (a task graph): every step is split over them, and each device
    // fetches only the positions other devices updated.
    let split = args.device.trim() == "all" || devices.len() > 1;
    let mut resident = if split {
        let graph = offload::task::TaskGraph::builder(&devices)
            .allow_shared_cores(args.shared_cores)
            .build()?;
        Some(ResidentSimulation::from_bodies(graph, sim.bodies().clone(), config)?)
    } else {
        None
    };
    let mut single_accel = None;
    let used = if split { &devices[..] } else { &devices[..1] };
    for d in used {
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
        "{n} bodies (Plummer sphere, seed {}), {} steps of dt = {}, eps = {}",
        args.seed, args.steps, args.dt, args.eps
    );

    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(args.steps as u64);
        b.set_style(ProgressStyle::with_template(
            "{bar:40} {pos}/{len} steps  {elapsed} (eta {eta})",
        )?);
        b
    };
    // ANCHOR: run
    let report = match &mut resident {
        Some(r) => r.run(|s| bar.set_position(s as u64))?,
        None => {
            let accel: &mut dyn Accelerations =
                single_accel.insert(DeviceAccelerations::new(&devices[0], n, args.eps)?);
            sim.run(accel, |s| bar.set_position(s as u64))?
        }
    };
    bar.finish_and_clear();
    // ANCHOR_END: run

    println!(
        "{} steps in {:.3} s ({:.3} s computing accelerations, transfers included)",
        report.steps,
        report.wall.as_secs_f64(),
        report.accel_time.as_secs_f64()
    );
    println!(
        "{:.3e} interactions/s, {:.1} GFLOP/s (20 flops per interaction)",
        report.interactions_per_sec(),
        report.gflops()
    );
    println!(
        "energy: {:.9} -> {:.9}, relative drift {:.3e}",
        report.energy_before.total(),
        report.energy_after.total(),
        report.energy_drift()
    );
    let mut dot_failed = None;
    if let Some(r) = &resident {
        let g = r.report();
        println!("{g}");
        let state = (n * (4 + 3) * 4) as f64;
        println!(
            "moved {:.2} MB into device memory over {} steps ({:.1}% of resending positions and velocities every step); {:.2} MB read in place",
            g.bytes_in() as f64 / 1e6,
            report.steps,
            100.0 * g.bytes_in() as f64 / (state * report.steps.max(1) as f64 * used.len() as f64),
            g.bytes_resident() as f64 / 1e6
        );
        if let Some(path) = &args.dot {
            match g.write_dot(path) {
                Ok(()) => println!("task graph written to {}", path.display()),
                Err(e) => dot_failed = Some(e),
            }
        }
    }
    if args.roofline.is_some() {
        for d in rt.devices() {
            if let Err(e) = offload::roofline::peaks(d) {
                println!("{}: no roofline peaks ({e})", d.label());
            }
        }
    }
    let profile = rt.profile();
    let prof = profile.report();
    if let Some(p) = &args.roofline {
        print!("{}", profile.roofline());
        profile.write_svg_roofline(p)?;
        println!("roofline written to {}", p.display());
    }
    if args.profile {
        println!("{prof}");
    } else {
        println!(
            "kernels {:.1}% of the profiled wall time; transfers {:.3} ms (--profile for the table)",
            100.0 * prof.kernel_fraction,
            prof.total.transfer_ns() as f64 / 1e6
        );
    }
    // The results above are printed first: export failures are reported after them.
    let mut failed: Option<offload::Error> = dot_failed;
    if let Some(path) = &args.trace {
        match profile.write_chrome_trace(path) {
            Ok(()) => println!("trace written to {}", path.display()),
            Err(e) => failed = Some(e),
        }
    }
    if let Some(path) = &args.timeline {
        match profile.write_svg_timeline(path) {
            Ok(()) => println!("timeline written to {}", path.display()),
            Err(e) => failed = Some(e),
        }
    }
    if let Some(path) = &args.snapshot {
        let pos = match &resident {
            Some(r) => r.bodies()?.pos,
            None => sim.bodies().pos.clone(),
        };
        match write_png(path, &pos, 512, 2.0) {
            Ok(()) => println!("snapshot written to {}", path.display()),
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

#[cfg(feature = "mpi")]
mod distributed {
    //! N-body over MPI ranks: owner-computes over blocks of bodies, positions
    //! shared by one allgather per step.
    use std::time::Instant;

    use offload::distributed::{Cluster, DistData, DistTask};
    use offload::kernels::nbody_kdk;
    use offload::nbody::{ResidentSimulation, SimConfig, plummer};
    use offload::task::{Partition, TaskGraph};
    use offload::{BackendKind, Kernel, Runtime};

    use super::{Args, Failure};

    fn kdk(
        c: &Cluster,
        k: &Kernel,
        pos: &DistData<f32>,
        vel: &DistData<f32>,
        acc: &DistData<f32>,
        kick: f32,
        drift: f32,
    ) -> offload::Result<()> {
        for b in 0..pos.parts() {
            let n = pos.part_range(b).map_or(0, |r| r.len() / 4);
            c.submit(
                DistTask::new(k)
                    .read_write(pos.part(b))
                    .read_write(vel.part(b))
                    .read(acc.part(b))
                    .scalar(kick)
                    .scalar(drift)
                    .items(n)
                    .name("kick+drift"),
            )?;
        }
        Ok(())
    }

    fn forces(
        c: &Cluster,
        k: &Kernel,
        pos: &DistData<f32>,
        acc: &DistData<f32>,
        n: usize,
        eps2: f32,
    ) -> offload::Result<()> {
        c.all_gather(pos)?;
        for b in 0..acc.parts() {
            let r = acc.part_range(b).unwrap_or(0..0);
            c.submit(
                DistTask::new(k)
                    .read(pos.whole())
                    .write(acc.part(b))
                    .scalar(n as u32)
                    .scalar(eps2)
                    .scalar((r.start / 4) as u32)
                    .items(r.len() / 4)
                    .name("accelerations"),
            )?;
        }
        Ok(())
    }

    pub fn run(args: &Args, config: SimConfig) -> Result<(), Failure> {
        let rt = Runtime::builder()
            .backends(&[BackendKind::Cpu])
            .cpu_threads(args.threads)
            .build()?;
        let c = Cluster::builder(&rt).build()?;
        match simulate(&c, args, config) {
            Ok(()) => Ok(()),
            Err(e) => c.abort(1, &format!("{e:?}")),
        }
    }

    fn simulate(c: &Cluster, args: &Args, config: SimConfig) -> Result<(), Failure> {
        let bodies = plummer(config.bodies, config.seed)?;
        let n = bodies.len();
        let ranks = c.size();
        if c.rank() == 0 {
            println!(
                "{n} bodies (Plummer sphere, seed {}), {} steps of dt = {}, on {ranks} ranks × {} CPU threads",
                config.seed, config.steps, config.dt, args.threads
            );
        }
        let blocks = |row_len| Partition::Rows {
            row_len,
            parts: ranks,
            halo: 0,
        };
        let pos = c.data("pos", &bodies.pos, blocks(4))?;
        let vel = c.data("vel", &bodies.vel, blocks(3))?;
        let acc = c.data("acc", &vec![0.0f32; n * 4], blocks(4))?;
        for b in 0..ranks {
            let (p, v) = (pos.part_range(b).unwrap_or(0..0), vel.part_range(b).unwrap_or(0..0));
            if p.start / 4 != v.start / 3 || p.end / 4 != v.end / 3 {
                return Err(format!(
                    "block {b}: positions and velocities cut at different bodies; use a body count divisible by {}",
                    32 * ranks
                )
                .into());
            }
        }
        let (force, step) = (offload::kernels::nbody_block()?, nbody_kdk()?);
        let eps2 = config.eps * config.eps;
        let half = 0.5 * config.dt;
        let t0 = Instant::now();
        forces(c, &force, &pos, &acc, n, eps2)?;
        for _ in 0..config.steps {
            kdk(c, &step, &pos, &vel, &acc, half, config.dt)?;
            forces(c, &force, &pos, &acc, n, eps2)?;
            kdk(c, &step, &pos, &vel, &acc, half, 0.0)?;
        }
        c.sync()?;
        let wall = t0.elapsed().as_secs_f64();
        let stats = c.net_stats();
        let (p, v) = (c.gather(&pos)?, c.gather(&vel)?);
        let profile = c.gather_profile()?;
        let comm = stats.wait_ns as f64 / 1e9;
        println!(
            "rank {}: {} steps in {:.3} s; waiting on other ranks {:.3} s ({:.3} ms per step); {} bytes to others in allgathers",
            c.rank(),
            config.steps,
            wall,
            comm,
            comm * 1e3 / config.steps.max(1) as f64,
            stats.collective_bytes
        );
        let hash = p.iter().chain(&v).fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
            (h ^ x.to_bits() as u64).wrapping_mul(0x0000_0100_0000_01b3)
        });
        if c.rank() != 0 {
            return Ok(());
        }
        println!("final state hash {hash:016x}");
        if let Some(profile) = profile {
            if let Some(path) = &args.trace {
                profile.write_chrome_trace(path)?;
                println!("merged trace written to {}", path.display());
            }
            if let Some(path) = &args.timeline {
                profile.write_svg_timeline(path)?;
                println!("merged timeline written to {}", path.display());
            }
        }
        if args.check {
            let rt1 = Runtime::builder().backends(&[BackendKind::Cpu]).build()?;
            let mut one = ResidentSimulation::from_bodies(TaskGraph::new(rt1.devices())?, bodies, config)?;
            one.run(|_| {})?;
            let want = one.bodies()?;
            let differ = p
                .iter()
                .zip(&want.pos)
                .chain(v.iter().zip(&want.vel))
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            if differ > 0 {
                return Err(format!(
                    "MISMATCH: {differ} of {} values differ from the single-process run",
                    p.len() + v.len()
                )
                .into());
            }
            println!("verified: bitwise equal to the single-process run");
        }
        Ok(())
    }
}
