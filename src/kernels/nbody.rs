//! All-pairs gravitational N-body accelerations, the compute-bound showcase.
//!
//! `nbody(pos, acc, n, eps2, offset, count)` computes, for the chunk's bodies
//! `offset + i` (`i < count`),
//!
//! ```text
//! a_i = Σ_j m_j r_ij / (|r_ij|² + ε²)^{3/2},   r_ij = p_j − p_i
//! ```
//!
//! in f32 (GPU Gems 3, chapter 31). `pos` holds all `n` bodies as `float4`
//! `(x, y, z, mass)` and is broadcast to every chunk; `acc` is the chunk's slice
//! of `count` `float4` results (`w = 0`), indexed from 0. `eps2` must be positive:
//! the self-interaction then contributes exactly 0 (r = 0). One interaction counts
//! as [`FLOPS_PER_INTERACTION`] = 20 flops.
//!
//! * CUDA and OpenCL (one portable source, `kernels/nbody.c`) stage
//!   [`NBODY_TILE`] bodies at a time in static shared/local memory. They are
//!   correct for any block size, grid and `n`; blocks of up to
//!   [`NBODY_MAX_BLOCK`] threads are the intended use ([`nbody_launch_config`]).
//! * OpenCL devices that compute on host cores ([`DeviceInfo::host_cpu`]: PoCL)
//!   build a CPU-shaped source instead (`kernels/host_cpu/nbody.cl`, see
//!   [`crate::KernelBuilder::opencl_host_cpu`]): no local memory, one simple loop
//!   per work-item that PoCL vectorizes across work-items, `native_rsqrt` and
//!   `-cl-fast-relaxed-math`. Tiling through local memory costs a host CPU more
//!   than it saves (about 0.1× the CPU-shaped kernel's speed on PoCL).
//! * The CPU version is native Rust: the chunk's bodies are converted to
//!   structure-of-arrays in a per-thread scratch buffer (reused across calls, so
//!   the hot path does not allocate after the first call), the sources are walked
//!   in tiles that stay in L1, and on AVX-512 machines 32 bodies are updated per
//!   source in two 16-lane registers with `vrsqrt14ps` plus one Newton–Raphson
//!   step. Elsewhere a portable loop that the compiler vectorizes is used. The
//!   path is chosen at run time ([`NbodyCpuPath`]).

use std::cell::RefCell;
use std::ops::Range;

use crate::cpu_ctx::CpuCtx;
use crate::device::DeviceInfo;
use crate::error::{Error, Result};
use crate::kernel::{Access, Cost, Kernel, Param, ScalarArgs, Split};
use crate::launch::LaunchConfig;

/// Bodies staged per tile in shared/local memory by the CUDA and OpenCL kernels.
pub const NBODY_TILE: u32 = 256;
/// Largest block [`nbody_launch_config`] picks (one thread per tile slot).
pub const NBODY_MAX_BLOCK: u32 = 256;
/// Flops counted per body–body interaction (the usual convention).
pub const FLOPS_PER_INTERACTION: f64 = 20.0;
/// Environment variable that forces the CPU path of [`nbody`]: `auto`, `avx512`
/// or `portable`.
pub const NBODY_CPU_ENV: &str = "OFFLOAD_NBODY_CPU";

/// Build options of the host-CPU OpenCL source (`kernels/host_cpu/nbody.cl`).
const HOST_CPU_OPTIONS: &[&str] = &["-cl-fast-relaxed-math"];

/// Sources per tile of the CPU loop: 2048 × 16 bytes = 32 KiB, inside L1.
const J_TILE: usize = 2048;
/// Bodies updated together by the portable path.
const LANES: usize = 16;
/// Bodies updated together by the AVX-512 path (two registers of 16).
const I_BLOCK: usize = 32;

/// Which CPU implementation the kernel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NbodyCpuPath {
    /// The fastest path this CPU supports (AVX-512 when present).
    Auto,
    /// Hand-written AVX-512 (`avx512f`); only where the CPU has it.
    Avx512,
    /// Plain Rust, vectorized by the compiler; runs everywhere.
    Portable,
}

impl NbodyCpuPath {
    /// Whether this path can run on this CPU.
    pub fn available(self) -> bool {
        match self {
            NbodyCpuPath::Auto | NbodyCpuPath::Portable => true,
            NbodyCpuPath::Avx512 => has_avx512(),
        }
    }

