//! Native asynchronous queues: one CUDA stream per queue, one pair of CUDA
//! events per command.
//!
//! A [`Stream`] owns a non-blocking `CUstream` created with its device's context
//! current; `Drop` makes the context current, synchronises the stream and
//! destroys it. Every command is enqueued under the stream's lock as:
//! dependencies (`cuStreamWaitEvent`), a *start* event, the command itself, an
//! *end* event; it returns a [`StreamEvent`] owning both events.
//!
//! * **Dependencies.** Events of this backend on the same context are waited for
//!   on the device (`cuStreamWaitEvent`, after a `cuEventQuery`: one that already
//!   failed fails the command with [`Error::DependencyFailed`]). Every other event
//!   (another backend's, or a CUDA event of another device, whose failure a
//!   device-side wait could not see) is waited for on the host before the command
//!   is enqueued ([`wait_all`]): simple, and correct for any backend. This is done
//!   before the stream's lock is taken, so a slow foreign dependency never blocks
//!   other threads' commands on this queue.
//! * **Host memory.** A `&[u8]` write is copied into pinned staging blocks (see
//!   `staging.rs`) before the call returns, then DMA'd with `cuMemcpyHtoDAsync`.
//!   The blocks belong to the stream and are reused only after the event recorded
//!   behind their DMA has completed. A borrowed read is DMA'd into staging blocks
//!   and copied out as each piece completes; the call returns when all bytes are
//!   in place. Owned host memory is copied to and from directly
//!   (`cuMemcpyHtoDAsync`/`cuMemcpyDtoHAsync`); the public layer keeps it alive.
//! * **Retention.** Staging blocks and the loaded module of each launched kernel
//!   are kept by the stream until the event behind their last use has completed
//!   (checked with `cuEventQuery` on later commands, or when `Drop` synchronises),
//!   so dropping a `Kernel` with launches in flight never unloads its module.
//!   Device allocations are kept alive by the public layer, not here.
//! * **Times.** Each stream records a *reference* event at a known host instant:
//!   the stream is idle (just created, or its newest command complete, under the
//!   lock), the event is recorded and synchronised, and `Instant::now()` is taken
//!   right after. A command's start on the host clock is that instant plus
//!   `cuEventElapsedTime(reference, start)`, its end the start plus
//!   `cuEventElapsedTime(start, end)` (so a duration is exact to the event
//!   resolution, about half a microsecond). The host instant is taken a few
//!   microseconds after the device passed the reference, so mapped times may be
//!   late by that much, never early. The reference is renewed at most once a
//!   second, when a command finds the stream idle, so the single-precision
//!   milliseconds of `cuEventElapsedTime` stay fine-grained on long-lived queues.
//! * **Events** make their context current before every driver call; a driver
//!   error from `cuEventSynchronize` (e.g. a fault in the kernel) becomes a typed
//!   crate error naming the command. CUDA events are pooled per device and reused
//!   once their [`StreamEvent`] is dropped (a later record does not affect waits
//!   enqueued earlier: `cuStreamWaitEvent` waits for the record current at the call).

use std::any::Any;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cudarc::driver::sys::{CUdeviceptr, CUevent, CUevent_flags, CUevent_wait_flags, CUresult, CUstream};
use cudarc::driver::{CudaContext, DriverError, result};
use parking_lot::Mutex;

use super::error::map_driver_err;
use super::launch::Prepared;
use super::memory::{bind, bind_quietly};
use super::module::Built;
use super::staging::{BUDGET, CHUNK, MIN_BLOCK, Pinned, fill_pattern, host_copy};
use super::{CudaBackend, CudaMemory};
use crate::backend::RawArg;
use crate::backend::queue::{
    BackendQueue, Completion, EventTimes, HostDst, HostMemory, MemRange, RawEvent, check_fill, host_bytes, wait_all,
};
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::launch::LaunchConfig;

/// Idle CUDA events kept per device for reuse.
const POOLED_EVENTS: usize = 4096;
/// Renew a stream's reference event when it is older than this (and the stream idle).
const REANCHOR_AFTER: Duration = Duration::from_secs(1);
/// Check the retained list for completed entries once it is this long.
const RECLAIM_AT: usize = 32;

/// Idle CUDA events of one context (created with timing enabled).
pub(crate) struct EventPool {
    ctx: Arc<CudaContext>,
    free: Mutex<Vec<CUevent>>,
}

// SAFETY: `CUevent` handles are plain driver handles, usable from any thread
// with their context current; the list is behind a mutex and each handle has
// one owner (the pool, or one `Ev`).
unsafe impl Send for EventPool {}
// SAFETY: as above.
unsafe impl Sync for EventPool {}

