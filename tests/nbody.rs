//! N-body: the kernel on every available device against a float64 reference, both
//! CPU paths, split launches, the simulation's energy drift, and bad input.

mod common;

use common::{Rng, assert_close, rel_err};
use offload::kernels::{self, NbodyCpuPath};
use offload::nbody::{Bodies, DeviceAccelerations, SimConfig, Simulation, plummer, total_energy, uniform_ball};
use offload::{Arg, Device, Error, Kernel, LaunchConfig, Runtime};

const TOL: f64 = 1e-4;

/// Random bodies in a cube of side 2 with masses in [0.5, 1.5] / n (never zero).
fn random_bodies(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut pos = Vec::with_capacity(4 * n);
    for _ in 0..n {
        let p = rng.vec_f32(3, -1.0, 1.0);
        pos.extend_from_slice(&p);
        pos.push(rng.f32_in(0.5, 1.5) / n as f32);
    }
    pos
}

/// float64 accelerations of bodies `first..first + count` (float4, w = 0).
fn reference(pos: &[f32], eps2: f32, first: usize, count: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(4 * count);
    for i in first..first + count {
        let pi = [pos[4 * i] as f64, pos[4 * i + 1] as f64, pos[4 * i + 2] as f64];
        let mut a = [0f64; 3];
        for b in pos.chunks_exact(4) {
            let d = [b[0] as f64 - pi[0], b[1] as f64 - pi[1], b[2] as f64 - pi[2]];
            let r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2] + eps2 as f64;
            let s = b[3] as f64 / (r2 * r2.sqrt());
            for k in 0..3 {
                a[k] += d[k] * s;
            }
        }
        out.extend_from_slice(&[a[0], a[1], a[2], 0.0]);
    }
    out
}

/// Run the kernel on bodies `offset..offset + count` with `cfg` (NaN-poisoned output).
fn launch(
    dev: &Device,
    k: &Kernel,
    pos: &[f32],
    eps2: f32,
    offset: usize,
    count: usize,
    cfg: &LaunchConfig,
) -> offload::Result<Vec<f32>> {
    let n = pos.len() / 4;
    let dpos = dev.upload(pos)?;
    let mut dacc = dev.upload(&vec![f32::NAN; 4 * count])?;
    dev.launch(
        k,
        cfg,
        &[
            Arg::input(&dpos),
            Arg::output(&mut dacc),
            (n as u32).into(),
            eps2.into(),
            (offset as u32).into(),
            (count as u32).into(),
        ],
    )?;
    dacc.to_vec()
}

fn whole(dev: &Device, k: &Kernel, pos: &[f32], eps2: f32) -> Vec<f32> {
    let n = pos.len() / 4;
    launch(dev, k, pos, eps2, 0, n, &kernels::nbody_launch_config(n, dev.info())).expect("nbody launch")
}

#[test]
fn accelerations_on_every_device_match_float64() {
    let rt = common::runtime();
    let k = kernels::nbody().unwrap();
    let mut rng = Rng::fresh("accelerations_on_every_device_match_float64");
    let eps2 = 0.01f32 * 0.01;
    // 1024 is a multiple of the tile and block; 1000 and 777 are not.
    for n in [1024usize, 1000, 777] {
        let pos = random_bodies(&mut rng, n);
        let want = reference(&pos, eps2, 0, n);
        let mut results: Vec<(String, Vec<f32>)> = Vec::new();
        for dev in common::devices(&rt) {
            let got = whole(&dev, &k, &pos, eps2);
            let e = rel_err(&got, &want);
            println!("{} n={n}: relative error {e:e}", dev.label());
            assert_close(&format!("nbody on {} at n={n}", dev.label()), &got, &want, TOL);
            results.push((dev.label().to_string(), got));
        }
        // Cross-device agreement (when more than one device is present).
        if let Some(((first, base), rest)) = results.split_first().map(|(f, r)| ((&f.0, &f.1), r)) {
            let base64: Vec<f64> = base.iter().map(|v| *v as f64).collect();
            for (label, got) in rest {
                assert_close(&format!("{label} vs {first} at n={n}"), got, &base64, TOL);
            }
        }
    }
}

