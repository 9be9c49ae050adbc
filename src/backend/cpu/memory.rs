//! Host memory standing in for device memory on the CPU backend.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::any::Any;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::backend::DeviceMemory;
use crate::backend::queue::HostMemory;

/// Smallest alignment of every CPU allocation (one cache line, one AVX-512 vector).
pub(crate) const ALIGN: usize = 64;

/// A zero-initialised host allocation aligned to at least [`ALIGN`] and to its
/// element type, freed on drop. Zero-length allocations get a dangling pointer
/// with the same alignment, so slices made from it are always well aligned.
pub(crate) struct CpuMemory {
    ptr: NonNull<u8>,
    bytes: usize,
    align: usize,
}

// SAFETY: `CpuMemory` owns its allocation exclusively; access to the bytes is
// synchronised by the public API's borrow rules (`&mut Buffer` to write).
unsafe impl Send for CpuMemory {}
// SAFETY: as above.
unsafe impl Sync for CpuMemory {}

impl CpuMemory {
    /// Allocate `bytes` zeroed bytes aligned to `max(align, ALIGN)`; `None` if
    /// the alignment is not a power of two or the allocator refuses.
    pub(crate) fn zeroed(bytes: usize, align: usize) -> Option<Self> {
        let align = align.max(ALIGN);
        let layout = Layout::from_size_align(bytes, align).ok()?;
        if bytes == 0 {
            // A dangling pointer at address `align`: aligned for every type the
            // buffer may hold, never dereferenced for 0 bytes.
            let ptr = NonNull::new(std::ptr::without_provenance_mut::<u8>(align))?;
            return Some(CpuMemory { ptr, bytes: 0, align });
        }
        // SAFETY: `layout` has non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        NonNull::new(p).map(|ptr| CpuMemory { ptr, bytes, align })
    }
}

impl HostMemory for CpuMemory {
    fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn byte_len(&self) -> usize {
        self.bytes
    }
    fn pinned(&self) -> bool {
        false
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn into_device_memory(self: Arc<Self>) -> Option<Arc<dyn DeviceMemory>> {
        Some(self)
    }
}

impl DeviceMemory for CpuMemory {
    fn byte_len(&self) -> usize {
        self.bytes
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn host_ptr(&self) -> Option<*mut u8> {
        Some(self.ptr.as_ptr())
    }
    fn into_host_memory(self: Arc<Self>) -> Option<Arc<dyn HostMemory>> {
        Some(self)
    }
}

/// Host memory the CPU device uses in place, without owning it: a split run's
/// host slices. Whoever creates one guarantees that the memory outlives every
/// command that uses it (see [`crate::buffer::RawBuffer::borrow_host`]).
pub(crate) struct BorrowedHost {
    ptr: *mut u8,
    bytes: usize,
}

// SAFETY: the creator guarantees the memory stays valid and that writes through
// it are exclusive to the command given it (see `RawBuffer::borrow_host`).
unsafe impl Send for BorrowedHost {}
// SAFETY: as above.
unsafe impl Sync for BorrowedHost {}

impl BorrowedHost {
    /// The memory must stay valid (for reads, and for writes when passed as a
    /// written argument) until this value and every command using it are gone.
    ///
    /// # Safety
    /// `ptr` is valid for `bytes` bytes for as long as described above.
    pub(crate) unsafe fn new(ptr: *mut u8, bytes: usize) -> BorrowedHost {
        BorrowedHost { ptr, bytes }
    }
}

impl DeviceMemory for BorrowedHost {
    fn byte_len(&self) -> usize {
        self.bytes
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn host_ptr(&self) -> Option<*mut u8> {
        Some(self.ptr)
    }
}

impl Drop for CpuMemory {
    fn drop(&mut self) {
        if self.bytes > 0 {
            // SAFETY: allocated in `zeroed` with exactly this layout (which was valid then).
            unsafe {
                dealloc(
                    self.ptr.as_ptr(),
                    Layout::from_size_align_unchecked(self.bytes, self.align),
                )
            };
        }
    }
}
