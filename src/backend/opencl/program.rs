//! Program build for the OpenCL backend: from source, from the on-disk binary
//! cache, the per-device in-memory cache of built kernels, and the check of a
//! kernel's signature against the parameter types its source declares.
//!
//! * In memory: one [`Built`] per live [`Kernel`] and device (a
//!   [`KernelCache`], evicted with the kernel), holding the program and a few
//!   `cl_kernel` slots, each behind a mutex (kernel objects carry their arguments
//!   as state, so a launch holds its slot's mutex from setting the arguments to
//!   the enqueue; queues spread over the slots so they rarely contend).
//! * On disk: the program binary from `CL_PROGRAM_BINARIES`, stored through
//!   [`crate::cache`] under kind `opencl`, keyed by device name, vendor, driver
//!   version, source, entry point and build options. A second process loads the
//!   binary and skips the compiler front end.
//!
//! The cache directory is trusted like PoCL's own kernel cache: anyone who can
//! write there can make the driver load any program. What is validated guards
//! against accidents: each entry is sealed ([`crate::cache::write_sealed`]) behind a
//! format magic, the binary's length and a hash over the key material
//! (everything the key is made of) and the binary. So an entry of another format
//! version, a truncated or damaged file, and another program's binary copied
//! under this key (even with a header made consistent for that binary alone) are
//! all rejected with a warning, never handed to the driver; the program is then
//! built from source and the entry rewritten. A binary the driver refuses is
//! handled the same way.
//!
//! Programs are built with `-cl-kernel-arg-info` (appended to the kernel's
//! options, so part of the cache key), and each parameter's address space and
//! type name from `clGetKernelArgInfo` are compared with the signature:
//! * scalars (and `Offset`/`Count`, which are `uint`) must be by-value
//!   parameters of the same type (`int`, `uint`/`unsigned int`, `long`, `ulong`,
//!   `float`, `double`);
//! * buffers must be `__global` or `__constant` pointers, local memory `__local`
//!   pointers, to the element type: when both the pointee's component and the
//!   element are one of those scalar types they must be the same (`float4*` over
//!   `f32` elements is fine, `int*` is not), otherwise the pointee's size or its
//!   component's size must be the element's.
//!
//! A mismatch is [`Error::SignatureMismatch`] naming both declarations. Type
//! names the check cannot interpret (typedefs, structs, `void`) are accepted; a
//! driver that reports no argument info skips the check (debug log).
//!
//! Build failures return [`Error::Build`] with the full build log; a missing
//! entry point returns [`Error::EntryNotFound`].

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::{Arc, Weak};

use opencl3::error_codes::{CL_INVALID_KERNEL_NAME, CL_KERNEL_ARG_INFO_NOT_AVAILABLE};
use opencl3::kernel::{
    CL_KERNEL_ARG_ADDRESS_CONSTANT, CL_KERNEL_ARG_ADDRESS_GLOBAL, CL_KERNEL_ARG_ADDRESS_LOCAL,
    CL_KERNEL_ARG_ADDRESS_PRIVATE, CL_KERNEL_ARG_ADDRESS_QUALIFIER, CL_KERNEL_ARG_NAME, CL_KERNEL_ARG_TYPE_NAME,
    CL_KERNEL_NUM_ARGS, create_kernel, get_kernel_arg_data, get_kernel_data,
};
use opencl3::program::{
    CL_PROGRAM_BINARIES, CL_PROGRAM_BUILD_LOG, build_program, create_program_with_binary, create_program_with_source,
    get_program_build_data, get_program_info,
};
use opencl3::types::cl_device_id;
use parking_lot::Mutex;

use super::error::{Op, code_name, map_cl_err};
use super::handles::{Context, KernelObj, Program};
use crate::backend::kernel_cache::KernelCache;
use crate::device::DeviceInfo;
use crate::error::{BackendKind, Error, Result};
use crate::kernel::{Kernel, Param, ScalarType};

/// Cache kind (sub-directory) of program binaries.
const CACHE_KIND: &str = "opencl";
/// Build option that makes the driver keep parameter types for `clGetKernelArgInfo`.
const ARG_INFO_OPTION: &str = "-cl-kernel-arg-info";

