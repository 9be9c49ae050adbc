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

/// What a command keeps alive until it completes.
pub(crate) type KeepAlive = Vec<Keep>;

pub(crate) struct EventInner {
    pub(crate) raw: Arc<dyn RawEvent>,
    pub(crate) queue_id: u64,
    device: Arc<str>,
    profiler: Arc<Profiler>,
    stage: Stage,
    label: String,
    bytes: u64,
    items: u64,
    enqueued: Instant,
    /// `Some` until completion has been observed.
    pending: Mutex<Option<KeepAlive>>,
    /// The failure, as text, once observed.
    failure: Mutex<Option<String>>,
    /// The typed error, for the first wait after it was observed.
    error: Mutex<Option<Error>>,
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
        label: String,
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
                pending: Mutex::new(Some(keep)),
                failure: Mutex::new(None),
                error: Mutex::new(None),
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
        if self.inner.pending.lock().is_none() {
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
        self.inner.pending.lock().is_none()
    }

    /// A failure already observed (no driver call): the dependency error it implies.
    pub(crate) fn seen_failure(&self) -> Option<Error> {
        if !self.seen_complete() {
            return None;
        }
        self.inner.failure.lock().as_ref().map(|m| Error::DependencyFailed {
            cause: format!("{} failed: {m}", self.command()),
        })
    }

    /// Whether the command completed and failed (`false` while it runs).
    pub fn failed(&self) -> bool {
        self.is_complete() && self.inner.failure.lock().is_some()
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
        let Some(keep) = self.inner.pending.lock().take() else {
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
                *self.inner.failure.lock() = Some(e.to_string());
                *self.inner.error.lock() = Some(e);
            }
        }
        drop(keep);
    }

    /// The observed outcome: the typed error once, then [`Error::CommandFailed`].
    fn outcome(&self) -> Result<()> {
        if let Some(e) = self.inner.error.lock().take() {
            return Err(e);
        }
        match self.inner.failure.lock().as_ref() {
            None => Ok(()),
            Some(m) => Err(Error::CommandFailed {
                command: self.command(),
                message: m.clone(),
            }),
        }
    }

    /// Mark completion observed without recording (the command was recorded when it ran).
    pub(crate) fn mark_recorded(&self) {
        drop(self.inner.pending.lock().take());
    }
}
