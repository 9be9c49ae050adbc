//! The OpenCL backend over `opencl3` (the OpenCL library is loaded at run time).
//!
//! One [`OpenClBackend`] per OpenCL device (over all platforms), each with its own
//! context and a small pool of in-order, profiling-enabled command queues. Every
//! call takes a free queue, enqueues, waits for its event and returns the device
//! time from `CL_PROFILING_COMMAND_START/END`, so two host threads (say, one
//! uploading the next chunk while another launches) overlap on the device.
//!
//! Files: [`discover`](self::discover) (platforms, devices, `DeviceInfo`),
//! `memory` (buffers), `program` (build, in-memory and on-disk program caches),
//! `launch` (kernel arguments and `clEnqueueNDRangeKernel`), `handles` (owning
//! wrappers that release driver objects on drop), `error` (`map_cl_err`, the one
//! place where OpenCL codes become crate errors). Nothing outside this directory
//! touches OpenCL.

mod discover;
mod error;
mod handles;
mod launch;
mod memory;
mod program;
mod queue;

use opencl3::command_queue::{enqueue_read_buffer, enqueue_write_buffer, finish};
use opencl3::event::{
    CL_EVENT_COMMAND_EXECUTION_STATUS, CL_PROFILING_COMMAND_END, CL_PROFILING_COMMAND_START, get_event_data,
    get_event_profiling_info, wait_for_events,
};
use opencl3::types::{CL_NON_BLOCKING, cl_command_queue, cl_device_id, cl_int};
use parking_lot::{Mutex, MutexGuard};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

pub(crate) use discover::discover;
use error::{Op, code_name, map_cl_err};
use handles::{Context, Event, Queue};
use memory::ClMemory;
use program::ProgramCache;

use crate::backend::queue::{BackendQueue, HostMemory};
use crate::backend::{Backend, DeviceMemory, RawArg, Timing};
use crate::device::DeviceInfo;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::launch::LaunchConfig;

/// In-order queues per device: two lets an upload overlap a kernel.
pub(crate) const QUEUES_PER_DEVICE: usize = 2;
/// Kernel objects per built kernel (at least [`QUEUES_PER_DEVICE`]): the pool's
/// queues use slots `0..QUEUES_PER_DEVICE`, native queues take all in turn
/// (each slot has a mutex, so sharing one is correct, only slower).
pub(crate) const KERNEL_SLOTS: usize = 4;

/// A device id (root devices are not reference counted: nothing to release).
#[derive(Clone, Copy)]
pub(crate) struct DeviceId(pub(crate) cl_device_id);
// SAFETY: a device id is an immutable driver identifier, valid on any thread.
unsafe impl Send for DeviceId {}
// SAFETY: as above.
unsafe impl Sync for DeviceId {}

/// One OpenCL device. Field order is drop order: kernels and programs, then
/// queues, then the context.
pub(crate) struct OpenClBackend {
    info: DeviceInfo,
    programs: ProgramCache,
    /// `None` after `close`.
    queues: Vec<Mutex<Option<Queue>>>,
    next_queue: AtomicUsize,
    /// Set by `close`; checked before builds and launches.
    closed: AtomicBool,
    /// Native queues made so far (selects their kernel object slot).
    queues_made: AtomicUsize,
    /// The device ↔ host clock mapping and when it was measured.
    clock: Mutex<Option<(Instant, queue::HostClock)>>,
    device: DeviceId,
    /// The device's OpenCL version.
    version: (u32, u32),
    context: Context,
}

/// A queue taken from the pool: its index (selects the kernel object) and guard.
pub(crate) struct QueueGuard<'a> {
    index: usize,
    guard: MutexGuard<'a, Option<Queue>>,
}

impl QueueGuard<'_> {
    fn queue(&self) -> Option<&Queue> {
        self.guard.as_ref()
    }
}

impl OpenClBackend {
    pub(crate) fn new(
        info: DeviceInfo,
        device: DeviceId,
        version: (u32, u32),
        context: Context,
        queues: Vec<Queue>,
    ) -> Self {
        OpenClBackend {
            info,
            programs: ProgramCache::default(),
            queues: queues.into_iter().map(|q| Mutex::new(Some(q))).collect(),
            next_queue: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            queues_made: AtomicUsize::new(0),
            clock: Mutex::new(None),
            device,
            version,
            context,
        }
    }

