//! The CPU work-group model: a CPU implementation written per work-group.
//!
//! A kernel written for work-groups (a tiled GEMM, a tree reduction, a one-pass
//! atomic reduction) runs on the CPU device with the same [`LaunchConfig`] as on a
//! GPU. Give it with [`KernelBuilder::cpu_groups`](crate::KernelBuilder::cpu_groups):
//! the CPU backend calls the function once per work-group, spreading the groups
//! over its worker pool (groups are independent; each worker owns its local
//! memory, reused from one group to the next and never shared). The function sees:
//!
//! * the group's 3-D id and the block and grid sizes ([`GroupCtx::group_id`],
//!   [`GroupCtx::block`], [`GroupCtx::grid`]);
//! * its local memory: each [`Param::Local`] argument as a `&mut [T]` of the
//!   length the launch gives ([`GroupCtx::local`]), like the device's `Local`
//!   arguments (a static `LOCAL` array of the device source is a plain Rust array);
//! * read-only buffers whole and scalars ([`GroupCtx::input`], [`GroupCtx::scalar`]);
//! * written buffers as views of atomics ([`GroupCtx::atomic`]): `load`, `store`
//!   and `add` (`f32`, `u32`, `i32`), bounds-checked against the parameter's
//!   declared extent. Several groups may write the same elements (a one-pass
//!   reduction), so no group ever gets a `&mut` slice of an output.
//!
//! The group's items (work-items `0..threads`, x fastest, as
//! [`GroupCtx::item_coords`] unpacks them) run as **phases**: [`GroupCtx::phase`]
//! calls a closure once with the whole item range, and the closure loops over it
//! (a slice loop that vectorizes; no call per item). [`GroupCtx::barrier`]
//! separates phases: everything a phase wrote to local memory is seen by the
//! next. A device kernel
//!
//! ```text
//! scratch[t] = x[i];  BARRIER();  for (s = T/2; s > 0; s /= 2) { if (t < s) scratch[t] += scratch[t + s]; BARRIER(); }
//! ```
//!
//! becomes
//!
//! ```
//! # use offload::GroupCtx;
//! fn group_sum(g: &mut GroupCtx<'_>) {
//!     let x = g.input::<f32>(0);
//!     let out = g.atomic::<f32>(1);
//!     let scratch = g.local::<f32>(2);
//!     let base = g.group_linear() as usize * g.threads();
//!     g.phase(|items| {
//!         for t in items {
//!             scratch[t] = x.get(base + t).copied().unwrap_or(0.0);
//!         }
//!     });
//!     g.barrier();
//!     let mut s = g.threads() / 2;
//!     while s > 0 {
//!         g.phase(|items| {
//!             for t in items.start..items.end.min(s) {
//!                 scratch[t] += scratch[t + s];
//!             }
//!         });
//!         g.barrier();
//!         s /= 2;
//!     }
//!     out.add(0, scratch[0]);
//! }
//! ```
//!
//! Items that leave the kernel early (`if (t >= m) return;` on a device) are
//! declared with [`GroupCtx::retire`]; a later [`GroupCtx::barrier`] that they
//! would skip is an error, as it is undefined on a device. Errors in a
//! work-group kernel — a barrier skipped by some items, an atomic index outside the
//! declared extent, a parameter asked with the wrong kind or type — stop the
//! launch with [`crate::Error::KernelPanic`] naming the kernel and the limit; none is
//! undefined behaviour.
//!
//! The per-item form ([`crate::CpuCtx`], [`KernelBuilder::cpu`](crate::KernelBuilder::cpu))
//! stays the one for elementwise kernels: it hands out disjoint `&mut` output
//! slices and has no barriers. A kernel has one form or the other.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cpu_ctx::{CpuArg, CpuArgs, check_elem, input_slice, param_of, scalar_arg};
use crate::kernel::{Extent, Param, ScalarValue, Split};
use crate::launch::LaunchConfig;