/// A program built for one device, with its kernel object slots.
pub(crate) struct Built {
    /// Kernel objects; a queue uses slot `its index % len`.
    pub kernels: Vec<Mutex<super::launch::KernelSlot>>,
    /// Keeps the program alive as long as its kernels (released after them).
    _program: Arc<Program>,
}

/// The per-device in-memory cache of built kernels, evicted with their kernel.
#[derive(Default)]
pub(crate) struct ProgramCache {
    built: KernelCache<Built>,
    /// Programs by source and options, shared by every kernel built from the same
    /// source (one `Program` with several entry points is compiled once).
    programs: Mutex<HashMap<String, Weak<Program>>>,
}

impl ProgramCache {
    /// The built kernel, building it first if needed.
    pub(crate) fn get_or_build(
        &self,
        ctx: &Context,
        dev: cl_device_id,
        info: &DeviceInfo,
        kernel: &Kernel,
        slots: usize,
    ) -> Result<Arc<Built>> {
        let (built, _) = self
            .built
            .get_or_try_build(kernel, || build_kernel(self, ctx, dev, info, kernel, slots))?;
        Ok(built)
    }

    /// The program built from `code` with `options`, shared while any kernel uses it.
    #[allow(clippy::too_many_arguments)]
    fn program(
        &self,
        ctx: &Context,
        dev: cl_device_id,
        info: &DeviceInfo,
        kernel: &Kernel,
        entry: &str,
        code: &str,
        options: &str,
    ) -> Result<Arc<Program>> {
        let key = crate::cache::key(&[code.as_bytes(), options.as_bytes()]);
        if let Some(p) = self.programs.lock().get(&key).and_then(Weak::upgrade) {
            return Ok(p);
        }
        let p = Arc::new(build_program_cached(
            ctx,
            dev,
            info,
            kernel.name(),
            code,
            entry,
            options,
        )?);
        let mut map = self.programs.lock();
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(key, Arc::downgrade(&p));
        Ok(p)
    }

    /// Drop every built program (teardown).
    pub(crate) fn clear(&self) {
        self.built.clear();
        self.programs.lock().clear();
    }
}

/// Build `kernel`'s OpenCL source for `dev` and create `slots` kernel objects.
fn build_kernel(
    cache: &ProgramCache,
    ctx: &Context,
    dev: cl_device_id,
    info: &DeviceInfo,
    kernel: &Kernel,
    slots: usize,
) -> Result<Built> {
    // A host-CPU device (PoCL) builds the kernel's CPU-shaped source when it has one.
    let Some(src) = kernel.opencl_source_for(info) else {
        return Err(kernel.no_implementation(BackendKind::OpenCl, &info.label()));
    };
    let mut options: Vec<&str> = src.options.iter().map(String::as_str).collect();
    if !options.contains(&ARG_INFO_OPTION) {
        options.push(ARG_INFO_OPTION);
    }
    let options = options.join(" ");
    let program = cache.program(ctx, dev, info, kernel, &src.entry, &src.code, &options)?;
    let mut kernels = Vec::with_capacity(slots.max(1));
    for _ in 0..slots.max(1) {
        kernels.push(Mutex::new(super::launch::KernelSlot::new(create_entry(
            &program,
            info,
            kernel.name(),
            &src.entry,
        )?)));
    }
    // The source must declare exactly the parameters of the signature.
    let declared = kernel_num_args(&kernels[0].lock().obj, info)?;
    if declared != kernel.params().len() {
        return Err(Error::InvalidInput(format!(
            "kernel {:?}: its OpenCL entry {:?} declares {declared} parameters but its signature has {}",
            kernel.name(),
            src.entry,
            kernel.params().len()
        )));
    }
    check_arg_types(&kernels[0].lock().obj, info, kernel)?;
    Ok(Built {
        kernels,
        _program: program,
    })
}

