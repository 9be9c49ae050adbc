//! Packed, cache-blocked SGEMM on the host CPU (the Goto / BLIS algorithm).
//!
//! `C (m × n) = A (m × k) · B (k × n)`, row-major f32. Five loops around a
//! register microkernel:
//!
//! ```text
//! for jc in 0..n step NC            B panel, KC × NC, packed once, stays in L3
//!   for pc in 0..k step KC
//!     pack B[pc.., jc..] into NR-wide slivers (zero-padded)
//!     for ic in 0..m step MC        A block, MC × KC, packed, stays in L2
//!       pack A[ic.., pc..] into MR-tall slivers (zero-padded)
//!       for jr in 0..NC step NR     one B sliver (KC × NR) reused by every A sliver
//!         for ir in 0..MC step MR
//!           C[ir.., jr..] (+)= A sliver · B sliver     MR × NR accumulators in registers
//! ```
//!
//! The microkernel keeps an `MR × NR` block of C in vector registers: per step of
//! `k` it loads one row of the B sliver (`NR / lanes` vectors), broadcasts `MR`
//! values of the A sliver and issues `MR × NR / lanes` FMAs. The instruction set is
//! chosen at run time ([`SgemmIsa::detect`]): AVX-512 (8 × 48, 24 of the 32 zmm
//! registers), AVX2 + FMA (6 × 16, 12 of the 16 ymm registers), or a portable
//! loop the compiler vectorizes with whatever the build target allows. Edge tiles
//! (`m`, `n` not multiples of `MR`, `NR`) run the same microkernel on zero-padded
//! panels into a small buffer, then the valid part is stored.
//!
//! Packing buffers are per thread and reused, so the hot path does not allocate
//! after a thread's first call.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::cpu::pool::Pool;

use crate::error::{Error, Result};

/// The microkernel's instruction set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SgemmIsa {
    /// AVX-512F, 8 × 48 register block.
    Avx512,
    /// AVX2 with FMA, 6 × 16 register block.
    Avx2,
    /// Plain Rust, 4 × 16, vectorized by the compiler for the build target.
    Portable,
}

impl SgemmIsa {
    /// The fastest instruction set this CPU supports.
    pub fn detect() -> SgemmIsa {
        if has_avx512() {
            SgemmIsa::Avx512
        } else if has_avx2_fma() {
            SgemmIsa::Avx2
        } else {
            SgemmIsa::Portable
        }
    }

    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        match self {
            SgemmIsa::Avx512 => has_avx512(),
            SgemmIsa::Avx2 => has_avx2_fma(),
            SgemmIsa::Portable => true,
        }
    }

    /// Lower-case name (`avx512`, `avx2`, `portable`).
    pub fn name(self) -> &'static str {
        match self {
            SgemmIsa::Avx512 => "avx512",
            SgemmIsa::Avx2 => "avx2",
            SgemmIsa::Portable => "portable",
        }
    }

    /// Register block and cache blocking of this instruction set.
    fn blocking(self) -> Blocking {
        match self {
            SgemmIsa::Avx512 => Blocking {
                mr: 8,
                nr: 48,
                kc: 1024,
                mc: 48,
                nc: 1536,
            },
            SgemmIsa::Avx2 => Blocking {
                mr: 6,
                nr: 16,
                kc: 512,
                mc: 72,
                nc: 1536,
            },
            SgemmIsa::Portable => Blocking {
                mr: 4,
                nr: 16,
                kc: 256,
                mc: 64,
                nc: 1024,
            },
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

fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Register block (`mr × nr`) and the largest cache blocks (`kc`, `mc`, `nc`; `mc`
/// a multiple of `mr`, `nc` of `nr`). Measured on Zen 4 (1 MiB L2 per core): a
/// deep `kc` (C is loaded and stored once per `kc` steps) and a short `mc` (the A
/// block and one B sliver share L2) win.
#[derive(Clone, Copy, Debug)]
struct Blocking {
    mr: usize,
    nr: usize,
    kc: usize,
    mc: usize,
    nc: usize,
}

/// Largest `mr × nr` of any instruction set (the edge-tile buffer).
const MAX_TILE: usize = 8 * 48;

/// Floats of alignment slack in the packing buffers (64 bytes).
const ALIGN: usize = 16;

/// Per-thread packing buffers.
struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

thread_local! {
    /// The packed B panel a multi-threaded [`sgemm_host`] call shares.
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch { a: Vec::new(), b: Vec::new() }) };
}

/// A 64-byte aligned window of `len` floats in `buf` (grown if needed).
fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len + ALIGN {
        buf.resize(len + ALIGN, 0.0);
    }
    let off = buf.as_ptr().align_offset(ALIGN * 4).min(ALIGN);
    &mut buf[off..off + len]
}

