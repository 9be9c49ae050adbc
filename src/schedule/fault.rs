//! A fault-injecting device: a wrapper over a real device's backend that fails
//! on chosen calls, or runs its kernels more slowly, for testing the scheduler.
//!
//! [`inject_faults`] returns a new [`Device`] whose backend delegates every call
//! to the wrapped device's backend, except that the `k`-th call of a chosen kind
//! ([`FaultOp`]) returns an [`Error::Driver`] saying the fault was injected, and
//! that launches (and kernel builds) can be slowed down by sleeping. The wrapper records
//! into the wrapped device's profiler and keeps the wrapped device alive; closing
//! the wrapper does not close the wrapped device.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::backend::{Backend, DeviceMemory, RawArg, Timing};
use crate::device::{Device, DeviceInfo};
use crate::error::{Error, Result};
use crate::kernel::Kernel;
use crate::launch::LaunchConfig;

/// The kind of backend call a fault is injected into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// Device memory allocation.
    Alloc,
    /// Host → device copy.
    Write,
    /// Device → host copy.
    Read,
    /// Kernel build.
    Build,
    /// Kernel launch.
    Launch,
}

impl FaultOp {
    const ALL: [FaultOp; 5] = [
        FaultOp::Alloc,
        FaultOp::Write,
        FaultOp::Read,
        FaultOp::Build,
        FaultOp::Launch,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            FaultOp::Alloc => "alloc",
            FaultOp::Write => "write",
            FaultOp::Read => "read",
            FaultOp::Build => "build",
            FaultOp::Launch => "launch",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Rule {
    op: FaultOp,
    /// 1-based index of the first failing call.
    from: u64,
    /// Whether every later call fails too.
    persistent: bool,
}

/// What to inject: failing calls and a slowdown.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    rules: Vec<Rule>,
    slowdown: f64,
    launch_delay: Duration,
    build_delay: Duration,
}

impl FaultPlan {
    /// No faults, full speed.
    pub fn none() -> Self {
        FaultPlan::default()
    }

    /// Fail the `k`-th call (1-based) of kind `op`; later calls succeed.
    pub fn fail_on(mut self, op: FaultOp, k: u64) -> Self {
        self.rules.push(Rule {
            op,
            from: k.max(1),
            persistent: false,
        });
        self
    }

    /// Fail the `k`-th call (1-based) of kind `op` and every later one (a device
    /// that breaks and stays broken).
    pub fn fail_from(mut self, op: FaultOp, k: u64) -> Self {
        self.rules.push(Rule {
            op,
            from: k.max(1),
            persistent: true,
        });
        self
    }

    /// Make launches take `factor` times as long: after each launch, sleep for
    /// `factor − 1` times its duration (the sleeping thread uses no CPU).
    pub fn slow_down(mut self, factor: f64) -> Self {
        self.slowdown = if factor.is_finite() { factor.max(1.0) } else { 1.0 };
        self
    }

    /// Sleep this long after every launch (a fixed per-launch latency).
    pub fn launch_delay(mut self, d: Duration) -> Self {
        self.launch_delay = d;
        self
    }

    /// Sleep this long in every kernel build (a slow, uncached JIT compiler).
    pub fn build_delay(mut self, d: Duration) -> Self {
        self.build_delay = d;
        self
    }

    fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .rules
            .iter()
            .map(|r| {
                format!(
                    "fail {} #{}{}",
                    r.op.name(),
                    r.from,
                    if r.persistent { "+" } else { "" }
                )
            })
            .collect();
        if self.slowdown > 1.0 {
            parts.push(format!("{}x slower", self.slowdown));
        }
        if !self.launch_delay.is_zero() {
            parts.push(format!("+{:?}/launch", self.launch_delay));
        }
        if !self.build_delay.is_zero() {
            parts.push(format!("+{:?}/build", self.build_delay));
        }
        if parts.is_empty() {
            "no faults".into()
        } else {
            parts.join(", ")
        }
    }
}