/// Compare each parameter's address space and type name, as the driver reports
/// them, with the signature; see the module docs for the rules.
fn check_arg_types(k: &KernelObj, info: &DeviceInfo, kernel: &Kernel) -> Result<()> {
    for (index, param) in kernel.params().iter().enumerate() {
        let Some(arg) = arg_info(k, index, info, kernel)? else {
            return Ok(());
        };
        match arg_matches(param, &arg) {
            Some(true) => {}
            Some(false) => {
                return Err(Error::SignatureMismatch {
                    kernel: kernel.name().to_string(),
                    device: info.label(),
                    index,
                    source_decl: arg.render(),
                    signature: format!("{}: {}", param.name(), param.describe()),
                });
            }
            None => tracing::debug!(
                kernel = kernel.name(),
                index,
                type_name = %arg.type_name,
                "parameter type not recognised; its type is not checked"
            ),
        }
    }
    Ok(())
}

/// One parameter as the OpenCL source declares it.
struct ArgInfo {
    address: u32,
    type_name: String,
    name: String,
}

impl ArgInfo {
    /// The declaration, e.g. `__global float* x` or `uint n`.
    fn render(&self) -> String {
        let space = match self.address {
            CL_KERNEL_ARG_ADDRESS_GLOBAL => "__global ",
            CL_KERNEL_ARG_ADDRESS_CONSTANT => "__constant ",
            CL_KERNEL_ARG_ADDRESS_LOCAL => "__local ",
            _ => "",
        };
        if self.name.is_empty() {
            format!("{space}{}", self.type_name)
        } else {
            format!("{space}{} {}", self.type_name, self.name)
        }
    }
}

/// Parameter `index`'s info from `clGetKernelArgInfo`; `None` when the driver
/// has none (the check is then skipped, logged).
fn arg_info(k: &KernelObj, index: usize, info: &DeviceInfo, kernel: &Kernel) -> Result<Option<ArgInfo>> {
    let query = |what| get_kernel_arg_data(k.raw(), index as u32, what);
    let text = |bytes: Vec<u8>| {
        String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .trim()
            .to_string()
    };
    let answer = query(CL_KERNEL_ARG_ADDRESS_QUALIFIER).and_then(|address| {
        let type_name = query(CL_KERNEL_ARG_TYPE_NAME)?;
        let name = query(CL_KERNEL_ARG_NAME).unwrap_or_default();
        Ok((address, type_name, name))
    });
    let (address, type_name, name) = match answer {
        Ok(a) => a,
        Err(CL_KERNEL_ARG_INFO_NOT_AVAILABLE) => {
            tracing::debug!(
                kernel = kernel.name(),
                device = %info.label(),
                "the driver keeps no kernel argument info; parameter types are not checked"
            );
            return Ok(None);
        }
        Err(c) => {
            tracing::warn!(
                kernel = kernel.name(),
                device = %info.label(),
                error = %code_name(c),
                "clGetKernelArgInfo failed; parameter types are not checked"
            );
            return Ok(None);
        }
    };
    let Ok(address) = <[u8; 4]>::try_from(address.as_slice()).map(u32::from_ne_bytes) else {
        return Err(Error::Driver {
            backend: BackendKind::OpenCl,
            device: info.label(),
            operation: "clGetKernelArgInfo(CL_KERNEL_ARG_ADDRESS_QUALIFIER)".into(),
            message: format!("expected a 4-byte cl_uint, got {} bytes", address.len()),
        });
    };
    Ok(Some(ArgInfo {
        address,
        type_name: text(type_name),
        name: text(name),
    }))
}

/// Whether the source's declaration fits the parameter: `Some(true)` or
/// `Some(false)`, `None` when the type name is not recognised (not checked).
fn arg_matches(param: &Param, arg: &ArgInfo) -> Option<bool> {
    let pointer = arg.type_name.ends_with('*');
    let ty = source_type(&arg.type_name);
    match param {
        Param::Scalar { ty: want, .. } => scalar_matches(*want, pointer, arg.address, ty),
        Param::Offset | Param::Count => scalar_matches(ScalarType::U32, pointer, arg.address, ty),
        Param::Buffer { ty: elem, .. } => {
            let space = matches!(
                arg.address,
                CL_KERNEL_ARG_ADDRESS_GLOBAL | CL_KERNEL_ARG_ADDRESS_CONSTANT
            );
            pointee_matches(elem, pointer && space, ty)
        }
        Param::Local { ty: elem, .. } => {
            pointee_matches(elem, pointer && arg.address == CL_KERNEL_ARG_ADDRESS_LOCAL, ty)
        }
    }
}

