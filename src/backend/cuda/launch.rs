//! Kernel launches: parameter marshalling, per-function limit checks, the
//! shared-memory opt-in, and `cuLaunchKernel` on a queue's stream.
//!
//! Parameters are passed to `cuLaunchKernel` as an array of pointers to their
//! values: a buffer as its 64-bit device address, a scalar by value at its own
//! width (the driver reads as many bytes as the kernel's parameter has).
//! [`RawArg::Local`] parameters are **not** kernel parameters on CUDA: CUDA C
//! kernels reach dynamic shared memory through one `extern __shared__` array, so
//! each `Local` adds its bytes to the launch's dynamic shared memory (after
//! `LaunchConfig::shared_mem_bytes`) and the CUDA source must omit it from its
//! parameter list. Portable kernels ([`crate::portable`]) are the exception: their
//! `LOCAL_PTR(T)` parameters receive the 32-bit byte offset of their slice of the
//! dynamic shared memory (each 16-byte aligned), so `Local` is a parameter on
//! every backend.
//!
//! Above the public checks (done against [`crate::DeviceInfo`]), a launch is also
//! checked against the entry function itself: its register-limited maximum
//! block size, and static plus dynamic shared memory against the device's opt-in
//! limit. Dynamic shared memory above what the function allows by default (48 KiB
//! less its static part) is allowed by setting
//! `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` on the function first.

use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cudarc::driver::sys::{CUfunction_attribute, CUstream};
use cudarc::driver::{DriverError, result};

use super::CudaBackend;
use super::error::map_driver_err;
use super::module::Built;
use crate::backend::RawArg;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::launch::LaunchConfig;

/// Arguments up to this count are marshalled without a heap allocation.
const FIXED_ARGS: usize = 16;
/// Shared memory per block (static plus dynamic) that needs no opt-in.
const DEFAULT_SHARED_BYTES: u64 = 48 << 10;

/// A launch checked and marshalled, ready to be enqueued on a stream.
pub(crate) struct Prepared {
    /// The entry function (its module stays loaded while this lives).
    pub(crate) built: Arc<Built>,
    fixed: [u64; FIXED_ARGS],
    heap: Vec<u64>,
    count: usize,
    grid: [u32; 3],
    block: [u32; 3],
    dyn_smem: u32,
}

impl Prepared {
    /// `cuLaunchKernel` on `stream` (the context current on this thread).
    ///
    /// Every buffer argument stays allocated until the launch has completed on the
    /// device (the public layer keeps it alive until the host has seen the
    /// command's event complete), and so does the function's module (the caller
    /// keeps [`Prepared::built`] until then).
    ///
    /// # Safety
    /// `stream` is a live stream of the function's context, current on this
    /// thread; buffers and module outlive the launch as described above.
    pub(crate) unsafe fn enqueue(&mut self, stream: CUstream) -> std::result::Result<(), DriverError> {
        let n = self.count;
        let vals: &mut [u64] = if n > FIXED_ARGS {
            &mut self.heap
        } else {
            &mut self.fixed[..n]
        };
        let mut fixed_ptrs = [std::ptr::null_mut::<c_void>(); FIXED_ARGS];
        let mut heap_ptrs: Vec<*mut c_void> = Vec::new();
        let ptrs: &mut [*mut c_void] = if n > FIXED_ARGS {
            heap_ptrs.extend(vals.iter_mut().map(|v| v as *mut u64 as *mut c_void));
            &mut heap_ptrs
        } else {
            for (p, v) in fixed_ptrs.iter_mut().zip(vals.iter_mut()) {
                *p = v as *mut u64 as *mut c_void;
            }
            &mut fixed_ptrs[..n]
        };
        // `built.func` is a live function of a loaded module of this context (kept
        // loaded by `built`); `ptrs` holds one pointer per kernel parameter, each to
        // an 8-byte cell holding the value in the parameter's width (buffers: device
        // addresses of live allocations of this device, kept alive by the caller
        // until the launch completes; scalars: their bytes). The driver copies the
        // parameter values during this call, so the cells need only outlive it.
        // SAFETY: live function and arguments as above; grid, block and shared
        // memory were checked against the device and the function.
        unsafe {
            result::launch_kernel(
                self.built.func.cu_function(),
                self.grid.into(),
                self.block.into(),
                self.dyn_smem,
                stream,
                ptrs,
            )
        }
    }
}

