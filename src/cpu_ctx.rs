//! What a CPU kernel implementation sees: its arguments and a range of blocks.
//!
//! The CPU backend calls a kernel's Rust function once per contiguous range of
//! blocks (many blocks per call, so the inner loop is long and vectorizes). The
//! items of that call are the linear thread ids `blocks.start × threads_per_block
//! .. blocks.end × threads_per_block`; calls that run concurrently always get
//! disjoint item ranges.
//!
//! Buffers are reached through [`CpuCtx::input`] (read-only parameters: the whole
//! buffer) and [`CpuCtx::output`] (written parameters: only this call's items, so
//! concurrent calls never alias). The layout of an output (elements per item)
//! comes from the kernel's signature, never from the caller, so two calls can
//! never be handed overlapping elements. Asking for the wrong parameter kind or
//! element type panics; the backend catches the panic and reports
//! [`crate::Error::KernelPanic`].

use std::cell::Cell;
use std::ops::Range;

use crate::kernel::{Param, Scalar, ScalarValue, Split};
use crate::launch::LaunchConfig;

/// One resolved argument of a CPU launch.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CpuArg {
    /// Host memory owned by a CPU buffer.
    Buf {
        ptr: *mut u8,
        bytes: usize,
        writable: bool,
    },
    Scalar(Scalar),
    /// Local memory of this many bytes per work-group.
    Local {
        bytes: usize,
    },
}

/// A slice of resolved arguments, shared by the workers of one launch.
pub(crate) struct CpuArgs<'a>(pub(crate) &'a [CpuArg]);

// The raw pointers point at buffers that the launching thread borrows for
// the whole launch (shared borrows for read buffers, exclusive for written ones).
// Workers only read through read-buffer pointers and only write disjoint item
// ranges through written-buffer pointers (enforced by `CpuCtx::output`).
// SAFETY: workers only read shared buffers and write disjoint ranges, as above.
unsafe impl Sync for CpuArgs<'_> {}
// SAFETY: as above; the pointers are not tied to a thread.
unsafe impl Send for CpuArgs<'_> {}

/// The context passed to a CPU kernel function.
pub struct CpuCtx<'a> {
    kernel: &'a str,
    params: &'a [Param],
    args: &'a [CpuArg],
    blocks: Range<u64>,
    cfg: &'a LaunchConfig,
    borrowed: Cell<u64>,
}

impl<'a> CpuCtx<'a> {
    pub(crate) fn new(
        kernel: &'a str,
        params: &'a [Param],
        args: &'a CpuArgs<'a>,
        blocks: Range<u64>,
        cfg: &'a LaunchConfig,
    ) -> Self {
        CpuCtx {
            kernel,
            params,
            args: args.0,
            blocks,
            cfg,
            borrowed: Cell::new(0),
        }
    }

    /// Kernel name.
    pub fn kernel(&self) -> &str {
        self.kernel
    }

    /// Linear block indices of this call (row-major over the grid, x fastest).
    pub fn blocks(&self) -> Range<u64> {
        self.blocks.clone()
    }

    /// The launch configuration.
    pub fn config(&self) -> &LaunchConfig {
        self.cfg
    }

    /// Linear thread ids (items) of this call.
    pub fn items(&self) -> Range<usize> {
        // The public layer checked that grid × block fits in 64 bits.
        let tpb = self.cfg.threads_per_block();
        let at = |b: u64| usize::try_from(b.saturating_mul(tpb)).unwrap_or(usize::MAX);
        at(self.blocks.start)..at(self.blocks.end)
    }

    /// This call's items that are below `n` (for kernels whose grid overshoots).
    pub fn items_below(&self, n: usize) -> Range<usize> {
        let r = self.items();
        r.start.min(n)..r.end.min(n)
    }

    fn param_kind(&self, i: usize) -> &Param {
        param_of(self.kernel, self.params, i)
    }

