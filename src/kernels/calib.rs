//! Calibration kernels for the roofline ([`crate::roofline`]): an FMA chain that
//! measures a device's f32 peak and a streaming triad that measures its memory
//! bandwidth. Both declare their cost per item.

use crate::cpu_ctx::CpuCtx;
use crate::error::Result;
use crate::kernel::{Access, Cost, Kernel, Param, ScalarArgs, Split};

/// Independent FMA chains per item of [`fma_peak`].
pub const FMA_CHAINS: usize = 8;

/// `fma_peak(out, x, y, iters, offset, count)`: item `i` runs [`FMA_CHAINS`]
/// independent chains of `iters` fused multiply-adds `acc = acc·x + y` (chain `c`
/// starts at `((offset + i) mod 1024)·10⁻⁴ + c/100`) and writes the sum of its
/// chains to `out[i]`: `2 × 8 × iters` flops per item. With `|x| < 1` the chains
/// converge to `y / (1 − x)` and never overflow.
///
/// Host-CPU OpenCL devices build `kernels/host_cpu/fma_peak.cl`, which runs 16
/// items per work-item as the lanes of `float16` chains (PoCL leaves a loop of
/// scalar `fma()` calls unvectorized: 28 GFLOP/s on cores that give its
/// vectorized kernels about 100).
///
/// The CPU version runs 16 items per AVX-512 step or 8 per AVX2 step (chosen at
/// run time), one vector register per chain, so a core's FMA units are kept busy.
pub fn fma_peak() -> Result<Kernel> {
    let src = super::sources("fma_peak")?;
    let builder = Kernel::builder("fma_peak")
        .param(Param::buffer::<f32>(
            "out",
            Access::Write,
            Split::Elementwise { per_item: 1 },
        ))
        .param(Param::scalar::<f32>("x"))
        .param(Param::scalar::<f32>("y"))
        .param(Param::scalar::<u32>("iters"))
        .param(Param::Offset)
        .param(Param::Count)
        .cost_with(|args: &ScalarArgs<'_>| Cost {
            flops: 2.0 * FMA_CHAINS as f64 * args.value::<u32>("iters").unwrap_or(0) as f64,
            bytes: 4.0,
        })
        // Items are expensive: small launches still spread over the pool.
        .cpu_grain(256);
    // SAFETY: audited built-in sources (kernels/fma_peak.c): they declare
    // this signature and write `out[i]` only for `i < count`, its checked extent.
    let builder = unsafe { builder.cuda(src.cuda, "fma_peak").opencl(src.opencl, "fma_peak") };
    let builder = match src.opencl_host_cpu {
        // Audited built-in source (kernels/host_cpu/fma_peak.cl): the same
        // signature; it reads nothing and writes `out[i]` only for `i < count`
        // (work-item g writes items 16g.. below count).
        // SAFETY: as above.
        Some(host) => unsafe { builder.opencl_host_cpu(host, "fma_peak") },
        None => builder,
    };
    builder.cpu(fma_cpu).build()
}

/// `stream_triad(a, b, c, s, offset, count)`: `a[i] = b[i] + s·c[i]` for
/// `i < count`: 2 flops and 12 bytes per item.
pub fn stream_triad() -> Result<Kernel> {
    let src = super::sources("stream_triad")?;
    let each = Split::Elementwise { per_item: 1 };
    let builder = Kernel::builder("stream_triad")
        .param(Param::buffer::<f32>("a", Access::Write, each))
        .param(Param::buffer::<f32>("b", Access::Read, each))
        .param(Param::buffer::<f32>("c", Access::Read, each))
        .param(Param::scalar::<f32>("s"))
        .param(Param::Offset)
        .param(Param::Count)
        .cost(2.0, 12.0);
    // SAFETY: audited built-in sources (kernels/stream_triad.c): they declare
    // this signature and touch element `i` of each buffer only for `i < count`,
    // the checked extent of all three.
    let builder = unsafe {
        builder
            .cuda(src.cuda, "stream_triad")
            .opencl(src.opencl, "stream_triad")
    };
    builder.cpu(triad_cpu).build()
}

fn triad_cpu(ctx: &CpuCtx<'_>) {
    let items = ctx.items_below(ctx.count());
    let s = ctx.scalar::<f32>(3);
    let a = ctx.output::<f32>(0);
    let n = items.len().min(a.len());
    let b = &ctx.input::<f32>(1)[items.start..items.start + n];
    let c = &ctx.input::<f32>(2)[items.start..items.start + n];
    for ((a, b), c) in a[..n].iter_mut().zip(b).zip(c) {
        *a = b + s * c;
    }
}

/// Chain `c`'s start value for global item `g`.
fn start(g: usize, c: usize) -> f32 {
    (g & 1023) as f32 * 1e-4 + c as f32 * 0.01
}

