//! What a task is: a kernel, its arguments (data with an access mode, scalars,
//! local memory) in the kernel's parameter order, an item space and an optional
//! set of devices it may run on. Checked against the kernel's signature when
//! submitted.
//!
//! This module touches no driver.

use std::ops::Range;
use std::sync::Arc;

use super::data::{Data, Root};
use crate::device::{Device, DeviceInfo};
use crate::error::{Error, Result};
use crate::kernel::{Access, Kernel, Param, Scalar};
use crate::launch::LaunchConfig;

/// One argument of a task as given by the user.
pub(crate) enum TaskArg {
    /// A data handle with the access the task makes.
    Data {
        root: Arc<Root>,
        read: Range<usize>,
        write: Range<usize>,
        mode: Access,
    },
    /// A scalar.
    Scalar(Scalar),
    /// Local memory of so many elements.
    Local(usize),
}

/// The item space of a task.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Space {
    /// `n` items, 1-D: a configuration per device from
    /// [`LaunchConfig::for_items`]; `Count` is `n`.
    Items(usize),
    /// An explicit configuration; `Count` is its thread count.
    Config(LaunchConfig),
}

impl Space {
    /// Items (`Count`) of the task.
    pub fn items(&self) -> u64 {
        match self {
            Space::Items(n) => *n as u64,
            Space::Config(c) => c.total_threads().unwrap_or(0),
        }
    }

    /// The launch configuration on a device.
    pub fn config(&self, info: &DeviceInfo) -> LaunchConfig {
        match self {
            Space::Items(n) => LaunchConfig::for_items(*n, info),
            Space::Config(c) => *c,
        }
    }
}

/// A unit of work for a [`super::TaskGraph`]: a kernel launched over an item
/// space with data arguments whose access modes (read, write, read-write)
/// order it after earlier tasks on the same elements.
///
/// Arguments follow the kernel's parameters in order, skipping `Offset` and
/// `Count` (filled in: 0 and the item count).
///
/// ```
/// use offload::{Runtime, kernels, task::{Task, TaskGraph}};
/// let rt = Runtime::builder().backends(&[offload::BackendKind::Cpu]).build()?;
/// let graph = TaskGraph::new(rt.devices())?;
/// let a = graph.data("a", &[1.0f32; 1000])?;
/// let b = graph.data("b", &[2.0f32; 1000])?;
/// let c = graph.data("c", &[0.0f32; 1000])?;
/// graph.submit(Task::new(&kernels::vector_add()?).read(&a).read(&b).write(&c).items(1000))?;
/// assert_eq!(c.acquire()?, vec![3.0; 1000]);
/// # Ok::<(), offload::Error>(())
/// ```
pub struct Task {
    pub(crate) kernel: Kernel,
    pub(crate) args: Vec<TaskArg>,
    pub(crate) space: Option<Space>,
    pub(crate) only: Vec<Device>,
    pub(crate) name: Option<String>,
    pub(crate) split: bool,
    pub(crate) max_block: u32,
    /// Label chunks `chunk N` in the profile (one-task runs) rather than by the task's name.
    pub(crate) chunk_labels: bool,
}

impl Task {
    /// A task running `kernel`; add its arguments in parameter order.
    pub fn new(kernel: &Kernel) -> Task {
        Task {
            kernel: kernel.clone(),
            args: Vec::new(),
            space: None,
            only: Vec::new(),
            name: None,
            split: false,
            max_block: u32::MAX,
            chunk_labels: false,
        }
    }

    /// A data argument over a whole root (the scheduler's host slices).
    pub(crate) fn root(mut self, root: &Arc<Root>, mode: Access) -> Self {
        self.args.push(TaskArg::Data {
            root: root.clone(),
            read: 0..root.len,
            write: 0..root.len,
            mode,
        });
        self
    }

    fn data<T: bytemuck::Pod>(mut self, d: &Data<T>, mode: Access) -> Self {
        self.args.push(TaskArg::Data {
            root: d.root.clone(),
            read: d.read.clone(),
            write: d.write.clone(),
            mode,
        });
        self
    }

    /// A data argument the kernel only reads (a `Read` parameter).
    pub fn read<T: bytemuck::Pod>(self, d: &Data<T>) -> Self {
        self.data(d, Access::Read)
    }

    /// A data argument the kernel only writes, every owned element (a `Write`
    /// parameter): its old values are not fetched.
    pub fn write<T: bytemuck::Pod>(self, d: &Data<T>) -> Self {
        self.data(d, Access::Write)
    }

