//! The runtime: device discovery over every compiled-in backend.
//!
//! [`Runtime::new`] probes each backend (CPU always; OpenCL and CUDA when their
//! cargo features are on and their driver libraries load). A backend that cannot
//! be used is recorded in [`Runtime::unavailable`] with its reason; discovery never
//! panics and never fails because an optional backend is missing. All devices of
//! one runtime share one [`Profiler`]. Each runtime has a process-unique number
//! ([`Runtime::number`]) that messages add to device labels when devices of
//! several runtimes are involved.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::backend::{self, Discovery};
use crate::device::Device;
use crate::error::{BackendKind, Error, Result};
use crate::profile::{Profile, Profiler, Stage};
use crate::selector::Selector;

/// A backend that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// The backend.
    pub backend: BackendKind,
    /// Why (not compiled in, driver library missing, no platform, ...).
    pub reason: String,
}

/// Environment variable naming the default device selector.
pub const DEVICE_ENV: &str = "OFFLOAD_DEVICE";

static NEXT_DEVICE_UID: AtomicU64 = AtomicU64::new(1);
static NEXT_RUNTIME: AtomicU64 = AtomicU64::new(1);

/// A fresh, process-unique device id (for devices created outside discovery,
/// such as the scheduler's fault-injecting wrapper).
pub(crate) fn next_device_uid() -> u64 {
    NEXT_DEVICE_UID.fetch_add(1, Ordering::Relaxed)
}

/// Builder for [`Runtime`].
#[derive(Clone, Debug)]
pub struct RuntimeBuilder {
    cpu_threads: Option<usize>,
    backends: Vec<BackendKind>,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        RuntimeBuilder {
            cpu_threads: None,
            backends: BackendKind::ALL.to_vec(),
        }
    }
}

impl RuntimeBuilder {
    /// Threads of the CPU backend's pool (default: one per core).
    pub fn cpu_threads(mut self, n: usize) -> Self {
        self.cpu_threads = Some(n);
        self
    }

    /// Probe only these backends.
    pub fn backends(mut self, b: &[BackendKind]) -> Self {
        self.backends = b.to_vec();
        self
    }

    /// Discover devices.
    pub fn build(self) -> Result<Runtime> {
        if self.cpu_threads == Some(0) {
            return Err(Error::InvalidInput("cpu_threads must be at least 1".into()));
        }
        let profiler = Arc::new(Profiler::new());
        let number = NEXT_RUNTIME.fetch_add(1, Ordering::Relaxed);
        let mut devices = Vec::new();
        let mut unavailable = Vec::new();
        for kind in BackendKind::ALL {
            if !self.backends.contains(&kind) {
                continue;
            }
            let t0 = Instant::now();
            let _span = tracing::debug_span!("init", backend = kind.name()).entered();
            let found: Discovery = match kind {
                BackendKind::Cpu => backend::cpu::discover(self.cpu_threads),
                #[cfg(feature = "opencl")]
                BackendKind::OpenCl => backend::opencl::discover(),
                #[cfg(feature = "cuda")]
                BackendKind::Cuda => backend::cuda::discover(),
                #[allow(unreachable_patterns)]
                other => Err(format!("not compiled in (enable the cargo feature `{}`)", other.name())),
            };
            match found {
                Ok(list) if list.is_empty() => unavailable.push(Unavailable {
                    backend: kind,
                    reason: "no device found".into(),
                }),
                Ok(list) => {
                    for b in list {
                        let d = Device::new(b, next_device_uid(), number, profiler.clone());
                        profiler.record(d.label(), Stage::Init, "discover", 0, 0, t0, Instant::now(), None);
                        devices.push(d);
                    }
                }
                Err(reason) => {
                    tracing::info!(backend = kind.name(), %reason, "backend unavailable");
                    unavailable.push(Unavailable { backend: kind, reason })
                }
            }
        }
        Ok(Runtime {
            number,
            devices,
            unavailable,
            profiler,
        })
    }
}

/// Every device of every compiled-in backend on this machine.
///
/// ```
/// use offload::{BackendKind, Runtime};
///
/// # fn main() -> offload::Result<()> {
/// // `Runtime::new()` probes every backend; this one probes only the CPU backend.
/// let rt = Runtime::builder().backends(&[BackendKind::Cpu]).cpu_threads(2).build()?;
/// for dev in rt.devices() {
///     println!("{}: {} ({} compute units)", dev.label(), dev.info().name, dev.info().compute_units);
/// }
/// for u in rt.unavailable() {
///     println!("{} unavailable: {}", u.backend.name(), u.reason);
/// }
/// let cpu = rt.device("cpu")?; // a selector, as in `OFFLOAD_DEVICE`
/// assert_eq!(cpu.backend(), BackendKind::Cpu);
/// rt.close() // teardown (also on drop)
/// # }
/// ```
pub struct Runtime {
    number: u64,
    devices: Vec<Device>,
    unavailable: Vec<Unavailable>,
    profiler: Arc<Profiler>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("number", &self.number)
            .field("devices", &self.devices)
            .field("unavailable", &self.unavailable)
            .finish()
    }
}

