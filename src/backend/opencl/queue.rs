//! Native asynchronous queues of the OpenCL backend, their events, and
//! page-locked host memory.
//!
//! * [`ClQueue`]: one in-order, profiling-enabled `cl_command_queue`. Every
//!   command is a non-blocking enqueue that returns at once with a [`ClEvent`];
//!   the driver runs the commands in order.
//! * Dependencies: events of this device (any of its queues) go into the
//!   command's wait list; the queue that made such an event is flushed first
//!   (OpenCL requires it before another queue waits on its commands). Events of
//!   other backends, and of other OpenCL devices (another context, which a wait
//!   list cannot name), are waited for on the host before the enqueue. A host
//!   wait was preferred over bridging with a user event completed from a helper
//!   thread: such foreign events are nearly always complete already (the CPU
//!   device runs its commands inside the enqueue call, and complete events never
//!   reach a backend as dependencies), and a user event that some failure left
//!   unsignalled would hang every later command of the queue, `clFinish`
//!   and this queue's `Drop` with it.
//! * Kernel objects carry their arguments as state. Each built kernel has a few
//!   kernel objects ("slots", see `program`), each behind a mutex; a queue uses
//!   the slot of its index and holds its mutex from the first `clSetKernelArg` to
//!   the return of `clEnqueueNDRangeKernel`, which captures the arguments. So
//!   any number of threads may share one queue, or use several.
//! * Times: `CL_PROFILING_COMMAND_START/END` are nanoseconds on the device's
//!   clock. They are mapped onto the host's [`Instant`] with one offset per
//!   device ([`HostClock`]), measured when the device's first queue is made (and
//!   again for a new queue when the last measurement is over a minute old, so
//!   drift between the two clocks stays small): an empty marker is enqueued
//!   between two host readings `t0` and `t1`, and its `END` is taken to be the
//!   host time `(t0 + t1) / 2` (the best of three tries, the one with the
//!   smallest `t1 - t0`, bounds the error by half that span, some microseconds).
//!   A mapped time is never later than the moment it is read: a command's
//!   mapped span is shifted earlier, its length unchanged, if calibration error
//!   would put it in the future.
//! * A `&[u8]` written is copied into staging memory owned by the event (up to
//!   [`STAGE_MAX`] bytes) or, when larger, written before `write` returns (a
//!   second full copy of a large array would cost more than the wait; owned
//!   [`HostMemory`] is the asynchronous path for large transfers).
//! * [`ClHostMemory`]: a `CL_MEM_ALLOC_HOST_PTR` buffer mapped once; the
//!   mapping is the host memory (page-locked on drivers that pin such buffers).

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use opencl3::command_queue::{
    enqueue_copy_buffer, enqueue_fill_buffer, enqueue_map_buffer, enqueue_marker_with_wait_list, enqueue_read_buffer,
    enqueue_unmap_mem_object, enqueue_write_buffer, finish, flush, retain_command_queue,
};
use opencl3::error_codes::CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST;
use opencl3::event::{
    CL_COMPLETE, CL_EVENT_COMMAND_EXECUTION_STATUS, CL_PROFILING_COMMAND_END, CL_PROFILING_COMMAND_START,
    get_event_info, get_event_profiling_info, wait_for_events,
};
use opencl3::memory::{CL_MAP_READ, CL_MAP_WRITE, CL_MEM_ALLOC_HOST_PTR, CL_MEM_READ_WRITE};
use opencl3::types::{CL_BLOCKING, CL_NON_BLOCKING, cl_command_queue, cl_event, cl_int};

use super::error::{Op, code_name, map_cl_err};
use super::handles::{Event, Queue};
use super::memory::ClMemory;
use super::{OpenClBackend, launch, wait_or_finish};
use crate::backend::RawArg;
use crate::backend::queue::{
    BackendQueue, Completion, EventTimes, HostDst, HostMemory, MemRange, RawEvent, check_fill, host_ptr,
};
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::launch::LaunchConfig;

/// Writes of at most this many bytes are staged (asynchronous); larger ones are
/// written before `write` returns.
pub(crate) const STAGE_MAX: usize = 4 << 20;

/// How old a device's clock calibration may be when a new queue is made.
const RECALIBRATE_AFTER: Duration = Duration::from_secs(60);