    /// The concrete path `Auto` stands for on this CPU (others are returned as is).
    pub fn resolve(self) -> NbodyCpuPath {
        match self {
            NbodyCpuPath::Auto if has_avx512() => NbodyCpuPath::Avx512,
            NbodyCpuPath::Auto => NbodyCpuPath::Portable,
            p => p,
        }
    }

    /// Lower-case name (`auto`, `avx512`, `portable`).
    pub fn name(self) -> &'static str {
        match self {
            NbodyCpuPath::Auto => "auto",
            NbodyCpuPath::Avx512 => "avx512",
            NbodyCpuPath::Portable => "portable",
        }
    }

    /// Parse a name as accepted by [`NBODY_CPU_ENV`].
    pub fn parse(s: &str) -> Result<NbodyCpuPath> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(NbodyCpuPath::Auto),
            "avx512" => Ok(NbodyCpuPath::Avx512),
            "portable" => Ok(NbodyCpuPath::Portable),
            other => Err(Error::InvalidInput(format!(
                "unknown N-body CPU path {other:?} (from {NBODY_CPU_ENV}); valid: auto, avx512, portable"
            ))),
        }
    }
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `nbody(pos, acc, n, eps2, offset, count)`: softened all-pairs accelerations.
///
/// The CPU path is [`NbodyCpuPath::Auto`] unless [`NBODY_CPU_ENV`] names another. Launch
/// with [`nbody_launch_config`] (at least `count` threads in total).
pub fn nbody() -> Result<Kernel> {
    let path = match std::env::var(NBODY_CPU_ENV) {
        Ok(s) => NbodyCpuPath::parse(&s)?,
        Err(_) => NbodyCpuPath::Auto,
    };
    nbody_with_cpu_path(path)
}

/// [`nbody`] with an explicit CPU path (tests and benchmarks use this to check
/// both). Asking for [`NbodyCpuPath::Avx512`] on a CPU without it is an error.
pub fn nbody_with_cpu_path(path: NbodyCpuPath) -> Result<Kernel> {
    if !path.available() {
        return Err(Error::InvalidInput(format!(
            "N-body CPU path {} is not supported by this CPU (needs avx512f)",
            path.name()
        )));
    }
    let path = path.resolve();
    let src = super::sources("nbody")?;
    let builder = Kernel::builder("nbody")
        .param(Param::buffer::<f32>("pos", Access::Read, Split::Broadcast))
        .param(Param::buffer::<f32>(
            "acc",
            Access::Write,
            Split::Elementwise { per_item: 4 },
        ))
        .param(Param::scalar::<u32>("n"))
        .param(Param::scalar::<f32>("eps2"))
        .param(Param::Offset)
        .param(Param::Count)
        .extent_from("pos", &["n"], 4)
        .check_scalars(check_scalars)
        // Per body: n interactions of FLOPS_PER_INTERACTION flops; bytes: all n
        // positions read once per launch (shared by its bodies), its own
        // acceleration written.
        .cost_with(|args: &ScalarArgs<'_>| {
            let n = args.value::<u32>("n").unwrap_or(0) as f64;
            let count = args.value::<u32>("count").unwrap_or(1).max(1) as f64;
            Cost {
                flops: FLOPS_PER_INTERACTION * n,
                bytes: 16.0 * n / count + 16.0,
            }
        });
    // Audited built-in sources (kernels/nbody.c): they
    // declare this signature, read `pos` only below `n` float4s (its checked
    // extent), write `acc[i]` only for `i < count` (its checked extent), and use
    // only their static shared/local tile.
    // SAFETY: the audited sources stay inside the declared extents (above).
    let builder = unsafe { builder.cuda(src.cuda, "nbody").opencl(src.opencl, "nbody") };
    let builder = match src.opencl_host_cpu {
        // Audited built-in source (kernels/host_cpu/nbody.cl): the same signature;
        // it reads `pos` only below `n` float4s (the load index is clamped to
        // n - 1) and writes `acc[i]` only for `i < count`; no local memory.
        // SAFETY: the audited source stays inside the declared extents (above).
        Some(host) => unsafe { builder.opencl_host_cpu(host, "nbody") }.opencl_host_cpu_options(HOST_CPU_OPTIONS),
        None => builder,
    };
    builder
        .cpu(move |ctx: &CpuCtx<'_>| cpu(ctx, path))
        // Each body costs n interactions: small chunks still pay for a wake-up.
        .cpu_grain(64)
        .build()
}

