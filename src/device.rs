//! Devices: a cheap, clonable handle over one backend device, and its static facts.
//!
//! A [`Device`] is where the five stages become explicit calls: [`Device::build`]
//! (init of a kernel), [`Device::alloc`]/[`crate::Buffer::write`] (host → device),
//! [`Device::launch`], [`crate::Buffer::read`] (device → host) and
//! [`Device::close`] (teardown; also done on drop of the last handle). Every call
//! is validated here, timed here (device clock from the backend where it has one)
//! and recorded into the runtime's [`crate::profile::Profiler`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::backend::{Backend, RawArg};
use crate::buffer::{AnyBuffer, Buffer};
use crate::error::{BackendKind, Error, Result};
use crate::kernel::{Extent, Kernel, Param, Scalar, ScalarArgs, Split};
use crate::launch::{Arg, LaunchConfig};
use crate::profile::{Profiler, Stage};
use crate::queue::Queue;

/// Static facts about a device, read from its driver.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DeviceInfo {
    /// Backend.
    pub backend: BackendKind,
    /// Index among the devices of this backend (`opencl:1` has index 1).
    pub index: usize,
    /// Device name.
    pub name: String,
    /// Vendor.
    pub vendor: String,
    /// Driver / platform version string.
    pub driver_version: String,
    /// Streaming multiprocessors, OpenCL compute units, or CPU worker threads.
    pub compute_units: u32,
    /// CUDA warp size; OpenCL preferred work-group size multiple; CPU f32 SIMD lanes.
    pub warp_size: u32,
    /// Maximum threads (work-items) per block.
    pub max_threads_per_block: u32,
    /// Maximum block extent per axis.
    pub max_block_dims: [u32; 3],
    /// Maximum grid extent (blocks) per axis.
    pub max_grid_dims: [u32; 3],
    /// Maximum grid × block per axis (OpenCL global size limit).
    pub max_global_size: u64,
    /// Global memory in bytes.
    pub global_mem_bytes: u64,
    /// Shared / local memory per block in bytes.
    pub local_mem_bytes: u64,
    /// Largest single allocation in bytes.
    pub max_alloc_bytes: u64,
    /// CUDA compute capability (major, minor).
    pub compute_capability: Option<(u32, u32)>,
    /// Whether the block size must divide the global size per axis (OpenCL < 2.0).
    pub requires_uniform_blocks: bool,
    /// Whether the device computes on the host's own CPU cores (the CPU backend,
    /// an OpenCL CPU device such as PoCL): such devices compete for the same cores.
    pub host_cpu: bool,
    /// Bytes a buffer view's start must be a multiple of to be a kernel argument
    /// (OpenCL sub-buffers: `CL_DEVICE_MEM_BASE_ADDR_ALIGN`; 1 elsewhere).
    pub view_align_bytes: usize,
}

impl DeviceInfo {
    /// Short label used in messages and reports: `cpu:0`, `opencl:1`, `cuda:0`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.backend, self.index)
    }
}

pub(crate) struct DeviceInner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) uid: u64,
    /// Process-unique number of the runtime that discovered the device.
    pub(crate) runtime: u64,
    pub(crate) label: Arc<str>,
    pub(crate) closed: AtomicBool,
    pub(crate) profiler: Arc<Profiler>,
    /// Queues for the blocking calls (the first is the default queue), created
    /// on first use, each with a busy flag.
    pub(crate) queues: OnceLock<Vec<(Queue, AtomicBool)>>,
    /// Queues of the scheduler's split runs (see `schedule::run`), created on first use.
    pub(crate) split_queues: OnceLock<Vec<Queue>>,
    /// Every queue made on the device (its own and the user's), finished before
    /// teardown.
    pub(crate) all_queues: parking_lot::Mutex<Vec<std::sync::Weak<crate::queue::QueueInner>>>,
}

