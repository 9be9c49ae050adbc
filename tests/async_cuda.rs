//! Asynchronous queues on CUDA devices: long dependent chains with one wait,
//! write → launch → read without waits between, copies and fills, ordering with
//! CPU queues in both directions and between two CUDA queues, dropping buffers,
//! kernels and queues with work in flight, eight threads on one queue, and device
//! timestamps.
//!
//! Without a CUDA device every test prints a SKIP line (a failure when
//! `OFFLOAD_REQUIRE` names cuda; see `tests/common`).
#![cfg(feature = "cuda")]

mod common;

use std::time::{Duration, Instant};

use common::Rng;
use offload::profile::{Clock, Stage};
use offload::{Access, Arg, BackendKind, Device, HostBuffer, Kernel, LaunchConfig, Param, Runtime, Split};

fn runtime() -> Runtime {
    Runtime::builder()
        .backends(&[BackendKind::Cpu, BackendKind::Cuda])
        .build()
        .expect("runtime")
}

fn gpus(rt: &Runtime) -> Vec<Device> {
    common::devices_of(rt, BackendKind::Cuda)
}

/// `x[i] += 1` for `i < n` (CUDA), with a nonce so each call is a distinct kernel.
fn add_one(nonce: u64) -> Kernel {
    let code = format!(
        "// nonce {nonce}\nextern \"C\" __global__ void add_one(float* x, unsigned int n) {{\n  \
         unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;\n  if (i < n) x[i] += 1.0f;\n}}\n"
    );
    // SAFETY: test kernel source; it declares this signature and stays inside the checked extents.
    unsafe {
        Kernel::builder("add_one")
            .param(Param::buffer::<f32>(
                "x",
                Access::ReadWrite,
                Split::Elementwise { per_item: 1 },
            ))
            .param(Param::scalar::<u32>("n"))
            .extent_from("x", &["n"], 1)
            .cuda(code, "add_one")
    }
    .build()
    .expect("add_one kernel")
}

fn cfg(dev: &Device, n: usize) -> LaunchConfig {
    LaunchConfig::for_items(n, dev.info())
}

#[test]
fn a_thousand_dependent_kernels_with_one_wait() {
    let rt = runtime();
    for dev in gpus(&rt) {
        let k = add_one(1);
        let n = 4096;
        let q = dev.queue().expect("queue");
        let mut x = dev.alloc::<f32>(n).expect("alloc");
        q.fill(&x, 0.0f32).expect("fill");
        let t0 = Instant::now();
        for _ in 0..1000 {
            q.launch(&k, &cfg(&dev, n), &[Arg::output(&mut x), (n as u32).into()])
                .expect("launch");
        }
        let enqueued = t0.elapsed();
        let out = q
            .read(&x, HostBuffer::new(&dev, n).expect("host buffer"))
            .expect("read")
            .wait()
            .expect("wait");
        println!(
            "{}: 1000 launches enqueued in {enqueued:?}, done in {:?}",
            dev.label(),
            t0.elapsed()
        );
        assert!(out.iter().all(|&v| v == 1000.0), "first {:?}", &out[..4]);
    }
}

#[test]
fn write_launch_read_chains_without_waits() {
    let rt = runtime();
    let mut rng = Rng::fresh("cuda async chain");
    for dev in gpus(&rt) {
        let k = add_one(2);
        let q = dev.queue().expect("queue");
        // One element, small, two staging pieces, more than a queue's staging budget.
        for n in [1usize, 1000, 3 << 20, 10 << 20] {
            let host = rng.vec_f32(n, -100.0, 100.0);
            let mut x = dev.alloc::<f32>(n).expect("alloc");
            q.write(&x, &host).expect("write");
            q.launch(&k, &cfg(&dev, n), &[Arg::output(&mut x), (n as u32).into()])
                .expect("launch");
            let t = q.read(&x, HostBuffer::new(&dev, n).expect("host")).expect("read");
            let out = t.wait().expect("wait");
            assert!(out.is_pinned());
            let bad = (0..n).find(|&i| out[i] != host[i] + 1.0);
            assert_eq!(bad, None, "n={n}");

            // From pinned host memory, and the blocking read of the result.
            let src = HostBuffer::from_slice(&dev, &host).expect("host buffer");
            assert!(src.is_pinned(), "CUDA host buffers are page-locked");
            let mut y = dev.alloc::<f32>(n).expect("alloc");
            let w = q.write_from(&y, src).expect("write_from");
            q.launch(&k, &cfg(&dev, n), &[Arg::output(&mut y), (n as u32).into()])
                .expect("launch");
            let back = y.to_vec().expect("blocking read");
            assert!((0..n).all(|i| back[i] == host[i] + 1.0), "n={n} (write_from)");
            let src = w.wait().expect("write_from wait");
            assert_eq!(src[n - 1], host[n - 1], "the host buffer comes back untouched");
        }
        q.finish().expect("finish");
    }
}

