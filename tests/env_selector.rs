//! `OFFLOAD_DEVICE`: a valid value selects, an invalid one is a typed error that
//! lists the valid values. One test in its own process, because it sets the
//! environment.

use offload::{Error, Runtime};

#[test]
fn offload_device_env() {
    let rt = Runtime::builder()
        .backends(&[offload::BackendKind::Cpu])
        .build()
        .unwrap();
    // SAFETY: this test binary has a single test, so no other thread reads the environment.
    unsafe { std::env::set_var("OFFLOAD_DEVICE", "cpu:0") };
    assert_eq!(rt.default_device().unwrap().label(), "cpu:0");
    // SAFETY: single-test binary, as above.
    unsafe { std::env::set_var("OFFLOAD_DEVICE", "gpu-please") };
    let e = rt.default_device().unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            Error::InvalidSelector {
                source_name: "OFFLOAD_DEVICE",
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("gpu-please") && msg.contains("valid selectors are all, cpu, cpu:0"),
        "{msg}"
    );
    // SAFETY: single-test binary, as above.
    unsafe { std::env::set_var("OFFLOAD_DEVICE", "opencl:9") };
    assert!(matches!(rt.default_device(), Err(Error::NoSuchDevice { .. })));
    // SAFETY: single-test binary, as above.
    unsafe { std::env::remove_var("OFFLOAD_DEVICE") };
    assert_eq!(rt.default_device().unwrap().label(), "cpu:0");
}