    /// A read-only buffer parameter, whole.
    pub fn input<T: bytemuck::Pod>(&self, i: usize) -> &'a [T] {
        input_slice(self.kernel, self.params, self.args, i)
    }

    /// A written buffer parameter: only the elements owned by this call's items,
    /// `items.start × per_item .. items.end × per_item` (clipped to the buffer),
    /// where `per_item` is the parameter's [`crate::Split::Elementwise`] layout.
    /// Index 0 of the returned slice is item `items().start`. May be taken once per
    /// parameter per call.
    #[allow(clippy::mut_from_ref)]
    pub fn output<T: bytemuck::Pod>(&self, i: usize) -> &'a mut [T] {
        match (self.param_kind(i), self.args.get(i).copied()) {
            (
                Param::Buffer {
                    access,
                    ty,
                    split: Split::Elementwise { per_item },
                    ..
                },
                Some(CpuArg::Buf {
                    ptr,
                    bytes,
                    writable: true,
                }),
            ) if access.writes() => {
                check_elem::<T>(self.kernel, i, ty);
                let per_item = *per_item;
                let bit = 1u64 << (i % 64);
                if self.borrowed.get() & bit != 0 || i >= 64 {
                    panic!(
                        "kernel {:?}: output {i} taken twice in one call (or index ≥ 64)",
                        self.kernel
                    );
                }
                self.borrowed.set(self.borrowed.get() | bit);
                let size = std::mem::size_of::<T>();
                let len = bytes / size.max(1);
                let r = self.items();
                let start = r.start.saturating_mul(per_item).min(len);
                let end = r.end.saturating_mul(per_item).min(len);
                // The allocation is exclusively borrowed by the launching
                // thread for the whole launch; concurrent calls get disjoint item
                // ranges and the same `per_item` (from the signature), hence disjoint
                // element ranges, and this call hands the range out at most once
                // (bitmask above). Alignment: the buffer was allocated for `T`
                // (checked above), so `ptr + start * size` is aligned for `T`.
                // SAFETY: in bounds, aligned for `T`, disjoint from every other call's range (above).
                unsafe { std::slice::from_raw_parts_mut((ptr as *mut T).add(start), end - start) }
            }
            (p, _) => panic!(
                "kernel {:?}: parameter {i} ({}) is not a written buffer",
                self.kernel,
                p.describe()
            ),
        }
    }

    /// A scalar parameter (also `Offset`/`Count`, which are `u32`).
    pub fn scalar<T: ScalarValue>(&self, i: usize) -> T {
        scalar_arg(self.kernel, self.args, i)
    }

    fn find(&self, want: fn(&Param) -> bool) -> Option<u32> {
        let i = self.params.iter().position(want)?;
        match self.args.get(i) {
            Some(CpuArg::Scalar(Scalar::U32(v))) => Some(*v),
            _ => None,
        }
    }

    /// The `Offset` argument (0 when the kernel has none).
    pub fn offset(&self) -> usize {
        self.find(|p| matches!(p, Param::Offset)).unwrap_or(0) as usize
    }

    /// The `Count` argument (`usize::MAX` when the kernel has none).
    pub fn count(&self) -> usize {
        self.find(|p| matches!(p, Param::Count))
            .map_or(usize::MAX, |c| c as usize)
    }
}

/// Parameter `i` of `params`, or a panic naming the kernel.
pub(crate) fn param_of<'p>(kernel: &str, params: &'p [Param], i: usize) -> &'p Param {
    match params.get(i) {
        Some(p) => p,
        None => panic!("kernel {kernel:?} has no parameter {i}"),
    }
}

/// Panic unless `ty` is `T`.
pub(crate) fn check_elem<T: bytemuck::Pod>(kernel: &str, i: usize, ty: &crate::kernel::ElemType) {
    if ty.id != std::any::TypeId::of::<T>() {
        panic!(
            "kernel {kernel:?}: parameter {i} holds {}, asked as {}",
            ty.name,
            std::any::type_name::<T>()
        );
    }
}

/// Read-only buffer parameter `i`, whole (panics on a wrong kind or type).
pub(crate) fn input_slice<'a, T: bytemuck::Pod>(
    kernel: &str,
    params: &[Param],
    args: &'a [CpuArg],
    i: usize,
) -> &'a [T] {
    match (param_of(kernel, params, i), args.get(i).copied()) {
        (
            Param::Buffer {
                access: crate::kernel::Access::Read,
                ty,
                ..
            },
            Some(CpuArg::Buf { ptr, bytes, .. }),
        ) => {
            check_elem::<T>(kernel, i, ty);
            let len = bytes / std::mem::size_of::<T>().max(1);
            // `ptr` is a live allocation of `bytes` bytes, aligned for `T`
            // (the buffer was allocated for this element type, checked above;
            // zero-length ones too), borrowed shared for the launch; nobody writes
            // it meanwhile (the public API holds `&Buffer`, and a read parameter
            // is never passed writable). Pod types accept any bit pattern.
            // SAFETY: live, aligned for `T`, unwritten during the launch (above).
            unsafe { std::slice::from_raw_parts(ptr as *const T, len) }
        }
        (p, _) => panic!(
            "kernel {kernel:?}: parameter {i} ({}) is not a read-only buffer",
            p.describe()
        ),
    }
}

/// Scalar argument `i` as `T` (panics on a wrong kind or type).
pub(crate) fn scalar_arg<T: ScalarValue>(kernel: &str, args: &[CpuArg], i: usize) -> T {
    match args.get(i) {
        Some(CpuArg::Scalar(s)) => match T::from_scalar(*s) {
            Some(v) => v,
            None => panic!(
                "kernel {kernel:?}: scalar {i} is {}, asked as {}",
                s.ty().name(),
                T::TYPE.name()
            ),
        },
        _ => panic!("kernel {kernel:?}: parameter {i} is not a scalar"),
    }
}
