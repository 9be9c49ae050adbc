//! Discovery: probe the driver and NVRTC libraries, initialise CUDA, and read
//! each device's attributes into a [`DeviceInfo`].
//!
//! The library probes run before any other `cudarc` call: with dynamic loading,
//! `cudarc` panics when a library is missing, so a machine without `libcuda.so`
//! must never reach a driver call. The remaining calls are wrapped in
//! `catch_unwind` as a last line of defence (a driver too old for a symbol the
//! bindings look up also panics inside `cudarc`), so discovery reports a reason
//! and never panics.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use cudarc::driver::sys::{self, CUdevice_attribute};
use cudarc::driver::{CudaContext, DriverError, result};

use super::CudaBackend;
use super::error::describe;
use crate::backend::{Backend, Discovery};
use crate::device::DeviceInfo;
use crate::error::BackendKind;

/// Whether `libcuda` can be loaded; the error says what was searched.
pub(crate) fn driver_library() -> Result<(), String> {
    // SAFETY: `is_culib_present` only tries to open candidate library names with
    // `dlopen` and closes them again; it calls no driver function.
    if unsafe { sys::is_culib_present() } {
        return Ok(());
    }
    let names = cudarc::get_lib_name_candidates("cuda");
    Err(format!(
        "libcuda.so not found (the NVIDIA driver library; tried {} names, among them {}): no NVIDIA driver is \
         installed, or its folder is not on LD_LIBRARY_PATH",
        names.len(),
        crate::backend::cuda::error::plain_lib_names(&names, "cuda")
    ))
}

/// Every CUDA device, or why there is none.
pub(crate) fn discover() -> Discovery {
    driver_library()?;
    crate::nvrtc::available()
        .map_err(|why| format!("the CUDA driver is present but kernels cannot be built: {why}"))?;
    match catch_unwind(AssertUnwindSafe(probe)) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "the CUDA driver library could not be used: {}",
            crate::backend::cpu::pool::panic_message(&*p)
        )),
    }
}

fn probe() -> Discovery {
    result::init().map_err(|e| format!("cuInit failed: {}", describe(e)))?;
    let count = result::device::get_count().map_err(|e| format!("cuDeviceGetCount failed: {}", describe(e)))?;
    if count <= 0 {
        return Err("the CUDA driver reports no devices".into());
    }
    let (version, driver) = driver_version();
    if version > 0 && version < MIN_DRIVER {
        return Err(format!(
            "{driver} is older than {}.{}, the oldest this build supports (stream-ordered allocation); \
             update the NVIDIA driver",
            MIN_DRIVER / 1000,
            (MIN_DRIVER % 1000) / 10
        ));
    }
    let nvrtc = crate::nvrtc::version()
        .map(|(a, b)| format!("NVRTC {a}.{b}"))
        .unwrap_or_else(|e| format!("NVRTC version unknown ({e})"));
    let mut found: Vec<Arc<dyn Backend>> = Vec::new();
    let mut errors = Vec::new();
    for ordinal in 0..count as usize {
        match CudaBackend::open(ordinal, &format!("{driver}, {nvrtc}")) {
            Ok(b) => found.push(Arc::new(b)),
            Err(e) => {
                tracing::warn!(device = ordinal, error = %e, "CUDA device unusable");
                errors.push(format!("cuda:{ordinal}: {e}"));
            }
        }
    }
    if found.is_empty() {
        return Err(format!("no CUDA device could be opened: {}", errors.join("; ")));
    }
    Ok(found)
}

/// Oldest driver API version used (cuMemAllocAsync and friends): 11.4.
const MIN_DRIVER: i32 = 11040;

/// The driver API version (e.g. 12080; 0 if unknown) and its text.
fn driver_version() -> (i32, String) {
    let mut v: i32 = 0;
    // SAFETY: the driver library is loaded and initialised; `v` is valid for writes.
    match unsafe { sys::cuDriverGetVersion(&mut v) }.result() {
        Ok(()) => (v, format!("CUDA driver {}.{}", v / 1000, (v % 1000) / 10)),
        Err(e) => (0, format!("CUDA driver version unknown ({})", describe(e))),
    }
}

/// Read the device facts from the context's attributes.
pub(crate) fn device_info(ctx: &Arc<CudaContext>, ordinal: usize, driver: &str) -> Result<DeviceInfo, DriverError> {
    use CUdevice_attribute::*;
    let attr = |a: CUdevice_attribute| ctx.attribute(a).map(|v| v.max(0) as u32);
    let name = ctx.name()?;
    let (major, minor) = ctx.compute_capability()?;
    let total = ctx.total_mem()? as u64;
    let max_block_dims = [
        attr(CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X)?,
        attr(CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y)?,
        attr(CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z)?,
    ];
    let max_grid_dims = [
        attr(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X)?,
        attr(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y)?,
        attr(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z)?,
    ];
    // The opt-in maximum is usable because launches above the default 48 KiB set
    // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES first (see `launch.rs`).
    let shared_default = attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)? as u64;
    let shared_optin = attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)? as u64;
    let max_global_size = max_grid_dims
        .iter()
        .zip(max_block_dims)
        .map(|(g, b)| *g as u64 * b as u64)
        .max()
        .unwrap_or(0);
    Ok(DeviceInfo {
        backend: BackendKind::Cuda,
        index: ordinal,
        name,
        vendor: "NVIDIA".into(),
        driver_version: driver.to_string(),
        compute_units: attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        warp_size: attr(CU_DEVICE_ATTRIBUTE_WARP_SIZE)?,
        max_threads_per_block: attr(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
        max_block_dims,
        max_grid_dims,
        max_global_size,
        global_mem_bytes: total,
        local_mem_bytes: shared_default.max(shared_optin),
        max_alloc_bytes: total,
        compute_capability: Some((major.max(0) as u32, minor.max(0) as u32)),
        requires_uniform_blocks: false,
        host_cpu: false,
        view_align_bytes: 1,
    })
}
