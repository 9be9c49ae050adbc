//! Asynchronous execution on OpenCL devices (PoCL on a CPU-only machine):
//! queues, events, dependencies within and across queues and devices, device
//! timestamps. With `OFFLOAD_REQUIRE=opencl` a missing device fails.

mod common;

use std::time::{Duration, Instant};

use common::devices_of;
use offload::profile::{Clock, Stage};
use offload::{Access, Arg, BackendKind, Device, HostBuffer, Kernel, LaunchConfig, Param, Runtime, Split, kernels};

fn opencl() -> (Runtime, Vec<Device>) {
    let rt = common::runtime();
    let devs = devices_of(&rt, BackendKind::OpenCl);
    (rt, devs)
}

/// `x[i] += 1` for `i < n`.
fn inc() -> Kernel {
    let src = "__kernel void inc(__global float* x, const uint n) {\n  \
               uint i = get_global_id(0); if (i < n) x[i] += 1.0f;\n}\n";
    // SAFETY: test kernel source; it declares this signature and stays inside the checked extent.
    unsafe {
        Kernel::builder("inc")
            .param(Param::buffer::<f32>(
                "x",
                Access::ReadWrite,
                Split::Elementwise { per_item: 1 },
            ))
            .param(Param::scalar::<u32>("n"))
            .extent_from("x", &["n"], 1)
            .opencl(src, "inc")
    }
    .build()
    .unwrap()
}

/// Read all of `b` through `q` into a host buffer and wait.
fn read_back(q: &offload::Queue, dev: &Device, b: &offload::Buffer<f32>) -> Vec<f32> {
    let h = HostBuffer::new(dev, b.len()).unwrap();
    q.read(b, h).unwrap().wait().unwrap().to_vec()
}

#[test]
fn thousand_dependent_kernels_with_one_wait() {
    let (_rt, devs) = opencl();
    let k = inc();
    for d in &devs {
        let n = 1024usize;
        let q = d.queue().unwrap();
        let mut x = d.alloc::<f32>(n).unwrap();
        q.write(&x, &vec![0.0f32; n]).unwrap();
        let cfg = LaunchConfig::for_items(n, d.info());
        let mut last = None;
        for _ in 0..1000 {
            last = Some(q.launch(&k, &cfg, &[Arg::output(&mut x), (n as u32).into()]).unwrap());
        }
        last.unwrap().wait().unwrap();
        let h = q.read(&x, HostBuffer::new(d, n).unwrap()).unwrap().wait().unwrap();
        assert!(h.iter().all(|v| *v == 1000.0), "1000 increments on {}", d.label());
    }
}

#[test]
fn write_launch_read_chains_without_waits_across_queues() {
    let (_rt, devs) = opencl();
    let va = kernels::vector_add().unwrap();
    let k = inc();
    for d in &devs {
        let n = 10_000usize;
        let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..n).map(|i| 2.0 * i as f32).collect();
        let (q1, q2) = (d.queue().unwrap(), d.queue().unwrap());
        let da = d.alloc::<f32>(n).unwrap();
        let db = d.alloc::<f32>(n).unwrap();
        let mut dc = d.alloc::<f32>(n).unwrap();
        // A large staged source is dropped right after the call.
        q1.write(&da, &a).unwrap();
        q1.write(&db, &b.clone()).unwrap();
        let cfg = LaunchConfig::for_items(n, d.info());
        q1.launch(
            &va,
            &cfg,
            &[
                Arg::input(&da),
                Arg::input(&db),
                Arg::output(&mut dc),
                0u32.into(),
                (n as u32).into(),
            ],
        )
        .unwrap();
        // Another queue continues the chain: ordered by the buffer's last writer.
        q2.launch(&k, &cfg, &[Arg::output(&mut dc), (n as u32).into()]).unwrap();
        let t = q1.read(&dc, HostBuffer::new(d, n).unwrap()).unwrap();
        let c = t.wait().unwrap();
        for (i, v) in c.iter().enumerate() {
            assert_eq!(*v, 3.0 * i as f32 + 1.0, "element {i} on {}", d.label());
        }
        // Owned host memory both ways, and a large write (written before returning).
        let big = 3 << 20;
        let src: Vec<f32> = (0..big).map(|i| (i % 4099) as f32).collect();
        let dbig = d.alloc::<f32>(big).unwrap();
        q2.write(&dbig, &src).unwrap();
        let back = read_back(&q1, d, &dbig);
        assert!(back == src, "large write then read on {}", d.label());
        let h = HostBuffer::from_slice(d, &a).unwrap();
        let t = q2.write_from(&db, h).unwrap();
        let h = t.wait().unwrap();
        assert_eq!(&h[..], &a[..]);
        assert_eq!(read_back(&q2, d, &db), a);
    }
}

