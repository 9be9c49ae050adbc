//! Conformance tests of the OpenCL backend on every OpenCL device (PoCL on a
//! CPU-only machine). With `OFFLOAD_REQUIRE=opencl` a missing device fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Rng, assert_close, devices_of, rel_err};
use offload::profile::{Clock, Stage};
use offload::{
    Access, Arg, BackendKind, Device, Dim3, Error, Extent, Kernel, LaunchConfig, Param, Runtime, Split, kernels,
};

fn opencl() -> (Runtime, Vec<Device>) {
    let rt = common::runtime();
    let devs = devices_of(&rt, BackendKind::OpenCl);
    (rt, devs)
}

#[test]
fn device_info_is_filled_from_the_driver() {
    let (_rt, devs) = opencl();
    for (i, d) in devs.iter().enumerate() {
        let info = d.info();
        println!("{info:#?}");
        assert_eq!(info.index, i, "OpenCL devices are indexed per backend");
        assert_eq!(d.label(), format!("opencl:{i}"));
        assert!(!info.name.is_empty() && !info.vendor.is_empty());
        assert!(
            info.driver_version.contains("OpenCL"),
            "driver version names the platform: {}",
            info.driver_version
        );
        assert!(info.compute_units >= 1);
        assert!(info.warp_size >= 1 && info.warp_size <= info.max_threads_per_block);
        assert!(info.max_threads_per_block >= 1);
        assert!(info.max_block_dims.iter().all(|&b| b >= 1));
        assert_eq!(info.max_grid_dims, [u32::MAX; 3]);
        assert!(info.max_global_size >= u32::MAX as u64);
        assert!(info.local_mem_bytes >= 1024);
        assert!(info.max_alloc_bytes >= 1 << 20 && info.max_alloc_bytes <= info.global_mem_bytes);
        assert_eq!(info.compute_capability, None);
    }
}

#[test]
fn vector_add_matches_f64_reference_with_device_clocks() {
    let (rt, devs) = opencl();
    let mut rng = Rng::fresh("vector_add");
    for d in &devs {
        for n in [1usize, 1000, (1 << 20) + 3] {
            common::vector_add_ok(d, n, &mut rng);
        }
        let p = rt.profile();
        for stage in [Stage::HostToDevice, Stage::Kernel, Stage::DeviceToHost] {
            let recs: Vec<_> = p.device_records(d.label()).filter(|r| r.stage == stage).collect();
            assert!(!recs.is_empty(), "{stage:?} recorded on {}", d.label());
            assert!(
                recs.iter().all(|r| r.clock == Clock::Device),
                "{stage:?} on {} is timed by the device clock",
                d.label()
            );
        }
    }
}

#[test]
fn noop_runs_with_1d_2d_3d_configs() {
    let (rt, devs) = opencl();
    let k = kernels::noop().unwrap();
    for d in &devs {
        let cfgs = [
            LaunchConfig::new(1, 1),
            LaunchConfig::for_items(100_000, d.info()),
            LaunchConfig::new((3, 5), (4, 2)),
            LaunchConfig::new((2, 2, 2), (2, 2, 2)),
        ];
        for cfg in cfgs {
            d.launch(&k, &cfg, &[0u32.into(), 1u32.into()]).unwrap();
        }
        let kernels = rt
            .profile()
            .device_records(d.label())
            .filter(|r| r.stage == Stage::Kernel && r.label == "noop" && r.clock == Clock::Device)
            .count();
        assert_eq!(
            kernels,
            cfgs.len(),
            "one device-timed record per noop launch on {}",
            d.label()
        );
        // Still correct afterwards.
        common::vector_add_ok(d, 4096, &mut Rng::fresh("noop then vector_add"));
    }
}

