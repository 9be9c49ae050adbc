//! List every device with its facts, its roofline peaks (f32 FMA peak and memory
//! bandwidth, measured by calibration kernels on first use and cached), and every
//! unavailable backend with its reason.
//!
//! `cargo run --release --example devices [-- --json] [--remeasure] [--no-peaks]`

use clap::Parser;
use offload::Runtime;

/// List compute devices visible to offload.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Print the device facts as JSON.
    #[arg(long)]
    json: bool,
    /// Write a Chrome trace-event JSON of discovery (init stage per device).
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
    /// Measure the peaks again instead of reading the cache (and cache the new numbers).
    #[arg(long)]
    remeasure: bool,
    /// Skip the roofline peaks.
    #[arg(long)]
    no_peaks: bool,
    /// Write an SVG timeline of discovery.
    #[arg(long)]
    timeline: Option<std::path::PathBuf>,
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let rt = Runtime::new()?;
    if args.json {
        let infos: Vec<_> = rt.devices().iter().map(|d| d.info().clone()).collect();
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(());
    }
    for d in rt.devices() {
        let i = d.info();
        println!("{}  {}", d.label(), i.name);
        println!("    vendor            {}", i.vendor);
        println!("    driver            {}", i.driver_version);
        if let Some((maj, min)) = i.compute_capability {
            println!("    compute capability {maj}.{min}");
        }
        println!("    compute units     {}", i.compute_units);
        println!("    warp size         {}", i.warp_size);
        println!("    max threads/block {}", i.max_threads_per_block);
        println!("    max block dims    {:?}", i.max_block_dims);
        println!("    max grid dims     {:?}", i.max_grid_dims);
        println!("    global memory     {}", mib(i.global_mem_bytes));
        println!("    local/shared mem  {} KiB per block", i.local_mem_bytes / 1024);
        println!("    max allocation    {}", mib(i.max_alloc_bytes));
        if !args.no_peaks {
            let cached = offload::roofline::cached(d).filter(|_| !args.remeasure);
            let t0 = std::time::Instant::now();
            let peaks = match cached {
                Some(p) => Ok(p),
                None => offload::roofline::measure(d),
            };
            match peaks {
                Ok(p) => {
                    let how = if cached.is_some() {
                        "cached".to_string()
                    } else {
                        format!("measured in {:.2} s", t0.elapsed().as_secs_f64())
                    };
                    println!("    f32 FMA peak      {:.1} GFLOP/s ({how})", p.gflops);
                    println!("    memory bandwidth  {:.1} GB/s (triad)", p.gbps);
                    println!("    ridge             {:.2} flop/byte", p.ridge());
                    if cached.is_none() {
                        offload::roofline::store(d, p);
                    }
                }
                Err(e) => println!("    peaks             not measured: {e}"),
            }
        }
    }
    for u in rt.unavailable() {
        println!("{} unavailable: {}", u.backend, u.reason);
    }
    let profile = rt.profile();
    if let Some(p) = &args.trace {
        profile.write_chrome_trace(p)?;
        println!("trace written to {}", p.display());
    }
    if let Some(p) = &args.timeline {
        profile.write_svg_timeline(p)?;
        println!("timeline written to {}", p.display());
    }
    Ok(())
}
