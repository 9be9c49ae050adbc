//! SGEMM, the matrix-multiply optimisation ladder: `C = A·B` in row-major f32.
//!
//! Every rung computes the same thing for any `M`, `N`, `K` (not only tile
//! multiples) and is splittable over the rows of C: one *item* is one row of C.
//! The signature of each kernel is
//!
//! ```text
//! gemm_*(a, b, c, n, k, offset, count)
//! ```
//!
//! * `a`: the chunk's `count` rows of A (`count × k`, [`Split::Elementwise`] with
//!   `per_item = k`);
//! * `b`: all of B (`k × n`, [`Split::Broadcast`], extent `k × n` checked at launch);
//! * `c`: the chunk's `count` rows of C (`count × n`, `per_item = n`);
//! * `n`, `k`: the matrix sizes, which must equal the sizes the kernel was built
//!   for (the split layout depends on them), checked at launch.
//!
//! A launch whose buffers are shorter than these extents is refused before
//! anything runs. The rungs ([`GemmRung`]):
//!
//! * **naive** ([`gemm_naive`]) — one thread per element of C, a dot product
//!   straight from global memory.
//! * **tiled** ([`gemm_tiled`]) — 16 × 16 tiles of A and B staged in
//!   shared/local memory, so each global element is read once per tile.
//! * **regblock** ([`gemm_regblock`]) — 64 × 64 tiles, each thread keeping a
//!   4 × 4 block of C in registers, so each shared-memory read feeds four FMAs.
//! * **packed** ([`gemm_packed`], CPU only) — BLIS-style: A and B packed into
//!   cache-sized panels, an `MR × NR` register microkernel (AVX-512 or AVX2+FMA
//!   chosen at run time, portable fallback); see [`sgemm_host`](super::sgemm_host).
//!
//! On the CPU backend the first three run Rust versions of the same idea: a
//! naive triple loop and a 4 × 16 register block over the rows each pool call
//! receives, and for tiled a work-group kernel ([`crate::cpu_group`]) that
//! walks the tiles exactly as the device source does, with the same launch. [`gemm`] is the best rung per backend (regblock on CUDA and
//! OpenCL, packed on the CPU), the one to split across devices.
//!
//! Launch with [`GemmRung::launch_config`]: every kernel is correct for any launch
//! shape (grid-stride loops), but the CPU backend computes only the rows below
//! the launch's thread count, so a launch needs at least `count` threads in total
//! (the scheduler's launches have that).

use crate::cpu_ctx::CpuCtx;
use crate::cpu_group::GroupCtx;
use crate::device::DeviceInfo;
use crate::error::{Error, Result};
use crate::kernel::{Access, Cost, Kernel, KernelBuilder, Param, ScalarArgs, Split};
use crate::launch::LaunchConfig;

use super::sgemm;

/// One rung of the GEMM ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmRung {
    /// One thread per output, straight from global memory.
    Naive,
    /// 16 × 16 tiles staged in shared/local memory.
    Tiled,
    /// 64 × 64 tiles, 4 × 4 outputs per thread in registers.
    RegBlock,
    /// CPU only: packed panels and an `MR × NR` SIMD microkernel.
    Packed,
}

impl GemmRung {
    /// Every rung, slowest first.
    pub const ALL: [GemmRung; 4] = [GemmRung::Naive, GemmRung::Tiled, GemmRung::RegBlock, GemmRung::Packed];

