//! Execution of a split launch on queues and events: one host thread per
//! device feeds it chunks handed out by a shared dispatcher (under a lock, by
//! policy). A device with asynchronous queues keeps two chunks in flight, each
//! in its own set of device buffers, with uploads, kernels and downloads on
//! three queues of the device: one chunk's copies overlap the other's kernel,
//! and the device's kernels still run one at a time (each chunk's kernel time
//! is the device's own, so the model's rate stays true). Uploads read the
//! caller's host slices and downloads of write-only outputs land in them
//! directly (no staging copy); the CPU device computes on the host slices in
//! place. A chunk's results count only once all its commands completed; with
//! read-write buffers its outputs go through host staging and are committed
//! only then, so a failed chunk never changes what its re-run reads.
//!
//! This module uses only the device layer (allocation, queues, launches
//! through [`Device`] and [`Queue`]); it never touches a driver.

use crate::backend::queue::{HostMemory, HostRegion};
use crate::buffer::RawBuffer as RawBuf;
use crate::queue::{Queue, Submitted};
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::model::{Estimate, Observation, PerfModel};
use super::partition::{self, Cost};
use super::policy::Policy;
use super::report::{DeviceShare, Excluded, Failure, SplitReport};
use crate::buffer::AnyBuffer;
use crate::device::{Device, DeviceInfo};
use crate::error::{BackendKind, Error, Result};
use crate::kernel::{ElemType, Kernel, Scalar};
use crate::launch::{Arg, LaunchConfig};
use crate::profile::Stage;

/// Host memory written by the run: an output slice shared by the device threads,
/// each of which only touches the item ranges it was handed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HostOut {
    pub ptr: *mut u8,
    pub len: usize,
}

// `HostOut` points into a `&mut [u8]` that `Scheduler::run` borrows
// exclusively for the whole run. Threads read and write only byte ranges of item
// ranges the dispatcher handed to them; the dispatcher hands every item range to
// one thread at a time (under its lock, which orders the accesses).
// SAFETY: threads touch only the disjoint item ranges the dispatcher hands them (above).
unsafe impl Send for HostOut {}
// SAFETY: as above.
unsafe impl Sync for HostOut {}

impl HostOut {
    /// The bytes of items `r`, `bpi` bytes per item.
    ///
    /// # Safety
    /// The caller holds the item range `r` from the dispatcher (exclusive access).
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, r: &Range<usize>, bpi: usize) -> &mut [u8] {
        let (s, e) = (r.start * bpi, r.end * bpi);
        debug_assert!(e <= self.len);
        // SAFETY: in bounds (lengths validated against items × bytes per item
        // before the run); exclusive per the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(s), e - s) }
    }

    /// The address of the first byte of items `r` (no access is made).
    fn range_ptr(&self, r: &Range<usize>, bpi: usize) -> *mut u8 {
        debug_assert!(r.end * bpi <= self.len);
        self.ptr.wrapping_add(r.start * bpi)
    }
}

/// What the run passes for one kernel parameter.
pub(crate) enum Slot<'h> {
    /// The chunk's first item (u32).
    Offset,
    /// The chunk's item count (u32).
    Count,
    /// A scalar, as given.
    Scalar(Scalar),
    /// Local memory of this many elements.
    Local(usize),
    /// A buffer following the items: each chunk moves its slice.
    Elem {
        /// Element type.
        ty: ElemType,
        /// Bytes per item.
        bpi: usize,
        /// Host data to upload (read-only inputs).
        input: Option<&'h [u8]>,
        /// Host data to write back (and, for read-write buffers, to upload).
        output: Option<HostOut>,
        /// Read-write: the output's current contents are uploaded first.
        read_write: bool,
    },
    /// A read-only buffer every device gets whole, uploaded once per device.
    Bcast {
        /// Parameter name.
        name: String,
        /// Element type.
        ty: ElemType,
        /// Host data.
        data: &'h [u8],
    },
}

/// A checked split launch, ready to run.
pub(crate) struct Job<'a, 'h> {
    pub kernel: &'a Kernel,
    pub items: usize,
    pub slots: Vec<Slot<'h>>,
    pub policy: Policy,
    pub max_block: u32,
}

impl Job<'_, '_> {
    /// Whether any elementwise buffer is read and written.
    fn has_read_write(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s, Slot::Elem { read_write: true, .. }))
    }

    /// Bytes moved per item (uploads plus downloads of elementwise buffers).
    fn bytes_per_item(&self) -> usize {
        self.slots
            .iter()
            .map(|s| match s {
                Slot::Elem {
                    bpi,
                    input,
                    output,
                    read_write,
                    ..
                } => {
                    let up = input.is_some() || *read_write;
                    bpi * (up as usize + output.is_some() as usize)
                }
                _ => 0,
            })
            .sum()
    }

    /// Bytes of broadcast buffers (uploaded once per device).
    fn broadcast_bytes(&self) -> usize {
        self.slots
            .iter()
            .map(|s| match s {
                Slot::Bcast { data, .. } => data.len(),
                _ => 0,
            })
            .sum()
    }

    /// Bytes per item of elementwise buffers on the device (one copy each).
    fn device_bytes_per_item(&self) -> usize {
        self.slots
            .iter()
            .map(|s| match s {
                Slot::Elem { bpi, .. } => *bpi,
                _ => 0,
            })
            .sum()
    }
}

/// One participating device, as the run sees it.
pub(crate) struct Participant<'a> {
    pub device: &'a Device,
    /// Unique label within the scheduler.
    pub label: String,
    /// Performance-model key.
    pub key: String,
}

