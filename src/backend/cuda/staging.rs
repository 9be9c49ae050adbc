//! Page-locked (pinned) host staging buffers and the pipelined copies through them.
//!
//! A host ↔ device copy from ordinary (pageable) host memory cannot be DMA'd
//! directly, so every transfer goes through a small set of pinned slots owned by
//! one stream ("lane"): the caller's bytes are copied into a slot by the CPU
//! (spread over a few threads for large chunks, since one core copies slower than
//! a PCIe 5 link), and the slot is DMA'd asynchronously on the lane's stream. With
//! [`SLOTS`] slots of [`CHUNK`] bytes, the CPU fills slot k+1 while the DMA engine
//! drains slot k, so a large copy streams at the lower of the two rates and needs
//! only `SLOTS × CHUNK` bytes of pinned memory however large it is.
//!
//! Each slot has an event recorded after its DMA; a slot is reused only after its
//! event completed. Every copy ends with the stream synchronised, so on return no
//! DMA is still reading or writing a slot (error paths synchronise too, ignoring
//! a second error, before returning the first). Timing comes from two events
//! around the whole copy on the device clock.
//!
//! This module touches only pinned host memory, events and async memcpy calls on
//! the lane's stream.

use std::sync::Arc;

use cudarc::driver::sys::{CUdeviceptr, CUevent_flags};
use cudarc::driver::{CudaContext, CudaEvent, CudaStream, DriverError, PinnedHostSlice, result};

use crate::backend::cpu::pool::Pool;

/// Bytes per staging slot.
pub(crate) const CHUNK: usize = 8 << 20;
/// Slots per lane (triple buffering: one filling, up to two in flight).
pub(crate) const SLOTS: usize = 3;
/// Chunks at least this large are copied on the host by several threads.
const PARALLEL_BYTES: usize = 1 << 20;

/// One pinned slot and the event marking the end of its last DMA.
struct Slot {
    /// Owns the pinned memory (freed on drop, after its event completed).
    _host: PinnedHostSlice<u8>,
    /// Base of `host`, cached (the slice's own accessor synchronises an event each call).
    ptr: *mut u8,
    done: CudaEvent,
}

// SAFETY: `ptr` points into `host`, which this slot owns; the memory is page-locked
// host memory that stays valid until `_host` is dropped, and the slot is only used
// by the thread holding its lane's lock.
unsafe impl Send for Slot {}

/// The pinned slots of one lane, allocated on first use.
pub(crate) struct Staging {
    ctx: Arc<CudaContext>,
    slots: Vec<Slot>,
}

impl Staging {
    /// No slots yet; they are allocated by the first copy that needs them.
    pub(crate) fn new(ctx: Arc<CudaContext>) -> Staging {
        Staging {
            ctx,
            slots: Vec::with_capacity(SLOTS),
        }
    }

