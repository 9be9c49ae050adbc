//! Host memory for asynchronous transfers.
//!
//! A [`HostBuffer<T>`] is host memory allocated by a device's backend:
//! page-locked where the backend can (so the device's DMA engine reads and writes
//! it directly, at full link speed), 64-byte aligned heap memory otherwise. It
//! derefs to `[T]`. Asynchronous transfers take it by value and hand it back when
//! they complete ([`Transfer::wait`]), so no host code can touch it while the
//! device does, and dropping a pending transfer never frees memory in use.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::backend::queue::HostMemory;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::event::Event;

/// Host memory of `len` elements of `T`, pinned where the device's backend can.
pub struct HostBuffer<T: bytemuck::Pod> {
    pub(crate) mem: Arc<dyn HostMemory>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: bytemuck::Pod> fmt::Debug for HostBuffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HostBuffer<{}>[{}]{}",
            std::any::type_name::<T>(),
            self.len,
            if self.is_pinned() { " pinned" } else { "" }
        )
    }
}

impl<T: bytemuck::Pod> HostBuffer<T> {
    /// `len` zeroed elements, allocated for transfers with `device`.
    pub fn new(device: &Device, len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::OutOfMemory {
                device: device.label().to_string(),
                requested: u64::MAX,
                limit_name: "the address space",
                limit: usize::MAX as u64,
            })?;
        let mem = device.backend_impl().alloc_host(bytes, std::mem::align_of::<T>())?;
        Ok(HostBuffer {
            mem,
            len,
            _t: PhantomData,
        })
    }

    /// A copy of `data`, allocated for transfers with `device`.
    pub fn from_slice(device: &Device, data: &[T]) -> Result<Self> {
        let mut b = HostBuffer::new(device, data.len())?;
        b.copy_from_slice(data);
        Ok(b)
    }

    /// A host buffer over `mem` (at least `len` elements of `T`, aligned for `T`).
    pub(crate) fn from_parts(mem: Arc<dyn HostMemory>, len: usize) -> Self {
        HostBuffer {
            mem,
            len,
            _t: PhantomData,
        }
    }

    /// Whether the memory is page-locked.
    pub fn is_pinned(&self) -> bool {
        self.mem.pinned()
    }

    /// Elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes.
    pub(crate) fn byte_len(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }
}

impl<T: bytemuck::Pod> std::ops::Deref for HostBuffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // The allocation holds `len` elements of `T`, aligned for `T`
        // (allocated with `align_of::<T>()`, zero-length ones too), zero-initialised
        // or written as `T`s (any bit pattern is a valid Pod). No device accesses it
        // now: transfers take the `HostBuffer` by value and return it only after
        // they complete, so the only other handles are released by then.
        // SAFETY: `len` aligned `T`s, none of them touched by a device now (above).
        unsafe { std::slice::from_raw_parts(self.mem.ptr() as *const T, self.len) }
    }
}

impl<T: bytemuck::Pod> std::ops::DerefMut for HostBuffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` is the only access to the memory.
        unsafe { std::slice::from_raw_parts_mut(self.mem.ptr() as *mut T, self.len) }
    }
}

/// An asynchronous transfer that owns a [`HostBuffer`] until it completes.
pub struct Transfer<T: bytemuck::Pod> {
    pub(crate) event: Event,
    pub(crate) buffer: HostBuffer<T>,
}

impl<T: bytemuck::Pod> fmt::Debug for Transfer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Transfer({:?})", self.event)
    }
}

/// A failed transfer: the error, and the host buffer handed back untouched by
/// the library (a failed read may have written part of it).
pub struct Failed<T: bytemuck::Pod> {
    /// What went wrong.
    pub error: Error,
    /// The host buffer.
    pub buffer: HostBuffer<T>,
}

impl<T: bytemuck::Pod> fmt::Display for Failed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<T: bytemuck::Pod> fmt::Debug for Failed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failed({:?}, {:?})", self.error, self.buffer)
    }
}

impl<T: bytemuck::Pod> std::error::Error for Failed<T> {}

impl<T: bytemuck::Pod> From<Box<Failed<T>>> for Error {
    fn from(f: Box<Failed<T>>) -> Error {
        f.error
    }
}

impl<T: bytemuck::Pod> Transfer<T> {
    /// The transfer's event (for [`crate::Queue::wait_for`], polling, times).
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// Wait for completion and take the host buffer back.
    pub fn wait(self) -> std::result::Result<HostBuffer<T>, Box<Failed<T>>> {
        match self.event.wait() {
            Ok(()) => Ok(self.buffer),
            Err(error) => Err(Box::new(Failed {
                error,
                buffer: self.buffer,
            })),
        }
    }
}