const REDUCE_SRC: &str = r#"
__kernel void block_sum(__global const float* x, __global float* partial, __local float* scratch, const uint n) {
    uint lid = get_local_id(0);
    uint gid = get_global_id(0);
    uint size = get_local_size(0);
    scratch[lid] = gid < n ? x[gid] : 0.0f;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint s = size / 2; s > 0; s >>= 1) {
        if (lid < s) scratch[lid] += scratch[lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) partial[get_group_id(0)] = scratch[0];
}
"#;

fn block_sum() -> Kernel {
    // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
    unsafe {
        Kernel::builder("block_sum")
            .param(Param::buffer::<f32>("x", Access::Read, Split::Broadcast))
            .param(Param::buffer::<f32>(
                "partial",
                Access::Write,
                Split::Elementwise { per_item: 1 },
            ))
            .param(Param::local::<f32>("scratch"))
            .param(Param::scalar::<u32>("n"))
            .extent_from("x", &["n"], 1)
            .extent("partial", Extent::Groups { per: 1 })
            .opencl(REDUCE_SRC, "block_sum")
    }
    .build()
    .unwrap()
}

#[test]
fn local_memory_argument_work_group_reduction() {
    let (_rt, devs) = opencl();
    let k = block_sum();
    let mut rng = Rng::fresh("block_sum");
    for d in &devs {
        let block = 64u32.min(d.info().max_threads_per_block);
        let n = 10_000usize + rng.below(1000) as usize;
        let groups = n.div_ceil(block as usize);
        let x = rng.vec_f32(n, -1.0, 1.0);
        let dx = d.upload(&x).unwrap();
        let mut dp = d.upload(&vec![f32::NAN; groups]).unwrap();
        d.launch(
            &k,
            &LaunchConfig::new(groups as u32, block),
            &[
                Arg::input(&dx),
                Arg::output(&mut dp),
                Arg::local(block as usize),
                (n as u32).into(),
            ],
        )
        .unwrap();
        let partial = dp.to_vec().unwrap();
        let reference: Vec<f64> = x
            .chunks(block as usize)
            .map(|c| c.iter().map(|v| *v as f64).sum())
            .collect();
        assert_close(&format!("block sums on {}", d.label()), &partial, &reference, 1e-5);
    }
}

const GRID2D_SRC: &str = r#"
__kernel void affine2d(__global const float* a, __global float* out, const uint w, const uint h, const float s) {
    uint x = get_global_id(0);
    uint y = get_global_id(1);
    if (x < w && y < h) out[y * w + x] = a[y * w + x] * s + (float)x - 0.5f * (float)y;
}
"#;

#[test]
fn two_dimensional_grid_launch() {
    let (_rt, devs) = opencl();
    // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
    let k = unsafe {
        Kernel::builder("affine2d")
            .param(Param::buffer::<f32>("a", Access::Read, Split::Broadcast))
            .param(Param::buffer::<f32>(
                "out",
                Access::Write,
                Split::Elementwise { per_item: 1 },
            ))
            .param(Param::scalar::<u32>("w"))
            .param(Param::scalar::<u32>("h"))
            .param(Param::scalar::<f32>("s"))
            .extent_from("a", &["w", "h"], 1)
            .extent_from("out", &["w", "h"], 1)
            .opencl(GRID2D_SRC, "affine2d")
    }
    .build()
    .unwrap();
    let mut rng = Rng::fresh("affine2d");
    for d in &devs {
        let (w, h) = (203u32, 77u32);
        let n = (w * h) as usize;
        let a = rng.vec_f32(n, -10.0, 10.0);
        let s = rng.f32_in(0.5, 2.0);
        let da = d.upload(&a).unwrap();
        let mut dout = d.upload(&vec![f32::NAN; n]).unwrap();
        let block = Dim3::new(16, 4, 1);
        let cfg = LaunchConfig::new((w.div_ceil(16), h.div_ceil(4)), block);
        d.launch(
            &k,
            &cfg,
            &[Arg::input(&da), Arg::output(&mut dout), w.into(), h.into(), s.into()],
        )
        .unwrap();
        let out = dout.to_vec().unwrap();
        let reference: Vec<f64> = (0..n)
            .map(|i| {
                let (x, y) = ((i as u32 % w) as f64, (i as u32 / w) as f64);
                a[i] as f64 * s as f64 + x - 0.5 * y
            })
            .collect();
        assert_close(&format!("2-D grid on {}", d.label()), &out, &reference, 1e-6);
    }
}