    /// Name as used on command lines (`naive`, `tiled`, `regblock`, `cpu-packed`).
    pub fn name(self) -> &'static str {
        match self {
            GemmRung::Naive => "naive",
            GemmRung::Tiled => "tiled",
            GemmRung::RegBlock => "regblock",
            GemmRung::Packed => "cpu-packed",
        }
    }

    /// Parse a name as printed by [`GemmRung::name`].
    pub fn parse(s: &str) -> Result<GemmRung> {
        match s.trim().to_ascii_lowercase().as_str() {
            "naive" => Ok(GemmRung::Naive),
            "tiled" => Ok(GemmRung::Tiled),
            "regblock" => Ok(GemmRung::RegBlock),
            "cpu-packed" | "packed" => Ok(GemmRung::Packed),
            other => Err(Error::InvalidInput(format!(
                "unknown GEMM rung {other:?}; valid: naive, tiled, regblock, cpu-packed"
            ))),
        }
    }

    /// One line saying what the rung does.
    pub fn explain(self) -> &'static str {
        match self {
            GemmRung::Naive => "one thread per output of C, a dot product straight from global memory",
            GemmRung::Tiled => "16x16 tiles of A and B staged in shared/local memory, reused by the tile",
            GemmRung::RegBlock => "64x64 tiles, each thread keeps 4x4 outputs in registers (4 FMAs per load)",
            GemmRung::Packed => "CPU: packed cache-sized panels, MR x NR SIMD register microkernel",
        }
    }

    /// The rung's kernel for `C (m × n) = A (m × k) · B (k × n)` (any `m`).
    pub fn kernel(self, n: usize, k: usize) -> Result<Kernel> {
        match self {
            GemmRung::Naive => gemm_naive(n, k),
            GemmRung::Tiled => gemm_tiled(n, k),
            GemmRung::RegBlock => gemm_regblock(n, k),
            GemmRung::Packed => gemm_packed(n, k),
        }
    }

    /// A 1-D launch for `m` rows of C on a device: blocks of up to 256 threads
    /// (a warp multiple), enough blocks for one per output tile (per 256 outputs
    /// for the naive rung), and at least `m` threads in total.
    pub fn launch_config(self, m: usize, n: usize, info: &DeviceInfo) -> LaunchConfig {
        let max = info.max_threads_per_block.min(info.max_block_dims[0]).clamp(1, 256);
        let warp = info.warp_size.max(1);
        let block = if warp <= max { (max / warp) * warp } else { max };
        let (m64, n64) = (m as u64, n as u64);
        let work = match self {
            GemmRung::Naive => m64.saturating_mul(n64).div_ceil(block as u64),
            GemmRung::Tiled => m64.div_ceil(16).saturating_mul(n64.div_ceil(16)),
            GemmRung::RegBlock => m64.div_ceil(64).saturating_mul(n64.div_ceil(64)),
            GemmRung::Packed => 0,
        };
        let rows = m64.div_ceil(block as u64);
        let cap = (info.max_grid_dims[0].max(1) as u64).min(u32::MAX as u64);
        let grid = work.min(cap).max(rows).max(1).min(u32::MAX as u64) as u32;
        LaunchConfig::new(grid, block)
    }
}

/// The signature shared by every rung, for a kernel built for `n` columns and
/// `k` inner dimension.
fn signature(name: &str, n: usize, k: usize) -> Result<KernelBuilder> {
    if n == 0 || k == 0 || u32::try_from(n).is_err() || u32::try_from(k).is_err() {
        return Err(Error::InvalidInput(format!(
            "{name}: n = {n} and k = {k} must be between 1 and {}",
            u32::MAX
        )));
    }
    Ok(Kernel::builder(name)
        .param(Param::buffer::<f32>(
            "a",
            Access::Read,
            Split::Elementwise { per_item: k },
        ))
        .param(Param::buffer::<f32>("b", Access::Read, Split::Broadcast))
        .param(Param::buffer::<f32>(
            "c",
            Access::Write,
            Split::Elementwise { per_item: n },
        ))
        .param(Param::scalar::<u32>("n"))
        .param(Param::scalar::<u32>("k"))
        .param(Param::Offset)
        .param(Param::Count)
        .extent_from("b", &["k", "n"], 1)
        .check_scalars(move |args: &ScalarArgs<'_>| check_sizes(args, n, k))
        // Per row of C: 2·n·k flops; bytes: its row of A and of C, and B once per
        // launch shared by the launch's rows (compulsory traffic).
        .cost_with(move |args: &ScalarArgs<'_>| {
            let rows = args.value::<u32>("count").unwrap_or(1).max(1) as f64;
            let (n, k) = (n as f64, k as f64);
            Cost {
                flops: 2.0 * n * k,
                bytes: 4.0 * (n + k) + 4.0 * n * k / rows,
            }
        })
        // Rows are expensive (2·n·k flops each): small launches still spread.
        .cpu_grain(cpu_grain(n, k)))
}

