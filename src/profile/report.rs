//! The text report: where the time went, per device and in total.
//!
//! For each device: init, H2D, kernel, D2H and teardown time; bytes and GB/s per
//! transfer direction; the transfer : compute ratio; and idle time inside the
//! device's active span (time between its first and last record not covered by
//! any record — waiting on the host or on other devices in a split run). Then the
//! Amdahl bound: with fraction `p` of the wall time spent in kernels, making the
//! kernels `k×` faster speeds the whole run up by at most `1 / ((1-p) + p/k)`.

use std::fmt;

use super::{Clock, Profile, Stage, StageRecord};

/// Totals for one device (or for all devices together).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct DeviceSummary {
    /// Device label, or `total`.
    pub device: String,
    /// Nanoseconds per stage, in [`Stage::ALL`] order.
    pub stage_ns: [u64; 5],
    /// Host → device bytes.
    pub h2d_bytes: u64,
    /// Device → host bytes.
    pub d2h_bytes: u64,
    /// Items computed by kernels.
    pub items: u64,
    /// Kernel launches / chunks.
    pub launches: u64,
    /// First record start to last record end, ns.
    pub span_ns: u64,
    /// Time inside the span not covered by any record, ns.
    pub idle_ns: u64,
    /// Whether any record came from a device clock.
    pub device_clock: bool,
}

impl DeviceSummary {
    fn of(device: &str, recs: &[&StageRecord]) -> Self {
        let mut s = DeviceSummary {
            device: device.to_string(),
            ..Default::default()
        };
        for r in recs {
            let i = Stage::ALL.iter().position(|x| *x == r.stage).unwrap_or(0);
            s.stage_ns[i] += r.duration_ns();
            match r.stage {
                Stage::HostToDevice => s.h2d_bytes += r.bytes,
                Stage::DeviceToHost => s.d2h_bytes += r.bytes,
                Stage::Kernel => {
                    s.items += r.items;
                    s.launches += 1;
                }
                _ => {}
            }
            s.device_clock |= r.clock == Clock::Device;
        }
        let (span, busy) = span_and_busy(recs.iter().copied());
        s.span_ns = span;
        s.idle_ns = span.saturating_sub(busy);
        s
    }

    /// Nanoseconds in one stage.
    pub fn ns(&self, stage: Stage) -> u64 {
        self.stage_ns[Stage::ALL.iter().position(|x| *x == stage).unwrap_or(0)]
    }

    /// Transfer time (H2D + D2H), ns.
    pub fn transfer_ns(&self) -> u64 {
        self.ns(Stage::HostToDevice) + self.ns(Stage::DeviceToHost)
    }

    /// Transfer : compute ratio (`inf` when no kernel time).
    pub fn transfer_compute_ratio(&self) -> f64 {
        let k = self.ns(Stage::Kernel);
        if k == 0 {
            f64::INFINITY
        } else {
            self.transfer_ns() as f64 / k as f64
        }
    }
}

/// Span (first start to last end) and busy time (union of intervals), ns.
fn span_and_busy<'a>(recs: impl Iterator<Item = &'a StageRecord>) -> (u64, u64) {
    let mut iv: Vec<(u64, u64)> = recs.map(|r| (r.start_ns, r.end_ns)).collect();
    if iv.is_empty() {
        return (0, 0);
    }
    iv.sort_unstable();
    let (first, last) = (iv[0].0, iv.iter().map(|x| x.1).max().unwrap_or(0));
    let mut busy = 0;
    let (mut cs, mut ce) = iv[0];
    for &(s, e) in &iv[1..] {
        if s > ce {
            busy += ce - cs;
            (cs, ce) = (s, e);
        } else {
            ce = ce.max(e);
        }
    }
    busy += ce - cs;
    (last - first, busy)
}

/// Amdahl's bound: overall speed-up from a `k×` faster kernel when a fraction `p`
/// of the time is kernel time. `k = inf` gives `1 / (1 - p)`.
pub fn amdahl(p: f64, k: f64) -> f64 {
    let p = p.clamp(0.0, 1.0);
    let rest = 1.0 - p;
    let sped = if k.is_infinite() { 0.0 } else { p / k };
    if rest + sped == 0.0 {
        f64::INFINITY
    } else {
        1.0 / (rest + sped)
    }
}

