//! Launch configuration (grid of blocks of threads) and launch arguments.
//!
//! [`LaunchConfig`] is the CUDA vocabulary: `grid` blocks of `block` threads, plus
//! dynamic shared memory. On OpenCL the global size is `grid × block` and the local
//! size is `block`; on the CPU a block is the unit of work handed to a worker.
//! Validation against a device's limits happens here, before any backend call, so
//! every backend sees only configurations its device accepts.

use crate::device::DeviceInfo;
use crate::error::{Error, Result};
use crate::kernel::Scalar;

/// A 1-, 2- or 3-D extent. It remembers how many dimensions it was given with
/// (`5`, `(5, 1)` and `(5, 1, 1)` are 1-, 2- and 3-D), and a launch keeps that
/// dimension count (OpenCL `get_work_dim()`), whatever the sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dim3 {
    /// x
    pub x: u32,
    /// y
    pub y: u32,
    /// z
    pub z: u32,
    dims: u8,
}

impl Dim3 {
    /// A 3-D extent.
    pub const fn new(x: u32, y: u32, z: u32) -> Self {
        Dim3 { x, y, z, dims: 3 }
    }
    /// A 1-D extent.
    pub const fn d1(x: u32) -> Self {
        Dim3 { x, y: 1, z: 1, dims: 1 }
    }
    /// A 2-D extent.
    pub const fn d2(x: u32, y: u32) -> Self {
        Dim3 { x, y, z: 1, dims: 2 }
    }
    /// How many dimensions this extent was given with (1, 2 or 3).
    pub fn dims(&self) -> u32 {
        self.dims as u32
    }
    /// Product of the three extents, or `None` if it does not fit in 64 bits.
    pub fn volume(&self) -> Option<u64> {
        (self.x as u64 * self.y as u64).checked_mul(self.z as u64)
    }
    /// As an array.
    pub fn to_array(self) -> [u32; 3] {
        [self.x, self.y, self.z]
    }
}

impl From<u32> for Dim3 {
    fn from(x: u32) -> Self {
        Dim3::d1(x)
    }
}
impl From<(u32, u32)> for Dim3 {
    fn from((x, y): (u32, u32)) -> Self {
        Dim3::d2(x, y)
    }
}
impl From<(u32, u32, u32)> for Dim3 {
    fn from((x, y, z): (u32, u32, u32)) -> Self {
        Dim3::new(x, y, z)
    }
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LaunchConfig {
    /// Blocks (work-groups) in the grid.
    pub grid: Dim3,
    /// Threads (work-items) per block.
    pub block: Dim3,
    /// Dynamic shared (local) memory per block, in bytes.
    pub shared_mem_bytes: u32,
}

impl LaunchConfig {
    /// A config from grid and block extents, without dynamic shared memory.
    pub fn new(grid: impl Into<Dim3>, block: impl Into<Dim3>) -> Self {
        LaunchConfig {
            grid: grid.into(),
            block: block.into(),
            shared_mem_bytes: 0,
        }
    }

    /// 1-D config covering `n` items with a block that is a multiple of the device's
    /// warp size (up to 256 threads, or the device maximum if smaller).
    pub fn for_items(n: usize, info: &DeviceInfo) -> Self {
        let warp = info.warp_size.max(1);
        let max = info.max_threads_per_block.min(info.max_block_dims[0]).max(1);
        let target = 256u32.min(max);
        let mut block = (target / warp) * warp;
        if block == 0 {
            block = target;
        }
        let blocks = (n as u64).div_ceil(block as u64).max(1);
        let grid = blocks.min(u32::MAX as u64) as u32;
        LaunchConfig::new(grid, block)
    }

    /// 1-D config of `blocks` blocks of `warps` warps each on this device.
    pub fn with_warps(blocks: u32, warps: u32, info: &DeviceInfo) -> Self {
        LaunchConfig::new(blocks, warps.saturating_mul(info.warp_size.max(1)))
    }

    /// Set the dynamic shared memory size.
    pub fn shared(mut self, bytes: u32) -> Self {
        self.shared_mem_bytes = bytes;
        self
    }

    /// Threads per block (saturating at `u64::MAX`; a block is at most 2^96).
    pub fn threads_per_block(&self) -> u64 {
        self.block.volume().unwrap_or(u64::MAX)
    }

    /// Blocks in the grid, or `None` if that does not fit in 64 bits.
    pub fn blocks(&self) -> Option<u64> {
        self.grid.volume()
    }

    /// Total threads (`grid × block`), or `None` on overflow of u64.
    pub fn total_threads(&self) -> Option<u64> {
        self.grid.volume()?.checked_mul(self.block.volume()?)
    }

    /// The launch's dimension count: the larger of the grid's and the block's.
    pub fn work_dim(&self) -> u32 {
        self.grid.dims().max(self.block.dims())
    }