#[test]
fn both_cpu_paths_match_float64() {
    let rt = Runtime::builder()
        .backends(&[offload::BackendKind::Cpu])
        .build()
        .unwrap();
    let dev = rt.device("cpu").unwrap();
    let mut rng = Rng::fresh("both_cpu_paths_match_float64");
    let eps2 = 0.02f32 * 0.02;
    let mut paths = vec![NbodyCpuPath::Portable];
    if NbodyCpuPath::Avx512.available() {
        paths.push(NbodyCpuPath::Avx512);
    } else {
        common::missing("avx512", "this CPU has no avx512f; only the portable path is checked");
        assert!(kernels::nbody_with_cpu_path(NbodyCpuPath::Avx512).is_err());
    }
    for n in [1024usize, 777, 33, 1] {
        let pos = random_bodies(&mut rng, n);
        let want = reference(&pos, eps2, 0, n);
        for &p in &paths {
            let k = kernels::nbody_with_cpu_path(p).unwrap();
            assert_close(
                &format!("{} path on the device, n={n}", p.name()),
                &whole(&dev, &k, &pos, eps2),
                &want,
                TOL,
            );
            // The same code without a device, on an inner range.
            let (first, count) = (n / 3, n - n / 3);
            let mut out = vec![f32::NAN; 4 * count];
            kernels::nbody_host(&pos, first..first + count, eps2, &mut out, p).unwrap();
            assert_close(
                &format!("{} path on the host, n={n}, bodies {first}..{n}", p.name()),
                &out,
                &reference(&pos, eps2, first, count),
                TOL,
            );
        }
    }
    assert!(kernels::nbody_host(&[0.0; 7], 0..1, eps2, &mut [0.0; 4], NbodyCpuPath::Portable).is_err());
    assert!(kernels::nbody_host(&[0.0; 8], 1..3, eps2, &mut [0.0; 8], NbodyCpuPath::Portable).is_err());
    assert!(NbodyCpuPath::parse("fastest").is_err());
    assert_eq!(NbodyCpuPath::parse("portable").unwrap(), NbodyCpuPath::Portable);
}

#[test]
fn split_launch_equals_whole_launch() {
    let rt = common::runtime();
    let k = kernels::nbody().unwrap();
    let mut rng = Rng::fresh("split_launch_equals_whole_launch");
    let eps2 = 0.01f32 * 0.01;
    let n = 1000;
    let pos = random_bodies(&mut rng, n);
    let want = reference(&pos, eps2, 0, n);
    for dev in common::devices(&rt) {
        let all = whole(&dev, &k, &pos, eps2);
        let cut = 1 + rng.below(n as u64 - 1) as usize;
        let mut split = Vec::with_capacity(4 * n);
        for (offset, count) in [(0, cut), (cut, n - cut)] {
            let cfg = kernels::nbody_launch_config(count, dev.info());
            split.extend(launch(&dev, &k, &pos, eps2, offset, count, &cfg).unwrap());
        }
        let all64: Vec<f64> = all.iter().map(|v| *v as f64).collect();
        assert_close(
            &format!("split at {cut} vs whole on {}", dev.label()),
            &split,
            &all64,
            1e-6,
        );
        assert_close(
            &format!("split at {cut} vs float64 on {}", dev.label()),
            &split,
            &want,
            TOL,
        );
    }
}

#[test]
fn odd_launch_shapes_are_correct() {
    // Small blocks (many tiny CPU calls), a block above the tile, and a grid with
    // fewer threads than bodies (GPU kernels stride; the CPU covers launched items).
    let rt = common::runtime();
    let k = kernels::nbody().unwrap();
    let mut rng = Rng::fresh("odd_launch_shapes_are_correct");
    let eps2 = 0.05f32 * 0.05;
    let n = 777;
    let pos = random_bodies(&mut rng, n);
    let want = reference(&pos, eps2, 0, n);
    for dev in common::devices(&rt) {
        let max = dev.info().max_threads_per_block;
        for block in [16u32, 96, 512] {
            if block > max {
                continue;
            }
            let cfg = LaunchConfig::new((n as u32).div_ceil(block), block);
            let got = launch(&dev, &k, &pos, eps2, 0, n, &cfg).unwrap();
            assert_close(&format!("{} with blocks of {block}", dev.label()), &got, &want, TOL);
        }
    }
}

#[test]
fn bad_launch_is_an_error_and_the_device_stays_usable() {
    let rt = Runtime::builder()
        .backends(&[offload::BackendKind::Cpu])
        .build()
        .unwrap();
    let dev = rt.device("cpu").unwrap();
    let k = kernels::nbody().unwrap();
    let mut rng = Rng::fresh("bad_launch");
    let pos = random_bodies(&mut rng, 100);
    // Bodies 90..110 do not exist: the launch is refused before it runs.
    let cfg = kernels::nbody_launch_config(20, dev.info());
    let e = launch(&dev, &k, &pos, 1e-4, 90, 20, &cfg).unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { why, .. } if why.contains("exceed n = 100")),
        "{e}"
    );
    let want = reference(&pos, 1e-4, 0, 100);
    assert_close("after a refused launch", &whole(&dev, &k, &pos, 1e-4), &want, TOL);
}

