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

use super::dispatch::{ChunkStats, Next, Plan, State};
use super::model::PerfModel;
use super::partition;
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

struct Ctx<'r, 'a, 'h> {
    job: &'r Job<'a, 'h>,
    parts: &'r [Participant<'a>],
    plan: Plan,
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
    let ctx = Ctx {
        job,
        parts,
        plan: Plan {
            items: job.items,
            policy: job.policy,
            multiples,
            caps,
            bpi: job.bytes_per_item() as f64,
            dev_bpi,
            keys: parts.iter().map(|p| p.key.clone()).collect(),
            labels: parts.iter().map(|p| p.label.clone()).collect(),
            depths: parts.iter().map(|p| depth(p.device)).collect(),
        },
        state: Mutex::new(State::new(parts.len(), std::mem::take(model))),
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
            if !self.plan.wanted(&st, d) {
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
                self.plan.kill(&mut st, d, None, e);
                self.cv.notify_all();
                return;
            }
        };
        {
            let mut st = self.state.lock();
            let ds = &mut st.devs[d];
            ds.ready = true;
            ds.busy += t0.elapsed();
            if !in_place(dev) {
                // The CPU device reads broadcasts in place: nothing moved.
                ds.h2d += self.job.broadcast_bytes() as u64;
            }
            self.cv.notify_all();
        }
        self.device_loop(d, &bcast);
    }

    /// Device `d`'s loop: keep up to [`depth`] chunks in flight, settle the
    /// oldest, book it, take the next; on a failure, settle the rest and stop.
    fn device_loop(&self, d: usize, bcast: &[Option<RawBuf>]) {
        let dev = self.parts[d].device;
        let lanes = match Lanes::new(dev) {
            Ok(l) => l,
            Err(e) => {
                let mut st = self.state.lock();
                self.plan.kill(&mut st, d, None, e);
                self.cv.notify_all();
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
                        match self.plan.next(&mut st, d) {
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
                            self.plan.kill(&mut st, d, Some(range), e);
                            self.cv.notify_all();
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
                    self.plan.kill(&mut st, d, Some(f.range.clone()), e);
                    self.cv.notify_all();
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
        self.plan.finish(&mut st, d, &f.range, f.probe, busy, stats);
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
                f.ups.push(lanes.up.write_mem(b, 0, host, bytes.len(), &label, None)?);
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
