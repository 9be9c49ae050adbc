//! SGEMM, the matrix-multiply ladder: `C = A·B` (row-major f32) on every rung and device.
//!
//! ```text
//! cargo run --release --example gemm                                   # 512³, CPU, every rung
//! cargo run --release --example gemm -- --m 1024 --n 1024 --k 1024 --rung cpu-packed
//! cargo run --release --example gemm -- --device opencl --rung all
//! cargo run --release --example gemm -- --device all --shared-cores   # rows of C split over devices
//! cargo run --release --example gemm -- --device all --tiled 128        # C tiles as tasks of a DAG
//! ```
//!
//! Every result is verified against a float64 reference (the largest error of an
//! element relative to `Σ_p |a_ip · b_pj|`, the scale of its rounding). The table
//! gives each rung's GFLOP/s (2·M·N·K flops; kernel time with the data already
//! on the device, median of `--reps`) and the fraction of the device's f32 FMA
//! peak, measured on that device by the roofline calibration kernels
//! ([`offload::roofline::peaks`], cached after the first run).
//! `--roofline PATH` writes the SVG roofline of the run: each rung as a point
//! under its device's compute roof and bandwidth slope, and prints the roofline
//! table (achieved GFLOP/s and GB/s, intensity, fraction of the roof).
//! With `--device all` the rows of C are split over every device through the
//! scheduler (B broadcast to each) and the time includes the transfers.
//!
//! `--tiled T` runs the tiled DAG instead: A, B and C in tile layout
//! ([`offload::task::to_tiles`], zero-padded to multiples of T), one task
//! `C(i,j) += A(i,p) · B(p,j)` per tile triple ([`offload::kernels::gemm_tile`]), a
//! chain per C tile, placed over the selected devices (`--device all`: every
//! device) by a task graph by predicted completion; each A and B tile moves to a
//! device once and stays. The time includes moving A and B in and C out.

use std::time::Instant;

use clap::Parser;
use offload::kernels::{GemmRung, SgemmIsa};
use offload::schedule::{HostArg, Policy, Scheduler};
use offload::{Arg, Device, Runtime};

/// SGEMM on the CPU, an OpenCL or a CUDA device, rung by rung.
#[derive(Parser, Debug)]
#[command(about, long_about = None)]
struct Args {
    /// Rows of A and C.
    #[arg(long, default_value_t = 512)]
    m: usize,
    /// Columns of B and C.
    #[arg(long, default_value_t = 512)]
    n: usize,
    /// Columns of A, rows of B.
    #[arg(long, default_value_t = 512)]
    k: usize,
    /// Device: cpu, opencl, cuda, a label such as opencl:1, or all (split rows of C).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Rung: naive, tiled, regblock, cpu-packed, or all.
    #[arg(long, default_value = "all")]
    rung: String,
    /// Timed repetitions per rung (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// With --device all: let host-CPU devices (the CPU backend, PoCL) share the
    /// host's cores (by default those beyond the first are left out).
    #[arg(long)]
    shared_cores: bool,
    /// Tiled DAG mode: tiles of this side (a multiple of 8), C tiles as tasks
    /// over A and B tiles, placed over the devices by a task graph.
    #[arg(long)]
    tiled: Option<usize>,
    /// Write the SVG roofline of the run (each rung a point on its device's roofline).
    #[arg(long)]
    roofline: Option<std::path::PathBuf>,
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

/// Seeded values in [-1, 1), never zero.
fn matrix(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if v == 0.0 { 0.5 } else { v }
        })
        .collect()
}

/// The float64 reference of the checked rows (all rows while `m·n·k` ≤ 2³⁰, else
/// about 2³⁰ / (n·k) evenly spread rows): `(row, values, scales)` where `scales`
/// holds `Σ_p |a_ip · b_pj|` per element.
struct Reference {
    rows: Vec<usize>,
    values: Vec<f64>,
    scales: Vec<f64>,
}

fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Reference {
    let budget = (1usize << 30) / (n * k).max(1);
    let step = m.div_ceil(budget.max(1)).max(1);
    let rows: Vec<usize> = (0..m).step_by(step).collect();
    let mut values = vec![0f64; rows.len() * n];
    let mut scales = vec![0f64; rows.len() * n];
    for (r, &i) in rows.iter().enumerate() {
        let (v, s) = (&mut values[r * n..(r + 1) * n], &mut scales[r * n..(r + 1) * n]);
        for p in 0..k {
            let av = a[i * k + p] as f64;
            for j in 0..n {
                let t = av * b[p * n + j] as f64;
                v[j] += t;
                s[j] += t.abs();
            }
        }
    }
    Reference { rows, values, scales }
}

/// Largest error of an element relative to its rounding scale; NaN counts as infinite.
fn max_rel_err(c: &[f32], n: usize, r: &Reference) -> f64 {
    let mut worst = 0f64;
    for (ri, &i) in r.rows.iter().enumerate() {
        for j in 0..n {
            let (got, want, scale) = (c[i * n + j] as f64, r.values[ri * n + j], r.scales[ri * n + j]);
            let e = (got - want).abs() / scale.max(f64::MIN_POSITIVE);
            worst = if e.is_finite() { worst.max(e) } else { f64::INFINITY };
        }
    }
    worst
}

/// One row of the result table.
struct Row {
    rung: &'static str,
    device: String,
    gflops: f64,
    peak: Option<f64>,
    err: f64,
    ms: f64,
}

/// The f32 FMA peak of a device in GFLOP/s (measured on it once, then cached).
fn device_peak(d: &Device) -> Option<f64> {
    match offload::roofline::peaks(d) {
        Ok(p) => Some(p.gflops),
        Err(e) => {
            println!("{}: no peak ({e})", d.label());
            None
        }
    }
}

/// `rows × cols` row-major `m`, zero-padded to `prows × pcols`.
fn pad(m: &[f32], rows: usize, cols: usize, prows: usize, pcols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; prows * pcols];
    for r in 0..rows {
        out[r * pcols..r * pcols + cols].copy_from_slice(&m[r * cols..(r + 1) * cols]);
    }
    out
}

/// The tiled DAG (see the module docs): best of `--reps` runs after one that
/// teaches the graph's performance model.
fn tiled_dag(
    args: &Args,
    devices: &[Device],
    t: usize,
    a: &[f32],
    b: &[f32],
    refc: &Reference,
) -> Result<Row, Failure> {
    use offload::task::{Partition, Task, TaskGraph, from_tiles, to_tiles};
    let (m, n, k) = (args.m, args.n, args.k);
    if t == 0 || !t.is_multiple_of(8) {
        return Err(format!("--tiled {t}: the tile side must be a positive multiple of 8").into());
    }
    let (mp, np, kp) = (m.next_multiple_of(t), n.next_multiple_of(t), k.next_multiple_of(t));
    let (mt, nt, kt) = (mp / t, np / t, kp / t);
    let ta = to_tiles(&pad(a, m, k, mp, kp), mp, kp, t, t)?;
    let tb = to_tiles(&pad(b, k, n, kp, np), kp, np, t, t)?;
    let graph = TaskGraph::builder(devices)
        .allow_shared_cores(args.shared_cores)
        .build()?;
    let kern = offload::kernels::gemm_tile()?;
    let tiles = |rows, cols| Partition::Tiles {
        rows,
        cols,
        tile_rows: t,
        tile_cols: t,
    };
    println!(
        "tiled DAG: {mt} × {nt} C tiles of {t} × {t}, {} tasks ({kt} per C tile) over {}",
        mt * nt * kt,
        graph.labels().join(", ")
    );
    let mut best = (f64::INFINITY, Vec::new());
    for _ in 0..=args.reps.max(1) {
        let start = Instant::now();
        let (da, db) = (graph.data("A", &ta)?, graph.data("B", &tb)?);
        let dc = graph.data("C", &vec![0.0f32; mp * np])?;
        let (pa, pb, pc) = (
            da.partition(tiles(mp, kp))?,
            db.partition(tiles(kp, np))?,
            dc.partition(tiles(mp, np))?,
        );
        for i in 0..mt {
            for j in 0..nt {
                for p in 0..kt {
                    graph.submit(
                        Task::new(&kern)
                            .read(&pa[i * kt + p])
                            .read(&pb[p * nt + j])
                            .read_write(&pc[i * nt + j])
                            .scalar(t as u32)
                            .items(t * t)
                            .name(&format!("C{i},{j}")),
                    )?;
                }
            }
        }
        let c = dc.acquire()?;
        let secs = start.elapsed().as_secs_f64();
        if secs < best.0 {
            best = (secs, c);
        }
    }
    let full = from_tiles(&best.1, mp, np, t, t)?;
    let mut c = vec![0.0f32; m * n];
    for r in 0..m {
        c[r * n..(r + 1) * n].copy_from_slice(&full[r * np..r * np + n]);
    }
    let report = graph.report();
    println!("{report}");
    let used: Vec<&offload::task::DeviceTasks> = report.devices.iter().filter(|d| d.tasks > 0).collect();
    let peak: Option<f64> = used
        .iter()
        .map(|u| {
            devices
                .iter()
                .zip(graph.labels())
                .find(|(_, l)| **l == u.device)
                .and_then(|(d, _)| device_peak(d))
        })
        .sum();
    Ok(Row {
        rung: "tiled-dag",
        device: used
            .iter()
            .map(|u| format!("{} {}", u.device, u.tasks))
            .collect::<Vec<_>>()
            .join(", "),
        gflops: 2.0 * (m * n * k) as f64 / best.0 / 1e9,
        peak,
        err: max_rel_err(&c, n, refc),
        ms: best.0 * 1e3,
    })
}

