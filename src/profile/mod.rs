//! Stage records and the profile built from them.
//!
//! Every stage of every device produces a [`StageRecord`]: which device, which
//! queue (0 for work on no queue: init, allocation, teardown, host staging), which
//! stage, a label (kernel name or chunk), bytes moved, items computed, start and
//! end on one shared timeline (nanoseconds since the [`Profiler`]'s epoch), and
//! which clock measured it. Backends with device clocks (CUDA events, OpenCL
//! profiling info) report a device duration; it is placed on the host timeline so
//! that it ends when the host saw the operation complete. Records from the host
//! clock span the whole call.
//!
//! # Queues
//!
//! Commands enqueued on a queue are recorded with [`Profiler::record_on`] and carry
//! the queue's process-unique id ([`StageRecord::queue`]); everything else is
//! recorded with [`Profiler::record`] on queue 0. The exports give each queue of a
//! device its own lane (a track of the Chrome trace, rows of the SVG timeline), so
//! two queues working at once on one device show as parallel bars, and the report
//! says how long two or more queues of a device were busy at once.
//!
//! # Bounded memory
//!
//! The profiler is on by default, so it keeps bounded memory however long a
//! program runs:
//!
//! * **Records**: the first [`DEFAULT_RECORD_CAP`] records (settable with
//!   [`Profiler::set_record_cap`]) are kept individually, for the Chrome trace and
//!   the SVG timeline. Later records are *dropped*: each is folded into an exact
//!   aggregate per (device, stage, label), over all queues — count, total time, bytes, items, first
//!   start and last end ([`Profile::dropped`]). The text report adds these in, so
//!   its stage times, bytes, items, launches and wall stay exact however many
//!   records arrive; the report, the trace and the timeline say "N records
//!   dropped". [`Profiler::take`] empties both and starts counting afresh.
//! * **Strings**: device labels and record labels are interned once. At most
//!   [`MAX_NAMES`] distinct strings are kept; later new strings are recorded as
//!   [`OVERFLOW_LABEL`]. Recurring labels are short and few: kernel names,
//!   `chunk <i>` of a split launch, operation names.
//!
//! Recording allocates nothing once its device and label have been interned and
//! (past the cap) its aggregate exists.
//!
//! This module only collects and presents; it never calls a backend. Exports live
//! beside it: [`report`] (text table with the Amdahl bound), [`trace`] (Chrome
//! trace-event JSON for Perfetto / `chrome://tracing`, [`Profile::to_chrome_trace`])
//! and [`svg`] (a standalone SVG timeline, [`Profile::to_svg_timeline`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

pub mod report;
pub mod roofline;
pub mod svg;
pub mod trace;

/// The stages of the offload model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Stage {
    /// Device discovery, contexts, kernel builds.
    #[default]
    Init,
    /// Device memory allocation.
    Alloc,
    /// Host → device copy.
    HostToDevice,
    /// Copy or fill within device memory (and copies between devices).
    DeviceToDevice,
    /// Kernel execution.
    Kernel,
    /// Device → host copy.
    DeviceToHost,
    /// Freeing device resources.
    Teardown,
    /// Messages between the ranks of a distributed run (the `mpi` feature): one
    /// record per message or collective, with its bytes and its peer in the label.
    Net,
}

impl Stage {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Init => "init",
            Stage::Alloc => "alloc",
            Stage::HostToDevice => "h2d",
            Stage::DeviceToDevice => "d2d",
            Stage::Kernel => "kernel",
            Stage::DeviceToHost => "d2h",
            Stage::Teardown => "teardown",
            Stage::Net => "net",
        }
    }
    /// How many stages there are.
    pub const COUNT: usize = 8;
    /// All stages in pipeline order.
    pub const ALL: [Stage; Stage::COUNT] = [
        Stage::Init,
        Stage::Alloc,
        Stage::HostToDevice,
        Stage::DeviceToDevice,
        Stage::Kernel,
        Stage::DeviceToHost,
        Stage::Teardown,
        Stage::Net,
    ];

    /// Position in [`Stage::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which clock measured a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Clock {
    /// The host's monotonic clock around the call.
    Host,
    /// The device's own clock (CUDA events, OpenCL profiling info).
    Device,
}

