//! Queues: in-order command streams on one device, and the ordering of
//! commands across queues and devices.
//!
//! A [`Queue`] is a CUDA stream, an OpenCL command queue, or a CPU lane. Its
//! commands ([`Queue::write`], [`Queue::read`], [`Queue::copy`], [`Queue::fill`],
//! [`Queue::launch`]) return an [`Event`] as soon as they are enqueued and run in
//! the order they were enqueued. Commands order themselves across queues and
//! devices by the buffers they use: each buffer remembers its last writer and its
//! readers since, and a new command waits for the writer (read after write) or
//! for both (write after read, write after write). [`Queue::wait_for`] adds an
//! explicit dependency on any event, of any device.
//!
//! Safety without lifetimes: every command keeps the device allocations and host
//! memory it uses alive until it completes (see [`Event`]); a `&[T]` source is
//! copied before the call returns; asynchronous reads land in an owned
//! [`HostBuffer`] handed back by [`Transfer::wait`].
//!
//! The blocking calls ([`crate::Buffer::write`], [`crate::Buffer::read`],
//! [`crate::Device::launch`]) are these commands followed by a wait: one path.
//!
//! This module speaks to the backend only through its [`BackendQueue`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;

use crate::backend::RawArg;
use crate::backend::queue::{BackendQueue, Completion, DoneEvent, HostDst, HostMemory, MemRange, RawEvent};
use crate::buffer::{AnyBuffer, RawBuffer, Region};
use crate::device::{Device, DeviceInner};
use crate::error::{Error, Result};
use crate::event::{Event, Keep, KeepAlive};
use crate::host_buffer::{HostBuffer, Transfer};
use crate::kernel::{Access, Kernel};
use crate::launch::{Arg, LaunchConfig};
use crate::profile::{Harvest, Stage};

static NEXT_QUEUE_ID: AtomicU64 = AtomicU64::new(1);

/// Finished commands are looked for each time this many more are pending
/// (observing one costs driver calls: status, profiling times); waits,
/// `finish`, profile snapshots and dropping the queue observe the rest.
const HARVEST_AT: usize = 64;

pub(crate) struct QueueInner {
    /// Weak: a device keeps its own queues, and they must not keep it alive.
    device: Weak<DeviceInner>,
    /// A queue made by [`Device::queue`] keeps its device alive.
    _owner: Option<Device>,
    label: Arc<str>,
    raw: Arc<dyn BackendQueue>,
    id: u64,
    /// Commands enqueued and not yet seen complete (oldest first).
    pending: Mutex<VecDeque<Event>>,
    /// Events the next command must wait for ([`Queue::wait_for`]).
    waits: Mutex<Vec<Event>>,
}

impl QueueInner {
    /// Wait for every command enqueued so far and observe their completion.
    pub(crate) fn finish_all(&self) -> Result<()> {
        let r = self.raw.finish();
        self.pending.lock().retain(|ev| !ev.is_complete());
        r
    }
}

impl Harvest for QueueInner {
    fn harvest(&self) {
        // Observing completion records a command; keep the ones still running.
        self.pending.lock().retain(|ev| !ev.is_complete());
    }
}

impl Drop for QueueInner {
    fn drop(&mut self) {
        // Commands keep their memory alive through their events; waiting here
        // makes a dropped queue's work complete before its resources go.
        if let Err(e) = self.raw.finish() {
            tracing::warn!(device = %self.label, error = %e, "finishing a dropped queue failed");
        }
        for ev in self.pending.get_mut().drain(..) {
            let _ = ev.is_complete();
        }
    }
}

