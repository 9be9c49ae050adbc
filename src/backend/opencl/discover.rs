//! Discovery: every device of every OpenCL platform, its [`DeviceInfo`] read from
//! the driver, and its context and command queues.
//!
//! Discovery runs under a process-wide lock (some drivers are not thread-safe
//! while they initialise). A missing `libOpenCL.so.1`, an ICD loader without any vendor platform, or
//! platforms without devices make the backend unavailable with that reason. A
//! device that fails to initialise is skipped with a warning (the others are
//! still offered); only when none is left is the backend unavailable.
//!
//! How each [`DeviceInfo`] field is obtained:
//!
//! | field | source |
//! |---|---|
//! | `compute_units` | `CL_DEVICE_MAX_COMPUTE_UNITS` |
//! | `warp_size` | `CL_DEVICE_PREFERRED_WORK_GROUP_SIZE_MULTIPLE` (OpenCL 3.0), else `CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE` of a tiny probe kernel, else a guess: 32 for GPUs, `CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT` otherwise |
//! | `max_threads_per_block` | `CL_DEVICE_MAX_WORK_GROUP_SIZE` |
//! | `max_block_dims` | `CL_DEVICE_MAX_WORK_ITEM_SIZES` |
//! | `max_grid_dims` | `u32::MAX` per axis (OpenCL limits the global size, not the group count) |
//! | `max_global_size` | `2^CL_DEVICE_ADDRESS_BITS − 1` |
//! | `view_align_bytes` | `CL_DEVICE_MEM_BASE_ADDR_ALIGN` / 8 (a sub-buffer's origin must be a multiple) |
//! | `global_mem_bytes` / `local_mem_bytes` / `max_alloc_bytes` | `CL_DEVICE_GLOBAL_MEM_SIZE` / `CL_DEVICE_LOCAL_MEM_SIZE` / `CL_DEVICE_MAX_MEM_ALLOC_SIZE` |
//! | `driver_version` | `CL_DRIVER_VERSION`, the platform's `CL_PLATFORM_VERSION` and the device's `CL_DEVICE_VERSION` |
//! | `requires_uniform_blocks` | device OpenCL version below 2.0 |

use std::sync::Arc;

use opencl3::command_queue::{
    CL_QUEUE_PROFILING_ENABLE, CL_QUEUE_PROPERTIES, create_command_queue, create_command_queue_with_properties,
};
use opencl3::context::context::create_context;
use opencl3::device::{
    CL_DEVICE_ADDRESS_BITS, CL_DEVICE_GLOBAL_MEM_SIZE, CL_DEVICE_LOCAL_MEM_SIZE, CL_DEVICE_MAX_COMPUTE_UNITS,
    CL_DEVICE_MAX_MEM_ALLOC_SIZE, CL_DEVICE_MAX_WORK_GROUP_SIZE, CL_DEVICE_MAX_WORK_ITEM_SIZES,
    CL_DEVICE_MEM_BASE_ADDR_ALIGN, CL_DEVICE_NAME, CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT,
    CL_DEVICE_PREFERRED_WORK_GROUP_SIZE_MULTIPLE, CL_DEVICE_TYPE, CL_DEVICE_TYPE_ALL, CL_DEVICE_TYPE_CPU,
    CL_DEVICE_TYPE_GPU, CL_DEVICE_VENDOR, CL_DEVICE_VERSION, CL_DRIVER_VERSION, get_device_data, get_device_ids,
};
use opencl3::error_codes::{CL_DEVICE_NOT_FOUND, DLOPEN_RUNTIME_LOAD_FAILED};
use opencl3::kernel::{CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE, get_kernel_work_group_data};
use opencl3::platform::platform::{CL_PLATFORM_NAME, CL_PLATFORM_VERSION, get_platform_data, get_platform_ids};
use opencl3::types::{cl_device_id, cl_int, cl_platform_id, cl_queue_properties};

