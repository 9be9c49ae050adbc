//! Backend-neutral kernels: a name, a signature, and one implementation per backend.
//!
//! A [`Kernel`] owns its CUDA C source, its OpenCL C source and its CPU Rust
//! function (each optional), and may carry a second, CPU-shaped OpenCL source
//! that OpenCL devices computing on host cores build instead of the first
//! ([`KernelBuilder::opencl_host_cpu`], chosen by [`Kernel::opencl_source_for`]). A device runs a kernel iff the kernel has an
//! implementation for that device's backend. The signature ([`Param`]s) is what
//! launch arguments are checked against before anything is enqueued, and what the
//! scheduler reads to know how buffers follow a split index space.
//!
//! This module touches no driver: backends read [`Source`] and [`CpuKernelFn`]
//! through the accessors below and keep their own per-device build caches keyed by
//! [`Kernel::id`].

use std::any::TypeId;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cpu_ctx::CpuCtx;
use crate::cpu_group::{CpuGroupFn, GroupCtx};
use crate::device::DeviceInfo;
use crate::error::{BackendKind, Error, Result};

/// Scalar types a kernel parameter may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalarType {
    /// `int` / `i32`
    I32,
    /// `unsigned int` / `uint` / `u32`
    U32,
    /// `long long` / `long` / `i64`
    I64,
    /// `unsigned long long` / `ulong` / `u64`
    U64,
    /// `float` / `f32`
    F32,
    /// `double` / `f64`
    F64,
}

impl ScalarType {
    /// Size in bytes.
    pub fn size(self) -> usize {
        match self {
            ScalarType::I32 | ScalarType::U32 | ScalarType::F32 => 4,
            ScalarType::I64 | ScalarType::U64 | ScalarType::F64 => 8,
        }
    }
    /// Rust spelling.
    pub fn name(self) -> &'static str {
        match self {
            ScalarType::I32 => "i32",
            ScalarType::U32 => "u32",
            ScalarType::I64 => "i64",
            ScalarType::U64 => "u64",
            ScalarType::F32 => "f32",
            ScalarType::F64 => "f64",
        }
    }
}

/// A scalar argument value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// i32
    I32(i32),
    /// u32
    U32(u32),
    /// i64
    I64(i64),
    /// u64
    U64(u64),
    /// f32
    F32(f32),
    /// f64
    F64(f64),
}

impl Scalar {
    /// The value's type.
    pub fn ty(&self) -> ScalarType {
        match self {
            Scalar::I32(_) => ScalarType::I32,
            Scalar::U32(_) => ScalarType::U32,
            Scalar::I64(_) => ScalarType::I64,
            Scalar::U64(_) => ScalarType::U64,
            Scalar::F32(_) => ScalarType::F32,
            Scalar::F64(_) => ScalarType::F64,
        }
    }
    /// Little-endian bytes as a driver wants them (`clSetKernelArg`, `cuLaunchKernel`).
    pub fn to_ne_bytes(&self) -> ([u8; 8], usize) {
        let mut out = [0u8; 8];
        let n = self.ty().size();
        match *self {
            Scalar::I32(v) => out[..4].copy_from_slice(&v.to_ne_bytes()),
            Scalar::U32(v) => out[..4].copy_from_slice(&v.to_ne_bytes()),
            Scalar::F32(v) => out[..4].copy_from_slice(&v.to_ne_bytes()),
            Scalar::I64(v) => out.copy_from_slice(&v.to_ne_bytes()),
            Scalar::U64(v) => out.copy_from_slice(&v.to_ne_bytes()),
            Scalar::F64(v) => out.copy_from_slice(&v.to_ne_bytes()),
        }
        (out, n)
    }
}

/// Rust types usable as scalar kernel arguments.
pub trait ScalarValue: Copy + Send + Sync + 'static {
    /// Its [`ScalarType`].
    const TYPE: ScalarType;
    /// Wrap a value.
    fn into_scalar(self) -> Scalar;
    /// Unwrap a value of exactly this type.
    fn from_scalar(s: Scalar) -> Option<Self>;
}

