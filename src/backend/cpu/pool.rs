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
//! message is returned; the workers stay alive. Nothing unwinds out of the pool,
//! whatever the payload: a payload is dropped under its own `catch_unwind` (a
//! payload whose `Drop` panics again is leaked, never re-thrown), workers are
//! counted out by a drop guard, and the caller retracts its job and waits for the
//! workers that entered it in a drop guard too, so no worker can still hold a
//! pointer into the caller's stack frame once `Pool::run` is left by any path.

use std::any::Any;
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
                drop_payload(p);
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

/// Drop a caught panic payload without letting its destructor unwind: a payload
/// whose `Drop` panics would otherwise escape the `catch_unwind` that caught it.
/// If dropping it panics, that second payload is leaked (its `Drop` may panic too).
fn drop_payload(p: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(p))) {
        std::mem::forget(again);
    }
}

/// Text of a panic payload.
pub(crate) fn panic_message(p: &(dyn Any + Send)) -> String {
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
                    // Only the lifetime is erased. The `Retract` guard below
                    // removes the pointer from the slot before `job` is dropped, on
                    // every path out (unwinding included), and waits until every
                    // worker that copied it (`active`) has finished with it.
                    let short = dynjob as *const (dyn Job + '_);
                    // SAFETY: only the lifetime is erased, and the job outlives every use (see above).
                    let ptr: *const (dyn Job + 'static) = unsafe { std::mem::transmute(short) };
                    slot.job = Some(JobPtr(ptr));
                    slot.generation += 1;
                    true
                } else {
                    false
                }
            };
            if published {
                // Declared after `job`, so dropped before it: on every way out of this
                // block, unwinding included, the job leaves the slot and the workers
                // that entered it have left before `job` goes out of scope.
                let _retract = Retract(&self.shared);
                for _ in 1..wanted {
                    self.shared.work.notify_one();
                }
                job.run_chunks();
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

/// Retracts the published job and waits until every worker that entered it has
/// left; runs on drop so that it also runs if the caller unwinds.
struct Retract<'a>(&'a Shared);

impl Drop for Retract<'_> {
    fn drop(&mut self) {
        let mut slot = self.0.slot.lock();
        slot.job = None;
        while slot.active > 0 {
            self.0.done.wait(&mut slot);
        }
    }
}

/// Counts a worker out of the job it entered; runs on drop so that nothing a job
/// does can leave the worker counted `active`.
struct Active<'a>(&'a Shared);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        let mut slot = self.0.slot.lock();
        slot.active -= 1;
        if slot.active == 0 {
            self.0.done.notify_all();
        }
    }
}

/// Wait for a job not seen yet and enter it (count this worker `active`); `None`
/// on shutdown.
fn enter(sh: &Shared, seen: &mut u64) -> Option<JobPtr> {
    let mut slot = sh.slot.lock();
    loop {
        if slot.shutdown {
            return None;
        }
        if slot.generation != *seen {
            *seen = slot.generation;
            if let Some(j) = slot.job {
                slot.active += 1;
                return Some(j);
            }
        }
        sh.work.wait(&mut slot);
    }
}

/// A worker's loop. It ends only on shutdown: a job's panics are caught (chunks
/// already catch theirs; this is the last line), their payloads dropped safely.
fn worker(sh: Arc<Shared>) {
    let mut seen = 0u64;
    while let Some(job) = enter(&sh, &mut seen) {
        let _active = Active(&sh);
        // SAFETY: the job stays alive until `active` drops back to zero: `Pool::run`
        // retracts it and waits for that in a drop guard declared after the job.
        let r = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0).work() }));
        if let Err(p) = r {
            drop_payload(p);
        }
    }
}
