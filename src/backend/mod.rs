//! The internal backend trait and its three implementations.
//!
//! This is the ONLY layer that touches driver APIs (cudarc, opencl3) or raw device
//! memory. Everything above it (devices, buffers, launches, the scheduler, the
//! profiler) speaks in crate types.
//!
//! # Contract of [`Backend`]
//!
//! * **Validation happens above.** The public layer has already checked the
//!   argument list against the kernel signature, buffer ownership, host slice
//!   lengths, the launch configuration against [`DeviceInfo`] limits, and that the
//!   kernel has an implementation for this backend. A backend may still fail (a
//!   driver error, out of memory, a build error) and must then return a typed
//!   [`Error`]; it must never panic and never leave the device unusable.
//! * **Queues.** `new_queue` creates an in-order command stream; its commands,
//!   their events and host memory follow the contract in [`queue`]. Every public
//!   transfer and launch goes through a queue.
//! * **Synchronous calls.** `write`, `read` and `launch` return once the work is
//!   complete. They serve backends whose queue runs commands synchronously
//!   ([`queue::SyncQueue`]) and the fault injector, which wraps them.
//! * **Timing.** Each of these returns a [`Timing`]: the device-measured duration
//!   when the backend has device clocks (CUDA events, OpenCL profiling events), or
//!   `None` and the public layer uses its host clock. The public layer turns this
//!   into a [`crate::profile::StageRecord`].
//! * **Build cache.** `build` is idempotent and cheap after the first call for a
//!   given [`Kernel::id`]; `launch` may call it implicitly.
//! * **Memory.** `alloc` returns an owning [`DeviceMemory`] freed on drop (never
//!   panicking in `Drop`). `DeviceMemory` objects are only ever passed back to the
//!   backend that created them (the public layer checks ownership first), so a
//!   backend may downcast with [`DeviceMemory::as_any`].
//! * **Concurrency.** All methods take `&self` and may be called from many threads
//!   at once; a backend serialises internally where its driver needs it.
//! * **Teardown.** `close` releases what it can and reports the first error; after
//!   it, every call returns [`Error::Closed`] (checked by the public layer).

use std::any::Any;
use std::sync::Arc;

use queue::{BackendQueue, HostMemory};

use crate::device::DeviceInfo;
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Scalar};
use crate::launch::LaunchConfig;

pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(any(feature = "cuda", feature = "opencl"))]
mod kernel_cache;
#[cfg(feature = "opencl")]
pub(crate) mod opencl;
pub(crate) mod queue;

/// What a backend measured about one operation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Timing {
    /// Duration measured on the device clock, in nanoseconds, if the backend has one.
    pub device_ns: Option<u64>,
}

impl Timing {
    /// No device clock: the host clock is used.
    pub const HOST: Timing = Timing { device_ns: None };
    /// A device-clock duration.
    #[allow(dead_code)]
    pub fn device(ns: u64) -> Timing {
        Timing { device_ns: Some(ns) }
    }
}

/// An owning handle to device memory, created by one backend.
pub(crate) trait DeviceMemory: Send + Sync + 'static {
    /// Size in bytes.
    fn byte_len(&self) -> usize;
    /// For downcasting by the backend that created it.
    fn as_any(&self) -> &dyn Any;
    /// The host address of the memory, for memory the host addresses directly
    /// (the CPU device's allocations, and host memory it uses in place).
    fn host_ptr(&self) -> Option<*mut u8> {
        None
    }
    /// The same memory as host memory, where it is host memory (no copy).
    fn into_host_memory(self: Arc<Self>) -> Option<Arc<dyn HostMemory>> {
        None
    }
}

/// One kernel argument as the backend receives it (already checked).
pub(crate) enum RawArg<'a> {
    /// A buffer (read, or written when `writable`).
    Buffer {
        /// The memory (a whole allocation).
        mem: &'a dyn DeviceMemory,
        /// First byte the kernel sees (a view's start; 0 for a whole buffer).
        offset: usize,
        /// Bytes the kernel sees, from `offset`.
        len: usize,
        /// Whether the kernel may write it (the caller holds an exclusive borrow).
        writable: bool,
    },
    /// A scalar.
    Scalar(Scalar),
    /// Local memory of this many bytes per work-group (the CPU backend gives a
    /// work-group kernel that much of its worker's scratch memory).
    Local(usize),
}

/// One device of one backend. See the module docs for the contract.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Static facts about the device.
    fn info(&self) -> &DeviceInfo;
    /// Allocate `bytes` bytes (zero-filled where the backend can do so cheaply),
    /// aligned to at least `align` bytes where the host dereferences the memory
    /// (the CPU backend: `max(align, 64)`, zero-length allocations included).
    fn alloc(&self, bytes: usize, align: usize) -> Result<Box<dyn DeviceMemory>>;
    /// Copy `src` into `mem` at byte offset `offset`.
    fn write(&self, mem: &dyn DeviceMemory, offset: usize, src: &[u8]) -> Result<Timing>;
    /// Copy from `mem` at byte offset `offset` into `dst`.
    fn read(&self, mem: &dyn DeviceMemory, offset: usize, dst: &mut [u8]) -> Result<Timing>;
    /// Build (or fetch from cache) the kernel for this device.
    fn build(&self, kernel: &Kernel) -> Result<Timing>;
    /// Whether [`Backend::build`] returns at once (nothing to compile): callers
    /// then build inline rather than on a thread of their own.
    fn builds_at_once(&self) -> bool {
        false
    }
    /// A new in-order command queue on this device.
    fn new_queue(self: Arc<Self>) -> Result<Arc<dyn BackendQueue>>;
    /// Host memory for asynchronous transfers with this device, aligned to at
    /// least `align` (and 64) bytes: page-locked where the backend can.
    fn alloc_host(&self, bytes: usize, align: usize) -> Result<Arc<dyn HostMemory>> {
        cpu::heap_memory(bytes, align, &self.info().label())
    }
    /// The kernel's own limits on this device (see [`crate::KernelInfo`]); the
    /// kernel is already built ([`Backend::build`] succeeded). The default suits
    /// devices with no per-kernel limits: the device's block limit, no local
    /// memory, the SIMD width as the block multiple.
    fn kernel_info(&self, _kernel: &Kernel) -> Result<crate::KernelInfo> {
        let info = self.info();
        let max_block = info.max_threads_per_block;
        Ok(crate::KernelInfo {
            max_block,
            registers: None,
            local_bytes: 0,
            private_bytes: None,
            block_multiple: info.warp_size.max(1),
            suggested_block: crate::KernelInfo::default_suggestion(max_block, info.warp_size),
            source: "CPU backend",
        })
    }
    /// Run the kernel to completion.
    fn launch(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &[RawArg<'_>]) -> Result<Timing>;
    /// Release driver resources.
    fn close(&self) -> Result<()>;
}

/// Result of probing one backend: its devices, or why it is unavailable.
pub(crate) type Discovery = std::result::Result<Vec<std::sync::Arc<dyn Backend>>, String>;

/// Error for a `DeviceMemory` that is not this backend's (a bug above; never expected).
#[allow(dead_code)]
pub(crate) fn foreign_memory(info: &DeviceInfo) -> Error {
    Error::ForeignBuffer {
        what: "device memory".into(),
        owner: "another backend".into(),
        device: info.label(),
    }
}
