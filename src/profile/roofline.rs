//! The roofline: how close each kernel came to what its device can do.
//!
//! A device has two limits, measured once by calibration kernels
//! ([`crate::roofline`]): its f32 FMA peak `P` (GFLOP/s) and its memory bandwidth
//! `B` (GB/s). A kernel that does `F` flops per `Q` bytes of memory traffic has
//! arithmetic intensity `I = F / Q` (flop/byte) and cannot run faster than
//! `min(P, I × B)`: the *roof* at that intensity. Kernels left of the ridge
//! (`I < P / B`) are memory-bound, those right of it compute-bound.
//!
//! Kernels that declare their cost per item ([`crate::KernelBuilder::cost`])
//! add flops and bytes to the profiler at every launch ([`KernelWork`], per device
//! and record label); with the kernel time of the same records the profile gives
//! each kernel's achieved GFLOP/s and GB/s, its intensity, the roof there and the
//! fraction of it reached ([`Profile::roofline`]). [`Profile::to_svg_roofline`]
//! draws one log-log panel per device with peaks: the compute roof, the
//! bandwidth slope and every kernel as a labelled point.
//!
//! This module only computes and formats; it never touches a device.

use std::fmt::{self, Write as _};
use std::path::Path;

use super::svg::escape;
use super::{Profile, Stage};
use crate::error::Result;

/// A device's measured limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Peaks {
    /// f32 FMA peak, GFLOP/s (an FMA counts 2 flops).
    pub gflops: f64,
    /// Memory bandwidth (streaming triad), GB/s (1 GB = 10⁹ bytes).
    pub gbps: f64,
}

impl Peaks {
    /// The ridge point: the intensity (flop/byte) where the bandwidth slope meets
    /// the compute roof.
    pub fn ridge(&self) -> f64 {
        if self.gbps > 0.0 {
            self.gflops / self.gbps
        } else {
            f64::INFINITY
        }
    }

    /// The roof at `intensity` flop/byte: `min(peak, intensity × bandwidth)`, GFLOP/s.
    pub fn bound(&self, intensity: f64) -> f64 {
        (intensity * self.gbps).min(self.gflops)
    }

    /// Whether both numbers are finite and positive.
    pub fn valid(&self) -> bool {
        self.gflops.is_finite() && self.gflops > 0.0 && self.gbps.is_finite() && self.gbps > 0.0
    }
}

/// Declared work of a kernel's launches on one device, per record label.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct KernelWork {
    /// Device label.
    pub device: String,
    /// Record label (the kernel name, or the label of a split chunk or task).
    pub label: String,
    /// Flops of all its launches.
    pub flops: f64,
    /// Bytes of device memory traffic of all its launches.
    pub bytes: f64,
    /// Launches counted.
    pub launches: u64,
}

/// What the roofline needs besides the stage records: declared work and device peaks.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RooflineData {
    /// Declared work, per (device, label), in first-seen order.
    pub work: Vec<KernelWork>,
    /// Measured peaks per device label ([`crate::roofline::peaks`] registers them).
    pub peaks: Vec<(String, Peaks)>,
}

impl RooflineData {
    /// The peaks of `device`, if known.
    pub fn peaks_of(&self, device: &str) -> Option<Peaks> {
        self.peaks.iter().find(|(d, _)| d == device).map(|(_, p)| *p)
    }
}

/// Which roof limits a kernel at its intensity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Limit {
    /// Left of the ridge: the bandwidth slope.
    Memory,
    /// Right of the ridge: the compute roof.
    Compute,
}

/// One kernel on its device's roofline.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RooflinePoint {
    /// Device label.
    pub device: String,
    /// Record label.
    pub label: String,
    /// Kernel time of its records, seconds.
    pub kernel_s: f64,
    /// Achieved GFLOP/s (declared flops / kernel time).
    pub gflops: f64,
    /// Achieved GB/s (declared bytes / kernel time).
    pub gbps: f64,
    /// Arithmetic intensity, flop/byte.
    pub intensity: f64,
    /// The device's peaks, when measured.
    pub peaks: Option<Peaks>,
    /// The roof at this intensity, GFLOP/s (when peaks are known).
    pub bound_gflops: Option<f64>,
    /// `gflops / bound_gflops`.
    pub fraction: Option<f64>,
    /// Which roof applies (when peaks are known).
    pub limit: Option<Limit>,
}