/// One timed stage on one device.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StageRecord {
    /// Device label (`cpu:0`, `opencl:0`, ...).
    pub device: String,
    /// Id of the queue the command ran on; 0 when it ran on no queue (init,
    /// allocation, teardown, host staging, blocking calls recorded directly).
    pub queue: u64,
    /// Stage.
    pub stage: Stage,
    /// Kernel name, chunk, or operation.
    pub label: String,
    /// Bytes moved (transfers).
    pub bytes: u64,
    /// Items computed (launches).
    pub items: u64,
    /// Start, ns since the profiler epoch.
    pub start_ns: u64,
    /// End, ns since the profiler epoch.
    pub end_ns: u64,
    /// Which clock measured the duration.
    pub clock: Clock,
}

impl StageRecord {
    /// Duration in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// Aggregate of the records of one (device, stage, label) that were dropped
/// past the record cap (see the [module docs](self)), whatever queue they ran on:
/// aggregates per queue would grow with every queue ever made.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct DroppedRecords {
    /// Device label.
    pub device: String,
    /// Stage.
    pub stage: Stage,
    /// Record label.
    pub label: String,
    /// How many records were dropped.
    pub count: u64,
    /// Their durations summed, ns.
    pub total_ns: u64,
    /// Their bytes summed.
    pub bytes: u64,
    /// Their items summed.
    pub items: u64,
    /// Earliest start among them, ns since the epoch.
    pub first_start_ns: u64,
    /// Latest end among them, ns since the epoch.
    pub last_end_ns: u64,
    /// Whether any of them came from a device clock.
    pub device_clock: bool,
}

/// Default of [`Profiler::set_record_cap`]: records kept individually.
pub const DEFAULT_RECORD_CAP: usize = 100_000;
/// Most distinct strings (device and record labels) a profiler interns.
pub const MAX_NAMES: usize = 4096;
/// The label of records whose own label came after [`MAX_NAMES`] distinct strings.
pub const OVERFLOW_LABEL: &str = "(label table full)";

/// Collects stage records for every device of a runtime. Cheap to record into;
/// can be disabled (then `record` is one atomic load). Its memory is bounded
/// (see the [module docs](self)).
///
/// Recording allocates nothing per record once a device label and a record label
/// have been seen: records are stored compactly with their strings interned, and
/// full [`StageRecord`]s are built only by [`Profiler::snapshot`] / [`Profiler::take`].
#[derive(Debug)]
pub struct Profiler {
    epoch: Instant,
    enabled: AtomicBool,
    store: Mutex<Store>,
    /// Sources of records made at completion (queues): asked to record what has
    /// completed before a snapshot.
    harvesters: Mutex<Vec<std::sync::Weak<dyn Harvest>>>,
}

/// Something that records completed work when asked (a queue whose finished
/// commands nobody has waited for).
pub(crate) trait Harvest: Send + Sync {
    /// Record every finished command not recorded yet.
    fn harvest(&self);
}

impl std::fmt::Debug for dyn Harvest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Harvest")
    }
}

/// A record with interned strings.
#[derive(Clone, Copy, Debug)]
struct Compact {
    queue: u64,
    device: u32,
    label: u32,
    stage: Stage,
    clock: Clock,
    bytes: u64,
    items: u64,
    start_ns: u64,
    end_ns: u64,
}

/// Running aggregate of dropped records of one (device, stage, label).
#[derive(Clone, Copy, Debug)]
struct Agg {
    count: u64,
    ns: u64,
    bytes: u64,
    items: u64,
    first: u64,
    last: u64,
    device_clock: bool,
}

/// Interned strings, compact records up to the cap, aggregates past it.
#[derive(Debug)]
struct Store {
    names: Vec<Box<str>>,
    index: std::collections::HashMap<Box<str>, u32>,
    records: Vec<Compact>,
    cap: usize,
    dropped: std::collections::HashMap<(u32, Stage, u32), Agg>,
    /// Declared kernel work per (device, label), in first-seen order.
    work: Vec<(u32, u32, roofline::KernelWork)>,
    /// Measured device peaks (kept across [`Profiler::take`]).
    peaks: Vec<(String, roofline::Peaks)>,
}