/// Queues a device keeps for its blocking calls: two let one thread's copy
/// overlap another's kernel.
const BLOCKING_QUEUES: usize = 2;

impl DeviceInner {
    /// Wait for every command of every queue of the device.
    fn finish_queues(&self) {
        let live: Vec<_> = self.all_queues.lock().iter().filter_map(|w| w.upgrade()).collect();
        for q in live {
            if let Err(e) = q.finish_all() {
                tracing::debug!(device = %self.label, error = %e, "a command failed before teardown");
            }
        }
    }
}

impl Drop for DeviceInner {
    fn drop(&mut self) {
        self.finish_queues();
        if !self.closed.swap(true, Ordering::AcqRel) {
            let t0 = Instant::now();
            // Drop never panics and has nowhere to return an error: log it.
            if let Err(e) = self.backend.close() {
                tracing::warn!(device = %self.label, error = %e, "teardown failed");
            }
            self.profiler
                .record(&self.label, Stage::Teardown, "close", 0, 0, t0, Instant::now(), None);
        }
    }
}

/// A device: a cheap clonable handle. The device is torn down when the last
/// handle (and every buffer on it) is dropped, or explicitly with [`Device::close`].
///
/// The blocking stages: upload, launch, read back.
///
/// ```
/// use offload::{Arg, BackendKind, LaunchConfig, Runtime, kernels};
///
/// # fn main() -> offload::Result<()> {
/// let rt = Runtime::builder().backends(&[BackendKind::Cpu]).build()?;
/// let dev = rt.device("cpu")?;
/// let k = kernels::vector_add()?;
/// let n = 4096;
/// let a = dev.upload(&vec![1.0f32; n])?;            // host -> device
/// let b = dev.upload(&vec![2.0f32; n])?;
/// let mut c = dev.alloc::<f32>(n)?;
/// let cfg = LaunchConfig::for_items(n, dev.info()); // checked against the device's limits
/// let args = [Arg::input(&a), Arg::input(&b), Arg::output(&mut c), 0u32.into(), (n as u32).into()];
/// dev.launch(&k, &cfg, &args)?;                     // checked against the signature and extents
/// assert_eq!(c.to_vec()?, vec![3.0; n]);            // device -> host
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Device {
    pub(crate) inner: Arc<DeviceInner>,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Device({} {:?})", self.inner.label, self.info().name)
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        self.inner.uid == other.inner.uid
    }
}
impl Eq for Device {}

impl Device {
    pub(crate) fn new(backend: Arc<dyn Backend>, uid: u64, runtime: u64, profiler: Arc<Profiler>) -> Device {
        let label: Arc<str> = backend.info().label().into();
        Device {
            inner: Arc::new(DeviceInner {
                backend,
                uid,
                runtime,
                label,
                closed: AtomicBool::new(false),
                profiler,
                queues: OnceLock::new(),
                split_queues: OnceLock::new(),
                all_queues: parking_lot::Mutex::new(Vec::new()),
            }),
        }
    }

    /// The device's own queues, created on first use.
    fn own_queues(&self) -> Result<&[(Queue, AtomicBool)]> {
        if let Some(q) = self.inner.queues.get() {
            return Ok(q);
        }
        let mut v = Vec::with_capacity(BLOCKING_QUEUES);
        for _ in 0..BLOCKING_QUEUES {
            v.push((Queue::owned_by(self)?, AtomicBool::new(false)));
        }
        Ok(self.inner.queues.get_or_init(|| v))
    }

    /// The queues split runs use on this device (`n` of them, made on first use
    /// and kept, so every run's commands show on the same rows of a timeline).
    pub(crate) fn split_queues(&self, n: usize) -> Result<&[Queue]> {
        if let Some(q) = self.inner.split_queues.get() {
            return Ok(q);
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(Queue::owned_by(self)?);
        }
        Ok(self.inner.split_queues.get_or_init(|| v))
    }