/// A CPU work-group implementation (see [`crate::cpu_group`](self)).
pub type CpuGroupFn = dyn Fn(&mut GroupCtx<'_>) + Send + Sync;

/// Alignment of every local-memory argument in a worker's scratch memory.
const LOCAL_ALIGN: usize = 64;

/// One cache line of scratch memory (the unit local memory is allocated in).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; LOCAL_ALIGN]);

thread_local! {
    /// Each worker's local memory, kept from one launch to the next.
    static SCRATCH: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// What one work-group sees (see the [module docs](self)).
pub struct GroupCtx<'a> {
    kernel: &'a str,
    params: &'a [Param],
    args: &'a [CpuArg],
    extents: &'a [Extent],
    cfg: &'a LaunchConfig,
    group: [u32; 3],
    linear: u64,
    threads: usize,
    active: usize,
    barriers: u32,
    /// Byte offset in `scratch` of each parameter's local memory.
    local_at: &'a [usize],
    scratch: *mut u8,
    taken: Cell<u64>,
    _scratch: PhantomData<&'a mut [u8]>,
}

impl<'a> GroupCtx<'a> {
    /// Kernel name.
    pub fn kernel(&self) -> &str {
        self.kernel
    }
    /// The launch configuration.
    pub fn config(&self) -> &LaunchConfig {
        self.cfg
    }
    /// This group's 3-D id (`GROUP_ID(0..3)` on a device).
    pub fn group_id(&self) -> [u32; 3] {
        self.group
    }
    /// This group's linear id, x fastest: `x + gx × (y + gy × z)`.
    pub fn group_linear(&self) -> u64 {
        self.linear
    }
    /// The block (work-group) size in 3-D (`LOCAL_SIZE(0..3)`).
    pub fn block(&self) -> [u32; 3] {
        self.cfg.block.to_array()
    }
    /// The grid size in groups in 3-D (`NUM_GROUPS(0..3)`).
    pub fn grid(&self) -> [u32; 3] {
        self.cfg.grid.to_array()
    }
    /// Number of groups in the launch.
    pub fn groups(&self) -> u64 {
        self.cfg.blocks().unwrap_or(0)
    }
    /// Items (work-items) per group: the product of [`GroupCtx::block`].
    pub fn threads(&self) -> usize {
        self.threads
    }
    /// The 3-D local id of linear item `t` (x fastest).
    pub fn item_coords(&self, t: usize) -> [u32; 3] {
        let [bx, by, _] = self.block();
        let (bx, by) = (bx.max(1) as usize, by.max(1) as usize);
        [(t % bx) as u32, (t / bx % by) as u32, (t / bx / by) as u32]
    }
    /// The items still running: `0..threads` unless some were retired.
    pub fn items(&self) -> Range<usize> {
        0..self.active
    }

    /// Run one phase: `f` is called once with the running items' range and loops
    /// over it. What a phase writes to local memory is seen by later phases.
    pub fn phase<R>(&mut self, f: impl FnOnce(Range<usize>) -> R) -> R {
        f(0..self.active)
    }

    /// Items `from..` leave the kernel (a device `if (t >= from) return;`): later
    /// phases run only `0..from`, and a later barrier is an error.
    pub fn retire(&mut self, from: usize) {
        self.active = self.active.min(from);
    }

    /// A work-group barrier: every item of the group must reach it. Panics (the
    /// launch fails with [`crate::Error::KernelPanic`]) when some items were retired.
    pub fn barrier(&mut self) {
        self.barriers = self.barriers.saturating_add(1);
        if self.active < self.threads {
            panic!(
                "kernel {:?}: group {:?}: barrier {} is skipped by items {}..{} (retired earlier); \
                 every item of a work-group must reach every barrier",
                self.kernel, self.group, self.barriers, self.active, self.threads
            );
        }
    }

    /// A read-only buffer parameter, whole.
    pub fn input<T: bytemuck::Pod>(&self, i: usize) -> &'a [T] {
        input_slice(self.kernel, self.params, self.args, i)
    }

    /// A scalar parameter (also `Offset`/`Count`, which are `u32`).
    pub fn scalar<T: ScalarValue>(&self, i: usize) -> T {
        scalar_arg(self.kernel, self.args, i)
    }

    fn take(&self, i: usize) {
        let bit = 1u64 << (i % 64);
        if i >= 64 || self.taken.get() & bit != 0 {
            panic!(
                "kernel {:?}: local memory {i} taken twice in one group (or index ≥ 64)",
                self.kernel
            );
        }
        self.taken.set(self.taken.get() | bit);
    }

    /// The local memory of [`Param::Local`] parameter `i`: as many elements as the
    /// launch's `Arg::local(len)` gave, private to this group, contents left from
    /// an earlier group (like uninitialised device local memory). May be taken once
    /// per parameter per group.
    #[allow(clippy::mut_from_ref)]
    pub fn local<T: bytemuck::Pod>(&self, i: usize) -> &'a mut [T] {
        match (param_of(self.kernel, self.params, i), self.args.get(i).copied()) {
            (Param::Local { ty, .. }, Some(CpuArg::Local { bytes })) => {
                check_elem::<T>(self.kernel, i, ty);
                if std::mem::align_of::<T>() > LOCAL_ALIGN {
                    panic!("kernel {:?}: local element type over-aligned", self.kernel);
                }
                self.take(i);
                let at = self.local_at.get(i).copied().unwrap_or(0);
                let len = bytes / std::mem::size_of::<T>().max(1);
                // `scratch + at` starts a region of at least `bytes` bytes of this
                // worker's scratch memory, 64-byte aligned (`layout` rounds every
                // offset up to `LOCAL_ALIGN` and sized the scratch to hold them all),
                // initialised (zeroed when allocated, Pod values since), borrowed
                // exclusively by this group for `'a`; regions of different
                // parameters do not overlap, and each is handed out once (`take`).
                // SAFETY: in bounds, aligned for `T`, exclusive for `'a` (above).
                unsafe { std::slice::from_raw_parts_mut(self.scratch.add(at).cast::<T>(), len) }
            }
            (p, _) => panic!(
                "kernel {:?}: parameter {i} ({}) is not local memory",
                self.kernel,
                p.describe()
            ),
        }
    }

    /// A written buffer parameter as atomics, bounded by its declared extent (for
    /// an `Elementwise` output: the launch's items × `per_item`; see
    /// [`crate::Extent`]). Every group may take it.
    pub fn atomic<T: AtomicElem>(&self, i: usize) -> Atomics<'a, T> {
        match (param_of(self.kernel, self.params, i), self.args.get(i).copied()) {
            (
                Param::Buffer {
                    access,
                    ty,
                    split,
                    name,
                    ..
                },
                Some(CpuArg::Buf {
                    ptr,
                    bytes,
                    writable: true,
                }),
            ) if access.writes() => {
                check_elem::<T>(self.kernel, i, ty);
                if !(ptr as usize).is_multiple_of(std::mem::align_of::<AtomicU32>()) {
                    panic!(
                        "kernel {:?}: output {name:?} is not 4-byte aligned for atomics",
                        self.kernel
                    );
                }
                let len = (bytes / 4).min(self.declared(i, split));
                // `ptr` is the first byte of `bytes` bytes of a live allocation,
                // exclusively borrowed by the launching thread for the whole launch
                // (a written parameter), 4-byte aligned (checked above); `len × 4 ≤
                // bytes`. During the launch this memory is reached only through
                // these atomic views (a written parameter is never an `input`, and a
                // work-group kernel has no `&mut` outputs), so shared atomic access
                // from several workers is sound; `AtomicU32` has the size and bit
                // validity of `u32`, and any bits are a valid `f32`/`u32`/`i32`.
                // SAFETY: in bounds, aligned, only accessed atomically (above).
                let cells = unsafe { std::slice::from_raw_parts(ptr as *const AtomicU32, len) };
                Atomics {
                    cells,
                    kernel: self.kernel,
                    param: name,
                    _ty: PhantomData,
                }
            }
            (p, _) => panic!(
                "kernel {:?}: parameter {i} ({}) is not a written buffer",
                self.kernel,
                p.describe()
            ),
        }
    }

    /// Elements of buffer parameter `i` the signature declares for this launch.
    fn declared(&self, i: usize, split: &Split) -> usize {
        let value = |name: &str| {
            self.params
                .iter()
                .position(|p| p.name() == name)
                .and_then(|j| match self.args.get(j) {
                    Some(CpuArg::Scalar(s)) => s.as_count(),
                    _ => None,
                })
                .unwrap_or(0)
        };
        let count = self
            .params
            .iter()
            .position(|p| matches!(p, Param::Count))
            .map(|_| value("count"));
        let extent = self.extents.get(i).unwrap_or(&Extent::Items);
        let n: Option<u64> = match (extent, split) {
            (Extent::Items, Split::Elementwise { per_item }) => count
                .or_else(|| self.cfg.total_threads())
                .and_then(|c| c.checked_mul(*per_item as u64)),
            (Extent::Items, Split::Broadcast) => None,
            (Extent::Groups { per }, _) => self.cfg.blocks().and_then(|b| b.checked_mul(*per as u64)),
            (Extent::Scalars { params, per }, _) => params
                .iter()
                .try_fold(*per as u64, |acc, name| acc.checked_mul(value(name))),
        };
        n.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u32 {}
    impl Sealed for i32 {}
}

