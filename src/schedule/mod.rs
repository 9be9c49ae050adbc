//! The scheduler: split one kernel's index space across several devices at once
//! (co-execution), each device getting a share that matches its speed including
//! its transfer cost.
//!
//! ```
//! use offload::{Runtime, kernels};
//! use offload::schedule::{HostArg, Policy, Scheduler};
//!
//! # fn main() -> offload::Result<()> {
//! // Two independent CPU devices (one worker thread each).
//! let a = Runtime::builder().cpu_threads(1).build()?;
//! let b = Runtime::builder().cpu_threads(1).build()?;
//! let devices = [a.device("cpu")?, b.device("cpu")?];
//! let k = kernels::vector_add()?;
//! let n = 100_000;
//! let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
//! let y: Vec<f32> = (0..n).map(|i| 2.0 * i as f32).collect();
//! let mut z = vec![f32::NAN; n];
//! let mut s = Scheduler::new(&devices)?.with_policy(Policy::Dynamic { chunk: 8192 }).in_memory_model();
//! let report = s.run(&k, n, &mut [HostArg::input(&x), HostArg::input(&y), HostArg::output(&mut z)])?;
//! assert_eq!(z[10], 30.0);
//! println!("{report}");
//! # Ok(())
//! # }
//! ```
//!
//! # How a split launch runs
//!
//! A splittable kernel (one with [`Param::Offset`] and [`Param::Count`]) is run as
//! chunks `[offset, offset + count)` of its 1-D item space. For each chunk, every
//! [`Split::Elementwise`] buffer moves only the chunk's slice (uploaded before, and
//! for written buffers downloaded after, the launch); [`Split::Broadcast`] buffers
//! are uploaded once per device per run; scalars are passed as given; `Offset` and
//! `Count` are filled in per chunk as `u32`.
//!
//! A run is the one-task case of the task layer ([`crate::task`]): the host
//! slices become streamed data (elementwise) and borrowed read-only data
//! (broadcast), the kernel one split task of a graph over the devices, and the
//! graph's split machinery runs it; there is no second implementation. Each
//! device has one host thread (the graph's worker) that
//! enqueues its chunks on the device's queues and waits on their events: a device
//! with asynchronous queues (OpenCL, CUDA) keeps two chunks in flight, with
//! uploads, kernels and downloads on three queues, so one chunk's copies overlap
//! the other's kernel while the device's kernels still run one at a time. Uploads
//! read the host slices and downloads of write-only outputs land in them directly;
//! the CPU device computes on the host slices in place. Each in-flight slot
//! allocates its chunk buffers once (grown if a later chunk is larger) and reuses
//! them. The profile shows each device's three queues as rows of its lane.
//!
//! Kernel builds start on every device at once, each on a thread of its own.
//! A device takes part once its build is done; the run waits for a build only
//! while the device may still get work. A device whose build is still running
//! when the other devices have taken every item (or, under Static, that the plan
//! gives nothing) is left out of the run and listed in [`SplitReport::excluded`];
//! its build finishes in the background and is cached for later runs.
//!
//! Chunk lengths are multiples of the device's work-group multiple
//! ([`crate::DeviceInfo::warp_size`]) except the last chunk of the index space.
//! Launches use [`LaunchConfig::for_items`] with at most [`Scheduler::max_block`]
//! threads per block (default 256), so kernels that guard on `count` or loop with a
//! grid stride both work.
//!
//! Outputs are assembled chunk by chunk: a chunk's results are copied into the
//! host output slices only after every step of that chunk succeeded, so every
//! output item is written exactly once.
//!
//! # Policies ([`Policy`])
//!
//! * **Static** — one contiguous share per device, computed once from the
//!   performance model by the balance solver ([`partition::balance`]), moved in
//!   pieces of at most 8 MiB of device buffers (at most 64 pieces) through the
//!   reused chunk buffers: device `d`
//!   doing `n_d` items is predicted to take `latency_d + n_d × (bytes_per_item /
//!   bandwidth_d + 1 / rate_d)`, and shares are chosen so all participants finish
//!   together. A device whose fixed cost alone exceeds that finish time gets
//!   nothing. Good when the model is accurate and devices are steady.
//! * **Dynamic** — equal chunks pulled by whichever device is idle; no model.
//!   Robust, but every chunk pays a launch and its last chunks can straggle.
//! * **HGuided** (default) — EngineCL's heterogeneous guided policy: an idle
//!   device gets `max(min_chunk, remaining × share / k)` items, `share` being its
//!   fraction of the predicted total throughput. Chunks start large (few launches)
//!   and shrink toward the end (little straggling). No chunk but the last is
//!   smaller than the chunk floor ([`partition::chunk_floor`]: one work-group
//!   multiple and 1/256 of the job), so a device with a tiny share cannot cut a
//!   run into thousands of launches. On top, an end-game guard: a
//!   device never takes a chunk it is predicted to finish after the other devices
//!   could finish everything that is left ([`partition::useful_chunk`]); a device
//!   that cannot finish even a floor-sized chunk in time retires and the report
//!   says why (for vector add on a discrete GPU the transfers alone can exceed the
//!   CPU's whole job).
//!
//! `OFFLOAD_POLICY` (`static`, `dynamic[:chunk]`, `hguided[:k[:min_chunk]]`) sets the
//! default; [`Scheduler::with_policy`] overrides it.
//!
//! # The performance model ([`model`])
//!
//! Per (kernel, device): items/s, per-launch latency and host↔device bandwidth.
//! A device the model does not know yet is first given two small probe chunks
//! (about 1/2048 and 8/2048 of the job) which calibrate latency and rate; every
//! finished chunk then updates rate and bandwidth. The model is saved after each
//! run to `<cache dir>/perf-model.json` ([`crate::cache::cache_dir`];
//! `OFFLOAD_CACHE_DIR` overrides), so later runs skip the probes. A corrupt or
//! stale file is ignored with a warning and the devices are probed again.
//!
//! # Faults
//!
//! If a device fails on a chunk, the chunk goes back to a retry queue, the device
//! is dropped for the rest of the run, and the next idle device re-runs the chunk;
//! the report lists the failure. If every device fails, [`Scheduler::run`] returns
//! [`Error::AllDevicesFailed`] with every error (outputs then hold the results of
//! the chunks that did complete; the rest is untouched). [`fault::inject_faults`]
//! wraps a device to fail on its `k`-th call of a chosen kind, or to run slowly.
//!
//! # Edge cases
//!
//! * **Zero items** — defined: after the arguments are checked, `run` returns an
//!   empty report without touching any device or output.
//! * **Aliasing** — an output's host memory may not overlap any other argument's:
//!   [`Error::InvalidInput`]. In safe Rust the borrow checker already forbids it;
//!   the check guards slices built with `unsafe`.
//! * **Shared host cores** — host-CPU devices (the CPU backend, PoCL) beyond the
//!   first are left out when their threads together exceed the host's cores
//!   (listed in [`SplitReport::excluded`]); [`Scheduler::allow_shared_cores`]
//!   overrides.
//! * Devices that have no implementation of the kernel are left out and listed in
//!   [`SplitReport::excluded`]; if none can run it, [`Error::NoCapableDevice`].
//!
//! The module is split by concept: [`partition`] (pure arithmetic), [`policy`],
//! [`model`], [`fault`], `dispatch` (which items each device computes next,
//! shared with split tasks of the task graph), `run` (the translation into a
//! one-task graph) and [`report`].

