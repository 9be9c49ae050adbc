//! Typed device buffers.
//!
//! A [`Buffer<T>`] is one allocation on one device, freed when dropped. Copies in
//! and out check lengths before touching the device and are recorded as the
//! host → device and device → host stages of the profile. Uploads only read the
//! caller's slice; a failed download may leave the destination slice partly
//! written, never any other host memory.

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::backend::DeviceMemory;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::host_buffer::HostBuffer;
use crate::kernel::ElemType;
use crate::profile::Stage;
use crate::queue::RawBufferState;

pub(crate) use sealed::{BufferRef, Sealed};

/// The sealed half of [`AnyBuffer`]: only this crate's buffer types implement it,
/// so no code outside the crate can hand a launch device memory it does not own
/// (or the same memory through two arguments).
mod sealed {
    use crate::backend::DeviceMemory;
    use crate::device::Device;

    /// A borrowed view of a buffer's device memory and owner.
    pub struct BufferRef<'a> {
        pub(crate) mem: &'a dyn DeviceMemory,
        pub(crate) device: &'a Device,
    }

    /// Implemented by this crate's buffer types only.
    pub trait Sealed {
        /// The device memory behind the buffer.
        fn raw(&self) -> BufferRef<'_>;
        /// The untyped buffer.
        fn raw_buffer(&self) -> &super::RawBuffer;
        /// First byte and byte length of the region this value stands for (a
        /// view's range; the whole allocation for a buffer).
        fn byte_range(&self) -> (usize, usize) {
            let b = self.raw_buffer();
            (0, b.len * b.ty.size)
        }
    }
}

/// Object-safe view of any [`Buffer<T>`], used for launch arguments. Sealed: it
/// cannot be implemented outside this crate.
///
/// ```compile_fail
/// struct Fake;
/// impl offload::AnyBuffer for Fake {
///     fn elem_type(&self) -> offload::ElemType { offload::ElemType::of::<f32>() }
///     fn len(&self) -> usize { 0 }
///     fn device(&self) -> &offload::Device { unimplemented!() }
/// }
/// ```
pub trait AnyBuffer: Sealed + Send + Sync {
    /// Element type.
    fn elem_type(&self) -> ElemType;
    /// Length in elements.
    fn len(&self) -> usize;
    /// Whether the buffer has no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Owning device.
    fn device(&self) -> &Device;
}

impl dyn AnyBuffer + '_ {
    /// The device memory, if this buffer belongs to `device`.
    pub(crate) fn check_owner(&self, device: &Device, what: &str) -> Result<&dyn DeviceMemory> {
        let r = self.raw();
        if r.device != device {
            return Err(Error::ForeignBuffer {
                what: what.to_string(),
                owner: r.device.label_beside(device),
                device: device.label_beside(r.device),
            });
        }
        Ok(r.mem)
    }
}

/// One untyped allocation on one device: the shared core of [`Buffer<T>`] and of
/// the scheduler's chunk buffers (whose element type is only known at run time).
/// It checks the allocation limit, times and records every copy, and frees the
/// memory on drop. Byte ranges are checked by its callers.
pub struct RawBuffer {
    device: Device,
    mem: Arc<dyn DeviceMemory>,
    /// Last writer and readers in flight (see `src/queue.rs`).
    state: Arc<RawBufferState>,
    ty: ElemType,
    len: usize,
}

impl RawBuffer {
    /// Allocate `len` elements of `ty` on `device`, within its max allocation;
    /// recorded as the alloc stage.
    pub(crate) fn alloc(device: &Device, ty: ElemType, len: usize) -> Result<RawBuffer> {
        device.check_open("alloc")?;
        let limit = device.info().max_alloc_bytes;
        let bytes = (len as u64)
            .checked_mul(ty.size as u64)
            .filter(|b| *b <= limit && *b <= usize::MAX as u64)
            .ok_or_else(|| Error::OutOfMemory {
                device: device.label().to_string(),
                requested: (len as u64).saturating_mul(ty.size as u64),
                limit_name: "the device's max allocation",
                limit,
            })?;
        let t0 = Instant::now();
        let mem = device.backend_impl().alloc(bytes as usize, ty.align)?;
        device.profiler().record(
            device.label(),
            Stage::Alloc,
            "alloc",
            bytes,
            0,
            t0,
            Instant::now(),
            None,
        );
        Ok(RawBuffer {
            device: device.clone(),
            mem: Arc::from(mem),
            state: Arc::default(),
            ty,
            len,
        })
    }

