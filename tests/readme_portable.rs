//! The README's portable SAXPY, verbatim: one source on every device present.

use offload::{Arg, Kernel, Param, Runtime};

const SAXPY: &str = r#"
KERNEL void saxpy(GLOBAL const float* RESTRICT x, GLOBAL float* RESTRICT y,
                  const float a, const uint offset, const uint count) {
    (void)offset;
    uint i = GLOBAL_ID(0);
    if (i < count) y[i] = fmaf(a, x[i], y[i]);
}
"#;

#[test]
fn readme_saxpy_runs_on_every_device() -> offload::Result<()> {
    let builder = Kernel::builder("saxpy")
        .param(Param::input::<f32>("x"))
        .param(Param::inout::<f32>("y"))
        .param(Param::scalar::<f32>("a"))
        .param(Param::Offset)
        .param(Param::Count);
    // SAFETY: saxpy touches x[i] and y[i] only for i < count (their checked extent).
    let saxpy = unsafe { builder.portable(SAXPY, "saxpy") }
        .cpu(|ctx| {
            let items = ctx.items_below(ctx.count());
            let a: f32 = ctx.scalar(2);
            let x = &ctx.input::<f32>(0)[items.clone()];
            let y = ctx.output::<f32>(1);
            for (y, x) in y.iter_mut().zip(x) {
                *y = a.mul_add(*x, *y);
            }
        })
        .build()?;
    let rt = Runtime::new()?;
    for dev in rt.devices() {
        // CPU, every OpenCL and CUDA device
        let x = dev.upload(&vec![1.0f32; 1000])?;
        let mut y = dev.upload(&vec![2.0f32; 1000])?;
        // Offset = 0 and Count = 1000 filled in; `2.0f32`, not `2.0` (an f64).
        dev.launch_items(&saxpy, 1000, vec![Arg::input(&x), Arg::output(&mut y), 3.0f32.into()])?;
        assert!(y.to_vec()?.iter().all(|v| *v == 5.0));
        println!("{}: {:?}", dev.label(), dev.kernel_info(&saxpy)?);
    }
    Ok(())
}
