//! `c = a + b` over f32, the transfer-bound example.

use crate::cpu_ctx::CpuCtx;
use crate::error::Result;
use crate::kernel::{Access, Kernel, Param, Split};

/// `vector_add(a, b, c, offset, count)`: `c[i] = a[i] + b[i]` for `i < count`.
///
/// Launch with at least `count` threads in total (e.g. [`crate::LaunchConfig::for_items`]);
/// thread `i` computes item `i` on every backend, threads past `count` do nothing.
pub fn vector_add() -> Result<Kernel> {
    let src = super::sources("vector_add")?;
    let each = Split::Elementwise { per_item: 1 };
    let builder = Kernel::builder("vector_add")
        .param(Param::buffer::<f32>("a", Access::Read, each))
        .param(Param::buffer::<f32>("b", Access::Read, each))
        .param(Param::buffer::<f32>("c", Access::Write, each))
        .param(Param::Offset)
        .param(Param::Count)
        // One add; two floats read, one written.
        .cost(1.0, 12.0);
    // SAFETY: audited built-in sources (kernels/vector_add.c): they declare
    // this signature and touch element `i` of each buffer only for `i < count`,
    // the checked extent of all three.
    let builder = unsafe { builder.cuda(src.cuda, "vector_add").opencl(src.opencl, "vector_add") };
    builder.cpu(cpu).build()
}

fn cpu(ctx: &CpuCtx<'_>) {
    let items = ctx.items_below(ctx.count());
    let c = ctx.output::<f32>(2);
    let n = items.len().min(c.len());
    let a = &ctx.input::<f32>(0)[items.start..items.start + n];
    let b = &ctx.input::<f32>(1)[items.start..items.start + n];
    for ((c, a), b) in c[..n].iter_mut().zip(a).zip(b) {
        *c = a + b;
    }
}