fn main() -> Result<(), Failure> {
    let args = Args::parse();
    let (m, n, k) = (args.m, args.n, args.k);
    if m == 0 || n == 0 || k == 0 {
        return Err("--m, --n and --k must be at least 1".into());
    }
    if [m, n, k].iter().any(|&v| u32::try_from(v).is_err()) {
        return Err("--m, --n and --k must fit in 32 bits".into());
    }
    let rungs: Vec<GemmRung> = if args.rung.trim() == "all" {
        GemmRung::ALL.to_vec()
    } else {
        vec![GemmRung::parse(&args.rung)?]
    };
    let rt = Runtime::new()?;
    let split = args.device.trim() == "all";
    let devices = rt.select(&args.device)?;
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
    for d in used {
        if let Ok(p) = offload::roofline::peaks(d) {
            println!(
                "{}: f32 FMA peak {:.1} GFLOP/s, bandwidth {:.1} GB/s (roofline calibration; CPU kernels use {})",
                d.label(),
                p.gflops,
                p.gbps,
                SgemmIsa::detect().name()
            );
        }
    }
    println!(
        "C ({m} × {n}) = A ({m} × {k}) · B ({k} × {n}), f32, {:.3} GFLOP per multiply",
        2e-9 * (m * n * k) as f64
    );
    for r in &rungs {
        println!("  {:<10} {}", r.name(), r.explain());
    }
    let a = matrix(m * k, 1);
    let b = matrix(k * n, 2);
    let t = Instant::now();
    let refc = reference(m, n, k, &a, &b);
    println!(
        "float64 reference of {} of {m} rows in {:.2} s",
        refc.rows.len(),
        t.elapsed().as_secs_f64()
    );
    let flop = 2.0 * (m * n * k) as f64;
    let mut table = Vec::new();
    if let Some(t) = args.tiled {
        table.push(tiled_dag(&args, used, t, &a, &b, &refc)?);
    }
    for &rung in rungs.iter().filter(|_| args.tiled.is_none()) {
        let kern = rung.kernel(n, k)?;
        if split {
            // Chunks of at least 128 rows: every chunk packs (and uploads) all of B.
            let mut sched = Scheduler::new(used)?
                .allow_shared_cores(args.shared_cores)
                .with_policy(Policy::HGuided { k: 2.0, min_chunk: 128 });
            let mut c = vec![f32::NAN; m * n];
            let mut best = f64::INFINITY;
            let mut last = None;
            for _ in 0..args.reps.max(1) {
                let t = Instant::now();
                let report = sched.run(
                    &kern,
                    m,
                    &mut [
                        HostArg::input(&a),
                        HostArg::input(&b),
                        HostArg::output(&mut c),
                        HostArg::scalar(n as u32),
                        HostArg::scalar(k as u32),
                    ],
                );
                let report = match report {
                    Ok(r) => r,
                    Err(e) => {
                        println!("{}: {e}", rung.name());
                        break;
                    }
                };
                best = best.min(t.elapsed().as_secs_f64());
                last = Some(report);
            }
            let Some(report) = last else { continue };
            let shares: Vec<String> = report
                .devices
                .iter()
                .filter(|s| s.items > 0)
                .map(|s| format!("{} {}", s.device, s.items))
                .collect();
            let peak: Option<f64> = report
                .devices
                .iter()
                .filter(|s| s.items > 0)
                .map(|s| used.iter().find(|d| d.label() == s.device).and_then(device_peak))
                .sum();
            table.push(Row {
                rung: rung.name(),
                device: format!("split: {}", shares.join(", ")),
                gflops: flop / best / 1e9,
                peak,
                err: max_rel_err(&c, n, &refc),
                ms: best * 1e3,
            });
            continue;
        }
        let d = &used[0];
        if !kern.supports(d.backend()) {
            println!(
                "{}: no implementation for {} (has: {})",
                rung.name(),
                d.label(),
                kern.backend_names()
            );
            continue;
        }
        // ANCHOR: rung
        d.build(&kern)?;
        let da = d.upload(&a)?;
        let db = d.upload(&b)?;
        let mut dc = d.upload(&vec![f32::NAN; m * n])?;
        let cfg = rung.launch_config(m, n, d.info());
        let mut times = Vec::new();
        for rep in 0..=args.reps.max(1) {
            let t = Instant::now();
            d.launch(
                &kern,
                &cfg,
                &[
                    Arg::input(&da),
                    Arg::input(&db),
                    Arg::output(&mut dc),
                    (n as u32).into(),
                    (k as u32).into(),
                    0u32.into(),
                    (m as u32).into(),
                ],
            )?;
            // The first run is a warm-up.
            if rep > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        times.sort_by(|x, y| x.total_cmp(y));
        let secs = times[times.len() / 2];
        // ANCHOR_END: rung
        let c = dc.to_vec()?;
        table.push(Row {
            rung: rung.name(),
            device: d.label().to_string(),
            gflops: flop / secs / 1e9,
            peak: device_peak(d),
            err: max_rel_err(&c, n, &refc),
            ms: secs * 1e3,
        });
    }
    println!();
    println!(
        "{:<11} {:<28} {:>10} {:>9} {:>10} {:>12}",
        "rung", "device", "GFLOP/s", "of peak", "ms", "max rel err"
    );
    let mut bad = Vec::new();
    for r in &table {
        let frac = r
            .peak
            .map_or("-".to_string(), |p| format!("{:.1}%", 100.0 * r.gflops / p));
        println!(
            "{:<11} {:<28} {:>10.2} {:>9} {:>10.2} {:>12.2e}",
            r.rung, r.device, r.gflops, frac, r.ms, r.err
        );
        // f32 accumulation of k terms: error ≲ k · 2⁻²⁴ relative to Σ|a·b|.
        if r.err > 1e-6 * (k as f64).max(16.0) {
            bad.push(format!("{} on {}: error {:.2e}", r.rung, r.device, r.err));
        }
    }
    if let Some(path) = &args.roofline {
        let profile = rt.profile();
        println!();
        print!("{}", profile.roofline());
        profile.write_svg_roofline(path)?;
        println!("roofline written to {}", path.display());
    }
    if !bad.is_empty() {
        return Err(format!("verification failed: {}", bad.join("; ")).into());
    }
    Ok(())
}
