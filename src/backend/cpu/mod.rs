//! The native CPU backend: host memory, a persistent worker pool, Rust kernels.
//!
//! Always compiled and always available. "Device memory" is 64-byte aligned,
//! zero-initialised host memory; copies are `memcpy` (spread over the pool when
//! large); a launch spreads the grid's blocks over the pool and calls the kernel's
//! Rust function once per contiguous block range. There is no device clock: every
//! record is host-timed.

mod memory;
pub(crate) use memory::BorrowedHost;
pub(crate) mod pool;
mod queue;
mod sysinfo;

use std::sync::Arc;

use memory::CpuMemory;
use pool::Pool;

use crate::backend::queue::{BackendQueue, HostMemory};
use crate::backend::{Backend, DeviceMemory, Discovery, RawArg, Timing};
use crate::cpu_ctx::{CpuArg, CpuArgs, CpuCtx};
use crate::device::DeviceInfo;
use crate::error::{BackendKind, Error, Result};
use crate::kernel::Kernel;
use crate::launch::LaunchConfig;

/// Copies at least this large are split over the pool.
const PARALLEL_COPY_BYTES: usize = 8 << 20;
/// Chunk of a parallel copy.
const COPY_CHUNK: usize = 1 << 20;

pub(crate) struct CpuBackend {
    info: DeviceInfo,
    pool: Pool,
}

/// The CPU device with `threads` threads (`None`: one per core).
pub(crate) fn discover(threads: Option<usize>) -> Discovery {
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = Pool::new(threads).map_err(|e| format!("cannot start {threads} worker threads: {e}"))?;
    let sys = sysinfo::read();
    let info = DeviceInfo {
        backend: BackendKind::Cpu,
        index: 0,
        name: sys.model,
        vendor: sys.vendor,
        driver_version: format!("offload native {}", env!("CARGO_PKG_VERSION")),
        compute_units: pool.threads() as u32,
        warp_size: sys.simd_f32_lanes,
        max_threads_per_block: 1 << 16,
        max_block_dims: [1 << 16; 3],
        max_grid_dims: [u32::MAX; 3],
        max_global_size: 1 << 40,
        global_mem_bytes: sys.mem_bytes,
        local_mem_bytes: 1 << 20,
        max_alloc_bytes: sys.mem_bytes,
        compute_capability: None,
        requires_uniform_blocks: false,
        host_cpu: true,
        view_align_bytes: 1,
    };
    Ok(vec![Arc::new(CpuBackend { info, pool }) as Arc<dyn Backend>])
}

/// Where CPU-device memory lives on the host.
#[derive(Clone, Copy)]
pub(crate) struct HostView {
    ptr: *mut u8,
    bytes: usize,
}

impl HostView {
    /// Base pointer.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }
    /// Size in bytes.
    pub(crate) fn byte_len(&self) -> usize {
        self.bytes
    }
}

/// Aligned, zeroed heap memory for host transfers (the default for every backend
/// that has no page-locked memory).
pub(crate) fn heap_memory(bytes: usize, align: usize, device: &str) -> Result<Arc<dyn HostMemory>> {
    let m = CpuMemory::zeroed(bytes, align).ok_or(Error::OutOfMemory {
        device: device.to_string(),
        requested: bytes as u64,
        limit_name: "available host memory",
        limit: usize::MAX as u64,
    })?;
    Ok(Arc::new(m))
}

impl CpuBackend {
    /// Host address and length of memory the CPU device can use (its own
    /// allocations and host memory used in place).
    pub(crate) fn mem(&self, m: &dyn DeviceMemory) -> Result<HostView> {
        match m.host_ptr() {
            Some(ptr) => Ok(HostView {
                ptr,
                bytes: m.byte_len(),
            }),
            None => Err(crate::backend::foreign_memory(&self.info)),
        }
    }

    /// Copy `len` bytes from `src` to `dst`, in parallel when large.
    pub(crate) fn copy(&self, src: *const u8, dst: *mut u8, len: usize) {
        struct Ptrs(*const u8, *mut u8);
        // SAFETY: the chunks written are disjoint and both regions outlive the call.
        unsafe impl Sync for Ptrs {}
        let p = Ptrs(src, dst);
        if len < PARALLEL_COPY_BYTES || self.pool.threads() == 1 {
            // SAFETY: callers pass valid, non-overlapping regions of `len` bytes.
            unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
            return;
        }
        let chunks = len.div_ceil(COPY_CHUNK) as u64;
        let f = |r: std::ops::Range<u64>| {
            let s = r.start as usize * COPY_CHUNK;
            let e = (r.end as usize * COPY_CHUNK).min(len);
            let p = &p;
            // SAFETY: `s..e` lies inside both regions; chunks never overlap.
            unsafe { std::ptr::copy_nonoverlapping(p.0.add(s), p.1.add(s), e - s) };
        };
        // A memcpy cannot panic, so the result is always Ok.
        let _ = self.pool.run(chunks, 4, &f);
    }
}