impl Runtime {
    /// Discover every device with default settings.
    pub fn new() -> Result<Runtime> {
        RuntimeBuilder::default().build()
    }

    /// Configure discovery.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// This runtime's process-unique number (1 for the first runtime built).
    /// Device labels (`cpu:0`) are per runtime; messages that involve devices
    /// of several runtimes say `cpu:0 of runtime #2`.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Every available device (CPU first, then OpenCL, then CUDA).
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Backends that could not be used, with reasons.
    pub fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// Whether some device of `backend` is available.
    pub fn has(&self, backend: BackendKind) -> bool {
        self.devices.iter().any(|d| d.backend() == backend)
    }

    /// Valid selectors on this machine, for messages.
    pub fn valid_selectors(&self) -> String {
        let mut v = vec!["all".to_string()];
        for b in BackendKind::ALL {
            if self.has(b) {
                v.push(b.name().to_string());
            }
        }
        v.extend(self.devices.iter().map(|d| d.label().to_string()));
        v.join(", ")
    }

    fn parse(&self, s: &str, source_name: &'static str) -> Result<Selector> {
        Selector::parse(s).map_err(|why| Error::InvalidSelector {
            selector: s.to_string(),
            source_name,
            why,
            valid: self.valid_selectors(),
        })
    }

    fn matching(&self, sel: Selector, text: &str) -> Result<Vec<Device>> {
        let found: Vec<Device> = self
            .devices
            .iter()
            .filter(|d| sel.matches(d.backend(), d.info().index))
            .cloned()
            .collect();
        if found.is_empty() {
            let unavailable: String = self
                .unavailable
                .iter()
                .map(|u| format!("; {} unavailable: {}", u.backend, u.reason))
                .collect();
            return Err(Error::NoSuchDevice {
                selector: text.to_string(),
                available: self
                    .devices
                    .iter()
                    .map(|d| d.label().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                unavailable,
            });
        }
        Ok(found)
    }

    /// Every device matching a selector (`all`, `cpu`, `opencl`, `opencl:1`, `cuda:0`).
    pub fn select(&self, selector: &str) -> Result<Vec<Device>> {
        let sel = self.parse(selector, "argument")?;
        self.matching(sel, selector)
    }

    /// The first device matching a selector.
    pub fn device(&self, selector: &str) -> Result<Device> {
        Ok(self.select(selector)?.remove(0))
    }

    /// The devices named by `OFFLOAD_DEVICE`, or the CPU when it is unset or
    /// empty. A value that is not valid Unicode is an [`Error::InvalidSelector`]
    /// naming the variable and showing the value with U+FFFD for the bad bytes.
    pub fn default_devices(&self) -> Result<Vec<Device>> {
        match std::env::var(DEVICE_ENV) {
            Ok(s) if !s.trim().is_empty() => {
                let sel = self.parse(&s, DEVICE_ENV)?;
                self.matching(sel, &s)
            }
            Err(std::env::VarError::NotUnicode(raw)) => Err(Error::InvalidSelector {
                selector: raw.to_string_lossy().into_owned(),
                source_name: DEVICE_ENV,
                why: "the value is not valid Unicode (invalid bytes shown as U+FFFD)".into(),
                valid: self.valid_selectors(),
            }),
            _ => self.select("cpu"),
        }
    }

    /// The first device named by `OFFLOAD_DEVICE`, or the CPU when it is unset.
    pub fn default_device(&self) -> Result<Device> {
        Ok(self.default_devices()?.remove(0))
    }

    /// The profiler shared by this runtime's devices.
    pub fn profiler(&self) -> &Arc<Profiler> {
        &self.profiler
    }

    /// A snapshot of everything recorded so far.
    pub fn profile(&self) -> Profile {
        self.profiler.snapshot()
    }

    /// Tear down every device now, returning the first failure (all are attempted).
    pub fn close(self) -> Result<()> {
        let mut first = None;
        for d in &self.devices {
            if let Err(e) = d.close() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}
