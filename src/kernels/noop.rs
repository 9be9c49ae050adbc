//! An empty kernel, for measuring launch overhead.

use crate::cpu_ctx::CpuCtx;
use crate::error::Result;
use crate::kernel::{Kernel, Param};

/// `noop(offset, count)`: does nothing.
pub fn noop() -> Result<Kernel> {
    let src = super::sources("noop")?;
    Kernel::builder("noop")
        .param(Param::Offset)
        .param(Param::Count)
        .cuda(src.cuda, "noop")
        .opencl(src.opencl, "noop")
        .cpu(|_ctx: &CpuCtx<'_>| {})
        .build()
}
