//! The asynchronous half of the conformance suite (`tests/conformance.rs` holds
//! the blocking half): every case runs on every available device of every
//! backend, and a backend named in `OFFLOAD_REQUIRE` must be there.
//!
//! Queues and events on every available device: chains of commands without
//! waits in between, ordering across queues and devices by buffer hazards and
//! `wait_for`, copies, fills, host buffers, and safety when things are dropped
//! with work in flight.

mod common;

use common::{Rng, assert_close};
use offload::{Arg, BackendKind, Device, Error, HostBuffer, LaunchConfig, Queue, Runtime, kernels};

fn all() -> (Runtime, Vec<Device>) {
    let rt = common::runtime();
    let devs = common::devices(&rt);
    (rt, devs)
}

fn vadd_args<'a>(
    a: &'a offload::Buffer<f32>,
    b: &'a offload::Buffer<f32>,
    c: &'a mut offload::Buffer<f32>,
    n: usize,
) -> [Arg<'a>; 5] {
    [
        Arg::input(a),
        Arg::input(b),
        Arg::output(c),
        0u32.into(),
        (n as u32).into(),
    ]
}

fn reference(a: &[f32], b: &[f32]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| *x as f64 + *y as f64).collect()
}

#[test]
fn write_launch_read_chain_without_waits_on_every_device() {
    let (_rt, devs) = all();
    let mut rng = Rng::fresh("chain");
    let k = kernels::vector_add().unwrap();
    for d in &devs {
        let q = d.queue().unwrap();
        let n = 100_003;
        let a = rng.vec_f32(n, -1.0, 1.0);
        let b = rng.vec_f32(n, -1.0, 1.0);
        let da = d.alloc::<f32>(n).unwrap();
        let db = d.alloc::<f32>(n).unwrap();
        let mut dc = d.alloc::<f32>(n).unwrap();
        q.fill(&dc, f32::NAN).unwrap();
        q.write(&da, &a).unwrap();
        q.write(&db, &b).unwrap();
        let cfg = LaunchConfig::for_items(n, d.info());
        let ev = q.launch(&k, &cfg, &vadd_args(&da, &db, &mut dc, n)).unwrap();
        let t = q.read(&dc, HostBuffer::new(d, n).unwrap()).unwrap();
        let out = t.wait().unwrap();
        assert!(ev.is_complete(), "{}: the read waited for the launch", d.label());
        assert_close(&format!("queue chain on {}", d.label()), &out, &reference(&a, &b), 1e-6);
        q.finish().unwrap();
        let (start, end, _) = ev.times().unwrap();
        assert!(end >= start);
        assert!(ev.command().contains("vector_add") && ev.command().contains(d.label()));
    }
}

#[test]
fn hazards_order_commands_across_queues_of_one_device() {
    let (_rt, devs) = all();
    let mut rng = Rng::fresh("hazards");
    let k = kernels::vector_add().unwrap();
    for d in &devs {
        let (q1, q2) = (d.queue().unwrap(), d.queue().unwrap());
        let n = 65_536;
        let a = rng.vec_f32(n, 0.0, 1.0);
        let b = rng.vec_f32(n, 0.0, 1.0);
        let da = d.alloc::<f32>(n).unwrap();
        let db = d.alloc::<f32>(n).unwrap();
        let mut dc = d.alloc::<f32>(n).unwrap();
        let cfg = LaunchConfig::for_items(n, d.info());
        for round in 0..20 {
            // Write on q1, launch on q2, read on q1 again: no explicit waits.
            q1.write(&da, &a).unwrap();
            q1.write(&db, &b).unwrap();
            q2.launch(&k, &cfg, &vadd_args(&da, &db, &mut dc, n)).unwrap();
            // Write after read: overwrite `a` on q1 while q2's kernel may still read it.
            let zeros = vec![0.0f32; n];
            q1.write(&da, &zeros).unwrap();
            let out = q1.read(&dc, HostBuffer::new(d, n).unwrap()).unwrap().wait().unwrap();
            assert_close(
                &format!("round {round} on {}", d.label()),
                &out,
                &reference(&a, &b),
                1e-6,
            );
            // And the blocking path sees the queues' writes.
            assert_eq!(da.to_vec().unwrap(), zeros);
        }
    }
}

