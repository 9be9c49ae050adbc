//! Less boilerplate: `Param` shorthands, a launch that fills `Offset`/`Count`,
//! scalar conversions that refuse to truncate, and the hint for a wrong scalar type.
//! Run on every device of every backend present.

mod common;

use common::runtime;
use offload::{Access, Arg, Error, Kernel, LaunchConfig, Param, Scalar, Split, kernels};

#[test]
fn shorthands_equal_the_long_forms() {
    let each = Split::Elementwise { per_item: 1 };
    assert_eq!(Param::input::<f32>("a"), Param::buffer::<f32>("a", Access::Read, each));
    assert_eq!(
        Param::output::<u32>("c"),
        Param::buffer::<u32>("c", Access::Write, each)
    );
    assert_eq!(
        Param::inout::<i32>("x"),
        Param::buffer::<i32>("x", Access::ReadWrite, each)
    );
    assert_eq!(
        Param::input::<f32>("b").broadcast(),
        Param::buffer::<f32>("b", Access::Read, Split::Broadcast)
    );
    assert_eq!(
        Param::output::<f32>("p").per_item(4),
        Param::buffer::<f32>("p", Access::Write, Split::Elementwise { per_item: 4 })
    );
    assert_eq!(Param::scalar::<u32>("n").broadcast(), Param::scalar::<u32>("n"));
    // A written broadcast buffer is still refused at build.
    let r = Kernel::builder("k")
        .param(Param::output::<f32>("o").broadcast())
        .cpu(|_| {})
        .build();
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
}

#[test]
fn launch_items_fills_offset_and_count_on_every_device() {
    let rt = runtime();
    let k = kernels::vector_add().unwrap();
    for dev in rt.devices() {
        for n in [1usize, 1000, 70_001] {
            let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let b: Vec<f32> = (0..n).map(|i| 0.5 * i as f32).collect();
            let da = dev.upload(&a).unwrap();
            let db = dev.upload(&b).unwrap();
            let mut dc = dev.upload(&vec![f32::NAN; n]).unwrap();
            dev.launch_items(&k, n, vec![Arg::input(&da), Arg::input(&db), Arg::output(&mut dc)])
                .unwrap();
            let c = dc.to_vec().unwrap();
            for i in 0..n {
                assert_eq!(c[i], a[i] + b[i], "item {i} of {n} on {}", dev.label());
            }
        }
        // Too many or too few arguments: counted without Offset/Count.
        let da = dev.upload(&[1.0f32]).unwrap();
        match dev.launch_items(&k, 1, vec![Arg::input(&da)]) {
            Err(Error::ArgCount {
                expected: 3, got: 1, ..
            }) => {}
            other => panic!("expected ArgCount 3/1, got {other:?}"),
        }
    }
}

#[test]
fn scalar_conversions_refuse_truncation() {
    assert_eq!(Scalar::u32_from("n", 7).unwrap(), Scalar::U32(7));
    let too_big = u32::MAX as usize + 1;
    match Scalar::u32_from("n", too_big) {
        Err(e @ Error::ScalarRange { .. }) => {
            let t = e.to_string();
            assert!(t.contains("n = 4294967296") && t.contains("u32"), "{t}");
        }
        other => panic!("expected ScalarRange, got {other:?}"),
    }
    assert!(matches!(Arg::count(too_big), Err(Error::ScalarRange { .. })));
    assert!(matches!(Scalar::i32_from("d", -3), Ok(Scalar::I32(-3))));
    assert!(matches!(Scalar::i32_from("d", 1 << 40), Err(Error::ScalarRange { .. })));
    assert_eq!(Scalar::f32_exact("s", 2.0).unwrap(), Scalar::F32(2.0));
    assert!(matches!(Scalar::f32_exact("s", 0.1), Err(Error::ScalarRange { .. })));
    let rt = runtime();
    let k = kernels::vector_add().unwrap();
    let dev = rt.device("cpu").unwrap();
    let a = dev.alloc::<f32>(1).unwrap();
    let mut c = dev.alloc::<f32>(1).unwrap();
    let r = dev.launch_items(&k, too_big, vec![Arg::input(&a), Arg::input(&a), Arg::output(&mut c)]);
    assert!(matches!(r, Err(Error::ScalarRange { .. })), "{r:?}");
}

#[test]
fn an_f64_literal_for_an_f32_parameter_gets_a_hint() {
    let rt = runtime();
    let k = Kernel::builder("scale")
        .param(Param::output::<f32>("y"))
        .param(Param::scalar::<f32>("s"))
        .cpu(|_| {})
        .build()
        .unwrap();
    let dev = rt.device("cpu").unwrap();
    let mut y = dev.alloc::<f32>(4).unwrap();
    let err = dev
        .launch(&k, &LaunchConfig::new(1u32, 4u32), &[Arg::output(&mut y), 2.0.into()])
        .expect_err("an f64 for an f32 parameter must be refused");
    let text = err.to_string();
    assert!(matches!(err, Error::ArgType { index: 1, .. }), "{err:?}");
    assert!(text.contains("2.0f32"), "no hint in: {text}");
    let k = kernels::vector_add().unwrap();
    let a = dev.alloc::<f32>(4).unwrap();
    let mut c = dev.alloc::<f32>(4).unwrap();
    let err = dev
        .launch(
            &k,
            &LaunchConfig::new(1u32, 4u32),
            &[
                Arg::input(&a),
                Arg::input(&a),
                Arg::output(&mut c),
                0u32.into(),
                4.into(),
            ],
        )
        .expect_err("an i32 count must be refused");
    assert!(err.to_string().contains("5u32"), "no hint in: {err}");
}
