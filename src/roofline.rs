//! Device calibration for the roofline: each device's f32 FMA peak and memory
//! bandwidth, measured once by small kernels run on that device and cached.
//!
//! * FMA peak: [`crate::kernels::fma_peak`], enough items to fill the device
//!   (2048 per compute unit, at least 65 536), each running 8 independent FMA
//!   chains; the chain length doubles until one launch takes
//!   [`TARGET_S`], then the best of three launches of that length counts.
//! * Bandwidth: [`crate::kernels::stream_triad`] (`a = b + s·c`, 12 bytes per
//!   item, the STREAM convention: write-allocate traffic not counted) over arrays
//!   far larger than any cache (3 × 64 MiB on host-memory devices, 3 × 256 MiB on
//!   others, less where the device allows less); the best of five launches.
//!
//! Kernel times come from the device clock where the backend has one (CUDA
//! events, OpenCL profiling), the host clock otherwise. Calibration launches are
//! not recorded in the profile.
//!
//! Results live in `<cache dir>/roofline.json` ([`crate::cache::cache_dir`]),
//! keyed like the performance model's entries by device label, name, driver
//! version and compute units ([`device_key`]): another device, another driver
//! or another CPU pool size measures again. A corrupt or stale file is ignored
//! and rewritten; writes are atomic.
//!
//! [`peaks`] also hands the peaks to the device's profiler, so its
//! [`Profile::roofline`](crate::profile::Profile::roofline) and SVG have the
//! roofs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::launch::{Arg, LaunchConfig};
pub use crate::profile::roofline::Peaks;

/// File name of the cache inside the cache directory.
pub const ROOFLINE_FILE: &str = "roofline.json";

/// Format version of the file; a file with another version is ignored.
const VERSION: u32 = 1;

/// Seconds one FMA calibration launch should take.
pub const TARGET_S: f64 = 0.02;

#[derive(Serialize, Deserialize, Default)]
struct RooflineFile {
    version: u32,
    entries: BTreeMap<String, Peaks>,
}

/// The cache key of a device: label, name, driver version and compute units
/// (as the performance model keys its entries, without a kernel).
pub fn device_key(device: &Device) -> String {
    let i = device.info();
    format!(
        "{} {} (driver {}, {} CU)",
        device.label(),
        i.name,
        i.driver_version,
        i.compute_units
    )
}

/// `<cache dir>/roofline.json`, if a cache directory is known.
pub fn cache_path() -> Option<PathBuf> {
    crate::cache::cache_dir().map(|d| d.join(ROOFLINE_FILE))
}

fn load() -> RooflineFile {
    let Some(path) = cache_path() else {
        return RooflineFile::default();
    };
    let Ok(bytes) = std::fs::read(&path) else {
        return RooflineFile::default();
    };
    match serde_json::from_slice::<RooflineFile>(&bytes) {
        Ok(f) if f.version == VERSION => f,
        Ok(_) => {
            tracing::warn!(path = %path.display(), "roofline cache of another format version ignored");
            RooflineFile::default()
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "corrupt roofline cache ignored");
            RooflineFile::default()
        }
    }
}

/// The cached peaks of `device`, if it was measured before.
pub fn cached(device: &Device) -> Option<Peaks> {
    load().entries.get(&device_key(device)).copied().filter(Peaks::valid)
}

/// Cache `peaks` as `device`'s (replacing an older entry).
pub fn store(device: &Device, peaks: Peaks) {
    let Some(path) = cache_path() else { return };
    let mut file = load();
    file.version = VERSION;
    file.entries.insert(device_key(device), peaks);
    match serde_json::to_vec_pretty(&file) {
        Ok(json) => {
            if let Err(e) = crate::cache::write_atomic(&path, &json) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write roofline cache");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode roofline cache"),
    }
}

/// The peaks of `device`: cached, or measured now ([`measure`]) and cached. Also
/// hands them to the device's profiler.
pub fn peaks(device: &Device) -> Result<Peaks> {
    let p = match cached(device) {
        Some(p) => p,
        None => {
            let p = measure(device)?;
            store(device, p);
            p
        }
    };
    device.profiler().set_peaks(device.label(), p);
    Ok(p)
}