/// `C = A · B` for row-major `a` (`m × k`), `b` (`k × n`), `c` (`m × n`) on the
/// calling thread, with the fastest microkernel this CPU supports. The slices
/// must hold exactly those sizes (a shorter one panics).
pub(crate) fn sgemm_serial(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    sgemm_serial_isa(SgemmIsa::detect(), m, n, k, a, b, c, false);
}

/// `C += A · B`, otherwise as [`sgemm_serial`].
pub(crate) fn sgemm_serial_acc(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    sgemm_serial_isa(SgemmIsa::detect(), m, n, k, a, b, c, true);
}

/// [`sgemm_serial`] with a given instruction set (`isa.available()` must hold;
/// one that does not falls back to portable code with the same layout), adding
/// to C when `acc`.
#[allow(clippy::too_many_arguments)]
fn sgemm_serial_isa(isa: SgemmIsa, m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], acc: bool) {
    if m == 0 || n == 0 {
        return;
    }
    let c = &mut c[..m * n];
    if k == 0 {
        if !acc {
            c.fill(0.0);
        }
        return;
    }
    let (a, b) = (&a[..m * k], &b[..k * n]);
    let bl = isa.blocking();
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => {
            let s = &mut *s;
            blocked(isa, bl, m, n, k, a, b, c, &mut s.a, &mut s.b, acc);
        }
        // Not reentrant in practice; a nested call would just use fresh buffers.
        Err(_) => blocked(isa, bl, m, n, k, a, b, c, &mut Vec::new(), &mut Vec::new(), acc),
    });
}

/// The five loops (see the module docs).
#[allow(clippy::too_many_arguments)]
fn blocked(
    isa: SgemmIsa,
    bl: Blocking,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    abuf: &mut Vec<f32>,
    bbuf: &mut Vec<f32>,
    acc: bool,
) {
    let Blocking { mr, nr, .. } = bl;
    let (kc, mc, nc) = block_sizes(bl, m, n, k);
    let bp = aligned(bbuf, kc * nc);
    let ap = aligned(abuf, kc * mc);
    for jc in (0..n).step_by(nc) {
        let ncur = nc.min(n - jc);
        for pc in (0..k).step_by(kc) {
            let kcur = kc.min(k - pc);
            pack_b(b, n, pc, kcur, jc, ncur, nr, bp);
            for ic in (0..m).step_by(mc) {
                let mcur = mc.min(m - ic);
                pack_a(a, k, ic, mcur, pc, kcur, mr, ap);
                let block = Block {
                    kcur,
                    mcur,
                    ncur,
                    ldc: n,
                    accumulate: acc || pc > 0,
                };
                macro_block(isa, bl, block, ap, bp, &mut c[ic * n + jc..]);
            }
        }
    }
}

/// The cache blocks for this problem: even blocks (k = 1100 runs as two blocks of
/// 550, not 1024 + 76), `mc` and `nc` no larger than the padded matrix.
fn block_sizes(bl: Blocking, m: usize, n: usize, k: usize) -> (usize, usize, usize) {
    let kc = k.div_ceil(k.div_ceil(bl.kc));
    let nc = n.div_ceil(n.div_ceil(bl.nc)).div_ceil(bl.nr) * bl.nr;
    let mc = bl.mc.min(m.div_ceil(bl.mr) * bl.mr);
    (kc, mc, nc)
}

