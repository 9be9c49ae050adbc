//! Vector add through the five stages, verified element by element.
//!
//! `cargo run --release --example vector_add -- --device cpu --n 16777216 --profile`
//!
//! Stages: init (runtime + kernel build), host → device (upload a and b),
//! launch, device → host (download c), teardown. Prints `verified` when every
//! element equals the host sum, and exits non-zero on a mismatch. `--device all`
//! splits the work across every device with the scheduler.

use std::process::ExitCode;

use clap::Parser;
use offload::{Arg, LaunchConfig, Runtime, kernels};

/// Add two vectors on a device and verify the result.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Device selector: cpu, opencl, opencl:1, cuda, cuda:0, all (default: $OFFLOAD_DEVICE or cpu).
    #[arg(long)]
    device: Option<String>,
    /// Number of elements.
    #[arg(long, default_value_t = 1 << 24)]
    n: usize,
    /// Threads per block (default: a warp multiple chosen for the device).
    #[arg(long)]
    block: Option<u32>,
    /// Launches to run (the data stays on the device between them); with several
    /// devices, split runs.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Print the profile table (transfer vs compute, Amdahl bound).
    #[arg(long)]
    profile: bool,
    /// Write a Chrome trace-event JSON (Perfetto, chrome://tracing); with several
    /// devices it covers the split runs only (so does the timeline).
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
    /// Write an SVG timeline.
    #[arg(long)]
    timeline: Option<std::path::PathBuf>,
    /// Write the SVG roofline of the run (each kernel a point on its device's
    /// roofline; peaks measured on first use, then cached) and print its table.
    #[arg(long)]
    roofline: Option<std::path::PathBuf>,
    /// With several devices: let host-CPU devices (the CPU backend, PoCL) share the
    /// host's cores even when their threads exceed them (the scheduler's default
    /// leaves the extra ones out).
    #[arg(long)]
    shared_cores: bool,
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let args = Args::parse();
    let n = args.n;
    if n == 0 || n > u32::MAX as usize {
        return Err(format!("--n must be between 1 and {}", u32::MAX).into());
    }
    let rt = Runtime::new()?;
    let a: Vec<f32> = (0..n).map(|i| (i % 1024) as f32 * 0.5 + 1.0).collect();
    let b: Vec<f32> = (0..n).map(|i| (i % 999) as f32 * -0.25 + 3.0).collect();
    let mut c = vec![f32::NAN; n];
    let k = kernels::vector_add()?;

    let devices = match args.device.as_deref() {
        Some(sel) => rt.select(sel)?,
        None => rt.default_devices()?,
    };
    // With several devices the trace and timeline show the split runs only
    // (discovery, which dwarfs them, stays in the --profile report).
    let mut window = 0;
    if args.device.as_deref() == Some("all") || devices.len() > 1 {
        window = rt.profiler().now_ns();
        for _ in 0..args.repeat.max(1) {
            run_split(&devices, &k, &a, &b, &mut c, args.shared_cores)?;
        }
    } else {
        // ANCHOR: stages
        let dev = &devices[0];
        println!("device {} ({})", dev.label(), dev.info().name);
        dev.build(&k)?;
        let da = dev.upload(&a)?;
        let db = dev.upload(&b)?;
        let mut dc = dev.alloc::<f32>(n)?;
        let cfg = match args.block {
            Some(bs) => LaunchConfig::new((n as u32).div_ceil(bs), bs),
            None => LaunchConfig::for_items(n, dev.info()),
        };
        println!("launch grid {:?} block {:?}", cfg.grid, cfg.block);
        for _ in 0..args.repeat.max(1) {
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
            )?;
        }
        dc.read(&mut c)?;
        drop((da, db, dc));
        // ANCHOR_END: stages
    }

    let bad = a.iter().zip(&b).zip(&c).position(|((x, y), z)| x + y != *z);
    if args.roofline.is_some() {
        for d in rt.devices() {
            if let Err(e) = offload::roofline::peaks(d) {
                println!("{}: no roofline peaks ({e})", d.label());
            }
        }
    }
    let profile = rt.profile();
    if let Some(p) = &args.roofline {
        print!("{}", profile.roofline());
        profile.write_svg_roofline(p)?;
        println!("roofline written to {}", p.display());
    }
    if args.profile {
        println!("{}", profile.report());
    }
    let mut export_err = None;
    let exported = profile.since(window);
    if let Some(p) = &args.trace {
        match exported.write_chrome_trace(p) {
            Ok(()) => println!("trace written to {}", p.display()),
            Err(e) => export_err = Some(e),
        }
    }
    if let Some(p) = &args.timeline {
        match exported.write_svg_timeline(p) {
            Ok(()) => println!("timeline written to {}", p.display()),
            Err(e) => export_err = Some(e),
        }
    }
    rt.close()?;
    match bad {
        Some(i) => {
            eprintln!(
                "MISMATCH at {i}: {} + {} = {} (device gave {})",
                a[i],
                b[i],
                a[i] + b[i],
                c[i]
            );
            Ok(ExitCode::FAILURE)
        }
        None => {
            println!("verified {n} elements");
            if let Some(e) = export_err {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(2));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_split(
    devices: &[offload::Device],
    k: &offload::Kernel,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    shared_cores: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    use offload::schedule::{HostArg, Scheduler};
    let mut s = Scheduler::new(devices)?.allow_shared_cores(shared_cores);
    println!(
        "splitting {} items over {} with policy {:?}",
        a.len(),
        s.labels().join(", "),
        s.policy()
    );
    let report = s.run(
        k,
        a.len(),
        &mut [HostArg::input(a), HostArg::input(b), HostArg::output(c)],
    )?;
    println!("{report}");
    Ok(())
}