#[test]
fn copy_and_fill() {
    let (_rt, devs) = opencl();
    for d in &devs {
        let q = d.queue().unwrap();
        let n = 4099usize;
        let src = d.alloc::<f32>(n).unwrap();
        let dst = d.alloc::<f32>(n).unwrap();
        q.fill(&src, 2.5f32).unwrap();
        q.copy(&src, &dst).unwrap();
        q.fill(&src, -1.0f32).unwrap();
        assert!(
            read_back(&q, d, &dst).iter().all(|v| *v == 2.5),
            "copy saw the first fill"
        );
        assert!(read_back(&q, d, &src).iter().all(|v| *v == -1.0));
        // Patterns clEnqueueFillBuffer does not take (12 bytes) are written staged.
        let v = d.alloc::<[f32; 3]>(1001).unwrap();
        q.fill(&v, [1.0, 2.0, 3.0]).unwrap();
        let h = q.read(&v, HostBuffer::new(d, 1001).unwrap()).unwrap().wait().unwrap();
        assert!(h.iter().all(|e| *e == [1.0, 2.0, 3.0]));
        // One byte, an odd length; 16 bytes.
        let b = d.alloc::<u8>(333).unwrap();
        q.fill(&b, 7u8).unwrap();
        assert!(b.to_vec().unwrap().iter().all(|x| *x == 7));
        let w = d.alloc::<[u32; 4]>(77).unwrap();
        q.fill(&w, [1, 2, 3, 4]).unwrap();
        q.finish().unwrap();
        assert!(w.to_vec().unwrap().iter().all(|e| *e == [1, 2, 3, 4]));
        // Zero-length commands complete.
        let z = d.alloc::<f32>(0).unwrap();
        q.fill(&z, 1.0).unwrap().wait().unwrap();
        q.write(&z, &[]).unwrap().wait().unwrap();
    }
}

#[test]
fn dependencies_on_and_of_cpu_queues() {
    let (rt, devs) = opencl();
    let Ok(cpu) = rt.device("cpu:0") else {
        println!("SKIP: no cpu:0");
        return;
    };
    let k = inc();
    for d in &devs {
        let n = 2048usize;
        let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
        // OpenCL waits for the CPU queue's write.
        let cq = cpu.queue().unwrap();
        let cbuf = cpu.alloc::<f32>(n).unwrap();
        let cev = cq.write(&cbuf, &data).unwrap();
        let q = d.queue().unwrap();
        q.wait_for(&cev);
        let mut x = d.alloc::<f32>(n).unwrap();
        q.copy(&cbuf, &x).unwrap();
        let cfg = LaunchConfig::for_items(n, d.info());
        let mut last = None;
        for _ in 0..50 {
            last = Some(q.launch(&k, &cfg, &[Arg::output(&mut x), (n as u32).into()]).unwrap());
        }
        let last = last.unwrap();
        // The CPU queue waits for OpenCL's last kernel before running its command.
        cq.wait_for(&last);
        let back = cpu.alloc::<f32>(n).unwrap();
        cq.fill(&back, 0.0).unwrap();
        assert!(
            last.is_complete(),
            "the CPU command ran after the OpenCL event completed"
        );
        cq.copy(&x, &back).unwrap().wait().unwrap();
        for (i, v) in back.to_vec().unwrap().iter().enumerate() {
            assert_eq!(*v, i as f32 + 50.0, "element {i} on {}", d.label());
        }
    }
}