/// The device clock ↔ host clock mapping: device time `device_ns` was host time `host`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HostClock {
    host: Instant,
    device_ns: u64,
}

impl HostClock {
    /// Device nanoseconds as a host instant.
    fn to_host(self, ns: u64) -> Instant {
        if ns >= self.device_ns {
            self.host + Duration::from_nanos(ns - self.device_ns)
        } else {
            let back = Duration::from_nanos(self.device_ns - ns);
            self.host.checked_sub(back).unwrap_or(self.host)
        }
    }

    /// Measure on `q` (see the module docs); `None` when the driver gives markers
    /// no profiling times.
    fn calibrate(q: cl_command_queue) -> Option<HostClock> {
        let mut best: Option<(Duration, HostClock)> = None;
        for _ in 0..3 {
            let t0 = Instant::now();
            // SAFETY: `q` is a live queue; an empty wait list.
            let ev = unsafe { enqueue_marker_with_wait_list(q, 0, std::ptr::null()) }.ok()?;
            // SAFETY: a successful enqueue returns an event with one reference, ours.
            let ev = unsafe { Event::from_raw(ev) };
            wait_for_events(&[ev.raw()]).ok()?;
            let t1 = Instant::now();
            let end = profiling(ev.raw(), CL_PROFILING_COMMAND_END)?;
            let span = t1 - t0;
            let c = HostClock {
                host: t0 + span / 2,
                device_ns: end,
            };
            if best.is_none_or(|(s, _)| span < s) {
                best = Some((span, c));
            }
        }
        best.map(|(_, c)| c)
    }
}

/// One profiling counter of a completed event.
fn profiling(ev: cl_event, what: u32) -> Option<u64> {
    // cl3 answers the profiling queries with its `Ulong` variant, so `to_ulong` cannot panic.
    get_event_profiling_info(ev, what).ok().map(|i| i.to_ulong())
}

/// The raw pointer of a wait list (null when empty, as OpenCL requires).
fn list_ptr(wait: &[cl_event]) -> *const cl_event {
    if wait.is_empty() {
        std::ptr::null()
    } else {
        wait.as_ptr()
    }
}

/// What an event's command was, for its error.
struct OpInfo {
    what: &'static str,
    bytes: u64,
    kernel: Option<Kernel>,
}

impl OpInfo {
    fn new(what: &'static str, bytes: usize) -> OpInfo {
        OpInfo {
            what,
            bytes: bytes as u64,
            kernel: None,
        }
    }
}

/// State shared by a queue and its events. Field order is drop order: the
/// command queue is released before the backend (and its context) may go.
pub(crate) struct QueueShared {
    queue: Queue,
    backend: Arc<OpenClBackend>,
    clock: Option<HostClock>,
    /// The kernel object slot this queue uses.
    slot: usize,
}

impl Drop for QueueShared {
    fn drop(&mut self) {
        // Nothing should be in flight (the queue finished when dropped, and every
        // event is gone), but release only an idle queue.
        if let Err(c) = finish(self.queue.raw()) {
            tracing::warn!(error = %code_name(c), "clFinish before releasing a command queue failed");
        }
    }
}

/// A native in-order OpenCL queue. See the module docs.
pub(crate) struct ClQueue {
    shared: Arc<QueueShared>,
}

impl Drop for ClQueue {
    fn drop(&mut self) {
        if let Err(c) = finish(self.shared.queue.raw()) {
            tracing::warn!(error = %code_name(c), "clFinish on a dropped queue failed");
        }
    }
}

/// Completion of one command of a [`ClQueue`].
pub(crate) struct ClEvent {
    ev: Event,
    queue: Arc<QueueShared>,
    op: OpInfo,
    /// The bytes a staged write reads, kept until the write has completed.
    staging: Option<Box<[u8]>>,
    /// The final status once observed (`PENDING` before).
    done: AtomicI32,
    /// Polls that found the command pending.
    polls: AtomicU32,
}

/// `ClEvent::done` before a final status was observed.
const PENDING: cl_int = cl_int::MAX;

