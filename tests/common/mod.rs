//! Shared test helpers: device enumeration with `OFFLOAD_REQUIRE`, a seeded RNG,
//! relative-error checks against a float64 reference.
#![allow(dead_code)]

use offload::{Arg, BackendKind, Device, LaunchConfig, Runtime, kernels};

/// Backends named in `OFFLOAD_REQUIRE` (comma list of cpu, opencl, cuda, nvrtc).
pub fn required() -> Vec<String> {
    std::env::var("OFFLOAD_REQUIRE")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether `what` (`cpu`, `opencl`, `cuda`, `nvrtc`) is required.
pub fn is_required(what: &str) -> bool {
    required().iter().any(|r| r == what)
}

/// Skip (print) or fail (if required) for a missing capability.
pub fn missing(what: &str, why: &str) {
    if is_required(what) {
        panic!("OFFLOAD_REQUIRE names {what}, but it is unavailable: {why}");
    }
    println!("SKIP {what}: {why}");
}

/// A runtime with every backend, checking `OFFLOAD_REQUIRE` against what was found.
pub fn runtime() -> Runtime {
    let rt = Runtime::new().expect("runtime");
    for b in BackendKind::ALL {
        if !rt.has(b) {
            let why = rt
                .unavailable()
                .iter()
                .find(|u| u.backend == b)
                .map_or("no device".to_string(), |u| u.reason.clone());
            missing(b.name(), &why);
        }
    }
    rt
}

/// Every available device (required backends checked by `runtime`).
pub fn devices(rt: &Runtime) -> Vec<Device> {
    rt.devices().to_vec()
}

/// Devices of one backend, skipping (or failing when required) if none.
pub fn devices_of(rt: &Runtime, b: BackendKind) -> Vec<Device> {
    let v: Vec<Device> = rt.devices().iter().filter(|d| d.backend() == b).cloned().collect();
    if v.is_empty() {
        let why = rt
            .unavailable()
            .iter()
            .find(|u| u.backend == b)
            .map_or("no device".into(), |u| u.reason.clone());
        missing(b.name(), &why);
    }
    v
}

/// splitmix64: small, seeded, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    /// A generator seeded from `seed` mixed with the clock (fresh inputs every run);
    /// the seed used is printed so a failure can be replayed with `OFFLOAD_TEST_SEED`.
    pub fn fresh(tag: &str) -> Rng {
        let seed = std::env::var("OFFLOAD_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        println!("{tag}: OFFLOAD_TEST_SEED={seed}");
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    /// `n` values uniform in [lo, hi), none exactly zero.
    pub fn vec_f32(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                loop {
                    let v = self.f32_in(lo, hi);
                    if v != 0.0 {
                        break v;
                    }
                }
            })
            .collect()
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// ‖out − ref‖₂ / ‖ref‖₂ in float64; NaN or infinity anywhere gives +inf.
pub fn rel_err(out: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "length of result vs reference");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (o, r) in out.iter().zip(reference) {
        if !o.is_finite() {
            return f64::INFINITY;
        }
        let d = *o as f64 - r;
        num += d * d;
        den += r * r;
    }
    if den == 0.0 { num.sqrt() } else { (num / den).sqrt() }
}

/// Assert a relative error below `tol`, naming the case.
pub fn assert_close(what: &str, out: &[f32], reference: &[f64], tol: f64) {
    let e = rel_err(out, reference);
    assert!(e <= tol, "{what}: relative error {e:e} exceeds {tol:e}");
}

/// Vector add of `n` fresh random items on `dev` with `cfg`, the output poisoned
/// with NaN first, checked against a float64 reference.
pub fn vector_add_on(dev: &Device, n: usize, cfg: LaunchConfig, rng: &mut Rng) {
    let k = kernels::vector_add().expect("vector_add");
    let a = rng.vec_f32(n, -100.0, 100.0);
    let b = rng.vec_f32(n, -100.0, 100.0);
    let da = dev.upload(&a).expect("upload a");
    let db = dev.upload(&b).expect("upload b");
    let mut dc = dev.upload(&vec![f32::NAN; n]).expect("poisoned c");
    dev.launch(
        &k,
        &cfg,
        &[
            Arg::input(&da),
            Arg::input(&db),
            Arg::output(&mut dc),
            0u32.into(),
            (n as u32).into(),
        ],
    )
    .expect("launch");
    let c = dc.to_vec().expect("read c");
    let reference: Vec<f64> = a.iter().zip(&b).map(|(x, y)| *x as f64 + *y as f64).collect();
    assert_close(
        &format!("vector_add n={n} {cfg:?} on {}", dev.label()),
        &c,
        &reference,
        1e-6,
    );
}

/// [`vector_add_on`] with the device's default configuration for `n` items.
pub fn vector_add_ok(dev: &Device, n: usize, rng: &mut Rng) {
    vector_add_on(dev, n, LaunchConfig::for_items(n, dev.info()), rng);
}

/// `out[i] = x[i] + add`, with a nonce in the source so the first build is cold.
pub fn adder(add: f32, nonce: u64) -> offload::Kernel {
    let src = format!(
        "// nonce {nonce}\n__kernel void adder(__global const float* x, __global float* out, const uint n) {{\n  \
         uint i = get_global_id(0); if (i < n) out[i] = x[i] + {add:.1}f;\n}}\n"
    );
    // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
    unsafe {
        offload::Kernel::builder("adder")
            .param(offload::Param::buffer::<f32>(
                "x",
                offload::Access::Read,
                offload::Split::Elementwise { per_item: 1 },
            ))
            .param(offload::Param::buffer::<f32>(
                "out",
                offload::Access::Write,
                offload::Split::Elementwise { per_item: 1 },
            ))
            .param(offload::Param::scalar::<u32>("n"))
            .extent_from("x", &["n"], 1)
            .extent_from("out", &["n"], 1)
            .opencl(src, "adder")
    }
    .build()
    .unwrap()
}