impl RooflinePoint {
    /// The point of `work` that ran for `kernel_s` seconds on a device with `peaks`.
    pub fn new(work: &KernelWork, kernel_s: f64, peaks: Option<Peaks>) -> Self {
        let per_s = |x: f64| if kernel_s > 0.0 { x / kernel_s / 1e9 } else { 0.0 };
        let intensity = if work.bytes > 0.0 {
            work.flops / work.bytes
        } else {
            f64::INFINITY
        };
        let peaks = peaks.filter(Peaks::valid);
        let bound = peaks.map(|p| p.bound(intensity));
        let gflops = per_s(work.flops);
        RooflinePoint {
            device: work.device.clone(),
            label: work.label.clone(),
            kernel_s,
            gflops,
            gbps: per_s(work.bytes),
            intensity,
            peaks,
            bound_gflops: bound,
            fraction: bound.filter(|b| *b > 0.0).map(|b| gflops / b),
            limit: peaks.map(|p| {
                if intensity < p.ridge() {
                    Limit::Memory
                } else {
                    Limit::Compute
                }
            }),
        }
    }
}

/// The roofline table of a profile (see [`Profile::roofline`]); `Display` prints it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Roofline {
    /// Device peaks known to the profile.
    pub peaks: Vec<(String, Peaks)>,
    /// One point per (device, label) with declared work and kernel time.
    pub points: Vec<RooflinePoint>,
}

impl Profile {
    /// Each kernel with declared work on its device's roofline: kernel time from
    /// the records (kept and dropped) of the same device and label.
    pub fn roofline(&self) -> Roofline {
        let mut points = Vec::new();
        for w in &self.roofline.work {
            let kept: u64 = self
                .records
                .iter()
                .filter(|r| r.stage == Stage::Kernel && r.device == w.device && r.label == w.label)
                .map(|r| r.duration_ns())
                .sum();
            let dropped: u64 = self
                .dropped
                .iter()
                .filter(|r| r.stage == Stage::Kernel && r.device == w.device && r.label == w.label)
                .map(|r| r.total_ns)
                .sum();
            let ns = kept + dropped;
            if ns == 0 {
                continue;
            }
            points.push(RooflinePoint::new(
                w,
                ns as f64 / 1e9,
                self.roofline.peaks_of(&w.device),
            ));
        }
        Roofline {
            peaks: self.roofline.peaks.clone(),
            points,
        }
    }

    /// The roofline as a standalone SVG (see the [module docs](self)).
    pub fn to_svg_roofline(&self) -> String {
        svg(&self.roofline())
    }

    /// Write [`Profile::to_svg_roofline`] to `path`.
    pub fn write_svg_roofline(&self, path: impl AsRef<Path>) -> Result<()> {
        Self::write_file("SVG roofline", path.as_ref(), self.to_svg_roofline())
    }
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "-".into(),
    }
}

impl fmt::Display for Roofline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (d, p) in &self.peaks {
            writeln!(
                f,
                "{d} roofline: FMA peak {:.1} GFLOP/s, bandwidth {:.1} GB/s, ridge {:.2} flop/B",
                p.gflops,
                p.gbps,
                p.ridge()
            )?;
        }
        if self.points.is_empty() {
            return Ok(());
        }
        writeln!(
            f,
            "{:<10} {:<24} {:>10} {:>10} {:>9} {:>10} {:>10} {:>7} {:>7}",
            "device", "kernel", "kernel ms", "GFLOP/s", "GB/s", "flop/B", "roof", "of roof", "bound"
        )?;
        for p in &self.points {
            writeln!(
                f,
                "{:<10} {:<24} {:>10.3} {:>10.2} {:>9.2} {:>10} {:>10} {:>7} {:>7}",
                p.device,
                p.label,
                p.kernel_s * 1e3,
                p.gflops,
                p.gbps,
                fmt_opt(Some(p.intensity), 3),
                fmt_opt(p.bound_gflops, 1),
                p.fraction.map_or_else(|| "-".into(), |x| format!("{:.1}%", x * 100.0)),
                match p.limit {
                    Some(Limit::Memory) => "memory",
                    Some(Limit::Compute) => "compute",
                    None => "-",
                },
            )?;
        }
        Ok(())
    }
}