/// Rows per CPU pool call: enough that a call does at least ~4 MFLOP (and at most
/// 256 rows, the packed rung's natural block).
fn cpu_grain(n: usize, k: usize) -> usize {
    let per_row = 2usize.saturating_mul(n).saturating_mul(k).max(1);
    (4_000_000 / per_row).clamp(1, 256)
}

/// Rows per CPU pool call of the packed rung: each call packs all of B once, so
/// large matrices want long calls (512 rows keep packing B under ~3% of a call's
/// time); small ones keep the plain grain so every core still gets work.
fn packed_grain(n: usize, k: usize) -> usize {
    if n.saturating_mul(k) >= 256 * 256 {
        512
    } else {
        cpu_grain(n, k)
    }
}

/// The launch-time rule: `n` and `k` equal the sizes the kernel was built for
/// (the split layout of `a` and `c` depends on them).
fn check_sizes(args: &ScalarArgs<'_>, n: usize, k: usize) -> std::result::Result<(), String> {
    let got_n = args.value::<u32>("n").map_or(0, |v| v as usize);
    let got_k = args.value::<u32>("k").map_or(0, |v| v as usize);
    if got_n != n || got_k != k {
        return Err(format!(
            "n = {got_n}, k = {got_k} differ from the sizes the kernel was built for (n = {n}, k = {k})"
        ));
    }
    Ok(())
}

fn with_sources(builder: KernelBuilder, name: &str) -> Result<KernelBuilder> {
    let src = super::sources(name)?;
    // SAFETY: audited built-in sources (kernels/gemm_*.c): they declare this
    // signature; they read `a` only below `count × k` and write `c` only below
    // `count × n` (row < count, column < n, inner index < k), the checked extents of
    // the split buffers; they read `b` only below `k × n`, its checked extent; `n`
    // and `k` are checked to equal the built sizes; they use only their static
    // shared/local tiles.
    Ok(unsafe { builder.cuda(src.cuda, name).opencl(src.opencl, name) })
}

