//! The chunks of a split task on one device: which queues carry what, the
//! chunk buffers of streamed data, the chunks in flight, and kernel builds
//! that a worker can stop waiting for.
//!
//! A device with asynchronous queues (OpenCL, CUDA) keeps two chunks in
//! flight, each in its own slot of chunk buffers, with uploads, kernels and
//! downloads on three queues of the device: one chunk's copies overlap the
//! other's kernel, and the device's kernels still run one at a time (each
//! chunk's kernel time is the device's own, so the model's rate stays true).
//! The CPU device runs one chunk at a time (its commands run inside the
//! enqueue call).
//!
//! Per data argument of a chunk:
//! * **Streamed data** (the host slices of a
//!   [`Scheduler::run`](crate::schedule::Scheduler::run)): uploads read host
//!   memory, and downloads of write-only data land in it directly (no staging
//!   copy); read-write data is downloaded into host staging and copied home
//!   only once the whole chunk has completed, so a failed chunk never changes
//!   what its re-run reads. The CPU device computes on host memory in place,
//!   unless the task has read-write streamed data.
//! * **Resident data**: the chunk's slice of the device's replica, fetched
//!   where the device lacks it; the graph commits the write when the chunk
//!   has completed.
//!
//! A chunk's results count only once all its commands completed; a chunk
//! dropped unfinished waits for its commands, so none outlives the memory it
//! uses.
//!
//! This module uses queues, buffers and replicas; it touches no driver.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::data::Root;
use super::exec::{self, DataUse, Exec, Fail, Fetches, Moved, dev_err};
use super::graph::{GraphInner, TaskId};
use super::spec::TaskSpec;
use crate::backend::queue::{HostMemory, HostSub};
use crate::buffer::{AnyBuffer, RawBuffer, RawView};
use crate::device::{Device, DeviceInfo};
use crate::error::{BackendKind, Error, Result};
use crate::kernel::{Access, Kernel};
use crate::launch::LaunchConfig;
use crate::profile::Stage;
use crate::queue::{Queue, Submitted};
use crate::schedule::dispatch::ChunkStats;
use crate::schedule::partition;

/// Chunks a device keeps in flight for a task: two where the backend has
/// asynchronous queues and the chunks move data (one's copies overlap the
/// other's kernel), otherwise one: the CPU device runs its commands inside the
/// enqueue call, and chunks of resident data have nothing to overlap, so a
/// second chunk taken early would only hold items another device could
/// compute at the end.
pub(crate) fn depth(device: &Device, streamed: bool) -> usize {
    match device.backend() {
        BackendKind::Cpu => 1,
        BackendKind::OpenCl | BackendKind::Cuda if streamed => 2,
        BackendKind::OpenCl | BackendKind::Cuda => 1,
    }
}

/// A 1-D launch configuration for `n` items with at most `max_block` threads
/// per block, and no more threads in a block than the chunk has items (rounded
/// up to the device's work-group multiple): the small chunks at the end of a
/// split would otherwise launch a whole block of idle threads, which a
/// host-CPU OpenCL device still runs (measured on PoCL: a 64-item N-body chunk
/// took as long as a 256-item one, 2.3 ms).
pub(crate) fn chunk_config(n: usize, info: &DeviceInfo, max_block: u32) -> LaunchConfig {
    let warp = info.warp_size.max(1);
    let fit = (n.max(1).div_ceil(warp as usize) * warp as usize).min(u32::MAX as usize) as u32;
    let max_block = max_block.max(1).min(fit);
    let cfg = LaunchConfig::for_items(n, info);
    if cfg.block.x <= max_block {
        return cfg;
    }
    let mut block = (max_block / warp) * warp;
    if block == 0 {
        block = max_block;
    }
    let blocks = (n as u64).div_ceil(block as u64).clamp(1, u32::MAX as u64) as u32;
    LaunchConfig::new(blocks, block)
}

/// The label of chunk `index` in the profile. Labels are interned by the
/// profiler: their number stays bounded (indices past the HGuided bound share
/// one label; the range is in the records' items and bytes).
pub(crate) fn chunk_label(spec: &TaskSpec, index: usize) -> Arc<str> {
    if !spec.chunk_labels {
        return spec.label.clone();
    }
    if index < partition::MAX_GUIDED_CHUNKS {
        format!("chunk {index}")
    } else {
        format!("chunk {}+", partition::MAX_GUIDED_CHUNKS)
    }
    .into()
}