    /// The kernel object slot of the next native queue.
    fn next_slot(&self) -> usize {
        self.queues_made.fetch_add(1, Ordering::Relaxed) % KERNEL_SLOTS
    }

    /// The device's clock mapping, measured with `calibrate` when there is none
    /// or it is older than `max_age`.
    fn host_clock(
        &self,
        calibrate: impl FnOnce() -> Option<queue::HostClock>,
        max_age: std::time::Duration,
    ) -> Option<queue::HostClock> {
        let mut c = self.clock.lock();
        if let Some((at, clock)) = *c
            && at.elapsed() < max_age
        {
            return Some(clock);
        }
        match calibrate() {
            Some(clock) => {
                *c = Some((Instant::now(), clock));
                Some(clock)
            }
            None => {
                tracing::debug!(device = %self.info.label(), "no profiling times for markers: host clock only");
                c.map(|(_, clock)| clock)
            }
        }
    }

    /// The built kernel (building it first), unless the device is closed.
    fn built(&self, kernel: &Kernel, operation: &str) -> Result<std::sync::Arc<program::Built>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed(operation));
        }
        self.programs
            .get_or_build(&self.context, self.device.0, &self.info, kernel, KERNEL_SLOTS)
    }

    fn closed(&self, operation: &str) -> Error {
        Error::Closed {
            device: self.info.label(),
            operation: operation.to_string(),
        }
    }

    /// Take a free queue (the first idle one), or wait for one in rotation. The raw
    /// handle returned is valid while the guard is held.
    fn take_queue(&self, operation: &str) -> Result<(QueueGuard<'_>, cl_command_queue)> {
        let n = self.queues.len();
        let mut taken = None;
        for (index, q) in self.queues.iter().enumerate() {
            if let Some(guard) = q.try_lock() {
                taken = Some(QueueGuard { index, guard });
                break;
            }
        }
        let g = match taken {
            Some(g) => g,
            None => {
                let index = self.next_queue.fetch_add(1, Ordering::Relaxed) % n.max(1);
                QueueGuard {
                    index,
                    guard: self.queues[index].lock(),
                }
            }
        };
        let raw = g.queue().map(|q| q.raw()).ok_or_else(|| self.closed(operation))?;
        Ok((g, raw))
    }

    fn mem<'a>(&self, m: &'a dyn DeviceMemory) -> Result<&'a ClMemory> {
        m.as_any()
            .downcast_ref::<ClMemory>()
            .ok_or_else(|| crate::backend::foreign_memory(&self.info))
    }

    /// Wait for `ev` and return its device duration.
    fn wait_timed(&self, ev: &Event, op: Op<'_>) -> Result<Timing> {
        if let Err(c) = wait_for_events(&[ev.raw()]) {
            // A failed command reports its own (negative) status; prefer that code.
            let status = get_event_data(ev.raw(), CL_EVENT_COMMAND_EXECUTION_STATUS)
                .ok()
                .and_then(|b| b.get(..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes))
                .filter(|s| *s < 0)
                .unwrap_or(c);
            return Err(map_cl_err(status, &self.info, op));
        }
        Ok(event_duration(ev))
    }
}

/// Wait for a copy between device and host memory, and do not return before the
/// driver is done with the host memory.
///
/// `wait` waits for the copy's event. When it fails, the copy may still be queued
/// or running, reading or writing the caller's host slice, which the caller frees
/// or reuses as soon as this returns. So `finish` (`clFinish` on the copy's
/// in-order queue: it returns once every command on the queue has completed)
/// runs first, and only then is the wait's error returned. A failing `finish` is
/// logged: `clFinish` is the last synchronisation OpenCL offers.
fn wait_or_finish<T>(
    wait: impl FnOnce() -> Result<T>,
    finish: impl FnOnce() -> std::result::Result<(), cl_int>,
) -> Result<T> {
    let r = wait();
    if r.is_err()
        && let Err(c) = finish()
    {
        tracing::error!(error = %code_name(c), "clFinish failed after a failed wait for a copy");
    }
    r
}