/// Measure `device`'s FMA peak and bandwidth now (see the [module docs](self)),
/// without the cache.
pub fn measure(device: &Device) -> Result<Peaks> {
    let profiler = device.profiler();
    let was = profiler.is_enabled();
    profiler.set_enabled(false);
    let r = measure_fma(device).and_then(|gflops| {
        Ok(Peaks {
            gflops,
            gbps: measure_triad(device)?,
        })
    });
    profiler.set_enabled(was);
    let p = r?;
    if !p.valid() {
        return Err(Error::InvalidInput(format!(
            "roofline calibration of {} gave impossible numbers: {p:?}",
            device.label()
        )));
    }
    Ok(p)
}

/// Seconds of one launch: device clock where the backend has one.
fn timed(device: &Device, kernel: &Kernel, cfg: &LaunchConfig, args: &[Arg<'_>]) -> Result<f64> {
    let q = device.default_queue()?;
    let t0 = Instant::now();
    let ev = q.launch(kernel, cfg, args)?;
    ev.wait()?;
    let host = t0.elapsed().as_secs_f64();
    Ok(match ev.times() {
        Some((s, e, true)) => e.saturating_duration_since(s).as_secs_f64(),
        _ => host,
    })
}

fn measure_fma(device: &Device) -> Result<f64> {
    let info = device.info();
    let kernel = crate::kernels::fma_peak()?;
    let items = (info.compute_units as usize * 2048).clamp(65_536, 1 << 22);
    let mut out = device.alloc::<f32>(items)?;
    let cfg = LaunchConfig::for_items(items, info);
    let flops_per_iter = 2.0 * crate::kernels::FMA_CHAINS as f64 * items as f64;
    let mut run = |iters: u32| -> Result<f64> {
        let args = [
            Arg::output(&mut out),
            Arg::scalar(0.999f32),
            Arg::scalar(0.001f32),
            Arg::scalar(iters),
            Arg::scalar(0u32),
            Arg::scalar(items as u32),
        ];
        timed(device, &kernel, &cfg, &args)
    };
    // The first launch builds the kernel.
    run(1)?;
    let mut iters: u32 = 64;
    loop {
        let t = run(iters)?;
        if t >= TARGET_S || iters >= 1 << 20 {
            break;
        }
        // Jump close to the target, at most 16× at a time.
        let scale = (TARGET_S / t.max(1e-9)).clamp(2.0, 16.0);
        iters = ((iters as f64 * scale) as u32).min(1 << 20);
    }
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        best = best.min(run(iters)?);
    }
    Ok(flops_per_iter * iters as f64 / best / 1e9)
}

fn measure_triad(device: &Device) -> Result<f64> {
    let info = device.info();
    let host_memory = info.host_cpu || info.backend == crate::error::BackendKind::Cpu;
    let want: u64 = if host_memory { 1 << 24 } else { 1 << 26 };
    // Three arrays must fit: each at most a quarter of memory and the allocation limit.
    let cap = (info.max_alloc_bytes / 4).min(info.global_mem_bytes / 16).max(1 << 20);
    let n = want.min(cap) as usize;
    let kernel = crate::kernels::stream_triad()?;
    let q = device.default_queue()?;
    let mut a = device.alloc::<f32>(n)?;
    let b = device.alloc::<f32>(n)?;
    let c = device.alloc::<f32>(n)?;
    q.fill(&b, 1.0f32)?;
    q.fill(&c, 2.0f32)?;
    q.finish()?;
    let cfg = LaunchConfig::for_items(n, info);
    let mut best = f64::INFINITY;
    for i in 0..6 {
        let args = [
            Arg::output(&mut a),
            Arg::input(&b),
            Arg::input(&c),
            Arg::scalar(0.5f32),
            Arg::scalar(0u32),
            Arg::scalar(n as u32),
        ];
        let t = timed(device, &kernel, &cfg, &args)?;
        // The first launch builds the kernel and touches the pages.
        if i > 0 {
            best = best.min(t);
        }
    }
    Ok(12.0 * n as f64 / best / 1e9)
}