const SCALARS_SRC: &str = r#"
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
__kernel void scalars(__global ulong* out, const int a, const uint b, const long c, const ulong d,
                      const float e, const double f) {
    if (get_global_id(0) != 0) return;
    out[0] = (ulong)(long)a;
    out[1] = (ulong)b;
    out[2] = (ulong)c;
    out[3] = d;
    out[4] = (ulong)as_uint(e);
    out[5] = as_ulong(f);
}
"#;

#[test]
fn scalar_arguments_of_all_six_types_arrive_intact() {
    let (_rt, devs) = opencl();
    // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
    let k = unsafe {
        Kernel::builder("scalars")
            .param(Param::buffer::<u64>(
                "out",
                Access::Write,
                Split::Elementwise { per_item: 6 },
            ))
            .param(Param::scalar::<i32>("a"))
            .param(Param::scalar::<u32>("b"))
            .param(Param::scalar::<i64>("c"))
            .param(Param::scalar::<u64>("d"))
            .param(Param::scalar::<f32>("e"))
            .param(Param::scalar::<f64>("f"))
            .opencl(SCALARS_SRC, "scalars")
    }
    .build()
    .unwrap();
    let mut rng = Rng::fresh("scalars");
    for d in &devs {
        let a = -(rng.below(1 << 30) as i32) - 1;
        let b = u32::MAX - rng.below(1000) as u32;
        let c = -((rng.next_u64() >> 2) as i64) - 1;
        let dd = u64::MAX - rng.below(1 << 40);
        let e = rng.f32_in(-1e6, 1e6);
        let f = -(rng.next_u64() as f64) * 1e-300;
        let mut out = d.upload(&[0xDEAD_BEEF_u64; 6]).unwrap();
        d.launch(
            &k,
            &LaunchConfig::new(1, 1),
            &[
                Arg::output(&mut out),
                a.into(),
                b.into(),
                c.into(),
                dd.into(),
                e.into(),
                f.into(),
            ],
        )
        .unwrap();
        let got = out.to_vec().unwrap();
        assert_eq!(got[0] as i64, a as i64, "i32 on {}", d.label());
        assert_eq!(got[1], b as u64, "u32 on {}", d.label());
        assert_eq!(got[2] as i64, c, "i64 on {}", d.label());
        assert_eq!(got[3], dd, "u64 on {}", d.label());
        assert_eq!(f32::from_bits(got[4] as u32), e, "f32 on {}", d.label());
        assert_eq!(f64::from_bits(got[5]), f, "f64 on {}", d.label());
    }
}

