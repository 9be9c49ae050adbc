//! Kernel builds: NVRTC compile, the on-disk PTX/CUBIN cache, and the per-device
//! module/function cache.
//!
//! A kernel's CUDA source is compiled by NVRTC for the device's own virtual
//! architecture (`--gpu-architecture=compute_XY` from its compute capability, or
//! the newest one NVRTC supports below it) plus the source's options. The PTX is
//! kept on disk (cache kind `ptx`), so a second process skips NVRTC. The driver
//! JIT-compiles the PTX when loading the module; if the driver is older than NVRTC
//! and rejects the PTX version, the kernel is compiled once more to a CUBIN for the
//! real `sm_XY` (cache kind `cubin`), which older drivers of the same major version
//! accept.
//!
//! Disk entries are keyed by source, entry point, options, architecture, NVRTC
//! version, device name and driver version, and sealed ([`crate::cache::write_sealed`]):
//! a header with a format magic, the length and a hash over that key material
//! and the content. The cache directory is trusted like the driver's own
//! `ComputeCache`: anyone who can write there can make the driver load any code.
//! What is validated guards against accidents: a truncated or damaged entry, one
//! of another format version or another kernel's entry copied under this key is
//! refused with a warning; so is PTX without the entry point and a CUBIN without
//! the ELF magic. A refused entry, or one the driver fails to load, is compiled
//! afresh from source with NVRTC and overwritten.
//!
//! Loaded modules and their entry functions are cached per device for as long as
//! their [`crate::Kernel`] lives (a [`KernelCache`]); the entry's static shared
//! memory and register-limited maximum block size are read once here, for the
//! launch checks.
//!
//! This module touches NVRTC (through [`crate::nvrtc`]), the cache directory and
//! `cuModuleLoadData`/`cuModuleGetFunction`/`cuFuncGetAttribute`.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use cudarc::driver::sys::{CUfunction_attribute, CUresult};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, DriverError};
use cudarc::nvrtc::Ptx;

use super::error::{describe, map_driver_err};
use crate::backend::kernel_cache::KernelCache;
use crate::cache::Sealed;
use crate::device::DeviceInfo;
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
    built: KernelCache<Built>,
    /// Architecture number used for NVRTC (`90` for compute_90 / sm_90).
    arch: u32,
    /// Device name (part of the disk-cache key).
    device_name: String,
    /// Driver version (part of the disk-cache key).
    driver_version: String,
}

impl ModuleCache {
    /// A cache compiling for architecture `arch` (e.g. `90`) on the device `info`.
    pub(crate) fn new(arch: u32, info: &DeviceInfo) -> ModuleCache {
        ModuleCache {
            built: KernelCache::default(),
            arch,
            device_name: info.name.clone(),
            driver_version: info.driver_version.clone(),
        }
    }

    /// Drop every module (teardown).
    pub(crate) fn clear(&self) {
        self.built.clear();
    }

