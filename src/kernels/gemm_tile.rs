//! `C += A · B` on one t × t tile of a tiled matrix multiply (tile layout,
//! [`crate::task::to_tiles`]): the task of the tiled GEMM DAG.

use crate::cpu_ctx::CpuCtx;
use crate::error::Result;
use crate::kernel::{Access, Kernel, Param, Split};

/// Columns of a C row the CPU version accumulates at once (on the stack).
const STRIP: usize = 64;

/// `gemm_tile(a, b, c, t, offset, count)`: for the items `e < count` (elements
/// `offset + e` of a row-major t × t tile of C), `c[e] += Σ_k a[i·t + k] ·
/// b[k·t + j]` with `(i, j)` the element's row and column. `a` and `b` are whole
/// t × t tiles (at least `t²` elements, checked at every launch); `c` is
/// elementwise, so a tile can also be split. On CUDA and OpenCL each element's
/// sum is formed first and then added to `c`; the CPU version adds whole rows
/// through the packed SGEMM microkernel (rounding differs in the last bits).
pub fn gemm_tile() -> Result<Kernel> {
    let src = super::sources("gemm_tile")?;
    let builder = Kernel::builder("gemm_tile")
        .param(Param::buffer::<f32>("a", Access::Read, Split::Broadcast))
        .param(Param::buffer::<f32>("b", Access::Read, Split::Broadcast))
        .param(Param::buffer::<f32>(
            "c",
            Access::ReadWrite,
            Split::Elementwise { per_item: 1 },
        ))
        .param(Param::scalar::<u32>("t"))
        .param(Param::Offset)
        .param(Param::Count)
        .extent_from("a", &["t", "t"], 1)
        .extent_from("b", &["t", "t"], 1);
    // SAFETY: audited built-in sources (kernels/gemm_tile.c): they read
    // a[i·t + k] and b[k·t + j] with i, j, k < t (`t²` elements, the checked extent
    // of both) and touch c[e] for e < count only (the checked extent of c), as long
    // as offset + count ≤ t², which the CPU version checks too and split launches
    // guarantee (items are the t² elements of the tile).
    let builder = unsafe { builder.cuda(src.cuda, "gemm_tile").opencl(src.opencl, "gemm_tile") };
    builder
        .check_scalars(|s| {
            let t = s.value::<u32>("t").unwrap_or(0) as u64;
            let end = s.value::<u32>("offset").unwrap_or(0) as u64 + s.value::<u32>("count").unwrap_or(0) as u64;
            if end > t * t {
                return Err(format!("items {end} exceed the tile's t² = {}", t * t));
            }
            Ok(())
        })
        .cpu(cpu)
        .build()
}

fn cpu(ctx: &CpuCtx<'_>) {
    let items = ctx.items_below(ctx.count());
    let t = ctx.scalar::<u32>(3) as usize;
    let (a, b) = (ctx.input::<f32>(0), ctx.input::<f32>(1));
    let c = ctx.output::<f32>(2);
    let first = ctx.offset() + items.start;
    let mut done = 0;
    let total = items.len().min(c.len());
    // Whole rows: the packed microkernel, C rows += A rows · B.
    if t > 0 && first.is_multiple_of(t) && total.is_multiple_of(t) && total > 0 {
        let (r0, rows) = (first / t, total / t);
        super::sgemm::sgemm_serial_acc(rows, t, t, &a[r0 * t..(r0 + rows) * t], &b[..t * t], &mut c[..total]);
        return;
    }
    while done < total {
        let g = first + done;
        let (i, j0) = (g / t, g % t);
        let n = (t - j0).min(total - done).min(STRIP);
        let mut acc = [0.0f32; STRIP];
        let acc = &mut acc[..n];
        for k in 0..t {
            let aik = a[i * t + k];
            let row = &b[k * t + j0..k * t + j0 + n];
            for (x, bv) in acc.iter_mut().zip(row) {
                *x += aik * bv;
            }
        }
        for (cv, x) in c[done..done + n].iter_mut().zip(acc.iter()) {
            *cv += *x;
        }
        done += n;
    }
}
