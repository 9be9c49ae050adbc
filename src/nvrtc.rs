//! NVRTC: compile CUDA C to PTX at run time, with or without a GPU.
//!
//! This is how CUDA kernels are built for the CUDA backend, and it is public so
//! that a machine without a GPU (CI) can still prove every built-in kernel compiles:
//! NVRTC needs only `libnvrtc.so` (for example from the PyPI wheel
//! `nvidia-cuda-nvrtc-cu12`, with its `nvidia/cuda_nvrtc/lib` folder on
//! `LD_LIBRARY_PATH`), never a driver or a device.
//!
//! The library is loaded at run time. [`available`] probes for it first, and every
//! other function here calls that probe before touching NVRTC, so a missing
//! library is an error value ([`Error::BackendUnavailable`]) and never a panic.
//! A source that fails to compile gives [`Error::Build`] carrying NVRTC's full log.
//!
//! This module touches only NVRTC (through `cudarc::nvrtc`'s result layer); it
//! never calls the CUDA driver.

use std::ffi::{CString, c_char};
use std::sync::OnceLock;

use cudarc::nvrtc::result as nv;
use cudarc::nvrtc::sys;

use crate::backend::cuda::error::{map_nvrtc_err, nvrtc_code_name};
use crate::error::{BackendKind, Error, Result};
use crate::kernel::Source;

/// Whether `libnvrtc` can be loaded; the error says what was searched.
///
/// The probe runs once per process; its answer is kept.
pub fn available() -> std::result::Result<(), String> {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: `is_culib_present` only tries to open the candidate library names
    // with `dlopen` and closes them again; it calls no NVRTC function.
    if *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() }) {
        return Ok(());
    }
    let names = cudarc::get_lib_name_candidates("nvrtc");
    Err(format!(
        "libnvrtc.so not found (NVRTC, the CUDA runtime compiler; tried {} names, among them {}); install the CUDA \
         toolkit or the PyPI wheel nvidia-cuda-nvrtc-cu12 and put the folder holding libnvrtc.so.12 on LD_LIBRARY_PATH",
        names.len(),
        crate::backend::cuda::error::plain_lib_names(&names, "nvrtc")
    ))
}

fn require() -> Result<()> {
    available().map_err(|reason| Error::BackendUnavailable {
        backend: BackendKind::Cuda,
        reason,
    })
}

/// NVRTC's version as `(major, minor)`.
pub fn version() -> Result<(u32, u32)> {
    require()?;
    let (mut major, mut minor) = (0i32, 0i32);
    // SAFETY: the library is present (checked above); both pointers are valid for writes.
    let r = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    r.result().map_err(|e| map_nvrtc_err(e, "nvrtcVersion", "NVRTC", ""))?;
    Ok((major.max(0) as u32, minor.max(0) as u32))
}

/// The GPU architectures this NVRTC can compile for, as numbers (`80` for sm_80), ascending.
pub fn supported_archs() -> Result<Vec<u32>> {
    require()?;
    let mut n: i32 = 0;
    // SAFETY: the library is present; `n` is valid for writes.
    unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }
        .result()
        .map_err(|e| map_nvrtc_err(e, "nvrtcGetNumSupportedArchs", "NVRTC", ""))?;
    let mut archs = vec![0i32; n.max(0) as usize];
    if !archs.is_empty() {
        // SAFETY: `archs` has room for the `n` entries NVRTC reported.
        unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
            .result()
            .map_err(|e| map_nvrtc_err(e, "nvrtcGetSupportedArchs", "NVRTC", ""))?;
    }
    let mut out: Vec<u32> = archs.into_iter().filter(|a| *a > 0).map(|a| a as u32).collect();
    out.sort_unstable();
    Ok(out)
}

/// Compile `source` for `arch` and return the PTX text.
///
/// `arch` is what `--gpu-architecture` takes: a real architecture such as `sm_80`
/// or a virtual one such as `compute_90`. `source.options` are passed after it.
/// The program is named `<entry>.cu`, so log lines read `vector_add.cu(3): error: ...`.
///
/// Errors: [`Error::BackendUnavailable`] when NVRTC is missing; [`Error::Build`]
/// (kernel = `source.entry`, with NVRTC's full log) when the source does not compile,
/// an option is rejected, or the source/options contain a NUL byte.
pub fn compile(source: &Source, arch: &str) -> Result<String> {
    let target = format!("NVRTC --gpu-architecture={arch}");
    let out = compile_with(source, &source.entry, &target, arch, Output::Ptx)?;
    Ok(bytes_to_text(out))
}

/// Compile `source` for a real architecture (`sm_90`) and return the CUBIN image,
/// which the driver loads without JIT-compiling PTX (so it also loads on a driver
/// older than this NVRTC, within the same CUDA major version). Errors as [`compile`].
pub fn compile_cubin(source: &Source, arch: &str) -> Result<Vec<u8>> {
    let target = format!("NVRTC --gpu-architecture={arch}");
    compile_with(source, &source.entry, &target, arch, Output::Cubin)
}

