//! The CPU backend's launch path allocates nothing on the heap: a counting global
//! allocator watches 200 launches (one inline, one spread over the worker pool),
//! with profile recording off and on. One test in its own binary, so no other test
//! allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use offload::{Arg, BackendKind, LaunchConfig, Runtime, kernels};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn cpu_launch_path_does_not_allocate() {
    let rt = Runtime::builder()
        .backends(&[BackendKind::Cpu])
        .cpu_threads(2)
        .build()
        .unwrap();
    let dev = rt.device("cpu").unwrap();
    let k = kernels::vector_add().unwrap();
    let noop = kernels::noop().unwrap();
    let n = 1 << 18;
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 + 1.0).collect();
    let da = dev.upload(&a).unwrap();
    let mut dc = dev.alloc::<f32>(n).unwrap();
    let big = LaunchConfig::for_items(n, dev.info());
    let one = LaunchConfig::new(1, 1);
    let mut launch_all = |times: usize| {
        for _ in 0..times {
            dev.launch(
                &k,
                &big,
                &[
                    Arg::input(&da),
                    Arg::input(&da),
                    Arg::output(&mut dc),
                    0u32.into(),
                    (n as u32).into(),
                ],
            )
            .unwrap();
            dev.launch(&noop, &one, &[0u32.into(), 1u32.into()]).unwrap();
        }
    };
    // Warm-up: one-time, process-wide lazy allocations are not per-launch costs:
    // parking_lot's global parking table (made at the first park of any thread),
    // each thread's first use of its handle. Park the main thread once, and launch
    // until every pool thread has run chunks and parked.
    {
        let m = parking_lot::Mutex::new(());
        parking_lot::Condvar::new().wait_for(&mut m.lock(), std::time::Duration::from_millis(1));
    }
    for _ in 0..20 {
        launch_all(5);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }

    rt.profiler().set_enabled(false);
    let before = ALLOCS.load(Ordering::Relaxed);
    launch_all(100);
    let quiet = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(quiet, 0, "{quiet} heap allocations in 200 launches with recording off");

    rt.profiler().set_enabled(true);
    rt.profiler().take();
    let before = ALLOCS.load(Ordering::Relaxed);
    launch_all(100);
    let recorded = ALLOCS.load(Ordering::Relaxed) - before;
    // Records are stored compactly with interned labels: nothing per launch either.
    assert_eq!(recorded, 0, "{recorded} heap allocations in 200 recorded launches");
    assert_eq!(rt.profiler().take().records.len(), 200);
    // The counter does see allocations.
    let before = ALLOCS.load(Ordering::Relaxed);
    std::hint::black_box(Vec::<u8>::with_capacity(64));
    assert_eq!(ALLOCS.load(Ordering::Relaxed) - before, 1);
    let c = dc.to_vec().unwrap();
    assert!(c.iter().zip(&a).all(|(c, a)| *c == a + a));
}