    /// The device's default queue (shared by every handle of the device).
    pub fn default_queue(&self) -> Result<Queue> {
        self.check_open("default_queue")?;
        Ok(self.own_queues()?[0].0.clone())
    }

    /// A new in-order queue on this device (a CUDA stream, an OpenCL command
    /// queue, a CPU lane).
    pub fn queue(&self) -> Result<Queue> {
        Queue::new(self)
    }

    /// A queue for one blocking call: the first idle one of the device's own, or
    /// the default queue when all are busy.
    pub(crate) fn blocking_queue(&self) -> Result<QueueLease<'_>> {
        let qs = self.own_queues()?;
        for (q, busy) in qs {
            if !busy.swap(true, Ordering::Acquire) {
                return Ok(QueueLease {
                    queue: q,
                    busy: Some(busy),
                });
            }
        }
        Ok(QueueLease {
            queue: &qs[0].0,
            busy: None,
        })
    }

    /// Static facts.
    pub fn info(&self) -> &DeviceInfo {
        self.inner.backend.info()
    }

    /// Backend of this device.
    pub fn backend(&self) -> BackendKind {
        self.info().backend
    }

    /// `cpu:0`, `opencl:1`, ...
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// The label with the number of the runtime that discovered the device
    /// (`cpu:0 of runtime #2`): unambiguous in messages that involve devices
    /// of several runtimes, whose plain labels can be equal.
    pub(crate) fn qualified_label(&self) -> String {
        format!("{} of runtime #{}", self.label(), self.inner.runtime)
    }

    /// This device's label for a message that also names `other`: the plain
    /// label, or [`Device::qualified_label`] when `other` has the same label
    /// (two runtimes each have a `cpu:0`).
    pub(crate) fn label_beside(&self, other: &Device) -> String {
        if self.label() == other.label() && self != other {
            self.qualified_label()
        } else {
            self.label().to_string()
        }
    }

    /// The profiler this device records into (shared by the runtime's devices).
    pub fn profiler(&self) -> &Arc<Profiler> {
        &self.inner.profiler
    }

    pub(crate) fn backend_impl(&self) -> &dyn Backend {
        &*self.inner.backend
    }

    pub(crate) fn check_open(&self, operation: &str) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                device: self.label().to_string(),
                operation: operation.to_string(),
            });
        }
        Ok(())
    }

    /// Whether the kernel can run here.
    pub fn supports(&self, kernel: &Kernel) -> bool {
        kernel.supports(self.backend())
    }

    fn check_impl(&self, kernel: &Kernel) -> Result<()> {
        if !self.supports(kernel) {
            return Err(kernel.no_implementation(self.backend(), self.label()));
        }
        Ok(())
    }

    /// Stage 1 (init) for a kernel: build it for this device (cached after the first call).
    pub fn build(&self, kernel: &Kernel) -> Result<()> {
        self.check_open("build")?;
        self.check_impl(kernel)?;
        let _span = tracing::debug_span!("init", device = %self.label(), kernel = kernel.name()).entered();
        let t0 = Instant::now();
        let timing = self.backend_impl().build(kernel)?;
        self.inner.profiler.record(
            self.label(),
            Stage::Init,
            kernel.name(),
            0,
            0,
            t0,
            Instant::now(),
            timing.device_ns,
        );
        Ok(())
    }

    /// Allocate a buffer of `len` elements (stage 2 begins here).
    pub fn alloc<T: bytemuck::Pod>(&self, len: usize) -> Result<Buffer<T>> {
        Buffer::new(self, len)
    }

    /// Allocate a buffer and copy `data` into it (stage 2, host → device).
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<Buffer<T>> {
        let mut b = Buffer::new(self, data.len())?;
        b.write(data)?;
        Ok(b)
    }

    /// Stage 3: launch `kernel` with `cfg` and `args`, checked against the signature
    /// and the device limits before anything is enqueued. Returns when done.
    pub fn launch(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &[Arg<'_>]) -> Result<()> {
        let q = self.blocking_queue()?;
        let items = cfg.total_threads().unwrap_or(0);
        q.launch_labeled(kernel, cfg, args, items, kernel.label().into())?
            .wait()
    }

    /// Stage 5: tear the device down now and report failures. Later calls on this
    /// device (or its buffers) return [`Error::Closed`]. Dropping the last handle
    /// does the same silently.
    pub fn close(&self) -> Result<()> {
        self.inner.finish_queues();
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let t0 = Instant::now();
        let r = self.backend_impl().close();
        self.inner
            .profiler
            .record(self.label(), Stage::Teardown, "close", 0, 0, t0, Instant::now(), None);
        r
    }
}

