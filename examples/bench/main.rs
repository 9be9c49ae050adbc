//! The benchmark harness: `cargo run --release --example bench -- [suite...]`.
//!
//! Suites: `vector_add` (CPU backend), `opencl`, `cuda`, `nbody`, `gemm`, `coexec`,
//! `profile`, `async` (queues and events), `tasks` (managed data and the task
//! graph), `authoring` (CPU work-group kernels vs PoCL, one thread each), `mpi` (distributed runs on MPI ranks; built only with `--features
//! mpi`, and not part of `all`: it starts `mpirun` itself), or `all` (the
//! default). Each prints a table and one machine-readable
//! line per measurement:
//!
//! `BENCH <name> value=<v> unit=<u> [ref=<r> ratio=<v/r>]`
//!
//! where the reference is measured in the same run on the same machine. A suite
//! whose device is missing says so and is skipped (the benchmark never fails
//! because a backend is absent, unless `--strict`).

mod asynchronous;
mod authoring;
mod coexec;
mod common;
mod cuda;
mod gemm;
#[cfg(feature = "mpi")]
mod mpi;
mod nbody;
mod opencl;
mod profile;
mod tasks;
mod vector_add;

use clap::Parser;

/// Benchmarks of the offload runtime against in-run references.
#[derive(Parser, Debug, Clone)]
#[command(about, long_about = None)]
pub struct Args {
    /// Suites to run: vector_add, opencl, cuda, nbody, gemm, coexec, profile, async, tasks, authoring, all; and mpi
    /// (with the `mpi` feature; not part of all).
    #[arg(default_values_t = vec!["all".to_string()])]
    pub suites: Vec<String>,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 7)]
    pub reps: usize,
    /// Shrink problem sizes for a quick smoke run.
    #[arg(long)]
    pub quick: bool,
    /// Fail when a suite's device is missing instead of skipping it.
    #[arg(long)]
    pub strict: bool,
}

type Suite = fn(&Args) -> Result<(), Box<dyn std::error::Error>>;

const SUITES: &[(&str, Suite)] = &[
    ("vector_add", vector_add::run),
    ("opencl", opencl::run),
    ("cuda", cuda::run),
    ("nbody", nbody::run),
    ("gemm", gemm::run),
    ("coexec", coexec::run),
    ("profile", profile::run),
    ("async", asynchronous::run),
    ("tasks", tasks::run),
    ("authoring", authoring::run),
    #[cfg(feature = "mpi")]
    ("mpi", mpi::run),
];

/// Suites that `all` leaves out (they must be asked for by name).
const NOT_IN_ALL: &[&str] = &["mpi"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let all = args.suites.iter().any(|s| s == "all");
    for s in &args.suites {
        if s == "mpi" && !cfg!(feature = "mpi") {
            return Err(
                "the mpi suite needs the mpi feature: cargo run --release --features mpi --example bench -- mpi".into(),
            );
        }
        if s != "all" && !SUITES.iter().any(|(n, _)| n == s) {
            return Err(format!(
                "unknown suite {s:?}; valid: all, {}",
                SUITES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )
            .into());
        }
    }
    for (name, run) in SUITES {
        if (all && !NOT_IN_ALL.contains(name)) || args.suites.iter().any(|s| s == name) {
            println!("== suite {name} ==");
            run(&args)?;
        }
    }
    Ok(())
}