/// The launch-time rules of [`nbody`]: `eps2` finite and positive (so every
/// backend computes the same finite result, the self-interaction included) and
/// the chunk `offset .. offset + count` inside the `n` bodies.
fn check_scalars(args: &ScalarArgs<'_>) -> std::result::Result<(), String> {
    let eps2 = args.value::<f32>("eps2").unwrap_or(f32::NAN);
    if !(eps2.is_finite() && eps2 > 0.0) {
        return Err(format!("eps2 = {eps2} must be finite and greater than 0"));
    }
    let n = args.value::<u32>("n").unwrap_or(0) as u64;
    let offset = args.value::<u32>("offset").unwrap_or(0) as u64;
    let count = args.value::<u32>("count").unwrap_or(0) as u64;
    if offset + count > n {
        return Err(format!(
            "bodies offset {offset} + count {count} = {} exceed n = {n}",
            offset + count
        ));
    }
    Ok(())
}

/// A 1-D launch covering `count` bodies on a device: blocks of the device's warp
/// multiple up to [`NBODY_MAX_BLOCK`] threads (or the device maximum if smaller).
pub fn nbody_launch_config(count: usize, info: &DeviceInfo) -> LaunchConfig {
    let max = info
        .max_threads_per_block
        .min(info.max_block_dims[0])
        .clamp(1, NBODY_MAX_BLOCK);
    let warp = info.warp_size.max(1);
    let block = if warp <= max { (max / warp) * warp } else { max };
    let grid = (count.max(1) as u64).div_ceil(block as u64).min(u32::MAX as u64) as u32;
    LaunchConfig::new(grid, block)
}

/// The CPU kernel: bodies `offset + items` of the chunk.
fn cpu(ctx: &CpuCtx<'_>, path: NbodyCpuPath) {
    let n = ctx.scalar::<u32>(2) as usize;
    let eps2 = ctx.scalar::<f32>(3);
    let offset = ctx.offset();
    let items = ctx.items_below(ctx.count());
    let pos = ctx.input::<f32>(0);
    let acc = ctx.output::<f32>(1);
    if pos.len() < n * 4 {
        panic!("pos holds {} floats, fewer than n × 4 = {}", pos.len(), n * 4);
    }
    let m = items.len().min(acc.len() / 4);
    let first = offset + items.start;
    if first + m > n {
        panic!("bodies {first}..{} lie beyond n = {n}", first + m);
    }
    accelerations(&pos[..n * 4], first..first + m, eps2, &mut acc[..m * 4], path);
}

/// Per-thread structure-of-arrays scratch: `xi, yi, zi, ax, ay, az`, each
/// `stride` floats (the chunk rounded up to [`I_BLOCK`]).
struct Scratch {
    buf: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { buf: Vec::new() }) };
}

/// Accelerations of `bodies` (global indices into `pos`, a float4 array) into
/// `out` (`bodies.len()` float4, `w = 0`) on the CPU, with the given path.
fn accelerations(pos: &[f32], bodies: Range<usize>, eps2: f32, out: &mut [f32], path: NbodyCpuPath) {
    let count = bodies.len();
    if count == 0 {
        return;
    }
    let stride = count.div_ceil(I_BLOCK) * I_BLOCK;
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => run_with(&mut s.buf, pos, bodies, eps2, out, path, stride),
        // Not reentrant in practice; a nested call would just use a fresh buffer.
        Err(_) => run_with(&mut Vec::new(), pos, bodies, eps2, out, path, stride),
    });
}