#[test]
fn two_queues_order_through_device_waits() {
    let rt = runtime();
    let mut rng = Rng::fresh("cuda two queues");
    for dev in gpus(&rt) {
        let k = add_one(3);
        let (q1, q2) = (dev.queue().expect("q1"), dev.queue().expect("q2"));
        let n = 6 << 20;
        let host = rng.vec_f32(n, -10.0, 10.0);
        let mut x = dev.alloc::<f32>(n).expect("alloc");
        q1.write(&x, &host).expect("write on q1");
        // Read after write across queues: q2 waits for q1's event on the device.
        for _ in 0..3 {
            q2.launch(&k, &cfg(&dev, n), &[Arg::output(&mut x), (n as u32).into()])
                .expect("launch on q2");
        }
        let out = q1
            .read(&x, HostBuffer::new(&dev, n).expect("host"))
            .expect("read on q1")
            .wait()
            .expect("wait");
        assert!((0..n).all(|i| out[i] == host[i] + 3.0));
    }
}

#[test]
fn copies_and_fills() {
    let rt = runtime();
    let mut rng = Rng::fresh("cuda copy fill");
    for dev in gpus(&rt) {
        let q = dev.queue().expect("queue");
        let n = 1001;
        let host = rng.vec_f32(n, -1.0, 1.0);
        let a = dev.upload(&host).expect("upload");
        let b = dev.alloc::<f32>(n).expect("alloc");
        q.copy(&a, &b).expect("copy");
        assert_eq!(b.to_vec().expect("read"), host);

        // 4-byte, 1-byte, 2-byte patterns (memset), all-zero bytes, 8- and 12-byte
        // patterns (staged), one over a staging piece.
        let f = dev.alloc::<f32>(n).expect("f32");
        q.fill(&f, 1.5f32).expect("fill f32");
        assert!(f.to_vec().expect("read").iter().all(|&v| v == 1.5));
        let u8s = dev.alloc::<u8>(4097).expect("u8");
        q.fill(&u8s, 7u8).expect("fill u8");
        assert!(u8s.to_vec().expect("read").iter().all(|&v| v == 7));
        let u16s = dev.alloc::<u16>(777).expect("u16");
        q.fill(&u16s, 0xABCDu16).expect("fill u16");
        assert!(u16s.to_vec().expect("read").iter().all(|&v| v == 0xABCD));
        let zeros = dev.upload(&vec![3.25f64; 999]).expect("f64");
        q.fill(&zeros, 0.0f64).expect("fill zero");
        assert!(zeros.to_vec().expect("read").iter().all(|&v| v == 0.0));
        let big = 3_000_001usize;
        let u64s = dev.alloc::<u64>(big).expect("u64");
        q.fill(&u64s, 0x0102_0304_0506_0708u64).expect("fill u64");
        let v = u64s.to_vec().expect("read");
        assert!(v.iter().all(|&x| x == 0x0102_0304_0506_0708), "u64 fill over pieces");
        let triples = dev.alloc::<[u32; 3]>(5000).expect("triples");
        q.fill(&triples, [1u32, 2, 3]).expect("fill 12 bytes");
        assert!(triples.to_vec().expect("read").iter().all(|t| *t == [1, 2, 3]));
        q.finish().expect("finish");
    }
}

#[test]
fn cpu_queue_events_order_cuda_work_and_back() {
    let rt = runtime();
    let cpu = rt.device("cpu").expect("cpu device");
    for dev in gpus(&rt) {
        let k = add_one(4);
        let n = 100_000;
        let (cq, gq) = (cpu.queue().expect("cpu queue"), dev.queue().expect("cuda queue"));
        // CPU → CUDA: the CUDA queue waits for a CPU event, then copies across.
        let cbuf = cpu.alloc::<f32>(n).expect("cpu buffer");
        let filled = cq.fill(&cbuf, 2.0f32).expect("cpu fill");
        gq.wait_for(&filled);
        let mut g = dev.alloc::<f32>(n).expect("cuda buffer");
        gq.copy(&cbuf, &g).expect("copy cpu -> cuda");
        let mut last = None;
        for _ in 0..50 {
            last = Some(
                gq.launch(&k, &cfg(&dev, n), &[Arg::output(&mut g), (n as u32).into()])
                    .expect("launch"),
            );
        }
        // CUDA → CPU: the CPU queue waits for the CUDA kernel's event.
        let out = cpu.alloc::<f32>(n).expect("cpu out");
        cq.wait_for(&last.expect("an event"));
        cq.copy(&g, &out).expect("copy cuda -> cpu");
        cq.finish().expect("cpu finish");
        assert!(out.to_vec().expect("read").iter().all(|&v| v == 52.0));
        gq.finish().expect("cuda finish");
    }
}

