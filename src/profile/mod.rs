//! Stage records and the profile built from them.
//!
//! Every stage of every device produces a [`StageRecord`]: which device, which
//! stage, a label (kernel name or chunk), bytes moved, items computed, start and
//! end on one shared timeline (nanoseconds since the [`Profiler`]'s epoch), and
//! which clock measured it. Backends with device clocks (CUDA events, OpenCL
//! profiling info) report a device duration; it is placed on the host timeline so
//! that it ends when the host saw the operation complete. Records from the host
//! clock span the whole call.
//!
//! This module only collects and presents; it never calls a backend. Exports live
//! beside it: [`report`] (text table with the Amdahl bound), [`trace`] (Chrome
//! trace-event JSON for Perfetto / `chrome://tracing`, [`Profile::to_chrome_trace`])
//! and [`svg`] (a standalone SVG timeline, [`Profile::to_svg_timeline`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

pub mod report;
pub mod svg;
pub mod trace;

/// The five stages of the offload model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Stage {
    /// Device discovery, contexts, kernel builds.
    Init,
    /// Host → device copy.
    HostToDevice,
    /// Kernel execution.
    Kernel,
    /// Device → host copy.
    DeviceToHost,
    /// Freeing device resources.
    Teardown,
}

impl Stage {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Init => "init",
            Stage::HostToDevice => "h2d",
            Stage::Kernel => "kernel",
            Stage::DeviceToHost => "d2h",
            Stage::Teardown => "teardown",
        }
    }
    /// All stages in pipeline order.
    pub const ALL: [Stage; 5] = [
        Stage::Init,
        Stage::HostToDevice,
        Stage::Kernel,
        Stage::DeviceToHost,
        Stage::Teardown,
    ];
}

/// Which clock measured a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Clock {
    /// The host's monotonic clock around the call.
    Host,
    /// The device's own clock (CUDA events, OpenCL profiling info).
    Device,
}

/// One timed stage on one device.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StageRecord {
    /// Device label (`cpu:0`, `opencl:0`, ...).
    pub device: String,
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

/// Collects stage records for every device of a runtime. Cheap to record into;
/// can be disabled (then `record` is one atomic load).
///
/// Recording allocates nothing per record once a device label and a record label
/// have been seen: records are stored compactly with their strings interned, and
/// full [`StageRecord`]s are built only by [`Profiler::snapshot`] / [`Profiler::take`].
#[derive(Debug)]
pub struct Profiler {
    epoch: Instant,
    enabled: AtomicBool,
    store: Mutex<Store>,
}

/// A record with interned strings.
#[derive(Clone, Copy, Debug)]
struct Compact {
    device: u32,
    label: u32,
    stage: Stage,
    clock: Clock,
    bytes: u64,
    items: u64,
    start_ns: u64,
    end_ns: u64,
}

/// Interned strings plus compact records.
#[derive(Debug, Default)]
struct Store {
    names: Vec<Box<str>>,
    index: std::collections::HashMap<Box<str>, u32>,
    records: Vec<Compact>,
}

impl Store {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(s.into());
        self.index.insert(s.into(), i);
        i
    }

    fn expand(&self) -> Vec<StageRecord> {
        let name = |i: u32| self.names.get(i as usize).map_or_else(String::new, |s| s.to_string());
        self.records
            .iter()
            .map(|c| StageRecord {
                device: name(c.device),
                stage: c.stage,
                label: name(c.label),
                bytes: c.bytes,
                items: c.items,
                start_ns: c.start_ns,
                end_ns: c.end_ns,
                clock: c.clock,
            })
            .collect()
    }

    fn push(&mut self, r: &StageRecord) {
        let (device, label) = (self.intern(&r.device), self.intern(&r.label));
        self.records.push(Compact {
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
            store: Mutex::new(Store {
                records: Vec::with_capacity(4096),
                ..Store::default()
            }),
        }
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

    /// Record one stage measured on the host from `t0` to `t1`; if the backend
    /// measured `device_ns` on the device clock, the record spans that duration
    /// ending at `t1` and says so.
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
        st.records.push(Compact {
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

    /// Add a record built elsewhere (the scheduler's idle spans, tests).
    pub fn push(&self, rec: StageRecord) {
        if self.is_enabled() {
            self.store.lock().push(&rec);
        }
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Profile {
        Profile {
            records: self.store.lock().expand(),
        }
    }

    /// Take everything recorded so far, leaving the profiler empty.
    pub fn take(&self) -> Profile {
        let mut st = self.store.lock();
        let records = st.expand();
        st.records.clear();
        Profile { records }
    }
}

/// A set of stage records, ready to report or export.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Profile {
    /// Records in completion order.
    pub records: Vec<StageRecord>,
}

impl Profile {
    /// Records of one device.
    pub fn device_records<'a>(&'a self, device: &'a str) -> impl Iterator<Item = &'a StageRecord> + 'a {
        self.records.iter().filter(move |r| r.device == device)
    }

    /// Device labels in first-seen order.
    pub fn devices(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.records {
            if !out.contains(&r.device) {
                out.push(r.device.clone());
            }
        }
        out
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Write `contents` to `path`; an unwritable path gives [`crate::Error::Io`]
    /// naming it and `what` was being written.
    fn write_file(what: &'static str, path: &std::path::Path, contents: String) -> crate::Result<()> {
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