impl EventPool {
    pub(crate) fn new(ctx: Arc<CudaContext>) -> Arc<EventPool> {
        Arc::new(EventPool {
            ctx,
            free: Mutex::new(Vec::new()),
        })
    }

    /// An event: an idle one from the pool, or a new one (`cuEventCreate`).
    fn get(self: &Arc<Self>) -> std::result::Result<Ev, DriverError> {
        if let Some(raw) = self.free.lock().pop() {
            return Ok(Ev {
                raw,
                pool: self.clone(),
            });
        }
        bind(&self.ctx)?;
        let raw = result::event::create(CUevent_flags::CU_EVENT_DEFAULT)?;
        Ok(Ev {
            raw,
            pool: self.clone(),
        })
    }
}

impl Drop for EventPool {
    fn drop(&mut self) {
        bind_quietly(&self.ctx);
        for e in self.free.get_mut().drain(..) {
            // SAFETY: each pooled handle was created by `cuEventCreate` and has no
            // other owner; it is destroyed exactly once.
            self.ctx.record_err(unsafe { result::event::destroy(e) });
        }
    }
}

/// One CUDA event, owned; back to its pool on drop.
pub(crate) struct Ev {
    raw: CUevent,
    pool: Arc<EventPool>,
}

// SAFETY: see `EventPool`; the handle has this one owner.
unsafe impl Send for Ev {}
// SAFETY: shared references only pass the handle to thread-safe driver calls.
unsafe impl Sync for Ev {}

impl Drop for Ev {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock();
        if free.len() < POOLED_EVENTS {
            free.push(self.raw);
            return;
        }
        drop(free);
        bind_quietly(&self.pool.ctx);
        // SAFETY: created by `cuEventCreate`, owned by this value only. Destroying an
        // event that is still pending is allowed: the driver releases it on completion.
        self.pool.ctx.record_err(unsafe { result::event::destroy(self.raw) });
    }
}

/// A stream's reference event and the host instant it completed at.
struct Anchor {
    ev: Ev,
    host: Instant,
}

/// What a stream keeps until the device has passed the event stored with it.
enum Retained {
    /// A staging block a DMA reads or writes.
    Staging(Pinned),
    /// The module of a launched kernel.
    Module(Arc<Built>),
}

/// What a command hands to the stream to keep until its end event completes.
enum Keep {
    Nothing,
    Module(Arc<Built>),
    Blocks(Vec<Pinned>),
}

/// The state of a stream, changed only under its lock.
struct State {
    anchor: Arc<Anchor>,
    /// Staging blocks no DMA uses.
    free: Vec<Pinned>,
    /// Bytes of every staging block of this stream (free or in flight).
    staged: usize,
    /// Kept until the device passes the event (oldest first: events of one stream
    /// complete in order).
    retained: VecDeque<(Arc<Ev>, Retained)>,
    /// End event of the newest command.
    last: Option<Arc<Ev>>,
}