use std::path::PathBuf;

use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernel::{ElemType, Kernel, Param, Scalar, Split};
use crate::launch::LaunchConfig;

pub(crate) mod dispatch;
pub mod fault;
pub mod model;
pub mod partition;
pub mod policy;
pub mod report;
mod run;

pub use fault::{FaultOp, FaultPlan, inject_faults};
pub use model::{Estimate, PerfModel};
pub use policy::{POLICY_ENV, Policy};
pub use report::{DeviceShare, Excluded, Failure, SplitReport};

/// One host-side argument of a split launch, aligned with the kernel's
/// parameters excluding [`Param::Offset`] and [`Param::Count`].
#[derive(Debug)]
pub enum HostArg<'a> {
    /// Host data of a read-only buffer parameter.
    In {
        /// The bytes.
        bytes: &'a [u8],
        /// Element type (must match the parameter's).
        ty: ElemType,
    },
    /// Host data of a written (or read-written) buffer parameter.
    Out {
        /// The bytes (also read first for read-write parameters).
        bytes: &'a mut [u8],
        /// Element type (must match the parameter's).
        ty: ElemType,
    },
    /// A scalar parameter.
    Scalar(Scalar),
    /// A local-memory parameter of `len` elements.
    Local {
        /// Elements per work-group.
        len: usize,
    },
}

