//! The CUDA backend over `cudarc` (driver API and NVRTC, both loaded at run time).
//!
//! One [`CudaBackend`] per device: the device's primary context, an allocation
//! stream, a pool of CUDA events, a module cache, and a few internal streams for
//! the synchronous calls. The five stages map onto it as follows:
//!
//! 1. **init** — [`discover`] probes `libcuda` and `libnvrtc` before any other
//!    call (`discover.rs`); kernels are NVRTC-compiled for the device's
//!    architecture, cached as PTX on disk and as loaded modules per device
//!    (`module.rs`);
//! 2. **host → device** — zero-filled allocations checked against free memory
//!    (`memory.rs`); copies through pinned staging blocks, asynchronous on a
//!    queue's stream (`queue.rs`, `staging.rs`);
//! 3. **launch** — `cuLaunchKernel` with grid, block and dynamic shared memory,
//!    checked against the device and the function (`launch.rs`), on a stream;
//! 4. **device → host** — pipelined through the staging blocks, or straight into
//!    page-locked `HostBuffer` memory (`cuMemHostAlloc`);
//! 5. **teardown** — `close` synchronises the context, then drops the internal
//!    streams, modules and staging memory; allocations and the context are freed
//!    by `cudarc`'s own `Drop`s, which record driver errors instead of panicking.
//!
//! Every queue ([`Backend::new_queue`]) is a native asynchronous CUDA stream
//! (`queue.rs`): commands return at once with an event pair timed on the device
//! clock. The synchronous [`Backend`] calls are the same commands on an internal
//! stream (the first unlocked of [`LANES`], so two host threads overlap) followed
//! by a wait: one path. Driver codes become crate errors in `error.rs` only.

mod discover;
pub(crate) mod error;
mod launch;
mod memory;
mod module;
mod queue;
mod staging;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use cudarc::driver::{CudaContext, CudaStream, DriverError, result};
use parking_lot::{Mutex, MutexGuard};

pub(crate) use discover::discover;
use error::map_driver_err;
pub(crate) use memory::CudaMemory;
use module::ModuleCache;
use queue::{CudaQueue, EventPool, Stream, StreamEvent};

use crate::backend::cpu::pool::Pool;
use crate::backend::queue::{BackendQueue, HostDst, HostMemory, MemRange, RawEvent};
use crate::backend::{Backend, DeviceMemory, RawArg, Timing};
use crate::device::DeviceInfo;
use crate::error::Result;
use crate::kernel::Kernel;
use crate::launch::LaunchConfig;

/// Internal streams per device, for the synchronous `Backend` calls.
pub(crate) const LANES: usize = 4;
/// Most host threads used to fill or drain staging blocks.
const MAX_COPY_THREADS: usize = 8;

/// One CUDA device.
pub(crate) struct CudaBackend {
    info: DeviceInfo,
    /// `cuda:N`, kept for messages and events (no formatting on the launch path).
    label: Arc<str>,
    ordinal: usize,
    ctx: Arc<CudaContext>,
    /// The stream allocations are made and zero-filled on (and freed on, stream-ordered).
    alloc_stream: Arc<CudaStream>,
    /// Idle CUDA events for queues' commands.
    events: Arc<EventPool>,
    /// Internal streams of the synchronous calls, created on first use; a call
    /// takes the first unlocked one.
    lanes: Vec<Mutex<Option<Stream>>>,
    /// Round-robin choice of the lane to wait for when all are busy.
    next: AtomicUsize,
    modules: ModuleCache,
    copy_pool: OnceLock<Option<Pool>>,
}

