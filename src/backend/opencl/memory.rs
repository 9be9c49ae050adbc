//! Device memory of the OpenCL backend: one `cl_mem` buffer per allocation.
//!
//! Allocations are `CL_MEM_READ_WRITE` buffers in the device's own context. A
//! zero-byte request still creates a one-byte buffer (OpenCL rejects empty
//! buffers) so that every [`ClMemory`] can be bound as a kernel argument; its
//! reported length stays zero. Contents start undefined (the backend contract
//! only asks for zero-filling where it is cheap, and on OpenCL it is an extra
//! device pass). Released on drop, never panicking.

use std::any::Any;

use opencl3::memory::{CL_MEM_READ_WRITE, create_buffer, release_mem_object};
use opencl3::types::{cl_mem, cl_mem_flags};

use super::error::{Op, code_name, map_cl_err};
use super::handles::Context;
use crate::backend::DeviceMemory;
use crate::device::DeviceInfo;
use crate::error::Result;

/// One OpenCL buffer, owned.
pub(crate) struct ClMemory {
    mem: cl_mem,
    bytes: usize,
}

// SAFETY: a `cl_mem` is a thread-safe, reference-counted driver object; the public
// API's borrow rules (`&mut Buffer` to write) order accesses to its contents.
unsafe impl Send for ClMemory {}
// SAFETY: as above.
unsafe impl Sync for ClMemory {}

impl ClMemory {
    /// Allocate `bytes` bytes in `ctx`.
    pub(crate) fn alloc(ctx: &Context, info: &DeviceInfo, bytes: usize) -> Result<ClMemory> {
        ClMemory::alloc_with(ctx, info, bytes, CL_MEM_READ_WRITE)
    }

    /// Allocate `bytes` bytes in `ctx` with `flags` (which never ask to use or
    /// copy a host pointer: `CL_MEM_ALLOC_HOST_PTR` at most).
    pub(crate) fn alloc_with(ctx: &Context, info: &DeviceInfo, bytes: usize, flags: cl_mem_flags) -> Result<ClMemory> {
        // SAFETY: `ctx` is a live context; no host pointer is passed (the flags do not
        // ask for one), and the size is at least one byte.
        let mem = unsafe { create_buffer(ctx.raw(), flags, bytes.max(1), std::ptr::null_mut()) }
            .map_err(|c| map_cl_err(c, info, Op::new("clCreateBuffer").bytes(bytes as u64)))?;
        Ok(ClMemory { mem, bytes })
    }

    /// The raw handle (still owned by `self`).
    pub(crate) fn raw(&self) -> cl_mem {
        self.mem
    }

    /// Size in bytes, as u64.
    pub(crate) fn byte_len_u64(&self) -> u64 {
        self.bytes as u64
    }
}

impl DeviceMemory for ClMemory {
    fn byte_len(&self) -> usize {
        self.bytes
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Drop for ClMemory {
    fn drop(&mut self) {
        // SAFETY: `mem` came from a successful `clCreateBuffer` and we own its only reference.
        if let Err(code) = unsafe { release_mem_object(self.mem) } {
            tracing::warn!(error = %code_name(code), bytes = self.bytes, "releasing an OpenCL buffer failed");
        }
    }
}