/// Check `args` against `kernel`'s signature on `device`, handing each converted
/// argument to `push`. Returns the local-memory bytes requested.
pub(crate) fn check_args<'s>(
    device: &Device,
    kernel: &Kernel,
    args: &'s [Arg<'_>],
    mut push: impl FnMut(usize, RawArg<'s>),
) -> Result<u64> {
    let params = kernel.params();
    if params.len() != args.len() {
        return Err(Error::ArgCount {
            kernel: kernel.name().to_string(),
            expected: params.len(),
            got: args.len(),
        });
    }
    let mut local = 0u64;
    for (i, (p, a)) in params.iter().zip(args).enumerate() {
        let mismatch = || Error::ArgType {
            kernel: kernel.name().to_string(),
            index: i,
            param: p.name().to_string(),
            expected: p.describe(),
            got: format!("{}{}", a.describe(), crate::authoring::scalar_hint(p, a)),
        };
        let raw = match (p, a) {
            (Param::Buffer { ty, access, .. }, Arg::In(b)) if !access.writes() => {
                if b.elem_type() != *ty {
                    return Err(mismatch());
                }
                let (offset, len) = b.byte_range();
                RawArg::Buffer {
                    mem: b.check_owner(device, p.name())?,
                    offset,
                    len,
                    writable: false,
                }
            }
            (Param::Buffer { ty, access, .. }, Arg::Out(b)) => {
                let b: &'s dyn AnyBuffer = &**b;
                if b.elem_type() != *ty {
                    return Err(mismatch());
                }
                // An exclusive borrow given for a read-only parameter is demoted:
                // the kernel gets it read-only, as the signature says.
                let (offset, len) = b.byte_range();
                RawArg::Buffer {
                    mem: b.check_owner(device, p.name())?,
                    offset,
                    len,
                    writable: access.writes(),
                }
            }
            (Param::Scalar { ty, .. }, Arg::Scalar(s)) if s.ty() == *ty => RawArg::Scalar(*s),
            (Param::Offset | Param::Count, Arg::Scalar(s @ crate::kernel::Scalar::U32(_))) => RawArg::Scalar(*s),
            (Param::Local { ty, .. }, Arg::Local { len }) => {
                let bytes = (*len as u64).saturating_mul(ty.size as u64);
                local = local.saturating_add(bytes);
                RawArg::Local(bytes.min(usize::MAX as u64) as usize)
            }
            _ => return Err(mismatch()),
        };
        push(i, raw);
    }
    Ok(local)
}

/// The value of each scalar (and `Offset`/`Count`) argument, by position.
pub(crate) fn scalar_values<'a>(
    args: &[Arg<'_>],
    out: &'a mut [Option<Scalar>; 16],
    heap: &'a mut Vec<Option<Scalar>>,
) -> &'a [Option<Scalar>] {
    let get = |a: &Arg<'_>| match a {
        Arg::Scalar(s) => Some(*s),
        _ => None,
    };
    if args.len() <= out.len() {
        for (o, a) in out.iter_mut().zip(args) {
            *o = get(a);
        }
        &out[..args.len()]
    } else {
        heap.extend(args.iter().map(get));
        heap
    }
}