impl<'a> HostArg<'a> {
    /// A read-only buffer argument.
    pub fn input<T: bytemuck::Pod>(data: &'a [T]) -> Self {
        HostArg::In {
            bytes: bytemuck::cast_slice(data),
            ty: ElemType::of::<T>(),
        }
    }
    /// A written buffer argument.
    pub fn output<T: bytemuck::Pod>(data: &'a mut [T]) -> Self {
        HostArg::Out {
            bytes: bytemuck::cast_slice_mut(data),
            ty: ElemType::of::<T>(),
        }
    }
    /// A scalar argument.
    pub fn scalar(v: impl Into<Scalar>) -> Self {
        HostArg::Scalar(v.into())
    }
    /// Local memory of `len` elements.
    pub fn local(len: usize) -> Self {
        HostArg::Local { len }
    }

    fn describe(&self) -> String {
        match self {
            HostArg::In { ty, .. } => format!("input slice of {}", ty.name),
            HostArg::Out { ty, .. } => format!("output slice of {}", ty.name),
            HostArg::Scalar(s) => format!("{} scalar", s.ty().name()),
            HostArg::Local { len } => format!("local memory of {len} elements"),
        }
    }

    /// `(address, length)` of its host memory, if it has any.
    fn region(&self) -> Option<(usize, usize)> {
        match self {
            HostArg::In { bytes, .. } => Some((bytes.as_ptr() as usize, bytes.len())),
            HostArg::Out { bytes, .. } => Some((bytes.as_ptr() as usize, bytes.len())),
            _ => None,
        }
    }
}

/// Splits launches across a set of devices. See the [module docs](self).
///
/// ```
/// use offload::{BackendKind, Runtime, kernels};
/// use offload::schedule::{HostArg, Scheduler};
///
/// # fn main() -> offload::Result<()> {
/// let rt = Runtime::builder().backends(&[BackendKind::Cpu]).build()?;
/// let n = 50_000;
/// let (a, b) = (vec![1.0f32; n], vec![2.0f32; n]);
/// let mut c = vec![0.0f32; n];
/// // Every device of the runtime; the model stays in memory (no cache file).
/// let mut s = Scheduler::new(rt.devices())?.in_memory_model();
/// let report = s.run(&kernels::vector_add()?, n, &mut [HostArg::input(&a), HostArg::input(&b), HostArg::output(&mut c)])?;
/// assert!(c.iter().all(|v| *v == 3.0));
/// println!("{report}"); // who computed what, idle time, exclusions
/// # Ok(())
/// # }
/// ```
pub struct Scheduler {
    devices: Vec<Device>,
    labels: Vec<String>,
    policy: Policy,
    max_block: u32,
    model: PerfModel,
    shared_cores: bool,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("devices", &self.labels)
            .field("policy", &self.policy)
            .field("max_block", &self.max_block)
            .field("model", &self.model.path())
            .finish()
    }
}