#[test]
fn copies_across_devices_and_wait_for_between_devices() {
    let (_rt, devs) = all();
    let mut rng = Rng::fresh("across");
    let k = kernels::vector_add().unwrap();
    let n = 50_000;
    let a = rng.vec_f32(n, -5.0, 5.0);
    let b = rng.vec_f32(n, -5.0, 5.0);
    for src in &devs {
        for dst in &devs {
            let qs = src.queue().unwrap();
            let qd = dst.queue().unwrap();
            let sa = src.alloc::<f32>(n).unwrap();
            let sb = src.alloc::<f32>(n).unwrap();
            qs.write(&sa, &a).unwrap();
            qs.write(&sb, &b).unwrap();
            let da = dst.alloc::<f32>(n).unwrap();
            let db = dst.alloc::<f32>(n).unwrap();
            let mut dc = dst.alloc::<f32>(n).unwrap();
            // Device to device through host memory, ordered by events.
            qd.copy(&sa, &da).unwrap();
            let e = qd.copy(&sb, &db).unwrap();
            let cfg = LaunchConfig::for_items(n, dst.info());
            let launched = qd.launch(&k, &cfg, &vadd_args(&da, &db, &mut dc, n)).unwrap();
            // The source device waits for the destination's kernel, then reads it back.
            let back = src.alloc::<f32>(n).unwrap();
            qs.wait_for(&launched);
            qs.copy(&dc, &back).unwrap();
            let out = qs
                .read(&back, HostBuffer::new(src, n).unwrap())
                .unwrap()
                .wait()
                .unwrap();
            assert_close(
                &format!("{} -> {} -> {}", src.label(), dst.label(), src.label()),
                &out,
                &reference(&a, &b),
                1e-6,
            );
            e.wait().unwrap();
        }
    }
}

#[test]
fn fill_copy_and_host_buffers() {
    let (_rt, devs) = all();
    for d in &devs {
        let q = d.queue().unwrap();
        let x = d.alloc::<u32>(1000).unwrap();
        let y = d.alloc::<u32>(1000).unwrap();
        q.fill(&x, 0xdead_beef).unwrap();
        q.copy(&x, &y).unwrap();
        assert!(y.to_vec().unwrap().iter().all(|v| *v == 0xdead_beef), "{}", d.label());
        // Over-aligned elements fill too.
        let w = d.alloc::<[f64; 4]>(10).unwrap();
        q.fill(&w, [1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!(w.to_vec().unwrap().iter().all(|v| *v == [1.0, 2.0, 3.0, 4.0]));
        // write_from hands its host buffer back.
        let mut h = HostBuffer::<u32>::new(d, 1000).unwrap();
        for (i, v) in h.iter_mut().enumerate() {
            *v = i as u32 * 3;
        }
        let h = q.write_from(&x, h).unwrap().wait().unwrap();
        assert_eq!(h[999], 2997);
        assert_eq!(x.to_vec().unwrap()[500], 1500);
        // Length mismatches are typed errors and enqueue nothing.
        let e = q.read(&x, HostBuffer::new(d, 10).unwrap()).unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { .. }), "{e}");
        let e = q.copy(&x, &d.alloc::<u32>(999).unwrap()).unwrap_err();
        assert!(matches!(e, Error::LengthMismatch { .. }), "{e}");
        let e = q.copy(&x, &x).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
    }
}

#[test]
fn dropping_buffers_queues_and_host_data_with_work_in_flight_is_safe() {
    let (_rt, devs) = all();
    let mut rng = Rng::fresh("drops");
    let k = kernels::vector_add().unwrap();
    for d in &devs {
        let n = 1 << 18;
        let mut kept = Vec::new();
        for _ in 0..10 {
            let q = d.queue().unwrap();
            let a = d.alloc::<f32>(n).unwrap();
            let b = d.alloc::<f32>(n).unwrap();
            let mut c = d.alloc::<f32>(n).unwrap();
            {
                // The host slice is consumed before `write` returns.
                let host = rng.vec_f32(n, 0.0, 1.0);
                q.write(&a, &host).unwrap();
                q.write(&b, &host).unwrap();
            }
            let cfg = LaunchConfig::for_items(n, d.info());
            let ev = q.launch(&k, &cfg, &vadd_args(&a, &b, &mut c, n)).unwrap();
            let t = q.read(&c, HostBuffer::new(d, n).unwrap()).unwrap();
            // Drop the buffers and the queue while the work may still run; keep the events.
            drop((a, b, c, q));
            kept.push((ev, t));
        }
        for (ev, t) in kept {
            ev.wait().unwrap();
            let out = t.wait().unwrap();
            assert!(out.iter().all(|v| v.is_finite() && *v >= 0.0 && *v <= 2.0));
        }
        // A dropped transfer is safe too.
        let q = d.queue().unwrap();
        let x = d.upload(&vec![1.0f32; n]).unwrap();
        drop(q.read(&x, HostBuffer::new(d, n).unwrap()).unwrap());
        q.finish().unwrap();
    }
}

