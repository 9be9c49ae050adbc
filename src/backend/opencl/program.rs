//! Program build for the OpenCL backend: from source, from the on-disk binary
//! cache, and the per-device in-memory cache of built kernels.
//!
//! * In memory: one [`Built`] per [`Kernel::id`] and device, holding the program
//!   and one `cl_kernel` per command queue (kernel objects carry their arguments
//!   as state, so a launch uses the kernel object of the queue it holds).
//! * On disk: the program binary from `CL_PROGRAM_BINARIES`, stored through
//!   [`crate::cache`] under kind `opencl`, keyed by device name, driver version,
//!   source and build options. A second process loads the binary and skips the
//!   compiler front end. Each entry carries a header with its length and a hash
//!   of its contents; an entry that fails that check or that the driver refuses
//!   is ignored with a warning and replaced after a source build.
//!
//! Build failures return [`Error::Build`] with the full build log; a missing
//! entry point returns [`Error::EntryNotFound`].

use std::collections::HashMap;
use std::ffi::CString;
use std::sync::Arc;

use opencl3::error_codes::CL_INVALID_KERNEL_NAME;
use opencl3::kernel::{CL_KERNEL_NUM_ARGS, create_kernel, get_kernel_data};
use opencl3::program::{
    CL_PROGRAM_BINARIES, CL_PROGRAM_BUILD_LOG, build_program, create_program_with_binary, create_program_with_source,
    get_program_build_data, get_program_info,
};
use opencl3::types::cl_device_id;
use parking_lot::{Mutex, RwLock};

use super::error::{Op, code_name, map_cl_err};
use super::handles::{Context, KernelObj, Program};
use crate::device::DeviceInfo;
use crate::error::{BackendKind, Error, Result};
use crate::kernel::Kernel;

/// Cache kind (sub-directory) of program binaries.
const CACHE_KIND: &str = "opencl";
/// Magic at the start of every cache entry (format version included).
const MAGIC: &[u8; 14] = b"OFFLOADCLBIN1\n";
/// Header: magic, u64 length, 32 hex digits of the content hash.
const HEADER: usize = MAGIC.len() + 8 + 32;

/// A program built for one device, with one kernel object per queue.
pub(crate) struct Built {
    /// Kernel objects, indexed like the device's queues.
    pub kernels: Vec<Mutex<KernelObj>>,
    /// Keeps the program alive as long as its kernels (released after them).
    _program: Program,
}

/// The per-device in-memory cache, keyed by [`Kernel::id`].
#[derive(Default)]
pub(crate) struct ProgramCache {
    map: RwLock<HashMap<u64, Arc<Built>>>,
    build_lock: Mutex<()>,
}

impl ProgramCache {
    /// The built kernel, building it first if needed.
    pub(crate) fn get_or_build(
        &self,
        ctx: &Context,
        dev: cl_device_id,
        info: &DeviceInfo,
        kernel: &Kernel,
        queues: usize,
    ) -> Result<Arc<Built>> {
        if let Some(b) = self.map.read().get(&kernel.id()) {
            return Ok(b.clone());
        }
        // One build at a time per device: a second caller waits and then finds it.
        let _guard = self.build_lock.lock();
        if let Some(b) = self.map.read().get(&kernel.id()) {
            return Ok(b.clone());
        }
        let built = Arc::new(build_kernel(ctx, dev, info, kernel, queues)?);
        self.map.write().insert(kernel.id(), built.clone());
        Ok(built)
    }

    /// Drop every built program (teardown).
    pub(crate) fn clear(&self) {
        let _guard = self.build_lock.lock();
        self.map.write().clear();
    }
}