#[test]
fn bad_input_gives_typed_errors_and_the_device_stays_usable() {
    let (rt, devs) = opencl();
    let cpu = rt.device("cpu").unwrap();
    let mut rng = Rng::fresh("bad input");
    let va = kernels::vector_add().unwrap();
    for d in &devs {
        let n = 256;
        let da = d.upload(&rng.vec_f32(n, 1.0, 2.0)).unwrap();
        let db = d.upload(&rng.vec_f32(n, 1.0, 2.0)).unwrap();
        let mut dc = d.alloc::<f32>(n).unwrap();
        let cfg = LaunchConfig::for_items(n, d.info());

        // 1. Source that does not compile: the build log and the kernel name are in the error.
        // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
        let broken = unsafe {
            Kernel::builder("broken_kernel")
                .param(Param::scalar::<u32>("n"))
                .opencl(
                    "__kernel void broken_kernel(uint n) { this is not C; }",
                    "broken_kernel",
                )
        }
        .build()
        .unwrap();
        match d.build(&broken) {
            Err(e @ Error::Build { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("broken_kernel"), "names the kernel: {msg}");
                assert!(msg.to_lowercase().contains("error"), "carries the build log: {msg}");
                println!("build error on {}:\n{msg}", d.label());
            }
            other => panic!("expected Error::Build, got {other:?}"),
        }
        let e = d.launch(&broken, &LaunchConfig::new(1, 1), &[1u32.into()]).unwrap_err();
        assert!(matches!(e, Error::Build { .. }), "launch of a broken kernel: {e:?}");
        common::vector_add_ok(d, 333, &mut rng);

        // 2. Entry point not in the program.
        // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
        let wrong_entry = unsafe {
            Kernel::builder("wrong_entry")
                .param(Param::scalar::<u32>("n"))
                .opencl("__kernel void present(uint n) { }", "absent")
        }
        .build()
        .unwrap();
        match d.build(&wrong_entry) {
            Err(Error::EntryNotFound { kernel, entry, .. }) => {
                assert_eq!((kernel.as_str(), entry.as_str()), ("wrong_entry", "absent"));
            }
            other => panic!("expected Error::EntryNotFound, got {other:?}"),
        }
        common::vector_add_ok(d, 334, &mut rng);

        // 3. Wrong argument count.
        let e = d.launch(&va, &cfg, &[Arg::input(&da), Arg::input(&db)]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::ArgCount {
                    expected: 5,
                    got: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        // 4. Wrong argument type (f32 scalar where the count is u32, buffer where a scalar goes).
        let e = d
            .launch(
                &va,
                &cfg,
                &[
                    Arg::input(&da),
                    Arg::input(&db),
                    Arg::output(&mut dc),
                    0u32.into(),
                    1.5f32.into(),
                ],
            )
            .unwrap_err();
        assert!(matches!(e, Error::ArgType { index: 4, .. }), "{e:?}");
        let e = d
            .launch(
                &va,
                &cfg,
                &[
                    Arg::input(&da),
                    3u32.into(),
                    Arg::output(&mut dc),
                    0u32.into(),
                    1u32.into(),
                ],
            )
            .unwrap_err();
        assert!(matches!(e, Error::ArgType { index: 1, .. }), "{e:?}");
        // 5. Block above the device's max work-group size.
        let too_big = LaunchConfig::new(1, d.info().max_threads_per_block + 1);
        let e = d
            .launch(
                &va,
                &too_big,
                &[
                    Arg::input(&da),
                    Arg::input(&db),
                    Arg::output(&mut dc),
                    0u32.into(),
                    1u32.into(),
                ],
            )
            .unwrap_err();
        match &e {
            Error::LaunchConfig { why, .. } => assert!(why.contains(&d.info().max_threads_per_block.to_string())),
            other => panic!("expected Error::LaunchConfig, got {other:?}"),
        }
        // 6. Allocation above the device's max allocation.
        let too_many = (d.info().max_alloc_bytes / 4 + 1) as usize;
        match d.alloc::<f32>(too_many) {
            Err(Error::OutOfMemory { limit, requested, .. }) => {
                assert_eq!(limit, d.info().max_alloc_bytes);
                assert!(requested > limit);
            }
            other => panic!("expected Error::OutOfMemory, got {other:?}"),
        }
        // 7. Host slice length mismatch, both directions; host data untouched.
        let mut short = vec![7.0f32; n - 1];
        assert!(matches!(
            dc.write(&short),
            Err(Error::LengthMismatch {
                host: 255,
                buffer: 256,
                ..
            })
        ));
        assert!(matches!(dc.read(&mut short), Err(Error::LengthMismatch { .. })));
        assert!(
            short.iter().all(|v| *v == 7.0),
            "a refused read leaves the host slice untouched"
        );
        // 8. A buffer from the CPU device passed to an OpenCL launch.
        let on_cpu = cpu.upload(&rng.vec_f32(n, 1.0, 2.0)).unwrap();
        let e = d
            .launch(
                &va,
                &cfg,
                &[
                    Arg::input(&on_cpu),
                    Arg::input(&db),
                    Arg::output(&mut dc),
                    0u32.into(),
                    (n as u32).into(),
                ],
            )
            .unwrap_err();
        match e {
            Error::ForeignBuffer { owner, device, .. } => {
                assert_eq!(owner, "cpu:0");
                assert_eq!(device, d.label());
            }
            other => panic!("expected Error::ForeignBuffer, got {other:?}"),
        }
        // 9. Signature and OpenCL source disagree on the parameter count.
        // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
        let mismatched = unsafe {
            Kernel::builder("mismatched")
                .param(Param::scalar::<u32>("n"))
                .opencl("__kernel void mismatched(uint n, uint m) { }", "mismatched")
        }
        .build()
        .unwrap();
        assert!(matches!(d.build(&mismatched), Err(Error::InvalidInput(_))));

        // 10. A block the kernel's source forbids (reqd_work_group_size) is refused by the driver.
        // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
        let fixed = unsafe {
            Kernel::builder("fixed_wg")
                .param(Param::buffer::<f32>(
                    "x",
                    Access::ReadWrite,
                    Split::Elementwise { per_item: 1 },
                ))
                .opencl(
                    "__kernel __attribute__((reqd_work_group_size(8, 1, 1))) void fixed_wg(__global float* x) \
                 { x[get_global_id(0)] += 1.0f; }",
                    "fixed_wg",
                )
        }
        .build()
        .unwrap();
        let mut dx = d.upload(&[1.0f32; 32]).unwrap();
        match d.launch(&fixed, &LaunchConfig::new(2, 16), &[Arg::output(&mut dx)]) {
            Err(Error::LaunchConfig { why, .. }) => assert!(why.contains("16 work-items"), "{why}"),
            other => panic!("expected Error::LaunchConfig, got {other:?}"),
        }
        d.launch(&fixed, &LaunchConfig::new(4, 8), &[Arg::output(&mut dx)])
            .unwrap();
        assert_eq!(dx.to_vec().unwrap(), vec![2.0f32; 32], "the refused launch ran nothing");

        // Still usable after every error.
        common::vector_add_ok(d, 4099, &mut rng);
    }
}

#[test]
fn concurrent_launches_from_8_threads() {
    let (_rt, devs) = opencl();
    let seed = Rng::fresh("concurrent").next_u64();
    for d in &devs {
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let d = d.clone();
                s.spawn(move || {
                    let mut rng = Rng(seed ^ (t * 0x9E37_79B9));
                    for i in 0..10 {
                        common::vector_add_ok(&d, 10_000 + 37 * i + t as usize, &mut rng);
                    }
                });
            }
        });
    }
}