macro_rules! scalar_value {
    ($t:ty, $v:ident) => {
        impl ScalarValue for $t {
            const TYPE: ScalarType = ScalarType::$v;
            fn into_scalar(self) -> Scalar {
                Scalar::$v(self)
            }
            fn from_scalar(s: Scalar) -> Option<Self> {
                match s {
                    Scalar::$v(v) => Some(v),
                    _ => None,
                }
            }
        }
        impl From<$t> for Scalar {
            fn from(v: $t) -> Scalar {
                Scalar::$v(v)
            }
        }
    };
}
scalar_value!(i32, I32);
scalar_value!(u32, U32);
scalar_value!(i64, I64);
scalar_value!(u64, U64);
scalar_value!(f32, F32);
scalar_value!(f64, F64);

/// How a kernel uses a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Only read.
    Read,
    /// Only written (every element the kernel owns is written).
    Write,
    /// Read and written.
    ReadWrite,
}

impl Access {
    /// Whether the kernel writes the buffer.
    pub fn writes(self) -> bool {
        !matches!(self, Access::Read)
    }
}

/// How a buffer follows the index space when a launch is split across devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// Item `i` owns elements `i*per_item .. (i+1)*per_item`; each chunk gets its slice.
    Elementwise {
        /// Elements per item.
        per_item: usize,
    },
    /// Read-only; every device gets the whole buffer.
    Broadcast,
}

/// How many elements of a buffer one launch may touch: what the library checks
/// against the buffer's length before anything is enqueued (see the crate docs,
/// "Safety").
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Extent {
    /// The default. `Elementwise { per_item }` buffers: `Count × per_item` elements
    /// when the kernel has a `Count` parameter, else `grid × block × per_item`.
    /// `Broadcast` buffers: no length is implied; the kernel author promises to
    /// respect the buffer's length (usually by declaring [`Extent::Scalars`]).
    Items,
    /// `per` elements per block (work-group) of the grid: per-group results such
    /// as the partial sums of a reduction.
    Groups {
        /// Elements per block.
        per: usize,
    },
    /// At least `per ×` the product of the launch's values of the named integer
    /// scalar parameters (a negative value counts as 0): `n`, or `w × h`.
    Scalars {
        /// Names of integer scalar parameters of the same kernel.
        params: Vec<String>,
        /// Elements per unit of the product.
        per: usize,
    },
}

/// Element type of a buffer parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ElemType {
    pub(crate) id: TypeId,
    /// Rust type name.
    pub name: &'static str,
    /// Size in bytes.
    pub size: usize,
    /// Alignment in bytes.
    pub align: usize,
}

impl ElemType {
    /// The element type of `T`.
    pub fn of<T: bytemuck::Pod>() -> Self {
        ElemType {
            id: TypeId::of::<T>(),
            name: std::any::type_name::<T>(),
            size: std::mem::size_of::<T>(),
            align: std::mem::align_of::<T>(),
        }
    }
}

/// One parameter of a kernel signature.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// A device buffer.
    Buffer {
        /// Name (for messages).
        name: String,
        /// Element type.
        ty: ElemType,
        /// Read / write.
        access: Access,
        /// How it follows a split.
        split: Split,
    },
    /// A scalar passed by value.
    Scalar {
        /// Name.
        name: String,
        /// Type.
        ty: ScalarType,
    },
    /// Work-group shared (local) memory of `len` elements of `ty`, given at launch.
    Local {
        /// Name.
        name: String,
        /// Element type.
        ty: ElemType,
    },
    /// `u32` index of the first item of this chunk (filled by the scheduler; 0 otherwise).
    Offset,
    /// `u32` number of items in this chunk (filled by the scheduler).
    Count,
}