/// A 1-D launch configuration for `n` items with at most `max_block` threads per block.
pub(crate) fn chunk_config(n: usize, info: &DeviceInfo, max_block: u32) -> LaunchConfig {
    let cfg = LaunchConfig::for_items(n, info);
    if cfg.block.x <= max_block.max(1) {
        return cfg;
    }
    let warp = info.warp_size.max(1);
    let mut block = (max_block / warp) * warp;
    if block == 0 {
        block = max_block.max(1);
    }
    let blocks = (n as u64).div_ceil(block as u64).clamp(1, u32::MAX as u64) as u32;
    LaunchConfig::new(blocks, block)
}

/// Chunks a device keeps in flight: two where the backend has asynchronous
/// queues (one's copies overlap the other's kernel), one on the CPU device
/// (its commands run inside the enqueue call).
fn depth(device: &Device) -> usize {
    match device.backend() {
        BackendKind::Cpu => 1,
        BackendKind::OpenCl | BackendKind::Cuda => 2,
    }
}

/// The queues one device uses in a run: uploads, kernels and downloads each on
/// their own (see the module docs). The CPU device needs one.
struct Lanes {
    up: Queue,
    run: Queue,
    down: Queue,
}

impl Lanes {
    fn new(dev: &Device) -> Result<Lanes> {
        let qs = dev.split_queues(if depth(dev) == 1 { 1 } else { 3 })?;
        match qs {
            [run] => Ok(Lanes {
                up: run.clone(),
                run: run.clone(),
                down: run.clone(),
            }),
            [up, run, down] => Ok(Lanes {
                up: up.clone(),
                run: run.clone(),
                down: down.clone(),
            }),
            _ => Err(Error::InvalidInput(format!(
                "{} split queues on {}",
                qs.len(),
                dev.label()
            ))),
        }
    }
}

/// Memory of one pipeline slot, reused by its chunks: a device buffer per
/// elementwise parameter and, for jobs with read-write buffers, host staging
/// (page-locked where the backend can) per output.
struct SlotMem {
    bufs: Vec<Option<RawBuf>>,
    staging: Vec<Option<Arc<dyn HostMemory>>>,
}

impl SlotMem {
    fn new(params: usize) -> SlotMem {
        SlotMem {
            bufs: (0..params).map(|_| None).collect(),
            staging: (0..params).map(|_| None).collect(),
        }
    }
}

/// A chunk in flight on one device: its commands. Dropping it waits for all of
/// them, so no command outlives the run (or an unwinding thread) while it may
/// read or write the caller's host slices.
struct Flight {
    range: Range<usize>,
    probe: bool,
    slot: usize,
    ups: Vec<Submitted>,
    kernel: Option<Submitted>,
    downs: Vec<Submitted>,
    h2d: u64,
    d2h: u64,
    in_place: bool,
}

impl Flight {
    fn commands(&self) -> impl Iterator<Item = &Submitted> {
        self.ups.iter().chain(&self.kernel).chain(&self.downs)
    }

    /// Wait for every command; the chunk's measurements, or its first failure
    /// (a root cause rather than the "dependency failed" of what followed it).
    fn settle(&self) -> Result<ChunkStats> {
        let mut first: Option<Error> = None;
        for c in self.commands() {
            if let Err(e) = c.wait_ref() {
                let root = !matches!(e, Error::DependencyFailed { .. });
                if first
                    .as_ref()
                    .is_none_or(|f| root && matches!(f, Error::DependencyFailed { .. }))
                {
                    first = Some(e);
                }
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
        let dur = |c: &Submitted| c.span().map_or(Duration::ZERO, |(s, e)| e.saturating_duration_since(s));
        let span = self
            .commands()
            .filter_map(Submitted::span)
            .fold(None, |acc, (s, e)| match acc {
                None => Some((s, e)),
                Some((a, b)) => Some((s.min(a), e.max(b))),
            });
        Ok(ChunkStats {
            up: self.ups.iter().map(dur).sum(),
            kernel: self.kernel.as_ref().map_or(Duration::ZERO, dur),
            down: self.downs.iter().map(dur).sum(),
            h2d: self.h2d,
            d2h: self.d2h,
            span,
        })
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        for c in self.commands() {
            // Failures were reported by `settle`, or the chunk is being abandoned.
            let _ = c.wait_ref();
        }
    }
}

/// The part of `span` not already counted as busy (chunks of one device overlap
/// in time); moves `until` to the end of what is counted.
fn busy_of(span: Option<(Instant, Instant)>, until: &mut Option<Instant>) -> Duration {
    let Some((s, e)) = span else {
        return Duration::ZERO;
    };
    let from = until.map_or(s, |u| s.max(u));
    *until = Some(until.map_or(e, |u| u.max(e)));
    e.saturating_duration_since(from)
}

/// A kernel build running on a thread of its own, outside the run's scope:
/// the run waits for it only while the device is still wanted, so a slow JIT
/// build on a device the model leaves out never delays the result (the build
/// still finishes in the background and is cached for later runs).
#[derive(Default)]
struct PendingBuild {
    result: Mutex<Option<Result<()>>>,
    cv: Condvar,
}

impl PendingBuild {
    /// Start building `kernel` on `device` now.
    fn start(device: &Device, kernel: &Kernel) -> Arc<PendingBuild> {
        let slot = Arc::new(PendingBuild::default());
        let (dev, k, done) = (device.clone(), kernel.clone(), slot.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("offload-build {}", device.label()))
            .spawn(move || {
                let r = dev.build(&k);
                *done.result.lock() = Some(r);
                done.cv.notify_all();
            });
        if spawned.is_err() {
            // No thread to be had: build here (the run then waits for it).
            *slot.result.lock() = Some(device.build(kernel));
        }
        slot
    }
}

/// How long a device thread waits for its build before checking again whether
/// the run still wants the device.
const BUILD_POLL: Duration = Duration::from_millis(2);

/// What a finished chunk measured (times from its commands' events: the
/// device's clock where the backend has one).
#[derive(Default)]
struct ChunkStats {
    up: Duration,
    kernel: Duration,
    down: Duration,
    h2d: u64,
    d2h: u64,
    /// From the first command's start to the last one's end.
    span: Option<(Instant, Instant)>,
}

#[derive(Default)]
struct DevState {
    alive: bool,
    ready: bool,
    retired: Option<String>,
    probes_started: u8,
    probes_done: u8,
    probe_obs: Vec<Observation>,
    work_chunks: usize,
    items: usize,
    chunks: usize,
    probes: usize,
    busy: Duration,
    h2d: u64,
    d2h: u64,
    in_flight_items: usize,
    /// Static policy: this device's own range and the largest piece taken at once.
    own: Range<usize>,
    piece: usize,
}

struct State {
    cursor: usize,
    retry: VecDeque<Range<usize>>,
    planned: bool,
    in_flight: usize,
    done: usize,
    next_chunk: usize,
    devs: Vec<DevState>,
    model: PerfModel,
    errors: Vec<Error>,
    failures: Vec<Failure>,
}

enum Next {
    Run {
        range: Range<usize>,
        probe: bool,
        index: usize,
    },
    Wait,
    Exit,
}

struct Ctx<'r, 'a, 'h> {
    job: &'r Job<'a, 'h>,
    parts: &'r [Participant<'a>],
    multiples: Vec<usize>,
    caps: Vec<usize>,
    bpi: f64,
    /// Bytes per item of the elementwise device buffers (at least 1).
    dev_bpi: usize,
    state: Mutex<State>,
    cv: Condvar,
}

