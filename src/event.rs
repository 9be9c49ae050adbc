//! Events: the completion of one enqueued command.
//!
//! An [`Event`] is returned by every command of a [`crate::Queue`]. It is cheap
//! to clone; [`Event::wait`] blocks until the command has completed and returns
//! its error if it failed, [`Event::is_complete`] polls, [`Event::times`] gives
//! its start and end once complete. Another queue, on any device, can be made to
//! wait for it with [`crate::Queue::wait_for`].
//!
//! An event also owns what its command needs until it completes: handles to the
//! device allocations it uses (so dropping a buffer with work in flight defers
//! the free) and the host memory it reads or writes. When completion is first
//! observed (by a wait, a poll, or the queue harvesting its finished commands),
//! the event records its profile stage and releases them.
//!
//! This module touches no driver: it speaks to the backend's [`RawEvent`].

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::backend::DeviceMemory;
use crate::backend::queue::{HostMemory, RawEvent};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::profile::{Profiler, Stage};

/// One thing a command keeps alive until it completes (held, never read:
/// dropping it is the release).
#[allow(dead_code)]
pub(crate) enum Keep {
    /// A device allocation it uses.
    Device(Arc<dyn DeviceMemory>),
    /// Host memory it reads or writes.
    Host(Arc<dyn HostMemory>),
}

/// What a command keeps alive until it completes: up to [`KeepAlive::INLINE`]
/// handles without a heap allocation (most commands use one to three buffers).
#[derive(Default)]
pub(crate) struct KeepAlive {
    inline: [Option<Keep>; KeepAlive::INLINE],
    more: Vec<Keep>,
}

impl KeepAlive {
    const INLINE: usize = 4;

    /// Keep `k` alive too.
    pub(crate) fn push(&mut self, k: Keep) {
        match self.inline.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(k),
            None => self.more.push(k),
        }
    }
}

impl Extend<Keep> for KeepAlive {
    fn extend<I: IntoIterator<Item = Keep>>(&mut self, iter: I) {
        for k in iter {
            self.push(k);
        }
    }
}

/// What an event knows of its command's completion.
#[derive(Default)]
struct Observed {
    /// `Some` until completion has been observed.
    pending: Option<KeepAlive>,
    /// The failure, as text, once observed.
    failure: Option<String>,
    /// The typed error, for the first wait after it was observed.
    error: Option<Error>,
}

pub(crate) struct EventInner {
    pub(crate) raw: Arc<dyn RawEvent>,
    pub(crate) queue_id: u64,
    device: Arc<str>,
    profiler: Arc<Profiler>,
    stage: Stage,
    label: Arc<str>,
    bytes: u64,
    items: u64,
    enqueued: Instant,
    state: Mutex<Observed>,
}

/// The completion of one enqueued command. Cheap to clone.
#[derive(Clone)]
pub struct Event {
    pub(crate) inner: Arc<EventInner>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Event({} {:?} on {}, {})",
            self.inner.stage.name(),
            self.inner.label,
            self.inner.device,
            if self.is_complete() { "complete" } else { "pending" }
        )
    }
}

impl Event {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        raw: Arc<dyn RawEvent>,
        queue_id: u64,
        device: &Device,
        stage: Stage,
        label: Arc<str>,
        bytes: u64,
        items: u64,
        enqueued: Instant,
        keep: KeepAlive,
    ) -> Event {
        Event {
            inner: Arc::new(EventInner {
                raw,
                queue_id,
                device: device.inner.label.clone(),
                profiler: device.profiler().clone(),
                stage,
                label,
                bytes,
                items,
                enqueued,
                state: Mutex::new(Observed {
                    pending: Some(keep),
                    ..Observed::default()
                }),
            }),
        }
    }

    /// The command's description: stage, label and device (`launch "vector_add" on cpu:0`).
    pub fn command(&self) -> String {
        format!(
            "{} {:?} on {}",
            self.inner.stage.name(),
            self.inner.label,
            self.inner.device
        )
    }

    /// Label of the device the command runs on (`cpu:0`, ...).
    pub fn device_label(&self) -> &str {
        &self.inner.device
    }

    /// Block until the command has completed. Its error if it failed: the first
    /// wait returns the backend's typed error; later waits
    /// [`Error::CommandFailed`] naming the command.
    pub fn wait(&self) -> Result<()> {
        let r = self.inner.raw.wait();
        self.observe(r);
        self.outcome()
    }

    /// Whether the command has completed (successfully or not). Never blocks.
    pub fn is_complete(&self) -> bool {
        if self.seen_complete() {
            return true;
        }
        if self.inner.raw.is_complete() {
            let r = self.inner.raw.wait();
            self.observe(r);
            true
        } else {
            false
        }
    }

    /// Whether completion has already been observed (no driver call).
    fn seen_complete(&self) -> bool {
        self.inner.state.lock().pending.is_none()
    }

    /// A failure already observed (no driver call): the dependency error it implies.
    pub(crate) fn seen_failure(&self) -> Option<Error> {
        let st = self.inner.state.lock();
        if st.pending.is_some() {
            return None;
        }
        st.failure.as_ref().map(|m| Error::DependencyFailed {
            cause: format!("{} failed: {m}", self.command()),
        })
    }

    /// Whether the command completed and failed (`false` while it runs).
    pub fn failed(&self) -> bool {
        self.is_complete() && self.inner.state.lock().failure.is_some()
    }

    /// Start and end of the command on the host clock once complete (device
    /// timestamps mapped onto the host clock where the backend has them), and
    /// whether they came from the device clock.
    pub fn times(&self) -> Option<(Instant, Instant, bool)> {
        if !self.is_complete() {
            return None;
        }
        self.inner.raw.times().map(|t| (t.start, t.end, t.device_clock))
    }

    /// Observe completion once (`r` is the backend's outcome): record the profile
    /// stage, release what the command kept alive, keep a failure.
    fn observe(&self, r: Result<()>) {
        let Some(keep) = self.inner.state.lock().pending.take() else {
            return;
        };
        match r {
            // Device times cost driver calls: only when someone records them.
            Ok(()) if !self.inner.profiler.is_enabled() => {}
            Ok(()) => {
                let (t0, t1, dev_ns) = match self.inner.raw.times() {
                    Some(t) => (
                        t.start.max(self.inner.enqueued),
                        t.end.max(t.start),
                        t.device_clock
                            .then(|| t.end.saturating_duration_since(t.start).as_nanos() as u64),
                    ),
                    None => (self.inner.enqueued, Instant::now(), None),
                };
                self.inner.profiler.record_on(
                    self.inner.queue_id,
                    &self.inner.device,
                    self.inner.stage,
                    &self.inner.label,
                    self.inner.bytes,
                    self.inner.items,
                    t0,
                    t1,
                    dev_ns,
                );
            }
            Err(e) => {
                let mut st = self.inner.state.lock();
                st.failure = Some(e.to_string());
                st.error = Some(e);
            }
        }
        drop(keep);
    }

    /// The observed outcome: the typed error once, then [`Error::CommandFailed`].
    fn outcome(&self) -> Result<()> {
        let mut st = self.inner.state.lock();
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        match st.failure.clone() {
            None => Ok(()),
            Some(message) => {
                drop(st);
                Err(Error::CommandFailed {
                    command: self.command(),
                    message,
                })
            }
        }
    }

    /// Mark completion observed without recording (the command was recorded when it ran).
    pub(crate) fn mark_recorded(&self) {
        let keep = self.inner.state.lock().pending.take();
        drop(keep);
    }
}