impl Scheduler {
    /// A scheduler over `devices` (duplicates are ignored), with the policy from
    /// `OFFLOAD_POLICY` (default HGuided) and the model from the cache directory.
    ///
    /// Errors: [`Error::InvalidInput`] for an empty device set or an invalid
    /// `OFFLOAD_POLICY`.
    pub fn new(devices: &[Device]) -> Result<Self> {
        if devices.is_empty() {
            return Err(Error::InvalidInput(
                "the scheduler needs at least one device; the device set is empty".into(),
            ));
        }
        let mut uniq: Vec<Device> = Vec::new();
        for d in devices {
            if !uniq.contains(d) {
                uniq.push(d.clone());
            }
        }
        // Devices from different runtimes can share a label (`cpu:0`): number repeats.
        let mut labels: Vec<String> = Vec::new();
        for d in &uniq {
            let base = d.label().to_string();
            let seen = labels
                .iter()
                .filter(|l| l.split('#').next() == Some(base.as_str()))
                .count();
            labels.push(if seen == 0 {
                base
            } else {
                format!("{base}#{}", seen + 1)
            });
        }
        Ok(Scheduler {
            devices: uniq,
            labels,
            policy: Policy::from_env()?,
            max_block: 256,
            model: PerfModel::load_default(),
            shared_cores: false,
        })
    }

    /// Use `policy` instead of the `OFFLOAD_POLICY` default.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Cap threads per block at `n` (default 256) for kernels that need smaller blocks.
    pub fn max_block(mut self, n: u32) -> Self {
        self.max_block = n.max(1);
        self
    }

    /// Load the model from (and save it to) `path` instead of the cache directory.
    pub fn model_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.model = PerfModel::load(&path.into());
        self
    }

    /// Let devices that compute on the host's cores (the CPU backend, OpenCL CPU
    /// devices such as PoCL) share a run even when their threads together exceed
    /// the host's cores. Off by default: such devices only contend for the same
    /// cores, so all but the first are left out (and the report says why).
    pub fn allow_shared_cores(mut self, allow: bool) -> Self {
        self.shared_cores = allow;
        self
    }

    /// Keep the model in memory only (nothing is read or written).
    pub fn in_memory_model(mut self) -> Self {
        self.model.set_path(None);
        self
    }

    /// The devices, in scheduler order.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Unique labels of the devices (`cpu:0`, `cpu:0#2`, ...), as reports use them.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The policy in use.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The performance model (what it has learned so far).
    pub fn model(&self) -> &PerfModel {
        &self.model
    }

    /// The performance model, mutable (e.g. to forget an entry).
    pub fn model_mut(&mut self) -> &mut PerfModel {
        &mut self.model
    }

    /// Run `kernel` over `items` items split across the devices; `args` align
    /// with the kernel's parameters excluding `Offset` and `Count`. Returns who
    /// did what. See the [module docs](self) for semantics and errors.
    pub fn run(&mut self, kernel: &Kernel, items: usize, args: &mut [HostArg<'_>]) -> Result<SplitReport> {
        self.policy.validate()?;
        let slots = check(kernel, items, args)?;
        let mut excluded = Vec::new();
        let mut parts = Vec::new();
        let mut why = Vec::new();
        for (d, label) in self.devices.iter().zip(&self.labels) {
            if d.supports(kernel) {
                parts.push(run::Participant {
                    device: d,
                    label: label.clone(),
                });
            } else {
                let reason = format!(
                    "no implementation for backend {} (the kernel has: {})",
                    d.backend(),
                    kernel.backend_names()
                );
                why.push(format!("{label}: {reason}"));
                excluded.push(Excluded {
                    device: label.clone(),
                    reason,
                });
            }
        }
        if !self.shared_cores {
            exclude_shared_cores(&mut parts, &mut excluded);
        }
        if parts.is_empty() {
            return Err(Error::NoCapableDevice {
                kernel: kernel.name().to_string(),
                why: why.join("; "),
            });
        }
        if items == 0 {
            let mut r = SplitReport::empty(kernel.name(), self.policy);
            r.excluded = excluded;
            return Ok(r);
        }
        let job = run::Job {
            kernel,
            items,
            slots,
            policy: self.policy,
            max_block: self.max_block,
        };
        let result = run::execute(&job, &parts, &mut self.model, excluded);
        if let Err(e) = self.model.save() {
            tracing::warn!(error = %e, "cannot save the performance model");
        }
        result
    }
}