impl ClEvent {
    fn new(ev: Event, queue: Arc<QueueShared>, op: OpInfo, staging: Option<Box<[u8]>>) -> Arc<ClEvent> {
        Arc::new(ClEvent {
            ev,
            queue,
            op,
            staging,
            done: AtomicI32::new(PENDING),
            polls: AtomicU32::new(0),
        })
    }

    /// `CL_EVENT_COMMAND_EXECUTION_STATUS`: `CL_COMPLETE` (0), a negative error, or
    /// a positive state before completion.
    /// A final status is kept, so later queries cost no driver call.
    fn status(&self) -> std::result::Result<cl_int, cl_int> {
        let known = self.done.load(Ordering::Acquire);
        if known <= CL_COMPLETE {
            return Ok(known);
        }
        // cl3 answers this query with its `Int` variant, so `to_int` cannot panic.
        let s = get_event_info(self.ev.raw(), CL_EVENT_COMMAND_EXECUTION_STATUS).map(|i| i.to_int())?;
        if s <= CL_COMPLETE {
            self.done.store(s, Ordering::Release);
        }
        Ok(s)
    }

    /// The error for status or error code `code`.
    fn error(&self, code: cl_int) -> Error {
        let info = &self.queue.backend.info;
        if code == CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST {
            return Error::DependencyFailed {
                cause: format!(
                    "{} on {}: a command it waited for failed ({})",
                    self.op.what,
                    info.label(),
                    code_name(code)
                ),
            };
        }
        let mut op = Op::new(self.op.what).bytes(self.op.bytes);
        if let Some(k) = &self.op.kernel {
            op = op.kernel(k.name());
        }
        map_cl_err(code, info, op)
    }
}

impl Drop for ClEvent {
    fn drop(&mut self) {
        // A staged write may still read its staging memory: free it only after.
        if self.staging.is_some() && !self.is_complete() {
            // After a failed wait, `clFinish` (as in `wait_or_finish`).
            let r = wait_for_events(&[self.ev.raw()]).or_else(|_| finish(self.queue.queue.raw()));
            if let Err(c) = r {
                tracing::warn!(error = %code_name(c), "waiting for a staged write before freeing it failed");
            }
        }
    }
}

impl RawEvent for ClEvent {
    fn wait(&self) -> Result<()> {
        match self.done.load(Ordering::Acquire) {
            CL_COMPLETE => return Ok(()),
            s if s < 0 => return Err(self.error(s)),
            _ => {}
        }
        let waited = wait_for_events(&[self.ev.raw()]);
        match (self.status(), waited) {
            // A failed command reports its own (negative) status; prefer that code.
            (Ok(s), _) if s < 0 => Err(self.error(s)),
            (_, Err(c)) => Err(self.error(c)),
            (_, Ok(())) => Ok(()),
        }
    }

    fn is_complete(&self) -> bool {
        match self.status() {
            Ok(s) if s <= CL_COMPLETE => true,
            Ok(_) => {
                // Polling must not spin on commands the driver has not been told to
                // start: flush from the second poll of a pending event on (not on the
                // first: the public layer polls the last writer of a buffer once per
                // new command, and a flush per command would slow long chains).
                if self.polls.fetch_add(1, Ordering::Relaxed) >= 1
                    && let Err(c) = flush(self.queue.queue.raw())
                {
                    tracing::debug!(error = %code_name(c), "clFlush while polling an event failed");
                }
                false
            }
            // No status: report it complete, so `wait` gives the error.
            Err(_) => true,
        }
    }