/// `C = A · B` spread over `pool`: per panel of B, the pool's threads first pack
/// its slivers, then take blocks of `mc` rows of C from a shared counter (so a
/// thread slowed by other work takes fewer blocks), each packing its own A block
/// and multiplying it by the one shared packed panel.
#[allow(clippy::too_many_arguments)]
fn parallel(
    isa: SgemmIsa,
    pool: &Pool,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    bbuf: &mut Vec<f32>,
) -> std::result::Result<(), String> {
    let bl = isa.blocking();
    let (mr, nr) = (bl.mr, bl.nr);
    let (kc, mc, nc) = block_sizes(bl, m, n, k);
    let bp = aligned(bbuf, kc * nc);
    for jc in (0..n).step_by(nc) {
        let ncur = nc.min(n - jc);
        let slivers = ncur.div_ceil(nr);
        for pc in (0..k).step_by(kc) {
            let kcur = kc.min(k - pc);
            {
                // Each sliver is its own `&mut` behind an uncontended lock.
                let parts: Vec<Mutex<&mut [f32]>> = bp[..slivers * nr * kcur]
                    .chunks_mut(nr * kcur)
                    .map(Mutex::new)
                    .collect();
                pool.run(slivers as u64, 1, &|r: Range<u64>| {
                    for s in r {
                        let j0 = s as usize * nr;
                        if let Some(part) = parts.get(s as usize) {
                            pack_b(b, n, pc, kcur, jc + j0, nr.min(ncur - j0), nr, &mut part.lock());
                        }
                    }
                })?;
            }
            let panel: &[f32] = &bp[..slivers * nr * kcur];
            let blocks: Vec<Mutex<&mut [f32]>> = c.chunks_mut(mc * n).map(Mutex::new).collect();
            pool.run(blocks.len() as u64, 1, &|r: Range<u64>| {
                for ib in r {
                    let Some(cb) = blocks.get(ib as usize) else { continue };
                    let mut cb = cb.lock();
                    let ic = ib as usize * mc;
                    let mcur = cb.len() / n;
                    SCRATCH.with(|cell| {
                        let mut fresh = Vec::new();
                        let mut guard = cell.try_borrow_mut();
                        let abuf = match guard.as_mut() {
                            Ok(s) => &mut s.a,
                            Err(_) => &mut fresh,
                        };
                        let ap = aligned(abuf, kcur * mc);
                        pack_a(a, k, ic, mcur, pc, kcur, mr, ap);
                        let block = Block {
                            kcur,
                            mcur,
                            ncur,
                            ldc: n,
                            accumulate: pc > 0,
                        };
                        macro_block(isa, bl, block, ap, panel, &mut cb[jc..]);
                    });
                }
            })?;
        }
    }
    Ok(())
}

/// A parked pool of `threads` threads (the caller plus `threads − 1` workers) for
/// [`sgemm_host`], made on first use and kept for later calls.
fn host_pool(threads: usize) -> Option<Arc<Pool>> {
    static POOLS: Mutex<Vec<(usize, Arc<Pool>)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock();
    if let Some((_, p)) = pools.iter().find(|(t, _)| *t == threads) {
        return Some(p.clone());
    }
    let p = Arc::new(Pool::new(threads).ok()?);
    pools.push((threads, p.clone()));
    Some(p)
}

/// One packed A block times one packed B panel.
#[derive(Clone, Copy)]
struct Block {
    kcur: usize,
    mcur: usize,
    ncur: usize,
    ldc: usize,
    accumulate: bool,
}

/// `C block (+)= packed A block · packed B panel`: the two inner loops. `c` starts
/// at the block's first element, rows `ldc` apart.
fn macro_block(isa: SgemmIsa, bl: Blocking, blk: Block, ap: &[f32], bp: &[f32], c: &mut [f32]) {
    let (mr, nr, kcur) = (bl.mr, bl.nr, blk.kcur);
    for jr in (0..blk.ncur).step_by(nr) {
        let cols = nr.min(blk.ncur - jr);
        let bs = &bp[jr * kcur..(jr + nr) * kcur];
        for ir in (0..blk.mcur).step_by(mr) {
            let rows = mr.min(blk.mcur - ir);
            let as_ = &ap[ir * kcur..(ir + mr) * kcur];
            let tile = Tile {
                rows,
                cols,
                ldc: blk.ldc,
                accumulate: blk.accumulate,
            };
            microkernel(isa, bl, kcur, as_, bs, &mut c[ir * blk.ldc + jr..], tile);
        }
    }
}

/// Pack `B[pc .. pc + kcur, jc .. jc + ncur]` into slivers of `nr` columns: sliver
/// `s` holds, for each `p`, the `nr` values `B[pc + p, jc + s·nr ..]`, zero-padded.
#[allow(clippy::too_many_arguments)]
fn pack_b(b: &[f32], n: usize, pc: usize, kcur: usize, jc: usize, ncur: usize, nr: usize, out: &mut [f32]) {
    for (s, j0) in (0..ncur).step_by(nr).enumerate() {
        let w = nr.min(ncur - j0);
        let sliver = &mut out[s * nr * kcur..(s + 1) * nr * kcur];
        for (p, dst) in sliver.chunks_exact_mut(nr).enumerate() {
            let src = (pc + p) * n + jc + j0;
            dst[..w].copy_from_slice(&b[src..src + w]);
            dst[w..].fill(0.0);
        }
    }
}