#[test]
fn eight_threads_enqueue_on_one_shared_queue() {
    let (_rt, devs) = all();
    let k = kernels::vector_add().unwrap();
    for d in &devs {
        let q: Queue = d.queue().unwrap();
        std::thread::scope(|s| {
            for t in 0..8u32 {
                let q = q.clone();
                let k = k.clone();
                s.spawn(move || {
                    let n = 4096 + t as usize;
                    let a = vec![t as f32; n];
                    let da = d.alloc::<f32>(n).unwrap();
                    let db = d.alloc::<f32>(n).unwrap();
                    let mut dc = d.alloc::<f32>(n).unwrap();
                    for i in 0..25 {
                        q.write(&da, &a).unwrap();
                        q.fill(&db, i as f32).unwrap();
                        let cfg = LaunchConfig::for_items(n, d.info());
                        q.launch(&k, &cfg, &vadd_args(&da, &db, &mut dc, n)).unwrap();
                        let out = q.read(&dc, HostBuffer::new(d, n).unwrap()).unwrap().wait().unwrap();
                        assert!(out.iter().all(|v| *v == t as f32 + i as f32), "thread {t} round {i}");
                    }
                });
            }
        });
        q.finish().unwrap();
    }
}

#[test]
fn queue_commands_are_profiled_and_refused_launches_enqueue_nothing() {
    let (rt, devs) = all();
    let k = kernels::vector_add().unwrap();
    for d in &devs {
        rt.profiler().take();
        let q = d.queue().unwrap();
        let a = d.alloc::<f32>(16).unwrap();
        let b = d.alloc::<f32>(16).unwrap();
        let mut c = d.alloc::<f32>(16).unwrap();
        q.fill(&a, 1.0).unwrap();
        q.copy(&a, &b).unwrap();
        let e = q
            .launch(
                &k,
                &LaunchConfig::for_items(64, d.info()),
                &vadd_args(&a, &b, &mut c, 64),
            )
            .unwrap_err();
        assert!(matches!(e, Error::BufferTooShort { .. }), "{e}");
        q.launch(
            &k,
            &LaunchConfig::for_items(16, d.info()),
            &vadd_args(&a, &b, &mut c, 16),
        )
        .unwrap();
        q.finish().unwrap();
        assert_eq!(c.to_vec().unwrap(), vec![2.0f32; 16]);
        let p = rt.profile();
        let mine: Vec<_> = p.records.iter().filter(|r| r.device == d.label()).collect();
        let count = |s: offload::profile::Stage| mine.iter().filter(|r| r.stage == s).count();
        assert_eq!(
            count(offload::profile::Stage::DeviceToDevice),
            2,
            "{}: fill + copy",
            d.label()
        );
        assert_eq!(
            count(offload::profile::Stage::Kernel),
            1,
            "{}: one launch ran",
            d.label()
        );
    }
}

#[test]
fn host_buffers_are_used_in_place_on_the_cpu_device() {
    let (rt, devs) = all();
    let k = kernels::vector_add().unwrap();
    for d in &devs {
        let n = 10_000;
        let mut ha = HostBuffer::<f32>::new(d, n).unwrap();
        let mut hb = HostBuffer::<f32>::new(d, n).unwrap();
        for i in 0..n {
            ha[i] = i as f32;
            hb[i] = 2.0 * i as f32;
        }
        let (pa, pc_host) = (ha.as_ptr(), HostBuffer::<f32>::new(d, n).unwrap());
        let pc = pc_host.as_ptr();
        rt.profiler().take();
        let a = offload::Buffer::from_host(d, ha).unwrap();
        let b = offload::Buffer::from_host(d, hb).unwrap();
        let mut c = offload::Buffer::from_host(d, pc_host).unwrap();
        let cfg = LaunchConfig::for_items(n, d.info());
        d.launch(&k, &cfg, &vadd_args(&a, &b, &mut c, n)).unwrap();
        let out = c.into_host().unwrap();
        assert!((0..n).all(|i| out[i] == 3.0 * i as f32), "{}", d.label());
        let moved: u64 = rt
            .profile()
            .records
            .iter()
            .filter(|r| {
                r.device == d.label()
                    && matches!(
                        r.stage,
                        offload::profile::Stage::HostToDevice | offload::profile::Stage::DeviceToHost
                    )
            })
            .map(|r| r.bytes)
            .sum();
        if d.backend() == offload::BackendKind::Cpu {
            // Same memory, no copy either way.
            assert_eq!(out.as_ptr(), pc, "the output came back in place");
            assert_eq!(moved, 0, "no bytes moved on the CPU device");
            assert_eq!(a.into_host().unwrap().as_ptr(), pa);
        } else {
            assert_eq!(moved, 4 * 4 * n as u64, "{}: three uploads and one download", d.label());
        }
    }
}