    fn times(&self) -> Option<EventTimes> {
        let clock = self.queue.clock?;
        let start = profiling(self.ev.raw(), CL_PROFILING_COMMAND_START)?;
        let end = profiling(self.ev.raw(), CL_PROFILING_COMMAND_END)?.max(start);
        let (mut s, mut e) = (clock.to_host(start), clock.to_host(end));
        let now = Instant::now();
        if e > now {
            let late = e - now;
            e = now;
            s = s.checked_sub(late).unwrap_or(s).min(e);
        }
        Some(EventTimes {
            start: s,
            end: e,
            device_clock: true,
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl ClQueue {
    /// A new queue on `backend`'s device.
    pub(crate) fn new(backend: Arc<OpenClBackend>) -> Result<ClQueue> {
        let queue = super::discover::create_queue(&backend.context, backend.device.0, backend.version)
            .map_err(|c| map_cl_err(c, &backend.info, Op::new("clCreateCommandQueue")))?;
        let clock = backend.host_clock(|| HostClock::calibrate(queue.raw()), RECALIBRATE_AFTER);
        let slot = backend.next_slot();
        Ok(ClQueue {
            shared: Arc::new(QueueShared {
                queue,
                backend,
                clock,
                slot,
            }),
        })
    }

    fn q(&self) -> cl_command_queue {
        self.shared.queue.raw()
    }

    fn b(&self) -> &OpenClBackend {
        &self.shared.backend
    }

    /// The buffer of `r`, with `r` inside it.
    fn mem<'a>(&self, r: MemRange<'a>) -> Result<&'a ClMemory> {
        let m = self.b().mem(r.mem)?;
        match r.offset.checked_add(r.len) {
            Some(end) if end <= r.mem.byte_len() => Ok(m),
            _ => Err(Error::InvalidInput(format!(
                "range {}..+{} outside an allocation of {} bytes",
                r.offset,
                r.len,
                r.mem.byte_len()
            ))),
        }
    }

    /// The wait list for `deps` (see the module docs): this device's events that
    /// may still run; foreign events are waited for here. A failed dependency is
    /// [`Error::DependencyFailed`].
    fn wait_list(&self, deps: &[Arc<dyn RawEvent>]) -> Result<Vec<cl_event>> {
        let mut list = Vec::new();
        let mut foreign = false;
        for d in deps {
            let Some(e) = self.own(d) else {
                foreign = true;
                continue;
            };
            match e.status() {
                Ok(s) if s < 0 => {
                    return Err(Error::DependencyFailed {
                        cause: e.error(s).to_string(),
                    });
                }
                Ok(CL_COMPLETE) => {}
                _ => {
                    if !Arc::ptr_eq(&e.queue, &self.shared)
                        && let Err(c) = flush(e.queue.queue.raw())
                    {
                        tracing::debug!(error = %code_name(c), "clFlush of a dependency's queue failed");
                    }
                    list.push(e.ev.raw());
                }
            }
        }
        if foreign {
            for d in deps.iter().filter(|d| self.own(d).is_none()) {
                if let Err(e) = d.wait() {
                    return Err(Error::DependencyFailed { cause: e.to_string() });
                }
            }
        }
        Ok(list)
    }

    /// `d` as an event of this device, if it is one.
    fn own<'a>(&self, d: &'a Arc<dyn RawEvent>) -> Option<&'a ClEvent> {
        d.as_any()
            .downcast_ref::<ClEvent>()
            .filter(|e| Arc::ptr_eq(&e.queue.backend, &self.shared.backend))
    }

    /// The event of an enqueue that succeeded with `raw`.
    fn event(&self, raw: cl_event, op: OpInfo, staging: Option<Box<[u8]>>) -> Arc<ClEvent> {
        // SAFETY: a successful enqueue returns an event with one reference, ours.
        ClEvent::new(unsafe { Event::from_raw(raw) }, self.shared.clone(), op, staging)
    }

    fn pending(&self, raw: cl_event, op: OpInfo, staging: Option<Box<[u8]>>) -> Completion {
        Completion::Pending(self.event(raw, op, staging))
    }

    /// An empty command after `wait` (a marker), for zero-byte transfers.
    fn marker(&self, wait: &[cl_event], what: &'static str) -> Result<Completion> {
        // SAFETY: a live queue; `wait` holds live events of this context.
        let ev = unsafe { enqueue_marker_with_wait_list(self.q(), wait.len() as u32, list_ptr(wait)) }
            .map_err(|c| map_cl_err(c, &self.b().info, Op::new("clEnqueueMarkerWithWaitList")))?;
        Ok(self.pending(ev, OpInfo::new(what, 0), None))
    }

    /// Wait for a transfer that uses borrowed host memory; after a failed wait,
    /// `clFinish` first (see [`wait_or_finish`]).
    fn settle(&self, ev: Arc<ClEvent>) -> Result<Completion> {
        let q = self.q();
        wait_or_finish(|| ev.wait(), || finish(q))?;
        Ok(Completion::Pending(ev))
    }