impl CudaBackend {
    /// Build (or fetch) the kernel, marshal its arguments and check the launch
    /// against the entry function's own limits.
    pub(crate) fn prepare_launch(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &[RawArg<'_>]) -> Result<Prepared> {
        let (built, _) = self.modules.get_or_build(&self.ctx, kernel, &self.label)?;

        // Marshal: one 8-byte value cell per kernel parameter.
        let mut fixed = [0u64; FIXED_ARGS];
        let mut heap: Vec<u64> = Vec::new();
        // A portable kernel (see `crate::portable`) takes each `Local` as a parameter
        // (its byte offset in dynamic shared memory, 16-byte aligned); a CUDA C
        // kernel omits it and reaches it through its own `extern __shared__`.
        let local_params = kernel
            .cuda_source()
            .is_some_and(|s| crate::portable::dialect_of(&s.code).is_some());
        let many = args
            .iter()
            .filter(|a| local_params || !matches!(a, RawArg::Local(_)))
            .count()
            > FIXED_ARGS;
        let mut n = 0usize;
        let mut dyn_smem = cfg.shared_mem_bytes as u64;
        for a in args {
            let v = match a {
                RawArg::Buffer { mem, offset, len, .. } => {
                    let m = self.cuda_mem(*mem)?;
                    if offset.checked_add(*len).is_none_or(|end| end > mem.byte_len()) {
                        return Err(Error::InvalidInput(format!(
                            "view {offset}..+{len} outside an allocation of {} bytes",
                            mem.byte_len()
                        )));
                    }
                    // A view: the device address of its first byte.
                    m.device_ptr() + *offset as u64
                }
                RawArg::Scalar(s) => u64::from_ne_bytes(s.to_ne_bytes().0),
                RawArg::Local(bytes) if local_params => {
                    let at = dyn_smem.div_ceil(16).saturating_mul(16);
                    dyn_smem = at.saturating_add(*bytes as u64);
                    // An offset past u32 is past any device's shared memory:
                    // `check_function` refuses the launch below.
                    u64::from(u32::try_from(at).unwrap_or(u32::MAX))
                }
                RawArg::Local(bytes) => {
                    dyn_smem = dyn_smem.saturating_add(*bytes as u64);
                    continue;
                }
            };
            if many {
                heap.push(v);
            } else {
                fixed[n] = v;
            }
            n += 1;
        }
        let dyn_smem = self.check_function(kernel, cfg, &built, dyn_smem)?;
        Ok(Prepared {
            built,
            fixed,
            heap,
            count: n,
            grid: cfg.grid.to_array(),
            block: cfg.block.to_array(),
            dyn_smem,
        })
    }

    /// Check the launch against the entry function's own limits and opt in to
    /// large dynamic shared memory; returns the dynamic shared bytes.
    fn check_function(&self, kernel: &Kernel, cfg: &LaunchConfig, built: &Built, dyn_smem: u64) -> Result<u32> {
        let err = |why: String| Error::LaunchConfig {
            kernel: kernel.name().to_string(),
            device: self.label.to_string(),
            why,
        };
        let tpb = cfg.threads_per_block();
        if tpb > built.max_threads as u64 {
            return Err(err(format!(
                "block of {tpb} threads exceeds this kernel's limit of {} threads per block on this device \
                 (set by its register use)",
                built.max_threads
            )));
        }
        let limit = self.info.local_mem_bytes;
        let total = dyn_smem.saturating_add(built.static_smem as u64);
        if total > limit {
            return Err(err(format!(
                "{dyn_smem} bytes of dynamic shared memory plus {} bytes of static shared memory exceed the \
                 device limit of {limit} bytes per block",
                built.static_smem
            )));
        }
        let dyn_smem = u32::try_from(dyn_smem).map_err(|_| err(format!("{dyn_smem} bytes of shared memory")))?;
        let allowed = built.dyn_smem_allowed.load(Ordering::Acquire) as u64;
        let full = limit - built.static_smem as u64;
        // Opt in when the function's reported allowance is too small, and also whenever
        // static plus dynamic memory exceeds the 48 KiB every function gets without
        // opting in: the reported default need not subtract the static part.
        if dyn_smem as u64 > allowed || (total > DEFAULT_SHARED_BYTES && allowed < full) {
            // Allow as much as the device permits next to the static part, once.
            let allow = full.min(i32::MAX as u64) as i32;
            self.ctx
                .bind_to_thread()
                .and_then(|()| {
                    built.func.set_attribute(
                        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                        allow,
                    )
                })
                .map_err(|e| map_driver_err(e, &self.label, "cuFuncSetAttribute", kernel.name()))?;
            built.dyn_smem_allowed.fetch_max(allow as u32, Ordering::AcqRel);
        }
        Ok(dyn_smem)
    }
}

#[cfg(test)]
mod tests {
    use crate::kernel::Scalar;

    /// `cuLaunchKernel` reads each parameter's own width from the start of its cell:
    /// the first 4 or 8 bytes of the 8-byte cell must be the value's native bytes.
    #[test]
    fn scalar_cells_start_with_the_value_bytes() {
        let cases: [(Scalar, Vec<u8>); 6] = [
            (Scalar::I32(-7), (-7i32).to_ne_bytes().to_vec()),
            (Scalar::U32(4_000_000_000), 4_000_000_000u32.to_ne_bytes().to_vec()),
            (Scalar::F32(3.5), 3.5f32.to_ne_bytes().to_vec()),
            (Scalar::I64(i64::MIN + 4096), (i64::MIN + 4096).to_ne_bytes().to_vec()),
            (Scalar::U64(u64::MAX - 4095), (u64::MAX - 4095).to_ne_bytes().to_vec()),
            (Scalar::F64(1.25e300), 1.25e300f64.to_ne_bytes().to_vec()),
        ];
        for (s, want) in cases {
            let (bytes, n) = s.to_ne_bytes();
            assert_eq!(n, want.len(), "{s:?}");
            // The cell as `launch_kernel` builds it, read back as the driver does.
            let cell = u64::from_ne_bytes(bytes);
            let seen = cell.to_ne_bytes();
            assert_eq!(&seen[..n], &want[..], "{s:?}");
            if n == 4 {
                assert_eq!(&seen[4..], &[0u8; 4], "{s:?}: the unused half is zero");
            }
        }
    }
}
