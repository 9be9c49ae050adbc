//! The leapfrog kick–drift step of N-body bodies, on the device that holds them.

use crate::cpu_ctx::CpuCtx;
use crate::error::Result;
use crate::kernel::{Access, Kernel, Param, Split};

/// `nbody_kdk(pos, vel, acc, kick, drift, offset, count)`: for each body `i <
/// count`, `v += kick · a` then `x += drift · v` (positions `float4` with the mass
/// in `w`, velocities `float3`, accelerations `float4`). One leapfrog step is
/// `kdk(dt/2, dt)`, the accelerations of the new positions, then `kdk(dt/2, 0)`:
/// the same arithmetic, in the same order, as [`crate::nbody::Simulation::run`]
/// does on the host, so every backend computes the same bits.
pub fn nbody_kdk() -> Result<Kernel> {
    let src = super::sources("nbody_kdk")?;
    let builder = Kernel::builder("nbody_kdk")
        .param(Param::buffer::<f32>(
            "pos",
            Access::ReadWrite,
            Split::Elementwise { per_item: 4 },
        ))
        .param(Param::buffer::<f32>(
            "vel",
            Access::ReadWrite,
            Split::Elementwise { per_item: 3 },
        ))
        .param(Param::buffer::<f32>(
            "acc",
            Access::Read,
            Split::Elementwise { per_item: 4 },
        ))
        .param(Param::scalar::<f32>("kick"))
        .param(Param::scalar::<f32>("drift"))
        .param(Param::Offset)
        .param(Param::Count);
    // SAFETY: audited built-in sources (kernels/nbody_kdk.c): they declare
    // this signature and touch elements 4i..4i+3 of pos and acc and 3i..3i+2 of vel
    // only for i < count, the checked extents (Split::Elementwise).
    let builder = unsafe { builder.cuda(src.cuda, "nbody_kdk").opencl(src.opencl, "nbody_kdk") };
    builder.cpu(cpu).build()
}

fn cpu(ctx: &CpuCtx<'_>) {
    let items = ctx.items_below(ctx.count());
    let kick = ctx.scalar::<f32>(3);
    let drift = ctx.scalar::<f32>(4);
    let pos = ctx.output::<f32>(0);
    let vel = ctx.output::<f32>(1);
    let acc = ctx.input::<f32>(2);
    for (j, i) in items.enumerate() {
        for k in 0..3 {
            let v = vel[3 * j + k] + kick * acc[4 * i + k];
            vel[3 * j + k] = v;
            pos[4 * j + k] += drift * v;
        }
    }
}