    /// A data argument the kernel reads and writes (a `ReadWrite` parameter).
    pub fn read_write<T: bytemuck::Pod>(self, d: &Data<T>) -> Self {
        self.data(d, Access::ReadWrite)
    }

    /// A scalar argument.
    pub fn scalar(mut self, v: impl Into<Scalar>) -> Self {
        self.args.push(TaskArg::Scalar(v.into()));
        self
    }

    /// Local memory of `len` elements.
    pub fn local(mut self, len: usize) -> Self {
        self.args.push(TaskArg::Local(len));
        self
    }

    /// `n` items in one dimension (the launch configuration is chosen per device).
    pub fn items(mut self, n: usize) -> Self {
        self.space = Some(Space::Items(n));
        self
    }

    /// An explicit launch configuration (1–3 D); `Count` is its thread count.
    pub fn config(mut self, cfg: LaunchConfig) -> Self {
        self.space = Some(Space::Config(cfg));
        self
    }

    /// Run only on `device` (call again to allow several).
    pub fn on(mut self, device: &Device) -> Self {
        self.only.push(device.clone());
        self
    }

    /// Split the task's items over the graph's devices (a splittable kernel:
    /// one with `Offset` and `Count`; 1-D items). Chunks go to devices by the
    /// graph's split policy (HGuided by default, as in
    /// [`crate::schedule::Scheduler`]), each computed on that device's replicas:
    /// a chunk's elementwise data is its slice, fetched only where the device
    /// lacks it; broadcast data is read whole.
    pub fn split(mut self) -> Self {
        self.split = true;
        self
    }

    /// Cap the threads per block of a split task's chunk launches at `n` (for
    /// kernels that need small blocks; by default the device's choice).
    pub fn max_block(mut self, n: u32) -> Self {
        self.max_block = n.max(1);
        self
    }

    /// A name for reports and the DAG picture (default: the kernel's name).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }
}

/// A checked task, as the graph keeps it (shared by re-runs).
pub(crate) struct TaskSpec {
    pub kernel: Kernel,
    pub name: String,
    /// The name, shared with the profile records of its launches.
    pub label: Arc<str>,
    /// One per kernel parameter.
    pub params: Vec<ParamArg>,
    pub space: Space,
    /// Device indices it may run on (empty: any).
    pub only: Vec<usize>,
    /// Its performance-model key on each device of the graph (made once:
    /// placement asks for them per task and device).
    pub keys: Vec<String>,
    /// Split over devices in chunks.
    pub split: bool,
    /// Threads per block at most, for chunk launches.
    pub max_block: u32,
    /// Chunks are labelled `chunk N` in the profile.
    pub chunk_labels: bool,
    /// Some data argument is streamed (see `Root::streamed`).
    pub streamed: bool,
}

/// What one kernel parameter receives.
pub(crate) enum ParamArg {
    Data {
        root: Arc<Root>,
        read: Range<usize>,
        write: Range<usize>,
        mode: Access,
        /// Elements per item of an elementwise parameter (`None`: broadcast).
        per_item: Option<usize>,
    },
    Scalar(Scalar),
    Local(usize),
    Offset,
    Count,
}