#[test]
fn dropping_buffers_queues_and_events_with_work_in_flight_is_safe() {
    let (_rt, devs) = opencl();
    let k = inc();
    for d in &devs {
        let n = 1 << 16;
        for round in 0..3 {
            let q = d.queue().unwrap();
            let mut x = d.alloc::<f32>(n).unwrap();
            let cfg = LaunchConfig::for_items(n, d.info());
            // A staged write whose event and source go at once.
            drop(q.write(&x, &vec![1.0f32; n]).unwrap());
            for _ in 0..100 {
                drop(q.launch(&k, &cfg, &[Arg::output(&mut x), (n as u32).into()]).unwrap());
            }
            let t = q.read(&x, HostBuffer::new(d, n).unwrap()).unwrap();
            if round == 0 {
                // The buffer first, then the queue, then the transfer (its host memory).
                drop(x);
                drop(q);
                drop(t);
            } else if round == 1 {
                drop(q);
                drop(x);
                let h = t.wait().unwrap();
                assert!(h.iter().all(|v| *v == 101.0));
            } else {
                drop(t);
                drop(x);
                drop(q);
            }
        }
        // The device is still usable.
        let q = d.queue().unwrap();
        let mut x = d.upload(&vec![0.0f32; 100]).unwrap();
        q.launch(
            &k,
            &LaunchConfig::for_items(100, d.info()),
            &[Arg::output(&mut x), 100u32.into()],
        )
        .unwrap();
        assert!(read_back(&q, d, &x).iter().all(|v| *v == 1.0));
    }
}

#[test]
fn eight_threads_share_one_queue() {
    let (_rt, devs) = opencl();
    let k = inc();
    for d in &devs {
        let q = d.queue().unwrap();
        std::thread::scope(|s| {
            for t in 0..8usize {
                let (q, k, d) = (q.clone(), k.clone(), d.clone());
                s.spawn(move || {
                    let n = 1000 + t;
                    let mut x = d.alloc::<f32>(n).unwrap();
                    q.write(&x, &vec![t as f32; n]).unwrap();
                    let cfg = LaunchConfig::for_items(n, d.info());
                    for _ in 0..200 {
                        q.launch(&k, &cfg, &[Arg::output(&mut x), (n as u32).into()]).unwrap();
                    }
                    let got = read_back(&q, &d, &x);
                    assert!(
                        got.iter().all(|v| *v == t as f32 + 200.0),
                        "thread {t}: {:?}",
                        &got[..4]
                    );
                });
            }
        });
        q.finish().unwrap();
    }
}

#[test]
fn events_report_device_timestamps_on_the_host_clock() {
    let (rt, devs) = opencl();
    let k = inc();
    for d in &devs {
        let n = 1 << 18;
        let q = d.queue().unwrap();
        let mut x = d.alloc::<f32>(n).unwrap();
        let before = Instant::now();
        let w = q.write(&x, &vec![0.0f32; n]).unwrap();
        let cfg = LaunchConfig::for_items(n, d.info());
        let l = q.launch(&k, &cfg, &[Arg::output(&mut x), (n as u32).into()]).unwrap();
        let r = q.read(&x, HostBuffer::new(d, n).unwrap()).unwrap();
        assert_eq!(l.times().is_some(), l.is_complete());
        let r_ev = r.event().clone();
        r.wait().unwrap();
        let after = Instant::now();
        let slack = Duration::from_millis(2);
        let mut prev_end = None;
        for ev in [&w, &l, &r_ev] {
            let (s, e, dev_clock) = ev.times().expect("times once complete");
            assert!(dev_clock, "{ev:?} is timed by the device clock");
            assert!(s <= e);
            assert!(s + slack >= before && e <= after, "{ev:?} lies within the host's view");
            if let Some(p) = prev_end {
                // In order on one queue (up to the calibration's error).
                assert!(s + slack >= p, "{ev:?} starts after the previous command ended");
            }
            prev_end = Some(e);
        }
        let p = rt.profile();
        for stage in [Stage::HostToDevice, Stage::Kernel, Stage::DeviceToHost] {
            let recs: Vec<_> = p.device_records(d.label()).filter(|r| r.stage == stage).collect();
            assert!(!recs.is_empty(), "{stage:?} recorded on {}", d.label());
            assert!(
                recs.iter().all(|r| r.clock == Clock::Device),
                "{stage:?} by the device clock"
            );
        }
    }
}

#[test]
fn host_buffers_are_pinned_and_zeroed() {
    let (_rt, devs) = opencl();
    for d in &devs {
        for n in [0usize, 1, 1000, 1 << 20] {
            let h = HostBuffer::<f64>::new(d, n).unwrap();
            assert!(h.is_pinned());
            assert_eq!(h.len(), n);
            assert!(h.iter().all(|v| *v == 0.0));
            assert_eq!(h.as_ptr() as usize % 64, 0, "64-byte aligned");
        }
    }
}