impl Store {
    fn new(cap: usize) -> Self {
        Store {
            names: Vec::new(),
            index: std::collections::HashMap::new(),
            records: Vec::with_capacity(cap.min(4096)),
            cap,
            dropped: std::collections::HashMap::new(),
            work: Vec::new(),
            peaks: Vec::new(),
        }
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        // The table is full: one shared label stands for every later new string.
        let s = if self.names.len() + 1 >= MAX_NAMES {
            OVERFLOW_LABEL
        } else {
            s
        };
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.into());
        self.index.insert(s.into(), i);
        i
    }

    fn name(&self, i: u32) -> String {
        self.names.get(i as usize).map_or_else(String::new, |s| s.to_string())
    }

    fn expand(&self) -> Profile {
        let records = self
            .records
            .iter()
            .map(|c| StageRecord {
                device: self.name(c.device),
                queue: c.queue,
                stage: c.stage,
                label: self.name(c.label),
                bytes: c.bytes,
                items: c.items,
                start_ns: c.start_ns,
                end_ns: c.end_ns,
                clock: c.clock,
            })
            .collect();
        let mut dropped: Vec<DroppedRecords> = self
            .dropped
            .iter()
            .map(|(&(device, stage, label), a)| DroppedRecords {
                device: self.name(device),
                stage,
                label: self.name(label),
                count: a.count,
                total_ns: a.ns,
                bytes: a.bytes,
                items: a.items,
                first_start_ns: a.first,
                last_end_ns: a.last,
                device_clock: a.device_clock,
            })
            .collect();
        dropped.sort_by(|a, b| (a.first_start_ns, &a.device, a.stage).cmp(&(b.first_start_ns, &b.device, b.stage)));
        let work = self
            .work
            .iter()
            .map(|(d, l, w)| roofline::KernelWork {
                device: self.name(*d),
                label: self.name(*l),
                ..w.clone()
            })
            .collect();
        Profile {
            records,
            dropped,
            record_cap: self.cap,
            roofline: roofline::RooflineData {
                work,
                peaks: self.peaks.clone(),
            },
        }
    }

    fn add(&mut self, c: Compact) {
        if self.records.len() < self.cap {
            self.records.push(c);
            return;
        }
        let a = self.dropped.entry((c.device, c.stage, c.label)).or_insert(Agg {
            count: 0,
            ns: 0,
            bytes: 0,
            items: 0,
            first: u64::MAX,
            last: 0,
            device_clock: false,
        });
        a.count += 1;
        a.ns = a.ns.saturating_add(c.end_ns.saturating_sub(c.start_ns));
        a.bytes = a.bytes.saturating_add(c.bytes);
        a.items = a.items.saturating_add(c.items);
        a.first = a.first.min(c.start_ns);
        a.last = a.last.max(c.end_ns);
        a.device_clock |= c.clock == Clock::Device;
    }

    fn push(&mut self, r: &StageRecord) {
        let (device, label) = (self.intern(&r.device), self.intern(&r.label));
        self.add(Compact {
            queue: r.queue,
            device,
            label,
            stage: r.stage,
            clock: r.clock,
            bytes: r.bytes,
            items: r.items,
            start_ns: r.start_ns,
            end_ns: r.end_ns,
        });
    }

    fn clear(&mut self) {
        self.records.clear();
        self.dropped.clear();
        self.work.clear();
    }
}

impl Default for Profiler {
    fn default() -> Self {
        Profiler::new()
    }
}

impl Profiler {
    /// A new, enabled profiler whose epoch is now.
    pub fn new() -> Self {
        Profiler {
            epoch: Instant::now(),
            enabled: AtomicBool::new(true),
            store: Mutex::new(Store::new(DEFAULT_RECORD_CAP)),
            harvesters: Mutex::new(Vec::new()),
        }
    }

    /// Ask `h` for its finished work before every snapshot, while it lives.
    pub(crate) fn register(&self, h: std::sync::Weak<dyn Harvest>) {
        let mut v = self.harvesters.lock();
        v.retain(|w| w.strong_count() > 0);
        v.push(h);
    }

    /// Record what registered sources have finished.
    fn harvest(&self) {
        let live: Vec<std::sync::Arc<dyn Harvest>> =
            self.harvesters.lock().iter().filter_map(|w| w.upgrade()).collect();
        for h in live {
            h.harvest();
        }
    }

    /// Keep at most `cap` records individually (default [`DEFAULT_RECORD_CAP`]);
    /// later ones are aggregated and counted as dropped. Records already kept
    /// beyond a lowered cap stay.
    pub fn set_record_cap(&self, cap: usize) {
        let mut st = self.store.lock();
        st.cap = cap;
        let keep = st.records.len().max(cap.min(4096));
        st.records.shrink_to(keep);
    }

