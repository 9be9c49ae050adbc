//! The text report: where the time went, per device and in total.
//!
//! For each device: init, alloc, H2D, kernel, D2H and teardown time; bytes and
//! GB/s per transfer direction; the transfer : compute ratio; and idle time
//! inside the device's active span (time between its first and last record not
//! covered by any record — waiting on the host or on other devices in a split
//! run).
//!
//! Per device also the **queue overlap**: of the time at least one of its queues
//! was busy (the union of its records on a queue, queue 0 — work on no queue —
//! left out), how much two or more different queues were busy at once, printed as
//! `cuda:0 overlap: X ms of Y ms busy on 2+ queues`. Copies on one queue hidden
//! behind kernels on another show up here. It is computed from the kept records
//! only; when records were dropped the line says so.
//!
//! Last, the roofline table ([`super::roofline`]) when kernels declared their
//! work: per kernel achieved GFLOP/s and GB/s, arithmetic intensity, the roof at
//! that intensity on its device and the fraction of it reached.
//!
//! Then the Amdahl bound, over the **wall**: from the first start to the last
//! end of any allocation, transfer or kernel record on any device (one-time init
//! and teardown are left out). The wall is split into time covered by at least
//! one of those stages and *host time outside any stage* (argument checks,
//! host-side preparation, waiting): the report prints both. Amdahl's `p` is the
//! part of the wall covered by at least one kernel; everything else in the wall
//! (transfers, allocation and the host time outside stages) does not get faster
//! with the kernel, so a `k×` faster kernel speeds the whole run up by at most
//! `1 / ((1-p) + p/k)`. The report also gives the kernels' share of the staged
//! time alone, which is what `p` would be without the host time.
//!
//! When the profiler dropped records past its cap ([`super::Profiler::set_record_cap`]),
//! stage times, bytes, items, launches and the wall still include them exactly
//! (from [`Profile::dropped`]); busy, idle and kernel coverage count a dropped
//! record by its duration (its exact overlap with others is not known), and the
//! report says so.

use std::fmt;

use super::{Clock, DroppedRecords, Profile, Stage, StageRecord};

/// Totals for one device (or for all devices together).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct DeviceSummary {
    /// Device label, or `total`.
    pub device: String,
    /// Nanoseconds per stage, in [`Stage::ALL`] order.
    pub stage_ns: [u64; Stage::COUNT],
    /// Bytes allocated on the device.
    pub alloc_bytes: u64,
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
    /// Records of this device dropped past the profiler's cap (included in the totals).
    pub dropped: u64,
    /// Distinct queues (queue 0, no queue, left out) among the kept records.
    pub queues: u64,
    /// Time at least one queue was busy (union of the kept records on a queue), ns.
    pub queue_busy_ns: u64,
    /// Time two or more different queues were busy at once (kept records), ns.
    pub queue_overlap_ns: u64,
}

impl DeviceSummary {
    fn of(device: &str, recs: &[&StageRecord], dropped: &[&DroppedRecords]) -> Self {
        let mut s = DeviceSummary {
            device: device.to_string(),
            ..Default::default()
        };
        let mut add = |stage: Stage, ns: u64, bytes: u64, items: u64, count: u64, device_clock: bool| {
            s.stage_ns[stage.index()] += ns;
            match stage {
                Stage::Alloc => s.alloc_bytes += bytes,
                Stage::HostToDevice => s.h2d_bytes += bytes,
                Stage::DeviceToHost => s.d2h_bytes += bytes,
                Stage::Kernel => {
                    s.items += items;
                    s.launches += count;
                }
                _ => {}
            }
            s.device_clock |= device_clock;
        };
        for r in recs {
            add(r.stage, r.duration_ns(), r.bytes, r.items, 1, r.clock == Clock::Device);
        }
        for d in dropped {
            add(d.stage, d.total_ns, d.bytes, d.items, d.count, d.device_clock);
        }
        s.dropped = dropped.iter().map(|d| d.count).sum();
        let c = coverage(recs.iter().copied(), dropped.iter().copied());
        s.span_ns = c.span;
        s.idle_ns = c.span.saturating_sub(c.busy);
        let q = queue_overlap(recs.iter().copied());
        (s.queues, s.queue_busy_ns, s.queue_overlap_ns) = (q.queues, q.busy, q.overlap);
        s
    }