#[test]
fn views_as_kernel_arguments_and_in_transfers() {
    let (_rt, devs) = all();
    let k = kernels::vector_add().unwrap();
    for d in &devs {
        let q = d.queue().unwrap();
        let n = 4096;
        let a = d.upload(&(0..n).map(|i| i as f32).collect::<Vec<_>>()).unwrap();
        let b = d.upload(&vec![1000.0f32; n]).unwrap();
        let mut c = d.upload(&vec![-1.0f32; n]).unwrap();
        // Elements 1024..3072 of each buffer (byte offset 4096: aligned on every device).
        let (lo, len) = (1024, 2048);
        let va = a.slice(lo..lo + len).unwrap();
        let vb = b.slice(lo..lo + len).unwrap();
        let mut vc = c.slice_mut(lo..lo + len).unwrap();
        let cfg = LaunchConfig::for_items(len, d.info());
        q.launch(
            &k,
            &cfg,
            &[
                Arg::view(&va),
                Arg::view(&vb),
                Arg::view_mut(&mut vc),
                0u32.into(),
                (len as u32).into(),
            ],
        )
        .unwrap();
        // A view is only as long as it says: a count beyond it is refused.
        let e = q
            .launch(
                &k,
                &LaunchConfig::for_items(len + 1, d.info()),
                &[
                    Arg::view(&va),
                    Arg::view(&vb),
                    Arg::view_mut(&mut vc),
                    0u32.into(),
                    (len as u32 + 1).into(),
                ],
            )
            .unwrap_err();
        assert!(matches!(e, Error::BufferTooShort { .. }), "{e}");
        let out = q.read(&c, HostBuffer::new(d, n).unwrap()).unwrap().wait().unwrap();
        for (i, v) in out.iter().enumerate() {
            let want = if (lo..lo + len).contains(&i) {
                i as f32 + 1000.0
            } else {
                -1.0
            };
            assert_eq!(*v, want, "{} element {i}", d.label());
        }
        // Transfers, fills and copies on views.
        let part = q
            .read(&a.slice(10..20).unwrap(), HostBuffer::new(d, 10).unwrap())
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(&part[..], &(10..20).map(|i| i as f32).collect::<Vec<_>>()[..]);
        q.fill(&c.slice(0..lo).unwrap(), 7.0).unwrap();
        q.write(&c.slice(n - 4..n).unwrap(), &[1.0, 2.0, 3.0, 4.0]).unwrap();
        q.copy(&a.slice(0..32).unwrap(), &c.slice(64..96).unwrap()).unwrap();
        let e = q.copy(&c.slice(0..32).unwrap(), &c.slice(16..48).unwrap()).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "overlapping copy: {e}");
        let out = c.to_vec().unwrap();
        assert_eq!(out[0], 7.0);
        assert_eq!(&out[64..96], &(0..32).map(|i| i as f32).collect::<Vec<_>>()[..]);
        assert_eq!(out[lo], lo as f32 + 1000.0);
        assert_eq!(&out[n - 4..], &[1.0, 2.0, 3.0, 4.0]);
        assert!(a.slice(0..n + 1).is_err());
    }
}

#[test]
fn views_at_any_offset_on_the_cpu_and_aligned_ones_on_opencl() {
    let (_rt, devs) = all();
    let k = kernels::vector_add().unwrap();
    for d in &devs {
        let n = 100;
        let a = d.upload(&vec![1.0f32; n]).unwrap();
        let mut c = d.alloc::<f32>(n).unwrap();
        let va = a.slice(3..13).unwrap();
        let mut vc = c.slice_mut(3..13).unwrap();
        let cfg = LaunchConfig::for_items(10, d.info());
        let r = d.launch(
            &k,
            &cfg,
            &[
                Arg::view(&va),
                Arg::view(&va),
                Arg::view_mut(&mut vc),
                0u32.into(),
                10u32.into(),
            ],
        );
        match d.backend() {
            BackendKind::OpenCl => {
                // 12 bytes in: below OpenCL's base address alignment.
                let e = r.unwrap_err();
                assert!(e.to_string().contains("aligned"), "{e}");
            }
            _ => {
                r.unwrap();
                assert_eq!(&c.to_vec().unwrap()[3..13], &[2.0f32; 10]);
            }
        }
    }
}

#[test]
fn a_closed_device_refuses_new_commands_and_its_finished_events_stay_readable() {
    let rt = common::runtime();
    for d in common::devices(&rt) {
        let q = d.queue().unwrap();
        let x = d.alloc::<f32>(1024).unwrap();
        let ev = q.fill(&x, 5.0).unwrap();
        d.close().unwrap();
        // Closing finished the device's work: the event completed successfully.
        ev.wait().unwrap();
        assert!(ev.is_complete() && !ev.failed());
        let e = q.fill(&x, 6.0).unwrap_err();
        assert!(matches!(e, Error::Closed { .. }), "{}: {e}", d.label());
        let e = d.queue().unwrap_err();
        assert!(matches!(e, Error::Closed { .. }), "{}: {e}", d.label());
    }
}
