//! `OFFLOAD_DEVICE` and `OFFLOAD_POLICY`: a valid value selects, an invalid one
//! (including one that is not valid Unicode) is a typed error that names the
//! variable and lists the valid values. One test in its own process, because it
//! sets the environment.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use offload::schedule::Policy;
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
    // Not valid Unicode: an error naming the variable and the value, not the CPU default.
    // SAFETY: single-test binary, as above.
    unsafe { std::env::set_var("OFFLOAD_DEVICE", OsString::from_vec(b"cpu:\xff0".to_vec())) };
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
        msg.contains("cpu:\u{fffd}0") && msg.contains("not valid Unicode"),
        "{msg}"
    );
    // SAFETY: single-test binary, as above.
    unsafe { std::env::remove_var("OFFLOAD_DEVICE") };
    assert_eq!(rt.default_device().unwrap().label(), "cpu:0");

    // OFFLOAD_POLICY: valid, unset, not Unicode, not a finite k.
    // SAFETY: single-test binary, as above.
    unsafe { std::env::set_var("OFFLOAD_POLICY", "dynamic:64") };
    assert_eq!(Policy::from_env().unwrap(), Policy::Dynamic { chunk: 64 });
    // SAFETY: single-test binary, as above.
    unsafe { std::env::set_var("OFFLOAD_POLICY", OsString::from_vec(b"st\xfftic".to_vec())) };
    let e = Policy::from_env().unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::InvalidInput(_)), "{msg}");
    assert!(
        msg.contains("OFFLOAD_POLICY") && msg.contains("st\u{fffd}tic") && msg.contains("not valid Unicode"),
        "{msg}"
    );
    // SAFETY: single-test binary, as above.
    unsafe { std::env::set_var("OFFLOAD_POLICY", "hguided:1e309") };
    let msg = Policy::from_env().unwrap_err().to_string();
    assert!(
        msg.contains("OFFLOAD_POLICY") && msg.contains("1e309") && msg.contains("k is not a finite number"),
        "{msg}"
    );
    // SAFETY: single-test binary, as above.
    unsafe { std::env::remove_var("OFFLOAD_POLICY") };
    assert_eq!(Policy::from_env().unwrap(), Policy::default());
}