/// An in-order command stream on one device. Cheap to clone (clones share the
/// stream).
///
/// Commands return at once with an [`Event`]; a command waits for the commands
/// of any queue that use the same buffer before it, and for events given to
/// [`Queue::wait_for`].
///
/// ```
/// use offload::{BackendKind, HostBuffer, Runtime};
///
/// # fn main() -> offload::Result<()> {
/// let rt = Runtime::builder().backends(&[BackendKind::Cpu]).build()?;
/// let dev = rt.device("cpu")?;
/// let (q1, q2) = (dev.queue()?, dev.queue()?);
/// let src = dev.alloc::<u32>(256)?;
/// let dst = dev.alloc::<u32>(256)?;
/// let filled = q1.fill(&src, 7)?;
/// q2.wait_for(&filled);                                       // explicit order across queues
/// q2.copy(&src, &dst)?;
/// let out = q2.read(&dst, HostBuffer::new(&dev, 256)?)?.wait()?; // the only host wait
/// assert!(out.iter().all(|v| *v == 7));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Queue {
    pub(crate) inner: Arc<QueueInner>,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Queue#{} on {}", self.inner.id, self.inner.label)
    }
}

/// One buffer a command uses, and how.
#[derive(Clone, Copy)]
pub(crate) struct Use<'a> {
    buf: &'a RawBuffer,
    reads: bool,
    writes: bool,
}

impl<'a> Use<'a> {
    fn new(buf: &'a RawBuffer, reads: bool, writes: bool) -> Self {
        Use { buf, reads, writes }
    }
}

/// The hazard state of one device allocation: its last writer and the readers
/// since, while they may still be in flight (or failed).
#[derive(Default)]
pub(crate) struct RawBufferState {
    hazards: Mutex<Hazards>,
}

impl RawBufferState {
    /// The last writer and the readers since (clones), for waiting on them.
    pub(crate) fn in_flight(&self) -> (Option<Event>, Vec<Event>) {
        let h = self.hazards.lock();
        (h.writer.clone(), h.readers.clone())
    }
}

#[derive(Default)]
struct Hazards {
    writer: Option<Event>,
    readers: Vec<Event>,
}

/// A command's dependencies on other queues' events (allocates only when there are any).
struct Deps {
    queue: u64,
    raw: Vec<Arc<dyn RawEvent>>,
}

impl Deps {
    /// Depend on `e`'s data: fail now if it failed, else order after it. An event
    /// of this queue that is still unobserved is not polled (the queue orders it;
    /// its failure is the backend's to report).
    fn depend(&mut self, e: &Event) -> Result<()> {
        if e.inner.queue_id != self.queue {
            // Polling once here turns a finished failure into `seen_failure`.
            let _ = e.is_complete();
        }
        if let Some(err) = e.seen_failure() {
            return Err(err);
        }
        self.order_after(e);
        Ok(())
    }

    /// Only run after `e` (write after write, write after read, and reads of what
    /// `e` wrote). An event of this queue is ordered by the queue and one seen
    /// complete needs nothing: neither costs a driver call. Another queue's event
    /// is polled once and, while it runs, goes in the wait list (if it then
    /// fails, the backend fails this command with `DependencyFailed`).
    fn order_after(&mut self, e: &Event) {
        if e.inner.queue_id != self.queue && !e.is_complete() {
            self.raw.push(e.inner.raw.clone());
        }
    }

    fn use_buffer(&mut self, u: &Use<'_>) -> Result<()> {
        let h = u.buf.state().hazards.lock();
        if let Some(w) = &h.writer {
            if u.reads {
                // Reading what a failed command wrote fails.
                self.depend(w)?;
            } else {
                self.order_after(w);
            }
        }
        if u.writes {
            for r in &h.readers {
                self.order_after(r);
            }
        }
        Ok(())
    }
}

/// A command that was enqueued: finished during the call, or in flight.
pub(crate) enum Submitted {
    /// Ran to completion (successfully) in the enqueue call, from `start` to
    /// `end` on the host clock (already recorded).
    Done {
        /// When it started.
        start: Instant,
        /// When it ended.
        end: Instant,
    },
    /// In flight (or failed: the event holds the failure).
    Event(Event),
}

impl Submitted {
    /// Wait for the command (the blocking calls).
    pub(crate) fn wait(self) -> Result<()> {
        self.wait_ref()
    }

    /// Wait for the command; it stays available for [`Submitted::span`].
    pub(crate) fn wait_ref(&self) -> Result<()> {
        match self {
            Submitted::Done { .. } => Ok(()),
            Submitted::Event(e) => e.wait(),
        }
    }