fn run_with(
    buf: &mut Vec<f32>,
    pos: &[f32],
    bodies: Range<usize>,
    eps2: f32,
    out: &mut [f32],
    path: NbodyCpuPath,
    stride: usize,
) {
    if buf.len() < 6 * stride {
        buf.resize(6 * stride, 0.0);
    }
    let (xi, rest) = buf[..6 * stride].split_at_mut(stride);
    let (yi, rest) = rest.split_at_mut(stride);
    let (zi, rest) = rest.split_at_mut(stride);
    let (ax, rest) = rest.split_at_mut(stride);
    let (ay, az) = rest.split_at_mut(stride);
    let count = bodies.len();
    for (k, b) in pos[bodies.start * 4..bodies.end * 4].chunks_exact(4).enumerate() {
        xi[k] = b[0];
        yi[k] = b[1];
        zi[k] = b[2];
    }
    // Padding bodies sit at the origin; their results are discarded.
    for v in [&mut *xi, &mut *yi, &mut *zi] {
        v[count..].fill(0.0);
    }
    let n = pos.len() / 4;
    let soa = Soa { xi, yi, zi, ax, ay, az };
    match path {
        #[cfg(target_arch = "x86_64")]
        NbodyCpuPath::Avx512 if has_avx512() => {
            // SAFETY: avx512f was detected at run time just above.
            unsafe { avx512::run(soa, pos, n, eps2) }
        }
        _ => portable(soa, pos, n, eps2),
    }
    for (k, o) in out.chunks_exact_mut(4).enumerate().take(count) {
        o[0] = ax[k];
        o[1] = ay[k];
        o[2] = az[k];
        o[3] = 0.0;
    }
}

/// Structure-of-arrays views of one chunk (`len` a multiple of [`I_BLOCK`]).
struct Soa<'a> {
    xi: &'a [f32],
    yi: &'a [f32],
    zi: &'a [f32],
    ax: &'a mut [f32],
    ay: &'a mut [f32],
    az: &'a mut [f32],
}