/// Run `job` over `parts`, learning into `model`. Returns the report, or
/// [`Error::AllDevicesFailed`] when no device is left and items remain.
pub(crate) fn execute(
    job: &Job<'_, '_>,
    parts: &[Participant<'_>],
    model: &mut PerfModel,
    mut excluded: Vec<Excluded>,
) -> Result<SplitReport> {
    let t0 = Instant::now();
    let dev_bpi = job.device_bytes_per_item().max(1);
    let multiples: Vec<usize> = parts
        .iter()
        .map(|p| p.device.info().warp_size.max(1) as usize)
        .collect();
    let caps: Vec<usize> = parts
        .iter()
        .map(|p| {
            let i = p.device.info();
            // Chunk buffers of all slots within a quarter of device memory and each
            // buffer within the largest allocation; counts are u32 on the device.
            let by_mem = (i.global_mem_bytes / 4 / depth(p.device) as u64) / dev_bpi as u64;
            let by_alloc = job
                .slots
                .iter()
                .filter_map(|s| match s {
                    Slot::Elem { bpi, .. } => Some(i.max_alloc_bytes / (*bpi).max(1) as u64),
                    _ => None,
                })
                .min()
                .unwrap_or(u64::MAX);
            by_mem.min(by_alloc).min(u32::MAX as u64).max(1) as usize
        })
        .collect();
    let devs = parts
        .iter()
        .map(|_| DevState {
            alive: true,
            ..Default::default()
        })
        .collect();
    let ctx = Ctx {
        job,
        parts,
        multiples,
        caps,
        bpi: job.bytes_per_item() as f64,
        dev_bpi,
        state: Mutex::new(State {
            cursor: 0,
            retry: VecDeque::new(),
            planned: false,
            in_flight: 0,
            done: 0,
            next_chunk: 0,
            devs,
            model: std::mem::take(model),
            errors: Vec::new(),
            failures: Vec::new(),
        }),
        cv: Condvar::new(),
    };
    // Every device's build starts at once, each on its own thread.
    let builds: Vec<Arc<PendingBuild>> = parts
        .iter()
        .map(|p| PendingBuild::start(p.device, job.kernel))
        .collect();
    std::thread::scope(|s| {
        for (d, build) in builds.iter().enumerate() {
            let ctx = &ctx;
            s.spawn(move || ctx.device_main(d, build));
        }
    });
    let wall = t0.elapsed();
    let st = ctx.state.into_inner();
    *model = st.model;
    if st.done < job.items {
        return Err(Error::AllDevicesFailed {
            kernel: job.kernel.name().to_string(),
            errors: st.errors,
        });
    }
    let mut devices = Vec::new();
    for (p, d) in parts.iter().zip(&st.devs) {
        if d.work_chunks == 0
            && let Some(reason) = &d.retired
        {
            excluded.push(Excluded {
                device: p.label.clone(),
                reason: reason.clone(),
            });
        }
        devices.push(DeviceShare {
            device: p.label.clone(),
            name: p.device.info().name.clone(),
            items: d.items,
            chunks: d.chunks,
            probes: d.probes,
            busy: d.busy,
            idle: wall.saturating_sub(d.busy),
            h2d_bytes: d.h2d,
            d2h_bytes: d.d2h,
        });
    }
    Ok(SplitReport {
        kernel: job.kernel.name().to_string(),
        items: job.items,
        policy: job.policy,
        wall,
        devices,
        failures: st.failures,
        excluded,
    })
}

impl Ctx<'_, '_, '_> {
    /// Wait for device `d`'s build; `None` when the run stopped wanting the
    /// device before the build finished (the device is then left out, with the
    /// reason in the report).
    fn await_build(&self, d: usize, build: &PendingBuild) -> Option<Result<()>> {
        loop {
            {
                let mut r = build.result.lock();
                if r.is_none() {
                    build.cv.wait_for(&mut r, BUILD_POLL);
                }
                if let Some(r) = r.take() {
                    return Some(r);
                }
            }
            let mut st = self.state.lock();
            if !self.wanted(&st, d) {
                let ds = &mut st.devs[d];
                ds.alive = false;
                // A reason from the plan (Static) stays: it is why there was no work.
                if ds.retired.is_none() {
                    ds.retired =
                        Some("its kernel build was still running when the other devices had taken all the work".into());
                }
                self.cv.notify_all();
                return None;
            }
        }
    }

    /// Whether device `d` may still get work: items are left to hand out, a
    /// chunk waits for a retry, or (Static) its own share is not done.
    fn wanted(&self, st: &State, d: usize) -> bool {
        let ds = &st.devs[d];
        if !ds.alive {
            return false;
        }
        if !st.retry.is_empty() || !ds.own.is_empty() {
            return true;
        }
        match self.job.policy {
            // Once planned, the Static shares are fixed: no share, no work.
            Policy::Static if st.planned => false,
            _ => st.cursor < self.job.items,
        }
    }

    /// A device's thread: wait for its build, upload broadcasts, then run its lane(s).
    fn device_main(&self, d: usize, build: &PendingBuild) {
        let dev = self.parts[d].device;
        let setup = || -> Result<Vec<Option<RawBuf>>> {
            match self.await_build(d, build) {
                Some(r) => r?,
                None => return Ok(Vec::new()),
            }
            let mut out = Vec::with_capacity(self.job.slots.len());
            for s in &self.job.slots {
                out.push(match s {
                    Slot::Bcast { name, ty, data } if !in_place(dev) => {
                        let b = RawBuf::alloc(dev, *ty, (data.len() / ty.size.max(1)).max(1))?;
                        b.write_bytes(0, data, &format!("broadcast {name}"))?;
                        Some(b)
                    }
                    Slot::Bcast { ty, data, .. } => {
                        // The CPU device addresses host memory; `data` is borrowed
                        // (shared, read-only) by the caller of the run, which outlives every
                        // chunk (all complete before the run returns); typed host data is
                        // aligned for its element type.
                        // SAFETY: host memory, borrowed read-only for the whole run, aligned (above).
                        Some(unsafe {
                            RawBuf::borrow_host(dev, *ty, data.as_ptr() as *mut u8, data.len() / ty.size.max(1))
                        })
                    }
                    _ => None,
                });
            }
            Ok(out)
        };
        let t0 = Instant::now();
        let bcast = match setup() {
            // Left out while building: nothing to do.
            Ok(_) if !self.state.lock().devs[d].alive => return,
            Ok(b) => self.warm_up(d, &b).map(|()| b),
            Err(e) => Err(e),
        };
        let bcast = match bcast {
            Ok(b) => b,
            Err(e) => {
                let mut st = self.state.lock();
                self.kill(&mut st, d, None, e);
                return;
            }
        };
        {
            let mut st = self.state.lock();
            let ds = &mut st.devs[d];
            ds.ready = true;
            ds.busy += t0.elapsed();
            ds.h2d += self.job.broadcast_bytes() as u64;
            self.cv.notify_all();
        }
        self.device_loop(d, &bcast);
    }

    /// Mark device `d` failed: its chunk and its unstarted static share go back
    /// to the retry queue; the error is kept.
    fn kill(&self, st: &mut State, d: usize, chunk: Option<Range<usize>>, e: Error) {
        tracing::warn!(device = %self.parts[d].label, error = %e, "device failed during a split launch; dropping it");
        let ds = &mut st.devs[d];
        ds.alive = false;
        let own = std::mem::replace(&mut ds.own, 0..0);
        if let Some(c) = &chunk {
            st.retry.push_back(c.clone());
        }
        if !own.is_empty() {
            st.retry.push_back(own);
        }
        st.failures.push(Failure {
            device: self.parts[d].label.clone(),
            chunk,
            error: e.to_string(),
        });
        st.errors.push(e);
        self.cv.notify_all();
    }

    /// Device `d`'s loop: keep up to [`depth`] chunks in flight, settle the
    /// oldest, book it, take the next; on a failure, settle the rest and stop.
    fn device_loop(&self, d: usize, bcast: &[Option<RawBuf>]) {
        let dev = self.parts[d].device;
        let lanes = match Lanes::new(dev) {
            Ok(l) => l,
            Err(e) => {
                let mut st = self.state.lock();
                self.kill(&mut st, d, None, e);
                return;
            }
        };
        let depth = depth(dev);
        let mut mem: Vec<SlotMem> = (0..depth).map(|_| SlotMem::new(self.job.slots.len())).collect();
        let mut flight: VecDeque<Flight> = VecDeque::with_capacity(depth);
        let mut until = None;
        loop {
            while flight.len() < depth {
                let next = {
                    let mut st = self.state.lock();
                    loop {
                        match self.next(&mut st, d) {
                            Next::Run { range, probe, index } => {
                                st.in_flight += 1;
                                st.devs[d].in_flight_items += range.len();
                                break Some((range, probe, index));
                            }
                            Next::Wait if flight.is_empty() => self.cv.wait(&mut st),
                            Next::Exit if flight.is_empty() => return,
                            Next::Wait | Next::Exit => break None,
                        }
                    }
                };
                let Some((range, probe, index)) = next else {
                    break;
                };
                let slot = (0..depth).find(|s| flight.iter().all(|f| f.slot != *s)).unwrap_or(0);
                match self.enqueue_chunk(d, &lanes, &mut mem[slot], bcast, &range, index, probe, slot) {
                    Ok(f) => flight.push_back(f),
                    Err(e) => {
                        {
                            let mut st = self.state.lock();
                            st.in_flight -= 1;
                            st.devs[d].in_flight_items -= range.len();
                            self.kill(&mut st, d, Some(range), e);
                        }
                        self.drain(d, &mut flight, &mem, &mut until);
                        return;
                    }
                }
            }
            let Some(f) = flight.pop_front() else {
                continue;
            };
            if let Err(e) = self.land(d, &f, &mem, &mut until) {
                {
                    let mut st = self.state.lock();
                    self.kill(&mut st, d, Some(f.range.clone()), e);
                }
                drop(f);
                self.drain(d, &mut flight, &mem, &mut until);
                return;
            }
        }
    }

    /// Settle chunk `f`; if it succeeded, commit and book it (the caller handles a failure).
    fn land(&self, d: usize, f: &Flight, mem: &[SlotMem], until: &mut Option<Instant>) -> Result<()> {
        let res = f.settle();
        if res.is_ok() && !f.in_place && self.job.has_read_write() {
            self.commit(&mem[f.slot], &f.range);
        }
        let mut st = self.state.lock();
        st.in_flight -= 1;
        st.devs[d].in_flight_items -= f.range.len();
        let stats = res?;
        let busy = busy_of(stats.span, until);
        self.finish(&mut st, d, &f.range, f.probe, busy, stats);
        self.cv.notify_all();
        Ok(())
    }

    /// After device `d` failed: settle its other chunks in flight. Those that
    /// completed count; those that failed go back for another device.
    fn drain(&self, d: usize, flight: &mut VecDeque<Flight>, mem: &[SlotMem], until: &mut Option<Instant>) {
        while let Some(f) = flight.pop_front() {
            if let Err(e) = self.land(d, &f, mem, until) {
                let mut st = self.state.lock();
                st.retry.push_back(f.range.clone());
                st.failures.push(Failure {
                    device: self.parts[d].label.clone(),
                    chunk: Some(f.range.clone()),
                    error: e.to_string(),
                });
                st.errors.push(e);
                self.cv.notify_all();
            }
        }
    }

    /// Book a successful chunk and teach the model.
    fn finish(&self, st: &mut State, d: usize, range: &Range<usize>, probe: bool, busy: Duration, s: ChunkStats) {
        let n = range.len();
        st.done += n;
        let obs = Observation {
            items: n,
            kernel_s: s.kernel.as_secs_f64(),
            bytes: s.h2d + s.d2h,
            transfer_s: (s.up + s.down).as_secs_f64(),
        };
        let key = &self.parts[d].key;
        let ds = &mut st.devs[d];
        ds.items += n;
        ds.chunks += 1;
        ds.busy += busy;
        ds.h2d += s.h2d;
        ds.d2h += s.d2h;
        if probe {
            ds.probes += 1;
            ds.probes_done += 1;
            ds.probe_obs.push(obs);
            if ds.probe_obs.len() == 2 {
                let (a, b) = (ds.probe_obs[0], ds.probe_obs[1]);
                st.model.calibrate(key, a, b);
            }
        } else {
            ds.work_chunks += 1;
            st.model.observe(key, obs);
        }
    }

    /// Copy a finished chunk's outputs from the slot's host staging into the
    /// host slices (jobs with read-write buffers).
    fn commit(&self, mem: &SlotMem, range: &Range<usize>) {
        for (slot, stage) in self.job.slots.iter().zip(&mem.staging) {
            if let (
                Slot::Elem {
                    bpi, output: Some(out), ..
                },
                Some(stage),
            ) = (slot, stage)
            {
                // SAFETY: this thread holds `range` from the dispatcher until it
                // reports the chunk finished, so no other thread touches these bytes.
                let dst = unsafe { out.range(range, *bpi) };
                let n = dst.len().min(stage.byte_len());
                // SAFETY: the staging memory holds at least `n` bytes, and the chunk's
                // download into it completed (settled) before the commit.
                let src = unsafe { std::slice::from_raw_parts(stage.ptr(), n) };
                dst[..n].copy_from_slice(src);
            }
        }
    }

    /// The launch arguments of a chunk over `range` with the lane's buffers.
    fn chunk_args<'b>(
        &self,
        bufs: &'b mut [Option<RawBuf>],
        bcast: &'b [Option<RawBuf>],
        range: &Range<usize>,
    ) -> Result<Vec<Arg<'b>>> {
        let mut args: Vec<Arg<'b>> = Vec::with_capacity(self.job.slots.len());
        for ((slot, buf), bc) in self.job.slots.iter().zip(bufs.iter_mut()).zip(bcast) {
            args.push(match slot {
                Slot::Offset => Arg::Scalar(Scalar::U32(range.start as u32)),
                Slot::Count => Arg::Scalar(Scalar::U32(range.len() as u32)),
                Slot::Scalar(s) => Arg::Scalar(*s),
                Slot::Local(len) => Arg::Local { len: *len },
                Slot::Elem { output, .. } => match (buf.as_mut(), output.is_some()) {
                    (Some(b), true) => Arg::Out(b),
                    (Some(b), false) => Arg::In(&*b),
                    (None, _) => return Err(Error::InvalidInput("chunk buffer missing".into())),
                },
                Slot::Bcast { .. } => match bc {
                    Some(b) => Arg::In(b),
                    None => return Err(Error::InvalidInput("broadcast buffer missing".into())),
                },
            });
        }
        Ok(args)
    }

    /// One launch with `Count = 0` before any timed chunk, so that first-launch
    /// costs stay out of the model's probes (PoCL compiles a kernel for each
    /// work-group size at its first enqueue; CUDA loads modules lazily).
    fn warm_up(&self, d: usize, bcast: &[Option<RawBuf>]) -> Result<()> {
        let dev = self.parts[d].device;
        let mut bufs: Vec<Option<RawBuf>> = Vec::with_capacity(self.job.slots.len());
        for slot in &self.job.slots {
            bufs.push(match slot {
                Slot::Elem { ty, bpi, .. } => Some(RawBuf::alloc(dev, *ty, (bpi / ty.size.max(1)).max(1))?),
                _ => None,
            });
        }
        let args = self.chunk_args(&mut bufs, bcast, &(0..0))?;
        let cfg = chunk_config(1, dev.info(), self.job.max_block);
        dev.launch_chunk(self.job.kernel, &cfg, &args, 0, "warm-up (count 0)")
    }

    /// Enqueue chunk `range` in pipeline slot `slot`: uploads, the kernel and the
    /// downloads, each on its lane. On a device that computes on host memory
    /// (the CPU backend) and a job without read-write buffers, the kernel runs on
    /// the host slices in place instead. An error drops what was enqueued, which
    /// waits for it.
    #[allow(clippy::too_many_arguments)]
    fn enqueue_chunk(
        &self,
        d: usize,
        lanes: &Lanes,
        mem: &mut SlotMem,
        bcast: &[Option<RawBuf>],
        range: &Range<usize>,
        index: usize,
        probe: bool,
        slot: usize,
    ) -> Result<Flight> {
        let dev = self.parts[d].device;
        let n = range.len();
        // Labels are interned by the profiler: keep their number bounded (the
        // range is in the records' items and bytes; indices past the HGuided
        // bound share one label).
        let label: Arc<str> = if index < partition::MAX_GUIDED_CHUNKS {
            format!("chunk {index}")
        } else {
            format!("chunk {}+", partition::MAX_GUIDED_CHUNKS)
        }
        .into();
        let rw = self.job.has_read_write();
        let mut f = Flight {
            range: range.clone(),
            probe,
            slot,
            ups: Vec::new(),
            kernel: None,
            downs: Vec::new(),
            h2d: 0,
            d2h: 0,
            in_place: in_place(dev) && !rw,
        };
        let cfg = chunk_config(n, dev.info(), self.job.max_block);
        if f.in_place {
            let mut bufs = self.host_slices(dev, range)?;
            let args = self.chunk_args(&mut bufs, bcast, range)?;
            f.kernel = Some(
                lanes
                    .run
                    .launch_labeled(self.job.kernel, &cfg, &args, n as u64, (&label).into())?,
            );
            return Ok(f);
        }
        for (slot, buf) in self.job.slots.iter().zip(mem.bufs.iter_mut()) {
            let Slot::Elem {
                ty,
                bpi,
                input,
                output,
                read_write,
            } = slot
            else {
                continue;
            };
            let elems = n * (bpi / ty.size.max(1));
            if buf.as_ref().is_none_or(|b| b.len() < elems) {
                *buf = None;
                *buf = Some(RawBuf::alloc(dev, *ty, elems.max(1))?);
            }
            let bytes = range.start * bpi..range.end * bpi;
            let src: Option<*mut u8> = match (input, output) {
                (Some(i), _) => Some(i[bytes.clone()].as_ptr() as *mut u8),
                (None, Some(o)) if *read_write => Some(o.range_ptr(range, *bpi)),
                _ => None,
            };
            if let (Some(p), Some(b)) = (src, buf.as_ref()) {
                // The bytes are an input the caller lends for the whole run (only read),
                // or a read-write output range this thread holds from the dispatcher
                // (written by `commit` only after this upload completed); the chunk's
                // commands all complete before the run returns (`Flight` waits for
                // them even when dropped).
                // SAFETY: valid, in bounds and not written while the upload reads it (above).
                let host = unsafe { HostRegion::arc(p, bytes.len()) };
                f.ups.push(lanes.up.write_mem(b, 0, host, bytes.len(), &label)?);
                f.h2d += bytes.len() as u64;
            }
        }
        {
            let args = self.chunk_args(&mut mem.bufs, bcast, range)?;
            f.kernel = Some(
                lanes
                    .run
                    .launch_labeled(self.job.kernel, &cfg, &args, n as u64, (&label).into())?,
            );
        }
        for ((slot, buf), stage) in self.job.slots.iter().zip(&mem.bufs).zip(mem.staging.iter_mut()) {
            let (
                Slot::Elem {
                    ty,
                    bpi,
                    output: Some(out),
                    ..
                },
                Some(b),
            ) = (slot, buf)
            else {
                continue;
            };
            let len = n * bpi;
            let dst: Arc<dyn HostMemory> = if rw {
                // Staged, committed once the whole chunk succeeded.
                if stage.as_ref().is_none_or(|h| h.byte_len() < len) {
                    *stage = None;
                    let t0 = Instant::now();
                    *stage = Some(dev.backend_impl().alloc_host(len, ty.size.max(1))?);
                    dev.profiler().record(
                        dev.label(),
                        Stage::Alloc,
                        "host staging",
                        len as u64,
                        0,
                        t0,
                        Instant::now(),
                        None,
                    );
                }
                match stage {
                    Some(h) => h.clone(),
                    None => return Err(Error::InvalidInput("staging buffer missing".into())),
                }
            } else {
                // A write-only output range this thread holds from the dispatcher
                // (nothing else touches it); a failed chunk's partial result there is
                // overwritten by its re-run, and the download completes before the
                // run returns (`Flight` waits).
                // SAFETY: valid, in bounds and exclusively this chunk's (above).
                unsafe { HostRegion::arc(out.range_ptr(range, *bpi), len) }
            };
            f.downs.push(lanes.down.read_mem(b, 0, dst, len, &label)?);
            f.d2h += len as u64;
        }
        Ok(f)
    }

    /// The host slices of chunk `range` as CPU-device buffers (no copy): inputs
    /// and write-only outputs. Only for jobs without read-write buffers.
    fn host_slices(&self, dev: &Device, range: &Range<usize>) -> Result<Vec<Option<RawBuf>>> {
        let n = range.len();
        let mut bufs: Vec<Option<RawBuf>> = Vec::with_capacity(self.job.slots.len());
        for slot in &self.job.slots {
            let Slot::Elem {
                ty,
                bpi,
                input,
                output,
                read_write,
            } = slot
            else {
                bufs.push(None);
                continue;
            };
            let elems = n * (bpi / ty.size.max(1));
            let bytes = range.start * bpi..range.end * bpi;
            let buf = match (input, output, read_write) {
                // The CPU device addresses host memory; the input is borrowed
                // shared for the whole run and only read; the range lies inside it
                // (lengths were checked before the run); typed host data is aligned
                // for its element type and `bytes.start` is a multiple of `ty.size`.
                // SAFETY: an in-bounds, aligned, read-only host range borrowed for the run (above).
                (Some(i), _, _) => unsafe { RawBuf::borrow_host(dev, *ty, i[bytes].as_ptr() as *mut u8, elems) },
                (None, Some(o), false) => {
                    // This thread holds `range` from the dispatcher until the chunk is
                    // reported: the bytes are exclusively its, and the launch completes
                    // before the run returns (`Flight` waits).
                    // SAFETY: exclusive, in bounds, aligned like the input case (above).
                    unsafe { RawBuf::borrow_host(dev, *ty, o.range_ptr(range, *bpi), elems) }
                }
                (None, Some(_), true) | (None, None, _) => {
                    return Err(Error::InvalidInput(
                        "in-place chunk with a read-write or empty buffer".into(),
                    ));
                }
            };
            bufs.push(Some(buf));
        }
        Ok(bufs)
    }

    fn estimate(&self, st: &State, d: usize) -> Option<Estimate> {
        st.model.get(&self.parts[d].key).copied()
    }

    /// Probe chunk sizes: a small one, then one eight times larger.
    fn probe_size(&self, d: usize, nth: u8) -> usize {
        let m = self.multiples[d];
        let base = (self.job.items / 2048).max(m).div_ceil(m) * m;
        if nth == 0 { base } else { base * 8 }
    }

    /// Take up to `n` items from the shared cursor.
    fn take(&self, st: &mut State, n: usize) -> Range<usize> {
        let n = n.min(self.job.items - st.cursor);
        let r = st.cursor..st.cursor + n;
        st.cursor += n;
        r
    }

    fn run(&self, st: &mut State, range: Range<usize>, probe: bool) -> Next {
        let index = st.next_chunk;
        st.next_chunk += 1;
        Next::Run { range, probe, index }
    }

    /// The dispatcher: what device `d` does next.
    fn next(&self, st: &mut State, d: usize) -> Next {
        if !st.devs[d].alive {
            return Next::Exit;
        }
        let m = self.multiples[d];
        let cap = self.caps[d];
        if let Some(mut r) = st.retry.pop_front() {
            if r.len() > cap {
                st.retry.push_front(r.start + cap..r.end);
                r.end = r.start + cap;
            }
            return self.run(st, r, false);
        }
        let remaining = self.job.items - st.cursor;
        let calibrated = self.is_calibrated(st, d);
        if self.job.policy.uses_model() && !calibrated && st.devs[d].probes_started < 2 && remaining > 0 {
            let nth = st.devs[d].probes_started;
            st.devs[d].probes_started += 1;
            let n = partition::round_chunk(self.probe_size(d, nth), remaining, m).min(cap);
            let r = self.take(st, n);
            return self.run(st, r, true);
        }
        match self.job.policy {
            Policy::Static => {
                if !st.planned {
                    // Plan once every live device is calibrated or has finished its probes.
                    let settled = (0..self.parts.len()).all(|e| {
                        let x = &st.devs[e];
                        !x.alive || x.probes_done >= 2 || self.is_calibrated(st, e)
                    });
                    if settled || remaining == 0 {
                        self.plan_static(st);
                    } else {
                        return Next::Wait;
                    }
                }
                let ds = &mut st.devs[d];
                if !ds.own.is_empty() {
                    let n = ds.own.len().min(ds.piece.max(1)).min(cap);
                    let r = ds.own.start..ds.own.start + n;
                    ds.own.start += n;
                    return self.run(st, r, false);
                }
            }
            Policy::Dynamic { chunk } if remaining > 0 => {
                let want = if chunk == 0 {
                    (self.job.items / (16 * self.parts.len())).max(1)
                } else {
                    chunk
                };
                let r = self.take(st, partition::round_chunk(want, remaining, m).min(cap));
                return self.run(st, r, false);
            }
            Policy::HGuided { k, min_chunk } if remaining > 0 => {
                if let Some(n) = self.hguided(st, d, remaining, k, min_chunk) {
                    let r = self.take(st, n.min(cap));
                    return self.run(st, r, false);
                }
            }
            _ => {}
        }
        let all_own_empty = st.devs.iter().all(|x| x.own.is_empty() || !x.alive);
        if st.cursor == self.job.items && st.retry.is_empty() && st.in_flight == 0 && all_own_empty {
            Next::Exit
        } else {
            Next::Wait
        }
    }

    fn is_calibrated(&self, st: &State, d: usize) -> bool {
        self.estimate(st, d).is_some_and(|e| e.calibrated())
    }

    /// Per-item seconds (transfer included) of device `d`, if the model knows it.
    fn cost(&self, st: &State, d: usize) -> Option<Cost> {
        self.estimate(st, d).map(|e| Cost {
            fixed_s: e.latency_s,
            per_item_s: e.per_item_s(self.bpi),
        })
    }

    /// Why a device gets nothing, in words with the numbers.
    fn exclusion_reason(&self, mine: Cost, n: usize, others_s: f64, rest: f64) -> String {
        format!(
            "predicted to finish after the others finish the whole job: its smallest useful chunk ({n} items) would take {:.3} ms, the others finish the remaining {rest:.0} items in {:.3} ms",
            mine.time(n as f64) * 1e3,
            others_s * 1e3
        )
    }

    /// The HGuided chunk for `d`, or `None` when `d` retires (it could not finish
    /// a useful chunk before the others finish everything).
    fn hguided(&self, st: &mut State, d: usize, remaining: usize, k: f64, min_chunk: usize) -> Option<usize> {
        let m = self.multiples[d];
        let others: Vec<usize> = (0..self.parts.len())
            .filter(|&e| e != d && st.devs[e].alive && st.devs[e].retired.is_none())
            .collect();
        if st.devs[d].retired.is_some() {
            if others.is_empty() {
                st.devs[d].retired = None;
            } else {
                return None;
            }
        }
        let mine = self.cost(st, d);
        let thr_d = mine.map_or(1.0, |c| 1.0 / c.per_item_s);
        let thr = |e: usize| self.cost(st, e).map(|c| 1.0 / c.per_item_s);
        let sum_others: f64 = others.iter().map(|&e| thr(e).unwrap_or(thr_d)).sum();
        let share = thr_d / (thr_d + sum_others);
        let min_chunk = if min_chunk > 0 {
            min_chunk
        } else {
            // Auto: the chunk whose latency is at most 5% of its time.
            mine.map_or(m, |c| {
                (19.0 * c.fixed_s / c.per_item_s).ceil().min(remaining as f64) as usize
            })
            .max(m)
        };
        // The floor bounds the chunks of one run however small this device's share.
        let floor = partition::chunk_floor(self.job.items, m);
        let mut n = partition::hguided_chunk(remaining, share, k, min_chunk.max(floor), m);
        // The end-game guard: never take a chunk that would finish after the
        // calibrated others could finish everything left.
        // Only devices that are ready count: one still building may never start.
        let calibrated_others: Vec<usize> = others
            .iter()
            .copied()
            .filter(|&e| st.devs[e].ready && self.is_calibrated(st, e))
            .collect();
        let me = mine.filter(|_| self.is_calibrated(st, d));
        if let Some(me) = me
            && !calibrated_others.is_empty()
        {
            let rate_o: f64 = calibrated_others.iter().filter_map(|&e| thr(e)).sum();
            let in_flight: usize = calibrated_others.iter().map(|&e| st.devs[e].in_flight_items).sum();
            let rest = remaining as f64 + 0.5 * in_flight as f64;
            let allowed = partition::useful_chunk(me, rest, rate_o);
            if allowed < n {
                if allowed >= floor || allowed >= remaining {
                    n = partition::round_chunk(allowed, remaining, m).min(allowed.max(1));
                } else {
                    let reason = self.exclusion_reason(me, floor.min(remaining), rest / rate_o, rest);
                    st.devs[d].retired = Some(reason);
                    return None;
                }
            }
        }
        Some(n)
    }

    /// The Static plan: split what is left by the balance solver.
    fn plan_static(&self, st: &mut State) {
        st.planned = true;
        let start = st.cursor;
        let left = self.job.items - start;
        let live: Vec<usize> = (0..self.parts.len()).filter(|&d| st.devs[d].alive).collect();
        if live.is_empty() || left == 0 {
            return;
        }
        let known: Vec<Option<Cost>> = live.iter().map(|&d| self.cost(st, d)).collect();
        let fallback = known.iter().flatten().map(|c| c.per_item_s).fold(f64::NAN, f64::min);
        let costs: Vec<Cost> = known
            .iter()
            .map(|c| {
                c.unwrap_or(Cost {
                    fixed_s: 0.0,
                    per_item_s: if fallback.is_finite() { fallback } else { 1e-6 },
                })
            })
            .collect();
        let (shares, t) = partition::balance(left, &costs);
        let mults: Vec<usize> = live.iter().map(|&d| self.multiples[d]).collect();
        let ranges = partition::split_static(left, &shares, &mults);
        for ((&d, r), c) in live.iter().zip(ranges).zip(&costs) {
            let ds = &mut st.devs[d];
            ds.own = start + r.start..start + r.end;
            if ds.own.is_empty() {
                ds.retired = Some(self.exclusion_reason(*c, self.multiples[d], t, left as f64));
            }
            ds.piece = static_piece(
                ds.own.len(),
                depth(self.parts[d].device),
                self.dev_bpi,
                self.multiples[d],
            );
        }
        st.cursor = self.job.items;
    }
}