/// Width of the picture, px.
const WIDTH: f64 = 900.0;
/// Height of one device panel, px.
const PANEL_H: f64 = 520.0;
/// Left margin (axis labels), px.
const LEFT: f64 = 80.0;
/// Right margin, px.
const RIGHT: f64 = 30.0;
/// Space above a panel's plot (its title), px.
const TOP: f64 = 60.0;
/// Space below a panel's plot (axis labels), px.
const BOTTOM: f64 = 60.0;
/// Point colors, cycled.
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

/// Powers of ten covering `[lo, hi]` with some room: `(floor(log10 lo), ceil(log10 hi))`.
fn decades(lo: f64, hi: f64) -> (i32, i32) {
    let a = lo.max(1e-12).log10().floor() as i32;
    let b = hi.max(lo * 10.0).log10().ceil() as i32;
    (a, b.max(a + 1))
}

/// The plot area of a panel and its log-log mapping.
#[derive(Clone, Copy, Debug)]
struct Axes {
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
    /// Decades of intensity (x).
    xd: (i32, i32),
    /// Decades of GFLOP/s (y).
    yd: (i32, i32),
}

impl Axes {
    fn x(&self, intensity: f64) -> f64 {
        let (a, b) = self.xd;
        self.x0 + (intensity.log10() - a as f64) / (b - a) as f64 * self.w
    }
    fn y(&self, gflops: f64) -> f64 {
        let (a, b) = self.yd;
        self.y0 + self.h - (gflops.log10() - a as f64) / (b - a) as f64 * self.h
    }
}