/// Pack `A[ic .. ic + mcur, pc .. pc + kcur]` into slivers of `mr` rows: sliver
/// `s` holds, for each `p`, the `mr` values `A[ic + s·mr .., pc + p]`, zero-padded.
#[allow(clippy::too_many_arguments)]
fn pack_a(a: &[f32], k: usize, ic: usize, mcur: usize, pc: usize, kcur: usize, mr: usize, out: &mut [f32]) {
    for (s, i0) in (0..mcur).step_by(mr).enumerate() {
        let h = mr.min(mcur - i0);
        let sliver = &mut out[s * mr * kcur..(s + 1) * mr * kcur];
        for r in 0..mr {
            if r < h {
                let src = &a[(ic + i0 + r) * k + pc..(ic + i0 + r) * k + pc + kcur];
                for (p, v) in src.iter().enumerate() {
                    sliver[p * mr + r] = *v;
                }
            } else {
                for p in 0..kcur {
                    sliver[p * mr + r] = 0.0;
                }
            }
        }
    }
}

/// Where a microkernel's result goes: the valid `rows × cols` of the `mr × nr`
/// block, rows `ldc` apart; added to C (`accumulate`) or stored.
#[derive(Clone, Copy)]
struct Tile {
    rows: usize,
    cols: usize,
    ldc: usize,
    accumulate: bool,
}

/// One `mr × nr` block: `c (+)= a_sliver · b_sliver` over `kc` steps. `a` holds at
/// least `kc · mr` floats, `b` at least `kc · nr`, `c` the tile's rows starting at
/// its first element. Bounds are checked here, once per tile.
fn microkernel(isa: SgemmIsa, bl: Blocking, kc: usize, a: &[f32], b: &[f32], c: &mut [f32], t: Tile) {
    let (mr, nr) = (bl.mr, bl.nr);
    assert!(a.len() >= kc * mr && b.len() >= kc * nr && t.rows <= mr && t.cols <= nr);
    let full = t.rows == mr && t.cols == nr && c.len() >= (mr - 1) * t.ldc + nr;
    if full {
        run_kernel(isa, kc, a, b, c, t.ldc, t.accumulate);
        return;
    }
    assert!(t.rows >= 1 && c.len() >= (t.rows - 1) * t.ldc + t.cols);
    let mut tmp = [0.0f32; MAX_TILE];
    run_kernel(isa, kc, a, b, &mut tmp[..mr * nr], nr, false);
    for r in 0..t.rows {
        let dst = &mut c[r * t.ldc..r * t.ldc + t.cols];
        let src = &tmp[r * nr..r * nr + t.cols];
        if t.accumulate {
            for (d, s) in dst.iter_mut().zip(src) {
                *d += *s;
            }
        } else {
            dst.copy_from_slice(src);
        }
    }
}

/// Dispatch a full `mr × nr` block to the instruction set's microkernel. The
/// caller checked: `a` ≥ `kc · mr`, `b` ≥ `kc · nr`, `c` ≥ `(mr − 1) · ldc + nr`
/// floats, with `mr × nr` the instruction set's block.
fn run_kernel(isa: SgemmIsa, kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, acc: bool) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        SgemmIsa::Avx512 if has_avx512() => {
            // SAFETY: avx512f is present (detected just above, so the
            // `#[target_feature]` function's instructions exist on this CPU); the
            // pointers cover what the 8 × 48 kernel touches: `a` ≥ kc·8 and `b` ≥
            // kc·48 floats read, `c` ≥ 7·ldc + 48 floats written (checked by the
            // caller, see above); `c` is a unique borrow, so nothing aliases it.
            unsafe { x86::avx512::<8, 3>(kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, acc) }
        }
        #[cfg(target_arch = "x86_64")]
        SgemmIsa::Avx2 if has_avx2_fma() => {
            // SAFETY: avx2 and fma are present (detected just above); `a` ≥ kc·6,
            // `b` ≥ kc·16 floats read, `c` ≥ 5·ldc + 16 floats written (checked
            // by the caller); `c` is a unique borrow.
            unsafe { x86::avx2::<6, 2>(kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, acc) }
        }
        SgemmIsa::Avx512 => portable::<8, 48>(kc, a, b, c, ldc, acc),
        SgemmIsa::Avx2 => portable::<6, 16>(kc, a, b, c, ldc, acc),
        SgemmIsa::Portable => portable::<4, 16>(kc, a, b, c, ldc, acc),
    }
}