impl State {
    /// Release retained entries whose event has completed.
    fn reclaim(&mut self) -> std::result::Result<(), DriverError> {
        while let Some((ev, _)) = self.retained.front() {
            // SAFETY: a live event of this context (owned by the entry); the context is
            // current (the caller bound it).
            match unsafe { result::event::query(ev.raw) } {
                Ok(()) => {
                    if let Some((_, Retained::Staging(b))) = self.retained.pop_front() {
                        self.free.push(b);
                    }
                }
                Err(e) if e.0 == CUresult::CUDA_ERROR_NOT_READY => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Keep `item` until `ev` completes (one entry per run of launches of one kernel).
    fn retain(&mut self, ev: &Arc<Ev>, item: Retained) {
        if let (Retained::Module(m), Some((back_ev, Retained::Module(back)))) = (&item, self.retained.back_mut())
            && Arc::ptr_eq(m, back)
        {
            *back_ev = ev.clone();
            return;
        }
        self.retained.push_back((ev.clone(), item));
    }

    /// A free staging block of at least `len` bytes, allocated within the budget;
    /// `None` when blocks in flight hold the budget.
    fn try_block(&mut self, ctx: &Arc<CudaContext>, len: usize, device: &str) -> Result<Option<Pinned>> {
        self.reclaim()
            .map_err(|e| map_driver_err(e, device, "cuEventQuery", ""))?;
        let fit = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = fit {
            return Ok(Some(self.free.swap_remove(i)));
        }
        let size = len.max(MIN_BLOCK).next_power_of_two();
        if self.staged + size > BUDGET && !self.free.is_empty() {
            // The free blocks are all too small for this piece: release them for room.
            for b in self.free.drain(..) {
                self.staged -= b.capacity();
            }
        }
        if self.staged + size > BUDGET {
            return Ok(None);
        }
        let b =
            Pinned::alloc(ctx, size).map_err(|e| staging_err(e, device, "allocating page-locked staging memory"))?;
        self.staged += b.capacity();
        Ok(Some(b))
    }

    /// Wait for the oldest retained entry and recycle it; `false` if there is none.
    fn wait_oldest(&mut self) -> std::result::Result<bool, DriverError> {
        let Some((ev, item)) = self.retained.pop_front() else {
            return Ok(false);
        };
        // SAFETY: a live event of this context; the context is current.
        if let Err(e) = unsafe { result::event::synchronize(ev.raw) } {
            self.retained.push_front((ev, item));
            return Err(e);
        }
        if let Retained::Staging(b) = item {
            self.free.push(b);
        }
        Ok(true)
    }
}

/// Pinned staging memory could not be had (host memory, not device memory).
fn staging_err(e: DriverError, device: &str, what: &str) -> Error {
    Error::Driver {
        backend: crate::BackendKind::Cuda,
        device: device.to_string(),
        operation: what.to_string(),
        message: super::error::describe(e),
    }
}

/// A `CUstream` owned: synchronised and destroyed in `Drop`, context current.
struct RawStream {
    ctx: Arc<CudaContext>,
    raw: CUstream,
}

impl Drop for RawStream {
    fn drop(&mut self) {
        bind_quietly(&self.ctx);
        // SAFETY: the stream was created by `cuStreamCreate` in this context and is
        // destroyed exactly once, here, after its work completed (synchronised first,
        // so the staging memory and modules the owner frees next are no longer used).
        unsafe {
            self.ctx.record_err(result::stream::synchronize(self.raw));
            self.ctx.record_err(result::stream::destroy(self.raw));
        }
    }
}

// SAFETY: a stream handle is usable from any thread with its context current; it
// has one owner.
unsafe impl Send for RawStream {}
// SAFETY: shared use passes the handle to thread-safe driver calls; enqueues are
// serialised by the owning `Stream`'s lock.
unsafe impl Sync for RawStream {}

/// One CUDA stream with its staging memory and retained resources.
pub(crate) struct Stream {
    /// Declared first: dropped (synchronised, destroyed) before the staging memory.
    stream: RawStream,
    ctx: Arc<CudaContext>,
    events: Arc<EventPool>,
    device: Arc<str>,
    state: Mutex<State>,
}

impl Stream {
    /// A new non-blocking stream of `ctx` and its reference event.
    pub(crate) fn new(ctx: &Arc<CudaContext>, events: &Arc<EventPool>, device: &Arc<str>) -> Result<Stream> {
        let fail = |e: DriverError, op: &str| map_driver_err(e, device, op, "");
        bind(ctx).map_err(|e| fail(e, "cuCtxSetCurrent"))?;
        let raw =
            result::stream::create(result::stream::StreamKind::NonBlocking).map_err(|e| fail(e, "cuStreamCreate"))?;
        let stream = RawStream { ctx: ctx.clone(), raw };
        let anchor = anchor(events, stream.raw).map_err(|e| fail(e, "recording the reference event"))?;
        Ok(Stream {
            stream,
            ctx: ctx.clone(),
            events: events.clone(),
            device: device.clone(),
            state: Mutex::new(State {
                anchor: Arc::new(anchor),
                free: Vec::new(),
                staged: 0,
                retained: VecDeque::new(),
                last: None,
            }),
        })
    }

    fn err(&self, e: DriverError, op: &str, kernel: &str) -> Error {
        map_driver_err(e, &self.device, op, kernel)
    }

    /// Enqueue one command: dependencies, start event, `op`, end event.
    ///
    /// `op` runs under the stream's lock with the context current; on error it
    /// must leave nothing in flight that uses memory it frees (it synchronises).
    fn enqueue(
        &self,
        deps: &[Arc<dyn RawEvent>],
        op_name: &'static str,
        kernel: &str,
        op: impl FnOnce(&mut State, CUstream) -> Result<Keep>,
    ) -> Result<Arc<StreamEvent>> {
        // Foreign dependencies: wait on the host, before taking the lock.
        let mut native: Vec<&StreamEvent> = Vec::new();
        for d in deps {
            match d.as_any().downcast_ref::<StreamEvent>() {
                Some(e) if e.ctx.cu_ctx() == self.ctx.cu_ctx() => native.push(e),
                _ => wait_all(std::slice::from_ref(d))?,
            }
        }
        let start = self.events.get().map_err(|e| self.err(e, "cuEventCreate", kernel))?;
        let end = self.events.get().map_err(|e| self.err(e, "cuEventCreate", kernel))?;
        let stream = self.stream.raw;
        let mut st = self.state.lock();
        bind(&self.ctx).map_err(|e| self.err(e, "cuCtxSetCurrent", kernel))?;
        if st.retained.len() >= RECLAIM_AT {
            st.reclaim().map_err(|e| self.err(e, "cuEventQuery", kernel))?;
        }
        self.maybe_reanchor(&mut st)
            .map_err(|e| self.err(e, "recording the reference event", kernel))?;
        for d in native {
            // SAFETY: `d.end` is a live event of this context (owned by `d`), `stream` a
            // live stream of it; the context is current.
            match unsafe { result::event::query(d.end.raw) } {
                Ok(()) => {}
                Err(e) if e.0 == CUresult::CUDA_ERROR_NOT_READY => {
                    // SAFETY: as above.
                    unsafe { result::stream::wait_event(stream, d.end.raw, CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT) }
                        .map_err(|e| self.err(e, "cuStreamWaitEvent", kernel))?
                }
                Err(e) => {
                    return Err(Error::DependencyFailed {
                        cause: d.error(e).to_string(),
                    });
                }
            }
        }
        // SAFETY: live event and stream of this context, context current.
        unsafe { result::event::record(start.raw, stream) }.map_err(|e| self.err(e, "cuEventRecord", kernel))?;
        let keep = op(&mut st, stream)?;
        // SAFETY: as above.
        if let Err(e) = unsafe { result::event::record(end.raw, stream) } {
            // Nothing may still use what `keep` holds when it is dropped.
            // SAFETY: live stream of this context, context current.
            let _ = unsafe { result::stream::synchronize(stream) };
            return Err(self.err(e, "cuEventRecord", kernel));
        }
        let end = Arc::new(end);
        match keep {
            Keep::Nothing => {}
            Keep::Module(m) => st.retain(&end, Retained::Module(m)),
            Keep::Blocks(v) => {
                for b in v {
                    st.retain(&end, Retained::Staging(b));
                }
            }
        }
        st.last = Some(end.clone());
        let anchor = st.anchor.clone();
        drop(st);
        Ok(Arc::new(StreamEvent {
            ctx: self.ctx.clone(),
            start,
            end,
            anchor,
            device: self.device.clone(),
            op: op_name,
            kernel: kernel.to_string(),
            times: OnceLock::new(),
        }))
    }

    /// Renew the reference event when it is old and the stream idle (lock held,
    /// context current).
    fn maybe_reanchor(&self, st: &mut State) -> std::result::Result<(), DriverError> {
        if st.anchor.host.elapsed() < REANCHOR_AFTER {
            return Ok(());
        }
        if let Some(last) = &st.last {
            // SAFETY: a live event of this context; the context is current.
            match unsafe { result::event::query(last.raw) } {
                Ok(()) => {}
                // Busy (or failed): keep the current reference.
                Err(_) => return Ok(()),
            }
        }
        st.anchor = Arc::new(anchor(&self.events, self.stream.raw)?);
        Ok(())
    }

    /// Host → device from `src`, staged through pinned blocks.
    pub(crate) fn write(
        &self,
        b: &CudaBackend,
        dst: MemRange<'_>,
        src: &[u8],
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Arc<StreamEvent>> {
        let at = target(b, dst, src.len(), "CUDA write")?;
        let pool = b.copy_pool(src.len());
        self.enqueue(deps, "host-to-device copy", "", |st, stream| {
            self.staged_write(st, stream, at, src.len(), CHUNK, |off, block| {
                host_copy(pool, src[off..].as_ptr(), block.as_mut_ptr(), block.len())
            })
        })
    }

    /// Copy `len` bytes to device address `at` through staging blocks filled by
    /// `fill(offset, block)`, in pieces of at most `piece` bytes.
    fn staged_write(
        &self,
        st: &mut State,
        stream: CUstream,
        at: CUdeviceptr,
        len: usize,
        piece: usize,
        fill: impl Fn(usize, &mut [u8]),
    ) -> Result<Keep> {
        let mut local: Vec<Pinned> = Vec::new();
        let r = (|| -> Result<()> {
            let drv = |e: DriverError, op: &str| self.err(e, op, "");
            let mut off = 0;
            while off < len {
                let n = piece.min(len - off);
                let block = loop {
                    if let Some(b) = st.try_block(&self.ctx, n, &self.device)? {
                        break b;
                    }
                    if !local.is_empty() {
                        // This command's own earlier pieces: mark where their DMA ends.
                        let ev = Arc::new(self.events.get().map_err(|e| drv(e, "cuEventCreate"))?);
                        // SAFETY: live event and stream of this context, context current.
                        unsafe { result::event::record(ev.raw, stream) }.map_err(|e| drv(e, "cuEventRecord"))?;
                        for b in local.drain(..) {
                            st.retained.push_back((ev.clone(), Retained::Staging(b)));
                        }
                    }
                    if !st.wait_oldest().map_err(|e| drv(e, "host-to-device copy"))? {
                        // Nothing in flight holds the budget (cannot happen): allocate.
                        let b = Pinned::alloc(&self.ctx, n)
                            .map_err(|e| staging_err(e, &self.device, "allocating page-locked staging memory"))?;
                        st.staged += b.capacity();
                        break b;
                    }
                };
                // SAFETY: the block has at least `n` bytes and no DMA uses it (it is free,
                // new, or its event completed); this thread holds the stream's lock.
                let bytes = unsafe { std::slice::from_raw_parts_mut(block.as_ptr(), n) };
                fill(off, bytes);
                local.push(block);
                // SAFETY: `bytes` stays allocated and untouched until the event recorded
                // after this copy completes (the block is retained until then);
                // `at + off .. + n` lies inside the destination allocation (checked).
                unsafe { result::memcpy_htod_async(at + off as u64, &*bytes, stream) }
                    .map_err(|e| drv(e, "cuMemcpyHtoDAsync"))?;
                off += n;
                if off < len {
                    // More pieces follow: release this block as soon as its own DMA is done
                    // (the last one is released by the command's end event).
                    let ev = Arc::new(self.events.get().map_err(|e| drv(e, "cuEventCreate"))?);
                    // SAFETY: live event and stream of this context, context current.
                    unsafe { result::event::record(ev.raw, stream) }.map_err(|e| drv(e, "cuEventRecord"))?;
                    for b in local.drain(..) {
                        st.retained.push_back((ev.clone(), Retained::Staging(b)));
                    }
                }
            }
            Ok(())
        })();
        match r {
            Ok(()) => Ok(Keep::Blocks(local)),
            Err(e) => {
                // SAFETY: live stream of this context, context current. No DMA may still
                // read the blocks when they are dropped.
                let _ = unsafe { result::stream::synchronize(stream) };
                Err(e)
            }
        }
    }

    /// Host → device from owned host memory (its first `dst.len` bytes).
    pub(crate) fn write_owned(
        &self,
        b: &CudaBackend,
        dst: MemRange<'_>,
        src: &Arc<dyn HostMemory>,
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Arc<StreamEvent>> {
        let bytes = host_bytes(src, 0, dst.len)?;
        let at = target(b, dst, dst.len, "CUDA write")?;
        self.enqueue(deps, "host-to-device copy", "", |_, stream| {
            if dst.len > 0 {
                // SAFETY: `bytes` is host memory the caller keeps alive and unwritten
                // until this command's event completes; `at .. + len` lies inside the
                // destination allocation (checked); stream of this context, current.
                unsafe { result::memcpy_htod_async(at, bytes, stream) }
                    .map_err(|e| self.err(e, "cuMemcpyHtoDAsync", ""))?;
            }
            Ok(Keep::Nothing)
        })
    }

    /// Device → host.
    pub(crate) fn read(
        &self,
        b: &CudaBackend,
        src: MemRange<'_>,
        dst: HostDst<'_>,
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Arc<StreamEvent>> {
        let at = target(b, src, src.len, "CUDA read")?;
        match dst {
            HostDst::Owned(h, off) => {
                let bytes = host_bytes(h, off, src.len)?;
                let ptr = bytes.as_ptr() as *mut u8;
                self.enqueue(deps, "device-to-host copy", "", |_, stream| {
                    if src.len > 0 {
                        // SAFETY: the caller owns this host memory exclusively and keeps it
                        // alive until this command's event completes (the public layer took
                        // the host buffer by value); `ptr .. + len` lies inside it.
                        let out = unsafe { std::slice::from_raw_parts_mut(ptr, src.len) };
                        // SAFETY: as above; `at .. + len` lies inside the source allocation;
                        // stream of this context, current.
                        unsafe { result::memcpy_dtoh_async(out, at, stream) }
                            .map_err(|e| self.err(e, "cuMemcpyDtoHAsync", ""))?;
                    }
                    Ok(Keep::Nothing)
                })
            }
            HostDst::Borrowed(out) => {
                if out.len() != src.len {
                    return Err(Error::LengthMismatch {
                        what: format!("CUDA read on {}", self.device),
                        host: out.len(),
                        buffer: src.len,
                    });
                }
                let pool = b.copy_pool(out.len());
                let ev = self.enqueue(deps, "device-to-host copy", "", |st, stream| {
                    self.staged_read(st, stream, at, out, pool)
                })?;
                // Complete before returning: every piece is already copied out; the end
                // event follows at once.
                ev.wait()?;
                Ok(ev)
            }
        }
    }

    /// Device → host into `out` through staging blocks, piece by piece; every byte
    /// is in `out` when this returns `Ok`.
    fn staged_read(
        &self,
        st: &mut State,
        stream: CUstream,
        at: CUdeviceptr,
        out: &mut [u8],
        pool: Option<&crate::backend::cpu::pool::Pool>,
    ) -> Result<Keep> {
        let len = out.len();
        // Pieces in flight: block, event behind its DMA, offset, length.
        let mut window: VecDeque<(Pinned, Ev, usize, usize)> = VecDeque::new();
        let r = (|| -> Result<()> {
            let drv = |e: DriverError, op: &str| self.err(e, op, "");
            let drain = |w: (Pinned, Ev, usize, usize), st: &mut State, out: &mut [u8]| -> Result<()> {
                let (block, ev, off, n) = w;
                // SAFETY: a live event of this context; the context is current.
                let synced = unsafe { result::event::synchronize(ev.raw) };
                if let Err(e) = synced {
                    st.free.push(block);
                    return Err(drv(e, "device-to-host copy"));
                }
                host_copy(pool, block.as_ptr(), out[off..off + n].as_mut_ptr(), n);
                st.free.push(block);
                Ok(())
            };
            let mut off = 0;
            while off < len {
                let n = CHUNK.min(len - off);
                let block = loop {
                    if let Some(b) = st.try_block(&self.ctx, n, &self.device)? {
                        break b;
                    }
                    if let Some(w) = window.pop_front() {
                        drain(w, st, out)?;
                        continue;
                    }
                    if !st.wait_oldest().map_err(|e| drv(e, "device-to-host copy"))? {
                        // Nothing in flight holds the budget (cannot happen): allocate.
                        let b = Pinned::alloc(&self.ctx, n)
                            .map_err(|e| staging_err(e, &self.device, "allocating page-locked staging memory"))?;
                        st.staged += b.capacity();
                        break b;
                    }
                };
                // SAFETY: the block has at least `n` bytes and no DMA uses it; it stays
                // in `window` (alive, untouched by the host) until its event completes.
                let piece = unsafe { std::slice::from_raw_parts_mut(block.as_ptr(), n) };
                let ev = match self.events.get() {
                    Ok(ev) => ev,
                    Err(e) => {
                        st.free.push(block);
                        return Err(drv(e, "cuEventCreate"));
                    }
                };
                // SAFETY: `at + off .. + n` lies inside the source allocation (checked);
                // stream and event of this context, context current.
                let queued = unsafe { result::memcpy_dtoh_async(piece, at + off as u64, stream) }
                    .map_err(|e| drv(e, "cuMemcpyDtoHAsync"))
                    .and_then(|()| {
                        // SAFETY: an event and a stream of this context, which is current.
                        unsafe { result::event::record(ev.raw, stream) }.map_err(|e| drv(e, "cuEventRecord"))
                    });
                window.push_back((block, ev, off, n));
                queued?;
                off += n;
            }
            while let Some(w) = window.pop_front() {
                drain(w, st, out)?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => Ok(Keep::Nothing),
            Err(e) => {
                // SAFETY: live stream of this context, context current. No DMA may still
                // write the blocks when they are reused or dropped.
                let _ = unsafe { result::stream::synchronize(stream) };
                for (b, ..) in window.drain(..) {
                    st.free.push(b);
                }
                Err(e)
            }
        }
    }

    /// Device → device on this device.
    pub(crate) fn copy(
        &self,
        b: &CudaBackend,
        src: MemRange<'_>,
        dst: MemRange<'_>,
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Arc<StreamEvent>> {
        if src.len != dst.len {
            return Err(Error::LengthMismatch {
                what: format!("CUDA device-to-device copy on {}", self.device),
                host: src.len,
                buffer: dst.len,
            });
        }
        let from = target(b, src, src.len, "CUDA copy source")?;
        let to = target(b, dst, dst.len, "CUDA copy destination")?;
        self.enqueue(deps, "device-to-device copy", "", |_, stream| {
            if src.len > 0 {
                // SAFETY: both ranges lie inside live allocations of this device (checked;
                // kept alive by the public layer until the event completes); stream of
                // this context, current.
                unsafe { result::memcpy_dtod_async(to, from, src.len, stream) }
                    .map_err(|e| self.err(e, "cuMemcpyDtoDAsync", ""))?;
            }
            Ok(Keep::Nothing)
        })
    }

    /// Fill `dst` with `pattern` repeated: `cuMemsetD8/D16/D32Async` when the
    /// pattern repeats a 1-, 2- or 4-byte unit and the range is aligned to it, a
    /// staged write of the repeated pattern otherwise.
    pub(crate) fn fill(
        &self,
        b: &CudaBackend,
        dst: MemRange<'_>,
        pattern: &[u8],
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Arc<StreamEvent>> {
        check_fill(dst.len, pattern)?;
        let at = target(b, dst, dst.len, "CUDA fill")?;
        let unit = [1usize, 2, 4].into_iter().find(|&u| {
            pattern.len().is_multiple_of(u)
                && pattern.chunks(u).all(|c| c == &pattern[..u])
                && at.is_multiple_of(u as u64)
                && dst.len.is_multiple_of(u)
        });
        let len = dst.len;
        match unit {
            Some(u) => self.enqueue(deps, "fill", "", |_, stream| {
                if len > 0 {
                    let n = len / u;
                    // SAFETY: `at .. + len` lies inside a live allocation of this device
                    // (checked), aligned to the unit; stream of this context, current.
                    let r = unsafe {
                        match u {
                            1 => cudarc::driver::sys::cuMemsetD8Async(at, pattern[0], n, stream),
                            2 => cudarc::driver::sys::cuMemsetD16Async(
                                at,
                                u16::from_ne_bytes([pattern[0], pattern[1]]),
                                n,
                                stream,
                            ),
                            _ => cudarc::driver::sys::cuMemsetD32Async(
                                at,
                                u32::from_ne_bytes([pattern[0], pattern[1], pattern[2], pattern[3]]),
                                n,
                                stream,
                            ),
                        }
                    };
                    r.result().map_err(|e| self.err(e, "cuMemsetAsync", ""))?;
                }
                Ok(Keep::Nothing)
            }),
            None => {
                // Pieces hold whole patterns, so every piece starts at phase 0.
                let piece = (CHUNK / pattern.len()) * pattern.len();
                self.enqueue(deps, "fill", "", |st, stream| {
                    self.staged_write(st, stream, at, len, piece, |_, block| fill_pattern(block, pattern))
                })
            }
        }
    }

    /// Launch a prepared kernel.
    pub(crate) fn launch(
        &self,
        kernel: &Kernel,
        mut prep: Prepared,
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Arc<StreamEvent>> {
        self.enqueue(deps, "kernel execution", kernel.name(), |_, stream| {
            // SAFETY: `stream` is this context's, current on this thread (bound by
            // `enqueue`); the public layer keeps every buffer argument alive until the
            // event completes, and the stream retains the module (`Keep::Module`).
            unsafe { prep.enqueue(stream) }.map_err(|e| self.err(e, "cuLaunchKernel", kernel.name()))?;
            Ok(Keep::Module(prep.built.clone()))
        })
    }

    /// Block until every command enqueued so far has completed.
    pub(crate) fn finish(&self) -> Result<()> {
        bind(&self.ctx).map_err(|e| self.err(e, "cuCtxSetCurrent", ""))?;
        // SAFETY: live stream of this context, current on this thread.
        unsafe { result::stream::synchronize(self.stream.raw) }.map_err(|e| self.err(e, "cuStreamSynchronize", ""))?;
        let mut st = self.state.lock();
        bind(&self.ctx).map_err(|e| self.err(e, "cuCtxSetCurrent", ""))?;
        st.reclaim().map_err(|e| self.err(e, "cuEventQuery", ""))?;
        self.maybe_reanchor(&mut st)
            .map_err(|e| self.err(e, "recording the reference event", ""))
    }
}

/// Record a reference event on the idle `stream`, wait for it, and note the host instant.
fn anchor(events: &Arc<EventPool>, stream: CUstream) -> std::result::Result<Anchor, DriverError> {
    let ev = events.get()?;
    // SAFETY: live event and stream of the current context.
    unsafe { result::event::record(ev.raw, stream) }?;
    // SAFETY: as above.
    unsafe { result::event::synchronize(ev.raw) }?;
    Ok(Anchor {
        ev,
        host: Instant::now(),
    })
}

/// The device address of `r.offset` in `r.mem` after checking that `len` bytes
/// from there lie inside it and that the memory is this device's.
fn target(b: &CudaBackend, r: MemRange<'_>, len: usize, what: &str) -> Result<CUdeviceptr> {
    let m: &CudaMemory = b.cuda_mem(r.mem)?;
    b.check_range(what, m, r.offset, len)?;
    Ok(m.device_ptr() + r.offset as u64)
}

/// The completion of one command on a stream: its start and end events.
pub(crate) struct StreamEvent {
    ctx: Arc<CudaContext>,
    start: Ev,
    end: Arc<Ev>,
    anchor: Arc<Anchor>,
    device: Arc<str>,
    op: &'static str,
    kernel: String,
    times: OnceLock<EventTimes>,
}

impl StreamEvent {
    fn error(&self, e: DriverError) -> Error {
        map_driver_err(e, &self.device, self.op, &self.kernel)
    }

    /// Device duration in nanoseconds once complete.
    pub(crate) fn device_ns(&self) -> Option<u64> {
        self.times()
            .map(|t| t.end.saturating_duration_since(t.start).as_nanos() as u64)
    }
}

/// Milliseconds from `cuEventElapsedTime` as a duration (negative clamps to zero).
fn ms(v: f32) -> Duration {
    Duration::from_secs_f64((v.max(0.0) as f64) / 1e3)
}

impl RawEvent for StreamEvent {
    fn wait(&self) -> Result<()> {
        bind(&self.ctx).map_err(|e| self.error(e))?;
        // SAFETY: a live event of this context, current on this thread.
        unsafe { result::event::synchronize(self.end.raw) }.map_err(|e| self.error(e))
    }

    fn is_complete(&self) -> bool {
        if bind(&self.ctx).is_err() {
            // The context is unusable: `wait` reports it.
            return true;
        }
        // SAFETY: a live event of this context, current on this thread.
        match unsafe { result::event::query(self.end.raw) } {
            Ok(()) => true,
            Err(e) => e.0 != CUresult::CUDA_ERROR_NOT_READY,
        }
    }

    fn times(&self) -> Option<EventTimes> {
        if let Some(t) = self.times.get() {
            return Some(*t);
        }
        bind(&self.ctx).ok()?;
        // SAFETY: live events of this context, current on this thread, all created
        // with timing enabled and recorded on the same stream, reference first.
        let t = unsafe {
            // Fails with CUDA_ERROR_NOT_READY until `end` (hence `start`) completed.
            let dur = result::event::elapsed(self.start.raw, self.end.raw).ok()?;
            let to_start = result::event::elapsed(self.anchor.ev.raw, self.start.raw).ok()?;
            let start = self.anchor.host + ms(to_start);
            EventTimes {
                start,
                end: start + ms(dur),
                device_clock: true,
            }
        };
        Some(*self.times.get_or_init(|| t))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The public queue: a stream of one device.
pub(crate) struct CudaQueue {
    /// Declared first: synchronised and destroyed before the backend reference goes.
    stream: Stream,
    backend: Arc<CudaBackend>,
}

impl CudaQueue {
    pub(crate) fn new(backend: Arc<CudaBackend>) -> Result<CudaQueue> {
        Ok(CudaQueue {
            stream: backend.new_stream()?,
            backend,
        })
    }
}

fn pending(e: Arc<StreamEvent>) -> Completion {
    Completion::Pending(e)
}

impl BackendQueue for CudaQueue {
    fn write(&self, dst: MemRange<'_>, src: &[u8], deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        self.stream.write(&self.backend, dst, src, deps).map(pending)
    }

    fn write_owned(
        &self,
        dst: MemRange<'_>,
        src: &Arc<dyn HostMemory>,
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Completion> {
        self.stream.write_owned(&self.backend, dst, src, deps).map(pending)
    }

    fn read(&self, src: MemRange<'_>, dst: HostDst<'_>, deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        self.stream.read(&self.backend, src, dst, deps).map(pending)
    }

    fn copy(&self, src: MemRange<'_>, dst: MemRange<'_>, deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        self.stream.copy(&self.backend, src, dst, deps).map(pending)
    }

    fn fill(&self, dst: MemRange<'_>, pattern: &[u8], deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        self.stream.fill(&self.backend, dst, pattern, deps).map(pending)
    }

    fn launch(
        &self,
        kernel: &Kernel,
        cfg: &LaunchConfig,
        args: &[RawArg<'_>],
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Completion> {
        let prep = self.backend.prepare_launch(kernel, cfg, args)?;
        self.stream.launch(kernel, prep, deps).map(pending)
    }

    fn finish(&self) -> Result<()> {
        self.stream.finish()
    }
}
