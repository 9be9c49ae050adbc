//! A persistent worker pool that runs one range job at a time.
//!
//! The calling thread always takes part in its own job, so a job of one chunk
//! runs inline with no wake-up at all (the empty-launch round trip is a function
//! call plus `catch_unwind`). Larger jobs are published in a slot; parked workers
//! are woken, claim chunks from an atomic counter, and leave. The caller retires
//! the job (no new worker can enter) and waits only for the workers that did
//! enter, so a slow-to-wake worker never delays it. If another thread's job
//! occupies the slot, the caller runs its whole job inline: concurrent launches
//! are correct, just not spread over the pool.
//!
//! Panics inside a chunk are caught, the rest of the job is skipped, and the
//! message is returned; the workers stay alive.

use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

/// A job the workers can help with.
trait Job: Sync {
    fn work(&self);
}

struct RangeJob<'f> {
    next: AtomicU64,
    end: u64,
    grain: u64,
    f: &'f (dyn Fn(Range<u64>) + Sync),
    panic: Mutex<Option<String>>,
}

impl RangeJob<'_> {
    fn run_chunks(&self) {
        loop {
            let s = self.next.fetch_add(self.grain, Ordering::Relaxed);
            if s >= self.end {
                return;
            }
            let e = (s + self.grain).min(self.end);
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| (self.f)(s..e))) {
                let msg = panic_message(&*p);
                self.panic.lock().get_or_insert(msg);
                self.next.store(self.end, Ordering::Relaxed);
                return;
            }
        }
    }
}

impl Job for RangeJob<'_> {
    fn work(&self) {
        self.run_chunks();
    }
}

/// Text of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Job + 'static));
// SAFETY: the pointee is `Sync` and outlives every use (see `Pool::run`).
unsafe impl Send for JobPtr {}

struct Slot {
    job: Option<JobPtr>,
    generation: u64,
    active: usize,
    shutdown: bool,
}

struct Shared {
    slot: Mutex<Slot>,
    work: Condvar,
    done: Condvar,
}

/// The pool. Dropping it stops and joins the workers.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    threads: usize,
    closed: AtomicBool,
}

impl Pool {
    /// A pool whose jobs run on `threads` threads: the caller plus `threads - 1` workers.
    pub(crate) fn new(threads: usize) -> std::io::Result<Pool> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot {
                job: None,
                generation: 0,
                active: 0,
                shutdown: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let mut handles = Vec::with_capacity(threads - 1);
        for i in 1..threads {
            let sh = shared.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("offload-cpu-{i}"))
                    .spawn(move || worker(sh))?,
            );
        }
        Ok(Pool {
            shared,
            handles: Mutex::new(handles),
            threads,
            closed: AtomicBool::new(false),
        })
    }

    /// Threads that run a job (caller included).
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f` over `0..total` in chunks of `grain`, spread over the pool.
    /// Returns the first panic message if any chunk panicked.
    pub(crate) fn run(&self, total: u64, grain: u64, f: &(dyn Fn(Range<u64>) + Sync)) -> Result<(), String> {
        let grain = grain.max(1);
        let job = RangeJob {
            next: AtomicU64::new(0),
            end: total,
            grain,
            f,
            panic: Mutex::new(None),
        };
        let wanted = total.div_ceil(grain).min(self.threads as u64) as usize;
        if wanted > 1 && !self.closed.load(Ordering::Relaxed) {
            let published = {
                let mut slot = self.shared.slot.lock();
                if slot.job.is_none() && !slot.shutdown {
                    let dynjob: &(dyn Job + '_) = &job;
                    // SAFETY: only the lifetime is erased. The pointer is removed from
                    // the slot below before this function returns, and we wait until
                    // every worker that copied it (`active`) has finished with it.
                    let ptr: *const (dyn Job + 'static) =
                        unsafe { std::mem::transmute(dynjob as *const (dyn Job + '_)) };
                    slot.job = Some(JobPtr(ptr));
                    slot.generation += 1;
                    true
                } else {
                    false
                }
            };
            if published {
                for _ in 1..wanted {
                    self.shared.work.notify_one();
                }
                job.run_chunks();
                let mut slot = self.shared.slot.lock();
                slot.job = None;
                while slot.active > 0 {
                    self.shared.done.wait(&mut slot);
                }
            } else {
                job.run_chunks();
            }
        } else {
            job.run_chunks();
        }
        match job.panic.into_inner() {
            Some(m) => Err(m),
            None => Ok(()),
        }
    }

    /// Stop and join the workers. Idempotent.
    pub(crate) fn shutdown(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.shared.slot.lock().shutdown = true;
        self.shared.work.notify_all();
        for h in self.handles.lock().drain(..) {
            // A worker never panics (chunks are caught); ignore a join error anyway.
            let _ = h.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(sh: Arc<Shared>) {
    let mut seen = 0u64;
    loop {
        let job = {
            let mut slot = sh.slot.lock();
            loop {
                if slot.shutdown {
                    return;
                }
                if slot.generation != seen {
                    seen = slot.generation;
                    if let Some(j) = slot.job {
                        slot.active += 1;
                        break j;
                    }
                }
                sh.work.wait(&mut slot);
            }
        };
        // SAFETY: the job stays alive until `active` drops back to zero (see `Pool::run`).
        unsafe { (*job.0).work() };
        let mut slot = sh.slot.lock();
        slot.active -= 1;
        if slot.active == 0 {
            sh.done.notify_all();
        }
    }
}