fn scalar_matches(want: ScalarType, pointer: bool, address: u32, ty: Option<SourceType>) -> Option<bool> {
    if pointer || address != CL_KERNEL_ARG_ADDRESS_PRIVATE {
        return Some(false);
    }
    ty.map(|t| t.lanes == 1 && t.scalar == Some(want))
}

/// A pointer parameter in the right address space, whose pointee is the buffer's
/// element: the same size, or a vector of it (`float4*` over `f32` elements).
/// When both the pointee's component and the element are scalars of
/// [`ScalarType`], they must be the same type.
fn pointee_matches(elem: &crate::kernel::ElemType, pointer_in_space: bool, ty: Option<SourceType>) -> Option<bool> {
    if !pointer_in_space {
        return Some(false);
    }
    let t = ty?;
    if let (Some(have), Some(want)) = (t.scalar, elem_scalar(elem)) {
        return Some(have == want);
    }
    Some(t.size() == elem.size || t.component == elem.size)
}

/// The [`ScalarType`] a buffer element type is, if it is one.
fn elem_scalar(elem: &crate::kernel::ElemType) -> Option<ScalarType> {
    use std::any::TypeId;
    [
        (TypeId::of::<i32>(), ScalarType::I32),
        (TypeId::of::<u32>(), ScalarType::U32),
        (TypeId::of::<i64>(), ScalarType::I64),
        (TypeId::of::<u64>(), ScalarType::U64),
        (TypeId::of::<f32>(), ScalarType::F32),
        (TypeId::of::<f64>(), ScalarType::F64),
    ]
    .into_iter()
    .find(|(id, _)| *id == elem.id)
    .map(|(_, s)| s)
}

/// A recognised OpenCL C type (of a value, or of a pointer's pointee).
#[derive(Clone, Copy, Debug, PartialEq)]
struct SourceType {
    /// The component's type, when it is one of [`ScalarType`].
    scalar: Option<ScalarType>,
    /// Bytes of one component.
    component: usize,
    /// Vector width (1 for a scalar).
    lanes: usize,
}

impl SourceType {
    /// Bytes of the whole value (3-component vectors are 4 wide).
    fn size(&self) -> usize {
        self.component * if self.lanes == 3 { 4 } else { self.lanes }
    }
}

/// Parse a `CL_KERNEL_ARG_TYPE_NAME` (`float`, `unsigned int`, `float4*`, ...);
/// a pointer gives its pointee. `None` for names that are not built-in types
/// (typedefs, structs, `void`, pointers to pointers).
fn source_type(name: &str) -> Option<SourceType> {
    const QUALIFIERS: [&str; 13] = [
        "const",
        "volatile",
        "restrict",
        "__restrict",
        "__global",
        "global",
        "__local",
        "local",
        "__constant",
        "constant",
        "__private",
        "private",
        "signed",
    ];
    let name = name.trim();
    let stars = name.len() - name.trim_end_matches(['*', ' ']).len();
    let stars = name[name.len() - stars..].matches('*').count();
    if stars > 1 {
        return None;
    }
    let base: String = name
        .trim_end_matches(['*', ' '])
        .split_whitespace()
        .filter(|t| !QUALIFIERS.contains(t))
        .collect();
    let scalar = |n: &str| -> Option<(Option<ScalarType>, usize)> {
        Some(match n {
            "char" | "uchar" | "unsignedchar" => (None, 1),
            "short" | "ushort" | "unsignedshort" | "half" => (None, 2),
            "int" => (Some(ScalarType::I32), 4),
            "uint" | "unsignedint" | "unsigned" => (Some(ScalarType::U32), 4),
            "long" => (Some(ScalarType::I64), 8),
            "ulong" | "unsignedlong" => (Some(ScalarType::U64), 8),
            "float" => (Some(ScalarType::F32), 4),
            "double" => (Some(ScalarType::F64), 8),
            _ => return None,
        })
    };
    let (scalar, component, lanes) = match scalar(&base) {
        Some((s, c)) => (s, c, 1),
        None => {
            let digits = base.len() - base.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            let (head, width) = base.split_at(base.len() - digits);
            let lanes: usize = width.parse().ok().filter(|n| [2, 3, 4, 8, 16].contains(n))?;
            // Vector types only exist for the short spellings (`uint4`, not `unsignedint4`).
            if head.starts_with("unsigned") {
                return None;
            }
            let (s, c) = scalar(head)?;
            (s, c, lanes)
        }
    };
    Some(SourceType {
        scalar,
        component,
        lanes,
    })
}

