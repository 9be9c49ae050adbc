//! An empty kernel, for measuring launch overhead.

use crate::cpu_ctx::CpuCtx;
use crate::error::Result;
use crate::kernel::{Kernel, Param};

/// `noop(offset, count)`: does nothing.
pub fn noop() -> Result<Kernel> {
    let src = super::sources("noop")?;
    let builder = Kernel::builder("noop").param(Param::Offset).param(Param::Count);
    // SAFETY: audited built-in sources (kernels/noop.c): empty bodies with
    // this signature.
    let builder = unsafe { builder.cuda(src.cuda, "noop").opencl(src.opencl, "noop") };
    builder.cpu(|_ctx: &CpuCtx<'_>| {}).build()
}