/// Portable `MR × NR` microkernel over slices (the compiler vectorizes the `NR` loop).
fn portable<const MR: usize, const NR: usize>(
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = [[0.0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for (row, av) in acc.iter_mut().zip(ap) {
            for (x, bv) in row.iter_mut().zip(bp) {
                *x += av * bv;
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let dst = &mut c[r * ldc..r * ldc + NR];
        if accumulate {
            for (d, s) in dst.iter_mut().zip(row) {
                *d += *s;
            }
        } else {
            dst.copy_from_slice(row);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// AVX-512 microkernel: `MR` rows × `NV` vectors of 16 columns.
    ///
    /// # Safety
    /// The CPU supports avx512f; `a` points to `kc · MR` readable floats, `b` to
    /// `kc · NV · 16`, and `c` to `(MR − 1) · ldc + NV · 16` writable floats that
    /// nothing else accesses during the call.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512<const MR: usize, const NV: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        let mut bv = [_mm512_setzero_ps(); NV];
        for p in 0..kc {
            for (j, v) in bv.iter_mut().enumerate() {
                // SAFETY: p < kc, j < NV: the offset stays inside the kc · NV · 16
                // floats of `b`.
                let at = unsafe { b.add((p * NV + j) * 16) };
                // SAFETY: `at` and the 15 floats after it lie in `b` (above).
                *v = unsafe { _mm512_loadu_ps(at) };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                // SAFETY: p < kc, i < MR: the offset stays inside the kc · MR floats of `a`.
                let at = unsafe { a.add(p * MR + i) };
                // SAFETY: `at` points to a readable float of `a` (above).
                let av = _mm512_set1_ps(unsafe { *at });
                for (x, v) in row.iter_mut().zip(&bv) {
                    *x = _mm512_fmadd_ps(av, *v, *x);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, x) in row.iter().enumerate() {
                // SAFETY: i < MR, j < NV: inside the (MR − 1) · ldc + NV · 16 floats of `c`.
                let at = unsafe { c.add(i * ldc + j * 16) };
                let v = if accumulate {
                    // SAFETY: `at` and the 15 floats after it lie in `c` (above).
                    _mm512_add_ps(*x, unsafe { _mm512_loadu_ps(at) })
                } else {
                    *x
                };
                // SAFETY: as above; `c` is ours alone during the call.
                unsafe { _mm512_storeu_ps(at, v) };
            }
        }
    }

    /// AVX2 + FMA microkernel: `MR` rows × `NV` vectors of 8 columns.
    ///
    /// # Safety
    /// The CPU supports avx2 and fma; `a` points to `kc · MR` readable floats, `b`
    /// to `kc · NV · 8`, and `c` to `(MR − 1) · ldc + NV · 8` writable floats that
    /// nothing else accesses during the call.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2<const MR: usize, const NV: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); NV]; MR];
        let mut bv = [_mm256_setzero_ps(); NV];
        for p in 0..kc {
            for (j, v) in bv.iter_mut().enumerate() {
                // SAFETY: p < kc, j < NV: the offset stays inside the kc · NV · 8
                // floats of `b`.
                let at = unsafe { b.add((p * NV + j) * 8) };
                // SAFETY: `at` and the 7 floats after it lie in `b` (above).
                *v = unsafe { _mm256_loadu_ps(at) };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                // SAFETY: p < kc, i < MR: the offset stays inside the kc · MR floats of `a`.
                let at = unsafe { a.add(p * MR + i) };
                // SAFETY: `at` points to a readable float of `a` (above).
                let av = _mm256_set1_ps(unsafe { *at });
                for (x, v) in row.iter_mut().zip(&bv) {
                    *x = _mm256_fmadd_ps(av, *v, *x);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, x) in row.iter().enumerate() {
                // SAFETY: i < MR, j < NV: inside the (MR − 1) · ldc + NV · 8 floats of `c`.
                let at = unsafe { c.add(i * ldc + j * 8) };
                let v = if accumulate {
                    // SAFETY: `at` and the 7 floats after it lie in `c` (above).
                    _mm256_add_ps(*x, unsafe { _mm256_loadu_ps(at) })
                } else {
                    *x
                };
                // SAFETY: as above; `c` is ours alone during the call.
                unsafe { _mm256_storeu_ps(at, v) };
            }
        }
    }
}

/// `C = A · B` in row-major f32 on the host CPU with the packed microkernel, on
/// `threads` threads (0: every core [`std::thread::available_parallelism`]
/// reports). `a` is `m × k`, `b` is `k × n`, `c` is `m × n`. With several threads,
/// each panel of B is packed once by all of them together and blocks of rows of C
/// are handed out dynamically; the threads are a pool made on the first call with
/// that thread count and parked between calls.
///
/// Errors if a slice's length differs from its matrix's size.
pub fn sgemm_host(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) -> Result<()> {
    sgemm_host_isa(SgemmIsa::detect(), m, n, k, a, b, c, threads)
}

/// [`sgemm_host`] with a given instruction set (for tests and benchmarks); one the
/// CPU lacks is an error.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_host_isa(
    isa: SgemmIsa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    threads: usize,
) -> Result<()> {
    if !isa.available() {
        return Err(Error::InvalidInput(format!(
            "SGEMM instruction set {} is not supported by this CPU",
            isa.name()
        )));
    }
    let size = |r: usize, s: usize| {
        r.checked_mul(s)
            .ok_or_else(|| Error::InvalidInput(format!("sgemm: {r} × {s} overflows")))
    };
    for (what, len, want) in [
        ("a (m × k)", a.len(), size(m, k)?),
        ("b (k × n)", b.len(), size(k, n)?),
        ("c (m × n)", c.len(), size(m, n)?),
    ] {
        if len != want {
            return Err(Error::InvalidInput(format!(
                "sgemm: {what} holds {len} floats, expected {want} (m = {m}, n = {n}, k = {k})"
            )));
        }
    }
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |t| t.get())
    } else {
        threads
    };
    if m == 0 || n == 0 || k == 0 {
        c.fill(0.0);
        return Ok(());
    }
    let pool = if threads > 1 { host_pool(threads) } else { None };
    let Some(pool) = pool else {
        // One thread (or no pool could be started): run on the caller.
        sgemm_serial_isa(isa, m, n, k, a, b, c, false);
        return Ok(());
    };
    let mut run = |bbuf: &mut Vec<f32>| parallel(isa, &pool, m, n, k, a, b, c, bbuf);
    // The shared panel lives apart from `SCRATCH`, which the calling thread uses
    // for its A blocks while it takes part in the pool's jobs.
    let outcome = PANEL.with(|cell| match cell.try_borrow_mut() {
        Ok(mut p) => run(&mut p),
        Err(_) => run(&mut Vec::new()),
    });
    outcome.map_err(|message| Error::KernelPanic {
        kernel: "sgemm_host".to_string(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for p in 0..k {
                let av = a[i * k + p] as f64;
                for j in 0..n {
                    c[i * n + j] += av * b[p * n + j] as f64;
                }
            }
        }
        c
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2001) as f32 / 1000.0 - 1.0 + 1e-3
            })
            .collect()
    }

    #[test]
    fn every_isa_matches_the_reference_on_odd_sizes() {
        for isa in [SgemmIsa::Avx512, SgemmIsa::Avx2, SgemmIsa::Portable] {
            if !isa.available() {
                println!("SKIP {}: not on this CPU", isa.name());
                continue;
            }
            for &(m, n, k) in &[(1, 1, 1), (17, 33, 65), (100, 70, 130), (9, 49, 300), (200, 97, 513)] {
                for threads in [1, 2, 3] {
                    let a = data(m * k, 1);
                    let b = data(k * n, 2);
                    let mut c = vec![f32::NAN; m * n];
                    sgemm_host_isa(isa, m, n, k, &a, &b, &mut c, threads).expect("sgemm");
                    let r = reference(m, n, k, &a, &b);
                    let num: f64 = c.iter().zip(&r).map(|(x, y)| (*x as f64 - y).powi(2)).sum();
                    let den: f64 = r.iter().map(|y| y * y).sum();
                    let err = (num / den).sqrt();
                    assert!(
                        err < 1e-5,
                        "{} {m}×{n}×{k} on {threads} threads: error {err}",
                        isa.name()
                    );
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let mut c = vec![0.0; 4];
        assert!(sgemm_host(2, 2, 2, &[0.0; 3], &[0.0; 4], &mut c, 1).is_err());
        assert!(sgemm_host(2, 2, 2, &[0.0; 4], &[0.0; 4], &mut c[..3], 1).is_err());
        assert!(sgemm_host(2, 2, 0, &[], &[], &mut c, 1).is_ok());
        assert_eq!(c, vec![0.0; 4]);
    }
}