impl Param {
    /// A buffer parameter of element type `T`.
    pub fn buffer<T: bytemuck::Pod>(name: &str, access: Access, split: Split) -> Param {
        Param::Buffer {
            name: name.to_string(),
            ty: ElemType::of::<T>(),
            access,
            split,
        }
    }
    /// A scalar parameter.
    pub fn scalar<T: ScalarValue>(name: &str) -> Param {
        Param::Scalar {
            name: name.to_string(),
            ty: T::TYPE,
        }
    }
    /// A local (shared) memory parameter.
    pub fn local<T: bytemuck::Pod>(name: &str) -> Param {
        Param::Local {
            name: name.to_string(),
            ty: ElemType::of::<T>(),
        }
    }
    /// Name of the parameter.
    pub fn name(&self) -> &str {
        match self {
            Param::Buffer { name, .. } | Param::Scalar { name, .. } | Param::Local { name, .. } => name,
            Param::Offset => "offset",
            Param::Count => "count",
        }
    }
    /// Short description of what the parameter expects.
    pub fn describe(&self) -> String {
        match self {
            Param::Buffer { ty, access, .. } => format!("{access:?} buffer of {}", ty.name),
            Param::Scalar { ty, .. } => format!("{} scalar", ty.name()),
            Param::Local { ty, .. } => format!("local memory of {}", ty.name),
            Param::Offset => "u32 offset scalar".into(),
            Param::Count => "u32 count scalar".into(),
        }
    }
}

/// Device source code (CUDA C or OpenCL C) for one kernel.
#[derive(Clone, Debug)]
pub struct Source {
    /// The program text.
    pub code: String,
    /// Entry point (function) name inside the program.
    pub entry: String,
    /// Extra compiler options (NVRTC or `clBuildProgram`).
    pub options: Vec<String>,
}

/// A CPU kernel implementation: called once per contiguous range of blocks.
pub type CpuKernelFn = dyn Fn(&CpuCtx<'_>) + Send + Sync;

/// A check of a launch's scalar arguments (see [`KernelBuilder::check_scalars`]):
/// `Err(why)` refuses the launch before anything is enqueued.
pub type ScalarCheckFn = dyn Fn(&ScalarArgs<'_>) -> std::result::Result<(), String> + Send + Sync;

/// Work of one item of a kernel, for the roofline (see [`KernelBuilder::cost`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    /// Floating-point operations per item (an FMA counts 2).
    pub flops: f64,
    /// Bytes of device memory read and written per item (compulsory traffic).
    pub bytes: f64,
}

/// A kernel's cost per item as a function of a launch's scalar arguments (see
/// [`KernelBuilder::cost_with`]).
pub type CostFn = dyn Fn(&ScalarArgs<'_>) -> Cost + Send + Sync;

/// The scalar arguments of one launch, by parameter name (what a
/// [`ScalarCheckFn`] sees).
pub struct ScalarArgs<'a> {
    pub(crate) params: &'a [Param],
    pub(crate) values: &'a [Option<Scalar>],
}

impl ScalarArgs<'_> {
    /// The value of the scalar (or `Offset`/`Count`) parameter named `name`.
    pub fn get(&self, name: &str) -> Option<Scalar> {
        let i = self.params.iter().position(|p| p.name() == name)?;
        self.values.get(i).copied().flatten()
    }
    /// The value of `name` if it has type `T`.
    pub fn value<T: ScalarValue>(&self, name: &str) -> Option<T> {
        self.get(name).and_then(T::from_scalar)
    }
}

impl Scalar {
    /// The value as an element count: integers clamped at 0; `None` for floats.
    pub fn as_count(&self) -> Option<u64> {
        match *self {
            Scalar::I32(v) => Some(v.max(0) as u64),
            Scalar::U32(v) => Some(v as u64),
            Scalar::I64(v) => Some(v.max(0) as u64),
            Scalar::U64(v) => Some(v),
            Scalar::F32(_) | Scalar::F64(_) => None,
        }
    }
}

struct KernelInner {
    id: u64,
    fingerprint: String,
    alive: Arc<()>,
    name: String,
    /// The name, shared with the events of its launches.
    label: Arc<str>,
    params: Vec<Param>,
    cuda: Option<Source>,
    opencl: Option<Source>,
    opencl_host_cpu: Option<Source>,
    cpu: Option<Arc<CpuKernelFn>>,
    cpu_groups: Option<Arc<CpuGroupFn>>,
    cpu_grain: usize,
    extents: Vec<Extent>,
    scalar_check: Option<Box<ScalarCheckFn>>,
    cost: Option<Arc<CostFn>>,
}

/// A backend-neutral kernel. Cheap to clone.
#[derive(Clone)]
pub struct Kernel {
    inner: Arc<KernelInner>,
}

impl fmt::Debug for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernel")
            .field("name", &self.inner.name)
            .field("params", &self.inner.params)
            .field("backends", &self.backends())
            .finish()
    }
}