/// What to take out of a compiled program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// PTX text (NUL terminator removed).
    Ptx,
    /// A CUBIN image (needs a real `sm_XY` architecture).
    Cubin,
}

/// Compile `source` for `arch` and return PTX or CUBIN bytes. `kernel` and `device`
/// name the kernel and the target in a [`Error::Build`].
pub(crate) fn compile_with(source: &Source, kernel: &str, device: &str, arch: &str, output: Output) -> Result<Vec<u8>> {
    require()?;
    let build_err = |log: String| Error::Build {
        kernel: kernel.to_string(),
        device: device.to_string(),
        log: crate::portable::annotate_log(&source.code, log),
    };
    let code = CString::new(source.code.as_bytes())
        .map_err(|_| build_err("the CUDA source contains a NUL byte; NVRTC needs a C string".into()))?;
    let name = CString::new(format!("{}.cu", source.entry))
        .map_err(|_| build_err("the entry point name contains a NUL byte".into()))?;
    let mut options = Vec::with_capacity(source.options.len() + 1);
    options.push(format!("--gpu-architecture={arch}"));
    options.extend(source.options.iter().cloned());
    if let Some(bad) = options.iter().find(|o| o.contains('\0')) {
        return Err(build_err(format!("compiler option {bad:?} contains a NUL byte")));
    }
    let prog = Program::create(&code, &name).map_err(|e| map_nvrtc_err(e, "nvrtcCreateProgram", device, kernel))?;
    // SAFETY: `prog.raw` is a live program (owned by `prog`); the options contain no
    // NUL byte (checked above), so `compile_program`'s CString conversion cannot fail.
    let compiled = unsafe { nv::compile_program(prog.raw, &options) };
    let log = prog.log();
    if let Err(e) = compiled {
        let log = match e.0 {
            sys::nvrtcResult::NVRTC_ERROR_COMPILATION => log,
            _ => format!(
                "NVRTC returned {} for options {:?}{}",
                nvrtc_code_name(e),
                options,
                if log.trim().is_empty() {
                    String::new()
                } else {
                    format!(":\n{log}")
                }
            ),
        };
        return Err(build_err(log));
    }
    match output {
        Output::Ptx => {
            // SAFETY: the program compiled successfully and is still alive.
            let ptx = unsafe { nv::get_ptx(prog.raw) }.map_err(|e| map_nvrtc_err(e, "nvrtcGetPTX", device, kernel))?;
            Ok(c_chars_to_bytes(&ptx))
        }
        Output::Cubin => {
            let cubin = prog
                .cubin()
                .map_err(|e| map_nvrtc_err(e, "nvrtcGetCUBIN", device, kernel))?;
            if cubin.is_empty() {
                return Err(build_err(format!(
                    "NVRTC produced no CUBIN for --gpu-architecture={arch}: a CUBIN needs a real architecture \
                     (sm_XY), not a virtual one (compute_XY)"
                )));
            }
            Ok(cubin)
        }
    }
}

/// One NVRTC program, destroyed on drop. Owns the source and name C strings, which
/// NVRTC may reference until the program is destroyed.
struct Program {
    raw: sys::nvrtcProgram,
    _code: CString,
    _name: CString,
}

impl Program {
    fn create(code: &CString, name: &CString) -> std::result::Result<Program, nv::NvrtcError> {
        let code = code.clone();
        let name = name.clone();
        let raw = nv::create_program(&code, Some(&name))?;
        Ok(Program {
            raw,
            _code: code,
            _name: name,
        })
    }

    /// The compile log (empty when NVRTC cannot produce it).
    fn log(&self) -> String {
        // SAFETY: `self.raw` is a live program.
        match unsafe { nv::get_program_log(self.raw) } {
            Ok(chars) => bytes_to_text(c_chars_to_bytes(&chars)),
            Err(e) => format!("(NVRTC could not return the log: {})", nvrtc_code_name(e)),
        }
    }

    fn cubin(&self) -> std::result::Result<Vec<u8>, nv::NvrtcError> {
        let mut size = 0usize;
        // SAFETY: `self.raw` is a live, compiled program; `size` is valid for writes.
        unsafe { sys::nvrtcGetCUBINSize(self.raw, &mut size) }.result()?;
        let mut buf = vec![0u8; size];
        if size > 0 {
            // SAFETY: `buf` has exactly the `size` bytes NVRTC asked for.
            unsafe { sys::nvrtcGetCUBIN(self.raw, buf.as_mut_ptr() as *mut c_char) }.result()?;
        }
        Ok(buf)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if !self.raw.is_null() {
            // SAFETY: `raw` came from `nvrtcCreateProgram` and is destroyed only here.
            // A failure only leaks the program; Drop must not panic.
            let _ = unsafe { nv::destroy_program(self.raw) };
            self.raw = std::ptr::null_mut();
        }
    }
}

/// NVRTC's `char` buffers, up to (not including) the first NUL.
fn c_chars_to_bytes(chars: &[c_char]) -> Vec<u8> {
    chars.iter().map(|c| *c as u8).take_while(|b| *b != 0).collect()
}

fn bytes_to_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
