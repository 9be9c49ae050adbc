//! Translation of OpenCL status codes into crate errors, in one place.
//!
//! Every driver call in this backend returns a raw `cl_int` on failure; it is
//! turned into a [`crate::Error`] here and nowhere else. Out-of-memory codes become
//! [`Error::OutOfMemory`]; everything without a more specific variant becomes
//! [`Error::Driver`] carrying the code's symbolic name and number.

use opencl3::error_codes::{
    CL_DEVICE_NOT_FOUND, CL_INVALID_WORK_GROUP_SIZE, CL_MEM_OBJECT_ALLOCATION_FAILURE, CL_OUT_OF_HOST_MEMORY,
    CL_OUT_OF_RESOURCES, CL_PLATFORM_NOT_FOUND_KHR, DLOPEN_FUNCTION_NOT_AVAILABLE, DLOPEN_RUNTIME_LOAD_FAILED,
    error_text,
};
use opencl3::types::cl_int;

use crate::device::DeviceInfo;
use crate::error::{BackendKind, Error};

/// `CL_NAME (code)` for messages; codes the loader does not know are shown by number.
pub(crate) fn code_name(code: cl_int) -> String {
    let name = match code {
        DLOPEN_RUNTIME_LOAD_FAILED => "libOpenCL.so.1 could not be loaded",
        DLOPEN_FUNCTION_NOT_AVAILABLE => "function missing from the OpenCL library",
        CL_PLATFORM_NOT_FOUND_KHR => "CL_PLATFORM_NOT_FOUND_KHR (the ICD loader found no platform)",
        CL_DEVICE_NOT_FOUND => "CL_DEVICE_NOT_FOUND",
        other => error_text(other),
    };
    format!("{name} ({code})")
}

/// What was being done when a call failed, for [`map_cl_err`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op<'a> {
    /// Operation, e.g. `clEnqueueWriteBuffer`.
    pub what: &'a str,
    /// Device memory involved, in bytes (used for out-of-memory messages).
    pub bytes: u64,
    /// Kernel involved, if any.
    pub kernel: Option<&'a str>,
}

impl<'a> Op<'a> {
    /// An operation without memory or kernel context.
    pub(crate) const fn new(what: &'a str) -> Self {
        Op {
            what,
            bytes: 0,
            kernel: None,
        }
    }
    /// Attach the bytes of device memory involved.
    pub(crate) const fn bytes(mut self, bytes: u64) -> Self {
        self.bytes = bytes;
        self
    }
    /// Attach the kernel involved.
    pub(crate) const fn kernel(mut self, kernel: &'a str) -> Self {
        self.kernel = Some(kernel);
        self
    }
}

/// Translate an OpenCL status code from `op` on the device described by `info`.
pub(crate) fn map_cl_err(code: cl_int, info: &DeviceInfo, op: Op<'_>) -> Error {
    match code {
        CL_MEM_OBJECT_ALLOCATION_FAILURE | CL_OUT_OF_RESOURCES | CL_OUT_OF_HOST_MEMORY => Error::OutOfMemory {
            device: info.label(),
            requested: op.bytes,
            limit_name: if code == CL_OUT_OF_HOST_MEMORY {
                "available host memory"
            } else {
                "the device's free memory"
            },
            limit: info.global_mem_bytes,
        },
        CL_INVALID_WORK_GROUP_SIZE if op.kernel.is_some() => Error::LaunchConfig {
            kernel: op.kernel.unwrap_or_default().to_string(),
            device: info.label(),
            why: format!(
                "the driver rejected the work-group size during {}: {}",
                op.what,
                code_name(code)
            ),
        },
        _ => Error::Driver {
            backend: BackendKind::OpenCl,
            device: info.label(),
            operation: op.what.to_string(),
            message: code_name(code),
        },
    }
}