/// A 32-bit element type with atomic access on the CPU: `f32`, `u32`, `i32`.
pub trait AtomicElem: bytemuck::Pod + sealed::Sealed {
    /// Atomically add `v` to `cell` (integers wrap), returning the old value.
    #[doc(hidden)]
    fn fetch_add(cell: &AtomicU32, v: Self) -> Self;
}

impl AtomicElem for f32 {
    fn fetch_add(cell: &AtomicU32, v: f32) -> f32 {
        let mut old = cell.load(Ordering::Relaxed);
        loop {
            let new = (f32::from_bits(old) + v).to_bits();
            match cell.compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return f32::from_bits(old),
                Err(now) => old = now,
            }
        }
    }
}

impl AtomicElem for u32 {
    fn fetch_add(cell: &AtomicU32, v: u32) -> u32 {
        cell.fetch_add(v, Ordering::Relaxed)
    }
}

impl AtomicElem for i32 {
    fn fetch_add(cell: &AtomicU32, v: i32) -> i32 {
        // Two's complement: adding the bits wraps exactly like `i32` addition.
        cell.fetch_add(v as u32, Ordering::Relaxed) as i32
    }
}

/// A written buffer seen as atomics by a work-group (see [`GroupCtx::atomic`]).
/// Indexing outside the declared extent panics with the kernel, parameter and
/// limit (the launch fails with [`crate::Error::KernelPanic`]).
#[derive(Clone, Copy)]
pub struct Atomics<'a, T: AtomicElem> {
    cells: &'a [AtomicU32],
    kernel: &'a str,
    param: &'a str,
    _ty: PhantomData<T>,
}