/// Check every buffer argument against its parameter's declared extent, and the
/// kernel's own scalar check, before anything is enqueued. Called after
/// [`check_args`] (so kinds and types match) and after the configuration was
/// validated (so `grid × block` fits in 64 bits).
pub(crate) fn check_extents(kernel: &Kernel, cfg: &LaunchConfig, args: &[Arg<'_>]) -> Result<()> {
    let params = kernel.params();
    let mut fixed = [None; 16];
    let mut heap = Vec::new();
    let values = scalar_values(args, &mut fixed, &mut heap);
    kernel
        .check_scalars(&ScalarArgs { params, values })
        .map_err(|why| Error::InvalidArgument {
            kernel: kernel.name().to_string(),
            why,
        })?;
    let count = params
        .iter()
        .position(|p| matches!(p, Param::Count))
        .and_then(|i| values.get(i).copied().flatten())
        .and_then(|s| s.as_count());
    let threads = cfg.total_threads().unwrap_or(u64::MAX);
    for (i, (p, a)) in params.iter().zip(args).enumerate() {
        let len = match a {
            Arg::In(b) => b.len(),
            Arg::Out(b) => b.len(),
            Arg::Scalar(_) | Arg::Local { .. } => continue,
        };
        if let Param::Buffer { split, name, .. } = p {
            check_one(kernel, i, name, split, len, count, threads, cfg, params, values)?;
        }
    }
    Ok(())
}

/// The extent check of one buffer argument.
#[allow(clippy::too_many_arguments)]
fn check_one(
    kernel: &Kernel,
    index: usize,
    name: &str,
    split: &Split,
    len: usize,
    count: Option<u64>,
    threads: u64,
    cfg: &LaunchConfig,
    params: &[Param],
    values: &[Option<Scalar>],
) -> Result<()> {
    let (needed, why): (Option<u64>, &dyn Fn() -> String) = match (kernel.extent(index), split) {
        (Extent::Items, Split::Elementwise { per_item }) => match count {
            Some(c) => (c.checked_mul(*per_item as u64), &move || {
                format!("count {c} × {per_item} per item")
            }),
            None => (threads.checked_mul(*per_item as u64), &move || {
                format!("grid × block = {threads} threads × {per_item} per item")
            }),
        },
        (Extent::Items, Split::Broadcast) => return Ok(()),
        (Extent::Groups { per }, _) => {
            let groups = cfg.blocks().unwrap_or(u64::MAX);
            (groups.checked_mul(*per as u64), &move || {
                format!("{groups} blocks × {per} per block")
            })
        }
        (Extent::Scalars { params: names, per }, _) => {
            let value = |name: &String| {
                params
                    .iter()
                    .position(|p| p.name() == name)
                    .and_then(|j| values.get(j).copied().flatten())
                    .and_then(|s| s.as_count())
                    .unwrap_or(0)
            };
            let needed = names
                .iter()
                .try_fold(*per as u64, |acc, name| acc.checked_mul(value(name)));
            (needed, &move || {
                let terms: Vec<String> = names.iter().map(|n| format!("{n} = {}", value(n))).collect();
                format!("{} × {per}", terms.join(" × "))
            })
        }
    };
    match needed {
        Some(n) if n <= len as u64 => Ok(()),
        _ => Err(Error::BufferTooShort {
            kernel: kernel.name().to_string(),
            index,
            param: name.to_string(),
            len,
            needed: needed.unwrap_or(u64::MAX),
            why: why(),
        }),
    }
}

/// A device queue taken for one blocking call; released on drop.
pub(crate) struct QueueLease<'a> {
    queue: &'a Queue,
    busy: Option<&'a AtomicBool>,
}

impl std::ops::Deref for QueueLease<'_> {
    type Target = Queue;
    fn deref(&self) -> &Queue {
        self.queue
    }
}

impl Drop for QueueLease<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.busy {
            b.store(false, Ordering::Release);
        }
    }
}