impl CudaBackend {
    /// Open device `ordinal`: context, allocation stream, device facts.
    pub(crate) fn open(ordinal: usize, driver: &str) -> std::result::Result<CudaBackend, String> {
        let fail = |what: &str, e: DriverError| format!("{what} failed: {}", error::describe(e));
        let ctx = CudaContext::new(ordinal).map_err(|e| fail("creating the context", e))?;
        // Called before any allocation of this context exists. cudarc's
        // per-slice events are not needed: the public layer orders every command that
        // uses an allocation after the commands it conflicts with (on any queue), and
        // keeps the allocation alive until the host has seen its last command complete,
        // so no stream uses an allocation when it is freed (see `memory.rs`).
        // SAFETY: no allocation exists yet, and the public layer orders and keeps alive every allocation's users (above).
        unsafe { ctx.disable_event_tracking() };
        let info = discover::device_info(&ctx, ordinal, driver).map_err(|e| fail("reading device attributes", e))?;
        let supported = crate::nvrtc::supported_archs().map_err(|e| e.to_string())?;
        let cc = info.compute_capability.unwrap_or((0, 0));
        let arch = module::choose_arch(cc, &supported)?;
        let alloc_stream = ctx.new_stream().map_err(|e| fail("creating a stream", e))?;
        tracing::debug!(device = %info.label(), name = %info.name, arch, "CUDA device opened");
        let modules = ModuleCache::new(arch, &info);
        Ok(CudaBackend {
            label: info.label().into(),
            info,
            ordinal,
            events: EventPool::new(ctx.clone()),
            ctx,
            alloc_stream,
            lanes: (0..LANES).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            modules,
            copy_pool: OnceLock::new(),
        })
    }

    /// A new stream of this device.
    pub(crate) fn new_stream(&self) -> Result<Stream> {
        Stream::new(&self.ctx, &self.events, &self.label)
    }

    /// The first unlocked internal lane (a single host thread always gets lane 0,
    /// so its staging memory is allocated once); when all are busy, wait for one in turn.
    fn acquire_lane(&self) -> MutexGuard<'_, Option<Stream>> {
        for l in &self.lanes {
            if let Some(g) = l.try_lock() {
                return g;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        self.lanes[i].lock()
    }

    /// Run one command on an internal stream and wait for it: the synchronous calls.
    fn on_lane(&self, f: impl FnOnce(&Stream) -> Result<Arc<StreamEvent>>) -> Result<Timing> {
        let mut lane = self.acquire_lane();
        let stream = match &mut *lane {
            Some(s) => s,
            slot @ None => slot.insert(self.new_stream()?),
        };
        let ev = f(stream)?;
        ev.wait()?;
        Ok(ev.device_ns().map_or(Timing::HOST, Timing::device))
    }

    /// The host-copy pool for a transfer of `bytes` (started on first large transfer).
    pub(crate) fn copy_pool(&self, bytes: usize) -> Option<&Pool> {
        if bytes < staging::CHUNK / 4 {
            return None;
        }
        self.copy_pool
            .get_or_init(|| {
                let threads = std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(MAX_COPY_THREADS);
                if threads < 2 {
                    return None;
                }
                Pool::new(threads)
                    .map_err(|e| tracing::warn!(error = %e, "no host copy threads; staging copies run on one thread"))
                    .ok()
            })
            .as_ref()
    }
}

impl Backend for CudaBackend {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn alloc(&self, bytes: usize, _align: usize) -> Result<Box<dyn DeviceMemory>> {
        Ok(Box::new(self.alloc_memory(bytes)?))
    }