// ---------------------------------------------------------------------------
// Program binary cache and discovery without a platform: run in child processes
// of this test binary so their environment (OFFLOAD_CACHE_DIR, OCL_ICD_VENDORS)
// is set before the process starts.

/// Run the ignored test `name` of this binary in a child process with `env`.
fn run_child(name: &str, env: &[(&str, &Path)]) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("OFFLOAD_REQUIRE");
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("--- child {name} ---\n{text}--- end child ---");
    assert!(out.status.success(), "child test {name} failed");
    assert!(text.contains("1 passed"), "child test {name} ran");
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir().join(format!("offload-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn program_binary_cache_is_written_and_reused() {
    let (_rt, devs) = opencl();
    if devs.is_empty() {
        return; // skipped (printed by `opencl()`)
    }
    let dir = temp_dir("cl-cache");
    run_child("child_program_binary_cache", &[("OFFLOAD_CACHE_DIR", &dir)]);
    std::fs::remove_dir_all(&dir).ok();
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("opencl"))
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
    v.sort();
    v
}

/// Run `k` in a fresh runtime; returns (build seconds, max |out - x - expect_add|).
fn run_adder(k: &Kernel, x: &[f32], expect_add: f32) -> (f64, f64) {
    let rt = Runtime::new().unwrap();
    let d = rt.device("opencl").unwrap();
    let t = std::time::Instant::now();
    d.build(k).unwrap();
    let build_s = t.elapsed().as_secs_f64();
    let dx = d.upload(x).unwrap();
    let mut dout = d.upload(&vec![f32::NAN; x.len()]).unwrap();
    d.launch(
        k,
        &LaunchConfig::for_items(x.len(), d.info()),
        &[Arg::input(&dx), Arg::output(&mut dout), (x.len() as u32).into()],
    )
    .unwrap();
    let out = dout.to_vec().unwrap();
    let reference: Vec<f64> = x.iter().map(|v| *v as f64 + expect_add as f64).collect();
    (build_s, rel_err(&out, &reference))
}