impl<'a, T: AtomicElem> Atomics<'a, T> {
    /// Elements in the declared extent.
    pub fn len(&self) -> usize {
        self.cells.len()
    }
    /// Whether the extent is empty.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
    #[inline]
    fn cell(&self, i: usize) -> &'a AtomicU32 {
        match self.cells.get(i) {
            Some(c) => c,
            None => panic!(
                "kernel {:?}: element {i} of {:?} is outside its declared extent of {} elements",
                self.kernel,
                self.param,
                self.cells.len()
            ),
        }
    }
    /// Read element `i`.
    #[inline]
    pub fn load(&self, i: usize) -> T {
        bytemuck::cast(self.cell(i).load(Ordering::Relaxed))
    }
    /// Write element `i`.
    #[inline]
    pub fn store(&self, i: usize, v: T) {
        self.cell(i).store(bytemuck::cast(v), Ordering::Relaxed);
    }
    /// Write `vals` to elements `at..at + vals.len()` (one bounds check).
    #[inline]
    pub fn store_slice(&self, at: usize, vals: &[T]) {
        if vals.is_empty() {
            return;
        }
        let end = at.saturating_add(vals.len());
        if end > self.cells.len() {
            // Panics with the extent: `end - 1` is outside it.
            self.cell(end - 1);
        }
        for (c, v) in self.cells[at..end].iter().zip(vals) {
            c.store(bytemuck::cast(*v), Ordering::Relaxed);
        }
    }
    /// Atomically add `v` to element `i`, returning the old value.
    #[inline]
    pub fn add(&self, i: usize, v: T) -> T {
        T::fetch_add(self.cell(i), v)
    }
}

/// Byte offset of each `Local` argument in a worker's scratch memory, and the
/// scratch size in lines.
pub(crate) fn layout(args: &[CpuArg], at: &mut Vec<usize>) -> usize {
    let mut next = 0usize;
    for a in args {
        at.push(next);
        if let CpuArg::Local { bytes } = a {
            next = next.saturating_add(bytes.div_ceil(LOCAL_ALIGN) * LOCAL_ALIGN);
        }
    }
    next / LOCAL_ALIGN
}

/// Everything a launch's groups share.
pub(crate) struct GroupLaunch<'a> {
    pub(crate) f: &'a CpuGroupFn,
    pub(crate) kernel: &'a str,
    pub(crate) params: &'a [Param],
    pub(crate) extents: &'a [Extent],
    pub(crate) args: &'a CpuArgs<'a>,
    pub(crate) cfg: &'a LaunchConfig,
    pub(crate) local_at: &'a [usize],
    pub(crate) lines: usize,
}

impl GroupLaunch<'_> {
    /// Run groups `groups` (linear ids) on this thread, with this worker's scratch.
    pub(crate) fn run(&self, groups: Range<u64>) {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut v) => self.run_with(&mut v, groups),
            // A work-group kernel that launches another on the same thread: the
            // inner launch gets its own scratch.
            Err(_) => self.run_with(&mut Vec::new(), groups),
        });
    }

    fn run_with(&self, scratch: &mut Vec<Line>, groups: Range<u64>) {
        if scratch.len() < self.lines {
            scratch.resize(self.lines, Line([0; LOCAL_ALIGN]));
        }
        let base = scratch.as_mut_ptr().cast::<u8>();
        let [gx, gy, _] = self.cfg.grid.to_array();
        let (gx, gy) = (gx.max(1) as u64, gy.max(1) as u64);
        let threads = usize::try_from(self.cfg.threads_per_block()).unwrap_or(usize::MAX);
        for linear in groups {
            let group = [
                (linear % gx) as u32,
                (linear / gx % gy) as u32,
                (linear / gx / gy) as u32,
            ];
            let mut g = GroupCtx {
                kernel: self.kernel,
                params: self.params,
                args: self.args.0,
                extents: self.extents,
                cfg: self.cfg,
                group,
                linear,
                threads,
                active: threads,
                barriers: 0,
                local_at: self.local_at,
                scratch: base,
                taken: Cell::new(0),
                _scratch: PhantomData,
            };
            (self.f)(&mut g);
        }
    }
}