    /// Nanoseconds in one stage.
    pub fn ns(&self, stage: Stage) -> u64 {
        self.stage_ns[stage.index()]
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

/// Span and busy time of kept records plus dropped aggregates.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Coverage {
    /// First start to last end, ns (exact, dropped records included).
    span: u64,
    /// Time covered by at least one record, ns (dropped records counted by
    /// duration, at most the span).
    busy: u64,
}

fn coverage<'a>(
    recs: impl Iterator<Item = &'a StageRecord>,
    dropped: impl Iterator<Item = &'a DroppedRecords>,
) -> Coverage {
    let recs: Vec<&StageRecord> = recs.collect();
    let (span, busy) = span_and_busy(recs.iter().copied());
    let (mut first, mut last) = (
        recs.iter().map(|r| r.start_ns).min(),
        recs.iter().map(|r| r.end_ns.max(r.start_ns)).max(),
    );
    let mut extra = 0u64;
    let mut any = false;
    for d in dropped.filter(|d| d.count > 0) {
        any = true;
        first = Some(first.map_or(d.first_start_ns, |f| f.min(d.first_start_ns)));
        last = Some(last.map_or(d.last_end_ns, |l| l.max(d.last_end_ns)));
        extra = extra.saturating_add(d.total_ns);
    }
    if !any {
        return Coverage { span, busy };
    }
    let span = match (first, last) {
        (Some(f), Some(l)) => l.saturating_sub(f),
        _ => 0,
    };
    Coverage {
        span,
        busy: busy.saturating_add(extra).min(span),
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

/// How busy the queues of a set of records were, together and at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct QueueOverlap {
    /// Distinct queues other than 0.
    queues: u64,
    /// Time covered by at least one record on a queue, ns.
    busy: u64,
    /// Time covered by records of at least two different queues, ns.
    overlap: u64,
}

/// Sweep over the records on a queue (queue 0 left out): at every start or end
/// the number of distinct queues with a record in flight changes; the time spent
/// with at least one is busy, with at least two is overlap. Records of one queue
/// that overlap each other count once.
fn queue_overlap<'a>(recs: impl Iterator<Item = &'a StageRecord>) -> QueueOverlap {
    // (time, +1 start / -1 end, queue); empty records never make a queue busy.
    let mut edges: Vec<(u64, i64, u64)> = Vec::new();
    let mut queues: Vec<u64> = Vec::new();
    for r in recs.filter(|r| r.queue != 0) {
        queues.push(r.queue);
        if r.end_ns > r.start_ns {
            edges.push((r.start_ns, 1, r.queue));
            edges.push((r.end_ns, -1, r.queue));
        }
    }
    queues.sort_unstable();
    queues.dedup();
    let mut out = QueueOverlap {
        queues: queues.len() as u64,
        ..Default::default()
    };
    edges.sort_unstable();
    // Records in flight per queue (indexed like `queues`), and queues with any.
    let mut in_flight = vec![0i64; queues.len()];
    let mut active = 0u64;
    let mut prev = 0u64;
    for (t, delta, queue) in edges {
        let dt = t - prev;
        if active >= 1 {
            out.busy += dt;
        }
        if active >= 2 {
            out.overlap += dt;
        }
        prev = t;
        if let Ok(i) = queues.binary_search(&queue) {
            let before = in_flight[i];
            in_flight[i] += delta;
            match (before, in_flight[i]) {
                (0, 1) => active += 1,
                (1, 0) => active = active.saturating_sub(1),
                _ => {}
            }
        }
    }
    out
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

/// The stages inside the Amdahl wall.
fn in_wall(stage: Stage) -> bool {
    matches!(
        stage,
        Stage::Alloc | Stage::HostToDevice | Stage::DeviceToDevice | Stage::Kernel | Stage::DeviceToHost
    )
}

/// The whole report.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Report {
    /// One summary per device, in first-seen order.
    pub devices: Vec<DeviceSummary>,
    /// All devices together (stage times summed; span is the whole profile's).
    pub total: DeviceSummary,
    /// The wall of the Amdahl bound: first start to last end of any allocation,
    /// transfer or kernel record, over all devices, ns (one-time init and
    /// teardown are left out; the full span is `total.span_ns`).
    pub wall_ns: u64,
    /// Time in the wall covered by at least one allocation, transfer or kernel
    /// record, ns.
    pub staged_ns: u64,
    /// Host time in the wall outside any stage (`wall_ns - staged_ns`): argument
    /// checks, host-side preparation, waiting, ns.
    pub outside_ns: u64,
    /// Time covered by at least one kernel (on any device), ns.
    pub kernel_cover_ns: u64,
    /// `kernel_cover_ns / wall_ns`: the `p` of Amdahl's bound.
    pub kernel_fraction: f64,
    /// `kernel_cover_ns / staged_ns`: what `p` would be without the host time
    /// outside stages.
    pub staged_kernel_fraction: f64,
    /// Records dropped past the profiler's cap (included in the totals).
    pub dropped_records: u64,
    /// Kernels with declared work on their device's roofline (see
    /// [`super::roofline`]): achieved GFLOP/s and GB/s, intensity, roof, fraction.
    pub roofline: super::roofline::Roofline,
}