    fn write_direct(&self, m: &ClMemory, offset: usize, src: &[u8], wait: &[cl_event]) -> Result<Completion> {
        let op = Op::new("clEnqueueWriteBuffer").bytes(src.len() as u64);
        // SAFETY: the range is inside the buffer (checked); `src` stays borrowed and
        // unchanged until the copy is done: `settle` returns only after the event
        // completed or, if waiting failed, after `clFinish`.
        let ev = unsafe {
            enqueue_write_buffer(
                self.q(),
                m.raw(),
                CL_NON_BLOCKING,
                offset,
                src.len(),
                src.as_ptr().cast(),
                wait.len() as u32,
                list_ptr(wait),
            )
        }
        .map_err(|c| map_cl_err(c, &self.b().info, op))?;
        let ev = self.event(ev, OpInfo::new("clEnqueueWriteBuffer", src.len()), None);
        self.settle(ev)
    }

    fn write_staged(&self, m: &ClMemory, offset: usize, staging: Box<[u8]>, wait: &[cl_event]) -> Result<Completion> {
        let n = staging.len();
        let op = Op::new("clEnqueueWriteBuffer").bytes(n as u64);
        // SAFETY: the range is inside the buffer (checked by the caller); the staging
        // memory moves into the event (its heap block does not move) and is freed
        // only once the write has completed (see `ClEvent`'s `Drop`).
        let ev = unsafe {
            enqueue_write_buffer(
                self.q(),
                m.raw(),
                CL_NON_BLOCKING,
                offset,
                n,
                staging.as_ptr().cast(),
                wait.len() as u32,
                list_ptr(wait),
            )
        }
        .map_err(|c| map_cl_err(c, &self.b().info, op))?;
        Ok(self.pending(ev, OpInfo::new("clEnqueueWriteBuffer", n), Some(staging)))
    }
}

/// Whether `clEnqueueFillBuffer` takes this pattern at this offset and length.
fn native_fill(pattern: usize, offset: usize, len: usize) -> bool {
    pattern.is_power_of_two() && pattern <= 128 && offset.is_multiple_of(pattern) && len.is_multiple_of(pattern)
}

impl BackendQueue for ClQueue {
    fn write(&self, dst: MemRange<'_>, src: &[u8], deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        let m = self.mem(dst)?;
        if src.len() != dst.len {
            return Err(Error::InvalidInput(
                "write: host slice and range differ in length".into(),
            ));
        }
        let wait = self.wait_list(deps)?;
        if src.is_empty() {
            return self.marker(&wait, "clEnqueueWriteBuffer");
        }
        if src.len() > STAGE_MAX {
            return self.write_direct(m, dst.offset, src, &wait);
        }
        self.write_staged(m, dst.offset, src.into(), &wait)
    }