/// Build `kernel`'s OpenCL source for `dev` and create `queues` kernel objects.
fn build_kernel(ctx: &Context, dev: cl_device_id, info: &DeviceInfo, kernel: &Kernel, queues: usize) -> Result<Built> {
    let Some(src) = kernel.opencl_source() else {
        return Err(kernel.no_implementation(BackendKind::OpenCl, &info.label()));
    };
    let options = src.options.join(" ");
    let program = build_program_cached(ctx, dev, info, kernel.name(), &src.code, &options)?;
    let mut kernels = Vec::with_capacity(queues.max(1));
    for _ in 0..queues.max(1) {
        kernels.push(Mutex::new(create_entry(&program, info, kernel.name(), &src.entry)?));
    }
    // The source must declare exactly the parameters of the signature.
    let declared = kernel_num_args(&kernels[0].lock(), info)?;
    if declared != kernel.params().len() {
        return Err(Error::InvalidInput(format!(
            "kernel {:?}: its OpenCL entry {:?} declares {declared} parameters but its signature has {}",
            kernel.name(),
            src.entry,
            kernel.params().len()
        )));
    }
    Ok(Built {
        kernels,
        _program: program,
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

/// The on-disk cache key of a program.
fn cache_key(info: &DeviceInfo, code: &str, options: &str) -> String {
    crate::cache::key(&[
        b"opencl-program-binary-v1",
        info.name.as_bytes(),
        info.vendor.as_bytes(),
        info.driver_version.as_bytes(),
        code.as_bytes(),
        options.as_bytes(),
    ])
}

/// Build a program: from the on-disk binary cache when a valid entry exists,
/// else from source (then the binary is stored for the next process).
pub(crate) fn build_program_cached(
    ctx: &Context,
    dev: cl_device_id,
    info: &DeviceInfo,
    name: &str,
    code: &str,
    options: &str,
) -> Result<Program> {
    let c_options = CString::new(options)
        .map_err(|_| Error::InvalidInput(format!("kernel {name:?}: OpenCL build options contain a NUL byte")))?;
    let key = cache_key(info, code, options);
    if let Some(entry) = crate::cache::read(CACHE_KIND, &key) {
        match decode_entry(&entry) {
            Some(binary) => match build_from_binary(ctx, dev, binary, &c_options) {
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
            None => tracing::warn!(
                kernel = name,
                device = %info.label(),
                "corrupt OpenCL program binary cache entry; rebuilding from source"
            ),
        }
    }
    let program = build_from_source(ctx, dev, info, name, code, &c_options)?;
    match program_binary(&program) {
        Some(bin) if !bin.is_empty() => crate::cache::write(CACHE_KIND, &key, &encode_entry(&bin)),
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
    if let Err(code) = build_program(program.raw(), &[dev], options, None, std::ptr::null_mut()) {
        let log = build_log(&program, dev);
        return Err(Error::Build {
            kernel: name.to_string(),
            device: info.label(),
            log: format!(
                "clBuildProgram failed with {} (options: {:?})\n{}",
                code_name(code),
                options.to_string_lossy(),
                if log.trim().is_empty() {
                    "(the driver gave no build log)"
                } else {
                    &log
                }
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

fn encode_entry(binary: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + binary.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(binary.len() as u64).to_le_bytes());
    out.extend_from_slice(crate::cache::key(&[binary]).as_bytes());
    out.extend_from_slice(binary);
    out
}

/// The binary inside a cache entry, if the entry is intact.
fn decode_entry(entry: &[u8]) -> Option<&[u8]> {
    if entry.len() < HEADER || &entry[..MAGIC.len()] != MAGIC {
        return None;
    }
    let len_bytes: [u8; 8] = entry[MAGIC.len()..MAGIC.len() + 8].try_into().ok()?;
    let len = u64::from_le_bytes(len_bytes);
    let binary = &entry[HEADER..];
    if binary.len() as u64 != len || binary.is_empty() {
        return None;
    }
    let hash = &entry[MAGIC.len() + 8..HEADER];
    (crate::cache::key(&[binary]).as_bytes() == hash).then_some(binary)
}

#[cfg(test)]
mod tests {
    use super::{decode_entry, encode_entry};

    #[test]
    fn cache_entries_round_trip_and_reject_damage() {
        let bin = b"some program binary".to_vec();
        let e = encode_entry(&bin);
        assert_eq!(decode_entry(&e), Some(&bin[..]));
        let mut flipped = e.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(decode_entry(&flipped), None);
        assert_eq!(decode_entry(&e[..e.len() - 1]), None);
        assert_eq!(decode_entry(b"garbage"), None);
    }
}