/// Device-clock duration of a completed event (`HOST` if profiling info is unavailable).
fn event_duration(ev: &Event) -> Timing {
    // cl3 answers these two queries with its `Ulong` variant, so `to_ulong` cannot panic.
    let start = get_event_profiling_info(ev.raw(), CL_PROFILING_COMMAND_START).map(|i| i.to_ulong());
    let end = get_event_profiling_info(ev.raw(), CL_PROFILING_COMMAND_END).map(|i| i.to_ulong());
    match (start, end) {
        (Ok(s), Ok(e)) => Timing::device(e.saturating_sub(s)),
        (s, e) => {
            tracing::debug!(start = ?s.err().map(code_name), end = ?e.err().map(code_name), "no profiling info");
            Timing::HOST
        }
    }
}

impl Backend for OpenClBackend {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn alloc(&self, bytes: usize, _align: usize) -> Result<Box<dyn DeviceMemory>> {
        Ok(Box::new(ClMemory::alloc(&self.context, &self.info, bytes)?))
    }

    fn write(&self, mem: &dyn DeviceMemory, offset: usize, src: &[u8]) -> Result<Timing> {
        let m = self.mem(mem)?;
        if src.is_empty() {
            return Ok(Timing::device(0));
        }
        let (_g, q) = self.take_queue("write")?;
        let op = Op::new("clEnqueueWriteBuffer").bytes(src.len() as u64);
        // SAFETY: the public layer checked `offset + src.len() <= byte_len`; `src` stays
        // borrowed (alive, unchanged) until the copy is done: `wait_or_finish` returns
        // only after the event completed or, if waiting failed, after `clFinish`.
        let ev = unsafe {
            enqueue_write_buffer(
                q,
                m.raw(),
                CL_NON_BLOCKING,
                offset,
                src.len(),
                src.as_ptr().cast(),
                0,
                std::ptr::null(),
            )
        }
        .map_err(|c| map_cl_err(c, &self.info, op))?;
        // SAFETY: a successful enqueue returns an event with one reference, ours.
        let ev = unsafe { Event::from_raw(ev) };
        wait_or_finish(|| self.wait_timed(&ev, op), || finish(q))
    }

    fn read(&self, mem: &dyn DeviceMemory, offset: usize, dst: &mut [u8]) -> Result<Timing> {
        let m = self.mem(mem)?;
        if dst.is_empty() {
            return Ok(Timing::device(0));
        }
        let (_g, q) = self.take_queue("read")?;
        let op = Op::new("clEnqueueReadBuffer").bytes(dst.len() as u64);
        // SAFETY: bounds checked above us; `dst` stays exclusively borrowed until the
        // copy is done (`wait_or_finish`: the event completed, or `clFinish` returned
        // after a failed wait), and nothing else writes it meanwhile.
        let ev = unsafe {
            enqueue_read_buffer(
                q,
                m.raw(),
                CL_NON_BLOCKING,
                offset,
                dst.len(),
                dst.as_mut_ptr().cast(),
                0,
                std::ptr::null(),
            )
        }
        .map_err(|c| map_cl_err(c, &self.info, op))?;
        // SAFETY: a successful enqueue returns an event with one reference, ours.
        let ev = unsafe { Event::from_raw(ev) };
        wait_or_finish(|| self.wait_timed(&ev, op), || finish(q))
    }

