//! Kernel builds: NVRTC compile, the on-disk PTX cache, and the per-device
//! module/function cache.
//!
//! A kernel's CUDA source is compiled by NVRTC for the device's own virtual
//! architecture (`--gpu-architecture=compute_XY` from its compute capability, or
//! the newest one NVRTC supports below it) plus the source's options. The PTX is
//! kept on disk (cache kind `ptx`, keyed by source, options, architecture and the
//! NVRTC version), so a second process skips NVRTC. The driver JIT-compiles the PTX
//! when loading the module; if the driver is older than NVRTC and rejects the PTX
//! version, the kernel is compiled once more to a CUBIN for the real `sm_XY`
//! (cache kind `cubin`), which older drivers of the same major version accept.
//!
//! Loaded modules and their entry functions are cached per device by
//! [`crate::Kernel::id`]; the entry's static shared memory and register-limited
//! maximum block size are read once here, for the launch checks.
//!
//! This module touches NVRTC (through [`crate::nvrtc`]), the cache directory and
//! `cuModuleLoadData`/`cuModuleGetFunction`/`cuFuncGetAttribute`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use cudarc::driver::sys::{CUfunction_attribute, CUresult};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, DriverError};
use cudarc::nvrtc::Ptx;
use parking_lot::{Mutex, RwLock};

use super::error::{describe, is_image_error, map_driver_err};
use crate::error::{Error, Result};
use crate::kernel::{Kernel, Source};
use crate::nvrtc::Output;

/// A loaded entry point and what the launch checks need to know about it.
pub(crate) struct Built {
    /// The function (keeps its module loaded).
    pub func: CudaFunction,
    /// Static `__shared__` bytes of the entry.
    pub static_smem: u32,
    /// Largest block this entry can launch with (register-limited).
    pub max_threads: u32,
    /// Dynamic shared memory allowed so far by `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`.
    pub dyn_smem_allowed: AtomicU32,
    _module: Arc<CudaModule>,
}

/// Per-device cache of built kernels.
pub(crate) struct ModuleCache {
    built: RwLock<HashMap<u64, Arc<Built>>>,
    /// Serialises builds so that two threads never compile the same kernel twice.
    building: Mutex<()>,
    /// Architecture number used for NVRTC (`90` for compute_90 / sm_90).
    arch: u32,
}

impl ModuleCache {
    /// A cache compiling for architecture `arch` (e.g. `90`).
    pub(crate) fn new(arch: u32) -> ModuleCache {
        ModuleCache {
            built: RwLock::new(HashMap::new()),
            building: Mutex::new(()),
            arch,
        }
    }

    /// The built kernel, if it is cached.
    pub(crate) fn get(&self, id: u64) -> Option<Arc<Built>> {
        self.built.read().get(&id).cloned()
    }

    /// Drop every module (teardown).
    pub(crate) fn clear(&self) {
        self.built.write().clear();
    }

    /// The built kernel, building it first if needed. Returns whether it was built now.
    pub(crate) fn get_or_build(
        &self,
        ctx: &Arc<CudaContext>,
        kernel: &Kernel,
        device: &str,
    ) -> Result<(Arc<Built>, bool)> {
        if let Some(b) = self.get(kernel.id()) {
            return Ok((b, false));
        }
        let _guard = self.building.lock();
        if let Some(b) = self.get(kernel.id()) {
            return Ok((b, false));
        }
        let source = kernel
            .cuda_source()
            .ok_or_else(|| kernel.no_implementation(crate::BackendKind::Cuda, device))?;
        let built = Arc::new(self.build(ctx, kernel.name(), source, device)?);
        self.built.write().insert(kernel.id(), built.clone());
        Ok((built, true))
    }

