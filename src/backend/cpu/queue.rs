//! CPU lanes: the CPU device's queues.
//!
//! The CPU device is the host, so a command whose dependencies are complete runs
//! at once, on the enqueuing thread (spread over the worker pool as usual), and
//! its event is complete when the call returns: an empty launch costs a function
//! call, not a thread hand-off. A command with pending dependencies on other
//! devices waits for them on the host first. A lane serialises its commands (a
//! mutex), so two threads sharing one queue still see them run in order.

use parking_lot::Mutex;
use std::sync::Arc;

use super::CpuBackend;
use crate::backend::queue::{BackendQueue, Completion, HostDst, HostMemory, MemRange, RawEvent, check_fill, host_ptr};
use crate::backend::{Backend, RawArg};
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::launch::LaunchConfig;

/// One lane of the CPU device.
pub(crate) struct CpuQueue {
    backend: Arc<CpuBackend>,
    lane: Mutex<()>,
}

impl CpuQueue {
    pub(crate) fn new(backend: Arc<CpuBackend>) -> CpuQueue {
        CpuQueue {
            backend,
            lane: Mutex::new(()),
        }
    }

    /// Run `f` in lane order after `deps`, as a completed event.
    fn run(&self, deps: &[Arc<dyn RawEvent>], f: impl FnOnce() -> Result<Option<u64>>) -> Result<Completion> {
        let _lane = self.lane.lock();
        Ok(Completion::run(deps, f))
    }

    /// Base pointer of a range, checked against its allocation.
    fn ptr(&self, r: MemRange<'_>) -> Result<*mut u8> {
        let m = self.backend.mem(r.mem)?;
        match r.offset.checked_add(r.len) {
            Some(end) if end <= m.byte_len() => Ok(m.ptr().wrapping_add(r.offset)),
            _ => Err(Error::InvalidInput(format!(
                "range {}..+{} outside an allocation of {} bytes",
                r.offset,
                r.len,
                m.byte_len()
            ))),
        }
    }
}

impl BackendQueue for CpuQueue {
    fn write(&self, dst: MemRange<'_>, src: &[u8], deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        let d = self.ptr(dst)?;
        self.run(deps, || {
            // SAFETY: `d` is valid for `dst.len == src.len()` bytes (checked above and
            // by the public layer); host and device memory never overlap.
            self.backend.copy(src.as_ptr(), d, src.len().min(dst.len));
            Ok(None)
        })
    }

    fn write_owned(
        &self,
        dst: MemRange<'_>,
        src: &Arc<dyn HostMemory>,
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Completion> {
        let d = self.ptr(dst)?;
        let s = host_ptr(src, 0, dst.len)?;
        self.run(deps, || {
            self.backend.copy(s, d, dst.len);
            Ok(None)
        })
    }

    fn read(&self, src: MemRange<'_>, dst: HostDst<'_>, deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        let s = self.ptr(src)?;
        let d = match dst {
            HostDst::Borrowed(b) => {
                if b.len() != src.len {
                    return Err(Error::InvalidInput(
                        "read: host slice and range differ in length".into(),
                    ));
                }
                b.as_mut_ptr()
            }
            HostDst::Owned(h, off) => host_ptr(h, off, src.len)?,
        };
        self.run(deps, || {
            self.backend.copy(s, d, src.len);
            Ok(None)
        })
    }

    fn copy(&self, src: MemRange<'_>, dst: MemRange<'_>, deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        let s = self.ptr(src)?;
        let d = self.ptr(dst)?;
        let n = src.len.min(dst.len);
        self.run(deps, || {
            // SAFETY: both ranges are inside live allocations (checked above); `copy`
            // allows overlap (views of one allocation).
            unsafe { std::ptr::copy(s, d, n) };
            Ok(None)
        })
    }

    fn fill(&self, dst: MemRange<'_>, pattern: &[u8], deps: &[Arc<dyn RawEvent>]) -> Result<Completion> {
        let d = self.ptr(dst)?;
        check_fill(dst.len, pattern)?;
        self.run(deps, || {
            // SAFETY: `d` is valid for `dst.len` bytes (checked above), exclusively
            // ours for this command (the public layer orders every other user after it).
            let out = unsafe { std::slice::from_raw_parts_mut(d, dst.len) };
            for c in out.chunks_exact_mut(pattern.len()) {
                c.copy_from_slice(pattern);
            }
            Ok(None)
        })
    }

    fn launch(
        &self,
        kernel: &Kernel,
        cfg: &LaunchConfig,
        args: &[RawArg<'_>],
        deps: &[Arc<dyn RawEvent>],
    ) -> Result<Completion> {
        self.run(deps, || self.backend.launch(kernel, cfg, args).map(|_| None))
    }

    fn finish(&self) -> Result<()> {
        // Commands complete inside their enqueue call: taking the lane waits for
        // one still running on another thread.
        drop(self.lane.lock());
        Ok(())
    }
}