static NEXT_KERNEL_ID: AtomicU64 = AtomicU64::new(1);

impl Kernel {
    /// Start describing a kernel: its signature, then one implementation per
    /// backend. A kernel with only a CPU implementation runs on the CPU device;
    /// device sources ([`KernelBuilder::portable`], [`KernelBuilder::cuda`],
    /// [`KernelBuilder::opencl`]) add the other backends.
    ///
    /// ```
    /// use offload::{Arg, BackendKind, Kernel, Param, Runtime};
    ///
    /// # fn main() -> offload::Result<()> {
    /// // y[i] = a * y[i] over items [offset, offset + count).
    /// let scale = Kernel::builder("scale")
    ///     .param(Param::inout::<f32>("y"))
    ///     .param(Param::scalar::<f32>("a"))
    ///     .param(Param::Offset)
    ///     .param(Param::Count)
    ///     .cpu(|ctx| {
    ///         let a: f32 = ctx.scalar(1);
    ///         for y in ctx.output::<f32>(0).iter_mut() {
    ///             *y *= a;
    ///         }
    ///     })
    ///     .build()?;
    /// let rt = Runtime::builder().backends(&[BackendKind::Cpu]).build()?;
    /// let dev = rt.device("cpu")?;
    /// let mut y = dev.upload(&vec![1.5f32; 1000])?;
    /// // Offset and Count filled in; `2.0f32`, not `2.0` (an f64, refused).
    /// dev.launch_items(&scale, 1000, vec![Arg::output(&mut y), 2.0f32.into()])?;
    /// assert!(y.to_vec()?.iter().all(|v| *v == 3.0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(name: &str) -> KernelBuilder {
        KernelBuilder {
            name: name.to_string(),
            params: Vec::new(),
            cuda: None,
            opencl: None,
            opencl_host_cpu: None,
            cuda_options: Vec::new(),
            opencl_options: Vec::new(),
            opencl_host_cpu_options: Vec::new(),
            cpu: None,
            cpu_groups: None,
            cpu_grain: DEFAULT_CPU_GRAIN,
            extents: Vec::new(),
            scalar_check: None,
            cost: None,
        }
    }
    /// Unique id of this kernel within the process (backends key caches by it).
    pub fn id(&self) -> u64 {
        self.inner.id
    }
    /// Name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The name, shared (events of launches hold it without a copy).
    pub(crate) fn label(&self) -> &Arc<str> {
        &self.inner.label
    }
    /// Stable hex fingerprint of everything that defines this kernel: name,
    /// signature, each backend's source, entry point and options. Two kernels built
    /// from the same description have the same fingerprint, in any process.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }
    /// A token that dies with the last clone of this kernel: caches keyed by
    /// [`Kernel::id`] keep it and drop their entry once it is dead.
    pub(crate) fn liveness(&self) -> std::sync::Weak<()> {
        Arc::downgrade(&self.inner.alive)
    }
    /// Signature.
    pub fn params(&self) -> &[Param] {
        &self.inner.params
    }
    /// CUDA source, if any.
    pub fn cuda_source(&self) -> Option<&Source> {
        self.inner.cuda.as_ref()
    }
    /// OpenCL source, if any: the one every OpenCL device builds, except host-CPU
    /// devices when the kernel has [`Kernel::opencl_host_cpu_source`].
    pub fn opencl_source(&self) -> Option<&Source> {
        self.inner.opencl.as_ref()
    }
    /// The CPU-shaped OpenCL source for devices that compute on host cores, if
    /// any (see [`KernelBuilder::opencl_host_cpu`]).
    pub fn opencl_host_cpu_source(&self) -> Option<&Source> {
        self.inner.opencl_host_cpu.as_ref()
    }
    /// The OpenCL source a device with `info` builds: the host-CPU variant when
    /// the device computes on host cores ([`DeviceInfo::host_cpu`]) and the kernel
    /// has one, the plain OpenCL source otherwise.
    pub fn opencl_source_for(&self, info: &DeviceInfo) -> Option<&Source> {
        match &self.inner.opencl_host_cpu {
            Some(s) if info.host_cpu => Some(s),
            _ => self.inner.opencl.as_ref(),
        }
    }
    /// CPU implementation, if any.
    pub fn cpu_fn(&self) -> Option<&Arc<CpuKernelFn>> {
        self.inner.cpu.as_ref()
    }
    /// CPU work-group implementation, if any (see [`KernelBuilder::cpu_groups`]).
    pub fn cpu_group_fn(&self) -> Option<&Arc<CpuGroupFn>> {
        self.inner.cpu_groups.as_ref()
    }
    /// The declared extent of every parameter, in order.
    pub(crate) fn extents(&self) -> &[Extent] {
        &self.inner.extents
    }
    /// Fewest items the CPU backend hands to one call of the CPU function when it
    /// spreads a launch over its workers (see [`KernelBuilder::cpu_grain`]).
    pub fn cpu_grain(&self) -> usize {
        self.inner.cpu_grain
    }
    /// The declared extent of parameter `i` (see [`Extent`]).
    pub fn extent(&self, i: usize) -> &Extent {
        self.inner.extents.get(i).unwrap_or(&Extent::Items)
    }
    /// Run the kernel's scalar check, if it has one.
    pub(crate) fn check_scalars(&self, args: &ScalarArgs<'_>) -> std::result::Result<(), String> {
        match &self.inner.scalar_check {
            Some(f) => f(args),
            None => Ok(()),
        }
    }
    /// Whether the kernel declares its flops and bytes per item
    /// ([`KernelBuilder::cost`]).
    pub fn has_cost(&self) -> bool {
        self.inner.cost.is_some()
    }
    /// The declared cost per item for a launch with these scalar arguments.
    pub(crate) fn cost_per_item(&self, args: &ScalarArgs<'_>) -> Option<Cost> {
        self.inner.cost.as_ref().map(|f| f(args))
    }
    /// Whether the kernel has an implementation for `backend`.
    pub fn supports(&self, backend: BackendKind) -> bool {
        match backend {
            BackendKind::Cpu => self.inner.cpu.is_some() || self.inner.cpu_groups.is_some(),
            BackendKind::OpenCl => self.inner.opencl.is_some(),
            BackendKind::Cuda => self.inner.cuda.is_some(),
        }
    }
    /// Backends this kernel implements.
    pub fn backends(&self) -> Vec<BackendKind> {
        BackendKind::ALL.into_iter().filter(|b| self.supports(*b)).collect()
    }
    /// Names of the backends this kernel implements, comma-separated (for messages).
    pub fn backend_names(&self) -> String {
        self.backends().iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
    }
    /// The error for running this kernel on `device`, whose backend it does not implement.
    pub(crate) fn no_implementation(&self, backend: BackendKind, device: &str) -> Error {
        Error::NoImplementation {
            kernel: self.name().to_string(),
            backend,
            device: device.to_string(),
            has: self.backend_names(),
        }
    }
    /// Whether the signature follows the splittable convention (has `Offset` and `Count`).
    pub fn is_splittable(&self) -> bool {
        self.params().iter().any(|p| matches!(p, Param::Offset))
            && self.params().iter().any(|p| matches!(p, Param::Count))
    }
}

