//! The CPU worker pool survives any panic payload: a kernel that panics with a
//! payload whose `Drop` panics too yields `Error::KernelPanic`, whether it ran
//! inline on the caller or on a worker, and the device keeps running correct
//! parallel launches afterwards. A hang aborts the process instead of stalling CI.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use offload::{Arg, BackendKind, CpuCtx, Device, Error, Kernel, LaunchConfig, Param, Runtime};

/// A panic payload whose destructor panics as well.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("Bomb::drop panics as well");
    }
}

/// Aborts the whole test process if it runs longer than a minute: a pool that
/// lost a worker while counted active hangs every later parallel launch.
fn watchdog() {
    static START: Once = Once::new();
    START.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(60));
            eprintln!("pool_panic: still running after 60 s, the pool hangs; aborting");
            std::process::abort();
        });
    });
}

/// A CPU device with a pool of 4 threads (3 workers), whatever the core count.
fn cpu4() -> (Runtime, Device) {
    watchdog();
    let rt = Runtime::builder()
        .cpu_threads(4)
        .backends(&[BackendKind::Cpu])
        .build()
        .expect("CPU runtime");
    let dev = rt.device("cpu").expect("cpu device");
    assert!(dev.info().compute_units >= 2, "pool of at least 2 threads");
    (rt, dev)
}

/// Where the bomb goes off.
#[derive(Clone, Copy, Debug)]
enum Site {
    /// Any chunk, including the caller's.
    Anywhere,
    /// Only on the launching thread, while workers keep running chunks.
    Caller,
    /// Only on a pool worker (the caller's chunks wait until it went off).
    Worker,
}

/// A kernel without buffers that throws a `Bomb` at `site`.
fn bomb_kernel(site: Site, caller: ThreadId) -> (Kernel, Arc<AtomicBool>) {
    let fired = Arc::new(AtomicBool::new(false));
    let f = fired.clone();
    let k = Kernel::builder("bomb")
        .param(Param::Offset)
        .param(Param::Count)
        .cpu_grain(1)
        .cpu(move |_ctx: &CpuCtx<'_>| {
            let on_caller = std::thread::current().id() == caller;
            let throw = match site {
                Site::Anywhere => true,
                Site::Caller => on_caller,
                Site::Worker => !on_caller,
            };
            if throw {
                f.store(true, Ordering::SeqCst);
                std::panic::panic_any(Bomb);
            }
            // Keep the other side busy long enough for the bomb to go off.
            let until = Instant::now() + Duration::from_secs(5);
            while !f.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_micros(200));
            }
        })
        .build()
        .expect("bomb kernel");
    (k, fired)
}

fn launch_bomb(dev: &Device, site: Site, blocks: u32) {
    let (k, fired) = bomb_kernel(site, std::thread::current().id());
    let cfg = LaunchConfig::new(blocks, 1);
    let e = dev
        .launch(&k, &cfg, &[0u32.into(), blocks.into()])
        .expect_err("a panicking kernel must fail the launch");
    assert!(matches!(e, Error::KernelPanic { .. }), "{site:?}: {e}");
    assert!(fired.load(Ordering::SeqCst), "{site:?}: the bomb went off");
}

/// Correct parallel vector adds, many times over (every one spreads over the pool).
fn still_healthy(dev: &Device, tag: &str) {
    let mut rng = common::Rng::fresh(tag);
    for _ in 0..50 {
        let n = 1 << 16;
        let a = rng.vec_f32(n, -10.0, 10.0);
        let b = rng.vec_f32(n, -10.0, 10.0);
        let da = dev.upload(&a).unwrap();
        let db = dev.upload(&b).unwrap();
        let mut dc = dev.upload(&vec![f32::NAN; n]).unwrap();
        let k = offload::kernels::vector_add().unwrap();
        // 256 blocks of 256 items: many chunks over every thread.
        dev.launch(
            &k,
            &LaunchConfig::new(256u32, 256u32),
            &[
                Arg::input(&da),
                Arg::input(&db),
                Arg::output(&mut dc),
                0u32.into(),
                (n as u32).into(),
            ],
        )
        .unwrap();
        let reference: Vec<f64> = a.iter().zip(&b).map(|(x, y)| *x as f64 + *y as f64).collect();
        common::assert_close(tag, &dc.to_vec().unwrap(), &reference, 1e-6);
    }
}

#[test]
fn inline_bomb_is_a_kernel_panic() {
    let (rt, dev) = cpu4();
    for _ in 0..5 {
        launch_bomb(&dev, Site::Anywhere, 1);
    }
    still_healthy(&dev, "after inline bombs");
    rt.close().unwrap();
}

#[test]
fn bomb_on_the_caller_while_workers_run_is_a_kernel_panic() {
    let (rt, dev) = cpu4();
    for _ in 0..5 {
        launch_bomb(&dev, Site::Caller, 4096);
    }
    still_healthy(&dev, "after caller bombs");
    rt.close().unwrap();
}

#[test]
fn bomb_on_a_worker_is_a_kernel_panic_and_the_pool_keeps_its_workers() {
    let (rt, dev) = cpu4();
    // More rounds than workers: a worker lost to each bomb would leave none.
    for _ in 0..8 {
        launch_bomb(&dev, Site::Worker, 4096);
    }
    still_healthy(&dev, "after worker bombs");
    rt.close().unwrap();
}

#[test]
fn bombs_everywhere_then_healthy() {
    let (rt, dev) = cpu4();
    for _ in 0..10 {
        launch_bomb(&dev, Site::Anywhere, 4096);
    }
    still_healthy(&dev, "after bombs everywhere");
    rt.close().unwrap();
}