impl Report {
    /// Summarise a profile.
    pub fn from_profile(p: &Profile) -> Self {
        let mut devices = Vec::new();
        for d in p.devices() {
            let recs: Vec<&StageRecord> = p.device_records(&d).collect();
            let dropped: Vec<&DroppedRecords> = p.dropped.iter().filter(|x| x.device == d).collect();
            devices.push(DeviceSummary::of(&d, &recs, &dropped));
        }
        let all: Vec<&StageRecord> = p.records.iter().collect();
        let all_dropped: Vec<&DroppedRecords> = p.dropped.iter().collect();
        let mut total = DeviceSummary::of("total", &all, &all_dropped);
        total.idle_ns = devices.iter().map(|d| d.idle_ns).sum();
        // Queue ids are unique across devices: the total's queue figures are sums
        // over devices, never overlap between devices.
        total.queues = devices.iter().map(|d| d.queues).sum();
        total.queue_busy_ns = devices.iter().map(|d| d.queue_busy_ns).sum();
        total.queue_overlap_ns = devices.iter().map(|d| d.queue_overlap_ns).sum();
        let wall = coverage(
            all.iter().copied().filter(|r| in_wall(r.stage)),
            all_dropped.iter().copied().filter(|r| in_wall(r.stage)),
        );
        let kernels = coverage(
            all.iter().copied().filter(|r| r.stage == Stage::Kernel),
            all_dropped.iter().copied().filter(|r| r.stage == Stage::Kernel),
        );
        let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let kernel_cover = kernels.busy.min(wall.busy);
        Report {
            devices,
            total,
            wall_ns: wall.span,
            staged_ns: wall.busy,
            outside_ns: wall.span.saturating_sub(wall.busy),
            kernel_cover_ns: kernel_cover,
            kernel_fraction: share(kernel_cover, wall.span),
            staged_kernel_fraction: share(kernel_cover, wall.busy),
            dropped_records: p.dropped_records(),
            roofline: p.roofline(),
        }
    }

    /// Whether transfers take longer than kernels overall.
    pub fn transfer_dominated(&self) -> bool {
        self.total.transfer_ns() > self.total.ns(Stage::Kernel)
    }

    /// Share of transfer time in transfer + kernel time, summed over devices
    /// (0 when neither happened).
    pub fn transfer_share(&self) -> f64 {
        let t = self.total.transfer_ns();
        let k = self.total.ns(Stage::Kernel);
        if t + k == 0 { 0.0 } else { t as f64 / (t + k) as f64 }
    }

