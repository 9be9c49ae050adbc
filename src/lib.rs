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
//! 2. **host → device** — [`Device::alloc`], [`Buffer::write`], [`Queue::write`];
//! 3. **launch** — [`Device::launch`] with a [`LaunchConfig`] (grid × block, shared memory),
//!    or [`Queue::launch`];
//! 4. **device → host** — [`Buffer::read`], [`Queue::read`] into a [`HostBuffer`];
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
//! ## Queues and events
//!
//! Every stage can also be enqueued without waiting: a [`Queue`] (a CUDA stream,
//! an OpenCL command queue, a CPU lane) returns an [`Event`] per command, and
//! commands order themselves across queues and devices by the buffers they use
//! (read after write, write after read, write after write) and by
//! [`Queue::wait_for`]. The blocking calls above are the same commands followed
//! by a wait.
//!
//! ```
//! use offload::{Arg, HostBuffer, LaunchConfig, Runtime, kernels};
//!
//! # fn main() -> offload::Result<()> {
//! let rt = Runtime::new()?;
//! let dev = rt.device("cpu")?;
//! let q = dev.queue()?;
//! let k = kernels::vector_add()?;
//! let n = 1000;
//! let (a, b) = (dev.alloc::<f32>(n)?, dev.alloc::<f32>(n)?);
//! let mut c = dev.alloc::<f32>(n)?;
//! q.fill(&a, 1.0)?;
//! q.write(&b, &vec![2.0f32; n])?;                         // staged: the Vec may go now
//! let cfg = LaunchConfig::for_items(n, dev.info());
//! q.launch(&k, &cfg, &[Arg::input(&a), Arg::input(&b), Arg::output(&mut c), 0u32.into(), (n as u32).into()])?;
//! let out = q.read(&c, HostBuffer::new(&dev, n)?)?.wait()?; // the only wait
//! assert!(out.iter().all(|v| *v == 3.0));
//! # Ok(())
//! # }
//! ```
//!
//! ## Safety
//!
//! No program without `unsafe` can make this crate touch memory it does not own.
//! The promise is split in two:
//!
//! * **What the library checks at every launch, before anything is enqueued:**
//!   the argument list against the kernel's signature (count, kinds, element and
//!   scalar types; on OpenCL also against the driver's argument info), that every
//!   buffer belongs to the launching device, the launch configuration against the
//!   device's limits (with checked arithmetic on every size), and that every
//!   buffer holds at least the elements its parameter's declared [`Extent`] says
//!   this launch may touch: `Count × per_item` for split kernels, `grid × block ×
//!   per_item` otherwise, `per` per block for [`Extent::Groups`], or a product of
//!   scalar arguments for [`Extent::Scalars`]. A written buffer is an exclusive
//!   borrow, so no buffer is written through two arguments; an exclusive borrow
//!   given for a read-only parameter is passed read-only. A kernel's own scalar
//!   rules ([`KernelBuilder::check_scalars`]) run there too.
//! * **The one `unsafe` promise is the kernel author's:** device code (CUDA C,
//!   OpenCL C) is opaque to the library, so every way of giving it device code
//!   is an `unsafe fn` whose caller promises that the entry point declares the
//!   signature and stays inside the declared extents: [`KernelBuilder::cuda`],
//!   [`KernelBuilder::opencl`], [`KernelBuilder::opencl_host_cpu`] (a CPU-shaped
//!   OpenCL source that devices computing on host cores build instead),
//!   [`KernelBuilder::portable`] (one source for both dialects), and
//!   [`Program::cuda`] / [`Program::opencl`] (one source with several entry
//!   points, the promise made once for every kernel built from it). These are
//!   the crate's only public `unsafe fn`s.
//!   One promise per kernel, made where it is built, is easier to audit than
//!   one per launch (cudarc instead makes every launch `unsafe`). The built-in
//!   kernels in [`kernels`] are audited and safe to build. CPU implementations
//!   are safe Rust: [`CpuCtx`] hands them read-only views of inputs and disjoint
//!   `&mut` slices of outputs, whose layout comes from the signature, aligned
//!   for their element type (zero-length ones too).
//!
//! Inside the crate: the buffer trait that hands out device memory
//! ([`AnyBuffer`]) is sealed; the CPU worker pool survives any panic payload
//! (even one whose `Drop` panics) and never lets a job outlive the launch that
//! borrows it; on-disk caches key entries by everything that makes them valid and
//! validate what they load; in-memory caches are bounded. The on-disk cache
//! directory is trusted like a compiler's: whoever can write there can make a
//! driver load arbitrary code.
//!
//! Layers (see `DESIGN.md`): the public API in this crate's root modules; the
//! backends in `backend/` (the only code touching driver APIs); the scheduler in
//! [`schedule`]; managed data and task graphs in [`task`]; the profiler in [`profile`]; the built-in kernels in [`kernels`];
//! the N-body simulation in [`nbody`]; NVRTC without a GPU in `nvrtc` (feature `cuda`).
//!
//! ## Where this crate departs from the design, and why
//!
//! * **CPU lanes run ready commands inside the enqueue call.** A [`Queue`] of the
//!   CPU device is the host itself: a command whose dependencies are complete runs
//!   at once on the calling thread (spread over the worker pool) and its event is
//!   complete when the call returns, so an empty launch costs a function call
//!   (0.3 µs) instead of a thread hand-off (tens of µs). A command that must wait
//!   for another device's event waits for it on the host first. Overlap between
//!   devices still happens: enqueue the other devices' work first.
//! * **Commands that fail inside their enqueue call report from the call.** A
//!   command the device refuses (a launch configuration its driver rejects) or
//!   that fails while the enqueue call runs it (a CPU kernel panic) returns its
//!   error from the enqueue call, and leaves the buffers' state as it was;
//!   commands that fail later, on the device, report at [`Event::wait`] and fail
//!   the commands that read what they wrote with [`Error::DependencyFailed`].
//! * **Split work is driven from one host thread per device** (the task graph's
//!   worker) that enqueues its chunks (two in flight on OpenCL and CUDA devices,
//!   on three queues) and waits on their events, rather than one dispatcher
//!   thread for all devices: the CPU
//!   device runs its commands inside the enqueue call, so a single thread would
//!   stop feeding the other devices while the CPU computes.
//! * **Extents live on the kernel, not on [`Param`]**: [`KernelBuilder::extent`]
//!   declares them by parameter name, with [`Extent::Items`] (the split layout)
//!   the default, so signatures written before extents existed keep meaning the
//!   same thing and stay checked.
//! * **`Offset` and `Count` are `u32`**, the natural index type of CUDA and OpenCL
//!   kernels; a launch of more than `u32::MAX` items is refused.
//! * **CPU grain per kernel** ([`Kernel::cpu_grain`]): how many items a CPU kernel
//!   call gets at least, so cheap kernels amortise a worker wake-up and expensive
//!   ones (N-body) still use every core on small launches.
//! * **`Param::Local` on CUDA**: in a portable kernel ([`portable`],
//!   [`KernelBuilder::portable`]) a `Local` is a parameter on every backend,
//!   declared `LOCAL_PTR(T) name`; on CUDA the prelude makes it a handle to its
//!   slice of the dynamic shared memory. In a plain CUDA C source
//!   ([`KernelBuilder::cuda`]) it adds to the dynamic shared memory instead of being
//!   a kernel parameter (CUDA C reaches it through `extern __shared__`); the
//!   built-in N-body kernels use static tiles and take no `Local` parameter.
//! * **Shared host cores** ([`DeviceInfo::host_cpu`]): the scheduler leaves out
//!   host-CPU devices (the CPU backend, PoCL) beyond the first when their threads
//!   exceed the host's cores, because they only contend (measured: N-body at half
//!   the CPU backend's speed); [`schedule::Scheduler::allow_shared_cores`] overrides.
//! * **Partitions need no unpartition** ([`task::Data::partition`]): dependencies
//!   and coherence follow element ranges, so a parent and its children (even with
//!   overlapping halos) are all usable at once and order themselves by the
//!   elements they touch; StarPU instead locks the parent while it is partitioned.
//!   Parts start at the largest view alignment of the graph's devices (OpenCL
//!   sub-buffers), so they are nearly, not exactly, equal.
//! * **`Scheduler::run` is the one-task case of the task graph, with streamed
//!   data.** Its host slices are registered without a copy as *streamed* data:
//!   never kept on a device, each chunk's slice moved through reused chunk
//!   buffers and written straight home (on the CPU device, used in place). Only
//!   the broadcast inputs become ordinary (resident, read-only) data. A split
//!   over host slices that made every slice a resident replica would allocate
//!   whole arrays on every device and download only at the end; streaming keeps
//!   the v1 memory bound (chunk buffers within a quarter of device memory) and
//!   the overlap of one chunk's download with the next one's kernel.
//! * **A split task starts moving its broadcast inputs when it starts**, onto
//!   every participant, before any chunk is enqueued: a host-CPU OpenCL device
//!   runs transfers and kernels on the same threads, so a transfer out of it
//!   queued behind its own first chunk kept the other devices idle (measured on
//!   N-body with resident positions: 20 ms of each 100 ms step).
//! * **A task graph leaves out shared-core host-CPU devices by default**, like the
//!   scheduler ([`task::GraphBuilder::allow_shared_cores`]).
//! * **Warm-up launch**: before the timed chunks of a split task (every
//!   `Scheduler::run`), each device launches the kernel once with `Count = 0`,
//!   keeping first-launch JIT costs (PoCL compiles per work-group size at the
//!   first enqueue) out of the performance model.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod authoring;
mod backend;
mod buffer;
pub mod cache;
mod cpu_ctx;
pub mod cpu_group;
mod device;
#[cfg(feature = "mpi")]
#[cfg_attr(docsrs, doc(cfg(feature = "mpi")))]
pub mod distributed;
mod error;
mod event;
#[cfg(doctest)]
mod guide;
mod host_buffer;
mod kernel;
mod kernel_info;
pub mod kernels;
mod launch;
pub mod nbody;
#[cfg(feature = "cuda")]
#[cfg_attr(docsrs, doc(cfg(feature = "cuda")))]
pub mod nvrtc;
pub mod portable;
pub mod profile;
mod program;
mod queue;
pub mod roofline;
mod runtime;
pub mod schedule;
mod selector;
pub mod task;

pub use buffer::{AnyBuffer, Buffer, Region, View, ViewMut};
pub use cpu_ctx::CpuCtx;
pub use cpu_group::{AtomicElem, Atomics, GroupCtx};
pub use device::{Device, DeviceInfo};
pub use error::{BackendKind, Error, Result};
pub use event::Event;
pub use host_buffer::{Failed, HostBuffer, Transfer};
pub use kernel::{
    Access, Cost, CostFn, CpuKernelFn, DEFAULT_CPU_GRAIN, ElemType, Extent, Kernel, KernelBuilder, Param, Scalar,
    ScalarArgs, ScalarCheckFn, ScalarType, ScalarValue, Source, Split,
};
pub use kernel_info::KernelInfo;
pub use launch::{Arg, Dim3, LaunchConfig};
pub use program::Program;
pub use queue::Queue;
pub use runtime::{DEVICE_ENV, Runtime, RuntimeBuilder, Unavailable};
pub use selector::Selector;
