//! Page-locked (pinned) host memory and the host-side copies through it.
//!
//! A host ↔ device copy from ordinary (pageable) host memory cannot be DMA'd
//! directly, so a queue stages it through pinned blocks ([`Pinned`]): the
//! caller's bytes are copied into a block by the CPU (spread over a few threads
//! for large pieces, since one core copies slower than a PCIe 5 link) and the
//! block is DMA'd asynchronously on the queue's stream. A copy is cut into pieces
//! of at most [`CHUNK`] bytes, and each queue keeps at most [`BUDGET`] bytes of
//! staging blocks, so the CPU fills one block while the DMA engine drains
//! another, and a copy of any size needs a bounded amount of pinned memory (the
//! queue's bookkeeping is in `queue.rs`).
//!
//! The same [`Pinned`] type is the page-locked memory behind a `HostBuffer`
//! (`cuMemHostAlloc`, freed with `cuMemFreeHost` in `Drop` with the context current).

use std::any::Any;
use std::sync::Arc;

use cudarc::driver::sys::CU_MEMHOSTALLOC_PORTABLE;
use cudarc::driver::{CudaContext, DriverError, result};

use super::memory::{bind, bind_quietly};
use crate::backend::cpu::pool::Pool;
use crate::backend::queue::HostMemory;

/// Largest piece of one staged copy, in bytes.
pub(crate) const CHUNK: usize = 8 << 20;
/// Staging memory one queue keeps at most, in bytes (four pieces: one filling,
/// up to three in flight).
pub(crate) const BUDGET: usize = 4 * CHUNK;
/// Smallest staging block, in bytes (small copies share this size class).
pub(crate) const MIN_BLOCK: usize = 64 << 10;
/// Pieces at least this large are copied on the host by several threads.
const PARALLEL_BYTES: usize = 1 << 20;

/// One page-locked host allocation of this context (`cuMemHostAlloc`, portable
/// to every context), freed with `cuMemFreeHost` on drop.
pub(crate) struct Pinned {
    ctx: Arc<CudaContext>,
    ptr: *mut u8,
    /// Bytes requested (what `HostMemory::byte_len` reports).
    len: usize,
    /// Bytes allocated (at least `len`, at least 1).
    cap: usize,
}

// `ptr` is page-locked host memory owned by this value (no other owner),
// valid until `Drop`; the value hands out only a raw pointer, and every user
// (staging copies under the queue's lock, `HostBuffer`'s exclusive access, DMA
// ordered by events) synchronises its accesses.
// SAFETY: sole owner of the pinned memory; accesses synchronised as above.
unsafe impl Send for Pinned {}
// SAFETY: as above; shared references only read the pointer and the sizes.
unsafe impl Sync for Pinned {}

impl Pinned {
    /// `len` bytes of uninitialised page-locked memory (at least 1 byte is allocated).
    pub(crate) fn alloc(ctx: &Arc<CudaContext>, len: usize) -> Result<Pinned, DriverError> {
        let cap = len.max(1);
        bind(ctx)?;
        // SAFETY: the context is current; the memory is only handed out as a raw
        // pointer, and every reader writes it first (staging) or zero-fills it
        // (`alloc_host`).
        let ptr = unsafe { result::malloc_host(cap, CU_MEMHOSTALLOC_PORTABLE) }? as *mut u8;
        if ptr.is_null() {
            return Err(DriverError(cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY));
        }
        Ok(Pinned {
            ctx: ctx.clone(),
            ptr,
            len,
            cap,
        })
    }

    /// Base pointer.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Bytes allocated.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // Callers drop pinned memory only once no DMA uses it (its stream's event
        // completed, or the stream was synchronised).
        bind_quietly(&self.ctx);
        // SAFETY: `ptr` came from `cuMemHostAlloc` and is freed exactly once, here.
        let freed = unsafe { result::free_host(self.ptr as *mut std::ffi::c_void) };
        self.ctx.record_err(freed);
    }
}

impl HostMemory for Pinned {
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

struct Ptrs(*const u8, *mut u8);
// SAFETY: the pieces copied by different threads are disjoint, and both regions
// outlive the `Pool::run` call that uses them (it returns only when all pieces are done).
unsafe impl Sync for Ptrs {}

/// Copy `len` bytes from `src` to `dst` on the host, spread over `pool` when large.
///
/// The caller passes two valid, non-overlapping regions of `len` bytes.
pub(crate) fn host_copy(pool: Option<&Pool>, src: *const u8, dst: *mut u8, len: usize) {
    let threads = pool.map_or(1, |p| p.threads());
    match pool {
        Some(pool) if len >= PARALLEL_BYTES && threads > 1 => {
            // Pieces of at least 256 KiB, aligned to 4 KiB.
            let piece = len.div_ceil(threads).max(256 << 10).next_multiple_of(4096);
            let pieces = len.div_ceil(piece) as u64;
            let p = Ptrs(src, dst);
            let f = |r: std::ops::Range<u64>| {
                let p = &p;
                for i in r {
                    let s = i as usize * piece;
                    let e = (s + piece).min(len);
                    // SAFETY: `s..e` lies inside both regions (each `len` bytes long) and
                    // the pieces never overlap; the regions do not overlap each other.
                    unsafe { std::ptr::copy_nonoverlapping(p.0.add(s), p.1.add(s), e - s) };
                }
            };
            if pool.run(pieces, 1, &f).is_err() {
                // A memcpy cannot panic; if a piece was skipped anyway, redo the copy inline.
                // SAFETY: as below.
                unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
            }
        }
        _ => {
            // SAFETY: the caller passes two valid, non-overlapping regions of `len` bytes.
            unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        }
    }
}

/// Fill `dst` with `pattern` repeated from its first byte (by doubling copies).
pub(crate) fn fill_pattern(dst: &mut [u8], pattern: &[u8]) {
    let p = pattern.len().min(dst.len());
    dst[..p].copy_from_slice(&pattern[..p]);
    let mut filled = p;
    while filled < dst.len() && filled > 0 {
        // `filled` is a multiple of the pattern length, so the phase is kept.
        let n = filled.min(dst.len() - filled);
        dst.copy_within(0..n, filled);
        filled += n;
    }
}

#[cfg(test)]
mod tests {
    use super::fill_pattern;

    #[test]
    fn fill_pattern_repeats_from_the_first_byte() {
        for plen in [1usize, 2, 3, 4, 8, 12, 128] {
            let pattern: Vec<u8> = (0..plen as u8).map(|b| b.wrapping_mul(7).wrapping_add(1)).collect();
            for n in [0usize, plen, plen * 5, plen * 1000] {
                let mut dst = vec![0u8; n];
                fill_pattern(&mut dst, &pattern);
                let want: Vec<u8> = pattern.iter().copied().cycle().take(n).collect();
                assert_eq!(dst, want, "pattern {plen} bytes, {n} bytes");
            }
        }
    }
}
