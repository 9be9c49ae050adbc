//! NVRTC compiles every CUDA kernel in `kernels/`, without a GPU.
//!
//! Needs `libnvrtc.so` (the CUDA toolkit, or the PyPI wheel `nvidia-cuda-nvrtc-cu12`
//! with its `nvidia/cuda_nvrtc/lib` folder on `LD_LIBRARY_PATH`). Without it each
//! test prints a SKIP line, unless `OFFLOAD_REQUIRE` names `nvrtc`: then it fails.
#![cfg(feature = "cuda")]

mod common;

use offload::{Error, Source, kernels, nvrtc};

/// Architectures every kernel must compile for.
const ARCHS: &[&str] = &["sm_80", "sm_90"];

/// Whether NVRTC is present (prints a skip line, or fails when required).
fn nvrtc_present() -> bool {
    match nvrtc::available() {
        Ok(()) => true,
        Err(why) => {
            common::missing("nvrtc", &why);
            false
        }
    }
}

fn source(code: &str, entry: &str) -> Source {
    Source {
        code: code.to_string(),
        entry: entry.to_string(),
        options: Vec::new(),
    }
}

#[test]
fn every_catalogue_kernel_compiles_to_ptx_with_its_entry() {
    if !nvrtc_present() {
        return;
    }
    let (major, minor) = nvrtc::version().expect("NVRTC version");
    println!("NVRTC {major}.{minor}");
    assert!(!kernels::CATALOGUE.is_empty(), "the kernel catalogue is empty");
    let mut compiled = 0;
    for k in kernels::CATALOGUE {
        for arch in ARCHS {
            let ptx = nvrtc::compile(&source(k.cuda, k.name), arch)
                .unwrap_or_else(|e| panic!("kernels/{} (CUDA) does not compile for {arch}: {e}", k.name));
            let entry = format!(".entry {}(", k.name);
            assert!(
                ptx.contains(&entry),
                "PTX of kernels/{} for {arch} has no `{entry}`:\n{}",
                k.name,
                &ptx[..ptx.len().min(2000)]
            );
            let target = format!(".target {arch}");
            assert!(
                ptx.lines()
                    .any(|l| l.trim() == target || l.trim().starts_with(&format!("{target},"))),
                "PTX of kernels/{} for {arch} does not declare `{target}`",
                k.name
            );
            assert!(!ptx.contains('\0'), "PTX text holds a NUL byte");
            compiled += 1;
        }
    }
    println!("compiled {compiled} kernel/architecture pairs");
    assert_eq!(compiled, kernels::CATALOGUE.len() * ARCHS.len());
}

#[test]
fn built_in_kernels_carry_their_cuda_sources() {
    if !nvrtc_present() {
        return;
    }
    // The Kernel objects built from the catalogue compile too (same path as the backend).
    for k in [
        kernels::vector_add().expect("vector_add"),
        kernels::noop().expect("noop"),
        kernels::jacobi().expect("jacobi"),
        kernels::gemm_tile().expect("gemm_tile"),
        kernels::gemm_naive(33, 17).expect("gemm_naive"),
        kernels::gemm_tiled(33, 17).expect("gemm_tiled"),
        kernels::gemm_regblock(33, 17).expect("gemm_regblock"),
        kernels::gemm(33, 17).expect("gemm"),
    ] {
        let src = k.cuda_source().expect("CUDA source");
        let ptx = nvrtc::compile(src, "compute_90").unwrap_or_else(|e| panic!("{}: {e}", k.name()));
        assert!(
            ptx.contains(&format!(".entry {}(", src.entry)),
            "{}: entry missing",
            k.name()
        );
    }
}

#[test]
fn syntax_error_gives_build_error_with_the_log_and_kernel_name() {
    if !nvrtc_present() {
        return;
    }
    let bad = source(
        "extern \"C\" __global__ void broken_kernel(float* x) {\n    x[0] = 1.0f  // missing semicolon\n    undefined_name += 2;\n}\n",
        "broken_kernel",
    );
    let err = nvrtc::compile(&bad, "sm_80").expect_err("a syntax error must not compile");
    let text = err.to_string();
    match &err {
        Error::Build { kernel, log, .. } => {
            assert_eq!(kernel, "broken_kernel");
            assert!(log.contains("error"), "log has no error line: {log}");
            assert!(log.contains("broken_kernel.cu("), "log does not name the source: {log}");
        }
        other => panic!("expected Error::Build, got {other:?}"),
    }
    assert!(
        text.contains("broken_kernel"),
        "message does not name the kernel: {text}"
    );
    assert!(text.contains("error"), "message does not carry the log: {text}");
    println!("{text}");
}

#[test]
fn bad_architecture_and_nul_bytes_are_build_errors() {
    if !nvrtc_present() {
        return;
    }
    let ok = source("extern \"C\" __global__ void k() {}", "k");
    let err = nvrtc::compile(&ok, "sm_1").expect_err("sm_1 is not an architecture");
    assert!(matches!(err, Error::Build { .. }), "{err:?}");
    assert!(err.to_string().contains("sm_1"), "{err}");

    let nul = source("extern \"C\" __global__ void k() {}\0", "k");
    let err = nvrtc::compile(&nul, "sm_80").expect_err("NUL in source");
    assert!(matches!(err, Error::Build { .. }), "{err:?}");

    let mut opt = source("extern \"C\" __global__ void k() {}", "k");
    opt.options.push("--use_fast_math\0".into());
    let err = nvrtc::compile(&opt, "sm_80").expect_err("NUL in an option");
    assert!(matches!(err, Error::Build { .. }), "{err:?}");

    // Options are passed through: a valid one compiles.
    opt.options = vec!["--use_fast_math".into()];
    let ptx = nvrtc::compile(&opt, "sm_90").expect("--use_fast_math");
    assert!(ptx.contains(".entry k("));
}

