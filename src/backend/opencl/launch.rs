//! Kernel launch: arguments onto a kernel object, then `clEnqueueNDRangeKernel`
//! with global size `grid × block` and local size `block` per axis.
//!
//! Buffers are bound as their `cl_mem`, scalars by their native bytes, `Local`
//! arguments as `__local` memory of the requested size. Nothing is allocated per
//! launch. A kernel object is used only while its own mutex is held, from the
//! first `clSetKernelArg` to the return of `clEnqueueNDRangeKernel` (which
//! captures the argument values), since setting arguments is not thread-safe
//! on one kernel object.

use opencl3::command_queue::enqueue_nd_range_kernel;
use opencl3::error_codes::{
    CL_INVALID_ARG_INDEX, CL_INVALID_ARG_SIZE, CL_INVALID_ARG_VALUE, CL_INVALID_KERNEL_ARGS,
    CL_INVALID_WORK_GROUP_SIZE, CL_MISALIGNED_SUB_BUFFER_OFFSET,
};
use opencl3::kernel::{CL_KERNEL_WORK_GROUP_SIZE, get_kernel_work_group_data, set_kernel_arg};
use opencl3::memory::{CL_BUFFER_CREATE_TYPE_REGION, cl_buffer_region, create_sub_buffer};
use opencl3::types::{cl_command_queue, cl_event, cl_mem};

use super::OpenClBackend;
use super::error::{Op, code_name, map_cl_err};
use super::handles::{Event, KernelObj, SubBuffer};
use crate::backend::RawArg;
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::launch::LaunchConfig;

/// A sub-buffer of `parent` for bytes `offset..offset + len` (argument `i`).
fn sub_buffer(
    b: &OpenClBackend,
    kernel: &Kernel,
    i: usize,
    parent: cl_mem,
    offset: usize,
    len: usize,
) -> Result<SubBuffer> {
    let region = cl_buffer_region {
        origin: offset,
        size: len.max(1),
    };
    // SAFETY: `parent` is a live buffer (owned by the caller's buffer for the whole
    // call); the region was checked against the buffer by the public layer; flags 0
    // inherit the parent's; the region struct lives across the call.
    match unsafe { create_sub_buffer(parent, 0, CL_BUFFER_CREATE_TYPE_REGION, (&raw const region).cast()) } {
        // SAFETY: a successful clCreateSubBuffer returns one reference, ours.
        Ok(m) => Ok(unsafe { SubBuffer::from_raw(m) }),
        Err(CL_MISALIGNED_SUB_BUFFER_OFFSET) => Err(Error::InvalidInput(format!(
            "kernel {:?} argument {i}: a view starting at byte {offset} is not aligned to the base address \
             alignment of {} (CL_DEVICE_MEM_BASE_ADDR_ALIGN); start views there on OpenCL",
            kernel.name(),
            b.info.label()
        ))),
        Err(c) => Err(map_cl_err(
            c,
            &b.info,
            Op::new("clCreateSubBuffer").kernel(kernel.name()),
        )),
    }
}

/// A kernel object and the arguments last set on it: a launch with the same
/// value for a parameter skips its `clSetKernelArg` (kernel arguments are state
/// of the object, captured at each enqueue).
pub(crate) struct KernelSlot {
    /// The kernel object.
    pub obj: KernelObj,
    set: Vec<Option<ArgKey>>,
}

/// What was last set for one parameter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ArgKey {
    Mem(usize),
    Scalar([u8; 8], usize),
    Local(usize),
}

impl KernelSlot {
    pub(crate) fn new(obj: KernelObj) -> Self {
        KernelSlot { obj, set: Vec::new() }
    }
}