    /// The record cap (see [`Profiler::set_record_cap`]).
    pub fn record_cap(&self) -> usize {
        self.store.lock().cap
    }

    /// Records kept individually so far.
    pub fn kept_records(&self) -> usize {
        self.store.lock().records.len()
    }

    /// Records dropped (aggregated) so far, past the cap.
    pub fn dropped_records(&self) -> u64 {
        self.store.lock().dropped.values().map(|a| a.count).sum()
    }

    /// Turn recording on or off.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether recording is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Nanoseconds since the epoch.
    pub fn now_ns(&self) -> u64 {
        self.ns(Instant::now())
    }

    fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos().min(u64::MAX as u128) as u64
    }

    /// Record one stage, on no queue (queue 0), measured on the host from `t0` to
    /// `t1`; if the backend measured `device_ns` on the device clock, the record
    /// spans that duration ending at `t1` and says so.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        device: &str,
        stage: Stage,
        label: &str,
        bytes: u64,
        items: u64,
        t0: Instant,
        t1: Instant,
        device_ns: Option<u64>,
    ) {
        self.record_on(0, device, stage, label, bytes, items, t0, t1, device_ns);
    }

    /// [`Profiler::record`] for a command of the queue with id `queue` (0 for no
    /// queue). Allocates nothing once the device and label strings are interned.
    #[allow(clippy::too_many_arguments)]
    pub fn record_on(
        &self,
        queue: u64,
        device: &str,
        stage: Stage,
        label: &str,
        bytes: u64,
        items: u64,
        t0: Instant,
        t1: Instant,
        device_ns: Option<u64>,
    ) {
        if !self.is_enabled() {
            return;
        }
        // A span given backwards is taken as empty rather than underflowing.
        let s = self.ns(t0);
        let e = self.ns(t1).max(s);
        let (start_ns, clock) = match device_ns {
            Some(d) if d <= e - s => (e - d, Clock::Device),
            // A device duration longer than the host saw (clock skew) is clamped to the host span.
            Some(_) => (s, Clock::Device),
            None => (s, Clock::Host),
        };
        let mut st = self.store.lock();
        let (device, label) = (st.intern(device), st.intern(label));
        st.add(Compact {
            queue,
            device,
            label,
            stage,
            clock,
            bytes,
            items,
            start_ns,
            end_ns: e,
        });
    }

    /// Add the declared work of one launch of a kernel on `device`, recorded under
    /// `label` (see [`roofline`]). Allocates nothing once the pair has been seen.
    pub fn add_work(&self, device: &str, label: &str, flops: f64, bytes: f64) {
        if !self.is_enabled() {
            return;
        }
        let mut st = self.store.lock();
        let (d, l) = (st.intern(device), st.intern(label));
        match st.work.iter_mut().find(|(wd, wl, _)| *wd == d && *wl == l) {
            Some((_, _, w)) => {
                w.flops += flops;
                w.bytes += bytes;
                w.launches += 1;
            }
            None => st.work.push((
                d,
                l,
                roofline::KernelWork {
                    device: String::new(),
                    label: String::new(),
                    flops,
                    bytes,
                    launches: 1,
                },
            )),
        }
    }

    /// Set the measured peaks of `device` (see [`crate::roofline::peaks`]); they
    /// stay across [`Profiler::take`].
    pub fn set_peaks(&self, device: &str, peaks: roofline::Peaks) {
        let mut st = self.store.lock();
        match st.peaks.iter_mut().find(|(d, _)| d == device) {
            Some((_, p)) => *p = peaks,
            None => st.peaks.push((device.to_string(), peaks)),
        }
    }

    /// Add a record built elsewhere (the scheduler's idle spans, tests).
    pub fn push(&self, rec: StageRecord) {
        if self.is_enabled() {
            self.store.lock().push(&rec);
        }
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Profile {
        self.harvest();
        self.store.lock().expand()
    }

    /// Take everything recorded so far (kept records and dropped aggregates),
    /// leaving the profiler empty.
    pub fn take(&self) -> Profile {
        self.harvest();
        let mut st = self.store.lock();
        let p = st.expand();
        st.clear();
        p
    }
}