#[test]
fn cubin_for_a_real_architecture_is_an_elf_image() {
    if !nvrtc_present() {
        return;
    }
    for k in kernels::CATALOGUE {
        let cubin = nvrtc::compile_cubin(&source(k.cuda, k.name), "sm_90")
            .unwrap_or_else(|e| panic!("kernels/{} (CUDA) to CUBIN: {e}", k.name));
        assert!(cubin.starts_with(b"\x7fELF"), "{}: not an ELF image", k.name);
        let name = k.name.as_bytes();
        assert!(
            cubin.windows(name.len()).any(|w| w == name),
            "{}: entry name missing from the CUBIN",
            k.name
        );
    }
    // A virtual architecture has no CUBIN.
    assert!(nvrtc::compile_cubin(&source("extern \"C\" __global__ void k() {}", "k"), "compute_90").is_err());
}

#[test]
fn supported_architectures_include_the_tested_ones() {
    if !nvrtc_present() {
        return;
    }
    let archs = nvrtc::supported_archs().expect("supported archs");
    println!("NVRTC architectures: {archs:?}");
    for a in [80, 90] {
        assert!(archs.contains(&a), "NVRTC does not support sm_{a}: {archs:?}");
    }
}

#[test]
fn missing_nvrtc_is_an_error_not_a_panic() {
    // Holds on every machine: either NVRTC is there and compiles, or every entry
    // point returns an error value naming the library.
    match nvrtc::available() {
        Ok(()) => {
            assert!(nvrtc::version().is_ok());
        }
        Err(why) => {
            assert!(why.contains("libnvrtc"), "{why}");
            let err =
                nvrtc::compile(&source("extern \"C\" __global__ void k() {}", "k"), "sm_80").expect_err("no NVRTC");
            assert!(
                matches!(err, Error::BackendUnavailable { .. }) && err.to_string().contains("libnvrtc"),
                "{err:?}"
            );
            assert!(nvrtc::version().is_err());
            println!("SKIP nvrtc (checked the error path instead): {why}");
        }
    }
}

#[test]
fn jacobi_ptx_rounds_like_the_other_backends() {
    if !nvrtc_present() {
        return;
    }
    // The stencil is bitwise equal across backends only if NVRTC neither fuses
    // (no multiply feeds an add) nor flushes or approximates: plain
    // round-to-nearest adds and one multiply by 0.25. (The one other f32 multiply
    // is the row estimate g * (1 / width), which integer steps then correct exactly.)
    let src = kernels::sources("jacobi").expect("jacobi sources");
    let ptx = nvrtc::compile(&source(src.cuda, src.name), "sm_90").expect("jacobi compiles");
    assert!(!ptx.contains("fma."), "jacobi PTX fuses a multiply-add:\n{ptx}");
    assert!(!ptx.contains(".ftz"), "jacobi PTX flushes denormals:\n{ptx}");
    let adds = ptx.matches("add.f32").count() + ptx.matches("add.rn.f32").count();
    assert_eq!(adds, 3, "three f32 adds expected:\n{ptx}");
    let quarter = |op: &str| {
        ptx.lines()
            .filter(|l| l.contains(op) && l.contains("0f3E800000"))
            .count()
    };
    assert_eq!(
        quarter("mul.f32") + quarter("mul.rn.f32"),
        1,
        "one multiply by 0.25 expected:\n{ptx}"
    );
    assert_eq!(
        ptx.matches("mul.f32").count() + ptx.matches("mul.rn.f32").count(),
        2,
        "the stencil's multiply and the row estimate's, nothing else:\n{ptx}"
    );
}

/// Every prelude feature (3-D ids, `LOCAL_PTR`, static local arrays, barriers,
/// integer and float atomics, math) compiles as CUDA C, each entry point present.
#[test]
fn the_prelude_tour_compiles_as_cuda() {
    if !nvrtc_present() {
        return;
    }
    let body = include_str!("common/prelude_tour.c");
    for entry in ["group_sum", "ids3"] {
        let code = offload::portable::cuda_source(body, &format!("{entry}.c"));
        for arch in ARCHS {
            let ptx = nvrtc::compile(&source(&code, entry), arch).unwrap_or_else(|e| panic!("{entry} for {arch}: {e}"));
            assert!(ptx.contains(&format!(".entry {entry}(")), "{entry}: entry missing");
        }
    }
    // The f64 atomic exists in the CUDA dialect.
    let f64_atomic =
        offload::portable::cuda_source("KERNEL void f(GLOBAL double* x) { ATOMIC_ADD_F64(x, 1.0); }\n", "f.c");
    nvrtc::compile(&source(&f64_atomic, "f"), "sm_80").expect("atomicAdd(double) on sm_80");
}

/// A portable source using an OpenCL-only name fails as CUDA C and says so.
#[test]
fn a_source_failing_in_the_cuda_dialect_says_so() {
    if !nvrtc_present() {
        return;
    }
    let code = offload::portable::cuda_source(
        "KERNEL void ocl_only(GLOBAL float* x) {\n    x[get_global_id(0)] = 1.0f;\n}\n",
        "ocl_only.c",
    );
    match nvrtc::compile(&source(&code, "ocl_only"), "sm_80") {
        Err(Error::Build { log, .. }) => {
            assert!(log.starts_with("portable source compiled as CUDA C (NVRTC)"), "{log}");
            assert!(log.contains("get_global_id"), "{log}");
            assert!(
                log.contains("ocl_only.c(2)"),
                "the log does not point at the kernel's line: {log}"
            );
        }
        other => panic!("expected Error::Build, got {other:?}"),
    }
}