impl TaskSpec {
    /// Check `t` against its kernel's signature and the graph's devices.
    pub(crate) fn check(t: Task, devices: &[Device]) -> Result<TaskSpec> {
        let k = &t.kernel;
        let mut given = t.args.into_iter();
        let mut params = Vec::with_capacity(k.params().len());
        let user_params = k
            .params()
            .iter()
            .filter(|p| !matches!(p, Param::Offset | Param::Count))
            .count();
        let bad = |why: String| Error::InvalidArgument {
            kernel: k.name().to_string(),
            why,
        };
        let count = given.len();
        if count != user_params {
            return Err(Error::ArgCount {
                kernel: k.name().to_string(),
                expected: user_params,
                got: count,
            });
        }
        for (i, p) in k.params().iter().enumerate() {
            let a = match p {
                Param::Offset => ParamArg::Offset,
                Param::Count => ParamArg::Count,
                _ => match given.next() {
                    Some(a) => check_arg(p, a).map_err(|w| bad(format!("argument {i} ({}): {w}", p.name())))?,
                    None => return Err(bad(format!("argument {i} ({}) missing", p.name()))),
                },
            };
            params.push(a);
        }
        let space = t
            .space
            .ok_or_else(|| bad("no item space: call Task::items or Task::config".into()))?;
        if space.items() > u32::MAX as u64 {
            return Err(bad(format!("{} items is more than u32::MAX", space.items())));
        }
        let mut only = Vec::new();
        for d in &t.only {
            match devices.iter().position(|x| x == d) {
                Some(i) => only.push(i),
                None => return Err(bad(format!("Task::on names {}, which is not in the graph", d.label()))),
            }
        }
        if t.split {
            let has = |want: fn(&Param) -> bool| k.params().iter().any(want);
            if !has(|p| matches!(p, Param::Offset)) || !has(|p| matches!(p, Param::Count)) {
                return Err(bad(
                    "Task::split needs a splittable kernel (with Offset and Count)".into()
                ));
            }
            if !matches!(space, Space::Items(_)) {
                return Err(bad("Task::split needs 1-D items (Task::items)".into()));
            }
            for p in &params {
                match p {
                    ParamArg::Data {
                        root,
                        mode,
                        per_item: None,
                        ..
                    } if mode.writes() => {
                        return Err(bad(format!(
                            "Task::split: data {:?} is written but broadcast (only elementwise data may be written by a split task)",
                            root.name
                        )));
                    }
                    ParamArg::Data {
                        root,
                        write,
                        per_item: Some(e),
                        ..
                    } if write.len() < space.items() as usize * e => {
                        return Err(bad(format!(
                            "Task::split: data {:?} has {} elements, {} items need {}",
                            root.name,
                            write.len(),
                            space.items(),
                            space.items() as usize * e
                        )));
                    }
                    _ => {}
                }
            }
        }
        let name = t.name.unwrap_or_else(|| k.name().to_string());
        let keys = devices
            .iter()
            .map(|d| crate::schedule::PerfModel::key(&t.kernel, d))
            .collect();
        let streamed = params
            .iter()
            .any(|p| matches!(p, ParamArg::Data { root, .. } if root.streamed));
        if streamed && !t.split {
            return Err(bad("streamed data can only be used by a split task".into()));
        }
        Ok(TaskSpec {
            label: Arc::from(name.as_str()),
            name,
            kernel: t.kernel,
            params,
            space,
            only,
            keys,
            split: t.split,
            max_block: t.max_block,
            chunk_labels: t.chunk_labels,
            streamed,
        })
    }

    /// The data arguments: (root, read range, write range, mode).
    pub(crate) fn data(&self) -> impl Iterator<Item = (&Arc<Root>, &Range<usize>, &Range<usize>, Access)> {
        self.params.iter().filter_map(|p| match p {
            ParamArg::Data {
                root,
                read,
                write,
                mode,
                ..
            } => Some((root, read, write, *mode)),
            _ => None,
        })
    }

    /// Whether device `d` (index) may run it.
    pub(crate) fn allows(&self, d: usize, device: &Device) -> bool {
        (self.only.is_empty() || self.only.contains(&d)) && device.supports(&self.kernel)
    }
}

fn check_arg(p: &Param, a: TaskArg) -> std::result::Result<ParamArg, String> {
    match (p, a) {
        (
            Param::Buffer { ty, access, split, .. },
            TaskArg::Data {
                root,
                read,
                write,
                mode,
            },
        ) => {
            if root.ty != *ty {
                return Err(format!(
                    "data {:?} holds {}, the kernel takes {}",
                    root.name, root.ty.name, ty.name
                ));
            }
            if mode != *access {
                return Err(format!(
                    "data {:?} given as {mode:?}, the parameter is {access:?}",
                    root.name
                ));
            }
            Ok(ParamArg::Data {
                root,
                read,
                write,
                mode,
                per_item: match split {
                    crate::kernel::Split::Elementwise { per_item } => Some(*per_item),
                    _ => None,
                },
            })
        }
        (Param::Scalar { ty, .. }, TaskArg::Scalar(s)) => {
            if s.ty() != *ty {
                return Err(format!("scalar {s:?} given for a {ty:?}"));
            }
            Ok(ParamArg::Scalar(s))
        }
        (Param::Local { .. }, TaskArg::Local(n)) => Ok(ParamArg::Local(n)),
        (p, TaskArg::Data { root, .. }) => Err(format!("data {:?} given for {}", root.name, p.name())),
        (p, TaskArg::Scalar(s)) => Err(format!("scalar {s:?} given for {}", p.name())),
        (p, TaskArg::Local(_)) => Err(format!("local memory given for {}", p.name())),
    }
}
