//! Translation of CUDA driver and NVRTC codes into crate errors: the one place
//! where `cudarc`'s error types become [`Error`] variants.
//!
//! * `CUDA_ERROR_OUT_OF_MEMORY` → [`Error::OutOfMemory`] (limit: free device memory);
//! * PTX/CUBIN load failures (`INVALID_PTX`, `UNSUPPORTED_PTX_VERSION`,
//!   `NO_BINARY_FOR_GPU`, `INVALID_IMAGE`, `JIT_COMPILER_NOT_FOUND`) → [`Error::Build`];
//! * `NOT_FOUND` when looking up an entry point → [`Error::EntryNotFound`] (done by the caller);
//! * `LAUNCH_OUT_OF_RESOURCES` → [`Error::LaunchConfig`];
//! * everything else → [`Error::Driver`] with the code's name and the driver's description.

use cudarc::driver::DriverError;
use cudarc::driver::sys::CUresult;
use cudarc::nvrtc::result::NvrtcError;

use crate::error::{BackendKind, Error};

/// `CUDA_ERROR_X: description` for a driver error.
pub(crate) fn describe(e: DriverError) -> String {
    let text = e
        .error_string()
        .ok()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if text.is_empty() {
        format!("{:?}", e.0)
    } else {
        format!("{:?}: {text}", e.0)
    }
}

/// `NVRTC_ERROR_X` for an NVRTC error.
pub(crate) fn nvrtc_code_name(e: NvrtcError) -> String {
    format!("{:?}", e.0)
}

/// Whether the error says a loaded PTX/CUBIN image is unusable on this device/driver.
pub(crate) fn is_image_error(e: DriverError) -> bool {
    matches!(
        e.0,
        CUresult::CUDA_ERROR_INVALID_PTX
            | CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION
            | CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU
            | CUresult::CUDA_ERROR_INVALID_IMAGE
            | CUresult::CUDA_ERROR_JIT_COMPILER_NOT_FOUND
    )
}

/// Translate a driver error that happened on `device` during `operation`.
///
/// `kernel` is the kernel involved, or empty. Out-of-memory becomes
/// [`Error::OutOfMemory`] with `requested` bytes against `free` bytes (pass what is
/// known; 0 when nothing was being allocated).
pub(crate) fn map_driver_err(e: DriverError, device: &str, operation: &str, kernel: &str) -> Error {
    match e.0 {
        CUresult::CUDA_ERROR_OUT_OF_MEMORY => Error::OutOfMemory {
            device: device.to_string(),
            requested: 0,
            limit_name: "free device memory",
            limit: current_free_memory(),
        },
        _ if is_image_error(e) => Error::Build {
            kernel: kernel.to_string(),
            device: device.to_string(),
            log: format!(
                "the driver rejected the compiled image during {operation}: {}{}",
                describe(e),
                if e.0 == CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
                    " (NVRTC is newer than the driver; a CUBIN fallback was tried)"
                } else {
                    ""
                }
            ),
        },
        CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES => Error::LaunchConfig {
            kernel: kernel.to_string(),
            device: device.to_string(),
            why: format!(
                "the block needs more registers or shared memory than one multiprocessor has ({})",
                describe(e)
            ),
        },
        _ => Error::Driver {
            backend: BackendKind::Cuda,
            device: device.to_string(),
            operation: if kernel.is_empty() {
                operation.to_string()
            } else {
                format!("{operation} of kernel {kernel:?}")
            },
            message: describe(e),
        },
    }
}

/// Out-of-memory for an allocation of `requested` bytes against `free` bytes.
pub(crate) fn out_of_memory(device: &str, requested: u64, free: u64) -> Error {
    Error::OutOfMemory {
        device: device.to_string(),
        requested,
        limit_name: "free device memory",
        limit: free,
    }
}

/// Free memory of the current context, or 0 if it cannot be read.
fn current_free_memory() -> u64 {
    cudarc::driver::result::mem_get_info().map_or(0, |(free, _)| free as u64)
}

/// Translate an NVRTC error outside compilation proper (creating a program,
/// fetching PTX): always a build failure of `kernel` for `device`.
pub(crate) fn map_nvrtc_err(e: NvrtcError, operation: &str, device: &str, kernel: &str) -> Error {
    Error::Build {
        kernel: kernel.to_string(),
        device: device.to_string(),
        log: format!("{operation} failed: {}", nvrtc_code_name(e)),
    }
}

/// The unversioned-stem candidates (`libcuda.so`, `libcuda.so.1`, ...) of a
/// library name list, without duplicates, for messages.
pub(crate) fn plain_lib_names(names: &[String], lib: &str) -> String {
    let stem = format!("lib{lib}.so");
    let mut out: Vec<&str> = Vec::new();
    for n in names {
        if n.starts_with(&stem) && !out.contains(&n.as_str()) {
            out.push(n);
        }
    }
    out.join(", ")
}