fn svg(r: &Roofline) -> String {
    let mut devices: Vec<String> = r.peaks.iter().map(|(d, _)| d.clone()).collect();
    for p in &r.points {
        if !devices.contains(&p.device) {
            devices.push(p.device.clone());
        }
    }
    let panels = devices.len().max(1);
    let height = panels as f64 * PANEL_H;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    if devices.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{}" y="46" font-size="16" text-anchor="middle" fill="#444">empty roofline: no device peaks and no kernel with declared work</text>"##,
            WIDTH / 2.0
        );
    }
    for (i, dev) in devices.iter().enumerate() {
        let peaks = r.peaks.iter().find(|(d, _)| d == dev).map(|(_, p)| *p);
        let pts: Vec<&RooflinePoint> = r.points.iter().filter(|p| &p.device == dev).collect();
        panel(&mut out, i as f64 * PANEL_H, dev, peaks, &pts);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, top: f64, dev: &str, peaks: Option<Peaks>, pts: &[&RooflinePoint]) {
    // Ranges: every point, the ridge, and a decade either side.
    let finite = |v: f64| v.is_finite() && v > 0.0;
    let mut xs: Vec<f64> = pts.iter().map(|p| p.intensity).filter(|v| finite(*v)).collect();
    let mut ys: Vec<f64> = pts.iter().map(|p| p.gflops).filter(|v| finite(*v)).collect();
    if let Some(p) = peaks.filter(Peaks::valid) {
        xs.push(p.ridge());
        ys.push(p.gflops);
        ys.push(p.gflops / 100.0);
    }
    let (xlo, xhi) = xs.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let (ylo, yhi) = ys.iter().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let (xlo, xhi) = if xs.is_empty() {
        (0.1, 10.0)
    } else {
        (xlo / 4.0, xhi * 4.0)
    };
    let (ylo, yhi) = if ys.is_empty() {
        (1.0, 100.0)
    } else {
        (ylo / 2.0, yhi * 2.0)
    };
    let ax = Axes {
        x0: LEFT,
        y0: top + TOP,
        w: WIDTH - LEFT - RIGHT,
        h: PANEL_H - TOP - BOTTOM,
        xd: decades(xlo, xhi),
        yd: decades(ylo, yhi),
    };
    let _ = writeln!(out, r#"<g class="panel" data-device="{}">"#, escape(dev));
    let title = match peaks {
        Some(p) => format!(
            "{dev}: FMA peak {:.1} GFLOP/s, bandwidth {:.1} GB/s, ridge {:.2} flop/B",
            p.gflops,
            p.gbps,
            p.ridge()
        ),
        None => format!("{dev}: peaks not measured"),
    };
    let _ = writeln!(
        out,
        r##"<text x="12" y="{:.1}" font-size="16" font-weight="bold" fill="#222">{}</text>"##,
        top + 26.0,
        escape(&title)
    );
    // Plot frame with its size in data attributes (the test reads them).
    let _ = writeln!(
        out,
        r##"<rect class="plot" x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="#fbfbfd" stroke="#888"/>"##,
        ax.x0, ax.y0, ax.w, ax.h
    );
    // Gridlines and tick labels at each decade.
    out.push_str("<g class=\"axis\" font-size=\"11\" fill=\"#333\">\n");
    for e in ax.xd.0..=ax.xd.1 {
        let x = ax.x(10f64.powi(e));
        let _ = writeln!(
            out,
            r##"<line x1="{x:.2}" y1="{:.2}" x2="{x:.2}" y2="{:.2}" stroke="#e2e4ea"/><text x="{x:.2}" y="{:.2}" text-anchor="middle">{}</text>"##,
            ax.y0,
            ax.y0 + ax.h,
            ax.y0 + ax.h + 16.0,
            tick(e)
        );
    }
    for e in ax.yd.0..=ax.yd.1 {
        let y = ax.y(10f64.powi(e));
        let _ = writeln!(
            out,
            r##"<line x1="{:.2}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="#e2e4ea"/><text x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"##,
            ax.x0,
            ax.x0 + ax.w,
            ax.x0 - 6.0,
            y + 4.0,
            tick(e)
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="{:.2}" y="{:.2}" text-anchor="middle" font-size="12">arithmetic intensity (flop/byte)</text>"##,
        ax.x0 + ax.w / 2.0,
        ax.y0 + ax.h + 38.0
    );
    let _ = writeln!(
        out,
        r##"<text x="16" y="{:.2}" text-anchor="middle" font-size="12" transform="rotate(-90 16 {:.2})">GFLOP/s</text>"##,
        ax.y0 + ax.h / 2.0,
        ax.y0 + ax.h / 2.0
    );
    out.push_str("</g>\n");
    // The roof: bandwidth slope from the left edge to the ridge, then flat.
    if let Some(p) = peaks.filter(Peaks::valid) {
        let xmin = 10f64.powi(ax.xd.0);
        let xmax = 10f64.powi(ax.xd.1);
        let ymin = 10f64.powi(ax.yd.0);
        // Start where the slope enters the plot (left edge or bottom edge).
        let x_start = xmin.max(ymin / p.gbps);
        let ridge = p.ridge().clamp(x_start, xmax);
        let _ = writeln!(
            out,
            r##"<polyline class="roof" points="{:.2},{:.2} {:.2},{:.2} {:.2},{:.2}" fill="none" stroke="#222" stroke-width="2"/>"##,
            ax.x(x_start),
            ax.y(p.bound(x_start)),
            ax.x(ridge),
            ax.y(p.bound(ridge)),
            ax.x(xmax),
            ax.y(p.bound(xmax))
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.2}" y="{:.2}" font-size="11" text-anchor="end" fill="#222">{:.0} GFLOP/s FMA peak</text>"##,
            ax.x0 + ax.w - 4.0,
            ax.y(p.gflops) - 6.0,
            p.gflops
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.2}" y="{:.2}" font-size="11" fill="#222">{:.1} GB/s</text>"##,
            ax.x(x_start) + 6.0,
            ax.y(p.bound(x_start)) - 8.0,
            p.gbps
        );
    }
    // Points, labelled; a tooltip with the numbers.
    for (i, p) in pts.iter().enumerate() {
        if !(p.intensity.is_finite() && p.intensity > 0.0 && p.gflops > 0.0) {
            continue;
        }
        let (x, y) = (ax.x(p.intensity), ax.y(p.gflops));
        let color = COLORS[i % COLORS.len()];
        let frac = p
            .fraction
            .map_or_else(String::new, |f| format!(", {:.1}% of roof", f * 100.0));
        let tip = format!(
            "{} on {}: {:.2} GFLOP/s, {:.2} GB/s, {:.3} flop/B{frac}",
            p.label, p.device, p.gflops, p.gbps, p.intensity
        );
        let _ = writeln!(
            out,
            r##"<circle class="point" data-label="{}" data-intensity="{}" data-gflops="{}" cx="{x:.2}" cy="{y:.2}" r="5" fill="{color}" stroke="#222"><title>{}</title></circle>"##,
            escape(&p.label),
            p.intensity,
            p.gflops,
            escape(&tip)
        );
        let short = p.fraction.map_or_else(String::new, |f| format!(" ({:.0}%)", f * 100.0));
        let _ = writeln!(
            out,
            r##"<text x="{:.2}" y="{:.2}" font-size="11" fill="{color}">{}{}</text>"##,
            x + 8.0,
            y + 4.0 + (i % 2) as f64 * 10.0,
            escape(&p.label),
            short
        );
    }
    out.push_str("</g>\n");
}