    /// Check against a device's limits; the message names the limit.
    pub fn validate(&self, info: &DeviceInfo, kernel: &str, local_bytes: u64) -> Result<()> {
        let err = |why: String| Error::LaunchConfig {
            kernel: kernel.to_string(),
            device: info.label(),
            why,
        };
        let tpb = self.threads_per_block();
        if tpb == 0 {
            return Err(err("block has 0 threads".into()));
        }
        match self.grid.volume() {
            None => return Err(err("grid × block overflows 64 bits".into())),
            Some(0) => return Err(err("grid has 0 blocks".into())),
            Some(_) => {}
        }
        if tpb > info.max_threads_per_block as u64 {
            return Err(err(format!(
                "block of {tpb} threads exceeds the device maximum of {} threads per block",
                info.max_threads_per_block
            )));
        }
        for (axis, (b, m)) in ["x", "y", "z"]
            .iter()
            .zip(self.block.to_array().iter().zip(info.max_block_dims))
        {
            if *b > m {
                return Err(err(format!(
                    "block dimension {axis} = {b} exceeds the device limit {m}"
                )));
            }
        }
        for (axis, (g, m)) in ["x", "y", "z"]
            .iter()
            .zip(self.grid.to_array().iter().zip(info.max_grid_dims))
        {
            if *g > m {
                return Err(err(format!("grid dimension {axis} = {g} exceeds the device limit {m}")));
            }
        }
        let shared = self.shared_mem_bytes as u64 + local_bytes;
        if shared > info.local_mem_bytes {
            return Err(err(format!(
                "{shared} bytes of shared/local memory per block exceed the device limit of {} bytes",
                info.local_mem_bytes
            )));
        }
        match self.total_threads() {
            None => return Err(err("grid × block overflows 64 bits".into())),
            Some(_) => {
                for ((g, b), axis) in self
                    .grid
                    .to_array()
                    .iter()
                    .zip(self.block.to_array())
                    .zip(["x", "y", "z"])
                {
                    let global = *g as u64 * b as u64;
                    if global > info.max_global_size {
                        return Err(err(format!(
                            "grid × block along {axis} = {global} threads exceeds the device limit {}",
                            info.max_global_size
                        )));
                    }
                }
            }
        }
        if info.warp_size > 1 && !tpb.is_multiple_of(info.warp_size as u64) {
            tracing::warn!(
                kernel,
                device = %info.label(),
                block = tpb,
                warp = info.warp_size,
                "block size is not a multiple of the device warp size; some lanes idle"
            );
        }
        Ok(())
    }
}

/// One launch argument.
///
/// A written buffer is an exclusive borrow, so one launch can never receive the
/// same buffer twice as an output, or as an input and an output:
///
/// ```compile_fail
/// # use offload::{Arg, Runtime};
/// # fn main() -> offload::Result<()> {
/// # let rt = Runtime::new()?;
/// # let dev = rt.device("cpu")?;
/// let mut c = dev.alloc::<f32>(4)?;
/// let args = [Arg::output(&mut c), Arg::output(&mut c)];
/// # drop(args);
/// # Ok(())
/// # }
/// ```
///
/// and no buffer can be dropped while an argument list borrows it:
///
/// ```compile_fail
/// # use offload::{Arg, Runtime};
/// # fn main() -> offload::Result<()> {
/// # let rt = Runtime::new()?;
/// # let dev = rt.device("cpu")?;
/// let a = dev.alloc::<f32>(4)?;
/// let args = [Arg::input(&a)];
/// drop(a);
/// # drop(args);
/// # Ok(())
/// # }
/// ```
pub enum Arg<'a> {
    /// A buffer read by the kernel.
    In(&'a dyn crate::buffer::AnyBuffer),
    /// A buffer written (or read and written) by the kernel: exclusive borrow.
    Out(&'a mut dyn crate::buffer::AnyBuffer),
    /// A scalar by value.
    Scalar(Scalar),
    /// Local (shared) memory of `len` elements.
    Local {
        /// Elements.
        len: usize,
    },
}

impl<'a> Arg<'a> {
    /// A read-only buffer argument.
    pub fn input<T: bytemuck::Pod>(b: &'a crate::buffer::Buffer<T>) -> Self {
        Arg::In(b)
    }
    /// A written buffer argument.
    pub fn output<T: bytemuck::Pod>(b: &'a mut crate::buffer::Buffer<T>) -> Self {
        Arg::Out(b)
    }
    /// A read-only view of a buffer (its elements indexed from 0).
    pub fn view<T: bytemuck::Pod>(v: &'a crate::buffer::View<'_, T>) -> Self {
        Arg::In(v)
    }
    /// A written view of a buffer (its elements indexed from 0).
    pub fn view_mut<T: bytemuck::Pod>(v: &'a mut crate::buffer::ViewMut<'_, T>) -> Self {
        Arg::Out(v)
    }
    /// A scalar argument.
    pub fn scalar(v: impl Into<Scalar>) -> Self {
        Arg::Scalar(v.into())
    }
    /// Local memory of `len` elements (element type from the signature).
    pub fn local(len: usize) -> Self {
        Arg::Local { len }
    }
    /// What this argument is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Arg::In(b) => format!("read buffer of {}", b.elem_type().name),
            Arg::Out(b) => format!("written buffer of {}", b.elem_type().name),
            Arg::Scalar(s) => format!("{} scalar", s.ty().name()),
            Arg::Local { len } => format!("local memory of {len} elements"),
        }
    }
}

impl<'a, T: bytemuck::Pod> From<&'a crate::buffer::Buffer<T>> for Arg<'a> {
    fn from(b: &'a crate::buffer::Buffer<T>) -> Self {
        Arg::In(b)
    }
}
impl<'a, T: bytemuck::Pod> From<&'a mut crate::buffer::Buffer<T>> for Arg<'a> {
    fn from(b: &'a mut crate::buffer::Buffer<T>) -> Self {
        Arg::Out(b)
    }
}
macro_rules! scalar_arg {
    ($($t:ty),*) => {$(
        impl From<$t> for Arg<'_> {
            fn from(v: $t) -> Self {
                Arg::Scalar(v.into())
            }
        }
    )*};
}
scalar_arg!(i32, u32, i64, u64, f32, f64);