use super::error::code_name;
use super::handles::{Context, Queue};
use super::{DeviceId, OpenClBackend, QUEUES_PER_DEVICE, program};
use crate::backend::{Backend, Discovery};
use crate::device::DeviceInfo;
use crate::error::BackendKind;

/// Serialises discovery across the process: PoCL 3.1 crashes in `clGetDeviceInfo`
/// when two threads enumerate its devices while it is still initialising them.
static DISCOVERY_LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Every OpenCL device on every platform, indexed in discovery order.
pub(crate) fn discover() -> Discovery {
    let _serial = DISCOVERY_LOCK.lock();
    let platforms = get_platform_ids().map_err(|c| match c {
        DLOPEN_RUNTIME_LOAD_FAILED => "the OpenCL library libOpenCL.so.1 could not be loaded (install an ICD loader \
                                       and a driver, e.g. the Debian packages ocl-icd-libopencl1 and pocl-opencl-icd; \
                                       OPENCL_DYLIB_PATH may name the library)"
            .to_string(),
        _ => format!(
            "no OpenCL platform: {} (install a driver, e.g. the Debian package pocl-opencl-icd)",
            code_name(c)
        ),
    })?;
    if platforms.is_empty() {
        return Err("the OpenCL loader reports no platform (no vendor driver installed)".into());
    }
    let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
    let mut problems = Vec::new();
    for p in platforms {
        let pname = platform_string(p, CL_PLATFORM_NAME).unwrap_or_else(|_| "unnamed platform".into());
        let ids = match get_device_ids(p, CL_DEVICE_TYPE_ALL) {
            Ok(ids) => ids,
            Err(CL_DEVICE_NOT_FOUND) => continue,
            Err(c) => {
                problems.push(format!("platform {pname:?}: cannot list devices: {}", code_name(c)));
                continue;
            }
        };
        for id in ids {
            match open_device(p, id, backends.len()) {
                Ok(b) => backends.push(Arc::new(b)),
                Err(why) => problems.push(format!("platform {pname:?}: {why}")),
            }
        }
    }
    if backends.is_empty() {
        return Err(if problems.is_empty() {
            "no OpenCL device on any platform".to_string()
        } else {
            problems.join("; ")
        });
    }
    for p in problems {
        tracing::warn!(problem = %p, "OpenCL device skipped");
    }
    Ok(backends)
}