fn fma_cpu(ctx: &CpuCtx<'_>) {
    let items = ctx.items_below(ctx.count());
    let (x, y, iters) = (ctx.scalar::<f32>(1), ctx.scalar::<f32>(2), ctx.scalar::<u32>(3));
    let out = ctx.output::<f32>(0);
    let n = items.len().min(out.len());
    let base = ctx.offset() + items.start;
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            while done + 16 <= n {
                let mut block = [0f32; 16];
                // SAFETY: AVX-512F is present (checked above).
                unsafe { simd::fma_avx512(base + done, x, y, iters, &mut block) };
                out[done..done + 16].copy_from_slice(&block);
                done += 16;
            }
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            while done + 8 <= n {
                let mut block = [0f32; 8];
                // SAFETY: AVX2 and FMA are present (checked above).
                unsafe { simd::fma_avx2(base + done, x, y, iters, &mut block) };
                out[done..done + 8].copy_from_slice(&block);
                done += 8;
            }
        }
    }
    for (j, o) in out[..n].iter_mut().enumerate().skip(done) {
        let mut acc = [0f32; FMA_CHAINS];
        for (c, a) in acc.iter_mut().enumerate() {
            *a = start(base + j, c);
        }
        for _ in 0..iters {
            for a in &mut acc {
                *a = *a * x + y;
            }
        }
        *o = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{FMA_CHAINS, start};

    /// 16 items from global item `base`, one zmm register per chain.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma_avx512(base: usize, x: f32, y: f32, iters: u32, out: &mut [f32; 16]) {
        let mut init = [[0f32; 16]; FMA_CHAINS];
        for (c, lanes) in init.iter_mut().enumerate() {
            for (l, v) in lanes.iter_mut().enumerate() {
                *v = start(base + l, c);
            }
        }
        // SAFETY: unaligned loads from 16-float arrays; AVX-512F present (caller).
        let mut a: [__m512; FMA_CHAINS] = unsafe { std::array::from_fn(|c| _mm512_loadu_ps(init[c].as_ptr())) };
        let (vx, vy) = (_mm512_set1_ps(x), _mm512_set1_ps(y));
        for _ in 0..iters {
            a[0] = _mm512_fmadd_ps(a[0], vx, vy);
            a[1] = _mm512_fmadd_ps(a[1], vx, vy);
            a[2] = _mm512_fmadd_ps(a[2], vx, vy);
            a[3] = _mm512_fmadd_ps(a[3], vx, vy);
            a[4] = _mm512_fmadd_ps(a[4], vx, vy);
            a[5] = _mm512_fmadd_ps(a[5], vx, vy);
            a[6] = _mm512_fmadd_ps(a[6], vx, vy);
            a[7] = _mm512_fmadd_ps(a[7], vx, vy);
        }
        let s = _mm512_add_ps(
            _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])),
            _mm512_add_ps(_mm512_add_ps(a[4], a[5]), _mm512_add_ps(a[6], a[7])),
        );
        // SAFETY: `out` holds 16 floats.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), s) };
    }

    /// 8 items from global item `base`, one ymm register per chain.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma_avx2(base: usize, x: f32, y: f32, iters: u32, out: &mut [f32; 8]) {
        let mut init = [[0f32; 8]; FMA_CHAINS];
        for (c, lanes) in init.iter_mut().enumerate() {
            for (l, v) in lanes.iter_mut().enumerate() {
                *v = start(base + l, c);
            }
        }
        // SAFETY: unaligned loads from 8-float arrays; AVX present (caller).
        let mut a: [__m256; FMA_CHAINS] = unsafe { std::array::from_fn(|c| _mm256_loadu_ps(init[c].as_ptr())) };
        let (vx, vy) = (_mm256_set1_ps(x), _mm256_set1_ps(y));
        for _ in 0..iters {
            a[0] = _mm256_fmadd_ps(a[0], vx, vy);
            a[1] = _mm256_fmadd_ps(a[1], vx, vy);
            a[2] = _mm256_fmadd_ps(a[2], vx, vy);
            a[3] = _mm256_fmadd_ps(a[3], vx, vy);
            a[4] = _mm256_fmadd_ps(a[4], vx, vy);
            a[5] = _mm256_fmadd_ps(a[5], vx, vy);
            a[6] = _mm256_fmadd_ps(a[6], vx, vy);
            a[7] = _mm256_fmadd_ps(a[7], vx, vy);
        }
        let s = _mm256_add_ps(
            _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])),
            _mm256_add_ps(_mm256_add_ps(a[4], a[5]), _mm256_add_ps(a[6], a[7])),
        );
        // SAFETY: `out` holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    }
}
