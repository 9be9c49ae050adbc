//! Sums of f32 arrays written for work-groups: a local-memory tree reduction and a
//! one-pass atomic reduction. Each has one portable device source
//! (`kernels/reduce_tree.c`, `kernels/reduce_atomic.c`) and a CPU work-group version
//! ([`crate::cpu_group`]) that runs with the same [`crate::LaunchConfig`], group
//! by group, in the same order of additions per work-item.

use crate::cpu_group::GroupCtx;
use crate::error::Result;
use crate::kernel::{Extent, Kernel, Param, ScalarArgs};

/// Items of a phase handled at once by the atomic reduction's CPU version.
const LANE_CHUNK: usize = 64;

/// `reduce_tree(x, partial, scratch, n)`: each work-group writes the sum of its
/// grid-stride share of `x[0..n)` to `partial[group]` (extent: one per group),
/// reducing through `scratch` (launch with `Arg::local(threads per block)`). The
/// sum of `partial` is the sum of `x`.
pub fn reduce_tree() -> Result<Kernel> {
    let src = super::sources("reduce_tree")?;
    let builder = Kernel::builder("reduce_tree")
        .param(Param::input::<f32>("x").broadcast())
        .param(Param::output::<f32>("partial"))
        .param(Param::local::<f32>("scratch"))
        .param(Param::scalar::<u32>("n"))
        .extent_from("x", &["n"], 1)
        .extent("partial", Extent::Groups { per: 1 });
    // SAFETY: audited built-in source (kernels/reduce_tree.c): it reads x[i] only
    // for i < n (the checked extent), writes partial[g] only for its own linear group
    // g (extent: one per group) and touches scratch[0..threads per block) only.
    // A launch whose `scratch` is shorter than the block is the caller's
    // `Arg::local` length: the CPU version panics (KernelPanic) on it.
    let builder = unsafe { builder.cuda(src.cuda, "reduce_tree").opencl(src.opencl, "reduce_tree") };
    builder.cpu_groups(tree_group).build()
}

/// `reduce_atomic(x, total, n, lanes)`: every work-item adds the sum of its
/// grid-stride share of `x[0..n)` to `total[global id % lanes]` with a float
/// atomic add (extent of `total`: `lanes`, at least 1). One launch, no second pass:
/// the sum of `total` is the sum of `x` plus what `total` held.
pub fn reduce_atomic() -> Result<Kernel> {
    let src = super::sources("reduce_atomic")?;
    let builder = Kernel::builder("reduce_atomic")
        .param(Param::input::<f32>("x").broadcast())
        .param(Param::inout::<f32>("total"))
        .param(Param::scalar::<u32>("n"))
        .param(Param::scalar::<u32>("lanes"))
        .extent_from("x", &["n"], 1)
        .extent_from("total", &["lanes"], 1)
        .check_scalars(|args: &ScalarArgs<'_>| match args.value::<u32>("lanes") {
            Some(0) => Err("lanes must be at least 1".to_string()),
            _ => Ok(()),
        });
    // SAFETY: audited built-in source (kernels/reduce_atomic.c): it reads x[i] only
    // for i < n (the checked extent) and adds atomically to total[j] only for
    // j < lanes (the checked extent; lanes ≥ 1 is checked at launch).
    let builder = unsafe {
        builder
            .cuda(src.cuda, "reduce_atomic")
            .opencl(src.opencl, "reduce_atomic")
    };
    builder.cpu_groups(atomic_group).build()
}

/// The first item of this group and the number of items in the whole launch.
fn span(g: &GroupCtx<'_>) -> (usize, usize) {
    let bs = g.threads();
    let base = usize::try_from(g.group_linear())
        .unwrap_or(usize::MAX)
        .saturating_mul(bs);
    let all = usize::try_from(g.groups())
        .unwrap_or(usize::MAX)
        .saturating_mul(bs)
        .max(1);
    (base, all)
}

/// Add, for each item `t` of `items`, every `x[base + t + j·all]` below `n` to
/// `acc[t - items.start]` (in increasing `j`, as each device work-item does).
fn grid_stride_sums(x: &[f32], n: usize, base: usize, all: usize, items: std::ops::Range<usize>, acc: &mut [f32]) {
    let n = n.min(x.len());
    let mut start = base.saturating_add(items.start);
    while start < n {
        let end = start.saturating_add(items.len()).min(n);
        for (a, v) in acc.iter_mut().zip(&x[start..end]) {
            *a += *v;
        }
        start = match start.checked_add(all) {
            Some(s) => s,
            None => break,
        };
    }
}

/// CPU work-group version of `kernels/reduce_tree.c`.
fn tree_group(g: &mut GroupCtx<'_>) {
    let x = g.input::<f32>(0);
    let partial = g.atomic::<f32>(1);
    let scratch = g.local::<f32>(2);
    let n = g.scalar::<u32>(3) as usize;
    let bs = g.threads();
    if scratch.len() < bs {
        panic!(
            "kernel \"reduce_tree\": scratch holds {} elements, the block has {bs} items (launch with Arg::local({bs}))",
            scratch.len()
        );
    }
    let (base, all) = span(g);
    g.phase(|items| {
        let acc = &mut scratch[items.clone()];
        acc.fill(0.0);
        grid_stride_sums(x, n, base, all, items, acc);
    });
    g.barrier();
    let p = if bs == 0 { 0 } else { 1usize << bs.ilog2() };
    let fold = |g: &mut GroupCtx<'_>, scratch: &mut [f32], s: usize, upto: usize| {
        g.phase(|items| {
            let (lo, hi) = scratch.split_at_mut(s);
            let r = items.start.min(upto)..items.end.min(upto);
            for (a, b) in lo[r.clone()].iter_mut().zip(&hi[r]) {
                *a += *b;
            }
        });
        g.barrier();
    };
    fold(g, scratch, p, bs - p);
    let mut s = p / 2;
    while s > 0 {
        fold(g, scratch, s, s);
        s /= 2;
    }
    if bs > 0 {
        partial.store(usize::try_from(g.group_linear()).unwrap_or(usize::MAX), scratch[0]);
    }
}

/// CPU work-group version of `kernels/reduce_atomic.c`.
fn atomic_group(g: &mut GroupCtx<'_>) {
    let x = g.input::<f32>(0);
    let total = g.atomic::<f32>(1);
    let n = g.scalar::<u32>(2) as usize;
    let lanes = (g.scalar::<u32>(3) as usize).max(1);
    let (base, all) = span(g);
    g.phase(|items| {
        let mut t0 = items.start;
        while t0 < items.end {
            let t1 = (t0 + LANE_CHUNK).min(items.end);
            let mut acc = [0.0f32; LANE_CHUNK];
            grid_stride_sums(x, n, base, all, t0..t1, &mut acc[..t1 - t0]);
            for (t, a) in (t0..t1).zip(acc) {
                total.add((base + t) % lanes, a);
            }
            t0 = t1;
        }
    });
}