#[test]
fn energy_drift_over_100_steps_is_small() {
    let rt = common::runtime();
    let dev = rt.device("cpu").unwrap();
    let config = SimConfig {
        bodies: 1024,
        steps: 100,
        dt: 0.005,
        eps: 0.05,
        seed: 7,
    };
    let mut sim = Simulation::new(config).unwrap();
    let e0 = sim.energy();
    // A Plummer sphere in N-body units has E = -1/4 (up to sampling noise and softening).
    assert!((e0.total() + 0.25).abs() < 0.05, "initial energy {}", e0.total());
    let mut acc = DeviceAccelerations::new(&dev, 1024, config.eps).unwrap();
    let mut seen = 0;
    let r = sim.run(&mut acc, |s| seen = s).unwrap();
    assert_eq!(seen, 100);
    assert_eq!(r.evaluations, 101);
    assert_eq!(r.energy_before, e0);
    let moved = sim
        .bodies()
        .pos
        .iter()
        .zip(&plummer(1024, 7).unwrap().pos)
        .any(|(a, b)| a != b);
    assert!(moved, "the bodies did not move");
    println!("energy drift over 100 steps at N=1024: {:e}", r.energy_drift());
    assert!(r.energy_drift() < 1e-3, "energy drift {:e}", r.energy_drift());
    assert!(r.gflops() > 0.0 && r.gflops().is_finite());
}