/// The whole report.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Report {
    /// One summary per device, in first-seen order.
    pub devices: Vec<DeviceSummary>,
    /// All devices together (stage times summed; span is the wall time).
    pub total: DeviceSummary,
    /// Wall time from the first record to the last, ns.
    pub wall_ns: u64,
    /// Union of kernel intervals over the wall time (the `p` of Amdahl).
    pub kernel_fraction: f64,
}

impl Report {
    /// Summarise a profile.
    pub fn from_profile(p: &Profile) -> Self {
        let mut devices = Vec::new();
        for d in p.devices() {
            let recs: Vec<&StageRecord> = p.device_records(&d).collect();
            devices.push(DeviceSummary::of(&d, &recs));
        }
        let all: Vec<&StageRecord> = p.records.iter().collect();
        let mut total = DeviceSummary::of("total", &all);
        total.idle_ns = devices.iter().map(|d| d.idle_ns).sum();
        // Amdahl's p ignores one-time init/teardown: it is the share of the offload
        // pipeline (transfers + kernels) spent in kernels.
        let pipeline: Vec<&StageRecord> = all
            .iter()
            .copied()
            .filter(|r| matches!(r.stage, Stage::HostToDevice | Stage::Kernel | Stage::DeviceToHost))
            .collect();
        let (wall, _) = span_and_busy(pipeline.iter().copied());
        let (_, kernel_busy) = span_and_busy(pipeline.iter().copied().filter(|r| r.stage == Stage::Kernel));
        let kernel_fraction = if wall == 0 {
            0.0
        } else {
            kernel_busy as f64 / wall as f64
        };
        Report {
            devices,
            total,
            wall_ns: wall,
            kernel_fraction,
        }
    }

    /// Whether transfers take longer than kernels overall.
    pub fn transfer_dominated(&self) -> bool {
        self.total.transfer_ns() > self.total.ns(Stage::Kernel)
    }
}

fn ms(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

fn gbps(bytes: u64, ns: u64) -> String {
    if ns == 0 || bytes == 0 {
        "-".into()
    } else {
        format!("{:.2}", bytes as f64 / ns as f64)
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<10} {:>9} {:>9} {:>9} {:>7} {:>10} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8} {:>6}",
            "device",
            "init ms",
            "h2d MiB",
            "h2d ms",
            "GB/s",
            "kernel ms",
            "d2h MiB",
            "d2h ms",
            "GB/s",
            "tear ms",
            "idle ms",
            "xfer:cmp",
            "clock"
        )?;
        let rows = self
            .devices
            .iter()
            .chain(std::iter::once(&self.total).filter(|_| self.devices.len() > 1));
        for d in rows {
            let ratio = d.transfer_compute_ratio();
            writeln!(
                f,
                "{:<10} {:>9} {:>9} {:>9} {:>7} {:>10} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8} {:>6}",
                d.device,
                ms(d.ns(Stage::Init)),
                mib(d.h2d_bytes),
                ms(d.ns(Stage::HostToDevice)),
                gbps(d.h2d_bytes, d.ns(Stage::HostToDevice)),
                ms(d.ns(Stage::Kernel)),
                mib(d.d2h_bytes),
                ms(d.ns(Stage::DeviceToHost)),
                gbps(d.d2h_bytes, d.ns(Stage::DeviceToHost)),
                ms(d.ns(Stage::Teardown)),
                ms(d.idle_ns),
                if ratio.is_finite() {
                    format!("{ratio:.2}")
                } else {
                    "-".into()
                },
                if d.device_clock { "device" } else { "host" },
            )?;
        }
        let p = self.kernel_fraction;
        writeln!(
            f,
            "kernels are {:.1}% of the {} ms transfer+compute wall time; Amdahl: a kernel 2x faster gives at most {:.2}x, 10x gives {:.2}x, infinitely fast gives {:.2}x",
            100.0 * p,
            ms(self.wall_ns),
            amdahl(p, 2.0),
            amdahl(p, 10.0),
            amdahl(p, f64::INFINITY)
        )?;
        if self.transfer_dominated() {
            writeln!(
                f,
                "transfers dominate ({} ms moving data vs {} ms computing): keep data on the device across launches, use pinned memory, overlap copies with kernels, or do not offload this kernel",
                ms(self.total.transfer_ns()),
                ms(self.total.ns(Stage::Kernel))
            )?;
        }
        Ok(())
    }
}