    /// Make sure the slots for a copy of `bytes` bytes exist (at most [`SLOTS`]).
    pub(crate) fn reserve(&mut self, bytes: usize) -> Result<(), DriverError> {
        let n = bytes.div_ceil(CHUNK).min(SLOTS);
        while self.slots.len() < n {
            // SAFETY: the memory is uninitialised but only ever written by a host copy
            // or a DMA before it is read, and only `len` written bytes are read.
            let mut host = unsafe { self.ctx.alloc_pinned_with_flags::<u8>(CHUNK, 0) }?;
            let ptr = host.as_mut_ptr()?;
            let done = self.ctx.new_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))?;
            self.slots.push(Slot { _host: host, ptr, done });
        }
        Ok(())
    }

    /// Host → device: copy `src` to device address `dst` through the slots on
    /// `stream`, timed by `start`/`end`. Returns the device time in nanoseconds.
    pub(crate) fn upload(
        &mut self,
        pool: Option<&Pool>,
        stream: &CudaStream,
        (start, end): (&CudaEvent, &CudaEvent),
        dst: CUdeviceptr,
        src: &[u8],
    ) -> Result<u64, DriverError> {
        self.reserve(src.len())?;
        let r = (|| {
            start.record(stream)?;
            for (k, piece) in src.chunks(CHUNK).enumerate() {
                let slot = &self.slots[k % self.slots.len()];
                if k >= self.slots.len() {
                    // The slot's previous DMA must have finished reading it.
                    slot.done.synchronize()?;
                }
                host_copy(pool, piece.as_ptr(), slot.ptr, piece.len());
                let at = dst + (k * CHUNK) as u64;
                // SAFETY: `slot.ptr` holds `piece.len()` initialised pinned bytes that stay
                // untouched until `slot.done` completes; `at..at + len` lies inside the
                // destination allocation (checked by the caller).
                let staged = unsafe { std::slice::from_raw_parts(slot.ptr as *const u8, piece.len()) };
                // SAFETY: see above; the stream belongs to the context that owns `dst`.
                unsafe { result::memcpy_htod_async(at, staged, stream.cu_stream()) }?;
                slot.done.record(stream)?;
            }
            end.record(stream)?;
            end.synchronize()?;
            elapsed_ns(start, end)
        })();
        finish(stream, r)
    }

    /// Device → host: copy from device address `src` into `dst` through the slots
    /// on `stream`, timed by `start`/`end`. Returns the device time in nanoseconds.
    pub(crate) fn download(
        &mut self,
        pool: Option<&Pool>,
        stream: &CudaStream,
        (start, end): (&CudaEvent, &CudaEvent),
        src: CUdeviceptr,
        dst: &mut [u8],
    ) -> Result<u64, DriverError> {
        let len = dst.len();
        let chunks = len.div_ceil(CHUNK);
        self.reserve(len)?;
        let r = (|| {
            let nslots = self.slots.len();
            let enqueue = |k: usize, slot: &Slot| -> Result<(), DriverError> {
                let n = CHUNK.min(len - k * CHUNK);
                // SAFETY: the slot has `CHUNK >= n` bytes; nothing reads it until
                // `slot.done` completes; `src + k*CHUNK .. + n` lies inside the allocation.
                let staging = unsafe { std::slice::from_raw_parts_mut(slot.ptr, n) };
                // SAFETY: as above; the stream belongs to the context that owns `src`.
                unsafe { result::memcpy_dtoh_async(staging, src + (k * CHUNK) as u64, stream.cu_stream()) }?;
                slot.done.record(stream)
            };
            start.record(stream)?;
            for k in 0..chunks.min(nslots) {
                enqueue(k, &self.slots[k])?;
            }
            end.record(stream)?;
            for (k, piece) in dst.chunks_mut(CHUNK).enumerate() {
                let slot = &self.slots[k % nslots];
                slot.done.synchronize()?;
                host_copy(pool, slot.ptr as *const u8, piece.as_mut_ptr(), piece.len());
                let next = k + nslots;
                if next < chunks {
                    enqueue(next, slot)?;
                    // Move the end marker behind the newest DMA.
                    end.record(stream)?;
                }
            }
            end.synchronize()?;
            elapsed_ns(start, end)
        })();
        finish(stream, r)
    }
}

/// On error, wait for whatever was enqueued (so no DMA still uses a slot) and
/// return the first error.
fn finish(stream: &CudaStream, r: Result<u64, DriverError>) -> Result<u64, DriverError> {
    if r.is_err() {
        let _ = stream.synchronize();
    }
    r
}

/// Device time between two completed events, in nanoseconds.
pub(crate) fn elapsed_ns(start: &CudaEvent, end: &CudaEvent) -> Result<u64, DriverError> {
    // SAFETY: both events are live, were created with timing enabled, were recorded
    // on the same stream, and `end` (hence `start`) has completed.
    let ms = unsafe { result::event::elapsed(start.cu_event(), end.cu_event()) }?;
    Ok((ms.max(0.0) as f64 * 1e6) as u64)
}

struct Ptrs(*const u8, *mut u8);
// SAFETY: the pieces copied by different threads are disjoint, and both regions
// outlive the `Pool::run` call that uses them (it returns only when all pieces are done).
unsafe impl Sync for Ptrs {}

/// Copy `len` bytes from `src` to `dst` on the host, spread over `pool` when large.
fn host_copy(pool: Option<&Pool>, src: *const u8, dst: *mut u8, len: usize) {
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