    /// Host memory used in place by a device that computes on host memory (the
    /// CPU backend): no allocation, no copy.
    ///
    /// `device` must address host memory directly (`DeviceMemory::host_ptr`),
    /// and while a command writes the bytes nothing else may access them.
    ///
    /// # Safety
    /// `ptr` is valid for `len × ty.size` bytes, aligned for `ty`, until the buffer
    /// and every command using it are gone; the conditions above hold.
    pub(crate) unsafe fn borrow_host(device: &Device, ty: ElemType, ptr: *mut u8, len: usize) -> RawBuffer {
        // SAFETY: forwarded from the caller.
        let mem = unsafe { crate::backend::cpu::BorrowedHost::new(ptr, len * ty.size) };
        RawBuffer {
            device: device.clone(),
            mem: Arc::new(mem),
            state: Arc::default(),
            ty,
            len,
        }
    }

    /// Wait until no command uses the buffer; the first failure of its last
    /// writer, if any.
    pub(crate) fn quiesce(&self) -> Result<()> {
        let (w, r) = self.state.in_flight();
        for e in &r {
            let _ = e.wait();
        }
        match w {
            Some(w) => w.wait().map_err(|e| Error::DependencyFailed { cause: e.to_string() }),
            None => Ok(()),
        }
    }

    /// The allocation.
    pub(crate) fn mem(&self) -> &dyn DeviceMemory {
        &*self.mem
    }

    /// A handle that keeps the allocation alive (held by commands in flight).
    pub(crate) fn mem_handle(&self) -> crate::event::Keep {
        crate::event::Keep::Device(self.mem.clone())
    }

    /// Hazard state shared with the commands that use the buffer.
    pub(crate) fn state(&self) -> &Arc<RawBufferState> {
        &self.state
    }

    /// The owning device.
    pub(crate) fn owner(&self) -> &Device {
        &self.device
    }

    /// Host → device at byte `offset`, recorded as `label`, on one of the device's
    /// queues, waiting for completion; returns the host time taken.
    pub(crate) fn write_bytes(&self, offset: usize, src: &[u8], label: &str) -> Result<Duration> {
        self.device.check_open("write")?;
        let _span = tracing::debug_span!("h2d", device = %self.device.label(), bytes = src.len()).entered();
        let t0 = Instant::now();
        let q = self.device.blocking_queue()?;
        q.write_bytes(self, offset, src, label)?.wait()?;
        Ok(t0.elapsed())
    }

    /// Device → host from byte `offset`, recorded as `label`, on one of the
    /// device's queues; returns the host time taken.
    pub(crate) fn read_bytes(&self, offset: usize, dst: &mut [u8], label: &str) -> Result<Duration> {
        self.device.check_open("read")?;
        let _span = tracing::debug_span!("d2h", device = %self.device.label(), bytes = dst.len()).entered();
        let t0 = Instant::now();
        let q = self.device.blocking_queue()?;
        q.read_into(self, offset, dst, label)?.wait()?;
        Ok(t0.elapsed())
    }
}

impl AnyBuffer for RawBuffer {
    fn elem_type(&self) -> ElemType {
        self.ty
    }
    fn len(&self) -> usize {
        self.len
    }
    fn device(&self) -> &Device {
        &self.device
    }
}

impl Sealed for RawBuffer {
    fn raw(&self) -> BufferRef<'_> {
        BufferRef {
            mem: &*self.mem,
            device: &self.device,
        }
    }
    fn raw_buffer(&self) -> &RawBuffer {
        self
    }
}

/// A typed allocation of `len` elements of `T` on one device.
pub struct Buffer<T: bytemuck::Pod> {
    raw: RawBuffer,
    _t: PhantomData<fn() -> T>,
}

impl<T: bytemuck::Pod> fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Buffer<{}>[{}] on {}",
            std::any::type_name::<T>(),
            self.raw.len,
            self.raw.device.label()
        )
    }
}

impl<T: bytemuck::Pod> Buffer<T> {
    /// Allocate `len` elements on `device`.
    pub fn new(device: &Device, len: usize) -> Result<Self> {
        Ok(Buffer {
            raw: RawBuffer::alloc(device, ElemType::of::<T>(), len)?,
            _t: PhantomData,
        })
    }

    /// Allocate and upload.
    pub fn from_slice(device: &Device, data: &[T]) -> Result<Self> {
        device.upload(data)
    }

