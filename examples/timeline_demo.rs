//! Profile a vector add and export what happened: the text report, a Chrome
//! trace (Perfetto / chrome://tracing) and an SVG timeline.
//!
//! ```text
//! cargo run --release --example timeline_demo -- --timeline out.svg --trace out.json
//! cargo run --release --example timeline_demo -- --devices cpu,opencl --launches 3
//! cargo run --release --example timeline_demo -- --resident    # upload once, launch many times
//! ```
//!
//! Each selected device runs on its own host thread, all at once: per launch it
//! uploads `a` and `b`, runs `c = a + b` over `n` f32 and downloads `c` (or, with
//! `--resident`, uploads once, launches `--launches` times and downloads once — the
//! usual cure when transfers dominate). The result of every device is checked
//! against a float64 reference. The picture in `docs/img/timeline.svg` was made by
//! this program (see the profiling section of README.md).

use std::process::ExitCode;

use clap::Parser;
use offload::{Arg, Buffer, Device, LaunchConfig, Runtime, kernels};

/// Run a profiled vector add and export the profile.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Device selectors, comma separated (`cpu`, `opencl`, `opencl:0`, `cuda:0`, `all`).
    #[arg(long, default_value = "cpu")]
    devices: String,
    /// Elements per vector.
    #[arg(long, default_value_t = 16 << 20)]
    n: usize,
    /// Launches per device.
    #[arg(long, default_value_t = 4)]
    launches: usize,
    /// Keep the data on the device: upload once, launch `--launches` times, download once.
    #[arg(long)]
    resident: bool,
    /// Write a Chrome trace-event JSON file here.
    #[arg(long)]
    trace: Option<String>,
    /// Write an SVG timeline here.
    #[arg(long)]
    timeline: Option<String>,
}

/// splitmix64, for reproducible non-zero inputs.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Uniform in [0.5, 1.5): never zero.
        0.5 + (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// One device's buffers, allocated before the profiled part: allocation is not
/// a recorded stage, and paging in 3 × 64 MiB would show as a long idle gap.
struct Work {
    dev: Device,
    da: Buffer<f32>,
    db: Buffer<f32>,
    dc: Buffer<f32>,
    c: Vec<f32>,
}

impl Work {
    fn new(dev: Device, n: usize) -> offload::Result<Work> {
        Ok(Work {
            da: dev.alloc::<f32>(n)?,
            db: dev.alloc::<f32>(n)?,
            dc: dev.alloc::<f32>(n)?,
            // Poisoned: an element the device never wrote fails the check.
            c: vec![f32::NAN; n],
            dev,
        })
    }
}

/// Stages 1 to 5 on one device; returns the relative error of `c` against float64.
fn run_device(w: Work, a: &[f32], b: &[f32], launches: usize, resident: bool) -> offload::Result<f64> {
    let Work {
        dev,
        mut da,
        mut db,
        mut dc,
        mut c,
    } = w;
    let n = a.len();
    let k = kernels::vector_add()?;
    dev.build(&k)?;
    let cfg = LaunchConfig::for_items(n, dev.info());
    let launches = launches.max(1);
    for i in 0..launches {
        if !resident || i == 0 {
            da.write(a)?;
            db.write(b)?;
        }
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
        if !resident || i + 1 == launches {
            dc.read(&mut c)?;
        }
    }
    drop((da, db, dc));
    dev.close()?;
    let (mut num, mut den) = (0f64, 0f64);
    for ((c, a), b) in c.iter().zip(a).zip(b) {
        let r = *a as f64 + *b as f64;
        let d = if c.is_finite() { *c as f64 - r } else { f64::INFINITY };
        num += d * d;
        den += r * r;
    }
    Ok((num / den).sqrt())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if args.n == 0 || args.n > u32::MAX as usize {
        return Err(format!("--n must be in 1..={}, got {}", u32::MAX, args.n).into());
    }
    // Inputs first, so that the timeline is not stretched by host-side setup.
    let mut rng = Rng(0x5EED_0F0F_F10A_D000);
    let a: Vec<f32> = (0..args.n).map(|_| rng.next_f32()).collect();
    let b: Vec<f32> = (0..args.n).map(|_| rng.next_f32()).collect();

    let rt = Runtime::new()?;
    for u in rt.unavailable() {
        println!("{} unavailable: {}", u.backend, u.reason);
    }
    let mut devices: Vec<Device> = Vec::new();
    for sel in args.devices.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        for d in rt.select(sel)? {
            if !devices.iter().any(|x| x.label() == d.label()) {
                devices.push(d);
            }
        }
    }
    let work: Vec<Work> = devices
        .into_iter()
        .map(|d| Work::new(d, args.n))
        .collect::<offload::Result<_>>()?;
    // The profiled part starts here: build, copies, launches, teardown.
    let t0 = rt.profiler().now_ns();
    let results: Vec<(String, offload::Result<f64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .into_iter()
            .map(|w| {
                let (a, b) = (&a, &b);
                let label = w.dev.label().to_string();
                s.spawn(move || (label, run_device(w, a, b, args.launches, args.resident)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    (
                        "?".into(),
                        Err(offload::Error::InvalidInput("device thread panicked".into())),
                    )
                })
            })
            .collect()
    });
    let mut failed = false;
    for (label, r) in &results {
        match r {
            Ok(e) if *e <= 1e-6 => println!("{label}: c = a + b over {} f32, relative error {e:.1e}: ok", args.n),
            Ok(e) => {
                println!("{label}: relative error {e:.1e} above 1e-6: WRONG");
                failed = true;
            }
            Err(e) => {
                println!("{label}: failed: {e}");
                failed = true;
            }
        }
    }
    // Leave out discovery and allocation, which came before the profiled part.
    let mut profile = rt.profile();
    profile.records.retain(|r| r.start_ns >= t0);
    println!("\n{}", profile.report());
    // An unwritable path is reported, but the results above stand.
    if let Some(p) = &args.trace {
        match profile.write_chrome_trace(p) {
            Ok(()) => println!("Chrome trace written to {p} (open it in https://ui.perfetto.dev or chrome://tracing)"),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if let Some(p) = &args.timeline {
        match profile.write_svg_timeline(p) {
            Ok(()) => println!("SVG timeline written to {p}"),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