/// Device bytes (over all elementwise buffers) one Static piece moves at most,
/// unless that would make more than [`STATIC_MAX_PIECES`] pieces.
pub(crate) const STATIC_PIECE_BYTES: usize = 8 << 20;
/// Most pieces one device's Static share is moved in.
pub(crate) const STATIC_MAX_PIECES: usize = 64;

/// The piece a device takes of its Static share of `own` items at a time: at
/// most a quarter of the share on devices that keep two chunks in flight (so
/// uploads overlap kernels), and at most [`STATIC_PIECE_BYTES`] of device memory, so
/// that the chunk buffers stay small and are reused instead of one buffer of
/// the whole share being allocated, faulted in and copied through per run.
/// Rounded up to the device's work-group multiple.
pub(crate) fn static_piece(own: usize, depth: usize, dev_bpi: usize, multiple: usize) -> usize {
    let m = multiple.max(1);
    let by_lanes = if depth > 1 { own.div_ceil(4) } else { own };
    let by_bytes = (STATIC_PIECE_BYTES / dev_bpi.max(1)).max(own.div_ceil(STATIC_MAX_PIECES));
    by_lanes.min(by_bytes).max(1).div_ceil(m) * m
}

/// Whether two host regions `(address, length)` overlap (empty regions never do).
pub(crate) fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.1 > 0 && b.1 > 0 && a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

/// Whether `device` computes on host memory and can use the run's host slices in
/// place (the CPU backend).
fn in_place(device: &Device) -> bool {
    device.backend() == crate::error::BackendKind::Cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_detection() {
        assert!(overlaps((100, 10), (105, 10)));
        assert!(overlaps((105, 10), (100, 10)));
        assert!(overlaps((100, 10), (100, 1)));
        assert!(!overlaps((100, 10), (110, 10)));
        assert!(!overlaps((100, 0), (100, 10)));
    }
}
