//! Portable device source: one C file for CUDA and OpenCL.
//!
//! A portable kernel is written once against a small prelude of macros
//! (`kernels/prelude.h`, in [`PRELUDE`]): `KERNEL`, `GLOBAL`, `LOCAL`,
//! `LOCAL_PTR(T)`, `GLOBAL_ID(d)` … `NUM_GROUPS(d)`, `BARRIER()`, 32-bit integer and
//! float atomics, and f32 math in the CUDA spelling (`sqrtf`, `fmaf`, …). For each
//! dialect the library prepends a one-line header that names it (`#define
//! OFFLOAD_CUDA 1` or `#define OFFLOAD_OPENCL 1`), the prelude, and a `#line 1
//! "<entry>.c"` directive so compiler messages point at the kernel's own lines:
//! [`cuda_source`] and [`opencl_source`] give the text each compiler sees, and
//! [`crate::KernelBuilder::portable`] fills both backends of a kernel from it.
//!
//! `Param::Local` parameters are declared `LOCAL_PTR(T) name` and indexed
//! (`name[i]`) the same way in both dialects: on OpenCL the macro is `__local T*`;
//! on CUDA it is a small handle holding the byte offset of that argument inside the
//! launch's dynamic shared memory, which the CUDA backend passes for portable
//! kernels instead of leaving the parameter out.
//!
//! A portable source that fails to compile reports which dialect failed: the
//! [`crate::Error::Build`] log starts with a line naming it.

use crate::kernel::KernelBuilder;

/// The prelude prepended to every portable source (`kernels/prelude.h`).
pub const PRELUDE: &str = include_str!("../kernels/prelude.h");

/// First line of a portable source compiled as CUDA C.
const CUDA_HEADER: &str = "// offload portable source, CUDA dialect\n#define OFFLOAD_CUDA 1\n";
/// First line of a portable source compiled as OpenCL C.
const OPENCL_HEADER: &str = "// offload portable source, OpenCL dialect\n#define OFFLOAD_OPENCL 1\n";

/// The dialects a portable source is compiled as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// CUDA C, compiled by NVRTC.
    Cuda,
    /// OpenCL C, compiled by the OpenCL driver.
    OpenCl,
}

impl Dialect {
    /// Human name ("CUDA C (NVRTC)", "OpenCL C").
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Cuda => "CUDA C (NVRTC)",
            Dialect::OpenCl => "OpenCL C",
        }
    }
}

/// The full text a portable source `body` is compiled from as `dialect`; `file`
/// names it in compiler messages (`vector_add.c`).
pub fn source_for(dialect: Dialect, body: &str, file: &str) -> String {
    let header = match dialect {
        Dialect::Cuda => CUDA_HEADER,
        Dialect::OpenCl => OPENCL_HEADER,
    };
    // A file name with a quote or newline would break the #line directive.
    let file: String = file
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect();
    let mut s = String::with_capacity(header.len() + PRELUDE.len() + body.len() + file.len() + 16);
    s.push_str(header);
    s.push_str(PRELUDE);
    s.push_str("\n#line 1 \"");
    s.push_str(&file);
    s.push_str("\"\n");
    s.push_str(body);
    s
}

/// The CUDA C text of a portable source (see [`source_for`]).
pub fn cuda_source(body: &str, file: &str) -> String {
    source_for(Dialect::Cuda, body, file)
}

/// The OpenCL C text of a portable source (see [`source_for`]).
pub fn opencl_source(body: &str, file: &str) -> String {
    source_for(Dialect::OpenCl, body, file)
}

/// The dialect of a complete device source, if it was made by [`source_for`].
pub fn dialect_of(code: &str) -> Option<Dialect> {
    if code.starts_with(CUDA_HEADER) {
        Some(Dialect::Cuda)
    } else if code.starts_with(OPENCL_HEADER) {
        Some(Dialect::OpenCl)
    } else {
        None
    }
}

/// A build log, prefixed with the dialect when `code` is a portable source.
pub(crate) fn annotate_log(code: &str, log: String) -> String {
    match dialect_of(code) {
        Some(d) => format!(
            "portable source compiled as {} (offload prelude prepended; line numbers are the kernel file's) failed:\n{log}",
            d.name()
        ),
        None => log,
    }
}

impl KernelBuilder {
    /// One portable C source for both CUDA and OpenCL (see [`crate::portable`]):
    /// its `KERNEL void entry(...)` is compiled with the prelude as CUDA C by NVRTC
    /// and as OpenCL C by every OpenCL device. Options given with
    /// [`KernelBuilder::cuda_options`] / [`KernelBuilder::opencl_options`] still
    /// apply to each dialect. Compiler messages name the file `<entry>.c` and the
    /// dialect that failed.
    ///
    /// # Safety
    ///
    /// The same promise as [`KernelBuilder::cuda`], for the entry point in both
    /// dialects.
    pub unsafe fn portable(self, code: &str, entry: &str) -> Self {
        let file = format!("{entry}.c");
        let cuda = cuda_source(code, &file);
        let opencl = opencl_source(code, &file);
        // SAFETY: the caller makes the promise of `cuda` for this entry point (this
        // function's own contract); the prelude adds only macros, typedefs and
        // inline helpers that touch no memory of their own.
        let built = unsafe { self.cuda(cuda, entry) };
        // SAFETY: as above, for the OpenCL dialect of the same source.
        unsafe { built.opencl(opencl, entry) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_dialect_names_itself_and_keeps_line_numbers() {
        let c = cuda_source("KERNEL void k() {}\n", "k.c");
        let o = opencl_source("KERNEL void k() {}\n", "k.c");
        assert_eq!(dialect_of(&c), Some(Dialect::Cuda));
        assert_eq!(dialect_of(&o), Some(Dialect::OpenCl));
        assert_eq!(dialect_of("__kernel void k() {}"), None);
        assert!(c.contains("#line 1 \"k.c\"\nKERNEL void k()"));
        assert!(annotate_log(&o, "x".into()).starts_with("portable source compiled as OpenCL C"));
        assert_eq!(annotate_log("plain", "x".into()), "x");
    }

    #[test]
    fn catalogue_portable_kernels_are_prelude_plus_body() {
        let mut n = 0;
        for k in crate::kernels::CATALOGUE {
            if let Some(body) = k.portable {
                let file = format!("{}.c", k.name);
                assert_eq!(k.cuda, cuda_source(body, &file), "{}: CUDA text", k.name);
                assert_eq!(k.opencl, opencl_source(body, &file), "{}: OpenCL text", k.name);
                n += 1;
            }
        }
        assert!(n >= 6, "only {n} portable kernels in the catalogue");
    }
}