    fn build(&self, ctx: &Arc<CudaContext>, name: &str, source: &Source, device: &str) -> Result<Built> {
        let module = self.load(ctx, name, source, device)?;
        if source.entry.contains('\0') {
            return Err(entry_not_found(name, &source.entry, device));
        }
        let func = module.load_function(&source.entry).map_err(|e| match e.0 {
            CUresult::CUDA_ERROR_NOT_FOUND => entry_not_found(name, &source.entry, device),
            _ => map_driver_err(e, device, "cuModuleGetFunction", name),
        })?;
        let attr = |a: CUfunction_attribute| {
            func.get_attribute(a)
                .map(|v| v.max(0) as u32)
                .map_err(|e| map_driver_err(e, device, "cuFuncGetAttribute", name))
        };
        let static_smem = attr(CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?;
        let max_threads = attr(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?;
        let dyn_allowed = attr(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)?;
        Ok(Built {
            func,
            static_smem,
            max_threads,
            dyn_smem_allowed: AtomicU32::new(dyn_allowed),
            _module: module,
        })
    }

    /// Compile (or fetch from disk) and load the module, with the CUBIN fallback.
    fn load(&self, ctx: &Arc<CudaContext>, name: &str, source: &Source, device: &str) -> Result<Arc<CudaModule>> {
        let virt = format!("compute_{}", self.arch);
        let (ptx, from_disk) = self.ptx(source, name, device, &virt, true)?;
        match load_ptx(ctx, ptx) {
            Ok(m) => return Ok(m),
            Err(e) if from_disk && is_image_error(e) && e.0 != CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => {
                // A damaged cache entry: compile afresh.
                tracing::warn!(kernel = name, error = %describe(e), "cached PTX rejected; recompiling");
                let (ptx, _) = self.ptx(source, name, device, &virt, false)?;
                match load_ptx(ctx, ptx) {
                    Ok(m) => return Ok(m),
                    Err(e) if e.0 == CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => {}
                    Err(e) => return Err(map_driver_err(e, device, "cuModuleLoadData (PTX)", name)),
                }
            }
            Err(e) if e.0 == CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => {}
            Err(e) => return Err(map_driver_err(e, device, "cuModuleLoadData (PTX)", name)),
        }
        // The driver is older than NVRTC: a CUBIN for the real architecture needs no PTX JIT.
        tracing::info!(
            kernel = name,
            "driver rejects the PTX version; loading a CUBIN for sm_{}",
            self.arch
        );
        let real = format!("sm_{}", self.arch);
        let key = cache_key(source, &real, "cubin");
        let cubin = match crate::cache::read("cubin", &key).filter(|b| b.starts_with(b"\x7fELF")) {
            Some(b) => b,
            None => {
                let b = crate::nvrtc::compile_with(source, name, device, &real, Output::Cubin)?;
                crate::cache::write("cubin", &key, &b);
                b
            }
        };
        ctx.load_module(Ptx::from_binary(cubin))
            .map_err(|e| map_driver_err(e, device, "cuModuleLoadData (CUBIN)", name))
    }

    /// PTX text for `arch`, from the disk cache when `use_cache`; returns whether it came from disk.
    fn ptx(&self, source: &Source, name: &str, device: &str, arch: &str, use_cache: bool) -> Result<(String, bool)> {
        let key = cache_key(source, arch, "ptx");
        if use_cache
            && let Some(text) = crate::cache::read("ptx", &key)
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|t| valid_ptx(t, &source.entry))
        {
            return Ok((text, true));
        }
        let bytes = crate::nvrtc::compile_with(source, name, device, arch, Output::Ptx)?;
        let text = String::from_utf8(bytes).map_err(|_| Error::Build {
            kernel: name.to_string(),
            device: device.to_string(),
            log: "NVRTC returned PTX that is not UTF-8".into(),
        })?;
        crate::cache::write("ptx", &key, text.as_bytes());
        Ok((text, false))
    }
}

/// Load PTX text (already checked to hold no NUL byte).
fn load_ptx(ctx: &Arc<CudaContext>, ptx: String) -> std::result::Result<Arc<CudaModule>, DriverError> {
    if ptx.contains('\0') {
        // `load_module` would panic converting it to a C string.
        return Err(DriverError(CUresult::CUDA_ERROR_INVALID_PTX));
    }
    ctx.load_module(Ptx::from_src(ptx))
}

/// Whether cached text looks like PTX holding `entry` (and no NUL byte).
fn valid_ptx(text: &str, entry: &str) -> bool {
    !text.contains('\0') && text.contains(".target") && text.contains(&format!(".entry {entry}"))
}

/// Disk-cache key: source, options, architecture, output kind and NVRTC version.
fn cache_key(source: &Source, arch: &str, kind: &str) -> String {
    let version = crate::nvrtc::version().map_or_else(|_| "unknown".to_string(), |(a, b)| format!("{a}.{b}"));
    let options = source.options.join("\u{1f}");
    crate::cache::key(&[
        b"offload-nvrtc-v1",
        kind.as_bytes(),
        source.code.as_bytes(),
        source.entry.as_bytes(),
        options.as_bytes(),
        arch.as_bytes(),
        version.as_bytes(),
    ])
}

fn entry_not_found(kernel: &str, entry: &str, device: &str) -> Error {
    Error::EntryNotFound {
        kernel: kernel.to_string(),
        entry: entry.to_string(),
        device: device.to_string(),
    }
}

/// The architecture to compile for: the device's own if NVRTC supports it, else
/// the newest supported one not above it.
pub(crate) fn choose_arch(cc: (u32, u32), supported: &[u32]) -> std::result::Result<u32, String> {
    let want = cc.0 * 10 + cc.1;
    if supported.is_empty() || supported.contains(&want) {
        return Ok(want);
    }
    supported.iter().copied().filter(|a| *a <= want).max().ok_or_else(|| {
        format!(
            "NVRTC supports architectures {:?}, none at or below the device's compute capability {}.{}",
            supported, cc.0, cc.1
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_choice() {
        assert_eq!(choose_arch((9, 0), &[75, 80, 86, 89, 90, 100]), Ok(90));
        assert_eq!(choose_arch((12, 1), &[75, 80, 90, 100, 120]), Ok(120));
        assert_eq!(choose_arch((8, 7), &[]), Ok(87));
        assert!(choose_arch((5, 0), &[75, 80]).is_err());
    }

    /// The on-disk PTX cache: a miss compiles and stores, a hit returns the same
    /// text, and a damaged entry is ignored (recompiled). Needs NVRTC, not a GPU.
    /// Uses the configured cache directory with a source no earlier run has cached.
    #[test]
    fn ptx_disk_cache_round_trip() {
        if let Err(why) = crate::nvrtc::available() {
            let required = std::env::var("OFFLOAD_REQUIRE").unwrap_or_default();
            assert!(
                !required.split(',').any(|r| r.trim() == "nvrtc"),
                "NVRTC required: {why}"
            );
            println!("SKIP nvrtc: {why}");
            return;
        }
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let source = Source {
            code: format!(
                "// {nonce} {}\nextern \"C\" __global__ void cached_k(float* x) {{ x[threadIdx.x] += 1.0f; }}",
                std::process::id()
            ),
            entry: "cached_k".into(),
            options: vec!["--use_fast_math".into()],
        };
        let cache = ModuleCache::new(80);
        let build = || {
            cache
                .ptx(&source, "cached_k", "test", "compute_80", true)
                .expect("compile")
        };
        let (first, from_disk) = build();
        assert!(!from_disk);
        assert!(valid_ptx(&first, "cached_k"), "{first}");
        // Another architecture or option set is another entry.
        let key = cache_key(&source, "compute_80", "ptx");
        assert_ne!(key, cache_key(&source, "compute_90", "ptx"));
        let mut other = source.clone();
        other.options.clear();
        assert_ne!(key, cache_key(&other, "compute_80", "ptx"));
        let Some(path) = crate::cache::entry_path("ptx", &key) else {
            println!("SKIP PTX disk cache: no cache directory (set OFFLOAD_CACHE_DIR or HOME)");
            return;
        };
        if !path.exists() {
            println!(
                "SKIP PTX disk cache: {} was not written (unwritable cache directory)",
                path.display()
            );
            return;
        }
        let (again, from_disk) = build();
        assert!(from_disk, "the second build must come from {}", path.display());
        assert_eq!(first, again);
        // A damaged entry is not used, and is replaced.
        std::fs::write(&path, b"garbage").expect("damage the entry");
        let (fresh, from_disk) = build();
        assert!(!from_disk);
        assert_eq!(fresh, first);
        assert_eq!(std::fs::read_to_string(&path).expect("rewritten"), first);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn ptx_check() {
        assert!(valid_ptx(".version 8.8\n.target sm_90\n.visible .entry noop(", "noop"));
        assert!(!valid_ptx(".target sm_90\n.visible .entry noop(", "vector_add"));
        assert!(!valid_ptx(".target sm_90\0.entry noop", "noop"));
    }
}
