//! Programs: one device source with several entry points.
//!
//! A [`Program`] holds a CUDA C and/or OpenCL C source once and hands out a
//! [`KernelBuilder`] per entry point ([`Program::kernel`]), already carrying the
//! source, the entry and the build options; the caller adds the signature (and a
//! CPU implementation if it has one). Kernels made from one program share its
//! source, so a device compiles it once: the OpenCL backend keeps one built
//! program per source and options and creates each entry's kernel objects from it.
//!
//! This module touches no driver.

use std::sync::Arc;

use crate::kernel::{Kernel, KernelBuilder};

/// One device source (CUDA C, OpenCL C, or both) with several entry points.
#[derive(Clone, Debug, Default)]
pub struct Program {
    cuda: Option<Arc<str>>,
    opencl: Option<Arc<str>>,
    cuda_options: Vec<String>,
    opencl_options: Vec<String>,
}

impl Program {
    /// An empty program; add sources with [`Program::cuda`] / [`Program::opencl`].
    pub fn new() -> Program {
        Program::default()
    }

    /// The CUDA C source (entries are `extern "C" __global__` functions).
    ///
    /// The promise of [`KernelBuilder::cuda`] is made here once for every kernel
    /// built from this program: each entry point declares the signature its kernel
    /// is given, in order and with the same types, and touches only elements inside
    /// the buffers' declared extents.
    ///
    /// # Safety
    /// Every entry point keeps the promise described above.
    pub unsafe fn cuda(mut self, code: impl Into<String>) -> Program {
        self.cuda = Some(code.into().into());
        self
    }

    /// The OpenCL C source (entries are `__kernel` functions).
    ///
    /// # Safety
    ///
    /// As for [`Program::cuda`], for the OpenCL entry points.
    pub unsafe fn opencl(mut self, code: impl Into<String>) -> Program {
        self.opencl = Some(code.into().into());
        self
    }

    /// NVRTC options for every kernel of the program.
    pub fn cuda_options(mut self, opts: &[&str]) -> Program {
        self.cuda_options = opts.iter().map(|s| s.to_string()).collect();
        self
    }

    /// OpenCL build options for every kernel of the program.
    pub fn opencl_options(mut self, opts: &[&str]) -> Program {
        self.opencl_options = opts.iter().map(|s| s.to_string()).collect();
        self
    }

    /// A builder for the kernel at `entry` (named `entry`), with this program's
    /// sources and options; add its parameters, then `build()`.
    pub fn kernel(&self, entry: &str) -> KernelBuilder {
        let mut b = Kernel::builder(entry);
        if let Some(code) = &self.cuda {
            // SAFETY: the caller of `Program::cuda` promised this for every entry.
            b = unsafe { b.cuda(code.as_ref(), entry) }.cuda_options(&as_strs(&self.cuda_options));
        }
        if let Some(code) = &self.opencl {
            // SAFETY: the caller of `Program::opencl` promised this for every entry.
            b = unsafe { b.opencl(code.as_ref(), entry) }.opencl_options(&as_strs(&self.opencl_options));
        }
        b
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
