//! Kernel launches: parameter marshalling, per-function limit checks, the
//! shared-memory opt-in, and the timed `cuLaunchKernel`.
//!
//! Parameters are passed to `cuLaunchKernel` as an array of pointers to their
//! values: a buffer as its 64-bit device address, a scalar by value at its own
//! width (the driver reads as many bytes as the kernel's parameter has).
//! [`RawArg::Local`] parameters are **not** kernel parameters on CUDA: CUDA C
//! kernels reach dynamic shared memory through one `extern __shared__` array, so
//! each `Local` adds its bytes to the launch's dynamic shared memory (after
//! `LaunchConfig::shared_mem_bytes`) and the CUDA source must omit it from its
//! parameter list.
//!
//! Above the public checks (done against [`crate::DeviceInfo`]), a launch is also
//! checked against the entry function itself: its register-limited maximum
//! block size, and static plus dynamic shared memory against the device's opt-in
//! limit. Dynamic shared memory above what the function allows by default (48 KiB
//! less its static part) is allowed by setting
//! `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` on the function first.

use std::ffi::c_void;
use std::sync::atomic::Ordering;

use cudarc::driver::result;
use cudarc::driver::sys::CUfunction_attribute;

use super::CudaBackend;
use super::error::map_driver_err;
use super::module::Built;
use super::staging::elapsed_ns;
use crate::backend::{RawArg, Timing};
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::launch::LaunchConfig;

/// Arguments up to this count are marshalled without a heap allocation.
const FIXED_ARGS: usize = 16;
/// Shared memory per block (static plus dynamic) that needs no opt-in.
const DEFAULT_SHARED_BYTES: u64 = 48 << 10;

impl CudaBackend {
    /// Run `kernel` to completion; returns the device-clock kernel time.
    pub(crate) fn launch_kernel(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &[RawArg<'_>]) -> Result<Timing> {
        let label = &self.label;
        let (built, _) = self.modules.get_or_build(&self.ctx, kernel, label)?;

        // Marshal: one 8-byte value cell per kernel parameter.
        let mut fixed_vals = [0u64; FIXED_ARGS];
        let mut heap_vals: Vec<u64> = Vec::new();
        let many = args.len() > FIXED_ARGS;
        let mut n = 0usize;
        let mut dyn_smem = cfg.shared_mem_bytes as u64;
        for a in args {
            let v = match a {
                RawArg::Buffer { mem, .. } => self.cuda_mem(*mem)?.device_ptr(),
                RawArg::Scalar(s) => u64::from_ne_bytes(s.to_ne_bytes().0),
                RawArg::Local(bytes) => {
                    dyn_smem = dyn_smem.saturating_add(*bytes as u64);
                    continue;
                }
            };
            if many {
                heap_vals.push(v);
            } else {
                fixed_vals[n] = v;
            }
            n += 1;
        }
        let vals: &mut [u64] = if many { &mut heap_vals } else { &mut fixed_vals[..n] };
        let mut fixed_ptrs = [std::ptr::null_mut::<c_void>(); FIXED_ARGS];
        let mut heap_ptrs: Vec<*mut c_void> = Vec::new();
        let ptrs: &mut [*mut c_void] = if many {
            heap_ptrs.extend(vals.iter_mut().map(|v| v as *mut u64 as *mut c_void));
            &mut heap_ptrs
        } else {
            for (p, v) in fixed_ptrs.iter_mut().zip(vals.iter_mut()) {
                *p = v as *mut u64 as *mut c_void;
            }
            &mut fixed_ptrs[..n]
        };

        let dyn_smem = self.check_function(kernel, cfg, &built, dyn_smem)?;

        let lane = self.lanes.acquire();
        let fail = |e, op: &str| map_driver_err(e, label, op, kernel.name());
        // One bind for the whole launch; the calls below go to the driver directly.
        self.ctx.bind_to_thread().map_err(|e| fail(e, "cuCtxSetCurrent"))?;
        let stream = lane.stream.cu_stream();
        let (start, end) = (lane.start.cu_event(), lane.end.cu_event());
        // SAFETY: both events and the stream are live objects of this context (owned
        // by the lane, which this thread holds locked).
        unsafe { result::event::record(start, stream) }.map_err(|e| fail(e, "cuEventRecord"))?;
        // SAFETY: `built.func` is a live function of a loaded module of this context
        // (the module is kept alive by `built`); `ptrs` holds one pointer per kernel
        // parameter, each to an 8-byte cell holding the value in the parameter's
        // width (buffers: device addresses of live allocations of this device that
        // the caller borrows for the whole call; scalars: their bytes); the cells
        // outlive the call, which completes (synchronised below) before they drop.
        // Grid, block and shared memory were checked against the device and function.
        let launched = unsafe {
            result::launch_kernel(
                built.func.cu_function(),
                cfg.grid.to_array().into(),
                cfg.block.to_array().into(),
                dyn_smem,
                stream,
                ptrs,
            )
        };
        if let Err(e) = launched {
            return Err(fail(e, "cuLaunchKernel"));
        }
        // SAFETY: as for the first record; `end` then completes before `elapsed_ns`
        // reads both events.
        let done = unsafe { result::event::record(end, stream) }
            .and_then(|()| unsafe { result::event::synchronize(end) })
            .and_then(|()| elapsed_ns(&lane.start, &lane.end));
        match done {
            Ok(ns) => Ok(Timing::device(ns)),
            Err(e) => {
                // Make sure nothing still runs with these arguments before returning.
                let _ = lane.stream.synchronize();
                Err(fail(e, "kernel execution"))
            }
        }
    }

    /// Check the launch against the entry function's own limits and opt in to
    /// large dynamic shared memory; returns the dynamic shared bytes.
    fn check_function(&self, kernel: &Kernel, cfg: &LaunchConfig, built: &Built, dyn_smem: u64) -> Result<u32> {
        let err = |why: String| Error::LaunchConfig {
            kernel: kernel.name().to_string(),
            device: self.label.clone(),
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