#[test]
fn devices_and_a_plugged_in_reference_give_the_same_trajectory() {
    let rt = common::runtime();
    let config = SimConfig {
        bodies: 512,
        steps: 10,
        dt: 0.005,
        eps: 0.05,
        seed: 3,
    };
    let eps2 = config.eps * config.eps;
    // Any FnMut(&[f32], &mut [f32]) -> Result<()> is an acceleration source.
    let mut reference_accel = |pos: &[f32], acc: &mut [f32]| -> offload::Result<()> {
        let r = reference(pos, eps2, 0, pos.len() / 4);
        for (a, r) in acc.iter_mut().zip(r) {
            *a = r as f32;
        }
        Ok(())
    };
    let mut want = Simulation::new(config).unwrap();
    want.run(&mut reference_accel, |_| {}).unwrap();
    let want64: Vec<f64> = want.bodies().pos.iter().map(|v| *v as f64).collect();
    for dev in common::devices(&rt) {
        let mut sim = Simulation::new(config).unwrap();
        let mut acc = DeviceAccelerations::new(&dev, 512, config.eps).unwrap();
        sim.run(&mut acc, |_| {}).unwrap();
        assert_close(
            &format!("trajectory on {}", dev.label()),
            &sim.bodies().pos,
            &want64,
            TOL,
        );
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let invalid = |r: offload::Result<Simulation>, what: &str, needle: &str| match r {
        Err(Error::InvalidInput(m)) => assert!(m.contains(needle), "{what}: message {m:?} lacks {needle:?}"),
        Err(e) => panic!("{what}: wrong error {e}"),
        Ok(_) => panic!("{what}: accepted"),
    };
    let ok = SimConfig {
        bodies: 64,
        steps: 2,
        dt: 0.01,
        eps: 0.05,
        seed: 1,
    };
    invalid(
        Simulation::new(SimConfig { bodies: 0, ..ok }),
        "zero bodies",
        "at least one body",
    );
    assert!(plummer(0, 1).is_err() && uniform_ball(0, 1).is_err());
    assert!(Bodies::new(vec![], vec![]).is_err());
    for dt in [0.0, -0.01, f32::NAN, f32::INFINITY] {
        invalid(Simulation::new(SimConfig { dt, ..ok }), "bad dt", "timestep");
    }
    for eps in [0.0, -1.0, f32::NAN] {
        invalid(Simulation::new(SimConfig { eps, ..ok }), "bad eps", "eps");
    }
    // Non-finite initial values are reported with the body's index, not propagated.
    let good = uniform_ball(64, 5).unwrap();
    let mut b = good.clone();
    b.pos[4 * 17 + 1] = f32::NAN;
    invalid(Simulation::from_bodies(b, ok), "NaN position", "body 17: y");
    let mut b = good.clone();
    b.vel[3 * 40 + 2] = f32::INFINITY;
    invalid(Simulation::from_bodies(b, ok), "infinite velocity", "body 40: vz");
    let mut b = good.clone();
    b.pos[4 * 3 + 3] = 0.0;
    invalid(Simulation::from_bodies(b, ok), "zero mass", "body 3: mass");
    assert!(Bodies::new(vec![0.0, 0.0, 0.0, 1.0], vec![0.0; 2]).is_err());

    // A snapshot that cannot be written: the run's results are still there.
    let rt = Runtime::builder()
        .backends(&[offload::BackendKind::Cpu])
        .build()
        .unwrap();
    let dev = rt.device("cpu").unwrap();
    let mut sim = Simulation::from_bodies(good, ok).unwrap();
    let mut acc = DeviceAccelerations::new(&dev, 64, ok.eps).unwrap();
    let report = sim.run(&mut acc, |_| {}).unwrap();
    let path = std::path::Path::new("/nonexistent-dir/offload/snapshot.png");
    match offload::nbody::write_png(path, &sim.bodies().pos, 64, 2.0) {
        Err(Error::Io { path: p, .. }) => assert!(p.contains("nonexistent-dir")),
        other => panic!("unwritable snapshot: {other:?}"),
    }
    assert_eq!(report.steps, 2);
    assert!(report.energy_drift().is_finite());
    let e = total_energy(sim.bodies(), ok.eps);
    assert_eq!(e, report.energy_after);

    // Mismatched lengths for the device source.
    let mut wrong = vec![0f32; 8];
    let e = offload::nbody::Accelerations::accelerations(&mut acc, &[0.0; 8], &mut wrong).unwrap_err();
    assert!(matches!(e, Error::LengthMismatch { .. }), "{e}");
    assert!(DeviceAccelerations::new(&dev, 0, 0.1).is_err());
}

#[test]
fn snapshot_is_a_png() {
    let b = plummer(2000, 11).unwrap();
    let dir = std::env::temp_dir().join(format!("offload-nbody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("snap.png");
    offload::nbody::write_png(&path, &b.pos, 128, 2.0).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(offload::nbody::write_png(&path, &b.pos, 0, 2.0).is_err());
}

/// The state stays on the devices: the resident simulation over every device
/// follows the host integration (bitwise on the CPU device alone, where both run
/// the same kernels in the same order; within float tolerance across devices,
/// whose acceleration kernels round differently), and moves only what changed.
#[test]
fn resident_simulation_follows_the_host_integration() {
    let rt = common::runtime();
    let cpu = rt.device("cpu").unwrap();
    let config = SimConfig {
        bodies: 1000,
        steps: 8,
        dt: 0.005,
        eps: 0.05,
        seed: 3,
    };
    let mut host = Simulation::new(config).unwrap();
    let mut acc = DeviceAccelerations::new(&cpu, config.bodies, config.eps).unwrap();
    host.run(&mut acc, |_| {}).unwrap();
    let want = host.bodies().clone();
    let graph = |devs: &[Device]| {
        offload::task::TaskGraph::builder(devs)
            .allow_shared_cores(true)
            .model(offload::schedule::PerfModel::in_memory())
            .build()
            .unwrap()
    };
    // The CPU device alone: the same bits.
    let mut sim = offload::nbody::ResidentSimulation::from_bodies(
        graph(std::slice::from_ref(&cpu)),
        plummer(1000, 3).unwrap(),
        config,
    )
    .unwrap();
    let r = sim.run(|_| {}).unwrap();
    assert_eq!(r.evaluations, 9);
    let got = sim.bodies().unwrap();
    assert!(
        got.pos == want.pos && got.vel == want.vel,
        "CPU device alone differs from the host run"
    );
    // Every device: close, and every step's chunks read positions in place.
    let devs = common::devices(&rt);
    let mut sim =
        offload::nbody::ResidentSimulation::from_bodies(graph(&devs), plummer(1000, 3).unwrap(), config).unwrap();
    let mut steps = 0;
    let r = sim.run(|s| steps = s).unwrap();
    assert_eq!(steps, 8);
    let got = sim.bodies().unwrap();
    let want64: Vec<f64> = want.pos.iter().map(|v| *v as f64).collect();
    assert_close("resident positions", &got.pos, &want64, 1e-3);
    assert!(r.energy_drift() < 1e-3, "energy drift {:e}", r.energy_drift());
    let rep = sim.report();
    println!("{rep}");
    assert!(rep.bytes_resident() > 0, "{rep}");
    // Each position moves at most once per step to each other memory node, plus
    // the first upload: far less than re-sending the state every step.
    let state = (1000 * 4 * 4) as u64;
    let nodes = devs.iter().filter(|d| d.backend() != offload::BackendKind::Cpu).count() as u64;
    assert!(
        rep.bytes_in() <= state * nodes * (2 + config.steps as u64) * 3,
        "{} bytes fetched\n{rep}",
        rep.bytes_in()
    );
}

/// The built-in kernel's signature with the given OpenCL sources.
fn nbody_from(plain: &str, host_cpu: &str) -> offload::Result<Kernel> {
    use offload::{Access, Param, Split};
    let b = Kernel::builder("nbody")
        .param(Param::buffer::<f32>("pos", Access::Read, Split::Broadcast))
        .param(Param::buffer::<f32>(
            "acc",
            Access::Write,
            Split::Elementwise { per_item: 4 },
        ))
        .param(Param::scalar::<u32>("n"))
        .param(Param::scalar::<f32>("eps2"))
        .param(Param::Offset)
        .param(Param::Count)
        .extent_from("pos", &["n"], 4);
    // SAFETY: a source here is either the audited built-in host-CPU one (with its
    // own signature and extents) or one that fails to build.
    unsafe { b.opencl(plain, "nbody").opencl_host_cpu(host_cpu, "nbody") }.build()
}

#[test]
fn host_cpu_opencl_devices_build_the_cpu_shaped_source() {
    let k = kernels::nbody().unwrap();
    let host = k.opencl_host_cpu_source().expect("nbody has a host-CPU OpenCL source");
    let plain = k.opencl_source().expect("nbody has an OpenCL source");
    assert!(!host.code.contains("__local") && plain.code.contains("__local"));
    assert_eq!(host.options, ["-cl-fast-relaxed-math"]);
    // A host-CPU source alone leaves other OpenCL devices without one.
    let alone = Kernel::builder("alone").param(offload::Param::scalar::<u32>("n"));
    // SAFETY: never built or launched.
    let alone = unsafe { alone.opencl_host_cpu("__kernel void alone(uint n) {}", "alone") }.build();
    assert!(matches!(alone, Err(Error::InvalidInput(_))), "{alone:?}");

    let rt = common::runtime();
    let hosts: Vec<Device> = common::devices_of(&rt, offload::BackendKind::OpenCl)
        .into_iter()
        .filter(|d| d.info().host_cpu)
        .collect();
    if hosts.is_empty() {
        common::missing("opencl", "no OpenCL device computes on host cores");
        return;
    }
    let cpu = rt.device("cpu").unwrap();
    let mut rng = Rng::fresh("host_cpu_opencl_devices_build_the_cpu_shaped_source");
    let eps2 = 0.01f32 * 0.01;
    let n = 1000;
    let pos = random_bodies(&mut rng, n);
    let want = reference(&pos, eps2, 0, n);
    let cpu_acc = whole(&cpu, &k, &pos, eps2);
    assert_close("CPU device", &cpu_acc, &want, TOL);
    let on_cpu: Vec<f64> = cpu_acc.iter().map(|v| *v as f64).collect();
    for dev in hosts {
        let chosen = k.opencl_source_for(dev.info()).unwrap();
        assert_eq!(chosen.code, host.code, "{} picks the host-CPU source", dev.label());
        let mut gpu = dev.info().clone();
        gpu.host_cpu = false;
        assert_eq!(k.opencl_source_for(&gpu).unwrap().code, plain.code);

        // The device builds the host-CPU source: a kernel whose plain source
        // cannot build still runs there, and one whose host-CPU source cannot
        // build fails with the build log.
        let only_host = nbody_from("#error not the host-CPU source\n", &host.code).unwrap();
        let got = whole(&dev, &only_host, &pos, eps2);
        assert_close(
            &format!("host-CPU source on {} vs the CPU device", dev.label()),
            &got,
            &on_cpu,
            TOL,
        );
        let broken = nbody_from(&plain.code, "#error the host-CPU source\n").unwrap();
        match dev.build(&broken) {
            Err(Error::Build { .. }) => {}
            other => panic!("{}: a broken host-CPU source built: {other:?}", dev.label()),
        }

        // The built-in kernel: against the CPU device and float64, whole and in
        // odd shapes (small blocks, fewer threads than bodies).
        let got = whole(&dev, &k, &pos, eps2);
        assert_close(
            &format!("nbody on {} vs the CPU device", dev.label()),
            &got,
            &on_cpu,
            TOL,
        );
        assert_close(&format!("nbody on {} vs float64", dev.label()), &got, &want, TOL);
        for cfg in [
            LaunchConfig::new(3, 16),
            LaunchConfig::new(1, 64),
            LaunchConfig::new(2, 96),
        ] {
            let got = launch(&dev, &k, &pos, eps2, 100, 777, &cfg).unwrap();
            assert_close(
                &format!("{} with {cfg:?}", dev.label()),
                &got,
                &reference(&pos, eps2, 100, 777),
                TOL,
            );
        }
    }
}
