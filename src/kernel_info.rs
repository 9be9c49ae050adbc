//! Per-kernel limits on one device: [`Device::kernel_info`].

use crate::device::Device;
use crate::error::Result;
use crate::kernel::Kernel;

/// What one device says about one built kernel: how large a block it can launch
/// with and what it uses. See [`Device::kernel_info`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// Largest threads per block (work-items per group) this kernel can launch
    /// with on this device (CUDA `CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK`, limited
    /// by its registers; OpenCL `CL_KERNEL_WORK_GROUP_SIZE`; CPU: the device's
    /// block limit).
    pub max_block: u32,
    /// Registers per thread (CUDA `CU_FUNC_ATTRIBUTE_NUM_REGS`); `None` elsewhere.
    pub registers: Option<u32>,
    /// Work-group (shared/local) memory the kernel itself declares, in bytes,
    /// before any `Local` argument or dynamic shared memory (CUDA
    /// `CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES`, OpenCL `CL_KERNEL_LOCAL_MEM_SIZE`; 0
    /// on the CPU).
    pub local_bytes: u64,
    /// Per-thread private (spill / local) memory in bytes, where the driver says
    /// (CUDA `CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES`, OpenCL
    /// `CL_KERNEL_PRIVATE_MEM_SIZE`).
    pub private_bytes: Option<u64>,
    /// Block sizes should be a multiple of this (CUDA warp size, OpenCL
    /// `CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE`, CPU f32 SIMD lanes).
    pub block_multiple: u32,
    /// A good block size for this kernel: CUDA's occupancy calculator
    /// (`cuOccupancyMaxPotentialBlockSize`, no dynamic shared memory); elsewhere
    /// the largest multiple of `block_multiple` not above `min(max_block, 256)`.
    pub suggested_block: u32,
    /// Where the numbers come from (`"cuFuncGetAttribute + occupancy API"`,
    /// `"clGetKernelWorkGroupInfo"`, `"CPU backend"`).
    pub source: &'static str,
}

impl KernelInfo {
    /// `min(max_block, 256)` rounded down to a multiple of `multiple` (at least
    /// one multiple, or `max_block` when that is smaller).
    pub(crate) fn default_suggestion(max_block: u32, multiple: u32) -> u32 {
        let m = multiple.max(1);
        let cap = max_block.clamp(1, 256);
        if cap < m { cap } else { cap / m * m }
    }
}

impl Device {
    /// Build `kernel` for this device (if not built yet) and report its own
    /// limits here: the largest block it can launch with, its registers and
    /// local/private memory, and a suggested block size. Errors as
    /// [`Device::build`] (a backend the kernel does not implement is
    /// [`crate::Error::NoImplementation`]).
    pub fn kernel_info(&self, kernel: &Kernel) -> Result<KernelInfo> {
        self.build(kernel)?;
        self.inner.backend.kernel_info(kernel)
    }
}