    /// The built kernel, building it first if needed. Returns whether it was built now.
    pub(crate) fn get_or_build(
        &self,
        ctx: &Arc<CudaContext>,
        kernel: &Kernel,
        device: &str,
    ) -> Result<(Arc<Built>, bool)> {
        self.built.get_or_try_build(kernel, || {
            let source = kernel
                .cuda_source()
                .ok_or_else(|| kernel.no_implementation(crate::BackendKind::Cuda, device))?;
            self.build(ctx, kernel.name(), source, device)
        })
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
            Err(e) if e.0 == CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => {}
            Err(e) if from_disk => {
                // The cached entry does not load: compile afresh (overwriting it).
                tracing::warn!(
                    kernel = name,
                    error = %describe(e),
                    "cached PTX failed to load; recompiling from source"
                );
                let (ptx, _) = self.ptx(source, name, device, &virt, false)?;
                match load_ptx(ctx, ptx) {
                    Ok(m) => return Ok(m),
                    Err(e) if e.0 == CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => {}
                    Err(e) => return Err(map_driver_err(e, device, "cuModuleLoadData (PTX)", name)),
                }
            }
            Err(e) => return Err(map_driver_err(e, device, "cuModuleLoadData (PTX)", name)),
        }
        // The driver is older than NVRTC: a CUBIN for the real architecture needs no PTX JIT.
        tracing::info!(
            kernel = name,
            "driver rejects the PTX version; loading a CUBIN for sm_{}",
            self.arch
        );
        let real = format!("sm_{}", self.arch);
        let (cubin, from_disk) = self.cubin(source, name, device, &real, true)?;
        match ctx.load_module(Ptx::from_binary(cubin)) {
            Ok(m) => Ok(m),
            Err(e) if from_disk => {
                tracing::warn!(
                    kernel = name,
                    error = %describe(e),
                    "cached CUBIN failed to load; recompiling from source"
                );
                let (cubin, _) = self.cubin(source, name, device, &real, false)?;
                ctx.load_module(Ptx::from_binary(cubin))
                    .map_err(|e| map_driver_err(e, device, "cuModuleLoadData (CUBIN)", name))
            }
            Err(e) => Err(map_driver_err(e, device, "cuModuleLoadData (CUBIN)", name)),
        }
    }

    /// A CUBIN for `arch`, from the disk cache when `use_cache`; returns whether it came from disk.
    fn cubin(&self, source: &Source, name: &str, device: &str, arch: &str, use_cache: bool) -> Result<(Vec<u8>, bool)> {
        let id = self.key_id(source, arch, "cubin");
        let material = id.material();
        if use_cache {
            match crate::cache::read_sealed("cubin", &material) {
                Sealed::Valid(b) if b.starts_with(b"\x7fELF") => return Ok((b, true)),
                Sealed::Valid(_) => warn_invalid(name, "cubin", "not an ELF image"),
                Sealed::Invalid(why) => warn_invalid(name, "cubin", why),
                Sealed::Missing => {}
            }
        }
        let b = crate::nvrtc::compile_with(source, name, device, arch, Output::Cubin)?;
        crate::cache::write_sealed("cubin", &material, &b);
        Ok((b, false))
    }

    /// PTX text for `arch`, from the disk cache when `use_cache`; returns whether it came from disk.
    fn ptx(&self, source: &Source, name: &str, device: &str, arch: &str, use_cache: bool) -> Result<(String, bool)> {
        let id = self.key_id(source, arch, "ptx");
        let material = id.material();
        if use_cache {
            match crate::cache::read_sealed("ptx", &material) {
                Sealed::Valid(b) => match String::from_utf8(b) {
                    Ok(text) if valid_ptx(&text, &source.entry) => return Ok((text, true)),
                    _ => warn_invalid(name, "ptx", "not PTX text declaring the entry point"),
                },
                Sealed::Invalid(why) => warn_invalid(name, "ptx", why),
                Sealed::Missing => {}
            }
        }
        let bytes = crate::nvrtc::compile_with(source, name, device, arch, Output::Ptx)?;
        let text = String::from_utf8(bytes).map_err(|_| Error::Build {
            kernel: name.to_string(),
            device: device.to_string(),
            log: "NVRTC returned PTX that is not UTF-8".into(),
        })?;
        crate::cache::write_sealed("ptx", &material, text.as_bytes());
        Ok((text, false))
    }

    /// What names a disk entry of `source` compiled for `arch` to `kind` on this device.
    fn key_id<'a>(&'a self, source: &'a Source, arch: &'a str, kind: &'a str) -> KeyId<'a> {
        KeyId {
            kind,
            source,
            options: source.options.join("\u{1f}"),
            arch,
            nvrtc: crate::nvrtc::version().map_or_else(|_| "unknown".to_string(), |(a, b)| format!("{a}.{b}")),
            device_name: &self.device_name,
            driver_version: &self.driver_version,
        }
    }
}