#[test]
fn dropping_buffers_kernels_and_queues_with_work_in_flight_is_safe() {
    let rt = runtime();
    let mut rng = Rng::fresh("cuda drop in flight");
    for dev in gpus(&rt) {
        let n = 1 << 20;
        for round in 0..3u64 {
            let k = add_one(100 + round);
            let q = dev.queue().expect("queue");
            let mut x = dev.alloc::<f32>(n).expect("alloc");
            let mut scratch = dev.alloc::<f32>(n).expect("scratch");
            for _ in 0..200 {
                q.launch(&k, &cfg(&dev, n), &[Arg::output(&mut x), (n as u32).into()])
                    .expect("launch");
                q.launch(&k, &cfg(&dev, n), &[Arg::output(&mut scratch), (n as u32).into()])
                    .expect("launch");
            }
            let t = q.read(&x, HostBuffer::new(&dev, n).expect("host")).expect("read");
            // Everything goes while the work runs: the buffers, the kernel (its module),
            // the queue; a pending write from a host buffer is dropped without a wait.
            let pending = q
                .write_from(&scratch, HostBuffer::new(&dev, n).expect("host"))
                .expect("write_from");
            drop((x, scratch, k, pending));
            if round == 1 {
                drop(q);
                let out = t.wait().expect("wait after drops");
                assert!(out.iter().all(|&v| v == 200.0));
            } else {
                drop(t);
                drop(q);
            }
        }
        // The device is still fine.
        common::vector_add_ok(&dev, 10_000, &mut rng);
    }
}

#[test]
fn eight_threads_share_one_queue() {
    let rt = runtime();
    for dev in gpus(&rt) {
        let k = add_one(5);
        let q = dev.queue().expect("queue");
        let n = 10_000;
        std::thread::scope(|s| {
            for t in 0..8u32 {
                let (q, k, dev) = (q.clone(), k.clone(), dev.clone());
                s.spawn(move || {
                    for round in 0..5 {
                        let host: Vec<f32> = (0..n).map(|i| (i as u32 * 8 + t) as f32).collect();
                        let mut x = dev.alloc::<f32>(n).expect("alloc");
                        q.write(&x, &host).expect("write");
                        for _ in 0..20 {
                            q.launch(&k, &cfg(&dev, n), &[Arg::output(&mut x), (n as u32).into()])
                                .expect("launch");
                        }
                        let out = q
                            .read(&x, HostBuffer::new(&dev, n).expect("host"))
                            .expect("read")
                            .wait()
                            .expect("wait");
                        let bad = (0..n).find(|&i| out[i] != host[i] + 20.0);
                        assert_eq!(bad, None, "thread {t} round {round}");
                    }
                });
            }
        });
        q.finish().expect("finish");
    }
}

#[test]
fn events_carry_device_timestamps_on_the_host_clock() {
    let rt = runtime();
    for dev in gpus(&rt) {
        let k = add_one(6);
        let n = 1 << 22;
        let q = dev.queue().expect("queue");
        let mut x = dev.alloc::<f32>(n).expect("alloc");
        // Build first, so the measured launches are only launches.
        dev.build(&k).expect("build");
        rt.profiler().take();
        let before = Instant::now();
        let w = q.write(&x, &vec![1.0f32; n]).expect("write");
        let e1 = q
            .launch(&k, &cfg(&dev, n), &[Arg::output(&mut x), (n as u32).into()])
            .expect("launch 1");
        let e2 = q
            .launch(&k, &cfg(&dev, n), &[Arg::output(&mut x), (n as u32).into()])
            .expect("launch 2");
        e2.wait().expect("wait 2");
        let after = Instant::now();
        assert!(w.is_complete() && e1.is_complete() && e2.is_complete());
        let slack = Duration::from_millis(2);
        let mut prev_end = None;
        for (what, e) in [("write", &w), ("launch 1", &e1), ("launch 2", &e2)] {
            let (s, t, device_clock) = e.times().expect("times once complete");
            println!(
                "{what}: {:?} .. {:?} after the first enqueue",
                s - before.min(s),
                t - before.min(t)
            );
            assert!(device_clock, "{what}: CUDA events time on the device clock");
            assert!(s <= t, "{what}");
            assert!(
                s + slack >= before && t <= after + slack,
                "{what}: inside the host window"
            );
            if let Some(p) = prev_end {
                assert!(s + Duration::from_micros(50) >= p, "{what}: in queue order");
            }
            prev_end = Some(t);
        }
        let p = rt.profile();
        let kernels: Vec<_> = p
            .device_records(dev.label())
            .filter(|r| r.stage == Stage::Kernel)
            .collect();
        assert_eq!(kernels.len(), 2, "one record per launch");
        for r in kernels.iter().chain(
            p.device_records(dev.label())
                .filter(|r| r.stage == Stage::HostToDevice)
                .collect::<Vec<_>>()
                .iter(),
        ) {
            assert_eq!(r.clock, Clock::Device, "{r:?}");
            assert!(r.duration_ns() > 0, "{r:?}");
        }
    }
}
