//! The asynchronous half of the backend contract: queues, events, host memory.
//!
//! A [`BackendQueue`] is one in-order command stream on one device (an OpenCL
//! command queue, a CUDA stream, a CPU lane). Every command returns a
//! [`RawEvent`] at once; the command runs after every event in `deps` and after
//! the queue's earlier commands. The public layer (`src/queue.rs`) decides the
//! dependencies (buffer hazards, `wait_for`), keeps every device allocation and
//! host buffer a command uses alive until its event completes, and turns events
//! into profile records.
//!
//! # Contract
//!
//! * **Dependencies.** `deps` may hold events of any backend. A backend waits on
//!   its own events natively (OpenCL wait lists, CUDA stream waits) and on
//!   foreign ones however it can (a host wait, a user event completed from a
//!   host thread); a failed dependency fails the command with
//!   [`Error::DependencyFailed`] and never runs it.
//! * **Host memory.** A `&[u8]` source of `write` is consumed before the call
//!   returns (copied to staging memory, or written). A [`HostDst::Borrowed`]
//!   destination of `read` must be fully written before the call returns (the
//!   blocking path); a [`HostDst::Owned`] one is written asynchronously and kept
//!   alive by the caller until the event completes.
//! * **Memory lifetime.** The caller keeps every [`DeviceMemory`] a command uses
//!   alive until its event is complete; a backend need not retain it.
//! * **Events.** `wait` blocks until complete and returns the command's error if
//!   it failed (as often as it is called); `is_complete` never blocks; `times`
//!   gives the command's start and end on the host clock once complete (device
//!   timestamps mapped onto the host clock where the backend has them).
//! * **Errors** are typed crate errors; nothing panics; a failed command leaves
//!   the queue usable.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::{DeviceMemory, RawArg};
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::launch::LaunchConfig;

/// Start and end of a completed command on the host clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EventTimes {
    /// When the command started executing.
    pub start: Instant,
    /// When it finished.
    pub end: Instant,
    /// Whether the times come from the device's own clock.
    pub device_clock: bool,
}

/// What an enqueue call returns: the command either ran to completion inside
/// the call (the CPU device, synchronous backends: no event object needed), or is
/// in flight with an event.
pub(crate) enum Completion {
    /// Ran during the call, from `start` to `end`, with this outcome.
    Done {
        /// When it started.
        start: Instant,
        /// When it ended.
        end: Instant,
        /// Its outcome, and its duration on the device clock where the backend has one.
        outcome: Result<Option<u64>>,
    },
    /// In flight.
    #[allow(dead_code)] // made by backends with native asynchronous queues
    Pending(Arc<dyn RawEvent>),
}

impl Completion {
    /// Run `f` now (after waiting for `deps` on the host) and report it as done.
    pub(crate) fn run(deps: &[Arc<dyn RawEvent>], f: impl FnOnce() -> Result<Option<u64>>) -> Completion {
        let start = Instant::now();
        let outcome = wait_all(deps).and_then(|()| f());
        Completion::Done {
            start,
            end: Instant::now(),
            outcome,
        }
    }
}

/// Completion of one enqueued command. See the module docs.
pub(crate) trait RawEvent: Send + Sync + 'static {
    /// Block until complete; the command's error if it failed.
    fn wait(&self) -> Result<()>;
    /// Whether the command has completed (successfully or not).
    fn is_complete(&self) -> bool;
    /// Start and end once complete (`None` before, or if unknown).
    fn times(&self) -> Option<EventTimes>;
    /// For native waits by the backend that created it.
    #[allow(dead_code)] // used by backends with native asynchronous queues
    fn as_any(&self) -> &dyn Any;
}

/// An event that is complete when created: for commands executed during the
/// enqueue call (the CPU device runs ready work at once).
pub(crate) struct DoneEvent {
    /// The typed error, handed to the first waiter.
    error: Mutex<Option<Error>>,
    /// Its text, for later waiters.
    failure: Option<String>,
    times: EventTimes,
}

impl DoneEvent {
    /// A completed command that ran from `start` to `end`, with its outcome.
    pub(crate) fn arc(start: Instant, end: Instant, outcome: Result<()>) -> Arc<dyn RawEvent> {
        let failure = outcome.as_ref().err().map(|e| e.to_string());
        Arc::new(DoneEvent {
            error: Mutex::new(outcome.err()),
            failure,
            times: EventTimes {
                start,
                end,
                device_clock: false,
            },
        })
    }
}