/// `10^e` as a short label.
fn tick(e: i32) -> String {
    if (-3..=6).contains(&e) {
        let v = 10f64.powi(e);
        if e < 0 { format!("{v}") } else { format!("{v:.0}") }
    } else {
        format!("1e{e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(flops: f64, bytes: f64) -> KernelWork {
        KernelWork {
            device: "cpu:0".into(),
            label: "k".into(),
            flops,
            bytes,
            launches: 1,
        }
    }

    #[test]
    fn bound_is_the_lower_roof() {
        let p = Peaks {
            gflops: 100.0,
            gbps: 20.0,
        };
        assert_eq!(p.ridge(), 5.0);
        assert_eq!(p.bound(1.0), 20.0);
        assert_eq!(p.bound(5.0), 100.0);
        assert_eq!(p.bound(50.0), 100.0);
    }

    #[test]
    fn point_math() {
        let p = Peaks {
            gflops: 100.0,
            gbps: 20.0,
        };
        // 1 GFLOP over 4 GB in 0.5 s: 2 GFLOP/s, 8 GB/s, 0.25 flop/B, roof 5 GFLOP/s.
        let pt = RooflinePoint::new(&work(1e9, 4e9), 0.5, Some(p));
        assert!((pt.gflops - 2.0).abs() < 1e-12);
        assert!((pt.gbps - 8.0).abs() < 1e-12);
        assert!((pt.intensity - 0.25).abs() < 1e-12);
        assert!((pt.bound_gflops.unwrap_or(0.0) - 5.0).abs() < 1e-12);
        assert!((pt.fraction.unwrap_or(0.0) - 0.4).abs() < 1e-12);
        assert_eq!(pt.limit, Some(Limit::Memory));
        // Compute-bound: 100 GFLOP over 1 GB in 2 s: 50 of 100.
        let pt = RooflinePoint::new(&work(100e9, 1e9), 2.0, Some(p));
        assert_eq!(pt.limit, Some(Limit::Compute));
        assert!((pt.fraction.unwrap_or(0.0) - 0.5).abs() < 1e-12);
        // No peaks: no roof, no fraction.
        let pt = RooflinePoint::new(&work(1.0, 1.0), 1.0, None);
        assert_eq!(pt.fraction, None);
        assert_eq!(pt.limit, None);
    }

    #[test]
    fn decades_cover_the_range() {
        assert_eq!(decades(0.3, 40.0), (-1, 2));
        assert_eq!(decades(1.0, 1.0), (0, 1));
        let (a, b) = decades(2e-3, 7e4);
        assert!(10f64.powi(a) <= 2e-3 && 10f64.powi(b) >= 7e4);
    }
}
