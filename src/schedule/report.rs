//! [`SplitReport`]: who did what in one split launch.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use super::policy::Policy;

/// One device's part in a split launch.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceShare {
    /// Device label, made unique within the scheduler (`cpu:0`, `cpu:0#2`, ...).
    pub device: String,
    /// Device name.
    pub name: String,
    /// Items whose results this device delivered (probes included).
    pub items: usize,
    /// Chunks it completed (probes included).
    pub chunks: usize,
    /// Of those, probe chunks run to calibrate the performance model.
    pub probes: usize,
    /// Time spent on its chunks (uploads, kernels, downloads; summed over its
    /// host threads when it has two).
    pub busy: Duration,
    /// Wall time of the run minus `busy` (waiting for work or for the others).
    pub idle: Duration,
    /// Host → device bytes.
    pub h2d_bytes: u64,
    /// Device → host bytes.
    pub d2h_bytes: u64,
}

/// A chunk (or setup step) that failed on a device.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// Device label.
    pub device: String,
    /// The chunk that failed (it was re-run elsewhere), or `None` for setup
    /// (kernel build, broadcast upload).
    pub chunk: Option<Range<usize>>,
    /// The error, as text.
    pub error: String,
}

/// A device that was given no work, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Excluded {
    /// Device label.
    pub device: String,
    /// Why it got no work.
    pub reason: String,
}

/// What a [`super::Scheduler::run`] did: per-device split, failures, exclusions.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitReport {
    /// Kernel name.
    pub kernel: String,
    /// Items in the index space.
    pub items: usize,
    /// Policy used.
    pub policy: Policy,
    /// Wall time of the run.
    pub wall: Duration,
    /// One entry per device that took part (in scheduler order).
    pub devices: Vec<DeviceShare>,
    /// Failures (each failed chunk was re-run on another device).
    pub failures: Vec<Failure>,
    /// Devices given no work, with the reason.
    pub excluded: Vec<Excluded>,
}

impl SplitReport {
    /// The report of a run with nothing to do.
    pub(crate) fn empty(kernel: &str, policy: Policy) -> Self {
        SplitReport {
            kernel: kernel.to_string(),
            items: 0,
            policy,
            wall: Duration::ZERO,
            devices: Vec::new(),
            failures: Vec::new(),
            excluded: Vec::new(),
        }
    }

    /// The share of one device by label, if it took part.
    pub fn device(&self, label: &str) -> Option<&DeviceShare> {
        self.devices.iter().find(|d| d.device == label)
    }

    /// Items delivered over all devices (equals `items` after a successful run).
    pub fn total_items(&self) -> usize {
        self.devices.iter().map(|d| d.items).sum()
    }
}

impl fmt::Display for SplitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "split {:?}: {} items, policy {}, wall {:.3} ms",
            self.kernel,
            self.items,
            self.policy,
            self.wall.as_secs_f64() * 1e3
        )?;
        writeln!(
            f,
            "  {:<10} {:>12} {:>7} {:>7} {:>6} {:>10} {:>10} {:>10} {:>10}",
            "device", "items", "share", "chunks", "probes", "busy ms", "idle ms", "h2d MB", "d2h MB"
        )?;
        for d in &self.devices {
            let share = if self.items > 0 {
                100.0 * d.items as f64 / self.items as f64
            } else {
                0.0
            };
            writeln!(
                f,
                "  {:<10} {:>12} {:>6.1}% {:>7} {:>6} {:>10.3} {:>10.3} {:>10.2} {:>10.2}",
                d.device,
                d.items,
                share,
                d.chunks,
                d.probes,
                d.busy.as_secs_f64() * 1e3,
                d.idle.as_secs_f64() * 1e3,
                d.h2d_bytes as f64 / 1e6,
                d.d2h_bytes as f64 / 1e6,
            )?;
        }
        for e in &self.excluded {
            writeln!(f, "  excluded {}: {}", e.device, e.reason)?;
        }
        for x in &self.failures {
            match &x.chunk {
                Some(c) => writeln!(
                    f,
                    "  failed {} on items {}..{} (re-run elsewhere): {}",
                    x.device, c.start, c.end, x.error
                )?,
                None => writeln!(f, "  failed {} during setup: {}", x.device, x.error)?,
            }
        }
        Ok(())
    }
}