/// Set `args` on `k` and enqueue it on `q` after the events of `wait` (live
/// events of `q`'s context); returns the launch's event. The caller holds `k`'s
/// mutex: the arguments set here are captured by `clEnqueueNDRangeKernel`, so
/// the kernel object is free again once this returns.
pub(super) fn enqueue(
    b: &OpenClBackend,
    q: cl_command_queue,
    slot: &mut KernelSlot,
    kernel: &Kernel,
    cfg: &LaunchConfig,
    args: &[RawArg<'_>],
    wait: &[cl_event],
) -> Result<Event> {
    let info = &b.info;
    if slot.set.len() != args.len() {
        slot.set = vec![None; args.len()];
    }
    let k = &slot.obj;
    // Views become sub-buffers for this launch; released after the enqueue (the
    // enqueued command keeps what it uses alive until it completes).
    let mut subs: Vec<SubBuffer> = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let idx = i as u32;
        let key = match a {
            RawArg::Buffer { mem, offset, len, .. } => {
                let m = b.mem(*mem)?;
                if *offset == 0 && *len as u64 == m.byte_len_u64() {
                    ArgKey::Mem(m.raw() as usize)
                } else {
                    let sub = sub_buffer(b, kernel, i, m.raw(), *offset, *len)?;
                    let key = ArgKey::Mem(sub.raw() as usize);
                    subs.push(sub);
                    key
                }
            }
            RawArg::Scalar(s) => {
                let (bytes, n) = s.to_ne_bytes();
                ArgKey::Scalar(bytes, n)
            }
            RawArg::Local(bytes) => ArgKey::Local(*bytes),
        };
        // A sub-buffer's handle is new each launch and may reuse the address of a
        // freed buffer the kernel object remembers: never skip setting a view.
        let is_view = matches!(a, RawArg::Buffer { offset, len, mem, .. } if *offset != 0 || *len != mem.byte_len());
        if !is_view && slot.set[i] == Some(key) {
            continue;
        }
        slot.set[i] = None;
        let res = match (a, key) {
            (RawArg::Buffer { .. }, ArgKey::Mem(handle)) => {
                let m = handle as cl_mem;
                // SAFETY: the value is a live `cl_mem` (owned by the caller's buffer, which
                // outlives the launch); size and pointer describe that handle.
                unsafe { set_kernel_arg(k.raw(), idx, std::mem::size_of::<cl_mem>(), (&raw const m).cast()) }
            }
            (_, ArgKey::Scalar(bytes, n)) => {
                // SAFETY: `bytes[..n]` holds the scalar's native representation.
                unsafe { set_kernel_arg(k.raw(), idx, n, bytes.as_ptr().cast()) }
            }
            // SAFETY: a null value with a size declares `__local` memory of that size
            // (at least one byte: OpenCL rejects zero).
            (_, ArgKey::Local(bytes)) => unsafe { set_kernel_arg(k.raw(), idx, bytes.max(1), std::ptr::null()) },
            (_, ArgKey::Mem(_)) => Err(CL_INVALID_ARG_VALUE),
        };
        if let Err(c) = res {
            return Err(arg_error(b, kernel, i, a, c));
        }
        slot.set[i] = if is_view { None } else { Some(key) };
    }
    let g = cfg.grid.to_array();
    let l = cfg.block.to_array();
    let global = [
        g[0] as usize * l[0] as usize,
        g[1] as usize * l[1] as usize,
        g[2] as usize * l[2] as usize,
    ];
    let local = [l[0] as usize, l[1] as usize, l[2] as usize];
    // The dimension count the user gave (a 2-D launch of height 1 stays 2-D).
    let dims: u32 = cfg.work_dim();
    // SAFETY: every argument was set above; `global`/`local` have `dims` valid entries
    // (checked against the device's limits by the public layer); `wait` holds
    // `wait.len()` live events of this context (or is empty: a null list).
    let ev = unsafe {
        enqueue_nd_range_kernel(
            q,
            k.raw(),
            dims,
            std::ptr::null(),
            global.as_ptr(),
            local.as_ptr(),
            wait.len() as u32,
            if wait.is_empty() {
                std::ptr::null()
            } else {
                wait.as_ptr()
            },
        )
    };
    match ev {
        // SAFETY: a successful enqueue returns an event with one reference, ours.
        Ok(ev) => Ok(unsafe { Event::from_raw(ev) }),
        Err(CL_INVALID_KERNEL_ARGS) => Err(Error::InvalidInput(format!(
            "kernel {:?}: the OpenCL driver reports arguments that were not set ({}); the signature \
             and the OpenCL source disagree",
            kernel.name(),
            code_name(CL_INVALID_KERNEL_ARGS)
        ))),
        Err(CL_INVALID_WORK_GROUP_SIZE) => {
            let limit = get_kernel_work_group_data(k.raw(), b.device.0, CL_KERNEL_WORK_GROUP_SIZE)
                .ok()
                .and_then(|v| v.get(..std::mem::size_of::<usize>()).map(|s| s.to_vec()))
                .and_then(|v| v.try_into().ok())
                .map(usize::from_ne_bytes);
            Err(Error::LaunchConfig {
                kernel: kernel.name().to_string(),
                device: info.label(),
                why: format!(
                    "the driver rejected a block of {} work-items ({}); this kernel's maximum work-group size \
                     on this device is {} (CL_KERNEL_WORK_GROUP_SIZE), and a reqd_work_group_size attribute in \
                     its source, if any, must match the block exactly",
                    cfg.threads_per_block(),
                    code_name(CL_INVALID_WORK_GROUP_SIZE),
                    limit.map_or("unknown".to_string(), |l| l.to_string())
                ),
            })
        }
        Err(c) => Err(map_cl_err(
            c,
            info,
            Op::new("clEnqueueNDRangeKernel")
                .kernel(kernel.name())
                .bytes(buffer_bytes(b, args)),
        )),
    }
}

/// Bytes of device memory bound by `args` (for out-of-memory messages).
pub(super) fn buffer_bytes(b: &OpenClBackend, args: &[RawArg<'_>]) -> u64 {
    args.iter()
        .filter_map(|a| match a {
            RawArg::Buffer { mem, .. } => b.mem(*mem).ok().map(|m| m.byte_len_u64()),
            _ => None,
        })
        .sum()
}

fn arg_error(b: &OpenClBackend, kernel: &Kernel, i: usize, a: &RawArg<'_>, code: i32) -> Error {
    let param = kernel.params().get(i);
    let got = match a {
        RawArg::Buffer { .. } => "a buffer".to_string(),
        RawArg::Scalar(s) => format!("a {} scalar ({} bytes)", s.ty().name(), s.ty().size()),
        RawArg::Local(n) => format!("{n} bytes of local memory"),
    };
    match code {
        CL_INVALID_ARG_INDEX | CL_INVALID_ARG_SIZE | CL_INVALID_ARG_VALUE => Error::ArgType {
            kernel: kernel.name().to_string(),
            index: i,
            param: param.map_or("?", |p| p.name()).to_string(),
            expected: format!(
                "what the OpenCL source declares for parameter {i} (the driver refused it: {})",
                code_name(code)
            ),
            got,
        },
        _ => map_cl_err(code, &b.info, Op::new("clSetKernelArg").kernel(kernel.name())),
    }
}