/// Builder for [`Kernel`]; ends in a fallible [`KernelBuilder::build`].
pub struct KernelBuilder {
    name: String,
    params: Vec<Param>,
    cuda: Option<Source>,
    opencl: Option<Source>,
    opencl_host_cpu: Option<Source>,
    cuda_options: Vec<String>,
    opencl_options: Vec<String>,
    opencl_host_cpu_options: Vec<String>,
    cpu: Option<Arc<CpuKernelFn>>,
    cpu_groups: Option<Arc<CpuGroupFn>>,
    cpu_grain: usize,
    /// `(parameter name, extent)` pairs, resolved in `build`.
    extents: Vec<(String, Extent)>,
    scalar_check: Option<Box<ScalarCheckFn>>,
    cost: Option<Arc<CostFn>>,
}

/// Default [`KernelBuilder::cpu_grain`]: enough items that a cheap per-item kernel
/// (vector add) amortises waking a worker.
pub const DEFAULT_CPU_GRAIN: usize = 4096;

impl KernelBuilder {
    /// Append a parameter.
    pub fn param(mut self, p: Param) -> Self {
        self.params.push(p);
        self
    }
    /// CUDA C source whose `extern "C" __global__` entry is named `entry`.
    ///
    /// The library checks every launch's arguments against the signature and every
    /// buffer's length against its declared [`Extent`], but it cannot see inside
    /// device code. The caller promises that the entry point declares exactly the
    /// parameters of the signature, in order and with the same types, and that for
    /// every launch the signature accepts it touches only elements inside each
    /// buffer's declared extent (for example by guarding with `i < count`), writes
    /// only buffers declared `Write`/`ReadWrite`, and uses no more shared memory than
    /// the launch provides. Breaking this promise is undefined behaviour on the
    /// device and, on host-memory devices, in this process.
    ///
    /// # Safety
    /// The device code keeps the promise described above.
    pub unsafe fn cuda(mut self, code: impl Into<String>, entry: &str) -> Self {
        self.cuda = Some(Source {
            code: code.into(),
            entry: entry.to_string(),
            options: Vec::new(),
        });
        self
    }
    /// OpenCL C source whose `__kernel` entry is named `entry`.
    ///
    /// # Safety
    ///
    /// The same promise as [`KernelBuilder::cuda`], for the OpenCL entry point.
    pub unsafe fn opencl(mut self, code: impl Into<String>, entry: &str) -> Self {
        self.opencl = Some(Source {
            code: code.into(),
            entry: entry.to_string(),
            options: Vec::new(),
        });
        self
    }
    /// A second OpenCL C source, shaped for OpenCL devices that compute on host
    /// cores ([`DeviceInfo::host_cpu`]: PoCL, a vendor's CPU runtime), built there
    /// instead of [`KernelBuilder::opencl`]'s. GPU-shaped code (tiles staged in
    /// local memory behind barriers) is slow on such devices; a CPU-shaped kernel
    /// keeps each work-item's loop simple and free of local memory so the
    /// runtime's vectorizer can run work-items in SIMD lanes. It needs a plain
    /// OpenCL source beside it ([`KernelBuilder::build`] refuses it alone), and its
    /// entry `entry` must declare the same signature.
    ///
    /// # Safety
    ///
    /// The same promise as [`KernelBuilder::cuda`], for this entry point.
    pub unsafe fn opencl_host_cpu(mut self, code: impl Into<String>, entry: &str) -> Self {
        self.opencl_host_cpu = Some(Source {
            code: code.into(),
            entry: entry.to_string(),
            options: Vec::new(),
        });
        self
    }
    /// Extra OpenCL build options of the host-CPU source only (e.g.
    /// `-cl-fast-relaxed-math`); may be given before or after
    /// [`KernelBuilder::opencl_host_cpu`].
    pub fn opencl_host_cpu_options(mut self, opts: &[&str]) -> Self {
        self.opencl_host_cpu_options = opts.iter().map(|s| s.to_string()).collect();
        self
    }
    /// Extra NVRTC options (e.g. `--use_fast_math`); may be given before or after
    /// [`KernelBuilder::cuda`].
    pub fn cuda_options(mut self, opts: &[&str]) -> Self {
        self.cuda_options = opts.iter().map(|s| s.to_string()).collect();
        self
    }
    /// Extra OpenCL build options (e.g. `-cl-fast-relaxed-math`); may be given
    /// before or after [`KernelBuilder::opencl`].
    pub fn opencl_options(mut self, opts: &[&str]) -> Self {
        self.opencl_options = opts.iter().map(|s| s.to_string()).collect();
        self
    }
    /// Declare the extent of the buffer parameter `param` (default
    /// [`Extent::Items`]); checked against the buffer's length at every launch.
    pub fn extent(mut self, param: &str, extent: Extent) -> Self {
        self.extents.push((param.to_string(), extent));
        self
    }
    /// Declare that buffer `param` holds at least `per ×` the product of the
    /// integer scalar parameters `scalars` (shorthand for [`Extent::Scalars`]):
    /// `.extent_from("pos", &["n"], 4)`, `.extent_from("img", &["w", "h"], 1)`.
    pub fn extent_from(self, param: &str, scalars: &[&str], per: usize) -> Self {
        self.extent(
            param,
            Extent::Scalars {
                params: scalars.iter().map(|s| s.to_string()).collect(),
                per,
            },
        )
    }
    /// A check of the scalar arguments run at every launch before anything is
    /// enqueued (e.g. a softening length must be finite and positive); its
    /// message becomes an [`Error::InvalidArgument`].
    pub fn check_scalars<F>(mut self, f: F) -> Self
    where
        F: Fn(&ScalarArgs<'_>) -> std::result::Result<(), String> + Send + Sync + 'static,
    {
        self.scalar_check = Some(Box::new(f));
        self
    }
    /// Declare the work of one item: `flops` floating-point operations and
    /// `bytes` of device memory traffic. The profile then places the kernel on its
    /// device's roofline ([`crate::profile::roofline`]).
    pub fn cost(self, flops: f64, bytes: f64) -> Self {
        self.cost_with(move |_: &ScalarArgs<'_>| Cost { flops, bytes })
    }
    /// Declare the work of one item as a function of the launch's scalar
    /// arguments (N-body: `20 × n` flops per body; the `count` of a launch is
    /// among them when the kernel has a `Count` parameter).
    pub fn cost_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&ScalarArgs<'_>) -> Cost + Send + Sync + 'static,
    {
        self.cost = Some(Arc::new(f));
        self
    }
    /// Native CPU implementation.
    pub fn cpu<F>(mut self, f: F) -> Self
    where
        F: Fn(&CpuCtx<'_>) + Send + Sync + 'static,
    {
        self.cpu = Some(Arc::new(f));
        self.cpu_groups = None;
        self
    }
    /// Native CPU implementation written per work-group (see
    /// [`crate::cpu_group`]): called once per group of the launch's grid with the
    /// group's ids, local memory, barrier-separated phases over its items and
    /// atomic views of the outputs, so a kernel written for work-groups runs on
    /// the CPU with the same [`crate::LaunchConfig`] as on a GPU. Replaces a
    /// [`KernelBuilder::cpu`] implementation given before (a kernel has one CPU form).
    pub fn cpu_groups<F>(mut self, f: F) -> Self
    where
        F: Fn(&mut GroupCtx<'_>) + Send + Sync + 'static,
    {
        self.cpu_groups = Some(Arc::new(f));
        self.cpu = None;
        self
    }
    /// Fewest items per call of the CPU function when a launch is spread over the
    /// CPU pool (default [`crate::DEFAULT_CPU_GRAIN`]). Expensive items (N-body: N
    /// interactions each) want a small grain so small launches still use every core.
    pub fn cpu_grain(mut self, items: usize) -> Self {
        self.cpu_grain = items.max(1);
        self
    }
    /// Check and finish.
    pub fn build(self) -> Result<Kernel> {
        if self.name.is_empty() {
            return Err(Error::InvalidInput("kernel name is empty".into()));
        }
        if self.cuda.is_none() && self.opencl.is_none() && self.cpu.is_none() && self.cpu_groups.is_none() {
            return Err(Error::InvalidInput(format!(
                "kernel {:?} has no implementation for any backend",
                self.name
            )));
        }
        if self.opencl_host_cpu.is_some() && self.opencl.is_none() {
            return Err(Error::InvalidInput(format!(
                "kernel {:?} has a host-CPU OpenCL source but no OpenCL source for other OpenCL devices",
                self.name
            )));
        }
        let offsets = self.params.iter().filter(|p| matches!(p, Param::Offset)).count();
        let counts = self.params.iter().filter(|p| matches!(p, Param::Count)).count();
        if offsets > 1 || counts > 1 {
            return Err(Error::InvalidInput(format!(
                "kernel {:?} declares {offsets} Offset and {counts} Count parameters; at most one each",
                self.name
            )));
        }
        for p in &self.params {
            if let Param::Buffer {
                split: Split::Broadcast,
                access,
                name,
                ..
            } = p
                && access.writes()
            {
                return Err(Error::InvalidInput(format!(
                    "kernel {:?} parameter {name:?}: a Broadcast buffer must be read-only",
                    self.name
                )));
            }
            if let Param::Buffer {
                split: Split::Elementwise { per_item: 0 },
                name,
                ..
            } = p
            {
                return Err(Error::InvalidInput(format!(
                    "kernel {:?} parameter {name:?}: per_item must be at least 1",
                    self.name
                )));
            }
        }
        let mut extents = vec![Extent::Items; self.params.len()];
        for (pname, extent) in &self.extents {
            let bad = |why: &str| Error::InvalidInput(format!("kernel {:?}: extent of {pname:?}: {why}", self.name));
            let i = self
                .params
                .iter()
                .position(|p| p.name() == pname && matches!(p, Param::Buffer { .. }))
                .ok_or_else(|| bad("no buffer parameter has this name"))?;
            match extent {
                Extent::Scalars { params, per } => {
                    for param in params {
                        let ok = self.params.iter().any(|p| match p {
                            Param::Scalar { name, ty } => {
                                name == param && !matches!(ty, ScalarType::F32 | ScalarType::F64)
                            }
                            Param::Offset | Param::Count => p.name() == param,
                            _ => false,
                        });
                        if !ok {
                            return Err(bad(&format!("{param:?} is not an integer scalar parameter")));
                        }
                    }
                    if params.is_empty() || *per == 0 {
                        return Err(bad("needs at least one scalar and per ≥ 1"));
                    }
                }
                Extent::Groups { per: 0 } => return Err(bad("per must be at least 1")),
                Extent::Groups { .. } | Extent::Items => {}
            }
            extents[i] = extent.clone();
        }
        let mut cuda = self.cuda;
        if let Some(c) = cuda.as_mut() {
            c.options = self.cuda_options;
        }
        let mut opencl = self.opencl;
        if let Some(c) = opencl.as_mut() {
            c.options = self.opencl_options;
        }
        let mut opencl_host_cpu = self.opencl_host_cpu;
        if let Some(c) = opencl_host_cpu.as_mut() {
            c.options = self.opencl_host_cpu_options;
        }
        let fingerprint = fingerprint(
            &self.name,
            &self.params,
            &extents,
            [cuda.as_ref(), opencl.as_ref(), opencl_host_cpu.as_ref()],
        );
        Ok(Kernel {
            inner: Arc::new(KernelInner {
                id: NEXT_KERNEL_ID.fetch_add(1, Ordering::Relaxed),
                fingerprint,
                alive: Arc::new(()),
                label: Arc::from(self.name.as_str()),
                name: self.name,
                params: self.params,
                cuda,
                opencl,
                opencl_host_cpu,
                cpu: self.cpu,
                cpu_groups: self.cpu_groups,
                cpu_grain: self.cpu_grain,
                extents,
                scalar_check: self.scalar_check,
                cost: self.cost,
            }),
        })
    }
}

/// The stable fingerprint of a kernel description (see [`Kernel::fingerprint`]).
fn fingerprint(
    name: &str,
    params: &[Param],
    extents: &[Extent],
    [cuda, opencl, opencl_host_cpu]: [Option<&Source>; 3],
) -> String {
    let sig: String = params
        .iter()
        .map(|p| match p {
            Param::Buffer {
                name,
                ty,
                access,
                split,
            } => format!("B({name},{},{},{access:?},{split:?})", ty.name, ty.size),
            Param::Scalar { name, ty } => format!("S({name},{})", ty.name()),
            Param::Local { name, ty } => format!("L({name},{},{})", ty.name, ty.size),
            Param::Offset => "O".to_string(),
            Param::Count => "C".to_string(),
        })
        .collect::<Vec<_>>()
        .join(";");
    let sig = format!("{sig}|{extents:?}");
    let mut parts: Vec<Vec<u8>> = vec![b"kernel-v1".to_vec(), name.as_bytes().to_vec(), sig.into_bytes()];
    for (tag, src) in [("cuda", cuda), ("opencl", opencl)] {
        parts.push(tag.as_bytes().to_vec());
        if let Some(s) = src {
            parts.push(s.code.as_bytes().to_vec());
            parts.push(s.entry.as_bytes().to_vec());
            parts.push(s.options.join("\u{1f}").into_bytes());
        }
    }
    // Only present when given, so kernels without one keep their fingerprint.
    if let Some(s) = opencl_host_cpu {
        parts.push(b"opencl_host_cpu".to_vec());
        parts.push(s.code.as_bytes().to_vec());
        parts.push(s.entry.as_bytes().to_vec());
        parts.push(s.options.join("\u{1f}").into_bytes());
    }
    let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
    crate::cache::key(&refs)
}