/// Leave out host-CPU devices beyond the first when their threads together
/// exceed the host's cores: two such devices only take cores from each other
/// (measured: N-body on the CPU backend plus PoCL on the same two cores runs at
/// half the CPU backend's speed alone).
fn exclude_shared_cores(parts: &mut Vec<run::Participant<'_>>, excluded: &mut Vec<Excluded>) {
    let devices: Vec<&Device> = parts.iter().map(|p| p.device).collect();
    let labels: Vec<String> = parts.iter().map(|p| p.label.clone()).collect();
    let out = shared_core_exclusions(&devices, &labels, "Scheduler::allow_shared_cores");
    for (i, reason) in &out {
        excluded.push(Excluded {
            device: labels[*i].clone(),
            reason: reason.clone(),
        });
    }
    for (i, _) in out.iter().rev() {
        parts.remove(*i);
    }
}

/// Which of `devices` (labelled `labels`) to leave out because they compute on
/// the same host cores as an earlier host-CPU device and their threads together
/// exceed the cores: `(index, reason)`, ascending. `how` names the override.
pub(crate) fn shared_core_exclusions(devices: &[&Device], labels: &[String], how: &str) -> Vec<(usize, String)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let host: Vec<usize> = (0..devices.len()).filter(|&i| devices[i].info().host_cpu).collect();
    let threads: u64 = host.iter().map(|&i| devices[i].info().compute_units as u64).sum();
    if host.len() < 2 || threads <= cores {
        return Vec::new();
    }
    let first = &labels[host[0]];
    host[1..]
        .iter()
        .map(|&i| {
            (
                i,
                format!(
                    "computes on the same host cores as {first} ({threads} threads of host-CPU devices on {cores} cores would only contend; {how} overrides)"
                ),
            )
        })
        .collect()
}

/// An argument's index, host memory `(address, length)` if any, and whether it is written.
type Region = (usize, Option<(usize, usize)>, bool);