/// Portable path: 16 bodies at a time against every source, in f32 lanes the
/// compiler vectorizes (`sqrt` and division, exact to f32 rounding).
fn portable(s: Soa<'_>, pos: &[f32], n: usize, eps2: f32) {
    let groups =
        s.xi.chunks_exact(LANES)
            .zip(s.yi.chunks_exact(LANES))
            .zip(s.zi.chunks_exact(LANES))
            .zip(s.ax.chunks_exact_mut(LANES))
            .zip(s.ay.chunks_exact_mut(LANES))
            .zip(s.az.chunks_exact_mut(LANES));
    for (((((xi, yi), zi), ax), ay), az) in groups {
        let mut xv = [0f32; LANES];
        let mut yv = [0f32; LANES];
        let mut zv = [0f32; LANES];
        xv.copy_from_slice(xi);
        yv.copy_from_slice(yi);
        zv.copy_from_slice(zi);
        let mut sx = [0f32; LANES];
        let mut sy = [0f32; LANES];
        let mut sz = [0f32; LANES];
        for b in pos[..n * 4].chunks_exact(4) {
            let (bx, by, bz, bm) = (b[0], b[1], b[2], b[3]);
            for l in 0..LANES {
                let dx = bx - xv[l];
                let dy = by - yv[l];
                let dz = bz - zv[l];
                let r2 = dx * dx + dy * dy + dz * dz + eps2;
                let inv = 1.0 / r2.sqrt();
                let s = bm * inv * inv * inv;
                sx[l] += dx * s;
                sy[l] += dy * s;
                sz[l] += dz * s;
            }
        }
        ax.copy_from_slice(&sx);
        ay.copy_from_slice(&sy);
        az.copy_from_slice(&sz);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The AVX-512 path: two 16-lane registers of bodies per source, sources in
    //! L1-sized tiles, `vrsqrt14ps` refined by one Newton–Raphson step.

    use std::arch::x86_64::*;

    use super::{I_BLOCK, J_TILE, Soa};

    // `load32` and `store32` move one block of bodies.
    const _: () = assert!(I_BLOCK == 32);

    /// Accelerations of every body in `s` against sources `pos[..n]`.
    ///
    /// `s`'s slices must all have the same length, a multiple of [`I_BLOCK`];
    /// `pos` must hold at least `4 n` floats.
    ///
    /// # Safety
    /// The CPU supports `avx512f`, and the lengths are as described above.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run(s: Soa<'_>, pos: &[f32], n: usize, eps2: f32) {
        let len = s.xi.len();
        debug_assert!(len.is_multiple_of(I_BLOCK) && pos.len() >= 4 * n);
        let eps2v = _mm512_set1_ps(eps2);
        let three = _mm512_set1_ps(3.0);
        // The refined reciprocal square root below is 2/√r², so the sums carry a
        // factor 8 that is removed once, after the last tile.
        let eighth = _mm512_set1_ps(0.125);
        let Soa { xi, yi, zi, ax, ay, az } = s;
        let p = pos.as_ptr();
        let mut j0 = 0;
        while j0 < n {
            let j1 = (j0 + J_TILE).min(n);
            let scale = if j1 == n { eighth } else { _mm512_set1_ps(1.0) };
            let mut i = 0;
            while i + I_BLOCK <= len {
                let block = i..i + I_BLOCK;
                let (x0, x1) = load32(&xi[block.clone()]);
                let (y0, y1) = load32(&yi[block.clone()]);
                let (z0, z1) = load32(&zi[block.clone()]);
                let zero = _mm512_setzero_ps();
                let ((mut ax0, mut ax1), (mut ay0, mut ay1), (mut az0, mut az1)) = if j0 > 0 {
                    // These sums were stored by the previous tile.
                    (
                        load32(&ax[block.clone()]),
                        load32(&ay[block.clone()]),
                        load32(&az[block.clone()]),
                    )
                } else {
                    ((zero, zero), (zero, zero), (zero, zero))
                };
                for j in j0..j1 {
                    // SAFETY: j < n and `pos` holds at least 4 n floats (this
                    // function's contract), so offset 4 j stays inside `pos`.
                    let b = unsafe { p.add(4 * j) };
                    // SAFETY: `b` is followed by 4 readable floats of `pos` (above);
                    // `[f32; 4]` has the alignment of `f32`.
                    let [bx, by, bz, bm] = unsafe { b.cast::<[f32; 4]>().read() };
                    let (bx, by, bz, bm) = (
                        _mm512_set1_ps(bx),
                        _mm512_set1_ps(by),
                        _mm512_set1_ps(bz),
                        _mm512_set1_ps(bm),
                    );
                    interact(bx, by, bz, bm, x0, y0, z0, eps2v, three, &mut ax0, &mut ay0, &mut az0);
                    interact(bx, by, bz, bm, x1, y1, z1, eps2v, three, &mut ax1, &mut ay1, &mut az1);
                }
                store32(
                    &mut ax[block.clone()],
                    _mm512_mul_ps(ax0, scale),
                    _mm512_mul_ps(ax1, scale),
                );
                store32(
                    &mut ay[block.clone()],
                    _mm512_mul_ps(ay0, scale),
                    _mm512_mul_ps(ay1, scale),
                );
                store32(&mut az[block], _mm512_mul_ps(az0, scale), _mm512_mul_ps(az1, scale));
                i += I_BLOCK;
            }
            j0 = j1;
        }
    }

    /// The two 16-float halves of `v[..32]` (bounds-checked).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn load32(v: &[f32]) -> (__m512, __m512) {
        let (lo, hi) = v[..32].split_at(16);
        // SAFETY: `lo` holds 16 readable floats; unaligned loads need no alignment.
        let a = unsafe { _mm512_loadu_ps(lo.as_ptr()) };
        // SAFETY: as above, for `hi`.
        let b = unsafe { _mm512_loadu_ps(hi.as_ptr()) };
        (a, b)
    }

    /// Store `a` and `b` into the two 16-float halves of `v[..32]` (bounds-checked).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn store32(v: &mut [f32], a: __m512, b: __m512) {
        let (lo, hi) = v[..32].split_at_mut(16);
        // SAFETY: `lo` is an exclusive borrow of 16 floats; unaligned stores need no
        // alignment.
        unsafe { _mm512_storeu_ps(lo.as_mut_ptr(), a) };
        // SAFETY: as above, for `hi`.
        unsafe { _mm512_storeu_ps(hi.as_mut_ptr(), b) };
    }

    /// One source against 16 bodies: 15 vector operations plus `vrsqrt14ps`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn interact(
        bx: __m512,
        by: __m512,
        bz: __m512,
        bm: __m512,
        x: __m512,
        y: __m512,
        z: __m512,
        eps2: __m512,
        three: __m512,
        ax: &mut __m512,
        ay: &mut __m512,
        az: &mut __m512,
    ) {
        let dx = _mm512_sub_ps(bx, x);
        let dy = _mm512_sub_ps(by, y);
        let dz = _mm512_sub_ps(bz, z);
        let r2 = _mm512_fmadd_ps(dx, dx, eps2);
        let r2 = _mm512_fmadd_ps(dy, dy, r2);
        let r2 = _mm512_fmadd_ps(dz, dz, r2);
        // y ≈ 1/√r2 to 2^-14; one Newton–Raphson step, y' = y (3 − r2 y²) = 2/√r2
        // to about 1e-8 relative.
        let y0 = _mm512_rsqrt14_ps(r2);
        let t = _mm512_fnmadd_ps(r2, _mm512_mul_ps(y0, y0), three);
        let y1 = _mm512_mul_ps(y0, t);
        // m y'^3 = 8 m / r2^{3/2}
        let s = _mm512_mul_ps(_mm512_mul_ps(bm, y1), _mm512_mul_ps(y1, y1));
        *ax = _mm512_fmadd_ps(dx, s, *ax);
        *ay = _mm512_fmadd_ps(dy, s, *ay);
        *az = _mm512_fmadd_ps(dz, s, *az);
    }
}

