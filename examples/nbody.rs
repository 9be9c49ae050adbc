//! Gravitational N-body simulation: a Plummer sphere integrated with leapfrog.
//!
//! ```text
//! cargo run --release --example nbody                      # 16384 bodies, 100 steps, CPU
//! cargo run --release --example nbody -- --bodies 16384 --steps 100 --device opencl --profile
//! cargo run --release --example nbody -- --snapshot final.png
//! ```
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
    /// With several devices: let host-CPU devices (the CPU backend, PoCL) share
    /// the host's cores (by default those beyond the first are left out).
    #[arg(long)]
    shared_cores: bool,
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
    let report = match &mut resident {
        Some(r) => r.run(|s| bar.set_position(s as u64))?,
        None => {
            let accel: &mut dyn Accelerations =
                single_accel.insert(DeviceAccelerations::new(&devices[0], n, args.eps)?);
            sim.run(accel, |s| bar.set_position(s as u64))?
        }
    };
    bar.finish_and_clear();

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
    let profile = rt.profile();
    let prof = profile.report();
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