/// Check `args` against `kernel`'s signature for `items` items and turn them
/// into the run's slots (one per kernel parameter).
fn check<'h>(kernel: &Kernel, items: usize, args: &'h mut [HostArg<'_>]) -> Result<Vec<run::Slot<'h>>> {
    if !kernel.is_splittable() {
        return Err(Error::InvalidInput(format!(
            "kernel {:?} cannot be split: its signature needs an Offset and a Count parameter",
            kernel.name()
        )));
    }
    if items > u32::MAX as usize {
        return Err(Error::InvalidInput(format!(
            "{items} items exceed the limit of {} (Offset and Count are u32)",
            u32::MAX
        )));
    }
    let params = kernel.params();
    let expected = params
        .iter()
        .filter(|p| !matches!(p, Param::Offset | Param::Count))
        .count();
    let got = args.len();
    if got != expected {
        return Err(Error::ArgCount {
            kernel: kernel.name().to_string(),
            expected,
            got,
        });
    }
    // Aliasing: a written host slice may not overlap any other argument's memory.
    let regions: Vec<Region> = args
        .iter()
        .enumerate()
        .map(|(i, a)| (i, a.region(), matches!(a, HostArg::Out { .. })))
        .collect();
    for (i, ra, wa) in &regions {
        for (j, rb, wb) in &regions {
            if i < j
                && (*wa || *wb)
                && let (Some(a), Some(b)) = (ra, rb)
                && run::overlaps(*a, *b)
            {
                return Err(Error::InvalidInput(format!(
                    "kernel {:?}: host memory of argument {i} overlaps argument {j}, and one of them is written",
                    kernel.name()
                )));
            }
        }
    }
    let mut slots = Vec::with_capacity(params.len());
    let mut it = args.iter_mut().enumerate();
    for p in params {
        let (i, a) = match p {
            Param::Offset => {
                slots.push(run::Slot::Offset);
                continue;
            }
            Param::Count => {
                slots.push(run::Slot::Count);
                continue;
            }
            _ => match it.next() {
                Some(x) => x,
                None => {
                    return Err(Error::ArgCount {
                        kernel: kernel.name().to_string(),
                        expected,
                        got,
                    });
                }
            },
        };
        let mismatch = |a: &HostArg<'_>| Error::ArgType {
            kernel: kernel.name().to_string(),
            index: i,
            param: p.name().to_string(),
            expected: p.describe(),
            got: a.describe(),
        };
        let slot = match (p, a) {
            (
                Param::Buffer {
                    name,
                    ty,
                    access,
                    split,
                },
                a,
            ) => {
                let (bytes_len, aty) = match &*a {
                    HostArg::In { bytes, ty } if !access.writes() => (bytes.len(), *ty),
                    HostArg::Out { bytes, ty } if access.writes() => (bytes.len(), *ty),
                    other => return Err(mismatch(other)),
                };
                if aty != *ty {
                    return Err(mismatch(a));
                }
                let size = ty.size.max(1);
                if bytes_len % size != 0 {
                    return Err(Error::InvalidInput(format!(
                        "argument {i} ({name}): {bytes_len} bytes is not a whole number of {} elements",
                        ty.name
                    )));
                }
                match split {
                    Split::Elementwise { per_item } => {
                        let want = items.checked_mul(*per_item);
                        if want != Some(bytes_len / size) {
                            return Err(Error::LengthMismatch {
                                what: format!(
                                    "split buffer {name:?} (Elementwise, {per_item} per item, {items} items)"
                                ),
                                host: bytes_len / size,
                                buffer: want.unwrap_or(usize::MAX),
                            });
                        }
                        match a {
                            HostArg::In { bytes, .. } => run::Slot::Elem {
                                ty: *ty,
                                input: Some(&**bytes),
                                output: None,
                                read_write: false,
                            },
                            HostArg::Out { bytes, .. } => run::Slot::Elem {
                                ty: *ty,
                                input: None,
                                output: Some(run::HostOut {
                                    ptr: bytes.as_mut_ptr(),
                                    len: bytes.len(),
                                }),
                                read_write: matches!(access, crate::kernel::Access::ReadWrite),
                            },
                            other => return Err(mismatch(other)),
                        }
                    }
                    Split::Broadcast => match a {
                        HostArg::In { bytes, .. } => run::Slot::Bcast { ty: *ty, data: bytes },
                        other => return Err(mismatch(other)),
                    },
                }
            }
            (Param::Scalar { ty, .. }, HostArg::Scalar(s)) if s.ty() == *ty => run::Slot::Scalar(*s),
            (Param::Local { .. }, HostArg::Local { len }) => run::Slot::Local(*len),
            (_, other) => return Err(mismatch(other)),
        };
        slots.push(slot);
    }
    Ok(slots)
}

/// The launch configuration the scheduler uses for a chunk of `n` items on a
/// device (exposed for tests and tools that want to reproduce a chunk launch).
pub fn chunk_config(n: usize, device: &Device, max_block: u32) -> LaunchConfig {
    crate::task::chunk::chunk_config(n, device.info(), max_block)
}