/// Accelerations of `bodies` against all of `pos` on the host, with the given CPU
/// path: the same code the CPU device runs, callable without a device.
///
/// `pos` is `n` float4 `(x, y, z, m)`; `out` receives `bodies.len()` float4.
pub fn nbody_host(pos: &[f32], bodies: Range<usize>, eps2: f32, out: &mut [f32], path: NbodyCpuPath) -> Result<()> {
    if !pos.len().is_multiple_of(4) {
        return Err(Error::InvalidInput(format!(
            "nbody_host: pos holds {} floats, not a multiple of 4",
            pos.len()
        )));
    }
    let n = pos.len() / 4;
    if bodies.start > bodies.end || bodies.end > n {
        return Err(Error::InvalidInput(format!(
            "nbody_host: bodies {}..{} outside 0..{n}",
            bodies.start, bodies.end
        )));
    }
    if out.len() != bodies.len() * 4 {
        return Err(Error::LengthMismatch {
            what: "nbody_host output".into(),
            host: out.len(),
            buffer: bodies.len() * 4,
        });
    }
    if !path.available() {
        return Err(Error::InvalidInput(format!(
            "N-body CPU path {} is not supported by this CPU (needs avx512f)",
            path.name()
        )));
    }
    accelerations(pos, bodies, eps2, out, path.resolve());
    Ok(())
}

/// `nbody_block(pos, acc, n, eps2, first, offset, count)` (CPU only): the
/// accelerations of bodies `first + offset + i` for `i < count`, from all `n`
/// positions (`pos`, 4 floats per body, broadcast), into `acc` (4 floats per
/// item). The built-in [`nbody`] computes bodies `offset + i` of the array it is
/// given; a rank of a distributed run owns a block of bodies starting at
/// `first` and computes it from every rank's positions.
pub fn nbody_block() -> Result<Kernel> {
    Kernel::builder("nbody_block")
        .param(Param::buffer::<f32>("pos", Access::Read, Split::Broadcast))
        .param(Param::buffer::<f32>(
            "acc",
            Access::Write,
            Split::Elementwise { per_item: 4 },
        ))
        .param(Param::scalar::<u32>("n"))
        .param(Param::scalar::<f32>("eps2"))
        .param(Param::scalar::<u32>("first"))
        .param(Param::Offset)
        .param(Param::Count)
        .extent_from("pos", &["n"], 4)
        .check_scalars(|s| {
            let n = s.value::<u32>("n").unwrap_or(0) as u64;
            let end = s.value::<u32>("first").unwrap_or(0) as u64
                + s.value::<u32>("offset").unwrap_or(0) as u64
                + s.value::<u32>("count").unwrap_or(0) as u64;
            if end > n {
                return Err(format!("bodies up to {end} exceed n = {n}"));
            }
            Ok(())
        })
        .cpu(|ctx: &CpuCtx<'_>| {
            let n = ctx.scalar::<u32>(2) as usize;
            let eps2 = ctx.scalar::<f32>(3);
            let first = ctx.scalar::<u32>(4) as usize + ctx.offset();
            let items = ctx.items_below(ctx.count());
            let acc = ctx.output::<f32>(1);
            let m = items.len().min(acc.len() / 4);
            let b = first + items.start;
            // The launch checked the extents and the body range above; a failure
            // here is a bug, reported as the kernel's panic.
            if let Err(e) = nbody_host(
                &ctx.input::<f32>(0)[..n * 4],
                b..b + m,
                eps2,
                &mut acc[..m * 4],
                NbodyCpuPath::Auto,
            ) {
                panic!("nbody_block: {e}");
            }
        })
        .cpu_grain(16)
        .build()
}