/// Read the device's facts, create its context and queues.
fn open_device(platform: cl_platform_id, id: cl_device_id, index: usize) -> Result<OpenClBackend, String> {
    let fail = |what: &str, c: cl_int| format!("device {index}: {what}: {}", code_name(c));
    let name = device_string(id, CL_DEVICE_NAME).map_err(|c| fail("CL_DEVICE_NAME", c))?;
    let vendor = device_string(id, CL_DEVICE_VENDOR).map_err(|c| fail("CL_DEVICE_VENDOR", c))?;
    let device_version = device_string(id, CL_DEVICE_VERSION).map_err(|c| fail("CL_DEVICE_VERSION", c))?;
    let driver = device_string(id, CL_DRIVER_VERSION).map_err(|c| fail("CL_DRIVER_VERSION", c))?;
    let platform_version =
        platform_string(platform, CL_PLATFORM_VERSION).map_err(|c| fail("CL_PLATFORM_VERSION", c))?;
    let version = parse_version(&device_version);
    let compute_units = device_uint(id, CL_DEVICE_MAX_COMPUTE_UNITS).map_err(|c| fail("compute units", c))?;
    let max_wg = device_size(id, CL_DEVICE_MAX_WORK_GROUP_SIZE).map_err(|c| fail("max work-group size", c))?;
    let item_sizes = device_sizes(id, CL_DEVICE_MAX_WORK_ITEM_SIZES).map_err(|c| fail("max work-item sizes", c))?;
    let address_bits = device_uint(id, CL_DEVICE_ADDRESS_BITS).map_err(|c| fail("address bits", c))?;
    let global_mem = device_ulong(id, CL_DEVICE_GLOBAL_MEM_SIZE).map_err(|c| fail("global memory size", c))?;
    let local_mem = device_ulong(id, CL_DEVICE_LOCAL_MEM_SIZE).map_err(|c| fail("local memory size", c))?;
    let max_alloc = device_ulong(id, CL_DEVICE_MAX_MEM_ALLOC_SIZE).map_err(|c| fail("max allocation size", c))?;
    let dev_type = device_ulong(id, CL_DEVICE_TYPE).map_err(|c| fail("device type", c))?;
    let align_bits = device_uint(id, CL_DEVICE_MEM_BASE_ADDR_ALIGN).map_err(|c| fail("base address alignment", c))?;

    let mut max_block_dims = [1u32; 3];
    for (d, s) in max_block_dims.iter_mut().zip(&item_sizes) {
        *d = clamp_u32(*s as u64);
    }
    let mut info = DeviceInfo {
        backend: BackendKind::OpenCl,
        index,
        name: name.trim().to_string(),
        vendor: vendor.trim().to_string(),
        driver_version: format!(
            "{} ({}; {})",
            driver.trim(),
            platform_version.trim(),
            device_version.trim()
        ),
        compute_units,
        warp_size: 1,
        max_threads_per_block: clamp_u32(max_wg as u64),
        max_block_dims,
        max_grid_dims: [u32::MAX; 3],
        max_global_size: if address_bits >= 64 || address_bits == 0 {
            u64::MAX
        } else {
            (1u64 << address_bits) - 1
        },
        global_mem_bytes: global_mem,
        local_mem_bytes: local_mem,
        max_alloc_bytes: max_alloc,
        compute_capability: None,
        requires_uniform_blocks: version < (2, 0),
        host_cpu: dev_type & CL_DEVICE_TYPE_CPU != 0,
        view_align_bytes: (align_bits as usize / 8).max(1),
    };

    // SAFETY: `id` is a device of this platform; no properties, no callback.
    let ctx =
        create_context(&[id], std::ptr::null(), None, std::ptr::null_mut()).map_err(|c| fail("clCreateContext", c))?;
    // SAFETY: a successful clCreateContext returns a context with one reference, ours.
    let ctx = unsafe { Context::from_raw(ctx) };
    let mut queues = Vec::with_capacity(QUEUES_PER_DEVICE);
    for _ in 0..QUEUES_PER_DEVICE {
        queues.push(create_queue(&ctx, id, version).map_err(|c| fail("creating a profiling command queue", c))?);
    }
    info.warp_size = preferred_multiple(&ctx, id, &info, version, dev_type);
    Ok(OpenClBackend::new(info, DeviceId(id), version, ctx, queues))
}

/// An in-order queue with profiling enabled.
pub(super) fn create_queue(ctx: &Context, id: cl_device_id, version: (u32, u32)) -> Result<Queue, cl_int> {
    let raw = if version >= (2, 0) {
        let props: [cl_queue_properties; 3] =
            [CL_QUEUE_PROPERTIES as cl_queue_properties, CL_QUEUE_PROFILING_ENABLE, 0];
        // SAFETY: `id` belongs to `ctx`; `props` is a zero-terminated property list.
        unsafe { create_command_queue_with_properties(ctx.raw(), id, props.as_ptr())? }
    } else {
        #[allow(deprecated)]
        // SAFETY: `id` belongs to `ctx`. The pre-2.0 entry point, for pre-2.0 devices.
        unsafe {
            create_command_queue(ctx.raw(), id, CL_QUEUE_PROFILING_ENABLE)?
        }
    };
    // SAFETY: a successful queue creation returns a queue with one reference, ours.
    Ok(unsafe { Queue::from_raw(raw) })
}

