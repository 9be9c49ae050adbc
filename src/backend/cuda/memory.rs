//! Device allocations and the checked copies in and out of them.
//!
//! An allocation is a `cudarc` [`CudaSlice<u8>`], which owns the device pointer
//! and frees it on drop (stream-ordered `cuMemFreeAsync` on the backend's
//! allocation stream where the device has memory pools, `cuMemFree` otherwise;
//! errors are recorded in the context, never panicked on). Queues use an
//! allocation on their own streams asynchronously, but the public layer keeps
//! every allocation a command uses alive until the host has seen that command's
//! event complete, so when a [`CudaMemory`] is dropped no stream can still use
//! it and `Drop` needs no stream ordering of its own; `cudarc`'s per-slice event
//! tracking is therefore switched off for the context (see `CudaBackend::open`).
//! Dropping a [`CudaMemory`] first makes the context current on the dropping
//! thread, which may never have used CUDA.
//!
//! Before allocating, free device memory is read with `cuMemGetInfo`; a request
//! above it is [`Error::OutOfMemory`] with limit "free device memory", and so is a
//! `CUDA_ERROR_OUT_OF_MEMORY` from the driver. New memory is zero-filled.

use std::any::Any;

use cudarc::driver::sys::CUdeviceptr;
use cudarc::driver::{CudaContext, CudaSlice, result};

use super::CudaBackend;
use super::error::{map_driver_err, out_of_memory};
use crate::backend::DeviceMemory;
use crate::error::{Error, Result};

/// One device allocation (none for zero bytes).
pub(crate) struct CudaMemory {
    slice: Option<CudaSlice<u8>>,
    ptr: CUdeviceptr,
    bytes: usize,
    ordinal: usize,
}

impl CudaMemory {
    /// Device address of the first byte (0 for an empty allocation).
    pub(crate) fn device_ptr(&self) -> CUdeviceptr {
        self.ptr
    }

    /// Ordinal of the device that owns it.
    pub(crate) fn ordinal(&self) -> usize {
        self.ordinal
    }
}

impl Drop for CudaMemory {
    fn drop(&mut self) {
        // `CudaSlice`'s own Drop frees with `cuMemFreeAsync` (or `cuMemFree`) without
        // making its context current first, and a buffer may be dropped on a thread
        // that never called the driver (no current context) or has another device's
        // context current. Stream-ordered calls check the current context against the
        // stream's, so the free could fail there (CUDA_ERROR_INVALID_CONTEXT), leak
        // the memory, and the error cudarc records would surface at the next
        // unrelated call on this device (`bind_to_thread` returns it). Bind first.
        if let Some(slice) = &self.slice {
            bind_quietly(slice.context());
        }
    }
}

/// Make `ctx` current on this thread unless it already is (without touching the
/// error recorded in the context, unlike `CudaContext::bind_to_thread`).
pub(crate) fn bind(ctx: &CudaContext) -> std::result::Result<(), cudarc::driver::DriverError> {
    match result::ctx::get_current()? {
        Some(current) if current == ctx.cu_ctx() => Ok(()),
        // SAFETY: `ctx` is alive (borrowed) and owns its retained primary context, so
        // `cu_ctx()` is a valid context handle; making it current frees nothing.
        _ => unsafe { result::ctx::set_current(ctx.cu_ctx()) },
    }
}

/// Make `ctx` current on this thread for a `Drop`: never panics, and (unlike
/// `CudaContext::bind_to_thread`) does not consume an error recorded earlier in
/// the context; a failure is recorded there for `close`/`check_err` to report.
pub(crate) fn bind_quietly(ctx: &CudaContext) {
    match result::ctx::get_current() {
        Ok(Some(current)) if current == ctx.cu_ctx() => {}
        // SAFETY: `ctx` is alive (borrowed) and owns its retained primary context, so
        // `cu_ctx()` is a valid context handle; making it current frees nothing.
        _ => ctx.record_err(unsafe { result::ctx::set_current(ctx.cu_ctx()) }),
    }
}

impl DeviceMemory for CudaMemory {
    fn byte_len(&self) -> usize {
        self.bytes
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl std::fmt::Debug for CudaMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaMemory({} bytes at {:#x} on cuda:{}, live: {})",
            self.bytes,
            self.ptr,
            self.ordinal,
            self.slice.is_some()
        )
    }
}

impl CudaBackend {
    /// Allocate `bytes` zero-filled bytes.
    pub(crate) fn alloc_memory(&self, bytes: usize) -> Result<CudaMemory> {
        let label = &self.label;
        if bytes == 0 {
            return Ok(CudaMemory {
                slice: None,
                ptr: 0,
                bytes: 0,
                ordinal: self.ordinal,
            });
        }
        let (free, _total) = self
            .ctx
            .mem_get_info()
            .map_err(|e| map_driver_err(e, label, "cuMemGetInfo", ""))?;
        if bytes > free {
            return Err(out_of_memory(label, bytes as u64, free as u64));
        }
        let stream = &self.alloc_stream;
        // SAFETY: the memory is uninitialised, and is zero-filled below before any use.
        let slice = unsafe { stream.alloc::<u8>(bytes) }.map_err(|e| match e.0 {
            cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                let free = self.ctx.mem_get_info().map_or(free, |(f, _)| f);
                out_of_memory(label, bytes as u64, free as u64)
            }
            _ => map_driver_err(e, label, "cuMemAlloc", ""),
        })?;
        let mut slice = slice;
        let zeroed = stream.memset_zeros(&mut slice).and_then(|()| stream.synchronize());
        if let Err(e) = zeroed {
            // `slice` is dropped here (freed), after the stream was synchronised or failed.
            let _ = stream.synchronize();
            return Err(map_driver_err(e, label, "cuMemsetD8Async (zero fill)", ""));
        }
        let ptr = {
            use cudarc::driver::DevicePtr;
            let (p, _no_event) = slice.device_ptr(stream);
            p
        };
        Ok(CudaMemory {
            slice: Some(slice),
            ptr,
            bytes,
            ordinal: self.ordinal,
        })
    }

    /// The allocation behind `mem`, if it is this device's.
    pub(crate) fn cuda_mem<'a>(&self, mem: &'a dyn DeviceMemory) -> Result<&'a CudaMemory> {
        match mem.as_any().downcast_ref::<CudaMemory>() {
            Some(m) if m.ordinal() == self.ordinal => Ok(m),
            _ => Err(crate::backend::foreign_memory(&self.info)),
        }
    }

    /// Check that `offset..offset + len` lies inside `m`.
    pub(crate) fn check_range(&self, what: &str, m: &CudaMemory, offset: usize, len: usize) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= m.bytes => Ok(()),
            _ => Err(Error::LengthMismatch {
                what: format!("{what} at byte offset {offset} on {}", self.info.label()),
                host: len,
                buffer: m.bytes.saturating_sub(offset),
            }),
        }
    }
}