struct FaultBackend {
    inner: Device,
    info: DeviceInfo,
    plan: FaultPlan,
    calls: [AtomicU64; 5],
}

impl FaultBackend {
    /// Count a call of kind `op` and fail it if the plan says so.
    fn tick(&self, op: FaultOp) -> Result<()> {
        let n = self.calls[op.index()].fetch_add(1, Ordering::Relaxed) + 1;
        let hit = self
            .plan
            .rules
            .iter()
            .any(|r| r.op == op && (n == r.from || (r.persistent && n > r.from)));
        if hit {
            return Err(Error::Driver {
                backend: self.info.backend,
                device: self.info.label(),
                operation: op.name().to_string(),
                message: format!("injected fault on {} call #{n}", op.name()),
            });
        }
        Ok(())
    }

    fn backend(&self) -> &dyn Backend {
        self.inner.backend_impl()
    }
}

impl Backend for FaultBackend {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn alloc(&self, bytes: usize, align: usize) -> Result<Box<dyn DeviceMemory>> {
        self.tick(FaultOp::Alloc)?;
        self.backend().alloc(bytes, align)
    }

    fn write(&self, mem: &dyn DeviceMemory, offset: usize, src: &[u8]) -> Result<Timing> {
        self.tick(FaultOp::Write)?;
        self.backend().write(mem, offset, src)
    }

    fn read(&self, mem: &dyn DeviceMemory, offset: usize, dst: &mut [u8]) -> Result<Timing> {
        self.tick(FaultOp::Read)?;
        self.backend().read(mem, offset, dst)
    }

    fn new_queue(self: std::sync::Arc<Self>) -> Result<std::sync::Arc<dyn crate::backend::queue::BackendQueue>> {
        // Faults are injected in the synchronous calls; a queue runs over them.
        Ok(crate::backend::queue::SyncQueue::arc(self))
    }

    fn builds_at_once(&self) -> bool {
        self.plan.build_delay.is_zero() && self.backend().builds_at_once()
    }

    fn build(&self, kernel: &Kernel) -> Result<Timing> {
        self.tick(FaultOp::Build)?;
        if !self.plan.build_delay.is_zero() {
            std::thread::sleep(self.plan.build_delay);
        }
        self.backend().build(kernel)
    }

    fn launch(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &[RawArg<'_>]) -> Result<Timing> {
        self.tick(FaultOp::Launch)?;
        let t0 = Instant::now();
        self.backend().launch(kernel, cfg, args)?;
        let took = t0.elapsed();
        let extra = took.mul_f64(self.plan.slowdown.max(1.0) - 1.0) + self.plan.launch_delay;
        if !extra.is_zero() {
            std::thread::sleep(extra);
        }
        // Host-timed so the record includes the injected delay.
        Ok(Timing::HOST)
    }

    fn close(&self) -> Result<()> {
        // The wrapped device belongs to its runtime and stays open; the public
        // layer marks the wrapper itself closed.
        Ok(())
    }
}

/// Wrap `device` in a fault-injecting device that follows `plan`.
///
/// The new device has the same label and limits as `device`; its name carries
/// the plan (e.g. `"… [fail launch #3]"`), so the performance model keeps it
/// apart from the real device. Call counts are per wrapper, starting at 1.
pub fn inject_faults(device: &Device, plan: FaultPlan) -> Device {
    let mut info = device.info().clone();
    info.name = format!("{} [{}]", info.name, plan.describe());
    let backend = FaultBackend {
        inner: device.clone(),
        info,
        plan,
        calls: std::array::from_fn(|_| AtomicU64::new(0)),
    };
    debug_assert_eq!(FaultOp::ALL.len(), backend.calls.len());
    Device::new(
        Arc::new(backend),
        crate::runtime::next_device_uid(),
        device.inner.runtime,
        device.profiler().clone(),
    )
}
