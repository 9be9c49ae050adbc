//! Host memory standing in for device memory on the CPU backend.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::any::Any;
use std::ptr::NonNull;

use crate::backend::DeviceMemory;

/// Alignment of every CPU allocation (one cache line, one AVX-512 vector).
pub(crate) const ALIGN: usize = 64;

/// A zero-initialised, 64-byte aligned host allocation, freed on drop.
pub(crate) struct CpuMemory {
    ptr: NonNull<u8>,
    bytes: usize,
}

// SAFETY: `CpuMemory` owns its allocation exclusively; access to the bytes is
// synchronised by the public API's borrow rules (`&mut Buffer` to write).
unsafe impl Send for CpuMemory {}
// SAFETY: as above.
unsafe impl Sync for CpuMemory {}

impl CpuMemory {
    /// Allocate `bytes` zeroed bytes; `None` if the allocator refuses.
    pub(crate) fn zeroed(bytes: usize) -> Option<Self> {
        if bytes == 0 {
            // A dangling but aligned pointer: never dereferenced for 0 bytes.
            return Some(CpuMemory {
                ptr: NonNull::<[u8; ALIGN]>::dangling().cast(),
                bytes: 0,
            });
        }
        let layout = Layout::from_size_align(bytes, ALIGN).ok()?;
        // SAFETY: `layout` has non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        NonNull::new(p).map(|ptr| CpuMemory { ptr, bytes })
    }

    /// Base pointer (valid for `bytes` bytes).
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl DeviceMemory for CpuMemory {
    fn byte_len(&self) -> usize {
        self.bytes
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Drop for CpuMemory {
    fn drop(&mut self) {
        if self.bytes > 0 {
            // SAFETY: allocated in `zeroed` with exactly this layout (which was valid then).
            unsafe { dealloc(self.ptr.as_ptr(), Layout::from_size_align_unchecked(self.bytes, ALIGN)) };
        }
    }
}