    fn new_queue(self: Arc<Self>) -> Result<Arc<dyn BackendQueue>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed("create a queue"));
        }
        Ok(Arc::new(queue::ClQueue::new(self)?))
    }

    fn alloc_host(&self, bytes: usize, align: usize) -> Result<Arc<dyn HostMemory>> {
        match queue::ClHostMemory::alloc(self, bytes, align)? {
            Some(m) => Ok(Arc::new(m)),
            None => {
                tracing::debug!(device = %self.info.label(), "mapped host memory not aligned; heap memory instead");
                crate::backend::cpu::heap_memory(bytes, align, &self.info.label())
            }
        }
    }

    fn build(&self, kernel: &Kernel) -> Result<Timing> {
        self.built(kernel, "build")?;
        Ok(Timing::HOST)
    }

    fn kernel_info(&self, kernel: &Kernel) -> Result<crate::KernelInfo> {
        use opencl3::kernel::{
            CL_KERNEL_LOCAL_MEM_SIZE, CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE, CL_KERNEL_PRIVATE_MEM_SIZE,
            CL_KERNEL_WORK_GROUP_SIZE, get_kernel_work_group_data,
        };
        let built = self.built(kernel, "kernel info")?;
        let slot = built.kernels.first().ok_or_else(|| self.closed("kernel info"))?.lock();
        let query = |param, what: &str| -> Result<u64> {
            let bytes = get_kernel_work_group_data(slot.obj.raw(), self.device.0, param)
                .map_err(|c| map_cl_err(c, &self.info, Op::new("clGetKernelWorkGroupInfo").kernel(kernel.name())))?;
            // size_t or cl_ulong, native-endian.
            let mut v = [0u8; 8];
            let n = bytes.len().min(8);
            v[..n].copy_from_slice(&bytes[..n]);
            if bytes.len() != 4 && bytes.len() != 8 {
                return Err(Error::InvalidInput(format!(
                    "clGetKernelWorkGroupInfo({what}) returned {} bytes",
                    bytes.len()
                )));
            }
            Ok(if bytes.len() == 4 {
                u64::from(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
            } else {
                u64::from_ne_bytes(v)
            })
        };
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let max_block =
            clamp(query(CL_KERNEL_WORK_GROUP_SIZE, "CL_KERNEL_WORK_GROUP_SIZE")?).min(self.info.max_threads_per_block);
        let multiple = clamp(query(
            CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE,
            "CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE",
        )?)
        .max(1);
        Ok(crate::KernelInfo {
            max_block,
            registers: None,
            local_bytes: query(CL_KERNEL_LOCAL_MEM_SIZE, "CL_KERNEL_LOCAL_MEM_SIZE")?,
            private_bytes: Some(query(CL_KERNEL_PRIVATE_MEM_SIZE, "CL_KERNEL_PRIVATE_MEM_SIZE")?),
            block_multiple: multiple,
            suggested_block: crate::KernelInfo::default_suggestion(max_block, multiple),
            source: "clGetKernelWorkGroupInfo",
        })
    }

    fn launch(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &[RawArg<'_>]) -> Result<Timing> {
        let built = self.built(kernel, "launch")?;
        let (g, q) = self.take_queue("launch")?;
        let mut kobj = built.kernels.get(g.index).ok_or_else(|| self.closed("launch"))?.lock();
        let ev = launch::enqueue(self, q, &mut kobj, kernel, cfg, args, &[])?;
        let bytes = launch::buffer_bytes(self, args);
        self.wait_timed(&ev, Op::new("kernel execution").bytes(bytes).kernel(kernel.name()))
    }

    fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        let mut first = None;
        for q in &self.queues {
            let mut g = q.lock();
            if let Some(queue) = g.as_ref()
                && let Err(c) = finish(queue.raw())
            {
                first.get_or_insert(map_cl_err(c, &self.info, Op::new("clFinish")));
            }
            *g = None;
        }
        self.programs.clear();
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::wait_or_finish;
    use crate::error::{BackendKind, Error};

    fn wait_failed() -> Error {
        Error::Driver {
            backend: BackendKind::OpenCl,
            device: "opencl:test".into(),
            operation: "clWaitForEvents".into(),
            message: "CL_OUT_OF_RESOURCES (-5)".into(),
        }
    }

    /// A failed wait returns only once the queued copy is over: the fake device
    /// (a thread holding the host buffer while it copies) has let go of it.
    #[test]
    fn a_failed_wait_returns_only_after_the_queue_finished() {
        let host = Arc::new(vec![7u8; 1 << 16]);
        let in_flight = host.clone();
        let copied = Arc::new(AtomicBool::new(false));
        let done = copied.clone();
        let device = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let sum: u64 = in_flight.iter().map(|b| *b as u64).sum();
            done.store(sum == 7 << 16, Ordering::SeqCst);
            drop(in_flight);
        });
        let r: crate::Result<()> = wait_or_finish(
            || Err(wait_failed()),
            || {
                device.join().map_err(|_| -36)?;
                Ok(())
            },
        );
        assert!(matches!(r, Err(Error::Driver { .. })), "{r:?}");
        assert!(copied.load(Ordering::SeqCst), "the copy completed before the return");
        assert_eq!(Arc::strong_count(&host), 1, "nothing references the host buffer");
    }

    #[test]
    fn a_successful_wait_does_not_finish_and_a_failed_finish_keeps_the_wait_error() {
        let r = wait_or_finish(|| Ok(5), || panic!("no clFinish after a successful wait"));
        assert_eq!(r.ok(), Some(5));
        let r: crate::Result<()> = wait_or_finish(|| Err(wait_failed()), || Err(-36));
        let e = r.unwrap_err();
        assert!(e.to_string().contains("clWaitForEvents"), "{e}");
    }
}