    fn write_owned(
        &self,
        dst: MemRange<'_>,
        src: &Arc<dyn HostMemory>,
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Completion> {
        let m = self.mem(dst)?;
        let s = host_ptr(src, 0, dst.len)?;
        let wait = self.wait_list(deps)?;
        if dst.len == 0 {
            return self.marker(&wait, "clEnqueueWriteBuffer");
        }
        let op = Op::new("clEnqueueWriteBuffer").bytes(dst.len as u64);
        // SAFETY: both ranges are checked; the caller keeps `src` alive and unwritten
        // until the event completes (the contract of `write_owned`).
        let ev = unsafe {
            enqueue_write_buffer(
                self.q(),
                m.raw(),
                CL_NON_BLOCKING,
                dst.offset,
                dst.len,
                s.cast_const().cast(),
                wait.len() as u32,
                list_ptr(&wait),
            )
        }
        .map_err(|c| map_cl_err(c, &self.b().info, op))?;
        Ok(self.pending(ev, OpInfo::new("clEnqueueWriteBuffer", dst.len), None))
    }

    fn read(&self, src: MemRange<'_>, dst: HostDst<'_>, deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        let m = self.mem(src)?;
        let (d, borrowed) = match dst {
            HostDst::Borrowed(b) => {
                if b.len() != src.len {
                    return Err(Error::InvalidInput(
                        "read: host slice and range differ in length".into(),
                    ));
                }
                (b.as_mut_ptr(), true)
            }
            HostDst::Owned(h, off) => (host_ptr(h, off, src.len)?, false),
        };
        let wait = self.wait_list(deps)?;
        if src.len == 0 {
            return self.marker(&wait, "clEnqueueReadBuffer");
        }
        let op = Op::new("clEnqueueReadBuffer").bytes(src.len as u64);
        // A borrowed slice stays exclusively borrowed until the copy is done (`settle`:
        // the event completed, or `clFinish` returned after a failed wait); owned memory
        // is kept alive and untouched by the caller until the event completes.
        // SAFETY: both ranges are checked, and the host memory outlives the copy (above).
        let ev = unsafe {
            enqueue_read_buffer(
                self.q(),
                m.raw(),
                CL_NON_BLOCKING,
                src.offset,
                src.len,
                d.cast(),
                wait.len() as u32,
                list_ptr(&wait),
            )
        }
        .map_err(|c| map_cl_err(c, &self.b().info, op))?;
        let ev = self.event(ev, OpInfo::new("clEnqueueReadBuffer", src.len), None);
        if borrowed {
            self.settle(ev)
        } else {
            Ok(Completion::Pending(ev))
        }
    }

    fn copy(&self, src: MemRange<'_>, dst: MemRange<'_>, deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        let s = self.mem(src)?;
        let d = self.mem(dst)?;
        if src.len != dst.len {
            return Err(Error::InvalidInput("copy: ranges differ in length".into()));
        }
        let wait = self.wait_list(deps)?;
        if src.len == 0 {
            return self.marker(&wait, "clEnqueueCopyBuffer");
        }
        let op = Op::new("clEnqueueCopyBuffer").bytes(src.len as u64);
        // SAFETY: both ranges are inside live buffers of this context (checked); the
        // caller keeps them alive until the event completes.
        let ev = unsafe {
            enqueue_copy_buffer(
                self.q(),
                s.raw(),
                d.raw(),
                src.offset,
                dst.offset,
                src.len,
                wait.len() as u32,
                list_ptr(&wait),
            )
        }
        .map_err(|c| map_cl_err(c, &self.b().info, op))?;
        Ok(self.pending(ev, OpInfo::new("clEnqueueCopyBuffer", src.len), None))
    }

    fn fill(&self, dst: MemRange<'_>, pattern: &[u8], deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        let m = self.mem(dst)?;
        check_fill(dst.len, pattern)?;
        let wait = self.wait_list(deps)?;
        if dst.len == 0 {
            return self.marker(&wait, "clEnqueueFillBuffer");
        }
        if !native_fill(pattern.len(), dst.offset, dst.len) {
            let staged: Box<[u8]> = pattern.iter().copied().cycle().take(dst.len).collect();
            if staged.len() > STAGE_MAX {
                return self.write_direct(m, dst.offset, &staged, &wait);
            }
            return self.write_staged(m, dst.offset, staged, &wait);
        }
        let op = Op::new("clEnqueueFillBuffer").bytes(dst.len as u64);
        // SAFETY: the range is inside the buffer (checked); the pattern is a supported
        // size dividing offset and length, and the driver copies it during the call.
        let ev = unsafe {
            enqueue_fill_buffer(
                self.q(),
                m.raw(),
                pattern.as_ptr().cast(),
                pattern.len(),
                dst.offset,
                dst.len,
                wait.len() as u32,
                list_ptr(&wait),
            )
        }
        .map_err(|c| map_cl_err(c, &self.b().info, op))?;
        Ok(self.pending(ev, OpInfo::new("clEnqueueFillBuffer", dst.len), None))
    }

    fn launch(
        &self,
        kernel: &Kernel,
        cfg: &LaunchConfig,
        args: &[RawArg<'_>],
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Completion> {
        let b = self.b();
        let built = b.built(kernel, "launch")?;
        let wait = self.wait_list(deps)?;
        let n = built.kernels.len().max(1);
        let slot = built
            .kernels
            .get(self.shared.slot % n)
            .ok_or_else(|| b.closed("launch"))?;
        let ev = {
            let mut k = slot.lock();
            launch::enqueue(b, self.q(), &mut k, kernel, cfg, args, &wait)?
        };
        // The event owns the handle from here (`Event` releases it; `ClEvent` takes a new one).
        let op = OpInfo {
            what: "kernel execution",
            bytes: launch::buffer_bytes(b, args),
            kernel: Some(kernel.clone()),
        };
        Ok(Completion::Pending(ClEvent::new(ev, self.shared.clone(), op, None)))
    }

    fn finish(&self) -> Result<()> {
        finish(self.q()).map_err(|c| map_cl_err(c, &self.b().info, Op::new("clFinish")))
    }
}

/// Host memory from a `CL_MEM_ALLOC_HOST_PTR` buffer, mapped for its whole life.
/// Field order: unmapped in `Drop`, then the queue, then the buffer released.
pub(crate) struct ClHostMemory {
    ptr: *mut u8,
    len: usize,
    /// A reference to the queue the buffer was mapped on (unmapped there).
    queue: Queue,
    mem: ClMemory,
}

// SAFETY: the mapping is plain host memory; the handles are thread-safe driver
// objects. Who may touch the bytes when is the public layer's business (a host
// buffer is owned by one transfer or one host user at a time).
unsafe impl Send for ClHostMemory {}
// SAFETY: as above.
unsafe impl Sync for ClHostMemory {}

impl ClHostMemory {
    /// `bytes` zeroed bytes aligned to `align.max(64)`, or `None` when the driver's
    /// mapping is not aligned so (the caller falls back to heap memory).
    pub(crate) fn alloc(b: &OpenClBackend, bytes: usize, align: usize) -> Result<Option<ClHostMemory>> {
        let mem = ClMemory::alloc_with(&b.context, &b.info, bytes, CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR)?;
        let (_guard, q) = b.take_queue("alloc_host")?;
        // SAFETY: `q` is live while the guard is held; the new reference is ours.
        unsafe { retain_command_queue(q) }.map_err(|c| map_cl_err(c, &b.info, Op::new("clRetainCommandQueue")))?;
        // SAFETY: we own the reference just taken.
        let queue = unsafe { Queue::from_raw(q) };
        let mut ptr = std::ptr::null_mut();
        let op = Op::new("clEnqueueMapBuffer").bytes(bytes as u64);
        // SAFETY: a blocking map of the whole (live) buffer; `ptr` receives the mapping.
        let ev = unsafe {
            enqueue_map_buffer(
                queue.raw(),
                mem.raw(),
                CL_BLOCKING,
                CL_MAP_READ | CL_MAP_WRITE,
                0,
                bytes.max(1),
                &mut ptr,
                0,
                std::ptr::null(),
            )
        }
        .map_err(|c| map_cl_err(c, &b.info, op))?;
        // SAFETY: a successful enqueue returns an event with one reference, ours.
        drop(unsafe { Event::from_raw(ev) });
        let host = ClHostMemory {
            ptr: ptr.cast(),
            len: bytes,
            queue,
            mem,
        };
        if host.ptr.is_null() || !(host.ptr as usize).is_multiple_of(align.max(64)) {
            return Ok(None);
        }
        // SAFETY: the mapping is `bytes` (at least) bytes of host memory, ours alone.
        unsafe { std::ptr::write_bytes(host.ptr, 0, bytes) };
        Ok(Some(host))
    }
}

impl Drop for ClHostMemory {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        let (q, m, p) = (self.queue.raw(), self.mem.raw(), self.ptr.cast());
        // SAFETY: `ptr` is the live mapping of `mem`, made on `queue`; nothing uses it
        // any more (the public layer drops host memory only after its transfers).
        let ev = unsafe { enqueue_unmap_mem_object(q, m, p, 0, std::ptr::null()) };
        match ev {
            Ok(ev) => {
                // SAFETY: a successful enqueue returns an event with one reference, ours.
                let ev = unsafe { Event::from_raw(ev) };
                if let Err(c) = wait_for_events(&[ev.raw()]) {
                    tracing::warn!(error = %code_name(c), "unmapping host memory failed");
                }
            }
            Err(c) => tracing::warn!(error = %code_name(c), "unmapping host memory failed"),
        }
    }
}

impl HostMemory for ClHostMemory {
    fn ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn byte_len(&self) -> usize {
        self.len
    }
    fn pinned(&self) -> bool {
        true
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
