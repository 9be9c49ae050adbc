//! `Device::kernel_info`: per-kernel limits on every device (CPU, OpenCL; CUDA
//! where a GPU is present).

mod common;

use common::runtime;
use offload::{Arg, BackendKind, Error, Kernel, LaunchConfig, Param, kernels};

#[test]
fn every_device_reports_usable_limits_and_the_suggestion_runs() {
    let rt = runtime();
    let k = kernels::vector_add().unwrap();
    let tiled = kernels::gemm_tiled(64, 64).unwrap();
    for dev in rt.devices() {
        let ki = dev.kernel_info(&k).unwrap();
        println!("{}: vector_add {ki:?}", dev.label());
        assert!(
            ki.max_block >= 1 && ki.max_block <= dev.info().max_threads_per_block,
            "{ki:?}"
        );
        assert!(ki.suggested_block >= 1 && ki.suggested_block <= ki.max_block, "{ki:?}");
        assert!(ki.block_multiple >= 1, "{ki:?}");
        // The suggested block launches and computes.
        let n = 5000usize;
        let a = dev.upload(&vec![1.5f32; n]).unwrap();
        let mut c = dev.upload(&vec![0.0f32; n]).unwrap();
        let cfg = LaunchConfig::new((n as u32).div_ceil(ki.suggested_block), ki.suggested_block);
        dev.launch_items_with(&k, &cfg, n, vec![Arg::input(&a), Arg::input(&a), Arg::output(&mut c)])
            .unwrap();
        assert!(c.to_vec().unwrap().iter().all(|v| *v == 3.0), "{}", dev.label());

        let ti = dev.kernel_info(&tiled).unwrap();
        println!("{}: gemm_tiled {ti:?}", dev.label());
        match dev.backend() {
            // Two static tiles: 16×16 + 16×17 floats.
            BackendKind::OpenCl | BackendKind::Cuda => {
                assert!(ti.local_bytes >= (16 * 16 + 16 * 17) * 4, "{ti:?}")
            }
            BackendKind::Cpu => assert_eq!(ti.local_bytes, 0),
        }
        if dev.backend() == BackendKind::Cuda {
            assert!(ti.registers.is_some_and(|r| r > 0), "{ti:?}");
        }
    }
}

#[test]
fn a_kernel_without_this_backend_is_no_implementation() {
    let rt = runtime();
    let cpu_only = Kernel::builder("cpu_only")
        .param(Param::output::<f32>("x"))
        .cpu(|_| {})
        .build()
        .unwrap();
    for dev in rt.devices() {
        let r = dev.kernel_info(&cpu_only);
        if dev.backend() == BackendKind::Cpu {
            assert!(r.is_ok(), "{r:?}");
        } else {
            assert!(matches!(r, Err(Error::NoImplementation { .. })), "{r:?}");
        }
    }
}