#[test]
#[ignore = "run by program_binary_cache_is_written_and_reused in a child process"]
fn child_program_binary_cache() {
    let dir = PathBuf::from(std::env::var_os("OFFLOAD_CACHE_DIR").expect("OFFLOAD_CACHE_DIR set by the parent"));
    let mut rng = Rng::fresh("binary cache");
    let nonce = rng.next_u64();
    let x = rng.vec_f32(5000, -3.0, 3.0);
    drop(Runtime::new().unwrap()); // discovery may cache its probe program
    let before = cache_files(&dir);

    // Cold: a source build writes one entry per program.
    let one = common::adder(1.0, nonce);
    let (cold_s, err) = run_adder(&one, &x, 1.0);
    assert!(err < 1e-6, "cold build result: rel err {err}");
    let after_one = cache_files(&dir);
    let new_one: Vec<_> = after_one.iter().filter(|p| !before.contains(p)).cloned().collect();
    assert_eq!(
        new_one.len(),
        1,
        "one cache entry written for the first program: {new_one:?}"
    );
    let file_one = new_one[0].clone();
    let two = common::adder(2.0, nonce);
    run_adder(&two, &x, 2.0);
    let new_two: Vec<_> = cache_files(&dir)
        .into_iter()
        .filter(|p| !after_one.contains(p))
        .collect();
    assert_eq!(new_two.len(), 1, "one cache entry written for the second program");
    let file_two = new_two[0].clone();
    let bytes_one = std::fs::read(&file_one).unwrap();
    let bytes_two = std::fs::read(&file_two).unwrap();

    // Warm: a fresh runtime loads the entry (unchanged on disk) and computes correctly.
    let (warm_s, err) = run_adder(&one, &x, 1.0);
    assert!(err < 1e-6, "warm (cached binary) result: rel err {err}");
    assert_eq!(
        std::fs::read(&file_one).unwrap(),
        bytes_one,
        "a cache hit does not rewrite the entry"
    );
    println!(
        "program build: cold {:.1} ms, warm {:.1} ms",
        cold_s * 1e3,
        warm_s * 1e3
    );

    // Program two's entry under program one's key is refused (each entry is bound
    // to its key): a fresh runtime building program one rebuilds it from source.
    std::fs::write(&file_one, &bytes_two).unwrap();
    let (_, err) = run_adder(&one, &x, 1.0);
    assert!(
        err < 1e-6,
        "another program's cached binary must not run: rel err {err}"
    );

    // A corrupt entry falls back to a source build, gives correct results and is replaced.
    std::fs::write(&file_one, b"definitely not a program binary").unwrap();
    let (_, err) = run_adder(&one, &x, 1.0);
    assert!(err < 1e-6, "after a corrupt entry: rel err {err}");
    let rewritten = std::fs::read(&file_one).unwrap();
    assert_ne!(rewritten, b"definitely not a program binary", "corrupt entry replaced");
    // Damage inside the binary (header intact) is caught by the content hash.
    let mut damaged = rewritten.clone();
    let mid = damaged.len() / 2 + 30;
    damaged[mid] ^= 0x5a;
    std::fs::write(&file_one, &damaged).unwrap();
    let (_, err) = run_adder(&one, &x, 1.0);
    assert!(err < 1e-6, "after a damaged entry: rel err {err}");
}