fn kernel_num_args(k: &KernelObj, info: &DeviceInfo) -> Result<usize> {
    let op = "clGetKernelInfo(CL_KERNEL_NUM_ARGS)";
    let bytes = get_kernel_data(k.raw(), CL_KERNEL_NUM_ARGS).map_err(|c| map_cl_err(c, info, Op::new(op)))?;
    match <[u8; 4]>::try_from(bytes.as_slice()) {
        Ok(b) => Ok(u32::from_ne_bytes(b) as usize),
        Err(_) => Err(Error::Driver {
            backend: BackendKind::OpenCl,
            device: info.label(),
            operation: op.into(),
            message: format!("expected a 4-byte cl_uint, got {} bytes", bytes.len()),
        }),
    }
}

/// Create the kernel object for `entry`; an unknown name is [`Error::EntryNotFound`].
pub(crate) fn create_entry(program: &Program, info: &DeviceInfo, kernel: &str, entry: &str) -> Result<KernelObj> {
    let not_found = || Error::EntryNotFound {
        kernel: kernel.to_string(),
        entry: entry.to_string(),
        device: info.label(),
    };
    let c_entry = CString::new(entry).map_err(|_| not_found())?;
    match create_kernel(program.raw(), &c_entry) {
        // SAFETY: a successful clCreateKernel returns a kernel with one reference, ours.
        Ok(k) => Ok(unsafe { KernelObj::from_raw(k) }),
        Err(CL_INVALID_KERNEL_NAME) => Err(not_found()),
        Err(c) => Err(map_cl_err(c, info, Op::new("clCreateKernel").kernel(kernel))),
    }
}

/// Everything that determines a program binary (and so names its cache entry).
fn key_material<'a>(info: &'a DeviceInfo, code: &'a str, entry: &'a str, options: &'a str) -> [&'a [u8]; 7] {
    [
        b"opencl-program-binary-v2",
        info.name.as_bytes(),
        info.vendor.as_bytes(),
        info.driver_version.as_bytes(),
        code.as_bytes(),
        entry.as_bytes(),
        options.as_bytes(),
    ]
}

/// Build a program: from the on-disk binary cache when a valid entry exists,
/// else from source (then the binary is stored for the next process). `entry`
/// is the entry point the program is built for (part of the cache key).
pub(crate) fn build_program_cached(
    ctx: &Context,
    dev: cl_device_id,
    info: &DeviceInfo,
    name: &str,
    code: &str,
    entry: &str,
    options: &str,
) -> Result<Program> {
    let c_options = CString::new(options)
        .map_err(|_| Error::InvalidInput(format!("kernel {name:?}: OpenCL build options contain a NUL byte")))?;
    let material = key_material(info, code, entry, options);
    match crate::cache::read_sealed(CACHE_KIND, &material) {
        crate::cache::Sealed::Valid(binary) => match build_from_binary(ctx, dev, &binary, &c_options) {
            Ok(p) => {
                tracing::debug!(kernel = name, device = %info.label(), "program loaded from the binary cache");
                return Ok(p);
            }
            Err(why) => tracing::warn!(
                kernel = name,
                device = %info.label(),
                %why,
                "cached OpenCL program binary refused by the driver; rebuilding from source"
            ),
        },
        crate::cache::Sealed::Invalid(why) => tracing::warn!(
            kernel = name,
            device = %info.label(),
            key = %crate::cache::key(&material),
            why,
            "invalid OpenCL program binary cache entry; rebuilding from source"
        ),
        crate::cache::Sealed::Missing => {}
    }
    let program = build_from_source(ctx, dev, info, name, code, &c_options)?;
    match program_binary(&program) {
        Some(bin) if !bin.is_empty() => crate::cache::write_sealed(CACHE_KIND, &material, &bin),
        _ => tracing::debug!(kernel = name, "the driver returned no program binary; nothing cached"),
    }
    Ok(program)
}