/// Everything that determines a compiled image: the disk-cache key material.
struct KeyId<'a> {
    kind: &'a str,
    source: &'a Source,
    options: String,
    arch: &'a str,
    nvrtc: String,
    device_name: &'a str,
    driver_version: &'a str,
}

impl KeyId<'_> {
    fn material(&self) -> [&[u8]; 9] {
        [
            b"offload-nvrtc-v2",
            self.kind.as_bytes(),
            self.source.code.as_bytes(),
            self.source.entry.as_bytes(),
            self.options.as_bytes(),
            self.arch.as_bytes(),
            self.nvrtc.as_bytes(),
            self.device_name.as_bytes(),
            self.driver_version.as_bytes(),
        ]
    }
}

fn warn_invalid(kernel: &str, kind: &str, why: &str) {
    tracing::warn!(kernel, kind, why, "invalid CUDA cache entry; recompiling from source");
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
    /// text, and an invalid entry (garbage, truncated, another kernel's entry) is
    /// ignored and recompiled. Needs NVRTC, not a GPU. Uses the configured cache
    /// directory with a source no earlier run has cached.
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
        let source = |body: &str| Source {
            code: format!(
                "// {nonce} {}\nextern \"C\" __global__ void cached_k(float* x) {{ {body} }}",
                std::process::id()
            ),
            entry: "cached_k".into(),
            options: vec!["--use_fast_math".into()],
        };
        let one = source("x[threadIdx.x] += 1.0f;");
        let two = source("x[threadIdx.x] += 2.0f;");
        let cache = ModuleCache {
            built: KernelCache::default(),
            arch: 80,
            device_name: "test device".into(),
            driver_version: "1.0".into(),
        };
        let build = |s: &Source| cache.ptx(s, "cached_k", "test", "compute_80", true).expect("compile");
        let (first, from_disk) = build(&one);
        assert!(!from_disk);
        assert!(valid_ptx(&first, "cached_k"), "{first}");
        // Another architecture, option set, device or driver is another entry.
        let key = |c: &ModuleCache, s: &Source, arch: &str| crate::cache::key(&c.key_id(s, arch, "ptx").material());
        let k1 = key(&cache, &one, "compute_80");
        assert_ne!(k1, key(&cache, &one, "compute_90"));
        let mut other = one.clone();
        other.options.clear();
        assert_ne!(k1, key(&cache, &other, "compute_80"));
        let other_driver = ModuleCache {
            built: KernelCache::default(),
            arch: 80,
            device_name: "test device".into(),
            driver_version: "2.0".into(),
        };
        assert_ne!(k1, key(&other_driver, &one, "compute_80"));
        let Some(path) = crate::cache::entry_path("ptx", &k1) else {
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
        let (again, from_disk) = build(&one);
        assert!(from_disk, "the second build must come from {}", path.display());
        assert_eq!(first, again);
        let entry = std::fs::read(&path).expect("entry");
        // Invalid entries are not used, and are replaced.
        let (second, _) = build(&two);
        let path_two = crate::cache::entry_path("ptx", &key(&cache, &two, "compute_80")).expect("path");
        let entry_two = std::fs::read(&path_two).expect("entry two");
        for bad in [
            b"garbage".to_vec(),
            entry[..entry.len() - 10].to_vec(),
            entry_two.clone(),
        ] {
            std::fs::write(&path, &bad).expect("damage the entry");
            let (fresh, from_disk) = build(&one);
            assert!(!from_disk);
            assert_eq!(fresh, first);
            assert_ne!(fresh, second);
            assert_eq!(std::fs::read(&path).expect("rewritten"), entry);
        }
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&path_two);
    }

    #[test]
    fn ptx_check() {
        assert!(valid_ptx(".version 8.8\n.target sm_90\n.visible .entry noop(", "noop"));
        assert!(!valid_ptx(".target sm_90\n.visible .entry noop(", "vector_add"));
        assert!(!valid_ptx(".target sm_90\0.entry noop", "noop"));
    }
}