    /// Start and end on the host clock once complete (device timestamps where
    /// the backend has them); `None` while running or when unknown.
    pub(crate) fn span(&self) -> Option<(Instant, Instant)> {
        match self {
            Submitted::Done { start, end } => Some((*start, *end)),
            Submitted::Event(e) => e.times().map(|(s, e, _)| (s, e)),
        }
    }
}

/// A command's label: borrowed, or shared (a kernel's name, a chunk's label
/// used by several commands), which its event then holds without a copy.
#[derive(Clone, Copy)]
pub(crate) enum Label<'a> {
    /// Copied into the event.
    Str(&'a str),
    /// Shared with the event.
    Shared(&'a Arc<str>),
}

impl Label<'_> {
    fn as_str(&self) -> &str {
        match self {
            Label::Str(s) => s,
            Label::Shared(s) => s,
        }
    }

    fn to_arc(self) -> Arc<str> {
        match self {
            Label::Str(s) => Arc::from(s),
            Label::Shared(s) => s.clone(),
        }
    }
}

impl<'a> From<&'a str> for Label<'a> {
    fn from(s: &'a str) -> Self {
        Label::Str(s)
    }
}

impl<'a> From<&'a Arc<str>> for Label<'a> {
    fn from(s: &'a Arc<str>) -> Self {
        Label::Shared(s)
    }
}

/// What describes a command in its event and profile record.
struct Describe<'a> {
    stage: Stage,
    label: Label<'a>,
    bytes: u64,
    items: u64,
}

impl Queue {
    /// A queue that keeps its device alive.
    pub(crate) fn new(device: &Device) -> Result<Queue> {
        Queue::make(device, Some(device.clone()))
    }

    /// One of a device's own queues (does not keep the device alive).
    pub(crate) fn owned_by(device: &Device) -> Result<Queue> {
        Queue::make(device, None)
    }