fn build_from_source(
    ctx: &Context,
    dev: cl_device_id,
    info: &DeviceInfo,
    name: &str,
    code: &str,
    options: &std::ffi::CStr,
) -> Result<Program> {
    let raw = create_program_with_source(ctx.raw(), &[code])
        .map_err(|c| map_cl_err(c, info, Op::new("clCreateProgramWithSource").kernel(name)))?;
    // SAFETY: a successful clCreateProgramWithSource returns a program with one reference, ours.
    let program = unsafe { Program::from_raw(raw) };
    if let Err(status) = build_program(program.raw(), &[dev], options, None, std::ptr::null_mut()) {
        let log = build_log(&program, dev);
        return Err(Error::Build {
            kernel: name.to_string(),
            device: info.label(),
            log: crate::portable::annotate_log(
                code,
                format!(
                    "clBuildProgram failed with {} (options: {:?})\n{}",
                    code_name(status),
                    options.to_string_lossy(),
                    if log.trim().is_empty() {
                        "(the driver gave no build log)"
                    } else {
                        &log
                    }
                ),
            ),
        });
    }
    Ok(program)
}

/// Build from a cached binary; the error is a message for the log only.
fn build_from_binary(
    ctx: &Context,
    dev: cl_device_id,
    binary: &[u8],
    options: &std::ffi::CStr,
) -> Result<Program, String> {
    // SAFETY: `dev` belongs to `ctx`; one binary for one device, as required.
    let raw = unsafe { create_program_with_binary(ctx.raw(), &[dev], &[binary]) }.map_err(code_name)?;
    // SAFETY: a successful clCreateProgramWithBinary returns a program with one reference, ours.
    let program = unsafe { Program::from_raw(raw) };
    build_program(program.raw(), &[dev], options, None, std::ptr::null_mut()).map_err(code_name)?;
    Ok(program)
}

/// The program's build log for `dev` (empty when the driver gives none).
fn build_log(program: &Program, dev: cl_device_id) -> String {
    match get_program_build_data(program.raw(), dev, CL_PROGRAM_BUILD_LOG) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim_end_matches('\0').to_string(),
        Err(c) => format!("(build log unavailable: {})", code_name(c)),
    }
}

/// The device binary of a program built for a single device.
fn program_binary(program: &Program) -> Option<Vec<u8>> {
    match get_program_info(program.raw(), CL_PROGRAM_BINARIES) {
        // cl3 always answers CL_PROGRAM_BINARIES with its `VecVecUchar` variant, so
        // this conversion (which would panic on another variant) cannot fail.
        Ok(info) => info.to_vec_vec_uchar().into_iter().next(),
        Err(c) => {
            tracing::debug!(error = %code_name(c), "cannot read the program binary");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::source_type;

    #[test]
    fn source_type_names() {
        use crate::kernel::ScalarType::*;
        let t = |n: &str| source_type(n).map(|t| (t.scalar, t.size(), t.lanes));
        assert_eq!(t("float"), Some((Some(F32), 4, 1)));
        assert_eq!(t("uint"), Some((Some(U32), 4, 1)));
        assert_eq!(t("unsigned int"), Some((Some(U32), 4, 1)));
        assert_eq!(t("unsignedint"), Some((Some(U32), 4, 1)));
        assert_eq!(t("const ulong"), Some((Some(U64), 8, 1)));
        assert_eq!(t("long"), Some((Some(I64), 8, 1)));
        assert_eq!(t("int"), Some((Some(I32), 4, 1)));
        assert_eq!(t("double*"), Some((Some(F64), 8, 1)));
        assert_eq!(t("float4*"), Some((Some(F32), 16, 4)));
        assert_eq!(t("float4 *"), Some((Some(F32), 16, 4)));
        assert_eq!(t("float3"), Some((Some(F32), 16, 3)));
        assert_eq!(t("uchar*"), Some((None, 1, 1)));
        assert_eq!(t("half"), Some((None, 2, 1)));
        assert_eq!(t("my_real"), None);
        assert_eq!(t("struct body*"), None);
        assert_eq!(t("void*"), None);
        assert_eq!(t("float**"), None);
        assert_eq!(t("float5"), None);
    }
}