impl Backend for CpuBackend {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn alloc(&self, bytes: usize, align: usize) -> Result<Box<dyn DeviceMemory>> {
        let m = CpuMemory::zeroed(bytes, align).ok_or(Error::OutOfMemory {
            device: self.info.label(),
            requested: bytes as u64,
            limit_name: "available host memory",
            limit: self.info.global_mem_bytes,
        })?;
        Ok(Box::new(m))
    }

    fn write(&self, mem: &dyn DeviceMemory, offset: usize, src: &[u8]) -> Result<Timing> {
        let m = self.mem(mem)?;
        debug_assert!(offset + src.len() <= m.byte_len());
        // Bounds were checked by the public layer; `ptr()` is valid for `byte_len`.
        self.copy(src.as_ptr(), m.ptr().wrapping_add(offset), src.len());
        Ok(Timing::HOST)
    }

    fn read(&self, mem: &dyn DeviceMemory, offset: usize, dst: &mut [u8]) -> Result<Timing> {
        let m = self.mem(mem)?;
        debug_assert!(offset + dst.len() <= m.byte_len());
        self.copy(m.ptr().wrapping_add(offset), dst.as_mut_ptr(), dst.len());
        Ok(Timing::HOST)
    }

    fn builds_at_once(&self) -> bool {
        true
    }

    fn build(&self, _kernel: &Kernel) -> Result<Timing> {
        // Rust kernels are compiled with the crate: nothing to build.
        Ok(Timing::HOST)
    }

    fn new_queue(self: Arc<Self>) -> Result<Arc<dyn BackendQueue>> {
        Ok(Arc::new(queue::CpuQueue::new(self)))
    }

    fn launch(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &[RawArg<'_>]) -> Result<Timing> {
        if kernel.cpu_fn().is_none() && kernel.cpu_group_fn().is_none() {
            return Err(kernel.no_implementation(BackendKind::Cpu, &self.info.label()));
        }
        let mut fixed = [CpuArg::Local { bytes: 0 }; 16];
        let mut heap = Vec::new();
        let many = args.len() > fixed.len();
        for (i, a) in args.iter().enumerate() {
            let c = match a {
                RawArg::Buffer {
                    mem,
                    offset,
                    len,
                    writable,
                } => {
                    let m = self.mem(*mem)?;
                    if offset.checked_add(*len).is_none_or(|end| end > m.byte_len()) {
                        return Err(Error::InvalidInput(format!(
                            "view {offset}..+{len} outside an allocation of {} bytes",
                            m.byte_len()
                        )));
                    }
                    CpuArg::Buf {
                        // In bounds (checked above): a view's first byte.
                        ptr: m.ptr().wrapping_add(*offset),
                        bytes: *len,
                        writable: *writable,
                    }
                }
                RawArg::Scalar(s) => CpuArg::Scalar(*s),
                RawArg::Local(bytes) => CpuArg::Local { bytes: *bytes },
            };
            if many {
                heap.push(c);
            } else {
                fixed[i] = c;
            }
        }
        let cargs = CpuArgs(if many { &heap } else { &fixed[..args.len()] });
        // Validated by the public layer: grid × block fits in 64 bits.
        let blocks = cfg.blocks().unwrap_or(0);
        let tpb = cfg.threads_per_block().max(1);
        // Aim for ~8 chunks per thread, each at least the kernel's grain of items,
        // for balance without per-chunk overhead dominating.
        let min_blocks = (kernel.cpu_grain() as u64 / tpb).max(1);
        let grain = (blocks / (self.pool.threads() as u64 * 8)).max(min_blocks);
        let name = kernel.name();
        let params = kernel.params();
        let result = if let Some(f) = kernel.cpu_fn() {
            let body = |r: std::ops::Range<u64>| {
                let ctx = CpuCtx::new(name, params, &cargs, r, cfg);
                f(&ctx);
            };
            self.pool.run(blocks, grain, &body)
        } else if let Some(f) = kernel.cpu_group_fn() {
            // Work-groups: one call per group; each worker runs its chunks of groups
            // with its own local memory.
            let mut local_at = Vec::with_capacity(cargs.0.len());
            let lines = crate::cpu_group::layout(cargs.0, &mut local_at);
            let launch = crate::cpu_group::GroupLaunch {
                f: &**f,
                kernel: name,
                params,
                extents: kernel.extents(),
                args: &cargs,
                cfg,
                local_at: &local_at,
                lines,
            };
            let body = |r: std::ops::Range<u64>| launch.run(r);
            self.pool.run(blocks, grain, &body)
        } else {
            Ok(())
        };
        result.map_err(|message| Error::KernelPanic {
            kernel: name.to_string(),
            message,
        })?;
        Ok(Timing::HOST)
    }

    fn close(&self) -> Result<()> {
        self.pool.shutdown();
        Ok(())
    }
}