    fn make(device: &Device, owner: Option<Device>) -> Result<Queue> {
        device.check_open("create a queue")?;
        let raw = device.inner.backend.clone().new_queue()?;
        let q = Queue {
            inner: Arc::new(QueueInner {
                device: Arc::downgrade(&device.inner),
                _owner: owner,
                label: device.inner.label.clone(),
                raw,
                id: NEXT_QUEUE_ID.fetch_add(1, Ordering::Relaxed),
                pending: Mutex::new(VecDeque::new()),
                waits: Mutex::new(Vec::new()),
            }),
        };
        let weak: std::sync::Weak<dyn Harvest> = Arc::downgrade(&q.inner) as std::sync::Weak<dyn Harvest>;
        device.profiler().register(weak);
        let mut all = device.inner.all_queues.lock();
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&q.inner));
        Ok(q)
    }

    /// The device this queue runs on.
    pub fn device(&self) -> Result<Device> {
        match self.inner.device.upgrade() {
            Some(inner) => Ok(Device { inner }),
            None => Err(Error::Closed {
                device: self.inner.label.to_string(),
                operation: "use a queue of a dropped device".into(),
            }),
        }
    }

    /// Enqueue one command: collect its dependencies (explicit waits and buffer
    /// hazards), hand them to `enqueue`, then record the result: a command that
    /// finished inside the call is recorded at once and leaves nothing in flight;
    /// an event in flight keeps every buffer and `keep` alive, becomes the
    /// buffers' last writer or a reader, and joins the pending list.
    fn submit(
        &self,
        dev: &Device,
        uses: &[Option<Use<'_>>],
        what: Describe<'_>,
        keep: Option<Keep>,
        enqueue: impl FnOnce(&[Arc<dyn RawEvent>]) -> Result<Completion>,
    ) -> Result<Submitted> {
        self.submit_after(dev, uses, what, keep, None, enqueue)
    }

    /// [`Queue::submit`], also after `after` (a dependency of this command alone:
    /// unlike [`Queue::wait_for`], no other thread's command on this queue can
    /// take it).
    fn submit_after(
        &self,
        dev: &Device,
        uses: &[Option<Use<'_>>],
        what: Describe<'_>,
        keep: Option<Keep>,
        after: Option<&Event>,
        enqueue: impl FnOnce(&[Arc<dyn RawEvent>]) -> Result<Completion>,
    ) -> Result<Submitted> {
        let mut deps = Deps {
            queue: self.inner.id,
            raw: Vec::new(),
        };
        if let Some(a) = after {
            deps.depend(a)?;
        }
        let waits = std::mem::take(&mut *self.inner.waits.lock());
        for w in &waits {
            deps.depend(w)?;
        }
        for u in uses.iter().flatten() {
            deps.use_buffer(u)?;
        }
        let enqueued = Instant::now();
        match enqueue(&deps.raw)? {
            Completion::Done {
                start,
                end,
                outcome: Ok(device_ns),
            } => {
                // Nothing in flight: every earlier user of these buffers has completed
                // (the command waited for them), so no hazard remains.
                for u in uses.iter().flatten() {
                    let mut h = u.buf.state().hazards.lock();
                    if u.writes {
                        h.writer = None;
                        h.readers.clear();
                    } else {
                        prune(&mut h.readers);
                    }
                }
                dev.profiler().record_on(
                    self.inner.id,
                    dev.label(),
                    what.stage,
                    what.label.as_str(),
                    what.bytes,
                    what.items,
                    start,
                    end,
                    device_ns,
                );
                Ok(Submitted::Done { start, end })
            }
            // A command that failed while the enqueue call ran it reports from the
            // call, as the device refused or aborted it; the buffers' hazards stay
            // as they were.
            Completion::Done { outcome: Err(e), .. } => Err(e),
            Completion::Pending(raw) => Ok(Submitted::Event(self.track(dev, uses, what, keep, raw, enqueued))),
        }
    }

    /// Make an event for a command in flight (or failed) and record its hazards.
    fn track(
        &self,
        dev: &Device,
        uses: &[Option<Use<'_>>],
        what: Describe<'_>,
        keep: Option<Keep>,
        raw: Arc<dyn RawEvent>,
        enqueued: Instant,
    ) -> Event {
        let mut hold = KeepAlive::default();
        hold.extend(uses.iter().flatten().map(|u| u.buf.mem_handle()));
        hold.extend(keep);
        let ev = Event::new(
            raw,
            self.inner.id,
            dev,
            what.stage,
            what.label.to_arc(),
            what.bytes,
            what.items,
            enqueued,
            hold,
        );
        for u in uses.iter().flatten() {
            let mut h = u.buf.state().hazards.lock();
            if u.writes {
                h.writer = Some(ev.clone());
                h.readers.clear();
            } else {
                prune(&mut h.readers);
                h.readers.push(ev.clone());
            }
        }
        let mut pending = self.inner.pending.lock();
        pending.push_back(ev.clone());
        // Poll only every HARVEST_AT commands: a poll is a driver call.
        if pending.len().is_multiple_of(HARVEST_AT) {
            while pending.front().is_some_and(|f| f.is_complete()) {
                pending.pop_front();
            }
        }
        ev
    }

    /// An event for the public API, also for commands that finished in the call.
    fn event(&self, dev: &Device, s: Submitted, what: Describe<'_>) -> Event {
        match s {
            Submitted::Event(e) => e,
            Submitted::Done { start, end } => {
                let e = Event::new(
                    DoneEvent::arc(start, end, Ok(())),
                    self.inner.id,
                    dev,
                    what.stage,
                    what.label.to_arc(),
                    what.bytes,
                    what.items,
                    start,
                    KeepAlive::default(),
                );
                // Already recorded when it ran.
                e.mark_recorded();
                e
            }
        }
    }

    /// The device, open, and `b` on it.
    fn check_buffer(&self, b: &RawBuffer, what: &str) -> Result<Device> {
        let dev = self.device()?;
        dev.check_open(what)?;
        let dyn_b: &dyn AnyBuffer = b;
        dyn_b.check_owner(&dev, what)?;
        Ok(dev)
    }

    /// Host → device: copy `src` into `dst` (equal lengths). `src` is consumed
    /// (staged) before the call returns; the copy runs in queue order.
    pub fn write<T: bytemuck::Pod>(&self, dst: &impl Region<T>, src: &[T]) -> Result<Event> {
        same_len("Queue::write", src.len(), dst.len())?;
        let dev = self.check_buffer(dst.raw_buffer(), "write")?;
        let bytes: &[u8] = bytemuck::cast_slice(src);
        let s = self.write_bytes(dst.raw_buffer(), dst.byte_range().0, bytes, "write")?;
        Ok(self.event(&dev, s, describe(Stage::HostToDevice, "write", bytes.len(), 0)))
    }

    pub(crate) fn write_bytes(&self, b: &RawBuffer, offset: usize, src: &[u8], label: &str) -> Result<Submitted> {
        let dev = self.check_buffer(b, label)?;
        let range = MemRange {
            mem: b.mem(),
            offset,
            len: src.len(),
        };
        self.submit(
            &dev,
            &[Some(Use::new(b, false, true))],
            describe(Stage::HostToDevice, label, src.len(), 0),
            None,
            |deps| self.inner.raw.write(range, src, deps),
        )
    }

    /// Host → device from an owned host buffer (pinned where the backend can),
    /// handed back by [`Transfer::wait`] when the copy is done.
    pub fn write_from<T: bytemuck::Pod>(&self, dst: &impl Region<T>, src: HostBuffer<T>) -> Result<Transfer<T>> {
        same_len("Queue::write_from", src.len(), dst.len())?;
        let b = dst.raw_buffer();
        let dev = self.check_buffer(b, "write_from")?;
        let n = src.byte_len();
        let s = self.write_mem(b, dst.byte_range().0, src.mem.clone(), n, "write", None)?;
        let event = self.event(&dev, s, describe(Stage::HostToDevice, "write", n, 0));
        Ok(Transfer { event, buffer: src })
    }

    /// Host → device: the first `n` bytes of `src` into `b` at byte `offset`,
    /// asynchronously, after `after` if given (the command that fills `src`).
    /// The command keeps `src` alive; its owner must not write it until the
    /// command completes (memory the crate borrows, see `HostRegion`, must
    /// outlive it).
    pub(crate) fn write_mem<'l>(
        &self,
        b: &RawBuffer,
        offset: usize,
        src: Arc<dyn HostMemory>,
        n: usize,
        label: impl Into<Label<'l>>,
        after: Option<&Event>,
    ) -> Result<Submitted> {
        let label = label.into();
        let dev = self.check_buffer(b, label.as_str())?;
        let range = MemRange {
            mem: b.mem(),
            offset,
            len: n,
        };
        let what = describe(Stage::HostToDevice, label, n, 0);
        self.submit_after(
            &dev,
            &[Some(Use::new(b, false, true))],
            what,
            Some(Keep::Host(src.clone())),
            after,
            |deps| self.inner.raw.write_owned(range, &src, deps),
        )
    }

    /// Device → host: `n` bytes of `b` from byte `offset` into the start of
    /// `dst`, asynchronously. The command keeps `dst` alive; nothing may read or
    /// write it until the command completes.
    pub(crate) fn read_mem<'l>(
        &self,
        b: &RawBuffer,
        offset: usize,
        dst: Arc<dyn HostMemory>,
        n: usize,
        label: impl Into<Label<'l>>,
    ) -> Result<Submitted> {
        let label = label.into();
        let dev = self.check_buffer(b, label.as_str())?;
        let range = MemRange {
            mem: b.mem(),
            offset,
            len: n,
        };
        let what = describe(Stage::DeviceToHost, label, n, 0);
        self.submit(
            &dev,
            &[Some(Use::new(b, true, false))],
            what,
            Some(Keep::Host(dst.clone())),
            |deps| self.inner.raw.read(range, HostDst::Owned(&dst, 0), deps),
        )
    }

    /// Device → host into an owned host buffer (of the buffer's length), handed
    /// back by [`Transfer::wait`] once the copy is done.
    pub fn read<T: bytemuck::Pod>(&self, src: &impl Region<T>, dst: HostBuffer<T>) -> Result<Transfer<T>> {
        same_len("Queue::read", dst.len(), src.len())?;
        let b = src.raw_buffer();
        let dev = self.check_buffer(b, "read")?;
        let n = dst.byte_len();
        let s = self.read_mem(b, src.byte_range().0, dst.mem.clone(), n, "read")?;
        let event = self.event(&dev, s, describe(Stage::DeviceToHost, "read", n, 0));
        Ok(Transfer { event, buffer: dst })
    }

    /// Device → host into a borrowed slice: completes before returning (the
    /// blocking path).
    pub(crate) fn read_into(&self, b: &RawBuffer, offset: usize, dst: &mut [u8], label: &str) -> Result<Submitted> {
        let dev = self.check_buffer(b, label)?;
        let n = dst.len();
        let range = MemRange {
            mem: b.mem(),
            offset,
            len: n,
        };
        self.submit(
            &dev,
            &[Some(Use::new(b, true, false))],
            describe(Stage::DeviceToHost, label, n, 0),
            None,
            |deps| self.inner.raw.read(range, HostDst::Borrowed(dst), deps),
        )
    }

    /// Device → device: copy all of `src` into `dst` (equal lengths). When `src`
    /// lives on another device the copy is staged through host memory
    /// ([`Queue::copy_across`]).
    pub fn copy<T: bytemuck::Pod>(&self, src: &impl Region<T>, dst: &impl Region<T>) -> Result<Event> {
        same_len("Queue::copy", src.len(), dst.len())?;
        let (s, d) = (src.raw_buffer(), dst.raw_buffer());
        let ((so, n), (dof, _)) = (src.byte_range(), dst.byte_range());
        if std::ptr::addr_eq(s.mem() as *const _, d.mem() as *const _) && so < dof + n && dof < so + n {
            return Err(Error::InvalidInput(
                "Queue::copy: source and destination overlap in the same buffer".into(),
            ));
        }
        if s.owner() != &self.device()? {
            return self.copy_across(src, dst);
        }
        self.check_buffer(s, "copy source")?;
        let dev = self.check_buffer(d, "copy destination")?;
        let (rs, rd) = (
            MemRange {
                mem: s.mem(),
                offset: so,
                len: n,
            },
            MemRange {
                mem: d.mem(),
                offset: dof,
                len: n,
            },
        );
        let uses = [Some(Use::new(s, true, false)), Some(Use::new(d, false, true))];
        let sub = self.submit(
            &dev,
            &uses,
            describe(Stage::DeviceToDevice, "copy", n, 0),
            None,
            |deps| self.inner.raw.copy(rs, rd, deps),
        )?;
        Ok(self.event(&dev, sub, describe(Stage::DeviceToDevice, "copy", n, 0)))
    }

    /// Copy from a buffer on another device: read on that device's default queue
    /// into host memory allocated for this device (pinned where it can), then
    /// written here once the read completes; both steps are asynchronous.
    pub fn copy_across<T: bytemuck::Pod>(&self, src: &impl Region<T>, dst: &impl Region<T>) -> Result<Event> {
        same_len("Queue::copy_across", src.len(), dst.len())?;
        let dev = self.check_buffer(dst.raw_buffer(), "copy destination")?;
        let staging = HostBuffer::<T>::new(&dev, src.len())?;
        let from = src.raw_buffer().owner().default_queue()?;
        let Transfer { event, buffer } = from.read(src, staging)?;
        self.wait_for(&event);
        let t = self.write_from(dst, buffer)?;
        Ok(t.event)
    }

    /// Set every element of `dst` to `value`.
    pub fn fill<T: bytemuck::Pod>(&self, dst: &impl Region<T>, value: T) -> Result<Event> {
        let b = dst.raw_buffer();
        let dev = self.check_buffer(b, "fill")?;
        let (offset, n) = dst.byte_range();
        let range = MemRange {
            mem: b.mem(),
            offset,
            len: n,
        };
        let sub = self.submit(
            &dev,
            &[Some(Use::new(b, false, true))],
            describe(Stage::DeviceToDevice, "fill", n, 0),
            None,
            |deps| self.inner.raw.fill(range, bytemuck::bytes_of(&value), deps),
        )?;
        Ok(self.event(&dev, sub, describe(Stage::DeviceToDevice, "fill", n, 0)))
    }

    /// Launch `kernel`, checked like [`Device::launch`] before anything is
    /// enqueued, and return at once.
    pub fn launch(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &[Arg<'_>]) -> Result<Event> {
        let items = cfg.total_threads().unwrap_or(0);
        let dev = self.device()?;
        let label = kernel.label();
        let s = self.launch_labeled(kernel, cfg, args, items, label.into())?;
        Ok(self.event(&dev, s, describe(Stage::Kernel, label, 0, items)))
    }

    pub(crate) fn launch_labeled(
        &self,
        kernel: &Kernel,
        cfg: &LaunchConfig,
        args: &[Arg<'_>],
        items: u64,
        label: Label<'_>,
    ) -> Result<Submitted> {
        let dev = self.device()?;
        dev.check_open("launch")?;
        if !kernel.supports(dev.backend()) {
            return Err(kernel.no_implementation(dev.backend(), dev.label()));
        }
        // Up to 16 arguments live in fixed arrays: no heap allocation on this path.
        let mut fixed: [RawArg<'_>; 16] = std::array::from_fn(|_| RawArg::Local(0));
        let mut heap = Vec::new();
        let many = args.len() > fixed.len();
        let local_bytes =
            crate::device::check_args(
                &dev,
                kernel,
                args,
                |i, r| {
                    if many { heap.push(r) } else { fixed[i] = r }
                },
            )?;
        cfg.validate(dev.info(), kernel.name(), local_bytes)?;
        crate::device::check_extents(kernel, cfg, args)?;
        let mut fixed_uses: [Option<Use<'_>>; 16] = [None; 16];
        let mut heap_uses = Vec::new();
        for (i, (p, a)) in kernel.params().iter().zip(args).enumerate() {
            let access = match p {
                crate::kernel::Param::Buffer { access, .. } => *access,
                _ => continue,
            };
            let buf = match a {
                Arg::In(b) => b.raw_buffer(),
                Arg::Out(b) => b.raw_buffer(),
                Arg::Scalar(_) | Arg::Local { .. } => continue,
            };
            let u = Use::new(buf, !matches!(access, Access::Write), access.writes());
            if many {
                heap_uses.push(Some(u));
            } else {
                fixed_uses[i] = Some(u);
            }
        }
        let uses: &[Option<Use<'_>>] = if many { &heap_uses } else { &fixed_uses[..args.len()] };
        let raw_args: &[RawArg<'_>] = if many { &heap } else { &fixed[..args.len()] };
        let work = launch_work(&dev, kernel, args, items);
        let _span = tracing::debug_span!("launch", device = %dev.label(), kernel = kernel.name()).entered();
        let submitted = self.submit(&dev, uses, describe(Stage::Kernel, label, 0, items), None, |deps| {
            self.inner.raw.launch(kernel, cfg, raw_args, deps)
        })?;
        if let Some((flops, bytes)) = work {
            dev.profiler().add_work(dev.label(), label.as_str(), flops, bytes);
        }
        Ok(submitted)
    }

    /// Make every later command of this queue wait for `event` (of any queue,
    /// on any device).
    pub fn wait_for(&self, event: &Event) {
        if event.inner.queue_id != self.inner.id {
            self.inner.waits.lock().push(event.clone());
        }
    }

    /// Block until every command enqueued so far has completed; the first
    /// failure among them, if any.
    pub fn finish(&self) -> Result<()> {
        let r = self.inner.raw.finish();
        let done: Vec<Event> = self.inner.pending.lock().drain(..).collect();
        let mut first = r.err();
        for ev in done {
            if let Err(e) = ev.wait()
                && first.is_none()
            {
                first = Some(e);
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// `host` and `buffer` elements must match for `what`.
fn same_len(what: &str, host: usize, buffer: usize) -> Result<()> {
    if host == buffer {
        return Ok(());
    }
    Err(Error::LengthMismatch {
        what: what.to_string(),
        host,
        buffer,
    })
}

/// Readers kept per buffer before finished ones are polled and dropped.
const READERS_BEFORE_PRUNE: usize = 8;

/// Drop finished readers once there are more than a few (polling costs a driver
/// call per event, so it is not done on every command).
fn prune(readers: &mut Vec<Event>) {
    if readers.len() >= READERS_BEFORE_PRUNE {
        readers.retain(|r| !r.is_complete());
    }
}

/// The declared flops and bytes of one launch of `kernel` (its cost per item
/// times the launch's `Count`, or `items` when it has none), when the kernel
/// declares a cost and the profiler records.
fn launch_work(dev: &Device, kernel: &Kernel, args: &[Arg<'_>], items: u64) -> Option<(f64, f64)> {
    if !kernel.has_cost() || !dev.profiler().is_enabled() {
        return None;
    }
    let mut fixed = [None; 16];
    let mut heap = Vec::new();
    let values = crate::device::scalar_values(args, &mut fixed, &mut heap);
    let params = kernel.params();
    let count = params
        .iter()
        .position(|p| matches!(p, crate::kernel::Param::Count))
        .and_then(|i| values.get(i).copied().flatten())
        .and_then(|s| s.as_count())
        .unwrap_or(items) as f64;
    let cost = kernel.cost_per_item(&crate::kernel::ScalarArgs { params, values })?;
    Some((cost.flops * count, cost.bytes * count))
}

fn describe<'a>(stage: Stage, label: impl Into<Label<'a>>, bytes: usize, items: u64) -> Describe<'a> {
    Describe {
        stage,
        label: label.into(),
        bytes: bytes as u64,
        items,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::buffer::Sealed;
    use crate::runtime::Runtime;

    /// A completed, failed event on `dev` (as an asynchronous failure would leave it).
    fn failed_event(dev: &Device) -> Event {
        let now = Instant::now();
        let raw = DoneEvent::arc(now, now, Err(Error::InvalidInput("the device lost its mind".into())));
        Event::new(
            raw,
            u64::MAX,
            dev,
            Stage::Kernel,
            "doomed".into(),
            0,
            0,
            now,
            KeepAlive::default(),
        )
    }

    #[test]
    fn dependants_of_a_failed_command_fail_naming_it_and_nothing_hangs() {
        let rt = Runtime::builder().backends(&[crate::BackendKind::Cpu]).build().unwrap();
        let dev = rt.device("cpu").unwrap();
        let q = dev.queue().unwrap();
        let x = dev.upload(&[1.0f32; 8]).unwrap();
        let bad = failed_event(&dev);
        // The first wait gets the typed error, later ones name the command.
        assert!(matches!(bad.wait(), Err(Error::InvalidInput(_))));
        let again = bad.wait().unwrap_err();
        assert!(again.to_string().contains("doomed"), "{again}");
        assert!(bad.failed());
        // An explicit wait on it fails the next command with DependencyFailed.
        q.wait_for(&bad);
        let e = q.fill(&x, 2.0).unwrap_err();
        assert!(
            matches!(&e, Error::DependencyFailed { cause } if cause.contains("doomed") && cause.contains("lost its mind")),
            "{e}"
        );
        // The wait was consumed: the queue goes on.
        q.fill(&x, 3.0).unwrap();
        assert_eq!(x.to_vec().unwrap(), vec![3.0; 8]);
        // Reading a buffer whose last writer failed fails; overwriting it does not.
        x.raw_buffer().state().hazards.lock().writer = Some(failed_event(&dev));
        let e = q.read(&x, HostBuffer::new(&dev, 8).unwrap()).unwrap_err();
        assert!(matches!(e, Error::DependencyFailed { .. }), "{e}");
        let e = x.to_vec().unwrap_err();
        assert!(matches!(e, Error::DependencyFailed { .. }), "{e}");
        q.fill(&x, 4.0).unwrap();
        assert_eq!(x.to_vec().unwrap(), vec![4.0; 8]);
    }
}