    /// A buffer on `device` holding `host`'s contents. On the CPU device, host
    /// memory allocated for it is used in place (no copy: the CPU device's natural
    /// "transfer"); elsewhere the data is uploaded.
    pub fn from_host(device: &Device, host: HostBuffer<T>) -> Result<Self> {
        device.check_open("from_host")?;
        if device.backend() == crate::error::BackendKind::Cpu
            && let Some(mem) = host.mem.clone().into_device_memory()
        {
            return Ok(Buffer {
                raw: RawBuffer {
                    device: device.clone(),
                    mem,
                    state: Arc::default(),
                    ty: ElemType::of::<T>(),
                    len: host.len(),
                },
                _t: PhantomData,
            });
        }
        device.upload(&host)
    }

    /// The buffer's contents as host memory, once every command using it has
    /// completed. On the CPU device its memory is handed over in place (no copy);
    /// elsewhere it is downloaded.
    pub fn into_host(self) -> Result<HostBuffer<T>> {
        self.raw.quiesce()?;
        if let Some(mem) = self.raw.mem.clone().into_host_memory() {
            return Ok(HostBuffer::from_parts(mem, self.len()));
        }
        let mut h = HostBuffer::new(self.device(), self.len())?;
        self.read(&mut h)?;
        Ok(h)
    }

    /// Length in elements.
    pub fn len(&self) -> usize {
        self.raw.len
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.raw.len == 0
    }

    /// Owning device.
    pub fn device(&self) -> &Device {
        &self.raw.device
    }

    /// Host → device: copy all of `data` (length must equal the buffer's).
    pub fn write(&mut self, data: &[T]) -> Result<()> {
        if data.len() != self.len() {
            return Err(Error::LengthMismatch {
                what: "Buffer::write".into(),
                host: data.len(),
                buffer: self.len(),
            });
        }
        self.write_at(0, data, "write")
    }

    /// Host → device: copy `data` into elements `offset..offset + data.len()`.
    pub fn write_at(&mut self, offset: usize, data: &[T], label: &str) -> Result<()> {
        self.check_range("Buffer::write_at", offset, data.len())?;
        let at = offset * std::mem::size_of::<T>();
        self.raw.write_bytes(at, bytemuck::cast_slice(data), label).map(|_| ())
    }

    /// Device → host: copy the whole buffer into `out` (length must equal the buffer's).
    pub fn read(&self, out: &mut [T]) -> Result<()> {
        if out.len() != self.len() {
            return Err(Error::LengthMismatch {
                what: "Buffer::read".into(),
                host: out.len(),
                buffer: self.len(),
            });
        }
        self.read_at(0, out, "read")
    }

    /// Device → host: copy elements `offset..offset + out.len()` into `out`.
    pub fn read_at(&self, offset: usize, out: &mut [T], label: &str) -> Result<()> {
        self.check_range("Buffer::read_at", offset, out.len())?;
        let at = offset * std::mem::size_of::<T>();
        self.raw
            .read_bytes(at, bytemuck::cast_slice_mut(out), label)
            .map(|_| ())
    }

    /// Device → host into a new vector.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let mut v = vec![T::zeroed(); self.len()];
        self.read(&mut v)?;
        Ok(v)
    }

    fn check_range(&self, what: &str, offset: usize, n: usize) -> Result<()> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(Error::LengthMismatch {
                what: format!("{what} at offset {offset}"),
                host: n,
                buffer: self.len().saturating_sub(offset),
            }),
        }
    }
}

impl<T: bytemuck::Pod> AnyBuffer for Buffer<T> {
    fn elem_type(&self) -> ElemType {
        self.raw.ty
    }
    fn len(&self) -> usize {
        self.raw.len
    }
    fn device(&self) -> &Device {
        &self.raw.device
    }
}

impl<T: bytemuck::Pod> Sealed for Buffer<T> {
    fn raw(&self) -> BufferRef<'_> {
        self.raw.raw()
    }
    fn raw_buffer(&self) -> &RawBuffer {
        &self.raw
    }
}

/// Device memory holding elements of `T`: a whole [`Buffer`] or a view of one
/// ([`View`], [`ViewMut`]). Queue transfers and copies take any region. Sealed.
pub trait Region<T: bytemuck::Pod>: AnyBuffer {}

impl<T: bytemuck::Pod> Region<T> for Buffer<T> {}
impl<T: bytemuck::Pod> Region<T> for View<'_, T> {}
impl<T: bytemuck::Pod> Region<T> for ViewMut<'_, T> {}