/// `gemm_naive(a, b, c, n, k, offset, count)`: one thread per output.
pub fn gemm_naive(n: usize, k: usize) -> Result<Kernel> {
    with_sources(signature("gemm_naive", n, k)?, "gemm_naive")?
        .cpu(move |ctx: &CpuCtx<'_>| with_rows(ctx, n, k, naive_rows))
        .build()
}

/// `gemm_tiled(a, b, c, n, k, offset, count)`: 16 × 16 shared/local-memory tiles.
pub fn gemm_tiled(n: usize, k: usize) -> Result<Kernel> {
    with_sources(signature("gemm_tiled", n, k)?, "gemm_tiled")?
        .cpu_groups(move |g: &mut GroupCtx<'_>| tiled_group(g, n, k))
        .build()
}

/// `gemm_regblock(a, b, c, n, k, offset, count)`: 4 × 4 outputs per thread.
pub fn gemm_regblock(n: usize, k: usize) -> Result<Kernel> {
    with_sources(signature("gemm_regblock", n, k)?, "gemm_regblock")?
        .cpu(move |ctx: &CpuCtx<'_>| with_rows(ctx, n, k, regblock_rows))
        .build()
}

/// `gemm_packed(a, b, c, n, k, offset, count)`: the packed SIMD microkernel; CPU
/// backend only (each pool call multiplies its block of rows).
pub fn gemm_packed(n: usize, k: usize) -> Result<Kernel> {
    signature("gemm_packed", n, k)?
        .cpu(move |ctx: &CpuCtx<'_>| with_rows(ctx, n, k, sgemm::sgemm_serial))
        .cpu_grain(packed_grain(n, k))
        .build()
}

/// `gemm(a, b, c, n, k, offset, count)`: the best rung per backend (regblock on
/// CUDA and OpenCL, the packed microkernel on the CPU), for splitting over devices.
pub fn gemm(n: usize, k: usize) -> Result<Kernel> {
    let builder = signature("gemm", n, k)?;
    let src = super::sources("gemm_regblock")?;
    // SAFETY: the audited gemm_regblock sources, as in `with_sources`.
    let builder = unsafe {
        builder
            .cuda(src.cuda, "gemm_regblock")
            .opencl(src.opencl, "gemm_regblock")
    };
    builder
        .cpu(move |ctx: &CpuCtx<'_>| with_rows(ctx, n, k, sgemm::sgemm_serial))
        .cpu_grain(packed_grain(n, k))
        .build()
}

/// A CPU row kernel: `(rows, n, k, a_rows, b, c_rows)`.
type RowsFn = fn(usize, usize, usize, &[f32], &[f32], &mut [f32]);

/// Run a CPU row kernel on this pool call's rows of C.
fn with_rows(ctx: &CpuCtx<'_>, n: usize, k: usize, f: RowsFn) {
    let rows = ctx.items_below(ctx.count());
    let a = ctx.input::<f32>(0);
    let b = ctx.input::<f32>(1);
    let c = ctx.output::<f32>(2);
    let m = rows.len().min(c.len() / n);
    let a_end = rows.start.saturating_add(m).saturating_mul(k);
    if a.len() < a_end || b.len() < k.saturating_mul(n) {
        // The launch checks extents; this only guards a call outside them.
        panic!("gemm: buffers shorter than their declared extents");
    }
    f(m, n, k, &a[rows.start * k..a_end], &b[..k * n], &mut c[..m * n]);
}

/// Naive: `c[i][j] = Σ_p a[i][p] · b[p][j]`, one output at a time (B walked by column).
fn naive_rows(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    for i in 0..m {
        let ar = &a[i * k..(i + 1) * k];
        for j in 0..n {
            let mut acc = 0.0f32;
            for (p, av) in ar.iter().enumerate() {
                acc += av * b[p * n + j];
            }
            c[i * n + j] = acc;
        }
    }
}

/// Tile edge of the tiled CPU rung (as on the devices).
const TS: usize = 16;

/// Tiled, as a CPU work-group kernel ([`crate::cpu_group`]): the same walk as
/// `kernels/gemm_tiled.c` with the same launch. Each group takes tiles of C
/// `group, group + groups, …`; for each 16-deep slice of `k` one phase stages the
/// A and B tiles in local arrays, a barrier, one phase accumulates the group's
/// outputs (row by row, 16 columns at a time, so the inner loop vectorizes), a
/// barrier; a last phase stores the tile. A group of fewer than 256 items covers
/// its tile in several passes, as on the devices.
fn tiled_group(g: &mut GroupCtx<'_>, n: usize, k: usize) {
    let a = g.input::<f32>(0);
    let b = g.input::<f32>(1);
    let c = g.atomic::<f32>(2);
    let count = g.scalar::<u32>(6) as usize;
    let bs = g.threads().max(1);
    let blocks = g.groups().max(1);
    let tiles_x = n.div_ceil(TS) as u64;
    let tiles = tiles_x.saturating_mul(count.div_ceil(TS) as u64);
    let mut at = [[0.0f32; TS]; TS];
    let mut bt = [[0.0f32; TS]; TS];
    let mut t = g.group_linear();
    while t < tiles {
        let row0 = (t / tiles_x) as usize * TS;
        let col0 = (t % tiles_x) as usize * TS;
        let rows = count.saturating_sub(row0).min(TS);
        let cols = n.saturating_sub(col0).min(TS);
        let mut v0 = 0;
        while v0 < TS * TS {
            // acc[v] is the accumulator of output v = ty·16 + tx (the items v0 + tid).
            let mut acc = [[0.0f32; TS]; TS];
            let mut p0 = 0;
            while p0 < k {
                let depth = (k - p0).min(TS);
                g.phase(|items| {
                    if items.len() == bs {
                        // Every item takes part: all 256 elements of both tiles.
                        stage(&mut at, a, k, row0, rows, p0, depth);
                        stage(&mut bt, b, n, p0, depth, col0, cols);
                    } else {
                        for tid in items {
                            for i in (tid..TS * TS).step_by(bs) {
                                let (r, q) = (i / TS, i % TS);
                                at[r][q] = if r < rows && q < depth {
                                    a[(row0 + r) * k + p0 + q]
                                } else {
                                    0.0
                                };
                                bt[r][q] = if r < depth && q < cols {
                                    b[(p0 + r) * n + col0 + q]
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                });
                g.barrier();
                g.phase(|items| {
                    let vs = v0 + items.start;
                    let ve = (v0 + items.end).min(TS * TS);
                    let mut v = vs;
                    while v < ve {
                        let ty = v / TS;
                        let (x0, x1) = (v % TS, (ve - ty * TS).min(TS));
                        let row = &mut acc[ty];
                        if x0 == 0 && x1 == TS {
                            for (q, bq) in bt.iter().enumerate() {
                                let av = at[ty][q];
                                for (o, bv) in row.iter_mut().zip(bq) {
                                    *o += av * *bv;
                                }
                            }
                        } else {
                            for (q, bq) in bt.iter().enumerate() {
                                let av = at[ty][q];
                                for (o, bv) in row[x0..x1].iter_mut().zip(&bq[x0..x1]) {
                                    *o += av * *bv;
                                }
                            }
                        }
                        v = ty * TS + x1;
                    }
                });
                g.barrier();
                p0 += TS;
            }
            g.phase(|items| {
                let vs = v0 + items.start;
                let ve = (v0 + items.end).min(TS * TS);
                let last = ve.div_ceil(TS).min(rows);
                for (ty, out) in acc.iter().enumerate().take(last).skip(vs / TS) {
                    let x0 = vs.saturating_sub(ty * TS).min(TS);
                    let x1 = (ve - ty * TS).min(TS).min(cols);
                    if x0 < x1 {
                        c.store_slice((row0 + ty) * n + col0 + x0, &out[x0..x1]);
                    }
                }
            });
            v0 += bs;
        }
        t = t.saturating_add(blocks);
    }
}

/// Copy the `rows × depth` block of row-major `src` (row stride `stride`) at
/// `(r0, c0)` into `tile`, zero-filling the rest of the 16 × 16 tile.
fn stage(tile: &mut [[f32; TS]; TS], src: &[f32], stride: usize, r0: usize, rows: usize, c0: usize, cols: usize) {
    for (r, row) in tile.iter_mut().enumerate() {
        if r < rows {
            let at = (r0 + r) * stride + c0;
            row[..cols].copy_from_slice(&src[at..at + cols]);
            row[cols..].fill(0.0);
        } else {
            row.fill(0.0);
        }
    }
}

/// Rows and columns of the register block of the regblock CPU rung.
const RB_M: usize = 4;
const RB_N: usize = 16;

/// Register-blocked: 4 × 16 blocks of C held in local accumulators over the whole
/// of `k` (the compiler keeps them in vector registers), read straight from A and B.
fn regblock_rows(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    for i0 in (0..m).step_by(RB_M) {
        let mi = (m - i0).min(RB_M);
        for j0 in (0..n).step_by(RB_N) {
            let nj = (n - j0).min(RB_N);
            let mut acc = [[0.0f32; RB_N]; RB_M];
            for p in 0..k {
                let mut bv = [0.0f32; RB_N];
                bv[..nj].copy_from_slice(&b[p * n + j0..p * n + j0 + nj]);
                for (r, row) in acc.iter_mut().enumerate().take(mi) {
                    let av = a[(i0 + r) * k + p];
                    for (x, y) in row.iter_mut().zip(&bv) {
                        *x += av * *y;
                    }
                }
            }
            for (r, row) in acc.iter().enumerate().take(mi) {
                let at = (i0 + r) * n + j0;
                c[at..at + nj].copy_from_slice(&row[..nj]);
            }
        }
    }
}
