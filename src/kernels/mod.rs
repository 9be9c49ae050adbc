//! The built-in kernels: device sources from `kernels/` plus their Rust CPU versions.
//!
//! Each function returns a ready [`Kernel`](crate::Kernel) whose CUDA and OpenCL sources come from
//! the catalogue that `build.rs` checked and embedded, and whose CPU version is in
//! the submodule of the same name. All follow the splittable convention
//! (`Offset`/`Count` last).

mod catalogue {
    include!(concat!(env!("OUT_DIR"), "/catalogue.rs"));
}
mod calib;
mod gemm;
mod gemm_tile;
mod jacobi;
mod nbody;
mod nbody_kdk;
mod noop;
mod reduce;
mod sgemm;
mod vector_add;

pub use calib::{FMA_CHAINS, fma_peak, stream_triad};
pub use catalogue::{CATALOGUE, KernelSources};
pub use gemm::{GemmRung, gemm, gemm_naive, gemm_packed, gemm_regblock, gemm_tiled};
pub use gemm_tile::gemm_tile;
pub use jacobi::{jacobi, jacobi_host, jacobi_task};
pub use nbody::{
    FLOPS_PER_INTERACTION, NBODY_CPU_ENV, NBODY_MAX_BLOCK, NBODY_TILE, NbodyCpuPath, nbody, nbody_block, nbody_host,
    nbody_launch_config, nbody_with_cpu_path,
};
pub use nbody_kdk::nbody_kdk;
pub use noop::noop;
pub use reduce::{reduce_atomic, reduce_tree};
pub use sgemm::{SgemmIsa, sgemm_host, sgemm_host_isa};
pub use vector_add::vector_add;

use crate::error::{Error, Result};

/// The embedded device sources of a kernel in `kernels/`.
pub fn sources(name: &str) -> Result<&'static KernelSources> {
    CATALOGUE.iter().find(|k| k.name == name).ok_or_else(|| {
        Error::InvalidInput(format!(
            "no kernel {name:?} in kernels/ (have: {})",
            CATALOGUE.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        ))
    })
}