/// A read-only view of elements `start..start + len` of a [`Buffer`]: usable as a
/// kernel argument ([`crate::Arg::view`]) and in queue transfers and copies,
/// where it stands for those elements alone (indexed from 0).
///
/// Views share their buffer's ordering: commands on two views of one buffer are
/// ordered as if they used the whole buffer.
pub struct View<'a, T: bytemuck::Pod> {
    buf: &'a Buffer<T>,
    start: usize,
    len: usize,
}

/// A writable view of elements `start..start + len` of a [`Buffer`] (an
/// exclusive borrow of the buffer): [`crate::Arg::view_mut`].
pub struct ViewMut<'a, T: bytemuck::Pod> {
    buf: &'a mut Buffer<T>,
    start: usize,
    len: usize,
}

/// The element range `r` of a buffer of `len` elements, checked.
fn checked_range(r: impl std::ops::RangeBounds<usize>, len: usize) -> Result<(usize, usize)> {
    use std::ops::Bound;
    let start = match r.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match r.end_bound() {
        Bound::Included(e) => e.saturating_add(1),
        Bound::Excluded(e) => *e,
        Bound::Unbounded => len,
    };
    if start > end || end > len {
        return Err(Error::LengthMismatch {
            what: format!("view {start}..{end}"),
            host: end.saturating_sub(start),
            buffer: len,
        });
    }
    Ok((start, end - start))
}

impl<T: bytemuck::Pod> Buffer<T> {
    /// A read-only view of the elements in `range`.
    pub fn slice(&self, range: impl std::ops::RangeBounds<usize>) -> Result<View<'_, T>> {
        let (start, len) = checked_range(range, self.len())?;
        Ok(View { buf: self, start, len })
    }

    /// A writable view of the elements in `range`.
    pub fn slice_mut(&mut self, range: impl std::ops::RangeBounds<usize>) -> Result<ViewMut<'_, T>> {
        let (start, len) = checked_range(range, self.len())?;
        Ok(ViewMut { buf: self, start, len })
    }
}

macro_rules! view_impls {
    ($v:ident) => {
        impl<T: bytemuck::Pod> fmt::Debug for $v<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}[{}..{}]", self.buf, self.start, self.start + self.len)
            }
        }
        impl<T: bytemuck::Pod> AnyBuffer for $v<'_, T> {
            fn elem_type(&self) -> ElemType {
                self.buf.raw.ty
            }
            fn len(&self) -> usize {
                self.len
            }
            fn device(&self) -> &Device {
                &self.buf.raw.device
            }
        }
        impl<T: bytemuck::Pod> Sealed for $v<'_, T> {
            fn raw(&self) -> BufferRef<'_> {
                self.buf.raw.raw()
            }
            fn raw_buffer(&self) -> &RawBuffer {
                &self.buf.raw
            }
            fn byte_range(&self) -> (usize, usize) {
                let size = std::mem::size_of::<T>();
                (self.start * size, self.len * size)
            }
        }
        impl<T: bytemuck::Pod> $v<'_, T> {
            /// Elements in the view.
            pub fn len(&self) -> usize {
                self.len
            }
            /// Whether the view is empty.
            pub fn is_empty(&self) -> bool {
                self.len == 0
            }
            /// First element of the view in its buffer.
            pub fn start(&self) -> usize {
                self.start
            }
        }
    };
}
view_impls!(View);
view_impls!(ViewMut);

/// Elements `start .. start + len` of a [`RawBuffer`] as a kernel argument: the
/// task layer's views of its replicas (element type known only at run time).
pub(crate) struct RawView<'a> {
    pub(crate) buf: &'a RawBuffer,
    pub(crate) start: usize,
    pub(crate) len: usize,
}

impl AnyBuffer for RawView<'_> {
    fn elem_type(&self) -> ElemType {
        self.buf.ty
    }
    fn len(&self) -> usize {
        self.len
    }
    fn device(&self) -> &Device {
        &self.buf.device
    }
}

impl Sealed for RawView<'_> {
    fn raw(&self) -> BufferRef<'_> {
        self.buf.raw()
    }
    fn raw_buffer(&self) -> &RawBuffer {
        self.buf
    }
    fn byte_range(&self) -> (usize, usize) {
        (self.start * self.buf.ty.size, self.len * self.buf.ty.size)
    }
}
