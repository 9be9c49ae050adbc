//! Programs: one source, several entry points, each a kernel; on OpenCL the
//! source is compiled once per device for all of them.

mod common;

use std::time::Instant;

use common::Rng;
use offload::{Access, Arg, BackendKind, Kernel, LaunchConfig, Param, Program, Split};

const CL: &str = r#"
__kernel void scale(__global const float* x, __global float* y, const float a, const uint n) {
    uint i = get_global_id(0);
    if (i < n) y[i] = a * x[i];
}
__kernel void shift(__global const float* x, __global float* y, const float b, const uint n) {
    uint i = get_global_id(0);
    if (i < n) y[i] = x[i] + b;
}
"#;

fn entry(p: &Program, name: &str, f: fn(f32, f32) -> f32) -> Kernel {
    let each = Split::Elementwise { per_item: 1 };
    p.kernel(name)
        .param(Param::buffer::<f32>("x", Access::Read, each))
        .param(Param::buffer::<f32>("y", Access::Write, each))
        .param(Param::scalar::<f32>("c"))
        .param(Param::scalar::<u32>("n"))
        .extent_from("x", &["n"], 1)
        .extent_from("y", &["n"], 1)
        .cpu(move |ctx| {
            let n = ctx.scalar::<u32>(3) as usize;
            let c = ctx.scalar::<f32>(2);
            let items = ctx.items_below(n);
            let x = &ctx.input::<f32>(0)[items.clone()];
            for (o, v) in ctx.output::<f32>(1).iter_mut().zip(x) {
                *o = f(c, *v);
            }
        })
        .build()
        .unwrap()
}

#[test]
fn one_program_gives_kernels_per_entry_built_once() {
    // A fresh cache directory and a fresh source: the first build really compiles.
    let dir = std::env::temp_dir().join(format!("offload-program-{}", std::process::id()));
    // SAFETY: the only test of this binary; no other thread reads the environment now.
    unsafe { std::env::set_var("OFFLOAD_CACHE_DIR", &dir) };
    let nonce = format!("// nonce {:?}\n", Instant::now());
    // SAFETY: CL declares both entries with the signature given below and touches
    // x[i], y[i] only for i < n, the declared extents.
    let p = unsafe { Program::new().opencl(format!("{nonce}{CL}")) }.opencl_options(&["-cl-fast-relaxed-math"]);
    let scale = entry(&p, "scale", |a, x| a * x);
    let shift = entry(&p, "shift", |b, x| x + b);
    assert_eq!(scale.opencl_source().unwrap().entry, "scale");
    assert_eq!(
        shift.opencl_source().unwrap().options,
        vec!["-cl-fast-relaxed-math".to_string()]
    );
    let rt = common::runtime();
    let mut rng = Rng::fresh("program");
    for d in common::devices(&rt) {
        if !d.supports(&scale) {
            // The program has no CUDA source: its kernels cannot run there.
            assert_eq!(d.backend(), BackendKind::Cuda, "{}", d.label());
            println!("SKIP {}: the program has no source for it", d.label());
            continue;
        }
        if d.backend() == BackendKind::OpenCl {
            let t = Instant::now();
            d.build(&scale).unwrap();
            let first = t.elapsed();
            let t = Instant::now();
            d.build(&shift).unwrap();
            let second = t.elapsed();
            println!("{}: first entry built in {first:?}, second in {second:?}", d.label());
            assert!(
                second * 5 < first,
                "the second entry reuses the compiled program: {second:?} vs {first:?}"
            );
        }
        let n = 10_001;
        let x = rng.vec_f32(n, -1.0, 1.0);
        let dx = d.upload(&x).unwrap();
        let mut dy = d.alloc::<f32>(n).unwrap();
        let cfg = LaunchConfig::for_items(n, d.info());
        d.launch(
            &scale,
            &cfg,
            &[Arg::input(&dx), Arg::output(&mut dy), 3.0f32.into(), (n as u32).into()],
        )
        .unwrap();
        let y = dy.to_vec().unwrap();
        assert!(
            y.iter().zip(&x).all(|(y, x)| (y - 3.0 * x).abs() < 1e-6),
            "{}",
            d.label()
        );
        d.launch(
            &shift,
            &cfg,
            &[Arg::input(&dx), Arg::output(&mut dy), 0.5f32.into(), (n as u32).into()],
        )
        .unwrap();
        let y = dy.to_vec().unwrap();
        assert!(
            y.iter().zip(&x).all(|(y, x)| (y - (x + 0.5)).abs() < 1e-6),
            "{}",
            d.label()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