/// The queues one device uses for chunks: uploads, kernels and downloads each
/// on their own. The CPU device needs one.
struct Lanes {
    up: Queue,
    run: Queue,
    down: Queue,
}

impl Lanes {
    fn new(dev: &Device) -> Result<Lanes> {
        let async_queues = dev.backend() != BackendKind::Cpu;
        let qs = dev.split_queues(if async_queues { 3 } else { 1 })?;
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

/// Memory of one pipeline slot, reused by its chunks: a chunk buffer per
/// streamed argument and host staging (page-locked where the backend can) per
/// read-write streamed argument.
struct SlotMem {
    bufs: Vec<Option<RawBuffer>>,
    staging: Vec<Option<Arc<dyn HostMemory>>>,
}

/// A chunk in flight: its commands. Dropping it waits for all of them.
pub(crate) struct Flight {
    pub range: Range<usize>,
    pub probe: bool,
    slot: usize,
    enqueued: Instant,
    fetches: Fetches,
    ups: Vec<Submitted>,
    kernel: Option<Submitted>,
    downs: Vec<Submitted>,
    /// Bytes of streamed uploads and downloads.
    up_bytes: u64,
    down_bytes: u64,
    /// Read-write streamed data downloaded into staging: root, elements, argument.
    staged: Vec<(Arc<Root>, Range<usize>, usize)>,
    /// Host bytes saved before an in-place kernel that writes them.
    saved: Vec<(Arc<Root>, Range<usize>, Vec<u8>)>,
}

impl Flight {
    fn commands(&self) -> impl Iterator<Item = &Submitted> {
        self.fetches
            .events
            .iter()
            .map(|e| &e.3)
            .chain(&self.ups)
            .chain(&self.kernel)
            .chain(&self.downs)
    }

    /// Wait for every command; the first failure (a root cause rather than the
    /// "dependency failed" of what followed it).
    fn first_error(&self) -> Option<Error> {
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
        first
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        for c in self.commands() {
            // Failures were reported when the chunk landed, or it is being abandoned.
            let _ = c.wait_ref();
        }
    }
}

/// A chunk that completed: what the graph books.
pub(crate) struct Landed {
    pub exec: Exec,
    pub stats: ChunkStats,
    /// Device time not already counted for an overlapping chunk.
    pub busy: Duration,
}

/// One device's chunks of one split task.
pub(crate) struct Pipeline {
    pub id: TaskId,
    pub spec: Arc<TaskSpec>,
    d: usize,
    lanes: Lanes,
    mem: Vec<SlotMem>,
    pub flight: VecDeque<Flight>,
    pub depth: usize,
    /// End of the device time counted as busy so far.
    until: Option<Instant>,
}

impl Pipeline {
    /// Chunks of task `id` on the graph's device `d`.
    pub(crate) fn new(g: &GraphInner, d: usize, id: TaskId, spec: Arc<TaskSpec>) -> Result<Pipeline> {
        let dev = &g.devices[d];
        let depth = depth(dev, spec.streamed);
        let params = spec.params.len();
        Ok(Pipeline {
            id,
            spec,
            d,
            lanes: Lanes::new(dev)?,
            mem: (0..depth)
                .map(|_| SlotMem {
                    bufs: (0..params).map(|_| None).collect(),
                    staging: (0..params).map(|_| None).collect(),
                })
                .collect(),
            flight: VecDeque::with_capacity(depth),
            depth,
            until: None,
        })
    }

    /// Enqueue chunk `range` (the dispatcher's `index`-th).
    pub(crate) fn start(
        &mut self,
        g: &GraphInner,
        range: Range<usize>,
        probe: bool,
        index: usize,
    ) -> std::result::Result<(), Fail> {
        let label = chunk_label(&self.spec, index);
        let f = self.enqueue(g, &range, probe, label, false)?;
        self.flight.push_back(f);
        Ok(())
    }

    /// Wait for the oldest chunk in flight: its range, whether it was a
    /// probe, and what it measured or why it failed.
    pub(crate) fn land(&mut self, g: &GraphInner) -> Option<(Range<usize>, bool, std::result::Result<Landed, Fail>)> {
        let f = self.flight.pop_front()?;
        let (range, probe) = (f.range.clone(), f.probe);
        Some((range, probe, self.settle(g, f)))
    }

    /// One launch with `Count = 0` before any timed chunk, so that first-launch
    /// costs stay out of the model's probes (PoCL compiles a kernel for each
    /// work-group size at its first enqueue; CUDA loads modules lazily). It
    /// also fetches the task's broadcast data.
    pub(crate) fn warm(&mut self, g: &GraphInner) -> std::result::Result<Landed, Fail> {
        let f = self.enqueue(g, &(0..0), false, Arc::from("warm-up (count 0)"), true)?;
        self.settle(g, f)
    }

    /// Enqueue a chunk: fetches and uploads, the kernel, downloads. An error
    /// drops what was enqueued, which waits for it.
    fn enqueue(
        &mut self,
        g: &GraphInner,
        range: &Range<usize>,
        probe: bool,
        label: Arc<str>,
        warm: bool,
    ) -> std::result::Result<Flight, Fail> {
        let d = self.d;
        let dev = &g.devices[d];
        let spec = self.spec.clone();
        let uses = exec::data_uses(&spec, Some(range));
        let rw_streamed = uses
            .iter()
            .flatten()
            .any(|(r, _, _, m)| r.streamed && *m == Access::ReadWrite);
        // Streamed data in place on a device that computes on host memory.
        let in_place = g.in_place[d] && !rw_streamed && !warm;
        let slot = (0..self.depth)
            .find(|s| self.flight.iter().all(|f| f.slot != *s))
            .unwrap_or(0);
        let mut f = Flight {
            range: range.clone(),
            probe,
            slot,
            enqueued: Instant::now(),
            fetches: Fetches::default(),
            ups: Vec::new(),
            kernel: None,
            downs: Vec::new(),
            up_bytes: 0,
            down_bytes: 0,
            staged: Vec::new(),
            saved: Vec::new(),
        };
        let mem = &mut self.mem[slot];
        let mut reps: Vec<Option<Arc<RawBuffer>>> = Vec::with_capacity(uses.len());
        let mut borrowed: Vec<Option<RawBuffer>> = Vec::with_capacity(uses.len());
        for (i, u) in uses.iter().enumerate() {
            reps.push(None);
            borrowed.push(None);
            let Some((root, read, write, mode)) = u else { continue };
            if !root.streamed {
                let rep = root.replica(d, dev, g.in_place[d]).map_err(dev_err)?;
                if *mode != Access::Write {
                    exec::fetch(g, root, read, Some(d), g.node_of[d], &mut f.fetches)?;
                }
                reps[i] = Some(rep);
                continue;
            }
            let r = if *mode == Access::Write { write } else { read };
            let size = root.size();
            let (off, bytes) = (r.start * size, r.len() * size);
            if in_place {
                // The CPU device addresses host memory. The root's host memory holds
                // `len` elements, `r` lies inside it (task ranges are checked at
                // submission) and `off` is a multiple of the element size of memory
                // aligned for it. The graph's dependencies order other tasks' access
                // to these elements, and the dispatcher hands elements `r` of this
                // split task to this chunk alone; the launch completes before the
                // chunk is booked (the CPU device runs it inside the enqueue call).
                // SAFETY: valid, aligned, in bounds and exclusively this chunk's (above).
                let b = unsafe { RawBuffer::borrow_host(dev, root.ty, root.host.ptr().wrapping_add(off), r.len()) };
                borrowed[i] = Some(b);
                continue;
            }
            let buf = &mut mem.bufs[i];
            if buf.as_ref().is_none_or(|b| b.len() < r.len().max(1)) {
                *buf = None;
                *buf = Some(RawBuffer::alloc(dev, root.ty, r.len().max(1)).map_err(dev_err)?);
            }
            if let (Some(b), true) = (buf.as_ref(), *mode != Access::Write && bytes > 0) {
                let host = HostSub::arc(&root.host, off, bytes).map_err(dev_err)?;
                f.ups.push(
                    self.lanes
                        .up
                        .write_mem(b, 0, host, bytes, &label, None)
                        .map_err(dev_err)?,
                );
                f.up_bytes += bytes as u64;
            }
        }
        // A kernel on host memory runs inside the enqueue call: its resident
        // inputs must be there.
        if g.in_place[d] {
            for ev in &f.fetches.host_waits {
                ev.wait().map_err(|e| {
                    dev_err(Error::DependencyFailed {
                        cause: format!("a transfer to host memory failed: {e}"),
                    })
                })?;
            }
            let resident: Vec<Option<DataUse>> = uses
                .iter()
                .map(|u| u.as_ref().filter(|(r, ..)| !r.streamed).cloned())
                .collect();
            f.saved = exec::save_host_only(&resident);
        }
        let launched = self.launch(g, &spec, &uses, &reps, &borrowed, slot, range, &label);
        match launched {
            Ok(s) => f.kernel = Some(s),
            Err(error) => {
                let host_restored = !f.saved.is_empty() && exec::restore_host(&f.saved);
                f.saved.clear();
                return Err(Fail::Device { error, host_restored });
            }
        }
        if in_place {
            return Ok(f);
        }
        let mem = &mut self.mem[slot];
        for (i, u) in uses.iter().enumerate() {
            let Some((root, _, write, mode)) = u else { continue };
            if !root.streamed || !mode.writes() || write.is_empty() {
                continue;
            }
            let Some(b) = mem.bufs[i].as_ref() else { continue };
            let size = root.size();
            let (off, len) = (write.start * size, write.len() * size);
            let dst: Arc<dyn HostMemory> = if *mode == Access::ReadWrite {
                let stage = &mut mem.staging[i];
                if stage.as_ref().is_none_or(|h| h.byte_len() < len) {
                    *stage = None;
                    let t0 = Instant::now();
                    *stage = Some(
                        dev.backend_impl()
                            .alloc_host(len, root.ty.size.max(1))
                            .map_err(dev_err)?,
                    );
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
                f.staged.push((root.clone(), write.clone(), i));
                match stage {
                    Some(h) => h.clone(),
                    None => return Err(dev_err(Error::InvalidInput("staging buffer missing".into()))),
                }
            } else {
                // Write-only elements this chunk alone computes (the dispatcher hands
                // them out once); a failed chunk's partial result is overwritten by
                // its re-run.
                HostSub::arc(&root.host, off, len).map_err(dev_err)?
            };
            f.downs
                .push(self.lanes.down.read_mem(b, 0, dst, len, &label).map_err(dev_err)?);
            f.down_bytes += len as u64;
        }
        Ok(f)
    }

    /// Enqueue the chunk's kernel on views of its arguments' memory.
    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        g: &GraphInner,
        spec: &TaskSpec,
        uses: &[Option<DataUse>],
        reps: &[Option<Arc<RawBuffer>>],
        borrowed: &[Option<RawBuffer>],
        slot: usize,
        range: &Range<usize>,
        label: &Arc<str>,
    ) -> Result<Submitted> {
        let dev = &g.devices[self.d];
        let bufs = &self.mem[slot].bufs;
        let mut views: Vec<Option<RawView<'_>>> = Vec::with_capacity(uses.len());
        for (i, u) in uses.iter().enumerate() {
            let Some((_, read, write, mode)) = u else {
                views.push(None);
                continue;
            };
            let r = if *mode == Access::Write { write } else { read };
            let view = match (&reps[i], &borrowed[i], &bufs[i]) {
                (Some(rep), _, _) => RawView {
                    buf: rep,
                    start: r.start,
                    len: r.len(),
                },
                // Borrowed host memory of the chunk, or the slot's chunk buffer.
                (None, Some(b), _) | (None, None, Some(b)) => RawView {
                    buf: b,
                    start: 0,
                    len: b.len(),
                },
                (None, None, None) => {
                    return Err(Error::InvalidInput("chunk argument without memory".into()));
                }
            };
            views.push(Some(view));
        }
        let args = exec::kernel_args(spec, &mut views, range.start, range.len() as u64)?;
        let cfg = chunk_config(range.len().max(1), dev.info(), spec.max_block);
        self.lanes
            .run
            .launch_labeled(&spec.kernel, &cfg, &args, range.len() as u64, label.into())
    }

    /// Wait for chunk `f`; copy its staged results home if it succeeded.
    fn settle(&mut self, g: &GraphInner, mut f: Flight) -> std::result::Result<Landed, Fail> {
        if let Some(error) = f.first_error() {
            let host_restored = !f.saved.is_empty() && exec::restore_host(&f.saved);
            return Err(Fail::Device { error, host_restored });
        }
        for (root, r, i) in std::mem::take(&mut f.staged) {
            let Some(stage) = self.mem[f.slot].staging[i].as_ref() else {
                continue;
            };
            let size = root.size();
            let n = (r.len() * size).min(stage.byte_len());
            // The staging memory holds at least `n` bytes and its download
            // completed (waited for above); elements `r` of the root are this
            // chunk's alone (the dispatcher hands them out once) and in bounds.
            // SAFETY: both ranges valid and not accessed concurrently (above).
            unsafe { std::ptr::copy_nonoverlapping(stage.ptr(), root.host.ptr().add(r.start * size), n) };
        }
        let dur = |c: &Submitted| c.span().map_or(Duration::ZERO, |(s, e)| e.saturating_duration_since(s));
        let span = f
            .commands()
            .filter_map(Submitted::span)
            .fold(None, |acc: Option<(Instant, Instant)>, (s, e)| match acc {
                None => Some((s, e)),
                Some((a, b)) => Some((s.min(a), e.max(b))),
            });
        let kernel = f.kernel.as_ref().map_or(Duration::ZERO, dur);
        let fetch_s: Duration = f.fetches.events.iter().map(|e| dur(&e.3)).sum();
        let up_s: Duration = f.ups.iter().map(dur).sum();
        let stats = ChunkStats {
            up: fetch_s + up_s,
            kernel,
            down: f.downs.iter().map(dur).sum(),
            h2d: f.up_bytes + f.fetches.moved,
            d2h: f.down_bytes,
        };
        let busy = busy_of(span, &mut self.until);
        let mut transfers = f.fetches.measured();
        if f.up_bytes > 0 && up_s > Duration::ZERO {
            transfers.push(Moved {
                from: 0,
                to: g.node_of[self.d],
                bytes: f.up_bytes,
                seconds: up_s.as_secs_f64(),
            });
        }
        let (start, end) = span.unwrap_or((f.enqueued, Instant::now()));
        let exec = Exec {
            device: self.d,
            items: Some(f.range.clone()),
            start,
            end,
            kernel_s: kernel.as_secs_f64(),
            moved: stats.h2d,
            saved: f.fetches.saved,
            transfers,
        };
        Ok(Landed { exec, stats, busy })
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

/// A kernel build running on a thread of its own: a worker waits for it only
/// while the device is still wanted, so a slow JIT build on a device the model
/// leaves out never delays the result (the build still finishes in the
/// background and is cached for later runs).
#[derive(Default)]
pub(crate) struct PendingBuild {
    result: Mutex<Option<Result<()>>>,
    cv: Condvar,
}

/// How long a worker waits for its build before checking again whether the
/// task still wants the device.
pub(crate) const BUILD_POLL: Duration = Duration::from_millis(2);

impl PendingBuild {
    /// Start building `kernel` on `device` now.
    pub(crate) fn start(device: &Device, kernel: &Kernel) -> Arc<PendingBuild> {
        let slot = Arc::new(PendingBuild::default());
        if device.backend_impl().builds_at_once() {
            *slot.result.lock() = Some(device.build(kernel));
            return slot;
        }
        let (dev, k, done) = (device.clone(), kernel.clone(), slot.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("offload-build {}", device.label()))
            .spawn(move || {
                let r = dev.build(&k);
                *done.result.lock() = Some(r);
                done.cv.notify_all();
            });
        if spawned.is_err() {
            // No thread to be had: build here (the worker then waits for it).
            *slot.result.lock() = Some(device.build(kernel));
        }
        slot
    }

    /// The build's result if it finished within `BUILD_POLL`.
    pub(crate) fn poll(&self) -> Option<Result<()>> {
        let mut r = self.result.lock();
        if r.is_none() {
            self.cv.wait_for(&mut r, BUILD_POLL);
        }
        r.take()
    }
}