    /// The Amdahl bound for this run: the most a `k×` faster kernel can speed
    /// up the wall ([`amdahl`] with `p = kernel_fraction`).
    pub fn amdahl(&self, k: f64) -> f64 {
        amdahl(self.kernel_fraction, k)
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
        if self.devices.is_empty() {
            return writeln!(f, "empty profile: nothing was recorded");
        }
        writeln!(
            f,
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8} {:>6}",
            "device",
            "init ms",
            "alloc ms",
            "h2d MiB",
            "h2d ms",
            "GB/s",
            "d2d ms",
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
                "{:<10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>10} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8} {:>6}",
                d.device,
                ms(d.ns(Stage::Init)),
                ms(d.ns(Stage::Alloc)),
                mib(d.h2d_bytes),
                ms(d.ns(Stage::HostToDevice)),
                gbps(d.h2d_bytes, d.ns(Stage::HostToDevice)),
                ms(d.ns(Stage::DeviceToDevice)),
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
        for d in &self.devices {
            write!(
                f,
                "{} overlap: {} ms of {} ms busy on 2+ queues ",
                d.device,
                ms(d.queue_overlap_ns),
                ms(d.queue_busy_ns)
            )?;
            match d.queues {
                0 => write!(f, "(no records on a queue)")?,
                1 => write!(f, "(1 queue)")?,
                n => write!(f, "({n} queues)")?,
            }
            if d.dropped > 0 {
                write!(
                    f,
                    "; from the kept records only, {} of this device's records were dropped",
                    d.dropped
                )?;
            }
            writeln!(f)?;
        }
        let p = self.kernel_fraction;
        if self.wall_ns == 0 {
            writeln!(f, "no transfers or kernels were recorded: no Amdahl bound")?;
        } else {
            writeln!(
                f,
                "wall {} ms = first alloc/transfer/kernel start to last end on any device (init and teardown left out): {} ms in those stages, {} ms host time outside any stage",
                ms(self.wall_ns),
                ms(self.staged_ns),
                ms(self.outside_ns),
            )?;
            writeln!(
                f,
                "kernels cover {} ms = {:.1}% of the wall ({:.1}% of the staged time); Amdahl with p = {:.1}% (the rest of the wall, host time included, does not speed up): a kernel 2x faster gives at most {:.2}x, 10x gives {:.2}x, infinitely fast gives {:.2}x",
                ms(self.kernel_cover_ns),
                100.0 * p,
                100.0 * self.staged_kernel_fraction,
                100.0 * p,
                self.amdahl(2.0),
                self.amdahl(10.0),
                self.amdahl(f64::INFINITY)
            )?;
        }
        if self.dropped_records > 0 {
            writeln!(
                f,
                "{} records dropped past the profiler's record cap: stage times, bytes, items, launches and the wall include them exactly; idle, staged and kernel coverage count each dropped record by its duration",
                self.dropped_records
            )?;
        }
        if self.transfer_dominated() {
            let which: Vec<&str> = self
                .devices
                .iter()
                .filter(|d| d.transfer_ns() > d.ns(Stage::Kernel))
                .map(|d| d.device.as_str())
                .collect();
            writeln!(
                f,
                "transfers dominate ({} ms moving data vs {} ms computing, {:.0}% of copy+kernel time; on {}): keep data on the device across launches, use pinned memory, overlap copies with kernels, or do not offload this kernel",
                ms(self.total.transfer_ns()),
                ms(self.total.ns(Stage::Kernel)),
                100.0 * self.transfer_share(),
                which.join(", ")
            )?;
        }
        write!(f, "{}", self.roofline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(device: &str, stage: Stage, start_ns: u64, end_ns: u64, bytes: u64, items: u64) -> StageRecord {
        StageRecord {
            device: device.into(),
            queue: 0,
            stage,
            label: stage.name().into(),
            bytes,
            items,
            start_ns,
            end_ns,
            clock: Clock::Host,
        }
    }

    fn near(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn amdahl_formula() {
        // p = 0.5: 1 / (0.5 + 0.25), 1 / (0.5 + 0.05), 1 / 0.5.
        assert!(near(amdahl(0.5, 2.0), 4.0 / 3.0));
        assert!(near(amdahl(0.5, 10.0), 1.0 / 0.55));
        assert!(near(amdahl(0.5, f64::INFINITY), 2.0));
        // p = 0.9: 1 / (0.1 + 0.45), 1 / (0.1 + 0.09), 10.
        assert!(near(amdahl(0.9, 2.0), 1.0 / 0.55));
        assert!(near(amdahl(0.9, 10.0), 1.0 / 0.19));
        assert!(near(amdahl(0.9, f64::INFINITY), 10.0));
        // No kernel time: nothing to gain. All kernel time: unbounded.
        assert!(near(amdahl(0.0, 10.0), 1.0));
        assert!(near(amdahl(1.0, 10.0), 10.0));
        assert!(amdahl(1.0, f64::INFINITY).is_infinite());
        // Out-of-range p is clamped.
        assert!(near(amdahl(1.5, 2.0), 2.0));
        assert!(near(amdahl(-0.5, 2.0), 1.0));
    }

    #[test]
    fn span_and_busy_merges_overlaps() {
        let v = [
            rec("d", Stage::Kernel, 10, 20, 0, 0),
            rec("d", Stage::Kernel, 15, 30, 0, 0),
            rec("d", Stage::Kernel, 40, 50, 0, 0),
            rec("d", Stage::Kernel, 30, 35, 0, 0),
        ];
        // Span 10..50 = 40; busy 10..35 (25) + 40..50 (10) = 35.
        assert_eq!(span_and_busy(v.iter()), (40, 35));
        assert_eq!(span_and_busy(std::iter::empty()), (0, 0));
    }

    #[test]
    fn queue_overlap_counts_distinct_queues_at_once() {
        let on = |queue: u64, start_ns: u64, end_ns: u64| StageRecord {
            queue,
            ..rec("d", Stage::Kernel, start_ns, end_ns, 0, 0)
        };
        let v = [
            // Queue 1 busy 0..10 and 20..30 (two of its own records overlap 5..8).
            on(1, 0, 8),
            on(1, 5, 10),
            on(1, 20, 30),
            // Queue 2 busy 6..22: overlaps queue 1 on 6..10 and 20..22.
            on(2, 6, 22),
            // No queue: never counted.
            on(0, 0, 100),
            // Empty record of queue 3: a queue, never busy.
            on(3, 7, 7),
        ];
        let q = queue_overlap(v.iter());
        assert_eq!(
            q,
            QueueOverlap {
                queues: 3,
                busy: 30,
                overlap: 6
            }
        );
        assert_eq!(queue_overlap(std::iter::empty()), QueueOverlap::default());
    }

    /// Two devices of a split run, built by hand: times, bytes, idle, Amdahl p.
    fn two_devices() -> Profile {
        const MS: u64 = 1_000_000;
        Profile {
            records: vec![
                rec("gpu:0", Stage::Init, 0, 5 * MS, 0, 0),
                rec("gpu:0", Stage::HostToDevice, 10 * MS, 30 * MS, 400_000_000, 0),
                rec("gpu:0", Stage::Kernel, 30 * MS, 35 * MS, 0, 1000),
                rec("gpu:0", Stage::DeviceToHost, 35 * MS, 45 * MS, 200_000_000, 0),
                rec("cpu:0", Stage::HostToDevice, 10 * MS, 12 * MS, 24_000_000, 0),
                // 8 ms idle on cpu:0 between its upload and its kernel.
                rec("cpu:0", Stage::Kernel, 20 * MS, 40 * MS, 0, 3000),
                rec("cpu:0", Stage::DeviceToHost, 40 * MS, 41 * MS, 12_000_000, 0),
                rec("gpu:0", Stage::Teardown, 50 * MS, 51 * MS, 0, 0),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn per_device_and_total_summaries() {
        const MS: u64 = 1_000_000;
        let r = two_devices().report();
        assert_eq!(r.devices.len(), 2);
        let gpu = &r.devices[0];
        assert_eq!(gpu.device, "gpu:0");
        assert_eq!(gpu.ns(Stage::Init), 5 * MS);
        assert_eq!(gpu.ns(Stage::HostToDevice), 20 * MS);
        assert_eq!(gpu.ns(Stage::Kernel), 5 * MS);
        assert_eq!(gpu.ns(Stage::DeviceToHost), 10 * MS);
        assert_eq!(gpu.ns(Stage::Teardown), MS);
        assert_eq!(
            (gpu.h2d_bytes, gpu.d2h_bytes, gpu.items, gpu.launches),
            (400_000_000, 200_000_000, 1000, 1)
        );
        assert!(near(gpu.transfer_compute_ratio(), 6.0));
        // gpu:0 spans 0..51 ms and is busy 5 + 35 + 1 = 41 ms.
        assert_eq!((gpu.span_ns, gpu.idle_ns), (51 * MS, 10 * MS));
        let cpu = &r.devices[1];
        assert_eq!((cpu.span_ns, cpu.idle_ns), (31 * MS, 8 * MS));
        assert!(near(cpu.transfer_compute_ratio(), 3.0 / 20.0));
        // Totals: stage times summed, idle summed.
        assert_eq!(r.total.ns(Stage::Kernel), 25 * MS);
        assert_eq!(r.total.transfer_ns(), 33 * MS);
        assert_eq!(r.total.idle_ns, 18 * MS);
        assert_eq!(r.total.items, 4000);
        // Pipeline wall 10..45 ms; kernels cover 20..40 ms: p = 20/35.
        assert_eq!(r.wall_ns, 35 * MS);
        assert!(near(r.kernel_fraction, 20.0 / 35.0));
        assert!(near(r.amdahl(f64::INFINITY), 35.0 / 15.0));
        assert!(r.transfer_dominated());
        assert!(near(r.transfer_share(), 33.0 / 58.0));
    }

    #[test]
    fn text_report_has_rows_amdahl_and_verdict() {
        let text = two_devices().report().to_string();
        println!("{text}");
        assert!(text.contains("gpu:0") && text.contains("cpu:0") && text.contains("total"));
        // gpu:0 H2D: 400 MB in 20 ms = 20 GB/s; D2H 200 MB in 10 ms = 20 GB/s.
        assert!(text.contains("20.00"), "GB/s column: {text}");
        // Amdahl with p = 20/35: k=2 gives 1/(15/35 + 10/35) = 1.40, k=10 1/(15/35 + 2/35) = 2.06, inf 2.33.
        assert!(text.contains("2x faster gives at most 1.40x"), "{text}");
        assert!(text.contains("10x gives 2.06x"), "{text}");
        assert!(text.contains("infinitely fast gives 2.33x"), "{text}");
        assert!(text.contains("transfers dominate"), "{text}");
        // Only gpu:0 is transfer-bound on its own.
        assert!(text.contains("on gpu:0)"), "{text}");
    }

    #[test]
    fn compute_bound_run_does_not_claim_transfers_dominate() {
        let p = Profile {
            records: vec![
                rec("cpu:0", Stage::HostToDevice, 0, 10, 100, 0),
                rec("cpu:0", Stage::Kernel, 10, 1000, 0, 5),
                rec("cpu:0", Stage::DeviceToHost, 1000, 1010, 100, 0),
            ],
            ..Default::default()
        };
        let r = p.report();
        assert!(!r.transfer_dominated());
        assert!(!r.to_string().contains("transfers dominate"));
        assert!(near(r.kernel_fraction, 990.0 / 1010.0));
    }

    #[test]
    fn empty_profile_report() {
        let r = Profile::default().report();
        assert!(r.devices.is_empty());
        assert_eq!(r.wall_ns, 0);
        assert!(r.to_string().contains("empty profile"));
    }
}