impl RawEvent for DoneEvent {
    fn wait(&self) -> Result<()> {
        if let Some(e) = self.error.lock().take() {
            return Err(e);
        }
        match &self.failure {
            None => Ok(()),
            Some(m) => Err(Error::CommandFailed {
                command: "command".into(),
                message: m.clone(),
            }),
        }
    }
    fn is_complete(&self) -> bool {
        true
    }
    fn times(&self) -> Option<EventTimes> {
        Some(self.times)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Wait on the host for every event in `deps`; the first failure becomes
/// [`Error::DependencyFailed`]. The portable way to honour foreign events.
pub(crate) fn wait_all(deps: &[Arc<dyn RawEvent>]) -> Result<()> {
    for d in deps {
        if let Err(e) = d.wait() {
            return Err(Error::DependencyFailed { cause: e.to_string() });
        }
    }
    Ok(())
}

/// Host memory a backend reads into or writes from asynchronously: page-locked
/// where the backend can, 64-byte aligned heap memory otherwise.
pub(crate) trait HostMemory: Send + Sync + 'static {
    /// Base pointer, valid for `byte_len` bytes while `self` lives.
    fn ptr(&self) -> *mut u8;
    /// Size in bytes.
    fn byte_len(&self) -> usize;
    /// Whether the memory is page-locked (pinned) for fast transfers.
    fn pinned(&self) -> bool;
    /// For the backend that allocated it.
    #[allow(dead_code)] // used by backends with page-locked host memory
    fn as_any(&self) -> &dyn Any;
    /// The same memory as device memory of the CPU device (no copy), where the
    /// CPU device can use it in place.
    fn into_device_memory(self: Arc<Self>) -> Option<Arc<dyn super::DeviceMemory>> {
        None
    }
}

/// Host memory the crate borrows (a caller's slice) for asynchronous transfers.
/// Not page-locked. Whoever makes one waits for every command that uses it
/// before the borrow ends, on every path (unwinding included); commands may keep
/// the `Arc` longer, but never touch the memory after they complete.
pub(crate) struct HostRegion {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a plain address range; the maker's contract (`HostRegion::arc`) makes
// every access happen while the borrowed memory is valid and unaliased.
unsafe impl Send for HostRegion {}
// SAFETY: as above.
unsafe impl Sync for HostRegion {}

impl HostRegion {
    /// `len` bytes at `ptr` as host memory for transfers.
    ///
    /// # Safety
    /// The bytes stay valid until every command given this region has completed;
    /// while a command writes them (a read from the device) nothing else reads or
    /// writes them, and while a command reads them nothing writes them.
    pub(crate) unsafe fn arc(ptr: *mut u8, len: usize) -> Arc<dyn HostMemory> {
        Arc::new(HostRegion { ptr, len })
    }
}

impl HostMemory for HostRegion {
    fn ptr(&self) -> *mut u8 {
        self.ptr
    }
    fn byte_len(&self) -> usize {
        self.len
    }
    fn pinned(&self) -> bool {
        false
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Bytes `offset .. offset + len` of other host memory, which it keeps alive:
/// for transfers of part of an allocation (the task layer's host replicas).
pub(crate) struct HostSub {
    base: Arc<dyn HostMemory>,
    offset: usize,
    len: usize,
}

impl HostSub {
    /// The sub-range, checked against `base`'s length.
    pub(crate) fn arc(base: &Arc<dyn HostMemory>, offset: usize, len: usize) -> Result<Arc<dyn HostMemory>> {
        host_ptr(base, offset, len)?;
        Ok(Arc::new(HostSub {
            base: base.clone(),
            offset,
            len,
        }))
    }
}

impl HostMemory for HostSub {
    fn ptr(&self) -> *mut u8 {
        self.base.ptr().wrapping_add(self.offset)
    }
    fn byte_len(&self) -> usize {
        self.len
    }
    fn pinned(&self) -> bool {
        self.base.pinned()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A byte range of one device allocation: a whole buffer or a view.
#[derive(Clone, Copy)]
pub(crate) struct MemRange<'a> {
    /// The allocation.
    pub mem: &'a dyn DeviceMemory,
    /// First byte.
    pub offset: usize,
    /// Bytes.
    pub len: usize,
}

/// Where a read lands.
pub(crate) enum HostDst<'a> {
    /// A borrowed slice: the read completes before `read` returns.
    Borrowed(&'a mut [u8]),
    /// Owned host memory at a byte offset: written asynchronously; the caller keeps it
    /// alive until the event completes.
    Owned(&'a Arc<dyn HostMemory>, usize),
}

/// One in-order command stream on one device. See the module docs.
pub(crate) trait BackendQueue: Send + Sync + 'static {
    /// Host → device: `src` into `dst` (same length), consumed before returning.
    fn write(&self, dst: MemRange<'_>, src: &[u8], deps: &[Arc<dyn RawEvent>]) -> Result<Completion>;
    /// Host → device from owned host memory (its first `dst.len` bytes): asynchronous;
    /// the caller keeps `src` alive until the event completes.
    fn write_owned(
        &self,
        dst: MemRange<'_>,
        src: &Arc<dyn HostMemory>,
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Completion>;
    /// Device → host: `src` into `dst` (same length).
    fn read(&self, src: MemRange<'_>, dst: HostDst<'_>, deps: &[Arc<dyn RawEvent>]) -> Result<Completion>;
    /// Device → device on this device (ranges of equal length, not overlapping).
    fn copy(&self, src: MemRange<'_>, dst: MemRange<'_>, deps: &[Arc<dyn RawEvent>]) -> Result<Completion>;
    /// Fill `dst` with `pattern` repeated (`dst.len` is a multiple of its length, 1–128 bytes).
    fn fill(&self, dst: MemRange<'_>, pattern: &[u8], deps: &[Arc<dyn RawEvent>]) -> Result<Completion>;
    /// Launch a kernel (arguments and configuration already checked).
    fn launch(
        &self,
        kernel: &Kernel,
        cfg: &LaunchConfig,
        args: &[RawArg<'_>],
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Completion>;
    /// Block until every command enqueued so far has completed.
    fn finish(&self) -> Result<()>;
}

/// A queue over a backend's synchronous calls: each command waits for its
/// dependencies on the host and runs to completion inside the enqueue call.
/// Used by backends without native asynchronous queues.
pub(crate) struct SyncQueue {
    backend: Arc<dyn super::Backend>,
    order: Mutex<()>,
}

impl SyncQueue {
    pub(crate) fn arc(backend: Arc<dyn super::Backend>) -> Arc<dyn BackendQueue> {
        Arc::new(SyncQueue {
            backend,
            order: Mutex::new(()),
        })
    }

    fn run(&self, deps: &[Arc<dyn RawEvent>], f: impl FnOnce() -> Result<Option<u64>>) -> Result<Completion> {
        let _order = self.order.lock();
        Ok(Completion::run(deps, f))
    }
}

/// The address of bytes `offset .. offset + len` of owned host memory, checked
/// against its length.
pub(crate) fn host_ptr(h: &Arc<dyn HostMemory>, offset: usize, len: usize) -> Result<*mut u8> {
    match offset.checked_add(len) {
        Some(end) if end <= h.byte_len() => Ok(h.ptr().wrapping_add(offset)),
        _ => Err(Error::InvalidInput(format!(
            "host range {offset}..+{len} outside {} bytes",
            h.byte_len()
        ))),
    }
}

/// The bytes `offset .. offset + len` of owned host memory, checked.
pub(crate) fn host_bytes(h: &Arc<dyn HostMemory>, offset: usize, len: usize) -> Result<&[u8]> {
    let p = host_ptr(h, offset, len)?;
    // SAFETY: in bounds (checked); valid while `h` lives; the public layer owns the
    // memory for the transfer, so nothing writes it while a command reads it.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A fill of `len` bytes takes a pattern of 1 to 128 bytes that divides `len`.
pub(crate) fn check_fill(len: usize, pattern: &[u8]) -> Result<()> {
    if pattern.is_empty() || pattern.len() > 128 || !len.is_multiple_of(pattern.len()) {
        return Err(Error::InvalidInput(format!(
            "fill: {len} bytes is not a multiple of the {}-byte pattern (1 to 128 bytes)",
            pattern.len()
        )));
    }
    Ok(())
}

impl BackendQueue for SyncQueue {
    fn write(&self, dst: MemRange<'_>, src: &[u8], deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        self.run(deps, || {
            self.backend.write(dst.mem, dst.offset, src).map(|t| t.device_ns)
        })
    }

    fn write_owned(
        &self,
        dst: MemRange<'_>,
        src: &Arc<dyn HostMemory>,
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Completion> {
        let bytes = host_bytes(src, 0, dst.len)?;
        self.run(deps, || {
            self.backend.write(dst.mem, dst.offset, bytes).map(|t| t.device_ns)
        })
    }

    fn read(&self, src: MemRange<'_>, dst: HostDst<'_>, deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        self.run(deps, || match dst {
            HostDst::Borrowed(b) => self.backend.read(src.mem, src.offset, b).map(|t| t.device_ns),
            HostDst::Owned(h, off) => {
                let b = host_bytes(h, off, src.len)?;
                // SAFETY: the public layer owns this host memory exclusively while the
                // read runs (it took the host buffer by value).
                let b = unsafe { std::slice::from_raw_parts_mut(b.as_ptr() as *mut u8, b.len()) };
                self.backend.read(src.mem, src.offset, b).map(|t| t.device_ns)
            }
        })
    }

    fn copy(&self, src: MemRange<'_>, dst: MemRange<'_>, deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        self.run(deps, || {
            let mut tmp = vec![0u8; src.len];
            self.backend.read(src.mem, src.offset, &mut tmp)?;
            self.backend.write(dst.mem, dst.offset, &tmp).map(|_| None)
        })
    }

    fn fill(&self, dst: MemRange<'_>, pattern: &[u8], deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        check_fill(dst.len, pattern)?;
        self.run(deps, || {
            let tmp: Vec<u8> = pattern.iter().copied().cycle().take(dst.len).collect();
            self.backend.write(dst.mem, dst.offset, &tmp).map(|_| None)
        })
    }

    fn launch(
        &self,
        kernel: &Kernel,
        cfg: &LaunchConfig,
        args: &[RawArg<'_>],
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Completion> {
        self.run(deps, || self.backend.launch(kernel, cfg, args).map(|t| t.device_ns))
    }

    fn finish(&self) -> Result<()> {
        drop(self.order.lock());
        Ok(())
    }
}
