//! The CUDA backend over `cudarc` (driver API and NVRTC, both loaded at run time).
//!
//! One [`CudaBackend`] per device: the device's primary context, a few
//! non-blocking streams ("lanes", [`LANES`]), a module cache, and pinned staging
//! memory per lane. The five stages map onto it as follows:
//!
//! 1. **init** — [`discover`] probes `libcuda` and `libnvrtc` before any other
//!    call (`discover.rs`); kernels are NVRTC-compiled for the device's
//!    architecture, cached as PTX on disk and as loaded modules per device
//!    (`module.rs`);
//! 2. **host → device** — zero-filled allocations checked against free memory,
//!    copies through pinned staging slots, asynchronous on a lane's stream
//!    (`memory.rs`, `staging.rs`);
//! 3. **launch** — `cuLaunchKernel` with grid, block and dynamic shared memory,
//!    checked against the device and the function (`launch.rs`);
//! 4. **device → host** — pipelined through the staging slots;
//! 5. **teardown** — `close` drops modules and staging memory; allocations,
//!    streams and the context are freed by `cudarc`'s own `Drop`s, which record
//!    driver errors instead of panicking.
//!
//! Every call picks a free lane (the first unlocked one), so two host threads
//! overlap, e.g., one thread's upload with another's kernel; each call completes
//! before returning (the backend contract) and is timed on the device clock by
//! two events on its lane. Driver codes become crate errors in `error.rs` only.

mod discover;
pub(crate) mod error;
mod launch;
mod memory;
mod module;
mod staging;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream, DriverError};
use parking_lot::{Mutex, MutexGuard};

pub(crate) use discover::discover;
use error::map_driver_err;
use module::ModuleCache;
use staging::Staging;

use crate::backend::cpu::pool::Pool;
use crate::backend::{Backend, DeviceMemory, Timing};
use crate::device::DeviceInfo;
use crate::error::Result;
use crate::kernel::Kernel;
use crate::launch::LaunchConfig;

/// Streams per device.
pub(crate) const LANES: usize = 4;
/// Most host threads used to fill or drain staging slots.
const MAX_COPY_THREADS: usize = 8;

/// One stream with its timing events and pinned staging slots.
pub(crate) struct Lane {
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) start: CudaEvent,
    pub(crate) end: CudaEvent,
    pub(crate) staging: Staging,
}

/// The lanes of a device; a call takes the first free one.
pub(crate) struct Lanes {
    lanes: Vec<Mutex<Lane>>,
    /// Round-robin choice of the lane to wait for when all are busy.
    next: AtomicUsize,
}

impl Lanes {
    /// The first unlocked lane (a single host thread always gets lane 0, so its
    /// staging memory is allocated once); when all are busy, wait for one in turn.
    pub(crate) fn acquire(&self) -> MutexGuard<'_, Lane> {
        for l in &self.lanes {
            if let Some(g) = l.try_lock() {
                return g;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        self.lanes[i].lock()
    }
}

/// One CUDA device.
pub(crate) struct CudaBackend {
    info: DeviceInfo,
    /// `cuda:N`, kept for messages (no formatting on the launch path).
    label: String,
    ordinal: usize,
    ctx: Arc<CudaContext>,
    lanes: Lanes,
    modules: ModuleCache,
    copy_pool: OnceLock<Option<Pool>>,
}

impl CudaBackend {
    /// Open device `ordinal`: context, streams, events, device facts.
    pub(crate) fn open(ordinal: usize, driver: &str) -> std::result::Result<CudaBackend, String> {
        let fail = |what: &str, e: DriverError| format!("{what} failed: {}", error::describe(e));
        let ctx = CudaContext::new(ordinal).map_err(|e| fail("creating the context", e))?;
        // SAFETY: called before any allocation of this context exists. Every operation
        // of this backend completes (its stream synchronised) before returning, so no
        // allocation is ever in use on one stream while another stream touches or
        // frees it: cudarc's per-slice event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let info = discover::device_info(&ctx, ordinal, driver).map_err(|e| fail("reading device attributes", e))?;
        let supported = crate::nvrtc::supported_archs().map_err(|e| e.to_string())?;
        let cc = info.compute_capability.unwrap_or((0, 0));
        let arch = module::choose_arch(cc, &supported)?;
        let mut lanes = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            let stream = ctx.new_stream().map_err(|e| fail("creating a stream", e))?;
            let timing = || ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT));
            let start = timing().map_err(|e| fail("creating an event", e))?;
            let end = timing().map_err(|e| fail("creating an event", e))?;
            lanes.push(Mutex::new(Lane {
                stream,
                start,
                end,
                staging: Staging::new(ctx.clone()),
            }));
        }
        tracing::debug!(device = %info.label(), name = %info.name, arch, "CUDA device opened");
        let modules = ModuleCache::new(arch, &info);
        Ok(CudaBackend {
            label: info.label(),
            info,
            ordinal,
            ctx,
            lanes: Lanes {
                lanes,
                next: AtomicUsize::new(0),
            },
            modules,
            copy_pool: OnceLock::new(),
        })
    }

    /// The host-copy pool for a transfer of `bytes` (started on first large transfer).
    fn copy_pool(&self, bytes: usize) -> Option<&Pool> {
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

    fn write(&self, mem: &dyn DeviceMemory, offset: usize, src: &[u8]) -> Result<Timing> {
        self.write_memory(mem, offset, src)
    }

    fn read(&self, mem: &dyn DeviceMemory, offset: usize, dst: &mut [u8]) -> Result<Timing> {
        self.read_memory(mem, offset, dst)
    }

    fn new_queue(self: std::sync::Arc<Self>) -> Result<std::sync::Arc<dyn crate::backend::queue::BackendQueue>> {
        Ok(crate::backend::queue::SyncQueue::arc(self))
    }

    fn build(&self, kernel: &Kernel) -> Result<Timing> {
        self.modules.get_or_build(&self.ctx, kernel, &self.label)?;
        Ok(Timing::HOST)
    }

    fn launch(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &[crate::backend::RawArg<'_>]) -> Result<Timing> {
        self.launch_kernel(kernel, cfg, args)
    }

    fn close(&self) -> Result<()> {
        let label = &self.label;
        let mut first: Option<DriverError> = None;
        for lane in &self.lanes.lanes {
            let mut l = lane.lock();
            if let Err(e) = l.stream.synchronize() {
                first.get_or_insert(e);
            }
            // Free the pinned slots now; the stream itself goes with the backend.
            l.staging = Staging::new(self.ctx.clone());
        }
        self.modules.clear();
        if let Some(Some(pool)) = self.copy_pool.get() {
            pool.shutdown();
        }
        // Errors recorded by cudarc's Drops (freeing pinned memory, unloading modules).
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
        // Everything is freed by the fields' own Drops (cudarc records driver errors
        // in the context instead of panicking); log what was recorded so far.
        if let Err(e) = self.ctx.check_err() {
            tracing::warn!(device = %self.info.label(), error = %error::describe(e), "CUDA error recorded before teardown");
        }
    }
}