#[test]
fn no_platform_makes_opencl_unavailable_with_a_reason() {
    // With an ICD loader installed, no vendor file means no platform; on a machine
    // without the loader itself the library is missing first. Either is the right
    // reason for its environment.
    let dir = temp_dir("no-icd");
    run_child(
        "child_no_platform",
        &[
            ("OCL_ICD_VENDORS", &dir.join("nonexistent")),
            (
                "OFFLOAD_TEST_EXPECT_REASON",
                Path::new("no OpenCL platform|libOpenCL.so.1 could not be loaded"),
            ),
        ],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_opencl_library_makes_opencl_unavailable_with_a_reason() {
    // An empty file named libOpenCL.so.1 first on the search path makes dlopen fail.
    let dir = temp_dir("no-libopencl");
    std::fs::write(dir.join("libOpenCL.so.1"), b"").unwrap();
    run_child(
        "child_no_platform",
        &[
            ("LD_LIBRARY_PATH", &dir),
            (
                "OFFLOAD_TEST_EXPECT_REASON",
                Path::new("libOpenCL.so.1 could not be loaded"),
            ),
        ],
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
#[ignore = "run by the no-platform and missing-library tests in a child process"]
fn child_no_platform() {
    let rt = Runtime::new().unwrap();
    assert!(!rt.has(BackendKind::OpenCl));
    let u = rt
        .unavailable()
        .iter()
        .find(|u| u.backend == BackendKind::OpenCl)
        .expect("opencl listed as unavailable");
    println!("opencl unavailable: {}", u.reason);
    // One of `|`-separated alternatives.
    let expect = std::env::var("OFFLOAD_TEST_EXPECT_REASON").expect("set by the parent");
    assert!(!u.reason.trim().is_empty(), "a reason is given");
    assert!(
        expect.split('|').any(|e| u.reason.contains(e)),
        "reason {:?} should contain one of {expect:?}",
        u.reason
    );
    // The rest of the runtime works.
    common::vector_add_ok(&rt.device("cpu").unwrap(), 1000, &mut Rng::fresh("cpu without opencl"));
    let e = rt.device("opencl").unwrap_err();
    assert!(e.to_string().contains("opencl unavailable"), "{e}");
}

// ---------------------------------------------------------------------------
// The signature is checked against the parameter types the OpenCL source declares.

/// `out[i] = x[i] * s`, with a nonce so the first build is from source.
fn scale_src(nonce: u64) -> String {
    format!(
        "// nonce {nonce}\ntypedef float real;\n__kernel void scale(__global const real* x, __global float4* out4, \
         const float s, __local float* tmp, const uint n) {{\n  uint i = get_global_id(0);\n  \
         if (i < n) {{ __global float* out = (__global float*)out4; out[i] = x[i] * s; }}\n}}\n"
    )
}

fn scale_kernel(src: &str, params: [Param; 5]) -> Kernel {
    let b = params
        .into_iter()
        .fold(Kernel::builder("scale"), |b, p| b.param(p))
        .extent_from("x", &["n"], 1)
        .extent_from("out", &["n"], 1);
    // SAFETY: test kernel source; it touches x[i], out[i] only for i < n, the declared extents.
    unsafe { b.opencl(src, "scale") }.build().unwrap()
}

fn scale_params() -> [Param; 5] {
    let each = Split::Elementwise { per_item: 1 };
    [
        Param::buffer::<f32>("x", Access::Read, each),
        Param::buffer::<f32>("out", Access::Write, each),
        Param::scalar::<f32>("s"),
        Param::local::<f32>("tmp"),
        Param::scalar::<u32>("n"),
    ]
}

#[test]
fn parameter_types_are_checked_against_the_opencl_source() {
    let (_rt, devs) = opencl();
    if devs.is_empty() {
        return; // skipped (printed by `opencl()`)
    }
    let src = scale_src(Rng::fresh("signature check").next_u64());
    // The right signature (a typedef'd pointee, float4* over f32 elements) builds and runs.
    let good = scale_kernel(&src, scale_params());
    let n = 64usize;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    for d in &devs {
        let dx = d.upload(&x).unwrap();
        let mut out = d.upload(&vec![f32::NAN; n]).unwrap();
        d.launch(
            &good,
            &LaunchConfig::new(n as u32, 16),
            &[
                Arg::input(&dx),
                Arg::output(&mut out),
                2.5f32.into(),
                Arg::local(16),
                (n as u32).into(),
            ],
        )
        .unwrap();
        let want: Vec<f32> = x.iter().map(|v| v * 2.5).collect();
        assert_eq!(out.to_vec().unwrap(), want, "on {}", d.label());
    }
    // A `float` parameter declared `i32`: refused at launch, nothing runs, both
    // types named. A new nonce makes this a source build.
    let mut params = scale_params();
    params[2] = Param::scalar::<i32>("s");
    let cold = scale_kernel(&scale_src(Rng::fresh("signature check, cold").next_u64()), params);
    for d in &devs {
        let dx = d.upload(&x).unwrap();
        let mut out = d.upload(&vec![f32::NAN; n]).unwrap();
        let e = d
            .launch(
                &cold,
                &LaunchConfig::new(n as u32, 16),
                &[
                    Arg::input(&dx),
                    Arg::output(&mut out),
                    3i32.into(),
                    Arg::local(16),
                    (n as u32).into(),
                ],
            )
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::SignatureMismatch { index: 2, .. }), "{e:?}");
        assert!(text.contains("`float s`") && text.contains("i32 scalar"), "{text}");
        assert!(out.to_vec().unwrap().iter().all(|v| v.is_nan()), "nothing ran");
    }
    // Wrong declarations, each refused with both types named. The program is the
    // one built above, so a fresh runtime loads it from the binary cache: the
    // check holds there too.
    let each = Split::Elementwise { per_item: 1 };
    let cases: [(usize, Param, &str, &str); 6] = [
        (2, Param::scalar::<i32>("s"), "float", "i32 scalar"),
        (4, Param::scalar::<i64>("n"), "uint", "i64 scalar"),
        (
            1,
            Param::buffer::<i32>("out", Access::Write, each),
            "__global float4*",
            "buffer of i32",
        ),
        (
            1,
            Param::buffer::<u8>("out", Access::Write, each),
            "__global float4*",
            "buffer of u8",
        ),
        (3, Param::scalar::<f32>("tmp"), "__local float*", "f32 scalar"),
        (2, Param::local::<f32>("s"), "float s", "local memory of f32"),
    ];
    for (index, wrong, source_type, signature) in cases {
        let mut params = scale_params();
        params[index] = wrong;
        let k = scale_kernel(&src, params);
        let rt = Runtime::new().unwrap();
        for d in rt.devices().iter().filter(|d| d.backend() == BackendKind::OpenCl) {
            let e = d
                .build(&k)
                .err()
                .unwrap_or_else(|| panic!("parameter {index} declared {signature} was accepted"));
            let text = e.to_string();
            assert!(
                matches!(&e, Error::SignatureMismatch { index: i, .. } if *i == index),
                "parameter {index} on {}: {e:?}",
                d.label()
            );
            assert!(
                text.contains(source_type) && text.contains(signature),
                "the error names `{source_type}` and `{signature}`: {text}"
            );
            // The device stays usable.
            common::vector_add_ok(d, 100, &mut Rng::fresh("after a refused kernel"));
        }
    }
    // A typedef'd type name (`real`) is not interpreted, so its element is not checked.
    let mut params = scale_params();
    params[0] = Param::buffer::<i32>("x", Access::Read, each);
    let lenient = scale_kernel(&src, params);
    for d in &devs {
        d.build(&lenient).unwrap();
    }
}