/// The device's preferred work-group size multiple (reported as the warp size).
fn preferred_multiple(ctx: &Context, id: cl_device_id, info: &DeviceInfo, version: (u32, u32), dev_type: u64) -> u32 {
    if version >= (3, 0)
        && let Ok(m) = device_size(id, CL_DEVICE_PREFERRED_WORK_GROUP_SIZE_MULTIPLE)
        && m > 0
    {
        return clamp_u32(m as u64);
    }
    match probe_multiple(ctx, id, info) {
        Ok(m) if m > 0 => clamp_u32(m as u64),
        other => {
            let guess = if dev_type & CL_DEVICE_TYPE_GPU != 0 {
                32
            } else {
                device_uint(id, CL_DEVICE_PREFERRED_VECTOR_WIDTH_FLOAT)
                    .unwrap_or(1)
                    .max(1)
            };
            tracing::debug!(device = %info.label(), probe = ?other.err(), guess, "preferred work-group multiple guessed");
            guess
        }
    }
}

/// Source of the probe kernel used to read `CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE`.
const PROBE_SOURCE: &str =
    "__kernel void offload_probe(__global float* x) { size_t i = get_global_id(0); x[i] = x[i] * 2.0f + 1.0f; }\n";

fn probe_multiple(ctx: &Context, id: cl_device_id, info: &DeviceInfo) -> Result<usize, String> {
    let program = program::build_program_cached(ctx, id, info, "offload_probe", PROBE_SOURCE, "offload_probe", "")
        .map_err(|e| e.to_string())?;
    let k = program::create_entry(&program, info, "offload_probe", "offload_probe").map_err(|e| e.to_string())?;
    let bytes =
        get_kernel_work_group_data(k.raw(), id, CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE).map_err(code_name)?;
    to_usize(&bytes).ok_or_else(|| "unexpected size of a size_t answer".to_string())
}

/// `(major, minor)` from `OpenCL <major>.<minor> ...`; `(1, 0)` if unparsable.
pub(crate) fn parse_version(s: &str) -> (u32, u32) {
    s.strip_prefix("OpenCL ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| {
            let (a, b) = v.split_once('.')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((1, 0))
}

fn clamp_u32(v: u64) -> u32 {
    v.min(u32::MAX as u64) as u32
}

fn to_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end_matches('\0').to_string()
}

fn to_usize(b: &[u8]) -> Option<usize> {
    Some(usize::from_ne_bytes(
        b.get(..std::mem::size_of::<usize>())?.try_into().ok()?,
    ))
}

fn platform_string(p: cl_platform_id, param: u32) -> Result<String, cl_int> {
    get_platform_data(p, param).map(|b| to_string(&b))
}

fn device_string(id: cl_device_id, param: u32) -> Result<String, cl_int> {
    get_device_data(id, param).map(|b| to_string(&b))
}

fn device_uint(id: cl_device_id, param: u32) -> Result<u32, cl_int> {
    let b = get_device_data(id, param)?;
    Ok(b.get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .unwrap_or(0))
}

fn device_ulong(id: cl_device_id, param: u32) -> Result<u64, cl_int> {
    let b = get_device_data(id, param)?;
    Ok(b.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_ne_bytes)
        .unwrap_or(0))
}

fn device_size(id: cl_device_id, param: u32) -> Result<usize, cl_int> {
    Ok(to_usize(&get_device_data(id, param)?).unwrap_or(0))
}

fn device_sizes(id: cl_device_id, param: u32) -> Result<Vec<usize>, cl_int> {
    let b = get_device_data(id, param)?;
    Ok(b.chunks_exact(std::mem::size_of::<usize>())
        .filter_map(to_usize)
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_parse() {
        assert_eq!(super::parse_version("OpenCL 3.0 PoCL HSTR: x"), (3, 0));
        assert_eq!(super::parse_version("OpenCL 1.2 CUDA"), (1, 2));
        assert_eq!(super::parse_version("garbage"), (1, 0));
    }
}
