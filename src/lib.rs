//! # offload
//!
//! Offload data-parallel kernels from Rust to every compute device a machine has —
//! NVIDIA GPUs through CUDA, any OpenCL device, and the host CPU — split one
//! kernel's work across several of them, and see where the time goes.
//!
//! The library follows the five-stage offload model, each stage an explicit,
//! timed call:
//!
//! 1. **init** — [`Runtime::new`] discovers devices; [`Device::build`] compiles a kernel;
//! 2. **host → device** — [`Device::alloc`], [`Buffer::write`];
//! 3. **launch** — [`Device::launch`] with a [`LaunchConfig`] (grid × block, shared memory);
//! 4. **device → host** — [`Buffer::read`];
//! 5. **teardown** — [`Device::close`] / [`Runtime::close`], or drop.
//!
//! ```
//! use offload::{Arg, LaunchConfig, Runtime, kernels};
//!
//! # fn main() -> offload::Result<()> {
//! let rt = Runtime::new()?;
//! let dev = rt.device("cpu")?;
//! let k = kernels::vector_add()?;
//! let n = 1000;
//! let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
//! let b: Vec<f32> = (0..n).map(|i| 2.0 * i as f32).collect();
//! let da = dev.upload(&a)?;
//! let db = dev.upload(&b)?;
//! let mut dc = dev.alloc::<f32>(n)?;
//! let cfg = LaunchConfig::for_items(n, dev.info());
//! dev.launch(&k, &cfg, &[Arg::input(&da), Arg::input(&db), Arg::output(&mut dc), 0u32.into(), (n as u32).into()])?;
//! let c = dc.to_vec()?;
//! assert_eq!(c[10], 30.0);
//! println!("{}", rt.profile().report());
//! # Ok(())
//! # }
//! ```
//!
//! Layers (see `DESIGN.md`): the public API in this crate's root modules; the
//! backends in `backend/` (the only code touching driver APIs); the profiler in
//! [`profile`]; the built-in kernels in [`kernels`].

#![warn(missing_docs)]

mod backend;
mod buffer;
pub mod cache;
mod cpu_ctx;
mod device;
mod error;
mod kernel;
pub mod kernels;
mod launch;
pub mod nbody;
#[cfg(feature = "cuda")]
pub mod nvrtc;
pub mod profile;
mod runtime;
pub mod schedule;
mod selector;

pub use buffer::{AnyBuffer, Buffer, BufferRef};
pub use cpu_ctx::CpuCtx;
pub use device::{Device, DeviceInfo};
pub use error::{BackendKind, Error, Result};
pub use kernel::{
    Access, CpuKernelFn, DEFAULT_CPU_GRAIN, ElemType, Kernel, KernelBuilder, Param, Scalar, ScalarType, ScalarValue,
    Source, Split,
};
pub use launch::{Arg, Dim3, LaunchConfig};
pub use runtime::{DEVICE_ENV, Runtime, RuntimeBuilder, Unavailable};
pub use selector::Selector;