/// A set of stage records, ready to report or export.
///
/// ```
/// use offload::{BackendKind, Runtime, kernels, profile::Stage};
///
/// # fn main() -> offload::Result<()> {
/// let rt = Runtime::builder().backends(&[BackendKind::Cpu]).build()?;
/// let dev = rt.device("cpu")?;
/// let n = 1 << 16;
/// let (a, b) = (dev.upload(&vec![1.0f32; n])?, dev.upload(&vec![2.0f32; n])?);
/// let mut c = dev.alloc::<f32>(n)?;
/// dev.launch_items(&kernels::vector_add()?, n, vec![(&a).into(), (&b).into(), (&mut c).into()])?;
/// c.to_vec()?;
/// let profile = rt.profile(); // a snapshot of everything recorded so far
/// let report = profile.report();
/// let cpu = report.devices.iter().find(|d| d.device == dev.label()).expect("recorded");
/// assert_eq!(cpu.h2d_bytes, 2 * 4 * n as u64);
/// assert_eq!(cpu.launches, 1);
/// println!("kernel {} ns, transfers {} ns", cpu.ns(Stage::Kernel), cpu.transfer_ns());
/// println!("{report}"); // per-device stages, transfer share, Amdahl line
/// // profile.write_chrome_trace("trace.json")?; profile.write_svg_timeline("timeline.svg")?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Profile {
    /// Records in completion order (the first [`Profile::record_cap`] of them).
    pub records: Vec<StageRecord>,
    /// Aggregates of the records dropped past the cap, per (device, stage,
    /// label); empty when nothing was dropped.
    pub dropped: Vec<DroppedRecords>,
    /// The cap records were kept under (0 in a profile built by hand).
    pub record_cap: usize,
    /// Declared kernel work and measured device peaks, for [`Profile::roofline`].
    pub roofline: roofline::RooflineData,
}

impl Profile {
    /// The kept records that start at or after `start_ns` (a time from
    /// [`Profiler::now_ns`]): the profile of a window, say one phase of a program.
    /// Dropped aggregates have no times and are left out.
    pub fn since(&self, start_ns: u64) -> Profile {
        Profile {
            records: self
                .records
                .iter()
                .filter(|r| r.start_ns >= start_ns)
                .cloned()
                .collect(),
            dropped: Vec::new(),
            record_cap: self.record_cap,
            // Work is aggregated over the whole run: it has no window.
            roofline: roofline::RooflineData {
                work: Vec::new(),
                peaks: self.roofline.peaks.clone(),
            },
        }
    }

    /// Records of one device.
    pub fn device_records<'a>(&'a self, device: &'a str) -> impl Iterator<Item = &'a StageRecord> + 'a {
        self.records.iter().filter(move |r| r.device == device)
    }

    /// Queue ids of one device's kept records, ascending (0, work on no queue,
    /// first when present).
    pub fn queues(&self, device: &str) -> Vec<u64> {
        let mut q: Vec<u64> = self.device_records(device).map(|r| r.queue).collect();
        q.sort_unstable();
        q.dedup();
        q
    }

    /// Device labels in first-seen order (devices seen only in dropped records last).
    pub fn devices(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let dropped = self.dropped.iter().map(|d| &d.device);
        for d in self.records.iter().map(|r| &r.device).chain(dropped) {
            if !out.contains(d) {
                out.push(d.clone());
            }
        }
        out
    }

    /// How many records were dropped past the cap (0 when all were kept).
    pub fn dropped_records(&self) -> u64 {
        self.dropped.iter().map(|d| d.count).sum()
    }

    /// "N records dropped ..." when records were dropped, for reports and exports.
    pub fn dropped_note(&self) -> Option<String> {
        let n = self.dropped_records();
        (n > 0).then(|| {
            format!(
                "{n} records dropped after the first {} (the record cap): the timeline shows only the kept records; stage totals, bytes, items and the wall include the dropped ones",
                self.records.len()
            )
        })
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.dropped.is_empty()
    }

    /// Write `contents` to `path`; an unwritable path gives [`crate::Error::Io`]
    /// naming it and `what` was being written.
    pub(crate) fn write_file(what: &'static str, path: &std::path::Path, contents: String) -> crate::Result<()> {
        std::fs::write(path, contents).map_err(|source| crate::Error::Io {
            what,
            path: path.display().to_string(),
            source,
        })
    }

    /// The text report (see [`report`]).
    pub fn report(&self) -> report::Report {
        report::Report::from_profile(self)
    }
}