    fn kernel_info(&self, kernel: &Kernel) -> Result<crate::KernelInfo> {
        use cudarc::driver::sys::CUfunction_attribute as A;
        let (built, _) = self.modules.get_or_build(&self.ctx, kernel, &self.label)?;
        let attr = |a: A| {
            built
                .func
                .get_attribute(a)
                .map(|v| v.max(0) as u32)
                .map_err(|e| map_driver_err(e, &self.label, "cuFuncGetAttribute", kernel.name()))
        };
        let max_block = attr(A::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?;
        let registers = attr(A::CU_FUNC_ATTRIBUTE_NUM_REGS)?;
        let private = attr(A::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?;
        let warp = self.info.warp_size.max(1);
        /// No dynamic shared memory at any block size.
        extern "C" fn no_dynamic_smem(_block: std::ffi::c_int) -> usize {
            0
        }
        let suggested = built
            .func
            .occupancy_max_potential_block_size(no_dynamic_smem, 0, max_block, None)
            .map(|(_, block)| block)
            .map_err(|e| map_driver_err(e, &self.label, "cuOccupancyMaxPotentialBlockSize", kernel.name()))?;
        Ok(crate::KernelInfo {
            max_block,
            registers: Some(registers),
            local_bytes: u64::from(built.static_smem),
            private_bytes: Some(u64::from(private)),
            block_multiple: warp,
            suggested_block: if suggested == 0 {
                crate::KernelInfo::default_suggestion(max_block, warp)
            } else {
                suggested
            },
            source: "cuFuncGetAttribute + cuOccupancyMaxPotentialBlockSize",
        })
    }

    fn write(&self, mem: &dyn DeviceMemory, offset: usize, src: &[u8]) -> Result<Timing> {
        let dst = MemRange {
            mem,
            offset,
            len: src.len(),
        };
        self.on_lane(|s| s.write(self, dst, src, &[]))
    }

    fn read(&self, mem: &dyn DeviceMemory, offset: usize, dst: &mut [u8]) -> Result<Timing> {
        let src = MemRange {
            mem,
            offset,
            len: dst.len(),
        };
        self.on_lane(|s| s.read(self, src, HostDst::Borrowed(dst), &[]))
    }

    fn new_queue(self: Arc<Self>) -> Result<Arc<dyn BackendQueue>> {
        Ok(Arc::new(CudaQueue::new(self)?))
    }

    fn alloc_host(&self, bytes: usize, align: usize) -> Result<Arc<dyn HostMemory>> {
        let p = staging::Pinned::alloc(&self.ctx, bytes).map_err(|e| crate::error::Error::Driver {
            backend: crate::BackendKind::Cuda,
            device: self.label.to_string(),
            operation: format!("allocating {bytes} bytes of page-locked host memory (cuMemHostAlloc)"),
            message: error::describe(e),
        })?;
        if !(p.as_ptr() as usize).is_multiple_of(align.max(64)) {
            // cuMemHostAlloc returns page-aligned memory; should it ever not, use the heap.
            return crate::backend::cpu::heap_memory(bytes, align, &self.label);
        }
        // SAFETY: the allocation holds `capacity()` bytes, owned by `p` and not yet
        // shared; zero-filling makes every byte initialised.
        unsafe { std::ptr::write_bytes(p.as_ptr(), 0, p.capacity()) };
        Ok(Arc::new(p))
    }

    fn build(&self, kernel: &Kernel) -> Result<Timing> {
        self.modules.get_or_build(&self.ctx, kernel, &self.label)?;
        Ok(Timing::HOST)
    }

    fn launch(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &[RawArg<'_>]) -> Result<Timing> {
        let prep = self.prepare_launch(kernel, cfg, args)?;
        self.on_lane(|s| s.launch(kernel, prep, &[]))
    }

    fn close(&self) -> Result<()> {
        let label = &self.label;
        let mut first: Option<DriverError> = None;
        // Wait for every stream of the context (queues included) before modules go.
        let synced = memory::bind(&self.ctx).and_then(|()| result::ctx::synchronize());
        if let Err(e) = synced {
            first.get_or_insert(e);
        }
        for lane in &self.lanes {
            // Drop the internal streams (synchronised first) and their staging memory.
            drop(lane.lock().take());
        }
        self.modules.clear();
        if let Some(Some(pool)) = self.copy_pool.get() {
            pool.shutdown();
        }
        // Errors recorded by the Drops (freeing pinned memory, unloading modules).
        if let Err(e) = self.ctx.check_err() {
            first.get_or_insert(e);
        }
        match first {
            None => Ok(()),
            Some(e) => Err(map_driver_err(e, label, "teardown", "")),
        }
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        // Everything is freed by the fields' own Drops (driver errors are recorded in
        // the context instead of panicking); log what was recorded so far.
        if let Err(e) = self.ctx.check_err() {
            tracing::warn!(device = %self.info.label(), error = %error::describe(e), "CUDA error recorded before teardown");
        }
    }
}
